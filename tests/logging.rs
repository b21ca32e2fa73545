//! The log of a real `chatd serve --log-json` process at debug level: every line is JSON,
//! every line logged for a realtime connection carries the connection's id and user, and
//! no message content or token ever appears, whatever path it came in by.

mod common;

use common::ServerProcess;
use common::ws::Ws;
use serde_json::{Value, json};

/// Message content that must never reach the log.
const SENTINEL: &str = "sentinel-content-5be1d0c3";

/// The `connection` span a log line was logged in, if any.
fn connection_span(line: &Value) -> Option<&Value> {
    line["spans"].as_array()?.iter().find(|span| span["name"] == "connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_connection_ids_and_never_contents_or_tokens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("chatd.log");
    let server =
        ServerProcess::start_with_env(dir.path(), &["--log-json"], &[("CHATD_LOG", "debug")], log.clone())
            .await;
    let alice = common::cli_token(dir.path(), "alice", &[]);
    let bob = common::cli_token(dir.path(), "bob", &[]);
    let http = reqwest::Client::new();
    let conversation: Value = http
        .post(format!("{}/api/conversations", server.base))
        .bearer_auth(&alice)
        .json(&json!({ "type": "group", "members": ["bob"] }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("conversation");
    let id = conversation["id"].as_str().expect("id").to_owned();

    // Bob reads notifications on a stream authenticated by `?token=`; Alice sends over /ws,
    // also authenticated by `?token=`, so Bob's notification carries a preview of it.
    let mut stream = http
        .get(format!("{}/api/notifications/stream?token={bob}", server.base))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let mut ws = Ws::connect_to(server.addr(), &alice).await;
    ws.ok("message:send", json!({ "conversation_id": id, "content": SENTINEL })).await;
    let mut received = String::new();
    while !received.contains(SENTINEL) {
        let chunk = stream.chunk().await.expect("readable").expect("the stream is open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ack = ws.call("message:edit", json!({ "message_id": "no-such-message", "content": SENTINEL })).await;
    assert_eq!(ack["error"]["code"], "not_found");
    let bad_token = format!("{alice}x");
    let refused = http.get(format!("{}/ws?token={bad_token}", server.base)).send().await.expect("refused");
    assert_eq!(refused.status(), 401);
    ws.stream.close(None).await.expect("close");
    drop(stream);
    server.terminate().await;
    let text = std::fs::read_to_string(&log).expect("log");

    let lines: Vec<Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
        .collect();
    for secret in [SENTINEL, alice.as_str(), bob.as_str(), bad_token.as_str()] {
        assert!(!text.contains(secret), "the log holds {secret:?}:\n{text}");
    }
    // A token's signature alone must not leak either.
    for token in [&alice, &bob] {
        let signature = token.rsplit('.').next().expect("signature");
        assert!(!text.contains(signature), "the log holds a token signature");
    }
    let in_connections: Vec<&Value> = lines.iter().filter_map(connection_span).collect();
    for span in &in_connections {
        assert!(span["id"].as_str().is_some_and(|id| !id.is_empty()), "connection span without id: {span}");
        assert!(
            span["user"].as_str().is_some_and(|user| !user.is_empty()),
            "connection span without user: {span}"
        );
    }
    let events: Vec<&Value> = lines.iter().filter(|line| line["fields"]["message"] == "event").collect();
    assert!(events.len() >= 2, "the events were logged: {text}");
    for event in events {
        let span =
            connection_span(event).unwrap_or_else(|| panic!("event logged outside its connection: {event}"));
        assert_eq!(span["transport"], "ws");
        assert!(span["id"].as_str().is_some_and(|id| id.starts_with("ws:")), "{span}");
        assert_eq!(span["user"], "alice");
    }
    assert!(
        in_connections.iter().any(|span| span["transport"] == "sse" && span["user"] == "bob"),
        "the stream's lines carry its connection: {text}"
    );
    let requests: Vec<&Value> =
        lines.iter().filter(|line| line["span"]["name"] == "request").map(|line| &line["span"]).collect();
    assert!(!requests.is_empty(), "requests are logged: {text}");
    for request in requests {
        assert!(request["id"].as_str().is_some_and(|id| !id.is_empty() && id != "-"), "{request}");
        assert!(!request["path"].as_str().unwrap_or_default().contains('?'), "{request}");
    }
}
