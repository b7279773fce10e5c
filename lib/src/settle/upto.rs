//! What `/settle` does differently for an `upto` payment (docs/protocol-choices.md, "upto"):
//! the lane that settles it is the one whose address the payer's witness names, since the upto
//! proxy lets no one else call it; and a charge of zero settles nothing.

use alloy::primitives::Address;

use super::{Request, Settler, Terms};
use crate::{
    clock::unix_now,
    protocol::{Reason, SettleResponse},
};

impl Settler {
    /// Among the active lanes, the one whose address is `named` (the witness's facilitator):
    /// `None` if no active lane has it (its lane is draining, retired, or its key unreadable).
    pub(super) async fn lane_named(&self, named: Address, active: &[String]) -> Option<String> {
        for lane in active {
            match self.facilitator.lanes().address_of(lane).await {
                Ok(Some(address)) if address == named => return Some(lane.clone()),
                Ok(_) => {}
                Err(e) => tracing::warn!(lane, error = %e, "a lane's address is unknown"),
            }
        }
        None
    }

    /// An `upto` payment charged nothing: no transaction, as the spec says. It is still checked
    /// as `/verify` would check it at its maximum (time window, then the chain's batch, the
    /// reference's order), and a permit this facilitator already holds a record of (submitted for
    /// another amount) is not told `success`: that record's settlement is the permit's one.
    /// Nothing is written: a zero charge consumes nothing (docs/protocol-choices.md).
    pub(super) async fn settle_zero(&self, r: &Request<'_>) -> SettleResponse {
        let Terms::Permit2(checked) = &r.terms else {
            return r.unexpected("a zero charge is an upto payment's only");
        };
        if let Err(late) = r.terms.check_window(r.scheme, unix_now()) {
            return r.echo.failure(late, None);
        }
        let mut at_maximum = checked.clone();
        at_maximum.payment.amount = checked.payment.authorization.amount;
        match r.scheme.confirm_permit2_as(&at_maximum, None).await {
            Ok(_) => {}
            Err(e) if e.reason == Reason::UnexpectedVerifyError => return r.unexpected(e.message),
            Err(refused) => return r.echo.failure(refused, None),
        }
        match self.store.get(&r.id).await {
            Ok(Some(record)) => r.nonce_used(format!(
                "a payment with this Permit2 nonce was already submitted here charging {}; a permit settles once",
                record.value
            )),
            Ok(None) => r.echo.success(String::new()),
            Err(e) => r.unexpected(e.to_string()),
        }
    }
}
