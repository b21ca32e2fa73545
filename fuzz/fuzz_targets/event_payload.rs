//! The realtime event decoder ([`ClientEvent::decode`]), which both transports run on every
//! event. Input: `<event name>\n<payload JSON>` (no newline: the name alone, payload `null`).
//! Properties: it never panics; it yields the named event exactly when the name is a known
//! event and the payload is `null` or an object; every refusal is an `invalid` error whose
//! ack is `{ok:false, error:{code, message}}`.
#![no_main]

use chatd::transport::dispatch::{self, ClientEvent};
use chatd_fuzz::{EVENTS, assert_error_ack, round_trip};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|input: &[u8]| {
    let (name, payload) = match input.iter().position(|b| *b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let Ok(name) = std::str::from_utf8(name) else { return };
    let data = if payload.is_empty() {
        Value::Null
    } else {
        // The transports hand the decoder parsed JSON; bytes that are not JSON never reach it
        // (the ws_frame target covers that refusal).
        match serde_json::from_slice::<Value>(payload) {
            Ok(data) => data,
            Err(_) => return,
        }
    };
    let shape_ok = data.is_null() || data.is_object();
    match ClientEvent::decode(name, data) {
        Ok(event) => {
            assert_eq!(event.name(), name, "decoded as another event");
            assert!(shape_ok, "a non-object payload was accepted for {name}");
        }
        Err(err) => {
            assert_eq!(err.code(), "invalid", "a decode failure must be invalid: {err}");
            let ack = round_trip(&dispatch::ack(Err(err)));
            assert_error_ack(&ack);
        }
    }
    if !EVENTS.contains(&name) {
        // Unknown names are refused whatever the payload (checked above as an error path).
        assert!(ClientEvent::decode(name, Value::Null).is_err(), "unknown event {name:?} accepted");
    }
});
