"""JSON-RPC counting proxy in front of anvil, with switchable faults.

Tests point the facilitator's RPC URL here instead of at anvil so they can assert
how many chain calls a request made (DESIGN §8: one round trip per verify) and
make the chain misbehave on purpose (fault tests, DESIGN §7).

    POST /             forwarded to the upstream; counted
    GET  /__counts     {"http_requests": N, "rpc_requests": M, "methods": {"eth_call": k, ...}}
    POST /__reset      zero the counts
    GET  /__fault      the current fault
    POST /__fault      {"mode": "none"|"error"|"hang"|"drop"|"node_error"|"lag"|"unauthorized"|"poor"|"missing",
                        "methods": ["eth_call", ...], "count": N}
    GET  /__latency    the added latency
    POST /__latency    {"ms": N}: hold every forwarded request N ms first, as a remote RPC
                       provider's round trip would (the load harness models a deployment's
                       network with it); 0 (the default) forwards at once

A JSON-RPC batch is one HTTP request and one RPC request per entry. Faulted requests
are counted too: the counts say what the client sent, not what anvil answered.
Fault modes: "error" answers HTTP 503; "hang" holds the request until the fault is
changed (or HANG_LIMIT_S passes, so no thread waits forever); "drop" closes the
connection without an answer; "node_error" answers HTTP 200 with a JSON-RPC error
per entry, as a rate-limited or unsynced node does ({"code": -32005, "message":
"rate limit exceeded"}); "lag" answers `null` for the faulted methods, as a node
that has not seen a transaction yet does (meant for eth_getTransactionReceipt and
eth_getTransactionByHash), and forwards the rest; "unauthorized" answers HTTP 401, as a
provider does for an API key it no longer accepts (a rotated key); "poor" answers an
eth_estimateGas that offers a fee (maxFeePerGas or gasPrice above zero) as geth does when the
sender cannot pay for the gas at that fee ({"code": -32000, "message": "gas required exceeds
allowance (0)"}) and forwards everything else, so every sender looks out of gas (anvil does not cap
an estimate by the sender's balance, so a lane without gas cannot be had for real); "missing" answers
HTTP 200 with geth's JSON-RPC "method not found" per entry ({"code": -32601, "message": "the method
... does not exist/is not available"}), as a node without an optional method (say
eth_sendRawTransactionSync) does. `methods` limits the fault to
requests that contain one of those methods; absent or empty means every request.
`count` (optional) lifts the fault by itself after that many faulted requests.

Stdlib only. Usage: rpc_counter.py LISTEN_PORT UPSTREAM_URL
"""

import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANG_LIMIT_S = 600
FAULT_MODES = ("none", "error", "hang", "drop", "node_error", "lag", "unauthorized", "poor", "missing")
NODE_ERROR = {"code": -32005, "message": "rate limit exceeded"}
# geth's answer to an estimate whose sender cannot pay for any gas at the fee it offers.
NO_GAS_MONEY = {"code": -32000, "message": "gas required exceeds allowance (0)"}
# RPC_COUNTER_TRACE=<file>: also append one JSON line per forwarded request (wall-clock start and
# end, its methods), for a timeline of where a settlement's time goes.
TRACE = open(os.environ["RPC_COUNTER_TRACE"], "a", buffering=1) if os.environ.get("RPC_COUNTER_TRACE") else None
TRACE_LOCK = threading.Lock()


class Stats:
    def __init__(self):
        self._lock = threading.Lock()
        self._reset()

    def _reset(self):
        self.http_requests = 0
        self.methods = Counter()

    def record(self, methods):
        with self._lock:
            self.http_requests += 1
            self.methods.update(methods)

    def reset(self):
        with self._lock:
            self._reset()

    def snapshot(self):
        with self._lock:
            return {
                "http_requests": self.http_requests,
                "rpc_requests": sum(self.methods.values()),
                "methods": dict(self.methods),
            }


class Fault:
    """The fault to inject; changing it wakes every request held by "hang"."""

    def __init__(self):
        self._changed = threading.Condition()
        self.mode, self.methods, self.left = "none", frozenset(), None

    def set(self, mode, methods, count=None):
        with self._changed:
            self.mode, self.methods, self.left = mode, frozenset(methods), count
            self._changed.notify_all()

    def describe(self):
        with self._changed:
            return {"mode": self.mode, "methods": sorted(self.methods), "count": self.left}

    def for_request(self, methods):
        """The mode that applies to a request calling `methods` (and one less of `count`)."""
        with self._changed:
            if self.mode == "none" or (self.methods and not self.methods.intersection(methods)):
                return "none"
            mode = self.mode
            if self.left is not None:
                self.left -= 1
                if self.left <= 0:
                    self.mode, self.methods, self.left = "none", frozenset(), None
                    self._changed.notify_all()
            return mode

    def hang(self):
        with self._changed:
            current = (self.mode, self.methods)
            self._changed.wait_for(lambda: (self.mode, self.methods) != current, HANG_LIMIT_S)


def method_not_found(entry):
    """geth's answer to a method it does not have."""
    message = f"the method {entry.get('method')} does not exist/is not available"
    return {"jsonrpc": "2.0", "id": entry.get("id"), "error": {"code": -32601, "message": message}}


def rpc_methods(body):
    """Method names in a JSON-RPC request or batch; unparseable bodies count once as "(invalid)"."""
    try:
        request = json.loads(body)
    except ValueError:
        return ["(invalid)"]
    entries = request if isinstance(request, list) else [request]
    return [e.get("method", "(invalid)") if isinstance(e, dict) else "(invalid)" for e in entries]


