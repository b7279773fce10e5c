// The counting proxy in front of moto (infra/stack/aws_counter.py): reset before a measurement, read
// after, so KMS, DynamoDB and SQS calls can be divided by the settlements that caused them.
// Only our facilitator talks to AWS; the SQS poller (Lambda's event source mapping) goes to moto
// directly and is not counted.

export async function resetAwsCounts(counterUrl) {
  const response = await fetch(`${counterUrl}/__reset`, { method: "POST" });
  if (!response.ok) throw new Error(`aws counter reset: HTTP ${response.status}`);
  await response.arrayBuffer();
}

/** @returns {Promise<{http_requests: number, calls: object, errors: object, by_client: object}>} */
export async function readAwsCounts(counterUrl) {
  const response = await fetch(`${counterUrl}/__counts`);
  if (!response.ok) throw new Error(`aws counter counts: HTTP ${response.status}`);
  return response.json();
}

/**
 * Reads the counts once they have stopped moving: every /settle has answered when a phase ends,
 * but a worker may still be finishing a message (a payment /settle cancelled at its deadline).
 */
export async function readSettledAwsCounts(counterUrl, { quietMs = 1000, maxMs = 10_000 } = {}) {
  const until = Date.now() + maxMs;
  let last = await readAwsCounts(counterUrl);
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, quietMs));
    const now = await readAwsCounts(counterUrl);
    if (now.http_requests === last.http_requests || Date.now() >= until) return now;
    last = now;
  }
}
