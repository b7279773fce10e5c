#!/usr/bin/env bash
# The release figures of issue 7: builds the Lambda functions in release, then, on a fresh local
# stack, starts each release binary attached to cargo-lambda's runtime emulator several times
# (infra/load/coldstart.mjs: spawn → first answer, peak RSS), and rewrites the "Release builds"
# section of docs/benchmarks.md with each binary's size and those figures. Stops everything it
# started when it exits. Uses the load harness's ports: not at the same time as infra/load/run.sh.
#
#   bash infra/load/release.sh        # a few minutes of building, then about a minute
#
# Env (defaults): LOAD_BUILD (1; 0 measures target/release as it is), LOAD_COLDSTART_RUNS (7),
#   LOAD_RELEASE_STACK_DIR (.local/release-stack), LOAD_ANVIL_PORT (28545), LOAD_RPC_PROXY_PORT (28546),
#   LOAD_MOTO_PORT (25000), LOAD_LAMBDA_PORT (29000)
# Results: $LOAD_RELEASE_STACK_DIR/results/release-coldstart.json; logs in $LOAD_RELEASE_STACK_DIR/logs.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

export X402_STACK_DIR="${LOAD_RELEASE_STACK_DIR:-$REPO/.local/release-stack}"
export ANVIL_PORT="${LOAD_ANVIL_PORT:-28545}" RPC_PROXY_PORT="${LOAD_RPC_PROXY_PORT:-28546}" MOTO_PORT="${LOAD_MOTO_PORT:-25000}"
LAMBDA_PORT="${LOAD_LAMBDA_PORT:-29000}"
BIN_DIR="${CARGO_TARGET_DIR:-$REPO/target}/release"
SHOWN_BIN_DIR="${BIN_DIR#"$REPO"/}"
# The Lambda functions of functions/*, by name: what deploys.
FUNCTIONS=(verify supported settle settle-worker replay)
BUILD="cargo build --release --locked$(printf ' -p %s' "${FUNCTIONS[@]}")"
RUN="$X402_STACK_DIR/run" LOGS="$X402_STACK_DIR/logs" RESULTS="$X402_STACK_DIR/results"
LOAD="$REPO/infra/load"

# shellcheck source=infra/load/lib/common.sh
. "$LOAD/lib/common.sh"

cleanup() {
  set +e
  stop_pid release-lambda-emulator
  bash infra/stack/stack.sh down >/dev/null
  rm -rf "${X402_STACK_DIR:?}/bin"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "tools and release build"
bash infra/install.sh --if-needed
export PATH="$REPO/.local/venv/bin:$PATH" # cargo-lambda
[[ "${LOAD_BUILD:-1}" == 1 ]] && $BUILD
# Measure copies, as run.sh does: someone else's build must not swap them mid-run.
SNAPSHOT="$X402_STACK_DIR/bin"
mkdir -p "$SNAPSHOT"
for fn in "${FUNCTIONS[@]}"; do
  [[ -x "$BIN_DIR/$fn" ]] || { echo "release: $BIN_DIR/$fn is not built ($BUILD)" >&2; exit 1; }
  cp -p "$BIN_DIR/$fn" "$SNAPSHOT/$fn"
done
MEASURED="$(git rev-parse --short HEAD)"
if [[ -n "$(git status --porcelain -- lib functions Cargo.toml Cargo.lock)" ]]; then
  MEASURED="$MEASURED with uncommitted changes to the facilitator's sources"
fi
if [[ "${LOAD_BUILD:-1}" != 1 ]]; then
  # Not rebuilt: the binaries may be older than the commit; say when they were built.
  MEASURED="$MEASURED (binaries not rebuilt, built $(date -u -r "$BIN_DIR/verify" '+%Y-%m-%d %H:%M') UTC)"
fi

step "local stack (fresh) in $X402_STACK_DIR"
bash infra/stack/stack.sh down >/dev/null
bash infra/stack/stack.sh up
# shellcheck source=infra/stack/facilitator-env.sh
. infra/stack/facilitator-env.sh
mkdir -p "$RESULTS"

step "cold start under cargo-lambda's runtime emulator on :$LAMBDA_PORT"
start_runtime_emulator release-lambda-emulator "$LAMBDA_PORT"
wait_quiet
timeout 300 node "$LOAD/coldstart.mjs" --emulator-port "$LAMBDA_PORT" --bin-dir "$SNAPSHOT" --shown-bin-dir "$SHOWN_BIN_DIR" \
  --profile release --functions "$(IFS=,; echo "${FUNCTIONS[*]}")" --runs "${LOAD_COLDSTART_RUNS:-7}" \
  --events "$REPO/events" --logs "$LOGS" --out "$RESULTS/release-coldstart.json"
stop_pid release-lambda-emulator

step "docs/benchmarks.md"
node "$LOAD/render-release.mjs" --coldstart "$RESULTS/release-coldstart.json" --doc "$REPO/docs/benchmarks.md" \
  --commit "$MEASURED" --command "bash infra/load/release.sh" --build "$BUILD"
echo "release: wrote docs/benchmarks.md (Release builds); JSON in $RESULTS" >&2
