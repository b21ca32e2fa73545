//! Issue 7's push figures: how many push jobs per second the worker sends, and whether a
//! backlog of queued jobs slows the chat send path.
//!
//! Runs the real `chatd` binary on a temp SQLite file and a local HTTP server standing in for
//! the webhook receiver (answers 200 at once, counts requests).
//!
//! 1. Backlog: chatd without a push provider records `JOBS` jobs (users offline, each with a
//!    webhook device; the jobs stay queued). chatd restarts with `--webhook-secret` and
//!    `--push-rate 0` and the worker drains them: jobs/s until the receiver has them all.
//! 2. Send path: durable REST sends (16 senders, to conversations whose other member is
//!    offline without devices, so the sends add no jobs) for a few seconds: with an empty
//!    queue, with a backlog of `JOBS` waiting (no provider), while the worker drains it at
//!    the default `--push-rate`, and while it drains one uncapped. Ack p50/p99 side by side.
//!
//! `cargo bench --bench push`; env `BENCH_SECONDS` (default 3) sets the send-path window.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use support::{Connection, Server, create_group, percentile_ms, tokens};

/// Push jobs in a backlog.
const JOBS: usize = 10_000;
/// Offline recipients per group in the backlog.
const PER_GROUP: usize = 4;
/// Groups the backlog's messages go to.
const GROUPS: usize = 50;
/// Concurrent senders.
const SENDERS: usize = 16;
const WEBHOOK_SECRET: &str = "benchmark-webhook-secret-0123456789";

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(Duration::from_secs(seconds)))
}

/// The stand-in receiver: counts requests, answers 200.
async fn receiver() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, received))
}

/// The backlog's cast: a sender, `GROUPS` groups of it and `PER_GROUP` offline users with a
/// webhook device each. Returns the sender's token and the group ids.
async fn backlog_cast(addr: SocketAddr, hook: &str) -> anyhow::Result<(String, Vec<String>)> {
    let names: Vec<String> = std::iter::once("boss".to_owned())
        .chain((0..GROUPS * PER_GROUP).map(|i| format!("away{i}")))
        .collect();
    let tokens = tokens(&names)?;
    for token in &tokens[1..] {
        let mut user = Connection::open(addr, token).await?;
        let body = serde_json::json!({"platform": "webhook", "token": "t", "endpoint": hook}).to_string();
        let (status, _) = user.post("/api/devices", &body).await?;
        ensure!(status == 201, "register device: {status}");
    }
    let mut groups = Vec::with_capacity(GROUPS);
    for g in 0..GROUPS {
        let members: Vec<&String> = names[1 + g * PER_GROUP..1 + (g + 1) * PER_GROUP].iter().collect();
        groups.push(create_group(addr, &tokens[0], &members).await?);
    }
    Ok((tokens[0].clone(), groups))
}

