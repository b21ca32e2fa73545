//! Idle plain-WebSocket connections: the server's memory per connection, and its keepalive CPU.
//!
//! Runs the real `chatd` binary as its own process (SQLite on a temp dir) and opens idle
//! `GET /ws` connections to it, each as its own user, each waiting for the server's `ready`
//! frame (so the server side is fully set up: hub entry, presence, subscriptions). Clients
//! keep reading, so they answer the server's pings; they never send anything else.
//! At each count (10,000 then 18,000 by default), after a settle of one ping round, prints
//! the server's RSS (VmRSS of /proc/<pid>/status), its growth over the baseline taken before
//! the first connection, that growth per connection (B/conn, KB/conn), the marginal cost per
//! connection between two counts (leaves out one-time costs: blocking threads, map resizes),
//! and the growth of anonymous memory alone per connection (without file pages such as
//! SQLite's mmap of the database, which grow with `BENCH_CONVERSATIONS`, not with
//! connections). At the last count it measures the server's CPU while everything idles (the
//! keepalive: one ping + pong per connection per interval), then closes every connection and
//! prints the RSS the server keeps.
//!
//! The server runs with `--ws-ping-interval` `BENCH_PING_SECS` (default 5, chatd's default is
//! 25) so that every connection has been pinged (and has answered) before each measurement:
//! the figures are the steady state of an idle connection, not of a fresh one.
//!
//! The per-process fd limit here is 20,000 (hard), and this process and the server each hold
//! one fd per connection: 18,000 fits. Clients bind to source addresses 127.0.0.2..=127.0.0.9
//! in turn, so no (source, destination) pair runs out of ephemeral ports.
//!
//! `cargo bench --bench ws_idle`; env:
//! - `BENCH_CONNECTIONS` (default `10000,18000`): the counts to measure at, increasing.
//! - `BENCH_PING_SECS` (default 5): the server's ping interval.
//! - `BENCH_SETTLE_SECS` (default: ping interval + 1): wait before each measurement.
//! - `BENCH_CPU_SECS` (default: 2 ping intervals): length of the idle CPU measurement.
//! - `BENCH_CONVERSATIONS` (default 0): put every user in this many group conversations
//!   first (so `ready` lists them and the connection is subscribed to each).
//! - `BENCH_PRESENCE_QUERY` (default 0): after `ready`, every client sends one
//!   `presence:query` for this many user ids (at most 500) and waits for its ack before idling,
//!   so each connection has read and written one large frame (~40 B and ~55 B per id).
//! - `BENCH_CONCURRENCY` (default 200): handshakes in flight at once.
//! - `BENCH_ADDR` + `BENCH_PID`: use a server that is already running instead, e.g. one under
//!   a heap profiler (start it with `--jwt-secret` = `support::SECRET`, `--rate-limit 0` and
//!   `--ws-ping-interval` = `BENCH_PING_SECS`); `BENCH_PID` is whose memory is measured.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use support::{Server, tokens};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Handshakes in flight at once by default (the server's listen backlog is 1,024).
const CONCURRENCY: usize = 200;
/// Client source addresses: 127.0.0.2 ..= 127.0.0.9.
const SOURCES: u8 = 8;
/// Members per group with `BENCH_CONVERSATIONS`.
const GROUP_SIZE: usize = 10;

type Socket = WebSocketStream<tokio::net::TcpStream>;

/// How connections are opened.
struct Load {
    addr: SocketAddr,
    /// Handshakes in flight at once.
    concurrency: usize,
    /// Sent by every client after `ready` (`BENCH_PRESENCE_QUERY`).
    query: Option<String>,
    clients: Arc<Clients>,
}

/// What the client tasks report.
#[derive(Default)]
struct Clients {
    /// Connections open now.
    open: AtomicUsize,
    /// Server pings received (each answered with a pong).
    pings: AtomicU64,
    /// Why connections ended before the bench closed them, counted by reason.
    lost: Mutex<BTreeMap<String, usize>>,
    /// Events that reached a connection before its `ready`, counted by name.
    before_ready: Mutex<BTreeMap<String, usize>>,
}

impl Clients {
    fn lose(&self, reason: String) {
        *self.lost.lock().unwrap_or_else(|p| p.into_inner()).entry(reason).or_insert(0) += 1;
    }

