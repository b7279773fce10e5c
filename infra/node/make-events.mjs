// Writes the sample Lambda events in events/ (API Gateway HTTP API v2 shape).
//
// The verify events carry a real payment signed with viem, an EIP-712 implementation independent
// of ours, by anvil's account #1 for the local stack's USDC, valid until 2100. On any fresh local
// stack the valid one verifies as valid (until someone settles it), which is what the Lambda tests
// and the quick start rely on. Deterministic: rerunning gives the same files.
//
//   node infra/node/make-events.mjs        (from the repository root)

import { writeFileSync } from "node:fs";
import { privateKeyToAccount } from "viem/accounts";

const TOKEN = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"; // the stack's USDC (Base Sepolia's address)
const PAYER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"; // anvil #1
const PAYEE = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"; // anvil #5
const OTHER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"; // anvil #2, not the payee
const NONCE = "0x" + "e1".repeat(32);
const VALID_BEFORE = "4102444800"; // 2100-01-01

const payer = privateKeyToAccount(PAYER_KEY);
const requirements = {
  scheme: "exact", network: "eip155:84532", amount: "10000", asset: TOKEN, payTo: PAYEE,
  maxTimeoutSeconds: 60, extra: { name: "USDC", version: "2" },
};

async function paymentBody(to) {
  const authorization = { from: payer.address, to, value: "10000", validAfter: "0", validBefore: VALID_BEFORE, nonce: NONCE };
  const signature = await payer.signTypedData({
    domain: { name: "USDC", version: "2", chainId: 84532, verifyingContract: TOKEN },
    types: {
      TransferWithAuthorization: [
        { name: "from", type: "address" }, { name: "to", type: "address" }, { name: "value", type: "uint256" },
        { name: "validAfter", type: "uint256" }, { name: "validBefore", type: "uint256" }, { name: "nonce", type: "bytes32" },
      ],
    },
    primaryType: "TransferWithAuthorization",
    message: { ...authorization, value: BigInt(authorization.value), validAfter: 0n, validBefore: BigInt(VALID_BEFORE) },
  });
  return JSON.stringify({
    x402Version: 2,
    paymentPayload: { x402Version: 2, resource: { url: "https://api.example.com/premium" }, accepted: requirements,
      payload: { signature, authorization } },
    paymentRequirements: requirements,
  });
}

function httpApiEvent(method, path, body) {
  return {
    version: "2.0",
    routeKey: `${method} ${path}`,
    rawPath: path,
    rawQueryString: "",
    headers: { "content-type": "application/json", host: "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "x402-sample" },
    requestContext: {
      accountId: "123456789012", apiId: "abc123", domainName: "abc123.execute-api.us-east-1.amazonaws.com",
      domainPrefix: "abc123", http: { method, path, protocol: "HTTP/1.1", sourceIp: "203.0.113.7", userAgent: "x402-sample" },
      requestId: "sample-request-id", routeKey: `${method} ${path}`, stage: "$default",
      time: "21/Nov/2026:12:00:00 +0000", timeEpoch: 1795262400000,
    },
    ...(body === undefined ? {} : { body }),
    isBase64Encoded: false,
  };
}

const write = (name, event) => writeFileSync(`events/${name}`, JSON.stringify(event, null, 2) + "\n");
write("verify.json", httpApiEvent("POST", "/verify", await paymentBody(PAYEE)));
write("verify-invalid.json", httpApiEvent("POST", "/verify", await paymentBody(OTHER)));
write("verify-malformed.json", httpApiEvent("POST", "/verify", '{"x402Version":2,"paymentPayload":'));
write("supported.json", httpApiEvent("GET", "/supported"));
console.log("wrote events/verify.json, verify-invalid.json, verify-malformed.json, supported.json");
