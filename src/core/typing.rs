//! Typing indicators: who is typing where, stopped by the server when a client goes quiet.
//! One entry and one timer per (conversation, user), however many `typing:start`s arrive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::model::User;
use super::ports::Bus;
use crate::core::model::ConnectionId;
use crate::core::ports::{Audience, BusMessage, Delivery};
use crate::core::server_events::{ServerEvent, Typing};

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
    pub(crate) fn start(self: &Arc<Self>, conversation_id: &str, user: &User) {
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
    pub(crate) fn stop(&self, conversation_id: &str, user_id: &str) {
        let key = (conversation_id.to_owned(), user_id.to_owned());
        if self.with(|active| active.remove(&key)).is_some() {
            self.publish(key.0, key.1, false);
        }
    }

    /// Stops everything a closing connection was typing.
    pub(crate) fn stop_connection(&self, connection: &ConnectionId) {
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
