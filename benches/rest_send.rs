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

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chatd::auth::{Authenticator, KeySource};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONVERSATIONS: usize = 64;
const STEPS: [usize; 3] = [1, 16, 256];
const SECRET: &str = "benchmark-secret-not-for-production";

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(Duration::from_secs(seconds)))
}

/// The server process; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    _data_dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> anyhow::Result<Server> {
        let data_dir = tempfile::tempdir()?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["serve", "--rate-limit", "0", "--jwt-secret", SECRET, "--bind", &addr.to_string()])
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("CHATD_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting chatd")?;
        let server = Server { child, addr, _data_dir: data_dir };
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("chatd did not start listening on {addr}")
    }

    /// CPU time (user + system) the server has used so far.
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc stat")?;
        let fields: Vec<u64> =
            rest.split_whitespace().skip(11).take(2).map(|f| f.parse().unwrap_or(0)).collect();
        let ticks_per_second = 100; // USER_HZ on Linux
        Ok(Duration::from_millis(fields.iter().sum::<u64>() * 1000 / ticks_per_second))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection acting as one user.
struct Connection {
    stream: TcpStream,
    head: String,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr, token: &str) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let head =
            format!("Host: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n");
        Ok(Connection { stream, head, buf: Vec::with_capacity(4096) })
    }

    /// POSTs `body` to `path`; returns the status and the response body.
    async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let request =
            format!("POST {path} HTTP/1.1\r\n{}Content-Length: {}\r\n\r\n{body}", self.head, body.len());
        self.stream.write_all(request.as_bytes()).await?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = response.parse(&self.buf)? {
                let status = response.code.unwrap_or(0);
                let length: usize = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .unwrap_or(0);
                while self.buf.len() < head_len + length {
                    self.read_more().await?;
                }
                let body = self.buf[head_len..head_len + length].to_vec();
                self.buf.drain(..head_len + length);
                return Ok((status, body));
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> anyhow::Result<()> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("server closed the connection");
        }
        Ok(())
    }
}

async fn run(step_length: Duration) -> anyhow::Result<()> {
    let server = Server::start().await?;
    let addr = server.addr;
    let auth = Authenticator::new(KeySource::Secret(SECRET.as_bytes().to_vec()), None, None)?;
    let max = *STEPS.iter().max().unwrap_or(&1);
    let users: Vec<String> = (0..max).map(|i| format!("user{i}")).collect();
    let tokens: Vec<String> =
        users.iter().map(|u| auth.mint(u, None, Duration::from_secs(3600))).collect::<Result<_, _>>()?;

    // Conversation k holds every user i with i % CONVERSATIONS == k.
    let mut conversations = Vec::with_capacity(CONVERSATIONS);
    for (k, owner_token) in tokens.iter().enumerate().take(CONVERSATIONS) {
        let members: Vec<&String> = users.iter().skip(k).step_by(CONVERSATIONS).collect();
        let mut owner = Connection::open(addr, owner_token).await?;
        let body = json!({"type": "group", "members": members}).to_string();
        let (status, body) = owner.post("/api/conversations", &body).await?;
        anyhow::ensure!(status == 201, "create conversation: {status} {}", String::from_utf8_lossy(&body));
        let conversation: Value = serde_json::from_slice(&body)?;
        conversations.push(conversation["id"].as_str().unwrap_or_default().to_owned());
    }

    println!("durable REST sends (ack after commit), chatd as its own process, SQLite synchronous=NORMAL,");
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
        let percentile = |p: f64| {
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
            latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let acked = latencies.len() as f64;
        println!(
            "{:>8} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>14.1} {:>12.2}",
            senders,
            latencies.len(),
            acked / elapsed,
            percentile(0.50),
            percentile(0.99),
            percentile(1.0),
            cpu * 1e6 / acked.max(1.0),
            cpu / elapsed
        );
    }
    Ok(())
}
