// The local stack's Permit2 stand-ins (infra/stack/contracts: Permit2.sol, X402Permit2Proxies.sol,
// EIP2612Token.sol) against the official @x402/evm 2.27. The SDK's own client code signs each payment
// and the SDK's own facilitator code verifies and settles it from an account of its own, so every
// proxy call carries exactly the arguments a facilitator sends; the balances must then move by
// exactly the amount charged. The negative cases send what that facilitator would, changed in one
// place, and expect the revert the deployed contracts give. Nothing here goes through our
// facilitator: this proves the chain is right before the facilitator is tested against it.
//
//   X402_STACK_DIR=... node --test tests/interop/permit2-contracts.test.mjs
//
// Needs a running stack (infra/stack/stack.sh up: anvil and the bootstrap are all it uses);
// infra/test.sh runs it beside infra/stack/check-contracts.mjs. Each test pays from fresh accounts
// of its own, so it can run on a stack that other tests have used.

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import {
  PERMIT2_ADDRESS,
  permit2WitnessTypes,
  toClientEvmSigner,
  toFacilitatorEvmSigner,
  uptoPermit2WitnessTypes,
  x402ExactPermit2ProxyABI,
  x402ExactPermit2ProxyAddress,
  x402UptoPermit2ProxyABI,
  x402UptoPermit2ProxyAddress,
} from "@x402/evm";
import { ExactEvmScheme as ExactClient } from "@x402/evm/exact/client";
import { ExactEvmScheme as ExactFacilitator } from "@x402/evm/exact/facilitator";
import { UptoEvmScheme as UptoClient } from "@x402/evm/upto/client";
import { UptoEvmScheme as UptoFacilitator } from "@x402/evm/upto/facilitator";
import {
  ContractFunctionRevertedError,
  createPublicClient,
  createTestClient,
  createWalletClient,
  getAddress,
  hashDomain,
  http,
  keccak256,
  maxUint256,
  parseAbi,
  parseEther,
  publicActions,
  toHex,
} from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { baseSepolia } from "viem/chains";
import { loadStack } from "./lib/stack.mjs";

const stack = loadStack();
const PRICE = 1_000_000n; // atomic units of the permit token (18 decimals): what every exact test charges
const UPTO_MAXIMUM = 5_000_000n;
const UPTO_CHARGED = 1_234_567n;

// Permit2's side as the canonical contract declares it, not as our artifact does: a revert from our
// Permit2 decodes here only if its error has the real selector.
const PERMIT2_ABI = parseAbi([
  "function DOMAIN_SEPARATOR() view returns (bytes32)",
  "function nonceBitmap(address owner, uint256 word) view returns (uint256)",
  "function invalidateUnorderedNonces(uint256 wordPos, uint256 mask)",
  "error SignatureExpired(uint256 signatureDeadline)",
  "error InvalidAmount(uint256 maxAmount)",
  "error InvalidNonce()",
  "error InvalidSignatureLength()",
  "error InvalidSignature()",
  "error InvalidSigner()",
  "error InvalidContractSignature()",
]);
const TOKEN_ABI = parseAbi([
  "function balanceOf(address) view returns (uint256)",
  "function allowance(address owner, address spender) view returns (uint256)",
  "function approve(address spender, uint256 value) returns (bool)",
  "function nonces(address owner) view returns (uint256)",
  "function mint(address to, uint256 value)",
  "function DOMAIN_SEPARATOR() view returns (bytes32)",
]);
const PROXIES = {
  exact: { address: x402ExactPermit2ProxyAddress, abi: [...x402ExactPermit2ProxyABI, ...PERMIT2_ABI] },
  // The SDK's upto ABI leaves out InvalidAmount(), which the deployed upto proxy inherits and throws
  // for a zero amount (the SDK's facilitator never sends one: it answers a zero settlement itself).
  upto: { address: x402UptoPermit2ProxyAddress, abi: [...x402UptoPermit2ProxyABI, ...PERMIT2_ABI, ...parseAbi(["error InvalidAmount()"])] },
};
// What a server that offers the extension declares; the client only looks for the key.
const SPONSORING = { extensions: { eip2612GasSponsoring: { info: { description: "local check", version: "1" }, schema: {} } } };

const transport = http(stack.ANVIL_URL);
const chain = createPublicClient({ chain: baseSepolia, transport });
const anvil = createTestClient({ chain: baseSepolia, mode: "anvil", transport });
const tokenOwner = createWalletClient({ account: privateKeyToAccount(stack.deployer.privateKey), chain: baseSepolia, transport });

async function mined(hash) {
  const receipt = await chain.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, "success", `transaction ${hash} reverted`);
  return receipt;
}

