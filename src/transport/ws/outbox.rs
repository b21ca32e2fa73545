//! A connection's outbox: the byte- and frame-bounded queue the hub (through the
//! connection's [`Sink`](crate::hub::Sink)) and the connection's own answers write to, and
//! the connection task drains with one flush. A client that falls too far behind is cut off
//! (close 1008) instead of buffered.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, close_code};
use serde::Serialize;
use tokio::sync::Notify;

use super::codec::encode;
use super::keepalive::Keepalive;

/// One open WebSocket: its outbox and the signals its task waits on.
pub(super) struct Connection {
    max_queued_bytes: usize,
    max_queued_frames: usize,
    /// Shutting down: finish the running event, flush, close with 1012.
    pub(super) draining: AtomicBool,
    /// When the client was last heard from.
    pub(super) keepalive: Keepalive,
    outbox: Mutex<Outbox>,
    /// Frames were queued.
    pub(super) wake: Notify,
    /// The connection must end now (see [`Outbox::close`]).
    pub(super) cut: Notify,
}

#[derive(Default)]
struct Outbox {
    frames: VecDeque<Message>,
    bytes: usize,
    /// Set once: the close frame to send before dropping the connection.
    close: Option<CloseFrame>,
}

impl Connection {
    /// An open connection with an empty outbox of at most `max_queued_bytes` (a larger
    /// frame still goes to a client that has read everything before it) and
    /// `max_queued_frames`, closed after `idle_timeout` of silence.
    pub(super) fn new(max_queued_bytes: usize, max_queued_frames: usize, idle_timeout: Duration) -> Self {
        Connection {
            max_queued_bytes,
            max_queued_frames,
            draining: AtomicBool::new(false),
            keepalive: Keepalive::new(idle_timeout),
            outbox: Mutex::default(),
            wake: Notify::new(),
            cut: Notify::new(),
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame; cuts the connection off when the client has fallen too far behind.
    /// Returns whether the frame was queued.
    pub(super) fn push(&self, frame: Message) -> bool {
        let size = frame_len(&frame);
        {
            let mut outbox = self.outbox();
            if outbox.close.is_some() {
                return false;
            }
            // The bound is on the backlog: one frame larger than the bound (a big `sync`
            // page) still goes to a client that has read everything before it.
            let over_bytes = outbox.bytes > 0 && outbox.bytes + size > self.max_queued_bytes;
            if over_bytes || outbox.frames.len() >= self.max_queued_frames {
                drop(outbox);
                tracing::info!("slow consumer disconnected");
                self.close(close_code::POLICY, "slow consumer: outbound queue full");
                return false;
            }
            outbox.bytes += size;
            outbox.frames.push_back(frame);
        }
        self.wake.notify_one();
        true
    }

    /// Queues a frame of `value` as JSON text.
    pub(super) fn push_json(&self, value: &impl Serialize) {
        match encode(value) {
            Ok(frame) => {
                self.push(frame);
            }
            Err(err) => tracing::error!(error = %err, "could not encode a frame"),
        }
    }

    /// Ends the connection: its task stops whatever it is doing, sends `code`/`reason`
    /// (best effort) and drops the socket. The first close wins.
    pub(super) fn close(&self, code: u16, reason: &'static str) {
        let mut outbox = self.outbox();
        if outbox.close.is_none() {
            outbox.close = Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) });
            outbox.frames = VecDeque::new();
            outbox.bytes = 0;
            drop(outbox);
            self.cut.notify_one();
        }
    }

    /// Takes every queued frame; the outbox keeps no memory while idle.
    pub(super) fn take_frames(&self) -> VecDeque<Message> {
        let mut outbox = self.outbox();
        outbox.bytes = 0;
        std::mem::take(&mut outbox.frames)
    }

    /// Queues `frame` ahead of everything else (for `ready`, which must come first).
    pub(super) fn push_first(&self, frame: Message) {
        let mut outbox = self.outbox();
        if outbox.close.is_none() {
            outbox.bytes += frame_len(&frame);
            outbox.frames.push_front(frame);
            drop(outbox);
            self.wake.notify_one();
        }
    }

    /// The close frame to send, once the connection is closing.
    pub(super) fn close_frame(&self) -> Option<CloseFrame> {
        self.outbox().close.clone()
    }
}

/// The bytes a frame takes in the outbox.
fn frame_len(frame: &Message) -> usize {
    match frame {
        Message::Text(text) => text.len(),
        Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
        Message::Close(_) => 0,
    }
}
