# Helpers shared by infra/load/run.sh and infra/load/release.sh (sourced; they set RUN and LOGS first).

step() { printf '\n== %s\n' "$*" >&2; }

# Stops one process we started, by the pid file we wrote for it.
stop_pid() {
  local pidfile="$RUN/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

# Waits until GET $1 answers, or fails with the tail of log $2.
wait_for() {
  for _ in $(seq 100); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "load: $1 does not answer; the end of $2:" >&2
  tail -20 "$2" >&2
  exit 1
}

# Other work on the machine (a build, say) skews every figure. Waits, up to LOAD_QUIET_WAIT seconds
# (120), until the CPUs are at least 80 % idle over 2 s; then goes on either way (the report gives
# the load average, so a disturbed run shows).
wait_quiet() {
  local deadline=$((SECONDS + ${LOAD_QUIET_WAIT:-120})) a b idle total
  while :; do
    read -ra a </proc/stat; sleep 2; read -ra b </proc/stat
    idle=$(( (b[4] + b[5]) - (a[4] + a[5]) ))
    total=0; for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
    (( total > 0 && idle * 100 >= total * 80 )) && return 0
    (( SECONDS >= deadline )) && { echo "load: the machine is still busy ($(( 100 - idle * 100 / (total > 0 ? total : 1) )) %); measuring anyway" >&2; return 0; }
    echo "load: waiting for the machine to quiet down ($(( 100 - idle * 100 / (total > 0 ? total : 1) )) % busy)" >&2
  done
}

# Starts cargo-lambda's emulator with only the runtime API on port $2, for coldstart.mjs (which starts
# and stops each function process itself); $1 names its pid file and log. Returns once it listens.
start_runtime_emulator() {
  setsid cargo lambda watch --only-lambda-apis --invoke-address 127.0.0.1 --invoke-port "$2" \
    >"$LOGS/$1.log" 2>&1 &
  echo $! >"$RUN/$1.pid"
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
}
