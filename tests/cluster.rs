//! Several chatd nodes as one service: separate `chatd serve` processes on one PostgreSQL
//! schema and one Redis (a channel prefix of their own per test). Users on different nodes chat as
//! on one server; a node subscribes only to the channels its connections need; a Redis
//! restart loses nothing that was acked (clients reconnect and `sync`).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chatd::auth::{Authenticator, KeySource};
use common::ServerProcess;
use common::ws::Ws;
use serde_json::{Value, json};

const SECRET: &str = "cluster-test-secret-0123456789";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A unique Redis prefix, so tests sharing the machine's Redis never hear each other.
fn prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("chatd-test-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn token(user: &str) -> String {
    let auth = Authenticator::new(KeySource::Secret(SECRET.as_bytes().to_vec()), None, None).expect("auth");
    auth.mint(user, None, Duration::from_secs(3600)).expect("mint")
}

/// Nodes sharing a PostgreSQL schema and a Redis. Fields drop in order: the nodes stop
/// before their schema is dropped.
struct Cluster {
    nodes: Vec<Option<ServerProcess>>,
    dir: tempfile::TempDir,
    schema: common::pg::Schema,
    redis: String,
    prefix: String,
}

impl Cluster {
    async fn start(count: usize, redis: &str) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            schema: common::pg::Schema::fresh(),
            redis: redis.to_owned(),
            prefix: prefix(),
        };
        for _ in 0..count {
            let node = cluster.start_node().await;
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    async fn start_node(&self) -> ServerProcess {
        let n = self.nodes.len();
        let args = [
            "--database-url",
            &self.schema.url,
            "--redis-url",
            &self.redis,
            "--redis-prefix",
            &self.prefix,
            "--jwt-secret",
            SECRET,
            "--rate-limit",
            "0",
        ];
        ServerProcess::start(self.dir.path(), &args, self.dir.path().join(format!("node{n}.log"))).await
    }

    fn node(&self, i: usize) -> &ServerProcess {
        self.nodes[i].as_ref().expect("node is running")
    }

    async fn ws(&self, i: usize, user: &str) -> Ws {
        Ws::connect_to(self.node(i).addr(), &token(user)).await
    }
}

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

/// Polls until `check` holds (at most 5 s).
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 5 s: {what}");
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
    let expected: BTreeSet<String> =
        [format!("{p}:u:alice"), format!("{p}:u:bob"), conversation.clone()].into_iter().collect();
    assert_eq!(all, expected);

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

/// A `redis-server` of the test's own, on a free port, so it can be killed and restarted.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let mut redis =
            OwnRedis { port: common::free_port(), dir: tempfile::tempdir().expect("dir"), child: None };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        for _ in 0..100 {
            if let Ok(client) = redis::Client::open(self.url())
                && client.get_multiplexed_async_connection().await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Seqs of the `message:new` pushes `client` holds or receives within `within`.
async fn collect_seqs(client: &mut Ws, seqs: &mut Vec<i64>, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        while let Some(i) = client.pushes.iter().position(|p| p["event"] == "message:new") {
            let push = client.pushes.remove(i).unwrap_or_default();
            seqs.push(push["data"]["seq"].as_i64().expect("seq"));
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
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
    collect_seqs(&mut bob, &mut seen, Duration::from_millis(500)).await;
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);

    redis.kill();
    // Sends keep being acked while the bus is down: the store is the source of truth.
    for i in 0..5 {
        alice.send(&id, &format!("during {i}")).await;
    }
    redis.restart().await;

    // Node 1's subscriber reconnects and tells its connections they may have missed
    // something (close 1013); bob reconnects (to either node) and syncs.
    let close = bob.closed(Duration::from_secs(10)).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1013, "{close:?}");
    let mut bob = cluster.ws(0, "bob").await;
    let page = bob.ok("sync", json!({ "conversations": { id.clone(): 5 } })).await;
    let synced: Vec<i64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    seen.extend(synced);
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());

    // Live delivery works again, across nodes.
    let mut bob_on_1 = cluster.ws(1, "bob").await;
    for i in 0..5 {
        alice.send(&id, &format!("after {i}")).await;
    }
    let mut live = Vec::new();
    collect_seqs(&mut bob_on_1, &mut live, Duration::from_millis(1000)).await;
    // Messages published while Redis was down may still arrive late, in order; a client
    // drops what it already has by seq.
    assert!(live.is_sorted(), "{live:?}");
    let fresh: Vec<i64> = live.into_iter().filter(|seq| *seq > 10).collect();
    assert_eq!(fresh, vec![11, 12, 13, 14, 15]);
    let history: Value = alice.get(&format!("/api/conversations/{id}/messages?limit=100")).await.expect(200);
    assert_eq!(history["messages"].as_array().expect("messages").len(), 15);
}
