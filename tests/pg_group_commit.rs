//! Group commit of appends on PostgreSQL (src/store/postgres/group_commit.rs): concurrent
//! appends of one node share one transaction, and what the store promises per append still
//! holds per append — gap-free seqs per conversation across nodes, `client_id` repeats
//! answered with the original (inside one group and across groups), a refused or bad job
//! failing alone, and no acked message lost when the process is killed mid-load.
//!
//! To put many appends into one group for sure, a test first stalls the node's writer with
//! an append whose commit hook waits (hooks run on the writer), queues the appends, then lets
//! the writer go: it takes everything queued as its next group.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatd::core::model::{ConversationType, JsonObject, Message, Role};
use chatd::core::ports::{AppendOutcome, CommitHook, HistoryRange, NewConversation, NewMessage, Store};
use chatd::core::time::Timestamp;
use chatd::store::postgres::PostgresStore;
use common::pg::Schema;
use common::store::{new_id, text, with_client_id as keyed};
use common::{ServerProcess, cli_token};
use futures::future::join_all;
use serde_json::{Value, json};

async fn node(schema: &Schema) -> Arc<dyn Store> {
    Arc::new(PostgresStore::connect(&schema.config(), &chatd::tasks::Tasks::new()).await.unwrap_or_else(
        |e| panic!("PostgreSQL is needed ({}; set CHATD_TEST_POSTGRES_URL): {e}", common::pg::base_url()),
    ))
}

async fn conversation(store: &Arc<dyn Store>, kind: ConversationType, members: &[&str]) -> String {
    let id = new_id();
    let direct_key = (kind == ConversationType::Direct).then(|| format!("direct|{id}"));
    let members = members
        .iter()
        .enumerate()
        .map(|(i, user)| (user.to_string(), if i == 0 { Role::Owner } else { Role::Member }))
        .collect();
    store
        .create_conversation(NewConversation {
            id,
            kind,
            name: None,
            context: None,
            metadata: JsonObject::new(),
            direct_key,
            members,
            created_at: Timestamp::now(),
            private_preview: false,
        })
        .await
        .expect("create")
        .expect("no block")
        .id
}

async fn history(store: &Arc<dyn Store>, conversation_id: &str) -> Vec<Message> {
    let range = HistoryRange { after_seq: Some(0), before_seq: None, limit: 100_000 };
    store.messages(conversation_id, range).await.expect("history").0
}

fn seqs(messages: &[Message]) -> Vec<i64> {
    messages.iter().map(|m| m.seq).collect()
}

/// The (conversation, seq) of every committed append, in the order its hook ran.
type HookLog = Arc<Mutex<Vec<(String, i64)>>>;

/// Holds the node's append writer inside a commit hook until dropped, so that appends
/// queued meanwhile form its next group.
struct StalledWriter {
    release: std::sync::mpsc::Sender<()>,
    append: tokio::task::JoinHandle<()>,
}

impl StalledWriter {
    async fn on(store: &Arc<dyn Store>, conversation_id: &str, sender: &str) -> StalledWriter {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (stalled, is_stalled) = tokio::sync::oneshot::channel();
        let hook: CommitHook = Box::new(move |_, _| {
            let _ = stalled.send(());
            let _ = released.recv_timeout(Duration::from_secs(20));
        });
        let (store, new) = (store.clone(), text(conversation_id, sender, "stall"));
        let append = tokio::spawn(async move {
            store.append_message(new, hook).await.expect("the stalling append");
        });
        is_stalled.await.expect("the writer ran the stalling hook");
        StalledWriter { release, append }
    }

    /// Lets the writer go.
    async fn release(self) {
        let _ = self.release.send(());
        self.append.await.expect("the stalling append");
    }
}

