"""Counting proxy in front of moto: which AWS calls the facilitator made, by service and operation.

The load harness (infra/load/run.sh) points the facilitator's AWS_ENDPOINT_URL here instead of at
moto, so it can report KMS Sign, DynamoDB and SQS calls per settlement (DESIGN §8: one KMS Sign
per transaction). Every request is forwarded to moto unchanged, over a kept-alive connection.

    *  /...            forwarded to the upstream; counted
    GET  /__counts     {"http_requests": N, "calls": {"dynamodb": {"GetItem": k, ...}, "kms": {...}},
                        "errors": {"dynamodb": {"PutItem ConditionalCheckFailedException": k}, ...}
                                   (answers with status >= 400, by operation and error code),
                        "upstream_ms": {...same shape as calls: milliseconds spent waiting for moto...},
                        "by_client": {"<label>": {"http_requests": ..., "calls": ..., "errors": ...}}}
    POST /__reset      zero the counts
    GET  /__latency    the added latency
    POST /__latency    {"ms": N}: hold every forwarded call N ms first, as the network between a
                       Lambda function and KMS, DynamoDB or SQS would (the load harness models a
                       deployment with it); 0 (the default) forwards at once

One process can listen on several ports, each with a label, so that the counts say which
component made a call (the settle handler and the settle worker, say) while all of them reach the
same moto. The control paths answer on every port.

The service is the one the request is signed for (the SigV4 credential scope: `dynamodb`, `kms`,
`sqs`), the operation comes from the protocol: `X-Amz-Target` for the JSON protocols
(`DynamoDB_20120810.GetItem`, `TrentService.Sign`, `AmazonSQS.SendMessage`), `Action=` in the form
body or query string for the query protocol (older SQS clients), or the `/service/S/operation/O`
path of Smithy's RPC v2 CBOR protocol. What cannot be named counts as "(unknown)".

Stdlib only. Usage: aws_counter.py UPSTREAM_URL PORT[=LABEL] [PORT[=LABEL] ...]
"""

import http.client
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rpc_counter import parse_latency  # beside this file; both proxies take POST /__latency alike

UPSTREAM_TIMEOUT_S = 120
# AWS_COUNTER_TRACE=<file>: also append one JSON line per forwarded call (wall-clock start and end,
# label, service, operation, status), for a timeline of where a settlement's time goes.
TRACE = open(os.environ["AWS_COUNTER_TRACE"], "a", buffering=1) if os.environ.get("AWS_COUNTER_TRACE") else None
TRACE_LOCK = threading.Lock()
# Not forwarded: they describe one connection, not the request (RFC 9110 §7.6.1), or we re-frame
# the body ourselves.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
              "upgrade", "expect", "content-length"}
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")
CBOR_PATH = re.compile(r"/service/([^/]+)/operation/([^/?]+)")


class Stats:
    def __init__(self):
        self._lock = threading.Lock()
        self._reset()

    def _reset(self):
        self.http_requests = Counter()  # label -> requests
        self.calls = Counter()  # (label, service, operation) -> calls
        self.errors = Counter()  # (label, service, operation) -> answers with status >= 400
        self.upstream_ms = Counter()  # (label, service, operation) -> time waiting for the upstream

    def record(self, label, service, operation, error=None, upstream_s=0.0):
        with self._lock:
            self.http_requests[label] += 1
            self.calls[(label, service, operation)] += 1
            self.upstream_ms[(label, service, operation)] += upstream_s * 1000
            if error:
                self.errors[(label, service, f"{operation} {error}")] += 1

    def reset(self):
        with self._lock:
            self._reset()

    def snapshot(self):
        with self._lock:
            def nest(counter, label=None):
                out = {}
                for (lbl, service, operation), n in sorted(counter.items()):
                    if label is None or lbl == label:
                        out.setdefault(service, {})
                        out[service][operation] = out[service].get(operation, 0) + n
                return out

            return {
                "http_requests": sum(self.http_requests.values()),
                "calls": nest(self.calls),
                "errors": nest(self.errors),
                "upstream_ms": nest(self.upstream_ms),
                "by_client": {
                    label: {"http_requests": n, "calls": nest(self.calls, label), "errors": nest(self.errors, label),
                            "upstream_ms": nest(self.upstream_ms, label)}
                    for label, n in sorted(self.http_requests.items())
                },
            }


def service_of(headers):
    match = CREDENTIAL_SCOPE.search(headers.get("Authorization") or "")
    if match:
        return match.group(1).lower()
    target = headers.get("X-Amz-Target") or ""
    if "." in target:  # unsigned, but says who it is for: DynamoDB_20120810 -> dynamodb
        return target.split(".", 1)[0].split("_", 1)[0].lower().removeprefix("amazon")
    return "(unknown)"


