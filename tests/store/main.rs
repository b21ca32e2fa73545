//! The `Store` contract, one suite run against both backends: every test runs once on SQLite
//! (a temporary file) and once on PostgreSQL (a fresh schema, dropped afterwards), as
//! `CONCERN::sqlite::NAME` and `CONCERN::postgres::NAME`. "Another node" is a second store
//! opened on the same database, as a second chatd process would.
//!
//! One test binary, one module per concern; each module lists its tests in [`store_tests!`],
//! which declares them once per backend. The backends and the helpers every module shares
//! live here.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatd::core::error::StoreError;
use chatd::core::model::{
    Block, ConversationType, JsonObject, Message, MessageType, NotificationSettings, Platform, Role,
};
use chatd::core::ports::NewNotification;
use chatd::core::ports::{
    ActivityCursor, AppendOutcome, ClaimedPushJob, CommitHook, ConversationUpdate, HistoryRange, Membership,
    NewConversation, NewDevice, NewMessage, PushJob, Store,
};
use chatd::core::requests::NotificationSettingsUpdate;
use chatd::core::server_events::{ConversationHead, Notification, NotificationKind};
use chatd::core::time::Timestamp;
use chatd::store::postgres::{PostgresConfig, PostgresStore};
use chatd::store::sqlite::{SqliteStore, Synchronous};
use common::pg::Schema;
use common::store::{new_id, text, with_client_id};
use futures::future::join_all;
use serde_json::json;

// ---------------------------------------------------------------------------------------
// The two backends.

/// Where a test's database lives; kept alive (and cleaned up) for the whole test.
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(Schema),
}

impl Place {
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Place::Sqlite(dir) => Arc::new(
                SqliteStore::open(&dir.path().join("chatd.db"), Synchronous::Normal).expect("open SQLite"),
            ),
            Place::Postgres(schema) => Arc::new(
                PostgresStore::connect(&schema.config(), &chatd::tasks::Tasks::new()).await.unwrap_or_else(
                    |e| {
                        panic!(
                            "PostgreSQL is needed for these tests ({}; set CHATD_TEST_POSTGRES_URL): {e}",
                            common::pg::base_url()
                        )
                    },
                ),
            ),
        }
    }
}

/// A test's store, and a way to open another node on the same database.
struct Db {
    place: Place,
}

impl Db {
    /// Another store on the same database, as another chatd node (or a restart) would open.
    async fn another_node(&self) -> Arc<dyn Store> {
        self.place.open().await
    }
}

async fn run<F, Fut>(place: Place, test: F)
where
    F: FnOnce(Arc<dyn Store>, Db) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = Db { place };
    let store = db.place.open().await;
    test(store, db).await;
}

/// Declares each test once per backend.
macro_rules! store_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let dir = tempfile::tempdir().expect("temp dir");
                    crate::run(crate::Place::Sqlite(dir), super::$name).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::run(crate::Place::Postgres(crate::Schema::fresh()), super::$name).await;
                }
            )+
        }
    };
}

mod conversations;
mod devices;
mod members;
mod messages;
mod moderation;
mod notifications;
mod postgres_only;
mod push_jobs;
mod reads;
mod search;

// ---------------------------------------------------------------------------------------
// Helpers.

fn object(value: serde_json::Value) -> JsonObject {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn group(owner: &str, others: &[&str]) -> NewConversation {
    let mut members = vec![(owner.to_owned(), Role::Owner)];
    members.extend(others.iter().map(|u| (u.to_string(), Role::Member)));
    NewConversation {
        id: new_id(),
        kind: ConversationType::Group,
        name: Some("team".into()),
        context: None,
        metadata: JsonObject::new(),
        direct_key: None,
        members,
        created_at: Timestamp::now(),
        private_preview: false,
    }
}

fn direct(a: &str, b: &str, key: &str) -> NewConversation {
    NewConversation {
        id: new_id(),
        kind: ConversationType::Direct,
        name: None,
        context: Some("product:981".into()),
        metadata: JsonObject::new(),
        direct_key: Some(key.into()),
        members: vec![(a.into(), Role::Owner), (b.into(), Role::Member)],
        created_at: Timestamp::now(),
        private_preview: true,
    }
}

async fn create(store: &Arc<dyn Store>, new: NewConversation) -> String {
    store.create_conversation(new).await.expect("create").expect("no block").id
}

fn no_hook() -> CommitHook {
    Box::new(|_, _| {})
}

async fn append(store: &Arc<dyn Store>, new: NewMessage) -> AppendOutcome {
    store.append_message(new, no_hook()).await.expect("append")
}

/// Appends and expects a commit; returns the message.
async fn send(store: &Arc<dyn Store>, conversation_id: &str, sender: &str, content: &str) -> Message {
    match append(store, text(conversation_id, sender, content)).await {
        AppendOutcome::Committed { message, .. } => message,
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn committed(outcome: &AppendOutcome) -> &Message {
    match outcome {
        AppendOutcome::Committed { message, .. } => message,
        other => panic!("expected a commit, got {other:?}"),
    }
}

async fn history(store: &Arc<dyn Store>, conversation_id: &str) -> Vec<Message> {
    let range = HistoryRange { after_seq: Some(0), before_seq: None, limit: 100_000 };
    store.messages(conversation_id, range).await.expect("history").0
}

async fn last_seq(store: &Arc<dyn Store>, conversation_id: &str) -> i64 {
    store.conversation(conversation_id, "nobody").await.expect("read").expect("exists").last_seq
}

async fn unread_of(store: &Arc<dyn Store>, conversation_id: &str, user: &str) -> i64 {
    store.conversation(conversation_id, user).await.expect("read").expect("exists").unread_count
}

async fn member_marker(store: &Arc<dyn Store>, conversation_id: &str, user: &str) -> i64 {
    match store.membership(conversation_id, user).await.expect("membership") {
        Membership::Member { member, .. } => member.last_read_seq,
        other => panic!("{user} is not a member: {other:?}"),
    }
}

/// Every member's stored unread count equals a recount from the history.
async fn assert_unread_counts_exact(store: &Arc<dyn Store>, conversation_id: &str) {
    let messages = history(store, conversation_id).await;
    let conversation = store.conversation(conversation_id, "nobody").await.expect("read").expect("exists");
    for member in &conversation.members {
        let expected = messages
            .iter()
            .filter(|m| {
                m.seq > member.last_read_seq && m.sender_id != member.user_id && m.deleted_at.is_none()
            })
            .count() as i64;
        assert_eq!(
            unread_of(store, conversation_id, &member.user_id).await,
            expected,
            "unread count of {} (read up to {})",
            member.user_id,
            member.last_read_seq
        );
    }
}

fn seqs(messages: &[Message]) -> Vec<i64> {
    messages.iter().map(|m| m.seq).collect()
}
