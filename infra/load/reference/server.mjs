// The reference TypeScript facilitator, built only from the official npm packages (@x402/core's
// x402Facilitator with @x402/evm's exact scheme), so the load harness can measure it beside ours
// on the same anvil, through the same counting RPC proxy.
//
// It serves the three routes the SDK's HTTPFacilitatorClient calls: POST /verify and POST /settle
// with {x402Version, paymentPayload, paymentRequirements}, GET /supported. Its wallet is one of
// anvil's public dev accounts (fine for a benchmark stand-in; our facilitator's keys live in KMS).
// Plain node:http with keep-alive, no web framework, so framework overhead does not blur the
// comparison.
//
//   RPC_URL=http://127.0.0.1:28546 REFERENCE_LISTEN=127.0.0.1:24021 node infra/load/reference/server.mjs

import { createServer } from "node:http";
import { x402Facilitator } from "@x402/core/facilitator";
import { toFacilitatorEvmSigner } from "@x402/evm";
import { registerExactEvmScheme } from "@x402/evm/exact/facilitator";
import { createWalletClient, http, publicActions } from "viem";
import { mnemonicToAccount } from "viem/accounts";
import { baseSepolia } from "viem/chains";

// anvil's well-known development mnemonic. Account 9 is one the local stack leaves unused
// (infra/README.md: 0 owns the tokens, 1-4 pay, 5 is paid, 6-8 belong to check-contracts).
const ANVIL_MNEMONIC = "test test test test test test test test test test test junk";
const ACCOUNT_INDEX = 9;
const MAX_BODY_BYTES = 64 * 1024;

const rpcUrl = required("RPC_URL");
const [host, port] = (process.env.REFERENCE_LISTEN ?? "127.0.0.1:24021").split(":");
const network = process.env.X402_NETWORK ?? "eip155:84532";

const account = mnemonicToAccount(ANVIL_MNEMONIC, { addressIndex: ACCOUNT_INDEX });
const client = createWalletClient({ account, chain: baseSepolia, transport: http(rpcUrl) }).extend(publicActions);
const signer = toFacilitatorEvmSigner({
  address: account.address,
  readContract: (args) => client.readContract({ ...args, args: args.args ?? [] }),
  verifyTypedData: (args) => client.verifyTypedData(args),
  writeContract: (args) => client.writeContract({ ...args, args: args.args ?? [] }),
  sendTransaction: (args) => client.sendTransaction(args),
  waitForTransactionReceipt: (args) => client.waitForTransactionReceipt(args),
  getCode: (args) => client.getCode(args),
});
const facilitator = new x402Facilitator();
registerExactEvmScheme(facilitator, { signer, networks: network });

const server = createServer({ keepAlive: true }, async (request, response) => {
  try {
    const path = new URL(request.url, "http://x").pathname;
    if (request.method === "GET" && path === "/supported") return send(response, 200, facilitator.getSupported());
    if (request.method === "GET" && path === "/health") return send(response, 200, { ok: true });
    if (request.method === "POST" && (path === "/verify" || path === "/settle")) {
      const body = await readJson(request);
      if (!body?.paymentPayload || !body?.paymentRequirements) {
        return send(response, 400, { error: "paymentPayload and paymentRequirements are required" });
      }
      const result = path === "/verify"
        ? await facilitator.verify(body.paymentPayload, body.paymentRequirements)
        : await facilitator.settle(body.paymentPayload, body.paymentRequirements);
      return send(response, 200, result);
    }
    send(response, 404, { error: `no route for ${request.method} ${path}` });
  } catch (error) {
    send(response, error instanceof SyntaxError ? 400 : 500, { error: String(error?.message ?? error) });
  }
});
server.listen(Number(port), host, () => {
  console.log(`reference facilitator (${account.address}) on http://${host}:${port}, rpc ${rpcUrl}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => server.close(() => process.exit(0)));

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`reference facilitator: set ${name}`);
    process.exit(2);
  }
  return value;
}

async function readJson(request) {
  let size = 0;
  const chunks = [];
  for await (const chunk of request) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new SyntaxError("body too large");
    chunks.push(chunk);
  }
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

function send(response, status, value) {
  // The SDK's responses may hold bigints; JSON has no such type, so they go out as decimal strings.
  const text = JSON.stringify(value, (_, v) => (typeof v === "bigint" ? v.toString() : v));
  response.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  response.end(text);
}
