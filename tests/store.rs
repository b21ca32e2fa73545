//! The `Store` contract, one suite run against both backends: every test below runs once on
//! SQLite (a temporary file) and once on PostgreSQL (a fresh schema, dropped afterwards), as
//! `sqlite::NAME` and `postgres::NAME`. "Another node" is a second store opened on the same
//! database, as a second chatd process would.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatd::core::error::StoreError;
use chatd::core::events::NotificationSettingsUpdate;
use chatd::core::model::{
    Block, ConversationType, JsonObject, Message, MessageType, NotificationSettings, Platform, Role,
};
use chatd::core::ports::NewNotification;
use chatd::core::ports::{
    ActivityCursor, AppendOutcome, ClaimedPushJob, CommitHook, ConversationUpdate, HistoryRange, Membership,
    NewConversation, NewDevice, NewMessage, PushJob, Store,
};
use chatd::core::realtime::{ConversationHead, Notification};
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
            Place::Postgres(schema) => {
                Arc::new(PostgresStore::connect(&schema.config()).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is needed for these tests ({}; set CHATD_TEST_POSTGRES_URL): {e}",
                        common::pg::base_url()
                    )
                }))
            }
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
                    super::run(super::Place::Sqlite(dir), super::$name).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::run(super::Place::Postgres(super::Schema::fresh()), super::$name).await;
                }
            )+
        }
    };
}

store_tests!(
    ping_answers,
    a_group_is_created_with_its_members_oldest_first,
    a_repeated_direct_key_returns_the_existing_conversation,
    a_direct_conversation_created_on_two_nodes_at_once_exists_once,
    an_unknown_conversation_is_none_and_a_non_members_unread_count_is_zero,
    membership_tells_no_conversation_not_member_and_member_with_kind,
    conversations_are_listed_newest_activity_first_with_a_cursor,
    update_conversation_replaces_only_the_given_fields,
    added_members_start_read_up_to_the_last_seq_and_existing_ones_are_left_alone,
    remove_member_reports_whether_it_removed_and_passes_ownership,
    concurrent_removals_of_the_owner_and_members_always_leave_an_owner,
    appends_get_gap_free_seqs_and_return_the_members_with_their_unread_counts,
    a_message_keeps_every_field_it_was_sent_with,
    refused_appends_write_nothing_and_consume_no_seq,
    a_client_id_repeat_returns_the_original_per_sender_and_conversation,
    the_commit_hook_runs_once_before_append_returns,
    the_commit_hook_runs_even_if_the_caller_gives_up,
    edit_replaces_content_of_live_messages_only,
    delete_clears_the_message_once_and_fixes_unread_counts,
    history_pages_run_backward_from_the_newest_or_forward_from_a_seq,
    mark_read_raises_caps_and_never_lowers_the_marker,
    set_notifications_switches_a_members_notifications,
    unread_counts_list_only_conversations_with_unread_messages,
    conversation_heads_and_contacts_cover_the_users_conversations,
    push_jobs_are_recorded_and_listed_oldest_first,
    the_push_outbox_depth_counts_unfinished_jobs_leased_or_not,
    due_push_jobs_are_claimed_oldest_first_up_to_the_limit_and_not_again_while_leased,
    a_push_job_whose_lease_ran_out_is_claimed_again_with_its_attempt_counted,
    a_completed_push_job_is_never_claimed_again,
    a_retried_push_job_is_claimed_only_from_its_next_attempt_with_its_error,
    a_dropped_push_job_is_never_claimed_again,
    finished_push_jobs_are_pruned_within_the_limit_and_unfinished_ones_are_kept,
    a_worker_whose_lease_ran_out_cannot_finish_or_reschedule_the_newer_claim,
    devices_are_upserted_listed_and_removed_per_user,
    registering_past_the_device_cap_replaces_the_least_recently_refreshed_device,
    everything_survives_reopening_the_store,
    concurrent_appends_get_seqs_one_to_n_and_hooks_run_in_seq_order,
    concurrent_appends_on_two_nodes_share_one_gap_free_sequence,
    a_client_id_sent_concurrently_on_two_nodes_is_written_once,
    concurrent_repeats_of_client_ids_on_one_node_commit_each_key_once,
    a_member_removed_concurrently_cannot_append_after_the_removal,
    read_markers_under_concurrent_appends_and_reads_stay_monotonic_and_counts_exact,
    members_added_during_appends_get_exact_unread_counts,
    concurrent_claimers_take_every_push_job_exactly_once,
    a_delayed_push_job_is_due_only_after_its_delay_and_a_newer_one_collapses_it,
    notification_ids_are_per_user_from_one_gap_free_and_read_back_in_order,
    the_notification_log_keeps_the_newest_entries_per_user,
    old_notifications_are_pruned_within_the_limit_and_ids_are_never_reused,
    notifications_recorded_concurrently_on_two_nodes_get_gap_free_ids_committed_in_order,
    notification_settings_default_to_on_and_keep_the_fields_not_given,
    bans_are_recorded_listed_and_lifted,
    blocks_are_recorded_per_blocker_and_found_either_way,
    a_blocked_pair_cannot_append_to_their_direct_conversation_either_way,
    blocks_leave_group_conversations_alone,
    appends_return_whom_each_recipient_blocks_among_the_members,
    a_system_message_needs_no_membership_and_counts_as_unread_for_everyone,
    contacts_leave_out_users_blocked_either_way,
    all_conversations_are_listed_newest_activity_first_with_a_cursor,
);

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
    store.create_conversation(new).await.expect("create").id
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

// ---------------------------------------------------------------------------------------
// Every method's contract.

async fn ping_answers(store: Arc<dyn Store>, _db: Db) {
    store.ping().await.expect("ping");
}

async fn a_group_is_created_with_its_members_oldest_first(store: Arc<dyn Store>, _db: Db) {
    let mut new = group("alice", &["bob", "carol"]);
    new.context = Some("team:7".into());
    new.metadata = object(json!({ "topic": "launch", "n": 1 }));
    let created_at = new.created_at;
    let created = store.create_conversation(new.clone()).await.expect("create");
    assert!(created.created);
    assert_eq!(created.id, new.id);

    let conversation = store.conversation(&created.id, "bob").await.expect("read").expect("exists");
    assert_eq!(conversation.kind, ConversationType::Group);
    assert_eq!(conversation.name.as_deref(), Some("team"));
    assert_eq!(conversation.context.as_deref(), Some("team:7"));
    assert_eq!(conversation.metadata, new.metadata);
    assert_eq!(conversation.created_at, created_at);
    assert_eq!((conversation.last_seq, conversation.last_message.is_none()), (0, true));
    assert_eq!(conversation.last_message_at, None);
    assert_eq!(conversation.unread_count, 0);
    let members: Vec<(&str, Role, i64, bool)> = conversation
        .members
        .iter()
        .map(|m| (m.user_id.as_str(), m.role, m.last_read_seq, m.notifications))
        .collect();
    assert_eq!(
        members,
        vec![
            ("alice", Role::Owner, 0, true),
            ("bob", Role::Member, 0, true),
            ("carol", Role::Member, 0, true)
        ]
    );
    assert!(conversation.members.iter().all(|m| m.joined_at == created_at));
}

async fn a_repeated_direct_key_returns_the_existing_conversation(store: Arc<dyn Store>, _db: Db) {
    let first =
        store.create_conversation(direct("alice", "bob", "alice|bob|product:981")).await.expect("first");
    assert!(first.created);
    let again =
        store.create_conversation(direct("bob", "alice", "alice|bob|product:981")).await.expect("again");
    assert_eq!((again.id.as_str(), again.created), (first.id.as_str(), false));
    let other =
        store.create_conversation(direct("alice", "bob", "alice|bob|product:982")).await.expect("other");
    assert!(other.created);
    assert_ne!(other.id, first.id);
    let conversation = store.conversation(&first.id, "alice").await.expect("read").expect("exists");
    assert_eq!(conversation.kind, ConversationType::Direct);
    assert!(conversation.private_preview, "created with private_preview");
    assert_eq!(conversation.context.as_deref(), Some("product:981"));
}

async fn a_direct_conversation_created_on_two_nodes_at_once_exists_once(store: Arc<dyn Store>, db: Db) {
    let other = db.another_node().await;
    let attempts = (0..16).map(|n| {
        let node = if n % 2 == 0 { store.clone() } else { other.clone() };
        tokio::spawn(async move { node.create_conversation(direct("alice", "bob", "alice|bob|")).await })
    });
    let results: Vec<_> =
        join_all(attempts).await.into_iter().map(|r| r.expect("task").expect("create")).collect();
    let ids: BTreeSet<&str> = results.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one conversation: {results:?}");
    assert_eq!(results.iter().filter(|c| c.created).count(), 1);
    let heads = store.conversation_heads("alice").await.expect("heads");
    assert_eq!(heads.len(), 1);
}

async fn an_unknown_conversation_is_none_and_a_non_members_unread_count_is_zero(
    store: Arc<dyn Store>,
    _db: Db,
) {
    assert!(store.conversation("nope", "alice").await.expect("read").is_none());
    let id = create(&store, group("alice", &["bob"])).await;
    send(&store, &id, "alice", "hi").await;
    assert_eq!(unread_of(&store, &id, "bob").await, 1);
    assert_eq!(unread_of(&store, &id, "mallory").await, 0);
}

async fn membership_tells_no_conversation_not_member_and_member_with_kind(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    assert!(matches!(store.membership("nope", "alice").await.expect("m"), Membership::NoConversation));
    assert!(matches!(store.membership(&id, "mallory").await.expect("m"), Membership::NotMember));
    match store.membership(&id, "alice").await.expect("m") {
        Membership::Member { member, kind } => {
            assert_eq!(
                (member.user_id.as_str(), member.role, kind),
                ("alice", Role::Owner, ConversationType::Group)
            );
        }
        other => panic!("{other:?}"),
    }
}

