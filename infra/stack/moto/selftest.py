"""Self-test of what infra/stack/moto/launch.py patches into moto, against the stack's running moto.

What each patch promises (stock moto 5.2.5 fails the KMS checks and the last one):

- KMS signs a 32-byte digest as given when the caller says `MessageType=DIGEST` (an Ethereum
  signer's call), and refuses to sign with a disabled key (`DisabledException`);
- a cancelled TransactWriteItems leaves every item as it was (the patched rollback restores items,
  not tables), and a successful one writes all of its items;
- conditional writes are atomic: of many concurrent `PutItem`s of one key with
  `attribute_not_exists`, exactly one succeeds;
- TransactWriteItems never fails with HTTP 500 while other requests write the same table.

  set -a; . .local/stack/stack.env; set +a
  .local/venv/bin/python infra/stack/moto/selftest.py      # a few seconds

Creates its own throwaway table and KMS key. Exits 0 on success.
Environment: AWS_ENDPOINT_URL (or X402_STACK_DIR/stack.env), AWS_REGION.
"""

import hashlib
import os
import pathlib
import sys
import threading
import uuid

import boto3
import botocore.config
import botocore.exceptions
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

REPO = pathlib.Path(__file__).resolve().parents[3]


def load_stack_env():
    if os.environ.get("AWS_ENDPOINT_URL"):
        return
    path = pathlib.Path(os.environ.get("X402_STACK_DIR", REPO / ".local" / "stack")) / "stack.env"
    if not path.exists():
        sys.exit(f"moto selftest: no AWS_ENDPOINT_URL and no {path}: start the stack (infra/stack/stack.sh up)")
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            os.environ.setdefault(key.strip().removeprefix("export "), value.strip().strip('"').strip("'"))


def check(condition, what):
    if not condition:
        raise SystemExit(f"moto selftest: FAILED: {what}")
    print(f"  ok: {what}")


def kms_checks(kms):
    key_id = kms.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    digest = hashlib.sha256(b"x402 moto selftest").digest()
    signature = kms.sign(KeyId=key_id, Message=digest, MessageType="DIGEST",
                         SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    try:
        public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        as_given = True
    except Exception:  # noqa: BLE001 - InvalidSignature: the digest was hashed again
        as_given = False
    check(as_given, "KMS Sign with MessageType=DIGEST signs the digest as given")
    kms.disable_key(KeyId=key_id)
    try:
        kms.sign(KeyId=key_id, Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
        refused = None
    except botocore.exceptions.ClientError as e:
        refused = e.response["Error"]["Code"]
    check(refused == "DisabledException", f"KMS Sign with a disabled key is refused (got {refused})")


def item(ddb, table, key):
    return ddb.get_item(TableName=table, Key={"id": {"S": key}}, ConsistentRead=True).get("Item")


def transaction_checks(ddb, table):
    ddb.put_item(TableName=table, Item={"id": {"S": "a"}, "v": {"N": "1"}})
    update_a = {"Update": {"TableName": table, "Key": {"id": {"S": "a"}}, "UpdateExpression": "SET v = :two",
                           "ExpressionAttributeValues": {":two": {"N": "2"}}}}
    try:
        ddb.transact_write_items(TransactItems=[
            update_a,
            {"Put": {"TableName": table, "Item": {"id": {"S": "b"}}, "ConditionExpression": "attribute_exists(id)"}},
        ])
        cancelled = False
    except botocore.exceptions.ClientError as e:
        cancelled = e.response["Error"]["Code"] == "TransactionCanceledException"
    check(cancelled, "a transaction whose second condition fails is cancelled")
    check(item(ddb, table, "a") == {"id": {"S": "a"}, "v": {"N": "1"}}, "the cancelled transaction's update of an existing item is rolled back")
    check(item(ddb, table, "b") is None, "the cancelled transaction wrote no new item")
    try:
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": {"id": {"S": "c"}}}},
            {"ConditionCheck": {"TableName": table, "Key": {"id": {"S": "a"}}, "ConditionExpression": "v = :nine",
                                "ExpressionAttributeValues": {":nine": {"N": "9"}}}},
        ])
    except botocore.exceptions.ClientError:
        pass
    check(item(ddb, table, "c") is None, "a new item put before a failing condition check is removed")
    ddb.transact_write_items(TransactItems=[update_a, {"Put": {"TableName": table, "Item": {"id": {"S": "b"}}}}])
    check(item(ddb, table, "a")["v"] == {"N": "2"} and item(ddb, table, "b") is not None,
          "a transaction whose conditions hold writes every item")