def priced_estimate(body):
    """The id of a single eth_estimateGas request offering a fee above zero, else None."""
    try:
        request = json.loads(body)
        if not isinstance(request, dict) or request.get("method") != "eth_estimateGas":
            return None
        call = (request.get("params") or [{}])[0]
        fee = call.get("maxFeePerGas") or call.get("gasPrice") or "0x0"
        return request.get("id") if int(fee, 16) > 0 else None
    except (ValueError, AttributeError, TypeError, IndexError):
        return None


def parse_latency(body):
    """The milliseconds of a `POST /__latency` body, or None if it is not {"ms": 0..10000}."""
    try:
        ms = json.loads(body or b"{}").get("ms")
    except (ValueError, AttributeError):
        return None
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms <= 10_000:
        return None
    return ms


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards clients
    # Headers and body go out in two writes; with Nagle on, the body waits for the
    # client's delayed ACK (40 ms) and throughput collapses to ~25 requests/s per connection.
    disable_nagle_algorithm = True
    stats = Stats()
    fault = Fault()
    latency_ms = 0
    upstream = None  # urllib.parse result, set in main()
    local = threading.local()  # one keep-alive upstream connection per handler thread

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass  # hundreds of requests a second; the counts are the log

    def do_GET(self):
        if self.path == "/__counts":
            self.reply(200, self.stats.snapshot())
        elif self.path == "/__fault":
            self.reply(200, self.fault.describe())
        elif self.path == "/__latency":
            self.reply(200, {"ms": Handler.latency_ms})
        else:
            self.reply(404, {"error": "POST JSON-RPC to /, or GET /__counts"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/__reset":
            self.stats.reset()
            self.reply(200, self.stats.snapshot())
        elif self.path == "/__fault":
            self.set_fault(body)
        elif self.path == "/__latency":
            ms = parse_latency(body)
            if ms is None:
                self.reply(400, {"error": 'expected {"ms": a number from 0 to 10000}'})
                return
            Handler.latency_ms = ms
            self.reply(200, {"ms": ms})
        else:
            self.forward(body)

    def set_fault(self, body):
        try:
            request = json.loads(body or b"{}")
            mode, methods = request.get("mode", "none"), request.get("methods") or []
            count = request.get("count")
            if mode not in FAULT_MODES or not all(isinstance(m, str) for m in methods):
                raise ValueError
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
                raise ValueError
        except (ValueError, AttributeError):
            self.reply(400, {"error": f"expected {{\"mode\": one of {list(FAULT_MODES)}, \"methods\": [str], \"count\": N}}"})
            return
        self.fault.set(mode, methods, count)
        self.reply(200, self.fault.describe())

    def forward(self, body):
        methods = rpc_methods(body)
        self.stats.record(methods)
        mode = self.fault.for_request(methods)
        if mode == "hang":
            self.fault.hang()
            mode = self.fault.for_request(methods)
        if mode == "error":
            self.reply(503, {"error": "fault injected by rpc_counter"})
            return
        if mode == "unauthorized":
            self.reply(401, {"error": "invalid API key (fault injected by rpc_counter)"})
            return
        if mode == "drop":
            self.close_connection = True
            return
        if mode == "node_error":
            self.reply(200, self.per_entry(body, lambda e: {"jsonrpc": "2.0", "id": e.get("id"), "error": NODE_ERROR}))
            return
        if mode == "missing":
            self.reply(200, self.per_entry(body, method_not_found))
            return
        if mode == "poor":
            priced = priced_estimate(body)
            if priced is not None:
                self.reply(200, {"jsonrpc": "2.0", "id": priced, "error": NO_GAS_MONEY})
                return
        if mode == "lag":
            self.forward_lagging(body)
            return
        if Handler.latency_ms:
            time.sleep(Handler.latency_ms / 1000)
        wall, started = time.time(), time.perf_counter()
        try:
            status, content_type, answer = self.call_upstream(body)
        except (http.client.HTTPException, OSError) as e:
            self.reply(502, {"error": f"upstream unreachable: {e}"})
            return
        if TRACE:
            line = json.dumps({"t0": wall, "t1": wall + time.perf_counter() - started, "methods": methods})
            with TRACE_LOCK:
                TRACE.write(line + "\n")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def per_entry(self, body, answer):
        """One answer per JSON-RPC entry, in the request's shape (batch or single)."""
        request = json.loads(body)
        if isinstance(request, list):
            return [answer(e) for e in request]
        return answer(request)

    def forward_lagging(self, body):
        """Answers `null` for the faulted methods and forwards every other entry upstream."""
        request = json.loads(body)
        entries = request if isinstance(request, list) else [request]
        hidden = self.fault.methods or frozenset(rpc_methods(body))
        answers = []
        for entry in entries:
            if entry.get("method") in hidden:
                answers.append({"jsonrpc": "2.0", "id": entry.get("id"), "result": None})
            else:
                _, _, answer = self.call_upstream(json.dumps(entry).encode())
                answers.append(json.loads(answer))
        self.reply(200, answers if isinstance(request, list) else answers[0])

    def call_upstream(self, body):
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            try:
                return self.exchange(conn, body)
            except (http.client.HTTPException, OSError):
                # anvil closed the idle kept-alive connection; such a send fails before
                # anvil reads the request, so one retry on a fresh connection is safe.
                conn.close()
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=HANG_LIMIT_S)
        self.local.conn = conn
        try:
            return self.exchange(conn, body)
        except (http.client.HTTPException, OSError):
            conn.close()
            self.local.conn = None
            raise

    def exchange(self, conn, body):
        conn.request("POST", self.upstream.path or "/", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", "application/json"), response.read()

    def reply(self, status, document):
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: rpc_counter.py LISTEN_PORT UPSTREAM_URL")
    Handler.upstream = urllib.parse.urlsplit(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print(f"rpc_counter on 127.0.0.1:{sys.argv[1]} -> {sys.argv[2]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