const token = (functionName, ...args) =>
  chain.readContract({ address: stack.X402_PERMIT_TOKEN, abi: TOKEN_ABI, functionName, args });

/** A fresh account holding `amount` of the permit token and no ETH; with `approved`, it has approved Permit2 (paying its own gas). */
async function newPayer(amount, { approved = false } = {}) {
  const account = privateKeyToAccount(generatePrivateKey());
  await mined(await tokenOwner.writeContract({ address: stack.X402_PERMIT_TOKEN, abi: TOKEN_ABI, functionName: "mint", args: [account.address, amount] }));
  if (approved) {
    await anvil.setBalance({ address: account.address, value: parseEther("1") });
    const wallet = createWalletClient({ account, chain: baseSepolia, transport });
    await mined(await wallet.writeContract({ address: stack.X402_PERMIT_TOKEN, abi: TOKEN_ABI, functionName: "approve", args: [PERMIT2_ADDRESS, maxUint256] }));
    await anvil.setBalance({ address: account.address, value: 0n });
  }
  return account;
}

/** A fresh facilitator account with gas money, as the SDK's facilitator signer (the reference facilitator builds it this way). */
async function newFacilitator() {
  const account = privateKeyToAccount(generatePrivateKey());
  await anvil.setBalance({ address: account.address, value: parseEther("10") });
  const client = createWalletClient({ account, chain: baseSepolia, transport }).extend(publicActions);
  const signer = toFacilitatorEvmSigner({
    address: account.address,
    readContract: (args) => client.readContract({ ...args, args: args.args ?? [] }),
    verifyTypedData: (args) => client.verifyTypedData(args),
    writeContract: (args) => client.writeContract({ ...args, args: args.args ?? [] }),
    sendTransaction: (args) => client.sendTransaction(args),
    waitForTransactionReceipt: (args) => client.waitForTransactionReceipt(args),
    getCode: (args) => client.getCode(args),
  });
  return { account, signer };
}

const newPayee = () => privateKeyToAccount(generatePrivateKey()).address;

function requirements(scheme, payTo, { amount = PRICE, maxTimeoutSeconds = 300, extra = {} } = {}) {
  return {
    scheme,
    network: stack.X402_NETWORK,
    amount: amount.toString(),
    asset: getAddress(stack.X402_PERMIT_TOKEN),
    payTo,
    maxTimeoutSeconds,
    extra: { name: stack.X402_PERMIT_TOKEN_NAME, version: stack.X402_PERMIT_TOKEN_VERSION, assetTransferMethod: "permit2", ...extra },
  };
}

/** The whole PaymentPayload a client sends, around what the SDK's client scheme created. */
async function pay(clientScheme, accepted, context) {
  const created = await clientScheme.createPaymentPayload(2, accepted, context);
  return { ...created, resource: { url: "http://127.0.0.1/permit2-check", description: "", mimeType: "application/json" }, accepted };
}

const exactClient = (payer) => new ExactClient(toClientEvmSigner(payer, chain));
const uptoClient = (payer) => new UptoClient(toClientEvmSigner(payer, chain));

// The proxies' arguments in the order the SDK's facilitator passes them (buildExactPermit2SettleArgs,
// buildUptoPermit2SettleArgs in @x402/evm), for the negative cases to change one thing at a time.
function permitArgument(auth) {
  return {
    permitted: { token: getAddress(auth.permitted.token), amount: BigInt(auth.permitted.amount) },
    nonce: BigInt(auth.nonce),
    deadline: BigInt(auth.deadline),
  };
}
function exactSettleArgs({ signature, permit2Authorization: auth }, witness = {}) {
  return [permitArgument(auth), getAddress(auth.from), { to: getAddress(auth.witness.to), validAfter: BigInt(auth.witness.validAfter), ...witness }, signature];
}
function uptoSettleArgs({ signature, permit2Authorization: auth }, amount) {
  const witness = { to: getAddress(auth.witness.to), facilitator: getAddress(auth.witness.facilitator), validAfter: BigInt(auth.witness.validAfter) };
  return [permitArgument(auth), amount, getAddress(auth.from), witness, signature];
}

/** Simulates the proxy call from `from` and expects it to revert with custom error (or reason string) `expected`. */
async function expectRevert(scheme, from, functionName, args, expected) {
  const { address, abi } = PROXIES[scheme];
  await assert.rejects(chain.simulateContract({ account: from, address, abi, functionName, args }), (error) => {
    const revert = error.walk((e) => e instanceof ContractFunctionRevertedError);
    assert.ok(revert, `expected a revert with ${expected}, got: ${error.shortMessage ?? error.message}`);
    assert.equal(revert.data?.errorName === "Error" ? revert.reason : (revert.data?.errorName ?? revert.reason), expected);
    return true;
  });
}

