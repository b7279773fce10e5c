// Chain half of the stack's bootstrap, run by infra/bootstrap.sh after bootstrap_aws.py.
//
// On the fresh anvil it places the contracts compiled by compile.mjs with anvil_setCode
// (no deployment transactions, so the addresses are the real ones), initializes and funds
// the tokens, derives each KMS lane's Ethereum address, proves that moto's KMS signs
// digests as real KMS does, funds the lanes with gas money, and writes stack.env and
// stack.json: everything a test needs to find the stack. Rerunning it on the same stack
// changes nothing that is already in place.
//
// Inputs (environment): ANVIL_URL, CONTRACTS_DIR, AWS_JSON (bootstrap_aws.py's output),
// STACK_DIR, and STACK_ENV_* (the variables to pass through into stack.env).

import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createTestClient,
  defineChain,
  getAddress,
  http,
  parseEther,
  publicActions,
  recoverAddress,
  walletActions,
} from 'viem';
import { mnemonicToAccount, publicKeyToAddress } from 'viem/accounts';

const CHAIN_ID = 84532; // Base Sepolia's, so the official SDKs treat anvil as that network
const USDC = getAddress('0x036CbD53842c5426634e7929541eC2318f3dCF7e'); // Base Sepolia USDC
const OTHER_TOKEN = getAddress('0x3009300930093009300930093009300930093009');
const MULTICALL3 = getAddress('0xcA11bde05977b3631167028862bE2a173976CA11');
const ANVIL_MNEMONIC = 'test test test test test test test test test test test junk';
const PAYER_INDICES = [1, 2, 3, 4];
const PAYEE_INDEX = 5;
const LANE_GAS_MONEY = parseEther('1000');
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

const env = (name) => process.env[name] ?? fail(`${name} is not set`);
function fail(message) {
  console.error(`bootstrap: ${message}`);
  process.exit(1);
}

const chain = defineChain({
  id: CHAIN_ID,
  name: 'anvil as Base Sepolia',
  nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [env('ANVIL_URL')] } },
});
const accounts = Array.from({ length: 6 }, (_, i) => mnemonicToAccount(ANVIL_MNEMONIC, { addressIndex: i }));
const deployer = accounts[0];
const anvil = createTestClient({ chain, mode: 'anvil', transport: http(), pollingInterval: 20 })
  .extend(publicActions)
  .extend(walletActions);

const artifact = (name) => JSON.parse(readFileSync(join(env('CONTRACTS_DIR'), `${name}.json`), 'utf8'));
const token = artifact('EIP3009Token');

async function checkChain() {
  const chainId = await anvil.getChainId();
  if (chainId !== CHAIN_ID) fail(`anvil reports chain id ${chainId}, expected ${CHAIN_ID}`);
  const unlocked = await anvil.request({ method: 'eth_accounts' });
  accounts.forEach((a, i) => {
    if (getAddress(unlocked[i]) !== a.address) fail(`anvil account ${i} is ${unlocked[i]}, not the default mnemonic's`);
  });
}

async function send(address, functionName, args) {
  const hash = await anvil.writeContract({ account: deployer, address, abi: token.abi, functionName, args });
  const receipt = await anvil.waitForTransactionReceipt({ hash });
  if (receipt.status !== 'success') fail(`${functionName} on ${address} reverted (${hash})`);
}

const read = (address, functionName, args = []) => anvil.readContract({ address, abi: token.abi, functionName, args });

async function placeToken(address, name, version, decimals, mintPerPayer) {
  await anvil.setCode({ address, bytecode: token.deployedBytecode });
  if (!(await read(address, 'initialized'))) await send(address, 'initialize', [name, version, decimals, deployer.address]);
  for (const i of PAYER_INDICES) {
    const payer = accounts[i].address;
    if ((await read(address, 'balanceOf', [payer])) === 0n) await send(address, 'mint', [payer, mintPerPayer]);
  }
}

// SubjectPublicKeyInfo for an EC key ends with the uncompressed point 0x04 || X || Y.
function derToAddress(spkiHex) {
  const point = `0x${spkiHex.slice(-130)}`;
  if (!point.startsWith('0x04') || spkiHex.length !== 2 + 2 * 88) fail(`unexpected KMS public key ${spkiHex}`);
  return publicKeyToAddress(point);
}

// An ASN.1 DER ECDSA signature: SEQUENCE { INTEGER r, INTEGER s }.
function derToRs(sigHex) {
  const b = Buffer.from(sigHex.slice(2), 'hex');
  const readInt = (at) => {
    if (b[at] !== 0x02) fail(`bad DER signature ${sigHex}`);
    return { value: BigInt(`0x${b.subarray(at + 2, at + 2 + b[at + 1]).toString('hex')}`), next: at + 2 + b[at + 1] };
  };
  if (b[0] !== 0x30) fail(`bad DER signature ${sigHex}`);
  const r = readInt(2);
  const s = readInt(r.next);
  return { r: r.value, s: s.value };
}

