// Pre-signed /verify bodies: every one a distinct, valid EIP-3009 authorization (its own random
// nonce) from the local stack's payers to its payee, signed with viem before any timing starts, so
// the load generator spends its time sending, not signing.
//
// The body is what an official v2 resource server sends a facilitator (the same shape as
// tests/tests/common/mod.rs builds): {x402Version, paymentPayload, paymentRequirements}.

import { randomBytes } from "node:crypto";
import { privateKeyToAccount } from "viem/accounts";

const AUTHORIZATION_TYPES = {
  TransferWithAuthorization: [
    { name: "from", type: "address" },
    { name: "to", type: "address" },
    { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" },
    { name: "validBefore", type: "uint256" },
    { name: "nonce", type: "bytes32" },
  ],
};

/** 1 USDC (6 decimals), well within each payer's balance however many are verified. */
const AMOUNT = "1000000";
/** 0.001 USDC: settles really move it, and the payers' 1,000,000 USDC must outlast every run. */
const SETTLE_AMOUNT = "1000";

/**
 * Signs `count` distinct payments, round-robin over the stack's payers.
 * Valid from 10 minutes ago until `validForSeconds` from now (the reference refuses anything that
 * expires within 6 s, so the window must outlast the run).
 *
 * @param {object} stack - parsed $X402_STACK_DIR/stack.json
 * @returns {Promise<string[]>} JSON bodies, ready to POST
 */
export async function signVerifyBodies(stack, count, { validForSeconds = 3600, amount = AMOUNT } = {}) {
  const payers = stack.payers.map((p) => privateKeyToAccount(p.privateKey));
  if (payers.length === 0) throw new Error("stack.json lists no payers");
  const now = Math.floor(Date.now() / 1000);
  const requirements = {
    scheme: "exact",
    network: stack.X402_NETWORK,
    amount,
    asset: stack.X402_TOKEN,
    payTo: stack.payee.address,
    maxTimeoutSeconds: 300,
    extra: { name: stack.X402_TOKEN_NAME, version: stack.X402_TOKEN_VERSION },
  };
  const domain = {
    name: stack.X402_TOKEN_NAME,
    version: stack.X402_TOKEN_VERSION,
    chainId: Number(stack.X402_CHAIN_ID),
    verifyingContract: stack.X402_TOKEN,
  };
  const bodies = [];
  for (let i = 0; i < count; i++) {
    const payer = payers[i % payers.length];
    const authorization = {
      from: payer.address,
      to: stack.payee.address,
      value: amount,
      validAfter: String(now - 600),
      validBefore: String(now + validForSeconds),
      nonce: `0x${randomBytes(32).toString("hex")}`,
    };
    const signature = await payer.signTypedData({
      domain,
      types: AUTHORIZATION_TYPES,
      primaryType: "TransferWithAuthorization",
      message: {
        ...authorization,
        value: BigInt(authorization.value),
        validAfter: BigInt(authorization.validAfter),
        validBefore: BigInt(authorization.validBefore),
      },
    });
    bodies.push(JSON.stringify({
      x402Version: 2,
      paymentPayload: {
        x402Version: 2,
        resource: { url: "https://api.example.com/premium" },
        accepted: requirements,
        payload: { signature, authorization },
      },
      paymentRequirements: requirements,
    }));
  }
  return bodies;
}

/** The same bodies for POST /settle (the request has the same shape), each for a small amount. */
export function signSettleBodies(stack, count) {
  return signVerifyBodies(stack, count, { amount: SETTLE_AMOUNT });
}
