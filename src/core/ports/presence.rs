//! The presence port: who is connected, shared by the nodes of one service.

use async_trait::async_trait;

use crate::core::server_events::PresenceInfo;
use crate::core::time::Timestamp;

/// Where a recipient of a message is, for notification routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// A connection of theirs is looking at the conversation.
    Focused,
    /// Connected, looking elsewhere.
    Online,
    /// No connection anywhere.
    Offline,
}

/// A user whose last node stopped answering (crashed or cut off) and who is offline now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    /// The user.
    pub user_id: String,
    /// When their node was last heard from.
    pub last_seen_at: Timestamp,
}

/// Presence shared by the nodes of one service. Each node keeps its own connections (the
/// core's `Presence`) and tells the directory only node-level changes: a user's first and
/// last connection on this node, a conversation that the first of them / none of them looks
/// at any more. The directory answers for the whole service.
///
/// Calls are carried out in call order and each callback runs exactly once, in call order:
/// with the service-wide answer, or, when the directory cannot be reached, with this node's
/// own view (the caller's fallback). Callbacks run on the directory's task: keep them short.
#[async_trait]
pub trait PresenceDirectory: Send + Sync + 'static {
    /// The user's first connection on this node opened; `came_online` runs if the user had
    /// no connection anywhere.
    fn node_joined(&self, user_id: &str, came_online: Box<dyn FnOnce() + Send>);

    /// The user's last connection on this node closed; `went_offline` runs with the time if
    /// the user has no connection left anywhere.
    fn node_left(&self, user_id: &str, went_offline: Box<dyn FnOnce(Timestamp) + Send>);

    /// A connection of the user on this node now looks at the conversation (`focused`), or
    /// the last one that did stopped.
    fn focus_changed(&self, user_id: &str, conversation_id: &str, focused: bool);

    /// Where each user is with respect to the conversation: `answer` gets one entry per user,
    /// in order. `local` is this node's view, the answer when the directory cannot give one.
    fn reach(
        &self,
        user_ids: Vec<String>,
        conversation_id: &str,
        local: Vec<Reach>,
        answer: Box<dyn FnOnce(Vec<Reach>) + Send>,
    );

    /// Presence of each user, one entry per user, in order.
    async fn info(&self, user_ids: &[String]) -> Result<Vec<PresenceInfo>, PresenceError>;

    /// Users who went offline because their node died, as the directory finds them; `None`
    /// after the first call (there is one consumer).
    fn departures(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Departure>>;
}

/// The presence directory could not answer.
#[derive(Debug, thiserror::Error)]
#[error("presence directory unavailable: {0}")]
pub struct PresenceError(pub String);
