//! The hub's registry: this node's connections, the user each belongs to, and the
//! conversations each is subscribed to, indexed both ways so a delivery finds its
//! recipients without a scan. Pure bookkeeping under the hub's lock: every change says which
//! bus topics the node starts or stops needing, and the hub tells the bus.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::Sink;
use crate::core::ports::Audience;
use crate::core::ports::Topic;
use crate::core::server_events::ConversationHead;
use crate::core::time::Timestamp;

/// One connection as deliveries see it: cloned into each index it belongs to, so a fan-out
/// walks one list without further lookups.
#[derive(Clone)]
pub(super) struct Target {
    pub id: u64,
    pub user_id: Arc<str>,
    pub sink: Arc<dyn Sink>,
}

/// What the registry keeps per connection. Kept small (one per connection, most of them
/// idle): the rarely used parts are empty `Vec`s or boxed.
struct Entry {
    target: Target,
    /// When the connection registered (an operator's disconnect closes those opened before it).
    opened: Timestamp,
    /// Whether the connection follows conversations (SSE streams only follow their user).
    follows_conversations: bool,
    conversations: Vec<String>,
    /// Conversations the client left with `conversation:leave` (kept out when subscriptions
    /// are rebuilt from a snapshot); a later subscription takes one back.
    left: Vec<String>,
    /// Set while a snapshot of the user's conversations is being read for this connection:
    /// the subscription changes the bus made meanwhile, which the snapshot may predate.
    window: Option<Box<Window>>,
}

/// Subscription changes seen while a snapshot was read; the later change of a conversation
/// wins.
#[derive(Default)]
struct Window {
    added: HashSet<String>,
    removed: HashSet<String>,
}

/// Bus topics the node starts (`watch`) or stops (`unwatch`) needing after a change.
#[derive(Default, Debug, PartialEq)]
pub(super) struct TopicChanges {
    pub watch: Vec<Topic>,
    pub unwatch: Vec<Topic>,
}

/// This node's connections and their subscriptions.
#[derive(Default)]
pub(super) struct Registry {
    connections: HashMap<u64, Entry>,
    by_user: HashMap<Arc<str>, Vec<Target>>,
    by_conversation: HashMap<String, Vec<Target>>,
}

impl Registry {
    /// Number of connections.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// Adds a connection, its snapshot window open (see [`Registry::apply_snapshot`]).
    pub fn insert(
        &mut self,
        target: Target,
        opened: Timestamp,
        follows_conversations: bool,
        changes: &mut TopicChanges,
    ) {
        // Most users have one connection.
        let targets = self.by_user.entry(target.user_id.clone()).or_insert_with(|| Vec::with_capacity(1));
        if targets.is_empty() {
            changes.watch.push(Topic::User(target.user_id.to_string()));
        }
        targets.push(target.clone());
        let window = follows_conversations.then(Box::default);
        let entry = Entry {
            target,
            opened,
            follows_conversations,
            conversations: Vec::new(),
            left: Vec::new(),
            window,
        };
        self.connections.insert(entry.target.id, entry);
    }

    /// Takes a connection out with all its subscriptions.
    pub fn remove(&mut self, id: u64, changes: &mut TopicChanges) {
        let Some(entry) = self.connections.remove(&id) else { return };
        for conversation_id in entry.conversations {
            self.drop_subscriber(id, &conversation_id, changes);
        }
        if let Some(targets) = self.by_user.get_mut(&entry.target.user_id) {
            targets.retain(|t| t.id != id);
            if targets.is_empty() {
                self.by_user.remove(&entry.target.user_id);
                changes.unwatch.push(Topic::User(entry.target.user_id.to_string()));
            }
        }
    }

    /// Subscribes a connection to a conversation (idempotent).
    pub fn subscribe(&mut self, id: u64, conversation_id: &str, changes: &mut TopicChanges) {
        let Some(entry) = self.connections.get_mut(&id) else { return };
        if !entry.follows_conversations || entry.conversations.iter().any(|c| c == conversation_id) {
            return;
        }
        entry.conversations.push(conversation_id.to_owned());
        let target = entry.target.clone();
        let subscribers = self.by_conversation.entry(conversation_id.to_owned()).or_default();
        if subscribers.is_empty() {
            changes.watch.push(Topic::Conversation(conversation_id.to_owned()));
        }
        subscribers.push(target);
    }

