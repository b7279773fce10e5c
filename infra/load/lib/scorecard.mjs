// Issue 16's targets, each beside the figure this run measured and the reference's, with whether it
// is met: the first table of the "Load: settle" section. A figure whose phase did not run (a partial
// run, LOAD_NET_LANES="") says "not measured" instead of failing the report.

import { fixed } from "./format.mjs";

const NOT_MEASURED = "not measured";

/** The rows of ours in a settle report (its first target), each with the report's lane count. */
const oursRows = (report) => (report?.results ?? [])
  .filter((r) => r.target === report.targets[0].name)
  .map((r) => ({ lanes: report.settings.lanes, ...r }));
const theirRows = (report) => (report?.targets?.length > 1
  ? report.results.filter((r) => r.target === report.targets[1].name) : []);
const at = (rows, concurrency) => rows.find((r) => r.concurrency === concurrency);

/** "a" or "a–b" over the values, or null when there are none. */
function range(values, digits) {
  const finite = values.filter(Number.isFinite);
  if (!finite.length) return null;
  const [lo, hi] = [Math.min(...finite), Math.max(...finite)];
  return fixed(lo, digits) === fixed(hi, digits) ? fixed(lo, digits) : `${fixed(lo, digits)}–${fixed(hi, digits)}`;
}

const verdict = (ok) => (ok === null ? NOT_MEASURED : ok ? "**met**" : "not met");

/**
 * The targets table's lines. `verify` is harness.mjs's JSON, `settle` settle.mjs's main run,
 * `others` ours with other lane counts, `networked` ours per lane count with the network modelled;
 * any may be missing.
 */
export function scorecardLines({ verify, settle, others = [], networked = [] }) {
  const floor = settle?.floor?.p50;
  const mine = oursRows(settle);
  const theirs = theirRows(settle);
  const everyPhase = [settle, ...others, ...networked].filter(Boolean).flatMap(oursRows);
  const rows = [];
  const row = (measure, target, ours, reference, ok) => rows.push(`| ${measure} | ${target} | ${ours ?? NOT_MEASURED} `
    + `| ${reference ?? NOT_MEASURED} | ${verdict(ours == null ? null : ok)} |`);

  const one = at(mine, 1);
  const refOne = at(theirs, 1);
  const beyond = one && Number.isFinite(floor) ? one.p50 - floor : NaN;
  row("settle p50 at concurrency 1, beyond the chain (p50 − the chain's own send + receipt p50)", "≤ 20 ms",
    Number.isFinite(beyond) ? `${fixed(beyond, 1)} ms` : null,
    refOne && Number.isFinite(floor) ? `${fixed(refOne.p50 - floor, 1)} ms` : null, beyond <= 20);
  row("settle p50 at concurrency 1, whole /settle", "≤ the reference's",
    one ? `${fixed(one.p50, 1)} ms` : null, refOne ? `${fixed(refOne.p50, 1)} ms` : null,
    one && refOne ? one.p50 <= refOne.p50 : null);

  const fourLanes = networked.find((o) => o.settings.lanes === 4);
  const net32 = at(oursRows(fourLanes), 32);
  row("settle p99 at concurrency 32, 4 lanes, network modelled", "≤ 500 ms",
    net32 ? `${fixed(net32.p99, 0)} ms` : null, "not run (ours only)", net32 ? net32.p99 <= 500 : null);

  // Counts: the main run's concurrency 1, and the range over every phase of ours; met by the worst.
  const counted = (label, target, value, digits, meets, reference) => {
    const all = everyPhase.map(value).filter(Number.isFinite);
    const figure = one && Number.isFinite(value(one))
      ? `${fixed(value(one), digits)} at c=1; ${range(all, digits)} over ${all.length} phases` : null;
    row(label, target, figure, reference, all.length ? meets(all) : null);
  };
  counted("chain RPC per settle (handler and worker)", "≤ 3", (r) => r.rpcPerSettle, 2,
    (all) => Math.max(...all) <= 3,
    theirs.length ? `${range(theirs.map((r) => r.rpcPerSettle), 2)} (c=${theirs.map((r) => r.concurrency).join(", ")})` : null);
  counted("DynamoDB calls per settle", "≤ 4", (r) => r.dynamodbTotalPerSettle, 2, (all) => Math.max(...all) <= 4, "none (no store)");
  counted("KMS `Sign` per settle", "1", (r) => r.kmsSignPerSettle, 2,
    (all) => all.every((v) => fixed(v, 2) === "1.00"), "none (a local key)");
  const sqs = (r) => (r.sqsPerSettle ? Object.values(r.sqsPerSettle).reduce((a, b) => a + b, 0) : NaN);
  const sqsAll = everyPhase.map(sqs).filter(Number.isFinite);
  rows.push(`| SQS calls per settle (ours; the event source mapping's receive and delete are not ours) | no target `
    + `| ${one && Number.isFinite(sqs(one)) ? `${fixed(sqs(one), 2)} at c=1; ${range(sqsAll, 2)} over ${sqsAll.length} phases` : NOT_MEASURED} `
    + "| none (no queue) | – |");

  const verifyOf = (name) => (verify?.results ?? []).filter((r) => r.target === name && r.scenario === "verify");
  const ourVerify = verify ? verifyOf(verify.targets[0].name) : [];
  const theirVerify = verify?.targets?.[1] ? verifyOf(verify.targets[1].name) : [];
  const cpu = (rows) => (rows.length ? `${range(rows.map((r) => r.cpuMsPerRequest), 2)} ms (c=${rows.map((r) => r.concurrency).join(", ")})` : null);
  row("facilitator CPU per verify (the whole process, from `/proc`)", "≤ 0.10 ms", cpu(ourVerify), cpu(theirVerify),
    ourVerify.length ? Math.max(...ourVerify.map((r) => r.cpuMsPerRequest)) <= 0.10 : null);

  return ["### Issue 16's targets", "",
    "Each figure of this run beside its target and the reference's figure. Call counts are the counting proxies' (chain "
      + "RPC: the RPC proxy, both facilitators; AWS: `infra/stack/aws_counter.py`, ours only), at concurrency 1 of the "
      + "main run and their range over every phase of ours in this run (main, other lane counts, network modelled); a "
      + "count target is met only if every phase meets it. \"not measured\" means the phase did not run.", "",
    "| measure | target | ours | reference | met? |",
    "|---|---|---|---|---|",
    ...rows];
}