async fn conversations_are_listed_newest_activity_first_with_a_cursor(store: Arc<dyn Store>, _db: Db) {
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut new = group("alice", &["bob"]);
        new.created_at = Timestamp(1_000 + n);
        ids.push(create(&store, new).await);
    }
    // Two conversations with the same activity time are ordered by id, descending.
    let mut tie = group("alice", &["bob"]);
    tie.created_at = Timestamp(1_004);
    ids.push(create(&store, tie).await);
    create(&store, group("carol", &[])).await;

    let listed: Vec<String> =
        store.conversations_of("alice", None, 100).await.expect("list").into_iter().map(|c| c.id).collect();
    let mut expected = vec![ids[5].clone(), ids[4].clone(), ids[3].clone(), ids[2].clone(), ids[1].clone()];
    expected.push(ids[0].clone());
    if ids[4] > ids[5] {
        expected.swap(0, 1);
    }
    assert_eq!(listed, expected);

    // A message moves its conversation to the top, with the message and the viewer's count.
    let message = send(&store, &ids[0], "bob", "bump").await;
    let page = store.conversations_of("alice", None, 2).await.expect("page");
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].id, ids[0]);
    assert_eq!(page[0].last_message.as_ref(), Some(&message));
    assert_eq!(page[0].last_message_at, Some(message.created_at));
    assert_eq!(page[0].unread_count, 1);
    assert_eq!(page[0].members.len(), 2);

    // Paging with the cursor of the last item walks the rest without repeats.
    let mut walked = vec![page[0].id.clone(), page[1].id.clone()];
    let mut cursor = ActivityCursor {
        activity_at: page[1].last_message_at.unwrap_or(page[1].created_at),
        id: page[1].id.clone(),
    };
    loop {
        let next = store.conversations_of("alice", Some(cursor.clone()), 2).await.expect("page");
        let Some(last) = next.last() else { break };
        cursor = ActivityCursor {
            activity_at: last.last_message_at.unwrap_or(last.created_at),
            id: last.id.clone(),
        };
        walked.extend(next.iter().map(|c| c.id.clone()));
    }
    let all: Vec<String> =
        store.conversations_of("alice", None, 100).await.expect("list").into_iter().map(|c| c.id).collect();
    assert_eq!(walked, all);
    assert_eq!(all.len(), 6);
}

async fn update_conversation_replaces_only_the_given_fields(store: Arc<dyn Store>, _db: Db) {
    let mut new = group("alice", &[]);
    new.metadata = object(json!({ "a": 1 }));
    let id = create(&store, new).await;
    let rename = ConversationUpdate { name: Some("renamed".into()), ..Default::default() };
    assert!(store.update_conversation(&id, rename).await.expect("update"));
    let read = store.conversation(&id, "alice").await.expect("read").expect("exists");
    assert_eq!((read.name.as_deref(), read.metadata.clone()), (Some("renamed"), object(json!({ "a": 1 }))));
    assert!(!read.private_preview);
    let redescribe =
        ConversationUpdate { metadata: Some(object(json!({ "b": [1, 2] }))), ..Default::default() };
    assert!(store.update_conversation(&id, redescribe).await.expect("update"));
    let read = store.conversation(&id, "alice").await.expect("read").expect("exists");
    assert_eq!((read.name.as_deref(), read.metadata), (Some("renamed"), object(json!({ "b": [1, 2] }))));
    let private = ConversationUpdate { private_preview: Some(true), ..Default::default() };
    assert!(store.update_conversation(&id, private).await.expect("update"));
    let read = store.conversation(&id, "alice").await.expect("read").expect("exists");
    assert!(read.private_preview, "private_preview set");
    assert_eq!(read.name.as_deref(), Some("renamed"), "the other fields kept");
    let listed = store.conversations_of("alice", None, 10).await.expect("list");
    assert!(listed.iter().find(|c| c.id == id).expect("listed").private_preview, "listed with the flag");
    let rename = ConversationUpdate { name: Some("x".into()), ..Default::default() };
    assert!(!store.update_conversation("nope", rename).await.expect("update"));
}

async fn added_members_start_read_up_to_the_last_seq_and_existing_ones_are_left_alone(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let id = create(&store, group("alice", &["bob"])).await;
    send(&store, &id, "alice", "one").await;
    send(&store, &id, "alice", "two").await;
    let added = store
        .add_members(&id, vec!["carol".into(), "bob".into(), "dave".into()], Role::Admin, Timestamp(5_000))
        .await
        .expect("add");
    assert_eq!(added, vec!["carol".to_owned(), "dave".to_owned()]);
    let conversation = store.conversation(&id, "carol").await.expect("read").expect("exists");
    let carol = conversation.member("carol").expect("carol");
    assert_eq!((carol.role, carol.last_read_seq, carol.joined_at), (Role::Admin, 2, Timestamp(5_000)));
    assert_eq!(conversation.unread_count, 0, "earlier history is visible but not unread");
    assert_eq!(conversation.member("bob").expect("bob").role, Role::Member);
    send(&store, &id, "alice", "three").await;
    assert_eq!(unread_of(&store, &id, "carol").await, 1);
    assert_unread_counts_exact(&store, &id).await;
}

async fn remove_member_reports_whether_it_removed_and_passes_ownership(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob", "carol"])).await;
    assert!(!store.remove_member(&id, "mallory").await.expect("remove"));
    assert!(store.remove_member(&id, "carol").await.expect("remove"));
    assert!(matches!(store.membership(&id, "carol").await.expect("m"), Membership::NotMember));
    assert!(store.remove_member(&id, "alice").await.expect("remove"));
    let conversation = store.conversation(&id, "bob").await.expect("read").expect("exists");
    let members: Vec<(&str, Role)> =
        conversation.members.iter().map(|m| (m.user_id.as_str(), m.role)).collect();
    assert_eq!(members, vec![("bob", Role::Owner)]);
}

async fn concurrent_removals_of_the_owner_and_members_always_leave_an_owner(store: Arc<dyn Store>, db: Db) {
    let others = ["m1", "m2", "m3", "m4", "m5", "m6"];
    for _ in 0..3 {
        let id = create(&store, group("alice", &others)).await;
        // The owner and the four longest-standing members leave at once, over two nodes.
        let second = db.another_node().await;
        let leaving = ["alice", "m1", "m2", "m3", "m4"];
        let removals = leaving.iter().enumerate().map(|(i, user)| {
            let store = if i % 2 == 0 { store.clone() } else { second.clone() };
            let id = id.clone();
            async move { store.remove_member(&id, user).await.expect("remove") }
        });
        assert!(join_all(removals).await.into_iter().all(|removed| removed));
        let conversation = store.conversation(&id, "m5").await.expect("read").expect("exists");
        let roles: Vec<(&str, Role)> =
            conversation.members.iter().map(|m| (m.user_id.as_str(), m.role)).collect();
        assert_eq!(roles, vec![("m5", Role::Owner), ("m6", Role::Member)]);
    }
}

async fn appends_get_gap_free_seqs_and_return_the_members_with_their_unread_counts(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let id = create(&store, group("alice", &["bob", "carol"])).await;
    store
        .upsert_device(
            NewDevice {
                id: new_id(),
                user_id: "bob".into(),
                platform: Platform::Fcm,
                token: "t".into(),
                endpoint: None,
                keys: None,
                created_at: Timestamp::now(),
            },
            10,
        )
        .await
        .expect("device");
    for n in 1..=3 {
        let outcome = append(&store, text(&id, "alice", &format!("m{n}"))).await;
        let AppendOutcome::Committed { message, mut recipients } = outcome else { panic!("{outcome:?}") };
        assert_eq!(message.seq, n);
        recipients.sort_by(|a, b| a.member.user_id.cmp(&b.member.user_id));
        let seen: Vec<(&str, bool, i64)> =
            recipients.iter().map(|r| (r.member.user_id.as_str(), r.has_devices, r.unread_count)).collect();
        assert_eq!(seen, vec![("alice", false, 0), ("bob", true, n), ("carol", false, n)]);
    }
    let before = Timestamp::now();
    let fourth = send(&store, &id, "bob", "m4").await;
    assert!(fourth.created_at >= Timestamp(before.millis() - 1000) && fourth.created_at <= Timestamp::now());
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2, 3, 4]);
    let conversation = store.conversation(&id, "alice").await.expect("read").expect("exists");
    assert_eq!((conversation.last_seq, conversation.unread_count), (4, 1));
    assert_eq!(conversation.last_message, Some(fourth.clone()));
    assert_eq!(conversation.last_message_at, Some(fourth.created_at));
    assert_unread_counts_exact(&store, &id).await;
}

async fn a_message_keeps_every_field_it_was_sent_with(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let first = send(&store, &id, "bob", "first").await;
    let new = NewMessage {
        id: new_id(),
        conversation_id: id.clone(),
        sender_id: "alice".into(),
        kind: MessageType::Image,
        content: Some("caption ✓ \"quoted\"\nline".into()),
        client_id: Some("c-1".into()),
        reply_to_id: Some(first.id.clone()),
        attachments: vec![object(json!({ "url": "https://x/y.png", "w": 10, "nested": { "a": [1, null] } }))],
        metadata: object(json!({ "product_id": 981, "nul": "a\u{0}b", "big": 12345678901234_i64 })),
    };
    let message = committed(&append(&store, new.clone()).await).clone();
    let read = store.message(&new.id).await.expect("read").expect("exists");
    assert_eq!(read, message);
    assert_eq!(
        (read.kind, read.content.as_deref(), read.client_id.as_deref(), read.reply_to_id.as_deref()),
        (MessageType::Image, new.content.as_deref(), Some("c-1"), Some(first.id.as_str()))
    );
    assert_eq!((read.attachments, read.metadata), (new.attachments, new.metadata));
    assert_eq!((read.edited_at, read.deleted_at), (None, None));
    assert!(store.message("nope").await.expect("read").is_none());
}

async fn refused_appends_write_nothing_and_consume_no_seq(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let other = create(&store, group("alice", &[])).await;
    let elsewhere = send(&store, &other, "alice", "elsewhere").await;
    send(&store, &id, "alice", "one").await;

    assert!(matches!(append(&store, text(&id, "mallory", "x")).await, AppendOutcome::NotMember));
    assert!(matches!(append(&store, text("nope", "alice", "x")).await, AppendOutcome::NoConversation));
    let mut reply = text(&id, "alice", "x");
    reply.reply_to_id = Some(elsewhere.id.clone());
    assert!(matches!(append(&store, reply).await, AppendOutcome::ReplyNotFound));
    let mut reply = text(&id, "alice", "x");
    reply.reply_to_id = Some("nope".into());
    assert!(matches!(append(&store, reply).await, AppendOutcome::ReplyNotFound));

    assert_eq!(last_seq(&store, &id).await, 1);
    assert_eq!(send(&store, &id, "bob", "two").await.seq, 2, "no seq was consumed");
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2]);
    assert_unread_counts_exact(&store, &id).await;
}

