// x402 v2 Permit2 `exact` end to end with the official SDKs 2.27: a resource server on
// @x402/express whose route asks for the stack's EIP-2612 permit token with
// extra.assetTransferMethod "permit2" (an AssetAmount price: @x402/evm's ExactEvmScheme server
// passes its extra through, and @x402/core keeps assetTransferMethod on the wire), its
// HTTPFacilitatorClient pointed at our facilitator, and a client on @x402/fetch whose
// @x402/evm exact client signs a Permit2 witness transfer because the requirements say so. Run
// once against each front end.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { x402Client } from "@x402/core/client";
import { decodePaymentRequiredHeader, decodePaymentResponseHeader } from "@x402/core/http";
import { toClientEvmSigner, x402ExactPermit2ProxyABI, x402ExactPermit2ProxyAddress } from "@x402/evm";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment } from "@x402/fetch";
import { decodeFunctionData, getAddress } from "viem";
import { PermitChain, permitTokenPrice, permitTokenSpendControls } from "./lib/permit2.mjs";
import { getPaidReport, startV2ResourceServer } from "./lib/servers.mjs";
import { facilitatorUrl, loadStack, resourcePort } from "./lib/stack.mjs";

const stack = loadStack();
const chain = new PermitChain(stack);
const PRICE = 1_000_000n; // atomic units of the permit token (18 decimals)
const FUNDED = 10n * PRICE;
const FRONT_ENDS = [
  { name: "the local server", variable: "X402_BASE_URL", port: 0 },
  { name: "the Lambda functions", variable: "X402_LAMBDA_ROUTE_URL", port: 1 },
];

/** The route config's price: the permit token, paid through Permit2. */
function permit2Price() {
  return permitTokenPrice(stack, PRICE, { assetTransferMethod: "permit2" });
}

/**
 * @x402/fetch paying with `payer` through @x402/evm's exact client, its spend controls allowing
 * the permit token up to the price.
 */
function payingFetch(payer) {
  const client = registerExactEvmScheme(new x402Client().setSpendControls(permitTokenSpendControls(stack, PRICE)), { signer: toClientEvmSigner(payer, chain.public) });
  return wrapFetchWithPayment(fetch, client);
}

