// CPU time (user + system) that processes have used so far, from /proc/<pid>/stat, so a phase's
// CPU per request can be reported for each facilitator and for the chain side (anvil and the RPC
// proxy). CPU per request says more than throughput on a shared machine: it does not depend on
// who else was running.

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const TICKS_PER_SECOND = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

/** Seconds of CPU the given processes have used, summed; 0 for a pid that is gone. */
export function cpuSeconds(pids) {
  let ticks = 0;
  for (const pid of pids) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue;
    }
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis):
    // utime and stime are the 14th and 15th fields of the line, the 12th and 13th here.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / TICKS_PER_SECOND;
}
