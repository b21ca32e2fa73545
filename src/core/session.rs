//! Realtime sessions: connecting, presence, focus, typing, subscriptions and `sync`. Shared
//! by the Socket.IO and plain WebSocket transports.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::budget::BudgetKind;
use super::chat::Chat;
use super::error::ChatError;
use super::model::User;
use super::ports::{Bus, Departure, HistoryRange, Store};
use super::realtime::{
    Audience, BusMessage, ConnectionId, Delivery, PresenceChange, PresenceInfo, PresenceQuery, Ready,
    ServerEvent, SyncPage, SyncRequest, Typing,
};
use super::time::unix_now;
use super::validate;

const SYNC_DEFAULT: usize = 500;
const SYNC_MAX: usize = 1000;
/// Most user ids one `presence:query` may name.
pub const PRESENCE_QUERY_MAX: usize = 100;

/// (conversation, user).
type TypingKey = (String, String);

/// One user typing in one conversation.
struct TypingEntry {
    /// Names this stretch of typing: its expiry task ends when the entry changed hands.
    generation: u64,
    /// When it stops by itself unless a newer start comes first.
    deadline: tokio::time::Instant,
    /// The connection that sent the newest start.
    connection: Option<ConnectionId>,
}

/// Who is typing where. The first `typing:start` of a stretch starts one expiry task;
/// repeated starts only move its deadline, so a storm of starts costs one map entry and one
/// task per (conversation, user), not one per event. The server sends `typing:stop` when the
/// deadline passes without a newer start, when the client stops, or when the connection
/// closes.
pub struct TypingTracker {
    /// `std::sync::Mutex`: short map operations, never held across `.await`.
    active: Mutex<HashMap<TypingKey, TypingEntry>>,
    generation: AtomicU64,
    bus: Arc<dyn Bus>,
    timeout: Duration,
}

impl TypingTracker {
    /// A tracker publishing on `bus`, expiring after `timeout`.
    pub fn new(bus: Arc<dyn Bus>, timeout: Duration) -> Self {
        TypingTracker { active: Mutex::default(), generation: AtomicU64::new(0), bus, timeout }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<TypingKey, TypingEntry>) -> T) -> T {
        f(&mut self.active.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn publish(&self, conversation_id: String, user_id: String, start: bool) {
        let typing = Typing { conversation_id: conversation_id.clone(), user_id: user_id.clone() };
        let event = if start { ServerEvent::TypingStart(typing) } else { ServerEvent::TypingStop(typing) };
        self.bus.publish(BusMessage::Deliver(Delivery {
            to: Audience::Conversation(conversation_id),
            except_connection: None,
            except_user: Some(user_id),
            event,
        }));
    }

    /// Records a start; announces it (and starts its expiry task) unless the user was
    /// already typing there, in which case the running task sees the later deadline.
    fn start(self: &Arc<Self>, conversation_id: &str, user: &User) {
        let key = (conversation_id.to_owned(), user.id.clone());
        let deadline = tokio::time::Instant::now() + self.timeout;
        let started = self.with(|active| {
            if let Some(entry) = active.get_mut(&key) {
                entry.deadline = deadline;
                entry.connection.clone_from(&user.connection);
                return None;
            }
            let generation = self.generation.fetch_add(1, Ordering::Relaxed);
            let entry = TypingEntry { generation, deadline, connection: user.connection.clone() };
            active.insert(key.clone(), entry);
            Some(generation)
        });
        let Some(generation) = started else { return };
        self.publish(key.0.clone(), key.1.clone(), true);
        let tracker = Arc::clone(self);
        tokio::spawn(async move { tracker.expire(key, generation, deadline).await });
    }

    /// The expiry task of one stretch of typing: waits for its deadline, again while starts
    /// keep moving it, then announces the stop. Ends quietly once the stretch ended
    /// otherwise (a stop, a closed connection).
    async fn expire(&self, key: TypingKey, generation: u64, mut deadline: tokio::time::Instant) {
        loop {
            tokio::time::sleep_until(deadline).await;
            let later = self.with(|active| match active.get(&key) {
                Some(entry) if entry.generation == generation => {
                    if entry.deadline > tokio::time::Instant::now() {
                        return Some(Some(entry.deadline));
                    }
                    active.remove(&key);
                    Some(None)
                }
                _ => None,
            });
            match later {
                Some(Some(moved)) => deadline = moved,
                Some(None) => return self.publish(key.0, key.1, false),
                None => return,
            }
        }
    }

    /// Records a stop; announces it if the user was typing there.
    fn stop(&self, conversation_id: &str, user_id: &str) {
        let key = (conversation_id.to_owned(), user_id.to_owned());
        if self.with(|active| active.remove(&key)).is_some() {
            self.publish(key.0, key.1, false);
        }
    }

    /// Stops everything a closing connection was typing.
    fn stop_connection(&self, connection: &ConnectionId) {
        let stopped: Vec<TypingKey> = self.with(|active| {
            let keys: Vec<_> = active
                .iter()
                .filter(|(_, entry)| entry.connection.as_ref() == Some(connection))
                .map(|(k, _)| k.clone())
                .collect();
            for key in &keys {
                active.remove(key);
            }
            keys
        });
        for (conversation_id, user_id) in stopped {
            self.publish(conversation_id, user_id, false);
        }
    }
}

/// How long a live connection's credentials last: the `exp` of its token, moved by
/// `auth:refresh`, and the one timer every transport waits on to close it at expiry.
pub struct Lease {
    state: watch::Sender<LeaseState>,
}

#[derive(Clone, Copy)]
struct LeaseState {
    /// Unix seconds.
    expires_at: u64,
    /// The connection closed: stop waiting.
    ended: bool,
}

/// What ended a wait on a [`Lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEnd {
    /// The token expired without a refresh: close the connection (`token_expired`).
    Expired,
    /// The connection closed first.
    Ended,
}