    /// Prints (and forgets) the connections lost, and the events seen before `ready`, since
    /// the last call.
    fn report(&self) {
        let lost = std::mem::take(&mut *self.lost.lock().unwrap_or_else(|p| p.into_inner()));
        for (reason, n) in lost {
            println!("  !! {n} connection(s) ended early: {reason}");
        }
        let early = std::mem::take(&mut *self.before_ready.lock().unwrap_or_else(|p| p.into_inner()));
        if !early.is_empty() {
            let events: Vec<String> = early.iter().map(|(event, n)| format!("{n} × {event}")).collect();
            println!("  note: events that arrived before the connection's ready: {}", events.join(", "));
        }
    }
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run())
}

fn env_u64(name: &str) -> anyhow::Result<Option<u64>> {
    std::env::var(name).ok().map(|v| v.parse().with_context(|| format!("{name}={v}"))).transpose()
}

/// The server under test: our own child process, or one given by `BENCH_ADDR`/`BENCH_PID`.
struct Target {
    addr: SocketAddr,
    pid: u32,
    _own: Option<Server>,
}

async fn run() -> anyhow::Result<()> {
    let counts: Vec<usize> = std::env::var("BENCH_CONNECTIONS")
        .unwrap_or_else(|_| "10000,18000".into())
        .split(',')
        .map(|c| c.trim().parse().with_context(|| format!("BENCH_CONNECTIONS: {c}")))
        .collect::<anyhow::Result<_>>()?;
    if counts.is_empty() || counts.windows(2).any(|w| w[0] >= w[1]) {
        bail!("BENCH_CONNECTIONS must be increasing counts, e.g. 10000,18000");
    }
    let ping = env_u64("BENCH_PING_SECS")?.unwrap_or(5).max(1);
    let settle = Duration::from_secs(env_u64("BENCH_SETTLE_SECS")?.unwrap_or(ping + 1));
    let cpu_window = Duration::from_secs(env_u64("BENCH_CPU_SECS")?.unwrap_or(2 * ping).max(1));
    let concurrency = env_u64("BENCH_CONCURRENCY")?.map_or(CONCURRENCY, |c| c.max(1) as usize);
    let conversations = env_u64("BENCH_CONVERSATIONS")?.unwrap_or(0) as usize;
    let query = match env_u64("BENCH_PRESENCE_QUERY")?.unwrap_or(0) as usize {
        0 => None,
        ids => {
            let user_ids: Vec<String> = (0..ids).map(|i| format!("someone-not-connected-{i}")).collect();
            let data = serde_json::json!({ "user_ids": user_ids });
            Some(serde_json::json!({"id": 1, "event": "presence:query", "data": data}).to_string())
        }
    };
    let max = *counts.last().expect("checked non-empty");

    let target = match std::env::var("BENCH_ADDR") {
        Ok(addr) => Target {
            addr: addr.parse().context("BENCH_ADDR")?,
            pid: env_u64("BENCH_PID")?.context("BENCH_ADDR needs BENCH_PID")?.try_into()?,
            _own: None,
        },
        Err(_) => {
            let server =
                Server::start_with(&["--ws-ping-interval", &ping.to_string(), "--handshake-rate", "0"])
                    .await?;
            Target { addr: server.addr, pid: server.pid(), _own: Some(server) }
        }
    };
    let users: Vec<String> = (0..max).map(|i| format!("idle{i}")).collect();
    let tokens = tokens(&users)?;

    println!(
        "chatd plain WebSocket (/ws), idle connections, one user each; server ping interval {ping} s, \
         settle {} s",
        settle.as_secs()
    );
    if conversations > 0 {
        let started = Instant::now();
        let groups = create_groups(target.addr, &users, conversations).await?;
        println!(
            "each user is in {conversations} groups of {GROUP_SIZE} (+ the creator, not connected): \
             {groups} groups created in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = rss(target.pid)?;
    let baseline_anon = status_field(target.pid, "RssAnon:")? * 1024;
    println!("baseline server RSS: {} ({} anonymous)\n", mib(baseline), mib(baseline_anon));
    println!(
        "{:>11} {:>8} {:>11} {:>10} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "connections", "open (s)", "RSS", "growth", "B/conn", "KB/conn", "marginal", "anon B/c", "threads"
    );

    let clients = Arc::new(Clients::default());
    let load = Load { addr: target.addr, concurrency, query, clients: clients.clone() };
    let mut readers = JoinSet::new();
    let mut opened = 0;
    let mut previous: Option<(usize, u64)> = None;
    for &count in &counts {
        let started = Instant::now();
        let failures = open_connections(&load, &tokens[opened..count], opened, &mut readers).await;
        opened = count;
        let open_secs = started.elapsed().as_secs_f64();
        if !failures.is_empty() {
            println!("  !! connections that failed while opening up to {count}:");
            let mut failures: Vec<_> = failures.into_iter().collect();
            failures.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            for (error, n) in failures.iter().take(10) {
                println!("  !! {n} × {error}");
            }
            if failures.len() > 10 {
                println!("  !! … and {} other errors", failures.len() - 10);
            }
        }
        tokio::time::sleep(settle).await;
        let connections = clients.open.load(Ordering::Relaxed);
        let now = rss(target.pid)?;
        let anon = (status_field(target.pid, "RssAnon:")? * 1024).saturating_sub(baseline_anon);
        let growth = now.saturating_sub(baseline);
        let per = growth as f64 / connections.max(1) as f64;
        let marginal = previous
            .filter(|(n, _)| connections > *n)
            .map(|(n, r)| format!("{:.0}", now.saturating_sub(r) as f64 / (connections - n) as f64))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>11} {:>8.1} {:>11} {:>10} {:>8.0} {:>8.2} {:>9} {:>9.0} {:>8}",
            connections,
            open_secs,
            mib(now),
            mib(growth),
            per,
            per / 1024.0,
            marginal,
            anon as f64 / connections.max(1) as f64,
            status_field(target.pid, "Threads:")?
        );
        if connections != count {
            println!("  !! {connections} of {count} connections are open");
        }
        clients.report();
        previous = Some((connections, now));
    }

    // Keepalive cost: CPU over whole ping rounds with everything idle.
    let connections = clients.open.load(Ordering::Relaxed);
    let cpu_before = cpu_time(target.pid)?;
    let pings_before = clients.pings.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(cpu_window).await;
    let cpu = cpu_time(target.pid)?.saturating_sub(cpu_before).as_secs_f64();
    let elapsed = started.elapsed().as_secs_f64();
    let pinged = clients.pings.load(Ordering::Relaxed) - pings_before;
    println!(
        "\nidle CPU at {connections} connections over {elapsed:.1} s: server {:.2}% of a core, \
         {pinged} pings answered, {:.1} µs server CPU per ping+pong",
        cpu / elapsed * 100.0,
        cpu * 1e6 / pinged.max(1) as f64
    );
    println!(
        "  (at chatd's default 25 s ping interval: {:.2}% of a core)",
        cpu * 1e6 / pinged.max(1) as f64 * connections as f64 / 25.0 / 1e6 * 100.0
    );

    // Close everything; what the server keeps afterwards.
    let started = Instant::now();
    clients.report();
    readers.shutdown().await;
    while clients.open.load(Ordering::Relaxed) > 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(settle).await;
    let after = rss(target.pid)?;
    println!(
        "after closing all: server RSS {} ({} over baseline)",
        mib(after),
        mib(after.saturating_sub(baseline))
    );
    Ok(())
}

