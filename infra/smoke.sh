#!/usr/bin/env bash
# After a deploy: is the facilitator at <api-url> fit to serve? Checks /health, /supported (and the
# lanes' gas, with SMOKE_RPC_URL), and that /verify of a payment signed by a throwaway key answers
# 200 with a reason rather than a 5xx. Prints each check and a one-line verdict; exits 1 on failure.
#
#   bash infra/smoke.sh <api-url> [api-key]
#
# The key is an API key for /verify (api-keys.py create). For a network other than Base and Base
# Sepolia, say which token to sign for: SMOKE_ASSET, SMOKE_TOKEN_NAME, SMOKE_TOKEN_VERSION (the
# token's EIP-712 domain name and version). Needs node and infra's npm packages
# (bash infra/install.sh). CI runs it against the local server.
set -euo pipefail
INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec node "$INFRA/deploy/smoke.mjs" "$@"
