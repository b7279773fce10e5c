//! Metrics as CloudWatch Embedded Metric Format (EMF): one JSON line on stdout per observation,
//! which Lambda ships to CloudWatch Logs and CloudWatch turns into metrics. No SDK call, no extra
//! IAM permission, nothing to flush: a line written is a metric recorded.
//!
//! Every metric the facilitator emits is named by one function here, so the full list (and what
//! the alarms in `template.yaml` read) is in one place; docs/runbook.md describes each.
//! Dimensions stay low-cardinality on purpose: a network is one of the configured CAIP-2 ids (or
//! `other`), an outcome one of a few fixed words; anything finer (a reason, a lane address) rides
//! along as a plain property, searchable in Logs Insights but not a metric dimension, except the
//! lane, of which there are at most a handful.
//!
//! The namespace is `X402_METRICS_NAMESPACE` (default `X402Facilitator`), read once.

use std::{io::Write, sync::OnceLock, time::Duration};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// Where the namespace comes from (docs/configuration.md).
pub const NAMESPACE_VAR: &str = "X402_METRICS_NAMESPACE";
const DEFAULT_NAMESPACE: &str = "X402Facilitator";

/// The network dimension for a payment whose network this deployment does not serve: keeps an
/// attacker's made-up network names out of the metric space.
pub const OTHER_NETWORK: &str = "other";

/// CloudWatch units used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::None => "None",
        }
    }
}

/// What `/verify` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    Valid,
    Invalid,
    /// 400/413: not a usable request.
    Malformed,
}

/// What `/settle` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOutcome {
    Success,
    /// `settlement_pending`: broadcast, not mined by the deadline.
    Pending,
    Failure,
    /// 400/413: not a usable request.
    Malformed,
}

impl VerifyOutcome {
    fn as_str(self) -> &'static str {
        match self {
            VerifyOutcome::Valid => "valid",
            VerifyOutcome::Invalid => "invalid",
            VerifyOutcome::Malformed => "malformed",
        }
    }
}

impl SettleOutcome {
    fn as_str(self) -> &'static str {
        match self {
            SettleOutcome::Success => "success",
            SettleOutcome::Pending => "pending",
            SettleOutcome::Failure => "failure",
            SettleOutcome::Malformed => "malformed",
        }
    }
}

/// `VerifyCount` and `VerifyLatency`, by (Network, Outcome) and by Outcome.
pub fn verify(network: &str, outcome: VerifyOutcome, reason: Option<&str>, latency: Duration) {
    emit(&Observation {
        dimension_sets: &[&["Network", "Outcome"], &["Outcome"]],
        dimensions: &[("Network", network), ("Outcome", outcome.as_str())],
        metrics: &[
            ("VerifyCount", Unit::Count, 1.0),
            ("VerifyLatency", Unit::Milliseconds, millis(latency)),
        ],
        properties: &[("Reason", reason)],
    });
}

/// `SettleCount` and `SettleLatency`, by (Network, Outcome) and by Outcome. The settle failure
/// rate alarm reads `SettleCount` by Outcome.
pub fn settle(network: &str, outcome: SettleOutcome, reason: Option<&str>, latency: Duration) {
    emit(&Observation {
        dimension_sets: &[&["Network", "Outcome"], &["Outcome"]],
        dimensions: &[("Network", network), ("Outcome", outcome.as_str())],
        metrics: &[
            ("SettleCount", Unit::Count, 1.0),
            ("SettleLatency", Unit::Milliseconds, millis(latency)),
        ],
        properties: &[("Reason", reason)],
    });
}

/// `GasUsed` by a mined settlement transaction, by Network.
pub fn gas_used(network: &str, gas: u64) {
    emit(&Observation {
        dimension_sets: &[&["Network"]],
        dimensions: &[("Network", network)],
        // Gas is a count of units, not a CloudWatch unit; u64 → f64 is exact below 2^53.
        metrics: &[("GasUsed", Unit::None, gas as f64)],
        properties: &[],
    });
}

