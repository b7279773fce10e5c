"""The local stack's bootstrap: fills a freshly started stack with what the facilitator and the tests
expect, then writes $X402_STACK_DIR/stack.json and stack.env (stack.env last: `stack.sh up` takes its
presence to mean the stack is ready). `stack.sh up` runs it; it may be rerun on a running stack and
leaves what exists in place.

In order:
1. compiles infra/stack/contracts with solc-js (compile.mjs, a cached build step) into .local/contracts;
2. on anvil, through plain JSON-RPC: Multicall3, Permit2, the two x402 Permit2 proxies, the ERC-6492
   test wallets' factory and the three test tokens placed with anvil_setCode (no deployment
   transactions, so the addresses are the real ones), the tokens initialised and the payers funded
   from anvil's unlocked accounts;
3. in moto's KMS, one key per signer lane (ECC_SECG_P256K1, SIGN_VERIFY) under alias/x402-lane-<i>,
   checked to sign digests as real KMS does: each lane signs a fixed digest with `MessageType=DIGEST`
   and the signature must recover, through the chain's own ecrecover, to the lane's address.
   Unpatched moto signs sha256(digest) instead (and its Verify agrees with its Sign), so only
   recovery catches it. Each lane's address then gets gas money;
4. in moto, the DynamoDB tables of tables.json (CreateTable documents; a "TimeToLive" entry is
   applied with UpdateTimeToLive, which moto stores but never acts on) and the SQS queues of
   queues.json (CreateQueue documents; a "RedrivePolicy" names its dead-letter queue by QueueName,
   listed earlier; "Env" names the variables that receive the queue's URL and ARN).

Python's standard library has no keccak-256: anvil computes it (web3_sha3). The accounts' keys are
derived from anvil's default mnemonic (BIP-39/BIP-32, secp256k1 from `cryptography`, which moto
brings) and checked against the accounts anvil reports.

Environment: X402_STACK_DIR ANVIL_PORT RPC_PROXY_PORT MOTO_PORT X402_LANES.
"""

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import unicodedata
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key

STACK = Path(__file__).resolve().parent
REPO = STACK.parents[1]
CONTRACTS_DIR = REPO / ".local" / "contracts"

CHAIN_ID = 84532  # Base Sepolia's, so the official SDKs treat anvil as that network
USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"  # Base Sepolia USDC
OTHER_TOKEN = "0x3009300930093009300930093009300930093009"
MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
# Permit2 and the x402 proxies at their canonical addresses (the same on every chain), as @x402/evm
# 2.27 names them (PERMIT2_ADDRESS, x402ExactPermit2ProxyAddress, x402UptoPermit2ProxyAddress).
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
EXACT_PERMIT2_PROXY = "0x402085c248EeA27D92E8b30b2C58ed07f9E20001"
UPTO_PERMIT2_PROXY = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"
# An ERC-20 with EIP-2612 and no EIP-3009, which x402 pays only through Permit2; a made-up address.
PERMIT_TOKEN = "0x2612261226122612261226122612261226122612"
# The ERC-6492 test wallets' factory, on the facilitator's allow-list (facilitator-env.sh).
ERC6492_FACTORY = "0x6492000000000000000000000000000000006492"
ECRECOVER = "0x" + "00" * 19 + "01"
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
PAYER_INDICES = [1, 2, 3, 4]
PAYEE_INDEX = 5
LANE_GAS_MONEY = 1000 * 10**18
PAYMENTS_TABLE, LANES_TABLE = "x402-payments", "x402-lanes"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SELF_TEST_DIGEST = hashlib.sha256(b"x402 local stack: KMS DIGEST self-test").digest()
OTHER_DIGEST = hashlib.sha256(b"x402 local stack: a different digest").digest()


def fail(message):
    sys.exit(f"bootstrap: {message}")


def env(name):
    value = os.environ.get(name)
    if not value:
        fail(f"{name} is not set (infra/stack/stack.sh up sets it)")
    return value


# --- anvil, over JSON-RPC -------------------------------------------------------------------------


