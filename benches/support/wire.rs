//! The load generator's side of the wire: a lean WebSocket client (RFC 6455 framing written
//! here, over a plain tokio `TcpStream`), the two envelopes on top of it (Socket.IO v5 over
//! Engine.IO v4, and chatd's plain-WS JSON frames), and [`Mux`], which lets one task drive
//! many connections while only touching the ones that have something to do.
//!
//! Nothing here parses a whole message: envelopes are recognised by their prefix, and the
//! load generator picks the one or two fields it needs out of the bytes. That keeps the
//! client's CPU per received frame low, so one load-generator core can keep up with a server.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use anyhow::{Context as _, bail};
use futures::task::AtomicWaker;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Which envelope a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// Socket.IO v5 over Engine.IO v4, WebSocket transport only.
    SocketIo,
    /// chatd's plain WebSocket: `{id,event,data}` → `{id,ack}`, pushes `{event,data}`.
    Ws,
}

/// WebSocket opcodes.
const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A frame header parsed out of a buffer.
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    /// The payload's position in the buffer (unmasked in place if it was masked).
    pub payload: Range<usize>,
    /// Bytes the whole frame takes.
    pub len: usize,
}

/// Parses the frame at the start of `buf`; unmasks its payload in place. `None` until the
/// whole frame is there.
pub fn parse_frame(buf: &mut [u8]) -> Option<FrameHead> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (mut head, len) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (4, u16::from_be_bytes([buf[2], buf[3]]) as usize)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&buf[2..10]);
            (10, usize::try_from(u64::from_be_bytes(bytes)).unwrap_or(usize::MAX / 2))
        }
        n => (2, n as usize),
    };
    let mask = if masked {
        if buf.len() < head + 4 {
            return None;
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&buf[head..head + 4]);
        head += 4;
        Some(key)
    } else {
        None
    };
    if buf.len() - head < len {
        return None;
    }
    let payload = head..head + len;
    if let Some(key) = mask {
        for (i, byte) in buf[payload.clone()].iter_mut().enumerate() {
            *byte ^= key[i & 3];
        }
    }
    Some(FrameHead { fin, opcode, payload, len: head + len })
}

/// Appends a frame header for a payload of `len` bytes (`masked`: a client frame, which the
/// caller must follow with the 4-byte key and the masked payload).
pub fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize, masked: bool) {
    let mask_bit = if masked { 0x80 } else { 0 };
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a client (masked) frame.
pub fn push_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    push_header(out, opcode, payload.len(), true);
    let key: [u8; 4] = rand::random();
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, byte) in out[start..].iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// Appends a client text frame.
pub fn push_text(out: &mut Vec<u8>, payload: &[u8]) {
    push_client_frame(out, OP_TEXT, payload);
}

/// What [`Conn::next_message`] found.
enum Parsed {
    /// A complete text or binary message at this range of the input buffer.
    Message(Range<usize>),
    /// A complete message reassembled from fragments in `frag`.
    Fragmented,
    /// Nothing complete yet.
    Incomplete,
}

/// One client WebSocket connection.
pub struct Conn {
    stream: TcpStream,
    inbuf: Vec<u8>,
    /// Where unparsed input starts in `inbuf`.
    pos: usize,
    /// Bytes waiting to be written.
    out: Vec<u8>,
    /// A fragmented message being reassembled.
    frag: Vec<u8>,
    /// The server closed (close frame or EOF) or the socket failed.
    pub closed: bool,
    /// WebSocket pings received (each answered with a pong).
    pub pings: u64,
}

