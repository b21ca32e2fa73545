//! Socket.IO throughput: durable `message:send` acks, and room fan-out latency.
//!
//! Runs the real `chatd` binary as its own process (SQLite, rate limiting off) and connects
//! 1,000 clients over Socket.IO v5 / Engine.IO v4 WebSocket (a lean client written here:
//! one task per connection, frames handled as text), in 100 group conversations of 10.
//! 1. Fan-out: every client sends at a fixed rate, each starting at its own random offset
//!    (no lockstep), stepped up until p99 exceeds 100 ms; prints deliveries/s (each message
//!    reaches the 9 other members) and send→receive latency percentiles.
//! 2. Durable acks: 256 of them send back-to-back (send, await the ack, repeat); prints
//!    acks/s and ack latency. Last, because it saturates the machine.
//!
//! Both print the server's CPU time per message. The load generator shares the 2 cores.
//!
//! `cargo bench --bench socketio_fanout`; env `BENCH_SECONDS` (default 5) per step.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Server, create_group, percentile_ms, tokens};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as Frame;

const GROUPS: usize = 100;
const GROUP_SIZE: usize = 10;
const ACK_SENDERS: usize = 256;
/// Messages per second per client, stepped up.
const RATES: [f64; 6] = [0.5, 1.0, 2.0, 4.0, 6.0, 8.0];

/// What every client does right now.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    /// Send back-to-back, one ack at a time (only clients below `ACK_SENDERS`).
    Flood,
    /// Send at this many messages per second.
    Rate(f64),
}

/// Measurements a client collects during a phase; the main task takes them between phases.
#[derive(Default)]
struct Samples {
    /// Ack latencies (Flood).
    acks: Vec<Duration>,
    /// Send→receive latencies of deliveries sent during the phase.
    deliveries: Vec<Duration>,
}

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(Duration::from_secs(seconds)))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a Socket.IO connection and waits for chatd's `ready`.
async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<Socket> {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.context("websocket handshake")?;
    socket.send(Frame::text(format!("40{}", json!({ "token": token })))).await?;
    while let Some(frame) = socket.next().await {
        if let Frame::Text(text) = frame? {
            if text.starts_with("42[\"ready\"") {
                return Ok(socket);
            }
            if text.starts_with("44") {
                bail!("connection refused: {text}");
            }
        }
    }
    bail!("closed before ready")
}

/// One client: answers pings, sends per phase, records latencies.
async fn client(
    mut socket: Socket,
    index: usize,
    conversation: String,
    clock: Instant,
    mut phase: watch::Receiver<Phase>,
    samples: Arc<Mutex<Samples>>,
) -> anyhow::Result<()> {
    let mut ack_id = 0u64;
    let mut waiting_since: Option<Instant> = None;
    let mut phase_started_us = 0u64;
    let mut next_send = tokio::time::Instant::now() + Duration::from_secs(3600);
    let send_frame = |ack_id: u64| {
        let micros = clock.elapsed().as_micros();
        let payload =
            json!(["message:send", { "conversation_id": conversation, "content": format!("t={micros}") }]);
        Frame::text(format!("42{ack_id}{payload}"))
    };
    loop {
        let current = *phase.borrow();
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                phase_started_us = clock.elapsed().as_micros() as u64;
                let next_phase = *phase.borrow();
                match next_phase {
                    Phase::Flood if index < ACK_SENDERS => {
                        ack_id += 1;
                        waiting_since = Some(Instant::now());
                        socket.send(send_frame(ack_id)).await?;
                    }
                    Phase::Rate(rate) => {
                        // Each client starts at its own random point of the interval.
                        let offset = rand::random::<f64>() / rate;
                        next_send = tokio::time::Instant::now() + Duration::from_secs_f64(offset);
                    }
                    _ => next_send = tokio::time::Instant::now() + Duration::from_secs(3600),
                }
            }
            _ = tokio::time::sleep_until(next_send), if matches!(current, Phase::Rate(_)) => {
                if let Phase::Rate(rate) = current {
                    next_send += Duration::from_secs_f64(1.0 / rate);
                    ack_id += 1;
                    socket.send(send_frame(ack_id)).await?;
                }
            }
            frame = socket.next() => {
                let Some(frame) = frame else { return Ok(()) };
                let Frame::Text(text) = frame? else { continue };
                if text.as_str() == "2" {
                    socket.send(Frame::text("3")).await?;
                } else if text.starts_with("43") {
                    if let (Phase::Flood, Some(since)) = (current, waiting_since.take()) {
                        samples.lock().unwrap_or_else(|p| p.into_inner()).acks.push(since.elapsed());
                        ack_id += 1;
                        waiting_since = Some(Instant::now());
                        socket.send(send_frame(ack_id)).await?;
                    }
                } else if let Some(event) = text.strip_prefix("42[\"message:new\",") {
                    let message: Value = serde_json::from_str(event.strip_suffix(']').unwrap_or(event))?;
                    let sent_us = message["content"].as_str().and_then(|c| c.strip_prefix("t=")).and_then(|t| t.parse::<u64>().ok());
                    if let Some(sent_us) = sent_us.filter(|t| *t >= phase_started_us) {
                        let latency = Duration::from_micros((clock.elapsed().as_micros() as u64).saturating_sub(sent_us));
                        samples.lock().unwrap_or_else(|p| p.into_inner()).deliveries.push(latency);
                    }
                }
            }
        }
    }
}