class Anvil:
    def __init__(self, url):
        self.url = url
        self._selectors = {}

    def rpc(self, method, *params):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.load(response)
        except OSError as e:
            fail(f"anvil at {self.url} does not answer {method} ({e}): is the stack up (infra/stack/stack.sh up)?")
        if "error" in answer:
            fail(f"anvil {method}: {answer['error'].get('message', answer['error'])}")
        return answer["result"]

    def keccak(self, data: bytes) -> bytes:
        return bytes.fromhex(self.rpc("web3_sha3", "0x" + data.hex())[2:])

    def checksummed(self, address_hex):
        """EIP-55: the address with its letters' case taken from the keccak of its lowercase hex."""
        lower = address_hex.lower().removeprefix("0x")
        hashed = self.keccak(lower.encode()).hex()
        return "0x" + "".join(c.upper() if int(h, 16) >= 8 else c for c, h in zip(lower, hashed))

    def address_of(self, uncompressed_point: bytes):
        if len(uncompressed_point) != 65 or uncompressed_point[0] != 4:
            fail(f"not an uncompressed secp256k1 point: {uncompressed_point.hex()}")
        return self.checksummed(self.keccak(uncompressed_point[1:])[-20:].hex())

    def calldata(self, signature, *words):
        if signature not in self._selectors:
            self._selectors[signature] = self.keccak(signature.encode())[:4]
        return "0x" + (self._selectors[signature] + b"".join(words)).hex()

    def call(self, to, signature, *words) -> bytes:
        return self.call_data(to, self.calldata(signature, *words))

    def call_data(self, to, data_hex) -> bytes:
        return bytes.fromhex(self.rpc("eth_call", {"to": to, "data": data_hex}, "latest")[2:])

    def send(self, sender, to, signature, *words):
        """A transaction from one of anvil's unlocked accounts; anvil automines, so it has a receipt."""
        transaction = {"from": sender, "to": to, "data": self.calldata(signature, *words)}
        tx_hash = self.rpc("eth_sendTransaction", transaction)
        for _ in range(100):
            receipt = self.rpc("eth_getTransactionReceipt", tx_hash)
            if receipt:
                if receipt["status"] != "0x1":
                    fail(f"{signature} on {to} reverted ({tx_hash})")
                return
            time.sleep(0.05)
        fail(f"{signature} on {to} was not mined ({tx_hash}): is anvil automining?")


def word(value):
    """One ABI word: an int (uint) or a 0x address."""
    if isinstance(value, str):
        value = int(value, 16)
    return value.to_bytes(32, "big")


def abi_string(text):
    data = text.encode()
    return word(len(data)) + data + b"\0" * (-len(data) % 32)


def decode_string(result: bytes):
    offset = int.from_bytes(result[:32], "big")
    length = int.from_bytes(result[offset : offset + 32], "big")
    return result[offset + 32 : offset + 32 + length].decode()


# --- anvil's accounts: BIP-39 seed, BIP-32 path m/44'/60'/0'/0/i -----------------------------------


def point(private_key: int, fmt):
    return ec.derive_private_key(private_key, ec.SECP256K1()).public_key().public_bytes(Encoding.X962, fmt)


def mnemonic_keys(mnemonic, count):
    seed = hashlib.pbkdf2_hmac("sha512", unicodedata.normalize("NFKD", mnemonic).encode(), b"mnemonic", 2048)
    master = hmac.digest(b"Bitcoin seed", seed, "sha512")
    key, chain = int.from_bytes(master[:32], "big"), master[32:]

    def child(key, chain, index):
        hardened = index >= 2**31
        parent = b"\0" + key.to_bytes(32, "big") if hardened else point(key, PublicFormat.CompressedPoint)
        i = hmac.digest(chain, parent + index.to_bytes(4, "big"), "sha512")
        return (int.from_bytes(i[:32], "big") + key) % SECP256K1_N, i[32:]

    for index in (44 + 2**31, 60 + 2**31, 2**31, 0):
        key, chain = child(key, chain, index)
    return [child(key, chain, i)[0] for i in range(count)]


