// The chain's own share of a settlement's latency: the same transferWithAuthorization, signed
// beforehand by a plain local key, sent with eth_sendRawTransaction and its receipt read, one after
// the other, through the same RPC proxy. What a facilitator adds on top of this is its own overhead
// (on anvil, which mines each transaction as it arrives, that is nearly all of a settle's latency).
// Also the gas each transfer used: what a settlement costs on chain (infra/load/cost.mjs).

import { performance } from "node:perf_hooks";
import { createPublicClient, encodeFunctionData, http, parseSignature } from "viem";
import { mnemonicToAccount } from "viem/accounts";
import { summarize } from "./drive.mjs";

// anvil's development mnemonic; account 7 is left alone by a load stack (0 owns the tokens, 1-4
// pay, 5 is paid, 6-8 belong to check-contracts, which a load run does not run; 9 is the reference's).
const ANVIL_MNEMONIC = "test test test test test test test test test test test junk";
const ACCOUNT_INDEX = 7;
const ABI = [{
  type: "function", name: "transferWithAuthorization", stateMutability: "nonpayable", outputs: [],
  inputs: [
    { name: "from", type: "address" }, { name: "to", type: "address" }, { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" }, { name: "validBefore", type: "uint256" }, { name: "nonce", type: "bytes32" },
    { name: "signature", type: "bytes" },
  ],
}];

/** Sends `bodies` (pre-signed settle bodies) straight to the chain; latency percentiles in ms. */
export async function chainFloor(stack, bodies) {
  const account = mnemonicToAccount(ANVIL_MNEMONIC, { addressIndex: ACCOUNT_INDEX });
  const client = createPublicClient({ transport: http(stack.RPC_URL) });
  let nonce = await client.getTransactionCount({ address: account.address, blockTag: "pending" });
  const block = await client.getBlock();
  const maxFeePerGas = (block.baseFeePerGas ?? 1_000_000_000n) * 2n + 1_000_000_000n;
  const raws = [];
  for (const text of bodies) {
    const { authorization: a, signature } = JSON.parse(text).paymentPayload.payload;
    parseSignature(signature); // a malformed one would fail here, not inside the timing
    const data = encodeFunctionData({ abi: ABI, functionName: "transferWithAuthorization",
      args: [a.from, a.to, BigInt(a.value), BigInt(a.validAfter), BigInt(a.validBefore), a.nonce, signature] });
    raws.push(await account.signTransaction({ type: "eip1559", chainId: Number(stack.X402_CHAIN_ID), nonce: nonce++,
      to: stack.X402_TOKEN, data, gas: 200_000n, maxFeePerGas, maxPriorityFeePerGas: 1_000_000_000n }));
  }
  const latencies = [];
  const gas = [];
  let failed = 0;
  for (const raw of raws) {
    const t0 = performance.now();
    const hash = await client.request({ method: "eth_sendRawTransaction", params: [raw] });
    let receipt = null;
    while (!(receipt = await client.request({ method: "eth_getTransactionReceipt", params: [hash] }))) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    latencies.push(performance.now() - t0);
    if (receipt.status !== "0x1") failed += 1;
    else gas.push(Number(BigInt(receipt.gasUsed)));
  }
  gas.sort((a, b) => a - b);
  // gasUsed of a successful transferWithAuthorization (the stack's EIP-3009 token), for the cost.
  const gasUsed = gas.length ? { min: gas[0], median: gas[Math.floor(gas.length / 2)], max: gas.at(-1) } : null;
  return { sends: latencies.length, failed, ...summarize(latencies), gasUsed };
}
