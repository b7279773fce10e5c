// The local stand-in for the HTTP API in front of the Lambda functions: one base URL with the
// facilitator's paths, each passed to its function's URL under cargo-lambda's runtime emulator
// (infra/lambda/lambda-emulator.sh), so an SDK pointed at this base URL talks to the Lambda functions
// exactly as it would to API Gateway. A route, not a facilitator: method, headers, body, status and
// answer pass through unchanged. Node built-ins only, nothing to install.
//
//   LAMBDA_PORT=9000 LAMBDA_ROUTE_LISTEN=127.0.0.1:4021 node infra/lambda/lambda-route.mjs
//
// GET /health goes to the supported function, as the template's HTTP API routes it.

import { createServer } from "node:http";

const ROUTES = {
  "POST /verify": "verify",
  "POST /settle": "settle",
  "GET /supported": "supported",
  "GET /health": "supported",
};
// Dropped on the way in: the emulator sets its own host and framing.
const HOP_BY_HOP = new Set(["host", "connection", "keep-alive", "transfer-encoding", "content-length"]);

const lambdaPort = process.env.LAMBDA_PORT ?? "9000";
const [host, port] = (process.env.LAMBDA_ROUTE_LISTEN ?? "127.0.0.1:4021").split(":");

const server = createServer(async (request, response) => {
  const path = new URL(request.url, "http://route").pathname;
  const fn = ROUTES[`${request.method} ${path}`];
  if (!fn) return send(response, 404, { "content-type": "application/json" }, JSON.stringify({ error: `no route for ${request.method} ${path}` }));
  try {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const headers = Object.fromEntries(Object.entries(request.headers).filter(([name]) => !HOP_BY_HOP.has(name)));
    const answer = await fetch(`http://127.0.0.1:${lambdaPort}/lambda-url/${fn}/`, {
      method: request.method,
      headers,
      body: request.method === "GET" ? undefined : Buffer.concat(chunks),
    });
    const body = Buffer.from(await answer.arrayBuffer());
    const answerHeaders = Object.fromEntries([...answer.headers].filter(([name]) => !HOP_BY_HOP.has(name)));
    send(response, answer.status, answerHeaders, body);
  } catch (error) {
    // The emulator is down or the function crashed: what API Gateway answers then.
    send(response, 502, { "content-type": "application/json" }, JSON.stringify({ error: `lambda ${fn}: ${error.message}` }));
  }
});

function send(response, status, headers, body) {
  response.writeHead(status, { ...headers, "content-length": Buffer.byteLength(body) });
  response.end(body);
}

server.listen(Number(port), host, () => console.log(`lambda-route: http://${host}:${port} -> lambda functions on :${lambdaPort}`));
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => server.close(() => process.exit(0)));