impl Conn {
    /// Opens a WebSocket to `addr` at `path` (path and query), from `source` if given.
    pub async fn connect(addr: SocketAddr, source: Option<Ipv4Addr>, path: &str) -> anyhow::Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip.into(), 0)).with_context(|| format!("binding {ip}"))?;
        }
        let mut stream = socket.connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut inbuf = Vec::with_capacity(4096);
        loop {
            stream.readable().await?;
            match stream.try_read_buf(&mut inbuf) {
                Ok(0) => bail!("server closed the connection during the WebSocket handshake"),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head_len) = response.parse(&inbuf)? else { continue };
            let status = response.code.unwrap_or(0);
            if status != 101 {
                let body = String::from_utf8_lossy(&inbuf[head_len..]);
                bail!(
                    "WebSocket upgrade refused: HTTP {status} {}",
                    body.chars().take(200).collect::<String>()
                );
            }
            let accept = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                .map(|h| h.value)
                .unwrap_or_default();
            let expected = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            if accept != expected.as_bytes() {
                bail!("bad Sec-WebSocket-Accept in the upgrade response");
            }
            inbuf.drain(..head_len);
            return Ok(Conn {
                stream,
                inbuf,
                pos: 0,
                out: Vec::new(),
                frag: Vec::new(),
                closed: false,
                pings: 0,
            });
        }
    }

    /// Makes the next close an abortive one (RST, no TIME_WAIT): a dropped network.
    pub fn set_abortive_close(&self) {
        let _ = self.stream.set_zero_linger();
    }

    /// The output buffer: append frames with [`push_text`] or [`Emit`].
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Finds the next complete message in the input, answering control frames on the way.
    fn next_message(&mut self) -> Parsed {
        loop {
            let Some(head) = parse_frame(&mut self.inbuf[self.pos..]) else { return Parsed::Incomplete };
            let payload = self.pos + head.payload.start..self.pos + head.payload.end;
            self.pos += head.len;
            match head.opcode {
                OP_TEXT | OP_BINARY if head.fin && self.frag.is_empty() => return Parsed::Message(payload),
                OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                    self.frag.extend_from_slice(&self.inbuf[payload]);
                    if head.fin {
                        return Parsed::Fragmented;
                    }
                }
                OP_PING => {
                    self.pings += 1;
                    let data = self.inbuf[payload].to_vec();
                    push_client_frame(&mut self.out, OP_PONG, &data);
                }
                OP_CLOSE => {
                    self.closed = true;
                    return Parsed::Incomplete;
                }
                _ => {}
            }
        }
    }

    /// Drops parsed input from the buffer.
    fn compact(&mut self) {
        if self.pos > 0 {
            self.inbuf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Calls `on_message(payload, out)` for every complete message already buffered.
    fn dispatch(&mut self, on_message: &mut impl FnMut(&[u8], &mut Vec<u8>)) {
        loop {
            match self.next_message() {
                Parsed::Message(range) => on_message(&self.inbuf[range], &mut self.out),
                Parsed::Fragmented => {
                    on_message(&self.frag, &mut self.out);
                    self.frag.clear();
                }
                Parsed::Incomplete => break,
            }
        }
        self.compact();
    }

    /// Without blocking: writes what is queued, reads everything available and hands each
    /// message to `on_message` (which may queue replies), then registers `waker` for the next
    /// readiness. Sets `closed` on EOF, a close frame or an error.
    pub fn pump(&mut self, waker: &Waker, mut on_message: impl FnMut(&[u8], &mut Vec<u8>)) {
        let mut cx = Context::from_waker(waker);
        self.dispatch(&mut on_message);
        loop {
            if self.closed {
                return;
            }
            if self.inbuf.capacity() - self.inbuf.len() < 2048 {
                self.inbuf.reserve(8192);
            }
            match self.stream.try_read_buf(&mut self.inbuf) {
                Ok(0) => self.closed = true,
                Ok(_) => self.dispatch(&mut on_message),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.stream.poll_read_ready(&mut cx).is_pending() {
                        break;
                    }
                }
                Err(_) => self.closed = true,
            }
        }
        self.flush(waker);
    }

    /// Without blocking: writes as much of the queued output as the socket takes; if some is
    /// left, registers `waker` for write readiness.
    pub fn flush(&mut self, waker: &Waker) {
        let mut cx = Context::from_waker(waker);
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.try_write(&self.out[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.stream.poll_write_ready(&mut cx).is_pending() {
                        break;
                    }
                }
                Err(_) => {
                    self.closed = true;
                    self.out.clear();
                    return;
                }
            }
        }
        self.out.drain(..written);
    }

    /// Writes everything queued (async; for setup and handshakes).
    pub async fn send_all(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Waits for the next complete message (async; for setup and handshakes). Control frames
    /// are answered on the way.
    pub async fn recv(&mut self) -> anyhow::Result<Vec<u8>> {
        loop {
            let message = match self.next_message() {
                Parsed::Message(range) => Some(self.inbuf[range].to_vec()),
                Parsed::Fragmented => Some(std::mem::take(&mut self.frag)),
                Parsed::Incomplete => None,
            };
            if !self.out.is_empty() {
                self.send_all().await?;
            }
            if let Some(message) = message {
                self.compact();
                return Ok(message);
            }
            if self.closed {
                bail!("the server closed the connection");
            }
            self.compact();
            self.inbuf.reserve(4096);
            self.stream.readable().await?;
            match self.stream.try_read_buf(&mut self.inbuf) {
                Ok(0) => bail!("the server closed the connection"),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Builds envelopes into a reusable scratch buffer, then frames them into a connection's
/// output.
#[derive(Default)]
pub struct Emit {
    scratch: Vec<u8>,
}

impl Emit {
    /// Appends an event with an ack id: Socket.IO `42<id>["event",data]`, plain WS
    /// `{"id":<id>,"event":"event","data":data}`. `data` is JSON written by `write_data`.
    pub fn event(
        &mut self,
        out: &mut Vec<u8>,
        proto: Proto,
        event: &str,
        ack_id: u64,
        write_data: impl FnOnce(&mut Vec<u8>),
    ) {
        use std::io::Write;
        let s = &mut self.scratch;
        s.clear();
        match proto {
            Proto::SocketIo => {
                let _ = write!(s, "42{ack_id}[\"{event}\",");
                write_data(s);
                s.push(b']');
            }
            Proto::Ws => {
                let _ = write!(s, "{{\"id\":{ack_id},\"event\":\"{event}\",\"data\":");
                write_data(s);
                s.push(b'}');
            }
        }
        push_text(out, s);
    }
}

/// A message from the server, as far as the load generator cares.
#[derive(Debug, PartialEq)]
pub enum Incoming<'a> {
    /// A pushed event: its name and its data (JSON).
    Event(&'a [u8], &'a [u8]),
    /// The answer to our event `id`: the ack body (JSON).
    Ack(u64, &'a [u8]),
    /// Engine.IO ping (answer with [`ENGINE_IO_PONG`]).
    Ping,
    /// Anything else (Engine.IO open, Socket.IO connect, ...).
    Other,
}

/// The Engine.IO pong packet.
pub const ENGINE_IO_PONG: &[u8] = b"3";

/// Splits leading ASCII digits off `bytes`.
fn split_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let n = bytes[..digits].iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((n, &bytes[digits..]))
}

/// Recognises a server message by its envelope.
pub fn decode(proto: Proto, message: &[u8]) -> Incoming<'_> {
    match proto {
        Proto::SocketIo => {
            if message == b"2" {
                return Incoming::Ping;
            }
            if let Some(rest) = message.strip_prefix(b"42[\"") {
                // 42["name",data]
                let Some(end) = memchr::memchr(b'"', rest) else { return Incoming::Other };
                let data = rest[end + 1..].strip_prefix(b",").and_then(|d| d.strip_suffix(b"]"));
                return Incoming::Event(&rest[..end], data.unwrap_or(b"null"));
            }
            if let Some(rest) = message.strip_prefix(b"43") {
                // 43<id>[body]
                if let Some((id, rest)) = split_number(rest) {
                    let body = rest.strip_prefix(b"[").and_then(|b| b.strip_suffix(b"]")).unwrap_or(b"null");
                    return Incoming::Ack(id, body);
                }
            }
            Incoming::Other
        }
        Proto::Ws => {
            if let Some(rest) = message.strip_prefix(b"{\"event\":\"") {
                let Some(end) = memchr::memchr(b'"', rest) else { return Incoming::Other };
                let data = rest[end + 1..].strip_prefix(b",\"data\":").and_then(|d| d.strip_suffix(b"}"));
                return Incoming::Event(&rest[..end], data.unwrap_or(b"null"));
            }
            if let Some(rest) = message.strip_prefix(b"{\"id\":")
                && let Some((id, rest)) = split_number(rest)
            {
                let body = rest.strip_prefix(b",\"ack\":").and_then(|b| b.strip_suffix(b"}"));
                return Incoming::Ack(id, body.unwrap_or(b"null"));
            }
            Incoming::Other
        }
    }
}

/// The unsigned integer that follows `key` (e.g. `"seq":`) in `json`, if any.
pub fn find_u64(json: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(json, key)?;
    split_number(&json[at + key.len()..]).map(|(n, _)| n)
}

/// The string value that follows `key` (e.g. `"conversation_id":"`) in `json`, up to the
/// next quote (no unescaping: for ids).
pub fn find_str<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = memchr::memmem::find(json, key)? + key.len();
    let end = memchr::memchr(b'"', &json[at..])?;
    Some(&json[at..at + end])
}

/// Whether an ack body reports success: a top-level `"ok":true`, which the peer writes
/// first and chatd last (its keys are sorted).
pub fn ack_ok(body: &[u8]) -> bool {
    body.starts_with(b"{\"ok\":true") || body.ends_with(b",\"ok\":true}")
}

/// Source address for the `i`th connection: 127.0.0.2 ..= 127.0.0.9 in turn, so no
/// (source, destination) pair runs out of ephemeral ports.
pub fn source_for(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8)
}