/// `FeeCapReached`: a fee bump was due but would have passed the network's `maxFeePerGas`, so the
/// transaction waits as it is. Sustained, it means the market is above what a settlement may cost.
pub fn fee_cap_reached(network: &str) {
    emit(&Observation {
        dimension_sets: &[&["Network"], &[]],
        dimensions: &[("Network", network)],
        metrics: &[("FeeCapReached", Unit::Count, 1.0)],
        properties: &[],
    });
}

/// `PayerRefused`: a contract-wallet payer reached its limit of settlements that passed simulation
/// and reverted on chain, and its contract-wallet payments are now refused for a while. Each is a
/// wallet that cost the lanes gas; several are an attack, or a wallet vendor's bug.
pub fn payer_refused(network: &str) {
    emit(&Observation {
        dimension_sets: &[&["Network"], &[]],
        dimensions: &[("Network", network)],
        metrics: &[("PayerRefused", Unit::Count, 1.0)],
        properties: &[],
    });
}

/// `KeyLimited`: a request answered 429 because its API key was over its rate limit, by Route.
pub fn key_limited(route: &str) {
    emit(&Observation {
        dimension_sets: &[&["Route"]],
        dimensions: &[("Route", route)],
        metrics: &[("KeyLimited", Unit::Count, 1.0)],
        properties: &[],
    });
}

/// `KmsSignLatency`: one KMS `Sign` call, by Outcome (`ok` or `error`).
pub fn kms_sign(latency: Duration, ok: bool) {
    emit(&Observation {
        dimension_sets: &[&["Outcome"]],
        dimensions: &[("Outcome", if ok { "ok" } else { "error" })],
        metrics: &[("KmsSignLatency", Unit::Milliseconds, millis(latency))],
        properties: &[],
    });
}

/// `LaneGasBalance`: a lane's native balance (ETH on Base) on a network, by (Network, Lane) and
/// with no dimension at all, so one alarm on the minimum covers every lane on every network.
pub fn lane_balance(network: &str, lane: &str, balance: f64) {
    emit(&Observation {
        dimension_sets: &[&["Network", "Lane"], &[]],
        dimensions: &[("Network", network), ("Lane", lane)],
        metrics: &[("LaneGasBalance", Unit::None, balance)],
        properties: &[],
    });
}

/// `RpcUrlSetAside`: one of a network's RPC URLs got no usable answer (a timeout, a dropped
/// connection, HTTP 5xx/429/401/403, a node's internal error) and is set aside for a while; the
/// call went on to the next URL. The URL (scheme, host and port only) and why ride along as
/// properties. Steady on a network with one URL, it is an RPC outage (docs/runbook.md).
pub fn rpc_url_set_aside(network: &str, url: &str, why: &str) {
    emit(&Observation {
        dimension_sets: &[&["Network"], &[]],
        dimensions: &[("Network", network)],
        metrics: &[("RpcUrlSetAside", Unit::Count, 1.0)],
        properties: &[("Url", Some(url)), ("Why", Some(why))],
    });
}

/// `OldestOpenPaymentAge`: seconds since the oldest payment that is not terminal was created
/// (0 when there is none), so that fee bumps, which change a record, never reset it. The
/// "payments pending too long" alarm reads its maximum.
pub fn oldest_open_payment(age: Duration) {
    emit(&Observation {
        dimension_sets: &[&[]],
        dimensions: &[],
        metrics: &[("OldestOpenPaymentAge", Unit::Seconds, age.as_secs_f64())],
        properties: &[],
    });
}

