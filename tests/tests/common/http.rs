//! The facilitator's HTTP API as a client sees it: one shared client, raw POSTs and GETs that
//! return the status and the JSON, and `/verify` and `/settle` on the local server.

use std::sync::OnceLock;

use serde_json::Value;

use super::stack::base_url;

/// A raw HTTP answer: status and JSON (or the text when it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
}

/// One client for the whole test binary, without idle connection reuse: each `#[tokio::test]` has
/// its own runtime, and a pooled connection opened on a runtime that has ended is dead when the next
/// test picks it up ("error sending request"). Fresh connections to 127.0.0.1 cost nothing.
pub fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    })
}

pub async fn post_raw(url: &str, body: Vec<u8>) -> Answer {
    let response = http()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, json }
}

/// POSTs a JSON body to `base` + `path`.
pub async fn post_json(base: &str, path: &str, body: &Value) -> Answer {
    post_raw(&format!("{base}{path}"), serde_json::to_vec(body).unwrap()).await
}

pub async fn verify(body: &Value) -> Answer {
    post_json(&base_url(), "/verify", body).await
}

/// `/verify`'s judgement of `body` on the local server: `"valid"`, or its `invalidReason`; the
/// answer's status must be 200.
pub async fn verify_reason(body: &Value) -> Value {
    let answer = verify(body).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    match answer.json["isValid"] == true {
        true => Value::from("valid"),
        false => answer.json["invalidReason"].clone(),
    }
}

pub async fn settle(body: &Value) -> Answer {
    post_json(&base_url(), "/settle", body).await
}

pub async fn get(path: &str) -> Answer {
    let response = http()
        .get(format!("{}{path}", base_url()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    Answer {
        status,
        json: response.json().await.unwrap_or(Value::Null),
    }
}