// The signature must recover to the lane's address with one of the two recovery ids, after
// the low-s normalization the chain requires. Unpatched moto signs sha256(digest) instead,
// and recovery then yields some other address.
async function checkDigestSigning(lane, digest) {
  const { r, s: rawS } = derToRs(lane.selfTestSignatureDer);
  const s = rawS > SECP256K1_N / 2n ? SECP256K1_N - rawS : rawS;
  const toHex = (n) => `0x${n.toString(16).padStart(64, '0')}`;
  for (const yParity of [0, 1]) {
    const recovered = await recoverAddress({ hash: digest, signature: { r: toHex(r), s: toHex(s), yParity } });
    if (recovered === lane.address) return;
  }
  fail(`KMS DIGEST signature of ${lane.alias} does not recover to ${lane.address}: is moto running unpatched?`);
}

function writeAtomically(path, text) {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

async function main() {
  await checkChain();

  const multicall = artifact('Multicall3');
  await anvil.setCode({ address: MULTICALL3, bytecode: multicall.deployedBytecode });
  await placeToken(USDC, 'USDC', '2', 6, 1_000_000n * 10n ** 6n);
  await placeToken(OTHER_TOKEN, 'Other Token', '1', 6, 1_000n * 10n ** 6n);

  const aws = JSON.parse(readFileSync(env('AWS_JSON'), 'utf8'));
  const lanes = aws.lanes.map((l) => ({ ...l, address: derToAddress(l.publicKeyDer) }));
  for (const lane of lanes) {
    await checkDigestSigning(lane, aws.selfTestDigest);
    await anvil.setBalance({ address: lane.address, value: LANE_GAS_MONEY });
  }

  const values = {
    X402_STACK_DIR: env('STACK_DIR'),
    ANVIL_URL: env('ANVIL_URL'),
    RPC_URL: env('RPC_URL'),
    RPC_PROXY_URL: env('RPC_PROXY_URL'),
    AWS_ENDPOINT_URL: env('AWS_ENDPOINT_URL'),
    AWS_REGION: env('AWS_REGION'),
    AWS_DEFAULT_REGION: env('AWS_REGION'),
    AWS_ACCESS_KEY_ID: env('AWS_ACCESS_KEY_ID'),
    AWS_SECRET_ACCESS_KEY: env('AWS_SECRET_ACCESS_KEY'),
    X402_CHAIN_ID: String(CHAIN_ID),
    X402_NETWORK: `eip155:${CHAIN_ID}`,
    X402_TOKEN: USDC,
    X402_TOKEN_NAME: await read(USDC, 'name'),
    X402_TOKEN_VERSION: await read(USDC, 'version'),
    X402_TOKEN_DECIMALS: String(await read(USDC, 'decimals')),
    X402_OTHER_TOKEN: OTHER_TOKEN,
    X402_MULTICALL3: MULTICALL3,
    X402_LANE_KEYS: lanes.map((l) => l.keyId).join(','),
    X402_LANE_ALIASES: lanes.map((l) => l.alias).join(','),
    X402_LANE_ADDRESSES: lanes.map((l) => l.address).join(','),
    X402_PAYMENTS_TABLE: 'x402-payments',
    X402_LANES_TABLE: 'x402-lanes',
    X402_PAYEE: accounts[PAYEE_INDEX].address,
  };
  const missingTables = [values.X402_PAYMENTS_TABLE, values.X402_LANES_TABLE].filter((t) => !aws.tables.includes(t));
  if (missingTables.length) fail(`infra/tables.json does not define ${missingTables.join(', ')}`);

  const privateKey = (a) => `0x${Buffer.from(a.getHdKey().privateKey).toString('hex')}`;
  const stack = {
    ...values,
    lanes: lanes.map(({ alias, keyId, address }) => ({ alias, keyId, address })),
    deployer: { address: deployer.address, privateKey: privateKey(deployer) },
    payers: PAYER_INDICES.map((i) => ({ address: accounts[i].address, privateKey: privateKey(accounts[i]) })),
    payee: { address: accounts[PAYEE_INDEX].address },
  };

  const dir = env('STACK_DIR');
  writeAtomically(join(dir, 'stack.json'), `${JSON.stringify(stack, null, 2)}\n`);
  // Written last: its presence is what tells stack.sh that the bootstrap finished.
  const quoted = (v) => (/^[\w.\/:,@+-]*$/.test(v) ? v : `'${v.replaceAll("'", "'\\''")}'`);
  const lines = Object.entries(values).map(([k, v]) => `${k}=${quoted(v)}`);
  writeAtomically(join(dir, 'stack.env'), `# Written by infra/bootstrap.sh; source it or read it as dotenv.\n${lines.join('\n')}\n`);
}

await main();
