//! 1,000 generated malformed inputs against a real `chatd serve` process, over both realtime
//! transports: plain WebSocket (`/ws`, from Rust) and Socket.IO (the official
//! `socket.io-client` from tests/node for payloads, raw Engine.IO frames for what that client
//! cannot send). Cases: random JSON, a wrong type for every field of every event, nulls,
//! numbers out of range, unknown events and fields, non-object payloads, missing ack ids,
//! strings just under and frames over the 64 KiB cap, nesting 10,000 levels deep, invalid
//! UTF-8, broken envelopes and packets.
//!
//! Every case must get a clear answer: an error ack (or, without an ack id, an `error` event)
//! carrying a contract code, or where the protocol cannot answer (a frame over the cap, bytes
//! that are not UTF-8, a packet Socket.IO cannot parse) the documented close, after which the
//! client reconnects. Meanwhile two well-behaved users in the same conversation keep chatting
//! and must see every message, in order; the server stays up; and its resident memory after
//! the cases is back near the baseline taken after a warm-up.
//!
//! The generator is seeded (`CHATD_MALFORMED_SEED`, default below) and prints its seed, so a
//! failure replays exactly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chatd::auth::{Authenticator, KeySource};
use common::ServerProcess;
use common::ws::Ws;
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

const SECRET: &str = "malformed-test-secret-0123456789";
const DEFAULT_SEED: u64 = 0x5eed_c4a7_d000_0001;
/// Cases per transport path; 1,000 in all.
const WS_CASES: usize = 550;
const SOCKETIO_CASES: usize = 350;
const RAW_SOCKETIO_CASES: usize = 100;
/// Cases run before the memory baseline is taken (not counted in the 1,000).
const WARM_UP_CASES: usize = 100;
/// How far above the baseline resident memory may stay after the cases.
const MEMORY_TOLERANCE_BYTES: u64 = 32 * 1024 * 1024;
/// The transport's frame / payload cap.
const CAP: usize = 64 * 1024;
/// How long a client waits for an answer that must come (generous: CI machines are busy).
const WAIT: Duration = Duration::from_secs(30);

/// The contract's error codes, less `internal` (a bug, never an answer to bad input).
const CLIENT_CODES: [&str; 10] = [
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
];

fn token(user: &str) -> String {
    let auth = Authenticator::new(KeySource::Secret(SECRET.as_bytes().to_vec()), None, None).expect("auth");
    auth.mint(user, None, Duration::from_secs(3600)).expect("mint")
}

/// The JSON type a field of an event payload takes.
#[derive(Clone, Copy)]
enum Field {
    /// A required string.
    Str,
    /// An optional string (`null` is fine).
    OptStr,
    /// The message type enum.
    Type,
    /// An optional array of objects.
    Attachments,
    /// An optional object.
    Metadata,
    /// A required 64-bit integer.
    Int,
    /// An optional 64-bit integer.
    OptInt,
    /// An object of conversation id → integer.
    SeqMap,
    /// An array of strings.
    StrList,
}

/// Every client event with its payload fields.
const EVENTS: [(&str, &[(&str, Field)]); 12] = [
    (
        "message:send",
        &[
            ("conversation_id", Field::OptStr),
            ("content", Field::OptStr),
            ("type", Field::Type),
            ("client_id", Field::OptStr),
            ("reply_to_id", Field::OptStr),
            ("attachments", Field::Attachments),
            ("metadata", Field::Metadata),
        ],
    ),
    ("message:edit", &[("message_id", Field::OptStr), ("content", Field::Str)]),
    ("message:delete", &[("message_id", Field::Str)]),
    ("message:read", &[("conversation_id", Field::OptStr), ("seq", Field::Int)]),
    ("typing:start", &[("conversation_id", Field::Str)]),
    ("typing:stop", &[("conversation_id", Field::Str)]),
    ("conversation:focus", &[("conversation_id", Field::Str)]),
    ("conversation:unfocus", &[]),
    ("conversation:join", &[("conversation_id", Field::Str)]),
    ("conversation:leave", &[("conversation_id", Field::Str)]),
    ("sync", &[("conversations", Field::SeqMap), ("limit", Field::OptInt)]),
    ("presence:query", &[("user_ids", Field::StrList)]),
];

