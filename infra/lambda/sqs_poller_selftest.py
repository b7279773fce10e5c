"""Self-test of infra/lambda/sqs_poller.py against the real parts: moto's SQS (a running local stack),
cargo-lambda's runtime emulator, and a consumer attached to it through the Lambda runtime API
(AWS_LAMBDA_RUNTIME_API), the way the Rust settle-worker will be. The consumer is a stand-in written
here in Python: no Rust build needed.

  set -a; . .local/stack/stack.env; set +a
  .local/venv/bin/python infra/lambda/sqs_poller_selftest.py          # about 15 s

It first checks what the local settlement path relies on in moto's FIFO queues (among them that
moto itself withholds a group while part of it is in flight and hands out the other groups) and
prints where moto differs from AWS. Then it creates a throwaway FIFO queue (visibility timeout 1 s, maxReceiveCount 5)
and its DLQ, starts the emulator and the poller as the stack would, and sends three message groups:

  lane-0  a0..a5   a2 crashes the function the first time it is seen (the whole batch fails);
                   a5 fails every time (last of its group): it must reach the DLQ after 5 receives
  lane-1  b0..b5   b1 fails twice then succeeds: b2..b5 must wait for it and keep their order
  lane-2  c0..c2   c1 fails every time; c2, behind it, is reported with it each time (as a FIFO
                   handler must), is received as often, and so reaches the DLQ too: that is what
                   AWS does with a poison message's group, shown here on purpose

with three consumer instances attached and the poller's --concurrency 3, and asserts: batches of
different groups ran side by side, never two of one group, each batch one group; per group,
successful deliveries in send order; nothing delivered again after it succeeded; every message either succeeded exactly once or is in the DLQ; the DLQ holds exactly
a5, c1, c2 (each received 5 times); the source queue ends empty; every event has the shape Lambda
sends; the poller stops cleanly on SIGTERM. Exits 0 on success.
Environment: AWS_ENDPOINT_URL (or X402_STACK_DIR/stack.env), AWS_REGION.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VENV_BIN = os.path.join(REPO, ".local", "venv", "bin")
FUNCTION = "sqs-selftest-consumer"
VISIBILITY_S = 1
MAX_RECEIVES = 5
DEADLINE_S = 50
INSTANCES = 3  # consumer instances attached to the emulator, and the poller's --concurrency

RECORD_KEYS = {"messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
               "eventSource", "eventSourceARN", "awsRegion"}
FIFO_ATTRIBUTES = {"ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp",
                   "SequenceNumber", "MessageGroupId", "MessageDeduplicationId"}

failures = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def load_stack_env():
    if os.environ.get("AWS_ENDPOINT_URL"):
        return
    path = os.path.join(os.environ.get("X402_STACK_DIR", os.path.join(REPO, ".local", "stack")), "stack.env")
    if not os.path.exists(path):
        sys.exit(f"selftest: no AWS_ENDPOINT_URL and no {path}: start the stack (infra/stack/stack.sh up)")
    for line in open(path):
        if "=" in line and not line.startswith("#"):
            k, v = line.rstrip("\n").split("=", 1)
            os.environ.setdefault(k, v.strip("'"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_fifo(sqs, name, **attributes):
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false",
                                                       **{k: str(v) for k, v in attributes.items()}})["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def receive(sqs, url, wait=1):
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait, AttributeNames=["All"],
                               MessageSystemAttributeNames=["All"]).get("Messages", [])


# ---- part 1: what moto's FIFO queues do ---------------------------------------------------------

def check_moto(sqs, tag):
    print("moto's FIFO queues:")
    dlq, dlq_arn = create_fifo(sqs, f"{tag}-moto-dlq.fifo")
    q, _ = create_fifo(sqs, f"{tag}-moto.fifo", VisibilityTimeout=1,
                       RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))
    try:
        for i in range(3):
            for g in "xy":
                sqs.send_message(QueueUrl=q, MessageBody=f"{g}{i}", MessageGroupId=g, MessageDeduplicationId=f"{g}{i}")
        sqs.send_message(QueueUrl=q, MessageBody="x0 again", MessageGroupId="x", MessageDeduplicationId="x0")
        got = receive(sqs, q)
        bodies = [m["Body"] for m in got]
        check([b for b in bodies if b[0] == "x"] == ["x0", "x1", "x2"] and [b for b in bodies if b[0] == "y"] == ["y0", "y1", "y2"],
              f"first delivery keeps each group's order ({bodies})")
        check("x0 again" not in bodies, "a second send with the same MessageDeduplicationId is dropped")
        check(receive(sqs, q, wait=0) == [], "no message of a group with messages in flight is handed out")
        seqs = [int(m["Attributes"]["SequenceNumber"]) for m in got]  # in send order, as checked above
        if seqs != sorted(seqs):
            print(f"  moto  SequenceNumber is random, not increasing as in AWS ({seqs}): never order by it")
        time.sleep(VISIBILITY_S + 0.2)
        again = [m["Body"] for m in receive(sqs, q)]
        if again and again[0] in ("x2", "y2"):
            print(f"  moto  a group whose messages all come back is redelivered last message first ({again}); "
                  "AWS starts from the group's head. sqs_poller.py works around it")
        # Fresh queues for the rest: moto, like SQS, allows one PurgeQueue a minute.
        z, _ = create_fifo(sqs, f"{tag}-moto-z.fifo")
        sqs.send_message(QueueUrl=z, MessageBody="z", MessageGroupId="z", MessageDeduplicationId="z")
        for m in receive(sqs, z):
            sqs.delete_message(QueueUrl=z, ReceiptHandle=m["ReceiptHandle"])
        sqs.send_message(QueueUrl=z, MessageBody="z again", MessageGroupId="z", MessageDeduplicationId="z")
        if [m["Body"] for m in receive(sqs, z)] == ["z again"]:
            print("  moto  a MessageDeduplicationId is forgotten once its message is deleted (AWS remembers it "
                  "for 5 minutes from the first send): local tests cannot rely on SQS to drop a late duplicate")
        sqs.delete_queue(QueueUrl=z)
        r, _ = create_fifo(sqs, f"{tag}-moto-r.fifo", VisibilityTimeout=1,
                           RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))
        sqs.send_message(QueueUrl=r, MessageBody="r", MessageGroupId="r", MessageDeduplicationId="r")
        counts = []
        for _ in range(4):
            counts += [m["Attributes"]["ApproximateReceiveCount"] for m in receive(sqs, r, wait=2)]
            if len(counts) >= 2:
                time.sleep(VISIBILITY_S + 0.1)
                leaked = receive(sqs, r, wait=0)  # the receive on which the redrive happens
                break
        in_dlq = receive(sqs, dlq)
        check(counts == ["1", "2"] and not leaked and [m["Body"] for m in in_dlq] == ["r"],
              f"maxReceiveCount 2: received twice (counts {counts}), then moved to the DLQ on the next receive")
        sqs.delete_queue(QueueUrl=r)
        check_group_lock(sqs, tag)
    finally:
        sqs.delete_queue(QueueUrl=q)
        sqs.delete_queue(QueueUrl=dlq)


def check_group_lock(sqs, tag):
    """What the poller's concurrency rests on: moto itself withholds a group while part of it is
    in flight, and hands out the other groups meanwhile."""
    g, _ = create_fifo(sqs, f"{tag}-moto-g.fifo", VisibilityTimeout=30)
    try:
        for body in ("x0", "x1", "x2", "y0", "y1"):
            sqs.send_message(QueueUrl=g, MessageBody=body, MessageGroupId=body[0], MessageDeduplicationId=body)
        first = sqs.receive_message(QueueUrl=g, MaxNumberOfMessages=1, AttributeNames=["All"]).get("Messages", [])
        check([m["Body"] for m in first] == ["x0"], f"a receive of one message takes the head of the first group ({[m['Body'] for m in first]})")
        second = [m["Body"] for m in receive(sqs, g, wait=0)]
        check(second == ["y0", "y1"], f"while x0 is in flight, x1 and x2 are withheld and group y is handed out ({second})")
        check(receive(sqs, g, wait=0) == [], "with both groups in flight, nothing is handed out")
        sqs.delete_message(QueueUrl=g, ReceiptHandle=first[0]["ReceiptHandle"])
        rest = [m["Body"] for m in receive(sqs, g, wait=0)]
        check(rest == ["x1", "x2"], f"once x0 is deleted, x1 and x2 follow in order ({rest})")
        # A long poll that starts while a group is locked and sees it unlock midway: AWS answers
        # with the group's next message; moto decided which groups are locked when the poll started.
        sqs.send_message(QueueUrl=g, MessageBody="z0", MessageGroupId="z", MessageDeduplicationId="z0")
        z0 = receive(sqs, g, wait=0)
        sqs.send_message(QueueUrl=g, MessageBody="z1", MessageGroupId="z", MessageDeduplicationId="z1")
        unlock = threading.Timer(0.3, lambda: sqs.delete_message(QueueUrl=g, ReceiptHandle=z0[0]["ReceiptHandle"]))
        unlock.start()
        t0 = time.monotonic()
        late = [m["Body"] for m in receive(sqs, g, wait=2)]
        took = time.monotonic() - t0
        unlock.join()
        if late != ["z1"] or took > 1:
            print(f"  moto  a long poll that starts while a group is locked does not see it unlock (after "
                  f"{took:.1f} s: {late}); AWS would answer with z1 at once. sqs_poller.py does not long-poll "
                  f"while it has batches in flight")
    finally:
        sqs.delete_queue(QueueUrl=g)


# ---- part 2: the stand-in consumer --------------------------------------------------------------

class Consumer:
    """A FIFO settle-worker's contract, in Python: process records in order; on a failure, report it
    and every later record of the same group; a crash fails the invocation (runtime /error).
    Several instances (threads) attach to the emulator, as Lambda runs several at once, and each
    invocation takes WORK_S, so batches that run side by side overlap."""

    WORK_S = 0.15

    def __init__(self, runtime_api, fail_times, crash_once):
        self.api = runtime_api
        self.fail_times = dict(fail_times)  # body -> failures left (a large number: always)
        self.crash_once = set(crash_once)
        self.log = []  # (invocation number, body, messageId, receive count, outcome)
        self.events = []
        self.intervals = []  # (start, end, groups) of every invocation, as the consumer saw it
        self.invocations = 0
        self.lock = threading.Lock()

    def handle(self, event):
        started = time.monotonic()
        time.sleep(self.WORK_S)
        groups = {r["attributes"].get("MessageGroupId") for r in event["Records"]}
        try:
            with self.lock:
                return self.outcome(event)
        finally:
            with self.lock:
                self.intervals.append((started, time.monotonic(), groups))

    def outcome(self, event):
        self.events.append(event)
        self.invocations += 1
        bodies = [r["body"] for r in event["Records"]]
        crash = self.crash_once & set(bodies)
        if crash:
            self.crash_once -= crash
            for r in event["Records"]:
                self.log.append((self.invocations, r["body"], r["messageId"], r["attributes"]["ApproximateReceiveCount"], "crash"))
            raise RuntimeError(f"selftest crash on {sorted(crash)}")
        failed_groups, failures = set(), []
        for r in event["Records"]:
            group = r["attributes"].get("MessageGroupId")
            outcome = "ok"
            if group in failed_groups:
                outcome = "skipped"
            elif self.fail_times.get(r["body"], 0) > 0:
                self.fail_times[r["body"]] -= 1
                outcome = "failed"
                failed_groups.add(group)
            if outcome != "ok":
                failures.append({"itemIdentifier": r["messageId"]})
            self.log.append((self.invocations, r["body"], r["messageId"], r["attributes"]["ApproximateReceiveCount"], outcome))
        return {"batchItemFailures": failures}

    def run(self):
        base = f"{self.api}/2018-06-01/runtime/invocation"
        while True:
            try:
                with urllib.request.urlopen(f"{base}/next") as resp:  # blocks until an invoke, like a runtime
                    request_id = resp.headers["Lambda-Runtime-Aws-Request-Id"]
                    event = json.loads(resp.read())
            except OSError:
                return  # the emulator went away
            try:
                path, body = "response", json.dumps(self.handle(event)).encode()
                headers = {"Content-Type": "application/json"}
            except Exception as e:
                path = "error"
                body = json.dumps({"errorType": type(e).__name__, "errorMessage": str(e)}).encode()
                headers = {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": "Unhandled"}
            urllib.request.urlopen(urllib.request.Request(f"{base}/{request_id}/{path}", data=body, headers=headers,
                                                          method="POST")).read()


def start_emulator(workdir, port, log_path):
    # cargo-lambda reads `cargo metadata` to learn the functions' names: a one-binary package,
    # never built, is enough to make FUNCTION a known function.
    with open(os.path.join(workdir, "Cargo.toml"), "w") as f:
        f.write(f'[package]\nname = "sqs-poller-selftest"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n'
                f'[[bin]]\nname = "{FUNCTION}"\npath = "main.rs"\n\n[workspace]\n')
    with open(os.path.join(workdir, "main.rs"), "w") as f:
        f.write("fn main() {}\n")
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    proc = subprocess.Popen(["cargo", "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", str(port)],
                            cwd=workdir, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"selftest: the emulator exited:\n{open(log_path).read()[-2000:]}")
            time.sleep(0.1)
    sys.exit("selftest: the emulator did not listen within 10 s")


def stop(proc, sig=signal.SIGTERM):
    if proc and proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def poller_test(sqs, tag, workdir):
    print("sqs_poller.py with a FIFO queue, cargo-lambda and a stand-in consumer:")
    dlq, dlq_arn = create_fifo(sqs, f"{tag}-dlq.fifo")
    q, q_arn = create_fifo(sqs, f"{tag}.fifo", VisibilityTimeout=VISIBILITY_S,
                           RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES}))
    port = free_port()
    emulator = start_emulator(workdir, port, os.path.join(workdir, "emulator.log"))
    poller = None
    try:
        consumer = Consumer(f"http://127.0.0.1:{port}/.rt/{FUNCTION}",
                            fail_times={"b1": 2, "a5": 1000, "c1": 1000}, crash_once={"a2"})
        for _ in range(INSTANCES):
            threading.Thread(target=consumer.run, daemon=True).start()

        groups = {"lane-0": [f"a{i}" for i in range(6)], "lane-1": [f"b{i}" for i in range(6)], "lane-2": ["c0", "c1", "c2"]}
        sent = {}
        for group, bodies in groups.items():
            for body in bodies:
                attrs = {"lane": {"DataType": "String", "StringValue": group}}
                sent[body] = sqs.send_message(QueueUrl=q, MessageBody=body, MessageGroupId=group,
                                              MessageDeduplicationId=f"{tag}-{body}", MessageAttributes=attrs)["MessageId"]

        started = time.monotonic()
        poller_log = os.path.join(workdir, "poller.log")
        poller = subprocess.Popen([sys.executable, "-u", os.path.join(HERE, "sqs_poller.py"), "--queue-url", q,
                                   "--function", FUNCTION, "--invoke-url", f"http://127.0.0.1:{port}", "--wait-seconds", "1",
                                   "--concurrency", str(INSTANCES)],
                                  stdout=open(poller_log, "w"), stderr=subprocess.STDOUT)
        in_dlq = {}
        while time.monotonic() - started < DEADLINE_S:
            time.sleep(0.5)
            a = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["All"])["Attributes"]
            left = int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
            for m in receive(sqs, dlq, wait=0):
                in_dlq[m["Body"]] = m
                sqs.delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])
            if left == 0 and len(in_dlq) >= 3:
                break
        elapsed = time.monotonic() - started
        # The poller is stopped while it long-polls: it must exit cleanly and say so.
        t0 = time.monotonic()
        poller.send_signal(signal.SIGTERM)
        rc = poller.wait(timeout=15)
        stop_s = time.monotonic() - t0
        out = open(poller_log).read()
        print("  poller log:\n" + "".join(f"    {line}\n" for line in out.splitlines()), end="")

        check(left == 0, f"the source queue ended empty ({left} left after {elapsed:.1f} s)")
        check(set(in_dlq) == {"a5", "c1", "c2"}, f"the DLQ holds exactly a5, c1, c2 ({sorted(in_dlq)})")
        log = consumer.log
        for body in ("a5", "c1", "c2"):
            counts = [int(c) for _, b, _, c, _ in log if b == body]
            check(counts and max(counts) == MAX_RECEIVES, f"{body} was received {MAX_RECEIVES} times before the DLQ ({counts})")
        succeeded = [b for _, b, _, _, o in log if o == "ok"]
        check(len(succeeded) == len(set(succeeded)), "no message succeeded twice")
        expected_ok = set(sent) - {"a5", "c1", "c2"}
        check(set(succeeded) == expected_ok, f"every other message succeeded exactly once (missing {sorted(expected_ok - set(succeeded))})")
        for group, bodies in groups.items():
            order = [b for b in succeeded if b in bodies]
            check(order == [b for b in bodies if b in order], f"{group}: successes in send order ({order})")
        after_success = [b for i, (_, b, _, _, o) in enumerate(log) if any(b2 == b and o2 == "ok" for _, b2, _, _, o2 in log[:i])]
        check(not after_success, f"nothing was delivered again after it succeeded ({after_success})")
        b1 = [o for _, b, _, _, o in log if b == "b1"]
        check(b1[-1] == "ok" and b1.count("failed") == 2, f"b1 failed twice then succeeded ({b1})")
        check(any(o == "crash" for _, b, _, _, o in log if b == "a2") and "function error, nothing deleted" in out,
              "a2's crash failed its whole batch, which came back")
        check("WARNING" not in out, "no unreported FIFO tail and no group handed out twice (no warning)")
        spans = sorted(consumer.intervals, key=lambda i: i[0])
        overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if b[0] < a[1]]
        same_group = [(sorted(a[2]), sorted(b[2])) for a, b in overlapping if a[2] & b[2]]
        check(not same_group, f"no two invocations of one group overlapped ({same_group[:3]})")
        check(all(len(i[2]) == 1 for i in spans), "every batch held one group")
        check(len(overlapping) > 0, f"batches of different groups ran side by side ({len(overlapping)} overlapping pairs "
              f"of {len(spans)} invocations, {INSTANCES} instances)")
        ids = {m: b for b, m in sent.items()}
        shape_ok = all(set(r) == RECORD_KEYS | {"md5OfMessageAttributes"} and FIFO_ATTRIBUTES <= set(r["attributes"])
                       and r["eventSource"] == "aws:sqs" and r["eventSourceARN"] == q_arn and ids.get(r["messageId"]) == r["body"]
                       and r["messageAttributes"]["lane"] == {"stringValue": r["attributes"]["MessageGroupId"],
                                                              "stringListValues": [], "binaryListValues": [], "dataType": "String"}
                       for e in consumer.events for r in e["Records"])
        check(shape_ok, "every record has the fields and attributes Lambda sends")
        check(rc == 0 and "sqs-poller: stopped" in out, f"SIGTERM stopped the poller cleanly (exit {rc}, {stop_s:.1f} s)")
        print(f"  {consumer.invocations} invocations; settled in {elapsed:.1f} s")
        print("  an event as sent:\n    " + json.dumps(consumer.events[0]["Records"][0], indent=2).replace("\n", "\n    "))
    finally:
        stop(poller)
        stop(emulator)
        sqs.delete_queue(QueueUrl=q)
        sqs.delete_queue(QueueUrl=dlq)


def main():
    load_stack_env()
    sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                       region_name=os.environ.get("AWS_REGION", "us-east-1"))
    tag = f"x402-selftest-{os.getpid()}"
    workdir = tempfile.mkdtemp(prefix="sqs-poller-selftest-")
    started = time.monotonic()
    try:
        check_moto(sqs, tag)
        poller_test(sqs, tag, workdir)
    finally:
        if not failures:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        print(f"selftest: {len(failures)} FAILED ({time.monotonic() - started:.0f} s); logs in {workdir}")
        sys.exit(1)
    print(f"selftest: all passed in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
