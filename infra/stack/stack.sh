#!/usr/bin/env bash
# The local stack (DESIGN §6): anvil posing as Base Sepolia (chain id 84532), moto standing in
# for every AWS service, and the RPC counting proxy in front of anvil, all on 127.0.0.1.
# Stacks with different X402_STACK_DIR and ports run side by side (the tests start a second one).
#
# Usage: infra/stack/stack.sh up|down|status|env
#   up      install if needed, start everything, bootstrap, write $X402_STACK_DIR/stack.env
#   down    stop what `up` started (TERM, then KILL)
#   status  each process and whether it answers; exits 0 only if all of them do
#   env     print stack.env (source it, or read it as dotenv)
# Environment (default): X402_STACK_DIR (<repo>/.local/stack), ANVIL_PORT (8545),
#   RPC_PROXY_PORT (8546), MOTO_PORT (5000), X402_LANES (2)
set -euo pipefail

STACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
INFRA="$(dirname "$STACK")"
REPO="$(dirname "$INFRA")"
export X402_STACK_DIR="${X402_STACK_DIR:-$REPO/.local/stack}"
RUN="$X402_STACK_DIR/run"
LOGS="$X402_STACK_DIR/logs"
SERVICES=(anvil moto rpc-proxy)
CHAIN_ID=84532
STARTUP_TIMEOUT_S=30
STOP_TIMEOUT_S=5

die() {
  echo "stack: $*" >&2
  exit 1
}

# A running stack's recorded ports win over the environment, so `down` and `status` work
# from any shell; `up` takes them from the environment.
use_ports() {
  if [[ "$1" == recorded && -f "$RUN/ports.env" ]]; then
    # shellcheck source=/dev/null
    source "$RUN/ports.env"
  else
    ANVIL_PORT="${ANVIL_PORT:-8545}" RPC_PROXY_PORT="${RPC_PROXY_PORT:-8546}" MOTO_PORT="${MOTO_PORT:-5000}"
  fi
  export ANVIL_PORT RPC_PROXY_PORT MOTO_PORT
}

port_of() {
  case "$1" in
    anvil) echo "$ANVIL_PORT" ;;
    moto) echo "$MOTO_PORT" ;;
    rpc-proxy) echo "$RPC_PROXY_PORT" ;;
  esac
}

# Guards against a stale pid file whose pid now belongs to some other program.
command_marker() {
  case "$1" in
    anvil) echo "anvil" ;;
    moto) echo "launch.py" ;;
    rpc-proxy) echo "rpc_counter.py" ;;
  esac
}

pid_of() {
  cat "$RUN/$1.pid" 2>/dev/null || true
}

is_running() {
  local pid
  pid="$(pid_of "$1")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(command_marker "$1")"
}

answers() {
  local port
  port="$(port_of "$1")"
  case "$1" in
    anvil)
      curl -sf -m 2 -H 'Content-Type: application/json' \
        --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}' "http://127.0.0.1:$port" |
        grep -q "\"0x$(printf '%x' "$CHAIN_ID")\""
      ;;
    moto) curl -sf -m 2 -o /dev/null "http://127.0.0.1:$port/moto-api/" ;;
    rpc-proxy) curl -sf -m 2 -o /dev/null "http://127.0.0.1:$port/__counts" ;;
  esac
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
  local name="$1"
  shift
  "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

wait_until_answers() {
  local name="$1" deadline=$((SECONDS + STARTUP_TIMEOUT_S))
  until answers "$name"; do
    if ! is_running "$name"; then
      tail -n 20 "$LOGS/$name.log" >&2 || true
      die "$name exited during start-up (log above: $LOGS/$name.log)"
    fi
    ((SECONDS < deadline)) || die "$name did not answer on 127.0.0.1:$(port_of "$name") within ${STARTUP_TIMEOUT_S}s (log: $LOGS/$name.log)"
    sleep 0.1
  done
}

stop() {
  local name="$1" pid
  pid="$(pid_of "$name")"
  if is_running "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((STOP_TIMEOUT_S * 10))); do
      is_running "$name" || break
      sleep 0.1
    done
    if is_running "$name"; then
      echo "stack: $name (pid $pid) ignored TERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$RUN/$name.pid"
}

stop_all() {
  local name
  # SQS pollers (infra/lambda/sqs-poller.sh) feed on moto: they go first, with it.
  bash "$INFRA/lambda/sqs-poller.sh" stop
  for name in rpc-proxy moto anvil; do stop "$name"; done
  rm -f "$X402_STACK_DIR/stack.env" "$X402_STACK_DIR/stack.json" "$RUN/ports.env"
}

count_running() {
  local name n=0
  for name in "${SERVICES[@]}"; do
    if is_running "$name"; then n=$((n + 1)); fi
  done
  echo "$n"
}

