//! Connection and payload limits through the real protocols against a real server: Origin
//! allowlist (WS, SSE, Socket.IO long-polling), connection caps per user and per node,
//! handshake rate per IP, JSON nesting depth, the outbound frame cap, token expiry on a
//! live connection with `auth:refresh`, and the per-user budgets of typing, presence
//! queries, `sync`, conversation creation and member additions.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use chatd::core::budget::{Budget, EventBudgets};
use common::TestServer;
use common::ws::{WAIT, Ws, flood_and_follow};
use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const ALLOWED: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example.net";

/// The HTTP status and JSON body of a refused upgrade.
async fn refused(request: impl IntoClientRequest + Unpin) -> (u16, Value) {
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            (response.status().as_u16(), serde_json::from_slice(body).unwrap_or(Value::Null))
        }
        other => panic!("expected a refused upgrade, got {:?}", other.map(|(_, r)| r.status())),
    }
}

/// A `/ws` upgrade request for `user`, with `Origin: origin` when given.
fn ws_request(server: &TestServer, user: &str, origin: Option<&str>) -> impl IntoClientRequest + Unpin {
    let mut request = format!("ws://{}/ws?token={}", server.addr, server.token(user))
        .into_client_request()
        .expect("request");
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", HeaderValue::from_str(origin).expect("origin"));
    }
    request
}

/// Opens the SSE stream for `user`; returns the status and, for a refusal, the error code.
async fn sse(server: &TestServer, user: &str, origin: Option<&str>) -> (u16, String) {
    let mut request =
        server.http.get(format!("{}/api/notifications/stream?token={}", server.base, server.token(user)));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    if status == 200 {
        return (status, String::new());
    }
    let body: Value = response.json().await.expect("error body");
    (status, body["error"]["code"].as_str().unwrap_or("").to_owned())
}

/// A Socket.IO connect over Engine.IO long-polling, as a browser without WebSocket does:
/// handshake, CONNECT with `{token}`, then the server's answer packet (`40…` connected,
/// `44{"message":code}` refused).
async fn socketio_polling(server: &TestServer, user: &str, origin: Option<&str>) -> String {
    let base = format!("{}/socket.io/?EIO=4&transport=polling", server.base);
    let with_origin = |request: reqwest::RequestBuilder| match origin {
        Some(origin) => request.header("origin", origin),
        None => request,
    };
    let open = with_origin(server.http.get(&base)).send().await.expect("handshake");
    let open = open.text().await.expect("handshake body");
    let handshake: Value = serde_json::from_str(open.trim_start_matches('0')).expect("open packet");
    let url = format!("{base}&sid={}", handshake["sid"].as_str().expect("sid"));
    let connect = format!("40{}", json!({ "token": server.token(user) }));
    let posted = with_origin(server.http.post(&url)).body(connect).send().await.expect("connect");
    assert_eq!(posted.status().as_u16(), 200);
    // A busy server may answer a poll before the connect's answer is queued: poll again.
    for _ in 0..5 {
        let polled =
            with_origin(server.http.get(&url)).send().await.expect("poll").text().await.expect("poll body");
        // Engine.IO packets are separated by 0x1e; socket.io packets are engine.io messages (`4…`).
        if let Some(packet) = polled.split('\u{1e}').find(|packet| packet.starts_with('4')) {
            return packet.to_owned();
        }
    }
    String::new()
}

/// Waits until the node holds `n` connections (a closed one is released asynchronously), at
/// most [`WAIT`].
async fn until_connections(server: &TestServer, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if server.state.admission.connections() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the node holds {} connections, not {n}", server.state.admission.connections());
}

