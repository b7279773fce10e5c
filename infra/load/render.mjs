// Writes the "Load: verify" section of docs/benchmarks.md from the JSON that harness.mjs and
// coldstart.mjs wrote, and the "Load: settle" section from settle.mjs's, and prints them.
//
//   node infra/load/render.mjs --verify v.json --coldstart c.json --doc docs/benchmarks.md \
//     --settle s.json [--settle-other s-1-lane.json] [--settle-net s-net-1-lane.json] \
//     --ours target/debug/local-server --command "bash infra/load/run.sh"

import { execFileSync } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { parseArgs } from "node:util";
import { section, settleSection, writeSection, writeSettleSection } from "./lib/report.mjs";

const { values: opts } = parseArgs({
  options: {
    verify: { type: "string" },
    coldstart: { type: "string" },
    settle: { type: "string" }, // settle.mjs's JSON (ours and the reference); optional
    "settle-other": { type: "string", multiple: true, default: [] }, // ours again with other lane counts
    "settle-net": { type: "string", multiple: true, default: [] }, // ours per lane count, network modelled
    doc: { type: "string" },
    ours: { type: "string" }, // the binary measured, for its build time
    "shown-ours": { type: "string" }, // how the report names it (run.sh measures a copy)
    command: { type: "string", default: "bash infra/load/run.sh" },
    commit: { type: "string" }, // the code measured, as run.sh named it when it copied the binaries
  },
});
for (const required of ["verify", "coldstart", "doc", "ours"]) {
  if (!opts[required]) throw new Error(`render.mjs: --${required} is required`);
}
// The versions actually installed (package-lock.json pins them), read from node_modules itself
// because the @x402 packages do not export their package.json.
const versionOf = (name) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url), "utf8")).version;
// The binaries' build time says which state was measured when the work tree has moved on.
const built = statSync(opts.ours).mtime.toISOString().slice(0, 16).replace("T", " ");
const commit = `${opts.commit ?? execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim()} `
  + `(binaries built ${built} UTC)`;
const text = section({
  commit,
  verify: JSON.parse(readFileSync(opts.verify, "utf8")),
  coldStart: JSON.parse(readFileSync(opts.coldstart, "utf8")),
  command: opts.command,
  ours: opts["shown-ours"] ?? opts.ours,
  versions: { core: versionOf("@x402/core"), evm: versionOf("@x402/evm"), viem: versionOf("viem") },
});
writeSection(opts.doc, text);
console.log(text);
if (opts.settle) {
  const settleText = settleSection({
    commit,
    settle: JSON.parse(readFileSync(opts.settle, "utf8")),
    others: opts["settle-other"].map((file) => JSON.parse(readFileSync(file, "utf8"))),
    networked: opts["settle-net"].map((file) => JSON.parse(readFileSync(file, "utf8"))),
    verify: JSON.parse(readFileSync(opts.verify, "utf8")),
    command: opts.command,
    ours: opts["shown-ours"] ?? opts.ours,
    versions: { core: versionOf("@x402/core"), evm: versionOf("@x402/evm"), viem: versionOf("viem") },
  });
  writeSettleSection(opts.doc, settleText);
  console.log(`\n${settleText}`);
}