/// Queues `news` on `store` in order while its writer is stalled, so they form one group in
/// that order; returns the outcomes in order.
async fn in_one_group(
    store: &Arc<dyn Store>,
    stall_in: &str,
    stall_as: &str,
    news: Vec<NewMessage>,
) -> Vec<Result<AppendOutcome, chatd::core::error::StoreError>> {
    let stalled = StalledWriter::on(store, stall_in, stall_as).await;
    let mut calls: Vec<_> =
        news.into_iter().map(|new| store.append_message(new, Box::new(|_, _| {}))).collect();
    // The first poll of each call queues its append: one after the other, in order.
    for call in &mut calls {
        assert!(futures::poll!(call.as_mut()).is_pending(), "answered while the writer is stalled");
    }
    stalled.release().await;
    join_all(calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_on_two_nodes_get_gap_free_seqs_and_every_ack_is_stored() {
    const CONVERSATIONS: usize = 24;
    const APPENDERS: usize = 8;
    const ROUNDS: usize = 12;
    const PER_ROUND: usize = 20;
    let schema = Schema::fresh();
    let nodes = [node(&schema).await, node(&schema).await];
    let users = ["u0", "u1", "u2", "u3"];
    let mut conversations = Vec::new();
    for _ in 0..CONVERSATIONS {
        conversations.push(conversation(&nodes[0], ConversationType::Group, &users).await);
    }
    // Per node, the (conversation, seq) order its hooks saw.
    let hooked: [HookLog; 2] = Default::default();
    let appenders = (0..APPENDERS).map(|appender| {
        let node = appender % 2;
        let (store, hooked, conversations) =
            (nodes[node].clone(), hooked[node].clone(), conversations.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for round in 0..ROUNDS {
                // Each round several appends at once, to various conversations.
                let sends = (0..PER_ROUND).map(|n| {
                    let conversation = &conversations[(appender * 7 + round * 5 + n * 3) % CONVERSATIONS];
                    let sender = users[(appender + n) % users.len()];
                    let new = text(conversation, sender, &format!("a{appender} r{round} n{n}"));
                    let hooked = hooked.clone();
                    let hook: CommitHook = Box::new(move |outcome, _| {
                        if let AppendOutcome::Committed { message, .. } = outcome {
                            let seen = (message.conversation_id.clone(), message.seq);
                            hooked.lock().expect("lock").push(seen);
                        }
                    });
                    store.append_message(new, hook)
                });
                for outcome in join_all(sends).await {
                    match outcome.expect("append") {
                        AppendOutcome::Committed { message, .. } => acked.push(message),
                        other => panic!("expected a commit, got {other:?}"),
                    }
                }
            }
            acked
        })
    });
    let mut acked: BTreeMap<String, Vec<Message>> = BTreeMap::new();
    for appender in join_all(appenders).await {
        for message in appender.expect("appender") {
            acked.entry(message.conversation_id.clone()).or_default().push(message);
        }
    }
    let total: usize = acked.values().map(Vec::len).sum();
    assert_eq!(total, APPENDERS * ROUNDS * PER_ROUND);
    for conversation in &conversations {
        let stored = history(&nodes[1], conversation).await;
        let mut mine = acked.remove(conversation).unwrap_or_default();
        mine.sort_by_key(|m| m.seq);
        assert_eq!(seqs(&stored), (1..=stored.len() as i64).collect::<Vec<_>>(), "gap-free, unique");
        assert_eq!(stored, mine, "exactly the acked messages, as acked");
        let read = nodes[0].conversation(conversation, "u0").await.expect("read").expect("exists");
        assert_eq!(read.last_seq, stored.len() as i64);
        for member in &read.members {
            let unread = stored.iter().filter(|m| m.sender_id != member.user_id).count() as i64;
            let seen = nodes[0].conversation(conversation, &member.user_id).await.expect("read");
            assert_eq!(seen.expect("exists").unread_count, unread, "unread count of {}", member.user_id);
        }
    }
    for node in &hooked {
        let mut last: HashMap<String, i64> = HashMap::new();
        for (conversation, seq) in node.lock().expect("lock").iter() {
            let previous = last.insert(conversation.clone(), *seq).unwrap_or(0);
            assert!(*seq > previous, "hooks of {conversation} out of seq order: {previous} then {seq}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_id_repeats_inside_one_group_and_across_groups_return_the_original() {
    let schema = Schema::fresh();
    let store = node(&schema).await;
    let other_node = node(&schema).await;
    let id = conversation(&store, ConversationType::Group, &["alice", "bob"]).await;
    let elsewhere = conversation(&store, ConversationType::Group, &["carol"]).await;

    // 30 appends in one group, 10 keys each sent three times (the repeats are different
    // messages with the same key), plus bob using alice's keys: keys are per sender.
    let mut news: Vec<NewMessage> =
        (0..30).map(|n| keyed(text(&id, "alice", &format!("try {n}")), &format!("k{}", n % 10))).collect();
    news.extend((0..3).map(|n| keyed(text(&id, "bob", &format!("bob {n}")), "k0")));
    let outcomes = in_one_group(&store, &elsewhere, "carol", news).await;
    let mut originals: BTreeMap<(String, String), Message> = BTreeMap::new();
    let mut repeats = Vec::new();
    for outcome in outcomes {
        match outcome.expect("append") {
            AppendOutcome::Committed { message, .. } => {
                let key = (message.sender_id.clone(), message.client_id.clone().expect("key"));
                assert!(originals.insert(key, message).is_none(), "a key committed twice");
            }
            AppendOutcome::Duplicate(message) => repeats.push(message),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(originals.len(), 11, "one commit per (sender, key)");
    let commit_times: BTreeSet<Timestamp> = originals.values().map(|m| m.created_at).collect();
    assert_eq!(commit_times.len(), 1, "one transaction: the repeats were answered inside the group");
    assert_eq!(repeats.len(), 22);
    for repeat in &repeats {
        let key = (repeat.sender_id.clone(), repeat.client_id.clone().expect("key"));
        assert_eq!(Some(repeat), originals.get(&key), "a repeat returns the original");
    }
    // The first of each key in submission order won: "try 0" .. "try 9".
    for n in 0..10 {
        let original = &originals[&("alice".to_owned(), format!("k{n}"))];
        assert_eq!(original.content.as_deref(), Some(format!("try {n}").as_str()));
    }
    let stored = history(&store, &id).await;
    assert_eq!(seqs(&stored), (1..=11).collect::<Vec<_>>(), "nothing duplicated, no seq consumed");

    // Across groups, and from another node: every repeat gets the original.
    let again = (0..10).map(|n| {
        let store = if n % 2 == 0 { store.clone() } else { other_node.clone() };
        let new = keyed(text(&id, "alice", "later"), &format!("k{n}"));
        tokio::spawn(async move { store.append_message(new, Box::new(|_, _| {})).await })
    });
    for outcome in join_all(again).await {
        match outcome.expect("task").expect("append") {
            AppendOutcome::Duplicate(message) => {
                let key = (message.sender_id.clone(), message.client_id.clone().expect("key"));
                assert_eq!(Some(&message), originals.get(&key));
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }
    assert_eq!(history(&store, &id).await.len(), 11);
    let bob = store.conversation(&id, "bob").await.expect("read").expect("exists");
    assert_eq!(bob.unread_count, 10, "repeats count as unread once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_job_in_a_busy_group_fails_alone_and_the_others_commit() {
    let schema = Schema::fresh();
    let store = node(&schema).await;
    let rooms: Vec<String> = {
        let mut rooms = Vec::new();
        for _ in 0..4 {
            rooms.push(conversation(&store, ConversationType::Group, &["alice", "bob"]).await);
        }
        rooms
    };
    let pair = conversation(&store, ConversationType::Direct, &["alice", "mallory"]).await;
    store.block_user("mallory", "alice", Timestamp::now()).await.expect("block");
    let elsewhere = conversation(&store, ConversationType::Group, &["carol"]).await;
    let foreign = match store
        .append_message(text(&elsewhere, "carol", "not in the rooms"), Box::new(|_, _| {}))
        .await
        .expect("append")
    {
        AppendOutcome::Committed { message, .. } => message,
        other => panic!("{other:?}"),
    };

    // Round 0: good jobs around refused ones, checked inside the group, which still commits
    // as one transaction. Round 1: the same plus a job PostgreSQL rejects (a NUL byte in
    // text), which fails the group's transaction as a whole.
    let mut committed: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut committed_total = 0;
    for round in 0..2 {
        let mut news = Vec::new();
        let mut expected = Vec::new();
        for n in 0..40 {
            let room = &rooms[n % rooms.len()];
            let (new, outcome) = match n {
                5 => (text(room, "mallory", "not a member"), "not_member"),
                11 => {
                    let mut new = text(room, "alice", "reply elsewhere");
                    new.reply_to_id = Some(foreign.id.clone());
                    (new, "reply_not_found")
                }
                17 => (text("no-such-conversation", "alice", "x"), "no_conversation"),
                23 => (text(&pair, "alice", "blocked"), "blocked"),
                29 if round == 1 => (text(room, "bob", "nul \u{0} byte"), "error"),
                _ => (text(room, if n % 3 == 0 { "bob" } else { "alice" }, &format!("ok {n}")), "committed"),
            };
            news.push(new);
            expected.push(outcome);
        }
        let outcomes = in_one_group(&store, &elsewhere, "carol", news.clone()).await;
        let mut commit_times = BTreeSet::new();
        for ((outcome, expected), new) in outcomes.into_iter().zip(&expected).zip(&news) {
            let got = match &outcome {
                Ok(AppendOutcome::Committed { message, .. }) => {
                    assert_eq!(message.id, new.id);
                    committed.entry(message.conversation_id.clone()).or_default().push(message.seq);
                    commit_times.insert(message.created_at);
                    committed_total += 1;
                    "committed"
                }
                Ok(AppendOutcome::NotMember) => "not_member",
                Ok(AppendOutcome::ReplyNotFound) => "reply_not_found",
                Ok(AppendOutcome::NoConversation) => "no_conversation",
                Ok(AppendOutcome::Blocked) => "blocked",
                Ok(AppendOutcome::Duplicate(_)) => "duplicate",
                Ok(AppendOutcome::ThreadNotFound) => "thread_not_found",
                Ok(AppendOutcome::MentionsAllRefused) => "mentions_all_refused",
                Ok(AppendOutcome::ReadOnly(..)) => "read_only",
                Err(_) => "error",
            };
            assert_eq!(got, *expected, "round {round}, {:?}: {outcome:?}", new.content);
        }
        if round == 0 {
            assert_eq!(commit_times.len(), 1, "the refusals did not break the group up");
        }
    }
    let mut stored_total = 0;
    for room in &rooms {
        let stored = history(&store, room).await;
        let acked = committed.remove(room).unwrap_or_default();
        assert_eq!(seqs(&stored), acked, "the good jobs committed in submission order, gap-free");
        stored_total += stored.len();
    }
    assert_eq!(stored_total, committed_total);
    assert!(history(&store, &pair).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// A real process, killed mid-load.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_load_loses_no_acked_message() {
    const PAIRS: usize = 16;
    let schema = Schema::fresh();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let args = [
        "--data-dir",
        data,
        "--rate-limit",
        "0",
        "--database-url",
        schema.url.as_str(),
        "--media-dir-shared",
    ];
    let server = ServerProcess::start(dir.path(), &args, dir.path().join("first.log")).await;
    let users: Vec<String> = (0..2 * PAIRS).map(|n| format!("user{n}")).collect();
    let tokens: Vec<String> = users.iter().map(|u| cli_token(dir.path(), u, &["--data-dir", data])).collect();
    let mut rooms = Vec::new();
    for pair in 0..PAIRS {
        let owner = server.client(&tokens[2 * pair]);
        let room = owner.create("group", &[users[2 * pair + 1].as_str()]).await;
        rooms.push(room["id"].as_str().expect("id").to_owned());
    }

    // Every user sends back to back, with a client_id, until the server is gone.
    let senders = (0..users.len()).map(|n| {
        let client = server.client(&tokens[n]);
        let path = format!("/api/conversations/{}/messages", rooms[n / 2]);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0.. {
                let body = json!({ "content": format!("m {n} {k}"), "client_id": format!("c-{n}-{k}") });
                match client.try_post(&path, body).await {
                    Some(reply) if reply.status.as_u16() == 201 => acked.push(reply.body),
                    _ => break,
                }
            }
            acked
        })
    });
    let senders: Vec<_> = senders.collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    let mut acked: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for sender in join_all(senders).await {
        for message in sender.expect("sender") {
            let room = message["conversation_id"].as_str().expect("conversation").to_owned();
            acked.entry(room).or_default().push(message);
        }
    }
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(total >= 100, "the load ran before the kill: {total} acked");

    let server = ServerProcess::start(dir.path(), &args, dir.path().join("second.log")).await;
    for (pair, room) in rooms.iter().enumerate() {
        let stored = server.client(&tokens[2 * pair]).all_messages(room).await;
        let stored_seqs: Vec<i64> = stored.iter().map(|m| m["seq"].as_i64().expect("seq")).collect();
        assert_eq!(stored_seqs, (1..=stored.len() as i64).collect::<Vec<_>>(), "gap-free after the kill");
        let by_id: BTreeMap<&str, &Value> =
            stored.iter().map(|m| (m["id"].as_str().expect("id"), m)).collect();
        let ids: BTreeSet<&str> = by_id.keys().copied().collect();
        for message in acked.get(room).map(Vec::as_slice).unwrap_or_default() {
            let id = message["id"].as_str().expect("id");
            assert!(ids.contains(id), "acked message {id} lost");
            for field in ["seq", "content", "client_id", "sender_id", "created_at"] {
                assert_eq!(by_id[id][field], message[field], "{field} of {id}");
            }
        }
    }
    // The server goes on where it stopped.
    let next = server.client(&tokens[0]).send(&rooms[0], "after the restart").await;
    let before = acked.get(&rooms[0]).map_or(0, Vec::len) as i64;
    assert!(next["seq"].as_i64().expect("seq") > before);
}
