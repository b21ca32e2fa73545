//! Who is connected and what each connection is looking at. The registry holds this node's
//! connections; with a [`PresenceDirectory`] (several nodes) it reports node-level changes to
//! it and asks it the service-wide questions, falling back to its own view when it cannot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::ports::{Bus, Departure, PresenceDirectory, Reach, Store};
use super::telemetry::Transport;
use super::time::Timestamp;
use crate::core::model::ConnectionId;
use crate::core::ports::{Audience, BusMessage, Delivery};
use crate::core::server_events::{PresenceChange, PresenceInfo, ServerEvent};

/// What one connection is looking at, and the arrival of the event that said so.
#[derive(Default)]
struct Focus {
    conversation: Option<String>,
    arrival: u64,
}

#[derive(Default)]
struct UserPresence {
    /// Open connections and what each is focused on.
    connections: HashMap<ConnectionId, Focus>,
    /// When the last connection closed.
    last_seen_at: Option<Timestamp>,
}

impl UserPresence {
    /// Whether a connection other than `except` looks at the conversation.
    fn others_focus(&self, conversation_id: &str, except: &ConnectionId) -> bool {
        self.connections
            .iter()
            .any(|(id, focus)| id != except && focus.conversation.as_deref() == Some(conversation_id))
    }

    fn reach(&self, conversation_id: &str) -> Reach {
        if self.connections.values().any(|f| f.conversation.as_deref() == Some(conversation_id)) {
            Reach::Focused
        } else if self.connections.is_empty() {
            Reach::Offline
        } else {
            Reach::Online
        }
    }

    fn info(&self) -> PresenceInfo {
        if self.connections.is_empty() {
            PresenceInfo { online: false, last_seen_at: self.last_seen_at }
        } else {
            PresenceInfo { online: true, last_seen_at: None }
        }
    }
}

/// This node's open connections by transport, and the users they belong to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct NodeConnections {
    /// Socket.IO sockets.
    pub socketio: usize,
    /// Plain WebSocket connections (`/ws`).
    pub ws: usize,
    /// Notification streams (SSE).
    pub sse: usize,
    /// All of them.
    pub total: usize,
    /// Users with at least one of them.
    #[serde(skip)]
    pub users: usize,
}

/// The presence registry. A `std::sync::Mutex` is right here: every operation is a few map
/// operations with no `.await` inside. Changes are reported to the directory under the lock,
/// so it hears them in the order they happened.
#[derive(Default)]
pub struct Presence {
    users: Mutex<HashMap<String, UserPresence>>,
    directory: Option<Arc<dyn PresenceDirectory>>,
}

impl Presence {
    /// A registry that shares presence through `directory`, or keeps it to this node.
    pub fn new(directory: Option<Arc<dyn PresenceDirectory>>) -> Self {
        Presence { users: Mutex::default(), directory }
    }

