//! The ceiling relay: what this machine can do for room fan-out when a server does nothing
//! else. It speaks chatd's plain-WS framing (`{id,event,data}` → `{id,ack}`, pushes
//! `{event,data}`) with just enough vocabulary for the load generator: `ready` on connect,
//! `conversation:join`, `message:send` (ack + `message:new` to the room's other
//! connections, with a message object shaped like chatd's) and an empty `sync`. No auth, no
//! persistence, no validation beyond parsing.
//!
//! Each message is encoded once into a complete WebSocket frame whose bytes every recipient
//! shares; each connection has a queue of such frames and a writer that copies everything
//! queued into one buffer and writes it with one call (per-connection coalescing).
//! One thread (a current-thread Tokio runtime), like the servers it is compared with.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write as _;
use std::rc::Rc;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::wire::{parse_frame, push_header};

/// Serves forever on `listener` (blocking the calling thread).
pub fn serve(listener: std::net::TcpListener) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let relay = Rc::new(Relay::default());
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let relay = relay.clone();
            tokio::task::spawn_local(async move {
                let _ = connection(relay, stream).await;
            });
        }
    })
}

#[derive(Default)]
struct Relay {
    rooms: RefCell<HashMap<String, Room>>,
    next_peer: Cell<u64>,
}

#[derive(Default)]
struct Room {
    seq: u64,
    members: Vec<Rc<Peer>>,
}

/// One connection's outbound side.
struct Peer {
    id: u64,
    queue: RefCell<Vec<Rc<[u8]>>>,
    wake: Notify,
    closed: Cell<bool>,
}

impl Peer {
    fn push(&self, frame: Rc<[u8]>) {
        self.queue.borrow_mut().push(frame);
        self.wake.notify_one();
    }
}

/// A server (unmasked) text frame.
fn frame(payload: &[u8]) -> Rc<[u8]> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    push_header(&mut out, 0x1, payload.len(), false);
    out.extend_from_slice(payload);
    out.into()
}

#[derive(Deserialize)]
struct Envelope<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    event: &'a str,
    #[serde(default, borrow)]
    data: Option<Data<'a>>,
}

#[derive(Deserialize, Default)]
struct Data<'a> {
    #[serde(default, borrow)]
    conversation_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
}

async fn connection(relay: Rc<Relay>, mut stream: TcpStream) -> anyhow::Result<()> {
    // The upgrade request.
    let mut buf = Vec::with_capacity(4096);
    let key = loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(len) = request.parse(&buf)? {
            let key = request.headers.iter().find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"));
            let Some(key) = key else {
                stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await?;
                return Ok(());
            };
            let key = key.value.to_vec();
            buf.drain(..len);
            break key;
        }
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;

    let id = relay.next_peer.get() + 1;
    relay.next_peer.set(id);
    let peer =
        Rc::new(Peer { id, queue: RefCell::new(Vec::new()), wake: Notify::new(), closed: Cell::new(false) });
    let user = format!("user-{id}");
    peer.push(frame(
        format!(r#"{{"event":"ready","data":{{"user_id":"{user}","conversations":[]}}}}"#).as_bytes(),
    ));

    let (mut reader, mut writer) = stream.into_split();
    let write_peer = peer.clone();
    let write = async move {
        let mut batch = Vec::new();
        let mut bytes = Vec::with_capacity(16 * 1024);
        loop {
            write_peer.wake.notified().await;
            std::mem::swap(&mut batch, &mut *write_peer.queue.borrow_mut());
            if write_peer.closed.get() {
                return;
            }
            bytes.clear();
            for frame in batch.drain(..) {
                bytes.extend_from_slice(&frame);
            }
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let read_peer = peer.clone();
    let relay_for_read = relay.clone();
    let read = async move {
        let mut joined: Vec<String> = Vec::new();
        let mut out = Vec::with_capacity(1024);
        'read: loop {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let mut pos = 0;
            while let Some(head) = parse_frame(&mut buf[pos..]) {
                let payload = pos + head.payload.start..pos + head.payload.end;
                pos += head.len;
                match head.opcode {
                    0x1 | 0x2 => {
                        out.clear();
                        handle(&relay_for_read, &read_peer, &user, &buf[payload], &mut joined, &mut out);
                    }
                    0x9 => {
                        let mut pong = Vec::new();
                        push_header(&mut pong, 0xA, payload.len(), false);
                        pong.extend_from_slice(&buf[payload]);
                        read_peer.push(pong.into());
                    }
                    0x8 => break 'read,
                    _ => {}
                }
            }
            buf.drain(..pos);
        }
        let mut rooms = relay_for_read.rooms.borrow_mut();
        for room in joined {
            if let Some(room) = rooms.get_mut(&room) {
                room.members.retain(|p| p.id != read_peer.id);
            }
        }
        read_peer.closed.set(true);
        read_peer.wake.notify_one();
    };
    tokio::join!(read, write);
    Ok(())
}

/// Handles one client frame.
fn handle(
    relay: &Relay,
    peer: &Rc<Peer>,
    user: &str,
    payload: &[u8],
    joined: &mut Vec<String>,
    out: &mut Vec<u8>,
) {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) else {
        peer.push(frame(br#"{"event":"error","data":{"code":"invalid","message":"not JSON"}}"#));
        return;
    };
    let data = envelope.data.unwrap_or_default();
    let ack_id = envelope.id.unwrap_or(0);
    match envelope.event {
        "conversation:join" => {
            let room = data.conversation_id.unwrap_or_default().into_owned();
            relay.rooms.borrow_mut().entry(room.clone()).or_default().members.push(peer.clone());
            joined.push(room);
            let _ = write!(out, r#"{{"id":{ack_id},"ack":{{"ok":true}}}}"#);
            peer.push(frame(out));
        }
        "message:send" => {
            let room_id = data.conversation_id.unwrap_or_default();
            let content = serde_json::to_string(&data.content.unwrap_or_default()).unwrap_or_default();
            let mut rooms = relay.rooms.borrow_mut();
            let Some(room) = rooms.get_mut(room_id.as_ref()) else {
                let _ = write!(
                    out,
                    r#"{{"id":{ack_id},"ack":{{"ok":false,"error":{{"code":"not_a_member"}}}}}}"#
                );
                peer.push(frame(out));
                return;
            };
            room.seq += 1;
            let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
            let message = format!(
                r#"{{"id":"{}","conversation_id":"{room_id}","seq":{},"sender_id":"{user}","type":"text","content":{content},"client_id":null,"reply_to_id":null,"attachments":[],"metadata":{{}},"created_at":"{now}","edited_at":null,"deleted_at":null}}"#,
                uuid::Uuid::now_v7(),
                room.seq
            );
            let push = frame(format!(r#"{{"event":"message:new","data":{message}}}"#).as_bytes());
            for member in &room.members {
                if member.id != peer.id {
                    member.push(push.clone());
                }
            }
            let _ = write!(out, r#"{{"id":{ack_id},"ack":{{"ok":true,"message":{message}}}}}"#);
            peer.push(frame(out));
        }
        "sync" => {
            let _ = write!(
                out,
                r#"{{"id":{ack_id},"ack":{{"ok":true,"messages":[],"has_more":false,"conversations":[]}}}}"#
            );
            peer.push(frame(out));
        }
        _ => {
            let _ = write!(out, r#"{{"id":{ack_id},"ack":{{"ok":false,"error":{{"code":"invalid"}}}}}}"#);
            peer.push(frame(out));
        }
    }
}
