//! Shared by the benchmarks: the chatd server as a child process (with its CPU time), a
//! lean keep-alive HTTP/1.1 client for setup and REST load, tokens, percentiles; and the
//! load generator of issue 5 (`benches/loadgen.rs`, also run by `tests/bench_smoke.rs`):
//! its WebSocket / Socket.IO client, server processes, scenarios, ceiling relay and report.
#![allow(dead_code)]

pub mod ceiling;
pub mod marketplace;
pub mod report;
pub mod scenarios;
pub mod servers;
pub mod wire;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use chatd::auth::{Authenticator, KeySource};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// HS256 secret the benchmark server is started with.
pub const SECRET: &str = "benchmark-secret-not-for-production";

/// The server process; killed when dropped.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `chatd serve` on a free port over a temp data dir, rate limiting off.
    pub async fn start() -> anyhow::Result<Server> {
        Self::start_with(&[]).await
    }

    /// Like [`Server::start`], with extra `chatd serve` arguments.
    pub async fn start_with(args: &[&str]) -> anyhow::Result<Server> {
        let data_dir = tempfile::tempdir()?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = spawn(addr, data_dir.path(), args)?;
        let server = Server { child, addr, _data_dir: data_dir };
        wait_listening(addr).await?;
        Ok(server)
    }

    /// Stops the server and starts it again on the same address and data, with `args`.
    pub async fn restart_with(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.addr, self._data_dir.path(), args)?;
        wait_listening(self.addr).await
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the server has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc stat")?;
        let fields: Vec<u64> =
            rest.split_whitespace().skip(11).take(2).map(|f| f.parse().unwrap_or(0)).collect();
        let ticks_per_second = 100; // USER_HZ on Linux
        Ok(Duration::from_millis(fields.iter().sum::<u64>() * 1000 / ticks_per_second))
    }
}

/// `chatd serve` on `addr` over `data_dir`, rate limiting off, with `args`.
fn spawn(addr: SocketAddr, data_dir: &std::path::Path, args: &[&str]) -> anyhow::Result<Child> {
    Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["serve", "--rate-limit", "0", "--jwt-secret", SECRET, "--bind", &addr.to_string()])
        // The push benchmark's webhook receiver listens on loopback.
        .args(["--push-allow-private-endpoints"])
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("CHATD_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting chatd")
}

/// Waits (at most 5 s) until something accepts connections on `addr`.
async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("chatd did not start listening on {addr}")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection acting as one user.
pub struct Connection {
    stream: TcpStream,
    head: String,
    buf: Vec<u8>,
}

impl Connection {
    /// Opens a connection authenticated as the holder of `token`.
    pub async fn open(addr: SocketAddr, token: &str) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let head =
            format!("Host: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n");
        Ok(Connection { stream, head, buf: Vec::with_capacity(4096) })
    }

    /// POSTs `body` to `path`; returns the status and the response body.
    pub async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<(u16, Vec<u8>)> {
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

/// Tokens for `users`, signed with [`SECRET`].
pub fn tokens(users: &[String]) -> anyhow::Result<Vec<String>> {
    let auth = Authenticator::new(KeySource::Secret(SECRET.as_bytes().to_vec()), None, None)?;
    Ok(users.iter().map(|u| auth.mint(u, None, Duration::from_secs(3600))).collect::<Result<_, _>>()?)
}

/// Creates a group of `members` (the first is its owner) and returns its id.
pub async fn create_group(
    addr: SocketAddr,
    owner_token: &str,
    members: &[&String],
) -> anyhow::Result<String> {
    let mut owner = Connection::open(addr, owner_token).await?;
    let body = json!({"type": "group", "members": members}).to_string();
    let (status, body) = owner.post("/api/conversations", &body).await?;
    anyhow::ensure!(status == 201, "create conversation: {status} {}", String::from_utf8_lossy(&body));
    let conversation: Value = serde_json::from_slice(&body)?;
    Ok(conversation["id"].as_str().unwrap_or_default().to_owned())
}

/// The `p` quantile (0..=1) of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}