def race(threads, work):
    results, lock = [], threading.Lock()

    def run(i):
        outcome = work(i)
        with lock:
            results.append(outcome)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results


def outcome_of(call):
    try:
        call()
        return "ok"
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]


def concurrency_checks(ddb, table):
    winners, losers = [], set()
    for round_ in range(10):
        key = f"race-{round_}"
        results = race(12, lambda i: outcome_of(lambda: ddb.put_item(
            TableName=table, Item={"id": {"S": key}, "writer": {"N": str(i)}},
            ConditionExpression="attribute_not_exists(id)")))
        winners.append(results.count("ok"))
        losers |= set(results) - {"ok"}
    check(losers <= {"ConditionalCheckFailedException"}, f"every losing write is a ConditionalCheckFailedException ({sorted(losers)})")
    check(winners == [1] * 10, f"exactly one of 12 concurrent conditional puts of a key wins, in each of 10 rounds ({winners})")

    def writer_or_transaction(i):
        outcomes = []
        for n in range(25):
            if i % 2:
                outcomes.append(outcome_of(lambda: ddb.put_item(TableName=table, Item={"id": {"S": f"w{i}-{n}"}})))
            else:
                outcomes.append(outcome_of(lambda: ddb.transact_write_items(TransactItems=[
                    {"Put": {"TableName": table, "Item": {"id": {"S": f"t{i}-{n}"}}}},
                    {"Update": {"TableName": table, "Key": {"id": {"S": "a"}}, "UpdateExpression": "SET n = :n",
                                "ExpressionAttributeValues": {":n": {"N": str(n)}}}},
                ])))
        return outcomes

    # moto's own transaction deep-copied the whole table while other requests wrote it: with a few
    # thousand items the copy is long enough that stock moto fails some of these with HTTP 500.
    for start in range(0, 3000, 25):
        ddb.batch_write_item(RequestItems={table: [
            {"PutRequest": {"Item": {"id": {"S": f"filler-{n}"}, "pad": {"S": "x" * 64}}}} for n in range(start, start + 25)]})
    outcomes = [o for batch in race(6, writer_or_transaction) for o in batch]
    check(outcomes.count("ok") == len(outcomes),
          f"{len(outcomes)} puts and transactions at once on a table of 3000 items all succeed (no HTTP 500): "
          f"{sorted(set(outcomes))}")


def main():
    load_stack_env()
    # No retries: a 500 the SDK would retry must show here.
    config = botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=16)
    session = boto3.session.Session(region_name=os.environ.get("AWS_REGION", "us-east-1"))
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    kms = session.client("kms", endpoint_url=endpoint, config=config)
    ddb = session.client("dynamodb", endpoint_url=endpoint, config=config)
    table = f"moto-selftest-{uuid.uuid4().hex[:8]}"
    ddb.create_table(TableName=table, AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
    try:
        print("moto selftest: KMS")
        kms_checks(kms)
        print("moto selftest: DynamoDB transactions")
        transaction_checks(ddb, table)
        print("moto selftest: DynamoDB under concurrent callers")
        concurrency_checks(ddb, table)
    finally:
        ddb.delete_table(TableName=table)
    print("moto selftest: all passed")


if __name__ == "__main__":
    main()
