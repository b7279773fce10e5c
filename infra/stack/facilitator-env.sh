# Sourced, not run: exports the facilitator's configuration for a running local stack.
#
#   X402_STACK_DIR=... . infra/stack/facilitator-env.sh
#
# Reads the stack's stack.env and derives the variables the functions and the local server read
# (docs/configuration.md): the network served with its RPC (through the counting proxy) and its
# accepted tokens, and the lanes' KMS keys. Also writes them as a dotenv file,
# $X402_STACK_DIR/facilitator.env, for `cargo lambda watch --env-file`.

if [[ ! -f "${X402_STACK_DIR:?set X402_STACK_DIR}/stack.env" ]]; then
  echo "facilitator-env: no $X402_STACK_DIR/stack.env; start the stack first (bash infra/stack/stack.sh up)" >&2
  return 1
fi
set -a
# shellcheck source=/dev/null
. "$X402_STACK_DIR/stack.env"
# The EIP-3009 test USDC, and the EIP-2612 test token, which is paid through Permit2. `upto` is
# served, settled by the last lane (not the first, so that routing by the witness's address is
# what puts a payment on it). The test wallets' ERC-6492 factory is allowed, so a wallet not yet
# deployed can pay (the wallet is deployed when its payment settles).
X402_NETWORKS="[{\"network\":\"$X402_NETWORK\",\"rpcUrl\":\"$RPC_URL\",\"assets\":[\"$X402_TOKEN\",\"$X402_PERMIT_TOKEN\"],\"uptoFacilitator\":\"${X402_LANE_ADDRESSES##*,}\",\"eip6492AllowedFactories\":[\"$X402_ERC6492_FACTORY\"]}]"
RUST_LOG="${RUST_LOG:-info}"
# /settle signs a payment itself when its lane is free, as template.yaml deploys it
# (docs/settlement.md, "Signing in /settle"); a caller may set off to measure or test the queue path.
X402_SETTLE_SIGNS="${X402_SETTLE_SIGNS:-on}"
# Where a retired lane's gas may be swept on the local stack: an address nobody holds a key for.
X402_SWEEP_ADDRESSES="${X402_SWEEP_ADDRESSES:-0x5ee1000000000000000000000000000000005ee1}"
set +a
{
  for var in AWS_ENDPOINT_URL AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY X402_LANE_KEYS \
    X402_PAYMENTS_TABLE X402_LANES_TABLE X402_SETTLE_QUEUE_URL X402_SWEEP_ADDRESSES X402_SETTLE_SIGNS RUST_LOG; do
    printf '%s=%s\n' "$var" "${!var}"
  done
  # Switches a deployment may set, passed on when the caller set them (the load harness and the
  # stall hunt turn a lane's run on this way).
  for var in X402_LANE_RUNS; do
    if [[ -n "${!var:-}" ]]; then printf '%s=%s\n' "$var" "${!var}"; fi
  done
  # Single quotes keep the JSON's double quotes and commas as they are.
  printf "X402_NETWORKS='%s'\n" "$X402_NETWORKS"
} >"$X402_STACK_DIR/facilitator.env"
