//! Issue 17: what the bus carries between nodes converges even when the bus loses it. Each
//! test runs two nodes in this process on one PostgreSQL schema and one Redis prefix, and
//! changes the shared store directly, as when every bus message about a change is lost.

mod common;

use std::time::Duration;

use chatd::config::RedisConfig;
use common::TestServer;
use common::ws::Ws;

/// Two nodes sharing a fresh PostgreSQL schema (dropped with the returned guard) and a Redis
/// prefix.
async fn two_nodes() -> (common::pg::Schema, TestServer, TestServer) {
    let schema = common::pg::Schema::fresh();
    let prefix = common::redis::unique_prefix();
    let node = || {
        let (database, prefix) = (schema.database(), prefix.clone());
        TestServer::start_with(move |config| {
            config.limits.messages_per_second = 0;
            config.jwt.secret = Some("convergence-test-secret-0123456".into());
            config.database = database;
            config.redis = Some(RedisConfig {
                url: "redis://127.0.0.1:6379".into(),
                prefix,
                presence_ttl: Duration::from_secs(30),
            });
        })
    };
    let (a, b) = (node().await, node().await);
    (schema, a, b)
}

/// A member removed while the bus lost the unsubscribe stays subscribed on their node, but
/// receives no message committed after the removal: a message goes to the conversation's
/// members as of its commit, not to whoever is subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_removed_while_the_bus_lost_the_unsubscribe_gets_no_later_message() {
    let (_schema, a, b) = two_nodes().await;
    let alice = a.client("alice");
    let id = alice.create("group", &["bob", "carol"]).await["id"].as_str().expect("id").to_owned();
    let mut bob = Ws::connect(&b, "bob").await;
    let mut carol = Ws::connect(&b, "carol").await;
    alice.send(&id, "before").await;
    assert_eq!(bob.next("message:new").await["content"], "before");
    assert_eq!(carol.next("message:new").await["content"], "before");

    // Straight into the shared store: no node publishes the unsubscribe.
    assert!(a.state.store.remove_member(&id, "bob").await.expect("removed"));
    alice.send(&id, "after").await;
    assert_eq!(carol.next("message:new").await["content"], "after");
    bob.none("message:new", Duration::from_secs(1)).await;
    let history = b.client("bob").get(&format!("/api/conversations/{id}/messages")).await;
    history.assert_error(403, "not_a_member");
}

/// A ban whose bus messages were all lost (written to the shared store alone, as when Redis
/// drops them) still takes effect on every node within 5 s: each node re-reads the banned set
/// every 2 s and its hub closes a banned user's connections; an unban likewise (#17).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ban_and_an_unban_whose_bus_messages_were_lost_still_reach_every_node_within_5_s() {
    let (_schema, a, b) = two_nodes().await;
    let mut on_a = Ws::connect(&a, "mallory").await;
    let mut on_b = Ws::connect(&b, "mallory").await;

    // Straight into the shared store: no node publishes anything.
    let banned = a.state.store.ban_user("mallory", Some("spam".into()), chatd::core::time::Timestamp::now());
    assert!(banned.await.expect("ban stored"));
    for (ws, node) in [(&mut on_a, "a"), (&mut on_b, "b")] {
        let close =
            ws.closed(Duration::from_secs(5)).await.unwrap_or_else(|| panic!("a close frame on {node}"));
        assert_eq!((u16::from(close.code), close.reason.as_str()), (1008, "forbidden: banned"), "on {node}");
    }
    a.client("mallory").get("/api/unread").await.assert_error(403, "forbidden");
    b.client("mallory").get("/api/unread").await.assert_error(403, "forbidden");

    assert!(b.state.store.unban_user("mallory").await.expect("unban stored"));
    for server in [&a, &b] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while server.client("mallory").get("/api/unread").await.status != 200 {
            assert!(tokio::time::Instant::now() < deadline, "the unban reached every node within 5 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An operator's disconnect whose bus message was lost (the mark written to the shared store
/// alone) still closes the user's connections on every node within 5 s; connections the user
/// opens afterwards stay open through several re-reads of the marks (#17).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_disconnect_whose_bus_message_was_lost_still_reaches_every_node_within_5_s() {
    let (_schema, a, b) = two_nodes().await;
    let mut on_a = Ws::connect(&a, "mallory").await;
    let mut on_b = Ws::connect(&b, "mallory").await;

    // Straight into the shared store: no node publishes anything.
    let now = chatd::core::time::Timestamp::now();
    a.state.store.mark_disconnected("mallory", now).await.expect("mark stored");
    for (ws, node) in [(&mut on_a, "a"), (&mut on_b, "b")] {
        let close =
            ws.closed(Duration::from_secs(5)).await.unwrap_or_else(|| panic!("a close frame on {node}"));
        assert_eq!((u16::from(close.code), close.reason.as_str()), (1008, "disconnected by an operator"));
    }

    // Reconnecting is allowed, and the old mark does not close the new connections: they
    // answer after three of the nodes' 2 s re-reads.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut again_a = Ws::connect(&a, "mallory").await;
    let mut again_b = Ws::connect(&b, "mallory").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    for ws in [&mut again_a, &mut again_b] {
        ws.ok("presence:query", serde_json::json!({ "user_ids": [] })).await;
    }
}
