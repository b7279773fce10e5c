// Pre-signed /verify bodies: every one a distinct, valid EIP-3009 authorization (its own random
// nonce) from the local stack's payers to its payee, or (below) an `exact` Permit2 payment, signed
// before any timing starts, so the load generator spends its time sending, not signing.
//
// The body is what an official v2 resource server sends a facilitator (the same shape as
// tests/tests/common/mod.rs builds): {x402Version, paymentPayload, paymentRequirements}.

import { randomBytes } from "node:crypto";
import { toClientEvmSigner } from "@x402/evm";
import { ExactEvmScheme as ExactClient } from "@x402/evm/exact/client";
import {
  createPublicClient, createTestClient, createWalletClient, getAddress, http, maxUint256, parseAbi, parseEther,
} from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { baseSepolia } from "viem/chains";

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

// ---- Permit2 ---------------------------------------------------------------------------------

const PERMIT_TOKEN_ABI = parseAbi([
  "function approve(address spender, uint256 value) returns (bool)",
  "function mint(address to, uint256 value)",
]);

/**
 * `count` fresh payers of the stack's EIP-2612 token (X402_PERMIT_TOKEN, no EIP-3009), each holding
 * plenty of it and having approved Permit2 once, as a wallet must before its first Permit2 payment.
 * Fresh keys: the stack's shared payers never approve Permit2 (the tests rely on that).
 */
export async function permit2Payers(stack, count) {
  const transport = http(stack.ANVIL_URL);
  const chain = { ...baseSepolia, id: Number(stack.X402_CHAIN_ID) };
  const publicClient = createPublicClient({ chain, transport });
  const anvil = createTestClient({ chain, mode: "anvil", transport });
  const owner = createWalletClient({ account: privateKeyToAccount(stack.deployer.privateKey), chain, transport });
  const mined = async (hash) => {
    const receipt = await publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`permit2 payer set-up: transaction ${hash} reverted`);
  };
  const payers = [];
  for (let i = 0; i < count; i++) {
    const account = privateKeyToAccount(generatePrivateKey());
    // One at a time from the deployer: its nonces must not race each other.
    await mined(await owner.writeContract({ address: stack.X402_PERMIT_TOKEN, abi: PERMIT_TOKEN_ABI, functionName: "mint",
      args: [account.address, 10n ** 30n] }));
    await anvil.setBalance({ address: account.address, value: parseEther("1") });
    const wallet = createWalletClient({ account, chain, transport });
    await mined(await wallet.writeContract({ address: stack.X402_PERMIT_TOKEN, abi: PERMIT_TOKEN_ABI, functionName: "approve",
      args: [stack.X402_PERMIT2, maxUint256] }));
    payers.push(account);
  }
  return { payers, publicClient };
}

/**
 * Pre-signed /verify bodies for `exact` Permit2 payments (1 whole permit token each, its own
 * Permit2 nonce), signed by @x402/evm's own client, round-robin over `payers` (from permit2Payers).
 */
export async function signPermit2VerifyBodies(stack, count, { payers, publicClient }) {
  const accepted = {
    scheme: "exact",
    network: stack.X402_NETWORK,
    amount: (10n ** BigInt(stack.X402_PERMIT_TOKEN_DECIMALS ?? 18)).toString(),
    asset: getAddress(stack.X402_PERMIT_TOKEN),
    payTo: getAddress(stack.payee.address),
    maxTimeoutSeconds: 300,
    extra: { name: stack.X402_PERMIT_TOKEN_NAME, version: stack.X402_PERMIT_TOKEN_VERSION, assetTransferMethod: "permit2" },
  };
  const clients = payers.map((payer) => new ExactClient(toClientEvmSigner(payer, publicClient)));
  const bodies = [];
  for (let i = 0; i < count; i++) {
    const created = await clients[i % clients.length].createPaymentPayload(2, accepted);
    if (!created.payload?.permit2Authorization) throw new Error("@x402/evm's client did not choose Permit2");
    bodies.push(JSON.stringify({
      x402Version: 2,
      paymentPayload: { ...created, resource: { url: "https://api.example.com/premium" }, accepted },
      paymentRequirements: accepted,
    }));
  }
  return bodies;
}