def accounts(anvil):
    chain_id = int(anvil.rpc("eth_chainId"), 16)
    if chain_id != CHAIN_ID:
        fail(f"anvil reports chain id {chain_id}, expected {CHAIN_ID}: is something else listening on ANVIL_PORT?")
    unlocked = anvil.rpc("eth_accounts")
    result = []
    for i, key in enumerate(mnemonic_keys(ANVIL_MNEMONIC, PAYEE_INDEX + 1)):
        address = anvil.address_of(point(key, PublicFormat.UncompressedPoint))
        if i >= len(unlocked) or unlocked[i].lower() != address.lower():
            fail(f"anvil account {i} is not the default mnemonic's {address}: start anvil without --mnemonic")
        result.append({"address": address, "privateKey": "0x" + key.to_bytes(32, "big").hex()})
    return result


# --- the chain's contents --------------------------------------------------------------------------


def compile_contracts():
    compiler = STACK / "compile.mjs"
    done = subprocess.run(["node", str(compiler), str(CONTRACTS_DIR)], stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        fail(f"compiling infra/stack/contracts failed (node {compiler.relative_to(REPO)}; its errors are above)")


def runtime_code(name):
    return json.loads((CONTRACTS_DIR / f"{name}.json").read_text())["deployedBytecode"]


def place_token(anvil, contract, address, name, version, decimals, mint_per_payer, owner, payers):
    """`contract` is EIP3009Token or EIP2612Token: both take their identity from the same `initialize`."""
    anvil.rpc("anvil_setCode", address, runtime_code(contract))
    if not int.from_bytes(anvil.call(address, "initialized()"), "big"):
        head = word(4 * 32) + word(4 * 32 + len(abi_string(name))) + word(decimals) + word(owner)
        initialize = "initialize(string,string,uint8,address)"
        anvil.send(owner, address, initialize, head, abi_string(name), abi_string(version))
    for payer in payers:
        if not int.from_bytes(anvil.call(address, "balanceOf(address)", word(payer)), "big"):
            anvil.send(owner, address, "mint(address,uint256)", word(payer), word(mint_per_payer))


def check_digest_signing(anvil, lane, signature_der):
    """The signature must recover to the lane's address with one of the two recovery ids, after the
    low-s normalisation the chain requires."""
    r, s = decode_dss_signature(signature_der)
    s = min(s, SECP256K1_N - s)
    for v in (27, 28):
        # The precompile answers the 32-byte padded address, or nothing for an invalid signature.
        recovered = anvil.call_data(ECRECOVER, "0x" + (SELF_TEST_DIGEST + word(v) + word(r) + word(s)).hex())
        if recovered and recovered[-20:].hex() == lane["address"].lower()[2:]:
            return
    fail(
        f"KMS DIGEST signature of {lane['alias']} does not recover to {lane['address']}: "
        "is moto running unpatched (infra/stack/moto/launch.py)?"
    )


# --- moto ------------------------------------------------------------------------------------------


def lane_key(kms, alias):
    try:
        return kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"]
    except kms.exceptions.NotFoundException:
        pass
    key_id = kms.create_key(
        KeySpec="ECC_SECG_P256K1",
        KeyUsage="SIGN_VERIFY",
        Description=f"x402 facilitator signer ({alias}), local stack",
    )["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    return key_id


def digest_signature(kms, key_id):
    sign = dict(KeyId=key_id, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    signature = kms.sign(Message=SELF_TEST_DIGEST, **sign)["Signature"]
    if not kms.verify(Message=SELF_TEST_DIGEST, Signature=signature, **sign)["SignatureValid"]:
        fail(f"KMS Verify rejects its own DIGEST signature (key {key_id}): is moto running unpatched?")
    if kms.verify(Message=OTHER_DIGEST, Signature=signature, **sign)["SignatureValid"]:
        fail(f"KMS Verify accepts a signature for another digest (key {key_id}): is moto running unpatched?")
    return signature


def lanes(kms, anvil, count):
    result = []
    for i in range(count):
        alias = f"alias/x402-lane-{i}"
        key_id = lane_key(kms, alias)
        public_key = load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256k1":
            fail(f"KMS key {key_id} ({alias}) is not a secp256k1 key; delete it or start a fresh stack")
        address = anvil.address_of(public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
        lane = {"alias": alias, "keyId": key_id, "address": address}
        check_digest_signing(anvil, lane, digest_signature(kms, key_id))
        anvil.rpc("anvil_setBalance", lane["address"], hex(LANE_GAS_MONEY))
        result.append(lane)
    return result


def activate_lanes(dynamodb, lanes_):
    """The lanes are funded above, so each is made active, as replay would once it saw the gas
    (docs/settlement.md, "Lanes"). A lane a test or an operator moved on keeps its state."""
    for lane in lanes_:
        try:
            dynamodb.update_item(
                TableName=LANES_TABLE,
                Key={"lane": {"S": lane["keyId"]}},
                UpdateExpression="SET #s = :active",
                ConditionExpression="attribute_not_exists(#s)",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":active": {"S": "active"}},
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            pass


def create_tables(dynamodb, path):
    tables = json.loads(path.read_text())
    existing = set(dynamodb.list_tables()["TableNames"])
    for spec in tables:
        ttl = spec.pop("TimeToLive", None)
        name = spec["TableName"]
        if name not in existing:
            dynamodb.create_table(**spec)
            dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1})
        if ttl:
            current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if current.get("TimeToLiveStatus") != "ENABLED":
                dynamodb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
                )
    missing = [t for t in (PAYMENTS_TABLE, LANES_TABLE) if t not in {spec["TableName"] for spec in tables}]
    if missing:
        fail(f"{path.relative_to(REPO)} does not define {', '.join(missing)}")


def create_queues(sqs, path):
    arns, report = {}, []
    for spec in json.loads(path.read_text()):
        name = spec["QueueName"]
        attributes = dict(spec.get("Attributes", {}))
        redrive = spec.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterQueue"]
            if target not in arns:
                fail(f"queue {name}: dead-letter queue {target} must come earlier in {path.relative_to(REPO)}")
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arns[target], "maxReceiveCount": redrive["maxReceiveCount"]}
            )
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            # FifoQueue cannot be changed after creation (and SetQueueAttributes refuses it).
            changeable = {k: v for k, v in attributes.items() if k != "FifoQueue"}
            sqs.set_queue_attributes(QueueUrl=url, Attributes=changeable)
        except sqs.exceptions.QueueDoesNotExist:
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        arns[name] = arn
        report.append({"name": name, "url": url, "arn": arn, "env": spec.get("Env", {})})
    return report


