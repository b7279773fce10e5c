// Drives facilitators at their base URLs with pre-signed payments and measures them:
// POST /verify at each concurrency (throughput, p50/p90/p99 latency, errors, chain RPC requests per
// verify from the counting proxy), for EIP-3009 and then for `exact` Permit2 payments, and GET /supported. Every phase is bounded by a request count and
// a time limit. Targets are measured one after the other, phase by phase, against the same chain.
//
//   node infra/load/harness.mjs --stack .local/load-stack/stack.json \
//     --target ours=http://127.0.0.1:24020 --target reference=http://127.0.0.1:24021 \
//     --out .local/load-stack/load-verify.json
//
// Prints a markdown table; writes every figure (and the RPC methods seen) as JSON to --out.
// The first target is "ours" in the ratios, the second the reference.

import { readFileSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { cpuSeconds } from "./lib/cpu.mjs";
import { drive } from "./lib/drive.mjs";
import { machine } from "./lib/machine.mjs";
import { permit2Payers, signPermit2VerifyBodies, signVerifyBodies } from "./lib/payments.mjs";
import { verifyTable, ratios } from "./lib/report.mjs";
import { readSettledAwsCounts, resetAwsCounts } from "./lib/aws-counter.mjs";
import { readRpcCounts, resetRpcCounts } from "./lib/rpc-counter.mjs";
import { supportedScenario, verifyScenario } from "./lib/scenarios.mjs";
import { parseTargets } from "./lib/targets.mjs";

const { values: opts } = parseArgs({
  options: {
    stack: { type: "string" },
    target: { type: "string", multiple: true },
    out: { type: "string" },
    concurrency: { type: "string", default: "1,8,32" },
    requests: { type: "string", default: "3000" }, // per target and phase, at most
    seconds: { type: "string", default: "10" }, // per target and phase, at most
    warmup: { type: "string", default: "20" },
    "supported-concurrency": { type: "string", default: "8" },
    // Permit2 `exact` verify phases, at the same concurrency levels; 0 leaves them out.
    "permit2-requests": { type: "string", default: "1000" },
    // The processes whose CPU time is reported per request: a facilitator's (name=pid) and the chain side's.
    pid: { type: "string", multiple: true, default: [] },
    "chain-pids": { type: "string", default: "" },
    // The AWS counting proxy the first target (ours) calls AWS through: its KMS, DynamoDB, SQS calls per request.
    "aws-counter": { type: "string" },
  },
});
if (!opts.stack || !opts.target?.length) {
  console.error("usage: harness.mjs --stack stack.json --target name=url [--target name=url] [--out file.json]");
  process.exit(2);
}
const stack = JSON.parse(readFileSync(opts.stack, "utf8"));
const targets = parseTargets(opts.target);
const levels = opts.concurrency.split(",").map(Number);
const maxRequests = Number(opts.requests);
const maxSeconds = Number(opts.seconds);
const warmup = Number(opts.warmup);
const proxy = stack.RPC_PROXY_URL;
const pids = Object.fromEntries(opts.pid.map((p) => p.split("=")).map(([name, pid]) => [name, [Number(pid)]]));
const chainPids = opts["chain-pids"].split(",").filter(Boolean).map(Number);

const startedOn = machine(); // before our own load, so the load average shows only other work

const signCount = targets.length * (warmup + levels.length * maxRequests);
const signStart = performance.now();
const bodies = await signVerifyBodies(stack, signCount);
console.error(`signed ${signCount} distinct payments in ${((performance.now() - signStart) / 1000).toFixed(1)} s`);
let used = 0;
const take = (n) => bodies.slice(used, (used += n));

const results = [];
for (const target of targets) {
  const answer = await fetch(`${target.url}/supported`).catch((e) => ({ ok: false, status: e.cause?.code ?? e }));
  if (!answer.ok) throw new Error(`${target.name} at ${target.url} does not answer GET /supported (${answer.status})`);
  await answer.arrayBuffer();
  // Warm-up: connections, caches (the reference caches the asset's code check), lazy statics.
  await drive(target.url, verifyScenario(take(warmup)), { concurrency: 1, maxRequests: warmup, maxSeconds });
}

const counter = opts["aws-counter"];

async function measure(target, scenario, concurrency, limits) {
  const ours = counter && target === targets[0];
  await resetRpcCounts(proxy);
  if (ours) await resetAwsCounts(counter);
  const ownPids = pids[target.name] ?? [];
  const cpuBefore = [cpuSeconds(ownPids), cpuSeconds(chainPids), process.cpuUsage()];
  const stats = await drive(target.url, scenario, { concurrency, ...limits });
  const cpuAfter = [cpuSeconds(ownPids), cpuSeconds(chainPids), process.cpuUsage(cpuBefore[2])];
  const rpc = await readRpcCounts(proxy);
  const aws = ours ? await readSettledAwsCounts(counter, { quietMs: 200 }) : null;
  const perRequestMs = (seconds) => (seconds * 1000) / stats.requests;
  const row = { target: target.name, scenario: scenario.name, concurrency, ...stats,
    rpcRequests: rpc.rpc_requests, rpcPerRequest: rpc.rpc_requests / stats.requests, rpcMethods: rpc.methods,
    cpuMsPerRequest: ownPids.length ? perRequestMs(cpuAfter[0] - cpuBefore[0]) : NaN,
    chainCpuMsPerRequest: chainPids.length ? perRequestMs(cpuAfter[1] - cpuBefore[1]) : NaN,
    generatorCpuMsPerRequest: perRequestMs((cpuAfter[2].user + cpuAfter[2].system) / 1e6),
    // Every AWS call the phase made, by service and operation ({} = none); null when not counted.
    awsCalls: aws ? aws.calls : null, awsRequests: aws ? aws.http_requests : null };
  console.error(`${target.name} ${scenario.name} c=${concurrency}: ${stats.requests} in ${stats.seconds.toFixed(1)} s, `
    + `${stats.throughput.toFixed(0)}/s, p50 ${stats.p50.toFixed(2)} ms, p99 ${stats.p99.toFixed(2)} ms, `
    + `${stats.errorCount} errors, ${row.rpcPerRequest.toFixed(2)} rpc/req, cpu ${row.cpuMsPerRequest.toFixed(2)} ms/req `
    + `(chain ${row.chainCpuMsPerRequest.toFixed(2)}, generator ${row.generatorCpuMsPerRequest.toFixed(2)})`);
  return row;
}

// Phase by phase, each target in turn, so slow drift on the machine hits both alike.
for (const concurrency of levels) {
  for (const target of targets) {
    results.push(await measure(target, verifyScenario(take(maxRequests)), concurrency, { maxRequests, maxSeconds }));
  }
}
// Permit2 `exact` payments: verify checks more (the allowance and the permit's witness) and
// simulates the proxy's call instead of the token's.
const permit2Requests = Number(opts["permit2-requests"]);
const PERMIT2_PAYERS = 4;
if (permit2Requests > 0) {
  const permit2Count = targets.length * (warmup + levels.length * permit2Requests);
  const permit2Start = performance.now();
  const permit2Bodies = await signPermit2VerifyBodies(stack, permit2Count, await permit2Payers(stack, PERMIT2_PAYERS));
  console.error(`signed ${permit2Count} distinct Permit2 payments in ${((performance.now() - permit2Start) / 1000).toFixed(1)} s`);
  let usedPermit2 = 0;
  const takePermit2 = (n) => permit2Bodies.slice(usedPermit2, (usedPermit2 += n));
  for (const target of targets) {
    await drive(target.url, verifyScenario(takePermit2(warmup), "verify-permit2"), { concurrency: 1, maxRequests: warmup, maxSeconds });
  }
  for (const concurrency of levels) {
    for (const target of targets) {
      results.push(await measure(target, verifyScenario(takePermit2(permit2Requests), "verify-permit2"), concurrency,
        { maxRequests: permit2Requests, maxSeconds }));
    }
  }
}
const supportedConcurrency = Number(opts["supported-concurrency"]);
for (const target of targets) {
  results.push(await measure(target, supportedScenario(), supportedConcurrency,
    { maxRequests: 2 * maxRequests, maxSeconds: Math.max(1, maxSeconds / 2) }));
}

const report = {
  date: new Date().toISOString(),
  machine: startedOn,
  settings: { concurrency: levels, maxRequestsPerPhase: maxRequests, maxSecondsPerPhase: maxSeconds, warmup,
    supportedConcurrency, signedPayments: signCount,
    permit2RequestsPerPhase: permit2Requests, permit2Payers: permit2Requests > 0 ? PERMIT2_PAYERS : 0 },
  targets,
  results,
  ratios: targets.length >= 2 ? ratios(results, targets[0].name, targets[1].name) : [],
};
console.log(verifyTable(report));
if (opts.out) writeFileSync(opts.out, JSON.stringify(report, null, 2) + "\n");