for (const frontEnd of FRONT_ENDS) {
  describe(`x402 v2 SDKs paying with Permit2 through ${frontEnd.name}`, () => {
    let server;
    let payTo;
    before(async () => {
      payTo = chain.newPayee();
      server = await startV2ResourceServer({ facilitatorUrl: facilitatorUrl(frontEnd.variable), payTo, port: resourcePort(frontEnd.port), price: permit2Price() });
    });
    after(() => server?.close());

    test("an unpaid GET gets 402 asking for the permit token through Permit2", async () => {
      const response = await fetch(server.url);
      assert.equal(response.status, 402);
      const required = decodePaymentRequiredHeader(response.headers.get("PAYMENT-REQUIRED"));
      assert.equal(required.x402Version, 2);
      assert.equal(required.accepts.length, 1);
      const [accepts] = required.accepts;
      assert.equal(accepts.scheme, "exact");
      assert.equal(accepts.network, "eip155:84532");
      assert.equal(accepts.amount, PRICE.toString());
      assert.equal(getAddress(accepts.asset), getAddress(stack.X402_PERMIT_TOKEN));
      assert.equal(getAddress(accepts.payTo), payTo);
      assert.equal(accepts.extra.assetTransferMethod, "permit2");
    });

    test("a paid GET gets 200 and a PAYMENT-RESPONSE naming the mined Permit2 transfer of exactly the price", async () => {
      const payer = await chain.newPayer({ amount: FUNDED, approved: true });
      const payeeBefore = await chain.balanceOf(payTo);

      const settled = await getPaidReport(payingFetch(payer), server.url);
      assert.equal(settled.network, "eip155:84532");
      assert.equal(getAddress(settled.payer), payer.address);
      assert.match(settled.transaction, /^0x[0-9a-f]{64}$/);
      const receipt = await chain.public.getTransactionReceipt({ hash: settled.transaction });
      assert.equal(receipt.status, "success");
      assert.equal(getAddress(receipt.to), getAddress(x402ExactPermit2ProxyAddress));
      assert.equal(await chain.balanceOf(payer.address), FUNDED - PRICE);
      assert.equal(await chain.balanceOf(payTo), payeeBefore + PRICE);
    });

    // @x402/core 2.27's x402HTTPResourceServer.createHTTPResponse answers 412, not 402, when the
    // facilitator's reason is permit2_allowance_required: our reason string is the one it knows.
    test("a payer that never approved Permit2 gets 412 with permit2_allowance_required, and nothing moves", async () => {
      const payer = await chain.newPayer({ amount: FUNDED, approved: false });
      const payeeBefore = await chain.balanceOf(payTo);

      const response = await payingFetch(payer)(server.url);
      assert.equal(response.status, 412);
      const required = decodePaymentRequiredHeader(response.headers.get("PAYMENT-REQUIRED"));
      assert.equal(required.error, "permit2_allowance_required", JSON.stringify(required));
      assert.equal(await chain.balanceOf(payer.address), FUNDED);
      assert.equal(await chain.balanceOf(payTo), payeeBefore);
    });
  });

  // A route that declares eip2612GasSponsoring in its 402 (the route config's `extensions`, as
  // @x402/extensions' declaration would put it): @x402/evm 2.27's exact client then reads the
  // payer's Permit2 allowance and, finding it short, signs the token's EIP-2612 permit for Permit2
  // into the payload's extensions; our facilitator settles through the proxy's settleWithPermit.
  describe(`x402 v2 SDKs paying with Permit2 and eip2612GasSponsoring through ${frontEnd.name}`, () => {
    let server;
    let payTo;
    before(async () => {
      payTo = chain.newPayee();
      const extensions = { eip2612GasSponsoring: { info: { description: "EIP-2612 permits for Permit2 are submitted by the facilitator", version: "1" } } };
      server = await startV2ResourceServer({ facilitatorUrl: facilitatorUrl(frontEnd.variable), payTo, port: resourcePort(frontEnd.port + 2), price: permit2Price(), extensions });
    });
    after(() => server?.close());

    test("a payer that never approved Permit2 pays through settleWithPermit, and exactly the price moves", async () => {
      const payer = await chain.newPayer({ amount: FUNDED, approved: false });
      const payeeBefore = await chain.balanceOf(payTo);

      const response = await payingFetch(payer)(server.url);
      assert.equal(response.status, 200, await response.clone().text());
      const settled = decodePaymentResponseHeader(response.headers.get("PAYMENT-RESPONSE"));
      assert.equal(settled.success, true, JSON.stringify(settled));
      const transaction = await chain.public.getTransaction({ hash: settled.transaction });
      assert.equal(getAddress(transaction.to), getAddress(x402ExactPermit2ProxyAddress));
      assert.equal(decodeFunctionData({ abi: x402ExactPermit2ProxyABI, data: transaction.input }).functionName, "settleWithPermit");
      const receipt = await chain.public.getTransactionReceipt({ hash: settled.transaction });
      assert.equal(receipt.status, "success");
      assert.equal(await chain.balanceOf(payer.address), FUNDED - PRICE);
      assert.equal(await chain.balanceOf(payTo), payeeBefore + PRICE);
    });

    test("an approved payer on the same route pays through settle, as before", async () => {
      const payer = await chain.newPayer({ amount: FUNDED, approved: true });
      const response = await payingFetch(payer)(server.url);
      assert.equal(response.status, 200, await response.clone().text());
      const settled = decodePaymentResponseHeader(response.headers.get("PAYMENT-RESPONSE"));
      assert.equal(settled.success, true, JSON.stringify(settled));
      const transaction = await chain.public.getTransaction({ hash: settled.transaction });
      assert.equal(decodeFunctionData({ abi: x402ExactPermit2ProxyABI, data: transaction.input }).functionName, "settle");
      assert.equal(await chain.balanceOf(payer.address), FUNDED - PRICE);
    });
  });
}