/// Numbers no 64-bit integer field accepts.
fn out_of_range(rng: &mut StdRng) -> Value {
    let numbers =
        ["9223372036854775808", "-9223372036854775809", "18446744073709551616", "1e300", "-1e300", "1.5"];
    serde_json::from_str(numbers.choose(rng).expect("non-empty")).expect("a JSON number")
}

/// A value of the wrong JSON type (or out of range) for `field`.
fn wrong_value(field: Field, rng: &mut StdRng) -> Value {
    let choices: Vec<Value> = match field {
        Field::Str => vec![json!(42), json!(true), json!(["x"]), json!({ "x": 1 }), Value::Null],
        Field::OptStr => vec![json!(42), json!(false), json!([]), json!({}), json!(-1.5)],
        Field::Type => {
            vec![json!("video"), json!(1), json!(true), json!(["text"]), json!({ "text": 1 }), json!("")]
        }
        Field::Attachments => {
            vec![json!("a"), json!(5), json!({}), json!([1]), json!(["a"]), json!([null]), json!(true)]
        }
        Field::Metadata => vec![json!("m"), json!(5), json!([]), json!(true), json!([{}])],
        Field::Int => vec![json!("1"), json!(true), json!([]), json!({}), Value::Null, out_of_range(rng)],
        Field::OptInt => vec![json!("1"), json!(false), json!([1]), json!({}), out_of_range(rng)],
        Field::SeqMap => vec![
            json!([]),
            json!("c"),
            json!(5),
            json!({ "c": "1" }),
            json!({ "c": null }),
            json!({ "c": 1.5 }),
        ],
        Field::StrList => vec![json!("alice"), json!([1]), json!([null]), json!({}), json!(5), Value::Null],
    };
    choices.choose(rng).expect("non-empty").clone()
}

/// A valid value for `field` (so a payload fails only where the case breaks it).
fn valid_value(name: &str, field: Field, conversation_id: &str) -> Value {
    match field {
        Field::Str | Field::OptStr if name == "conversation_id" => json!(conversation_id),
        Field::Str | Field::OptStr if name == "message_id" => json!("0190e6a2-8d2f-7c4b-a05f-3e2d1c0b9a8f"),
        Field::Str | Field::OptStr => json!("text"),
        Field::Type => json!("text"),
        Field::Attachments => json!([]),
        Field::Metadata => json!({}),
        Field::Int | Field::OptInt => json!(1),
        Field::SeqMap => json!({ conversation_id: 0 }),
        Field::StrList => json!(["alice"]),
    }
}

/// A random JSON value, at most `depth` levels deep.
fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e10),
        4 => {
            let len = rng.random_range(0..12);
            json!((0..len).map(|_| rng.random_range(' '..='\u{2fff}')).collect::<String>())
        }
        5 => json!((0..rng.random_range(0..4)).map(|_| random_json(rng, depth - 1)).collect::<Vec<_>>()),
        _ => Value::Object(
            (0..rng.random_range(0..4)).map(|i| (format!("k{i}"), random_json(rng, depth - 1))).collect(),
        ),
    }
}