    /// The directory this registry reports to, if presence is shared.
    pub fn directory(&self) -> Option<&Arc<dyn PresenceDirectory>> {
        self.directory.as_ref()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, UserPresence>) -> T) -> T {
        let mut users = self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut users)
    }

    /// Registers a connection; calls `came_online` if it is the user's first (anywhere, when
    /// shared). Announcements leave in the order the changes happened.
    pub fn connect(
        &self,
        user_id: &str,
        connection: &ConnectionId,
        came_online: impl FnOnce() + Send + 'static,
    ) {
        self.with(|users| {
            let user = users.entry(user_id.to_owned()).or_default();
            user.connections.insert(connection.clone(), Focus::default());
            if user.connections.len() == 1 {
                match &self.directory {
                    Some(directory) => directory.node_joined(user_id, Box::new(came_online)),
                    None => came_online(),
                }
            }
        })
    }

    /// Removes a connection; calls `went_offline` with the time if it was the user's last
    /// (anywhere, when shared). Removing an unknown connection does nothing, so a double
    /// disconnect is harmless.
    pub fn disconnect(
        &self,
        user_id: &str,
        connection: &ConnectionId,
        went_offline: impl FnOnce(Timestamp) + Send + 'static,
    ) {
        self.with(|users| {
            let Some(user) = users.get_mut(user_id) else { return };
            let Some(focus) = user.connections.remove(connection) else { return };
            if !user.connections.is_empty() {
                if let (Some(directory), Some(conversation)) = (&self.directory, focus.conversation)
                    && !user.others_focus(&conversation, connection)
                {
                    directory.focus_changed(user_id, &conversation, false);
                }
                return;
            }
            match &self.directory {
                // The directory keeps the last-seen time of users who are gone.
                Some(directory) => {
                    users.remove(user_id);
                    directory.node_left(user_id, Box::new(went_offline));
                }
                None => {
                    let now = Timestamp::now();
                    user.last_seen_at = Some(now);
                    went_offline(now);
                }
            }
        })
    }

    /// Sets what a connection is looking at (`None`: nothing), unless a later event of that
    /// connection (higher `arrival`) already did.
    pub fn focus(
        &self,
        user_id: &str,
        connection: &ConnectionId,
        conversation_id: Option<String>,
        arrival: u64,
    ) {
        self.refocus(user_id, connection, arrival, |_| Some(conversation_id));
    }

    /// Clears a connection's focus if it is on `conversation_id` (it stopped listening there),
    /// unless a later event of that connection already changed it.
    pub fn unfocus_conversation(
        &self,
        user_id: &str,
        connection: &ConnectionId,
        conversation_id: &str,
        arrival: u64,
    ) {
        self.refocus(user_id, connection, arrival, |current| {
            (current == Some(conversation_id)).then_some(None)
        });
    }

    /// Replaces a connection's focus with what `change` returns for the current one (`None`:
    /// no change) if the event is not older than the last applied one, and reports the
    /// node-level change to the directory.
    fn refocus(
        &self,
        user_id: &str,
        connection: &ConnectionId,
        arrival: u64,
        change: impl FnOnce(Option<&str>) -> Option<Option<String>>,
    ) {
        self.with(|users| {
            let Some(user) = users.get_mut(user_id) else { return };
            let Some(focus) = user.connections.get_mut(connection) else { return };
            if arrival < focus.arrival {
                return;
            }
            let Some(conversation) = change(focus.conversation.as_deref()) else { return };
            let previous = std::mem::replace(focus, Focus { conversation, arrival }).conversation;
            let Some(directory) = &self.directory else { return };
            let current = user.connections.get(connection).and_then(|f| f.conversation.clone());
            if previous == current {
                return;
            }
            if let Some(previous) = previous
                && !user.others_focus(&previous, connection)
            {
                directory.focus_changed(user_id, &previous, false);
            }
            if let Some(current) = current
                && !user.others_focus(&current, connection)
            {
                directory.focus_changed(user_id, &current, true);
            }
        });
    }

    /// This node's connections, counted by transport (told apart by their names).
    /// Walks every connection: for operators, not for hot paths.
    pub fn node_connections(&self) -> NodeConnections {
        self.with(|users| {
            let mut counts = NodeConnections::default();
            for user in users.values().filter(|u| !u.connections.is_empty()) {
                counts.users += 1;
                for id in user.connections.keys() {
                    match Transport::of_connection(id) {
                        Some(Transport::Ws) => counts.ws += 1,
                        Some(Transport::Sse) => counts.sse += 1,
                        Some(Transport::SocketIo) | None => counts.socketio += 1,
                    }
                    counts.total += 1;
                }
            }
            counts
        })
    }

    /// How many connections the user has open on this node.
    pub fn local_connections(&self, user_id: &str) -> usize {
        self.with(|users| users.get(user_id).map_or(0, |u| u.connections.len()))
    }

    /// Where each user is with respect to the conversation as far as this node knows, one
    /// entry per user in order (the whole answer on a single node; with a directory, the
    /// fallback for [`PresenceDirectory::reach`]).
    pub fn local_reach(&self, user_ids: &[String], conversation_id: &str) -> Vec<Reach> {
        self.with(|users| {
            user_ids
                .iter()
                .map(|id| users.get(id).map_or(Reach::Offline, |user| user.reach(conversation_id)))
                .collect()
        })
    }

    /// Presence of each user, one entry per user in order.
    pub async fn info(&self, user_ids: &[String]) -> Vec<PresenceInfo> {
        let local = || {
            self.with(|users| {
                let unknown = PresenceInfo { online: false, last_seen_at: None };
                user_ids.iter().map(|id| users.get(id).map_or(unknown.clone(), UserPresence::info)).collect()
            })
        };
        let Some(directory) = &self.directory else { return local() };
        match directory.info(user_ids).await {
            Ok(infos) => infos,
            Err(err) => {
                tracing::warn!(error = %err, "presence directory unavailable; answering for this node only");
                local()
            }
        }
    }
}

/// Publishes a presence change to `contacts`.
pub(crate) fn announce_presence(bus: &dyn Bus, contacts: &[String], event: ServerEvent) {
    if !contacts.is_empty() {
        bus.publish(BusMessage::Deliver(Delivery {
            to: Audience::Users(contacts.to_vec()),
            except_connection: None,
            except_user: None,
            event,
        }));
    }
}

