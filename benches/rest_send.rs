//! Durable REST sends per second with ack-after-commit.
//!
//! Runs the real `chatd` binary as its own process on a temp SQLite file (default
//! durability: WAL, synchronous=NORMAL; rate limiting off), then for 1, 16 and 256
//! concurrent senders — each its own user on its own keep-alive HTTP/1.1 connection, spread
//! over 64 group conversations — sends as fast as acks come back for a fixed time. It prints
//! acked sends/s, ack latency percentiles, and the server's CPU time per send (from
//! /proc/<pid>/stat), the figure least disturbed by other load on the machine. Every counted
//! send was a 201, i.e. committed.
//!
//! The load generator is deliberately lean (one task per connection, requests written as
//! bytes, responses parsed with `httparse`) so it takes as little CPU from the server as it
//! can; on this 2-core machine both share the cores.
//!
//! `cargo bench --bench rest_send`; env `BENCH_SECONDS` (default 5) sets each step's length.
//!
//! With `BENCH_DATABASE_URL=postgres://root@127.0.0.1:5432/test` the server runs on that
//! PostgreSQL database instead, in a fresh schema (`chatd_bench_<pid>_<nanos>`, created by
//! chatd) that is dropped again after the run, pass or fail.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Connection, Server, create_group, percentile_ms, tokens};

const CONVERSATIONS: usize = 64;
const STEPS: [usize; 3] = [1, 16, 256];

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let postgres = std::env::var("BENCH_DATABASE_URL").ok().filter(|url| !url.is_empty());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let Some(base) = postgres else {
            let server = Server::start().await?;
            return run(&server, "SQLite synchronous=NORMAL", Duration::from_secs(seconds)).await;
        };
        let schema = PgSchema::fresh(&base);
        let result = async {
            let server = Server::start_with(&["--database-url", &schema.url, "--media-dir-shared"]).await?;
            let label = format!("PostgreSQL (schema {}, default pool)", schema.name);
            run(&server, &label, Duration::from_secs(seconds)).await
            // The server stops here, before its schema is dropped.
        }
        .await;
        schema.drop().await;
        result
    })
}

/// A fresh PostgreSQL schema for one run (chatd creates it on start).
struct PgSchema {
    base: String,
    name: String,
    /// `base` with `schema=` set: what chatd gets as `--database-url`.
    url: String,
}

impl PgSchema {
    fn fresh(base: &str) -> PgSchema {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("chatd_bench_{}_{nanos}", std::process::id());
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}schema={name}");
        PgSchema { base: base.to_owned(), name, url }
    }

    /// Drops the schema (best effort: says so when it cannot).
    async fn drop(self) {
        let dropped = async {
            let (client, connection) = tokio_postgres::connect(&self.base, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)).await
        }
        .await;
        if let Err(err) = dropped {
            eprintln!("note: could not drop schema {}: {err}", self.name);
        }
    }
}

async fn run(server: &Server, storage: &str, step_length: Duration) -> anyhow::Result<()> {
    let addr = server.addr;
    let max = *STEPS.iter().max().unwrap_or(&1);
    let users: Vec<String> = (0..max).map(|i| format!("user{i}")).collect();
    let tokens = tokens(&users)?;

    // Conversation k holds every user i with i % CONVERSATIONS == k.
    let mut conversations = Vec::with_capacity(CONVERSATIONS);
    for (k, owner_token) in tokens.iter().enumerate().take(CONVERSATIONS) {
        let members: Vec<&String> = users.iter().skip(k).step_by(CONVERSATIONS).collect();
        conversations.push(create_group(addr, owner_token, &members).await?);
    }

    println!("durable REST sends (ack after commit), chatd as its own process, {storage},");
    println!(
        "{CONVERSATIONS} conversations, {} s per step, load generator on the same 2 cores",
        step_length.as_secs()
    );
    println!(
        "{:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>14} {:>12}",
        "senders", "acked", "sends/s", "p50 ms", "p99 ms", "max ms", "server µs/send", "server cores"
    );
    for &senders in &STEPS {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::with_capacity(senders);
        for (i, token) in tokens.iter().enumerate().take(senders) {
            let mut connection = Connection::open(addr, token).await?;
            let path = format!("/api/conversations/{}/messages", conversations[i % CONVERSATIONS]);
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 14);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = format!(r#"{{"content":"benchmark message {n} from sender {i}"}}"#);
                    let started = Instant::now();
                    let (status, response) = connection.post(&path, &body).await?;
                    anyhow::ensure!(status == 201, "send: {status} {}", String::from_utf8_lossy(&response));
                    latencies.push(started.elapsed());
                }
                Ok(latencies)
            }));
        }
        let cpu_before = server.cpu_time()?;
        let started = Instant::now();
        tokio::time::sleep(step_length).await;
        stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = server.cpu_time()?.saturating_sub(cpu_before).as_secs_f64();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        latencies.sort_unstable();
        let acked = latencies.len() as f64;
        println!(
            "{:>8} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>14.1} {:>12.2}",
            senders,
            latencies.len(),
            acked / elapsed,
            percentile_ms(&latencies, 0.50),
            percentile_ms(&latencies, 0.99),
            percentile_ms(&latencies, 1.0),
            cpu * 1e6 / acked.max(1.0),
            cpu / elapsed
        );
    }
    Ok(())
}