/// `depth` nested arrays, as raw JSON text (never built as a `Value`: dropping or printing
/// one that deep recurses as deep).
fn deep_nesting(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// What an event case sends as its payload.
#[derive(Clone)]
enum Payload {
    /// This JSON.
    Json(Value),
    /// This raw JSON text.
    Raw(String),
    /// No payload at all.
    Absent,
}

impl Payload {
    fn text(&self) -> Option<String> {
        match self {
            Payload::Json(value) => Some(value.to_string()),
            Payload::Raw(text) => Some(text.clone()),
            Payload::Absent => None,
        }
    }
}

/// How the server must answer a case.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// An error carrying exactly this code.
    Code(&'static str),
    /// An error carrying any client-facing contract code.
    AnyCode,
    /// The connection is closed with one of these codes (then the client reconnects).
    Close(&'static [u16]),
}

/// One event case: an event, its payload, whether it asks for an ack, and the answer due.
#[derive(Clone)]
struct EventCase {
    label: &'static str,
    event: String,
    payload: Payload,
    ack: bool,
    expect: Expect,
}

/// Event-level cases, shared by both transports. `payload_room` is how much of the 64 KiB
/// cap a payload may take and still fit the transport's framing.
fn event_case(rng: &mut StdRng, conversation_id: &str) -> EventCase {
    let (event, fields) = *EVENTS.choose(rng).expect("events");
    let valid = |fields: &[(&str, Field)]| -> serde_json::Map<String, Value> {
        fields
            .iter()
            .map(|(name, field)| ((*name).to_owned(), valid_value(name, *field, conversation_id)))
            .collect()
    };
    let case =
        |label, payload, expect| EventCase { label, event: event.to_owned(), payload, ack: true, expect };
    match rng.random_range(0..100) {
        // Random JSON: a non-object is refused; an object gets a key no event has.
        0..20 => {
            let mut value = random_json(rng, 3);
            if let Value::Object(map) = &mut value {
                map.insert(format!("fuzz{}", rng.random::<u16>()), random_json(rng, 1));
            } else if value.is_null() {
                value = json!([]);
            }
            case("random JSON", Payload::Json(value), Expect::Code("invalid"))
        }
        // A wrong type (or an out-of-range number) in one field, the others valid.
        20..50 if !fields.is_empty() => {
            let mut payload = valid(fields);
            let (name, field) = fields.choose(rng).expect("fields");
            payload.insert((*name).to_owned(), wrong_value(*field, rng));
            case("wrong type", Payload::Json(Value::Object(payload)), Expect::Code("invalid"))
        }
        // An unknown field beside valid ones.
        50..58 => {
            let mut payload = valid(fields);
            payload.insert("surprise".into(), json!(true));
            case("unknown field", Payload::Json(Value::Object(payload)), Expect::Code("invalid"))
        }
        // A payload that is not an object.
        58..66 => {
            let value = [json!([]), json!(["x", 1]), json!("payload"), json!(7), json!(false), json!(-0.5)]
                .choose(rng)
                .expect("values")
                .clone();
            case("non-object payload", Payload::Json(value), Expect::Code("invalid"))
        }
        // An unknown event (with a plausible or random name).
        66..74 => {
            let names = [
                "message:explode",
                "MESSAGE:SEND",
                "message:send ",
                "",
                "ready",
                "error",
                "message:new",
                "é:🙂",
            ];
            let mut c =
                case("unknown event", Payload::Json(Value::Object(valid(fields))), Expect::Code("invalid"));
            c.event = (*names.choose(rng).expect("names")).to_owned();
            c
        }
        // A failing event without an ack id: answered with an `error` event.
        74..82 => {
            let mut c = case("no ack", Payload::Json(json!({ "surprise": 1 })), Expect::Code("invalid"));
            c.ack = false;
            c
        }
        // A string just under the cap: the content or an id far over its limit.
        82..88 => {
            let (field, expect) = if rng.random::<bool>() {
                ("content", Expect::Code("too_large"))
            } else {
                ("conversation_id", Expect::AnyCode)
            };
            let mut payload = valid(EVENTS[0].1);
            payload.insert(field.into(), json!("x".repeat(CAP - 1024)));
            EventCase {
                label: "huge string",
                event: "message:send".into(),
                payload: Payload::Json(Value::Object(payload)),
                ack: true,
                expect,
            }
        }
        // Deeper than the JSON parser's recursion limit.
        88..94 => {
            let payload = format!(
                r#"{{"conversation_id":"{conversation_id}","metadata":{{"a":{}}}}}"#,
                deep_nesting(rng.random_range(200..2_000))
            );
            EventCase {
                label: "deep nesting",
                event: "message:send".into(),
                payload: Payload::Raw(payload),
                ack: true,
                expect: Expect::Code("invalid"),
            }
        }
        // A required field null or missing; an empty payload where one is required.
        _ => {
            let required: Vec<&str> = fields
                .iter()
                .filter(|(_, field)| matches!(field, Field::Str | Field::Int | Field::StrList))
                .map(|(name, _)| *name)
                .collect();
            match required.choose(rng) {
                Some(_) if rng.random_range(0..4) == 0 => {
                    case("no payload", Payload::Absent, Expect::Code("invalid"))
                }
                Some(name) => {
                    let mut payload = valid(fields);
                    if rng.random::<bool>() {
                        payload.insert((*name).to_owned(), Value::Null);
                    } else {
                        payload.remove(*name);
                    }
                    case(
                        "null or missing field",
                        Payload::Json(Value::Object(payload)),
                        Expect::Code("invalid"),
                    )
                }
                None => case(
                    "null payload field",
                    Payload::Json(json!({ "conversation_id": null })),
                    Expect::Code("invalid"),
                ),
            }
        }
    }
}

/// What a plain-WebSocket case sends.
enum WsSend {
    Text(String),
    Binary(Vec<u8>),
    /// A text frame whose bytes are not UTF-8 (sent as a raw frame).
    BadUtf8Text(Vec<u8>),
}

/// One plain-WebSocket case: the frame, the id it carries (if the server can read one), and
/// the answer due.
struct WsCase {
    label: &'static str,
    send: WsSend,
    id: Option<u64>,
    expect: Expect,
}

/// Deep nesting may be refused before the id is read (a depth cap at the transport): then an
/// `error` event answers instead of the ack.
fn may_lose_id(label: &str) -> bool {
    label.starts_with("deep nesting")
}

fn ws_case(rng: &mut StdRng, conversation_id: &str, id: u64) -> WsCase {
    let text_case = |label, text: String, id, expect| WsCase { label, send: WsSend::Text(text), id, expect };
    match rng.random_range(0..100) {
        0..70 => {
            let case = event_case(rng, conversation_id);
            let data = case.payload.text().map(|text| format!(r#","data":{text}"#)).unwrap_or_default();
            let event = serde_json::to_string(&case.event).expect("event name");
            if case.ack {
                text_case(
                    case.label,
                    format!(r#"{{"id":{id},"event":{event}{data}}}"#),
                    Some(id),
                    case.expect,
                )
            } else {
                text_case(case.label, format!(r#"{{"event":{event}{data}}}"#), None, case.expect)
            }
        }
        // Nesting 10,000 levels deep: the frame as a whole cannot be parsed.
        70..74 => text_case(
            "deep nesting (10,000)",
            format!(r#"{{"id":{id},"event":"sync","data":{}}}"#, deep_nesting(10_000)),
            Some(id),
            Expect::Code("invalid"),
        ),
        // Broken envelopes.
        74..86 => {
            let frames = [
                (format!(r#"{{"id":{id},"event":"sync","data":{{}},"extra":1}}"#), Some(id)),
                (format!(r#"{{"id":{id},"event":5}}"#), Some(id)),
                (format!(r#"{{"id":{id},"data":{{}}}}"#), Some(id)),
                (format!(r#"{{"id":{id},"event":"sync","data":{{"#), None),
                (r#"{"id":-1,"event":"sync"}"#.to_owned(), None),
                (r#"{"id":1.5,"event":"sync"}"#.to_owned(), None),
                (r#"{"id":{"a":1},"event":"sync"}"#.to_owned(), None),
                (r#"{"id":18446744073709551616,"event":"sync"}"#.to_owned(), None),
                (format!(r#"[{id},"sync",{{}}]"#), None),
                ("not json at all".to_owned(), None),
                ("null".to_owned(), None),
                (String::new(), None),
            ];
            let (text, id) = frames.choose(rng).expect("frames").clone();
            text_case("broken envelope", text, id, Expect::Code("invalid"))
        }
        // Binary frames: UTF-8 JSON is read like text; other bytes are refused.
        86..92 => {
            let mut bytes: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            bytes.push(0xff);
            WsCase {
                label: "binary not UTF-8",
                send: WsSend::Binary(bytes),
                id: None,
                expect: Expect::Code("invalid"),
            }
        }
        92..95 => WsCase {
            label: "binary JSON",
            send: WsSend::Binary(format!(r#"{{"id":{id},"event":"nope"}}"#).into_bytes()),
            id: Some(id),
            expect: Expect::Code("invalid"),
        },
        // A text frame that is not UTF-8: the protocol cannot answer it; 1002 (or 1007).
        95..98 => WsCase {
            label: "text not UTF-8",
            send: WsSend::BadUtf8Text(
                format!(r#"{{"id":{id},"event":"sync","data":{{"x":"#)
                    .into_bytes()
                    .into_iter()
                    .chain([0xc3, 0x28, b'"', b'}', b'}'])
                    .collect(),
            ),
            id: None,
            expect: Expect::Close(&[1002, 1007]),
        },
        // Over the cap: closed with 1009.
        _ => text_case(
            "frame over 64 KiB",
            format!(
                r#"{{"id":{id},"event":"message:send","data":{{"conversation_id":"{conversation_id}","content":"{}"}}}}"#,
                "y".repeat(CAP + 16)
            ),
            Some(id),
            Expect::Close(&[1009]),
        ),
    }
}

/// Checks an error body `{code, message, event?}` against what was due.
fn check_error(body: &Value, expect: Expect, what: &str) {
    let code = body["code"].as_str().unwrap_or_else(|| panic!("{what}: no code in {body}"));
    let message = body["message"].as_str().unwrap_or_else(|| panic!("{what}: no message in {body}"));
    assert!(!message.is_empty(), "{what}: empty message in {body}");
    match expect {
        Expect::Code(due) => assert_eq!(code, due, "{what}: {body}"),
        Expect::AnyCode => assert!(CLIENT_CODES.contains(&code), "{what}: code {code:?} in {body}"),
        Expect::Close(_) => panic!("{what}: answered {body} instead of closing"),
    }
}

/// The fuzzing user's `/ws` connection, reopened whenever the server closes it.
struct WsFuzzer {
    addr: std::net::SocketAddr,
    token: String,
    ws: Ws,
    reconnects: usize,
}

impl WsFuzzer {
    async fn run(&mut self, case: WsCase, n: usize) {
        let what = format!("ws case {n} ({})", case.label);
        let message = match case.send {
            WsSend::Text(text) => Message::text(text),
            WsSend::Binary(bytes) => Message::binary(bytes),
            WsSend::BadUtf8Text(bytes) => Message::Frame(Frame::from_payload(
                FrameHeader { opcode: OpCode::Data(Data::Text), ..FrameHeader::default() },
                bytes.into(),
            )),
        };
        self.ws.stream.send(message).await.unwrap_or_else(|err| panic!("{what}: send failed: {err}"));
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.stream.next())
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"));
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).expect("the server sends JSON");
                    match (case.id, frame.get("id")) {
                        (Some(id), Some(got)) if *got == json!(id) => {
                            assert_eq!(frame["ack"]["ok"], false, "{what}: {frame}");
                            check_error(&frame["ack"]["error"], case.expect, &what);
                            return;
                        }
                        (_, Some(other)) => panic!("{what}: ack to an unexpected id {other}: {frame}"),
                        (_, None) if frame["event"] == "error" => {
                            assert!(
                                case.id.is_none() || may_lose_id(case.label),
                                "{what}: error event instead of an ack: {frame}"
                            );
                            check_error(&frame["data"], case.expect, &what);
                            return;
                        }
                        // Pushes of the conversation (the others keep chatting).
                        (_, None) => continue,
                    }
                }
                Some(Ok(Message::Close(close))) => {
                    let Expect::Close(codes) = case.expect else { panic!("{what}: closed: {close:?}") };
                    let code = close.map(|c| u16::from(c.code));
                    assert!(code.is_some_and(|code| codes.contains(&code)), "{what}: closed with {code:?}");
                    self.ws = Ws::connect_to(self.addr, &self.token).await;
                    self.reconnects += 1;
                    return;
                }
                Some(Ok(_)) => continue,
                other => panic!("{what}: connection ended without a close frame: {other:?}"),
            }
        }
    }
}

/// Raw Socket.IO (Engine.IO v4 over WebSocket) for what socket.io-client cannot send.
struct RawSocketIo {
    addr: std::net::SocketAddr,
    token: String,
    stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    reconnects: usize,
}

impl RawSocketIo {
    async fn open(addr: std::net::SocketAddr, token: &str) -> RawSocketIo {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut stream, _) = tokio_tungstenite::connect_async(url).await.expect("socket.io websocket");
        stream.send(Message::text(format!("40{}", json!({ "token": token })))).await.expect("connect packet");
        loop {
            let frame = tokio::time::timeout(WAIT, stream.next()).await.expect("ready in time");
            if let Some(Ok(Message::Text(text))) = frame
                && text.starts_with("42[\"ready\"")
            {
                return RawSocketIo { addr, token: token.to_owned(), stream, reconnects: 0 };
            }
        }
    }

    /// Sends `message`; expects the ack `43<id>[{ok:false,…}]` when `ack_id` is given and
    /// `expect` is not a close, else the end of the connection (then reconnects).
    async fn run(&mut self, message: Message, ack_id: Option<u64>, expect: Expect, what: &str) {
        self.stream.send(message).await.unwrap_or_else(|err| panic!("{what}: send failed: {err}"));
        loop {
            let frame = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"));
            match frame {
                Some(Ok(Message::Text(text))) => {
                    if text.as_str() == "2" {
                        // An Engine.IO ping; a failed pong shows as the end of the stream next.
                        let _ = self.stream.send(Message::text("3")).await;
                        continue;
                    }
                    let Some(id) = ack_id else { continue };
                    let Some(body) = text.strip_prefix(&format!("43{id}")) else { continue };
                    let args: Value = serde_json::from_str(body).expect("ack arguments are JSON");
                    assert_eq!(args[0]["ok"], false, "{what}: {text}");
                    check_error(&args[0]["error"], expect, what);
                    return;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    assert!(matches!(expect, Expect::Close(_)), "{what}: the connection ended: {frame:?}");
                    *self = RawSocketIo {
                        reconnects: self.reconnects + 1,
                        ..RawSocketIo::open(self.addr, &self.token).await
                    };
                    return;
                }
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// Raw Socket.IO cases: packets socket.io-client never sends.
async fn raw_socketio_case(
    socket: &mut RawSocketIo,
    rng: &mut StdRng,
    conversation_id: &str,
    id: u64,
    n: usize,
) {
    let closes: &[u16] = &[];
    let (label, message, ack_id, expect) = match rng.random_range(0..8) {
        0 => (
            "deep nesting (10,000)",
            Message::text(format!(r#"42{id}["sync",{}]"#, deep_nesting(10_000))),
            Some(id),
            Expect::Code("invalid"),
        ),
        1 => (
            "payload not JSON",
            Message::text(format!(r#"42{id}["sync",{{"#)),
            Some(id),
            Expect::Close(closes),
        ),
        2 => (
            "event name not a string",
            Message::text(format!(r#"42{id}[5,{{}}]"#)),
            Some(id),
            Expect::Close(closes),
        ),
        3 => ("unknown packet type", Message::text(format!("9{id}")), None, Expect::Close(closes)),
        4 => (
            "text not UTF-8",
            Message::Frame(Frame::from_payload(
                FrameHeader { opcode: OpCode::Data(Data::Text), ..FrameHeader::default() },
                [b"42[\"sync\",\"".as_slice(), &[0xc3, 0x28], b"\"]"].concat().into(),
            )),
            None,
            Expect::Close(closes),
        ),
        5 => (
            "stray binary attachment",
            Message::binary((0..rng.random_range(1..128)).map(|_| rng.random::<u8>()).collect::<Vec<_>>()),
            None,
            Expect::Close(closes),
        ),
        6 => (
            "packet over 64 KiB",
            Message::text(format!(
                r#"42{id}["message:send",{{"conversation_id":"{conversation_id}","content":"{}"}}]"#,
                "z".repeat(CAP + 16)
            )),
            None,
            Expect::Close(closes),
        ),
        _ => (
            "string just under 64 KiB",
            Message::text(format!(
                r#"42{id}["message:send",{{"conversation_id":"{conversation_id}","content":"{}"}}]"#,
                "z".repeat(CAP - 1024)
            )),
            Some(id),
            Expect::Code("too_large"),
        ),
    };
    socket.run(message, ack_id, expect, &format!("raw socket.io case {n} ({label})")).await;
}

/// tests/node with its npm dependencies (`npm ci` on first use).
fn node_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if !dir.join("node_modules/socket.io-client").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs (Node.js and npm are needed for the Socket.IO cases)");
        assert!(status.success(), "npm ci in tests/node failed");
    }
    dir
}

/// Runs `cases` through socket.io-client (tests/node/malformed.mjs) and checks each answer.
async fn run_socketio_cases(
    server: &ServerProcess,
    token: &str,
    cases: &[EventCase],
    work: &std::path::Path,
) -> usize {
    let mut file = String::from("[");
    for (i, case) in cases.iter().enumerate() {
        if i > 0 {
            file.push(',');
        }
        let data = case.payload.text().map(|text| format!(r#","data":{text}"#)).unwrap_or_default();
        file.push_str(&format!(
            r#"{{"event":{},"ack":{}{data}}}"#,
            serde_json::to_string(&case.event).expect("name"),
            case.ack
        ));
    }
    file.push(']');
    let (cases_path, results_path) = (work.join("socketio-cases.json"), work.join("socketio-results.json"));
    std::fs::write(&cases_path, file).expect("write cases");
    let run = tokio::process::Command::new("node")
        .arg(node_dir().join("malformed.mjs"))
        .arg(&cases_path)
        .arg(&results_path)
        .env("CHATD_URL", &server.base)
        .env("CHATD_TOKEN", token)
        .kill_on_drop(true)
        .output();
    let output =
        tokio::time::timeout(Duration::from_secs(300), run).await.expect("node finished").expect("node runs");
    assert!(output.status.success(), "malformed.mjs failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let results: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&results_path).expect("results"))
        .expect("results JSON");
    assert_eq!(results.len(), cases.len());
    let mut disconnects = 0;
    for (n, (case, result)) in cases.iter().zip(&results).enumerate() {
        let what = format!("socket.io case {n} ({}, event {:?})", case.label, case.event);
        match (result["answer"].as_str(), case.ack) {
            (Some("ack"), true) => {
                assert_eq!(result["body"]["ok"], false, "{what}: {result}");
                check_error(&result["body"]["error"], case.expect, &what);
            }
            (Some("error"), ack) if !ack || may_lose_id(case.label) => {
                check_error(&result["body"], case.expect, &what);
                assert_eq!(result["body"]["event"], json!(case.event), "{what}: {result}");
            }
            (Some("disconnect"), _) if matches!(case.expect, Expect::Close(_)) => disconnects += 1,
            _ => panic!("{what}: answered {result}"),
        }
    }
    disconnects
}

/// Resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Alice sends numbered messages until told to stop; Bob must receive each, in order.
struct Chatter {
    stop: Arc<AtomicBool>,
    alice: tokio::task::JoinHandle<Vec<(i64, String)>>,
    bob: tokio::task::JoinHandle<Ws>,
}

impl Chatter {
    fn start(mut alice: Ws, mut bob: Ws, conversation_id: String) -> Chatter {
        let stop = Arc::new(AtomicBool::new(false));
        let alice = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut sent = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let content = format!("good-{}", sent.len());
                    let ack = alice
                        .ok("message:send", json!({ "conversation_id": conversation_id, "content": content }))
                        .await;
                    sent.push((ack["message"]["seq"].as_i64().expect("seq"), content));
                    alice.pushes.clear();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                sent
            }
        });
        let bob = tokio::spawn({
            let stop = stop.clone();
            async move {
                // Bob reads while the cases run, so nothing piles up on his connection.
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(200), bob.stream.next()).await {
                        Ok(Some(Ok(Message::Text(text)))) => {
                            bob.pushes.push_back(serde_json::from_str(&text).expect("JSON frame"))
                        }
                        Ok(Some(Ok(_))) | Err(_) => {}
                        Ok(other) => panic!("bob's connection ended: {other:?}"),
                    }
                }
                bob
            }
        });
        Chatter { stop, alice, bob }
    }

    /// Stops Alice and checks Bob saw exactly her messages, in order, and nothing else odd.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.alice.await.expect("alice");
        let mut bob = self.bob.await.expect("bob");
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while received.len() < sent.len() {
            let push = match bob.pushes.pop_front() {
                Some(push) => push,
                None => {
                    let frame = tokio::time::timeout_at(deadline, bob.stream.next()).await;
                    match frame {
                        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str(&text).expect("JSON frame"),
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
            };
            assert_ne!(push["event"], "error", "bob got an error: {push}");
            if push["event"] == "message:new" && push["data"]["sender_id"] == "alice" {
                let data = &push["data"];
                received.push((
                    data["seq"].as_i64().expect("seq"),
                    data["content"].as_str().expect("content").to_owned(),
                ));
            }
        }
        assert_eq!(received, sent, "bob must see every message of alice, in order");
        sent.len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_malformed_inputs_over_both_transports_get_contract_errors_and_harm_nobody() {
    let seed =
        std::env::var("CHATD_MALFORMED_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED);
    println!("malformed-input seed: {seed} (replay with CHATD_MALFORMED_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let args =
        ["--data-dir", data.to_str().expect("utf-8 path"), "--jwt-secret", SECRET, "--rate-limit", "0"];
    let server = ServerProcess::start(dir.path(), &args, dir.path().join("chatd.log")).await;
    let conversation = server.client(&token("alice")).create("group", &["bob", "mallory"]).await;
    let conversation_id = conversation["id"].as_str().expect("conversation id").to_owned();

    let alice = Ws::connect_to(server.addr(), &token("alice")).await;
    let bob = Ws::connect_to(server.addr(), &token("bob")).await;
    let chatter = Chatter::start(alice, bob, conversation_id.clone());

    let mallory = token("mallory");
    let mut ws = WsFuzzer {
        addr: server.addr(),
        token: mallory.clone(),
        ws: Ws::connect_to(server.addr(), &mallory).await,
        reconnects: 0,
    };
    let mut next_id = 0;
    let mut id = || {
        next_id += 1;
        next_id
    };

    // Warm-up: the same kinds of cases, so allocator pools and buffers exist before the
    // baseline is taken.
    let mut warm_rng = StdRng::seed_from_u64(seed ^ 0xffff);
    for n in 0..WARM_UP_CASES {
        ws.run(ws_case(&mut warm_rng, &conversation_id, id()), n).await;
    }
    let warm_cases: Vec<EventCase> =
        (0..WARM_UP_CASES).map(|_| event_case(&mut warm_rng, &conversation_id)).collect();
    run_socketio_cases(&server, &mallory, &warm_cases, dir.path()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_bytes(server.pid());

    for n in 0..WS_CASES {
        ws.run(ws_case(&mut rng, &conversation_id, id()), n).await;
    }
    let socketio_cases: Vec<EventCase> =
        (0..SOCKETIO_CASES).map(|_| event_case(&mut rng, &conversation_id)).collect();
    let socketio_disconnects = run_socketio_cases(&server, &mallory, &socketio_cases, dir.path()).await;
    let mut raw = RawSocketIo::open(server.addr(), &mallory).await;
    for n in 0..RAW_SOCKETIO_CASES {
        raw_socketio_case(&mut raw, &mut rng, &conversation_id, id(), n).await;
    }

    let delivered = chatter.finish().await;
    assert!(delivered > 10, "the well-behaved users hardly chatted ({delivered} messages)");
    server.anonymous().get("/healthz").await.expect(200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes(server.pid());
    println!(
        "{} cases; ws reconnects {}, socket.io disconnects {socketio_disconnects}, raw socket.io reconnects {}; \
         {delivered} good messages delivered; RSS baseline {} KiB, after {} KiB",
        WS_CASES + SOCKETIO_CASES + RAW_SOCKETIO_CASES,
        ws.reconnects,
        raw.reconnects,
        baseline / 1024,
        after / 1024
    );
    assert!(
        after <= baseline + MEMORY_TOLERANCE_BYTES,
        "memory did not return to baseline: {baseline} → {after} bytes"
    );
    let log = server.log_text();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}
