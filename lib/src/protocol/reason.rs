//! The x402 reason strings we answer with, as one enum so that a typo cannot reach the wire.
//!
//! The strings are the reference SDKs' (x402-protocol.md §5). Where the reference implementations
//! disagree we follow the protocol reference's recommendation: the spec's
//! `invalid_exact_evm_payload_authorization_value_mismatch` for a value mismatch, and the spec's
//! `invalid_x402_version` / `unsupported_scheme` / `invalid_network` for routing failures.

use serde::{Serialize, Serializer};

/// Why a payment is invalid or a settlement failed, exactly as the official SDKs spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // Envelope and routing.
    InvalidPayload,
    InvalidPaymentRequirements,
    InvalidX402Version,
    UnsupportedScheme,
    InvalidNetwork,
    UnexpectedVerifyError,
    UnexpectedSettleError,
    UnsupportedPayloadType,
    // EVM exact, EIP-3009.
    InvalidExactEvmScheme,
    InvalidExactEvmNetworkMismatch,
    InvalidExactEvmMissingEip712Domain,
    InvalidExactEvmRecipientMismatch,
    InvalidExactEvmSignature,
    InvalidExactEvmPayload,
    ValidBefore,
    ValidAfter,
    ValueMismatch,
    UndeployedSmartWallet,
    Eip6492FactoryNotAllowed,
    TokenNameMismatch,
    TokenVersionMismatch,
    Eip3009NotSupported,
    NonceAlreadyUsed,
    InsufficientBalance,
    SimulationFailed,
    TransactionFailed,
    TransferEventMismatch,
    SettlementPending,
    InvalidTransactionState,
    // EVM exact, Permit2 (the exact Permit2 proxy).
    Permit2InvalidSpender,
    Permit2RecipientMismatch,
    Permit2DeadlineExpired,
    Permit2NotYetValid,
    Permit2AmountMismatch,
    Permit2TokenMismatch,
    Permit2InvalidSignature,
    Permit2AllowanceRequired,
    Permit2InsufficientBalance,
    Permit2InvalidNonce,
    Permit2ProxyNotDeployed,
    Permit2SimulationFailed,
    // EVM exact, Permit2 with the eip2612GasSponsoring extension.
    InvalidEip2612ExtensionFormat,
    Eip2612FromMismatch,
    Eip2612AssetMismatch,
    Eip2612SpenderNotPermit2,
    Eip2612DeadlineExpired,
    Permit2612AmountMismatch,
    // EVM upto (the upto Permit2 proxy; its Permit2 checks share the reasons above).
    UptoInvalidScheme,
    UptoNetworkMismatch,
    UptoFacilitatorMismatch,
    UptoSettlementExceedsAmount,
    UptoAmountExceedsPermitted,
    UptoUnauthorizedFacilitator,
    // The payment-identifier extension (no SDK defines these; docs/protocol-choices.md).
    InvalidPaymentIdentifier,
    PaymentIdentifierRequired,
    PaymentIdentifierConflict,
}

