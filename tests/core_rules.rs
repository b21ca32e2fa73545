//! The core's rules, driven through `Chat` itself over a real SQLite file and the in-process
//! bus, with no HTTP or socket in between (#16): roles, membership, blocks and notification
//! routing. The transports' suites check the same rules through the wire; these pin them
//! where they live.

use std::sync::Arc;
use std::time::Duration;

use chatd::bus::local::LocalBus;
use chatd::core::error::ChatError;
use chatd::core::model::User;
use chatd::core::ports::{Bus, BusMessage, PushOutbox};
use chatd::core::requests::{AddMembers, CreateConversation, SendMessage, UpdateConversation};
use chatd::core::server_events::ServerEvent;
use chatd::core::{Chat, ChatLimits};
use chatd::limit::local::LocalRateLimiter;
use chatd::store::sqlite::{SqliteStore, Synchronous};
use chatd::tasks::Tasks;
use serde_json::json;
use tokio::sync::broadcast;

/// A chat service over a fresh SQLite file (kept alive by the returned directory).
struct Core {
    chat: Arc<Chat>,
    store: Arc<SqliteStore>,
    bus: Arc<LocalBus>,
    _dir: tempfile::TempDir,
}

impl Core {
    async fn start() -> Core {
        let dir = tempfile::tempdir().expect("dir");
        let store =
            Arc::new(SqliteStore::open(&dir.path().join("chat.db"), Synchronous::Normal).expect("store"));
        let bus = Arc::new(LocalBus::default());
        let chat = Arc::new(Chat::new(
            store.clone(),
            bus.clone(),
            Arc::new(LocalRateLimiter::new(0, 0)),
            ChatLimits::default(),
            &Tasks::new(),
        ));
        chat.start_bans().await.expect("bans");
        Core { chat, store, bus, _dir: dir }
    }

    async fn group(&self, owner: &str, members: &[&str]) -> String {
        let req: CreateConversation =
            serde_json::from_value(json!({ "type": "group", "members": members })).expect("request");
        self.chat.create_conversation(&rest(owner), req).await.expect("created").0.id
    }

    async fn send(&self, user: &User, conversation_id: &str, content: &str) -> Result<i64, ChatError> {
        let req: SendMessage =
            serde_json::from_value(json!({ "conversation_id": conversation_id, "content": content }))
                .expect("request");
        Ok(self.chat.send_message(user, req).await?.message.seq)
    }
}

/// A REST caller.
fn rest(id: &str) -> User {
    User { id: id.into(), name: None, connection: None, arrival: 0 }
}

/// A caller on realtime connection `connection`.
fn connected(id: &str, connection: &str) -> User {
    User { id: id.into(), name: None, connection: Some(connection.into()), arrival: 1 }
}

/// The `notification` events addressed to `user_id` among what the bus carried so far.
fn notifications_to(bus: &mut broadcast::Receiver<Arc<BusMessage>>, user_id: &str) -> usize {
    fn count(message: &BusMessage, user_id: &str) -> usize {
        match message {
            BusMessage::Batch(messages) => messages.iter().map(|m| count(m, user_id)).sum(),
            BusMessage::Deliver(delivery) => match (&delivery.to, &delivery.event) {
                (chatd::core::ports::Audience::Users(users), ServerEvent::Notification(_))
                    if users.iter().any(|u| u == user_id) =>
                {
                    1
                }
                _ => 0,
            },
            _ => 0,
        }
    }
    let mut total = 0;
    while let Ok(message) = bus.try_recv() {
        total += count(&message, user_id);
    }
    total
}

#[tokio::test]
async fn only_the_owner_or_an_admin_may_rename_and_an_admin_may_not_remove_the_owner() {
    let core = Core::start().await;
    let id = core.group("alice", &["bob", "carol"]).await;
    let rename = |name: &str| -> UpdateConversation {
        serde_json::from_value(json!({ "name": name })).expect("request")
    };
    let refused = core.chat.update_conversation(&rest("bob"), &id, rename("bob's")).await;
    assert!(matches!(refused, Err(ChatError::Forbidden(_))), "{refused:?}");
    let promote: AddMembers =
        serde_json::from_value(json!({ "user_ids": ["dave"], "role": "admin" })).expect("request");
    core.chat.add_members(&rest("alice"), &id, promote).await.expect("owner adds an admin");
    core.chat.update_conversation(&rest("dave"), &id, rename("dave's")).await.expect("an admin renames");
    let removed = core.chat.remove_member(&rest("dave"), &id, "alice").await;
    assert!(matches!(removed, Err(ChatError::Forbidden(_))), "an admin removed the owner: {removed:?}");
    core.chat.remove_member(&rest("dave"), &id, "bob").await.expect("an admin removes a member");
    core.chat.remove_member(&rest("carol"), &id, "carol").await.expect("anyone may leave");
}

