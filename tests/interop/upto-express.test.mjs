// x402 v2 `upto` end to end with the official SDKs 2.27: a resource server on @x402/express with
// @x402/evm's upto server scheme (which copies our /supported's facilitatorAddress into the
// requirements), asking for at most MAXIMUM of the stack's permit token and settling only CHARGE
// through setSettlementOverrides, as a usage-billed route does; a client on @x402/fetch with
// @x402/evm's upto client, which signs a Permit2 witness transfer for the upto proxy naming that
// facilitator. Run once against each front end: balances move by exactly the charge.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { x402Client } from "@x402/core/client";
import { decodePaymentRequiredHeader } from "@x402/core/http";
import { toClientEvmSigner, x402UptoPermit2ProxyAddress } from "@x402/evm";
import { UptoEvmScheme } from "@x402/evm/upto/client";
import { wrapFetchWithPayment } from "@x402/fetch";
import { getAddress } from "viem";
import { PermitChain, permitTokenPrice, permitTokenSpendControls } from "./lib/permit2.mjs";
import { getPaidReport, startV2UptoResourceServer } from "./lib/servers.mjs";
import { facilitatorUrl, loadStack, resourcePort } from "./lib/stack.mjs";

const stack = loadStack();
const chain = new PermitChain(stack);
const MAXIMUM = 1_000_000n; // atomic units of the permit token (18 decimals)
const CHARGE = 370_000n;
const FUNDED = 10n * MAXIMUM;
const FRONT_ENDS = [
  { name: "the local server", variable: "X402_BASE_URL", port: 0 },
  { name: "the Lambda functions", variable: "X402_LAMBDA_ROUTE_URL", port: 1 },
];
/** The signer /supported advertises for upto: the stack's last lane (infra/stack/facilitator-env.sh). */
const UPTO_SIGNER = getAddress(stack.lanes.at(-1).address);

/** @x402/fetch paying with `payer` through @x402/evm's upto client, allowed the permit token up to the maximum. */
function payingFetch(payer) {
  const client = new x402Client().setSpendControls(permitTokenSpendControls(stack, MAXIMUM)).register("eip155:84532", new UptoEvmScheme(toClientEvmSigner(payer, chain.public)));
  return wrapFetchWithPayment(fetch, client);
}

for (const frontEnd of FRONT_ENDS) {
  describe(`x402 v2 SDKs paying upto through ${frontEnd.name}`, () => {
    let server;
    let payTo;
    before(async () => {
      payTo = chain.newPayee();
      server = await startV2UptoResourceServer({ facilitatorUrl: facilitatorUrl(frontEnd.variable), payTo, port: resourcePort(frontEnd.port), price: permitTokenPrice(stack, MAXIMUM), charge: CHARGE });
    });
    after(() => server?.close());

    test("an unpaid GET gets 402 asking for upto with our facilitator's address", async () => {
      const response = await fetch(server.url);
      assert.equal(response.status, 402);
      const [accepts] = decodePaymentRequiredHeader(response.headers.get("PAYMENT-REQUIRED")).accepts;
      assert.equal(accepts.scheme, "upto");
      assert.equal(accepts.amount, MAXIMUM.toString());
      assert.equal(getAddress(accepts.extra.facilitatorAddress), UPTO_SIGNER);
    });

    test("a paid GET settles for the charge, below the maximum, and exactly the charge moves", async () => {
      const payer = await chain.newPayer({ amount: FUNDED, approved: true });
      const payeeBefore = await chain.balanceOf(payTo);

      const settled = await getPaidReport(payingFetch(payer), server.url);
      assert.equal(settled.amount, CHARGE.toString());
      assert.equal(getAddress(settled.payer), payer.address);
      const receipt = await chain.public.getTransactionReceipt({ hash: settled.transaction });
      assert.equal(receipt.status, "success");
      assert.equal(getAddress(receipt.to), getAddress(x402UptoPermit2ProxyAddress));
      assert.equal(getAddress(receipt.from), UPTO_SIGNER, "sent by the lane the witness names");
      assert.equal(await chain.balanceOf(payer.address), FUNDED - CHARGE);
      assert.equal(await chain.balanceOf(payTo), payeeBefore + CHARGE);
    });
  });
}
