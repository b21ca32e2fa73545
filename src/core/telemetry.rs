//! The metrics chatd records, named once here and recorded through the `metrics` facade
//! (a no-op until the process installs a recorder; the Prometheus exporter lives at the edge,
//! in `transport::prometheus`). Every name starts with `chatd_` and carries its unit; every
//! label value comes from a small fixed set, never from client input, so a client cannot
//! grow the number of series.
//!
//! Recording happens where every transport converges (the core and the event dispatch);
//! only connection counts and deliveries are recorded per transport, as only a transport
//! knows its connections.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use super::time::Timestamp;
use crate::core::server_events::ServerEvent;

/// Open realtime connections, by `transport`.
pub const CONNECTIONS: &str = "chatd_connections";
/// Connections opened, by `transport`.
pub const CONNECTS: &str = "chatd_connects_total";
/// Connections closed, by `transport` and `reason`.
pub const DISCONNECTS: &str = "chatd_disconnects_total";
/// Client events received on the realtime transports, by `event`.
pub const EVENTS: &str = "chatd_events_total";
/// Messages committed (not counting `client_id` repeats).
pub const MESSAGES_SENT: &str = "chatd_messages_sent_total";
/// Event frames handed to local connections, by `event`.
pub const DELIVERIES: &str = "chatd_deliveries_total";
/// From the receipt of a send to its durable commit.
pub const SEND_COMMIT_SECONDS: &str = "chatd_send_commit_seconds";
/// Socket writes (flushes) of plain-WebSocket connections.
pub const WS_WRITES: &str = "chatd_ws_writes_total";
/// Frames those writes carried: over `chatd_ws_writes_total`, how many frames leave per write.
pub const WS_FRAMES_WRITTEN: &str = "chatd_ws_frames_written_total";
/// From a message's commit to its `message:new` frame handed to a local connection.
pub const COMMIT_DELIVER_SECONDS: &str = "chatd_commit_deliver_seconds";
/// Errors answered on any transport, by contract `code`.
pub const REJECTED: &str = "chatd_rejected_total";
/// Push jobs not yet finished.
pub const PUSH_OUTBOX_DEPTH: &str = "chatd_push_outbox_depth";
/// Store failures observed (by requests and background work).
pub const STORE_ERRORS: &str = "chatd_store_errors_total";
/// Bus failures (messages that could not be published or read, lost subscriptions).
pub const BUS_ERRORS: &str = "chatd_bus_errors_total";
/// Whether a backend answers its probe (1) or not (0), by `backend`.
pub const BACKEND_UP: &str = "chatd_backend_up";
/// Histogram: time to check and process one upload (sniff, decode, re-encode, thumbnail).
pub const MEDIA_PROCESS_SECONDS: &str = "chatd_media_process_seconds";

/// Registers each metric's help text and unit with the installed recorder.
pub fn describe() {
    describe_gauge!(CONNECTIONS, "Open realtime connections, by transport");
    describe_counter!(CONNECTS, "Realtime connections opened, by transport");
    describe_counter!(DISCONNECTS, "Realtime connections closed, by transport and reason");
    describe_counter!(EVENTS, "Client events received on the realtime transports, by event");
    describe_counter!(MESSAGES_SENT, "Messages committed");
    describe_histogram!(MEDIA_PROCESS_SECONDS, Unit::Seconds, "Checking and processing one upload");
    describe_counter!(DELIVERIES, "Event frames handed to local connections, by event");
    describe_counter!(WS_WRITES, "Socket writes (one flush each) of plain-WebSocket connections");
    describe_counter!(WS_FRAMES_WRITTEN, "Frames written by those writes (frames per write = the ratio)");
    describe_histogram!(SEND_COMMIT_SECONDS, Unit::Seconds, "From the receipt of a send to its commit");
    describe_histogram!(
        COMMIT_DELIVER_SECONDS,
        Unit::Seconds,
        "From a message's commit to its message:new frame handed to a local connection"
    );
    describe_counter!(REJECTED, "Errors answered on any transport, by code");
    describe_gauge!(PUSH_OUTBOX_DEPTH, "Push jobs not yet sent or dropped");
    describe_counter!(STORE_ERRORS, "Store failures observed");
    describe_counter!(BUS_ERRORS, "Bus publish and subscription failures");
    describe_gauge!(BACKEND_UP, "Whether a backend answers its probe (1) or not (0), by backend");
}

