// Cold start of the Lambda function binaries under cargo-lambda's runtime emulator: for each
// function, several times, spawn a fresh process attached to the emulator's runtime API (as
// infra/lambda/lambda-emulator.sh does) with an invoke already waiting for it, and time from the spawn to
// the invoke's answer. Then read the process's peak resident memory (VmHWM) and stop it.
//
//   node infra/load/coldstart.mjs --emulator-port 29000 --bin-dir target/debug --out coldstart.json
//   node infra/load/coldstart.mjs --bin-dir target/release --functions verify,supported,settle,settle-worker,replay
//
// Needs the emulator running (`cargo lambda watch --only-lambda-apis --invoke-port <port>`), the
// facilitator's configuration in the environment (. infra/stack/facilitator-env.sh) and the binaries built.
// The profile (debug or release) is read from the binary directory's name; --profile overrides it.
//
// Each function's first event, and what a correct answer to it is:
// - verify, supported: the repo's sample events (verify: a valid payment, so one eth_call);
// - settle: events/verify-invalid.json sent to /settle, refused by the local checks before any chain
//   or AWS call (a valid one would wait for a worker until the settle deadline);
// - settle-worker: an SQS event for a payment that has no record (one DynamoDB GetItem, no KMS);
// - replay: events/replay-schedule.json (reads the open-records index).

