#!/usr/bin/env bash
# Installs the local stack's tools inside the repository, at the versions pinned in
# infra/versions.env, so a fresh machine (CI's included) needs only python3, node and npm:
#   .local/venv              moto[server], cargo-lambda (with zig), cfn-lint; pinned
#                            down to every dependency by infra/python-constraints.txt
#   infra/node/node_modules  anvil, solc-js, viem, from infra/node/package-lock.json
# Each half records a checksum of its inputs and is skipped while they are unchanged.
#
# Usage: infra/install.sh [--if-needed]
#   --if-needed  print nothing and return at once when everything is current (stack.sh uses it)
set -euo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$INFRA")"
VENV="$REPO/.local/venv"
NODE_DIR="$INFRA/node"
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

if [[ "${1:-}" == "--if-needed" ]] && is_current "$venv_stamp" "$venv_key" && is_current "$node_stamp" "$node_key"; then
  exit 0
fi

# Two stacks started at once on a fresh machine must not install into the same venv together.
mkdir -p "$REPO/.local"
exec 9>"$REPO/.local/install.lock"
flock 9

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
  echo "install: npm packages into infra/node/node_modules" >&2
  # package.json repeats the npm pins (npm reads only it); refuse to install if the two drifted.
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const deps = require(process.argv[1]).dependencies;
    const want = {
      "@foundry-rs/anvil-linux-amd64": process.env.ANVIL_VERSION,
      solc: process.env.SOLC_VERSION,
      viem: process.env.VIEM_VERSION,
    };
    const drift = Object.entries(want).filter(([name, v]) => deps[name] !== v);
    for (const [name, v] of drift) console.error(`install: package.json has ${name} ${deps[name]}, versions.env says ${v}`);
    process.exit(drift.length ? 1 : 0);
  ' "$NODE_DIR/package.json"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$node_key" >"$node_stamp"
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