async fn a_client_id_repeat_returns_the_original_per_sender_and_conversation(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let other = create(&store, group("alice", &[])).await;
    let original = committed(&append(&store, with_client_id(text(&id, "alice", "hi"), "c-1")).await).clone();
    match append(&store, with_client_id(text(&id, "alice", "different text"), "c-1")).await {
        AppendOutcome::Duplicate(message) => assert_eq!(message, original),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert_eq!(last_seq(&store, &id).await, 1, "a duplicate consumes no seq");
    assert_eq!(unread_of(&store, &id, "bob").await, 1, "nor counts as unread");
    // The key is per sender and per conversation.
    assert_eq!(committed(&append(&store, with_client_id(text(&id, "bob", "hi"), "c-1")).await).seq, 2);
    assert_eq!(committed(&append(&store, with_client_id(text(&other, "alice", "hi"), "c-1")).await).seq, 1);
    // Messages without a key never collide.
    send(&store, &id, "alice", "a").await;
    send(&store, &id, "alice", "a").await;
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2, 3, 4]);
}

async fn the_commit_hook_runs_once_before_append_returns(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let hook: CommitHook = {
        let seen = seen.clone();
        Box::new(move |outcome, _| {
            if let AppendOutcome::Committed { message, .. } = outcome {
                seen.lock().expect("lock").push(message.seq);
            }
        })
    };
    let outcome = store.append_message(text(&id, "alice", "hi"), hook).await.expect("append");
    assert_eq!(committed(&outcome).seq, 1);
    assert_eq!(*seen.lock().expect("lock"), vec![1], "ran exactly once, before the return");
}

async fn the_commit_hook_runs_even_if_the_caller_gives_up(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let (ran, hooked) = tokio::sync::oneshot::channel::<i64>();
    let hook: CommitHook = Box::new(move |outcome, _| {
        if let AppendOutcome::Committed { message, .. } = outcome {
            let _ = ran.send(message.seq);
        }
    });
    let new = text(&id, "alice", "abandoned");
    let message_id = new.id.clone();
    {
        let mut call = std::pin::pin!(store.append_message(new, hook));
        // Started, then dropped: the caller is cancelled.
        let _ = futures::poll!(call.as_mut());
    }
    let seq =
        tokio::time::timeout(Duration::from_secs(10), hooked).await.expect("hook within 10 s").expect("ran");
    assert_eq!(seq, 1);
    assert_eq!(store.message(&message_id).await.expect("read").expect("committed").seq, 1);
}

async fn edit_replaces_content_of_live_messages_only(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let message = send(&store, &id, "alice", "draft").await;
    let edited =
        store.edit_message(&message.id, "final".into(), Timestamp(9_000)).await.expect("edit").expect("live");
    assert_eq!((edited.content.as_deref(), edited.edited_at), (Some("final"), Some(Timestamp(9_000))));
    assert_eq!((edited.seq, edited.created_at), (message.seq, message.created_at));
    assert_eq!((message.version, edited.version), (1, 2), "an edit is a new version");
    assert_eq!(store.message(&message.id).await.expect("read"), Some(edited));
    let (deleted, _) =
        store.delete_message(&message.id, Timestamp(9_500)).await.expect("delete").expect("exists");
    assert_eq!(deleted.version, 3, "so is the delete");
    assert!(
        store.edit_message(&message.id, "again".into(), Timestamp(10_000)).await.expect("edit").is_none()
    );
    assert!(store.edit_message("nope", "x".into(), Timestamp(10_000)).await.expect("edit").is_none());
}

async fn delete_clears_the_message_once_and_fixes_unread_counts(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob", "carol"])).await;
    let mut new = text(&id, "alice", "oops");
    new.attachments = vec![object(json!({ "url": "u" }))];
    new.metadata = object(json!({ "k": "v" }));
    let message = committed(&append(&store, new).await).clone();
    send(&store, &id, "alice", "kept").await;
    store.mark_read(&id, "carol", 1).await.expect("read");
    assert_eq!((unread_of(&store, &id, "bob").await, unread_of(&store, &id, "carol").await), (2, 1));

    let (deleted, now) =
        store.delete_message(&message.id, Timestamp(7_000)).await.expect("delete").expect("exists");
    assert!(now);
    assert_eq!(deleted.content, None);
    assert!(deleted.attachments.is_empty() && deleted.metadata.is_empty());
    assert_eq!((deleted.deleted_at, deleted.seq), (Some(Timestamp(7_000)), 1));
    assert_eq!(unread_of(&store, &id, "bob").await, 1, "bob had not read it");
    assert_eq!(unread_of(&store, &id, "carol").await, 1, "carol had read it");
    assert_eq!(unread_of(&store, &id, "alice").await, 0);

    let (again, now) =
        store.delete_message(&message.id, Timestamp(8_000)).await.expect("delete").expect("exists");
    assert!(!now);
    assert_eq!(again.deleted_at, Some(Timestamp(7_000)));
    assert_eq!((deleted.version, again.version), (2, 2), "deleting again changes nothing");
    assert_eq!(unread_of(&store, &id, "bob").await, 1, "counted down once");
    assert!(store.delete_message("nope", Timestamp(8_000)).await.expect("delete").is_none());
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2], "a deleted message keeps its seq");
    assert_unread_counts_exact(&store, &id).await;
}

async fn history_pages_run_backward_from_the_newest_or_forward_from_a_seq(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &[])).await;
    for n in 1..=10 {
        send(&store, &id, "alice", &format!("m{n}")).await;
    }
    let page = |after_seq, before_seq, limit| HistoryRange { after_seq, before_seq, limit };
    let (newest, more) = store.messages(&id, page(None, None, 3)).await.expect("page");
    assert_eq!((seqs(&newest), more), (vec![8, 9, 10], true));
    let (older, more) = store.messages(&id, page(None, Some(8), 3)).await.expect("page");
    assert_eq!((seqs(&older), more), (vec![5, 6, 7], true));
    let (oldest, more) = store.messages(&id, page(None, Some(3), 3)).await.expect("page");
    assert_eq!((seqs(&oldest), more), (vec![1, 2], false));
    let (forward, more) = store.messages(&id, page(Some(2), None, 3)).await.expect("page");
    assert_eq!((seqs(&forward), more), (vec![3, 4, 5], true));
    let (tail, more) = store.messages(&id, page(Some(7), None, 3)).await.expect("page");
    assert_eq!((seqs(&tail), more), (vec![8, 9, 10], false));
    let (between, more) = store.messages(&id, page(Some(2), Some(6), 10)).await.expect("page");
    assert_eq!((seqs(&between), more), (vec![3, 4, 5], false));
    let (exact, more) = store.messages(&id, page(Some(0), None, 10)).await.expect("page");
    assert_eq!((exact.len(), more), (10, false));
    let (none, more) = store.messages("nope", page(None, None, 10)).await.expect("page");
    assert_eq!((none.len(), more), (0, false));
}

async fn mark_read_raises_caps_and_never_lowers_the_marker(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    for n in 1..=5 {
        send(&store, &id, "alice", &format!("m{n}")).await;
    }
    assert_eq!(store.mark_read(&id, "mallory", 3).await.expect("read"), None);
    assert_eq!(store.mark_read("nope", "bob", 3).await.expect("read"), None);
    assert_eq!(store.mark_read(&id, "bob", 3).await.expect("read"), Some((0, 3)));
    assert_eq!(unread_of(&store, &id, "bob").await, 2);
    assert_eq!(store.mark_read(&id, "bob", 1).await.expect("read"), Some((3, 3)), "never lowered");
    assert_eq!(store.mark_read(&id, "bob", 99).await.expect("read"), Some((3, 5)), "capped at the last seq");
    assert_eq!(unread_of(&store, &id, "bob").await, 0);
    assert_eq!(member_marker(&store, &id, "bob").await, 5);
    assert_unread_counts_exact(&store, &id).await;
}

async fn set_notifications_switches_a_members_notifications(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    assert!(store.set_notifications(&id, "bob", false).await.expect("set"));
    let Membership::Member { member, .. } = store.membership(&id, "bob").await.expect("m") else { panic!() };
    assert!(!member.notifications);
    assert!(store.set_notifications(&id, "bob", true).await.expect("set"));
    let conversation = store.conversation(&id, "bob").await.expect("read").expect("exists");
    assert!(conversation.member("bob").expect("bob").notifications);
    assert!(!store.set_notifications(&id, "mallory", false).await.expect("set"));
}

async fn unread_counts_list_only_conversations_with_unread_messages(store: Arc<dyn Store>, _db: Db) {
    let a = create(&store, group("alice", &["bob"])).await;
    let b = create(&store, group("alice", &["bob"])).await;
    create(&store, group("alice", &["bob"])).await;
    send(&store, &a, "alice", "1").await;
    send(&store, &a, "alice", "2").await;
    send(&store, &b, "alice", "1").await;
    send(&store, &b, "bob", "mine").await;
    let mut counts = store.unread_counts("bob").await.expect("counts");
    counts.sort();
    let mut expected = vec![(a.clone(), 2), (b.clone(), 1)];
    expected.sort();
    assert_eq!(counts, expected);
    store.mark_read(&b, "bob", 2).await.expect("read");
    assert_eq!(store.unread_counts("bob").await.expect("counts"), vec![(a, 2)]);
    assert!(store.unread_counts("nobody").await.expect("counts").is_empty());
}

async fn conversation_heads_and_contacts_cover_the_users_conversations(store: Arc<dyn Store>, _db: Db) {
    let a = create(&store, group("alice", &["bob", "carol"])).await;
    let b = create(&store, direct("alice", "dave", "alice|dave|")).await;
    create(&store, group("erin", &["frank"])).await;
    send(&store, &a, "bob", "1").await;
    send(&store, &a, "bob", "2").await;
    let heads = store.conversation_heads("alice").await.expect("heads");
    let mut expected =
        vec![ConversationHead { id: a.clone(), last_seq: 2 }, ConversationHead { id: b, last_seq: 0 }];
    expected.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(heads, expected, "sorted by id");
    let mut contacts = store.contacts("alice").await.expect("contacts");
    contacts.sort();
    assert_eq!(contacts, vec!["bob", "carol", "dave"]);
    let mut contacts = store.contacts("bob").await.expect("contacts");
    contacts.sort();
    assert_eq!(contacts, vec!["alice", "carol"]);
    assert!(store.contacts("nobody").await.expect("contacts").is_empty());
}

