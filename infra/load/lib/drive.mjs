// A closed-loop load generator: `concurrency` workers, each sending its next request as soon as
// the previous one is answered, until `maxRequests` have been sent or `maxSeconds` have passed,
// whichever comes first (so every run stops by itself). Connections are kept alive and reused, as
// a resource server calling a facilitator would.
//
// It uses node:http with a keep-alive agent rather than fetch: on this project's 2-CPU machines the
// generator shares the CPUs with what it measures, and fetch (undici) costs about three times as
// much CPU per request, which showed up as a ceiling on the faster facilitator's throughput.

import { Agent, request } from "node:http";
import { appendFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

// LOAD_TRACE=<file>: also append one JSON line per request (wall-clock start and end, the request's
// index), for a timeline of where a settlement's time goes (infra/load/timeline.py).
const TRACE = process.env.LOAD_TRACE;

const REQUEST_TIMEOUT_MS = 10_000;

/**
 * @param {object} scenario - {method, path, body(i) -> string|undefined, check(status, json) -> error key|null,
 *   optionally retry(status, json) -> bool (send the same body once more, as a client would: the latency
 *   is to the last answer) and timeoutMs (per request; settle answers take longer than verify's)}
 * @returns {Promise<object>} throughput, latency percentiles (ms), error counts, retries
 */
export async function drive(baseUrl, scenario, { concurrency, maxRequests, maxSeconds }) {
  const url = `${baseUrl}${scenario.path}`;
  const latencies = [];
  const errors = {};
  let issued = 0;
  let retries = 0;
  const timeoutMs = scenario.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const started = performance.now();
  const deadline = started + maxSeconds * 1000;

  async function worker() {
    while (issued < maxRequests && performance.now() < deadline) {
      const body = scenario.body?.(issued);
      issued += 1;
      const t0 = performance.now();
      let failure;
      try {
        let { status, text } = await send(agent, url, scenario.method, body, timeoutMs);
        if (scenario.retry?.(status, parseJson(text))) {
          retries += 1;
          ({ status, text } = await send(agent, url, scenario.method, body, timeoutMs));
        }
        failure = scenario.check(status, parseJson(text));
      } catch (error) {
        failure = `transport: ${error?.code ?? error?.message ?? error}`;
      }
      latencies.push(performance.now() - t0);
      if (TRACE) {
        const end = performance.timeOrigin + performance.now();
        appendFileSync(TRACE, JSON.stringify({ t0: (performance.timeOrigin + t0) / 1000, t1: end / 1000, path: scenario.path, failure }) + "\n");
      }
      if (failure) errors[failure] = (errors[failure] ?? 0) + 1;
    }
  }

  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  const seconds = (performance.now() - started) / 1000;
  return { requests: latencies.length, seconds, throughput: latencies.length / seconds, ...summarize(latencies),
    errorCount: Object.values(errors).reduce((a, b) => a + b, 0), errors, retries };
}

/** One HTTP request on a kept-alive connection; resolves with the status and the whole body. */
function send(agent, url, method, body, timeoutMs = REQUEST_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const headers = body === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
    const req = request(url, { method, agent, headers, timeout: timeoutMs }, (response) => {
      const chunks = [];
      response.on("data", (chunk) => chunks.push(chunk));
      response.on("end", () => resolve({ status: response.statusCode, text: Buffer.concat(chunks).toString("utf8") }));
      response.on("error", reject);
    });
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
    req.on("error", reject);
    req.end(body);
  });
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return { unparsed: text.slice(0, 200) };
  }
}

/** Nearest-rank percentiles over every request's latency, in milliseconds. */
export function summarize(latencies) {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] : NaN);
  const mean = sorted.reduce((a, b) => a + b, 0) / (sorted.length || 1);
  return { p50: at(50), p90: at(90), p99: at(99), max: sorted.at(-1) ?? NaN, mean };
}