/// Opens a realtime client: WebSocket, then the envelope's handshake, until chatd's (or the
/// peer's) `ready` has arrived.
pub async fn connect_client(
    addr: SocketAddr,
    proto: Proto,
    source: Option<Ipv4Addr>,
    token: &str,
) -> anyhow::Result<Conn> {
    let mut conn = match proto {
        Proto::SocketIo => {
            let mut conn = Conn::connect(addr, source, "/socket.io/?EIO=4&transport=websocket").await?;
            let open = conn.recv().await?;
            if !open.starts_with(b"0{") {
                bail!("expected the Engine.IO open packet, got {}", String::from_utf8_lossy(&open));
            }
            push_text(conn.out(), format!("40{{\"token\":\"{token}\"}}").as_bytes());
            conn.send_all().await?;
            conn
        }
        Proto::Ws => Conn::connect(addr, source, &format!("/ws?token={token}")).await?,
    };
    loop {
        let message = conn.recv().await?;
        match decode(proto, &message) {
            Incoming::Event(b"ready", _) => return Ok(conn),
            Incoming::Ping => {
                push_text(conn.out(), ENGINE_IO_PONG);
                conn.send_all().await?;
            }
            _ if message.starts_with(b"44") => {
                bail!("connection refused: {}", String::from_utf8_lossy(&message))
            }
            _ => {}
        }
    }
}