async fn push_jobs_are_recorded_and_listed_oldest_first(store: Arc<dyn Store>, _db: Db) {
    store.enqueue_push(Vec::new()).await.expect("nothing to enqueue");
    let jobs: Vec<PushJob> = (1..=5)
        .map(|n| PushJob {
            id: new_id(),
            user_id: format!("user{n}"),
            conversation_id: "c".into(),
            message_id: format!("m{n}"),
            seq: n,
            created_at: Timestamp(1_000 + n),
        })
        .collect();
    store.enqueue_push(jobs[3..].to_vec()).await.expect("enqueue");
    store.enqueue_push(jobs[..3].to_vec()).await.expect("enqueue");
    assert_eq!(store.pending_push_jobs(100).await.expect("pending"), jobs);
    assert_eq!(store.pending_push_jobs(2).await.expect("pending"), jobs[..2].to_vec());
}

async fn the_push_outbox_depth_counts_unfinished_jobs_leased_or_not(store: Arc<dyn Store>, _db: Db) {
    assert_eq!(store.push_outbox_depth().await.expect("depth"), 0);
    let jobs = push_jobs(4);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(store.push_outbox_depth().await.expect("depth"), 4);
    let claimed = store.claim_push_jobs(2, LONG_LEASE).await.expect("claim");
    assert_eq!(store.push_outbox_depth().await.expect("depth"), 4, "leased jobs are still pending");
    assert!(store.complete_push_job(&claimed[0].job.id, claimed[0].attempt).await.expect("complete"));
    assert!(store.drop_push_job(&claimed[1].job.id, claimed[1].attempt, "gone").await.expect("drop"));
    assert_eq!(store.push_outbox_depth().await.expect("depth"), 2, "finished jobs are not");
}

/// A lease no test outlives.
const LONG_LEASE: Duration = Duration::from_secs(600);
/// A lease a test waits out with [`sleep_past_short_lease`].
const SHORT_LEASE: Duration = Duration::from_millis(50);

/// Sleeps until a [`SHORT_LEASE`] (or a delay as short) taken now has surely run out.
async fn sleep_past_short_lease() {
    tokio::time::sleep(SHORT_LEASE * 3).await;
}

/// `n` push jobs, oldest first, due long ago.
fn push_jobs(n: i64) -> Vec<PushJob> {
    (1..=n)
        .map(|n| PushJob {
            id: new_id(),
            user_id: format!("user{n}"),
            conversation_id: "c".into(),
            message_id: format!("m{n}"),
            seq: n,
            created_at: Timestamp(1_000 + n),
        })
        .collect()
}

async fn claim(store: &Arc<dyn Store>, limit: usize, lease: Duration) -> Vec<ClaimedPushJob> {
    store.claim_push_jobs(limit, lease).await.expect("claim")
}

fn jobs_of(claimed: &[ClaimedPushJob]) -> Vec<PushJob> {
    claimed.iter().map(|c| c.job.clone()).collect()
}

fn attempts_of(claimed: &[ClaimedPushJob]) -> Vec<u32> {
    claimed.iter().map(|c| c.attempt).collect()
}

async fn due_push_jobs_are_claimed_oldest_first_up_to_the_limit_and_not_again_while_leased(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let jobs = push_jobs(5);
    let not_due =
        PushJob { created_at: Timestamp::now().plus(Duration::from_secs(3600)), ..push_jobs(1).remove(0) };
    store.enqueue_push(vec![not_due.clone()]).await.expect("enqueue");
    store.enqueue_push(jobs[2..].to_vec()).await.expect("enqueue");
    store.enqueue_push(jobs[..2].to_vec()).await.expect("enqueue");
    assert!(claim(&store, 0, LONG_LEASE).await.is_empty(), "a limit of 0 claims nothing");

    let before = Timestamp::now();
    let first = claim(&store, 2, LONG_LEASE).await;
    let after = Timestamp::now();
    assert_eq!(jobs_of(&first), jobs[..2].to_vec());
    assert_eq!(attempts_of(&first), vec![1, 1]);
    for claimed in &first {
        assert_eq!(claimed.last_error, None);
        assert!(
            before.plus(LONG_LEASE) <= claimed.leased_until && claimed.leased_until <= after.plus(LONG_LEASE),
            "leased for the lease from the claim"
        );
    }

    let rest = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&rest), jobs[2..].to_vec(), "only due jobs not leased already");
    assert_eq!(attempts_of(&rest), vec![1, 1, 1]);
    assert!(claim(&store, 10, LONG_LEASE).await.is_empty(), "leased or not due yet: nothing to claim");

    let mut pending = jobs.clone();
    pending.push(not_due);
    assert_eq!(
        store.pending_push_jobs(100).await.expect("pending"),
        pending,
        "claimed jobs are still pending"
    );
}

async fn a_push_job_whose_lease_ran_out_is_claimed_again_with_its_attempt_counted(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let jobs = push_jobs(3);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(jobs_of(&claim(&store, 2, SHORT_LEASE).await), jobs[..2].to_vec());
    assert_eq!(jobs_of(&claim(&store, 1, LONG_LEASE).await), jobs[2..].to_vec());
    sleep_past_short_lease().await;

    let again = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&again), jobs[..2].to_vec(), "expired leases only");
    assert_eq!(attempts_of(&again), vec![2, 2]);
    assert!(claim(&store, 10, LONG_LEASE).await.is_empty());
}

async fn a_completed_push_job_is_never_claimed_again(store: Arc<dyn Store>, _db: Db) {
    let jobs = push_jobs(2);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(jobs_of(&claim(&store, 2, SHORT_LEASE).await), jobs);
    assert!(store.complete_push_job(&jobs[0].id, 1).await.expect("complete"));
    assert!(!store.complete_push_job(&jobs[0].id, 1).await.expect("complete"), "completed once only");
    assert!(!store.complete_push_job("no-such-job", 1).await.expect("complete"));
    sleep_past_short_lease().await;

    let again = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&again), jobs[1..].to_vec(), "the sent job's lease expiring does not matter");
    assert_eq!(attempts_of(&again), vec![2]);
    assert!(
        !store.retry_push_job(&jobs[0].id, 1, Timestamp(0), "late").await.expect("retry"),
        "a sent job is not revived"
    );
    assert!(claim(&store, 10, LONG_LEASE).await.is_empty());
    assert_eq!(store.pending_push_jobs(100).await.expect("pending"), jobs[1..].to_vec());
}

async fn a_retried_push_job_is_claimed_only_from_its_next_attempt_with_its_error(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let jobs = push_jobs(2);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(jobs_of(&claim(&store, 1, LONG_LEASE).await), jobs[..1].to_vec());
    let id = &jobs[0].id;

    let in_an_hour = Timestamp::now().plus(Duration::from_secs(3600));
    assert!(store.retry_push_job(id, 1, in_an_hour, "503 from the provider").await.expect("retry"));
    assert!(!store.retry_push_job("no-such-job", 1, in_an_hour, "x").await.expect("retry"));
    let others = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&others), jobs[1..].to_vec(), "not before its next attempt");

    let soon = Timestamp::now().plus(SHORT_LEASE);
    let long_error = "é".repeat(600);
    assert!(store.retry_push_job(id, 1, soon, &long_error).await.expect("retry"));
    sleep_past_short_lease().await;
    let again = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&again), jobs[..1].to_vec(), "due at its next attempt");
    assert_eq!(attempts_of(&again), vec![2], "the claim counts, not the retry");
    assert_eq!(again[0].last_error.as_deref(), Some("é".repeat(512).as_str()), "clipped to 1024 bytes");
}

async fn a_delayed_push_job_is_due_only_after_its_delay_and_a_newer_one_collapses_it(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let now = Timestamp::now();
    let job = |user: &str, seq: i64| PushJob {
        id: new_id(),
        user_id: user.into(),
        conversation_id: "c".into(),
        message_id: format!("m{seq}"),
        seq,
        created_at: now,
    };
    let (older, newer, other_user) = (job("bob", 1), job("bob", 2), job("carol", 3));
    store.enqueue_push_delayed(vec![older.clone(), newer.clone()], SHORT_LEASE).await.expect("enqueue");
    store.enqueue_push_delayed(vec![other_user.clone()], LONG_LEASE).await.expect("enqueue");
    assert!(claim(&store, 10, LONG_LEASE).await.is_empty(), "nothing due before the delay");
    assert!(store.newer_push_job(&older).await.expect("newer"), "bob's seq 2 collapses seq 1");
    assert!(!store.newer_push_job(&newer).await.expect("newer"), "nothing newer than seq 2");
    assert!(!store.newer_push_job(&other_user).await.expect("newer"), "other users do not count");
    sleep_past_short_lease().await;
    let claimed = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&claimed).len(), 2, "bob's two are due, carol's is not yet");
    assert!(store.complete_push_job(&newer.id, 1).await.expect("complete"));
    assert!(!store.newer_push_job(&older).await.expect("newer"), "a finished job collapses nothing");
}

async fn a_dropped_push_job_is_never_claimed_again(store: Arc<dyn Store>, _db: Db) {
    let jobs = push_jobs(2);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(jobs_of(&claim(&store, 2, SHORT_LEASE).await), jobs);
    assert!(store.drop_push_job(&jobs[0].id, 1, "the device is gone").await.expect("drop"));
    assert!(!store.drop_push_job(&jobs[0].id, 1, "again").await.expect("drop"), "dropped once only");
    assert!(!store.drop_push_job("no-such-job", 1, "x").await.expect("drop"));
    assert!(!store.retry_push_job(&jobs[0].id, 1, Timestamp(0), "x").await.expect("retry"), "not revived");
    assert!(!store.complete_push_job(&jobs[0].id, 1).await.expect("complete"), "not sent after all");
    sleep_past_short_lease().await;

    assert_eq!(jobs_of(&claim(&store, 10, LONG_LEASE).await), jobs[1..].to_vec());
    assert_eq!(store.pending_push_jobs(100).await.expect("pending"), jobs[1..].to_vec());
}

async fn finished_push_jobs_are_pruned_within_the_limit_and_unfinished_ones_are_kept(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let jobs = push_jobs(6);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(jobs_of(&claim(&store, 5, LONG_LEASE).await), jobs[..5].to_vec());
    for job in &jobs[..3] {
        assert!(store.complete_push_job(&job.id, 1).await.expect("complete"));
    }
    assert!(store.drop_push_job(&jobs[3].id, 1, "gone").await.expect("drop"));
    // jobs[4] is leased, jobs[5] waits: neither is finished.

    assert_eq!(store.prune_push_jobs(Timestamp(0), 100).await.expect("prune"), 0, "none finished that early");
    let cutoff = Timestamp::now().plus(Duration::from_secs(1));
    assert_eq!(store.prune_push_jobs(cutoff, 0).await.expect("prune"), 0);
    assert_eq!(store.prune_push_jobs(cutoff, 3).await.expect("prune"), 3);
    assert_eq!(
        store.prune_push_jobs(cutoff, 100).await.expect("prune"),
        1,
        "the dropped job was kept until now"
    );
    assert_eq!(store.prune_push_jobs(cutoff, 100).await.expect("prune"), 0);
    assert_eq!(store.pending_push_jobs(100).await.expect("pending"), jobs[4..].to_vec());
    assert_eq!(jobs_of(&claim(&store, 10, LONG_LEASE).await), jobs[5..].to_vec());
}

