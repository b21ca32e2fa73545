//! Several chatd nodes as one service: separate `chatd serve` processes on one PostgreSQL
//! schema and one Redis (a channel prefix of their own per test). Users on different nodes chat as
//! on one server; a node subscribes only to the channels its connections need; a Redis
//! restart loses nothing that was acked (clients reconnect and `sync`); a user's rate limit
//! is one budget across nodes, and with Redis down each node enforces it on its own.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::{Cluster, token};
use common::node::SioClient;
use common::redis::OwnRedis;
use common::ws::Ws;
use serde_json::{Value, json};

const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A Redis client for inspecting what the nodes subscribed to.
async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).expect("redis url").get_multiplexed_async_connection().await.expect("redis")
}

/// How many subscribers (nodes) `channel` has.
async fn subscribers(redis: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let reply: Vec<(String, i64)> =
        redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(redis).await.expect("PUBSUB NUMSUB");
    reply.first().map_or(0, |(_, n)| *n)
}

/// How long a test waits for something that must happen: long enough that a busy 2-core CI
/// machine gets there, short enough that a test that will never get there still ends.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls until `check` holds (at most [`PATIENCE`]).
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {PATIENCE:?}: {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn users_on_different_nodes_chat_as_on_one_server() {
    let cluster = Cluster::start(3, REDIS_URL).await;
    let mut alice = cluster.ws(0, "alice").await;
    let mut bob = cluster.ws(1, "bob").await;
    let mut bob_tab = cluster.ws(2, "bob").await;
    let mut carol = cluster.ws(2, "carol").await;

    let conversation = cluster
        .node(0)
        .client(&token("alice"))
        .post("/api/conversations", json!({ "type": "group", "name": "trip", "members": ["bob", "carol"] }))
        .await
        .expect(201);
    let id = conversation["id"].as_str().expect("id").to_owned();
    for client in [&mut bob, &mut bob_tab, &mut carol] {
        assert_eq!(client.next("conversation:new").await["id"], id.as_str());
    }

    let sent = alice.ok("message:send", json!({ "conversation_id": id, "content": "hi all" })).await;
    assert_eq!(sent["message"]["seq"], 1);
    for client in [&mut bob, &mut bob_tab, &mut carol] {
        let message = client.next("message:new").await;
        assert_eq!((message["seq"].clone(), message["content"].clone()), (json!(1), json!("hi all")));
    }

    bob.ok("typing:start", json!({ "conversation_id": id })).await;
    for client in [&mut alice, &mut carol] {
        assert_eq!(client.next("typing:start").await["user_id"], "bob");
    }

    carol.ok("message:read", json!({ "conversation_id": id, "seq": 1 })).await;
    for client in [&mut alice, &mut bob, &mut bob_tab] {
        let read = client.next("message:read").await;
        assert_eq!((read["user_id"].clone(), read["seq"].clone()), (json!("carol"), json!(1)));
    }

    let message_id = sent["message"]["id"].clone();
    alice.ok("message:edit", json!({ "message_id": message_id, "content": "hi everyone" })).await;
    for client in [&mut bob, &mut bob_tab, &mut carol] {
        assert_eq!(client.next("message:updated").await["content"], "hi everyone");
    }

    // A reply from the other side reaches the sender's node.
    carol.ok("message:send", json!({ "conversation_id": id, "content": "hello" })).await;
    assert_eq!(alice.next("message:new").await["seq"], 2);
    assert_eq!(bob_tab.next("message:new").await["seq"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_subscribes_only_to_the_channels_its_connections_need() {
    let cluster = Cluster::start(3, REDIS_URL).await;
    let mut redis = redis_connection(REDIS_URL).await;
    let p = cluster.prefix.clone();
    let shared = cluster
        .node(0)
        .client(&token("alice"))
        .post("/api/conversations", json!({ "type": "direct", "members": ["bob"] }))
        .await
        .expect(201);
    let shared = shared["id"].as_str().expect("id").to_owned();
    let conversation = format!("{p}:c:{shared}");

    // Nobody connected: no node listens to anything of this test.
    assert_eq!(subscribers(&mut redis, &conversation).await, 0);
    let alice = cluster.ws(0, "alice").await;
    let bob = cluster.ws(1, "bob").await;
    let bob_again = cluster.ws(1, "bob").await;
    assert_eq!(subscribers(&mut redis, &format!("{p}:u:alice")).await, 1);
    assert_eq!(subscribers(&mut redis, &format!("{p}:u:bob")).await, 1, "one subscription per node");
    assert_eq!(subscribers(&mut redis, &conversation).await, 2, "nodes 0 and 1, not node 2");
    let all: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(format!("{p}:*"))
        .query_async(&mut redis)
        .await
        .expect("CHANNELS");
    let all: BTreeSet<String> = all.into_iter().collect();
    // Plus the one channel every node hears (ban changes).
    let expected: BTreeSet<String> =
        [format!("{p}:u:alice"), format!("{p}:u:bob"), conversation.clone(), format!("{p}:all")]
            .into_iter()
            .collect();
    assert_eq!(all, expected);
    assert_eq!(subscribers(&mut redis, &format!("{p}:all")).await, 3, "every node");

    drop(alice);
    eventually("node 0 unsubscribes once alice is gone", async || {
        subscribers(&mut redis, &format!("{p}:u:alice")).await == 0
            && subscribers(&mut redis, &conversation).await == 1
    })
    .await;
    drop(bob);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(subscribers(&mut redis, &conversation).await, 1, "bob's other connection still needs it");
    drop(bob_again);
    eventually("node 1 unsubscribes once bob is gone", async || {
        subscribers(&mut redis, &conversation).await == 0
            && subscribers(&mut redis, &format!("{p}:u:bob")).await == 0
    })
    .await;
}

/// The next push named `event` for which `matches` holds, within `within` (others are kept).
async fn next_matching(
    client: &mut Ws,
    event: &str,
    within: Duration,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(i) = client.pushes.iter().position(|p| p["event"] == event && matches(&p["data"])) {
            return client.pushes.remove(i).map(|p| p["data"].clone()).unwrap_or_default();
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!remaining.is_zero(), "no matching {event} within {within:?}; kept {:?}", client.pushes);
        client.gather(remaining.min(Duration::from_millis(100))).await;
    }
}

/// Asserts no push named `event` about `user` arrives within `within`.
async fn no_presence_change(client: &mut Ws, event: &str, user: &str, within: Duration) {
    client.gather(within).await;
    let found = client.pushes.iter().find(|p| p["event"] == event && p["data"]["user_id"] == user);
    assert!(found.is_none(), "unexpected {found:?}");
}

/// `presence:query` for one user, asked through `client`.
async fn presence_of(client: &mut Ws, user: &str) -> Value {
    client.ok("presence:query", json!({ "user_ids": [user] })).await["presence"][user].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_and_notification_routing_span_nodes() {
    let cluster = Cluster::start(3, REDIS_URL).await;
    let long = PATIENCE;
    let mut carol = cluster.ws(2, "carol").await;
    let group = cluster.node(2).client(&token("carol")).create("group", &["alice", "bob"]).await;
    let id = group["id"].as_str().expect("id").to_owned();

    // alice's tabs on nodes 0 and 1: one user:online, and user:offline only after both close.
    let alice_tab0 = cluster.ws(0, "alice").await;
    next_matching(&mut carol, "user:online", long, |d| d["user_id"] == "alice").await;
    let alice = cluster.ws(1, "alice").await;
    no_presence_change(&mut carol, "user:online", "alice", Duration::from_millis(500)).await;
    assert_eq!(presence_of(&mut carol, "alice").await, json!({ "online": true, "last_seen_at": null }));
    drop(alice_tab0);
    no_presence_change(&mut carol, "user:offline", "alice", Duration::from_millis(700)).await;
    assert_eq!(presence_of(&mut carol, "alice").await["online"], true, "her tab on node 1 is open");

    // bob on node 1 looks at the conversation: alice's message (sent on node 0) marks it read
    // for him and gives no notification.
    let mut bob = cluster.ws(1, "bob").await;
    next_matching(&mut carol, "user:online", long, |d| d["user_id"] == "bob").await;
    bob.ok("conversation:focus", json!({ "conversation_id": id })).await;
    // Who is here, asked on node 2 about users on nodes 0, 1 and 2; hidden from non-members.
    let mut here = Value::Null;
    for _ in 0..100 {
        here = carol.ok("presence:conversation", json!({ "conversation_id": id })).await;
        if here["focused"] == json!(["bob"]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut online: Vec<String> = here["online"]
        .as_array()
        .expect("online")
        .iter()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect();
    online.sort();
    assert_eq!(
        (online, here["focused"].clone()),
        (vec!["alice".into(), "bob".into(), "carol".into()], json!(["bob"]))
    );
    let over_rest = cluster
        .node(0)
        .client(&token("alice"))
        .get(&format!("/api/conversations/{id}/presence"))
        .await
        .expect(200);
    assert_eq!(over_rest["focused"], json!(["bob"]));
    cluster
        .node(0)
        .client(&token("eve"))
        .get(&format!("/api/conversations/{id}/presence"))
        .await
        .assert_error(403, "not_a_member");
    let mut alice_on_0 = cluster.ws(0, "alice").await;
    alice_on_0.ok("message:send", json!({ "conversation_id": id, "content": "seen at once" })).await;
    assert_eq!(bob.next("message:new").await["seq"], 1);
    let receipt = next_matching(&mut alice_on_0, "message:read", long, |d| d["user_id"] == "bob").await;
    assert_eq!(receipt["seq"], 1);
    // carol (online on node 2, not looking) gets the notification.
    let notification = next_matching(&mut carol, "notification", long, |d| d["seq"] == 1).await;
    assert_eq!(notification["unread_count"], 1);

    // bob looks away: the next message notifies him. It is also the marker for the first
    // one: a notification of seq 1 for bob would have come before it.
    bob.ok("conversation:unfocus", json!({})).await;
    alice_on_0.ok("message:send", json!({ "conversation_id": id, "content": "now a notification" })).await;
    let notification = next_matching(&mut bob, "notification", long, |d| d["seq"] == 2).await;
    assert_eq!(notification["conversation_id"], id.as_str());
    let earlier = bob.pushes.iter().find(|p| p["event"] == "notification");
    assert!(earlier.is_none(), "bob was looking, yet got {earlier:?}");

    // bob goes offline everywhere (with a device): the next message becomes a push job.
    cluster
        .node(1)
        .client(&token("bob"))
        .post("/api/devices", json!({ "platform": "fcm", "token": "bob-phone" }))
        .await
        .expect(201);
    drop(bob);
    let offline = next_matching(&mut carol, "user:offline", long, |d| d["user_id"] == "bob").await;
    assert!(offline["last_seen_at"].is_string(), "{offline}");
    let sent = alice_on_0.ok("message:send", json!({ "conversation_id": id, "content": "for later" })).await;
    let config = chatd::store::postgres::PostgresConfig::from_url(&cluster.database_url).expect("url");
    let tasks = chatd::tasks::Tasks::new();
    let store = chatd::store::postgres::PostgresStore::connect(&config, &tasks).await.expect("store");
    let mut jobs = Vec::new();
    eventually("a push job for bob", async || {
        jobs = chatd::core::ports::PushOutbox::pending_push_jobs(&store, 100).await.expect("outbox");
        !jobs.is_empty()
    })
    .await;
    let owed: Vec<(&str, &str)> = jobs.iter().map(|j| (j.user_id.as_str(), j.message_id.as_str())).collect();
    assert_eq!(owed, vec![("bob", sent["message"]["id"].as_str().expect("id"))], "only bob is offline");

    drop(alice_on_0);
    drop(alice);
    let offline = next_matching(&mut carol, "user:offline", long, |d| d["user_id"] == "alice").await;
    assert!(offline["last_seen_at"].is_string(), "{offline}");
    let presence = presence_of(&mut carol, "alice").await;
    assert_eq!(presence["online"], false);
    assert_eq!(presence["last_seen_at"], offline["last_seen_at"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_users_of_a_killed_node_go_offline_within_the_presence_ttl() {
    let mut cluster = Cluster::start_with(3, REDIS_URL, (0, 0), &["--presence-ttl", "2"]).await;
    let mut carol = cluster.ws(0, "carol").await;
    cluster.node(0).client(&token("carol")).create("group", &["bob", "dave"]).await;
    let _bob = cluster.ws(2, "bob").await;
    let _dave_on_2 = cluster.ws(2, "dave").await;
    let _dave_on_1 = cluster.ws(1, "dave").await;
    for user in ["bob", "dave"] {
        next_matching(&mut carol, "user:online", PATIENCE, |d| d["user_id"] == user).await;
    }

    let killed_at = tokio::time::Instant::now();
    cluster.kill_node(2);
    // Within the TTL plus one renewal period, and a wide margin for a loaded machine (ten
    // times the TTL: a node that waited for its own TTL to renew would still be far under).
    let offline =
        next_matching(&mut carol, "user:offline", Duration::from_secs(20), |d| d["user_id"] == "bob").await;
    assert!(offline["last_seen_at"].is_string(), "{offline}");
    eprintln!("bob went offline {:?} after his node was killed", killed_at.elapsed());
    assert_eq!(presence_of(&mut carol, "bob").await["online"], false);
    // dave still has a tab on node 1.
    no_presence_change(&mut carol, "user:offline", "dave", Duration::from_millis(500)).await;
    assert_eq!(presence_of(&mut carol, "dave").await["online"], true);

    // bob comes back through another node: online again.
    let _bob = cluster.ws(1, "bob").await;
    next_matching(&mut carol, "user:online", PATIENCE, |d| d["user_id"] == "bob").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_push_job_is_sent_once_while_three_nodes_claim_them() {
    const MESSAGES: usize = 40;
    let receiver = common::webhook::Receiver::bind(&[]).await;
    let cluster = Cluster::start_with(
        3,
        REDIS_URL,
        (0, 0),
        &[
            "--webhook-secret",
            "cluster-webhook-secret-0123",
            "--push-poll-ms",
            "20",
            "--push-batch-size",
            "3",
            "--push-allow-private-endpoints",
        ],
    )
    .await;
    let bob = cluster.node(1).client(&token("bob"));
    bob.post(
        "/api/devices",
        json!({ "platform": "webhook", "token": "bob-hook", "endpoint": receiver.url("/hook") }),
    )
    .await
    .expect(201);
    let conversation = cluster.node(0).client(&token("alice")).create("direct", &["bob"]).await;
    let id = conversation["id"].as_str().expect("id").to_owned();
    // bob never connects: every message is a push job, recorded by whichever node took the
    // send and claimed by whichever node's worker gets there first.
    let mut sent = BTreeSet::new();
    for n in 0..MESSAGES {
        let message = cluster.node(n % 3).client(&token("alice")).send(&id, &format!("m{n}")).await;
        sent.insert(message["id"].as_str().expect("id").to_owned());
    }
    let requests = receiver.wait_for(MESSAGES).await;
    receiver.assert_no_more_than(MESSAGES).await;
    let pushed: Vec<String> =
        requests.iter().map(|r| r.json()["message_id"].as_str().expect("message_id").to_owned()).collect();
    assert_eq!(pushed.iter().cloned().collect::<BTreeSet<_>>(), sent, "every message pushed");
    assert_eq!(pushed.len(), MESSAGES, "and each once");
}

/// Adds to `seqs` the seqs of the `message:new` pushes `client` holds or receives, until
/// the one with seq `last` is among them (at most [`PATIENCE`]; the caller's assertion on
/// `seqs` then tells what was missing).
async fn collect_seqs_until(client: &mut Ws, seqs: &mut Vec<i64>, last: i64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        while let Some(i) = client.pushes.iter().position(|p| p["event"] == "message:new") {
            let push = client.pushes.remove(i).unwrap_or_default();
            seqs.push(push["data"]["seq"].as_i64().expect("seq"));
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if seqs.contains(&last) || remaining.is_zero() {
            return;
        }
        client.gather(remaining.min(Duration::from_millis(100))).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_restart_loses_nothing_acked_and_delivery_resumes() {
    let mut redis = OwnRedis::start().await;
    let cluster = Cluster::start(2, &redis.url()).await;
    let alice = cluster.node(0).client(&token("alice"));
    let conversation =
        alice.post("/api/conversations", json!({ "type": "direct", "members": ["bob"] })).await.expect(201);
    let id = conversation["id"].as_str().expect("id").to_owned();
    let mut bob = cluster.ws(1, "bob").await;
    let mut seen = Vec::new();

    for i in 0..5 {
        alice.send(&id, &format!("before {i}")).await;
    }
    collect_seqs_until(&mut bob, &mut seen, 5).await;
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);

    redis.kill();
    // Sends keep being acked while the bus is down: the store is the source of truth.
    for i in 0..5 {
        alice.send(&id, &format!("during {i}")).await;
    }
    redis.restart().await;

    // Node 1's subscriber reconnects; its hub rebuilds bob's subscriptions and tells the
    // connection to sync (`sync:required` with the newest seqs); bob stays connected.
    let required = next_within(&mut bob, "sync:required", PATIENCE).await;
    assert_eq!(head_of(&required, &id), Some(10), "{required}");
    let page = bob.ok("sync", json!({ "conversations": { id.clone(): 5 } })).await;
    let synced: Vec<i64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    seen.extend(synced);
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());

    // Live delivery works again on the same connection, across nodes.
    for i in 0..5 {
        alice.send(&id, &format!("after {i}")).await;
    }
    let mut live = Vec::new();
    collect_seqs_until(&mut bob, &mut live, 15).await;
    // Messages published while Redis was down may still arrive late, in order; a client
    // drops what it already has by seq.
    assert!(live.is_sorted(), "{live:?}");
    let fresh: Vec<i64> = live.into_iter().filter(|seq| *seq > 10).collect();
    assert_eq!(fresh, vec![11, 12, 13, 14, 15]);
    let history: Value = alice.get(&format!("/api/conversations/{id}/messages?limit=100")).await.expect(200);
    assert_eq!(history["messages"].as_array().expect("messages").len(), 15);
}

/// A `/ws` follower of one conversation that behaves as a client should: it takes a
/// `message:new` whose seq is the next one, drops one it already has, and on a gap or a lost
/// connection (reconnecting to the first node that answers) catches up with `sync`.
struct Follower {
    user: String,
    conversation: String,
    ws: Option<Ws>,
    seqs: Vec<i64>,
}

impl Follower {
    fn last(&self) -> i64 {
        self.seqs.last().copied().unwrap_or(0)
    }

    /// Connects to the first of `nodes` that answers and catches up.
    async fn connect(&mut self, nodes: &[std::net::SocketAddr]) {
        self.open(nodes).await;
        self.sync(nodes).await;
    }

    /// Opens a connection to the first of `nodes` that answers.
    async fn open(&mut self, nodes: &[std::net::SocketAddr]) {
        for addr in nodes {
            let url = format!("ws://{addr}/ws?token={}", token(&self.user));
            if let Ok(Ok((stream, _))) =
                tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url)).await
            {
                let mut ws = Ws { stream, next_id: 0, pushes: Default::default(), ready: Value::Null };
                ws.ready = ws.next("ready").await;
                self.ws = Some(ws);
                return;
            }
        }
        panic!("no node accepted {}", self.user);
    }

    /// Catches up until the server has nothing newer; when the connection is lost meanwhile
    /// (its node was killed), reconnects to the first of `nodes` that answers and goes on.
    async fn sync(&mut self, nodes: &[std::net::SocketAddr]) {
        loop {
            if self.ws.is_none() {
                self.open(nodes).await;
            }
            if self.try_sync().await.is_some() {
                return;
            }
            self.ws = None;
        }
    }

    /// Catches up over the current connection; None if it was lost before the end.
    async fn try_sync(&mut self) -> Option<()> {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let ws = self.ws.as_mut()?;
        loop {
            ws.next_id += 1;
            let id = ws.next_id;
            let heads = json!({ self.conversation.clone(): self.seqs.last().copied().unwrap_or(0) });
            let request = json!({ "id": id, "event": "sync", "data": { "conversations": heads } });
            ws.stream.send(Message::text(request.to_string())).await.ok()?;
            let page = loop {
                let message = tokio::time::timeout(common::ws::WAIT, ws.stream.next())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("{}: no sync answer within {:?}", self.user, common::ws::WAIT)
                    })?
                    .ok()?;
                if let Message::Text(text) = message {
                    let frame: Value = serde_json::from_str(&text).expect("JSON frame");
                    if frame.get("id") == Some(&json!(id)) {
                        break frame["ack"].clone();
                    }
                    ws.pushes.push_back(frame);
                }
            };
            assert_eq!(page["ok"], true, "sync: {page}");
            for message in page["messages"].as_array().expect("messages") {
                let seq = message["seq"].as_i64().expect("seq");
                if seq == self.seqs.last().copied().unwrap_or(0) + 1 {
                    self.seqs.push(seq);
                }
            }
            if page["has_more"] != true {
                return Some(());
            }
        }
    }

    /// Follows live traffic until `senders_done` turns true.
    async fn follow(
        &mut self,
        nodes: &[std::net::SocketAddr],
        senders_done: tokio::sync::watch::Receiver<bool>,
    ) {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        while !*senders_done.borrow() {
            let ws = self.ws.as_mut().expect("connected");
            let kept: Vec<Value> = ws.pushes.drain(..).collect();
            let mut frames = kept;
            match tokio::time::timeout(Duration::from_millis(100), ws.stream.next()).await {
                Err(_) => {}
                Ok(Some(Ok(Message::Text(text)))) => frames.push(serde_json::from_str(&text).expect("JSON")),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => {
                    self.ws = None;
                    self.sync(nodes).await;
                    continue;
                }
            }
            for frame in frames {
                if frame["event"] != "message:new" {
                    continue;
                }
                let seq = frame["data"]["seq"].as_i64().expect("seq");
                if seq == self.last() + 1 {
                    self.seqs.push(seq);
                } else if seq > self.last() + 1 {
                    self.sync(nodes).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_node_mid_traffic_loses_and_duplicates_nothing() {
    const SENDERS: usize = 6;
    const PER_SENDER: usize = 25;
    let mut cluster = Cluster::start(3, REDIS_URL).await;
    let users: Vec<String> = (0..SENDERS).map(|i| format!("u{i}")).collect();
    let others: Vec<&str> = users[1..].iter().map(String::as_str).collect();
    let conversation = cluster.node(0).client(&token("u0")).create("group", &others).await;
    let id = conversation["id"].as_str().expect("id").to_owned();
    let addrs: Vec<std::net::SocketAddr> = (0..3).map(|i| cluster.node(i).addr()).collect();

    // Two followers per node; node 2's come back through nodes 0 and 1. They follow until
    // every send was acked, then catch up once more with `sync`.
    let (senders_done, done) = tokio::sync::watch::channel(false);
    let mut followers = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let mut follower =
            Follower { user: user.clone(), conversation: id.clone(), ws: None, seqs: Vec::new() };
        let node = i % 3;
        let order: Vec<_> = (0..3).map(|k| addrs[(node + k) % 3]).collect();
        follower.connect(&order[..1]).await;
        let fallback: Vec<_> = order.into_iter().filter(|a| *a != addrs[2] || node == 2).collect();
        let done = done.clone();
        followers.push(tokio::spawn(async move {
            follower.follow(&fallback, done).await;
            follower.sync(&fallback).await;
            follower
        }));
    }

    // Every user sends over REST through its node, retrying on the next node (same
    // client_id) when its node is gone or slow to answer, until acked (at most 2 minutes
    // per message, however busy the machine is).
    let mut senders = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let clients: Vec<_> = (0..3).map(|k| cluster.node((i + k) % 3).client(&token(user))).collect();
        let id = id.clone();
        let user = user.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..PER_SENDER {
                let body = json!({ "content": format!("{user} #{n}"), "client_id": format!("{user}-{n}") });
                let path = format!("/api/conversations/{id}/messages");
                let mut sent = false;
                let give_up = tokio::time::Instant::now() + Duration::from_secs(120);
                for client in clients.iter().cycle() {
                    if tokio::time::Instant::now() > give_up {
                        break;
                    }
                    let reply =
                        tokio::time::timeout(Duration::from_secs(10), client.try_post(&path, body.clone()))
                            .await;
                    if let Ok(Some(reply)) = reply
                        && reply.status.is_success()
                    {
                        sent = true;
                        break;
                    }
                }
                assert!(sent, "{user} #{n} was never acked");
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.kill_node(2);
    for sender in senders {
        sender.await.expect("sender");
    }
    senders_done.send(true).expect("the followers are listening");

    let total = (SENDERS * PER_SENDER) as i64;
    let history = cluster.node(0).client(&token("u0"));
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page = history
            .get(&format!("/api/conversations/{id}/messages?after_seq={after}&limit=100"))
            .await
            .expect(200);
        let messages = page["messages"].as_array().expect("messages").clone();
        after = messages.last().map_or(after, |m| m["seq"].as_i64().expect("seq"));
        stored.extend(messages);
        if page["has_more"] != true {
            break;
        }
    }
    let client_ids: BTreeSet<String> =
        stored.iter().map(|m| m["client_id"].as_str().expect("client_id").to_owned()).collect();
    assert_eq!(stored.len() as i64, total, "every acked send stored once");
    assert_eq!(client_ids.len() as i64, total, "no client_id twice");
    for follower in followers {
        let follower = follower.await.expect("follower");
        assert_eq!(
            follower.seqs,
            (1..=total).collect::<Vec<_>>(),
            "{} saw every message once, in order",
            follower.user
        );
    }
}

/// Whether `reply` is the contract's refusal for going over the rate limit: 429,
/// `rate_limited`, and a `Retry-After` of one second (at 1 write/s, never longer).
#[track_caller]
fn assert_rate_limited(reply: &common::Reply) {
    reply.assert_error(429, "rate_limited");
    let retry_after = reply.headers.get("retry-after").map(|v| v.to_str().unwrap_or_default());
    assert_eq!(retry_after, Some("1"), "Retry-After of {reply:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_users_rate_limit_is_one_budget_across_nodes() {
    const BURST: usize = 10;
    let cluster = Cluster::start_limited(2, REDIS_URL, (1, BURST as u32)).await;
    let via = [cluster.node(0).client(&token("alice")), cluster.node(1).client(&token("alice"))];
    let id = via[0].create("direct", &["bob"]).await["id"].as_str().expect("id").to_owned();
    let path = format!("/api/conversations/{id}/messages");

    // 30 sends as fast as they go, alternately through node 0 and node 1. Each node alone
    // would admit its burst of 10 (20 in all); together they admit 10, plus one per second
    // the sends took.
    let started = std::time::Instant::now();
    let mut replies = Vec::new();
    for i in 0..30 {
        replies.push(via[i % 2].post(&path, json!({ "content": format!("#{i}") })).await);
    }
    let seconds = started.elapsed().as_secs_f64().ceil() as usize;
    let accepted = replies.iter().filter(|r| r.status.as_u16() == 201).count();
    assert!(
        (BURST..=BURST + seconds).contains(&accepted),
        "{accepted} of 30 accepted in {seconds} s across two nodes; one budget admits {BURST} + 1/s"
    );
    for (i, reply) in replies.iter().enumerate() {
        if reply.status.as_u16() != 201 {
            assert_rate_limited(reply);
            assert!(i >= BURST, "send #{i} was within the burst");
        }
    }
    for node in 0..2 {
        let refused = replies.iter().skip(node).step_by(2).filter(|r| r.status.as_u16() == 429).count();
        assert!(refused > 0, "node {node} refuses too");
    }
    // Refused sends took no seq.
    let page = via[1].get(&format!("{path}?limit=100")).await.expect(200);
    let seqs: Vec<i64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=accepted as i64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_a_node_still_accepts_sends_within_its_own_limit() {
    const BURST: usize = 5;
    let mut redis = OwnRedis::start().await;
    let cluster = Cluster::start_limited(1, &redis.url(), (1, BURST as u32)).await;
    let alice = cluster.node(0).client(&token("alice"));
    let id = alice.create("direct", &["bob"]).await["id"].as_str().expect("id").to_owned();
    let path = format!("/api/conversations/{id}/messages");
    for i in 0..3 {
        alice.send(&id, &format!("before {i}")).await;
    }

    redis.kill();
    // Fail open: the node's own limiter takes over with a fresh budget (Redis' count of 3
    // is out of reach), so a full burst goes through, and the limit still holds after it.
    let started = std::time::Instant::now();
    for i in 0..BURST {
        let reply = alice.post(&path, json!({ "content": format!("during {i}") })).await;
        assert_eq!(reply.status.as_u16(), 201, "send {i} with Redis down: {reply:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "sends did not wait on Redis: {:?}",
        started.elapsed()
    );
    let mut refused = None;
    for i in 0..5 {
        let reply = alice.post(&path, json!({ "content": format!("over {i}") })).await;
        if reply.status.as_u16() == 429 {
            refused = Some(reply);
            break;
        }
    }
    assert_rate_limited(&refused.expect("still rate limited while Redis is down"));
    let log = cluster.node(0).log_text();
    assert!(log.contains("redis rate limiter unavailable"), "a warning in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_stream_resumes_on_another_node_with_exactly_what_it_missed() {
    use common::sse::EventStream;
    let cluster = Cluster::start(3, REDIS_URL).await;
    let alice = cluster.node(0).client(&token("alice"));
    let id = alice.create("group", &["bob"]).await["id"].as_str().expect("id").to_owned();
    // Bob's app stays connected on node 2, so he is online (not focused) throughout.
    let _bob_app = cluster.ws(2, "bob").await;
    let http = reqwest::Client::new();
    let stream_on = |node: usize| format!("{}/api/notifications/stream", cluster.node(node).base);
    let bearer = ("authorization", format!("Bearer {}", token("bob")));
    let assert_notification = |frame: &common::sse::Frame, n: i64| {
        assert_eq!(frame.event.as_deref(), Some("notification"), "{frame:?}");
        assert_eq!(frame.id.as_deref(), Some(n.to_string().as_str()), "{frame:?}");
        let data = frame.json();
        assert_eq!((data["id"].as_i64(), data["seq"].as_i64()), (Some(n), Some(n)), "{data}");
    };

    let mut stream = EventStream::open(&http, &stream_on(1), std::slice::from_ref(&bearer)).await;
    alice.send(&id, "first").await;
    assert_notification(&stream.event().await, 1);
    drop(stream);

    for n in 2..=6 {
        alice.send(&id, &format!("missed {n}")).await;
    }
    let resume = [bearer.clone(), ("last-event-id", "1".to_owned())];
    let mut stream = EventStream::open(&http, &stream_on(0), &resume).await;
    for n in 2..=6 {
        assert_notification(&stream.event().await, n);
    }
    stream.no_event(Duration::from_millis(300)).await;
    cluster.node(2).client(&token("alice")).send(&id, "live, from node 2").await;
    assert_notification(&stream.event().await, 7);
}

/// The next push named `event` on `client` within `within` (other pushes are kept).
async fn next_within(client: &mut Ws, event: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(i) = client.pushes.iter().position(|p| p["event"] == event) {
            return client.pushes.remove(i).map(|p| p["data"].clone()).unwrap_or_default();
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "no {event} within {within:?}");
        client.gather(left.min(Duration::from_millis(100))).await;
    }
}

/// The newest seq `sync:required` (or `ready`) gives for conversation `id`.
fn head_of(heads: &Value, id: &str) -> Option<i64> {
    heads["conversations"].as_array()?.iter().find(|c| c["id"] == id).and_then(|c| c["last_seq"].as_i64())
}

/// `(conversation, seq)` of every `message:new` among `pushes`.
fn received(pushes: &std::collections::VecDeque<Value>) -> BTreeSet<(String, i64)> {
    pushes
        .iter()
        .filter(|p| p["event"] == "message:new")
        .map(|p| {
            (
                p["data"]["conversation_id"].as_str().unwrap_or_default().to_owned(),
                p["data"]["seq"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn membership_changes_lost_with_the_bus_are_repaired_for_socketio_and_websocket_alike() {
    let mut redis = OwnRedis::start().await;
    let cluster = Cluster::start(2, &redis.url()).await;
    let alice = cluster.node(0).client(&token("alice"));
    let id_of = |conversation: Value| conversation["id"].as_str().expect("id").to_owned();
    let stays = id_of(alice.create("group", &["bob"]).await);
    let leaves = id_of(alice.create("group", &["bob"]).await);
    let joins = id_of(alice.create("group", &["carol"]).await);
    let mut ws = cluster.ws(1, "bob").await;
    let base = format!("http://{}", cluster.node(1).addr());
    let mut sio = SioClient::connect(&base, &token("bob")).await;

    // While the bus is down, bob is removed from one group and added to another, and
    // messages are sent: none of it reaches node 1 over the bus.
    redis.kill();
    alice.delete(&format!("/api/conversations/{leaves}/members/bob")).await.expect(204);
    alice
        .post(&format!("/api/conversations/{joins}/members"), json!({ "user_ids": ["bob"] }))
        .await
        .expect(200);
    alice.send(&joins, "while the bus was down").await;
    alice.send(&leaves, "after bob left").await;
    redis.restart().await;

    // Both connections are told to sync, with exactly bob's conversations, and catch up.
    let sync = json!({ "conversations": { stays.clone(): 0, joins.clone(): 0 } });
    let required = next_within(&mut ws, "sync:required", PATIENCE).await;
    let from_sio = sio.next("sync:required").await;
    for heads in [&required, &from_sio] {
        assert_eq!(head_of(heads, &joins), Some(1), "{heads}");
        assert_eq!(head_of(heads, &stays), Some(0), "{heads}");
        assert_eq!(head_of(heads, &leaves), None, "{heads}");
    }
    for page in [ws.ok("sync", sync.clone()).await, sio.ok("sync", sync).await] {
        let messages = page["messages"].as_array().expect("messages");
        assert_eq!(messages.len(), 1, "{page}");
        assert_eq!(messages[0]["conversation_id"], joins.as_str());
        assert_eq!(messages[0]["seq"], 1);
    }
    // What the sync gave may still arrive live, late (published once the bus is back); a
    // client drops it by seq, and so do the checks below.
    let synced = (joins.clone(), 1);

    // Their subscriptions are exactly bob's conversations now: the new one live, the old one
    // silent.
    ws.pushes.clear();
    sio.pushes.clear();
    alice.send(&joins, "after the repair").await;
    alice.send(&leaves, "still not for bob").await;
    alice.send(&stays, "hello").await;
    // The message to `stays` went last: a message for `leaves` delivered to bob would have
    // come before it, so once both connections have the expected ones, nothing else is owed.
    let expected: BTreeSet<(String, i64)> = [(joins.clone(), 2), (stays.clone(), 1)].into_iter().collect();
    let fresh = |pushes: &std::collections::VecDeque<Value>| {
        let mut fresh = received(pushes);
        fresh.remove(&synced);
        fresh
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !(fresh(&ws.pushes).is_superset(&expected) && fresh(&sio.pushes).is_superset(&expected))
        && tokio::time::Instant::now() < deadline
    {
        ws.gather(Duration::from_millis(100)).await;
        sio.gather(Duration::from_millis(100)).await;
    }
    assert_eq!(fresh(&ws.pushes), expected);
    assert_eq!(fresh(&sio.pushes), expected);
}