/// Puts every user in `per_user` groups of [`GROUP_SIZE`], each round grouping them
/// differently (so users have different contacts), all created by one extra user over a few
/// keep-alive connections. Returns how many groups were created.
async fn create_groups(addr: SocketAddr, users: &[String], per_user: usize) -> anyhow::Result<usize> {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let n = users.len();
    let mut groups = Vec::new();
    let mut stride = 1;
    for round in 0..per_user {
        // Position j of this round's order is user j * stride + round: a permutation when
        // stride is coprime to n, and a different grouping for every stride.
        while gcd(stride, n) != 1 {
            stride += 1;
        }
        let order: Vec<&String> = (0..n).map(|j| &users[(j * stride + round) % n]).collect();
        groups.extend(
            order
                .chunks(GROUP_SIZE)
                .map(|members| serde_json::json!({"type": "group", "members": members}).to_string()),
        );
    }
    let owner = &tokens(&["bench-owner".to_owned()])?[0];
    let next = AtomicUsize::new(0);
    let create = |_| async {
        let mut connection = support::Connection::open(addr, owner).await?;
        loop {
            let Some(body) = groups.get(next.fetch_add(1, Ordering::Relaxed)) else { return Ok(()) };
            let (status, response) = connection.post("/api/conversations", body).await?;
            anyhow::ensure!(status == 201, "create group: {status} {}", String::from_utf8_lossy(&response));
        }
    };
    futures::future::try_join_all((0..16).map(create)).await?;
    Ok(groups.len())
}

