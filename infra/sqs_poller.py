"""The local stand-in for Lambda's SQS event source mapping (moto never fires one).

It does what the mapping does in AWS, with FunctionResponseTypes=[ReportBatchItemFailures]:
ReceiveMessage (long poll, every attribute), build the SQS event Lambda sends, invoke the
function synchronously through cargo-lambda's Invoke API (the same request `cargo lambda invoke`
makes), then delete from the queue every message the function did not list in
`batchItemFailures`. A function error deletes nothing. Messages left in the queue come back after
their visibility timeout, and the queue's redrive policy moves them to the dead-letter queue after
maxReceiveCount receives, exactly as in AWS: the poller never moves messages itself.

What AWS does and so does this (see infra/README.md, "The SQS poller"):
- the event is the one Lambda sends (field names as aws_lambda_events' SqsEvent reads them);
- a batch is what one ReceiveMessage returns, up to --batch-size; on a FIFO queue it may hold
  several message groups, and SQS itself never hands out a group that has messages in flight, so
  two batches never hold the same group at once (DESIGN I4's "one sender per lane");
- the partial batch response is read by Lambda's rules: an empty/null list or an empty/null/other
  JSON response is a complete success; an invalid JSON response, or an entry whose itemIdentifier is
  missing, empty, not a string or not a messageId of the batch, fails the whole batch;
- on a FIFO queue, keeping order when one message of a group fails is the function's job: it must
  list that message and every later message of its group in the batch. AWS deletes whatever is not
  listed, and so does this poller by default (--unreported-tail delete), logging a warning that
  names the messages, so a handler that forgets the tail fails its tests here rather than
  reordering a lane in production. --unreported-tail keep leaves them in the queue instead;
- FIFO queues take no batching window (AWS refuses one); standard queues do.

What is added for moto: moto 5.2.5 redelivers a FIFO group whose messages all came back together
last message first (its group lock is released one message at a time while it scans the queue).
When a group leaves more than one message in the queue, the poller makes all but the first visible
at once (ChangeMessageVisibility 0); the group stays locked by its first message, so nothing is
delivered early, and when that one's timeout ends the group comes back in order, as in AWS.

Configuration (flag, environment variable, default):
  --queue-url          X402_POLLER_QUEUE_URL, X402_SETTLE_QUEUE_URL
  --function           X402_POLLER_FUNCTION                (required)
  --invoke-url         X402_POLLER_INVOKE_URL, http://127.0.0.1:$LAMBDA_PORT (9000)
  --endpoint-url       AWS_ENDPOINT_URL                     (moto)
  --batch-size         X402_POLLER_BATCH_SIZE, 10           (FIFO: 1..10)
  --batching-window    X402_POLLER_BATCHING_WINDOW, 0 s     (standard queues only)
  --wait-seconds       X402_POLLER_WAIT_SECONDS, 2          (ReceiveMessage long poll; also the
                                                              longest a stop waits for a poll)
  --invoke-timeout     X402_POLLER_INVOKE_TIMEOUT, the queue's visibility timeout
  --concurrency        X402_POLLER_CONCURRENCY, 1           (batches in flight at once)
  --unreported-tail    X402_POLLER_UNREPORTED_TAIL, delete  (delete | keep)

Logs one line per batch to stdout. SIGTERM or SIGINT: no new receive starts, a batch in flight is
finished (its invoke is bounded by --invoke-timeout), then it exits 0.
"""

import argparse
import base64
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict

import boto3
import botocore.config
import botocore.exceptions

MAX_BACKOFF_S = 10.0


def log(message):
    print(f"sqs-poller: {message}", flush=True)


def env_default(*names, default=None):
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return default


