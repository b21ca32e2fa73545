//! Plain WebSocket transport (`/ws`, JSON frames), driven by a Rust WebSocket client against
//! a real server: auth, every client event, error answers, close codes (1009 oversized,
//! 1008 expired token and slow consumer, 1001 idle, 1012 shutdown).

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::TestServer;
use common::ws::{WAIT, Ws, flood_and_follow};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

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

fn expired_token(server: &TestServer, user: &str) -> String {
    let secret = std::fs::read_to_string(server.data_dir.path().join("jwt-secret")).expect("secret");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let claims = chatd::auth::Claims { sub: user.into(), name: None, exp: now - 600, aud: None, iss: None };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.trim().as_bytes()),
    )
    .expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_401_before_the_upgrade_and_good_ones_work_from_query_or_header() {
    let server = TestServer::start().await;
    let base = format!("ws://{}/ws", server.addr);

    let (status, body) = refused(base.as_str()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, body) = refused(format!("{base}?token=not.a.jwt")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, body) = refused(format!("{base}?token={}", expired_token(&server, "alice"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("token_expired")));

    let by_query = Ws::connect(&server, "alice").await;
    assert_eq!(by_query.ready["user_id"], "alice");
    let mut request = base.as_str().into_client_request().expect("request");
    let bearer = format!("Bearer {}", server.token("bob")).parse().expect("header");
    request.headers_mut().insert("authorization", bearer);
    let by_header = Ws::open(request).await;
    assert_eq!(by_header.ready["user_id"], "bob");

    // A plain GET is not an upgrade.
    let plain = server.http.get(format!("{}/ws?token={}", server.base, server.token("bob"))).send().await;
    assert_eq!(plain.expect("response").status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_acked_after_commit_and_reaches_the_other_member_and_the_senders_other_connection_once() {
    let server = TestServer::start().await;
    let conv = server.client("alice").create("group", &["bob"]).await;
    let id = conv["id"].as_str().expect("id");
    let mut alice = Ws::connect(&server, "alice").await;
    let mut alice_tab = Ws::connect(&server, "alice").await;
    let mut bob = Ws::connect(&server, "bob").await;
    assert_eq!(bob.ready["conversations"], json!([{ "id": id, "last_seq": 0, "last_revision": 0 }]));

    let ack =
        alice.ok("message:send", json!({ "conversation_id": id, "content": "hi", "client_id": "c-1" })).await;
    let message = &ack["message"];
    assert_eq!(message["seq"], 1);
    let history = server.client("bob").get(&format!("/api/conversations/{id}/messages")).await.expect(200);
    assert_eq!(&history["messages"][0], message, "acked only after commit");

    assert_eq!(&bob.next("message:new").await, message);
    assert_eq!(&alice_tab.next("message:new").await, message);
    alice.none("message:new", Duration::from_millis(300)).await;

    // A retry with the same client_id returns the original and fans out nothing: the next
    // message:new bob gets below is seq 2 (a fan-out of the retry would have come first).
    let retry =
        alice.ok("message:send", json!({ "conversation_id": id, "content": "hi", "client_id": "c-1" })).await;
    assert_eq!(&retry["message"], message);

    // One connection's sends are committed in the order it sent them.
    for n in 0..20 {
        let frame = json!({ "id": 100 + n, "event": "message:send",
                            "data": { "conversation_id": id, "content": format!("m{n}") } });
        alice.send_frame(frame).await;
    }
    for n in 0..20 {
        let ack = alice.frame().await;
        assert_eq!(ack["id"], 100 + n);
        assert_eq!(ack["ack"]["message"]["content"], format!("m{n}"));
        assert_eq!(ack["ack"]["message"]["seq"], 2 + n);
    }
    for n in 0..20 {
        assert_eq!(bob.next("message:new").await["seq"], 2 + n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_event_works_over_plain_websocket() {
    let server = TestServer::start().await;
    let conv = server.client("alice").create("group", &["bob"]).await;
    let id = conv["id"].as_str().expect("id");
    let mut alice = Ws::connect(&server, "alice").await;
    let mut bob = Ws::connect(&server, "bob").await;

    // Presence: query, and online/offline pushed to contacts.
    let presence = alice.ok("presence:query", json!({ "user_ids": ["bob", "carol"] })).await;
    assert_eq!(presence["presence"]["bob"]["online"], true);
    assert_eq!(presence["presence"]["carol"]["online"], false);
    let mut bob_tab = Ws::connect(&server, "bob").await;
    drop(bob_tab.stream.close(None).await);
    alice.none("user:offline", Duration::from_millis(300)).await;

    // Typing.
    bob.ok("typing:start", json!({ "conversation_id": id })).await;
    assert_eq!(alice.next("typing:start").await, json!({ "conversation_id": id, "user_id": "bob" }));
    bob.ok("typing:stop", json!({ "conversation_id": id })).await;
    assert_eq!(alice.next("typing:stop").await, json!({ "conversation_id": id, "user_id": "bob" }));

    // Online but not focused: message:new + notification with the unread count.
    let sent =
        alice.ok("message:send", json!({ "conversation_id": id, "content": "one" })).await["message"].clone();
    assert_eq!(bob.next("message:new").await, sent);
    let notification = bob.next("notification").await;
    assert_eq!(
        (notification["type"].as_str(), notification["seq"].as_i64(), notification["unread_count"].as_i64()),
        (Some("message"), Some(1), Some(1))
    );
    assert_eq!(notification["preview"], "one");

    // Focused: no notification; the marker advances and the sender gets the receipt.
    bob.ok("conversation:focus", json!({ "conversation_id": id })).await;
    let sent =
        alice.ok("message:send", json!({ "conversation_id": id, "content": "two" })).await["message"].clone();
    assert_eq!(bob.next("message:new").await, sent);
    assert_eq!(
        alice.next("message:read").await,
        json!({ "conversation_id": id, "user_id": "bob", "seq": 2 })
    );
    // No notification for seq 2: the next one bob gets, once he looks away, is for seq 3 (one
    // for seq 2 would have come before it).
    bob.ok("conversation:unfocus", json!({})).await;
    alice.ok("message:send", json!({ "conversation_id": id, "content": "three" })).await;
    assert_eq!(bob.next("notification").await["seq"], 3);

    // Read marker: never backwards.
    assert_eq!(bob.ok("message:read", json!({ "conversation_id": id, "seq": 3 })).await["last_read_seq"], 3);
    assert_eq!(alice.next("message:read").await["seq"], 3);
    assert_eq!(bob.ok("message:read", json!({ "conversation_id": id, "seq": 1 })).await["last_read_seq"], 3);

    // Edit and delete.
    let edited = alice.ok("message:edit", json!({ "message_id": sent["id"], "content": "two!" })).await;
    assert_eq!(edited["message"]["content"], "two!");
    assert_eq!(bob.next("message:updated").await, edited["message"]);
    let deleted = alice.ok("message:delete", json!({ "message_id": sent["id"] })).await;
    assert!(deleted["message"]["content"].is_null() && deleted["message"]["deleted_at"].is_string());
    assert_eq!(bob.next("message:deleted").await, deleted["message"]);

    // Leave stops this connection's deliveries; join resumes them. The send's ack comes at
    // commit, its fan-out a moment later: a second tab of alice's, which receives it, shows
    // the fan-out is done before bob joins again.
    let mut alice_tab = Ws::connect(&server, "alice").await;
    bob.pushes.clear();
    bob.ok("conversation:leave", json!({ "conversation_id": id })).await;
    alice.ok("message:send", json!({ "conversation_id": id, "content": "unheard" })).await;
    assert_eq!(alice_tab.next("message:new").await["content"], "unheard");
    bob.ok("conversation:join", json!({ "conversation_id": id })).await;
    alice.ok("message:send", json!({ "conversation_id": id, "content": "heard" })).await;
    // "unheard", had it been delivered, would have come first.
    assert_eq!(bob.next("message:new").await["content"], "heard");

    // Sync: everything after a seq, ascending.
    let sync = bob.ok("sync", json!({ "conversations": { id: 2 } })).await;
    let seqs: Vec<i64> =
        sync["messages"].as_array().expect("messages").iter().filter_map(|m| m["seq"].as_i64()).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(sync["has_more"], false);
    assert_eq!(sync["conversations"], json!([{ "id": id, "last_seq": 5, "last_revision": 2 }]));

    // Added to a new conversation: conversation:new, and its messages arrive at once.
    let later = server.client("carol").create("group", &["alice"]).await;
    let later_id = later["id"].as_str().expect("id");
    server
        .client("carol")
        .post(&format!("/api/conversations/{later_id}/members"), json!({ "user_ids": ["bob"] }))
        .await
        .expect(200);
    assert_eq!(bob.next("conversation:new").await["id"], later_id);
    server.client("carol").send(later_id, "welcome").await;
    assert_eq!(bob.next("message:new").await["content"], "welcome");

    drop(bob.stream.close(None).await);
    let offline = alice.next("user:offline").await;
    assert_eq!(offline["user_id"], "bob");
    assert!(offline["last_seen_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_clear_errors_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let conv = server.client("alice").create("group", &["bob"]).await;
    let id = conv["id"].as_str().expect("id");
    let mut mallory = Ws::connect(&server, "mallory").await;

    mallory.stream.send(Message::text("{not json")).await.expect("send");
    let error = mallory.next("error").await;
    assert_eq!(error["code"], "invalid");
    mallory.stream.send(Message::binary(vec![0xff, 0xfe])).await.expect("send");
    assert_eq!(mallory.next("error").await["code"], "invalid");
    // Without an id, a failed event comes back as an `error` push naming the event.
    mallory
        .send_frame(json!({ "event": "message:send", "data": { "conversation_id": id, "content": "x" } }))
        .await;
    let error = mallory.next("error").await;
    assert_eq!(
        (error["code"].as_str(), error["event"].as_str()),
        (Some("not_a_member"), Some("message:send"))
    );

    let cases = [
        (json!({ "id": 1, "event": "no:such", "data": {} }), "invalid"),
        (json!({ "id": 2, "event": "message:send", "data": { "conversation_id": 5 } }), "invalid"),
        (
            json!({ "id": 3, "event": "message:send", "data": { "conversation_id": id, "content": "x", "extra": 1 } }),
            "invalid",
        ),
        (json!({ "id": 4, "data": {} }), "invalid"),
        (
            json!({ "id": 5, "event": "message:send", "data": { "conversation_id": id, "content": "x" } }),
            "not_a_member",
        ),
        (json!({ "id": 6, "event": "conversation:join", "data": { "conversation_id": id } }), "not_a_member"),
        (
            json!({ "id": 7, "event": "message:send", "data": { "conversation_id": "nope", "content": "x" } }),
            "not_found",
        ),
        (
            json!({ "id": 8, "event": "message:send", "data": { "conversation_id": id, "content": "x".repeat(4001) } }),
            "too_large",
        ),
        (json!({ "id": "text-id", "event": "typing:start", "data": [] }), "invalid"),
        // serde would read an array positionally into the payload's fields.
        (json!({ "id": 9, "event": "message:send", "data": [id, "x"] }), "invalid"),
    ];
    for (frame, code) in cases {
        let expected_id = frame["id"].clone();
        mallory.send_frame(frame).await;
        let answer = mallory.frame().await;
        assert_eq!(answer["id"], expected_id, "{answer}");
        assert_eq!(answer["ack"]["ok"], false, "{answer}");
        assert_eq!(answer["ack"]["error"]["code"], code, "{answer}");
        assert!(answer["ack"]["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let presence = mallory.ok("presence:query", json!({ "user_ids": ["alice"] })).await;
    assert_eq!(presence["presence"]["alice"]["online"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_closed_with_1009() {
    let server = TestServer::start().await;
    let mut alice = Ws::connect(&server, "alice").await;
    let big = json!({ "id": 1, "event": "presence:query", "data": { "user_ids": ["x".repeat(70 * 1024)] } });
    let _ = alice.stream.send(Message::text(big.to_string())).await;
    let close = alice.closed(WAIT).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed_while_a_live_one_stays() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.ws.ping_interval = Duration::from_millis(500);
        config.ws.idle_timeout = Duration::from_secs(3);
    })
    .await;
    let mut silent = Ws::connect(&server, "alice").await;
    let mut live = Ws::connect(&server, "bob").await;
    // The live client keeps reading (its library answers the pings) for longer than the idle
    // timeout; the silent one does not. The timeout leaves a busy machine seconds to pong.
    live.none("never", Duration::from_secs(4)).await;
    let close = silent.closed(WAIT).await.expect("a close frame");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1001, "idle timeout"));
    let presence = live.ok("presence:query", json!({ "user_ids": ["alice", "bob"] })).await;
    assert_eq!(presence["presence"]["alice"]["online"], false);
    assert_eq!(presence["presence"]["bob"]["online"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_with_1008_when_its_token_expires() {
    let server = TestServer::start_with(|config| config.ws.ping_interval = Duration::from_millis(200)).await;
    let token = server.state.auth.mint("alice", None, Duration::from_secs(4)).expect("token");
    let mut alice = Ws::open(format!("ws://{}/ws?token={token}", server.addr)).await;
    alice.ok("presence:query", json!({ "user_ids": [] })).await;
    let close = alice.closed(WAIT).await.expect("a close frame");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1008, "token_expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_off_while_a_normal_client_in_the_conversation_keeps_receiving() {
    const MESSAGES: usize = 2000;
    const SENDERS: usize = 10;
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.ws.max_queued_bytes = 256 * 1024;
    })
    .await;
    let conv = server.client("alice").create("group", &["bob", "carol"]).await;
    let id = conv["id"].as_str().expect("id").to_owned();

    // Carol's connection has a tiny receive window and she stops reading after `ready`.
    let mut carol = Ws::connect_slow(&server, "carol").await;
    let mut bob = Ws::connect(&server, "bob").await;

    // ~8 MB of events: more than the kernel's socket buffers (up to 4 MB here) plus the
    // 256 KiB outbox can hold for a client that does not read.
    flood_and_follow(&server, &id, MESSAGES, SENDERS, &mut bob).await;

    let mut seen = 0;
    let end = loop {
        match tokio::time::timeout(WAIT, carol.stream.next()).await.expect("carol's connection ends") {
            Some(Ok(Message::Text(_))) => seen += 1,
            Some(Ok(Message::Close(close))) => break close.map(|c| u16::from(c.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(seen < MESSAGES, "carol was cut off before receiving everything (saw {seen})");
    assert!(end.is_none() || end == Some(1008), "closed with {end:?}");
    let presence = bob.ok("presence:query", json!({ "user_ids": ["carol"] })).await;
    assert_eq!(presence["presence"]["carol"]["online"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websocket_connections_with_1012_service_restart() {
    let server = TestServer::start().await;
    let mut alice = Ws::connect(&server, "alice").await;
    let stopping = tokio::spawn(server.stop());
    let close = alice.closed(WAIT).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1012);
    stopping.await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_initiated_close_is_answered_with_a_close_frame() {
    let server = TestServer::start().await;
    let mut alice = Ws::connect(&server, "alice").await;
    let bye = CloseFrame { code: 1000.into(), reason: "bye".into() };
    alice.stream.send(Message::Close(Some(bye))).await.expect("send close");
    let answer = tokio::time::timeout(WAIT, alice.stream.next()).await.expect("an answer in time");
    assert!(matches!(answer, Some(Ok(Message::Close(Some(_))))), "expected a close frame, got {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_answer_larger_than_the_outbound_bound_reaches_a_client_that_reads() {
    let server = TestServer::start().await; // the default bound: 1 MiB
    let conv = server.client("alice").create("group", &["bob"]).await;
    let id = conv["id"].as_str().expect("id");
    let content = "x".repeat(4000);
    for _ in 0..300 {
        server.client("alice").send(id, &content).await;
    }
    let mut bob = Ws::connect(&server, "bob").await;
    let sync = bob.ok("sync", json!({ "conversations": {} })).await;
    assert_eq!(sync["messages"].as_array().map(Vec::len), Some(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_is_the_first_push_even_while_contacts_come_and_go() {
    let server = TestServer::start().await;
    server.client("carol").create("group", &["bob"]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let togglers: Vec<_> = (0..3)
        .map(|_| {
            let (url, stop) =
                (format!("ws://{}/ws?token={}", server.addr, server.token("carol")), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (mut carol, _) = tokio_tungstenite::connect_async(&url).await.expect("upgrade");
                    let _ = carol.next().await;
                    let _ = carol.close(None).await;
                }
            })
        })
        .collect();
    for _ in 0..100 {
        let url = format!("ws://{}/ws?token={}", server.addr, server.token("bob"));
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("upgrade");
        let mut bob = Ws { stream, next_id: 0, pushes: VecDeque::new(), ready: Value::Null };
        let first = bob.frame().await;
        assert_eq!(first["event"], "ready", "first push: {first}");
        let _ = bob.stream.close(None).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for toggler in togglers {
        let _ = toggler.await;
    }
}

/// A counter's value in the server's `/metrics` (0 when absent).
async fn counter(server: &TestServer, name: &str) -> f64 {
    let text = server.http.get(format!("{}/metrics", server.base)).send().await.expect("scrape");
    let text = text.text().await.expect("body");
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .next()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_queued_while_a_connection_is_busy_leave_in_fewer_writes_complete_and_in_order() {
    const MESSAGES: usize = 2000;
    const SENDERS: usize = 10;
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.ws.max_queued_bytes = 64 << 20;
        config.connections.max_outbound_queue = 10 * MESSAGES;
    })
    .await;
    let alice = server.client("alice");
    let id = alice.create("direct", &["bob"]).await["id"].as_str().expect("id").to_owned();
    // Bob's connection has a tiny receive window, and he reads nothing while ~8 MB of
    // `message:new` and `notification` are sent: the server's writer for him is blocked on a
    // full socket and his frames queue up meanwhile.
    let mut bob = Ws::connect_slow(&server, "bob").await;
    let (writes_before, frames_before) = (
        counter(&server, "chatd_ws_writes_total").await,
        counter(&server, "chatd_ws_frames_written_total").await,
    );
    let content = "x".repeat(4000);
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (alice, id, content) = (alice.clone(), id.clone(), content.clone());
            tokio::spawn(async move {
                for _ in 0..MESSAGES / SENDERS {
                    alice.send(&id, &content).await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("sender");
    }
    for seq in 1..=MESSAGES as i64 {
        assert_eq!(bob.next("message:new").await["seq"], seq, "every message, in order");
        assert_eq!(bob.next("notification").await["seq"], seq, "every notification, in order");
    }
    let writes = counter(&server, "chatd_ws_writes_total").await - writes_before;
    let frames = counter(&server, "chatd_ws_frames_written_total").await - frames_before;
    assert!(frames >= (2 * MESSAGES) as f64, "{frames} frames written");
    assert!(
        writes * 4.0 <= frames,
        "{frames} frames took {writes} writes: queued frames should share writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_told_only_to_contacts_and_strangers_read_as_never_seen() {
    let server = TestServer::start().await;
    server.client("alice").create("group", &["bob"]).await;
    let mut bob = Ws::connect(&server, "bob").await;
    let alice = Ws::connect(&server, "alice").await;
    assert_eq!(bob.next("user:online").await["user_id"], "alice");
    drop(alice);
    let offline = bob.next("user:offline").await;
    assert!(offline["last_seen_at"].is_string(), "{offline}");
    let mut carol = Ws::connect(&server, "carol").await;

    let query = json!({ "user_ids": ["alice", "bob", "carol"] });
    let presence = carol.ok("presence:query", query).await["presence"].clone();
    let never_seen = json!({ "online": false, "last_seen_at": null });
    assert_eq!(presence["alice"], never_seen, "carol shares no conversation with alice");
    assert_eq!(presence["bob"], never_seen, "bob is online, but not carol's contact");
    assert_eq!(presence["carol"]["online"], true, "one's own presence");
    let presence = bob.ok("presence:query", json!({ "user_ids": ["alice"] })).await["presence"].clone();
    assert_eq!(presence["alice"], json!({ "online": false, "last_seen_at": offline["last_seen_at"] }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_query_takes_at_most_a_hundred_ids() {
    let server = TestServer::start().await;
    let mut alice = Ws::connect(&server, "alice").await;
    let ids: Vec<String> = (0..101).map(|n| format!("user{n}")).collect();
    let ack = alice.call("presence:query", json!({ "user_ids": ids })).await;
    assert_eq!(ack["error"]["code"], "too_large", "{ack}");
    let presence = alice.ok("presence:query", json!({ "user_ids": ids[..100] })).await;
    assert_eq!(presence["presence"].as_object().map(|p| p.len()), Some(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_events_carry_no_members_mute_flag_and_no_ones_unread_count() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let mut bob_ws = Ws::connect(&server, "bob").await;
    let created =
        alice.post("/api/conversations", json!({ "type": "group", "members": ["bob"] })).await.expect(201);
    let id = created["id"].as_str().expect("id").to_owned();
    let new = bob_ws.next("conversation:new").await;
    // alice has two unread messages when she renames the group: bob must not learn that.
    server.client("bob").send(&id, "one").await;
    server.client("bob").send(&id, "two").await;
    let renamed =
        alice.patch(&format!("/api/conversations/{id}"), json!({ "name": "renamed" })).await.expect(200);
    assert_eq!(renamed["unread_count"], 2, "the actor's own view keeps her count: {renamed}");
    let updated = bob_ws.next("conversation:updated").await;
    assert_eq!(updated["unread_count"], 0, "the actor's unread count went to bob: {updated}");
    for event in [new, updated] {
        for member in event["members"].as_array().expect("members") {
            assert!(member.get("notifications").is_none(), "a mute flag in an event: {event}");
        }
    }
}

/// Edits and the delete of one message race from separate requests, so their events may
/// reach a client in any order; each carries its own `version` and the delete, the last
/// change, the highest: a client that keeps the highest version ends deleted (#17).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_edits_and_a_delete_end_deleted_on_a_client_that_keeps_the_highest_version() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = alice.create("group", &["bob"]).await["id"].as_str().expect("id").to_owned();
    let mut bob = Ws::connect(&server, "bob").await;
    let sent = alice.send(&id, "first").await;
    assert_eq!(sent["version"], 1, "{sent}");
    let path = format!("/api/messages/{}", sent["id"].as_str().expect("id"));
    let edits = (0..12).map(|n| {
        let (client, path) = (server.client("alice"), path.clone());
        tokio::spawn(async move { client.patch(&path, json!({ "content": format!("edit {n}") })).await })
    });
    let delete = {
        let (client, path) = (server.client("alice"), path.clone());
        tokio::spawn(async move { client.delete(&path).await })
    };
    let edited = futures::future::join_all(edits)
        .await
        .into_iter()
        .filter(|r| r.as_ref().expect("edit").status == 200);
    let edited = edited.count();
    let deleted = delete.await.expect("delete").expect(200);
    // Edits after the delete are refused (409), so the delete is the last change.
    assert_eq!(deleted["version"], json!(1 + edited + 1), "{deleted}");

    let mut versions = Vec::new();
    let mut kept = sent.clone();
    while versions.len() < edited + 1 {
        let frame = bob.frame().await;
        let name = frame["event"].as_str().unwrap_or_default();
        if name != "message:updated" && name != "message:deleted" {
            continue;
        }
        let state = frame["data"].clone();
        versions.push(state["version"].as_i64().expect("every state carries its version"));
        if state["version"].as_i64() > kept["version"].as_i64() {
            kept = state;
        }
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=i64::try_from(edited + 2).expect("small")).collect::<Vec<_>>(),
        "one version per change"
    );
    assert_eq!(kept, deleted, "the highest version is the deleted state");
    assert!(kept["content"].is_null() && kept["deleted_at"].is_string());
    let history = alice.get(&format!("/api/conversations/{id}/messages")).await.expect(200);
    assert_eq!(history["messages"][0], deleted, "history holds the same last state");
}

/// Reactions, threads and mentions over plain WebSocket: `message:react`/`message:unreact`
/// acks and `reaction:added`/`reaction:removed` pushes, the author's `reaction`
/// notification, `thread:updated` for every member but notifications for thread followers
/// only, `mention` notifications, and `sync` with `revisions` answering what changed.
#[tokio::test]
async fn reactions_threads_and_mentions_reach_the_right_connections() {
    let server = TestServer::start().await;
    let conv = server.client("alice").create("group", &["bob", "carol"]).await;
    let id = conv["id"].as_str().expect("id");
    let mut alice = Ws::connect(&server, "alice").await;
    let mut bob = Ws::connect(&server, "bob").await;
    let mut carol = Ws::connect(&server, "carol").await;

    let root =
        alice.ok("message:send", json!({ "conversation_id": id, "content": "lunch?" })).await["message"]
            .clone();
    for ws in [&mut bob, &mut carol] {
        assert_eq!(ws.next("message:new").await["id"], root["id"]);
        assert_eq!(ws.next("notification").await["type"], "message");
    }
    let ready_revision = 0;

    let reacted = bob.ok("message:react", json!({ "message_id": root["id"], "emoji": "👍" })).await;
    assert_eq!(reacted["message"]["reaction_counts"], json!({ "👍": 1 }));
    let added = carol.next("reaction:added").await;
    assert_eq!(
        (
            added["message_id"].clone(),
            added["user_id"].clone(),
            added["emoji"].clone(),
            added["reaction_counts"].clone()
        ),
        (root["id"].clone(), json!("bob"), json!("👍"), json!({ "👍": 1 }))
    );
    assert_eq!(alice.next("reaction:added").await, added);
    let note = alice.next("notification").await;
    assert_eq!(
        (note["type"].as_str(), note["sender_id"].as_str(), note["emoji"].as_str()),
        (Some("reaction"), Some("bob"), Some("👍"))
    );
    let refused = bob.call("message:react", json!({ "message_id": root["id"], "emoji": "no" })).await;
    assert_eq!(refused["error"]["code"], "invalid");
    bob.ok("message:unreact", json!({ "message_id": root["id"], "emoji": "👍" })).await;
    assert_eq!(carol.next("reaction:removed").await["reaction_counts"], json!({}));

    // A thread-only reply: every member gets it and the root's new summary; only the
    // thread's followers (alice, the root's author) are notified.
    let reply = bob
        .ok("message:send", json!({ "conversation_id": id, "content": "sure", "thread_id": root["id"] }))
        .await["message"]
        .clone();
    for ws in [&mut alice, &mut carol] {
        assert_eq!(ws.next("message:new").await, reply);
        let updated = ws.next("thread:updated").await;
        assert_eq!(
            (updated["id"].clone(), updated["thread"]["reply_count"].clone()),
            (root["id"].clone(), json!(1))
        );
    }
    assert_eq!(alice.next("notification").await["message_id"], reply["id"]);
    carol.none("notification", Duration::from_millis(300)).await;

    // A mention notifies as a mention.
    alice
        .ok("message:send", json!({ "conversation_id": id, "content": "@carol", "mentions": ["carol"] }))
        .await;
    let note = carol.next("notification").await;
    assert_eq!(note["type"], "mention");

    // A client that held seqs 1–2 at revision 0 learns what changed on them.
    let synced =
        carol.ok("sync", json!({ "conversations": { id: 2 }, "revisions": { id: ready_revision } })).await;
    let changed = synced["changed"].as_array().expect("changed");
    assert_eq!(changed.len(), 1, "{synced}");
    assert_eq!(
        (changed[0]["id"].clone(), changed[0]["thread"]["reply_count"].clone()),
        (root["id"].clone(), json!(1))
    );
    assert_eq!(synced["messages"].as_array().map(Vec::len), Some(1), "seq 3 is new");
    let head = synced["conversations"].as_array().and_then(|c| c.iter().find(|h| h["id"] == id)).cloned();
    assert_eq!(head.map(|h| h["last_revision"].clone()), Some(json!(3)));
}

/// Who is in a conversation: members online and focused, over `/ws` and REST; a member who
/// blocks the caller is left out; non-members are refused.
#[tokio::test]
async fn who_is_here_lists_online_and_focused_members_but_not_blockers() {
    let server = TestServer::start().await;
    let conv = server.client("alice").create("group", &["bob", "carol", "dave"]).await;
    let id = conv["id"].as_str().expect("id");
    let mut alice = Ws::connect(&server, "alice").await;
    let mut bob = Ws::connect(&server, "bob").await;
    let _carol = Ws::connect(&server, "carol").await;
    bob.ok("conversation:focus", json!({ "conversation_id": id })).await;
    let here = alice.ok("presence:conversation", json!({ "conversation_id": id })).await;
    assert_eq!(
        (here["online"].clone(), here["focused"].clone()),
        (json!(["alice", "bob", "carol"]), json!(["bob"]))
    );
    server.client("carol").post("/api/blocks", json!({ "user_id": "alice" })).await.expect(201);
    let here = server.client("alice").get(&format!("/api/conversations/{id}/presence")).await.expect(200);
    assert_eq!(here["online"], json!(["alice", "bob"]), "carol blocks alice");
    let refused = Ws::connect(&server, "eve")
        .await
        .call("presence:conversation", json!({ "conversation_id": id }))
        .await;
    assert_eq!(refused["error"]["code"], "not_a_member");
}

/// A blocked conversation refuses sends over `/ws` with the platform's reason; members hear
/// of the status with `conversation:updated`.
#[tokio::test]
async fn a_blocked_conversation_refuses_sends_with_the_reason() {
    let server =
        TestServer::start_with(|config| config.admin_key = Some("states-admin-key-0123456789".into())).await;
    let conv = server.client("alice").create("group", &["bob"]).await;
    let id = conv["id"].as_str().expect("id");
    let mut bob = Ws::connect(&server, "bob").await;
    let admin = server.anonymous().with_token("states-admin-key-0123456789");
    admin
        .patch(
            &format!("/api/admin/conversations/{id}"),
            json!({ "status": "blocked", "status_reason": "scam" }),
        )
        .await
        .expect(200);
    let updated = bob.next("conversation:updated").await;
    assert_eq!(
        (updated["status"].as_str(), updated["status_reason"].as_str()),
        (Some("blocked"), Some("scam"))
    );
    let refused = bob.call("message:send", json!({ "conversation_id": id, "content": "hi" })).await;
    assert_eq!(refused["error"]["code"], "forbidden");
    assert!(refused["error"]["message"].as_str().unwrap_or("").contains("scam"), "{refused}");
}

/// `search` over `/ws` answers as `GET /api/search` does, in the ack.
#[tokio::test]
async fn search_works_over_plain_websocket() {
    let server = TestServer::start().await;
    let conv = server.client("alice").create("group", &["bob"]).await;
    let id = conv["id"].as_str().expect("id");
    let mut bob = Ws::connect(&server, "bob").await;
    server.client("alice").send(id, "검색을 해보세요").await;
    let found = bob.ok("search", json!({ "q": "검색", "limit": 5 })).await;
    assert_eq!(found["results"][0]["message"]["content"], "검색을 해보세요", "{found}");
    assert_eq!(found["results"][0]["highlights"], json!([[0, 2]]));
    assert_eq!(found["next_cursor"], Value::Null);
    let refused = bob.call("search", json!({ "q": " " })).await;
    assert_eq!(refused["error"]["code"], "invalid");
}