/// `ReplayRecords`: what one replay run did, by Action (`examined`, `settled`, `requeued`, …: the
/// summary's counters, whatever replay adds to them later). Any serialisable summary of counters,
/// so that this module depends on nothing it reports on.
pub fn replay_run(summary: &impl serde::Serialize) {
    let Ok(Value::Object(fields)) = serde_json::to_value(summary) else {
        return;
    };
    for (action, count) in fields {
        if let Some(count) = count.as_u64() {
            emit(&Observation {
                dimension_sets: &[&["Action"]],
                dimensions: &[("Action", action.as_str())],
                metrics: &[("ReplayRecords", Unit::Count, count as f64)],
                properties: &[],
            });
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One EMF record: metrics that share their dimensions.
struct Observation<'a> {
    /// Each inner list is one set of dimension names CloudWatch aggregates by; `[]` is "no dimension".
    dimension_sets: &'a [&'a [&'a str]],
    dimensions: &'a [(&'a str, &'a str)],
    metrics: &'a [(&'a str, Unit, f64)],
    /// Extra fields for Logs Insights; not metrics. `None` leaves the field out.
    properties: &'a [(&'a str, Option<&'a str>)],
}

fn emit(observation: &Observation<'_>) {
    let line = render(namespace(), crate::clock::now_ms(), observation);
    // One write of the whole line, so it never interleaves with a log line from another thread.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
}

/// The EMF document, as one line ending in `\n`. Written straight from the borrowed observation
/// (no `serde_json::Value` tree: this runs once per request, and building the tree cost more than
/// the rest of the line), with the keys in sorted order at every level, as a JSON object map writes
/// them, so the line is the same as before byte for byte.
fn render(namespace: &str, timestamp_ms: u64, o: &Observation<'_>) -> String {
    let aws = Aws {
        cloud_watch_metrics: [Directive {
            dimensions: o.dimension_sets,
            metrics: MetricDefs(o.metrics),
            namespace,
        }],
        timestamp: timestamp_ms,
    };
    let mut fields: Vec<(&str, Field<'_>)> =
        Vec::with_capacity(1 + o.dimensions.len() + o.metrics.len() + o.properties.len());
    fields.push(("_aws", Field::Aws(&aws)));
    fields.extend(
        o.dimensions
            .iter()
            .map(|(name, value)| (*name, Field::Text(value))),
    );
    // JSON has no NaN or infinity; CloudWatch would drop the record. Zero is the honest floor.
    fields.extend(o.metrics.iter().map(|(name, _, value)| {
        (
            *name,
            Field::Number(if value.is_finite() { *value } else { 0.0 }),
        )
    }));
    fields.extend(
        o.properties
            .iter()
            .filter_map(|(name, value)| Some((*name, Field::Text(value.as_ref()?)))),
    );
    // Sorted, and a name given twice keeps its last value (a stable sort keeps the order given).
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let mut unique: Vec<(&str, Field<'_>)> = Vec::with_capacity(fields.len());
    for field in fields {
        match unique.last_mut() {
            Some(last) if last.0 == field.0 => *last = field,
            _ => unique.push(field),
        }
    }
    let mut line = serde_json::to_string(&Fields(&unique)).unwrap_or_default();
    line.push('\n');
    line
}

/// The `_aws` member: the metric directive CloudWatch reads. Fields in sorted order.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Aws<'a> {
    cloud_watch_metrics: [Directive<'a>; 1],
    timestamp: u64,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Directive<'a> {
    dimensions: &'a [&'a [&'a str]],
    metrics: MetricDefs<'a>,
    namespace: &'a str,
}

/// `[{"Name": …, "Unit": …}, …]` for the observation's metrics.
struct MetricDefs<'a>(&'a [(&'a str, Unit, f64)]);

impl Serialize for MetricDefs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Def<'a> {
            name: &'a str,
            unit: &'a str,
        }
        serializer.collect_seq(self.0.iter().map(|(name, unit, _)| Def {
            name,
            unit: unit.as_str(),
        }))
    }
}

/// One top-level member of the EMF line.
#[derive(Clone, Copy)]
enum Field<'a> {
    Aws(&'a Aws<'a>),
    Text(&'a str),
    Number(f64),
}

struct Fields<'a>(&'a [(&'a str, Field<'a>)]);

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, field) in self.0 {
            match field {
                Field::Aws(aws) => map.serialize_entry(name, aws)?,
                Field::Text(text) => map.serialize_entry(name, text)?,
                Field::Number(number) => map.serialize_entry(name, number)?,
            }
        }
        map.end()
    }
}

