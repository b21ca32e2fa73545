//! `GET /api/notifications/stream` (SSE) with a real HTTP client reading the body as it
//! arrives and parsing the frames itself: live notifications, resuming after
//! `Last-Event-ID` with exactly what was missed, `?token=`, refusals, keep-alive comments,
//! and what the stream says when the log no longer holds what the client missed.

mod common;

use std::time::Duration;

use common::TestServer;
use common::sse::{EventStream, Frame, PATIENCE};
use common::ws::Ws;
use serde_json::{Value, json};

/// Opens `path` (query included) on `server` with these headers.
async fn stream_of(server: &TestServer, path: &str, headers: &[(&str, String)]) -> EventStream {
    EventStream::open(&server.http, &format!("{}{path}", server.base), headers).await
}

async fn request(server: &TestServer, path: &str, headers: &[(&str, String)]) -> reqwest::Response {
    let mut request = server.http.get(format!("{}{path}", server.base));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.expect("request")
}

fn bearer(server: &TestServer, user: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {}", server.token(user)))
}

/// Opens a stream for `user` and closes it: from then on the user's notifications are
/// logged (a user who never opened a stream has no log).
async fn has_used_the_stream(server: &TestServer, user: &str) {
    drop(stream_of(server, "/api/notifications/stream", &[bearer(server, user)]).await);
}

/// Waits until `user`'s log has given `n` ids (routing records after the sender's ack).
async fn recorded(server: &TestServer, user: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.state.store.latest_notification_id(user).await.expect("latest id") < n {
        assert!(tokio::time::Instant::now() < deadline, "{user}'s notifications were not recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts a `notification` event with this id about message `seq`, and returns its data.
fn assert_notification(frame: &Frame, id: i64, seq: i64) -> Value {
    assert_eq!(frame.event.as_deref(), Some("notification"), "{frame:?}");
    assert_eq!(frame.id.as_deref(), Some(id.to_string().as_str()), "{frame:?}");
    let data = frame.json();
    assert_eq!((data["id"].as_i64(), data["seq"].as_i64()), (Some(id), Some(seq)), "{data}");
    data
}

#[tokio::test]
async fn a_stream_gets_live_notifications_and_resumes_with_exactly_the_missed_ones_then_live() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = alice.create("group", &["bob"]).await["id"].as_str().expect("id").to_owned();
    // Bob's app stays connected elsewhere, so he is online (not focused) throughout.
    let _bob_app = Ws::connect(&server, "bob").await;

    let mut stream = stream_of(&server, "/api/notifications/stream", &[bearer(&server, "bob")]).await;
    let sent = alice.send(&id, "first").await;
    let data = assert_notification(&stream.event().await, 1, 1);
    assert_eq!(
        data,
        json!({ "id": 1, "type": "message", "conversation_id": id, "message_id": sent["id"], "seq": 1,
                "sender_id": "alice", "preview": "first", "unread_count": 1 })
    );

    drop(stream);
    for n in 0..20 {
        alice.send(&id, &format!("missed {n}")).await;
    }
    let mut stream = stream_of(
        &server,
        "/api/notifications/stream",
        &[bearer(&server, "bob"), ("last-event-id", "1".to_owned())],
    )
    .await;
    for n in 0..20 {
        let data = assert_notification(&stream.event().await, n + 2, n + 2);
        assert_eq!(data["preview"], format!("missed {n}"));
    }
    stream.no_event(Duration::from_millis(300)).await;
    alice.send(&id, "live again").await;
    assert_notification(&stream.event().await, 22, 22);
}

#[tokio::test]
async fn without_last_event_id_a_stream_starts_with_the_next_notification() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = alice.create("group", &["bob"]).await["id"].as_str().expect("id").to_owned();
    let _bob_app = Ws::connect(&server, "bob").await;
    has_used_the_stream(&server, "bob").await;
    alice.send(&id, "before").await;
    alice.send(&id, "before").await;
    recorded(&server, "bob", 2).await;

    let mut stream = stream_of(&server, "/api/notifications/stream", &[bearer(&server, "bob")]).await;
    stream.no_event(Duration::from_millis(300)).await;
    alice.send(&id, "after").await;
    assert_notification(&stream.event().await, 3, 3);
}

#[tokio::test]
async fn a_user_whose_only_client_is_a_stream_is_online_elsewhere_and_gets_notifications_there() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = alice.create("direct", &["bob"]).await["id"].as_str().expect("id").to_owned();
    let mut alice_app = Ws::connect(&server, "alice").await;

    let mut stream = stream_of(&server, "/api/notifications/stream", &[bearer(&server, "bob")]).await;
    assert_eq!(alice_app.next("user:online").await, json!({ "user_id": "bob" }));
    alice.send(&id, "hi").await;
    assert_notification(&stream.event().await, 1, 1);

    drop(stream);
    assert_eq!(
        alice_app.next("user:offline").await["user_id"],
        "bob",
        "closing the stream ends the connection"
    );
}

