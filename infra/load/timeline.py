"""Lines up the traces of a load run into the timeline of each settlement, and where its time goes.

Each piece of the local pipeline can append one JSON line per call, with wall-clock times, to a file
named by an environment variable (see infra/load/README.md, "Tracing one settlement"):

    LOAD_TRACE         the load driver: each request's start and end
    AWS_COUNTER_TRACE  infra/stack/aws_counter.py: each AWS call, by client (settle = the handler, settle-worker)
    RPC_COUNTER_TRACE  infra/stack/rpc_counter.py: each chain RPC request, by method
    X402_POLLER_TRACE  infra/lambda/sqs_poller.py: each batch's messages (sent when), invoke, answer and delete

Run at concurrency 1, so that what happens during one /settle belongs to it:

    python3 infra/load/timeline.py DIR [--show N]

DIR holds req.jsonl, aws.jsonl, rpc.jsonl, poller.jsonl. Prints the last N settlements' timelines
(milliseconds from the request's start) and the median of each stage over all of them.
Stdlib only.
"""

import argparse
import json
import pathlib
import statistics


def load(directory, name):
    path = pathlib.Path(directory) / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events(directory):
    out = []
    for call in load(directory, "aws.jsonl"):
        who = "worker" if call["label"] == "settle-worker" else "handler"
        out.append((call["t0"], call["t1"], who, f"{call['service']} {call['op']}" + ("" if call["status"] < 400 else f" ({call['status']})")))
    for call in load(directory, "rpc.jsonl"):
        out.append((call["t0"], call["t1"], "chain", ",".join(call["methods"])))
    for batch in load(directory, "poller.jsonl"):
        for sent in batch["sent"]:
            out.append((sent, sent, "sqs", "message sent (SentTimestamp)"))
        out.append((batch["invoke"], batch["invoked"], "poller", "invoke the worker"))
        out.append((batch["invoked"], batch["deleted"], "poller", "delete the batch"))
    return sorted(out)


def stages(request, mine):
    """The time of each stage of one settlement, or None when the trace is incomplete."""
    def first(who, what):
        return next((e for e in mine if e[2] == who and what in e[3]), None)

    def last(who, what):
        return next((e for e in reversed(mine) if e[2] == who and what in e[3]), None)

    sent, invoke = first("sqs", "SentTimestamp"), first("poller", "invoke")
    worker_first, broadcast = first("worker", ""), first("chain", "eth_sendRawTransaction")
    if not sent and first("handler", "kms Sign"):
        return signed_here(request, mine, first, last)
    if not (sent and invoke and worker_first and broadcast):
        return None
    return {
        "handler: checks, record, queue (start → message sent)": sent[0] - request["t0"],
        "queue: sent → the poller's invoke": invoke[0] - sent[0],
        "emulator: invoke → the worker's first call": worker_first[0] - invoke[0],
        "worker: first call → broadcast": broadcast[0] - worker_first[0],
        "handler: broadcast → answer": request["t1"] - broadcast[0],
        "whole /settle": request["t1"] - request["t0"],
    }


def signed_here(request, mine, first, last):
    """The stages of a payment /settle signed itself (docs/settlement.md, "Signing in /settle"):
    its calls one after another, and what the handler spent between them."""
    simulation, create = first("chain", "eth_estimateGas"), first("handler", "dynamodb PutItem")
    lease, sign = first("handler", "dynamodb UpdateItem"), first("handler", "kms Sign")
    write_ahead = first("handler", "dynamodb TransactWriteItems")
    broadcast, settling = first("chain", "eth_sendRawTransaction"), last("handler", "dynamodb UpdateItem")
    # A send that waited for its receipt (eth_sendRawTransactionSync) needs no lookup after it.
    receipt = last("chain", "eth_getTransactionReceipt") or (broadcast if broadcast and "Sync" in broadcast[3] else None)
    if not all((simulation, create, lease, sign, write_ahead, broadcast, receipt)) or settling is lease:
        return None
    calls = [e for e in mine if e[2] in ("handler", "chain")]
    # The union of the calls' spans: what remains of the request is the handler's own time.
    busy, end = 0.0, request["t0"]
    for t0, t1, _, _ in calls:
        busy += max(0.0, t1 - max(t0, end))
        end = max(end, t1)
    both = (min(create[0], lease[0]), max(create[1], lease[1]))
    return {
        "here: simulation (eth_estimateGas)": simulation[1] - simulation[0],
        "here: record PutItem beside the lease's UpdateItem": both[1] - both[0],
        "here: KMS Sign": sign[1] - sign[0],
        "here: write-ahead (TransactWriteItems)": write_ahead[1] - write_ahead[0],
        "here: broadcast (eth_sendRawTransaction, or ...Sync with the receipt)": broadcast[1] - broadcast[0],
        "here: broadcast → receipt found": receipt[1] - broadcast[1],
        "here: settling UpdateItem": settling[1] - settling[0],
        "here: the handler between its calls (and the HTTP hops)": (request["t1"] - request["t0"]) - busy,
        "whole /settle": request["t1"] - request["t0"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory")
    parser.add_argument("--show", type=int, default=2, help="how many settlements to print in full (the last ones)")
    args = parser.parse_args()
    requests = [r for r in load(args.directory, "req.jsonl") if r.get("path") == "/settle"]
    if not requests:
        raise SystemExit(f"timeline: no /settle requests in {args.directory}/req.jsonl")
    everything = events(args.directory)
    per_stage = {}
    for index, request in enumerate(requests):
        mine = [e for e in everything if request["t0"] - 0.001 <= e[0] <= request["t1"]]
        if index >= len(requests) - args.show:
            print(f"--- /settle, {(request['t1'] - request['t0']) * 1000:.1f} ms")
            for t0, t1, who, what in mine:
                print(f"  {(t0 - request['t0']) * 1000:7.1f} ms  +{(t1 - t0) * 1000:5.1f}  {who:8} {what}")
        for name, seconds in (stages(request, mine) or {}).items():
            per_stage.setdefault(name, []).append(seconds * 1000)
    counted = len(next(iter(per_stage.values()), []))
    print(f"\nmedian of each stage over {counted} of {len(requests)} settlements (ms):")
    for name, values in per_stage.items():
        print(f"  {statistics.median(values):7.1f}  {name}")


if __name__ == "__main__":
    main()