/// Sends `JOBS / PER_GROUP` messages over the groups with `SENDERS` connections.
async fn fill_backlog(addr: SocketAddr, token: &str, groups: &[String]) -> anyhow::Result<()> {
    let messages = JOBS / PER_GROUP;
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let mut connection = Connection::open(addr, token).await?;
        let groups = groups.to_vec();
        tasks.push(tokio::spawn(async move {
            for n in (s..messages).step_by(SENDERS) {
                let path = format!("/api/conversations/{}/messages", groups[n % groups.len()]);
                let (status, _) = connection.post(&path, &format!(r#"{{"content":"backlog {n}"}}"#)).await?;
                ensure!(status == 201, "backlog send: {status}");
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Waits until the receiver has `n` requests (at most `limit`); returns how long it took.
async fn drained(received: &AtomicU64, n: u64, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while received.load(Ordering::Relaxed) < n {
        ensure!(started.elapsed() < limit, "only {} of {n} pushes arrived", received.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

/// Acked sends for `window` from `SENDERS` connections to conversations that add no push jobs;
/// returns the sorted ack latencies.
async fn send_path(
    addr: SocketAddr,
    token: &str,
    quiet: &[String],
    window: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (s, conversation) in quiet.iter().enumerate() {
        let mut connection = Connection::open(addr, token).await?;
        let path = format!("/api/conversations/{conversation}/messages");
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let (status, _) = connection.post(&path, &format!(r#"{{"content":"send {s} {n}"}}"#)).await?;
                ensure!(status == 201, "send: {status}");
                latencies.push(started.elapsed());
            }
            Ok(latencies)
        }));
    }
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    latencies.sort_unstable();
    Ok(latencies)
}

async fn run(window: Duration) -> anyhow::Result<()> {
    let (hook_addr, received) = receiver().await?;
    let hook = format!("http://{hook_addr}/hook");
    let with_worker = ["--webhook-secret", WEBHOOK_SECRET, "--push-batch-size", "64"];
    let uncapped = ["--webhook-secret", WEBHOOK_SECRET, "--push-batch-size", "64", "--push-rate", "0"];
    println!("push worker and send path, chatd as its own process on SQLite, webhook receiver on loopback");

    // 1. Drain a backlog with nothing else going on.
    let mut server = Server::start().await?;
    let (boss, groups) = backlog_cast(server.addr, &hook).await?;
    fill_backlog(server.addr, &boss, &groups).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart_with(&uncapped).await?;
    let cpu_before = server.cpu_time()?;
    let took = drained(&received, JOBS as u64, Duration::from_secs(120)).await?;
    let cpu = server.cpu_time()?.saturating_sub(cpu_before);
    println!(
        "backlog of {JOBS} jobs drained in {:.2} s: {:.0} jobs/s, server {:.0} µs CPU per job",
        took.as_secs_f64(),
        JOBS as f64 / took.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / JOBS as f64
    );

    // 2. The send path with an empty queue, then while a fresh backlog drains.
    let quiet_members: Vec<String> = (0..SENDERS).map(|i| format!("quiet{i}")).collect();
    let mut quiet = Vec::new();
    for member in &quiet_members {
        quiet.push(create_group(server.addr, &boss, &[member]).await?);
    }
    let empty = send_path(server.addr, &boss, &quiet, window).await?;
    server.restart_with(&[]).await?;
    let before = received.load(Ordering::Relaxed);
    fill_backlog(server.addr, &boss, &groups).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = send_path(server.addr, &boss, &quiet, window).await?;
    server.restart_with(&with_worker).await?;
    let capped = send_path(server.addr, &boss, &quiet, window).await?;
    let capped_sent = received.load(Ordering::Relaxed) - before;
    drained(&received, before + JOBS as u64, Duration::from_secs(120)).await?;
    server.restart_with(&[]).await?;
    let before = received.load(Ordering::Relaxed);
    fill_backlog(server.addr, &boss, &groups).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart_with(&uncapped).await?;
    let busy = send_path(server.addr, &boss, &quiet, window).await?;
    let sent_meanwhile = received.load(Ordering::Relaxed) - before;
    println!("send path, {SENDERS} senders, {} s each:", window.as_secs());
    println!("{:>34} {:>9} {:>8} {:>8} {:>8}", "", "acks/s", "p50 ms", "p99 ms", "max ms");
    for (label, latencies) in [
        ("empty queue".to_owned(), &empty),
        (format!("{JOBS} queued, no provider (waiting)"), &waiting),
        (format!("draining at --push-rate 1000 ({capped_sent} sent)"), &capped),
        (format!("draining uncapped ({sent_meanwhile} sent)"), &busy),
    ] {
        println!(
            "{:>34} {:>9.0} {:>8.2} {:>8.2} {:>8.2}",
            label,
            latencies.len() as f64 / window.as_secs_f64(),
            percentile_ms(latencies, 0.50),
            percentile_ms(latencies, 0.99),
            percentile_ms(latencies, 1.0)
        );
    }
    let p99 = |latencies: &[Duration]| percentile_ms(latencies, 0.99) / percentile_ms(&empty, 0.99).max(1e-9);
    println!(
        "p99 / empty queue's: {:.2} with the backlog waiting, {:.2} while it drains at the default cap, {:.2} uncapped",
        p99(&waiting),
        p99(&capped),
        p99(&busy)
    );
    Ok(())
}
