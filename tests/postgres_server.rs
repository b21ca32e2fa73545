//! chatd on PostgreSQL, end to end: the server (in-process, and the real `chatd` binary with
//! `--database-url postgres://…?schema=…`) on a fresh schema per test, driven over REST and
//! the plain WebSocket transport. What it checks beyond the store suite: the wiring from
//! configuration to the backend, restarts, two processes sharing one database, and the
//! startup error when PostgreSQL is unreachable.

mod common;

use std::collections::BTreeSet;

use chatd::config::Config;
use common::pg::Schema;
use common::ws::Ws;
use common::{Client, ServerProcess, TestServer, chatd_command, cli_token, free_port, run_bounded};
use futures::future::join_all;
use serde_json::{Value, json};

fn seqs(history: &Value) -> Vec<i64> {
    history["messages"].as_array().expect("messages").iter().filter_map(|m| m["seq"].as_i64()).collect()
}

async fn history(client: &Client, conversation_id: &str) -> Value {
    client.get(&format!("/api/conversations/{conversation_id}/messages?limit=100")).await.expect(200)
}

/// A server configuration on `schema`, rate limiting off.
fn config_on(schema: &Schema, data_dir: &std::path::Path) -> Config {
    let mut config = Config::with_data_dir(data_dir).expect("config");
    config.database = schema.database();
    config.limits.messages_per_second = 0;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_websocket_work_on_postgresql_and_everything_survives_a_restart() {
    let schema = Schema::fresh();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = config_on(&schema, data_dir.path());
    let server = TestServer::start_in(data_dir, config.clone()).await;
    server.anonymous().get("/readyz").await.expect(200);

    let alice = server.client("alice");
    let conversation = alice.create("group", &["bob"]).await;
    let id = conversation["id"].as_str().expect("id").to_owned();
    let mut bob = Ws::connect(&server, "bob").await;
    assert_eq!(bob.ready["conversations"], json!([{ "id": id, "last_seq": 0, "last_revision": 0 }]));

    // A REST send is committed, acked and pushed to bob's socket.
    let path = format!("/api/conversations/{id}/messages");
    let sent = alice.post(&path, json!({ "content": "hello", "client_id": "c-1" })).await.expect(201);
    assert_eq!(sent["seq"], 1);
    assert_eq!(bob.next("message:new").await, sent);
    // The retry is answered with the original.
    let retry = alice.post(&path, json!({ "content": "hello", "client_id": "c-1" })).await.expect(200);
    assert_eq!(retry, sent);

    // A socket send takes the next seq and shows in the REST history.
    let ack = bob.ok("message:send", json!({ "conversation_id": id, "content": "hi alice" })).await;
    assert_eq!(ack["message"]["seq"], 2);
    let before_restart = history(&alice, &id).await;
    assert_eq!(seqs(&before_restart), vec![1, 2]);

    // Unread counts and read markers.
    assert_eq!(
        server.client("bob").get("/api/unread").await.expect(200),
        json!({ "total": 1, "conversations": { &id: 1 }, "mentions": {} })
    );
    assert_eq!(alice.get("/api/unread").await.expect(200)["total"], 1);
    assert_eq!(bob.ok("message:read", json!({ "conversation_id": id, "seq": 2 })).await["last_read_seq"], 2);
    assert_eq!(server.client("bob").get("/api/unread").await.expect(200)["total"], 0);

    // Restart: the same database, everything is still there and seqs go on.
    drop(bob);
    let data_dir = server.stop().await;
    let server = TestServer::start_in(data_dir, config).await;
    let alice = server.client("alice");
    assert_eq!(history(&alice, &id).await, before_restart);
    let conversation = server.client("bob").get(&format!("/api/conversations/{id}")).await.expect(200);
    assert_eq!(conversation["unread_count"], 0);
    let bob_entry =
        conversation["members"].as_array().expect("members").iter().find(|m| m["user_id"] == "bob");
    assert_eq!(bob_entry.expect("bob")["last_read_seq"], 2);
    assert_eq!(alice.send(&id, "after the restart").await["seq"], 3);
    assert_eq!(server.client("bob").get("/api/unread").await.expect(200)["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_chatd_processes_on_one_schema_share_conversations_and_one_gap_free_sequence() {
    let schema = Schema::fresh();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let args = [
        "--data-dir",
        data,
        "--rate-limit",
        "0",
        "--database-url",
        schema.url.as_str(),
        "--media-dir-shared",
    ];
    let first = ServerProcess::start(dir.path(), &args, dir.path().join("first.log")).await;
    let second = ServerProcess::start(dir.path(), &args, dir.path().join("second.log")).await;
    let tokens: Vec<String> =
        ["alice", "bob"].iter().map(|user| cli_token(dir.path(), user, &["--data-dir", data])).collect();

    let alice_first = first.client(&tokens[0]);
    let conversation = alice_first.create("group", &["bob"]).await;
    let id = conversation["id"].as_str().expect("id").to_owned();
    let bob_second = second.client(&tokens[1]);
    assert_eq!(bob_second.get(&format!("/api/conversations/{id}")).await.expect(200)["id"], id.as_str());

    // Sends through both processes at once: one sequence, no gap, no repeat.
    let clients =
        [alice_first.clone(), second.client(&tokens[0]), first.client(&tokens[1]), bob_second.clone()];
    let sends = (0..120).map(|n| {
        let client = clients[n % clients.len()].clone();
        let path = format!("/api/conversations/{id}/messages");
        tokio::spawn(
            async move { client.post(&path, json!({ "content": format!("m{n}") })).await.expect(201) },
        )
    });
    let acked: BTreeSet<i64> =
        join_all(sends).await.into_iter().map(|r| r.expect("send")["seq"].as_i64().expect("seq")).collect();
    assert_eq!(acked, (1..=120).collect::<BTreeSet<i64>>());

    let page = |client: Client, after: i64| {
        let id = id.clone();
        async move {
            client
                .get(&format!("/api/conversations/{id}/messages?after_seq={after}&limit=100"))
                .await
                .expect(200)
        }
    };
    let from_first = [page(alice_first.clone(), 0).await, page(alice_first.clone(), 100).await];
    let from_second = [page(bob_second.clone(), 0).await, page(bob_second.clone(), 100).await];
    assert_eq!(from_first, from_second, "both processes read the same history");
    let all: Vec<i64> = from_first.iter().flat_map(seqs).collect();
    assert_eq!(all, (1..=120).collect::<Vec<i64>>());

    // A SIGTERM restart of one process loses nothing.
    assert!(first.terminate().await.success());
    let first = ServerProcess::start(dir.path(), &args, dir.path().join("third.log")).await;
    let again: Vec<i64> =
        [page(first.client(&tokens[0]), 0).await, page(first.client(&tokens[0]), 100).await]
            .iter()
            .flat_map(seqs)
            .collect();
    assert_eq!(again, all);
    let unread = first.client(&tokens[1]).get("/api/unread").await.expect(200);
    assert_eq!(unread["conversations"][&id], 60, "bob's unread: alice's 60 messages");
}

#[test]
fn serve_refuses_media_on_an_unshared_local_disk_with_postgresql() {
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = Schema::fresh();
    let output = run_bounded(
        chatd_command()
            .args(["serve", "--bind", "127.0.0.1:0", "--database-url", &schema.url])
            .arg("--data-dir")
            .arg(dir.path())
            .current_dir(dir.path()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "serve must refuse to start");
    assert!(
        stderr.contains("--media-dir-shared") && stderr.contains("--media-s3-bucket"),
        "stderr: {stderr}"
    );
}

#[test]
fn serve_exits_with_a_clear_error_when_postgresql_is_unreachable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("postgres://root@127.0.0.1:{}/test", free_port());
    let output = run_bounded(
        chatd_command()
            .args(["serve", "--bind", "127.0.0.1:0", "--database-url", &url, "--media-dir-shared"])
            .arg("--data-dir")
            .arg(dir.path())
            .current_dir(dir.path()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_postgres_url_with_a_password_is_never_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("postgresql://root:hunter2-secret@127.0.0.1:{}/test?bogus=1", free_port());
    let output = run_bounded(
        chatd_command()
            .args(["migrate", "--database-url", &url])
            .arg("--data-dir")
            .arg(dir.path())
            .current_dir(dir.path()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("invalid PostgreSQL URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_and_members_leaving_at_the_same_moment_never_leave_the_group_without_an_owner() {
    let schema = Schema::fresh();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = config_on(&schema, data_dir.path());
    let server = TestServer::start_in(data_dir, config).await;
    common::assert_concurrent_leaves_keep_an_owner(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_korean_stems_and_english_prefixes_on_postgresql() {
    let schema = Schema::fresh();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = config_on(&schema, data_dir.path());
    let server = TestServer::start_in(data_dir, config).await;
    common::search::assert_search_end_to_end(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_threads_pins_mentions_and_changes_work_on_postgresql() {
    let schema = Schema::fresh();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = config_on(&schema, data_dir.path());
    let server = TestServer::start_in(data_dir, config).await;
    common::annotations::assert_reactions_end_to_end(&server).await;
    common::annotations::assert_threads_end_to_end(&server).await;
    common::annotations::assert_pins_end_to_end(&server).await;
    common::annotations::assert_mentions_end_to_end(&server).await;
    common::annotations::assert_changes_end_to_end(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_states_work_on_postgresql() {
    let schema = Schema::fresh();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = config_on(&schema, data_dir.path());
    config.admin_key = Some("states-admin-key-0123456789".into());
    let server = TestServer::start_in(data_dir, config).await;
    let admin = server.anonymous().with_token("states-admin-key-0123456789");
    common::states::assert_conversation_states(&server, &admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_member_is_pushed_mentions_on_postgresql() {
    let receiver = common::webhook::Receiver::bind(&[]).await;
    let schema = Schema::fresh();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = config_on(&schema, data_dir.path());
    config.push.webhook_secret = Some("test-webhook-secret-0123456789".into());
    config.push.worker.poll_interval = std::time::Duration::from_millis(50);
    config.limits.push_endpoints.allow_private = true;
    let server = TestServer::start_in(data_dir, config).await;
    common::webhook::assert_mentions_pushed_through_a_mute(&server, &receiver).await;
}
