//! Keepalive: the hub's round pings every connection each `ping_interval` and closes those
//! the client has not been heard from for `idle_timeout` (close 1001).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a connection's client was last heard from, against its idle timeout.
pub(super) struct Keepalive {
    idle_timeout_ms: u64,
    /// [`now_ms`] when the client last sent anything (a pong included).
    last_heard: AtomicU64,
}

impl Keepalive {
    /// A connection just heard from, idle after `idle_timeout` of silence.
    pub(super) fn new(idle_timeout: Duration) -> Self {
        Keepalive {
            idle_timeout_ms: u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX),
            last_heard: AtomicU64::new(now_ms()),
        }
    }

    /// The client sent something (a pong included).
    pub(super) fn heard(&self) {
        self.last_heard.store(now_ms(), Ordering::Relaxed);
    }

    /// The client has been silent for longer than the idle timeout.
    pub(super) fn idle(&self) -> bool {
        now_ms().saturating_sub(self.last_heard.load(Ordering::Relaxed)) > self.idle_timeout_ms
    }
}

/// Milliseconds since the first call (the clock of `last_heard`).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}
