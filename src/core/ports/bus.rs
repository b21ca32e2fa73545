//! The bus port: carries committed events between the nodes' hubs.

use async_trait::async_trait;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::core::realtime::BusMessage;

use super::BackendHealth;

/// What a node can listen to on a shared bus: one conversation's events, or one user's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Deliveries to a conversation's subscribers.
    Conversation(String),
    /// Deliveries to a user's connections, and their subscription changes.
    User(String),
    /// Changes every node must hear (bans), whatever connections it serves.
    Everyone,
}

/// Carries committed events to the connections that should see them, on this node and (with
/// a shared bus) on others. Delivery is best effort: clients repair gaps with `sync`.
///
/// A node receives what is published on the topics it watches (see [`BusMessage::topic`]);
/// transports watch the user of every connection and every conversation a connection is
/// subscribed to, and unwatch exactly as often. A bus that carries everything to every
/// subscriber (the in-process one) may ignore watching.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes a message, in publication order; never blocks and never fails the caller
    /// (a message that cannot be published is logged and dropped).
    fn publish(&self, message: BusMessage);

    /// Publishes `messages` in order, as one bus message where the bus can (the in-process
    /// bus: one [`BusMessage::Batch`]); a shared bus publishes each on its topic.
    fn publish_all(&self, messages: Vec<BusMessage>) {
        for message in messages {
            self.publish(message);
        }
    }

    /// A stream of everything this node receives from now on.
    fn subscribe(&self) -> broadcast::Receiver<Arc<BusMessage>>;

    /// Starts receiving `topic` on this node. Counted: each call needs one [`Bus::unwatch`].
    fn watch(&self, topic: Topic) {
        let _ = topic;
    }

    /// Undoes one [`Bus::watch`]; the node stops receiving `topic` when none is left.
    fn unwatch(&self, topic: Topic) {
        let _ = topic;
    }

    /// Resolves once every earlier `watch` of this node is in effect (or the bus is down).
    async fn settled(&self) {}

    /// Probes the backend carrying the bus with a cheap round trip (for metrics); `None` for
    /// a bus without one (the in-process bus).
    async fn health(&self) -> Option<BackendHealth> {
        None
    }
}