def parse_args(argv):
    lambda_port = os.environ.get("LAMBDA_PORT", "9000")
    p = argparse.ArgumentParser(description="Local SQS event source mapping for Lambda functions under cargo-lambda.")
    p.add_argument("--queue-url", default=env_default("X402_POLLER_QUEUE_URL", "X402_SETTLE_QUEUE_URL"))
    p.add_argument("--function", default=env_default("X402_POLLER_FUNCTION"))
    p.add_argument("--invoke-url", default=env_default("X402_POLLER_INVOKE_URL", default=f"http://127.0.0.1:{lambda_port}"))
    p.add_argument("--endpoint-url", default=env_default("AWS_ENDPOINT_URL"))
    p.add_argument("--region", default=env_default("AWS_REGION", "AWS_DEFAULT_REGION", default="us-east-1"))
    p.add_argument("--batch-size", type=int, default=int(env_default("X402_POLLER_BATCH_SIZE", default="10")))
    p.add_argument("--batching-window", type=float, default=float(env_default("X402_POLLER_BATCHING_WINDOW", default="0")))
    p.add_argument("--wait-seconds", type=int, default=int(env_default("X402_POLLER_WAIT_SECONDS", default="2")))
    p.add_argument("--invoke-timeout", type=float, default=None if not os.environ.get("X402_POLLER_INVOKE_TIMEOUT") else float(os.environ["X402_POLLER_INVOKE_TIMEOUT"]))
    p.add_argument("--concurrency", type=int, default=int(env_default("X402_POLLER_CONCURRENCY", default="1")))
    p.add_argument("--unreported-tail", choices=["delete", "keep"], default=env_default("X402_POLLER_UNREPORTED_TAIL", default="delete"))
    a = p.parse_args(argv)
    if not a.queue_url:
        p.error("no queue: pass --queue-url or set X402_SETTLE_QUEUE_URL (stack.env has it)")
    if not a.function:
        p.error("no function: pass --function or set X402_POLLER_FUNCTION")
    if not 0 <= a.wait_seconds <= 20:
        p.error("--wait-seconds must be 0..20 (SQS's limit)")
    if a.concurrency < 1:
        p.error("--concurrency must be at least 1")
    return a


class FunctionError(Exception):
    """The invocation failed as a whole: Lambda would delete nothing."""


