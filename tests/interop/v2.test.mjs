// x402 v2 with the official SDKs: a resource server on @x402/express whose HTTPFacilitatorClient
// points at our facilitator, and a client on @x402/fetch. Run once against each front end: the
// local server (X402_BASE_URL) and the Lambda functions behind the local route (X402_LAMBDA_ROUTE_URL).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { decodePaymentRequiredHeader, decodePaymentResponseHeader, decodePaymentSignatureHeader } from "@x402/core/http";
import { x402Client } from "@x402/core/client";
import { HTTPFacilitatorClient } from "@x402/core/server";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment } from "@x402/fetch";
import { Chain, facilitatorUrl, loadStack, resourcePort } from "./lib/stack.mjs";
import { PRICE_ATOMIC, startLocalFacilitator, startV2ResourceServer } from "./lib/servers.mjs";

const stack = loadStack();
const chain = new Chain(stack);
const FRONT_ENDS = [
  { name: "the local server", variable: "X402_BASE_URL", port: 0 },
  { name: "the Lambda functions", variable: "X402_LAMBDA_ROUTE_URL", port: 1 },
];

/** A fetch that pays with `payer`, and remembers the payment header it sent. */
function payingFetch(payer) {
  const sent = [];
  const recording = async (input, init) => {
    const request = new Request(input, init);
    sent.push(request.headers.get("PAYMENT-SIGNATURE"));
    return fetch(request);
  };
  const client = registerExactEvmScheme(new x402Client(), { signer: payer });
  return { fetch: wrapFetchWithPayment(recording, client), sentPayments: () => sent.filter(Boolean) };
}

for (const frontEnd of FRONT_ENDS) {
  describe(`x402 v2 SDKs through ${frontEnd.name}`, () => {
    let server;
    let payTo;
    const handler = {};
    before(async () => {
      payTo = chain.newPayee();
      server = await startV2ResourceServer({ facilitatorUrl: facilitatorUrl(frontEnd.variable), payTo, port: resourcePort(frontEnd.port), handler });
    });
    after(() => server?.close());

    test("an unpaid GET gets 402 with Base Sepolia USDC requirements", async () => {
      const response = await fetch(server.url);
      assert.equal(response.status, 402);
      const required = decodePaymentRequiredHeader(response.headers.get("PAYMENT-REQUIRED"));
      assert.equal(required.x402Version, 2);
      assert.equal(required.accepts.length, 1);
      const [accepts] = required.accepts;
      assert.equal(accepts.scheme, "exact");
      assert.equal(accepts.network, "eip155:84532");
      assert.equal(accepts.amount, PRICE_ATOMIC.toString());
      assert.equal(accepts.asset.toLowerCase(), stack.X402_TOKEN.toLowerCase());
      assert.equal(accepts.payTo.toLowerCase(), payTo.toLowerCase());
      assert.deepEqual(accepts.extra, { name: stack.X402_TOKEN_NAME, version: stack.X402_TOKEN_VERSION });
    });

    test("a paid GET gets 200 and a PAYMENT-RESPONSE for a mined transfer of the price", async () => {
      const payer = await chain.fundedPayer(10n * PRICE_ATOMIC);
      const { fetch: pay } = payingFetch(payer);

      const response = await pay(server.url);
      assert.equal(response.status, 200, await response.clone().text());
      assert.deepEqual(await response.json(), { report: "paid content" });

      const settled = decodePaymentResponseHeader(response.headers.get("PAYMENT-RESPONSE"));
      assert.equal(settled.success, true, JSON.stringify(settled));
      assert.equal(settled.network, "eip155:84532");
      assert.equal(settled.payer.toLowerCase(), payer.address.toLowerCase());
      assert.match(settled.transaction, /^0x[0-9a-f]{64}$/);
      await chain.assertPaid({ transaction: settled.transaction, payer: payer.address, payTo, price: PRICE_ATOMIC, funded: 10n * PRICE_ATOMIC });
    });

    test("the same payment sent again gets 402 with the reason, and nothing moves", async () => {
      const payer = await chain.fundedPayer(10n * PRICE_ATOMIC);
      const { fetch: pay, sentPayments } = payingFetch(payer);
      assert.equal((await pay(server.url)).status, 200);
      const payeeBefore = await chain.balanceOf(payTo);

      const [payment] = sentPayments();
      const replay = await fetch(server.url, { headers: { "PAYMENT-SIGNATURE": payment } });
      assert.equal(replay.status, 402);
      const required = decodePaymentRequiredHeader(replay.headers.get("PAYMENT-REQUIRED"));
      assert.equal(required.error, "invalid_exact_evm_nonce_already_used");

      assert.equal(await chain.balanceOf(payer.address), 9n * PRICE_ATOMIC);
      assert.equal(await chain.balanceOf(payTo), payeeBefore);
    });

    test("the same PAYMENT-SIGNATURE header sent ten times at once is delivered once, for one transfer", async () => {
      const payer = await chain.fundedPayer(10n * PRICE_ATOMIC);
      const payeeBefore = await chain.balanceOf(payTo);
      // Signed by the official client without sending it: the first request of a paid fetch gets
      // the 402, and the header the client would send is what an attacker replays at once.
      const client = registerExactEvmScheme(new x402Client(), { signer: payer });
      let header;
      const capture = async (input, init) => {
        const request = new Request(input, init);
        header = request.headers.get("PAYMENT-SIGNATURE");
        if (header) return new Response("captured", { status: 499 });
        return fetch(request);
      };
      await wrapFetchWithPayment(capture, client)(server.url).catch(() => undefined);
      assert.ok(header, "the client signed a payment");

      const responses = await Promise.all(
        Array.from({ length: 10 }, () => fetch(server.url, { headers: { "PAYMENT-SIGNATURE": header } })),
      );
      const statuses = responses.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, 402, 402, 402, 402, 402, 402, 402, 402, 402], JSON.stringify(statuses));
      // Refused at the server's verify (already mined) or at its settle (another caller was told
      // success): the reason is the used nonce either way.
      for (const refused of responses.filter((r) => r.status === 402)) {
        const settled = refused.headers.get("PAYMENT-RESPONSE");
        const reason = settled
          ? decodePaymentResponseHeader(settled).errorReason
          : decodePaymentRequiredHeader(refused.headers.get("PAYMENT-REQUIRED")).error;
        assert.equal(reason, "invalid_exact_evm_nonce_already_used");
      }
      assert.equal(await chain.balanceOf(payer.address), 9n * PRICE_ATOMIC);
      assert.equal(await chain.balanceOf(payTo), payeeBefore + PRICE_ATOMIC);
    });

    test("a payment cancelled on chain between verify and settle gets 402 with our settle failure", async () => {
      const payer = await chain.fundedPayer(10n * PRICE_ATOMIC);
      const payeeBefore = await chain.balanceOf(payTo);
      // The route runs after the SDK's /verify and before its /settle: the payer cancels there.
      handler.beforeAnswer = async (request) => {
        const payment = decodePaymentSignatureHeader(request.header("PAYMENT-SIGNATURE"));
        await chain.cancelAuthorization(payer, payment.payload.authorization.nonce);
      };
      let response;
      try {
        response = await payingFetch(payer).fetch(server.url);
      } finally {
        handler.beforeAnswer = undefined;
      }
      assert.equal(response.status, 402);
      const settled = decodePaymentResponseHeader(response.headers.get("PAYMENT-RESPONSE"));
      assert.equal(settled.success, false, JSON.stringify(settled));
      assert.equal(settled.errorReason, "invalid_exact_evm_nonce_already_used");
      assert.equal(settled.transaction, "");
      assert.equal(settled.network, "eip155:84532");

      assert.equal(await chain.balanceOf(payer.address), 10n * PRICE_ATOMIC);
      assert.equal(await chain.balanceOf(payTo), payeeBefore);
    });
  });
}