async fn server_with_origins() -> TestServer {
    TestServer::start_with(|config| {
        config.connections.allowed_origins = Some(vec![ALLOWED.to_owned()]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_from_an_origin_not_in_the_allowlist_is_refused_with_403_forbidden() {
    let server = server_with_origins().await;
    let (status, body) = refused(ws_request(&server, "alice", Some(EVIL))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    let (status, _) = refused(ws_request(&server, "alice", Some("null"))).await;
    assert_eq!(status, 403, "an opaque origin is not in the list either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_from_an_allowed_origin_or_without_origin_is_accepted() {
    let server = server_with_origins().await;
    let (stream, _) =
        tokio_tungstenite::connect_async(ws_request(&server, "alice", Some(ALLOWED))).await.expect("upgrade");
    let mut alice = Ws { stream, next_id: 0, pushes: VecDeque::new(), ready: Value::Null };
    alice.ready = alice.next("ready").await;
    let (stream, _) =
        tokio_tungstenite::connect_async(ws_request(&server, "bob", None)).await.expect("native app upgrade");
    let mut bob = Ws { stream, next_id: 0, pushes: VecDeque::new(), ready: Value::Null };
    assert_eq!(bob.next("ready").await["user_id"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_stream_from_an_origin_not_in_the_allowlist_is_refused() {
    let server = server_with_origins().await;
    assert_eq!(sse(&server, "alice", Some(EVIL)).await, (403, "forbidden".to_owned()));
    assert_eq!(sse(&server, "alice", Some(ALLOWED)).await.0, 200);
    assert_eq!(sse(&server, "alice", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socketio_polling_connect_from_an_origin_not_in_the_allowlist_gets_connect_error_forbidden() {
    let server = server_with_origins().await;
    let refused = socketio_polling(&server, "alice", Some(EVIL)).await;
    assert!(refused.starts_with("44"), "a CONNECT_ERROR packet: {refused}");
    let error: Value = serde_json::from_str(&refused[2..]).expect("connect_error payload");
    assert_eq!(error["message"], "forbidden");
    assert!(socketio_polling(&server, "alice", Some(ALLOWED)).await.starts_with("40"));
    assert!(socketio_polling(&server, "bob", None).await.starts_with("40"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_connection_over_the_cap_is_refused_and_accepted_again_after_one_closes() {
    let server = TestServer::start_with(|config| config.connections.max_per_user = 2).await;
    let first = Ws::connect(&server, "alice").await;
    let mut second = Ws::connect(&server, "alice").await;
    let (status, body) = refused(ws_request(&server, "alice", None)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")));
    assert_eq!(sse(&server, "alice", None).await, (429, "rate_limited".to_owned()), "SSE counts too");
    let refused_sio = socketio_polling(&server, "alice", None).await;
    assert!(refused_sio.contains(r#""message":"rate_limited""#), "Socket.IO counts too: {refused_sio}");
    let mut bob = Ws::connect(&server, "bob").await;
    bob.ok("presence:query", json!({ "user_ids": ["alice"] })).await;
    second.ok("presence:query", json!({ "user_ids": [] })).await;

    drop(first);
    until_connections(&server, 2).await;
    let mut again = Ws::connect(&server, "alice").await;
    again.ok("presence:query", json!({ "user_ids": [] })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_refuses_new_connections_with_503_and_socketio_server_full() {
    let server = TestServer::start_with(|config| config.connections.max_connections = 2).await;
    let _alice = Ws::connect(&server, "alice").await;
    let _bob = Ws::connect(&server, "bob").await;
    let (status, body) = refused(ws_request(&server, "carol", None)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")));
    assert_eq!(sse(&server, "carol", None).await, (503, "unavailable".to_owned()));
    let refused_sio = socketio_polling(&server, "carol", None).await;
    assert!(refused_sio.contains(r#""message":"server_full""#), "{refused_sio}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_over_the_per_ip_rate_get_429_with_retry_after() {
    let server = TestServer::start_with(|config| {
        config.connections.handshake_rate = 1;
        config.connections.handshake_burst = 2;
    })
    .await;
    let _alice = Ws::connect(&server, "alice").await;
    let _bob = Ws::connect(&server, "bob").await;
    let response = server
        .http
        .get(format!("{}/api/notifications/stream?token={}", server.base, server.token("carol")))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 =
        response.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!(retry_after >= 1);
    let (status, body) = refused(ws_request(&server, "carol", None)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")));
    assert!(socketio_polling(&server, "carol", None).await.contains(r#""message":"rate_limited""#));
}

/// `[[[…]]]`, `depth` arrays deep (within what serde_json builds).
fn nested(depth: usize) -> Value {
    serde_json::from_str(&format!("{}{}", "[".repeat(depth), "]".repeat(depth))).expect("nested arrays")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_json_in_a_frame_is_invalid_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let mut alice = Ws::connect(&server, "alice").await;
    let ack = alice.call("presence:query", json!({ "user_ids": nested(40) })).await;
    assert_eq!(ack["error"]["code"], "invalid", "{ack}");
    assert!(ack["error"]["message"].as_str().unwrap_or("").contains("nested deeper than 32"), "{ack}");

    // Deeper than serde_json's own recursion limit: still our answer, to the frame's id.
    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
    let frame = format!(r#"{{"id":"deep","event":"presence:query","data":{{"user_ids":{deep}}}}}"#);
    alice.stream.send(Message::text(frame)).await.expect("send");
    let answer = alice.frame().await;
    assert_eq!(answer["id"], "deep");
    assert!(answer["ack"]["error"]["message"].as_str().unwrap_or("").contains("nested deeper than 32"));

    let ack = alice.ok("presence:query", json!({ "user_ids": ["bob"] })).await;
    assert_eq!(ack["presence"]["bob"]["online"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_rest_body_is_invalid_before_it_is_parsed() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let body = format!(r#"{{"type":"group","members":["bob"],"metadata":{deep}}}"#);
    let reply =
        alice.raw(reqwest::Method::POST, "/api/conversations", "application/json", body.into_bytes()).await;
    reply.assert_error(400, "invalid");
    assert!(reply.body["error"]["message"].as_str().unwrap_or("").contains("nested deeper than 32"));
    alice.create("group", &["bob"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_with_too_many_queued_frames_is_cut_off_while_a_normal_client_keeps_receiving() {
    const MESSAGES: usize = 2000;
    const SENDERS: usize = 10;
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.ws.max_queued_bytes = 64 << 20;
        config.connections.max_outbound_queue = 400;
    })
    .await;
    let conv = server.client("alice").create("group", &["bob", "carol"]).await;
    let id = conv["id"].as_str().expect("id").to_owned();

    // Carol's connection has a tiny receive window and she stops reading after `ready`.
    let mut carol = Ws::connect_slow(&server, "carol").await;
    let mut bob = Ws::connect(&server, "bob").await;

    // ~8 MB of events: more than the kernel's socket buffers can hold for a client that
    // does not read, so frames pile up in carol's outbox past 400.
    flood_and_follow(&server, &id, MESSAGES, SENDERS, &mut bob).await;
    // The close frame itself may not fit into carol's full socket: then the TCP connection
    // just ends, after everything already in flight.
    if let Some(close) = carol.closed(Duration::from_secs(30)).await {
        assert_eq!(
            (u16::from(close.code), close.reason.as_str()),
            (1008, "slow consumer: outbound queue full")
        );
    }
    until_connections(&server, 1).await;
    bob.ok("presence:query", json!({ "user_ids": [] })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socketio_client_that_stops_reading_is_disconnected_while_a_normal_client_keeps_receiving() {
    use futures::StreamExt;
    use tokio_tungstenite::MaybeTlsStream;
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.connections.max_outbound_queue = 100;
        // Socket.IO heartbeat: a ping every 2 s, answered within 28 s (bob's plain WS has
        // 30 s to pong).
        config.ws.ping_interval = Duration::from_secs(2);
        config.ws.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let conv = server.client("alice").create("group", &["bob", "carol"]).await;
    let id = conv["id"].as_str().expect("id").to_owned();

    // Carol speaks Engine.IO v4 over a socket with a tiny receive window, and stops reading
    // once she has `ready`.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = socket.connect(server.addr).await.expect("connect");
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (mut carol, _) =
        tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)).await.expect("upgrade");
    let mut next_text = async || loop {
        let frame = tokio::time::timeout(WAIT, carol.next()).await.expect("a frame");
        if let Some(Ok(Message::Text(text))) = frame {
            return text.to_string();
        }
    };
    assert!(next_text().await.starts_with('0'), "the Engine.IO open packet");
    let connect = format!("40{}", json!({ "token": server.token("carol") }));
    carol.send(Message::text(connect)).await.expect("connect");
    loop {
        let frame = tokio::time::timeout(WAIT, carol.next()).await.expect("a frame");
        match frame {
            Some(Ok(Message::Text(text))) if text.starts_with("42[\"ready\"") => break,
            Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                carol.send(Message::text("3")).await.expect("pong")
            }
            Some(Ok(_)) => {}
            other => panic!("carol's handshake failed: {other:?}"),
        }
    }
    let mut bob = Ws::connect(&server, "bob").await;
    until_connections(&server, 2).await;

    // ~8 MB of events: more than the kernel's buffers and carol's 100-packet queue hold.
    flood_and_follow(&server, &id, 2000, 10, &mut bob).await;
    drop(bob);
    // Her queue overflowed (she lost events), so the server disconnects her socket at the
    // first event or keepalive round (every 2 s) that finds room for the disconnect packet
    // `41`, on which socket.io-client closes the connection; long before her missing pong
    // would (28 s). Reading now, she gets what was in flight, then the disconnect.
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(frame)) = carol.next().await {
            match frame {
                Message::Close(_) => break,
                Message::Text(text) if text.as_str() == "41" => break,
                _ => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "carol was not disconnected when her queue overflowed");
    until_connections(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_closes_the_live_connection_unless_auth_refresh_extended_it() {
    let server = TestServer::start().await;
    let short = |user: &str| server.state.auth.mint(user, None, Duration::from_secs(4)).expect("token");
    let mut expiring = Ws::open(format!("ws://{}/ws?token={}", server.addr, short("alice"))).await;
    let mut refreshed = Ws::open(format!("ws://{}/ws?token={}", server.addr, short("alice"))).await;

    let ack = refreshed.ok("auth:refresh", json!({ "token": server.token("alice") })).await;
    assert!(ack["expires_at"].as_str().is_some_and(|at| at.ends_with('Z')), "{ack}");

    let close = expiring.closed(WAIT).await.expect("a close frame");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1008, "token_expired"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    refreshed.ok("presence:query", json!({ "user_ids": [] })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refresh_with_another_users_or_a_bad_token_is_refused_and_the_old_expiry_stays() {
    let server = TestServer::start().await;
    let token = server.state.auth.mint("alice", None, Duration::from_secs(4)).expect("token");
    let mut alice = Ws::open(format!("ws://{}/ws?token={token}", server.addr)).await;
    let ack = alice.call("auth:refresh", json!({ "token": server.token("bob") })).await;
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    let ack = alice.call("auth:refresh", json!({ "token": "not-a-jwt" })).await;
    assert_eq!(ack["error"]["code"], "unauthorized", "{ack}");
    let close = alice.closed(WAIT).await.expect("a close frame");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1008, "token_expired"));
}

/// Budgets of 1 per second with bursts of 2: the third request in a row is refused unless the
/// machine took a second per request (the helpers below allow many more).
fn tight() -> Budget {
    Budget::new(1, 2)
}

/// A server where every budgeted kind has the [`tight`] budget.
async fn budgeted_server() -> TestServer {
    TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.limits.budgets = EventBudgets {
            typing: tight(),
            presence: tight(),
            sync: tight(),
            create_conversation: tight(),
            add_members: tight(),
            search: tight(),
        };
    })
    .await
}

/// Sends `event` over /ws until it is refused (at most 30 times); asserts the refusal is
/// `rate_limited` and returns how many were admitted before it.
async fn admitted_until_refused(ws: &mut Ws, event: &str, data: Value) -> usize {
    for admitted in 0..30 {
        let ack = ws.call(event, data.clone()).await;
        if ack["ok"] != true {
            assert_eq!(ack["error"]["code"], "rate_limited", "{event}: {ack}");
            return admitted;
        }
    }
    panic!("{event} was never refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_presence_and_sync_are_budgeted_per_user_and_kind() {
    let server = budgeted_server().await;
    let conversation = server.client("alice").create("group", &["bob"]).await;
    let id = conversation["id"].as_str().expect("id");
    let mut alice = Ws::connect(&server, "alice").await;
    let mut bob = Ws::connect(&server, "bob").await;

    let here = json!({ "conversation_id": id });
    for (event, data) in [
        ("typing:start", here.clone()),
        ("presence:query", json!({ "user_ids": ["bob"] })),
        ("sync", json!({ "conversations": {} })),
    ] {
        // Each kind has a full bucket of its own, whatever the others spent.
        assert!(admitted_until_refused(&mut alice, event, data).await >= 2, "{event}");
    }
    // Other users' budgets and message writes are untouched.
    bob.ok("typing:start", here.clone()).await;
    assert_eq!(alice.next("typing:start").await["user_id"], "bob");
    alice.ok("message:send", json!({ "conversation_id": id, "content": "still here" })).await;
    // Everything alice's typing published reached bob before her message: one typing:start.
    bob.next("message:new").await;
    let starts = bob.pushes.iter().filter(|p| p["event"] == "typing:start").count();
    assert_eq!(starts, 1, "repeated starts are not re-announced: {:?}", bob.pushes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_creation_and_member_additions_are_budgeted_per_user() {
    let server = budgeted_server().await;
    let alice = server.client("alice");
    let mut created = Vec::new();
    let refused = loop {
        assert!(created.len() < 30, "creation was never refused");
        let reply = alice.post("/api/conversations", json!({ "type": "group", "members": ["bob"] })).await;
        if reply.status.as_u16() != 201 {
            break reply;
        }
        created.push(reply.body["id"].as_str().expect("id").to_owned());
    };
    refused.assert_error(429, "rate_limited");
    assert!(refused.headers.get("retry-after").is_some(), "REST says when to retry");
    assert!(created.len() >= 2);
    server.client("bob").create("group", &["alice"]).await;

    let path = format!("/api/conversations/{}/members", created[0]);
    let mut added = 0;
    let refused = loop {
        assert!(added < 30, "member additions were never refused");
        let reply = alice.post(&path, json!({ "user_ids": [format!("user{added}")] })).await;
        if reply.status.as_u16() != 200 {
            break reply;
        }
        added += 1;
    };
    refused.assert_error(429, "rate_limited");
    assert!(added >= 2, "a bucket of its own, not the one creation spent");
}