impl Lease {
    /// A lease ending at `expires_at` (Unix seconds).
    pub fn new(expires_at: u64) -> Lease {
        Lease { state: watch::Sender::new(LeaseState { expires_at, ended: false }) }
    }

    /// The current expiry, Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.state.borrow().expires_at
    }

    /// Whether the token has expired by `now` (Unix seconds) while the connection is open:
    /// for transports that check leases in a periodic sweep instead of waiting on each.
    pub fn expired(&self, now: u64) -> bool {
        let state = self.state.borrow();
        !state.ended && state.expires_at <= now
    }

    /// Stops every [`Lease::wait`] (the connection is gone).
    pub fn end(&self) {
        self.state.send_modify(|state| state.ended = true);
    }

    /// Resolves when the token expires (re-armed by each refresh) or the lease is ended.
    pub async fn wait(&self) -> LeaseEnd {
        let mut changes = self.state.subscribe();
        loop {
            let LeaseState { expires_at, ended } = *changes.borrow_and_update();
            if ended {
                return LeaseEnd::Ended;
            }
            // Re-checked at least daily, so a far `exp` never overflows the timer.
            let left = Duration::from_secs(expires_at.saturating_sub(unix_now()).min(86_400));
            if left.is_zero() {
                return LeaseEnd::Expired;
            }
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                changed = changes.changed() => if changed.is_err() { return LeaseEnd::Ended },
            }
        }
    }
}

