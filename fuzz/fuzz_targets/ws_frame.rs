//! The plain-WebSocket frame handling, without a network: a client data frame (any bytes, as
//! a binary frame; a text frame is the UTF-8 case) → [`decode_binary_frame`] → the event or the
//! answer a connection sends ([`reply`]).
//! Properties: it never panics; a decoded frame is a JSON object naming a known event; a refused frame is
//! always answered, with an ack to its id (at least whenever the frame is a JSON object whose
//! `id` is a number or a string), else with an `error` push, carrying an `invalid` contract
//! error; a success is acked `{ok:true}` to its id, or not answered without one.
#![no_main]

use chatd::transport::dispatch::Done;
use chatd::transport::ws::{FrameId, decode_binary_frame, reply};
use chatd_fuzz::{EVENTS, assert_error_ack, assert_error_body, round_trip};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// The nesting a payload may have (chatd's default `--max-json-depth`).
const MAX_DEPTH: usize = 32;

fuzz_target!(|input: &[u8]| {
    // The id a reader can recover from the frame, if any.
    let readable_id = std::str::from_utf8(input)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|value| serde_json::from_value::<FrameId>(value.get("id")?.clone()).ok());
    match decode_binary_frame(input, MAX_DEPTH) {
        Ok(request) => {
            assert!(EVENTS.contains(&request.name.as_str()), "unknown event {:?} accepted", request.name);
            assert_eq!(request.event.name(), request.name);
            assert!(
                serde_json::from_slice::<Value>(input).is_ok_and(|frame| frame.is_object()),
                "a frame that is not a JSON object was accepted"
            );
            assert_eq!(request.id, readable_id, "the id was misread");
            let answer = reply(request.id.clone(), Some(&request.name), Ok(Done::Nothing {}));
            match (&request.id, answer) {
                (Some(id), Some(answer)) => {
                    let frame = round_trip(&answer);
                    assert_eq!(frame["id"], json!(id));
                    assert_eq!(frame["ack"], json!({ "ok": true }));
                }
                (None, None) => {}
                (id, answer) => panic!("success with id {id:?} answered as {answer:?}"),
            }
        }
        Err(refusal) => {
            assert_eq!(refusal.error.code(), "invalid", "a refused frame must be invalid: {}", refusal.error);
            if readable_id.is_some() {
                assert_eq!(refusal.id, readable_id, "the id was not recovered");
            }
            let id = refusal.id.clone();
            let name = refusal.name.clone();
            let answer = reply(refusal.id, refusal.name.as_deref(), Err(refusal.error))
                .expect("a refused frame is always answered");
            let frame = round_trip(&answer);
            match id {
                Some(id) => {
                    assert_eq!(frame["id"], json!(id));
                    assert_eq!(frame.as_object().map(|o| o.len()), Some(2), "extra fields in {frame}");
                    assert_error_ack(&frame["ack"]);
                }
                None => {
                    assert_eq!(frame["event"], "error", "not an error push: {frame}");
                    assert_error_body(&frame["data"], name.as_deref());
                }
            }
        }
    }
});