up_failed() {
  local rc=$?
  if ((rc != 0)); then
    echo "stack: up failed; stopping what it started (logs: $LOGS)" >&2
    stop_all
  fi
}

cmd_up() {
  local started=$SECONDS running
  running="$(count_running)"
  if ((running == ${#SERVICES[@]})) && [[ -f "$X402_STACK_DIR/stack.env" ]]; then
    use_ports recorded
    echo "stack: already up in $X402_STACK_DIR (anvil :$ANVIL_PORT, rpc proxy :$RPC_PROXY_PORT, moto :$MOTO_PORT)"
    return 0
  fi
  if ((running > 0)); then
    echo "stack: $X402_STACK_DIR has a half-started stack; stopping it first" >&2
    use_ports recorded
    stop_all
  fi

  use_ports environment
  local lanes="${X402_LANES:-2}" name port
  [[ "$lanes" =~ ^[1-9][0-9]*$ ]] || die "X402_LANES must be a positive integer, not '$lanes'"
  for name in ANVIL_PORT RPC_PROXY_PORT MOTO_PORT; do
    port="${!name}"
    [[ "$port" =~ ^[0-9]+$ ]] || die "$name must be a port number, not '$port'"
    if port_in_use "$port"; then
      die "port $port ($name) is already in use on 127.0.0.1; stop what holds it or set $name to a free port"
    fi
  done
  if [[ "$(printf '%s\n' "$ANVIL_PORT" "$RPC_PROXY_PORT" "$MOTO_PORT" | sort -u | wc -l)" != 3 ]]; then
    die "ANVIL_PORT, RPC_PROXY_PORT and MOTO_PORT must differ"
  fi

  bash "$INFRA/install.sh" --if-needed

  mkdir -p "$RUN" "$LOGS"
  rm -f "$X402_STACK_DIR/stack.env" "$X402_STACK_DIR/stack.json"
  printf 'ANVIL_PORT=%s\nRPC_PROXY_PORT=%s\nMOTO_PORT=%s\n' "$ANVIL_PORT" "$RPC_PROXY_PORT" "$MOTO_PORT" >"$RUN/ports.env"
  trap up_failed EXIT
  trap 'exit 130' INT TERM

  # anvil automines: every transaction is in a block by the time its hash is returned.
  start anvil "$INFRA/node_modules/.bin/anvil" \
    --host 127.0.0.1 --port "$ANVIL_PORT" --chain-id "$CHAIN_ID" --quiet
  start moto "$REPO/.local/venv/bin/python" -u "$STACK/moto/launch.py" "$MOTO_PORT"
  start rpc-proxy "$REPO/.local/venv/bin/python" -u "$STACK/rpc_counter.py" \
    "$RPC_PROXY_PORT" "http://127.0.0.1:$ANVIL_PORT"
  for name in "${SERVICES[@]}"; do wait_until_answers "$name"; done

  if ! X402_LANES="$lanes" "$REPO/.local/venv/bin/python" "$STACK/bootstrap.py" >"$LOGS/bootstrap.log" 2>&1; then
    tail -n 30 "$LOGS/bootstrap.log" >&2
    die "bootstrap failed (log above: $LOGS/bootstrap.log)"
  fi

  trap - EXIT INT TERM
  echo "stack: up in $((SECONDS - started))s: anvil :$ANVIL_PORT, rpc proxy :$RPC_PROXY_PORT, moto :$MOTO_PORT"
  echo "stack: environment in $X402_STACK_DIR/stack.env (and stack.json)"
}

cmd_down() {
  use_ports recorded
  stop_all
  echo "stack: down ($X402_STACK_DIR)"
}

cmd_status() {
  use_ports recorded
  local name pid state all_ok=0
  for name in "${SERVICES[@]}"; do
    pid="$(pid_of "$name")"
    if ! is_running "$name"; then
      state="not running"
      all_ok=1
    elif answers "$name"; then
      state="answers"
    else
      state="running, not answering"
      all_ok=1
    fi
    printf '%-10s %-12s 127.0.0.1:%-6s %s\n' "$name" "pid ${pid:--}" "$(port_of "$name")" "$state"
  done
  return "$all_ok"
}

cmd_env() {
  [[ -f "$X402_STACK_DIR/stack.env" ]] || die "no stack.env in $X402_STACK_DIR: run infra/stack/stack.sh up"
  (($(count_running) == ${#SERVICES[@]})) || die "the stack in $X402_STACK_DIR is not running: run infra/stack/stack.sh up"
  cat "$X402_STACK_DIR/stack.env"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) die "usage: infra/stack/stack.sh up|down|status|env" ;;
esac