/// Publishes a presence change to `contacts`.
fn announce_presence(bus: &dyn Bus, contacts: &[String], event: ServerEvent) {
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
pub(super) async fn announce_departures(
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

impl Chat {
    fn connection_of(user: &User) -> Result<&ConnectionId, ChatError> {
        user.connection.as_ref().ok_or_else(|| ChatError::invalid("this request needs a realtime connection"))
    }

    /// # A connection opened
    /// Registers it, announces `user:online` if it is the user's first, and returns `ready`
    /// (the transport subscribes the connection to every listed conversation).
    pub async fn connect(&self, user: &User) -> Result<Ready, ChatError> {
        let connection = Self::connection_of(user)?;
        // Checked again here, after the transport registered the connection: a ban made
        // since the handshake was admitted either reaches the registered connection or is
        // seen now.
        self.admit(user)?;
        // Read first, then change and announce in one step (see Presence::connect).
        let contacts = self.store.contacts(&user.id).await?;
        let conversations = self.store.conversation_heads(&user.id).await?;
        let (bus, user_id) = (self.bus.clone(), user.id.clone());
        self.presence.connect(&user.id, connection, move || {
            let change = PresenceChange { user_id, last_seen_at: None };
            announce_presence(bus.as_ref(), &contacts, ServerEvent::UserOnline(change));
        });
        Ok(Ready { user_id: user.id.clone(), conversations })
    }

    /// # A connection closed
    /// Stops its typing indicators; announces `user:offline` if it was the user's last.
    /// Safe to call more than once for a connection.
    pub async fn disconnect(&self, user: &User) -> Result<(), ChatError> {
        let connection = Self::connection_of(user)?;
        self.typing.stop_connection(connection);
        // The connection is gone whatever the store says: clean up even without contacts.
        let contacts = self.store.contacts(&user.id).await.unwrap_or_else(|err| {
            super::telemetry::store_error();
            tracing::warn!(error = %err, user = %user.id, "contacts unavailable; user:offline not announced");
            Vec::new()
        });
        let (bus, user_id) = (self.bus.clone(), user.id.clone());
        self.presence.disconnect(&user.id, connection, move |last_seen_at| {
            let change = PresenceChange { user_id, last_seen_at: Some(last_seen_at) };
            announce_presence(bus.as_ref(), &contacts, ServerEvent::UserOffline(change));
        });
        Ok(())
    }

    /// # `conversation:focus`: this connection is looking at the conversation (members only)
    pub async fn focus(&self, user: &User, conversation_id: &str) -> Result<(), ChatError> {
        let connection = Self::connection_of(user)?;
        self.require_member(conversation_id, user).await?;
        self.presence.focus(&user.id, connection, Some(conversation_id.to_owned()), user.arrival);
        Ok(())
    }

    /// # `conversation:unfocus`: this connection is looking at no conversation
    pub fn unfocus(&self, user: &User) -> Result<(), ChatError> {
        let connection = Self::connection_of(user)?;
        self.presence.focus(&user.id, connection, None, user.arrival);
        Ok(())
    }

    /// # `conversation:join`: may this connection subscribe? (members only)
    pub async fn join(&self, user: &User, conversation_id: &str) -> Result<(), ChatError> {
        self.require_member(conversation_id, user).await.map(|_| ())
    }

    /// # `conversation:leave`: this connection stops listening to the conversation
    /// (membership unchanged); a focus on it ends too, so its messages notify again.
    pub fn leave(&self, user: &User, conversation_id: &str) -> Result<(), ChatError> {
        let connection = Self::connection_of(user)?;
        self.presence.unfocus_conversation(&user.id, connection, conversation_id, user.arrival);
        Ok(())
    }

    /// # `typing:start` (members only)
    pub async fn typing_start(&self, user: &User, conversation_id: &str) -> Result<(), ChatError> {
        self.spend(BudgetKind::Typing, user).await?;
        self.require_member(conversation_id, user).await?;
        self.typing.start(conversation_id, user);
        Ok(())
    }

    /// # `typing:stop` (members only)
    pub async fn typing_stop(&self, user: &User, conversation_id: &str) -> Result<(), ChatError> {
        self.spend(BudgetKind::Typing, user).await?;
        self.require_member(conversation_id, user).await?;
        self.typing.stop(conversation_id, &user.id);
        Ok(())
    }

    /// # `sync`: every message the user missed
    /// After the given seq per conversation (from 0 for conversations not listed), ascending
    /// per conversation, at most `limit`; `has_more` says to call again with the new seqs.
    pub async fn sync(&self, user: &User, req: SyncRequest) -> Result<SyncPage, ChatError> {
        self.spend(BudgetKind::Sync, user).await?;
        let limit = validate::page_limit(req.limit, SYNC_DEFAULT, SYNC_MAX)?;
        for (id, seq) in &req.conversations {
            validate::identifier("conversations key", id)?;
            validate::seq("conversations value", *seq)?;
        }
        let conversations = self.store.conversation_heads(&user.id).await?;
        let mut messages = Vec::new();
        let mut has_more = false;
        for head in &conversations {
            let known = req.conversations.get(&head.id).copied().unwrap_or(0);
            if head.last_seq <= known {
                continue;
            }
            let remaining = limit - messages.len();
            if remaining == 0 {
                has_more = true;
                break;
            }
            let range = HistoryRange { after_seq: Some(known), before_seq: None, limit: remaining };
            let (page, more) = self.store.messages(&head.id, range).await?;
            messages.extend(page);
            if more {
                has_more = true;
                break;
            }
        }
        Ok(SyncPage { messages, has_more, conversations })
    }

    /// # `auth:refresh`: a fresh token for a live connection
    /// `verified` is the new token as the verifier read it (user and `exp`). It must be valid
    /// and name the connection's user (else `forbidden`); the lease then runs to its `exp`,
    /// which is returned. On any failure the lease keeps its expiry.
    pub fn refresh_session(
        &self,
        user: &User,
        lease: &Lease,
        verified: Result<(User, u64), ChatError>,
    ) -> Result<u64, ChatError> {
        let (token_user, expires_at) = verified?;
        if token_user.id != user.id {
            return Err(ChatError::forbidden("the token is for another user"));
        }
        lease.state.send_modify(|state| state.expires_at = expires_at);
        Ok(expires_at)
    }

    /// # `presence:query`
    /// Need-to-know: only the caller and their contacts (users sharing a conversation with
    /// them, no block either way) are answered as they are; anyone else reads as offline and
    /// never seen. At most [`PRESENCE_QUERY_MAX`] ids (`too_large`).
    pub async fn presence(
        &self,
        user: &User,
        req: PresenceQuery,
    ) -> Result<BTreeMap<String, PresenceInfo>, ChatError> {
        self.spend(BudgetKind::Presence, user).await?;
        if req.user_ids.len() > PRESENCE_QUERY_MAX {
            return Err(ChatError::TooLarge(format!("at most {PRESENCE_QUERY_MAX} user_ids per query")));
        }
        for user_id in &req.user_ids {
            validate::identifier("user_ids[]", user_id)?;
        }
        let contacts: HashSet<String> = self.store.contacts(&user.id).await?.into_iter().collect();
        let visible: Vec<String> =
            req.user_ids.iter().filter(|id| **id == user.id || contacts.contains(*id)).cloned().collect();
        let found = if visible.is_empty() { Vec::new() } else { self.presence.info(&visible).await };
        let mut infos: BTreeMap<String, PresenceInfo> = visible.into_iter().zip(found).collect();
        let unknown = PresenceInfo { online: false, last_seen_at: None };
        Ok(req
            .user_ids
            .into_iter()
            .map(|id| {
                let info = infos.remove(&id).unwrap_or_else(|| unknown.clone());
                (id, info)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::local::LocalBus;

    fn user(id: &str, connection: &str) -> User {
        User { id: id.into(), name: None, connection: Some(connection.into()), arrival: 0 }
    }

    fn next_event(rx: &mut tokio::sync::broadcast::Receiver<Arc<BusMessage>>) -> Option<String> {
        match rx.try_recv().ok()?.as_ref() {
            BusMessage::Deliver(d) => Some(d.event.name().to_owned()),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn typing_stops_by_itself_after_the_timeout_without_a_new_start() {
        let bus = Arc::new(LocalBus::default());
        let mut rx = bus.subscribe();
        let tracker = Arc::new(TypingTracker::new(bus, Duration::from_secs(5)));
        tracker.start("c1", &user("alice", "s1"));
        assert_eq!(next_event(&mut rx).as_deref(), Some("typing:start"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        tracker.start("c1", &user("alice", "s1"));
        assert_eq!(next_event(&mut rx), None, "a repeated start is not re-announced");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(next_event(&mut rx), None, "the second start re-armed the timer");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(next_event(&mut rx).as_deref(), Some("typing:stop"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_of_starts_keeps_one_timer_task_and_one_entry() {
        let bus = Arc::new(LocalBus::default());
        let mut rx = bus.subscribe();
        let tracker = Arc::new(TypingTracker::new(bus, Duration::from_secs(5)));
        let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        for _ in 0..10_000 {
            tracker.start("c1", &user("alice", "s1"));
        }
        let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks() - tasks_before;
        assert_eq!(tasks, 1, "one expiry task, not one per start");
        assert_eq!(tracker.with(|active| active.len()), 1);
        assert_eq!(next_event(&mut rx).as_deref(), Some("typing:start"));
        assert_eq!(next_event(&mut rx), None);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(next_event(&mut rx).as_deref(), Some("typing:stop"));
        tokio::task::yield_now().await;
        assert_eq!(tokio::runtime::Handle::current().metrics().num_alive_tasks(), tasks_before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_expires_at_its_exp_unless_refreshed_and_ends_with_its_connection() {
        let lease = Arc::new(Lease::new(unix_now() + 2));
        let waiter = tokio::spawn({
            let lease = lease.clone();
            async move { lease.wait().await }
        });
        tokio::task::yield_now().await;
        lease.state.send_modify(|state| state.expires_at = u64::MAX);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiter.is_finished(), "a refresh re-arms the timer");
        lease.end();
        assert_eq!(waiter.await.expect("waiter"), LeaseEnd::Ended);
        assert_eq!(Lease::new(unix_now().saturating_sub(1)).wait().await, LeaseEnd::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_a_connection_stops_its_typing() {
        let bus = Arc::new(LocalBus::default());
        let mut rx = bus.subscribe();
        let tracker = Arc::new(TypingTracker::new(bus, Duration::from_secs(5)));
        tracker.start("c1", &user("alice", "s1"));
        tracker.start("c2", &user("bob", "s2"));
        next_event(&mut rx);
        next_event(&mut rx);
        tracker.stop_connection(&"s1".to_owned());
        assert_eq!(next_event(&mut rx).as_deref(), Some("typing:stop"));
        assert_eq!(next_event(&mut rx), None, "bob keeps typing");
    }
}
