#!/usr/bin/env bash
# Installs the AWS SAM CLI into its own venv, .local/sam-venv, at the version pinned in
# infra/versions.env and with every dependency pinned by infra/deploy/sam-constraints.txt. It has a venv of
# its own because it pins click (and others) differently from moto and cfn-lint in .local/venv,
# and it is large (~340 MB), so only what needs it installs it: infra/deploy/template-check.sh (for
# `sam validate --lint`) and whoever runs `sam build` / `sam deploy`. Skipped while the pins and
# python3 are unchanged (a checksum stamp, as infra/install.sh does).
#
#   bash infra/deploy/install-sam.sh [--if-needed]
#
# To bump: change SAM_CLI_VERSION, install without constraints into a scratch venv, and write its
# `pip freeze` to infra/deploy/sam-constraints.txt.
set -euo pipefail
DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
INFRA="$(dirname "$DEPLOY")"
REPO="$(dirname "$INFRA")"
VENV="$REPO/.local/sam-venv"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$INFRA/versions.env"

python_version="$(python3 -c 'import platform; print(platform.python_version())')"
key="python $python_version $(cat "$INFRA/versions.env" "$DEPLOY/sam-constraints.txt" | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.x402-installed"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
  [[ "${1:-}" == "--if-needed" ]] || "$VENV/bin/sam" --version
  exit 0
fi

mkdir -p "$REPO/.local"
exec 9>"$REPO/.local/install-sam.lock"
flock 9
echo "install: AWS SAM CLI $SAM_CLI_VERSION into .local/sam-venv" >&2
if [[ "$("$VENV/bin/python" -c 'import platform; print(platform.python_version())' 2>/dev/null)" != "$python_version" ]]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  -c "$DEPLOY/sam-constraints.txt" "aws-sam-cli==$SAM_CLI_VERSION"
echo "$key" >"$stamp"
"$VENV/bin/sam" --version