async fn a_worker_whose_lease_ran_out_cannot_finish_or_reschedule_the_newer_claim(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let jobs = push_jobs(1);
    let id = &jobs[0].id;
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    let stale = claim(&store, 1, SHORT_LEASE).await;
    assert_eq!(attempts_of(&stale), vec![1]);
    sleep_past_short_lease().await;
    let fresh = claim(&store, 1, LONG_LEASE).await;
    assert_eq!(jobs_of(&fresh), jobs, "the lease ran out: claimed again");
    assert_eq!(attempts_of(&fresh), vec![2]);

    // The first worker finally finishes: whatever it decides is ignored.
    assert!(!store.complete_push_job(id, 1).await.expect("complete"), "stale complete");
    assert!(!store.retry_push_job(id, 1, Timestamp(0), "stale").await.expect("retry"), "stale retry");
    assert!(!store.drop_push_job(id, 1, "stale").await.expect("drop"), "stale drop");
    assert!(!store.complete_push_job(id, 3).await.expect("complete"), "a claim that never was");
    assert!(claim(&store, 1, LONG_LEASE).await.is_empty(), "still leased to the second worker");
    assert_eq!(store.pending_push_jobs(10).await.expect("pending"), jobs, "still unfinished");

    // The second worker's retry counts; once its retry is due, the third claim sees its error.
    let soon = Timestamp::now().plus(SHORT_LEASE);
    assert!(store.retry_push_job(id, 2, soon, "503").await.expect("retry"));
    assert!(!store.complete_push_job(id, 1).await.expect("complete"), "still stale");
    sleep_past_short_lease().await;
    let third = claim(&store, 1, LONG_LEASE).await;
    assert_eq!(attempts_of(&third), vec![3]);
    assert_eq!(third[0].last_error.as_deref(), Some("503"), "the stale retry's error was not kept");
    assert!(!store.drop_push_job(id, 2, "stale").await.expect("drop"));
    assert!(store.complete_push_job(id, 3).await.expect("complete"));
    assert!(store.pending_push_jobs(10).await.expect("pending").is_empty());
}

async fn devices_are_upserted_listed_and_removed_per_user(store: Arc<dyn Store>, _db: Db) {
    let device = |token: &str, endpoint: Option<&str>, keys: Option<JsonObject>, at| NewDevice {
        id: new_id(),
        user_id: "alice".into(),
        platform: Platform::Webpush,
        token: token.into(),
        endpoint: endpoint.map(Into::into),
        keys,
        created_at: Timestamp(at),
    };
    let first = store
        .upsert_device(
            device("t1", Some("https://push/1"), Some(object(json!({ "p256dh": "k", "auth": "a" }))), 1_000),
            10,
        )
        .await
        .expect("upsert");
    assert_eq!(
        (first.platform, first.token.as_str(), first.created_at),
        (Platform::Webpush, "t1", Timestamp(1_000))
    );
    let refreshed = store
        .upsert_device(
            device(
                "t1",
                Some("https://push/2"),
                Some(object(json!({ "p256dh": "k2", "auth": "a2" }))),
                2_000,
            ),
            10,
        )
        .await
        .expect("upsert");
    assert_eq!(
        (refreshed.id.as_str(), refreshed.created_at),
        (first.id.as_str(), Timestamp(1_000)),
        "same device"
    );
    assert_eq!(refreshed.endpoint.as_deref(), Some("https://push/2"));
    assert_eq!(refreshed.keys, Some(object(json!({ "p256dh": "k2", "auth": "a2" }))));
    let second = store.upsert_device(device("t2", None, None, 3_000), 10).await.expect("upsert");
    assert_eq!((second.endpoint.clone(), second.keys.clone()), (None, None));
    let mut bobs = device("t1", None, None, 4_000);
    bobs.user_id = "bob".into();
    let bobs = store.upsert_device(bobs, 10).await.expect("upsert");
    assert_ne!(bobs.id, first.id, "the token is per user");

    assert_eq!(store.devices("alice").await.expect("devices"), vec![refreshed.clone(), second.clone()]);
    assert!(!store.remove_device("alice", &bobs.id).await.expect("remove"), "not alice's");
    assert!(store.remove_device("alice", &first.id).await.expect("remove"));
    assert!(!store.remove_device("alice", &first.id).await.expect("remove"));
    assert_eq!(store.devices("alice").await.expect("devices"), vec![second]);
    assert_eq!(store.devices("bob").await.expect("devices"), vec![bobs]);
}

async fn registering_past_the_device_cap_replaces_the_least_recently_refreshed_device(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let device = |token: &str, at| NewDevice {
        id: new_id(),
        user_id: "alice".into(),
        platform: Platform::Fcm,
        token: token.into(),
        endpoint: None,
        keys: None,
        created_at: Timestamp(at),
    };
    for (token, at) in [("t1", 1_000), ("t2", 2_000), ("t3", 3_000)] {
        store.upsert_device(device(token, at), 3).await.expect("upsert");
    }
    // Refreshing t1 makes t2 the least recently registered or refreshed.
    store.upsert_device(device("t1", 4_000), 3).await.expect("refresh");
    store.upsert_device(device("t4", 5_000), 3).await.expect("upsert");
    let tokens = |devices: Vec<chatd::core::model::Device>| {
        devices.into_iter().map(|d| d.token).collect::<BTreeSet<_>>()
    };
    let kept = tokens(store.devices("alice").await.expect("devices"));
    assert_eq!(kept, BTreeSet::from(["t1".to_owned(), "t3".to_owned(), "t4".to_owned()]));
    // A lower cap (a restart with another flag) trims on the next registration.
    store.upsert_device(device("t5", 6_000), 2).await.expect("upsert");
    let kept = tokens(store.devices("alice").await.expect("devices"));
    assert_eq!(kept, BTreeSet::from(["t4".to_owned(), "t5".to_owned()]));
    let mut bobs = device("t1", 7_000);
    bobs.user_id = "bob".into();
    store.upsert_device(bobs, 1).await.expect("upsert");
    assert_eq!(store.devices("alice").await.expect("devices").len(), 2, "another user's cap is their own");
}

async fn everything_survives_reopening_the_store(store: Arc<dyn Store>, db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let sent = send(&store, &id, "alice", "durable").await;
    store.mark_read(&id, "bob", 1).await.expect("read");
    let before = store.conversation(&id, "bob").await.expect("read").expect("exists");
    drop(store);
    let reopened = db.another_node().await;
    assert_eq!(reopened.conversation(&id, "bob").await.expect("read"), Some(before));
    assert_eq!(history(&reopened, &id).await, vec![sent]);
    assert_eq!(send(&reopened, &id, "bob", "next").await.seq, 2);
}

// ---------------------------------------------------------------------------------------
// Concurrency.

async fn concurrent_appends_get_seqs_one_to_n_and_hooks_run_in_seq_order(store: Arc<dyn Store>, _db: Db) {
    const N: i64 = 200;
    let id = create(&store, group("alice", &["bob", "carol"])).await;
    let hooked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let senders = ["alice", "bob", "carol"];
    let tasks = (0..N).map(|n| {
        let (store, hooked, id) = (store.clone(), hooked.clone(), id.clone());
        let sender = senders[n as usize % senders.len()];
        tokio::spawn(async move {
            let hook: CommitHook = Box::new(move |outcome, _| {
                if let AppendOutcome::Committed { message, .. } = outcome {
                    hooked.lock().expect("lock").push(message.seq);
                }
            });
            store.append_message(text(&id, sender, &format!("m{n}")), hook).await
        })
    });
    let mut acked: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| committed(&r.expect("task").expect("append")).seq)
        .collect();
    acked.sort_unstable();
    let all: Vec<i64> = (1..=N).collect();
    assert_eq!(acked, all, "every seq once, no gap");
    assert_eq!(*hooked.lock().expect("lock"), all, "hooks ran in seq order");
    assert_eq!(seqs(&history(&store, &id).await), all);
    assert_unread_counts_exact(&store, &id).await;
}

async fn concurrent_appends_on_two_nodes_share_one_gap_free_sequence(store: Arc<dyn Store>, db: Db) {
    const N: i64 = 120;
    let other = db.another_node().await;
    let id = create(&store, group("alice", &["bob"])).await;
    let hooked: [Arc<Mutex<Vec<i64>>>; 2] = Default::default();
    let tasks = (0..N).map(|n| {
        let node = (n % 2) as usize;
        let store = if node == 0 { store.clone() } else { other.clone() };
        let (hooked, id) = (hooked[node].clone(), id.clone());
        tokio::spawn(async move {
            let hook: CommitHook = Box::new(move |outcome, _| {
                if let AppendOutcome::Committed { message, .. } = outcome {
                    hooked.lock().expect("lock").push(message.seq);
                }
            });
            store.append_message(text(&id, if node == 0 { "alice" } else { "bob" }, "x"), hook).await
        })
    });
    let mut acked: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| committed(&r.expect("task").expect("append")).seq)
        .collect();
    acked.sort_unstable();
    assert_eq!(acked, (1..=N).collect::<Vec<_>>());
    for node in &hooked {
        let seen = node.lock().expect("lock").clone();
        assert_eq!(seen.len() as i64, N / 2);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "each node's hooks in seq order: {seen:?}");
    }
    assert_unread_counts_exact(&store, &id).await;
}

