//! Properties the fuzz targets assert about what chatd answers: every refusal is a contract
//! error `{code, message}` with a known code.

use serde_json::Value;

/// The contract's error codes (docs/protocol.md, "Errors").
pub const CODES: [&str; 11] = [
    "unauthorized",
    "token_expired",
    "not_a_member",
    "forbidden",
    "not_found",
    "invalid",
    "too_large",
    "conflict",
    "rate_limited",
    "unavailable",
    "internal",
];

/// The client→server event names (docs/protocol.md, "Realtime events"): the dispatcher's
/// list, which its decoder must accept exactly.
pub use chatd::transport::dispatch::CLIENT_EVENTS as EVENTS;

/// Asserts `body` is `{code, message}` (plus `event` when given) with a contract code and a
/// non-empty message, and returns the code.
pub fn assert_error_body(body: &Value, event: Option<&str>) -> String {
    let code = body["code"].as_str().unwrap_or_else(|| panic!("no code in {body}"));
    assert!(CODES.contains(&code), "unknown code {code:?} in {body}");
    let message = body["message"].as_str().unwrap_or_else(|| panic!("no message in {body}"));
    assert!(!message.is_empty(), "empty message in {body}");
    let expected_keys = if event.is_some() { 3 } else { 2 };
    assert_eq!(body.as_object().map(|o| o.len()), Some(expected_keys), "extra fields in {body}");
    if let Some(event) = event {
        assert_eq!(body["event"], event, "wrong event in {body}");
    }
    code.to_owned()
}

/// Asserts `ack` is `{ok:false, error:{code, message}}` with a contract code; returns it.
pub fn assert_error_ack(ack: &Value) -> String {
    assert_eq!(ack["ok"], false, "not a failure ack: {ack}");
    assert_eq!(ack.as_object().map(|o| o.len()), Some(2), "extra fields in {ack}");
    assert_error_body(&ack["error"], None)
}

/// Serializes `value` as a frame goes out and parses it back, asserting it is valid JSON.
pub fn round_trip(value: &impl serde::Serialize) -> Value {
    let text = serde_json::to_string(value).expect("every answer serializes");
    serde_json::from_str(&text).expect("every answer is valid JSON")
}
