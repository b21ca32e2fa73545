//! Offline push through the durable outbox, end to end with the webhook provider: a real
//! chatd (in-process, or the binary as a child process for the restart case) and a local
//! HTTP server standing in for the platform's webhook receiver, which records every request
//! exactly as it arrived and answers with scripted statuses.

mod common;

use std::time::Duration;

use axum::http::Method;
use chatd::config::{Config, Database};
use common::webhook::{Received, Receiver, wait_until_no_devices};
use common::{ServerProcess, TestServer, cli_token, free_port};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "test-webhook-secret-0123456789";

/// A server with the webhook provider on and fast retries.
async fn server() -> TestServer {
    TestServer::start_with(|config: &mut Config| {
        config.limits.messages_per_second = 0;
        config.push.webhook_secret = Some(SECRET.into());
        config.push.worker.retry_base = Duration::from_millis(20);
        config.push.worker.retry_max = Duration::from_millis(100);
        config.push.worker.poll_interval = Duration::from_millis(50);
    })
    .await
}

/// `sha256=<hex>` of `body` under [`SECRET`], computed independently of chatd.
fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

/// Registers a webhook device for `client`'s user; returns its id.
async fn webhook_device(client: &common::Client, token: &str, endpoint: &str) -> String {
    let device = client
        .post("/api/devices", json!({"platform": "webhook", "token": token, "endpoint": endpoint}))
        .await
        .expect(201);
    device["id"].as_str().unwrap().to_owned()
}

