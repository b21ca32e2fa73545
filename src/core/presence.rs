//! Who is connected and what each connection is looking at, on this node.

use std::collections::HashMap;
use std::sync::Mutex;

use super::realtime::{ConnectionId, PresenceInfo};
use super::time::Timestamp;

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

/// The presence registry. A `std::sync::Mutex` is right here: every operation is a few map
/// operations with no `.await` inside.
#[derive(Default)]
pub struct Presence {
    users: Mutex<HashMap<String, UserPresence>>,
}

impl Presence {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, UserPresence>) -> T) -> T {
        let mut users = self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut users)
    }

    /// Registers a connection; calls `came_online` if it is the user's first. The call runs
    /// under the registry's lock, so announcements leave in the order the changes happened.
    pub fn connect(&self, user_id: &str, connection: &ConnectionId, came_online: impl FnOnce()) {
        self.with(|users| {
            let user = users.entry(user_id.to_owned()).or_default();
            user.connections.insert(connection.clone(), Focus::default());
            if user.connections.len() == 1 {
                came_online();
            }
        })
    }

    /// Removes a connection; calls `went_offline` with the time if it was the user's last
    /// (under the lock, like [`Presence::connect`]). Removing an unknown connection does
    /// nothing, so a double disconnect is harmless.
    pub fn disconnect(&self, user_id: &str, connection: &ConnectionId, went_offline: impl FnOnce(Timestamp)) {
        self.with(|users| {
            let Some(user) = users.get_mut(user_id) else { return };
            if user.connections.remove(connection).is_none() || !user.connections.is_empty() {
                return;
            }
            let now = Timestamp::now();
            user.last_seen_at = Some(now);
            went_offline(now);
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
        self.with(|users| {
            if let Some(focus) = users.get_mut(user_id).and_then(|u| u.connections.get_mut(connection))
                && arrival >= focus.arrival
            {
                *focus = Focus { conversation: conversation_id, arrival };
            }
        });
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
        self.with(|users| {
            if let Some(focus) = users.get_mut(user_id).and_then(|u| u.connections.get_mut(connection))
                && arrival >= focus.arrival
                && focus.conversation.as_deref() == Some(conversation_id)
            {
                *focus = Focus { conversation: None, arrival };
            }
        });
    }

    /// Whether any connection of the user is focused on the conversation.
    pub fn is_focused(&self, user_id: &str, conversation_id: &str) -> bool {
        self.with(|users| {
            users.get(user_id).is_some_and(|u| {
                u.connections.values().any(|f| f.conversation.as_deref() == Some(conversation_id))
            })
        })
    }

    /// Whether the user has an open connection.
    pub fn is_online(&self, user_id: &str) -> bool {
        self.with(|users| users.get(user_id).is_some_and(|u| !u.connections.is_empty()))
    }

    /// Presence of one user.
    pub fn info(&self, user_id: &str) -> PresenceInfo {
        self.with(|users| match users.get(user_id) {
            Some(u) if !u.connections.is_empty() => PresenceInfo { online: true, last_seen_at: None },
            Some(u) => PresenceInfo { online: false, last_seen_at: u.last_seen_at },
            None => PresenceInfo { online: false, last_seen_at: None },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_goes_offline_only_when_the_last_connection_closes() {
        let presence = Presence::default();
        let (mut online, mut offline) = (0, 0);
        presence.connect("bob", &"tab1".to_owned(), || online += 1);
        presence.connect("bob", &"tab2".to_owned(), || online += 1);
        presence.disconnect("bob", &"tab1".to_owned(), |_| offline += 1);
        assert!(presence.is_online("bob"));
        presence.disconnect("bob", &"tab2".to_owned(), |_| offline += 1);
        presence.disconnect("bob", &"tab2".to_owned(), |_| offline += 1);
        assert_eq!((online, offline), (1, 1));
        let info = presence.info("bob");
        assert!(!info.online && info.last_seen_at.is_some());
    }

    #[test]
    fn focus_is_per_connection() {
        let presence = Presence::default();
        presence.connect("bob", &"tab1".to_owned(), || {});
        presence.connect("bob", &"tab2".to_owned(), || {});
        presence.focus("bob", &"tab1".to_owned(), Some("c1".into()), 1);
        assert!(presence.is_focused("bob", "c1"));
        presence.unfocus_conversation("bob", &"tab1".to_owned(), "c2", 2);
        assert!(presence.is_focused("bob", "c1"));
        presence.disconnect("bob", &"tab1".to_owned(), |_| {});
        assert!(!presence.is_focused("bob", "c1"));
    }

    #[test]
    fn a_focus_change_older_than_the_last_applied_one_is_ignored() {
        let presence = Presence::default();
        let tab = "tab1".to_owned();
        presence.connect("bob", &tab, || {});
        // unfocus (event 2) was applied before focus (event 1) finished its membership check.
        presence.focus("bob", &tab, None, 2);
        presence.focus("bob", &tab, Some("c1".into()), 1);
        assert!(!presence.is_focused("bob", "c1"));
        presence.focus("bob", &tab, Some("c2".into()), 3);
        presence.unfocus_conversation("bob", &tab, "c2", 2);
        assert!(presence.is_focused("bob", "c2"));
    }
}