fn namespace() -> &'static str {
    static NAMESPACE: OnceLock<String> = OnceLock::new();
    NAMESPACE.get_or_init(|| {
        std::env::var(NAMESPACE_VAR)
            .ok()
            .map(|n| n.trim().to_owned())
            .filter(|n| valid_namespace(n))
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
    })
}

/// CloudWatch's rule: 1–255 characters, no leading colon, and not the reserved `AWS/` prefix.
fn valid_namespace(n: &str) -> bool {
    !n.is_empty() && n.len() <= 255 && !n.starts_with(':') && !n.starts_with("AWS/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(o: &Observation<'_>) -> Value {
        let line = render("X402Test", 1_795_262_400_000, o);
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        serde_json::from_str(&line).unwrap_or_default()
    }

    #[test]
    fn a_settle_record_is_emf_with_both_dimension_sets() {
        let o = Observation {
            dimension_sets: &[&["Network", "Outcome"], &["Outcome"]],
            dimensions: &[("Network", "eip155:84532"), ("Outcome", "failure")],
            metrics: &[
                ("SettleCount", Unit::Count, 1.0),
                ("SettleLatency", Unit::Milliseconds, 812.5),
            ],
            properties: &[("Reason", Some("invalid_transaction_state"))],
        };
        assert_eq!(
            parsed(&o),
            json!({
                "_aws": {
                    "Timestamp": 1_795_262_400_000u64,
                    "CloudWatchMetrics": [{
                        "Namespace": "X402Test",
                        "Dimensions": [["Network", "Outcome"], ["Outcome"]],
                        "Metrics": [
                            {"Name": "SettleCount", "Unit": "Count"},
                            {"Name": "SettleLatency", "Unit": "Milliseconds"}
                        ]
                    }]
                },
                "Network": "eip155:84532",
                "Outcome": "failure",
                "SettleCount": 1.0,
                "SettleLatency": 812.5,
                "Reason": "invalid_transaction_state"
            })
        );
    }

    /// The exact line, keys sorted at every level: what the `Value`-tree rendering this replaced
    /// wrote, so nothing that reads the logs sees a difference.
    #[test]
    fn a_verify_record_is_written_exactly_as_before() {
        let o = Observation {
            dimension_sets: &[&["Network", "Outcome"], &["Outcome"]],
            dimensions: &[("Network", "eip155:84532"), ("Outcome", "valid")],
            metrics: &[
                ("VerifyCount", Unit::Count, 1.0),
                ("VerifyLatency", Unit::Milliseconds, 0.8125),
            ],
            properties: &[("Reason", None)],
        };
        assert_eq!(
            render("X402Test", 1_795_262_400_000, &o),
            concat!(
                r#"{"Network":"eip155:84532","Outcome":"valid","VerifyCount":1.0,"VerifyLatency":0.8125,"#,
                r#""_aws":{"CloudWatchMetrics":[{"Dimensions":[["Network","Outcome"],["Outcome"]],"#,
                r#""Metrics":[{"Name":"VerifyCount","Unit":"Count"},{"Name":"VerifyLatency","Unit":"Milliseconds"}],"#,
                r#""Namespace":"X402Test"}],"Timestamp":1795262400000}}"#,
                "\n"
            )
        );
    }

    #[test]
    fn no_dimension_is_an_empty_set_and_absent_properties_are_left_out() {
        let o = Observation {
            dimension_sets: &[&[]],
            dimensions: &[],
            metrics: &[("OldestOpenPaymentAge", Unit::Seconds, f64::NAN)],
            properties: &[("Reason", None)],
        };
        let v = parsed(&o);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
        assert_eq!(v["OldestOpenPaymentAge"], json!(0.0));
        assert!(v.get("Reason").is_none(), "{v}");
    }

    #[test]
    fn namespaces_follow_cloudwatch_rules() {
        assert!(valid_namespace("X402Facilitator"));
        assert!(valid_namespace("Team/x402"));
        assert!(!valid_namespace(""));
        assert!(!valid_namespace("AWS/Lambda"));
        assert!(!valid_namespace(&"x".repeat(256)));
    }
}
