// The queue hop on its own: from the settle handler's SQS SendMessage to the worker's invocation,
// read from the SQS poller's per-batch trace (X402_POLLER_TRACE, infra/lambda/sqs_poller.py), which
// run.sh always turns on: one JSON line per batch, a few hundred bytes, so it costs the run next to
// nothing, unlike the per-call traces of the counting proxies.
//
// Per batch the trace has each message's SentTimestamp (SQS's own, in milliseconds) and group, the
// wall-clock time the poller invoked the worker and the time the invoke answered. On a FIFO queue a
// message cannot be delivered while its group (lane) has a batch in flight, so two figures:
//   hop    invoke − when the batch's first message could first be delivered (sent, or the
//          group's previous batch deleted, whichever is later): the hand-over itself;
//   wait   invoke − sent, for every message: the hop plus the wait behind its lane's batch in flight.
// And the worker's time per message (the invoke's duration / the batch's messages): what Lambda
// would bill the worker for.

import { existsSync, readFileSync, statSync } from "node:fs";
import { summarize } from "./drive.mjs";
import { fixed } from "./format.mjs";

/** Where the trace ends now: read after this offset to get only what a phase added. */
export function traceOffset(path) {
  return path && existsSync(path) ? statSync(path).size : 0;
}

/**
 * The hop figures of the batches the trace gained after `from` (a `traceOffset`), or null when
 * there is no trace. Times in milliseconds.
 */
export function queueHop(path, from) {
  if (!path || !existsSync(path)) return null;
  const text = readFileSync(path, "utf8");
  // Every batch of the file, so each group's previous delete is known for a phase's first batch.
  const lastDeleted = new Map();
  const hops = [];
  const waits = [];
  const workerPerBatch = [];
  let workerMs = 0;
  let messages = 0;
  let offset = 0;
  for (const line of text.split("\n")) {
    const start = offset;
    offset += Buffer.byteLength(line) + 1;
    if (!line.trim()) continue;
    const batch = JSON.parse(line);
    const groups = batch.groups ?? [];
    const earliest = Math.min(...batch.sent);
    const behind = Math.max(0, ...groups.map((g) => lastDeleted.get(g) ?? 0));
    if (start >= from) {
      hops.push((batch.invoke - Math.max(earliest, behind)) * 1000);
      for (const sent of batch.sent) waits.push((batch.invoke - sent) * 1000);
      const invokeMs = (batch.invoked - batch.invoke) * 1000;
      workerPerBatch.push(invokeMs / batch.sent.length);
      workerMs += invokeMs;
      messages += batch.sent.length;
    }
    for (const g of groups) lastDeleted.set(g, batch.deleted);
  }
  if (!hops.length) return null;
  const pick = ({ p50, p90, p99, mean }) => ({ p50, p90, p99, mean });
  return {
    batches: hops.length,
    messages,
    hopMs: pick(summarize(hops)),
    waitMs: pick(summarize(waits)),
    workerMsPerMessage: { p50: summarize(workerPerBatch).p50, mean: workerMs / messages },
  };
}


/** The "Queue hop" subsection of the settle section, from every settle report's rows of ours. */
export function queueHopLines(reports) {
  const rows = reports.flatMap(({ label, report }) => report.results
    .filter((r) => r.target === report.targets[0].name)
    .map((r) => ({ label, lanes: report.settings.lanes, ...r })));
  const lines = ["", "### The queue hop", "",
    "From the settle handler's SQS `SendMessage` to the worker's invocation, measured on its own from the SQS poller's "
      + "per-batch trace (SQS's `SentTimestamp`, in whole milliseconds, against the poller's clock on the same machine). "
      + "**The poller (`infra/lambda/sqs_poller.py`) stands in for Lambda's SQS event source mapping here, so these are "
      + "the local stand-in's figures, not AWS's**: moto's queue, and the poller's own polling (it asks again at once "
      + "when a batch finishes and every 50 ms while batches are in flight; long polls when idle). In AWS the mapping's "
      + "pollers and the Lambda service decide this hop. \"hop\" is the hand-over itself: invoke − the moment the "
      + "batch's first message could first be delivered (sent, or its lane's previous batch deleted, whichever is "
      + "later). \"wait\" is invoke − sent for every message: the hop plus the time behind its lane's batch in flight. "
      + "The worker's time per message is the invoke's duration over its messages (what Lambda bills the worker for). "
      + "The emulator's own hand-over (invoke → the worker's first AWS call) is not in these; a traced run measures it "
      + "(\"Where a settlement's time goes\").", ""];
  const measured = rows.filter((r) => r.queueHop);
  if (!measured.length) {
    lines.push("Not measured in this run (its JSON has no poller trace).");
    return lines;
  }
  lines.push("| run | lanes | concurrency | batches | messages per batch | hop p50 (ms) | hop p90 (ms) | wait p50 (ms) | wait p90 (ms) | worker per message, p50 / mean (ms) |",
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
  for (const r of rows) {
    const q = r.queueHop;
    if (!q) {
      lines.push(`| ${r.label} | ${r.lanes} | ${r.concurrency} | not measured | | | | | | |`);
      continue;
    }
    lines.push(`| ${r.label} | ${r.lanes} | ${r.concurrency} | ${q.batches} | ${fixed(q.messages / q.batches, 2)} `
      + `| ${fixed(q.hopMs.p50, 1)} | ${fixed(q.hopMs.p90, 1)} | ${fixed(q.waitMs.p50, 1)} | ${fixed(q.waitMs.p90, 1)} `
      + `| ${fixed(q.workerMsPerMessage.p50, 1)} / ${fixed(q.workerMsPerMessage.mean, 1)} |`);
  }
  return lines;
}

