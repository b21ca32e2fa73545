//! The bus port: carries committed events between the nodes' hubs, and what it carries
//! ([`BusMessage`]: deliveries to an [`Audience`], subscription changes, disconnects).

use async_trait::async_trait;

use std::sync::Arc;

use tokio::sync::broadcast;

use serde::{Deserialize, Serialize};

use crate::core::model::ConnectionId;
use crate::core::server_events::ServerEvent;

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

/// Why the server closes every connection of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// An operator disconnected the user (they may reconnect).
    Admin,
    /// The user was banned (reconnecting is refused with `forbidden`).
    Banned,
}

impl DisconnectReason {
    /// The close reason transports send (WebSocket close frame text).
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Admin => "disconnected by an operator",
            DisconnectReason::Banned => "forbidden: banned",
        }
    }
}

/// Who receives a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Every connection subscribed to the conversation.
    Conversation(String),
    /// Every connection of these users (each connection once).
    Users(Vec<String>),
    /// Every connection subscribed to the conversation whose user is one of `members` (sorted:
    /// the conversation's members as of the event's commit). A connection whose subscription
    /// outlived its user's membership, because the bus lost the unsubscribe, gets nothing.
    Members {
        /// The conversation.
        conversation_id: String,
        /// Its members when the event committed, sorted.
        members: Vec<String>,
    },
}

impl Audience {
    /// The connections of `members` subscribed to `conversation_id` (see [`Audience::Members`]).
    pub fn members(conversation_id: String, mut members: Vec<String>) -> Audience {
        members.sort_unstable();
        Audience::Members { conversation_id, members }
    }
}

/// An event for an audience, minus one connection or one user's connections.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Who receives it.
    pub to: Audience,
    /// Left out: the connection the action came from.
    pub except_connection: Option<ConnectionId>,
    /// Left out: every connection of this user (the actor).
    pub except_user: Option<String>,
    /// What they receive.
    pub event: ServerEvent,
}

/// What the core publishes on the bus, in order; transports apply it to their connections.
// Each message is built once and shared behind an `Arc`, so the variants' size difference
// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum BusMessage {
    /// Push an event.
    Deliver(Delivery),
    /// Subscribe every connection of a user to a conversation (they were added to it).
    Subscribe {
        /// The user.
        user_id: String,
        /// The conversation.
        conversation_id: String,
    },
    /// Unsubscribe every connection of a user from a conversation (they left or were removed).
    Unsubscribe {
        /// The user.
        user_id: String,
        /// The conversation.
        conversation_id: String,
    },
    /// Close every connection of a user, on every node (admin disconnect, ban).
    Disconnect {
        /// The user.
        user_id: String,
        /// Why (WebSocket connections get it as their close reason).
        reason: DisconnectReason,
    },
    /// A user was banned or unbanned: every node updates its in-memory banned set.
    BanChanged {
        /// The user.
        user_id: String,
        /// Banned now (true) or no longer (false).
        banned: bool,
    },
    /// Messages may have been lost before this one (the bus reconnected): connections must
    /// catch up with `sync`. Never published; a bus backend puts it in its node's stream.
    Gap,
    /// Several messages published together (one commit group's, see
    /// [`Bus::publish_all`](super::ports::Bus::publish_all)), to apply in order. Only the
    /// in-process bus carries them; never nested.
    Batch(Vec<BusMessage>),
}

impl BusMessage {
    /// The topic a shared bus carries this message on; `None` for a delivery to several
    /// users, which a shared bus publishes once per user.
    pub fn topic(&self) -> Option<Topic> {
        match self {
            BusMessage::Deliver(Delivery {
                to: Audience::Conversation(id) | Audience::Members { conversation_id: id, .. },
                ..
            }) => Some(Topic::Conversation(id.clone())),
            BusMessage::Deliver(Delivery { to: Audience::Users(users), .. }) => match users.as_slice() {
                [user] => Some(Topic::User(user.clone())),
                _ => None,
            },
            BusMessage::Subscribe { user_id, .. }
            | BusMessage::Unsubscribe { user_id, .. }
            | BusMessage::Disconnect { user_id, .. } => Some(Topic::User(user_id.clone())),
            BusMessage::BanChanged { .. } => Some(Topic::Everyone),
            BusMessage::Gap | BusMessage::Batch(_) => None,
        }
    }
}