#[tokio::test]
async fn the_token_may_come_in_the_query_and_the_resume_point_too() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = alice.create("group", &["bob"]).await["id"].as_str().expect("id").to_owned();
    let _bob_app = Ws::connect(&server, "bob").await;
    has_used_the_stream(&server, "bob").await;
    for _ in 0..3 {
        alice.send(&id, "x").await;
    }
    let token = server.token("bob");
    let mut stream =
        stream_of(&server, &format!("/api/notifications/stream?token={token}&last_event_id=1"), &[]).await;
    assert_notification(&stream.event().await, 2, 2);
    assert_notification(&stream.event().await, 3, 3);
}

#[tokio::test]
async fn a_bad_or_missing_token_is_refused_with_401_and_the_error_body() {
    let server = TestServer::start().await;
    for (path, headers) in [
        ("/api/notifications/stream", vec![]),
        ("/api/notifications/stream?token=not-a-jwt", vec![]),
        ("/api/notifications/stream", vec![("authorization", "Bearer not-a-jwt".to_owned())]),
    ] {
        let response = request(&server, path, &headers).await;
        assert_eq!(response.status(), 401, "{path} {headers:?}");
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let response = request(
        &server,
        "/api/notifications/stream",
        &[bearer(&server, "bob"), ("last-event-id", "abc".to_owned())],
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["error"]["code"], "invalid");
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments_at_the_configured_interval() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.sse_keep_alive = Duration::from_millis(200);
    })
    .await;
    let mut stream = stream_of(&server, "/api/notifications/stream", &[bearer(&server, "bob")]).await;
    let started = std::time::Instant::now();
    for _ in 0..2 {
        let frame = stream.frame().await;
        assert_eq!(frame.comments, vec!["keep-alive".to_owned()], "{frame:?}");
        assert_eq!((frame.event, frame.data), (None, String::new()));
    }
    // The default interval is 15 s: two keep-alives well before that came at the configured one
    // (with room for a busy machine).
    assert!(started.elapsed() < Duration::from_secs(10), "two keep-alives took {:?}", started.elapsed());
}

#[tokio::test]
async fn resuming_past_the_kept_window_says_what_is_gone_then_sends_what_is_kept() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.limits.notification_log_keep = 5;
    })
    .await;
    let alice = server.client("alice");
    let id = alice.create("group", &["bob"]).await["id"].as_str().expect("id").to_owned();
    let _bob_app = Ws::connect(&server, "bob").await;
    has_used_the_stream(&server, "bob").await;
    for _ in 0..10 {
        alice.send(&id, "x").await;
    }
    recorded(&server, "bob", 10).await;
    let mut stream = stream_of(
        &server,
        "/api/notifications/stream",
        &[bearer(&server, "bob"), ("last-event-id", "1".to_owned())],
    )
    .await;
    let gap = stream.event().await;
    assert_eq!(gap.event.as_deref(), Some("notification:gap"), "{gap:?}");
    assert_eq!(gap.id.as_deref(), Some("5"));
    assert_eq!(gap.json(), json!({ "from": 2, "to": 5 }));
    for n in 6..=10 {
        assert_notification(&stream.event().await, n, n);
    }
    stream.no_event(Duration::from_millis(300)).await;
}