#[tokio::test]
async fn only_members_may_send_or_read_and_a_removed_member_no_longer_may() {
    let core = Core::start().await;
    let id = core.group("alice", &["bob"]).await;
    assert_eq!(core.send(&rest("bob"), &id, "hi").await.expect("a member sends"), 1);
    let outsider = core.send(&rest("mallory"), &id, "let me in").await;
    assert!(matches!(outsider, Err(ChatError::NotAMember)), "{outsider:?}");
    core.chat.remove_member(&rest("alice"), &id, "bob").await.expect("removed");
    let removed = core.send(&rest("bob"), &id, "still here?").await;
    assert!(matches!(removed, Err(ChatError::NotAMember)), "{removed:?}");
    let history =
        core.chat.history(&rest("bob"), &id, serde_json::from_value(json!({})).expect("query")).await;
    assert!(matches!(history, Err(ChatError::NotAMember)), "{:?}", history.map(|p| p.messages.len()));
}

#[tokio::test]
async fn a_blocked_user_cannot_put_the_blocker_in_a_group_but_the_blocker_may() {
    let core = Core::start().await;
    let block = serde_json::from_value(json!({ "user_id": "mallory" })).expect("request");
    core.chat.block(&rest("alice"), block).await.expect("blocked");
    let req: CreateConversation =
        serde_json::from_value(json!({ "type": "group", "members": ["alice", "bob"] })).expect("request");
    let created = core.chat.create_conversation(&rest("mallory"), req).await;
    assert!(matches!(created, Err(ChatError::Forbidden(_))), "{:?}", created.map(|c| c.0.id));
    let id = core.group("mallory", &["bob"]).await;
    let add: AddMembers = serde_json::from_value(json!({ "user_ids": ["alice"] })).expect("request");
    let added = core.chat.add_members(&rest("mallory"), &id, add).await;
    assert!(matches!(added, Err(ChatError::Forbidden(_))), "{:?}", added.map(|c| c.members.len()));
    // The blocker chose to share a group: her own block does not stop her.
    core.group("alice", &["mallory"]).await;
}

#[tokio::test]
async fn a_focused_member_gets_no_notification_an_online_one_does_and_an_offline_one_a_push_job() {
    let core = Core::start().await;
    let id = core.group("alice", &["bob"]).await;
    let device = serde_json::from_value(json!({ "platform": "fcm", "token": "bob-phone" })).expect("request");
    core.chat.register_device(&rest("bob"), device).await.expect("device");
    let mut bus = core.bus.subscribe();

    // Offline: a durable push job (enqueued right after the commit), no in-app notification.
    core.send(&rest("alice"), &id, "while away").await.expect("sent");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let jobs = loop {
        let jobs = core.store.pending_push_jobs(10).await.expect("outbox");
        if !jobs.is_empty() {
            break jobs;
        }
        assert!(tokio::time::Instant::now() < deadline, "no push job for offline bob");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(jobs.iter().filter(|j| j.user_id == "bob").count(), 1, "{jobs:?}");
    assert_eq!(notifications_to(&mut bus, "bob"), 0);

    // Online elsewhere: an in-app notification, published with the commit; no push job.
    let bob = connected("bob", "ws:test:1");
    core.chat.connect(&bob).await.expect("connected");
    core.send(&rest("alice"), &id, "while online").await.expect("sent");
    assert_eq!(notifications_to(&mut bus, "bob"), 1);
    assert_eq!(core.store.pending_push_jobs(10).await.expect("outbox").len(), jobs.len(), "no new push job");

    // Looking at the conversation: nothing extra (and what a focused member is shown is
    // marked read for them).
    core.chat.focus(&bob, &id).await.expect("focused");
    core.send(&rest("alice"), &id, "while looking").await.expect("sent");
    assert_eq!(notifications_to(&mut bus, "bob"), 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while core.chat.unread(&rest("bob")).await.expect("unread").total != 0 {
        assert!(tokio::time::Instant::now() < deadline, "what bob looked at was not marked read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(core.store.pending_push_jobs(10).await.expect("outbox").len(), jobs.len(), "no new push job");
}
