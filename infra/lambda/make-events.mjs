// Writes the sample Lambda events in events/ (API Gateway HTTP API v2 shape).
//
// The verify events carry a real payment signed with viem, an EIP-712 implementation independent
// of ours, by anvil's account #1 for the local stack's USDC, valid until 2100. On any fresh local
// stack the valid one verifies as valid (until someone settles it), which is what the Lambda tests
// and the quick start rely on. settle.json carries another payment by the same payer (its own
// nonce), so settling it leaves verify.json valid. Deterministic: rerunning gives the same files.
//
// Also: the public routes (supported, health), the settlement worker's SQS batch, and the Lambda
// authorizer's requests (payload format 2.0) with no key, a wrong key and SAMPLE_KEY, a key that is
// public by being here: the tests enable it in the local stack's table; never enable it in AWS.
//
//   node infra/lambda/make-events.mjs        (from the repository root)

import { writeFileSync } from "node:fs";
import { privateKeyToAccount } from "viem/accounts";

const TOKEN = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"; // the stack's USDC (Base Sepolia's address)
const PAYER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"; // anvil #1
const PAYEE = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"; // anvil #5
const OTHER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"; // anvil #2, not the payee
const NONCE = "0x" + "e1".repeat(32);
const SETTLE_NONCE = "0x" + "e2".repeat(32);
const SAMPLE_KEY = "x402_local-stack-sample-key-never-use-in-aws-0000";
const VALID_BEFORE = "4102444800"; // 2100-01-01

const payer = privateKeyToAccount(PAYER_KEY);
const requirements = {
  scheme: "exact", network: "eip155:84532", amount: "10000", asset: TOKEN, payTo: PAYEE,
  maxTimeoutSeconds: 60, extra: { name: "USDC", version: "2" },
};

async function paymentBody(to, nonce = NONCE) {
  const authorization = { from: payer.address, to, value: "10000", validAfter: "0", validBefore: VALID_BEFORE, nonce };
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

function httpApiEvent(method, path, body, extraHeaders = {}) {
  return {
    version: "2.0",
    routeKey: `${method} ${path}`,
    rawPath: path,
    rawQueryString: "",
    headers: { "content-type": "application/json", host: "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "x402-sample", ...extraHeaders },
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

// What API Gateway sends a Lambda authorizer (payload format 2.0) for POST /settle with these
// headers: the request as the route would see it, plus the route ARN and the identity source
// (absent when the request has no Authorization header; API Gateway then answers 401 itself).
function authorizerEvent(authorization) {
  const headers = authorization === undefined ? {} : { authorization };
  const { body: _body, isBase64Encoded: _b64, ...request } = httpApiEvent("POST", "/settle", undefined, headers);
  return {
    ...request,
    type: "REQUEST",
    routeArn: "arn:aws:execute-api:us-east-1:123456789012:abc123/$default/POST/settle",
    ...(authorization === undefined ? {} : { identitySource: [authorization] }),
  };
}

// One message as Lambda's SQS event source mapping hands it to the settlement worker: the body is
// the queue's message, the message group is the lane. The payment id names no record on a fresh
// stack, so the worker logs that there is nothing to do and reports no failure.
const sqsEvent = {
  Records: [{
    messageId: "0c3b4b6e-3f7a-4d53-9d0e-2a5f7c1d9e01",
    receiptHandle: "sample-receipt-handle",
    body: JSON.stringify({ id: `eip155:84532#${TOKEN.toLowerCase()}#${payer.address.toLowerCase()}#0x${"e3".repeat(32)}` }),
    attributes: {
      ApproximateReceiveCount: "1", SentTimestamp: "1795262400000", SenderId: "AIDAEXAMPLE",
      ApproximateFirstReceiveTimestamp: "1795262400001", SequenceNumber: "18849496460467696128",
      MessageGroupId: "alias/x402-lane-0", MessageDeduplicationId: "sample-dedup-id",
    },
    messageAttributes: {},
    md5OfBody: "",
    eventSource: "aws:sqs",
    eventSourceARN: "arn:aws:sqs:us-east-1:123456789012:x402-settlements.fifo",
    awsRegion: "us-east-1",
  }],
};

const write = (name, event) => writeFileSync(`events/${name}`, JSON.stringify(event, null, 2) + "\n");
write("verify.json", httpApiEvent("POST", "/verify", await paymentBody(PAYEE)));
write("verify-invalid.json", httpApiEvent("POST", "/verify", await paymentBody(OTHER)));
write("verify-malformed.json", httpApiEvent("POST", "/verify", '{"x402Version":2,"paymentPayload":'));
write("supported.json", httpApiEvent("GET", "/supported"));
write("health.json", httpApiEvent("GET", "/health"));
write("settle.json", httpApiEvent("POST", "/settle", await paymentBody(PAYEE, SETTLE_NONCE)));
write("settle-worker-sqs.json", sqsEvent);
write("authorizer-no-key.json", authorizerEvent(undefined));
write("authorizer-wrong-key.json", authorizerEvent("Bearer x402_this-key-was-never-issued-by-anyone-000000"));
write("authorizer-valid-key.json", authorizerEvent(`Bearer ${SAMPLE_KEY}`));
console.log("wrote events/: verify, verify-invalid, verify-malformed, supported, health, settle, settle-worker-sqs, authorizer-{no,wrong,valid}-key");
