//! `GET /metrics` through the real server: scripted sessions over REST, plain WebSocket,
//! Socket.IO and SSE, each followed by a scrape whose values must have moved as the session
//! says. The metrics recorder is process-wide, so the tests of this file take turns
//! ([`SERIAL`]) and compare a scrape before with one after, never absolute values.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chatd::config::RedisConfig;
use common::node::scenario;
use common::redis::OwnRedis;
use common::ws::Ws;
use common::{Client, TestServer};
use serde_json::json;
use tokio::sync::Mutex;

/// One test at a time: they share the process's metrics.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// How long a metric may take to settle (routing and disconnect bookkeeping are async).
const SETTLE: Duration = Duration::from_secs(30);

/// One scrape: each series (name with its labels, as rendered) and its value.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// The series' value; 0 for a series not rendered yet.
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

/// Scrapes the server, asserting the Prometheus text content type.
async fn scrape(server: &TestServer) -> Scrape {
    let response = server.http.get(format!("{}/metrics", server.base)).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.expect("body");
    let series = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect();
    Scrape(series)
}

/// Scrapes until `series` is `before`'s value plus `delta`, and returns that scrape; fails
/// with the last value seen after [`SETTLE`].
async fn until_delta(server: &TestServer, before: &Scrape, series: &str, delta: f64) -> Scrape {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let now = scrape(server).await;
        let moved = now.get(series) - before.get(series);
        if moved == delta {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "{series} moved by {moved}, expected {delta}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that each series moved by exactly its delta between two scrapes.
fn assert_deltas(before: &Scrape, after: &Scrape, expected: &[(&str, f64)]) {
    for (series, delta) in expected {
        assert_eq!(after.get(series) - before.get(series), *delta, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_and_websocket_session_moves_each_metric_by_what_happened() {
    let _turn = SERIAL.lock().await;
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 1;
        config.limits.message_burst = 3;
    })
    .await;
    let before = scrape(&server).await;
    let (alice, carol, dave) = (server.client("alice"), server.client("carol"), server.client("dave"));
    let conversation = alice.create("group", &["bob", "carol"]).await;
    let id = conversation["id"].as_str().expect("id").to_owned();
    // Carol stays offline with a device: each message gives her a push job, which stays in
    // the outbox (no push provider is configured).
    carol
        .post(
            "/api/devices",
            json!({ "platform": "webhook", "token": "t1", "endpoint": "http://127.0.0.1:9/" }),
        )
        .await
        .expect(201);

    let mut alice_ws = Ws::connect(&server, "alice").await;
    let mut bob_ws = Ws::connect(&server, "bob").await;
    let connected = scrape(&server).await;
    assert_deltas(
        &before,
        &connected,
        &[(r#"chatd_connections{transport="ws"}"#, 2.0), (r#"chatd_connects_total{transport="ws"}"#, 2.0)],
    );

    alice_ws.ok("message:send", json!({ "conversation_id": id, "content": "hello" })).await;
    bob_ws.next("message:new").await;
    // REST sends until the limiter refuses one (burst 3, one of which the WebSocket send took).
    let mut rest_sent = 0;
    loop {
        let reply =
            alice.post(&format!("/api/conversations/{id}/messages"), json!({ "content": "more" })).await;
        if reply.status == 429 {
            reply.assert_error(429, "rate_limited");
            break;
        }
        reply.expect(201);
        rest_sent += 1;
        assert!(rest_sent < 10, "the rate limit never applied");
    }
    for _ in 0..rest_sent {
        bob_ws.next("message:new").await;
        alice_ws.next("message:new").await;
    }
    let committed = 1.0 + f64::from(rest_sent);
    dave.get(&format!("/api/conversations/{id}")).await.assert_error(403, "not_a_member");
    let mut dave_ws = Ws::connect(&server, "dave").await;
    let ack = dave_ws.call("conversation:join", json!({ "conversation_id": id })).await;
    assert_eq!(ack["error"]["code"], "not_a_member");
    let ack = bob_ws.call("no:such:event", json!({})).await;
    assert_eq!(ack["error"]["code"], "invalid");

    let after = until_delta(&server, &before, "chatd_push_outbox_depth", committed).await;
    assert_deltas(
        &before,
        &after,
        &[
            (r#"chatd_events_total{event="message:send"}"#, 1.0),
            (r#"chatd_events_total{event="conversation:join"}"#, 1.0),
            (r#"chatd_events_total{event="unknown"}"#, 1.0),
            ("chatd_messages_sent_total", committed),
            ("chatd_send_commit_seconds_count", committed),
            // The WebSocket send reached Bob; each REST send reached Alice and Bob.
            (r#"chatd_deliveries_total{event="message:new"}"#, 1.0 + 2.0 * f64::from(rest_sent)),
            ("chatd_commit_deliver_seconds_count", committed),
            (r#"chatd_rejected_total{code="not_a_member"}"#, 2.0),
            (r#"chatd_rejected_total{code="rate_limited"}"#, 1.0),
            (r#"chatd_rejected_total{code="invalid"}"#, 1.0),
        ],
    );
    assert_eq!(after.get(r#"chatd_backend_up{backend="store"}"#), 1.0);

    // One leaves with a closing handshake, the others just drop the connection.
    alice_ws.stream.close(None).await.expect("close");
    drop((alice_ws, bob_ws, dave_ws));
    let closed = until_delta(
        &server,
        &before,
        r#"chatd_disconnects_total{transport="ws",reason="client_closed"}"#,
        3.0,
    )
    .await;
    assert_deltas(&before, &closed, &[(r#"chatd_connections{transport="ws"}"#, 0.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_connections_events_and_deliveries_are_counted() {
    let _turn = SERIAL.lock().await;
    let server = TestServer::start().await;
    let before = scrape(&server).await;
    // Three sockets; two sends (one a client_id repeat) and one REST send, then all close.
    scenario(&server, "send_fanout").await;
    let after = until_delta(
        &server,
        &before,
        r#"chatd_disconnects_total{transport="socketio",reason="client_closed"}"#,
        3.0,
    )
    .await;
    assert_deltas(
        &before,
        &after,
        &[
            (r#"chatd_connects_total{transport="socketio"}"#, 3.0),
            (r#"chatd_connections{transport="socketio"}"#, 0.0),
            (r#"chatd_events_total{event="message:send"}"#, 2.0),
            ("chatd_messages_sent_total", 2.0),
            // The socket send reached the other tab and Bob; the REST send all three.
            (r#"chatd_deliveries_total{event="message:new"}"#, 5.0),
            ("chatd_commit_deliver_seconds_count", 2.0),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_stream_counts_as_an_sse_connection_and_its_notifications_as_deliveries() {
    let _turn = SERIAL.lock().await;
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = alice.create("direct", &["bob"]).await["id"].as_str().expect("id").to_owned();
    let before = scrape(&server).await;
    let url = format!("{}/api/notifications/stream?token={}", server.base, server.token("bob"));
    let mut stream = server.http.get(url).send().await.expect("stream");
    assert_eq!(stream.status(), 200);
    let opened = until_delta(&server, &before, r#"chatd_connections{transport="sse"}"#, 1.0).await;
    assert_deltas(&before, &opened, &[(r#"chatd_connects_total{transport="sse"}"#, 1.0)]);

    alice.send(&id, "hi").await;
    let mut received = String::new();
    while !received.contains("event: notification") {
        let chunk = tokio::time::timeout(SETTLE, stream.chunk()).await.expect("in time").expect("readable");
        received.push_str(&String::from_utf8_lossy(&chunk.expect("the stream is open")));
    }
    drop(stream);
    let closed = until_delta(
        &server,
        &before,
        r#"chatd_disconnects_total{transport="sse",reason="client_closed"}"#,
        1.0,
    )
    .await;
    assert_deltas(
        &before,
        &closed,
        &[
            (r#"chatd_connections{transport="sse"}"#, 0.0),
            (r#"chatd_deliveries_total{event="notification"}"#, 1.0),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_and_an_unknown_route_count_as_rejected() {
    let _turn = SERIAL.lock().await;
    let server = TestServer::start().await;
    let before = scrape(&server).await;
    let anonymous: Client = server.anonymous();
    anonymous.get("/api/unread").await.assert_error(401, "unauthorized");
    anonymous.get("/no/such/route").await.assert_error(404, "not_found");
    let refused =
        server.http.get(format!("{}/ws?token=not-a-jwt", server.base)).send().await.expect("upgrade");
    assert_eq!(refused.status(), 401);
    let after = scrape(&server).await;
    assert_deltas(
        &before,
        &after,
        &[
            (r#"chatd_rejected_total{code="unauthorized"}"#, 2.0),
            (r#"chatd_rejected_total{code="not_found"}"#, 1.0),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_is_reported_up_while_it_answers_and_down_once_it_is_gone() {
    let _turn = SERIAL.lock().await;
    let mut redis = OwnRedis::start().await;
    let server = server_on(&redis).await;
    // The first probe runs as the server starts.
    let deadline = tokio::time::Instant::now() + SETTLE;
    let up = loop {
        let up = scrape(&server).await;
        if up.get(r#"chatd_backend_up{backend="redis"}"#) == 1.0 {
            break up;
        }
        assert!(tokio::time::Instant::now() < deadline, "redis was never reported up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(up.get(r#"chatd_backend_up{backend="store"}"#), 1.0);
    redis.kill();
    // The next probe (at most 5 s away) sees it gone.
    let deadline = tokio::time::Instant::now() + SETTLE;
    while scrape(&server).await.get(r#"chatd_backend_up{backend="redis"}"#) != 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "redis was not reported down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The subscriber notices the lost connection on its own.
    let deadline = tokio::time::Instant::now() + SETTLE;
    while scrape(&server).await.get("chatd_bus_errors_total") <= up.get("chatd_bus_errors_total") {
        assert!(tokio::time::Instant::now() < deadline, "the lost subscriber was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server whose bus is `redis`.
async fn server_on(redis: &OwnRedis) -> TestServer {
    let url = redis.url();
    TestServer::start_with(|config| {
        config.redis = Some(RedisConfig {
            url,
            prefix: common::redis::unique_prefix(),
            presence_ttl: Duration::from_secs(30),
        });
    })
    .await
}

/// How many `PING`s `redis` has run so far.
async fn pings(redis: &OwnRedis) -> u64 {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("redis connection");
    let stats: String =
        redis::cmd("INFO").arg("commandstats").query_async(&mut connection).await.expect("INFO");
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_ping:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_do_not_probe_the_backends_more_than_once_per_probe_interval() {
    let _turn = SERIAL.lock().await;
    let redis = OwnRedis::start().await;
    let server = server_on(&redis).await;
    // The first probe runs as the server starts.
    let deadline = tokio::time::Instant::now() + SETTLE;
    while scrape(&server).await.get(r#"chatd_backend_up{backend="redis"}"#) != 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "redis was never reported up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = pings(&redis).await;
    for _ in 0..20 {
        let scraped = scrape(&server).await;
        assert_eq!(scraped.get(r#"chatd_backend_up{backend="redis"}"#), 1.0);
    }
    let probes = pings(&redis).await - before;
    // The periodic probe (every 5 s) may fall within the scrapes, once or, on a slow machine,
    // a few times; a probe per scrape would be 20.
    assert!(probes < 5, "20 scrapes pinged Redis {probes} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_metrics_bind_metrics_are_served_on_their_own_listener_only() {
    let _turn = SERIAL.lock().await;
    let metrics_addr: std::net::SocketAddr =
        format!("127.0.0.1:{}", common::free_port()).parse().expect("address");
    let server = TestServer::start_with(|config| config.metrics_bind = Some(metrics_addr)).await;
    let main = server.http.get(format!("{}/metrics", server.base)).send().await.expect("main port");
    assert_eq!(main.status(), 404, "not on the main listener");
    // The metrics listener is bound as the server starts; wait until it answers.
    let deadline = tokio::time::Instant::now() + SETTLE;
    let response = loop {
        match server.http.get(format!("http://{metrics_addr}/metrics")).send().await {
            Ok(response) => break response,
            Err(err) => {
                assert!(tokio::time::Instant::now() < deadline, "the metrics listener never answered: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert!(text.contains("chatd_backend_up"), "Prometheus text with chatd's metrics: {text}");
}
