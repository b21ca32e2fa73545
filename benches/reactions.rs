//! What reactions cost in fan-out, next to messages: 10 groups of 10 members, every member
//! connected over plain WebSocket and acting in a closed loop (one request in flight each).
//! Phase 1: every member sends `message:send` (each fans out as `message:new` to the other
//! nine). Phase 2: every member toggles 👍 on its group's message (`message:react` /
//! `message:unreact`, each fanned out as `reaction:added` / `reaction:removed`, which carry
//! the whole message, to the other nine). Prints, per phase: acknowledged operations per
//! second, deliveries per second, the server's CPU per operation, and the average size of a
//! delivered frame. Runs the real `chatd` binary (SQLite, rate limits off); asserts nothing.
//!
//! `cargo bench --bench reactions`; env `BENCH_SECONDS` (default 5) sets each phase's length.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Server, create_group, tokens};
use tokio_tungstenite::tungstenite::Message as Frame;

const GROUPS: usize = 10;
const MEMBERS: usize = 10;

/// What the connections saw during a phase.
#[derive(Default)]
struct Counts {
    acks: AtomicU64,
    deliveries: AtomicU64,
    delivered_bytes: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let server = Server::start().await?;
        let users: Vec<String> = (0..GROUPS * MEMBERS).map(|i| format!("u{i:03}")).collect();
        let tokens = tokens(&users)?;
        let mut groups = Vec::new();
        for g in 0..GROUPS {
            let members: Vec<&String> = users[g * MEMBERS + 1..(g + 1) * MEMBERS].iter().collect();
            groups.push(create_group(server.addr, &tokens[g * MEMBERS], &members).await?);
        }
        // One message per group for the reactions, sent by its owner over REST.
        let mut targets = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let mut owner = support::Connection::open(server.addr, &tokens[g * MEMBERS]).await?;
            let body = json!({ "content": "react to me" }).to_string();
            let (_, body) = owner.post(&format!("/api/conversations/{group}/messages"), &body).await?;
            let message: Value = serde_json::from_slice(&body)?;
            targets.push(message["id"].as_str().unwrap_or_default().to_owned());
        }
        println!("## reactions vs messages in fan-out ({GROUPS} groups × {MEMBERS} members over /ws, {seconds} s each)");
        println!("| operation | ops/s | deliveries/s | server CPU per op | bytes per delivered frame |");
        println!("|---|---|---|---|---|");
        for phase in ["message:send", "message:react"] {
            let counts = Arc::new(Counts::default());
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = Vec::new();
            for (i, token) in tokens.iter().enumerate() {
                let (group, target) = (groups[i / MEMBERS].clone(), targets[i / MEMBERS].clone());
                let url = format!("ws://{}/ws?token={token}", server.addr);
                let (counts, stop) = (counts.clone(), stop.clone());
                tasks.push(tokio::spawn(async move { act(&url, phase, &group, &target, &counts, &stop).await }));
            }
            // Let every connection settle (its `ready`) before measuring.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (acks0, deliveries0, bytes0) = (
                counts.acks.load(Ordering::Relaxed),
                counts.deliveries.load(Ordering::Relaxed),
                counts.delivered_bytes.load(Ordering::Relaxed),
            );
            let (cpu0, started) = (server.cpu_time()?, Instant::now());
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let (cpu, elapsed) = (server.cpu_time()? - cpu0, started.elapsed().as_secs_f64());
            let acks = counts.acks.load(Ordering::Relaxed) - acks0;
            let deliveries = counts.deliveries.load(Ordering::Relaxed) - deliveries0;
            let bytes = counts.delivered_bytes.load(Ordering::Relaxed) - bytes0;
            stop.store(true, Ordering::Relaxed);
            for task in tasks {
                task.await??;
            }
            println!(
                "| `{phase}` | {:.0} | {:.0} | {:.0} µs | {:.0} |",
                acks as f64 / elapsed,
                deliveries as f64 / elapsed,
                cpu.as_secs_f64() * 1e6 / acks.max(1) as f64,
                bytes as f64 / deliveries.max(1) as f64,
            );
        }
        Ok(())
    })
}

/// One member's closed loop: `phase` (a send, or a 👍 toggled on `target`), waiting for each
/// ack, counting the pushes that arrive meanwhile, until `stop`.
async fn act(
    url: &str,
    phase: &str,
    group: &str,
    target: &str,
    counts: &Counts,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let mut id = 0u64;
    let mut reacted = false;
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        let frame = match phase {
            "message:send" => {
                json!({ "id": id, "event": "message:send", "data": { "conversation_id": group, "content": "hello there" } })
            }
            _ => {
                let event = if reacted { "message:unreact" } else { "message:react" };
                reacted = !reacted;
                json!({ "id": id, "event": event, "data": { "message_id": target, "emoji": "👍" } })
            }
        };
        socket.send(Frame::text(frame.to_string())).await?;
        loop {
            let Some(frame) = socket.next().await else { anyhow::bail!("the server closed the connection") };
            let Frame::Text(text) = frame? else { continue };
            let value: Value = serde_json::from_str(&text)?;
            if value.get("id").and_then(Value::as_u64) == Some(id) {
                anyhow::ensure!(value["ack"]["ok"] == true, "refused: {value}");
                counts.acks.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let name = value["event"].as_str().unwrap_or_default();
            if matches!(name, "message:new" | "reaction:added" | "reaction:removed") {
                counts.deliveries.fetch_add(1, Ordering::Relaxed);
                counts.delivered_bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}
