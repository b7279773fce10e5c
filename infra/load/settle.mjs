// Drives POST /settle on facilitators at their base URLs with pre-signed payments, each settled
// once, and measures them: throughput, p50/p90/p99 latency, failures by reason, chain RPC requests
// per settlement (every component: our settle handler and settle worker both go through the
// counting RPC proxy), and for ours the AWS calls per settlement from infra/stack/aws_counter.py (KMS
// Sign, DynamoDB by operation, SQS) and the queue hop from the SQS poller's trace. Every phase is
// bounded by a count and a time. Also measures the chain's own floor: the same transfer sent
// straight to the chain with its receipt read (and the gas it used).
//
//   node infra/load/settle.mjs --stack .local/load-stack/stack.json \
//     --target ours=http://127.0.0.1:24020 --target reference=http://127.0.0.1:24021 \
//     --aws-counter http://127.0.0.1:25001 --out .local/load-stack/results/load-settle.json
//
// Prints a markdown table; writes every figure as JSON to --out. The first target is "ours".

import { readFileSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { readSettledAwsCounts, resetAwsCounts } from "./lib/aws-counter.mjs";
import { chainFloor } from "./lib/chain-floor.mjs";
import { cpuSeconds, processTree } from "./lib/cpu.mjs";
import { drive } from "./lib/drive.mjs";
import { machine } from "./lib/machine.mjs";
import { signSettleBodies } from "./lib/payments.mjs";
import { queueHop, traceOffset } from "./lib/queue-hop.mjs";
import { settleRatios, settleTable } from "./lib/report.mjs";
import { readRpcCounts, resetRpcCounts, setProxyLatency } from "./lib/rpc-counter.mjs";
import { settleScenario } from "./lib/scenarios.mjs";
import { loopback, parseTargets } from "./lib/targets.mjs";

const { values: opts } = parseArgs({
  options: {
    stack: { type: "string" },
    target: { type: "string", multiple: true },
    "aws-counter": { type: "string" }, // the counter's control URL (any of its ports); counts ours only
    out: { type: "string" },
    concurrency: { type: "string", default: "1,8,32" },
    requests: { type: "string", default: "200" }, // per target and phase, at most
    seconds: { type: "string", default: "20" }, // per target and phase, at most (answers in flight still finish)
    warmup: { type: "string", default: "8" }, // per target: connections, and each lane's KMS public key
    "floor-sends": { type: "string", default: "50" },
    // The processes whose CPU time is reported per settlement (name=pid,pid).
    pid: { type: "string", multiple: true, default: [] },
    // The rest of the set-up (name=pid,pid; each with its descendants): where the machine's CPU goes
    // per settlement of ours (moto, the proxies, anvil, the poller, the emulator).
    "infra-pid": { type: "string", multiple: true, default: [] },
    settings: { type: "string", default: "" }, // how ours was configured (poll, deadline), for the report
    // A deployment's network, modelled: every chain RPC request (both facilitators') and every AWS
    // call of ours held this long by the counting proxies. 0 (the default) is the bare local stack.
    "rpc-latency-ms": { type: "string", default: "0" },
    "aws-latency-ms": { type: "string", default: "0" },
    // The SQS poller's per-batch trace (X402_POLLER_TRACE): the queue hop per phase of ours.
    "poller-trace": { type: "string" },
  },
});
if (!opts.stack || !opts.target?.length) {
  console.error("usage: settle.mjs --stack stack.json --target name=url [--target name=url] [--aws-counter url] [--out file.json]");
  process.exit(2);
}
const stack = JSON.parse(readFileSync(opts.stack, "utf8"));
const targets = parseTargets(opts.target);
const counter = opts["aws-counter"] && loopback(opts["aws-counter"], "--aws-counter");
const levels = opts.concurrency.split(",").map(Number);
const maxRequests = Number(opts.requests);
const maxSeconds = Number(opts.seconds);
const warmup = Number(opts.warmup);
const floorSends = Number(opts["floor-sends"]);
const proxy = stack.RPC_PROXY_URL;
const pids = Object.fromEntries(opts.pid.map((p) => p.split("=")).map(([name, list]) => [name, list.split(",").map(Number)]));
const infraPids = Object.fromEntries(opts["infra-pid"].map((p) => p.split("=")).map(([name, list]) => [name, list.split(",").map(Number)]));

const network = { rpcMs: Number(opts["rpc-latency-ms"]), awsMs: Number(opts["aws-latency-ms"]) };
if (network.awsMs && !counter) throw new Error("settle.mjs: --aws-latency-ms needs --aws-counter");
await setProxyLatency(proxy, network.rpcMs);
if (counter) await setProxyLatency(counter, network.awsMs);
if (network.rpcMs || network.awsMs) {
  console.error(`modelled network: +${network.rpcMs} ms per chain RPC request, +${network.awsMs} ms per AWS call`);
}

const startedOn = machine();
const signCount = floorSends + targets.length * (warmup + levels.length * maxRequests);
const signStart = performance.now();
const bodies = await signSettleBodies(stack, signCount);
console.error(`signed ${signCount} distinct payments in ${((performance.now() - signStart) / 1000).toFixed(1)} s`);
let used = 0;
const take = (n) => bodies.slice(used, (used += n));

const floor = await chainFloor(stack, take(floorSends));
console.error(`chain floor (send + receipt, one at a time): p50 ${floor.p50.toFixed(2)} ms, p99 ${floor.p99.toFixed(2)} ms`);

for (const target of targets) {
  const answer = await fetch(`${target.url}/supported`).catch((e) => ({ ok: false, status: e.cause?.code ?? e }));
  if (!answer.ok) throw new Error(`${target.name} at ${target.url} does not answer GET /supported (${answer.status})`);
  await answer.arrayBuffer();
  const stats = await drive(target.url, settleScenario(take(warmup)), { concurrency: 1, maxRequests: warmup, maxSeconds: 60 });
  if (stats.errorCount) console.error(`${target.name} warm-up: ${JSON.stringify(stats.errors)}`);
}

const perSettle = (nested, n) => Object.fromEntries(Object.entries(nested ?? {}).map(([service, ops]) =>
  [service, Object.fromEntries(Object.entries(ops ?? {}).map(([op, k]) => [op, k / n]))]));
const total = (ops) => Object.values(ops ?? {}).reduce((a, b) => a + b, 0);

async function measure(target, concurrency) {
  const ours = target === targets[0] && counter;
  await resetRpcCounts(proxy);
  if (ours) await resetAwsCounts(counter);
  const ownPids = pids[target.name] ?? [];
  // The machine is shared: the 1-minute load average around each phase says how disturbed it was.
  const loadBefore = loadavg()[0];
  const cpuBefore = cpuSeconds(ownPids);
  // Where the whole machine's CPU goes, for ours: each part of the set-up with its descendants.
  const parts = ours ? { ...Object.fromEntries(Object.entries(infraPids).map(([name, list]) => [name, processTree(list)])),
    [`${target.name} (handler and worker)`]: ownPids } : {};
  const partsBefore = Object.fromEntries(Object.entries(parts).map(([name, list]) => [name, cpuSeconds(list)]));
  const generatorBefore = process.cpuUsage();
  const traceFrom = ours ? traceOffset(opts["poller-trace"]) : 0;
  const stats = await drive(target.url, settleScenario(take(maxRequests)), { concurrency, maxRequests, maxSeconds });
  // Every /settle has answered; let a worker finish what it may still hold before reading counts.
  const aws = ours ? await readSettledAwsCounts(counter) : null;
  const cpu = cpuSeconds(ownPids) - cpuBefore;
  const generator = process.cpuUsage(generatorBefore);
  const rpc = await readRpcCounts(proxy);
  const n = stats.requests;
  const row = { target: target.name, scenario: "settle", concurrency, ...stats,
    settled: n - stats.errorCount,
    rpcRequests: rpc.rpc_requests, rpcPerSettle: rpc.rpc_requests / n,
    rpcMethodsPerSettle: Object.fromEntries(Object.entries(rpc.methods).map(([m, k]) => [m, k / n])),
    cpuMsPerSettle: ownPids.length ? (cpu * 1000) / n : NaN,
    cpuMsPerSettleByPart: ours && Object.keys(parts).length
      ? { ...Object.fromEntries(Object.entries(parts).map(([name, list]) => [name, ((cpuSeconds(list) - partsBefore[name]) * 1000) / n])),
        "load generator": (generator.user + generator.system) / 1000 / n }
      : null,
    loadAverage1m: { before: Math.round(loadBefore * 100) / 100, after: Math.round(loadavg()[0] * 100) / 100 } };
  if (ours) row.queueHop = queueHop(opts["poller-trace"], traceFrom);
  if (aws) {
    row.aws = aws;
    row.kmsSignPerSettle = (aws.calls.kms?.Sign ?? 0) / n;
    row.kmsPerSettle = perSettle({ kms: aws.calls.kms }, n).kms ?? {};
    row.dynamodbPerSettle = perSettle({ d: aws.calls.dynamodb }, n).d ?? {};
    row.dynamodbTotalPerSettle = total(aws.calls.dynamodb) / n;
    row.sqsPerSettle = perSettle({ s: aws.calls.sqs }, n).s ?? {};
    row.byClientPerSettle = Object.fromEntries(Object.entries(aws.by_client).map(([client, c]) => [client, perSettle(c.calls, n)]));
    row.awsErrors = aws.errors;
    // Where moto's time goes: mean wait per call, by operation (moto is the local stand-in; AWS differs).
    row.awsMeanMs = Object.fromEntries(Object.entries(aws.upstream_ms ?? {}).flatMap(([service, ops]) =>
      Object.entries(ops).map(([op, total]) => [`${service} ${op}`, total / aws.calls[service][op]])));
  }
  console.error(`${target.name} settle c=${concurrency}: ${n} in ${stats.seconds.toFixed(1)} s, ${stats.throughput.toFixed(1)}/s, `
    + `p50 ${stats.p50.toFixed(1)} ms, p99 ${stats.p99.toFixed(1)} ms, ${stats.errorCount} failed ${JSON.stringify(stats.errors)}, `
    + `${stats.retries} retried, ${row.rpcPerSettle.toFixed(2)} rpc/settle`
    + (aws ? `, KMS Sign ${row.kmsSignPerSettle.toFixed(2)}, DynamoDB ${row.dynamodbTotalPerSettle.toFixed(2)} `
      + `${JSON.stringify(aws.calls.dynamodb)}, SQS ${JSON.stringify(aws.calls.sqs)}` : ""));
  return row;
}

const results = [];
for (const concurrency of levels) {
  for (const target of targets) results.push(await measure(target, concurrency));
}

const report = {
  date: new Date().toISOString(),
  machine: startedOn,
  settings: { concurrency: levels, maxRequestsPerPhase: maxRequests, maxSecondsPerPhase: maxSeconds, warmup,
    signedPayments: signCount, lanes: stack.lanes?.length ?? NaN, ours: opts.settings, network, amount: JSON.parse(bodies[0]).paymentRequirements.amount },
  floor,
  targets,
  results,
  ratios: targets.length >= 2 ? settleRatios(results, targets[0].name, targets[1].name) : [],
};
await setProxyLatency(proxy, 0);
if (counter) await setProxyLatency(counter, 0);
console.log(settleTable(report));
if (opts.out) writeFileSync(opts.out, JSON.stringify(report, null, 2) + "\n");
