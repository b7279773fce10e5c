#!/usr/bin/env python3
"""Creates, lists and revokes the facilitator's API keys (docs/security.md).

A key is a random string printed once, when it is created; the table keeps only its SHA-256
(hex), a name saying whose it is, when it was made, and whether it is enabled. Lost keys cannot
be recovered: revoke them and create new ones.

    api-keys.py create NAME [--rate N --burst M]   print a new key for NAME (shown once)
    api-keys.py limit WHICH --rate N [--burst M]   set a key's own rate limit (--rate 0: the default)
    api-keys.py list            every key's name, hash prefix, state, limit and dates
    api-keys.py revoke WHICH    disable the key whose name or hash prefix (8+ hex digits) is WHICH
    api-keys.py enable WHICH    enable a revoked key again

A key without a limit of its own gets the deployment's (KeyRateLimit and KeyBurst; 20 requests a
second in bursts of 40 by default). Over its limit, /verify and /settle answer 429 with
Retry-After. The limiter keeps one item per key in the same table, keyed rate#<hash>; this tool
leaves those alone.

The table is --table, else $X402_API_KEYS_TABLE, else x402-api-keys (the local stack's). In AWS
use the stack's ApiKeysTableName output. Credentials, region and endpoint come from the usual
AWS_* variables, so the same command works against AWS and against the local stack's moto
(AWS_ENDPOINT_URL=http://127.0.0.1:5000, as in .local/stack/stack.env). Needs boto3: it is in
.local/venv after `bash infra/install.sh`, or `pip install boto3`.

Revoking takes effect at once for new keys but API Gateway keeps an authorizer's answer for the
stack's AuthorizerCacheSeconds (default 300), so a revoked key may work that much longer.
"""

import argparse
import hashlib
import os
import secrets
import sys
import time

import boto3

# Recognisable in logs and secret scanners; 32 random bytes after it.
PREFIX = "x402_"


def key_hash(key):
    return hashlib.sha256(key.encode()).hexdigest()


def items(table):
    """Every key (not the limiter's rate# items)."""
    found, start = [], None
    while True:
        page = table.scan(**({"ExclusiveStartKey": start} if start else {}))
        found += [i for i in page.get("Items", []) if not i["key_hash"].startswith("rate#")]
        start = page.get("LastEvaluatedKey")
        if not start:
            return found


def limit_attributes(rate, burst):
    """The item attributes of a key's own limit; none for rate 0 (the deployment's default)."""
    if rate is None or rate == 0:
        return {}
    if rate < 0 or (burst is not None and burst < 1):
        sys.exit("api-keys: --rate is requests a second (1 or more, 0 for the default), --burst 1 or more")
    return {"rate_per_second": rate, "burst": burst if burst is not None else rate}


def find(table, which):
    which = which.strip()
    matches = [
        i for i in items(table)
        if i.get("name") == which or (len(which) >= 8 and i["key_hash"].startswith(which.lower()))
    ]
    if len(matches) != 1:
        sys.exit(f"api-keys: {len(matches)} keys match {which!r}; give a longer hash prefix")
    return matches[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=os.environ.get("X402_API_KEYS_TABLE") or "x402-api-keys")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create")
    create.add_argument("name")
    limit = sub.add_parser("limit")
    limit.add_argument("which")
    for command in (create, limit):
        command.add_argument("--rate", type=int, help="requests a second (0: the deployment's default)")
        command.add_argument("--burst", type=int, help="requests at once (default: the rate)")
    sub.add_parser("list")
    sub.add_parser("revoke").add_argument("which")
    sub.add_parser("enable").add_argument("which")
    args = parser.parse_args()
    table = boto3.resource("dynamodb").Table(args.table)

    if args.command == "create":
        name = args.name.strip()
        if not name:
            sys.exit("api-keys: give the key a name that says whose it is")
        key = PREFIX + secrets.token_urlsafe(32)
        table.put_item(
            Item={"key_hash": key_hash(key), "name": name, "enabled": True, "created_at": int(time.time()),
                  **limit_attributes(args.rate, args.burst)},
            ConditionExpression="attribute_not_exists(key_hash)",
        )
        print(key)
        print(f"api-keys: created a key for {name!r}; it is shown only now. Send it as 'Authorization: Bearer <key>'.",
              file=sys.stderr)
    elif args.command == "limit":
        item = find(table, args.which)
        own = limit_attributes(args.rate, args.burst)
        if own:
            table.update_item(
                Key={"key_hash": item["key_hash"]},
                UpdateExpression="SET rate_per_second = :r, burst = :b",
                ExpressionAttributeValues={":r": own["rate_per_second"], ":b": own["burst"]},
            )
        else:
            table.update_item(Key={"key_hash": item["key_hash"]}, UpdateExpression="REMOVE rate_per_second, burst")
        shown = f"{own['rate_per_second']}/s, bursts of {own['burst']}" if own else "the deployment's default"
        print(f"api-keys: {item.get('name')!r} ({item['key_hash'][:12]}) is limited to {shown}")
    elif args.command == "list":
        print(f"{'name':<32} {'hash':<12} {'state':<9} {'limit':<14} created (UTC)")
        for i in sorted(items(table), key=lambda i: int(i.get("created_at", 0))):
            state = "enabled" if i.get("enabled") is True else "revoked"
            created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(int(i.get("created_at", 0))))
            limit = f"{i['rate_per_second']}/s, {i.get('burst', i['rate_per_second'])}" if "rate_per_second" in i else "default"
            print(f"{i.get('name', '?'):<32} {i['key_hash'][:12]:<12} {state:<9} {limit:<14} {created}")
    else:
        item = find(table, args.which)
        enabled = args.command == "enable"
        table.update_item(
            Key={"key_hash": item["key_hash"]},
            UpdateExpression="SET enabled = :e, changed_at = :t",
            ExpressionAttributeValues={":e": enabled, ":t": int(time.time())},
        )
        print(f"api-keys: {'enabled' if enabled else 'revoked'} {item.get('name')!r} ({item['key_hash'][:12]})")


if __name__ == "__main__":
    main()
