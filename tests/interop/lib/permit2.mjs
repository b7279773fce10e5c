// Permit2 payers for the interop tests: fresh accounts holding the stack's EIP-2612 permit token
// (X402_PERMIT_TOKEN, 18 decimals), minted by its owner. The shared payers never approve Permit2
// (other tests rely on that), so a payer that needs an allowance is a new key that approves it
// itself, with gas from anvil_setBalance.

import assert from "node:assert/strict";
import { PERMIT2_ADDRESS } from "@x402/evm";
import { createPublicClient, createTestClient, createWalletClient, getAddress, http, maxUint256, parseAbi, parseEther } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { baseSepolia } from "viem/chains";

export const PERMIT_TOKEN_ABI = parseAbi([
  "function approve(address spender, uint256 value) returns (bool)",
  "function mint(address to, uint256 value)",
  "function balanceOf(address account) view returns (uint256)",
]);

/**
 * A route config's price of `amount` (atomic units) in the permit token, with the token's EIP-712
 * name and version and any `extra` on top (assetTransferMethod "permit2" for an exact route).
 */
export function permitTokenPrice(stack, amount, extra = {}) {
  return {
    amount: amount.toString(),
    asset: getAddress(stack.X402_PERMIT_TOKEN),
    extra: { name: stack.X402_PERMIT_TOKEN_NAME, version: stack.X402_PERMIT_TOKEN_VERSION, ...extra },
  };
}

/**
 * An SDK client's spend controls that let it pay in the permit token, up to `maxAmount` a payment:
 * the client refuses any asset but its networks' defaults unless they allow it.
 */
export function permitTokenSpendControls(stack, maxAmount) {
  return { allowedAssets: [{ network: "eip155:84532", asset: getAddress(stack.X402_PERMIT_TOKEN), maxAmountPerPayment: maxAmount.toString() }] };
}

export class PermitChain {
  constructor(stack) {
    this.stack = stack;
    const transport = http(stack.ANVIL_URL);
    this.public = createPublicClient({ chain: baseSepolia, transport });
    this.anvil = createTestClient({ chain: baseSepolia, mode: "anvil", transport });
    this.owner = createWalletClient({ account: privateKeyToAccount(stack.deployer.privateKey), chain: baseSepolia, transport });
    this.transport = transport;
  }

  async mined(hash) {
    const receipt = await this.public.waitForTransactionReceipt({ hash });
    assert.equal(receipt.status, "success", `transaction ${hash} reverted`);
  }

  /** A fresh payer holding `amount` of the permit token; with `approved`, it has approved Permit2. */
  async newPayer({ amount, approved }) {
    const account = privateKeyToAccount(generatePrivateKey());
    const token = this.stack.X402_PERMIT_TOKEN;
    await this.mined(await this.owner.writeContract({ address: token, abi: PERMIT_TOKEN_ABI, functionName: "mint", args: [account.address, amount] }));
    if (approved) {
      await this.anvil.setBalance({ address: account.address, value: parseEther("1") });
      const wallet = createWalletClient({ account, chain: baseSepolia, transport: this.transport });
      await this.mined(await wallet.writeContract({ address: token, abi: PERMIT_TOKEN_ABI, functionName: "approve", args: [PERMIT2_ADDRESS, maxUint256] }));
    }
    return account;
  }

  /** A fresh address nobody has paid yet. */
  newPayee() {
    return privateKeyToAccount(generatePrivateKey()).address;
  }

  /** `account`'s permit token balance, read straight from anvil. */
  balanceOf(account) {
    return this.public.readContract({ address: this.stack.X402_PERMIT_TOKEN, abi: PERMIT_TOKEN_ABI, functionName: "balanceOf", args: [account] });
  }
}