/// Sends one event and waits for its ack (setup only); returns the ack body.
pub async fn call(conn: &mut Conn, proto: Proto, event: &str, data: &str) -> anyhow::Result<Vec<u8>> {
    let id = 1_000_000_000;
    Emit::default().event(conn.out(), proto, event, id, |s| s.extend_from_slice(data.as_bytes()));
    conn.send_all().await?;
    loop {
        let message = conn.recv().await?;
        match decode(proto, &message) {
            Incoming::Ack(got, body) if got == id => return Ok(body.to_vec()),
            Incoming::Ping => {
                push_text(conn.out(), ENGINE_IO_PONG);
                conn.send_all().await?;
            }
            _ => {}
        }
    }
}

/// Drives many connections from one task: each slot has its own waker, which queues the
/// slot and wakes the task, so a wake-up only touches the connections that are ready.
pub struct Mux {
    shared: Arc<MuxShared>,
    wakers: Vec<Waker>,
}

struct MuxShared {
    ready: Mutex<Vec<usize>>,
    queued: Vec<AtomicBool>,
    task: AtomicWaker,
}

struct SlotWaker {
    slot: usize,
    shared: Arc<MuxShared>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.shared.queued[self.slot].swap(true, Ordering::AcqRel) {
            self.shared.ready.lock().unwrap_or_else(|p| p.into_inner()).push(self.slot);
        }
        self.shared.task.wake();
    }
}

impl Mux {
    /// A multiplexer for `slots` connections; every slot starts out ready.
    pub fn new(slots: usize) -> Mux {
        let shared = Arc::new(MuxShared {
            ready: Mutex::new((0..slots).collect()),
            queued: (0..slots).map(|_| AtomicBool::new(true)).collect(),
            task: AtomicWaker::new(),
        });
        let wakers = (0..slots)
            .map(|slot| Waker::from(Arc::new(SlotWaker { slot, shared: shared.clone() })))
            .collect();
        Mux { shared, wakers }
    }

    /// The waker to pump slot `slot` with.
    pub fn waker(&self, slot: usize) -> &Waker {
        &self.wakers[slot]
    }

    /// Queues `slot` as ready (e.g. after a new connection was put there).
    pub fn mark(&self, slot: usize) {
        self.wakers[slot].wake_by_ref();
    }

    /// Resolves when some slot is ready.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| {
            self.shared.task.register(cx.waker());
            if self.shared.ready.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// Moves the ready slots into `into` (cleared first).
    pub fn take(&self, into: &mut Vec<usize>) {
        into.clear();
        std::mem::swap(&mut *self.shared.ready.lock().unwrap_or_else(|p| p.into_inner()), into);
        for &slot in into.iter() {
            self.shared.queued[slot].store(false, Ordering::Release);
        }
    }
}
