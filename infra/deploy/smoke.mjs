// The post-deploy smoke test behind infra/smoke.sh: asks a deployed facilitator what a resource
// server would, and says plainly whether it is fit to serve. See infra/smoke.sh for the usage.
//
// 1. GET /health answers 200.
// 2. GET /supported lists at least one kind and the lanes' addresses (with their balances when
//    SMOKE_RPC_URL is given).
// 3. POST /verify of a payment signed here by a throwaway key (no funds, never used again) comes
//    back 200 with an x402 answer: invalid with a reason (it cannot pay) is the expected verdict;
//    a 5xx, a hang or another shape is a failure.
import { createPublicClient, formatEther, http } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';

const [base, apiKey] = process.argv.slice(2);
if (!base) {
  console.error('usage: infra/smoke.sh <api-url> [api-key]');
  process.exit(2);
}
// The token to sign for: Base Sepolia's and Base's USDC unless told otherwise.
const KNOWN = {
  'eip155:84532': { asset: '0x036CbD53842c5426634e7929541eC2318f3dCF7e', name: 'USDC', version: '2' },
  'eip155:8453': { asset: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913', name: 'USD Coin', version: '2' },
};
const TIMEOUT_MS = Number(process.env.SMOKE_TIMEOUT_MS ?? 30000);
const results = [];
const check = (name, ok, detail) => {
  results.push(ok);
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${detail}`);
};

async function call(path, body) {
  const headers = { 'content-type': 'application/json' };
  if (apiKey && body) headers.authorization = `Bearer ${apiKey}`;
  const started = Date.now();
  try {
    const response = await fetch(new URL(path, base.endsWith('/') ? base : `${base}/`), {
      method: body ? 'POST' : 'GET',
      headers,
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const text = await response.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* reported below */ }
    return { status: response.status, json, text, ms: Date.now() - started };
  } catch (e) {
    return { status: 0, json: null, text: String(e.message ?? e), ms: Date.now() - started };
  }
}

const health = await call('health');
check('GET /health', health.status === 200, `${health.status} in ${health.ms} ms`);

const supported = await call('supported');
const kinds = supported.json?.kinds ?? [];
const signers = Object.values(supported.json?.signers ?? {}).flat();
check('GET /supported', supported.status === 200 && kinds.length > 0 && signers.length > 0,
  `${supported.status}: ${kinds.map((k) => `v${k.x402Version} ${k.scheme} ${k.network}`).join(', ') || supported.text.slice(0, 200)}`);
if (process.env.SMOKE_RPC_URL) {
  const chain = createPublicClient({ transport: http(process.env.SMOKE_RPC_URL) });
  for (const signer of signers) {
    const balance = await chain.getBalance({ address: signer }).catch((e) => e);
    const shown = typeof balance === 'bigint' ? `${formatEther(balance)} (native)` : `unreadable: ${balance.message}`;
    console.log(`     lane ${signer}: ${shown}`);
  }
} else {
  for (const signer of signers) console.log(`     lane ${signer} (set SMOKE_RPC_URL to see its balance)`);
}

const kind = kinds.find((k) => k.x402Version === 2 && k.scheme === 'exact' && k.network.startsWith('eip155:'));
if (!kind) {
  check('POST /verify', false, 'no v2 exact EVM kind in /supported to try');
} else {
  const network = kind.network;
  const token = {
    ...KNOWN[network],
    ...(process.env.SMOKE_ASSET ? { asset: process.env.SMOKE_ASSET } : {}),
    ...(process.env.SMOKE_TOKEN_NAME ? { name: process.env.SMOKE_TOKEN_NAME } : {}),
    ...(process.env.SMOKE_TOKEN_VERSION ? { version: process.env.SMOKE_TOKEN_VERSION } : {}),
  };
  if (!token.asset) {
    check('POST /verify', false, `no token known for ${network}: set SMOKE_ASSET, SMOKE_TOKEN_NAME, SMOKE_TOKEN_VERSION`);
  } else {
    const payer = privateKeyToAccount(generatePrivateKey());
    const now = Math.floor(Date.now() / 1000);
    const authorization = {
      from: payer.address,
      to: '0x000000000000000000000000000000000000dEaD',
      value: '1000',
      validAfter: String(now - 60),
      validBefore: String(now + 600),
      nonce: `0x${Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('hex')}`,
    };
    const signature = await payer.signTypedData({
      domain: { name: token.name, version: token.version, chainId: Number(network.split(':')[1]), verifyingContract: token.asset },
      types: {
        TransferWithAuthorization: [
          { name: 'from', type: 'address' }, { name: 'to', type: 'address' }, { name: 'value', type: 'uint256' },
          { name: 'validAfter', type: 'uint256' }, { name: 'validBefore', type: 'uint256' }, { name: 'nonce', type: 'bytes32' },
        ],
      },
      primaryType: 'TransferWithAuthorization',
      message: { ...authorization, value: BigInt(authorization.value), validAfter: BigInt(authorization.validAfter), validBefore: BigInt(authorization.validBefore) },
    });
    const requirements = {
      scheme: 'exact', network, amount: '1000', asset: token.asset, payTo: authorization.to,
      maxTimeoutSeconds: 60, extra: { name: token.name, version: token.version },
    };
    const verify = await call('verify', {
      x402Version: 2,
      paymentPayload: { x402Version: 2, accepted: requirements, payload: { signature, authorization } },
      paymentRequirements: requirements,
    });
    const answered = verify.status === 200 && typeof verify.json?.isValid === 'boolean'
      && (verify.json.isValid || typeof verify.json.invalidReason === 'string');
    check('POST /verify (a payment from an empty throwaway wallet)', answered,
      answered
        ? `200 in ${verify.ms} ms: ${verify.json.isValid ? 'valid' : `invalid, ${verify.json.invalidReason}`}`
        : `${verify.status}: ${verify.text.slice(0, 300)}`);
  }
}

const failed = results.filter((ok) => !ok).length;
console.log(failed === 0
  ? `smoke: PASS, ${base} answers as a facilitator should`
  : `smoke: FAIL, ${failed} of ${results.length} checks failed against ${base}`);
process.exit(failed === 0 ? 0 : 1);
