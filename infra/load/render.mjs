// Writes the "Load: verify" section of docs/benchmarks.md from the JSON that harness.mjs and
// coldstart.mjs wrote, and prints it.
//
//   node infra/load/render.mjs --verify v.json --coldstart c.json --doc docs/benchmarks.md \
//     --ours target/debug/local-server --command "bash infra/load/run.sh"

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { section, writeSection } from "./lib/report.mjs";

const { values: opts } = parseArgs({
  options: {
    verify: { type: "string" },
    coldstart: { type: "string" },
    doc: { type: "string" },
    ours: { type: "string" },
    command: { type: "string", default: "bash infra/load/run.sh" },
  },
});
for (const required of ["verify", "coldstart", "doc", "ours"]) {
  if (!opts[required]) throw new Error(`render.mjs: --${required} is required`);
}
// The versions actually installed (package-lock.json pins them), read from node_modules itself
// because the @x402 packages do not export their package.json.
const versionOf = (name) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url), "utf8")).version;
// Which code was measured: the commit, and whether the facilitator's sources differed from it.
const git = (...args) => execFileSync("git", args, { encoding: "utf8" }).trim();
const SOURCES = ["lib", "functions", "infra/local-server", "Cargo.toml", "Cargo.lock"];
const dirty = git("status", "--porcelain", "--", ...SOURCES) !== "";
const commit = `${git("rev-parse", "--short", "HEAD")}${dirty ? " (facilitator sources with uncommitted changes)" : ""}`;
const text = section({
  commit,
  verify: JSON.parse(readFileSync(opts.verify, "utf8")),
  coldStart: JSON.parse(readFileSync(opts.coldstart, "utf8")),
  command: opts.command,
  ours: opts.ours,
  versions: { core: versionOf("@x402/core"), evm: versionOf("@x402/evm"), viem: versionOf("viem") },
});
writeSection(opts.doc, text);
console.log(text);
