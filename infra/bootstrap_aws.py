"""AWS half of the stack's bootstrap: creates in moto what the facilitator expects to find.

- one KMS key per signer lane (ECC_SECG_P256K1, SIGN_VERIFY) under alias/x402-lane-<i>;
- the DynamoDB tables of infra/tables.json (CreateTable documents plus a "TimeToLive"
  entry applied with UpdateTimeToLive; moto stores the setting but never expires items);
- the SQS queues of infra/queues.json (CreateQueue documents; a "RedrivePolicy" names its
  dead-letter queue by QueueName, which must come earlier in the file; "Env" names the
  stack.env variables that receive the queue's URL and ARN).

Then it signs a fixed digest with each lane key, `MessageType=DIGEST`, and checks that
KMS Verify agrees. That alone cannot catch the moto bug that launch.py patches (unpatched,
Sign and Verify hash the digest the same wrong way and agree with each other), so it
prints the public keys and signatures for bootstrap.mjs, which checks that each signature
recovers to the lane's Ethereum address, as the chain will.

Reruns reuse existing keys (found by alias), tables and queues (their attributes are set
again). Endpoint and credentials come from the usual AWS_* variables.

Usage: bootstrap_aws.py LANES TABLES_JSON QUEUES_JSON > aws.json
       bootstrap_aws.py --publish AWS_JSON STACK_DIR
The second form, run after bootstrap.mjs has written stack.env and stack.json, adds the
queues' variables to both (each file replaced atomically, stack.env last).
"""

import hashlib
import json
import os
import shlex
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


def create_queues(sqs, path):
    with open(path) as f:
        queues = json.load(f)
    arns, report = {}, []
    for spec in queues:
        name = spec["QueueName"]
        attributes = dict(spec.get("Attributes", {}))
        redrive = spec.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterQueue"]
            if target not in arns:
                sys.exit(f"bootstrap_aws: queue {name}: dead-letter queue {target} must come earlier in {path}")
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arns[target], "maxReceiveCount": redrive["maxReceiveCount"]}
            )
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            # FifoQueue cannot be changed after creation (and SetQueueAttributes refuses it).
            sqs.set_queue_attributes(
                QueueUrl=url, Attributes={k: v for k, v in attributes.items() if k != "FifoQueue"}
            )
        except sqs.exceptions.QueueDoesNotExist:
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        arns[name] = arn
        report.append({"name": name, "url": url, "arn": arn, "env": spec.get("Env", {})})
    return report


def replace_file(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def publish(aws_json, stack_dir):
    """Adds the queues' variables to the stack.env and stack.json that bootstrap.mjs wrote."""
    with open(aws_json) as f:
        queues = json.load(f)["queues"]
    values = {}
    for q in queues:
        for what, var in q["env"].items():
            values[var] = q[what]
    stack_json = os.path.join(stack_dir, "stack.json")
    with open(stack_json) as f:
        stack = json.load(f)
    stack.update(values)
    stack["queues"] = [{k: q[k] for k in ("name", "url", "arn")} for q in queues]
    replace_file(stack_json, json.dumps(stack, indent=2) + "\n")
    stack_env = os.path.join(stack_dir, "stack.env")
    with open(stack_env) as f:
        lines = [line for line in f.read().splitlines() if line.split("=", 1)[0] not in values]
    lines += [f"{k}={shlex.quote(v)}" for k, v in values.items()]
    replace_file(stack_env, "\n".join(lines) + "\n")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--publish":
        publish(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) != 4:
        sys.exit("usage: bootstrap_aws.py LANES TABLES_JSON QUEUES_JSON | --publish AWS_JSON STACK_DIR")
    lanes = int(sys.argv[1])
    if lanes < 1:
        sys.exit("bootstrap_aws: X402_LANES must be at least 1")
    kms = boto3.client("kms")
    dynamodb = boto3.client("dynamodb")
    sqs = boto3.client("sqs")

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
    report["queues"] = create_queues(sqs, sys.argv[3])
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
