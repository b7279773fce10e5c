//! The contract interfaces we call, declared once with alloy's `sol!` (no hand-written selectors).

#![allow(missing_docs, clippy::too_many_arguments)]

use alloy::sol;

sol! {
    /// EIP-3009 token (USDC-like), the functions and events the facilitator uses.
    #[derive(Debug)]
    interface IEip3009 {
        // Overload 0: a 65-byte ECDSA signature split into v, r, s.
        function transferWithAuthorization(
            address from, address to, uint256 value, uint256 validAfter, uint256 validBefore,
            bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        // Overload 1: any signature as bytes (ERC-1271 wallets, FiatToken v2.2).
        function transferWithAuthorization(
            address from, address to, uint256 value, uint256 validAfter, uint256 validBefore,
            bytes32 nonce, bytes signature) external;
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function name() external view returns (string);
        function version() external view returns (string);
        event Transfer(address indexed from, address indexed to, uint256 value);
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    }

    /// The subset of Multicall3 used to batch diagnostic reads into one `eth_call`.
    #[derive(Debug)]
    interface IMulticall3 {
        struct Call { address target; bytes callData; }
        struct Result { bool success; bytes returnData; }
        function tryAggregate(bool requireSuccess, Call[] calls) external payable returns (Result[] returnData);
    }
}

sol! {
    /// The EIP-3009 message a payer signs (typehash 0x7c7c6cdb…2267).
    #[derive(Debug)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// Multicall3's address, the same on every chain that has it (the local stack places it there).
pub const MULTICALL3: alloy::primitives::Address =
    alloy::primitives::address!("0xcA11bde05977b3631167028862bE2a173976CA11");

/// Whether `calldata` is the `v, r, s` overload of `transferWithAuthorization`: a signature by the
/// payer's own key, which the token checks itself. The `bytes` overload may be a contract wallet's,
/// whose code the token runs to check it (and anything else is not a transfer of ours).
pub fn signed_by_key(calldata: &[u8]) -> bool {
    use alloy::sol_types::SolCall;
    calldata.get(..4) == Some(&IEip3009::transferWithAuthorization_0Call::SELECTOR[..])
}
