//! The admin API (`/api/admin/*`, `--admin-key`) and the `/admin` page, through a real
//! server: who may call it, node stats, system messages, conversations created on a user's
//! behalf, listing and inspecting, disconnecting and banning users on every transport (the
//! Socket.IO part drives the real `socket.io-client` from tests/node), and across two nodes
//! sharing PostgreSQL and Redis.

mod common;

use std::time::Duration;

use chatd::config::RedisConfig;
use common::ws::{WAIT, Ws};
use common::{Client, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-tests-0123456789";

/// A server with the admin API on and rate limiting off.
async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.admin_key = Some(ADMIN_KEY.into());
    })
    .await
}

/// A REST client holding the admin key.
fn admin(server: &TestServer) -> Client {
    server.anonymous().with_token(ADMIN_KEY)
}

/// Every admin route with a body it would accept.
fn admin_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/api/admin/stats", None),
        (Method::GET, "/api/admin/conversations", None),
        (
            Method::POST,
            "/api/admin/conversations",
            Some(json!({ "type": "group", "members": [], "owner": "a" })),
        ),
        (Method::GET, "/api/admin/conversations/x", None),
        (Method::PATCH, "/api/admin/conversations/x", Some(json!({ "status": "blocked" }))),
        (Method::POST, "/api/admin/conversations/x/messages", Some(json!({ "content": "hi" }))),
        (Method::GET, "/api/admin/users/bob", None),
        (Method::POST, "/api/admin/users/bob/disconnect", None),
        (Method::PUT, "/api/admin/users/bob/ban", None),
        (Method::DELETE, "/api/admin/users/bob/ban", None),
    ]
}

/// The HTTP status and body of a refused `/ws` upgrade.
async fn refused_upgrade(url: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            (response.status().as_u16(), serde_json::from_slice(body).unwrap_or(Value::Null))
        }
        other => panic!("expected a refused upgrade, got {:?}", other.map(|(_, r)| r.status())),
    }
}

/// Opens the user's notification stream (SSE); the response streams its body.
async fn notification_stream(server: &TestServer, user: &str) -> reqwest::Response {
    server
        .http
        .get(format!("{}/api/notifications/stream", server.base))
        .bearer_auth(server.token(user))
        .send()
        .await
        .expect("stream request")
}

/// Reads the stream until it ends; panics if it is still open after [`WAIT`].
async fn stream_ends(mut stream: reqwest::Response) {
    let ended = tokio::time::timeout(WAIT, async { while let Ok(Some(_)) = stream.chunk().await {} }).await;
    assert!(ended.is_ok(), "the notification stream is still open");
}