# --- stack.json and stack.env ----------------------------------------------------------------------


def replace_file(path, text):
    """Write then rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def env_line(key, value):
    # Plain when nothing in it needs quoting, so the file also reads as dotenv.
    if re.fullmatch(r"[\w./:,@+-]*", value, re.ASCII):
        return f"{key}={value}"
    return f"{key}='" + value.replace("'", "'\\''") + "'"


def write_stack_files(stack_dir, values, stack):
    """stack.json: `stack` (values and more); stack.env: `values`, one KEY=value line each."""
    replace_file(stack_dir / "stack.json", json.dumps(stack, indent=2) + "\n")
    lines = [f"# Written by {Path(__file__).resolve().relative_to(REPO)}; source it or read it as dotenv."]
    lines += [env_line(k, v) for k, v in values.items()]
    # Written last: its presence is what tells stack.sh that the bootstrap finished.
    replace_file(stack_dir / "stack.env", "\n".join(lines) + "\n")


def main():
    stack_dir = Path(env("X402_STACK_DIR"))
    lane_count = int(env("X402_LANES"))
    if lane_count < 1:
        fail("X402_LANES must be at least 1")
    anvil_url = f"http://127.0.0.1:{env('ANVIL_PORT')}"
    rpc_url = f"http://127.0.0.1:{env('RPC_PROXY_PORT')}"
    aws = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{env('MOTO_PORT')}",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        # moto accepts any credentials; fixed ones keep a developer's real AWS profile out of it.
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(aws)
    import boto3  # after the environment above, which it reads

    compile_contracts()
    anvil = Anvil(anvil_url)
    accounts_ = accounts(anvil)
    deployer, payee = accounts_[0], accounts_[PAYEE_INDEX]
    payers = [accounts_[i] for i in PAYER_INDICES]

    anvil.rpc("anvil_setCode", MULTICALL3, runtime_code("Multicall3"))
    # Stateless apart from Permit2's nonce bitmap and the proxies' re-entrancy flag: nothing to initialise.
    anvil.rpc("anvil_setCode", PERMIT2, runtime_code("Permit2"))
    anvil.rpc("anvil_setCode", EXACT_PERMIT2_PROXY, runtime_code("X402ExactPermit2Proxy"))
    anvil.rpc("anvil_setCode", UPTO_PERMIT2_PROXY, runtime_code("X402UptoPermit2Proxy"))
    # Stateless too: it deploys TestSmartWallets with CREATE2 (the creation code is in its own).
    anvil.rpc("anvil_setCode", ERC6492_FACTORY, runtime_code("TestSmartWalletFactory"))
    payer_addresses = [p["address"] for p in payers]
    owner = deployer["address"]
    place_token(anvil, "EIP3009Token", USDC, "USDC", "2", 6, 1_000_000 * 10**6, owner, payer_addresses)
    place_token(anvil, "EIP3009Token", OTHER_TOKEN, "Other Token", "1", 6, 1_000 * 10**6, owner, payer_addresses)
    # No payer has approved Permit2 for it: each test gives the allowance it needs, or none.
    permit_token = ("Permit Token", "1", 18)
    place_token(anvil, "EIP2612Token", PERMIT_TOKEN, *permit_token, 1_000_000 * 10**18, owner, payer_addresses)

    lanes_ = lanes(boto3.client("kms"), anvil, lane_count)
    create_tables(boto3.client("dynamodb"), STACK / "tables.json")
    activate_lanes(boto3.client("dynamodb"), lanes_)
    queues = create_queues(boto3.client("sqs"), STACK / "queues.json")

    values = {
        "X402_STACK_DIR": str(stack_dir),
        "ANVIL_URL": anvil_url,
        "RPC_URL": rpc_url,
        "RPC_PROXY_URL": rpc_url,
        **aws,
        "X402_CHAIN_ID": str(CHAIN_ID),
        "X402_NETWORK": f"eip155:{CHAIN_ID}",
        "X402_TOKEN": USDC,
        "X402_TOKEN_NAME": decode_string(anvil.call(USDC, "name()")),
        "X402_TOKEN_VERSION": decode_string(anvil.call(USDC, "version()")),
        "X402_TOKEN_DECIMALS": str(int.from_bytes(anvil.call(USDC, "decimals()"), "big")),
        "X402_OTHER_TOKEN": OTHER_TOKEN,
        "X402_MULTICALL3": MULTICALL3,
        "X402_PERMIT2": PERMIT2,
        "X402_EXACT_PERMIT2_PROXY": EXACT_PERMIT2_PROXY,
        "X402_UPTO_PERMIT2_PROXY": UPTO_PERMIT2_PROXY,
        "X402_PERMIT_TOKEN": PERMIT_TOKEN,
        "X402_ERC6492_FACTORY": ERC6492_FACTORY,
        "X402_PERMIT_TOKEN_NAME": decode_string(anvil.call(PERMIT_TOKEN, "name()")),
        "X402_PERMIT_TOKEN_VERSION": decode_string(anvil.call(PERMIT_TOKEN, "version()")),
        "X402_PERMIT_TOKEN_DECIMALS": str(int.from_bytes(anvil.call(PERMIT_TOKEN, "decimals()"), "big")),
        "X402_LANE_KEYS": ",".join(lane["keyId"] for lane in lanes_),
        "X402_LANE_ALIASES": ",".join(lane["alias"] for lane in lanes_),
        "X402_LANE_ADDRESSES": ",".join(lane["address"] for lane in lanes_),
        "X402_PAYMENTS_TABLE": PAYMENTS_TABLE,
        "X402_LANES_TABLE": LANES_TABLE,
        "X402_PAYEE": payee["address"],
    }
    queue_values = {var: q[what] for q in queues for what, var in q["env"].items()}
    stack = {
        **values,
        "lanes": lanes_,
        "deployer": deployer,
        "payers": payers,
        "payee": {"address": payee["address"]},
        **queue_values,
        "queues": [{k: q[k] for k in ("name", "url", "arn")} for q in queues],
    }
    write_stack_files(stack_dir, {**values, **queue_values}, stack)


if __name__ == "__main__":
    main()
