// Writes the "Release builds" section of docs/benchmarks.md (binary sizes and cold start) from the
// JSON that coldstart.mjs wrote for the release binaries, and prints it.
//
//   node infra/load/render-release.mjs --coldstart release-coldstart.json --doc docs/benchmarks.md \
//     --commit abc1234 --command "bash infra/load/release.sh" --build "cargo build --release ..."

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { machine } from "./lib/machine.mjs";
import { releaseSection, writeReleaseSection } from "./lib/report.mjs";

const { values: opts } = parseArgs({
  options: {
    coldstart: { type: "string" },
    doc: { type: "string" },
    command: { type: "string", default: "bash infra/load/release.sh" },
    build: { type: "string" },
    commit: { type: "string" },
  },
});
for (const required of ["coldstart", "doc", "build"]) {
  if (!opts[required]) throw new Error(`render-release.mjs: --${required} is required`);
}
const text = releaseSection({
  coldStart: JSON.parse(readFileSync(opts.coldstart, "utf8")),
  machine: machine(),
  command: opts.command,
  build: opts.build,
  commit: opts.commit ?? execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim(),
});
writeReleaseSection(opts.doc, text);
console.log(text);