    /// Unsubscribes a connection from a conversation (idempotent).
    pub fn unsubscribe(&mut self, id: u64, conversation_id: &str, changes: &mut TopicChanges) {
        let Some(entry) = self.connections.get_mut(&id) else { return };
        let before = entry.conversations.len();
        entry.conversations.retain(|c| c != conversation_id);
        if entry.conversations.len() != before {
            self.drop_subscriber(id, conversation_id, changes);
        }
    }

    fn drop_subscriber(&mut self, id: u64, conversation_id: &str, changes: &mut TopicChanges) {
        let Some(subscribers) = self.by_conversation.get_mut(conversation_id) else { return };
        subscribers.retain(|t| t.id != id);
        if subscribers.is_empty() {
            self.by_conversation.remove(conversation_id);
            changes.unwatch.push(Topic::Conversation(conversation_id.to_owned()));
        }
    }

    /// The client asked to follow (`joined`) or stop following a conversation it stays a
    /// member of: remembered so a rebuild from a snapshot keeps its choice.
    pub fn set_left(&mut self, id: u64, conversation_id: &str, left: bool) {
        if let Some(entry) = self.connections.get_mut(&id) {
            entry.left.retain(|c| c != conversation_id);
            if left {
                entry.left.push(conversation_id.to_owned());
            }
        }
    }

    /// The bus added (`subscribed`) or removed a user's membership: applied to each of the
    /// user's connections at once, and noted in open snapshot windows.
    pub fn membership_changed(
        &mut self,
        user_id: &str,
        conversation_id: &str,
        subscribed: bool,
        changes: &mut TopicChanges,
    ) {
        let ids: Vec<u64> = self.ids_of_user(user_id);
        for id in ids {
            if let Some(entry) = self.connections.get_mut(&id) {
                entry.left.retain(|c| c != conversation_id);
                if let Some(window) = &mut entry.window {
                    let (into, out_of) = if subscribed {
                        (&mut window.added, &mut window.removed)
                    } else {
                        (&mut window.removed, &mut window.added)
                    };
                    out_of.remove(conversation_id);
                    into.insert(conversation_id.to_owned());
                }
            }
            if subscribed {
                self.subscribe(id, conversation_id, changes);
            } else {
                self.unsubscribe(id, conversation_id, changes);
            }
        }
    }

    /// Opens a snapshot window on a connection (before its user's conversations are read).
    pub fn open_window(&mut self, id: u64) {
        if let Some(entry) = self.connections.get_mut(&id).filter(|e| e.follows_conversations) {
            entry.window.get_or_insert_with(Box::default);
        }
    }

    /// Sets a connection's subscriptions to the user's conversations as read in `snapshot`
    /// (read after the window opened), corrected by what the bus changed meanwhile, minus
    /// those the client left; closes the window. Returns false if the connection is gone.
    pub fn apply_snapshot(
        &mut self,
        id: u64,
        snapshot: &[ConversationHead],
        changes: &mut TopicChanges,
    ) -> bool {
        let Some(entry) = self.connections.get_mut(&id) else { return false };
        if !entry.follows_conversations {
            return true;
        }
        let window = entry.window.take().unwrap_or_default();
        let mut wanted: HashSet<&str> = snapshot
            .iter()
            .map(|head| head.id.as_str())
            .filter(|id| !window.removed.contains(*id) && !entry.left.iter().any(|c| c == id))
            .collect();
        wanted.extend(window.added.iter().map(String::as_str));
        let stale: Vec<String> =
            entry.conversations.iter().filter(|c| !wanted.contains(c.as_str())).cloned().collect();
        let fresh: Vec<String> = wanted
            .into_iter()
            .filter(|c| !entry.conversations.iter().any(|have| have == c))
            .map(str::to_owned)
            .collect();
        for conversation_id in stale {
            self.unsubscribe(id, &conversation_id, changes);
        }
        for conversation_id in fresh {
            self.subscribe(id, &conversation_id, changes);
        }
        true
    }

