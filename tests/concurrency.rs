//! Concurrency: idempotent retries, gap-free per-conversation seqs under load, and
//! race-free direct conversation creation — all over real HTTP against a real server.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::{Client, Reply, TestServer};
use futures::future::join_all;
use serde_json::{Value, json};

/// Runs every future on the multi-threaded runtime at once and collects the results in order.
async fn all_at_once<T: Send + 'static>(
    futures: impl IntoIterator<Item = impl Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    join_all(handles).await.into_iter().map(|r| r.expect("task panicked")).collect()
}

fn messages_path(conversation_id: &str) -> String {
    format!("/api/conversations/{conversation_id}/messages")
}

/// One history page: (messages, has_more).
async fn history_page(client: &Client, conversation_id: &str, query: &str) -> (Vec<Value>, bool) {
    let body = client.get(&format!("{}?{query}", messages_path(conversation_id))).await.expect(200);
    let messages = body["messages"].as_array().expect("messages array").clone();
    let has_more = body["has_more"].as_bool().expect("has_more bool");
    (messages, has_more)
}

fn seq_of(message: &Value) -> i64 {
    message["seq"].as_i64().expect("seq")
}

fn assert_ascending(page: &[Value]) {
    let seqs: Vec<i64> = page.iter().map(seq_of).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "page not ascending: {seqs:?}");
}

/// The whole history walked backward with `before_seq`, returned in ascending order.
async fn walk_backward(client: &Client, conversation_id: &str, limit: usize) -> Vec<Value> {
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let query = match before {
            Some(seq) => format!("before_seq={seq}&limit={limit}"),
            None => format!("limit={limit}"),
        };
        let (page, has_more) = history_page(client, conversation_id, &query).await;
        assert!(page.len() <= limit, "page larger than limit {limit}: {}", page.len());
        assert_ascending(&page);
        if let Some(bound) = before {
            assert!(page.iter().all(|m| seq_of(m) < bound), "before_seq={bound} returned a later seq");
        }
        if !has_more {
            pages.push(page);
            break;
        }
        assert!(!page.is_empty(), "has_more with an empty page");
        before = Some(seq_of(&page[0]));
        pages.push(page);
        assert!(pages.len() <= 1000, "backward walk does not end");
    }
    pages.into_iter().rev().flatten().collect()
}

/// The whole history walked forward with `after_seq`, from the start.
async fn walk_forward(client: &Client, conversation_id: &str, limit: usize) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    let mut after = 0;
    loop {
        let (page, has_more) =
            history_page(client, conversation_id, &format!("after_seq={after}&limit={limit}")).await;
        assert!(page.len() <= limit, "page larger than limit {limit}: {}", page.len());
        assert_ascending(&page);
        assert!(page.iter().all(|m| seq_of(m) > after), "after_seq={after} returned an earlier seq");
        let last = page.last().map(seq_of);
        all.extend(page);
        if !has_more {
            break;
        }
        after = last.expect("has_more with an empty page");
        assert!(all.len() <= 1_000_000, "forward walk does not end");
    }
    all
}

/// Asserts that `history` is exactly seq 1..=n once each, ascending, and agrees with the acks.
#[track_caller]
fn assert_matches_acks(history: &[Value], acks: &BTreeMap<i64, Value>, direction: &str) {
    let seqs: Vec<i64> = history.iter().map(seq_of).collect();
    let expected: Vec<i64> = (1..=acks.len() as i64).collect();
    assert_eq!(seqs, expected, "{direction} walk must return every seq once, ascending");
    for message in history {
        let ack = &acks[&seq_of(message)];
        assert_eq!(message["id"], ack["id"], "{direction}: id of seq {}", seq_of(message));
        assert_eq!(message["content"], ack["content"], "{direction}: content of seq {}", seq_of(message));
        assert_eq!(message["sender_id"], ack["sender_id"], "{direction}: sender of seq {}", seq_of(message));
    }
}