async fn a_client_id_sent_concurrently_on_two_nodes_is_written_once(store: Arc<dyn Store>, db: Db) {
    let other = db.another_node().await;
    let id = create(&store, group("alice", &["bob"])).await;
    for round in 0..5 {
        let client_id = format!("retry-{round}");
        let tasks = (0..12).map(|n| {
            let store = if n % 2 == 0 { store.clone() } else { other.clone() };
            let new = with_client_id(text(&id, "alice", "same"), &client_id);
            tokio::spawn(async move { store.append_message(new, no_hook()).await })
        });
        let outcomes: Vec<AppendOutcome> =
            join_all(tasks).await.into_iter().map(|r| r.expect("task").expect("never an error")).collect();
        let originals: Vec<&Message> = outcomes
            .iter()
            .filter_map(|o| match o {
                AppendOutcome::Committed { message, .. } => Some(message),
                _ => None,
            })
            .collect();
        assert_eq!(originals.len(), 1, "exactly one commit: {outcomes:?}");
        for outcome in &outcomes {
            match outcome {
                AppendOutcome::Committed { .. } => {}
                AppendOutcome::Duplicate(message) => assert_eq!(message, originals[0]),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2, 3, 4, 5]);
    assert_eq!(unread_of(&store, &id, "bob").await, 5);
}

async fn concurrent_repeats_of_client_ids_on_one_node_commit_each_key_once(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    // Sent all at once, so that repeats share a commit group (where the backend has them).
    let tasks = (0..60).map(|n| {
        let store = store.clone();
        let new = with_client_id(text(&id, "alice", &format!("try {n}")), &format!("k{}", n % 6));
        tokio::spawn(async move { store.append_message(new, no_hook()).await })
    });
    let outcomes: Vec<AppendOutcome> =
        join_all(tasks).await.into_iter().map(|r| r.expect("task").expect("never an error")).collect();
    let mut originals: std::collections::BTreeMap<String, Message> = std::collections::BTreeMap::new();
    for outcome in &outcomes {
        if let AppendOutcome::Committed { message, .. } = outcome {
            let key = message.client_id.clone().expect("key");
            assert!(originals.insert(key, message.clone()).is_none(), "a key committed twice");
        }
    }
    assert_eq!(originals.len(), 6, "one commit per key");
    for outcome in &outcomes {
        match outcome {
            AppendOutcome::Committed { .. } => {}
            AppendOutcome::Duplicate(message) => {
                assert_eq!(Some(message), originals.get(message.client_id.as_deref().expect("key")));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seqs(&history(&store, &id).await), (1..=6).collect::<Vec<_>>());
    assert_eq!(unread_of(&store, &id, "bob").await, 6);
}

async fn a_member_removed_concurrently_cannot_append_after_the_removal(store: Arc<dyn Store>, db: Db) {
    let other = db.another_node().await;
    for _round in 0..3 {
        let id = create(&store, group("alice", &["bob", "carol"])).await;
        // Several appenders on both nodes send as carol until refused a few times each.
        let appenders = (0..6).map(|task| {
            let store = if task % 2 == 0 { store.clone() } else { other.clone() };
            let id = id.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut refused = 0;
                for n in 0..2_000 {
                    let started = tokio::time::Instant::now();
                    let new = text(&id, "carol", &format!("t{task} m{n}"));
                    let outcome = store.append_message(new, no_hook()).await.expect("append");
                    if matches!(outcome, AppendOutcome::NotMember) {
                        refused += 1;
                    }
                    outcomes.push((started, outcome));
                    if refused == 3 {
                        break;
                    }
                }
                outcomes
            })
        });
        let appenders: Vec<_> = appenders.collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(store.remove_member(&id, "carol").await.expect("remove"));
        let removed_at = tokio::time::Instant::now();
        let at_removal = history(&store, &id).await;

        let mut acked = Vec::new();
        for appender in appenders {
            let outcomes = appender.await.expect("task");
            for (started, outcome) in &outcomes {
                match outcome {
                    AppendOutcome::Committed { message, recipients } => {
                        assert!(*started < removed_at, "an append started after the removal committed");
                        assert!(
                            recipients.iter().any(|r| r.member.user_id == "carol"),
                            "a member as of the commit"
                        );
                        acked.push(message.seq);
                    }
                    AppendOutcome::NotMember => {}
                    other => panic!("{other:?}"),
                }
            }
            // Once refused, always refused.
            let first_refused = outcomes.iter().position(|(_, o)| matches!(o, AppendOutcome::NotMember));
            let first_refused = first_refused.expect("refused after the removal");
            assert!(outcomes[first_refused..].iter().all(|(_, o)| matches!(o, AppendOutcome::NotMember)));
        }
        acked.sort_unstable();
        let final_history = history(&store, &id).await;
        assert_eq!(seqs(&final_history), seqs(&at_removal), "nothing of carol's committed after her removal");
        assert_eq!(seqs(&final_history), acked, "exactly the acked messages");
        assert_eq!(acked, (1..=acked.len() as i64).collect::<Vec<_>>(), "gap-free");
        assert_unread_counts_exact(&store, &id).await;
    }
}

async fn read_markers_under_concurrent_appends_and_reads_stay_monotonic_and_counts_exact(
    store: Arc<dyn Store>,
    db: Db,
) {
    let other = db.another_node().await;
    let id = create(&store, group("alice", &["bob"])).await;
    let appends = (0..80).map(|n| {
        let store = if n % 2 == 0 { store.clone() } else { other.clone() };
        let id = id.clone();
        tokio::spawn(async move {
            committed(&store.append_message(text(&id, "alice", "x"), no_hook()).await.expect("append")).seq
        })
    });
    let reads = (0..80).map(|n| {
        let store = if n % 2 == 0 { other.clone() } else { store.clone() };
        let id = id.clone();
        tokio::spawn(async move {
            store.mark_read(&id, "bob", (n * 7) % 90).await.expect("read").expect("member")
        })
    });
    let (appended, marks) = futures::join!(join_all(appends), join_all(reads));
    let appended: Vec<i64> = appended.into_iter().map(|r| r.expect("task")).collect();
    let highest_requested = (0..80).map(|n| (n * 7) % 90).max().unwrap_or(0);
    for mark in marks {
        let (before, after) = mark.expect("task");
        assert!(after >= before, "never lowered: {before} -> {after}");
        assert!(after <= 80, "capped at the last seq");
    }
    assert_eq!(appended.len(), 80);
    let marker = member_marker(&store, &id, "bob").await;
    assert!(marker <= highest_requested.min(80));
    // A final read to the end: nothing unread, and every count exact along the way.
    assert_unread_counts_exact(&store, &id).await;
    assert_eq!(store.mark_read(&id, "bob", 80).await.expect("read").expect("member").1, 80);
    assert_eq!(unread_of(&store, &id, "bob").await, 0);
    assert_eq!(store.mark_read(&id, "bob", 3).await.expect("read").expect("member"), (80, 80));
}

async fn members_added_during_appends_get_exact_unread_counts(store: Arc<dyn Store>, db: Db) {
    let other = db.another_node().await;
    let id = create(&store, group("alice", &[])).await;
    let appends = (0..60).map(|n| {
        let store = if n % 2 == 0 { store.clone() } else { other.clone() };
        let id = id.clone();
        tokio::spawn(async move {
            committed(&store.append_message(text(&id, "alice", "x"), no_hook()).await.expect("append")).seq
        })
    });
    let adds = (0..10).map(|n| {
        let store = if n % 2 == 0 { other.clone() } else { store.clone() };
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(n * 3)).await;
            store
                .add_members(&id, vec![format!("user{n}")], Role::Member, Timestamp::now())
                .await
                .expect("add")
        })
    });
    let (appended, added) = futures::join!(join_all(appends), join_all(adds));
    assert!(appended.into_iter().all(|r| r.is_ok()));
    assert!(added.into_iter().all(|r| r.expect("task").len() == 1));
    assert_eq!(seqs(&history(&store, &id).await), (1..=60).collect::<Vec<_>>());
    assert_unread_counts_exact(&store, &id).await;
}

/// Runs `claimers` workers on each store, each claiming up to 7 jobs at a time (long lease)
/// and completing them, until nothing is left to claim; returns every claimed job's id
/// (repeats included). Each claim is checked to return at most 7 jobs, each a first attempt.
async fn claim_and_complete_concurrently(stores: &[Arc<dyn Store>], claimers: usize) -> Vec<String> {
    const LIMIT: usize = 7;
    let workers = stores.iter().flat_map(|store| {
        (0..claimers).map(move |_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut taken = Vec::new();
                loop {
                    let claimed = store.claim_push_jobs(LIMIT, LONG_LEASE).await?;
                    if claimed.is_empty() {
                        return Ok::<_, StoreError>(taken);
                    }
                    assert!(claimed.len() <= LIMIT, "claimed {} > {LIMIT}", claimed.len());
                    for job in claimed {
                        assert_eq!(job.attempt, 1, "{} claimed before", job.job.id);
                        assert!(
                            store.complete_push_job(&job.job.id, job.attempt).await?,
                            "{} was finished",
                            job.job.id
                        );
                        taken.push(job.job.id);
                    }
                }
            })
        })
    });
    let mut taken = Vec::new();
    for worker in join_all(workers.collect::<Vec<_>>()).await {
        taken.extend(worker.expect("claimer task").expect("claimer"));
    }
    taken
}

/// Enqueues `n` jobs, runs [`claim_and_complete_concurrently`] and checks each job was
/// claimed exactly once in total and none is left.
async fn every_push_job_is_claimed_exactly_once(stores: &[Arc<dyn Store>], claimers: usize, n: i64) {
    let jobs = push_jobs(n);
    for batch in jobs.chunks(100) {
        stores[0].enqueue_push(batch.to_vec()).await.expect("enqueue");
    }
    let mut taken = claim_and_complete_concurrently(stores, claimers).await;
    taken.sort();
    let mut expected: Vec<String> = jobs.into_iter().map(|job| job.id).collect();
    expected.sort();
    assert_eq!(taken.len(), expected.len(), "claims in total");
    assert_eq!(taken, expected, "every job exactly once");
    for store in stores {
        assert!(claim(store, 10, LONG_LEASE).await.is_empty());
        assert!(store.pending_push_jobs(10).await.expect("pending").is_empty());
    }
}

async fn concurrent_claimers_take_every_push_job_exactly_once(store: Arc<dyn Store>, _db: Db) {
    every_push_job_is_claimed_exactly_once(&[store], 8, 300).await;
}

// ---------------------------------------------------------------------------------------
// PostgreSQL only: what has no SQLite counterpart.

