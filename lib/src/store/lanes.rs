//! Each signer lane's state, kept in its row of the lanes table beside its next nonce
//! (docs/settlement.md, "Lanes"): `funding → active → draining → retired`. `/settle` gives new
//! payments only to active lanes; the worker signs for every configured lane whatever its state,
//! so a draining lane's open payments finish.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};

use super::{conditional_update, fail, Store, StoreError};
use crate::clock::now_ms;

/// Where a lane is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LaneState {
    /// Configured, but its address may have no gas yet: no new payments. A lane with no row is
    /// here; replay (or an operator) makes it active once its balance is enough.
    Funding,
    /// Takes new payments. A row from before lanes had states (a nonce, no state) is active.
    Active,
    /// No new payments; its open payments finish.
    Draining,
    /// Drained: nothing open, nothing new; its key is kept, with whatever gas is left.
    Retired,
}

impl LaneState {
    pub const ALL: [LaneState; 4] = [
        LaneState::Funding,
        LaneState::Active,
        LaneState::Draining,
        LaneState::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LaneState::Funding => "funding",
            LaneState::Active => "active",
            LaneState::Draining => "draining",
            LaneState::Retired => "retired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        LaneState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The state a row says (pure): none is `funding`; a row without a state is `active`; a
    /// state this code does not know is `draining`, the one that sends nothing new and still
    /// finishes what is open.
    pub fn of_row(row: Option<&HashMap<String, AttributeValue>>) -> Self {
        match row.map(|r| r.get("state").and_then(|s| s.as_s().ok())) {
            None => LaneState::Funding,
            Some(None) => LaneState::Active,
            Some(Some(text)) => LaneState::parse(text).unwrap_or(LaneState::Draining),
        }
    }
}

impl Store {
    /// The states of `lanes`, in one read (up to 100 lanes, far more than a deployment has).
    pub async fn lane_states(
        &self,
        lanes: &[String],
    ) -> Result<HashMap<String, LaneState>, StoreError> {
        if lanes.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = lanes
            .iter()
            .map(|lane| HashMap::from([("lane".to_owned(), AttributeValue::S(lane.clone()))]))
            .collect();
        let wanted = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(fail("build BatchGetItem"))?;
        let read = self
            .client
            .batch_get_item()
            .request_items(&self.lanes, wanted)
            .send();
        let answer = Box::pin(read).await.map_err(fail("BatchGetItem"))?;
        if answer
            .unprocessed_keys
            .as_ref()
            .is_some_and(|u| !u.is_empty())
        {
            return Err(StoreError::new(
                "BatchGetItem",
                "DynamoDB left some lanes unread (throttled); try again",
            ));
        }
        let rows = answer
            .responses
            .and_then(|mut r| r.remove(&self.lanes))
            .unwrap_or_default();
        let by_lane: HashMap<&str, &HashMap<String, AttributeValue>> = rows
            .iter()
            .filter_map(|row| Some((row.get("lane")?.as_s().ok()?.as_str(), row)))
            .collect();
        Ok(lanes
            .iter()
            .map(|lane| {
                let state = LaneState::of_row(by_lane.get(lane.as_str()).copied());
                (lane.clone(), state)
            })
            .collect())
    }

    /// Moves a lane to `to` if it is now in one of `from`; whether it did.
    pub async fn set_lane_state(
        &self,
        lane: &str,
        from: &[LaneState],
        to: LaneState,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.lanes)
            .key("lane", AttributeValue::S(lane.to_owned()))
            .update_expression("SET #state = :to, state_changed_at = :now")
            .condition_expression(from_condition(from))
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":to", AttributeValue::S(to.as_str().to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now_ms().to_string()));
        for state in from {
            request = request.expression_attribute_values(
                format!(":{}", state.as_str()),
                AttributeValue::S(state.as_str().to_owned()),
            );
        }
        Ok(conditional_update(Box::pin(request.send()))
            .await?
            .is_some())
    }
}

/// The condition that the row is in one of `states`, as [`LaneState::of_row`] reads rows.
fn from_condition(states: &[LaneState]) -> String {
    let parts: Vec<String> = states
        .iter()
        .map(|state| match state {
            LaneState::Funding => "attribute_not_exists(lane) OR #state = :funding".to_owned(),
            LaneState::Active => {
                "(attribute_exists(lane) AND attribute_not_exists(#state)) OR #state = :active"
                    .to_owned()
            }
            other => format!("#state = :{}", other.as_str()),
        })
        .collect();
    match parts.is_empty() {
        true => "attribute_not_exists(lane) AND attribute_exists(lane)".to_owned(),
        false => parts.join(" OR "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_without_a_row_is_funding_and_a_row_without_a_state_is_active() {
        assert_eq!(LaneState::of_row(None), LaneState::Funding);
        let mut row = HashMap::from([
            ("lane".to_owned(), AttributeValue::S("k".into())),
            ("next_nonce".to_owned(), AttributeValue::N("7".into())),
        ]);
        assert_eq!(LaneState::of_row(Some(&row)), LaneState::Active);
        for state in LaneState::ALL {
            row.insert("state".into(), AttributeValue::S(state.as_str().into()));
            assert_eq!(LaneState::of_row(Some(&row)), state);
        }
        row.insert("state".into(), AttributeValue::S("paused".into()));
        assert_eq!(
            LaneState::of_row(Some(&row)),
            LaneState::Draining,
            "an unknown state sends nothing new and finishes what is open"
        );
    }

    #[test]
    fn each_network_has_its_own_nonce_in_a_lanes_row() {
        use crate::store::nonce_attribute;
        assert_eq!(nonce_attribute("eip155:8453"), "nonce#eip155:8453");
        assert_ne!(
            nonce_attribute("eip155:8453"),
            nonce_attribute("eip155:84532")
        );
        assert_ne!(
            nonce_attribute("eip155:8453"),
            "next_nonce",
            "not the old shared counter"
        );
    }

    #[test]
    fn the_condition_names_each_state_as_rows_are_read() {
        assert_eq!(
            from_condition(&[LaneState::Funding, LaneState::Draining]),
            "attribute_not_exists(lane) OR #state = :funding OR #state = :draining"
        );
        assert_eq!(
            from_condition(&[LaneState::Active]),
            "(attribute_exists(lane) AND attribute_not_exists(#state)) OR #state = :active"
        );
    }
}