/// Polls the stats until `check` accepts them (connections register asynchronously), at most
/// [`WAIT`].
async fn stats_until(server: &TestServer, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = admin(server).get("/api/admin/stats").await.expect(200);
        if check(&stats) {
            return stats;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: last stats {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_key_every_admin_route_and_the_page_are_not_found() {
    let server = TestServer::start().await;
    let as_admin = server.anonymous().with_token("anything");
    for (method, path, body) in admin_routes() {
        as_admin.call(method, path, body).await.assert_error(404, "not_found");
    }
    server.anonymous().get("/admin").await.assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_refuse_user_tokens_wrong_keys_and_no_key_with_unauthorized() {
    let server = server().await;
    let callers = [server.client("alice"), server.anonymous(), server.anonymous().with_token("not-the-key")];
    for caller in &callers {
        for (method, path, body) in admin_routes() {
            caller.call(method.clone(), path, body).await.assert_error(401, "unauthorized");
        }
    }
    let user_status = admin(&server).get("/api/admin/users/bob").await.expect(200);
    assert_eq!(user_status, json!({ "user_id": "bob", "banned": false, "online": false, "connections": 0 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_this_nodes_connections_by_transport_users_and_messages_of_the_last_minute() {
    let server = server().await;
    let stats = admin(&server).get("/api/admin/stats").await.expect(200);
    assert_eq!(
        stats,
        json!({ "connections": { "socketio": 0, "ws": 0, "sse": 0, "total": 0 },
                "users_online": 0, "messages_per_minute": 0 })
    );
    let conversation = server.client("alice").create("group", &["bob"]).await;
    let id = conversation["id"].as_str().expect("id");
    let _alice_tab1 = Ws::connect(&server, "alice").await;
    let _alice_tab2 = Ws::connect(&server, "alice").await;
    let _bob_stream = notification_stream(&server, "bob").await;
    server.client("alice").send(id, "one").await;
    server.client("bob").send(id, "two").await;
    let stats = stats_until(&server, "two ws, one sse", |s| s["connections"]["sse"] == 1).await;
    assert_eq!(
        stats,
        json!({ "connections": { "socketio": 0, "ws": 2, "sse": 1, "total": 3 },
                "users_online": 2, "messages_per_minute": 2 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_message_is_committed_to_history_and_reaches_members_live() {
    let server = server().await;
    let conversation = server.client("alice").create("direct", &["bob"]).await;
    let id = conversation["id"].as_str().expect("id");
    let mut bob = Ws::connect(&server, "bob").await;

    let path = format!("/api/admin/conversations/{id}/messages");
    let body = json!({ "content": "Order #981 was shipped", "metadata": { "order": 981 } });
    let message = admin(&server).post(&path, body).await.expect(201);
    assert_eq!(message["type"], "system");
    assert_eq!(message["sender_id"], "system");
    assert_eq!(message["seq"], 1);
    assert_eq!(message["metadata"], json!({ "order": 981 }));

    assert_eq!(bob.next("message:new").await, message);
    let history = server.client("alice").get(&format!("/api/conversations/{id}/messages")).await.expect(200);
    assert_eq!(history["messages"], json!([message]));
    let unread = server.client("alice").get("/api/unread").await.expect(200);
    assert_eq!(unread["total"], 1, "a system message is unread for every member");

    admin(&server).post(&path, json!({ "content": " " })).await.assert_error(400, "invalid");
    admin(&server).post(&path, json!({ "content": "x", "type": "text" })).await.assert_error(400, "invalid");
    admin(&server)
        .post("/api/admin/conversations/nope/messages", json!({ "content": "x" }))
        .await
        .assert_error(404, "not_found");
    // Users still cannot send system messages themselves.
    server
        .client("alice")
        .post(&format!("/api/conversations/{id}/messages"), json!({ "type": "system", "content": "x" }))
        .await
        .assert_error(400, "invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_conversation_created_on_a_buyers_behalf_appears_for_buyer_and_seller() {
    let server = server().await;
    let mut seller = Ws::connect(&server, "seller").await;
    let body = json!({ "type": "direct", "members": ["seller"], "owner": "buyer", "context": "product:981",
                       "metadata": { "price": 12000 } });
    let created = admin(&server).post("/api/admin/conversations", body.clone()).await.expect(201);
    let id = created["id"].as_str().expect("id");
    assert_eq!(created["context"], "product:981");
    let roles: Vec<(Value, Value)> = created["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["user_id"].clone(), m["role"].clone()))
        .collect();
    assert_eq!(roles, [(json!("buyer"), json!("owner")), (json!("seller"), json!("member"))]);

    assert_eq!(seller.next("conversation:new").await["id"], id);
    for user in ["buyer", "seller"] {
        let listed = server.client(user).get("/api/conversations").await.expect(200);
        assert_eq!(listed["conversations"][0]["id"], id, "{user} sees it");
    }
    let again = admin(&server).post("/api/admin/conversations", body).await.expect(200);
    assert_eq!(again["id"], id, "unique per pair and context");
    let by_seller = server
        .client("seller")
        .post(
            "/api/conversations",
            json!({ "type": "direct", "members": ["buyer"], "context": "product:981" }),
        )
        .await
        .expect(200);
    assert_eq!(by_seller["id"], id);

    let bad = json!({ "type": "direct", "members": ["a", "b"], "owner": "buyer" });
    admin(&server).post("/api/admin/conversations", bad).await.assert_error(400, "invalid");
    let no_owner = json!({ "type": "group", "members": ["a"] });
    admin(&server).post("/api/admin/conversations", no_owner).await.assert_error(400, "invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_are_listed_per_user_or_all_in_pages_and_inspected_with_every_member() {
    let server = server().await;
    let first = server.client("alice").create("group", &["bob", "carol"]).await;
    let second = server.client("dave").create("direct", &["erin"]).await;
    let first_id = first["id"].as_str().expect("id");
    server.client("bob").send(first_id, "hello").await;

    let all = admin(&server).get("/api/admin/conversations").await.expect(200);
    let ids: Vec<&Value> = all["conversations"].as_array().expect("list").iter().map(|c| &c["id"]).collect();
    assert_eq!(ids, [&first["id"], &second["id"]], "newest activity first");
    assert_eq!(all["next_cursor"], Value::Null);

    let page = admin(&server).get("/api/admin/conversations?limit=1").await.expect(200);
    assert_eq!(page["conversations"].as_array().map(Vec::len), Some(1));
    let cursor = page["next_cursor"].as_str().expect("a cursor");
    let rest =
        admin(&server).get(&format!("/api/admin/conversations?limit=1&cursor={cursor}")).await.expect(200);
    assert_eq!(rest["conversations"][0]["id"], second["id"]);

    let alices = admin(&server).get("/api/admin/conversations?user_id=alice").await.expect(200);
    assert_eq!(alices["conversations"].as_array().map(Vec::len), Some(1));
    assert_eq!(alices["conversations"][0]["unread_count"], 1, "alice's own unread count");

    let inspected = admin(&server).get(&format!("/api/admin/conversations/{first_id}")).await.expect(200);
    assert_eq!(inspected["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(inspected["last_message"]["content"], "hello");
    assert_eq!(inspected["unread_count"], 0, "nobody's view");
    admin(&server).get("/api/admin/conversations/nope").await.assert_error(404, "not_found");
    admin(&server).get("/api/admin/conversations?bogus=1").await.assert_error(400, "invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_every_websocket_and_notification_stream_of_the_user_only() {
    let server = server().await;
    let mut tab1 = Ws::connect(&server, "mallory").await;
    let mut tab2 = Ws::connect(&server, "mallory").await;
    let stream = notification_stream(&server, "mallory").await;
    assert_eq!(stream.status(), 200);
    let mut bystander = Ws::connect(&server, "bob").await;
    stats_until(&server, "mallory's three connections", |s| s["connections"]["total"] == 4).await;

    admin(&server).post("/api/admin/users/mallory/disconnect", json!({})).await.expect(204);
    for tab in [&mut tab1, &mut tab2] {
        let close = tab.closed(WAIT).await.expect("a close frame");
        assert_eq!(u16::from(close.code), 1008);
        assert_eq!(close.reason.as_str(), "disconnected by an operator");
    }
    stream_ends(stream).await;
    bystander.ok("presence:query", json!({ "user_ids": ["mallory"] })).await;
    // A disconnected (not banned) user may come back at once.
    Ws::connect(&server, "mallory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_cuts_live_connections_refuses_reconnects_rest_and_streams_until_lifted() {
    let server = server().await;
    let conversation = server.client("mallory").create("group", &["bob"]).await;
    let id = conversation["id"].as_str().expect("id");
    let mut mallory = Ws::connect(&server, "mallory").await;
    let stream = notification_stream(&server, "mallory").await;

    admin(&server).put("/api/admin/users/mallory/ban", json!({ "reason": "spam" })).await.expect(204);
    let close = mallory.closed(WAIT).await.expect("a close frame");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1008, "forbidden: banned"));
    stream_ends(stream).await;

    let ws_url = format!("ws://{}/ws?token={}", server.addr, server.token("mallory"));
    let (status, body) = refused_upgrade(&ws_url).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    server.client("mallory").get("/api/conversations").await.assert_error(403, "forbidden");
    let path = format!("/api/conversations/{id}/messages");
    server.client("mallory").post(&path, json!({ "content": "x" })).await.assert_error(403, "forbidden");
    assert_eq!(notification_stream(&server, "mallory").await.status(), 403);
    let status = admin(&server).get("/api/admin/users/mallory").await.expect(200);
    assert_eq!(status, json!({ "user_id": "mallory", "banned": true, "online": false, "connections": 0 }));
    server.client("bob").send(id, "others carry on").await;

    admin(&server).delete("/api/admin/users/mallory/ban").await.expect(204);
    admin(&server).delete("/api/admin/users/mallory/ban").await.expect(204);
    Ws::connect(&server, "mallory").await;
    server.client("mallory").send(id, "back").await;
    assert_eq!(admin(&server).get("/api/admin/users/mallory").await.expect(200)["banned"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_is_durable_across_a_restart() {
    let server = server().await;
    admin(&server).put("/api/admin/users/mallory/ban", Value::Null).await.expect(204);
    let mut config = (*server.state.config).clone();
    let dir = server.stop().await;
    config.admin_key = Some(ADMIN_KEY.into());
    let server = TestServer::start_in(dir, config).await;
    server.client("mallory").get("/api/unread").await.assert_error(403, "forbidden");
    server.client("bob").get("/api/unread").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_is_embedded_html_that_polls_the_stats() {
    let server = server().await;
    let response = server.http.get(format!("{}/admin", server.base)).send().await.expect("page");
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header("content-type").as_deref(), Some("text/html; charset=utf-8"));
    let csp = header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = response.text().await.expect("body");
    assert!(html.contains("/api/admin/stats") && html.contains("sessionStorage"));
    assert!(!html.contains("http://") && !html.contains("https://"), "no third-party code");
}

// ---------------------------------------------------------------------------------------
// Socket.IO, through the real socket.io-client.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_and_ban_cut_a_socketio_client_and_a_banned_handshake_gets_forbidden() {
    let server = server().await;
    common::node::scenario_with_env(&server, "admin_disconnect_and_ban", &[("CHATD_ADMIN_KEY", ADMIN_KEY)])
        .await;
}

// ---------------------------------------------------------------------------------------
// Two nodes sharing PostgreSQL and Redis.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ban_on_one_node_cuts_the_users_connection_on_another_and_both_refuse_them() {
    let schema = common::pg::Schema::fresh();
    let prefix = common::redis::unique_prefix();
    let node = || {
        let (database, prefix) = (schema.database(), prefix.clone());
        TestServer::start_with(move |config| {
            config.limits.messages_per_second = 0;
            config.admin_key = Some(ADMIN_KEY.into());
            config.database = database;
            config.jwt.secret = Some("cluster-admin-test-secret-0123".into());
            config.redis = Some(RedisConfig {
                url: "redis://127.0.0.1:6379".into(),
                prefix,
                presence_ttl: Duration::from_secs(30),
            });
        })
    };
    let a = node().await;
    let b = node().await;
    let mut on_b = Ws::connect(&b, "mallory").await;

    admin(&a).put("/api/admin/users/mallory/ban", Value::Null).await.expect(204);
    let close = on_b.closed(WAIT).await.expect("a close frame");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1008, "forbidden: banned"));
    b.client("mallory").get("/api/unread").await.assert_error(403, "forbidden");
    a.client("mallory").get("/api/unread").await.assert_error(403, "forbidden");

    let mut again = Ws::connect(&b, "bob").await;
    admin(&a).post("/api/admin/users/bob/disconnect", Value::Null).await.expect(204);
    assert!(again.closed(WAIT).await.is_some(), "disconnect crosses nodes too");

    admin(&b).delete("/api/admin/users/mallory/ban").await.expect(204);
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.client("mallory").get("/api/unread").await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the unban reached the other node");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn an_admin_key_shorter_than_16_bytes_is_refused_at_startup() {
    let dir = tempfile::tempdir().expect("dir");
    let settings = |key: &str| chatd::config::Settings {
        data_dir: Some(dir.path().to_owned()),
        admin_key: Some(key.into()),
        ..Default::default()
    };
    let err = settings("short-key").resolve().expect_err("refused");
    assert!(err.to_string().contains("--admin-key"), "{err}");
    assert!(settings(ADMIN_KEY).resolve().is_ok());
}

#[tokio::test]
async fn conversations_archive_per_member_mute_until_and_go_read_only_when_archived_or_blocked() {
    let server = server().await;
    common::states::assert_conversation_states(&server, &admin(&server)).await;
}