#[tokio::test]
async fn postgres_an_unreachable_database_is_reported_unavailable_not_a_panic() {
    let port = common::free_port();
    let config = PostgresConfig::from_url(&format!("postgres://root@127.0.0.1:{port}/test")).expect("url");
    match PostgresStore::connect(&config).await {
        Err(StoreError::Unavailable(message)) => assert!(message.contains("connect"), "{message}"),
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_nodes_starting_together_migrate_one_fresh_schema_once() {
    let schema = Schema::fresh();
    let config = schema.config();
    let opened = join_all((0..4).map(|_| PostgresStore::connect(&config))).await;
    let stores: Vec<PostgresStore> = opened.into_iter().map(|r| r.expect("connect")).collect();
    let id =
        create(&(Arc::new(stores.into_iter().next().expect("one")) as Arc<dyn Store>), group("a", &[])).await;
    let again: Arc<dyn Store> = Arc::new(PostgresStore::connect(&config).await.expect("reconnect"));
    assert!(again.conversation(&id, "a").await.expect("read").is_some());
}

#[tokio::test]
async fn postgres_a_search_path_without_a_schema_is_an_error_not_a_panic() {
    let base = common::pg::base_url();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3Dchatd_no_such_schema");
    let missing = PostgresStore::connect(&PostgresConfig::from_url(&url).expect("url")).await;
    assert!(missing.is_err(), "nowhere to create tables is an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_killed_by_the_server_are_replaced() {
    let schema = Schema::fresh();
    let url = format!("{}&application_name={}", schema.url, schema.name);
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&PostgresConfig::from_url(&url).expect("url")).await.expect("connect"),
    );
    let id = create(&store, group("alice", &["bob"])).await;
    send(&store, &id, "alice", "before").await;

    let (admin, connection) = tokio_postgres::connect(&common::pg::base_url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&schema.name],
        )
        .await
        .expect("terminate");
    assert!(!killed.is_empty(), "the store had connections to kill");
    tokio::time::sleep(Duration::from_millis(200)).await;

    store.ping().await.expect("ping on a new connection");
    assert_eq!(send(&store, &id, "bob", "after").await.seq, 2);
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_claimers_on_two_nodes_take_every_push_job_exactly_once() {
    let schema = Schema::fresh();
    let mut nodes: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..2 {
        nodes.push(Arc::new(PostgresStore::connect(&schema.config()).await.expect("connect")));
    }
    every_push_job_is_claimed_exactly_once(&nodes, 8, 500).await;
}

// ---------------------------------------------------------------------------------------
// The notification log.

fn notification(user_id: &str, seq: i64) -> NewNotification {
    NewNotification {
        user_id: user_id.to_owned(),
        notification: Notification {
            id: None,
            kind: "message",
            conversation_id: "c1".into(),
            message_id: format!("m{seq}"),
            seq,
            sender_id: "alice".into(),
            preview: (seq % 2 == 0).then(|| format!("hello {seq}")),
            unread_count: seq,
        },
        created_at: Timestamp::now(),
    }
}

/// Opens the notification logs of `users`.
async fn open_logs(store: &Arc<dyn Store>, users: &[&str]) {
    for user in users {
        store.open_notification_log(user).await.expect("open log");
    }
}

/// The seqs of a user's kept notifications after `after`, with their ids.
async fn logged(store: &Arc<dyn Store>, user_id: &str, after: i64) -> Vec<(i64, i64)> {
    let entries = store.notifications_after(user_id, after, 10_000).await.expect("read log");
    entries.iter().map(|n| (n.id.expect("logged entries have ids"), n.seq)).collect()
}

async fn notification_ids_are_per_user_from_one_gap_free_and_read_back_in_order(
    store: Arc<dyn Store>,
    _db: Db,
) {
    assert_eq!(store.latest_notification_id("bob").await.expect("latest"), 0);
    // dave never opened a log: his notifications are not recorded.
    let batch = vec![notification("bob", 1), notification("dave", 1)];
    assert_eq!(store.record_notifications(batch, 100).await.expect("record"), vec![None, None]);
    open_logs(&store, &["bob", "carol"]).await;
    let batch = vec![
        notification("bob", 1),
        notification("carol", 1),
        notification("dave", 1),
        notification("bob", 2),
    ];
    assert_eq!(
        store.record_notifications(batch, 100).await.expect("record"),
        vec![Some(1), Some(1), None, Some(2)]
    );
    assert_eq!(
        store.record_notifications(vec![notification("bob", 3)], 100).await.expect("record"),
        vec![Some(3)]
    );
    assert_eq!(store.open_notification_log("bob").await.expect("open again"), 3, "opening is idempotent");
    assert_eq!(logged(&store, "dave", 0).await, vec![]);
    assert_eq!(store.latest_notification_id("bob").await.expect("latest"), 3);
    assert_eq!(store.latest_notification_id("carol").await.expect("latest"), 1);

    let entries = store.notifications_after("bob", 0, 100).await.expect("read");
    let mut expected = notification("bob", 2).notification;
    expected.id = Some(2);
    assert_eq!(entries.get(1), Some(&expected), "every field comes back");
    assert_eq!(logged(&store, "bob", 0).await, vec![(1, 1), (2, 2), (3, 3)]);
    assert_eq!(logged(&store, "bob", 1).await, vec![(2, 2), (3, 3)]);
    assert_eq!(logged(&store, "bob", 3).await, vec![]);
    let first_two = store.notifications_after("bob", 0, 2).await.expect("read");
    assert_eq!(first_two.iter().map(|n| n.id).collect::<Vec<_>>(), vec![Some(1), Some(2)], "limit applies");
    assert_eq!(
        store.record_notifications(Vec::new(), 100).await.expect("record nothing"),
        Vec::<Option<i64>>::new()
    );
}

async fn the_notification_log_keeps_the_newest_entries_per_user(store: Arc<dyn Store>, _db: Db) {
    open_logs(&store, &["bob", "carol"]).await;
    for seq in 1..=5 {
        store.record_notifications(vec![notification("bob", seq)], 3).await.expect("record");
    }
    store.record_notifications(vec![notification("carol", 1)], 3).await.expect("record");
    assert_eq!(logged(&store, "bob", 0).await, vec![(3, 3), (4, 4), (5, 5)]);
    assert_eq!(logged(&store, "carol", 0).await, vec![(1, 1)], "another user's log is untouched");
    let batch = (6..=10).map(|seq| notification("bob", seq)).collect();
    assert_eq!(
        store.record_notifications(batch, 3).await.expect("record"),
        [6, 7, 8, 9, 10].map(Some).to_vec()
    );
    assert_eq!(logged(&store, "bob", 0).await, vec![(8, 8), (9, 9), (10, 10)], "trimmed within a batch too");
}

async fn old_notifications_are_pruned_within_the_limit_and_ids_are_never_reused(
    store: Arc<dyn Store>,
    _db: Db,
) {
    open_logs(&store, &["bob", "carol"]).await;
    let old = |user: &str, seq| NewNotification { created_at: Timestamp(1_000), ..notification(user, seq) };
    store
        .record_notifications(vec![old("bob", 1), old("bob", 2), old("carol", 1)], 100)
        .await
        .expect("record");
    store.record_notifications(vec![notification("bob", 3)], 100).await.expect("record");
    assert_eq!(store.prune_notifications(Timestamp(1_000), 100).await.expect("prune"), 0, "strictly before");
    assert_eq!(store.prune_notifications(Timestamp(2_000), 0).await.expect("prune"), 0);
    assert_eq!(store.prune_notifications(Timestamp(2_000), 2).await.expect("prune"), 2);
    assert_eq!(store.prune_notifications(Timestamp(2_000), 100).await.expect("prune"), 1);
    assert_eq!(logged(&store, "bob", 0).await, vec![(3, 3)]);
    assert_eq!(logged(&store, "carol", 0).await, vec![]);
    assert_eq!(store.latest_notification_id("carol").await.expect("latest"), 1, "the counter stays");
    assert_eq!(
        store.record_notifications(vec![notification("carol", 2)], 100).await.expect("record"),
        vec![Some(2)]
    );
}

async fn notifications_recorded_concurrently_on_two_nodes_get_gap_free_ids_committed_in_order(
    store: Arc<dyn Store>,
    db: Db,
) {
    const N: i64 = 60;
    open_logs(&store, &["bob", "carol"]).await;
    let other = db.another_node().await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A reader that must never see an id before every smaller one is committed.
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let ids = logged(&store, "bob", 0).await;
                let expected: Vec<i64> = (1..=ids.len() as i64).collect();
                assert_eq!(ids.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected, "a hole was visible");
                tokio::task::yield_now().await;
            }
        })
    };
    let tasks = (0..N).map(|n| {
        let store = if n % 2 == 0 { store.clone() } else { other.clone() };
        // Two users per batch, in either order, so batches lock counters in both orders.
        let batch = if n % 3 == 0 {
            vec![notification("bob", n), notification("carol", n)]
        } else {
            vec![notification("carol", n), notification("bob", n)]
        };
        tokio::spawn(async move { store.record_notifications(batch, 1000).await })
    });
    let results = join_all(tasks).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.expect("reader");
    let mut ids: Vec<i64> = results
        .into_iter()
        .flat_map(|r| r.expect("task").expect("record"))
        .map(|id| id.expect("logged"))
        .collect();
    ids.sort_unstable();
    let per_user: Vec<i64> = (1..=N).flat_map(|id| [id, id]).collect();
    assert_eq!(ids, per_user, "each user got 1..=N");
    assert_eq!(logged(&store, "bob", 0).await.len() as i64, N);
    assert_eq!(store.latest_notification_id("carol").await.expect("latest"), N);
}

async fn notification_settings_default_to_on_and_keep_the_fields_not_given(store: Arc<dyn Store>, _db: Db) {
    let on = NotificationSettings { enabled: true, mentions_when_muted: true };
    assert_eq!(store.notification_settings("alice").await.expect("read"), on, "defaults");
    let off = NotificationSettingsUpdate { enabled: Some(false), mentions_when_muted: None };
    let now = store.update_notification_settings("alice", off).await.expect("update");
    assert_eq!(now, NotificationSettings { enabled: false, mentions_when_muted: true });
    let mentions = NotificationSettingsUpdate { enabled: None, mentions_when_muted: Some(false) };
    let now = store.update_notification_settings("alice", mentions).await.expect("update");
    assert_eq!(now, NotificationSettings { enabled: false, mentions_when_muted: false });
    assert_eq!(store.notification_settings("alice").await.expect("read"), now, "stored");
    let nothing = store.update_notification_settings("alice", NotificationSettingsUpdate::default()).await;
    assert_eq!(nothing.expect("update"), now, "an empty update changes nothing");
    assert_eq!(store.notification_settings("bob").await.expect("read"), on, "per user");
}

// ---------------------------------------------------------------------------------------
// Bans and blocks.

