"""AWS half of the stack's bootstrap: creates in moto what the facilitator expects to find.

- one KMS key per signer lane (ECC_SECG_P256K1, SIGN_VERIFY) under alias/x402-lane-<i>;
- the DynamoDB tables of infra/tables.json (CreateTable documents plus a "TimeToLive"
  entry applied with UpdateTimeToLive; moto stores the setting but never expires items).

Then it signs a fixed digest with each lane key, `MessageType=DIGEST`, and checks that
KMS Verify agrees. That alone cannot catch the moto bug that launch.py patches (unpatched,
Sign and Verify hash the digest the same wrong way and agree with each other), so it
prints the public keys and signatures for bootstrap.mjs, which checks that each signature
recovers to the lane's Ethereum address, as the chain will.

Reruns reuse existing keys (found by alias) and tables. Endpoint and credentials come
from the usual AWS_* variables. Usage: bootstrap_aws.py LANES TABLES_JSON > aws.json
"""

import hashlib
import json
import sys

import boto3

SELF_TEST_DIGEST = hashlib.sha256(b"x402 local stack: KMS DIGEST self-test").digest()
OTHER_DIGEST = hashlib.sha256(b"x402 local stack: a different digest").digest()


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
        sys.exit(f"bootstrap_aws: KMS Verify rejects its own DIGEST signature (key {key_id})")
    if kms.verify(Message=OTHER_DIGEST, Signature=signature, **sign)["SignatureValid"]:
        sys.exit(f"bootstrap_aws: KMS Verify accepts a signature for another digest (key {key_id})")
    return signature


def create_tables(dynamodb, path):
    with open(path) as f:
        tables = json.load(f)
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
    return [t["TableName"] for t in tables]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bootstrap_aws.py LANES TABLES_JSON")
    lanes = int(sys.argv[1])
    if lanes < 1:
        sys.exit("bootstrap_aws: X402_LANES must be at least 1")
    kms = boto3.client("kms")
    dynamodb = boto3.client("dynamodb")

    report = {"selfTestDigest": "0x" + SELF_TEST_DIGEST.hex(), "lanes": []}
    for i in range(lanes):
        alias = f"alias/x402-lane-{i}"
        key_id = lane_key(kms, alias)
        public_key = kms.get_public_key(KeyId=key_id)["PublicKey"]
        report["lanes"].append({
            "alias": alias,
            "keyId": key_id,
            "publicKeyDer": "0x" + public_key.hex(),
            "selfTestSignatureDer": "0x" + digest_signature(kms, key_id).hex(),
        })
    report["tables"] = create_tables(dynamodb, sys.argv[2])
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