/// Announces `user:offline` for users whose node died, as the presence directory finds them.
pub(crate) async fn announce_departures(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    mut departures: mpsc::UnboundedReceiver<Departure>,
) {
    while let Some(departure) = departures.recv().await {
        match store.contacts(&departure.user_id).await {
            Ok(contacts) => {
                let change =
                    PresenceChange { user_id: departure.user_id, last_seen_at: Some(departure.last_seen_at) };
                announce_presence(bus.as_ref(), &contacts, ServerEvent::UserOffline(change));
            }
            Err(err) => {
                super::telemetry::store_error();
                tracing::warn!(error = %err, user = %departure.user_id, "contacts unavailable; user:offline not announced");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn reach_of(presence: &Presence, user_id: &str, conversation_id: &str) -> Reach {
        presence.local_reach(&[user_id.to_owned()], conversation_id)[0]
    }

    #[tokio::test]
    async fn a_user_goes_offline_only_when_the_last_connection_closes() {
        let presence = Presence::default();
        let (online, offline) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let came = || {
            let online = online.clone();
            move || {
                online.fetch_add(1, Ordering::Relaxed);
            }
        };
        let went = || {
            let offline = offline.clone();
            move |_| {
                offline.fetch_add(1, Ordering::Relaxed);
            }
        };
        presence.connect("bob", &"tab1".to_owned(), came());
        presence.connect("bob", &"tab2".to_owned(), came());
        presence.disconnect("bob", &"tab1".to_owned(), went());
        assert_eq!(reach_of(&presence, "bob", "c1"), Reach::Online);
        presence.disconnect("bob", &"tab2".to_owned(), went());
        presence.disconnect("bob", &"tab2".to_owned(), went());
        assert_eq!((online.load(Ordering::Relaxed), offline.load(Ordering::Relaxed)), (1, 1));
        let info = presence.info(&["bob".to_owned()]).await;
        assert!(!info[0].online && info[0].last_seen_at.is_some());
        assert_eq!(reach_of(&presence, "bob", "c1"), Reach::Offline);
    }

    #[test]
    fn focus_is_per_connection() {
        let presence = Presence::default();
        presence.connect("bob", &"tab1".to_owned(), || {});
        presence.connect("bob", &"tab2".to_owned(), || {});
        presence.focus("bob", &"tab1".to_owned(), Some("c1".into()), 1);
        assert_eq!(reach_of(&presence, "bob", "c1"), Reach::Focused);
        presence.unfocus_conversation("bob", &"tab1".to_owned(), "c2", 2);
        assert_eq!(reach_of(&presence, "bob", "c1"), Reach::Focused);
        presence.disconnect("bob", &"tab1".to_owned(), |_| {});
        assert_eq!(reach_of(&presence, "bob", "c1"), Reach::Online);
    }

    #[test]
    fn a_focus_change_older_than_the_last_applied_one_is_ignored() {
        let presence = Presence::default();
        let tab = "tab1".to_owned();
        presence.connect("bob", &tab, || {});
        // unfocus (event 2) was applied before focus (event 1) finished its membership check.
        presence.focus("bob", &tab, None, 2);
        presence.focus("bob", &tab, Some("c1".into()), 1);
        assert_eq!(reach_of(&presence, "bob", "c1"), Reach::Online);
        presence.focus("bob", &tab, Some("c2".into()), 3);
        presence.unfocus_conversation("bob", &tab, "c2", 2);
        assert_eq!(reach_of(&presence, "bob", "c2"), Reach::Focused);
    }

    /// Records what a registry reports to its directory, answering as a lone node would.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl PresenceDirectory for Recorder {
        fn node_joined(&self, user_id: &str, came_online: Box<dyn FnOnce() + Send>) {
            self.0.lock().unwrap().push(format!("joined {user_id}"));
            came_online();
        }
        fn node_left(&self, user_id: &str, went_offline: Box<dyn FnOnce(Timestamp) + Send>) {
            self.0.lock().unwrap().push(format!("left {user_id}"));
            went_offline(Timestamp::now());
        }
        fn focus_changed(&self, user_id: &str, conversation_id: &str, focused: bool) {
            self.0.lock().unwrap().push(format!("{user_id} {conversation_id} {focused}"));
        }
        fn reach(
            &self,
            _: Vec<String>,
            _: &str,
            local: Vec<Reach>,
            answer: Box<dyn FnOnce(Vec<Reach>) + Send>,
        ) {
            answer(local);
        }
        async fn info(&self, _: &[String]) -> Result<Vec<PresenceInfo>, crate::core::ports::PresenceError> {
            Ok(Vec::new())
        }
        fn departures(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<crate::core::ports::Departure>> {
            None
        }
    }

    #[test]
    fn the_directory_hears_only_node_level_changes() {
        let recorder = Arc::new(Recorder::default());
        let presence = Presence::new(Some(recorder.clone()));
        let (tab1, tab2) = ("tab1".to_owned(), "tab2".to_owned());
        presence.connect("bob", &tab1, || {});
        presence.connect("bob", &tab2, || {});
        presence.focus("bob", &tab1, Some("c1".into()), 1);
        presence.focus("bob", &tab2, Some("c1".into()), 1);
        presence.focus("bob", &tab1, Some("c2".into()), 2);
        presence.unfocus_conversation("bob", &tab2, "c1", 2);
        presence.disconnect("bob", &tab1, |_| {});
        presence.disconnect("bob", &tab2, |_| {});
        presence.disconnect("bob", &tab2, |_| {});
        assert_eq!(
            *recorder.0.lock().unwrap(),
            ["joined bob", "bob c1 true", "bob c2 true", "bob c1 false", "bob c2 false", "left bob"]
        );
    }
}
