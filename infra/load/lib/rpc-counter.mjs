// The local stack's counting RPC proxy (infra/stack/rpc_counter.py): reset its counts before a
// measurement and read them after, so chain calls can be divided by the requests that caused them.
// Scenarios run one at a time, so whatever the proxy saw in between belongs to that scenario.

export async function resetRpcCounts(proxyUrl) {
  const response = await fetch(`${proxyUrl}/__reset`, { method: "POST" });
  if (!response.ok) throw new Error(`rpc proxy reset: HTTP ${response.status}`);
  await response.arrayBuffer();
}

/** @returns {Promise<{http_requests: number, rpc_requests: number, methods: Record<string, number>}>} */
export async function readRpcCounts(proxyUrl) {
  const response = await fetch(`${proxyUrl}/__counts`);
  if (!response.ok) throw new Error(`rpc proxy counts: HTTP ${response.status}`);
  return response.json();
}

/**
 * Makes a counting proxy (this one or infra/stack/aws_counter.py: both answer POST /__latency) hold every
 * request `ms` milliseconds before forwarding it: a deployment's network round trip, modelled.
 */
export async function setProxyLatency(proxyUrl, ms) {
  const response = await fetch(`${proxyUrl}/__latency`, { method: "POST", body: JSON.stringify({ ms }) });
  if (!response.ok) throw new Error(`${proxyUrl}/__latency: HTTP ${response.status}`);
  await response.arrayBuffer();
}