/// A realtime transport, as the `transport` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Socket.IO (WebSocket or long-polling).
    SocketIo,
    /// Plain WebSocket at `/ws`.
    Ws,
    /// The notification stream (SSE).
    Sse,
}

impl Transport {
    /// The transport of a connection named `<transport>:<node>:<n>` (the hub's names).
    pub fn of_connection(name: &str) -> Option<Transport> {
        [Transport::SocketIo, Transport::Ws, Transport::Sse]
            .into_iter()
            .find(|transport| name.split(':').next() == Some(transport.as_str()))
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::SocketIo => "socketio",
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// Why a connection ended, as the `reason` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Disconnect {
    /// The client closed it, or went away.
    ClientClosed = 1,
    /// The client stopped answering pings (or sent nothing for the idle timeout).
    PingTimeout,
    /// The token's `exp` passed while connected.
    TokenExpired,
    /// The client read too slowly; its outbound queue overflowed.
    SlowConsumer,
    /// The server asked the client to reconnect and `sync` (events may have been missed).
    Resync,
    /// A frame over the size limit.
    TooLarge,
    /// The client broke the protocol.
    ProtocolError,
    /// The node is shutting down.
    ServerShutdown,
    /// The server ended this connection on purpose.
    Kicked,
    /// A transport or server failure.
    Error,
}

impl Disconnect {
    const ALL: [Disconnect; 10] = [
        Disconnect::ClientClosed,
        Disconnect::PingTimeout,
        Disconnect::TokenExpired,
        Disconnect::SlowConsumer,
        Disconnect::Resync,
        Disconnect::TooLarge,
        Disconnect::ProtocolError,
        Disconnect::ServerShutdown,
        Disconnect::Kicked,
        Disconnect::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Disconnect::ClientClosed => "client_closed",
            Disconnect::PingTimeout => "ping_timeout",
            Disconnect::TokenExpired => "token_expired",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::Resync => "resync",
            Disconnect::TooLarge => "too_large",
            Disconnect::ProtocolError => "protocol_error",
            Disconnect::ServerShutdown => "server_shutdown",
            Disconnect::Kicked => "kicked",
            Disconnect::Error => "error",
        }
    }
}

/// One open connection in the metrics: counted when made, uncounted (with the reason it was
/// given, else `client_closed`) when dropped, so every path out of a connection counts once.
#[derive(Debug)]
pub struct ConnectionMetrics {
    transport: Transport,
    /// `Disconnect as u8`, 0 while no reason was given.
    reason: AtomicU8,
}

impl ConnectionMetrics {
    /// Counts a connection of `transport` as open.
    pub fn open(transport: Transport) -> ConnectionMetrics {
        counter!(CONNECTS, "transport" => transport.as_str()).increment(1);
        gauge!(CONNECTIONS, "transport" => transport.as_str()).increment(1.0);
        ConnectionMetrics { transport, reason: AtomicU8::new(0) }
    }

