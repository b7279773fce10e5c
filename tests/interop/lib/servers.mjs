// Resource servers built only from the official SDKs, as a user would build them, each pointed at
// one of our facilitator front ends. Each sells one route, GET /report, for PRICE; getPaidReport
// is a client's paid GET of it.
//
// Nothing about the asset is configured: the SDKs pick Base Sepolia's USDC (address, EIP-712 name
// "USDC", version "2") from their own tables, and the local stack placed its token there.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { openSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import express from "express";
import { decodePaymentResponseHeader } from "@x402/core/http";
import { HTTPFacilitatorClient } from "@x402/core/server";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import { UptoEvmScheme } from "@x402/evm/upto/server";
import { paymentMiddleware, setSettlementOverrides, x402ResourceServer } from "@x402/express";
import { paymentMiddleware as paymentMiddlewareV1 } from "x402-express";

/** What GET /report costs, in the SDKs' money notation, and in the token's atomic units (6 decimals). */
export const PRICE = "$0.001";
export const PRICE_ATOMIC = 1000n;
export const ROUTE = "/report";

/**
 * GETs a server's ROUTE at `url` through `payingFetch` (@x402/fetch's paying fetch): asserts the
 * paid content came back with 200 and a PAYMENT-RESPONSE telling success, and returns that decoded.
 */
export async function getPaidReport(payingFetch, url) {
  const response = await payingFetch(url);
  assert.equal(response.status, 200, await response.clone().text());
  assert.deepEqual(await response.json(), { report: "paid content" });
  const settled = decodePaymentResponseHeader(response.headers.get("PAYMENT-RESPONSE"));
  assert.equal(settled.success, true, JSON.stringify(settled));
  return settled;
}

/**
 * x402 v2: @x402/express with `facilitator` (HTTPFacilitatorClient at `facilitatorUrl` unless given),
 * network eip155:84532. `price` is the route config's price: PRICE unless given (an AssetAmount,
 * `{ amount, asset, extra }`, names another token or asks for Permit2 with extra.assetTransferMethod).
 * `handler.beforeAnswer(request)`, when set, runs inside the paid route: after the payment was
 * verified, before the SDK settles it.
 */
export async function startV2ResourceServer({ facilitatorUrl, facilitator = new HTTPFacilitatorClient({ url: facilitatorUrl }), payTo, port, price = PRICE, handler = {}, extensions }) {
  const resourceServer = new x402ResourceServer(facilitator).register("eip155:84532", new ExactEvmScheme());
  const app = express();
  app.use(
    paymentMiddleware(
      { [`GET ${ROUTE}`]: { accepts: { scheme: "exact", price, network: "eip155:84532", payTo }, description: "interop test report", ...(extensions && { extensions }) } },
      resourceServer,
    ),
  );
  app.get(ROUTE, async (request, response) => {
    await handler.beforeAnswer?.(request);
    response.json({ report: "paid content" });
  });
  return listen(app, port);
}

/**
 * x402 v2 `upto`: @x402/express with @x402/evm's upto server scheme, which takes the facilitator's
 * address from our /supported; the route asks for at most `price` (an AssetAmount) and, as a
 * usage-billing route does, tells the middleware to settle only `charge` (atomic units).
 */
export async function startV2UptoResourceServer({ facilitatorUrl, payTo, port, price, charge }) {
  const resourceServer = new x402ResourceServer(new HTTPFacilitatorClient({ url: facilitatorUrl })).register("eip155:84532", new UptoEvmScheme());
  const app = express();
  app.use(paymentMiddleware({ [`GET ${ROUTE}`]: { accepts: { scheme: "upto", price, network: "eip155:84532", payTo }, description: "interop test report, billed by use" } }, resourceServer));
  app.get(ROUTE, (_request, response) => {
    setSettlementOverrides(response, { amount: charge.toString() });
    response.json({ report: "paid content" });
  });
  return listen(app, port);
}

/** x402 v1: x402-express 1.x with its facilitator config at `facilitatorUrl`, network base-sepolia. */
export async function startV1ResourceServer({ facilitatorUrl, payTo, port }) {
  const app = express();
  app.use(
    paymentMiddlewareV1(
      payTo,
      { [`GET ${ROUTE}`]: { price: PRICE, network: "base-sepolia", config: { description: "interop test report" } } },
      { url: facilitatorUrl },
    ),
  );
  app.get(ROUTE, (_request, response) => response.json({ report: "paid content" }));
  return listen(app, port);
}

async function listen(app, port) {
  const server = app.listen(port, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${port}${ROUTE}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/**
 * One more instance of our local server (X402_LOCAL_SERVER_BIN, with the facilitator configuration
 * infra/test.sh exported) on `port`, with `env` on top: for behaviour that needs other settings
 * than the shared front ends have, such as a short settle deadline.
 */
export async function startLocalFacilitator({ port, env }) {
  const bin = process.env.X402_LOCAL_SERVER_BIN;
  if (!bin) throw new Error("set X402_LOCAL_SERVER_BIN to the built local-server (infra/test.sh does)");
  const log = openSync(join(process.env.X402_STACK_DIR, "logs", `interop-local-server-${port}.log`), "w");
  const child = spawn(bin, [], {
    env: { ...process.env, ...env, X402_LISTEN: `127.0.0.1:${port}` },
    stdio: ["ignore", log, log],
  });
  // infra/test.sh's cleanup stops it from this file if the tests die before `close`.
  const pidFile = join(process.env.X402_STACK_DIR, "run", "interop-local-server.pid");
  writeFileSync(pidFile, `${child.pid}\n`);
  const url = `http://127.0.0.1:${port}`;
  const close = async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      await once(child, "exit");
    }
    rmSync(pidFile, { force: true });
  };
  for (let attempt = 0; attempt < 100; attempt++) {
    if (child.exitCode !== null) throw new Error(`local-server exited (${child.exitCode}); see its log in $X402_STACK_DIR/logs`);
    if (await fetch(`${url}/health`).then((r) => r.ok, () => false)) return { url, close };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await close();
  throw new Error(`local-server did not answer on ${url}`);
}
