# A Lambda function's share of a CPU, imposed on a local process (sourced by infra/load/memory.sh).
#
# Lambda gives a function CPU in proportion to its memory: one vCPU at 1,769 MB (AWS's Lambda
# guide, "Memory and computing power"), so 128 MB is about a fourteenth of one. Here that share is
# a CFS bandwidth limit on a cgroup holding the process: `quota = period × MB / 1769` in every
# period. AWS does not say which period its sandboxes use; the period decides how a request that
# needs more CPU than one period's quota is stretched (it waits out the rest of each period), so
# memory.sh takes it as a parameter and reports it. Needs root and a writable cgroup file system
# (v1's cpu controller, or v2 with the cpu controller available); says so and stops otherwise.

CPU_LIMIT_MB_PER_VCPU=1769

# The cgroup directory for name $1 (created), or nothing and a reason on stderr.
cpu_limit_create() {
  local dir
  if [[ -w /sys/fs/cgroup/cpu ]] && [[ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
    dir="/sys/fs/cgroup/cpu/$1"
  elif [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
    # v2: the cpu controller must be enabled for the root's children.
    echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    dir="/sys/fs/cgroup/$1"
  else
    echo "load: no writable cgroup cpu controller here (need root and /sys/fs/cgroup/cpu or cgroup v2 with cpu);" \
      "the CPU share of a Lambda memory size cannot be imposed" >&2
    return 1
  fi
  mkdir -p "$dir" || return 1
  echo "$dir"
}

# Limits cgroup $1 (a directory from cpu_limit_create) to the CPU of a $2 MB Lambda function, in
# periods of $3 µs; "none" for $2 lifts the limit. Prints the quota in µs (or "none").
cpu_limit_set() {
  local dir="$1" mb="$2" period="$3" quota
  if [[ "$mb" == none ]]; then
    quota=-1
  else
    quota=$(( period * mb / CPU_LIMIT_MB_PER_VCPU ))
    # The kernel's smallest quota is 1 ms.
    (( quota >= 1000 )) || { echo "load: $mb MB in periods of $period µs is a quota under 1 ms; use a longer period" >&2; return 1; }
  fi
  if [[ -f "$dir/cpu.cfs_quota_us" ]]; then
    echo "$period" >"$dir/cpu.cfs_period_us" && echo "$quota" >"$dir/cpu.cfs_quota_us"
  else
    if (( quota < 0 )); then echo "max $period" >"$dir/cpu.max"; else echo "$quota $period" >"$dir/cpu.max"; fi
  fi || return 1
  if (( quota < 0 )); then echo none; else echo "$quota"; fi
}

# Moves process $2 (all its threads) into cgroup $1.
cpu_limit_add() {
  echo "$2" >"$1/cgroup.procs"
}

# Throttling so far in cgroup $1: "<periods> <throttled periods> <throttled µs>".
cpu_limit_stat() {
  awk '/^nr_periods/ {p=$2} /^nr_throttled/ {t=$2} /^throttled_time/ {us=int($2/1000)} /^throttled_usec/ {us=$2}
       END {print p+0, t+0, us+0}' "$1/cpu.stat"
}

# Removes cgroup $1, moving whatever is still in it back to the root first.
cpu_limit_remove() {
  local dir="$1" root pid
  [[ -d "$dir" ]] || return 0
  root="$(dirname "$dir")"
  while read -r pid; do echo "$pid" >"$root/cgroup.procs" 2>/dev/null || true; done <"$dir/cgroup.procs"
  rmdir "$dir" 2>/dev/null || true
}