    /// Records why the connection ends; the first reason given wins.
    pub fn closing(&self, reason: Disconnect) {
        let _ = self.reason.compare_exchange(0, reason as u8, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The reason given so far, if any.
    pub fn reason(&self) -> Option<Disconnect> {
        let value = self.reason.load(Ordering::Relaxed);
        Disconnect::ALL.into_iter().find(|reason| *reason as u8 == value)
    }
}

impl Drop for ConnectionMetrics {
    fn drop(&mut self) {
        let transport = self.transport.as_str();
        let reason = self.reason().unwrap_or(Disconnect::ClientClosed).as_str();
        gauge!(CONNECTIONS, "transport" => transport).decrement(1.0);
        counter!(DISCONNECTS, "transport" => transport, "reason" => reason).increment(1);
    }
}

/// A client event arrived; `event` is a known event name or `unknown`.
pub fn event_received(event: &'static str) {
    counter!(EVENTS, "event" => event).increment(1);
}

/// An upload was checked and processed in `took`.
pub fn media_processed(took: std::time::Duration) {
    histogram!(MEDIA_PROCESS_SECONDS).record(took.as_secs_f64());
}

/// A message sent at `received` was committed.
pub fn message_committed(received: Instant) {
    counter!(MESSAGES_SENT).increment(1);
    histogram!(SEND_COMMIT_SECONDS).record(received.elapsed().as_secs_f64());
}

/// `event` was handed to `connections` local connections; for `message:new`, the time since
/// the message's commit (its `created_at`, so that it holds across nodes) is recorded once.
pub fn delivered(event: &ServerEvent, connections: usize) {
    if connections == 0 {
        return;
    }
    delivered_named(event.label(), connections);
    if let Some(committed_at) = event.committed_at() {
        let millis = Timestamp::now().millis().saturating_sub(committed_at.millis()).max(0);
        histogram!(COMMIT_DELIVER_SECONDS).record(millis as f64 / 1000.0);
    }
}

/// A plain-WebSocket connection wrote `frames` frames with one flush. Handles are looked up
/// once (the recorder is installed at start, before any connection).
pub fn ws_written(frames: usize) {
    static COUNTERS: std::sync::OnceLock<(metrics::Counter, metrics::Counter)> = std::sync::OnceLock::new();
    let (writes, written) = COUNTERS.get_or_init(|| (counter!(WS_WRITES), counter!(WS_FRAMES_WRITTEN)));
    writes.increment(1);
    written.increment(u64::try_from(frames).unwrap_or(u64::MAX));
}

/// Frames of event `event` were handed to `connections` local connections.
pub fn delivered_named(event: &'static str, connections: usize) {
    counter!(DELIVERIES, "event" => event).increment(u64::try_from(connections).unwrap_or(u64::MAX));
}

/// An error with contract code `code` was answered.
pub fn rejected(code: &'static str) {
    counter!(REJECTED, "code" => code).increment(1);
}

/// A store operation failed.
pub fn store_error() {
    counter!(STORE_ERRORS).increment(1);
}

/// A bus operation failed.
pub fn bus_error() {
    counter!(BUS_ERRORS).increment(1);
}

/// The outcome of probing `backend` (`store`, `redis`).
pub fn backend_up(backend: &'static str, up: bool) {
    gauge!(BACKEND_UP, "backend" => backend).set(if up { 1.0 } else { 0.0 });
}

/// The number of unfinished push jobs.
pub fn push_outbox_depth(depth: u64) {
    gauge!(PUSH_OUTBOX_DEPTH).set(depth as f64);
}

/// Messages committed through this node per second over the last minute: a ring of 60
/// one-second buckets. `std::sync::Mutex`: one short update per committed message (on the
/// store's commit path), no `.await` inside.
pub struct MessageRate {
    /// (Unix second, messages committed in it), at index second % 60.
    buckets: Mutex<[(i64, u64); 60]>,
}

impl Default for MessageRate {
    fn default() -> Self {
        MessageRate { buckets: Mutex::new([(0, 0); 60]) }
    }
}

impl MessageRate {
    fn now_second() -> i64 {
        Timestamp::now().millis().div_euclid(1000)
    }

    /// Counts one committed message.
    pub fn record(&self) {
        let second = Self::now_second();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = &mut buckets[second.rem_euclid(60) as usize];
        if bucket.0 != second {
            *bucket = (second, 0);
        }
        bucket.1 += 1;
    }

    /// Messages counted in the last 60 seconds (this one included).
    pub fn last_minute(&self) -> u64 {
        let second = Self::now_second();
        let buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        buckets.iter().filter(|(at, _)| second - at < 60).map(|(_, count)| count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_disconnect_reason_reads_back_as_given() {
        for reason in Disconnect::ALL {
            let metrics = ConnectionMetrics::open(Transport::Ws);
            metrics.closing(reason);
            metrics.closing(Disconnect::Error);
            assert_eq!(metrics.reason(), Some(reason), "the first reason wins");
        }
        assert_eq!(ConnectionMetrics::open(Transport::Sse).reason(), None);
    }
}

#[cfg(test)]
mod message_rate_tests {
    use super::*;

    #[test]
    fn the_message_rate_counts_the_current_minute() {
        let rate = MessageRate::default();
        assert_eq!(rate.last_minute(), 0);
        rate.record();
        rate.record();
        assert_eq!(rate.last_minute(), 2);
    }

    #[test]
    fn a_bucket_older_than_a_minute_is_not_counted() {
        let rate = MessageRate::default();
        let stale = MessageRate::now_second() - 60;
        rate.buckets.lock().unwrap()[stale.rem_euclid(60) as usize] = (stale, 5);
        assert_eq!(rate.last_minute(), 0);
    }
}