fn id(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_user_with_a_webhook_device_gets_one_signed_post_per_message() {
    let receiver = Receiver::bind(&[]).await;
    let server = server().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let device_id = webhook_device(&bob, "bob-phone", &receiver.url("/hooks/bob")).await;
    let conversation = id(&alice.create("direct", &["bob"]).await);

    let long = "é".repeat(150);
    let message = alice.send(&conversation, &long).await;
    let requests = receiver.wait_for(1).await;
    let request = &requests[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/hooks/bob");
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(header(request, "x-chatd-signature"), expected_signature(&request.body), "signed raw body");
    let body = request.json();
    let timestamp = header(request, "x-chatd-timestamp").parse::<i64>().expect("unix seconds");
    let now = chrono::Utc::now().timestamp();
    assert!((now - 60..=now + 1).contains(&timestamp), "a current timestamp: {timestamp}");
    assert_eq!(
        body,
        json!({
            "type": "message",
            "title": "alice",
            "body": "é".repeat(100),
            "conversation_id": conversation,
            "message_id": message["id"],
            "seq": 1,
            "sender_id": "alice",
            "badge": 1,
            "device_id": device_id,
            "token": "bob-phone",
            "timestamp": timestamp,
        }),
        "the preview is cut to the configured 100 characters"
    );
    receiver.assert_no_more_than(1).await;

    let second = alice.send(&conversation, "short").await;
    let requests = receiver.wait_for(2).await;
    let body = requests[1].json();
    assert_eq!(body["message_id"], second["id"]);
    assert_eq!((body["seq"].as_i64(), body["badge"].as_i64()), (Some(2), Some(2)), "badge = total unread");
    assert_eq!(body["body"], "short");
    receiver.assert_no_more_than(2).await;
    assert!(server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "every job finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_or_file_without_text_is_previewed_as_photo_or_by_its_file_name() {
    let receiver = Receiver::bind(&[]).await;
    let server = server().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webhook_device(&bob, "bob-phone", &receiver.url("/hooks/bob")).await;
    let conversation = id(&alice.create("direct", &["bob"]).await);
    let png = common::media::encoded(20, 20, image::ImageFormat::Png);
    let photo = common::media::upload(&alice, &conversation, "cat.png", "image/png", png).await;
    common::media::send_uploads(&alice, &conversation, "image", &[&photo]).await.expect(201);
    let pdf = b"%PDF-1.4\n%%EOF\n".to_vec();
    let file = common::media::upload(&alice, &conversation, "계약서.pdf", "application/pdf", pdf).await;
    common::media::send_uploads(&alice, &conversation, "file", &[&file]).await.expect(201);
    let requests = receiver.wait_for(2).await;
    let bodies: Vec<Value> = requests.iter().map(|request| request.json()["body"].clone()).collect();
    assert_eq!(bodies, vec![json!("📷 Photo"), json!("계약서.pdf")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_failing_twice_with_500_gets_the_message_once_on_the_third_attempt() {
    let receiver = Receiver::bind(&[500, 500]).await;
    let server = server().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webhook_device(&bob, "bob-phone", &receiver.url("/hook")).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    let message = alice.send(&conversation, "hello").await;

    let requests = receiver.wait_for(3).await;
    for request in &requests {
        assert_eq!(request.json()["message_id"], message["id"], "the same notification each time");
        assert_eq!(header(request, "x-chatd-signature"), expected_signature(&request.body));
    }
    receiver.assert_no_more_than(3).await;
    assert!(server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "the job is finished");
    assert_eq!(bob.get("/api/devices").await.expect(200)["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answering_410_removes_the_device_and_gets_nothing_more() {
    let receiver = Receiver::bind(&[410]).await;
    let server = server().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webhook_device(&bob, "bob-phone", &receiver.url("/hook")).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    alice.send(&conversation, "hello").await;

    receiver.wait_for(1).await;
    wait_until_no_devices(&bob).await;
    alice.send(&conversation, "anyone there?").await;
    receiver.assert_no_more_than(1).await;
    assert!(server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "nothing left to send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_owed_while_the_receiver_was_down_is_delivered_after_chatd_restarts() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let serve_args = [
        "--webhook-secret",
        SECRET,
        "--push-retry-base-ms",
        "50",
        "--push-retry-max-ms",
        "200",
        "--push-poll-ms",
        "50",
        "--push-max-attempts",
        "1000",
        "--push-allow-private-endpoints",
    ];
    let server = ServerProcess::start(cwd.path(), &serve_args, cwd.path().join("first.log")).await;
    let (alice_token, bob_token) = (cli_token(cwd.path(), "alice", &[]), cli_token(cwd.path(), "bob", &[]));
    let (alice, bob) = (server.client(&alice_token), server.client(&bob_token));
    webhook_device(&bob, "bob-phone", &format!("http://127.0.0.1:{port}/hook")).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    let message = alice.send(&conversation, "while you were down").await;
    // Several attempts fail (nobody listens on the port) before chatd stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = server.terminate().await;
    assert!(status.success(), "chatd exits cleanly on SIGTERM, got {status}");

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the receiver's port");
    let receiver = Receiver::start(listener, &[]).await;
    let server = ServerProcess::start(cwd.path(), &serve_args, cwd.path().join("second.log")).await;
    let requests = receiver.wait_for(1).await;
    assert_eq!(requests[0].path, "/hook");
    assert_eq!(requests[0].json()["message_id"], message["id"]);
    assert_eq!(header(&requests[0], "x-chatd-signature"), expected_signature(&requests[0].body));
    receiver.assert_no_more_than(1).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_offline_messages_collapse_into_a_bounded_number_of_pushes_for_the_newest() {
    const MESSAGES: usize = 1000;
    const COLLAPSE: Duration = Duration::from_millis(300);
    let receiver = Receiver::bind(&[]).await;
    let server = TestServer::start_with(|config: &mut Config| {
        config.limits.messages_per_second = 0;
        config.limits.push_collapse = COLLAPSE;
        config.push.webhook_secret = Some(SECRET.into());
        config.push.worker.poll_interval = Duration::from_millis(50);
    })
    .await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webhook_device(&bob, "bob-phone", &receiver.url("/hook")).await;
    let conversation = id(&alice.create("direct", &["bob"]).await);

    let started = tokio::time::Instant::now();
    let mut last = Value::Null;
    for n in 1..=MESSAGES {
        last = alice.send(&conversation, &format!("message {n}")).await;
    }
    let sending = started.elapsed();
    // Every push but the newest is collapsed while a newer one waits: at most one push per
    // collapse window while messages kept coming, plus the newest.
    let bound = (sending.as_millis() / COLLAPSE.as_millis()) as usize + 2;
    let mut requests = Vec::new();
    let deadline = tokio::time::Instant::now() + common::webhook::PATIENCE;
    while tokio::time::Instant::now() < deadline {
        requests = receiver.requests();
        if requests.last().is_some_and(|r| r.json()["message_id"] == last["id"]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let newest = requests.last().expect("at least the newest message is pushed").json();
    assert_eq!(newest["message_id"], last["id"], "the newest message is pushed");
    assert_eq!(
        (newest["seq"].as_i64(), newest["badge"].as_i64()),
        (Some(1000), Some(1000)),
        "badge = total unread"
    );
    receiver.assert_no_more_than(requests.len()).await;
    eprintln!("{} pushes for {MESSAGES} messages sent in {sending:?}", requests.len());
    assert!(
        requests.len() <= bound && requests.len() < MESSAGES / 10,
        "{} pushes for {MESSAGES} messages sent in {sending:?} (bound {bound})",
        requests.len()
    );
    assert!(server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "every job finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_conversation_pushes_nothing_until_unmuted() {
    let receiver = Receiver::bind(&[]).await;
    let server = server().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webhook_device(&bob, "bob-phone", &receiver.url("/hook")).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    let mute = |enabled: bool| json!({ "enabled": enabled });

    bob.put(&format!("/api/conversations/{conversation}/notifications"), mute(false)).await.expect(204);
    alice.send(&conversation, "while muted").await;
    receiver.assert_no_more_than(0).await;

    bob.put(&format!("/api/conversations/{conversation}/notifications"), mute(true)).await.expect(204);
    let unmuted = alice.send(&conversation, "after unmuting").await;
    let requests = receiver.wait_for(1).await;
    assert_eq!(requests[0].json()["message_id"], unmuted["id"]);
    assert_eq!(requests[0].json()["badge"], 2, "the muted message still counts as unread");
    receiver.assert_no_more_than(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_turned_notifications_off_gets_no_push_until_turning_them_on() {
    let receiver = Receiver::bind(&[]).await;
    let server = server().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webhook_device(&bob, "bob-phone", &receiver.url("/hook")).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    let defaults = bob.get("/api/notifications/settings").await.expect(200);
    assert_eq!(defaults, json!({"enabled": true, "mentions_when_muted": true}));

    let off = bob.put("/api/notifications/settings", json!({"enabled": false})).await.expect(200);
    assert_eq!(off, json!({"enabled": false, "mentions_when_muted": true}));
    let mention = json!({"content": "@bob look", "metadata": {"mentions": ["bob"]}});
    alice.post(&format!("/api/conversations/{conversation}/messages"), mention).await.expect(201);
    alice.send(&conversation, "while off").await;
    receiver.assert_no_more_than(0).await;

    bob.put("/api/notifications/settings", json!({"enabled": true})).await.expect(200);
    let after = alice.send(&conversation, "back on").await;
    let requests = receiver.wait_for(1).await;
    assert_eq!(requests[0].json()["message_id"], after["id"]);
    receiver.assert_no_more_than(1).await;

    for bad in [json!({"enabled": "no"}), json!({"sound": true}), json!([])] {
        bob.put("/api/notifications/settings", bad).await.assert_error(400, "invalid");
    }
    server.anonymous().get("/api/notifications/settings").await.assert_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_is_pushed_in_a_muted_conversation_unless_the_user_opted_out() {
    let receiver = Receiver::bind(&[]).await;
    let server = server().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webhook_device(&bob, "bob-phone", &receiver.url("/hook")).await;
    let conversation = id(&alice.create("group", &["bob", "carol"]).await);
    let messages = format!("/api/conversations/{conversation}/messages");
    bob.put(&format!("/api/conversations/{conversation}/notifications"), json!({"enabled": false}))
        .await
        .expect(204);

    alice.send(&conversation, "not for bob").await;
    let mention = json!({"content": "@bob can you?", "metadata": {"mentions": ["carol", "bob"]}});
    let mentioned = alice.post(&messages, mention).await.expect(201);
    assert_eq!(mentioned["metadata"]["mentions"], json!(["carol", "bob"]), "stored as sent");
    let requests = receiver.wait_for(1).await;
    assert_eq!(requests[0].json()["message_id"], mentioned["id"], "only the mention got through the mute");
    receiver.assert_no_more_than(1).await;

    bob.put("/api/notifications/settings", json!({"mentions_when_muted": false})).await.expect(200);
    let mention = json!({"content": "@bob again", "metadata": {"mentions": ["bob"]}});
    alice.post(&messages, mention).await.expect(201);
    receiver.assert_no_more_than(1).await;

    for mentions in
        [json!("bob"), json!([1]), json!([""]), json!((0..51).map(|n| format!("u{n}")).collect::<Vec<_>>())]
    {
        let body = json!({"content": "x", "metadata": {"mentions": mentions}});
        alice.post(&messages, body).await.assert_error(400, "invalid");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_preview_conversation_pushes_no_message_text() {
    let receiver = Receiver::bind(&[]).await;
    let server = server().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webhook_device(&bob, "bob-phone", &receiver.url("/hook")).await;
    let created = alice
        .post(
            "/api/conversations",
            json!({"type": "group", "members": ["bob"], "name": "deal", "private_preview": true}),
        )
        .await
        .expect(201);
    assert_eq!(created["private_preview"], true);
    let conversation = id(&created);

    let secret = alice.send(&conversation, "my account number is 110-123-456789").await;
    let first = receiver.wait_for(1).await.remove(0).json();
    assert_eq!(first["message_id"], secret["id"]);
    assert_eq!(first["body"], Value::Null, "no text leaves chatd: {first}");
    assert_eq!(first["title"], "deal");
    assert!(!first.to_string().contains("110-123"), "{first}");

    let patched = alice
        .patch(&format!("/api/conversations/{conversation}"), json!({"private_preview": false}))
        .await
        .expect(200);
    assert_eq!(patched["private_preview"], false);
    alice.send(&conversation, "see you at 6").await;
    let requests = receiver.wait_for(2).await;
    assert_eq!(requests[1].json()["body"], "see you at 6");
    bob.patch(&format!("/api/conversations/{conversation}"), json!({"private_preview": true}))
        .await
        .assert_error(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_starts_no_more_jobs_per_second_than_its_rate_and_still_sends_them_all() {
    const MESSAGES: usize = 30;
    const RATE: u32 = 10;
    let receiver = Receiver::bind(&[]).await;
    let server = TestServer::start_with(|config: &mut Config| {
        config.limits.messages_per_second = 0;
        config.push.webhook_secret = Some(SECRET.into());
        config.push.worker.max_rate = RATE;
        config.push.worker.poll_interval = Duration::from_millis(20);
    })
    .await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webhook_device(&bob, "bob-phone", &receiver.url("/hook")).await;
    let conversation = id(&alice.create("direct", &["bob"]).await);

    let started = tokio::time::Instant::now();
    for n in 1..=MESSAGES {
        alice.send(&conversation, &format!("message {n}")).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A bucket of RATE tokens that refills at RATE per second: never more than RATE (the
    // burst) plus RATE per second since the first job could start.
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = RATE as usize + (RATE as f64 * elapsed).ceil() as usize;
    let sent = receiver.requests().len();
    assert!(sent <= allowed, "{sent} pushes within {elapsed:.2} s; the pace allows at most {allowed}");

    let requests = receiver.wait_for(MESSAGES).await;
    let mut seqs: Vec<i64> = requests.iter().map(|r| r.json()["seq"].as_i64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=MESSAGES as i64).collect::<Vec<_>>(), "every message pushed once");
    receiver.assert_no_more_than(MESSAGES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eleventh_device_replaces_the_least_recently_registered_or_refreshed_one() {
    let server = server().await;
    let bob = server.client("bob");
    let register = |token: String| {
        let bob = bob.clone();
        async move { bob.post("/api/devices", json!({"platform": "fcm", "token": token})).await.expect(201) }
    };
    for n in 1..=10 {
        register(format!("phone-{n}")).await;
    }
    // Registering phone-1 again refreshes it: phone-2 is now the least recently refreshed.
    register("phone-1".to_owned()).await;
    register("phone-11".to_owned()).await;
    let devices = bob.get("/api/devices").await.expect(200);
    let mut tokens: Vec<String> = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["token"].as_str().expect("token").to_owned())
        .collect();
    tokens.sort();
    let mut expected: Vec<String> = (1..=11).filter(|n| *n != 2).map(|n| format!("phone-{n}")).collect();
    expected.sort();
    assert_eq!(tokens, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_devices_of_one_push_are_sent_to_concurrently() {
    let receiver = Receiver::bind(&[]).await;
    receiver.answer_together(3);
    let server = server().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    for n in 1..=3 {
        webhook_device(&bob, &format!("bob-{n}"), &receiver.url(&format!("/hooks/{n}"))).await;
    }
    let conversation = id(&alice.create("direct", &["bob"]).await);
    alice.send(&conversation, "to every device at once").await;
    receiver.wait_for(3).await;
    assert_eq!(receiver.answered_alone(), 0, "the three requests were in flight together");
    receiver.assert_no_more_than(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_ran_out_sends_to_no_further_device_once_another_node_took_the_job() {
    let receiver = Receiver::bind(&[]).await;
    let release = receiver.hold("/hooks/1");
    // Node A's lease runs out while its first send hangs, as when the process is paused; it
    // sends to one device at a time.
    let a = TestServer::start_with(|config: &mut Config| {
        config.limits.messages_per_second = 0;
        config.push.webhook_secret = Some(SECRET.into());
        config.push.worker.poll_interval = Duration::from_millis(50);
        config.push.worker.lease = Duration::from_millis(300);
        config.push.worker.device_concurrency = 1;
    })
    .await;
    let (alice, bob) = (a.client("alice"), a.client("bob"));
    webhook_device(&bob, "bob-1", &receiver.url("/hooks/1")).await;
    webhook_device(&bob, "bob-2", &receiver.url("/hooks/2")).await;
    let conversation = id(&alice.create("direct", &["bob"]).await);
    alice.send(&conversation, "once per device").await;
    assert_eq!(receiver.wait_for(1).await[0].path, "/hooks/1", "node A's first send, held");

    // Node B, on the same database, claims the job once A's lease has run out.
    let database = a.data_dir.path().join("chatd.db");
    let b = TestServer::start_with(|config: &mut Config| {
        config.database = Database::Sqlite(database);
        config.push.webhook_secret = Some(SECRET.into());
        config.push.worker.poll_interval = Duration::from_millis(50);
    })
    .await;
    let mut paths: Vec<String> = receiver.wait_for(3).await.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/hooks/1", "/hooks/1", "/hooks/2"], "node B sent to both devices");
    // A's first send returns; its claim no longer holds the job, so it sends nothing more.
    release.send(()).expect("the held request is waiting");
    receiver.assert_no_more_than(3).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_requests_ignore_proxy_environment_variables() {
    let receiver = Receiver::bind(&[]).await;
    let proxy = Receiver::bind(&[]).await;
    let proxy_url = format!("http://{}", proxy.addr);
    let cwd = tempfile::tempdir().unwrap();
    let args = ["--webhook-secret", SECRET, "--push-poll-ms", "50", "--push-allow-private-endpoints"];
    let env: Vec<(&str, &str)> =
        ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            .into_iter()
            .map(|name| (name, proxy_url.as_str()))
            .collect();
    let server = ServerProcess::start_with_env(cwd.path(), &args, &env, cwd.path().join("chatd.log")).await;
    let (alice_token, bob_token) = (cli_token(cwd.path(), "alice", &[]), cli_token(cwd.path(), "bob", &[]));
    let (alice, bob) = (server.client(&alice_token), server.client(&bob_token));
    webhook_device(&bob, "bob-phone", &receiver.url("/hook")).await;
    let conversation = id(&alice.create("direct", &["bob"]).await);
    alice.send(&conversation, "straight to the endpoint").await;
    assert_eq!(receiver.wait_for(1).await[0].path, "/hook");
    proxy.assert_no_more_than(0).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_class_mentions_and_mentions_all_are_pushed_through_a_mute_as_mentions() {
    let receiver = Receiver::bind(&[]).await;
    common::webhook::assert_mentions_pushed_through_a_mute(&server().await, &receiver).await;
}
