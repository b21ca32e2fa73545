//! The in-process bus: one node, no network. A broadcast channel; a subscriber that falls
//! more than [`CAPACITY`] messages behind skips ahead (its clients repair with `sync`).

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::core::ports::Bus;
use crate::core::ports::BusMessage;

/// Messages buffered per subscriber.
pub const CAPACITY: usize = 65_536;

/// The in-process [`Bus`].
pub struct LocalBus {
    sender: broadcast::Sender<Arc<BusMessage>>,
}

impl Default for LocalBus {
    fn default() -> Self {
        LocalBus { sender: broadcast::channel(CAPACITY).0 }
    }
}

impl Bus for LocalBus {
    fn publish(&self, message: BusMessage) {
        // No subscriber (no realtime transport running) is not an error.
        let _ = self.sender.send(Arc::new(message));
    }

    fn publish_all(&self, mut messages: Vec<BusMessage>) {
        match messages.len() {
            0 => {}
            1 => self.publish(messages.remove(0)),
            _ => self.publish(BusMessage::Batch(messages)),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<BusMessage>> {
        self.sender.subscribe()
    }
}
