//! What a chain's answers mean: a node's JSON-RPC error answer classified as a verdict or not
//! ([`NODE_ANSWERS`]), and [`ChainError`], the chain not answering at all. [`super::rpc`] fails
//! over on what is not a verdict; [`super::chain`] hands verdicts to its callers.

use std::time::Duration;

/// The chain could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the chain RPC did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the chain RPC failed: {0}")]
    Transport(String),
    #[error("the chain RPC answered with an error: {0}")]
    Node(String),
    #[error(
        "the chain RPC URLs could not be read from Secrets Manager secret {secret}: {problem}"
    )]
    Secret { secret: String, problem: String },
}

/// A node's JSON-RPC error answer, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeError {
    pub(crate) kind: NodeAnswer,
    pub(crate) message: String,
}

/// What a node's JSON-RPC error answer says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAnswer {
    /// The EVM ran the call and it failed: a verdict on the payment.
    Revert,
    /// The transaction pool refused a transaction by its rules (nonce, fees, funds): a verdict on
    /// the transaction, not on the payment.
    Refused,
    /// Anything else: rate limits, unknown blocks, timeouts, a node's internal errors. Nodes send
    /// these with HTTP 200 too; they say nothing about the payment and are retried, on the next
    /// RPC URL first.
    Transient,
}

/// The error answers that are a verdict, by JSON-RPC code (`None`: any code) and a fragment of the
/// message (lowercase; `""`: any message). The first row that matches decides; an answer no row
/// matches is [`NodeAnswer::Transient`]. One table, so that what we treat as final is in one place
/// and each row has its unit test.
pub const NODE_ANSWERS: &[(Option<i64>, &str, NodeAnswer)] = &[
    // geth, anvil and reth answer a revert that carries revert data with code 3.
    (Some(3), "", NodeAnswer::Revert),
    // The same without data (geth -32000, erigon, besu), and nethermind's "VM execution error".
    (None, "execution reverted", NodeAnswer::Revert),
    (None, "vm execution error", NodeAnswer::Revert),
    (None, "invalid opcode", NodeAnswer::Revert),
    // eth_estimateGas: the call cannot finish within the node's gas cap.
    (None, "out of gas", NodeAnswer::Revert),
    (None, "gas required exceeds allowance", NodeAnswer::Revert),
    // eth_sendRawTransaction: the pool's rules.
    (None, "nonce too low", NodeAnswer::Refused),
    (None, "nonce too high", NodeAnswer::Refused),
    (None, "already known", NodeAnswer::Refused),
    (None, "known transaction", NodeAnswer::Refused),
    (None, "underpriced", NodeAnswer::Refused),
    (None, "insufficient funds", NodeAnswer::Refused),
    (None, "intrinsic gas too low", NodeAnswer::Refused),
    (None, "exceeds block gas limit", NodeAnswer::Refused),
    (None, "less than block base fee", NodeAnswer::Refused),
];

/// Classifies a node's error answer by [`NODE_ANSWERS`].
pub fn node_answer(code: i64, message: &str) -> NodeAnswer {
    let message = message.to_ascii_lowercase();
    NODE_ANSWERS
        .iter()
        .find(|(c, fragment, _)| c.is_none_or(|c| c == code) && message.contains(fragment))
        .map(|(_, _, answer)| *answer)
        .unwrap_or(NodeAnswer::Transient)
}

#[cfg(test)]
mod tests {
    use super::{node_answer, NodeAnswer::*, NODE_ANSWERS};

    /// One case per row of the table, as nodes really word them, each decided by its own row.
    #[test]
    fn every_row_of_the_table_decides_its_own_answer() {
        let cases = [
            (
                3,
                "execution reverted: EIP3009: authorization is used or canceled",
                Revert,
            ),
            (-32000, "execution reverted", Revert),
            (-32015, "VM execution error.", Revert),
            (-32000, "invalid opcode: INVALID", Revert),
            (-32000, "out of gas", Revert),
            (-32000, "gas required exceeds allowance (30000000)", Revert),
            (-32000, "nonce too low: next nonce 5, tx nonce 4", Refused),
            (-32000, "nonce too high", Refused),
            (-32000, "already known", Refused),
            (-32000, "known transaction: 0xabc", Refused),
            (-32000, "replacement transaction underpriced", Refused),
            (
                -32000,
                "insufficient funds for gas * price + value",
                Refused,
            ),
            (-32000, "intrinsic gas too low", Refused),
            (-32000, "exceeds block gas limit", Refused),
            (-32000, "max fee per gas less than block base fee", Refused),
        ];
        assert_eq!(cases.len(), NODE_ANSWERS.len(), "a case for every row");
        for (row, (code, message, expected)) in NODE_ANSWERS.iter().zip(cases) {
            assert_eq!(node_answer(code, message), expected, "{message}");
            let first = NODE_ANSWERS
                .iter()
                .position(|(c, f, _)| {
                    c.is_none_or(|c| c == code) && message.to_ascii_lowercase().contains(f)
                })
                .map(|i| &NODE_ANSWERS[i]);
            assert_eq!(first, Some(row), "{message} is decided by its own row");
        }
    }

    /// Errors that nodes and providers send with HTTP 200 and that say nothing about the payment.
    #[test]
    fn rate_limits_unknown_blocks_and_internal_errors_are_transient() {
        for (code, message) in [
            (-32005, "rate limit exceeded"),
            (429, "Too Many Requests"),
            (-32000, "header not found"),
            (-32001, "resource not found"),
            (-32603, "internal error"),
            (-32000, "request timed out"),
            (-32000, "missing trie node abc (path )"),
            (-32602, "unknown block"),
            (-32000, "upstream connect error"),
        ] {
            assert_eq!(node_answer(code, message), Transient, "{message}");
        }
    }
}
