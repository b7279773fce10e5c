// Permit2 `exact` payments as @x402/evm 2.27's own client signs them, verified and settled by our
// facilitator through @x402/core's HTTPFacilitatorClient (what a resource server calls), on both
// front ends: the official client's payloads and ours agree (the typed data, the nonce and deadline
// formats, the signature, the reasons), and a settled one moves exactly the price through the proxy.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { HTTPFacilitatorClient } from "@x402/core/server";
import { toClientEvmSigner, x402ExactPermit2ProxyAddress } from "@x402/evm";
import { ExactEvmScheme as ExactClient } from "@x402/evm/exact/client";
import { getAddress } from "viem";
import { PermitChain } from "./lib/permit2.mjs";
import { facilitatorUrl, loadStack } from "./lib/stack.mjs";

const stack = loadStack();
const PRICE = 1_000_000n; // atomic units of the permit token (18 decimals)
const FRONT_ENDS = [
  { name: "the local server", variable: "X402_BASE_URL" },
  { name: "the Lambda functions", variable: "X402_LAMBDA_ROUTE_URL" },
];

const permitChain = new PermitChain(stack);
const chain = permitChain.public;

/** A fresh payer holding 10 prices of the permit token; with `approved`, it has approved Permit2. */
const newPayer = ({ approved }) => permitChain.newPayer({ amount: 10n * PRICE, approved });

function requirements() {
  return {
    scheme: "exact",
    network: stack.X402_NETWORK,
    amount: PRICE.toString(),
    asset: getAddress(stack.X402_PERMIT_TOKEN),
    payTo: getAddress(stack.X402_PAYEE),
    maxTimeoutSeconds: 300,
    extra: { name: stack.X402_PERMIT_TOKEN_NAME, version: stack.X402_PERMIT_TOKEN_VERSION, assetTransferMethod: "permit2" },
  };
}

/** The PaymentPayload the SDK's client builds for `accepted`. */
async function pay(payer, accepted) {
  const created = await new ExactClient(toClientEvmSigner(payer, chain)).createPaymentPayload(2, accepted);
  assert.ok(created.payload.permit2Authorization, "the SDK's client chose Permit2");
  return { ...created, resource: { url: "http://127.0.0.1/permit2-verify", description: "", mimeType: "application/json" }, accepted };
}

for (const frontEnd of FRONT_ENDS) {
  describe(`Permit2 verify and settle with the official SDK through ${frontEnd.name}`, () => {
    const facilitator = () => new HTTPFacilitatorClient({ url: facilitatorUrl(frontEnd.variable) });

    test("a payment from a payer that approved Permit2 is valid", async () => {
      const payer = await newPayer({ approved: true });
      const accepted = requirements();
      const answer = await facilitator().verify(await pay(payer, accepted), accepted);
      assert.equal(answer.isValid, true, JSON.stringify(answer));
      assert.equal(getAddress(answer.payer), payer.address);
    });

    test("a verified payment settles once through the exact proxy, moving exactly the price", async () => {
      const payer = await newPayer({ approved: true });
      const accepted = requirements();
      const payload = await pay(payer, accepted);
      const balance = (account) => permitChain.balanceOf(account);
      const before = [await balance(payer.address), await balance(accepted.payTo)];
      const verified = await facilitator().verify(payload, accepted);
      assert.equal(verified.isValid, true, JSON.stringify(verified));
      const settled = await facilitator().settle(payload, accepted);
      assert.equal(settled.success, true, JSON.stringify(settled));
      const receipt = await chain.getTransactionReceipt({ hash: settled.transaction });
      assert.equal(receipt.status, "success");
      assert.equal(getAddress(receipt.to), getAddress(x402ExactPermit2ProxyAddress));
      assert.deepEqual([await balance(payer.address), await balance(accepted.payTo)], [before[0] - PRICE, before[1] + PRICE]);
      // The same payload again is not a second success, and nothing moves.
      const again = await facilitator().settle(payload, accepted);
      assert.equal(again.success, false, JSON.stringify(again));
      assert.equal(again.errorReason, "permit2_invalid_nonce", JSON.stringify(again));
      assert.deepEqual([await balance(payer.address), await balance(accepted.payTo)], [before[0] - PRICE, before[1] + PRICE]);
    });

    test("a payer that never approved Permit2 gets permit2_allowance_required", async () => {
      const payer = await newPayer({ approved: false });
      const accepted = requirements();
      const answer = await facilitator().verify(await pay(payer, accepted), accepted);
      assert.equal(answer.isValid, false);
      assert.equal(answer.invalidReason, "permit2_allowance_required", JSON.stringify(answer));
    });

    test("a payment to another payee is invalid_permit2_recipient_mismatch", async () => {
      const payer = await newPayer({ approved: true });
      const accepted = requirements();
      const payload = await pay(payer, accepted);
      const other = { ...accepted, payTo: getAddress(stack.payers[3].address) };
      const answer = await facilitator().verify({ ...payload, accepted: other }, other);
      assert.equal(answer.isValid, false);
      assert.equal(answer.invalidReason, "invalid_permit2_recipient_mismatch", JSON.stringify(answer));
    });
  });
}
