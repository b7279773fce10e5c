// x402 v1 with the official v1 SDKs: a resource server on x402-express 1.x with its facilitator
// config at our base URL, network "base-sepolia", and a client on x402-fetch 1.x. v1 carries the
// requirements in the 402's JSON body and the payment in X-PAYMENT.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createWalletClient, http } from "viem";
import { baseSepolia } from "viem/chains";
import { decodeXPaymentResponse, wrapFetchWithPayment } from "x402-fetch";
import { Chain, facilitatorUrl, loadStack, resourcePort } from "./lib/stack.mjs";
import { PRICE_ATOMIC, startV1ResourceServer } from "./lib/servers.mjs";

const stack = loadStack();
const chain = new Chain(stack);
const FRONT_ENDS = [
  { name: "the local server", variable: "X402_BASE_URL", port: 2 },
  { name: "the Lambda functions", variable: "X402_LAMBDA_ROUTE_URL", port: 3 },
];

for (const frontEnd of FRONT_ENDS) {
  describe(`x402 v1 SDKs through ${frontEnd.name}`, () => {
    let server;
    let payTo;
    before(async () => {
      payTo = chain.newPayee();
      server = await startV1ResourceServer({ facilitatorUrl: facilitatorUrl(frontEnd.variable), payTo, port: resourcePort(frontEnd.port) });
    });
    after(() => server?.close());

    test("an unpaid GET gets 402 with base-sepolia USDC requirements in the body", async () => {
      const response = await fetch(server.url);
      assert.equal(response.status, 402);
      const body = await response.json();
      assert.equal(body.x402Version, 1);
      const [accepts] = body.accepts;
      assert.equal(accepts.scheme, "exact");
      assert.equal(accepts.network, "base-sepolia");
      assert.equal(accepts.maxAmountRequired, PRICE_ATOMIC.toString());
      assert.equal(accepts.asset.toLowerCase(), stack.X402_TOKEN.toLowerCase());
      assert.equal(accepts.payTo.toLowerCase(), payTo.toLowerCase());
      assert.deepEqual(accepts.extra, { name: stack.X402_TOKEN_NAME, version: stack.X402_TOKEN_VERSION });
    });

    test("a paid GET gets 200 and an X-PAYMENT-RESPONSE for a mined transfer of the price", async () => {
      const payer = await chain.fundedPayer(10n * PRICE_ATOMIC);
      // x402-fetch 1.x picks the requirements for the wallet's chain, so the wallet is on Base Sepolia.
      const wallet = createWalletClient({ account: payer, chain: baseSepolia, transport: http(stack.ANVIL_URL) });
      const pay = wrapFetchWithPayment(fetch, wallet);

      const response = await pay(server.url);
      assert.equal(response.status, 200, await response.clone().text());
      assert.deepEqual(await response.json(), { report: "paid content" });

      const settled = decodeXPaymentResponse(response.headers.get("X-PAYMENT-RESPONSE"));
      assert.equal(settled.success, true, JSON.stringify(settled));
      assert.equal(settled.network, "base-sepolia");
      assert.equal(settled.payer.toLowerCase(), payer.address.toLowerCase());
      await chain.assertPaid({ transaction: settled.transaction, payer: payer.address, payTo, price: PRICE_ATOMIC, funded: 10n * PRICE_ATOMIC });
    });
  });
}
