// What the harness can send a facilitator. A scenario is a route, where each request's body comes
// from, and what counts as a correct answer; the driver (drive.mjs) and the report know nothing
// more. Settle will be one more scenario here (bodies used once each, success = a mined transfer),
// with its own counts beside the RPC ones (KMS Sign and DynamoDB calls per settlement).

/** POST /verify with pre-signed bodies, each used once; correct = 200 and isValid true. */
export function verifyScenario(bodies) {
  let next = 0;
  return {
    name: "verify",
    method: "POST",
    path: "/verify",
    countsRpc: true,
    body() {
      if (next >= bodies.length) throw new Error("verify: ran out of pre-signed bodies; sign more");
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
