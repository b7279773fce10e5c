#!/usr/bin/env python3
"""Checks that the local stack's tables and queues (infra/stack/tables.json, infra/stack/queues.json) are the
ones template.yaml deploys, apart from the differences listed in INTENDED below.

    .local/venv/bin/python infra/deploy/resource-parity.py

The local files are what infra/stack/bootstrap.py creates in moto; the template is what AWS gets.
Compared: each table's keys, attribute definitions, indexes, billing mode and TTL attribute; each
queue's FIFO settings, retention, visibility timeout and redrive count. Prints every difference
and exits 1, or prints what it compared and exits 0. Needs PyYAML (in the local stack's venv).
"""

import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "infra" / "stack"
TEMPLATE = REPO / "template.yaml"

# Logical id in template.yaml -> name in the local files.
TABLES = {"PaymentsTable": "x402-payments", "LanesTable": "x402-lanes", "ApiKeysTable": "x402-api-keys"}
QUEUES = {"SettlementQueue": "x402-settlements.fifo", "SettlementDeadLetterQueue": "x402-settlements-dlq.fifo"}

# (local name, setting): why the local stack differs on purpose.
INTENDED = {
    ("x402-settlements.fifo", "VisibilityTimeout"): (
        "60 locally: the local poller's worker runs in-process with no Lambda timeout, and fault "
        "tests wait out a returned message; AWS needs six times the worker's 30 s timeout (180)"
    ),
    ("x402-settlements.fifo", "MessageRetentionPeriod"): "moto's default (4 days) equals the template's",
}


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref, !Sub, !GetAtt, …) as plain values."""


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def table_facts(props):
    return {
        "KeySchema": props.get("KeySchema"),
        "AttributeDefinitions": sorted(props.get("AttributeDefinitions", []), key=lambda a: a["AttributeName"]),
        "GlobalSecondaryIndexes": [
            {k: g.get(k) for k in ("IndexName", "KeySchema", "Projection")} for g in props.get("GlobalSecondaryIndexes", [])
        ],
        "BillingMode": props.get("BillingMode"),
        "TimeToLive": (props.get("TimeToLiveSpecification") or props.get("TimeToLive") or {}).get("AttributeName"),
    }


def queue_facts(attributes, redrive):
    as_text = lambda v: None if v is None else str(v).lower()  # noqa: E731
    return {
        "FifoQueue": as_text(attributes.get("FifoQueue")),
        "ContentBasedDeduplication": as_text(attributes.get("ContentBasedDeduplication")),
        "MessageRetentionPeriod": as_text(attributes.get("MessageRetentionPeriod")),
        "VisibilityTimeout": as_text(attributes.get("VisibilityTimeout")),
        "maxReceiveCount": as_text((redrive or {}).get("maxReceiveCount")),
    }


def main():
    resources = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)["Resources"]
    local_tables = {t["TableName"]: t for t in json.loads((STACK / "tables.json").read_text())}
    local_queues = {q["QueueName"]: q for q in json.loads((STACK / "queues.json").read_text())}
    problems = []

    def compare(logical, name, deployed, local):
        for setting in deployed:
            if deployed[setting] != local[setting] and (name, setting) not in INTENDED:
                problems.append(f"{name} ({logical}) {setting}: template {deployed[setting]!r}, local {local[setting]!r}")

    for logical, name in TABLES.items():
        if name not in local_tables:
            problems.append(f"infra/stack/tables.json has no {name} (template {logical})")
            continue
        compare(logical, name, table_facts(resources[logical]["Properties"]), table_facts(local_tables[name]))
    for logical, name in QUEUES.items():
        if name not in local_queues:
            problems.append(f"infra/stack/queues.json has no {name} (template {logical})")
            continue
        props = resources[logical]["Properties"]
        deployed = queue_facts(props, props.get("RedrivePolicy"))
        local = queue_facts(local_queues[name]["Attributes"], local_queues[name].get("RedrivePolicy"))
        compare(logical, name, deployed, local)
    extra = (set(local_tables) - set(TABLES.values())) | (set(local_queues) - set(QUEUES.values()))
    problems += [f"{name} is local only: add it to template.yaml, or to this check's maps" for name in sorted(extra)]
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"resource parity: {len(TABLES)} tables and {len(QUEUES)} queues match template.yaml "
          f"({len(INTENDED)} intended differences, listed in infra/deploy/resource-parity.py)")


if __name__ == "__main__":
    main()
