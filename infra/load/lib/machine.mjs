// What machine a figure was measured on, for the report: CPUs, memory, and how busy it was.

import os from "node:os";

export function machine() {
  const cpus = os.cpus();
  return {
    nproc: os.availableParallelism?.() ?? cpus.length,
    cpuModel: cpus[0]?.model?.trim() ?? "unknown",
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    // Other work on the machine (a build, say) skews every figure; the load average says if there was any.
    loadAverage1m: Math.round(os.loadavg()[0] * 100) / 100,
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
  };
}
