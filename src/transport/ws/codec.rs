//! The `/ws` wire format: client frames decoded into events (pure, so the `ws_frame` fuzz
//! target drives exactly what a connection runs) and the frames that answer them or push
//! server events.

use axum::extract::ws::{Message, Utf8Bytes};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::{ChatError, validate};
use crate::transport::dispatch;

/// A server push: `{"event": name, "data": payload}`.
#[derive(Serialize)]
pub(super) struct Push<'a, T: Serialize> {
    /// The event's name.
    pub event: &'a str,
    /// Its payload.
    pub data: &'a T,
}

/// One JSON text frame.
pub(super) fn encode(value: &impl Serialize) -> Result<Message, serde_json::Error> {
    Ok(Message::Text(Utf8Bytes::from(serde_json::to_string(value)?)))
}

/// A client frame's id, echoed in the ack as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FrameId {
    /// A number (JSON integer ≥ 0).
    Number(u64),
    /// A string.
    Text(String),
}

/// `{"id"?, "event", "data"?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFrame {
    #[serde(default)]
    id: Option<FrameId>,
    event: String,
    #[serde(default)]
    data: Value,
}

/// Just the id of a frame; other fields are skipped unparsed (serde_json skips without
/// recursing, so nesting too deep to parse does not hide the id).
#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<FrameId>,
}

/// A client frame decoded into the event it asks for.
#[derive(Debug)]
pub struct FrameRequest {
    /// The id to answer to; without one only a failure is answered (an `error` push).
    pub id: Option<FrameId>,
    /// The event name as sent.
    pub name: String,
    /// The typed event.
    pub event: dispatch::ClientEvent,
}

/// A client frame refused before anything ran, and why.
#[derive(Debug)]
pub struct Refusal {
    /// The frame's id, when one could be read.
    pub id: Option<FrameId>,
    /// The frame's event name, when one could be read.
    pub name: Option<String>,
    /// Why (always [`ChatError::Invalid`]).
    pub error: ChatError,
}

/// Decodes one client text frame whose payload may nest `max_depth` levels. Pure (no
/// connection, no store), so the `ws_frame` fuzz target (fuzz/) drives exactly what a
/// connection runs.
pub fn decode_frame(text: &str, max_depth: usize) -> Result<FrameRequest, Refusal> {
    // The envelope is one level; the payload may use the rest. Checked before parsing.
    if let Err(error) = validate::json_depth(text.as_bytes(), max_depth, 1) {
        let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|frame| frame.id);
        return Err(Refusal { id, name: None, error });
    }
    // serde reads a struct from a JSON array too (fields by position): only an object is a
    // frame.
    if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
        return Err(Refusal {
            id: None,
            name: None,
            error: ChatError::invalid("invalid frame: expected a JSON object"),
        });
    }
    let frame: ClientFrame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(err) => {
            // Answer to the id if one can be read at all: from the JSON, else (too deep for
            // the parser's recursion limit) skipping everything but the id.
            let id = match serde_json::from_str::<Value>(text) {
                Ok(value) => value.get("id").and_then(|id| FrameId::deserialize(id).ok()),
                Err(_) => serde_json::from_str::<IdOnly>(text).ok().and_then(|frame| frame.id),
            };
            return Err(Refusal {
                id,
                name: None,
                error: ChatError::invalid(format!("invalid frame: {err}")),
            });
        }
    };
    match dispatch::ClientEvent::decode(&frame.event, frame.data) {
        Ok(event) => Ok(FrameRequest { id: frame.id, name: frame.event, event }),
        Err(error) => Err(Refusal { id: frame.id, name: Some(frame.event), error }),
    }
}

/// Decodes one client binary frame: accepted like text when it holds UTF-8 JSON.
pub fn decode_binary_frame(data: &[u8], max_depth: usize) -> Result<FrameRequest, Refusal> {
    match std::str::from_utf8(data) {
        Ok(text) => decode_frame(text, max_depth),
        Err(_) => {
            Err(Refusal { id: None, name: None, error: ChatError::invalid("frames must be UTF-8 JSON") })
        }
    }
}

/// A frame answering a client frame.
// Made once per answer and serialized at once: boxing the large ack would only add an
// allocation per answer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `{"id", "ack"}`: the answer to a frame with an id.
    Ack {
        /// The frame's id, as given.
        id: FrameId,
        /// `{ok:true,…}` or `{ok:false,error:{code,message}}`.
        ack: dispatch::Ack,
    },
    /// `{"event":"error","data":{code,message,event?}}`: a failure without an id to answer.
    Error {
        /// Always `"error"`.
        event: &'static str,
        /// `{code, message}`, plus the event name when it could be read.
        data: Value,
    },
}

/// The frame answering an event: an ack when it had an id, an `error` push when it failed
/// without one, and nothing for a success without an id.
pub fn reply(
    id: Option<FrameId>,
    event: Option<&str>,
    result: Result<dispatch::Done, ChatError>,
) -> Option<Reply> {
    match (id, result) {
        (Some(id), result) => Some(Reply::Ack { id, ack: dispatch::ack(result) }),
        (None, Err(err)) => Some(Reply::Error { event: "error", data: dispatch::error_body(event, &err) }),
        (None, Ok(_)) => None,
    }
}