/// Sends and returns the reply without asserting the status.
async fn send_reply(client: Client, conversation_id: String, body: Value) -> Reply {
    client.post(&messages_path(&conversation_id), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_client_id_sent_50_times_concurrently_stores_one_message() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let conversation = alice.create("group", &["bob"]).await;
    let id = conversation["id"].as_str().unwrap().to_owned();

    let replies = all_at_once((0..50).map(|_| {
        send_reply(alice.clone(), id.clone(), json!({ "content": "once only", "client_id": "retry-1" }))
    }))
    .await;

    let mut created = 0;
    for reply in &replies {
        match reply.status.as_u16() {
            201 => created += 1,
            200 => {}
            other => panic!("unexpected status {other}: {:?}", reply.body),
        }
    }
    assert_eq!(created, 1, "exactly one send creates the message");
    let first = &replies[0].body;
    for reply in &replies {
        assert_eq!(reply.body["id"], first["id"], "every reply carries the original message");
        assert_eq!(reply.body["seq"], first["seq"], "every reply carries the original seq");
        assert_eq!(reply.body["client_id"], "retry-1");
        assert_eq!(reply.body["content"], "once only");
    }
    assert_eq!(first["seq"], 1);

    let (history, has_more) = history_page(&alice, &id, "limit=100").await;
    assert_eq!(history.len(), 1, "history holds one message: {history:?}");
    assert!(!has_more);
    assert_eq!(history[0]["id"], first["id"]);
    let conversation = alice.get(&format!("/api/conversations/{id}")).await.expect(200);
    assert_eq!(conversation["last_seq"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_sends_from_eight_users_get_gap_free_seqs_1_to_1000() {
    const USERS: usize = 8;
    const PER_USER: usize = 125;
    let server = TestServer::start().await;
    let users: Vec<String> = (0..USERS).map(|i| format!("user{i}")).collect();
    let clients: Vec<Client> = users.iter().map(|u| server.client(u)).collect();
    let others: Vec<&str> = users[1..].iter().map(String::as_str).collect();
    let conversation = clients[0].create("group", &others).await;
    let id = conversation["id"].as_str().unwrap().to_owned();

    let sends = clients.iter().enumerate().flat_map(|(u, client)| {
        let id = id.clone();
        (0..PER_USER).map(move |n| {
            send_reply(client.clone(), id.clone(), json!({ "content": format!("user{u} message {n}") }))
        })
    });
    let replies = all_at_once(sends).await;
    assert_eq!(replies.len(), USERS * PER_USER);

    let mut acks: BTreeMap<i64, Value> = BTreeMap::new();
    let mut contents = HashSet::new();
    for reply in replies {
        assert_eq!(reply.status.as_u16(), 201, "every send is created: {:?}", reply.body);
        let seq = seq_of(&reply.body);
        assert!(contents.insert(reply.body["content"].as_str().unwrap().to_owned()));
        if let Some(previous) = acks.insert(seq, reply.body) {
            panic!("seq {seq} acked twice (first for {})", previous["content"]);
        }
    }
    let seqs: Vec<i64> = acks.keys().copied().collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<i64>>(), "acked seqs are exactly 1..=1000");
    let ids: HashSet<&str> = acks.values().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1000, "every message has its own id");

    let conversation = clients[3].get(&format!("/api/conversations/{id}")).await.expect(200);
    assert_eq!(conversation["last_seq"], 1000);
    assert_eq!(conversation["last_message"]["id"], acks[&1000]["id"]);

    let backward = walk_backward(&clients[1], &id, 100).await;
    assert_matches_acks(&backward, &acks, "backward");
    let forward = walk_forward(&clients[2], &id, 100).await;
    assert_matches_acks(&forward, &acks, "forward");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_to_many_conversations_keep_each_conversations_seqs_independent() {
    const CONVERSATIONS: usize = 20;
    const PER_CONVERSATION: usize = 25;
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let bob = server.client("bob");
    let mut ids = Vec::new();
    for _ in 0..CONVERSATIONS {
        ids.push(alice.create("group", &["bob"]).await["id"].as_str().unwrap().to_owned());
    }

    // Interleave conversations and senders so every conversation is written from both sides
    // while all the others are written too.
    let sends = (0..PER_CONVERSATION).flat_map(|n| {
        let (alice, bob) = (alice.clone(), bob.clone());
        ids.iter().enumerate().map(move |(c, id)| {
            let sender = if n % 2 == 0 { alice.clone() } else { bob.clone() };
            send_reply(sender, id.clone(), json!({ "content": format!("conversation {c} message {n}") }))
        })
    });
    let replies = all_at_once(sends.collect::<Vec<_>>()).await;

    let mut acks: BTreeMap<String, BTreeMap<i64, Value>> = BTreeMap::new();
    for reply in replies {
        assert_eq!(reply.status.as_u16(), 201, "every send is created: {:?}", reply.body);
        let conversation = reply.body["conversation_id"].as_str().unwrap().to_owned();
        let seq = seq_of(&reply.body);
        let previous = acks.entry(conversation.clone()).or_default().insert(seq, reply.body);
        assert!(previous.is_none(), "seq {seq} acked twice in {conversation}");
    }
    assert_eq!(acks.len(), CONVERSATIONS);
    for id in &ids {
        let conversation_acks = &acks[id];
        let seqs: Vec<i64> = conversation_acks.keys().copied().collect();
        assert_eq!(seqs, (1..=PER_CONVERSATION as i64).collect::<Vec<_>>(), "seqs of {id}");
        let conversation = alice.get(&format!("/api/conversations/{id}")).await.expect(200);
        assert_eq!(conversation["last_seq"], PER_CONVERSATION as i64, "last_seq of {id}");
        let history = walk_forward(&bob, id, 100).await;
        assert!(history.iter().all(|m| m["conversation_id"] == id.as_str()));
        assert_matches_acks(&history, conversation_acks, "forward");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_direct_creation_for_the_same_pair_and_context_yields_one_conversation() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let bob = server.client("bob");

    let creates = (0..20).flat_map(|_| {
        [(alice.clone(), "bob"), (bob.clone(), "alice")].map(|(client, other)| async move {
            client
                .post(
                    "/api/conversations",
                    json!({ "type": "direct", "members": [other], "context": "product:981" }),
                )
                .await
        })
    });
    let replies = all_at_once(creates.collect::<Vec<_>>()).await;
    assert_eq!(replies.len(), 40);

    let mut created = 0;
    let mut ids = HashSet::new();
    for reply in &replies {
        match reply.status.as_u16() {
            201 => created += 1,
            200 => {}
            other => panic!("unexpected status {other}: {:?}", reply.body),
        }
        assert_eq!(reply.body["type"], "direct");
        assert_eq!(reply.body["context"], "product:981");
        ids.insert(reply.body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "one conversation id for the pair and context: {ids:?}");
    assert_eq!(created, 1, "exactly one create is 201, the rest return the existing one");

    for client in [&alice, &bob] {
        let list = client.get("/api/conversations?limit=100").await.expect(200);
        let conversations = list["conversations"].as_array().unwrap();
        assert_eq!(conversations.len(), 1, "one conversation listed: {conversations:?}");
        let mut members: Vec<&str> = conversations[0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user_id"].as_str().unwrap())
            .collect();
        members.sort_unstable();
        assert_eq!(members, ["alice", "bob"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn message_new_is_published_in_seq_order_under_concurrent_sends() {
    use chatd::core::ports::BusMessage;
    use chatd::core::server_events::ServerEvent;
    let server = TestServer::start().await;
    let mut bus = server.state.bus.subscribe();
    let alice = server.client("alice");
    let conversation = alice.create("group", &["bob"]).await;
    let id = conversation["id"].as_str().expect("id").to_owned();
    let sends = (0..400).map(|i| {
        let client = if i % 2 == 0 { server.client("alice") } else { server.client("bob") };
        let id = id.clone();
        tokio::spawn(async move { client.send(&id, &format!("m{i}")).await })
    });
    for send in futures::future::join_all(sends).await {
        send.expect("send task");
    }
    let mut seqs = Vec::new();
    while let Ok(message) = bus.try_recv() {
        // A commit group's messages travel as one batch, in commit order.
        let messages = match message.as_ref() {
            BusMessage::Batch(messages) => messages.iter().collect(),
            single => vec![single],
        };
        for message in messages {
            if let BusMessage::Deliver(delivery) = message
                && let ServerEvent::MessageNew(m) = &delivery.event
            {
                seqs.push(m.seq);
            }
        }
    }
    assert_eq!(seqs, (1..=400).collect::<Vec<i64>>(), "message:new follows seq");
}
