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

    /// The subset of Multicall3 used to batch diagnostic reads into one `eth_call`, and to deploy
    /// an ERC-6492 wallet and settle its payment in one transaction (`aggregate3`).
    #[derive(Debug)]
    interface IMulticall3 {
        struct Call { address target; bytes callData; }
        struct Call3 { address target; bool allowFailure; bytes callData; }
        struct Result { bool success; bytes returnData; }
        function tryAggregate(bool requireSuccess, Call[] calls) external payable returns (Result[] returnData);
        function aggregate3(Call3[] calls) external payable returns (Result[] returnData);
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

sol! {
    /// An ERC-20's allowance, which Permit2 needs from the payer before it can move the payer's tokens.
    #[derive(Debug)]
    interface IErc20 {
        function allowance(address owner, address spender) external view returns (uint256);
        function balanceOf(address account) external view returns (uint256);
    }

    /// Permit2's unordered nonces: bit `nonce & 0xff` of word `nonce >> 8` is set once used.
    #[derive(Debug)]
    interface IPermit2 {
        function nonceBitmap(address owner, uint256 wordPos) external view returns (uint256);
        error SignatureExpired(uint256 signatureDeadline);
        error InvalidAmount(uint256 maxAmount);
        error InvalidNonce();
        error InvalidSignatureLength();
        error InvalidSignature();
        error InvalidSigner();
        error InvalidContractSignature();
    }

    /// x402's exact Permit2 proxy: the spender the payer signs for, which forces the recipient
    /// (the witness's `to`) and the amount (all of what is permitted).
    #[derive(Debug)]
    interface IX402ExactPermit2Proxy {
        struct TokenPermissions { address token; uint256 amount; }
        struct PermitTransferFrom { TokenPermissions permitted; uint256 nonce; uint256 deadline; }
        struct Witness { address to; uint256 validAfter; }
        struct EIP2612Permit { uint256 value; uint256 deadline; bytes32 r; bytes32 s; uint8 v; }
        function settle(PermitTransferFrom permit, address owner, Witness witness, bytes signature) external;
        function settleWithPermit(EIP2612Permit permit2612, PermitTransferFrom permit, address owner, Witness witness, bytes signature) external;
        function PERMIT2() external view returns (address);
        error InvalidAmount();
        error InvalidOwner();
        error InvalidDestination();
        error PaymentTooEarly();
        error Permit2612AmountMismatch();
        error ReentrancyGuardReentrantCall();
    }

    /// x402's upto Permit2 proxy: like the exact one, but the payer signs a maximum and the
    /// facilitator (the witness's `facilitator`, who alone may call it) names the amount, at most
    /// that maximum.
    #[derive(Debug)]
    interface IX402UptoPermit2Proxy {
        struct TokenPermissions { address token; uint256 amount; }
        struct PermitTransferFrom { TokenPermissions permitted; uint256 nonce; uint256 deadline; }
        struct Witness { address to; address facilitator; uint256 validAfter; }
        struct EIP2612Permit { uint256 value; uint256 deadline; bytes32 r; bytes32 s; uint8 v; }
        function settle(PermitTransferFrom permit, uint256 amount, address owner, Witness witness, bytes signature) external;
        function settleWithPermit(EIP2612Permit permit2612, PermitTransferFrom permit, uint256 amount, address owner, Witness witness, bytes signature) external;
        function PERMIT2() external view returns (address);
        error InvalidAmount();
        error InvalidOwner();
        error InvalidDestination();
        error PaymentTooEarly();
        error Permit2612AmountMismatch();
        error AmountExceedsPermitted();
        error UnauthorizedFacilitator();
        error ReentrancyGuardReentrantCall();
    }
}

/// Multicall3's address, the same on every chain that has it (the local stack places it there).
pub const MULTICALL3: alloy::primitives::Address =
    alloy::primitives::address!("0xcA11bde05977b3631167028862bE2a173976CA11");

/// Uniswap's Permit2, at the same address on every chain (the local stack places a stand-in there).
pub const PERMIT2: alloy::primitives::Address =
    alloy::primitives::address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");

/// x402's exact Permit2 proxy, at its canonical (CREATE2) address: the only spender an `exact`
/// Permit2 payment may name.
pub const EXACT_PERMIT2_PROXY: alloy::primitives::Address =
    alloy::primitives::address!("0x402085c248EeA27D92E8b30b2C58ed07f9E20001");

/// x402's upto Permit2 proxy, at its canonical address: the only spender an `upto` payment may
/// name.
pub const UPTO_PERMIT2_PROXY: alloy::primitives::Address =
    alloy::primitives::address!("0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002");

/// Whether `calldata` is the `v, r, s` overload of `transferWithAuthorization`: a signature by the
/// payer's own key, which the token checks itself. The `bytes` overload may be a contract
/// wallet's, whose code the token runs to check it (and anything else is not a transfer of ours).
/// A Permit2 proxy's settlement can be either; `evm::permit2::signer::signed_by_key` tells them
/// apart, and answers for every settlement.
pub fn signed_by_key(calldata: &[u8]) -> bool {
    use alloy::sol_types::SolCall;
    let selector = calldata.get(..4);
    selector == Some(&IEip3009::transferWithAuthorization_0Call::SELECTOR[..])
}
