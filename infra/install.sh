#!/usr/bin/env bash
# Installs the local stack's tools inside the repository, at the versions pinned in
# infra/versions.env, so a fresh machine (CI's included) needs only python3, node and npm:
#   .local/venv              moto[server], cargo-lambda (with zig), cfn-lint; pinned
#                            down to every dependency by infra/python-constraints.txt
#   infra/node_modules       anvil, solc-js, viem, from infra/package-lock.json
# and, with --interop, what the SDK interop tests need (docs/interop.md; test.sh asks for it):
#   tests/interop/node_modules  the official x402 npm SDKs, v2 and v1, from tests/interop/package-lock.json
#   .local/interop-venv         PyPI x402, pinned down to every dependency by tests/interop/python/constraints.txt
#                               (its own venv: web3 and the SDK have no business in the stack's tools)
# Each part records a checksum of its inputs and is skipped while they are unchanged.
#
# Usage: infra/install.sh [--if-needed] [--interop]
#   --if-needed  print nothing and return at once when everything is current (stack.sh uses it)
#   --interop    also install the interop tests' SDKs
set -euo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$INFRA")"
VENV="$REPO/.local/venv"
NODE_DIR="$INFRA" # package.json, package-lock.json and node_modules: anvil, solc-js, viem
INTEROP_DIR="$REPO/tests/interop"
INTEROP_VENV="$REPO/.local/interop-venv"
if_needed=false interop=false
for arg in "$@"; do
  case "$arg" in
    --if-needed) if_needed=true ;;
    --interop) interop=true ;;
    *) echo "usage: infra/install.sh [--if-needed] [--interop]" >&2; exit 2 ;;
  esac
done
set -a
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$INFRA/versions.env"
set +a

checksum() { cat "$@" | sha256sum | cut -d' ' -f1; }
is_current() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

python_version="$(python3 -c 'import platform; print(platform.python_version())')"
venv_key="python $python_version $(checksum "$INFRA/versions.env" "$INFRA/python-constraints.txt")"
node_key="node $(node --version) $(checksum "$INFRA/versions.env" "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json")"
venv_stamp="$VENV/.x402-installed"
node_stamp="$NODE_DIR/node_modules/.x402-installed"
interop_node_key="node $(node --version) $(checksum "$INFRA/versions.env" "$INTEROP_DIR/package.json" "$INTEROP_DIR/package-lock.json")"
interop_venv_key="python $python_version $(checksum "$INFRA/versions.env" "$INTEROP_DIR/python/constraints.txt")"
interop_node_stamp="$INTEROP_DIR/node_modules/.x402-installed"
interop_venv_stamp="$INTEROP_VENV/.x402-installed"

interop_current() {
  ! $interop || { is_current "$interop_node_stamp" "$interop_node_key" && is_current "$interop_venv_stamp" "$interop_venv_key"; }
}
if $if_needed && is_current "$venv_stamp" "$venv_key" && is_current "$node_stamp" "$node_key" && interop_current; then
  exit 0
fi

# Two stacks started at once on a fresh machine must not install into the same venv together.
mkdir -p "$REPO/.local"
exec 9>"$REPO/.local/install.lock"
flock 9

# package.json repeats the npm pins (npm reads only it); refuses to go on if the two drifted.
# Usage: check_npm_pins DIR NAME=VERSION...
check_npm_pins() {
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const deps = require(process.argv[1]).dependencies;
    const drift = process.argv.slice(2).map((p) => p.split("=")).filter(([name, v]) => deps[name] !== v);
    for (const [name, v] of drift) console.error(`install: package.json has ${name} ${deps[name]}, versions.env says ${v}`);
    process.exit(drift.length ? 1 : 0);
  ' "$1/package.json" "${@:2}"
}

if ! is_current "$venv_stamp" "$venv_key"; then
  echo "install: Python tools into .local/venv" >&2
  # A venv cannot move to another interpreter: rebuild it when python3 changed.
  if [[ "$("$VENV/bin/python" -c 'import platform; print(platform.python_version())' 2>/dev/null)" != "$python_version" ]]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    -c "$INFRA/python-constraints.txt" \
    "moto[server]==$MOTO_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION" "cfn-lint==$CFN_LINT_VERSION"
  echo "$venv_key" >"$venv_stamp"
fi

if ! is_current "$node_stamp" "$node_key"; then
  echo "install: npm packages into infra/node_modules" >&2
  check_npm_pins "$NODE_DIR" "@foundry-rs/anvil-linux-amd64=$ANVIL_VERSION" "solc=$SOLC_VERSION" "viem=$VIEM_VERSION"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$node_key" >"$node_stamp"
fi

if $interop && ! is_current "$interop_node_stamp" "$interop_node_key"; then
  echo "install: x402 SDKs (npm) into tests/interop/node_modules" >&2
  check_npm_pins "$INTEROP_DIR" "@x402/core=$X402_JS_VERSION" "@x402/evm=$X402_JS_VERSION" \
    "@x402/express=$X402_JS_VERSION" "@x402/fetch=$X402_JS_VERSION" "x402-express=$X402_JS_V1_VERSION" \
    "x402-fetch=$X402_JS_V1_VERSION" "viem=$VIEM_VERSION"
  # No install scripts: the v1 SDK's wallet dependencies would build native add-ons nothing here uses.
  (cd "$INTEROP_DIR" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
  echo "$interop_node_key" >"$interop_node_stamp"
fi

if $interop && ! is_current "$interop_venv_stamp" "$interop_venv_key"; then
  echo "install: x402 SDK (PyPI) into .local/interop-venv" >&2
  if [[ "$("$INTEROP_VENV/bin/python" -c 'import platform; print(platform.python_version())' 2>/dev/null)" != "$python_version" ]]; then
    rm -rf "$INTEROP_VENV"
    python3 -m venv "$INTEROP_VENV"
  fi
  "$INTEROP_VENV/bin/pip" install --quiet --disable-pip-version-check \
    -c "$INTEROP_DIR/python/constraints.txt" "x402[evm,httpx]==$X402_PYTHON_VERSION"
  echo "$interop_venv_key" >"$interop_venv_stamp"
fi

node_version() { node -p "require('$NODE_DIR/node_modules/$1/package.json').version"; }
python_dist() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
printf '%-13s %s\n' \
  anvil "$("$NODE_DIR/node_modules/.bin/anvil" --version | sed -n 's/^anvil Version: //p')" \
  solc "$(node_version solc)" \
  viem "$(node_version viem)" \
  moto "$(python_dist moto)" \
  cargo-lambda "$("$VENV/bin/cargo-lambda" lambda --version | cut -d' ' -f2)" \
  cfn-lint "$(python_dist cfn-lint)" \
  zig "$("$VENV/bin/python-zig" version)" \
  python "$python_version" \
  node "$(node --version)"
if $interop; then
  interop_version() { node -p "require('$INTEROP_DIR/node_modules/$1/package.json').version"; }
  printf '%-13s %s\n' \
    "@x402/*" "$(interop_version @x402/core) (express $(interop_version @x402/express), fetch $(interop_version @x402/fetch), evm $(interop_version @x402/evm))" \
    "x402 v1 npm" "$(interop_version x402) (x402-express $(interop_version x402-express), x402-fetch $(interop_version x402-fetch))" \
    "x402 (PyPI)" "$("$INTEROP_VENV/bin/python" -c "import importlib.metadata as m; print(m.version('x402'))")"
fi
