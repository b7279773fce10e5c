//! The restore path of docs/runbook.md ("Recovering data"), on the local stack: the payments and
//! lanes tables restored to a point in time (moto's `RestoreTableToPointInTime`) under new names,
//! and a facilitator pointed at them by `X402_PAYMENTS_TABLE` and `X402_LANES_TABLE`, which is
//! what the template's `ExistingPaymentsTableName` and `ExistingLanesTableName` set. A payment
//! settled before the restore is answered from the restored record, with its transaction, and the
//! original table is not touched.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use facilitator::store::{PaymentId, State, Store};
use serde_json::{json, Value};

async fn restore(source: &str) -> String {
    let target = format!(
        "{source}-restored-{}",
        &alloy::hex::encode(random_nonce())[..8]
    );
    dynamodb()
        .await
        .restore_table_to_point_in_time()
        .source_table_name(source)
        .target_table_name(&target)
        .use_latest_restorable_time(true)
        .send()
        .await
        .unwrap();
    target
}

fn with_identifier(payment: &PaymentBuilder, id: &str) -> Value {
    payment.body_with_extensions(
        json!({"payment-identifier": {"info": {"required": false, "id": id}}}),
    )
}

#[tokio::test]
async fn a_facilitator_pointed_at_restored_tables_answers_from_the_restored_records() {
    let payment = PaymentBuilder::new(1).sign();
    let id = format!("pay_{}", &alloy::hex::encode(random_nonce())[..32]);
    let body = with_identifier(&payment, &id);
    let first = settle(&body).await;
    assert_eq!(first.json["success"], true, "{:?}", first.json);
    let transaction = first.json["transaction"].clone();

    let s = stack();
    let (payments, lanes) = (
        restore(&s.payments_table).await,
        restore(&s.lanes_table).await,
    );
    // What a lost table looks like to the original: the record is gone from it.
    let record_id = PaymentId::parse(&payment.record_id()).unwrap();
    dynamodb()
        .await
        .delete_item()
        .table_name(&s.payments_table)
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S(record_id.as_str().to_owned()),
        )
        .send()
        .await
        .unwrap();

    let (_server, base) = start_local_server(&[
        ("X402_PAYMENTS_TABLE", payments.as_str()),
        ("X402_LANES_TABLE", lanes.as_str()),
    ])
    .await;
    let again = post_json(&base, "/settle", &body).await;
    assert_eq!(again.status, 200, "{:?}", again.json);
    assert_eq!(
        (
            again.json["success"].clone(),
            again.json["transaction"].clone()
        ),
        (json!(true), transaction),
        "the same payment and identifier get the same success, from the restored record"
    );

    let restored = Store::new(dynamodb().await, payments, lanes)
        .get(&record_id)
        .await
        .unwrap()
        .expect("the restored table has the record");
    assert_eq!(restored.state, State::Settled);
    assert!(
        find_payment_record(&payment.record_id()).await.is_none(),
        "nothing was written to the original table"
    );
}