/// Opens one idle connection per token, `concurrency` at a time, and leaves a reading task
/// for each in `readers`. Returns the errors of those that failed, counted by message.
async fn open_connections(
    load: &Load,
    tokens: &[String],
    first_index: usize,
    readers: &mut JoinSet<()>,
) -> BTreeMap<String, usize> {
    let Load { addr, concurrency, ref query, ref clients } = *load;
    let query = query.as_deref();
    let mut failures = BTreeMap::new();
    let mut pending = FuturesUnordered::new();
    let mut next = 0;
    loop {
        while pending.len() < concurrency && next < tokens.len() {
            let index = first_index + next;
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (index % SOURCES as usize) as u8));
            pending.push(connect(addr, source, &tokens[next], query, clients));
            next += 1;
        }
        let Some(result) = pending.next().await else { break };
        match result {
            Ok(socket) => {
                clients.open.fetch_add(1, Ordering::Relaxed);
                readers.spawn(idle(socket, clients.clone()));
            }
            Err(err) => *failures.entry(format!("{err:#}")).or_insert(0) += 1,
        }
    }
    failures
}

/// Connects from `source` and waits for the server's `ready` frame; then, with `query`,
/// sends it and waits for its ack (id 1).
async fn connect(
    addr: SocketAddr,
    source: IpAddr,
    token: &str,
    query: Option<&str>,
    clients: &Clients,
) -> anyhow::Result<Socket> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("bind {source}"))?;
    let stream = socket.connect(addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    let request = format!("ws://{addr}/ws?token={token}").into_client_request()?;
    // Small buffers: the load generator holds as many connections as the server.
    let config = WebSocketConfig::default().read_buffer_size(1024).write_buffer_size(0);
    let (mut socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .context("websocket handshake")?;
    let mut ready = false;
    while let Some(frame) = socket.next().await {
        match frame.context("waiting for ready")? {
            Frame::Text(text) if !ready && text.starts_with(r#"{"event":"ready""#) => {
                let Some(query) = query else { return Ok(socket) };
                ready = true;
                socket.send(Frame::text(query)).await?;
            }
            Frame::Text(text) if ready && text.starts_with(r#"{"id":1,"#) => {
                anyhow::ensure!(text.starts_with(r#"{"id":1,"ack":{"ok":true"#), "query failed: {text}");
                return Ok(socket);
            }
            Frame::Text(text) if !ready => {
                // Events of the user's contacts (user:online …) may come first.
                let event = text
                    .strip_prefix(r#"{"event":""#)
                    .and_then(|rest| rest.split('"').next())
                    .with_context(|| format!("unexpected frame before ready: {text}"))?;
                let mut early = clients.before_ready.lock().unwrap_or_else(|p| p.into_inner());
                *early.entry(event.to_owned()).or_insert(0) += 1;
            }
            Frame::Close(close) => bail!("closed before ready: {close:?}"),
            _ => {}
        }
    }
    bail!("connection ended before ready")
}

/// Reads until the connection ends (reading is what answers the server's pings).
async fn idle(mut socket: Socket, clients: Arc<Clients>) {
    /// Decrements the open count however the task ends (aborted included).
    struct Open(Arc<Clients>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let open = Open(clients);
    while let Some(frame) = socket.next().await {
        match frame {
            Ok(Frame::Ping(_)) => {
                open.0.pings.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Frame::Close(close)) => return open.0.lose(format!("closed by the server: {close:?}")),
            Ok(_) => {}
            Err(err) => return open.0.lose(format!("failed: {err}")),
        }
    }
    open.0.lose("ended without a close frame".into());
}

/// Resident set size of `pid`, bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    Ok(status_field(pid, "VmRSS:")? * 1024)
}

/// A numeric field of /proc/<pid>/status (kB for sizes).
fn status_field(pid: u32, name: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("server process gone")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {name} in /proc/{pid}/status"))
}

/// CPU time (user + system) `pid` has used so far.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc stat")?;
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).map(|f| f.parse().unwrap_or(0)).sum();
    Ok(Duration::from_millis(ticks * 1000 / 100)) // USER_HZ = 100
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
