//! How the hub writes to a `/ws` connection: queue its pre-encoded frame, close it for a
//! reason, keep it alive.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{Message, close_code};

use super::outbox::Connection;
use crate::hub::{Close, Outgoing, Sink};

impl Sink for Connection {
    fn send(&self, event: &Arc<Outgoing>) -> bool {
        event.ws_frame().is_some_and(|frame| self.push(Message::Text(frame)))
    }

    fn close(&self, reason: Close) {
        match reason {
            Close::Restart => {
                self.draining.store(true, Ordering::SeqCst);
                self.wake.notify_one();
            }
            Close::Admin => Connection::close(self, close_code::POLICY, "disconnected by an operator"),
            Close::Banned => Connection::close(self, close_code::POLICY, "forbidden: banned"),
            Close::Resync => Connection::close(
                self,
                close_code::AGAIN,
                "messages may have been missed: reconnect and sync",
            ),
        }
    }

    /// The keepalive round: closes the connection (1001) when the client has been silent
    /// for the idle timeout, else pings it.
    fn keepalive(&self) {
        if self.keepalive.idle() {
            Connection::close(self, close_code::AWAY, "idle timeout");
        } else {
            self.push(Message::Ping(Default::default()));
        }
    }
}