    /// Closes a connection's snapshot window without applying one (the read failed).
    pub fn close_window(&mut self, id: u64) {
        if let Some(entry) = self.connections.get_mut(&id) {
            entry.window = None;
        }
    }

    /// The ids of a user's connections.
    pub fn ids_of_user(&self, user_id: &str) -> Vec<u64> {
        self.by_user.get(user_id).map(|targets| targets.iter().map(|t| t.id).collect()).unwrap_or_default()
    }

    /// Every connection, grouped by user (for a rebuild of every subscription).
    pub fn by_user(&self) -> Vec<(Arc<str>, Vec<u64>)> {
        self.by_user
            .iter()
            .map(|(user, targets)| (user.clone(), targets.iter().map(|t| t.id).collect()))
            .collect()
    }

    /// Every connection's sink.
    pub fn sinks(&self) -> impl Iterator<Item = &Arc<dyn Sink>> {
        self.connections.values().map(|entry| &entry.target.sink)
    }

    /// The users with a connection on this node.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.by_user.keys().map(|user_id| &**user_id)
    }

    /// A user's connections' sinks.
    pub fn sinks_of_user(&self, user_id: &str) -> impl Iterator<Item = &Arc<dyn Sink>> {
        self.by_user.get(user_id).into_iter().flatten().map(|t| &t.sink)
    }

    /// The sinks of a user's connections that registered before `before`.
    pub fn sinks_of_user_opened_before(
        &self,
        user_id: &str,
        before: Timestamp,
    ) -> impl Iterator<Item = &Arc<dyn Sink>> {
        self.by_user
            .get(user_id)
            .into_iter()
            .flatten()
            .filter(move |t| self.connections.get(&t.id).is_some_and(|entry| entry.opened < before))
            .map(|t| &t.sink)
    }

    /// One connection's sink.
    pub fn sink(&self, id: u64) -> Option<&Arc<dyn Sink>> {
        self.connections.get(&id).map(|entry| &entry.target.sink)
    }

    /// The conversations a connection is subscribed to.
    #[cfg(test)]
    pub fn conversations_of(&self, id: u64) -> Vec<String> {
        self.connections.get(&id).map(|entry| entry.conversations.clone()).unwrap_or_default()
    }

    /// Calls `deliver` once for every connection `to` reaches, minus connection
    /// `except_connection` and the connections of `except_user`. Returns how many.
    pub fn for_each_recipient(
        &self,
        to: &Audience,
        except_connection: Option<u64>,
        except_user: Option<&str>,
        mut deliver: impl FnMut(&Target),
    ) -> usize {
        let mut count = 0;
        let mut visit = |target: &Target| {
            if Some(target.id) != except_connection && except_user != Some(&*target.user_id) {
                deliver(target);
                count += 1;
            }
        };
        match to {
            Audience::Conversation(id) => {
                self.by_conversation.get(id).into_iter().flatten().for_each(&mut visit)
            }
            Audience::Members { conversation_id, members } => self
                .by_conversation
                .get(conversation_id)
                .into_iter()
                .flatten()
                .filter(|target| members.binary_search_by(|m| (**m).cmp(&*target.user_id)).is_ok())
                .for_each(&mut visit),
            Audience::Users(users) => {
                let mut seen: Vec<&str> = Vec::with_capacity(users.len());
                for user in users {
                    if seen.contains(&user.as_str()) {
                        continue;
                    }
                    seen.push(user);
                    self.by_user.get(user.as_str()).into_iter().flatten().for_each(&mut visit);
                }
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Close, Outgoing};

    struct Nothing;

    impl Sink for Nothing {
        fn send(&self, _: &Arc<Outgoing>) -> bool {
            true
        }
        fn close(&self, _: Close) {}
    }

    fn target(id: u64, user: &str) -> Target {
        Target { id, user_id: Arc::from(user), sink: Arc::new(Nothing) }
    }

    fn heads(ids: &[&str]) -> Vec<ConversationHead> {
        ids.iter()
            .map(|id| ConversationHead { id: (*id).to_owned(), last_seq: 0, last_revision: 0 })
            .collect()
    }

    fn sorted(mut ids: Vec<String>) -> Vec<String> {
        ids.sort();
        ids
    }

    #[test]
    fn a_removal_during_the_snapshot_read_wins_over_the_snapshot() {
        let mut registry = Registry::default();
        let mut changes = TopicChanges::default();
        registry.insert(target(1, "alice"), Timestamp(0), true, &mut changes);
        registry.membership_changed("alice", "c2", false, &mut changes);
        registry.membership_changed("alice", "c3", true, &mut changes);
        // The snapshot was read before the removal of c2 and the addition of c3 committed.
        registry.apply_snapshot(1, &heads(&["c1", "c2"]), &mut changes);
        assert_eq!(sorted(registry.conversations_of(1)), vec!["c1", "c3"]);
    }

    #[test]
    fn a_rebuild_drops_stale_subscriptions_adds_missing_ones_and_keeps_leaves() {
        let mut registry = Registry::default();
        let mut changes = TopicChanges::default();
        registry.insert(target(1, "alice"), Timestamp(0), true, &mut changes);
        registry.apply_snapshot(1, &heads(&["c1", "c2", "c3"]), &mut changes);
        registry.unsubscribe(1, "c3", &mut changes);
        registry.set_left(1, "c3", true);
        registry.open_window(1);
        registry.apply_snapshot(1, &heads(&["c2", "c3", "c4"]), &mut changes);
        assert_eq!(sorted(registry.conversations_of(1)), vec!["c2", "c4"]);
    }

    #[test]
    fn topics_are_watched_by_the_first_and_unwatched_by_the_last_connection() {
        let mut registry = Registry::default();
        let mut changes = TopicChanges::default();
        registry.insert(target(1, "alice"), Timestamp(0), true, &mut changes);
        registry.insert(target(2, "alice"), Timestamp(0), true, &mut changes);
        registry.subscribe(1, "c1", &mut changes);
        registry.subscribe(2, "c1", &mut changes);
        assert_eq!(changes.watch, vec![Topic::User("alice".into()), Topic::Conversation("c1".into())]);
        registry.remove(1, &mut changes);
        assert!(changes.unwatch.is_empty());
        registry.remove(2, &mut changes);
        assert_eq!(changes.unwatch, vec![Topic::Conversation("c1".into()), Topic::User("alice".into())]);
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn deliveries_skip_the_excepted_connection_and_user_and_count_each_connection_once() {
        let mut registry = Registry::default();
        let mut changes = TopicChanges::default();
        for (id, user) in [(1, "alice"), (2, "bob"), (3, "bob"), (4, "carol")] {
            registry.insert(target(id, user), Timestamp(0), true, &mut changes);
            registry.subscribe(id, "c1", &mut changes);
        }
        let mut seen = Vec::new();
        let conversation = Audience::Conversation("c1".into());
        registry.for_each_recipient(&conversation, Some(1), Some("carol"), |t| seen.push(t.id));
        assert_eq!(seen, vec![2, 3]);
        let users = Audience::Users(vec!["bob".into(), "bob".into(), "carol".into()]);
        assert_eq!(registry.for_each_recipient(&users, None, None, |_| {}), 3);
    }

    #[test]
    fn a_stream_follows_its_user_only() {
        let mut registry = Registry::default();
        let mut changes = TopicChanges::default();
        registry.insert(target(1, "alice"), Timestamp(0), false, &mut changes);
        registry.subscribe(1, "c1", &mut changes);
        registry.membership_changed("alice", "c2", true, &mut changes);
        assert!(registry.conversations_of(1).is_empty());
        assert_eq!(changes.watch, vec![Topic::User("alice".into())]);
    }
}
