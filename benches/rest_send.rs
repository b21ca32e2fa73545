//! Durable REST sends per second with ack-after-commit.
//!
//! Starts chatd in-process on a temp SQLite file (default durability: WAL,
//! synchronous=NORMAL; rate limiting off), then for 1, 16 and 256 concurrent senders — each
//! its own user with its own keep-alive HTTP/1.1 connection, spread over 64 group
//! conversations — sends as fast as acks come back for a fixed time and prints acked
//! sends/s and ack latency percentiles. Every counted send was a 201, i.e. committed.
//!
//! `cargo bench --bench rest_send` (env `BENCH_SECONDS`, default 5, sets each step's length;
//! `BENCH_WORKERS`, default 2, the runtime's worker threads).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chatd::config::Config;
use chatd::state::AppState;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const CONVERSATIONS: usize = 64;
const STEPS: [usize; 3] = [1, 16, 256];

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let workers: usize = std::env::var("BENCH_WORKERS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    runtime.block_on(run(Duration::from_secs(seconds)))
}

/// One keep-alive connection acting as one user.
struct Sender {
    conn: http1::SendRequest<Full<Bytes>>,
    authorization: String,
    host: String,
}

impl Sender {
    async fn connect(addr: std::net::SocketAddr, token: &str) -> anyhow::Result<Sender> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (conn, driver) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(driver);
        Ok(Sender { conn, authorization: format!("Bearer {token}"), host: addr.to_string() })
    }

    async fn call(&mut self, method: Method, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.conn.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = self.conn.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }
}

async fn run(step_length: Duration) -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let mut config = Config::with_data_dir(data_dir.path())?;
    config.limits.messages_per_second = 0;
    let state = AppState::build(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let auth = state.auth.clone();
    tokio::spawn(chatd::server::serve(listener, state, std::future::pending()));

    let max = *STEPS.iter().max().unwrap_or(&1);
    let users: Vec<String> = (0..max).map(|i| format!("user{i}")).collect();
    let tokens: Vec<String> =
        users.iter().map(|u| auth.mint(u, None, Duration::from_secs(3600))).collect::<Result<_, _>>()?;

    // Conversation k holds every user i with i % CONVERSATIONS == k.
    let mut conversations = Vec::with_capacity(CONVERSATIONS);
    for (k, owner_token) in tokens.iter().enumerate().take(CONVERSATIONS) {
        let members: Vec<&String> = users.iter().skip(k).step_by(CONVERSATIONS).collect();
        let mut owner = Sender::connect(addr, owner_token).await?;
        let (status, body) = owner
            .call(Method::POST, "/api/conversations", json!({"type": "group", "members": members}))
            .await?;
        anyhow::ensure!(status == 201, "create conversation: {status} {body}");
        conversations.push(body["id"].as_str().unwrap_or_default().to_owned());
    }

    println!(
        "durable REST sends (ack after commit), SQLite synchronous=NORMAL, {CONVERSATIONS} conversations"
    );
    println!(
        "{:>9} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "senders", "acked", "sends/s", "p50 ms", "p99 ms", "max ms"
    );
    for &senders in &STEPS {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::with_capacity(senders);
        for (i, token) in tokens.iter().enumerate().take(senders) {
            let mut sender = Sender::connect(addr, token).await?;
            let path = format!("/api/conversations/{}/messages", conversations[i % CONVERSATIONS]);
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let started = Instant::now();
                    let (status, body) = sender
                        .call(Method::POST, &path, json!({"content": format!("benchmark message {n}")}))
                        .await?;
                    anyhow::ensure!(status == 201, "send: {status} {body}");
                    latencies.push(started.elapsed());
                }
                Ok(latencies)
            }));
        }
        let started = Instant::now();
        tokio::time::sleep(step_length).await;
        stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let pct = |p: f64| {
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
            latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "{:>9} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2}",
            senders,
            latencies.len(),
            latencies.len() as f64 / elapsed,
            pct(0.50),
            pct(0.99),
            pct(1.0)
        );
    }
    Ok(())
}
