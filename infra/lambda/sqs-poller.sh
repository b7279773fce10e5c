#!/usr/bin/env bash
# Starts and stops infra/lambda/sqs_poller.py, the local stand-in for Lambda's SQS event source mapping:
# it feeds a queue's messages to a function running under infra/lambda/lambda-emulator.sh, as AWS would.
#
#   infra/lambda/sqs-poller.sh start FUNCTION [QUEUE_URL] [-- POLLER_ARGS...]
#   infra/lambda/sqs-poller.sh stop [FUNCTION]      # one poller, or all of them; safe to repeat
#   infra/lambda/sqs-poller.sh status
#
# QUEUE_URL defaults to X402_SETTLE_QUEUE_URL; POLLER_ARGS go to sqs_poller.py (--batch-size ...).
# Needs the stack up and the emulator started (it refuses to start otherwise). Reads
# $X402_STACK_DIR/stack.env for what the environment does not set. Env: X402_STACK_DIR, LAMBDA_PORT
# (9000). Pid file $X402_STACK_DIR/run/sqs-poller-FUNCTION.pid, log $X402_STACK_DIR/logs/sqs-poller-FUNCTION.log.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN="${X402_STACK_DIR:?set X402_STACK_DIR}/run"
LOGS="$X402_STACK_DIR/logs"
STOP_TIMEOUT_S=15 # a batch in flight is finished first; its invoke is bounded by the poller's invoke timeout

running() { # pid file -> true if that pid is a live sqs_poller.py
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q sqs_poller.py
}

stop_one() {
  local pidfile="$1" pid
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if running "$pidfile"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((STOP_TIMEOUT_S * 10))); do running "$pidfile" || break; sleep 0.1; done
    if running "$pidfile"; then
      echo "sqs-poller: pid $pid ignored TERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

stop() {
  local pidfile
  if [[ -n "${1:-}" ]]; then
    stop_one "$RUN/sqs-poller-$1.pid"
  else
    for pidfile in "$RUN"/sqs-poller-*.pid; do
      [[ -f "$pidfile" ]] && stop_one "$pidfile"
    done
  fi
  return 0
}

start() {
  local fn="${1:?usage: $0 start FUNCTION [QUEUE_URL] [-- POLLER_ARGS...]}" queue="" pidfile log
  shift
  if [[ $# -gt 0 && "$1" != "--" ]]; then queue="$1"; shift; fi
  [[ "${1:-}" == "--" ]] && shift
  if [[ -f "$X402_STACK_DIR/stack.env" ]]; then
    # The stack's values fill in only what the environment does not already say.
    while IFS='=' read -r key value; do
      [[ "$key" =~ ^[A-Z_][A-Z0-9_]*$ && -z "${!key:-}" ]] && export "$key=${value//\'/}"
    done <"$X402_STACK_DIR/stack.env"
  fi
  queue="${queue:-${X402_SETTLE_QUEUE_URL:-}}"
  [[ -n "$queue" ]] || { echo "sqs-poller: no queue URL (is the stack up? stack.env has X402_SETTLE_QUEUE_URL)" >&2; exit 1; }
  mkdir -p "$RUN" "$LOGS"
  pidfile="$RUN/sqs-poller-$fn.pid" log="$LOGS/sqs-poller-$fn.log"
  stop_one "$pidfile"
  "$REPO/.local/venv/bin/python" -u "$REPO/infra/lambda/sqs_poller.py" --queue-url "$queue" --function "$fn" \
    --invoke-url "http://127.0.0.1:${LAMBDA_PORT:-9000}" "$@" </dev/null >"$log" 2>&1 &
  echo $! >"$pidfile"
  # Ready once it has read the queue's attributes and logged "polling". A bad queue, function or
  # emulator address makes it exit at once, so the wait only ever covers a slow start: up to 120 s,
  # as on a loaded machine Python's start alone once passed 30 s (and 10 s before that), and a
  # stack that gave up on a poller still starting failed the whole test run.
  for _ in $(seq 1200); do
    grep -q '^sqs-poller: polling' "$log" && { echo "sqs-poller: $fn <- $queue (log: $log)"; return 0; }
    running "$pidfile" || break
    sleep 0.1
  done
  tail -5 "$log" >&2
  stop_one "$pidfile"
  echo "sqs-poller: $fn did not start (log: $log)" >&2
  exit 1
}

status() {
  local pidfile any=0
  for pidfile in "$RUN"/sqs-poller-*.pid; do
    [[ -f "$pidfile" ]] || continue
    any=1
    local fn="${pidfile##*/sqs-poller-}"
    fn="${fn%.pid}"
    if running "$pidfile"; then echo "sqs-poller $fn: pid $(cat "$pidfile"), running"; else echo "sqs-poller $fn: not running"; fi
  done
  ((any)) || echo "sqs-poller: none started"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "${1:-}" ;;
  status) status ;;
  *) echo "usage: $0 start FUNCTION [QUEUE_URL] [-- POLLER_ARGS...] | stop [FUNCTION] | status" >&2; exit 2 ;;
esac
