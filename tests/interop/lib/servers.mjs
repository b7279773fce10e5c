// Resource servers built only from the official SDKs, as a user would build them, each pointed at
// one of our facilitator front ends. Each sells one route, GET /report, for PRICE.
//
// Nothing about the asset is configured: the SDKs pick Base Sepolia's USDC (address, EIP-712 name
// "USDC", version "2") from their own tables, and the local stack placed its token there.

import { once } from "node:events";
import express from "express";
import { HTTPFacilitatorClient } from "@x402/core/server";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { paymentMiddleware as paymentMiddlewareV1 } from "x402-express";

/** What GET /report costs, in the SDKs' money notation, and in the token's atomic units (6 decimals). */
export const PRICE = "$0.001";
export const PRICE_ATOMIC = 1000n;
export const ROUTE = "/report";

/**
 * x402 v2: @x402/express with HTTPFacilitatorClient at `facilitatorUrl`, network eip155:84532.
 * `handler.beforeAnswer(request)`, when set, runs inside the paid route: after the payment was
 * verified, before the SDK settles it.
 */
export async function startV2ResourceServer({ facilitatorUrl, payTo, port, handler = {} }) {
  const facilitator = new HTTPFacilitatorClient({ url: facilitatorUrl });
  const resourceServer = new x402ResourceServer(facilitator).register("eip155:84532", new ExactEvmScheme());
  const app = express();
  app.use(
    paymentMiddleware(
      { [`GET ${ROUTE}`]: { accepts: { scheme: "exact", price: PRICE, network: "eip155:84532", payTo }, description: "interop test report" } },
      resourceServer,
    ),
  );
  app.get(ROUTE, async (request, response) => {
    await handler.beforeAnswer?.(request);
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
