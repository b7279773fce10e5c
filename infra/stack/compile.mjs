// Compiles infra/stack/contracts/*.sol offline with solc-js and writes one JSON per contract
// (contractName, abi, bytecode = creation code, deployedBytecode = runtime code) to
// OUT_DIR (default <repo>/.local/contracts). Artifacts are not committed, so they can never
// disagree with their source; loading the compiler takes a few seconds, so the output is
// reused while the sources, settings and compiler version are unchanged.
//
// Usage: node infra/stack/compile.mjs [OUT_DIR]

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const contractsDir = resolve(here, 'contracts');
const outDir = resolve(process.argv[2] ?? join(here, '../../.local/contracts'));

const sources = {};
for (const file of readdirSync(contractsDir).filter((f) => f.endsWith('.sol')).sort()) {
  sources[file] = { content: readFileSync(join(contractsDir, file), 'utf8') };
}

const input = {
  language: 'Solidity',
  sources,
  settings: {
    // Cancun is what Base runs and what anvil 1.x executes by default.
    evmVersion: 'cancun',
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
  },
};

const solcVersion = createRequire(import.meta.url)('solc/package.json').version;
const inputKey = createHash('sha256').update(solcVersion).update(JSON.stringify(input)).digest('hex');
const keyFile = join(outDir, '.input-sha256');
if (existsSync(keyFile) && readFileSync(keyFile, 'utf8') === inputKey) {
  console.log(`contracts in ${outDir} are up to date`);
  process.exit(0);
}

const { default: solc } = await import('solc');
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const problems = output.errors ?? [];
for (const p of problems) console.error(p.formattedMessage);
if (problems.some((p) => p.severity === 'error')) process.exit(1);

mkdirSync(outDir, { recursive: true });
for (const [file, contracts] of Object.entries(output.contracts)) {
  for (const [contractName, c] of Object.entries(contracts)) {
    if (c.evm.deployedBytecode.object === '') continue; // interfaces
    const artifact = {
      contractName,
      sourceFile: `infra/stack/contracts/${file}`,
      compiler: `solc ${solc.version()}`,
      abi: c.abi,
      bytecode: `0x${c.evm.bytecode.object}`,
      deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
    };
    // Write then rename, so two stacks bootstrapping at once never read half a file.
    const target = join(outDir, `${contractName}.json`);
    const tmp = `${target}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(artifact, null, 2)}\n`);
    renameSync(tmp, target);
    console.log(`compiled ${contractName} -> ${target}`);
  }
}
writeFileSync(keyFile, inputKey);
