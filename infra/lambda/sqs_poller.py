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
- batches run concurrently, up to --concurrency at once, as the mapping's pollers and Lambda's
  instances do. On a FIFO queue, SQS never hands out a group that has messages in flight, and
  Lambda runs up to one batch per active message group at once; so the poller gives each group of
  a receive its own batch, in queue order (AWS may also put several short groups in one batch;
  the worker handles both). Different groups (lanes) run side by side and one group never has two
  batches in flight (DESIGN I4's "one sender per lane"). The poller also keeps its own list of the
  groups in flight: should the queue ever hand one out again, that batch waits behind the one in
  flight (and a warning says so);
- a standard queue's batch is what one ReceiveMessage returns (or the batching window gathers),
  up to --batch-size;
- the partial batch response is read by Lambda's rules: an empty/null list or an empty/null/other
  JSON response is a complete success; an invalid JSON response, or an entry whose itemIdentifier is
  missing, empty, not a string or not a messageId of the batch, fails the whole batch;
- on a FIFO queue, keeping order when one message of a group fails is the function's job: it must
  list that message and every later message of its group in the batch. AWS deletes whatever is not
  listed, and so does this poller by default (--unreported-tail delete), logging a warning that
  names the messages, so a handler that forgets the tail fails its tests here rather than
  reordering a lane in production. --unreported-tail keep leaves them in the queue instead;
- FIFO queues take no batching window (AWS refuses one); standard queues do.

What is added for moto (infra/lambda/sqs_poller_selftest.py shows each of these):
- moto 5.2.5 redelivers a FIFO group whose messages all came back together last message first
  (its group lock is released one message at a time while it scans the queue). When a group
  leaves more than one message in the queue, the poller makes all but the first visible at once
  (ChangeMessageVisibility 0); the group stays locked by its first message, so nothing is
  delivered early, and when that one's timeout ends the group comes back in order, as in AWS.
- moto's receive is not atomic between concurrent requests (two could take the same group), and
  its delete can change the in-flight set while a receive reads it: every SQS call of the poller
  is made under one lock, and only one thread receives.
- moto's long poll decides which groups are locked when it starts, and while visible messages of
  a locked group wait it spins on the queue instead of sleeping. So the poller long-polls only
  when it has nothing in flight and holds no failed messages; otherwise it asks without waiting
  (WaitTimeSeconds 0) as soon as a batch finishes, and every BUSY_POLL_S (HELD_POLL_S) in between.

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
  --concurrency        X402_POLLER_CONCURRENCY, 5           (batches in flight at once; a FIFO
                                                              queue has at most one per group)
  --unreported-tail    X402_POLLER_UNREPORTED_TAIL, delete  (delete | keep)

Logs one line per batch to stdout. SIGTERM or SIGINT: no new receive starts, the batches already
received are finished (each invoke is bounded by --invoke-timeout), then it exits 0.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

# X402_POLLER_TRACE=<file>: also append one JSON line per batch (wall-clock times of the invoke, its
# answer and the deletes; each message's SentTimestamp, group and body), for a timeline of a
# settlement and for the queue hop the load harness reports (infra/load/lib/queue-hop.mjs).
TRACE = open(os.environ["X402_POLLER_TRACE"], "a", buffering=1) if os.environ.get("X402_POLLER_TRACE") else None
TRACE_LOCK = threading.Lock()

import boto3
import botocore.config
import botocore.exceptions

MAX_BACKOFF_S = 10.0
# While batches are in flight the poller cannot long-poll (see the top): it asks again at once when
# a batch finishes, and this often in between, so a message of an idle group waits at most this.
BUSY_POLL_S = 0.05
# With nothing in flight but failed messages holding their groups (until their visibility timeout),
# it asks this often: nothing of those groups can come sooner, only other groups' messages.
HELD_POLL_S = 0.25


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
    p.add_argument("--concurrency", type=int, default=int(env_default("X402_POLLER_CONCURRENCY", default="5")))
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
        # Every SQS call under one lock: moto's receive is not atomic between threads (two could
        # take the same group) and a concurrent delete can change its in-flight set mid-read,
        # while SQS's calls are atomic. Holding a lock keeps moto's answers what SQS's are.
        self.sqs_lock = threading.Lock()
        # What is in flight, under state_lock: the groups (on a standard queue, one key per batch)
        # whose batch is being invoked, batches received but waiting for a free slot or for their
        # group, and until when a failed message we left in the queue keeps its group locked.
        self.state_lock = threading.Lock()
        self.running = set()
        self.waiting = OrderedDict()  # key -> [batch, ...], in the order received
        self.held_until = 0.0
        self.changed = threading.Event()  # set when a batch finishes
        self.pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="batch")
        self.batches = 0

    # ---- receive -------------------------------------------------------------------------

    def receive(self, long_poll):
        """Up to batch_size messages, or [] after one poll (or the batching window) found none.
        Without long_poll, one ReceiveMessage that does not wait."""
        batch = []
        deadline = time.monotonic() + (self.args.batching_window if long_poll else 0)
        while not self.stop.is_set():
            wait = self.args.wait_seconds if long_poll else 0
            if self.args.batching_window and long_poll:
                wait = max(0, min(wait, int(deadline - time.monotonic() + 0.999)))
            with self.sqs_lock:
                got = self.sqs.receive_message(
                    QueueUrl=self.args.queue_url,
                    MaxNumberOfMessages=min(10, self.args.batch_size - len(batch)),
                    WaitTimeSeconds=wait,
                    AttributeNames=["All"],
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            batch += got
            if len(batch) >= self.args.batch_size or not self.args.batching_window or not long_poll:
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
        endpoint = urllib.parse.urlsplit(self.invoke_endpoint)
        # The request goes out in one write, on a fresh connection with Nagle off. cargo-lambda's
        # emulator hands the invoke's body to the function as it streams in, and its server leaves
        # Nagle on: when the body arrives after the headers (http.client writes them separately),
        # the function's runtime receives it only after its delayed ACK of the headers, 40 ms late.
        head = (f"POST {endpoint.path} HTTP/1.1\r\nHost: {endpoint.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n")
        try:
            with socket.create_connection((endpoint.hostname, endpoint.port or 80), timeout=self.invoke_timeout) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(head.encode() + data)
                resp = http.client.HTTPResponse(sock)
                resp.begin()
                payload = resp.read()
                status = resp.status
                function_error = resp.getheader("X-Amz-Function-Error")
        except (http.client.HTTPException, OSError) as e:
            raise FunctionError(f"invoke failed: {e}") from None
        if status >= 400:
            # cargo-lambda answers a function error (the runtime's /invocation/<id>/error) with 500
            # and the error document; a missing function is a 404.
            raise FunctionError(f"HTTP {status}: {payload[:300].decode(errors='replace')}")
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
        wall = time.time()
        ids = [m["MessageId"] for m in batch]
        error = None
        try:
            failed = self.failed_ids(self.invoke({"Records": [self.record(m) for m in batch]}), set(ids))
        except FunctionError as e:
            error, failed = str(e), set(ids)
        invoked = time.time()

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
        if keep:
            # They stay in flight until their visibility timeout and keep their group locked:
            # until then the poller must not long-poll (see the top).
            with self.state_lock:
                self.held_until = max(self.held_until, time.monotonic() + self.visibility_timeout)
        if self.fifo:
            self.release_group_tails(keep)

        if TRACE:
            line = json.dumps({"invoke": wall, "invoked": invoked, "deleted": time.time(),
                               "sent": [int(m.get("Attributes", {}).get("SentTimestamp", 0)) / 1000 for m in batch],
                               "groups": [group_of[m["MessageId"]] for m in batch],
                               "bodies": [m["Body"] for m in batch]})
            with TRACE_LOCK:
                TRACE.write(line + "\n")
        with self.state_lock:
            self.batches += 1
            n = self.batches
        groups = ", ".join(sorted({str(group_of[i]) for i in ids})) if self.fifo else "-"
        line = (f"batch {n}: {len(batch)} messages, group {groups}, {len(keep)} failed, "
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
            with self.sqs_lock:
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
                with self.sqs_lock:
                    self.sqs.change_message_visibility(QueueUrl=self.args.queue_url,
                                                       ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
            except botocore.exceptions.ClientError as e:  # e.g. the receipt expired meanwhile
                log(f"could not release {m['MessageId']} of group {group}: {e}")

    # ---- loop ----------------------------------------------------------------------------

    def dispatch(self, batch):
        """Splits what one receive returned into batches (one per FIFO group, in queue order) and
        starts them as slots free up."""
        split = OrderedDict()
        for m in batch:
            key = m.get("Attributes", {}).get("MessageGroupId") if self.fifo else None
            split.setdefault(key if self.fifo else id(batch), []).append(m)
        with self.state_lock:
            for key, messages in split.items():
                if key in self.running or key in self.waiting:
                    # SQS never does this (the group is locked while in flight); if a queue ever
                    # does, the batch waits for the one in flight, so the group stays exclusive.
                    log(f"WARNING: group {key} was handed out while a batch of it is in flight; "
                        f"it waits behind that batch")
                self.waiting.setdefault(key, []).append(messages)
            self.start_ready()

    def start_ready(self):
        """Starts waiting batches while slots are free, never two of one group. Holds state_lock."""
        for key in list(self.waiting):
            if len(self.running) >= self.args.concurrency:
                return
            if key in self.running:
                continue
            queued = self.waiting[key]
            messages = queued.pop(0)
            if not queued:
                del self.waiting[key]
            self.running.add(key)
            self.pool.submit(self.run_batch, key, messages)

    def run_batch(self, key, messages):
        try:
            self.process(messages)
        except Exception as e:  # moto down while deleting: the messages come back after their timeout
            log(f"error finishing a batch of group {key}: {type(e).__name__}: {e}")
        finally:
            with self.state_lock:
                self.running.discard(key)
                self.start_ready()
            self.changed.set()

    def run(self):
        """The one receiving thread: receives while a slot is free, hands batches to the pool."""
        backoff = 0.0
        while not self.stop.is_set():
            # Cleared before the state is read: a batch finishing after this wakes the wait below.
            self.changed.clear()
            with self.state_lock:
                full = len(self.running) >= self.args.concurrency or bool(self.waiting)
                running = bool(self.running)
                busy = running or time.monotonic() < self.held_until
            if full:  # every slot has a batch, as at Lambda's concurrency limit: receive nothing
                self.changed.wait(0.5)
                continue
            try:
                batch = self.receive(long_poll=not busy)
                backoff = 0.0
            except Exception as e:  # moto down, network: say so, wait, retry
                backoff = min(MAX_BACKOFF_S, max(0.5, backoff * 2))
                log(f"error: {type(e).__name__}: {e}; retrying in {backoff:.1f} s")
                self.stop.wait(backoff)
                continue
            if batch:
                self.dispatch(batch)
            elif busy:
                self.changed.wait(BUSY_POLL_S if running else HELD_POLL_S)
        # Finish what was received, waiting batches too: their messages are in flight and would
        # otherwise wait out their visibility timeout.
        while True:
            with self.state_lock:
                if not self.running and not self.waiting:
                    break
            time.sleep(0.05)
        self.pool.shutdown(wait=True)


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
            log(f"{signal.Signals(signum).name}: finishing the batches received, then stopping")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if not invoke_reachable(args.invoke_url):
        raise SystemExit(f"sqs-poller: nothing listens at {args.invoke_url}: start the emulator first "
                         f"(infra/lambda/lambda-emulator.sh start)")
    # The long poll must fit inside the HTTP read timeout; retries stay bounded.
    config = botocore.config.Config(read_timeout=args.wait_seconds + 10, connect_timeout=5,
                                    retries={"max_attempts": 2, "mode": "standard"})
    sqs = boto3.client("sqs", endpoint_url=args.endpoint_url, region_name=args.region, config=config)
    poller = Poller(args, sqs, stop)
    log(f"polling {args.queue_url} ({'FIFO' if poller.fifo else 'standard'}, visibility {poller.visibility_timeout} s) "
        f"for {args.function} at {args.invoke_url}: batch size {args.batch_size}, concurrency {args.concurrency}, "
        f"invoke timeout {poller.invoke_timeout:g} s")
    receiver = threading.Thread(target=poller.run, name="receiver", daemon=True)
    receiver.start()
    while receiver.is_alive():
        receiver.join(timeout=0.5)
    log("stopped")


if __name__ == "__main__":
    main()