/** The SDK's own facilitator client, recording each settle result and running `afterSettle` on it. */
class WatchedFacilitatorClient extends HTTPFacilitatorClient {
  settled = [];
  afterSettle = undefined;

  async settle(payload, requirements) {
    const result = await super.settle(payload, requirements);
    this.settled.push(result);
    await this.afterSettle?.(result);
    return result;
  }
}

describe("x402 v2 SDKs and settlement_pending (a local server with a 3 s settle deadline)", () => {
  let facilitatorServer;
  let server;
  let payTo;
  let facilitator;
  before(async () => {
    facilitatorServer = await startLocalFacilitator({ port: resourcePort(4), env: { X402_SETTLE_DEADLINE_MS: "3000" } });
    facilitator = new WatchedFacilitatorClient({ url: facilitatorServer.url });
    payTo = chain.newPayee();
    server = await startV2ResourceServer({ facilitator, payTo, port: resourcePort(5) });
  });
  after(async () => {
    await chain.setAutomine(true);
    await server?.close();
    await facilitatorServer?.close();
  });

  test("the SDK settles once more on our settlement_pending and gets the success, mined", async () => {
    const payer = await chain.fundedPayer(10n * PRICE_ATOMIC);
    // The chain stops mining, so the first /settle can only say pending; the block is mined before
    // the SDK, which retries a pending settlement once at once, sends its second /settle.
    await chain.setAutomine(false);
    facilitator.afterSettle = async (result) => {
      if (result.errorReason === "settlement_pending") await chain.mine();
    };
    let response;
    try {
      response = await payingFetch(payer).fetch(server.url);
    } finally {
      facilitator.afterSettle = undefined;
      await chain.setAutomine(true);
    }

    const [pending, final, ...more] = facilitator.settled;
    assert.equal(pending?.success, false, JSON.stringify(pending));
    assert.equal(pending.errorReason, "settlement_pending");
    assert.match(pending.transaction, /^0x[0-9a-f]{64}$/);
    assert.equal(final?.success, true, JSON.stringify(final));
    assert.equal(final.transaction, pending.transaction);
    assert.deepEqual(more, []);

    assert.equal(response.status, 200, await response.clone().text());
    const settled = decodePaymentResponseHeader(response.headers.get("PAYMENT-RESPONSE"));
    assert.equal(settled.transaction, pending.transaction);
    await chain.assertPaid({ transaction: settled.transaction, payer: payer.address, payTo, price: PRICE_ATOMIC, funded: 10n * PRICE_ATOMIC });
  });
});