def error_code(status, headers, body):
    """The AWS error code of an answer with status >= 400 (JSON, query/XML and CBOR protocols)."""
    code = dict((k.lower(), v) for k, v in headers).get("x-amzn-errortype")
    if code:
        return code.split(":", 1)[0]
    text = body[:4096].decode("utf-8", "replace")
    match = re.search(r'"__type"\s*:\s*"(?:[^"#]*#)?([^"]+)"', text) or re.search(r"<Code>([^<]+)</Code>", text)
    return match.group(1) if match else f"HTTP {status}"


def operation_of(headers, path, body):
    target = headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    match = CBOR_PATH.search(path)
    if match:
        return match.group(2)
    query = urllib.parse.urlsplit(path).query
    for source in (query, body.decode("utf-8", "replace")
                   if "x-www-form-urlencoded" in (headers.get("Content-Type") or "") else ""):
        action = urllib.parse.parse_qs(source).get("Action")
        if action:
            return action[0]
    return "(unknown)"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards clients
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (40 ms), as rpc_counter.py found.
    disable_nagle_algorithm = True
    stats = Stats()
    latency_ms = 0
    upstream = None  # urllib.parse result, set in main()
    local = threading.local()  # one keep-alive upstream connection per handler thread

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass  # the counts are the log

    def label(self):
        return self.server.label

    def do_GET(self):
        if self.path == "/__counts":
            self.reply(200, self.stats.snapshot())
        elif self.path == "/__latency":
            self.reply(200, {"ms": Handler.latency_ms})
        else:
            self.forward()

    def do_POST(self):
        if self.path == "/__reset":
            self.read_body()
            self.stats.reset()
            self.reply(200, self.stats.snapshot())
        elif self.path == "/__latency":
            ms = parse_latency(self.read_body())
            if ms is None:
                self.reply(400, {"error": 'expected {"ms": a number from 0 to 10000}'})
                return
            Handler.latency_ms = ms
            self.reply(200, {"ms": ms})
        else:
            self.forward()

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def forward(self):
        entered = time.time()
        body = self.read_body()
        service = service_of(self.headers)
        operation = operation_of(self.headers, self.path, body)
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        if Handler.latency_ms:
            time.sleep(Handler.latency_ms / 1000)
        started = time.perf_counter()
        wall = time.time()
        try:
            status, reason, answer_headers, answer = self.call_upstream(self.command, self.path, headers, body)
        except (http.client.HTTPException, OSError) as e:
            self.stats.record(self.label(), service, operation, "upstream unreachable")
            self.reply(502, {"error": f"upstream unreachable: {e}"})
            return
        self.stats.record(self.label(), service, operation,
                          error_code(status, answer_headers, answer) if status >= 400 else None,
                          time.perf_counter() - started)
        if TRACE:
            line = json.dumps({"t0": wall, "entered": entered, "t1": wall + time.perf_counter() - started, "label": self.label(),
                               "service": service, "op": operation, "status": status})
            with TRACE_LOCK:
                TRACE.write(line + "\n")
        self.send_response(status, reason)
        for key, value in answer_headers:
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)

    do_PUT = do_DELETE = do_HEAD = do_PATCH = forward

    def call_upstream(self, method, path, headers, body):
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            try:
                return self.exchange(conn, method, path, headers, body)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # moto closed the idle kept-alive connection before reading the request; one
                # retry on a fresh connection is safe.
                conn.close()
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=UPSTREAM_TIMEOUT_S)
        self.local.conn = conn
        try:
            return self.exchange(conn, method, path, headers, body)
        except (http.client.HTTPException, OSError):
            conn.close()
            self.local.conn = None
            raise

    def exchange(self, conn, method, path, headers, body):
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers:
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.reason, response.getheaders(), response.read()

    def reply(self, status, document):
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a load run opens dozens of connections at once

    def __init__(self, port, label):
        super().__init__(("127.0.0.1", port), Handler)
        self.label = label


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: aws_counter.py UPSTREAM_URL PORT[=LABEL] [PORT[=LABEL] ...]")
    Handler.upstream = urllib.parse.urlsplit(sys.argv[1])
    servers = []
    for spec in sys.argv[2:]:
        port, _, label = spec.partition("=")
        servers.append(Server(int(port), label or port))
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    listening = ", ".join(f"127.0.0.1:{s.server_address[1]} ({s.label})" for s in servers)
    print(f"aws_counter on {listening} -> {sys.argv[1]}", flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
