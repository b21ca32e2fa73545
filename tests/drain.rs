//! Graceful drain of the real `chatd` binary: SIGTERM while plain-WebSocket clients have
//! hundreds of sends in flight. Every send acked before the exit is in the history after a
//! restart, with the seq its ack gave; clients are told to reconnect with close 1012; the
//! process exits by itself, successfully, within the shutdown bound.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::ws::Ws;
use common::{Client, ServerProcess, cli_token as mint};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CONNECTIONS: usize = 10;
const SENDS_PER_CONNECTION: usize = 50;

/// What one client saw: the acked messages (id → seq) and the server's close code.
struct Outcome {
    acked: BTreeMap<String, i64>,
    close_code: Option<u16>,
}

/// Sends every message at once on one connection, then reads acks until the server closes.
async fn pipeline(mut ws: Ws, conversation_id: String, client: usize, acks: Arc<AtomicUsize>) -> Outcome {
    for n in 0..SENDS_PER_CONNECTION {
        let data = json!({ "conversation_id": conversation_id, "content": format!("{client}-{n}") });
        let frame = json!({ "id": n, "event": "message:send", "data": data });
        if ws.stream.send(Message::text(frame.to_string())).await.is_err() {
            break;
        }
    }
    let mut outcome = Outcome { acked: BTreeMap::new(), close_code: None };
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(30), ws.stream.next()).await {
        match message {
            Ok(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON frame");
                if frame.get("id").is_some() && frame["ack"]["ok"] == true {
                    let message = &frame["ack"]["message"];
                    let id = message["id"].as_str().expect("message id").to_owned();
                    outcome.acked.insert(id, message["seq"].as_i64().expect("seq"));
                    acks.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(Message::Close(close)) => {
                outcome.close_code = close.map(|c| u16::from(c.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    outcome
}

/// Every message of a conversation (id → seq), walked forward 100 at a time.
async fn history(client: &Client, conversation_id: &str) -> BTreeMap<String, i64> {
    let mut all = BTreeMap::new();
    let mut after = 0;
    loop {
        let path = format!("/api/conversations/{conversation_id}/messages?after_seq={after}&limit=100");
        let body = client.get(&path).await.expect(200);
        for message in body["messages"].as_array().expect("messages") {
            after = message["seq"].as_i64().expect("seq");
            all.insert(message["id"].as_str().expect("id").to_owned(), after);
        }
        if body["has_more"] != true {
            return all;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_500_concurrent_sends_loses_no_acked_message_and_tells_clients_1012() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().expect("utf-8 path");
    let serve_args = ["--data-dir", data, "--rate-limit", "0", "--shutdown-timeout", "5"];
    let server = ServerProcess::start(dir.path(), &serve_args, dir.path().join("first.log")).await;
    let users = ["alice", "bob", "carol", "dave", "erin"];
    let tokens: Vec<String> = users.iter().map(|u| mint(dir.path(), u, &["--data-dir", data])).collect();
    let conversation = server.client(&tokens[0]).create("group", &users[1..]).await;
    let id = conversation["id"].as_str().expect("id").to_owned();

    let acks = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for n in 0..CONNECTIONS {
        let ws = Ws::connect_to(server.addr(), &tokens[n % tokens.len()]).await;
        clients.push(tokio::spawn(pipeline(ws, id.clone(), n, acks.clone())));
    }
    // SIGTERM in the middle: some sends are acked, most are still queued or running.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acks.load(Ordering::SeqCst) < 50 {
        assert!(Instant::now() < deadline, "no sends acked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let signalled = Instant::now();
    let status = server.terminate().await;
    let took = signalled.elapsed();
    assert!(status.success(), "chatd exited with {status}");
    assert!(took < Duration::from_secs(7), "exit took {took:?}, over the 5 s shutdown timeout");

    let mut acked = BTreeMap::new();
    for client in clients {
        let outcome = client.await.expect("client task");
        assert_eq!(outcome.close_code, Some(1012), "clients are told the service restarts");
        acked.extend(outcome.acked);
    }
    assert!(acked.len() >= 50, "only {} acked", acked.len());
    assert!(
        acked.len() < CONNECTIONS * SENDS_PER_CONNECTION,
        "SIGTERM came after every send: no drain tested"
    );

    let server = ServerProcess::start(dir.path(), &serve_args, dir.path().join("second.log")).await;
    let stored = history(&server.client(&tokens[0]), &id).await;
    for (message_id, seq) in &acked {
        assert_eq!(stored.get(message_id), Some(seq), "acked message {message_id} (seq {seq}) after restart");
    }
}