/** What a successful settlement must show on chain: the facilitator sent it to the proxy, and exactly `charged` moved. */
async function assertSettled({ settled, facilitator, proxy, payer, payTo, funded, charged }) {
  assert.equal(settled.success, true, JSON.stringify(settled));
  const receipt = await chain.getTransactionReceipt({ hash: settled.transaction });
  assert.equal(receipt.status, "success");
  assert.equal(getAddress(receipt.from), facilitator.address);
  assert.equal(getAddress(receipt.to), getAddress(proxy));
  assert.equal(await token("balanceOf", payer.address), funded - charged);
  assert.equal(await token("balanceOf", payTo), charged);
}

async function nonceUsed(payload) {
  const { from, nonce } = payload.payload.permit2Authorization;
  const word = await chain.readContract({ address: PERMIT2_ADDRESS, abi: PERMIT2_ABI, functionName: "nonceBitmap", args: [from, BigInt(nonce) >> 8n] });
  return ((word >> (BigInt(nonce) & 0xffn)) & 1n) === 1n;
}

/** "TokenPermissions(...)Witness(...)": the referenced types of an SDK type set, encoded in EIP-712 order. */
function referencedTypes(types) {
  return Object.keys(types)
    .filter((name) => name !== "PermitWitnessTransferFrom")
    .sort()
    .map((name) => `${name}(${types[name].map((f) => `${f.type} ${f.name}`).join(",")})`)
    .join("");
}