class Poller:
    def __init__(self, args, sqs, stop):
        self.args = args
        self.sqs = sqs
        self.stop = stop
        attrs = sqs.get_queue_attributes(QueueUrl=args.queue_url, AttributeNames=["All"])["Attributes"]
        self.queue_arn = attrs["QueueArn"]
        self.region = self.queue_arn.split(":")[3]
        self.fifo = attrs.get("FifoQueue") == "true"
        self.visibility_timeout = int(attrs.get("VisibilityTimeout", "30"))
        self.invoke_timeout = args.invoke_timeout or float(self.visibility_timeout)
        if self.fifo and not 1 <= args.batch_size <= 10:
            raise SystemExit("sqs-poller: a FIFO queue takes a batch size of 1..10 (as in AWS)")
        if self.fifo and args.batching_window:
            raise SystemExit("sqs-poller: a FIFO queue takes no batching window (AWS refuses one)")
        if not self.fifo and args.batch_size > 10 and args.batching_window < 1:
            raise SystemExit("sqs-poller: a batch size over 10 needs a batching window of at least 1 s (as in AWS)")
        name = urllib.parse.quote(args.function, safe="")
        self.invoke_endpoint = f"{args.invoke_url.rstrip('/')}/2015-03-31/functions/{name}/invocations"
        # One ReceiveMessage at a time: moto's receive is not atomic between threads (two could
        # take the same group), while SQS's is. Holding a lock keeps moto's answers what SQS's are.
        self.receive_lock = threading.Lock()
        self.batches = 0
        self.counter_lock = threading.Lock()

    # ---- receive -------------------------------------------------------------------------

    def receive(self):
        """Up to batch_size messages, or [] after one long poll (or the batching window) found none."""
        batch = []
        deadline = time.monotonic() + self.args.batching_window
        while not self.stop.is_set():
            wait = self.args.wait_seconds
            if self.args.batching_window:
                wait = max(0, min(wait, int(deadline - time.monotonic() + 0.999)))
            with self.receive_lock:
                got = self.sqs.receive_message(
                    QueueUrl=self.args.queue_url,
                    MaxNumberOfMessages=min(10, self.args.batch_size - len(batch)),
                    WaitTimeSeconds=wait,
                    AttributeNames=["All"],
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            batch += got
            if len(batch) >= self.args.batch_size or not self.args.batching_window:
                break
            if time.monotonic() >= deadline:
                break
        return batch

    # ---- event ---------------------------------------------------------------------------

    def record(self, m):
        """One record of the event, as Lambda builds it from a received message."""
        rec = OrderedDict()
        rec["messageId"] = m["MessageId"]
        rec["receiptHandle"] = m["ReceiptHandle"]
        rec["body"] = m["Body"]
        rec["attributes"] = dict(m.get("Attributes", {}))
        rec["messageAttributes"] = {name: message_attribute(v) for name, v in m.get("MessageAttributes", {}).items()}
        rec["md5OfBody"] = m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest()
        if m.get("MD5OfMessageAttributes"):
            rec["md5OfMessageAttributes"] = m["MD5OfMessageAttributes"]
        rec["eventSource"] = "aws:sqs"
        rec["eventSourceARN"] = self.queue_arn
        rec["awsRegion"] = self.region
        return rec

    # ---- invoke --------------------------------------------------------------------------

    def invoke(self, event):
        """The function's response payload (bytes); FunctionError if the invocation failed."""
        data = json.dumps(event).encode()
        req = urllib.request.Request(self.invoke_endpoint, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.invoke_timeout) as resp:
                payload = resp.read()
                function_error = resp.headers.get("X-Amz-Function-Error")
        except urllib.error.HTTPError as e:
            # cargo-lambda answers a function error (the runtime's /invocation/<id>/error) with 500
            # and the error document; a missing function is a 404.
            raise FunctionError(f"HTTP {e.code}: {e.read()[:300].decode(errors='replace')}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
            raise FunctionError(f"invoke failed: {getattr(e, 'reason', e)}") from None
        if function_error:  # what real Lambda's Invoke API says on a function error
            raise FunctionError(f"X-Amz-Function-Error {function_error}: {payload[:300].decode(errors='replace')}")
        return payload

    def failed_ids(self, payload, batch_ids):
        """The message ids the response reports as failed, by Lambda's partial-batch-response rules."""
        text = payload.decode(errors="replace").strip()
        if not text:
            return set()
        try:
            response = json.loads(text)
        except ValueError:
            raise FunctionError(f"the response is not JSON: {text[:200]}") from None
        if isinstance(response, dict) and {"errorType", "errorMessage"} <= response.keys():
            raise FunctionError(f"error payload {response.get('errorType')}: {response.get('errorMessage')}")
        if not isinstance(response, dict) or response.get("batchItemFailures") is None:
            return set()
        failures = response["batchItemFailures"]
        if not isinstance(failures, list):
            raise FunctionError(f"batchItemFailures is not a list: {failures!r}"[:300])
        ids = set()
        for item in failures:
            ident = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not isinstance(ident, str) or not ident or ident not in batch_ids:
                raise FunctionError(f"invalid batchItemFailures entry {item!r} (the whole batch fails, as in AWS)"[:300])
            ids.add(ident)
        return ids

    # ---- one batch -----------------------------------------------------------------------

    def process(self, batch):
        started = time.monotonic()
        ids = [m["MessageId"] for m in batch]
        error = None
        try:
            failed = self.failed_ids(self.invoke({"Records": [self.record(m) for m in batch]}), set(ids))
        except FunctionError as e:
            error, failed = str(e), set(ids)

        group_of = {m["MessageId"]: m.get("Attributes", {}).get("MessageGroupId") for m in batch}
        unreported_tail = []
        if self.fifo and error is None:
            failed_groups = set()
            for mid in ids:
                if mid in failed:
                    failed_groups.add(group_of[mid])
                elif group_of[mid] in failed_groups:
                    unreported_tail.append(mid)
            if self.args.unreported_tail == "keep":
                failed |= set(unreported_tail)

        keep = [m for m in batch if m["MessageId"] in failed]
        delete = [m for m in batch if m["MessageId"] not in failed]
        delete_errors = self.delete(delete)
        if self.fifo:
            self.release_group_tails(keep)

        with self.counter_lock:
            self.batches += 1
            n = self.batches
        groups = len({group_of[i] for i in ids}) if self.fifo else "-"
        line = (f"batch {n}: {len(batch)} messages, {groups} groups, {len(keep)} failed, "
                f"{len(delete) - delete_errors} deleted, {(time.monotonic() - started) * 1000:.0f} ms")
        if error:
            line += f"; function error, nothing deleted: {error}"
        if delete_errors:
            line += f"; {delete_errors} deletes refused (receipt expired? the message will come back)"
        log(line)
        if unreported_tail:
            fate = "kept in the queue" if self.args.unreported_tail == "keep" else "deleted, as AWS would: their group's order is broken"
            log(f"WARNING: the function failed a message of a FIFO group but not the later messages "
                f"{', '.join(unreported_tail)} of that group in the batch; they were {fate}. "
                f"A FIFO handler must list every message after the first failure of its group.")
        return error is None

    def delete(self, messages):
        errors = 0
        for i in range(0, len(messages), 10):
            chunk = messages[i:i + 10]
            resp = self.sqs.delete_message_batch(
                QueueUrl=self.args.queue_url,
                Entries=[{"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(chunk)],
            )
            errors += len(resp.get("Failed", []))
        return errors

    def release_group_tails(self, kept):
        """The moto workaround described at the top: per group, all kept messages but the first
        become visible now, behind the first one, which still holds the group."""
        seen = set()
        for m in kept:
            group = m.get("Attributes", {}).get("MessageGroupId")
            if group not in seen:
                seen.add(group)
                continue
            try:
                self.sqs.change_message_visibility(QueueUrl=self.args.queue_url,
                                                   ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
            except botocore.exceptions.ClientError as e:  # e.g. the receipt expired meanwhile
                log(f"could not release {m['MessageId']} of group {group}: {e}")

    # ---- loop ----------------------------------------------------------------------------

    def run(self):
        backoff = 0.0
        while not self.stop.is_set():
            try:
                batch = self.receive()
                ok = self.process(batch) if batch else True
                backoff = 0.0 if ok else min(MAX_BACKOFF_S, max(0.5, backoff * 2))
            except Exception as e:  # moto down, network: say so, wait, retry
                backoff = min(MAX_BACKOFF_S, max(0.5, backoff * 2))
                log(f"error: {type(e).__name__}: {e}; retrying in {backoff:.1f} s")
            if backoff:
                # After a function error AWS backs off too; the messages wait out their timeout anyway.
                self.stop.wait(backoff)


def message_attribute(v):
    """SQS API shape (StringValue, BinaryValue as bytes) -> Lambda event shape (camelCase, base64)."""
    out = OrderedDict()
    if "StringValue" in v:
        out["stringValue"] = v["StringValue"]
    if "BinaryValue" in v:
        out["binaryValue"] = base64.b64encode(v["BinaryValue"]).decode()
    out["stringListValues"] = list(v.get("StringListValues", []))
    out["binaryListValues"] = [base64.b64encode(b).decode() for b in v.get("BinaryListValues", [])]
    out["dataType"] = v["DataType"]
    return out


def invoke_reachable(url):
    parsed = urllib.parse.urlsplit(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 80), timeout=2).close()
        return True
    except OSError:
        return False


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()

    def on_signal(signum, _frame):
        if not stop.is_set():
            log(f"{signal.Signals(signum).name}: finishing the batch in flight, then stopping")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if not invoke_reachable(args.invoke_url):
        raise SystemExit(f"sqs-poller: nothing listens at {args.invoke_url}: start the emulator first "
                         f"(infra/lambda-emulator.sh start)")
    # The long poll must fit inside the HTTP read timeout; retries stay bounded.
    config = botocore.config.Config(read_timeout=args.wait_seconds + 10, connect_timeout=5,
                                    retries={"max_attempts": 2, "mode": "standard"})
    sqs = boto3.client("sqs", endpoint_url=args.endpoint_url, region_name=args.region, config=config)
    poller = Poller(args, sqs, stop)
    log(f"polling {args.queue_url} ({'FIFO' if poller.fifo else 'standard'}, visibility {poller.visibility_timeout} s) "
        f"for {args.function} at {args.invoke_url}: batch size {args.batch_size}, concurrency {args.concurrency}, "
        f"invoke timeout {poller.invoke_timeout:g} s")
    threads = [threading.Thread(target=poller.run, name=f"poller-{i}", daemon=True) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=0.5)
    log("stopped")


if __name__ == "__main__":
    main()
