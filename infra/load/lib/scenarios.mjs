// What the harness can send a facilitator. A scenario is a route, where each request's body comes
// from, and what counts as a correct answer; the driver (drive.mjs) and the report know nothing
// more. Settle's own counts (KMS Sign, DynamoDB and SQS calls per settlement) are read by settle.mjs.

/** How a scenario is named in the report's tables. */
export function routeLabel(scenario) {
  return { "verify": "POST /verify", "verify-permit2": "POST /verify (Permit2)", "supported": "GET /supported" }[scenario]
    ?? scenario;
}

/**
 * POST /verify with pre-signed bodies, each used once; correct = 200 and isValid true. `name`
 * tells the kinds of payment apart in the report ("verify": EIP-3009, "verify-permit2").
 */
export function verifyScenario(bodies, name = "verify") {
  let next = 0;
  return {
    name,
    method: "POST",
    path: "/verify",
    countsRpc: true,
    body() {
      if (next >= bodies.length) throw new Error(`${name}: ran out of pre-signed bodies; sign more`);
      return bodies[next++];
    },
    check(status, json) {
      if (status === 200 && json?.isValid === true) return null;
      return `${status} ${json?.invalidReason ?? json?.error ?? json?.unparsed ?? "unexpected answer"}`;
    },
  };
}

/** GET /supported; correct = 200 with a kinds list. */
export function supportedScenario() {
  return {
    name: "supported",
    method: "GET",
    path: "/supported",
    countsRpc: true,
    body: () => undefined,
    check(status, json) {
      return status === 200 && Array.isArray(json?.kinds) ? null : `${status} ${json?.error ?? "no kinds"}`;
    },
  };
}

/**
 * POST /settle with pre-signed bodies, each used once; correct = 200 with success true and a
 * transaction hash (ours answers success only for a mined transfer whose Transfer event matches;
 * the reference, after waiting for the receipt). A `settlement_pending` answer (broadcast, not mined
 * by the deadline) is sent again once, as the SDK's client does; the failure key is the wire's
 * errorReason, so failures are counted by reason.
 */
export function settleScenario(bodies) {
  let next = 0;
  return {
    name: "settle",
    method: "POST",
    path: "/settle",
    countsRpc: true,
    timeoutMs: 60_000, // ours answers within its deadline (25 s by default); the reference waits for receipts
    body() {
      if (next >= bodies.length) throw new Error("settle: ran out of pre-signed bodies; sign more");
      return bodies[next++];
    },
    retry: (status, json) => status === 200 && json?.errorReason === "settlement_pending",
    check(status, json) {
      if (status === 200 && json?.success === true && /^0x[0-9a-fA-F]{64}$/.test(json?.transaction ?? "")) return null;
      return `${status} ${json?.errorReason ?? json?.error ?? json?.unparsed ?? "unexpected answer"}`;
    },
  };
}