impl Reason {
    /// The wire string: one arm per reason, so longer than 60 lines as the reference's list is.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidPayload => "invalid_payload",
            Reason::InvalidPaymentRequirements => "invalid_payment_requirements",
            Reason::InvalidX402Version => "invalid_x402_version",
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::InvalidNetwork => "invalid_network",
            Reason::UnexpectedVerifyError => "unexpected_verify_error",
            Reason::UnexpectedSettleError => "unexpected_settle_error",
            Reason::UnsupportedPayloadType => "unsupported_payload_type",
            Reason::InvalidExactEvmScheme => "invalid_exact_evm_scheme",
            Reason::InvalidExactEvmNetworkMismatch => "invalid_exact_evm_network_mismatch",
            Reason::InvalidExactEvmMissingEip712Domain => "invalid_exact_evm_missing_eip712_domain",
            Reason::InvalidExactEvmRecipientMismatch => "invalid_exact_evm_recipient_mismatch",
            Reason::InvalidExactEvmSignature => "invalid_exact_evm_signature",
            Reason::InvalidExactEvmPayload => "invalid_exact_evm_payload",
            Reason::ValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
            Reason::ValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            Reason::ValueMismatch => "invalid_exact_evm_payload_authorization_value_mismatch",
            Reason::UndeployedSmartWallet => "invalid_exact_evm_payload_undeployed_smart_wallet",
            Reason::Eip6492FactoryNotAllowed => "eip6492_factory_not_allowed",
            Reason::TokenNameMismatch => "invalid_exact_evm_token_name_mismatch",
            Reason::TokenVersionMismatch => "invalid_exact_evm_token_version_mismatch",
            Reason::Eip3009NotSupported => "invalid_exact_evm_eip3009_not_supported",
            Reason::NonceAlreadyUsed => "invalid_exact_evm_nonce_already_used",
            Reason::InsufficientBalance => "invalid_exact_evm_insufficient_balance",
            Reason::SimulationFailed => "invalid_exact_evm_transaction_simulation_failed",
            Reason::TransactionFailed => "invalid_exact_evm_transaction_failed",
            Reason::TransferEventMismatch => "invalid_exact_evm_transfer_event_mismatch",
            Reason::SettlementPending => "settlement_pending",
            Reason::InvalidTransactionState => "invalid_transaction_state",
            Reason::Permit2InvalidSpender => "invalid_permit2_spender",
            Reason::Permit2RecipientMismatch => "invalid_permit2_recipient_mismatch",
            Reason::Permit2DeadlineExpired => "permit2_deadline_expired",
            Reason::Permit2NotYetValid => "permit2_not_yet_valid",
            Reason::Permit2AmountMismatch => "permit2_amount_mismatch",
            Reason::Permit2TokenMismatch => "permit2_token_mismatch",
            Reason::Permit2InvalidSignature => "invalid_permit2_signature",
            Reason::Permit2AllowanceRequired => "permit2_allowance_required",
            Reason::Permit2InsufficientBalance => "permit2_insufficient_balance",
            Reason::Permit2InvalidNonce => "permit2_invalid_nonce",
            Reason::Permit2ProxyNotDeployed => "permit2_proxy_not_deployed",
            Reason::Permit2SimulationFailed => "permit2_simulation_failed",
            Reason::InvalidEip2612ExtensionFormat => "invalid_eip2612_extension_format",
            Reason::Eip2612FromMismatch => "eip2612_from_mismatch",
            Reason::Eip2612AssetMismatch => "eip2612_asset_mismatch",
            Reason::Eip2612SpenderNotPermit2 => "eip2612_spender_not_permit2",
            Reason::Eip2612DeadlineExpired => "eip2612_deadline_expired",
            Reason::Permit2612AmountMismatch => "permit2_2612_amount_mismatch",
            Reason::UptoInvalidScheme => "invalid_upto_evm_scheme",
            Reason::UptoNetworkMismatch => "invalid_upto_evm_network_mismatch",
            Reason::UptoFacilitatorMismatch => "upto_facilitator_mismatch",
            Reason::UptoSettlementExceedsAmount => {
                "invalid_upto_evm_payload_settlement_exceeds_amount"
            }
            Reason::UptoAmountExceedsPermitted => "upto_amount_exceeds_permitted",
            Reason::UptoUnauthorizedFacilitator => "upto_unauthorized_facilitator",
            Reason::InvalidPaymentIdentifier => "invalid_payment_identifier",
            Reason::PaymentIdentifierRequired => "payment_identifier_required",
            Reason::PaymentIdentifierConflict => "payment_identifier_conflict",
        }
    }
}

impl Reason {
    /// Every reason, for reading one back from storage.
    pub const ALL: [Reason; 56] = [
        Reason::InvalidPayload,
        Reason::InvalidPaymentRequirements,
        Reason::InvalidX402Version,
        Reason::UnsupportedScheme,
        Reason::InvalidNetwork,
        Reason::UnexpectedVerifyError,
        Reason::UnexpectedSettleError,
        Reason::UnsupportedPayloadType,
        Reason::InvalidExactEvmScheme,
        Reason::InvalidExactEvmNetworkMismatch,
        Reason::InvalidExactEvmMissingEip712Domain,
        Reason::InvalidExactEvmRecipientMismatch,
        Reason::InvalidExactEvmSignature,
        Reason::InvalidExactEvmPayload,
        Reason::ValidBefore,
        Reason::ValidAfter,
        Reason::ValueMismatch,
        Reason::UndeployedSmartWallet,
        Reason::Eip6492FactoryNotAllowed,
        Reason::TokenNameMismatch,
        Reason::TokenVersionMismatch,
        Reason::Eip3009NotSupported,
        Reason::NonceAlreadyUsed,
        Reason::InsufficientBalance,
        Reason::SimulationFailed,
        Reason::TransactionFailed,
        Reason::TransferEventMismatch,
        Reason::SettlementPending,
        Reason::InvalidTransactionState,
        Reason::Permit2InvalidSpender,
        Reason::Permit2RecipientMismatch,
        Reason::Permit2DeadlineExpired,
        Reason::Permit2NotYetValid,
        Reason::Permit2AmountMismatch,
        Reason::Permit2TokenMismatch,
        Reason::Permit2InvalidSignature,
        Reason::Permit2AllowanceRequired,
        Reason::Permit2InsufficientBalance,
        Reason::Permit2InvalidNonce,
        Reason::Permit2ProxyNotDeployed,
        Reason::Permit2SimulationFailed,
        Reason::InvalidEip2612ExtensionFormat,
        Reason::Eip2612FromMismatch,
        Reason::Eip2612AssetMismatch,
        Reason::Eip2612SpenderNotPermit2,
        Reason::Eip2612DeadlineExpired,
        Reason::Permit2612AmountMismatch,
        Reason::UptoInvalidScheme,
        Reason::UptoNetworkMismatch,
        Reason::UptoFacilitatorMismatch,
        Reason::UptoSettlementExceedsAmount,
        Reason::UptoAmountExceedsPermitted,
        Reason::UptoUnauthorizedFacilitator,
        Reason::InvalidPaymentIdentifier,
        Reason::PaymentIdentifierRequired,
        Reason::PaymentIdentifierConflict,
    ];

    /// The reason with this wire string, if any.
    pub fn from_wire(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A refusal: the reason for the wire and a sentence for the operator (`invalidMessage` /
/// `errorMessage`) that says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}