describe("the local stack's Permit2 and x402 proxies, driven by @x402/evm 2.27's own client and facilitator", () => {
  let facilitator;
  before(async () => {
    facilitator = await newFacilitator();
  });

  test("they sit where the SDK looks, with the EIP-712 domains and witness types the SDK signs", async () => {
    assert.equal(getAddress(stack.X402_PERMIT2), PERMIT2_ADDRESS);
    assert.equal(getAddress(stack.X402_EXACT_PERMIT2_PROXY), x402ExactPermit2ProxyAddress);
    assert.equal(getAddress(stack.X402_UPTO_PERMIT2_PROXY), x402UptoPermit2ProxyAddress);
    const chainId = Number(stack.X402_CHAIN_ID);
    const permit2Domain = hashDomain({
      domain: { name: "Permit2", chainId, verifyingContract: PERMIT2_ADDRESS },
      types: { EIP712Domain: [{ name: "name", type: "string" }, { name: "chainId", type: "uint256" }, { name: "verifyingContract", type: "address" }] },
    });
    assert.equal(await chain.readContract({ address: PERMIT2_ADDRESS, abi: PERMIT2_ABI, functionName: "DOMAIN_SEPARATOR" }), permit2Domain);
    const tokenDomain = hashDomain({
      domain: { name: stack.X402_PERMIT_TOKEN_NAME, version: stack.X402_PERMIT_TOKEN_VERSION, chainId, verifyingContract: getAddress(stack.X402_PERMIT_TOKEN) },
      types: { EIP712Domain: [{ name: "name", type: "string" }, { name: "version", type: "string" }, { name: "chainId", type: "uint256" }, { name: "verifyingContract", type: "address" }] },
    });
    assert.equal(await token("DOMAIN_SEPARATOR"), tokenDomain);
    for (const [scheme, types] of [["exact", permit2WitnessTypes], ["upto", uptoPermit2WitnessTypes]]) {
      const { address, abi } = PROXIES[scheme];
      const read = (functionName) => chain.readContract({ address, abi, functionName });
      assert.equal(await read("PERMIT2"), PERMIT2_ADDRESS, scheme);
      assert.equal(await read("WITNESS_TYPE_STRING"), `Witness witness)${referencedTypes(types)}`, scheme);
      const witness = `Witness(${types.Witness.map((f) => `${f.type} ${f.name}`).join(",")})`;
      assert.equal(await read("WITNESS_TYPEHASH"), keccak256(toHex(witness)), scheme);
    }
  });

  test("exact: a payer that approved Permit2 pays through settle, exactly the price", async () => {
    const funded = 10n * PRICE;
    const payer = await newPayer(funded, { approved: true });
    const payTo = newPayee();
    const accepted = requirements("exact", payTo);
    const payload = await pay(exactClient(payer), accepted);
    assert.equal(payload.payload.permit2Authorization.spender, x402ExactPermit2ProxyAddress);
    assert.equal(payload.extensions, undefined);

    const scheme = new ExactFacilitator(facilitator.signer);
    assert.deepEqual(await scheme.verify(payload, accepted), { isValid: true, invalidReason: undefined, payer: payer.address });
    const settled = await scheme.settle(payload, accepted);
    await assertSettled({ settled, facilitator: facilitator.account, proxy: x402ExactPermit2ProxyAddress, payer, payTo, funded, charged: PRICE });
    assert.equal(await nonceUsed(payload), true);
  });

  test("exact with eip2612GasSponsoring: a payer with no allowance and no ETH pays through settleWithPermit", async () => {
    const funded = 10n * PRICE;
    const payer = await newPayer(funded);
    assert.equal(await token("allowance", payer.address, PERMIT2_ADDRESS), 0n);
    const payTo = newPayee();
    const accepted = requirements("exact", payTo);
    const payload = await pay(exactClient(payer), accepted, SPONSORING);
    const permit = payload.extensions?.eip2612GasSponsoring?.info;
    assert.ok(permit, "the SDK's client signed no EIP-2612 permit");
    assert.equal(permit.spender, PERMIT2_ADDRESS);
    assert.equal(permit.amount, PRICE.toString());

    const scheme = new ExactFacilitator(facilitator.signer);
    assert.equal((await scheme.verify(payload, accepted)).isValid, true);
    const settled = await scheme.settle(payload, accepted);
    await assertSettled({ settled, facilitator: facilitator.account, proxy: x402ExactPermit2ProxyAddress, payer, payTo, funded, charged: PRICE });
    // The permit was applied (its nonce moved on) and Permit2 spent all of it.
    assert.equal(await token("nonces", payer.address), 1n);
    assert.equal(await token("allowance", payer.address, PERMIT2_ADDRESS), 0n);
  });

  test("upto: settled for less than the signed maximum, exactly the settled amount moves", async () => {
    const funded = 10n * UPTO_MAXIMUM;
    const payer = await newPayer(funded, { approved: true });
    const payTo = newPayee();
    const accepted = requirements("upto", payTo, { amount: UPTO_MAXIMUM, extra: { facilitatorAddress: facilitator.account.address } });
    const payload = await pay(uptoClient(payer), accepted);
    assert.equal(payload.payload.permit2Authorization.spender, x402UptoPermit2ProxyAddress);
    assert.equal(payload.payload.permit2Authorization.witness.facilitator, facilitator.account.address);

    const scheme = new UptoFacilitator(facilitator.signer);
    assert.equal((await scheme.verify(payload, accepted)).isValid, true);
    const settled = await scheme.settle(payload, { ...accepted, amount: UPTO_CHARGED.toString() });
    assert.equal(settled.amount, UPTO_CHARGED.toString());
    await assertSettled({ settled, facilitator: facilitator.account, proxy: x402UptoPermit2ProxyAddress, payer, payTo, funded, charged: UPTO_CHARGED });
  });

  test("upto with eip2612GasSponsoring: a payer with no allowance pays through settleWithPermit", async () => {
    const funded = 10n * UPTO_MAXIMUM;
    const payer = await newPayer(funded);
    const payTo = newPayee();
    const accepted = requirements("upto", payTo, { amount: UPTO_MAXIMUM, extra: { facilitatorAddress: facilitator.account.address } });
    const payload = await pay(uptoClient(payer), accepted, SPONSORING);
    assert.ok(payload.extensions?.eip2612GasSponsoring?.info, "the SDK's client signed no EIP-2612 permit");

    const scheme = new UptoFacilitator(facilitator.signer);
    assert.equal((await scheme.verify(payload, accepted)).isValid, true);
    const settled = await scheme.settle(payload, { ...accepted, amount: UPTO_CHARGED.toString() });
    await assertSettled({ settled, facilitator: facilitator.account, proxy: x402UptoPermit2ProxyAddress, payer, payTo, funded, charged: UPTO_CHARGED });
    // The permit gave Permit2 the maximum; what was not charged stays allowed.
    assert.equal(await token("allowance", payer.address, PERMIT2_ADDRESS), UPTO_MAXIMUM - UPTO_CHARGED);
  });

  test("without an allowance or a permit the transfer fails, and the SDK's verify says permit2_allowance_required", async () => {
    const payer = await newPayer(10n * PRICE);
    const accepted = requirements("exact", newPayee());
    const payload = await pay(exactClient(payer), accepted);
    await expectRevert("exact", facilitator.account, "settle", exactSettleArgs(payload.payload), "TRANSFER_FROM_FAILED");
    const verdict = await new ExactFacilitator(facilitator.signer).verify(payload, accepted);
    assert.equal(verdict.invalidReason, "permit2_allowance_required");
  });

  test("a witness `to` other than the one signed reverts with InvalidSigner, and nothing moves", async () => {
    const payer = await newPayer(10n * PRICE, { approved: true });
    const payload = await pay(exactClient(payer), requirements("exact", newPayee()));
    const thief = newPayee();
    await expectRevert("exact", facilitator.account, "settle", exactSettleArgs(payload.payload, { to: thief }), "InvalidSigner");
    assert.equal(await nonceUsed(payload), false);
    assert.equal(await token("balanceOf", payer.address), 10n * PRICE);
  });

  test("a Permit2 nonce reverts with InvalidNonce once it is used, or once the payer invalidated it", async () => {
    const payer = await newPayer(10n * PRICE, { approved: true });
    const accepted = requirements("exact", newPayee());
    const payload = await pay(exactClient(payer), accepted);
    const settled = await new ExactFacilitator(facilitator.signer).settle(payload, accepted);
    assert.equal(settled.success, true, JSON.stringify(settled));
    await expectRevert("exact", facilitator.account, "settle", exactSettleArgs(payload.payload), "InvalidNonce");

    const withdrawn = await pay(exactClient(payer), accepted);
    const nonce = BigInt(withdrawn.payload.permit2Authorization.nonce);
    await anvil.setBalance({ address: payer.address, value: parseEther("1") });
    const wallet = createWalletClient({ account: payer, chain: baseSepolia, transport });
    await mined(await wallet.writeContract({ address: PERMIT2_ADDRESS, abi: PERMIT2_ABI, functionName: "invalidateUnorderedNonces", args: [nonce >> 8n, 1n << (nonce & 0xffn)] }));
    await expectRevert("exact", facilitator.account, "settle", exactSettleArgs(withdrawn.payload), "InvalidNonce");
  });

  test("a permit past its deadline reverts with SignatureExpired", async () => {
    const payer = await newPayer(10n * PRICE, { approved: true });
    // The SDK's client sets deadline = now + maxTimeoutSeconds: a negative timeout signs an expired permit.
    const payload = await pay(exactClient(payer), requirements("exact", newPayee(), { maxTimeoutSeconds: -3600 }));
    await expectRevert("exact", facilitator.account, "settle", exactSettleArgs(payload.payload), "SignatureExpired");
  });

  test("upto: more than the signed maximum reverts with AmountExceedsPermitted; zero with InvalidAmount", async () => {
    const payer = await newPayer(10n * UPTO_MAXIMUM, { approved: true });
    const accepted = requirements("upto", newPayee(), { amount: UPTO_MAXIMUM, extra: { facilitatorAddress: facilitator.account.address } });
    const payload = await pay(uptoClient(payer), accepted);
    await expectRevert("upto", facilitator.account, "settle", uptoSettleArgs(payload.payload, UPTO_MAXIMUM + 1n), "AmountExceedsPermitted");
    await expectRevert("upto", facilitator.account, "settle", uptoSettleArgs(payload.payload, 0n), "InvalidAmount");
    assert.equal(await token("balanceOf", payer.address), 10n * UPTO_MAXIMUM);
  });

  test("upto: a sender other than the witness's facilitator reverts with UnauthorizedFacilitator", async () => {
    const payer = await newPayer(10n * UPTO_MAXIMUM, { approved: true });
    const accepted = requirements("upto", newPayee(), { amount: UPTO_MAXIMUM, extra: { facilitatorAddress: facilitator.account.address } });
    const payload = await pay(uptoClient(payer), accepted);
    const other = await newFacilitator();
    await expectRevert("upto", other.account, "settle", uptoSettleArgs(payload.payload, UPTO_CHARGED), "UnauthorizedFacilitator");
  });

  test("an EIP-2612 permit for another amount than the Permit2 one reverts with Permit2612AmountMismatch", async () => {
    const payer = await newPayer(10n * PRICE);
    const payload = await pay(exactClient(payer), requirements("exact", newPayee()), SPONSORING);
    const info = payload.extensions.eip2612GasSponsoring.info;
    const signature = info.signature.slice(2);
    const permit2612 = {
      value: BigInt(info.amount) + 1n,
      deadline: BigInt(info.deadline),
      r: `0x${signature.slice(0, 64)}`,
      s: `0x${signature.slice(64, 128)}`,
      v: parseInt(signature.slice(128, 130), 16),
    };
    await expectRevert("exact", facilitator.account, "settleWithPermit", [permit2612, ...exactSettleArgs(payload.payload)], "Permit2612AmountMismatch");
  });
});
