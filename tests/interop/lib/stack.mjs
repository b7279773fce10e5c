// What the interop tests need from the running local stack: its addresses (stack.json, written by
// infra/stack/bootstrap.py), a fresh funded payer per test, token balances and transaction receipts read
// straight from anvil (not through the facilitator's counting proxy, so the proxy's counts stay the
// facilitator's own).
//
// Each test pays from a payer of its own, minted by the token's owner just before, to a payee of its
// own, so the balance checks are exact whatever else ran on the chain before.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createPublicClient, createWalletClient, http, parseAbi } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { baseSepolia } from "viem/chains";

const TOKEN_ABI = parseAbi([
  "function balanceOf(address) view returns (uint256)",
  "function mint(address to, uint256 value)",
  "function cancelAuthorization(address authorizer, bytes32 nonce, bytes signature)",
]);

/** Parsed `$X402_STACK_DIR/stack.json`. */
export function loadStack() {
  const dir = process.env.X402_STACK_DIR;
  if (!dir) throw new Error("set X402_STACK_DIR to a running stack's directory (infra/test.sh does)");
  const stack = JSON.parse(readFileSync(join(dir, "stack.json"), "utf8"));
  // The SDKs run with their defaults only if the stack looks like Base Sepolia's USDC to them.
  if (stack.X402_NETWORK !== "eip155:84532") throw new Error(`stack network is ${stack.X402_NETWORK}, not eip155:84532`);
  return stack;
}

/** The base URL of a facilitator front end, from the environment variable that names it. */
export function facilitatorUrl(variable) {
  const url = process.env[variable];
  if (!url) throw new Error(`set ${variable} to the facilitator's base URL (infra/test.sh does)`);
  return url.replace(/\/+$/, "");
}

/** A port for a test's own resource server: X402_INTEROP_PORT plus an offset per server. */
export function resourcePort(offset) {
  const base = Number(process.env.X402_INTEROP_PORT);
  if (!Number.isInteger(base) || base <= 0) throw new Error("set X402_INTEROP_PORT (infra/test.sh does)");
  return base + offset;
}

export class Chain {
  constructor(stack) {
    this.stack = stack;
    // baseSepolia's chain id is 84532, as anvil's: viem refuses to send to a chain with another id.
    this.public = createPublicClient({ chain: baseSepolia, transport: http(stack.ANVIL_URL) });
    this.owner = createWalletClient({
      account: privateKeyToAccount(stack.deployer.privateKey),
      chain: baseSepolia,
      transport: http(stack.ANVIL_URL),
    });
  }

  /** A new account holding `amount` of the token (atomic units) and no ETH: x402 payers need none. */
  async fundedPayer(amount) {
    const account = privateKeyToAccount(generatePrivateKey());
    const hash = await this.owner.writeContract({
      address: this.stack.X402_TOKEN,
      abi: TOKEN_ABI,
      functionName: "mint",
      args: [account.address, amount],
    });
    const receipt = await this.public.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`minting to the test payer failed: ${hash}`);
    return account;
  }

  /** A fresh address nobody has paid yet. */
  newPayee() {
    return privateKeyToAccount(generatePrivateKey()).address;
  }

  /** Turns anvil's automine off or on (evm_setAutomine). */
  async setAutomine(on) {
    await this.public.request({ method: "evm_setAutomine", params: [on] });
  }

  /** Mines one block with whatever is pending (evm_mine). */
  async mine() {
    await this.public.request({ method: "evm_mine", params: [] });
  }

  async balanceOf(address) {
    return this.public.readContract({ address: this.stack.X402_TOKEN, abi: TOKEN_ABI, functionName: "balanceOf", args: [address] });
  }

  /**
   * Cancels `payer`'s EIP-3009 authorization `nonce` on chain (EIP-3009 cancelAuthorization, signed by
   * the payer, sent by the token's owner): a payment that verified can then no longer be settled.
   */
  async cancelAuthorization(payer, nonce) {
    const signature = await payer.signTypedData({
      domain: {
        name: this.stack.X402_TOKEN_NAME,
        version: this.stack.X402_TOKEN_VERSION,
        chainId: Number(this.stack.X402_CHAIN_ID),
        verifyingContract: this.stack.X402_TOKEN,
      },
      types: { CancelAuthorization: [{ name: "authorizer", type: "address" }, { name: "nonce", type: "bytes32" }] },
      primaryType: "CancelAuthorization",
      message: { authorizer: payer.address, nonce },
    });
    const hash = await this.owner.writeContract({
      address: this.stack.X402_TOKEN,
      abi: TOKEN_ABI,
      functionName: "cancelAuthorization",
      args: [payer.address, nonce, signature],
    });
    const receipt = await this.public.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`cancelling the authorization failed: ${hash}`);
  }

  /**
   * Asserts what a successful settlement must have done on chain: `transaction` is mined with
   * status 1, sent by one of our signer lanes, and exactly `price` moved from `payer` (who held
   * `funded`) to `payTo` (who held nothing).
   */
  async assertPaid({ transaction, payer, payTo, price, funded }) {
    // Already mined: anvil automines, and the facilitator answers success only for a mined transfer.
    const receipt = await this.public.getTransactionReceipt({ hash: transaction });
    assert.equal(receipt.status, "success");
    const lanes = this.stack.lanes.map((lane) => lane.address.toLowerCase());
    assert.ok(lanes.includes(receipt.from.toLowerCase()), `sent by ${receipt.from}, not by a lane (${lanes})`);
    assert.equal(await this.balanceOf(payer), funded - price);
    assert.equal(await this.balanceOf(payTo), price);
  }
}