import { spawn } from "node:child_process";
import { openSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";

const { values: opts } = parseArgs({
  options: {
    "emulator-port": { type: "string", default: "29000" },
    "bin-dir": { type: "string", default: "target/debug" },
    "shown-bin-dir": { type: "string" }, // how the report names the binaries (run.sh measures copies)
    functions: { type: "string", default: "verify,supported" },
    profile: { type: "string" }, // debug | release; default: from the binary directory's name
    runs: { type: "string", default: "7" },
    events: { type: "string", default: "events" },
    logs: { type: "string", default: "." },
    out: { type: "string" },
    // A cgroup directory each process starts in (infra/load/memory.sh: a Lambda memory size's CPU
    // share), and that size for AWS_LAMBDA_FUNCTION_MEMORY_SIZE.
    cgroup: { type: "string" },
    "memory-mb": { type: "string", default: "128" },
  },
});
const port = Number(opts["emulator-port"]);
const runs = Number(opts.runs);
const INVOKE_TIMEOUT_MS = 30_000;

// The settle-worker's first event: one SQS FIFO record naming a payment that has no record.
const WORKER_EVENT = JSON.stringify({ Records: [{
  messageId: "00000000-0000-4000-8000-000000000000", receiptHandle: "coldstart", md5OfBody: "",
  body: JSON.stringify({ id: "eip155:84532#0x0000000000000000000000000000000000000000#0x0000000000000000000000000000000000000000#0x00" }),
  attributes: { MessageGroupId: "coldstart", ApproximateReceiveCount: "1" }, messageAttributes: {},
  eventSource: "aws:sqs", eventSourceARN: "arn:aws:sqs:us-east-1:123456789012:x402-settlements.fifo", awsRegion: "us-east-1" }] });

// Per function: its first event, and what a correct answer to it looks like (HTTP functions
// answer an API Gateway response whose body is checked; the others their payload).
const FUNCTIONS = {
  verify: { event: () => readEvent("verify.json"), ok: (a) => a.statusCode === 200 && http(a).isValid === true },
  supported: { event: () => readEvent("supported.json"),
    ok: (a) => a.statusCode === 200 && Array.isArray(http(a).kinds) && http(a).kinds.length > 0 },
  settle: { event: () => readEvent("verify-invalid.json").replaceAll("/verify", "/settle"),
    ok: (a) => a.statusCode === 200 && http(a).success === false && typeof http(a).errorReason === "string" },
  "settle-worker": { event: () => WORKER_EVENT,
    ok: (a) => Array.isArray(a.batchItemFailures) && a.batchItemFailures.length === 0 },
  replay: { event: () => readEvent("replay-schedule.json"), ok: (a) => typeof a.examined === "number" },
};
const http = (answer) => JSON.parse(answer.body ?? "null") ?? {};
const readEvent = (name) => readFileSync(resolve(opts.events, name), "utf8");

async function once(fn, binary, event, log) {
  const started = performance.now();
  // In a cgroup, a shell joins it and then becomes the function, so nothing of the function's
  // start runs outside it (moving the process after the spawn would race its first steps).
  const [command, args] = opts.cgroup
    ? ["/bin/sh", ["-c", 'echo $$ > "$1/cgroup.procs" && exec "$0"', binary, opts.cgroup]]
    : [binary, []];
  const child = spawn(command, args, {
    env: { ...process.env, AWS_LAMBDA_FUNCTION_NAME: fn, AWS_LAMBDA_FUNCTION_VERSION: "1",
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: opts["memory-mb"], AWS_LAMBDA_RUNTIME_API: `http://127.0.0.1:${port}/.rt/${fn}` },
    stdio: ["ignore", log, log],
  });
  const exited = new Promise((done) => child.once("exit", done));
  try {
    // The emulator holds this invoke until the new process asks for its first event.
    const response = await fetch(`http://127.0.0.1:${port}/2015-03-31/functions/${fn}/invocations`, {
      method: "POST", body: event, signal: AbortSignal.timeout(INVOKE_TIMEOUT_MS),
    });
    const answer = await response.json();
    const firstAnswerMs = performance.now() - started;
    const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
    const peakKiB = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
    if (!FUNCTIONS[fn].ok(answer ?? {})) {
      throw new Error(`${fn}: unexpected first answer ${JSON.stringify(answer).slice(0, 300)}`);
    }
    return { firstAnswerMs, peakRssMB: peakKiB / 1024 };
  } finally {
    child.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const spread = (xs) => ({ min: Math.min(...xs), median: median(xs), max: Math.max(...xs) });
const loadAverage1m = Math.round(loadavg()[0] * 100) / 100; // other work skews start-up times most of all
const functions = [];
for (const fn of opts.functions.split(",")) {
  if (!FUNCTIONS[fn]) {
    // A function added since: measured once it has a first event here; the report lists what was.
    console.error(`coldstart.mjs: skipping ${fn}, which has no first event here (known: ${Object.keys(FUNCTIONS).join(", ")})`);
    continue;
  }
  const binary = resolve(opts["bin-dir"], fn);
  const event = FUNCTIONS[fn].event();
  const log = openSync(resolve(opts.logs, `coldstart-${fn}.log`), "a");
  const samples = [];
  for (let i = 0; i < runs; i++) samples.push(await once(fn, binary, event, log));
  const summary = {
    function: fn,
    binary: `${(opts["shown-bin-dir"] ?? opts["bin-dir"]).replace(/\/$/, "")}/${fn}`,
    profile: opts.profile ?? (/release/.test(opts["shown-bin-dir"] ?? opts["bin-dir"]) ? "release" : "debug"),
    binaryMB: statSync(binary).size / 2 ** 20,
    binaryBytes: statSync(binary).size,
    runs: samples,
    firstAnswerMs: spread(samples.map((s) => s.firstAnswerMs)),
    peakRssMB: spread(samples.map((s) => s.peakRssMB)),
  };
  console.error(`${fn}: first answer ${summary.firstAnswerMs.median.toFixed(0)} ms (median of ${runs}), `
    + `peak RSS ${summary.peakRssMB.median.toFixed(1)} MB`);
  functions.push(summary);
}
const report = { date: new Date().toISOString(), loadAverage1m, runsPerFunction: runs, cgroup: opts.cgroup ?? null,
  functions };
if (opts.out) writeFileSync(opts.out, JSON.stringify(report, null, 2) + "\n");
