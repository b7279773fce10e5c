// Cold start of the Lambda function binaries under cargo-lambda's runtime emulator: for each
// function, several times, spawn a fresh process attached to the emulator's runtime API (as
// infra/lambda-emulator.sh does) with an invoke already waiting for it, and time from the spawn to
// the invoke's answer. Then read the process's peak resident memory (VmHWM) and stop it.
//
//   node infra/load/coldstart.mjs --emulator-port 29000 --bin-dir target/debug --out coldstart.json
//
// Needs the emulator running (`cargo lambda watch --only-lambda-apis --invoke-port <port>`), the
// facilitator's configuration in the environment (. infra/facilitator-env.sh) and the binaries built.

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
    runs: { type: "string", default: "7" },
    events: { type: "string", default: "events" },
    logs: { type: "string", default: "." },
    out: { type: "string" },
  },
});
const port = Number(opts["emulator-port"]);
const runs = Number(opts.runs);
const INVOKE_TIMEOUT_MS = 30_000;

// What a correct first answer looks like, per function (the events are the repo's samples).
const ANSWER_OK = {
  verify: (body) => body.isValid === true,
  supported: (body) => Array.isArray(body.kinds) && body.kinds.length > 0,
};

async function once(fn, binary, event, log) {
  const started = performance.now();
  const child = spawn(binary, [], {
    env: { ...process.env, AWS_LAMBDA_FUNCTION_NAME: fn, AWS_LAMBDA_FUNCTION_VERSION: "1",
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "128", AWS_LAMBDA_RUNTIME_API: `http://127.0.0.1:${port}/.rt/${fn}` },
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
    const body = JSON.parse(answer.body ?? "null");
    if (answer.statusCode !== 200 || !ANSWER_OK[fn]?.(body ?? {})) {
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
  const binary = resolve(opts["bin-dir"], fn);
  const event = readFileSync(resolve(opts.events, `${fn}.json`), "utf8");
  const log = openSync(resolve(opts.logs, `coldstart-${fn}.log`), "a");
  const samples = [];
  for (let i = 0; i < runs; i++) samples.push(await once(fn, binary, event, log));
  const summary = {
    function: fn,
    binary: `${(opts["shown-bin-dir"] ?? opts["bin-dir"]).replace(/\/$/, "")}/${fn}`,
    profile: /release/.test(opts["shown-bin-dir"] ?? opts["bin-dir"]) ? "release" : "debug",
    binaryMB: statSync(binary).size / 2 ** 20,
    runs: samples,
    firstAnswerMs: spread(samples.map((s) => s.firstAnswerMs)),
    peakRssMB: spread(samples.map((s) => s.peakRssMB)),
  };
  console.error(`${fn}: first answer ${summary.firstAnswerMs.median.toFixed(0)} ms (median of ${runs}), `
    + `peak RSS ${summary.peakRssMB.median.toFixed(1)} MB`);
  functions.push(summary);
}
const report = { date: new Date().toISOString(), loadAverage1m, runsPerFunction: runs, functions };
if (opts.out) writeFileSync(opts.out, JSON.stringify(report, null, 2) + "\n");