/// Runs one phase for `length` and returns every client's samples plus server CPU seconds.
async fn measure(
    server: &Server,
    phase_tx: &watch::Sender<Phase>,
    phase: Phase,
    length: Duration,
    samples: &[Arc<Mutex<Samples>>],
) -> anyhow::Result<(Samples, f64, f64)> {
    for s in samples {
        *s.lock().unwrap_or_else(|p| p.into_inner()) = Samples::default();
    }
    let cpu_before = server.cpu_time()?;
    let started = Instant::now();
    phase_tx.send(phase)?;
    tokio::time::sleep(length).await;
    phase_tx.send(Phase::Idle)?;
    let elapsed = started.elapsed().as_secs_f64();
    // Let in-flight deliveries land before taking the samples (and before the next phase).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cpu = server.cpu_time()?.saturating_sub(cpu_before).as_secs_f64();
    let mut all = Samples::default();
    for s in samples {
        let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
        all.acks.append(&mut s.acks);
        all.deliveries.append(&mut s.deliveries);
    }
    all.acks.sort_unstable();
    all.deliveries.sort_unstable();
    Ok((all, elapsed, cpu))
}

async fn run(step: Duration) -> anyhow::Result<()> {
    let server = Server::start().await?;
    let addr = server.addr;
    let clients = GROUPS * GROUP_SIZE;
    let users: Vec<String> = (0..clients).map(|i| format!("user{i}")).collect();
    let tokens = tokens(&users)?;
    // Group g holds users g*10 .. g*10+9; user i is in group i / 10.
    let mut groups = Vec::with_capacity(GROUPS);
    for g in 0..GROUPS {
        let members: Vec<&String> = users[g * GROUP_SIZE..(g + 1) * GROUP_SIZE].iter().collect();
        groups.push(create_group(addr, &tokens[g * GROUP_SIZE], &members).await?);
    }

    let clock = Instant::now();
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let mut samples = Vec::with_capacity(clients);
    let mut tasks = Vec::with_capacity(clients);
    // Senders are spread over the groups: client i is member i % 10 of group i / 10 ...
    // except that the first ACK_SENDERS indexes must hit many groups, so index by column.
    for (slot, i) in (0..GROUP_SIZE).flat_map(|m| (0..GROUPS).map(move |g| g * GROUP_SIZE + m)).enumerate() {
        let socket = connect(addr, &tokens[i]).await?;
        let sample = Arc::new(Mutex::new(Samples::default()));
        samples.push(sample.clone());
        tasks.push(tokio::spawn(client(
            socket,
            slot,
            groups[i / GROUP_SIZE].clone(),
            clock,
            phase_rx.clone(),
            sample,
        )));
    }
    println!(
        "chatd over Socket.IO (WebSocket), SQLite, {clients} clients in {GROUPS} groups of {GROUP_SIZE};"
    );
    println!("{} s per step; load generator on the same 2 cores", step.as_secs());

    println!("\n1. room fan-out: every client sends at a fixed rate (random start offsets)");
    println!(
        "{:>9} {:>9} {:>13} {:>8} {:>8} {:>8} {:>13}",
        "msg/s/cl", "sends/s", "deliveries/s", "p50 ms", "p99 ms", "p999 ms", "server cores"
    );
    for rate in RATES {
        let (fanout, elapsed, cpu) = measure(&server, &phase_tx, Phase::Rate(rate), step, &samples).await?;
        let p99 = percentile_ms(&fanout.deliveries, 0.99);
        println!(
            "{:>9.1} {:>9.0} {:>13.0} {:>8.2} {:>8.2} {:>8.2} {:>13.2}",
            rate,
            rate * clients as f64,
            fanout.deliveries.len() as f64 / elapsed,
            percentile_ms(&fanout.deliveries, 0.5),
            p99,
            percentile_ms(&fanout.deliveries, 0.999),
            cpu / elapsed
        );
        if p99 > 100.0 {
            break;
        }
    }

    let (flood, elapsed, cpu) = measure(&server, &phase_tx, Phase::Flood, step, &samples).await?;
    let acks = flood.acks.len() as f64;
    println!(
        "\n2. durable message:send with ack, {ACK_SENDERS} senders back-to-back (saturates the machine)"
    );
    println!("{:>10} {:>9} {:>9} {:>9} {:>15}", "acks/s", "p50 ms", "p99 ms", "max ms", "server µs/send");
    println!(
        "{:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>15.1}",
        acks / elapsed,
        percentile_ms(&flood.acks, 0.5),
        percentile_ms(&flood.acks, 0.99),
        percentile_ms(&flood.acks, 1.0),
        cpu * 1e6 / acks.max(1.0)
    );

    drop(phase_tx);
    for task in tasks {
        if let Ok(Err(err)) = task.await {
            eprintln!("client error: {err:#}");
        }
    }
    Ok(())
}