async fn bans_are_recorded_listed_and_lifted(store: Arc<dyn Store>, db: Db) {
    assert!(store.banned_users().await.expect("bans").is_empty());
    assert!(store.ban_user("mallory", Some("spam".into()), Timestamp::now()).await.expect("ban"));
    assert!(!store.ban_user("mallory", None, Timestamp::now()).await.expect("ban again"), "not new");
    assert!(store.ban_user("eve", None, Timestamp::now()).await.expect("ban"));
    assert_eq!(store.banned_users().await.expect("bans"), vec!["eve", "mallory"]);
    assert_eq!(db.another_node().await.banned_users().await.expect("bans"), vec!["eve", "mallory"]);
    assert!(store.unban_user("mallory").await.expect("unban"));
    assert!(!store.unban_user("mallory").await.expect("unban again"), "nothing left to lift");
    assert_eq!(store.banned_users().await.expect("bans"), vec!["eve"]);
}

async fn blocks_are_recorded_per_blocker_and_found_either_way(store: Arc<dyn Store>, _db: Db) {
    let first = Timestamp(Timestamp::now().millis() - 1000);
    assert!(store.block_user("alice", "bob", first).await.expect("block"));
    assert!(!store.block_user("alice", "bob", Timestamp::now()).await.expect("block again"), "not new");
    assert!(store.block_user("alice", "carol", Timestamp::now()).await.expect("block"));
    let blocks = store.blocks_of("alice").await.expect("blocks");
    assert_eq!(blocks.iter().map(|b| b.user_id.as_str()).collect::<Vec<_>>(), ["bob", "carol"]);
    assert_eq!(blocks[0], Block { user_id: "bob".into(), created_at: first }, "the first block's time stays");
    assert!(store.blocks_of("bob").await.expect("blocks").is_empty(), "blocks are one-way records");

    let others: Vec<String> = ["bob", "carol", "dave"].map(String::from).to_vec();
    let mut among = store.blocked_among("alice", &others).await.expect("among");
    among.sort();
    assert_eq!(among, ["bob", "carol"]);
    let among = store.blocked_among("bob", &["alice".into(), "dave".into()]).await.expect("among");
    assert_eq!(among, ["alice"], "found from the blocked side too");
    assert!(store.blocked_among("alice", &[]).await.expect("among").is_empty());

    assert!(store.unblock_user("alice", "bob").await.expect("unblock"));
    assert!(!store.unblock_user("alice", "bob").await.expect("unblock again"));
    assert!(!store.unblock_user("bob", "carol").await.expect("not a block"));
    assert!(store.blocked_among("bob", &["alice".into()]).await.expect("among").is_empty());
}

async fn a_blocked_pair_cannot_append_to_their_direct_conversation_either_way(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let id = create(&store, direct("alice", "bob", "alice|bob|")).await;
    send(&store, &id, "alice", "before").await;
    store.block_user("bob", "alice", Timestamp::now()).await.expect("block");
    assert!(matches!(append(&store, text(&id, "alice", "x")).await, AppendOutcome::Blocked));
    assert!(matches!(append(&store, text(&id, "bob", "x")).await, AppendOutcome::Blocked), "both ways");
    assert_eq!(last_seq(&store, &id).await, 1, "a refused append consumes no seq");
    assert_eq!(unread_of(&store, &id, "bob").await, 1);
    store.unblock_user("bob", "alice").await.expect("unblock");
    assert_eq!(send(&store, &id, "alice", "after").await.seq, 2);
}

async fn blocks_leave_group_conversations_alone(store: Arc<dyn Store>, _db: Db) {
    let pair = create(&store, group("alice", &["bob"])).await;
    let team = create(&store, group("alice", &["bob", "carol"])).await;
    store.block_user("alice", "bob", Timestamp::now()).await.expect("block");
    assert_eq!(send(&store, &pair, "bob", "hi").await.seq, 1, "a two-member group is still a group");
    assert_eq!(send(&store, &team, "alice", "hi").await.seq, 1);
}

async fn appends_return_whom_each_recipient_blocks_among_the_members(store: Arc<dyn Store>, _db: Db) {
    let team = create(&store, group("alice", &["bob", "carol"])).await;
    store.block_user("alice", "bob", Timestamp::now()).await.expect("block");
    store.block_user("alice", "dave", Timestamp::now()).await.expect("block a non-member");
    let blocks_of = |outcome: AppendOutcome| {
        let AppendOutcome::Committed { mut recipients, .. } = outcome else { panic!("{outcome:?}") };
        recipients.sort_by(|a, b| a.member.user_id.cmp(&b.member.user_id));
        recipients.into_iter().map(|r| (r.member.user_id, r.blocks)).collect::<Vec<_>>()
    };
    let none = Vec::<String>::new;
    let expected =
        vec![("alice".into(), vec!["bob".to_owned()]), ("bob".into(), none()), ("carol".into(), none())];
    assert_eq!(blocks_of(append(&store, text(&team, "bob", "one")).await), expected);
    // A block made between two appends is seen by the next one.
    store.block_user("carol", "alice", Timestamp::now()).await.expect("block");
    let expected = vec![
        ("alice".into(), vec!["bob".to_owned()]),
        ("bob".into(), none()),
        ("carol".into(), vec!["alice".to_owned()]),
    ];
    assert_eq!(blocks_of(append(&store, text(&team, "bob", "two")).await), expected);
}

async fn a_system_message_needs_no_membership_and_counts_as_unread_for_everyone(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let id = create(&store, direct("alice", "bob", "alice|bob|")).await;
    store.block_user("alice", "bob", Timestamp::now()).await.expect("block");
    let mut new = text(&id, "system", "Order #981 was shipped");
    new.kind = MessageType::System;
    let outcome = append(&store, new).await;
    let AppendOutcome::Committed { message, recipients } = outcome else { panic!("{outcome:?}") };
    assert_eq!((message.seq, message.kind, message.sender_id.as_str()), (1, MessageType::System, "system"));
    assert_eq!(recipients.len(), 2);
    assert!(recipients.iter().all(|r| r.unread_count == 1), "{recipients:?}");
    assert_eq!(unread_of(&store, &id, "alice").await, 1);
    assert_eq!(unread_of(&store, &id, "bob").await, 1);
    let mut new = text("nope", "system", "x");
    new.kind = MessageType::System;
    assert!(matches!(append(&store, new).await, AppendOutcome::NoConversation));
}

async fn contacts_leave_out_users_blocked_either_way(store: Arc<dyn Store>, _db: Db) {
    create(&store, group("alice", &["bob", "carol"])).await;
    create(&store, direct("alice", "dave", "alice|dave|")).await;
    store.block_user("alice", "bob", Timestamp::now()).await.expect("block");
    store.block_user("dave", "alice", Timestamp::now()).await.expect("block");
    assert_eq!(store.contacts("alice").await.expect("contacts"), vec!["carol"]);
    assert_eq!(store.contacts("bob").await.expect("contacts"), vec!["carol"]);
    let mut contacts = store.contacts("carol").await.expect("contacts");
    contacts.sort();
    assert_eq!(contacts, vec!["alice", "bob"], "others are unaffected");
}

async fn all_conversations_are_listed_newest_activity_first_with_a_cursor(store: Arc<dyn Store>, _db: Db) {
    let first = create(&store, group("alice", &["bob"])).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = create(&store, direct("carol", "dave", "carol|dave|")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = create(&store, group("erin", &[])).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    send(&store, &first, "bob", "activity").await;

    let all = store.all_conversations(None, 10).await.expect("all");
    let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), third.as_str(), second.as_str()]);
    assert!(all.iter().all(|c| c.unread_count == 0), "nobody's unread count");
    assert_eq!(all[0].members.len(), 2);
    assert_eq!(all[0].last_message.as_ref().map(|m| m.seq), Some(1));

    let page = store.all_conversations(None, 2).await.expect("page");
    let last = page.last().expect("two");
    let cursor =
        ActivityCursor { activity_at: last.last_message_at.unwrap_or(last.created_at), id: last.id.clone() };
    let rest = store.all_conversations(Some(cursor), 10).await.expect("rest");
    assert_eq!(rest.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [second.as_str()]);
}

// ---------------------------------------------------------------------------------------
// SQLite only: a full disk in the middle of a commit group.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_full_disk_under_concurrent_sends_acks_nothing_missing_from_the_history_and_skips_no_seq() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite =
        Arc::new(SqliteStore::open(&dir.path().join("chatd.db"), Synchronous::Normal).expect("open"));
    let store: Arc<dyn Store> = sqlite.clone();
    let id = create(&store, group("alice", &["bob", "carol"])).await;
    send(&store, &id, "alice", "before the disk filled up").await;
    let pages = sqlite.page_count().await.expect("page count");
    sqlite.set_max_page_count(pages + 16).await.expect("cap");

    // Small messages sent in parallel with large conversations being created, so that
    // failures land in the middle of commit groups: once the cap is near, a creation fails
    // (SQLITE_FULL, with nothing written yet) and SQLite rolls the whole transaction back,
    // while the small messages after it in the same group still fit.
    let senders = (0..8).map(|n| {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..150 {
                let content = format!("{n}-{i}");
                if let Ok(AppendOutcome::Committed { message, .. }) =
                    store.append_message(text(&id, "alice", &content), no_hook()).await
                {
                    acked.push((message.id, message.seq));
                }
            }
            acked
        })
    });
    let creators = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut failed = 0;
            for _ in 0..60 {
                let mut new = group("carol", &["dave"]);
                new.metadata.insert("blob".into(), json!("x".repeat(40_000)));
                if store.create_conversation(new).await.is_err() {
                    failed += 1;
                }
            }
            failed
        })
    });
    let (senders, creators) = tokio::join!(join_all(senders), join_all(creators));
    let acked: Vec<(String, i64)> =
        senders.into_iter().flat_map(|sender| sender.expect("sender task")).collect();
    let failed: usize = creators.into_iter().map(|creator| creator.expect("creator task")).sum();
    assert!(failed > 0, "the disk never filled up: raise the load or lower the cap");

    sqlite.set_max_page_count(u64::from(u32::MAX)).await.expect("uncap");
    let messages = history(&store, &id).await;
    let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
    let expected: Vec<i64> = (1..=i64::try_from(messages.len()).expect("small")).collect();
    assert_eq!(seqs, expected, "no seq skipped");
    let in_history: BTreeSet<(String, i64)> = messages.iter().map(|m| (m.id.clone(), m.seq)).collect();
    for message in &acked {
        assert!(in_history.contains(message), "acked but not in the history: {message:?}");
    }
    assert_eq!(in_history.len(), acked.len() + 1, "everything in the history was acked");
    let after = send(&store, &id, "bob", "the disk has room again").await;
    assert_eq!(after.seq, i64::try_from(messages.len()).expect("small") + 1);
}
