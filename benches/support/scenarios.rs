//! The load generator's scenarios (issue 5), the same for every target:
//!
//! 1. **fanout**: clients in rooms of 10; every client sends `message:send` at a fixed rate,
//!    each from its own random start offset; the rate is stepped up until p99 exceeds the
//!    limit (100 ms), then bisected between the last passing and the first failing rate.
//!    Latency is send → `message:new` at each of the 9 other members (the sender gets the
//!    ack, not an echo, from every target). Deliveries that never arrive count as infinitely
//!    late.
//! 2. **acks**: senders in rooms of 2 send back to back (send, await the ack, repeat);
//!    acks/s and ack latency. Each message is also delivered to the partner.
//! 3. **storm**: clients in rooms of 10 (plus one sender client per 10 rooms that keeps
//!    sending); all clients drop at once (abortive close), stay away while messages keep
//!    coming, then reconnect (each after its own random delay within a jitter window, as
//!    socket.io-client's randomized reconnection delay does) and call `sync` with the last
//!    seq they hold until `has_more` is false. Reports the time until every client is caught
//!    up and, after the senders stop and everything lands, the messages lost: per client,
//!    every seq of its room up to the last acked one that it never received.
//! 4. **idle**: the server's memory per idle connection. Opens connections (each its own
//!    user, each waiting for the server's `ready`) up to each count in turn (10,000 then
//!    18,000: the fd limit here is 20,000 per process), lets them idle for a settle time of
//!    at least one ping round (the clients answer Engine.IO pings `2` with `3`, and WebSocket
//!    pings with pongs), and reads the server's VmRSS and RssAnon at each count against the
//!    baseline taken before the first connection: bytes per connection in all, and marginal
//!    between two counts (without one-time costs); the server's CPU over the last settle
//!    time (the keepalive); and the memory it keeps after every connection closed.
//! 5. **marketplace** (`marketplace.rs`): 10,000 clients in 5,000 direct conversations, every
//!    one sending with acks; the fan-out's rate climb, timed at the partner and at the ack.
//!
//! Connections are driven many per task ([`Mux`]), bound to source addresses
//! 127.0.0.2..=127.0.0.9, with TCP_NODELAY; everything is bounded in time and count.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::servers::{CpuReport, Launch, ServerProcess, Target, Usage, create_rooms};
use super::wire::{
    Conn, ENGINE_IO_PONG, Emit, Incoming, Mux, Proto, ack_ok, call, connect_client, decode, find_u64,
    push_text, source_for,
};

/// Everything a run is parameterised by.
#[derive(Clone, Debug)]
pub struct Config {
    pub target: Target,
    pub launch: Launch,
    pub smoke: bool,
    /// Members per fan-out room.
    pub room_size: usize,
    pub fanout_clients: usize,
    /// Messages per second per client, stepped through in order.
    pub rates: Vec<f64>,
    /// Extra steps bisecting between the last passing and the first failing rate.
    pub bisect: usize,
    /// Run a failing step a second time before believing it.
    pub retry_failed: bool,
    pub warmup: Duration,
    pub step: Duration,
    pub p99_limit_ms: f64,
    pub ack_senders: usize,
    pub ack_time: Duration,
    pub storm_clients: usize,
    /// Messages per second, all senders together.
    pub storm_rate: f64,
    pub storm_live: Duration,
    pub storm_offline: Duration,
    pub storm_jitter: Duration,
    /// Give up waiting for catch-up after this long.
    pub storm_timeout: Duration,
    /// Connections per task.
    pub per_task: usize,
    /// Idle connections: the counts to measure at, increasing.
    pub idle_counts: Vec<usize>,
    /// Idle connections: how long they idle before each measurement (at least one ping
    /// round: chatd's Socket.IO and plain-WS pings and the Node peer's come every 25 s).
    pub idle_settle: Duration,
    /// Idle connections: handshakes in flight at once.
    pub idle_concurrency: usize,
    /// The marketplace scenario's size and rates (see `marketplace.rs`).
    pub marketplace: super::marketplace::Settings,
}

impl Config {
    /// The full run's numbers.
    pub fn full(target: Target) -> Config {
        Config {
            target,
            launch: Launch::default(),
            smoke: false,
            room_size: 10,
            fanout_clients: 1000,
            rates: vec![0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0],
            bisect: 2,
            retry_failed: true,
            warmup: Duration::from_secs(1),
            step: Duration::from_secs(3),
            p99_limit_ms: 100.0,
            ack_senders: 256,
            ack_time: Duration::from_secs(5),
            storm_clients: 10_000,
            storm_rate: 1000.0,
            storm_live: Duration::from_secs(3),
            storm_offline: Duration::from_secs(2),
            storm_jitter: Duration::from_secs(1),
            storm_timeout: Duration::from_secs(90),
            per_task: 50,
            idle_counts: vec![10_000, 18_000],
            idle_settle: Duration::from_secs(30),
            idle_concurrency: 200,
            marketplace: super::marketplace::Settings::full(),
        }
    }

    /// Seconds, small numbers: proves every path works, measures nothing.
    pub fn smoke(target: Target) -> Config {
        Config {
            smoke: true,
            fanout_clients: 40,
            rates: vec![2.0, 8.0],
            bisect: 0,
            retry_failed: false,
            warmup: Duration::from_millis(300),
            step: Duration::from_millis(700),
            // Debug builds on a busy CI machine: only the plumbing is checked.
            p99_limit_ms: 5000.0,
            ack_senders: 8,
            ack_time: Duration::from_secs(1),
            storm_clients: 60,
            storm_rate: 100.0,
            storm_live: Duration::from_millis(500),
            storm_offline: Duration::from_millis(500),
            storm_jitter: Duration::from_millis(300),
            storm_timeout: Duration::from_secs(20),
            per_task: 16,
            idle_counts: vec![30, 60],
            idle_settle: Duration::from_millis(500),
            idle_concurrency: 16,
            marketplace: super::marketplace::Settings::smoke(),
            ..Config::full(target)
        }
    }
}

/// One scenario's outcome: a line of the results file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "scenario", rename_all = "lowercase")]
pub enum Record {
    Fanout(Fanout),
    Acks(Acks),
    Storm(Storm),
    Idle(Idle),
    /// The marketplace scenario: a rate climb like the fan-out's, over direct conversations.
    Marketplace(Fanout),
}

impl Record {
    pub fn target(&self) -> &str {
        match self {
            Record::Fanout(r) => &r.target,
            Record::Acks(r) => &r.target,
            Record::Storm(r) => &r.target,
            Record::Idle(r) => &r.target,
            Record::Marketplace(r) => &r.target,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fanout {
    pub target: String,
    pub smoke: bool,
    pub clients: usize,
    pub room_size: usize,
    pub warmup_secs: f64,
    pub step_secs: f64,
    pub p99_limit_ms: f64,
    /// In the order they ran.
    pub steps: Vec<FanoutStep>,
    pub server: Value,
}

impl Fanout {
    /// The passing step with the most deliveries per second.
    pub fn best(&self) -> Option<&FanoutStep> {
        self.steps.iter().filter(|s| s.pass).max_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FanoutStep {
    /// Messages per second per client.
    pub rate: f64,
    pub offered_sends_per_s: f64,
    pub sends_per_s: f64,
    pub deliveries_per_s: f64,
    pub expected: u64,
    pub delivered: u64,
    /// Latency quantiles in ms over every expected delivery; `None`: beyond the deliveries
    /// that arrived at all.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Median ack latency in ms (send → the sender's ack) over the window's sends that were
    /// acked; `None` in records written before acks were timed.
    #[serde(default)]
    pub ack_p50_ms: Option<f64>,
    /// The 99th percentile of the same.
    #[serde(default)]
    pub ack_p99_ms: Option<f64>,
    /// CPU use during the step.
    pub cpu: CpuReport,
    pub ack_errors: u64,
    pub closed: usize,
    /// Other pushes received per second (chatd's `notification`s), in all and by event.
    pub other_events_per_s: f64,
    #[serde(default)]
    pub other_events: std::collections::BTreeMap<String, f64>,
    /// The load generator's worst lateness against its send schedule, ms, and the share of
    /// sends more than 10 ms late: a stalled generator shows here.
    pub max_send_lag_ms: f64,
    pub late_send_share: f64,
    pub pass: bool,
    /// Why it did not pass.
    pub note: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Acks {
    pub target: String,
    pub smoke: bool,
    pub senders: usize,
    pub warmup_secs: f64,
    pub secs: f64,
    pub acks: u64,
    pub acks_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub deliveries_per_s: f64,
    pub cpu: CpuReport,
    pub server_us_per_ack: f64,
    pub server: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Storm {
    pub target: String,
    pub smoke: bool,
    pub clients: usize,
    pub rooms: usize,
    pub senders: usize,
    pub send_rate: f64,
    /// The initial connect of every client (before the storm), seconds.
    pub initial_connect_secs: f64,
    pub offline_secs: f64,
    pub jitter_secs: f64,
    /// From the reconnect signal until the last client's `sync` said `has_more: false`.
    pub caught_up_secs: Option<f64>,
    /// Per client, reconnect signal → caught up.
    pub caught_up_p50_secs: Option<f64>,
    pub caught_up_p99_secs: Option<f64>,
    pub caught_up: usize,
    pub reconnect_failures: u64,
    /// Failed reconnect attempts by kind.
    #[serde(default)]
    pub failure_kinds: std::collections::BTreeMap<String, u64>,
    /// Connections the server closed on its own (the client reconnected and synced).
    pub unexpected_closes: u64,
    pub sync_calls: u64,
    /// Messages acked to the senders (all of them, the storm's whole run).
    pub messages: u64,
    pub send_errors: u64,
    /// Messages acked while the clients were away (sent after the drop, before reconnect).
    pub messages_while_away: u64,
    /// Σ over clients of the seqs of its room up to the last acked one.
    pub expected_deliveries: u64,
    /// Clients not yet caught up when the loss check began (left out of `lost`).
    #[serde(default)]
    pub late_clients: usize,
    /// Of those, never received: neither live, nor by the reconnect `sync`, nor by a `sync`
    /// the client made on seeing a gap in the live seqs.
    pub lost: u64,
    /// Missing even after one more `sync` at the very end: not stored.
    pub not_stored: u64,
    /// Clients that made that last `sync`.
    pub verified: usize,
    pub clients_with_loss: usize,
    /// `sync`s made on seeing a gap in the live seqs (deliveries the server skipped).
    pub gap_syncs: u64,
    pub duplicates: u64,
    pub server_cpu_secs: f64,
    pub server_rss_mb: Option<f64>,
    pub server: Value,
}

/// Whether a failed step looks disturbed rather than saturated: the server had CPU to spare
/// (under 0.9 of its core), something else took a tenth of a core on either CPU, or the load
/// generator fell 100 ms behind its schedule.
fn noisy(step: &FanoutStep) -> bool {
    step.cpu.server < 0.9
        || step.cpu.server_cpu_others > 0.1
        || step.cpu.loadgen_cpu_others > 0.1
        || step.max_send_lag_ms > 100.0
}

/// `x` rounded to two significant digits.
fn two_digits(x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let decimals = (1 - x.log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}").parse().unwrap_or(x)
}

/// Microseconds since `clock`.
fn micros(clock: Instant) -> u64 {
    clock.elapsed().as_micros() as u64
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `q` quantile in ms of `sorted` µs values out of `total` expected (missing ones are
/// infinitely late).
fn quantile_ms(sorted: &[u32], total: usize, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let i = ((total as f64 * q).ceil() as usize).clamp(1, total) - 1;
    sorted.get(i).map(|us| f64::from(*us) / 1e3)
}

/// Users `user0..userN`, their tokens.
pub(super) fn users(n: usize, prefix: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let users: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let tokens = super::tokens(&users)?;
    Ok((users, tokens))
}

/// Connects `tokens.len()` clients (`concurrency` handshakes at a time), in order, client
/// `i` to `addrs[i % addrs.len()]` (round-robin over a cluster's nodes); for the ceiling
/// relay, each joins `joins[i]`.
pub(super) async fn connect_all(
    addrs: &[SocketAddr],
    target: Target,
    tokens: &[String],
    joins: Option<&[String]>,
    first_source: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Conn>> {
    let proto = target.proto();
    futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| async move {
            let addr = addrs[i % addrs.len()];
            let mut conn = connect_client(addr, proto, Some(source_for(first_source + i)), token)
                .await
                .with_context(|| format!("client {i}"))?;
            if let Some(joins) = joins {
                let body = call(
                    &mut conn,
                    proto,
                    "conversation:join",
                    &format!(r#"{{"conversation_id":"{}"}}"#, joins[i]),
                )
                .await?;
                ensure!(ack_ok(&body), "join: {}", String::from_utf8_lossy(&body));
            }
            anyhow::Ok(conn)
        })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Runs one scenario against a fresh server.
pub async fn run(config: &Config, scenario: &str) -> anyhow::Result<Record> {
    ensure!(
        matches!(scenario, "fanout" | "acks") || config.launch.attach.len() <= 1,
        "only the fan-out and ack scenarios drive several nodes"
    );
    match scenario {
        "fanout" => fanout(config).await.map(Record::Fanout),
        "acks" => acks(config).await.map(Record::Acks),
        "storm" => storm(config).await.map(Record::Storm),
        "idle" => idle(config).await.map(Record::Idle),
        "marketplace" => super::marketplace::run(config).await.map(Record::Marketplace),
        other => bail!("unknown scenario {other:?} (fanout, acks, storm, idle, marketplace)"),
    }
}

// ---------------------------------------------------------------------------- fan-out

#[derive(Clone, Copy, Debug, PartialEq)]
enum FanPhase {
    Idle,
    /// Send `rate` messages per second per client; measure messages sent in `from..to` (µs).
    Rate {
        rate: f64,
        from: u64,
        to: u64,
    },
}

#[derive(Default)]
struct FanStats {
    /// Latencies (µs) of deliveries of messages sent in the window.
    latencies: Vec<u32>,
    /// Latencies (µs) of the acks of messages sent in the window.
    ack_latencies: Vec<u32>,
    /// Sends in the window.
    sent: u64,
    /// Every `message:new` received, whenever sent.
    received: u64,
    ack_ok: u64,
    ack_errors: u64,
    first_error: Option<String>,
    closed: usize,
    /// Messages pushed that are not `message:new` (chatd's `notification`s).
    other_events: u64,
    /// The same by event name.
    other_by_name: Vec<(Vec<u8>, u64)>,
    /// How late sends went out (µs) against their schedule, at worst.
    max_send_lag: u64,
    /// Sends more than 10 ms late.
    late_sends: u64,
}

fn count_name(counts: &mut Vec<(Vec<u8>, u64)>, name: &[u8], n: u64) {
    match counts.iter_mut().find(|(known, _)| known == name) {
        Some((_, count)) => *count += n,
        None => counts.push((name.to_vec(), n)),
    }
}

/// A client of a rate climb: sends to its room at the step's rate, times every delivery it
/// receives and the ack of every send.
pub(super) struct FanClient {
    conn: Conn,
    room: String,
    next_id: u64,
    /// Sends not acked yet: their ack id and when they went out (µs).
    unacked: VecDeque<(u64, u64)>,
    closed: bool,
}

impl FanClient {
    /// A connected client that sends to `room`.
    pub(super) fn new(conn: Conn, room: String) -> FanClient {
        FanClient { conn, room, next_id: 0, unacked: VecDeque::new(), closed: false }
    }
}

/// What a rate climb drives: the fan-out scenario's rooms of 10, the marketplace's pairs.
pub(super) struct Shape {
    /// Clients, every one sending.
    pub clients: usize,
    /// Deliveries each message makes (room members other than the sender).
    pub recipients: u64,
    /// Messages per second per client, stepped through in order.
    pub rates: Vec<f64>,
    /// Sends the load generator may miss in a step's window, on top of 3 % of the offered
    /// rate, before it counts as having fallen behind.
    pub missed_sends_allowed: f64,
}

async fn fanout_task(
    mut clients: Vec<FanClient>,
    proto: Proto,
    clock: Instant,
    mut phase_rx: watch::Receiver<FanPhase>,
    stats: Arc<Mutex<FanStats>>,
) {
    let mux = Mux::new(clients.len());
    let mut ready = Vec::new();
    let mut emit = Emit::default();
    let mut schedule: VecDeque<(tokio::time::Instant, usize)> = VecDeque::new();
    let mut period = Duration::from_secs(1);
    let mut phase = FanPhase::Idle;
    let mut window = (u64::MAX, 0);
    let mut local = FanStats::default();
    loop {
        let next_due = schedule.front().map(|(due, _)| *due);
        tokio::select! {
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                phase = *phase_rx.borrow_and_update();
                schedule.clear();
                if let FanPhase::Rate { rate, from, to } = phase {
                    window = (from, to);
                    period = Duration::from_secs_f64(1.0 / rate);
                    let now = tokio::time::Instant::now();
                    let mut starts: Vec<(tokio::time::Instant, usize)> = (0..clients.len())
                        .map(|i| (now + period.mul_f64(rand::random::<f64>()), i))
                        .collect();
                    starts.sort_unstable();
                    schedule.extend(starts);
                }
            }
            () = mux.ready() => {
                mux.take(&mut ready);
                // The last window stays in force after sending stops: its late deliveries count.
                let (from, to) = window;
                for &i in &ready {
                    let FanClient { conn, unacked, closed, .. } = &mut clients[i];
                    if *closed {
                        continue;
                    }
                    conn.pump(mux.waker(i), |message, out| match decode(proto, message) {
                        Incoming::Event(b"message:new", data) => {
                            local.received += 1;
                            if let Some(sent) = find_u64(data, b"\"content\":\"t=") {
                                // Deliveries of messages sent in an earlier step fall outside.
                                if sent >= from && sent < to {
                                    let latency = micros(clock).saturating_sub(sent);
                                    local.latencies.push(latency.min(u64::from(u32::MAX)) as u32);
                                }
                            }
                        }
                        Incoming::Event(name, _) => {
                            // Counted when they arrive within the window.
                            let now = micros(clock);
                            if now >= from && now < to {
                                local.other_events += 1;
                                count_name(&mut local.other_by_name, name, 1);
                            }
                        }
                        Incoming::Ack(id, body) => {
                            if let Some(at) = unacked.iter().position(|(sent_id, _)| *sent_id == id)
                                && let Some((_, sent)) = unacked.remove(at)
                                && sent >= from
                                && sent < to
                            {
                                let latency = micros(clock).saturating_sub(sent);
                                local.ack_latencies.push(latency.min(u64::from(u32::MAX)) as u32);
                            }
                            if ack_ok(body) {
                                local.ack_ok += 1;
                            } else {
                                local.ack_errors += 1;
                                local.first_error.get_or_insert_with(|| String::from_utf8_lossy(body).into_owned());
                            }
                        }
                        Incoming::Ping => push_text(out, ENGINE_IO_PONG),
                        _ => {}
                    });
                    if conn.closed {
                        *closed = true;
                        local.closed += 1;
                    }
                }
            }
            () = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)), if next_due.is_some() => {
                let FanPhase::Rate { from, to, .. } = phase else { continue };
                let now = tokio::time::Instant::now();
                while let Some(&(due, i)) = schedule.front() {
                    if due > now {
                        break;
                    }
                    schedule.pop_front();
                    schedule.push_back((due + period, i));
                    let client = &mut clients[i];
                    if client.closed {
                        continue;
                    }
                    client.next_id += 1;
                    let sent = micros(clock);
                    let room = &client.room;
                    emit.event(client.conn.out(), proto, "message:send", client.next_id, |s| {
                        let _ = write!(s, r#"{{"conversation_id":"{room}","content":"t={sent}"}}"#);
                    });
                    client.unacked.push_back((client.next_id, sent));
                    client.conn.flush(mux.waker(i));
                    if sent >= from && sent < to {
                        local.sent += 1;
                        let lag = now.saturating_duration_since(due).as_micros() as u64;
                        local.max_send_lag = local.max_send_lag.max(lag);
                        local.late_sends += u64::from(lag > 10_000);
                    }
                }
            }
        }
        let mut shared = lock(&stats);
        shared.latencies.append(&mut local.latencies);
        shared.ack_latencies.append(&mut local.ack_latencies);
        shared.sent += std::mem::take(&mut local.sent);
        shared.received += std::mem::take(&mut local.received);
        shared.ack_ok += std::mem::take(&mut local.ack_ok);
        shared.ack_errors += std::mem::take(&mut local.ack_errors);
        shared.closed += std::mem::take(&mut local.closed);
        shared.other_events += std::mem::take(&mut local.other_events);
        for (name, n) in local.other_by_name.drain(..) {
            count_name(&mut shared.other_by_name, &name, n);
        }
        shared.late_sends += std::mem::take(&mut local.late_sends);
        shared.max_send_lag = shared.max_send_lag.max(std::mem::take(&mut local.max_send_lag));
        if shared.first_error.is_none() {
            shared.first_error = local.first_error.take();
        }
    }
}

/// Sum over tasks, taking the window's samples.
fn take_fan_stats(all: &[Arc<Mutex<FanStats>>]) -> FanStats {
    let mut total = FanStats::default();
    for stats in all {
        let mut s = lock(stats);
        total.latencies.append(&mut s.latencies);
        total.ack_latencies.append(&mut s.ack_latencies);
        total.sent += std::mem::take(&mut s.sent);
        total.received += s.received;
        total.ack_ok += s.ack_ok;
        total.ack_errors += std::mem::take(&mut s.ack_errors);
        total.closed += s.closed;
        total.other_events += std::mem::take(&mut s.other_events);
        for (name, n) in s.other_by_name.drain(..) {
            count_name(&mut total.other_by_name, &name, n);
        }
        total.late_sends += std::mem::take(&mut s.late_sends);
        total.max_send_lag = total.max_send_lag.max(std::mem::take(&mut s.max_send_lag));
        if total.first_error.is_none() {
            total.first_error = s.first_error.take();
        }
    }
    total
}

fn peek_fan(all: &[Arc<Mutex<FanStats>>]) -> (u64, usize, u64) {
    all.iter().fold((0, 0, 0), |(lat, closed, received), s| {
        let s = lock(s);
        (lat + s.latencies.len() as u64, closed + s.closed, received + s.received)
    })
}

async fn fanout(config: &Config) -> anyhow::Result<Fanout> {
    let target = config.target;
    let mut server = ServerProcess::start(target, &config.launch).await?;
    let addr = server.addr;
    let n = config.fanout_clients;
    let size = config.room_size;
    ensure!(n.is_multiple_of(size) && n >= size, "clients must be a multiple of the room size");
    let (users, tokens) = users(n, "user")?;
    let rooms: Vec<Vec<usize>> = (0..n / size).map(|r| (r * size..(r + 1) * size).collect()).collect();
    let room_ids = create_rooms(target, addr, &rooms, &users, &tokens).await?;
    let room_of: Vec<String> = (0..n).map(|i| room_ids[i / size].clone()).collect();
    let joins = (!target.has_rest()).then_some(&room_of[..]);
    // On a cluster, consecutive clients go to different nodes: every room spans the nodes.
    let conns = connect_all(&server.addrs, target, &tokens, joins, 0, 128).await?;
    println!(
        "{} fan-out: {n} clients in {} rooms of {size}, {} tasks{}; connected",
        target.key(),
        rooms.len(),
        n.div_ceil(config.per_task),
        match server.addrs.len() {
            1 => String::new(),
            nodes => format!(", round-robin over {nodes} nodes"),
        }
    );
    let clients = conns.into_iter().zip(room_of).map(|(conn, room)| FanClient::new(conn, room)).collect();
    let shape = Shape {
        clients: n,
        recipients: size as u64 - 1,
        rates: config.rates.clone(),
        // Each client may lose one send to the window's edges.
        missed_sends_allowed: n as f64,
    };
    let steps = climb(config, &mut server, clients, &shape).await?;
    Ok(Fanout {
        target: target.key().into(),
        smoke: config.smoke,
        clients: n,
        room_size: size,
        warmup_secs: config.warmup.as_secs_f64(),
        step_secs: config.step.as_secs_f64(),
        p99_limit_ms: config.p99_limit_ms,
        steps,
        server: server.describe(),
    })
}

/// Drives `clients` (one task per `config.per_task` of them) through steps of a fixed send
/// rate per client, each from its own random offset: up `shape.rates` until p99 exceeds the
/// limit (a failing step is run again before it is believed), then bisecting between the
/// last passing and the first failing rate. Returns every step, in the order they ran.
pub(super) async fn climb(
    config: &Config,
    server: &mut ServerProcess,
    mut clients: Vec<FanClient>,
    shape: &Shape,
) -> anyhow::Result<Vec<FanoutStep>> {
    let proto = config.target.proto();
    let clock = Instant::now();
    let (phase_tx, phase_rx) = watch::channel(FanPhase::Idle);
    let mut all_stats = Vec::new();
    let mut tasks = Vec::new();
    while !clients.is_empty() {
        let rest = clients.split_off(clients.len().min(config.per_task));
        let stats = Arc::new(Mutex::new(FanStats::default()));
        all_stats.push(stats.clone());
        tasks.push(tokio::spawn(fanout_task(clients, proto, clock, phase_rx.clone(), stats)));
        clients = rest;
    }

    println!(
        "{:>8} {:>9} {:>9} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7}  note",
        "msg/s/cl",
        "offered/s",
        "sends/s",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "ack p99",
        "server",
        "+cpu0",
        "loadgen",
        "+cpu1",
        "lag ms"
    );
    let mut steps: Vec<FanoutStep> = Vec::new();
    let mut list = shape.rates.iter().copied();
    // The highest passing and the lowest failing rate so far.
    let (mut low, mut high): (Option<f64>, Option<f64>) = (None, None);
    let mut bisections = 0;
    loop {
        let rate = match high {
            None => match list.find(|r| low.is_none_or(|low| *r > low)) {
                Some(rate) => rate,
                None => break,
            },
            Some(high) => {
                let low = low.unwrap_or(0.0);
                let mid = two_digits((low + high) / 2.0);
                if bisections >= config.bisect || mid <= low || mid >= high {
                    break;
                }
                bisections += 1;
                mid
            }
        };
        let mut step = fanout_step(config, shape, server, clock, &phase_tx, &all_stats, rate).await?;
        print_step(&step);
        // This machine is shared: a noisy step must not end the climb. A failing step runs
        // again, and a third time if the second failure does not look like saturation.
        let mut attempts = 1;
        while !step.pass
            && step.closed == 0
            && config.retry_failed
            && (attempts == 1 || (attempts == 2 && noisy(&step)))
        {
            steps.push(step);
            step = fanout_step(config, shape, server, clock, &phase_tx, &all_stats, rate).await?;
            print_step(&step);
            attempts += 1;
        }
        let (pass, dead) = (step.pass, step.closed > 0);
        steps.push(step);
        if dead {
            break;
        }
        if pass {
            low = Some(low.map_or(rate, |low| low.max(rate)));
        } else {
            high = Some(high.map_or(rate, |high| high.min(rate)));
        }
    }
    drop(phase_tx);
    for task in tasks {
        let _ = task.await;
    }
    Ok(steps)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "lost".into(), |v| format!("{v:.2}"))
}

fn print_step(s: &FanoutStep) {
    println!(
        "{:>8} {:>9.0} {:>9.0} {:>12.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.1}  {}",
        s.rate,
        s.offered_sends_per_s,
        s.sends_per_s,
        s.deliveries_per_s,
        fmt_ms(s.p50_ms),
        fmt_ms(s.p99_ms),
        fmt_ms(s.p999_ms),
        fmt_ms(s.max_ms),
        fmt_ms(s.ack_p99_ms),
        s.cpu.server,
        s.cpu.server_cpu_softirq + s.cpu.server_cpu_others,
        s.cpu.loadgen,
        s.cpu.loadgen_cpu_softirq + s.cpu.loadgen_cpu_others,
        s.max_send_lag_ms,
        if s.pass { "ok" } else { &s.note }
    );
}

async fn fanout_step(
    config: &Config,
    shape: &Shape,
    server: &mut ServerProcess,
    clock: Instant,
    phase_tx: &watch::Sender<FanPhase>,
    all_stats: &[Arc<Mutex<FanStats>>],
    rate: f64,
) -> anyhow::Result<FanoutStep> {
    let from = micros(clock) + config.warmup.as_micros() as u64;
    let to = from + config.step.as_micros() as u64;
    take_fan_stats(all_stats); // only samples of this step's window are recorded from here on
    phase_tx.send(FanPhase::Rate { rate, from, to })?;
    tokio::time::sleep_until(tokio::time::Instant::from_std(clock + Duration::from_micros(from))).await;
    let before = Usage::now(server);
    tokio::time::sleep_until(tokio::time::Instant::from_std(clock + Duration::from_micros(to))).await;
    let after = Usage::now(server);
    phase_tx.send(FanPhase::Idle)?;
    let secs = config.step.as_secs_f64();

    // Wait for the window's deliveries: all of them, or until the laggards are hopeless.
    let size = shape.recipients;
    let drain_until = Instant::now() + Duration::from_secs(2).max(config.step / 2);
    loop {
        let sent: u64 = all_stats.iter().map(|s| lock(s).sent).sum();
        let (delivered, closed, _) = peek_fan(all_stats);
        if delivered >= sent * size || closed > 0 || Instant::now() > drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut window = take_fan_stats(all_stats);
    // Let any backlog clear before the next step.
    let quiet_until = Instant::now() + Duration::from_secs(15);
    let mut last = peek_fan(all_stats).2;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = peek_fan(all_stats).2;
        if now == last || Instant::now() > quiet_until {
            break;
        }
        last = now;
    }
    if !server.alive() {
        bail!("the server exited during the fan-out step at {rate} msg/s per client");
    }

    window.latencies.sort_unstable();
    window.ack_latencies.sort_unstable();
    let acked = window.ack_latencies.len();
    let expected = window.sent * size;
    let total = expected.max(window.latencies.len() as u64) as usize;
    let delivered = window.latencies.len() as u64;
    let offered = rate * shape.clients as f64;
    let sends_per_s = window.sent as f64 / secs;
    let p99 = quantile_ms(&window.latencies, total, 0.99);
    let mut notes = Vec::new();
    if p99.is_none_or(|p| p > config.p99_limit_ms) {
        notes.push(format!("p99 > {} ms", config.p99_limit_ms));
    }
    if delivered < expected {
        notes.push(format!("{} deliveries missing after the drain", expected - delivered));
    }
    if (window.sent as f64 + shape.missed_sends_allowed) / secs < 0.97 * offered {
        notes.push("load generator fell behind the offered rate".into());
    }
    if window.ack_errors > 0 {
        notes.push(format!("{} error acks: {}", window.ack_errors, window.first_error.unwrap_or_default()));
    }
    if window.closed > 0 {
        notes.push(format!("{} connections closed by the server", window.closed));
    }
    Ok(FanoutStep {
        rate,
        offered_sends_per_s: offered,
        sends_per_s,
        deliveries_per_s: delivered as f64 / secs,
        expected,
        delivered,
        p50_ms: quantile_ms(&window.latencies, total, 0.5),
        p99_ms: p99,
        p999_ms: quantile_ms(&window.latencies, total, 0.999),
        max_ms: quantile_ms(&window.latencies, total, 1.0),
        ack_p50_ms: quantile_ms(&window.ack_latencies, acked, 0.5),
        ack_p99_ms: quantile_ms(&window.ack_latencies, acked, 0.99),
        cpu: after.since(&before, config.launch.cpu, secs),
        ack_errors: window.ack_errors,
        closed: window.closed,
        other_events_per_s: window.other_events as f64 / secs,
        other_events: window
            .other_by_name
            .iter()
            .map(|(name, n)| (String::from_utf8_lossy(name).into_owned(), *n as f64 / secs))
            .collect(),
        max_send_lag_ms: window.max_send_lag as f64 / 1e3,
        late_send_share: window.late_sends as f64 / window.sent.max(1) as f64,
        pass: notes.is_empty(),
        note: notes.join("; "),
    })
}

// ---------------------------------------------------------------------------- acks

#[derive(Clone, Copy, Debug, PartialEq)]
enum AckPhase {
    Idle,
    /// Send back to back; measure acks that complete in `from..to` (µs).
    Flood {
        from: u64,
        to: u64,
    },
}

#[derive(Default)]
struct AckStats {
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    deliveries: u64,
    in_flight: usize,
    closed: usize,
}

struct AckClient {
    conn: Conn,
    room: String,
    next_id: u64,
    /// The outstanding send: its id and when it went out.
    waiting: Option<(u64, Instant)>,
    closed: bool,
}

fn send_ack_probe(client: &mut AckClient, emit: &mut Emit, proto: Proto, waker: &std::task::Waker) {
    client.next_id += 1;
    let id = client.next_id;
    let room = &client.room;
    emit.event(client.conn.out(), proto, "message:send", id, |s| {
        let _ = write!(s, r#"{{"conversation_id":"{room}","content":"ack probe {id}"}}"#);
    });
    client.waiting = Some((id, Instant::now()));
    client.conn.flush(waker);
}

async fn acks_task(
    mut clients: Vec<AckClient>,
    proto: Proto,
    clock: Instant,
    mut phase_rx: watch::Receiver<AckPhase>,
    stats: Arc<Mutex<AckStats>>,
) {
    let mux = Mux::new(clients.len());
    let mut ready = Vec::new();
    let mut emit = Emit::default();
    let mut phase = AckPhase::Idle;
    let mut local = AckStats::default();
    loop {
        tokio::select! {
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                phase = *phase_rx.borrow_and_update();
                if matches!(phase, AckPhase::Flood { .. }) {
                    for (i, client) in clients.iter_mut().enumerate() {
                        if client.waiting.is_none() && !client.closed {
                            send_ack_probe(client, &mut emit, proto, mux.waker(i));
                        }
                    }
                }
            }
            () = mux.ready() => {
                mux.take(&mut ready);
                for &i in &ready {
                    let client = &mut clients[i];
                    if client.closed {
                        continue;
                    }
                    let mut answered = None;
                    let waiting = client.waiting;
                    client.conn.pump(mux.waker(i), |message, out| match decode(proto, message) {
                        Incoming::Ack(id, body) if waiting.is_some_and(|(w, _)| w == id) => {
                            answered = Some(ack_ok(body));
                            if !ack_ok(body) {
                                local.first_error.get_or_insert_with(|| String::from_utf8_lossy(body).into_owned());
                            }
                        }
                        Incoming::Event(b"message:new", _) => local.deliveries += 1,
                        Incoming::Ping => push_text(out, ENGINE_IO_PONG),
                        _ => {}
                    });
                    if let Some(ok) = answered {
                        let (_, since) = client.waiting.take().unwrap_or((0, Instant::now()));
                        let done = micros(clock);
                        if let AckPhase::Flood { from, to } = phase {
                            if done >= from && done < to {
                                if ok {
                                    local.latencies.push(since.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                                } else {
                                    local.errors += 1;
                                }
                            }
                            send_ack_probe(client, &mut emit, proto, mux.waker(i));
                        }
                    }
                    if client.conn.closed {
                        client.closed = true;
                        local.closed += 1;
                    }
                }
            }
        }
        let mut shared = lock(&stats);
        shared.latencies.append(&mut local.latencies);
        shared.errors += std::mem::take(&mut local.errors);
        shared.deliveries += std::mem::take(&mut local.deliveries);
        shared.closed += std::mem::take(&mut local.closed);
        shared.in_flight = clients.iter().filter(|c| c.waiting.is_some() && !c.closed).count();
        if shared.first_error.is_none() {
            shared.first_error = local.first_error.take();
        }
    }
}

async fn acks(config: &Config) -> anyhow::Result<Acks> {
    let target = config.target;
    let mut server = ServerProcess::start(target, &config.launch).await?;
    let addr = server.addr;
    let n = config.ack_senders.max(2) & !1;
    let (users, tokens) = users(n, "sender")?;
    let rooms: Vec<Vec<usize>> = (0..n / 2).map(|r| vec![2 * r, 2 * r + 1]).collect();
    let room_ids = create_rooms(target, addr, &rooms, &users, &tokens).await?;
    let room_of: Vec<String> = (0..n).map(|i| room_ids[i / 2].clone()).collect();
    let joins = (!target.has_rest()).then_some(&room_of[..]);
    // Attached to a cluster: the two members of a room are on different nodes.
    let conns = connect_all(&server.addrs, target, &tokens, joins, 0, 128).await?;
    println!("{} acks: {n} senders in {} rooms of 2, back to back", target.key(), rooms.len());

    let clock = Instant::now();
    let (phase_tx, phase_rx) = watch::channel(AckPhase::Idle);
    let mut all_stats = Vec::new();
    let mut tasks = Vec::new();
    let mut clients: Vec<AckClient> = conns
        .into_iter()
        .zip(room_of)
        .map(|(conn, room)| AckClient { conn, room, next_id: 0, waiting: None, closed: false })
        .collect();
    while !clients.is_empty() {
        let rest = clients.split_off(clients.len().min(config.per_task));
        let stats = Arc::new(Mutex::new(AckStats::default()));
        all_stats.push(stats.clone());
        tasks.push(tokio::spawn(acks_task(clients, target.proto(), clock, phase_rx.clone(), stats)));
        clients = rest;
    }
    let from = micros(clock) + config.warmup.as_micros() as u64;
    let to = from + config.ack_time.as_micros() as u64;
    phase_tx.send(AckPhase::Flood { from, to })?;
    tokio::time::sleep_until(tokio::time::Instant::from_std(clock + Duration::from_micros(from))).await;
    let before = Usage::now(&server);
    for s in &all_stats {
        lock(s).deliveries = 0;
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(clock + Duration::from_micros(to))).await;
    let after = Usage::now(&server);
    let deliveries: u64 = all_stats.iter().map(|s| lock(s).deliveries).sum();
    phase_tx.send(AckPhase::Idle)?;
    let settle = Instant::now() + Duration::from_secs(10);
    while all_stats.iter().map(|s| lock(s).in_flight).sum::<usize>() > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !server.alive() {
        bail!("the server exited during the ack run");
    }
    drop(phase_tx);
    for task in tasks {
        let _ = task.await;
    }
    let mut latencies = Vec::new();
    let (mut errors, mut first_error, mut closed) = (0, None, 0);
    for s in &all_stats {
        let mut s = lock(s);
        latencies.append(&mut s.latencies);
        errors += s.errors;
        closed += s.closed;
        if first_error.is_none() {
            first_error = s.first_error.take();
        }
    }
    if closed > 0 {
        first_error.get_or_insert_with(|| format!("{closed} connections closed by the server"));
    }
    latencies.sort_unstable();
    let secs = config.ack_time.as_secs_f64();
    let acks = latencies.len() as u64;
    let q = |q| quantile_ms(&latencies, latencies.len(), q).unwrap_or(0.0);
    let cpu = after.since(&before, config.launch.cpu, secs);
    let record = Acks {
        target: target.key().into(),
        smoke: config.smoke,
        senders: n,
        warmup_secs: config.warmup.as_secs_f64(),
        secs,
        acks,
        acks_per_s: acks as f64 / secs,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: q(1.0),
        errors: errors + closed as u64,
        first_error,
        deliveries_per_s: deliveries as f64 / secs,
        server_us_per_ack: cpu.server * secs * 1e6 / (acks.max(1) as f64),
        cpu,
        server: server.describe(),
    };
    println!(
        "{:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>12} {:>7}",
        "acks", "acks/s", "p50 ms", "p99 ms", "p999 ms", "max ms", "server", "server µs/ack", "errors"
    );
    println!(
        "{:>9} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.2} {:>12.1} {:>7}",
        record.acks,
        record.acks_per_s,
        record.p50_ms,
        record.p99_ms,
        record.p999_ms,
        record.max_ms,
        record.cpu.server,
        record.server_us_per_ack,
        record.errors
    );
    Ok(record)
}

// ---------------------------------------------------------------------------- storm

#[derive(Clone, Copy, Debug, PartialEq)]
enum StormPhase {
    Live,
    /// Every client drops its connection now.
    Drop,
    /// Reconnect, each at `at` (µs) plus its own random delay up to `jitter` µs.
    Reconnect {
        at: u64,
        jitter: u64,
    },
    /// Senders stop sending (clients keep receiving).
    StopSending,
    /// Everything has landed: note what each client holds, then `sync` once more to see
    /// whether what is missing was stored at all.
    Verify,
    /// Report and end.
    Finish,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ClientState {
    Live,
    Down,
    Connecting,
    /// The `sync` after a reconnect is running.
    Syncing,
    CaughtUp,
}

/// Why a `sync` is in flight.
#[derive(Clone, Copy, Debug, PartialEq)]
enum SyncReason {
    Reconnect,
    /// A live `message:new` skipped a seq: the contract's cue to `sync`.
    Gap,
    Verify,
}

struct StormClient {
    conn: Option<Conn>,
    /// Index into the token list (and source address).
    index: usize,
    room: usize,
    /// Times each seq of the room was received.
    got: Vec<u8>,
    /// Every seq up to this one has been received.
    contiguous: u64,
    /// The highest seq seen.
    highest: u64,
    state: ClientState,
    next_id: u64,
    /// The `sync` in flight: its id and why.
    sync: Option<(u64, SyncReason)>,
    caught_up_at: Option<u64>,
    /// `got` as it was before the verifying `sync`.
    before_verify: Option<Vec<u8>>,
    verified: bool,
}

impl StormClient {
    fn record(&mut self, seq: u64) {
        let at = seq as usize;
        if self.got.len() <= at {
            self.got.resize(at + 16, 0);
        }
        self.got[at] = self.got[at].saturating_add(1);
        self.highest = self.highest.max(seq);
        while self.got.get(self.contiguous as usize + 1).is_some_and(|n| *n > 0) {
            self.contiguous += 1;
        }
    }

    fn send_sync(
        &mut self,
        reason: SyncReason,
        emit: &mut Emit,
        proto: Proto,
        room_id: &str,
        waker: &std::task::Waker,
    ) {
        let Some(conn) = &mut self.conn else { return };
        self.next_id += 1;
        self.sync = Some((self.next_id, reason));
        let after = self.contiguous;
        emit.event(conn.out(), proto, "sync", self.next_id, |s| {
            let _ = write!(s, r#"{{"conversations":{{"{room_id}":{after}}}}}"#);
        });
        conn.flush(waker);
    }
}

#[derive(Deserialize)]
struct SyncAck {
    ok: bool,
    #[serde(default)]
    messages: Vec<SyncedMessage>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct SyncedMessage {
    seq: u64,
    conversation_id: String,
}

#[derive(Default)]
struct StormStats {
    caught_up: usize,
    verified: usize,
    unexpected_closes: u64,
    reconnect_failures: u64,
    sync_calls: u64,
    gap_syncs: u64,
    failure_kinds: Vec<(Vec<u8>, u64)>,
    first_error: Option<String>,
}

/// What a storm task hands back at the end, per client: its room, what it had received
/// before the verifying `sync` and after it, and when it was caught up.
type StormOutcome = Vec<(usize, Vec<u8>, Vec<u8>, Option<u64>)>;

/// How long one reconnect attempt may take before the client starts over.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The wait before reconnect attempt `attempt` + 1, as socket.io-client computes it by
/// default: 1 s doubling per attempt up to 5 s, ± 50 % at random.
fn backoff_us(attempt: usize) -> u64 {
    let base = (1_000_000u64 << attempt.saturating_sub(1).min(3)).min(5_000_000) as f64;
    (base * (0.5 + rand::random::<f64>())) as u64
}

/// Reconnects `i` at `at` µs (`due` is kept latest first).
fn schedule_reconnect(due: &mut Vec<(u64, usize)>, at: u64, i: usize) {
    due.push((at, i));
    due.sort_unstable_by(|a, b| b.cmp(a));
}

#[allow(clippy::too_many_arguments)]
async fn storm_task(
    mut clients: Vec<StormClient>,
    room_ids: Arc<Vec<String>>,
    tokens: Arc<Vec<String>>,
    addr: SocketAddr,
    proto: Proto,
    clock: Instant,
    mut phase_rx: watch::Receiver<StormPhase>,
    stats: Arc<Mutex<StormStats>>,
) -> StormOutcome {
    let mux = Mux::new(clients.len());
    let mut ready = Vec::new();
    let mut emit = Emit::default();
    let mut due: Vec<(u64, usize)> = Vec::new();
    let mut connecting = FuturesUnordered::new();
    let mut attempts = vec![0usize; clients.len()];
    let mut local = StormStats::default();
    let mut verifying = false;
    loop {
        let next_due =
            due.last().map(|(at, _)| tokio::time::Instant::from_std(clock + Duration::from_micros(*at)));
        tokio::select! {
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    return Vec::new();
                }
                let phase = *phase_rx.borrow_and_update();
                match phase {
                    StormPhase::Drop => {
                        for client in &mut clients {
                            if let Some(conn) = client.conn.take() {
                                conn.set_abortive_close();
                            }
                            client.state = ClientState::Down;
                            client.sync = None;
                        }
                        due.clear();
                    }
                    StormPhase::Reconnect { at, jitter } => {
                        for i in 0..clients.len() {
                            due.push((at + (rand::random::<f64>() * jitter as f64) as u64, i));
                        }
                        due.sort_unstable_by(|a, b| b.cmp(a));
                    }
                    StormPhase::Verify => {
                        verifying = true;
                        for (i, client) in clients.iter_mut().enumerate() {
                            client.before_verify = Some(client.got.clone());
                            if client.sync.is_none() && client.conn.is_some() {
                                local.sync_calls += 1;
                                client.send_sync(SyncReason::Verify, &mut emit, proto, &room_ids[client.room], mux.waker(i));
                            }
                        }
                    }
                    StormPhase::Finish => {
                        return clients
                            .into_iter()
                            .map(|c| (c.room, c.before_verify.unwrap_or_else(|| c.got.clone()), c.got, c.caught_up_at))
                            .collect();
                    }
                    StormPhase::Live | StormPhase::StopSending => {}
                }
            }
            () = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)), if next_due.is_some() => {
                let now = micros(clock);
                while due.last().is_some_and(|(at, _)| *at <= now) {
                    let Some((_, i)) = due.pop() else { break };
                    clients[i].state = ClientState::Connecting;
                    let token = tokens.clone();
                    let index = clients[i].index;
                    attempts[i] += 1;
                    let source = source_for(index + attempts[i]);
                    connecting.push(async move {
                        // Give up on an attempt after socket.io-client's default `timeout` and
                        // start over.
                        let attempt = connect_client(addr, proto, Some(source), &token[index]);
                        let result = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
                            Ok(result) => result,
                            Err(_) => Err(anyhow::anyhow!("no `ready` within {CONNECT_TIMEOUT:?}")),
                        };
                        (i, result)
                    });
                }
            }
            Some((i, result)) = connecting.next(), if !connecting.is_empty() => {
                match result {
                    Ok(conn) => {
                        let client = &mut clients[i];
                        client.conn = Some(conn);
                        client.state = ClientState::Syncing;
                        local.sync_calls += 1;
                        client.send_sync(SyncReason::Reconnect, &mut emit, proto, &room_ids[client.room], mux.waker(i));
                        mux.mark(i);
                    }
                    Err(err) => {
                        local.reconnect_failures += 1;
                        let text = format!("{err:#}");
                        let kind = if text.contains("no `ready` within") {
                            "timed out"
                        } else if text.contains("reset by peer") {
                            "connection reset"
                        } else if text.contains("refused") {
                            "connection refused"
                        } else if text.contains("closed") {
                            "closed by the server"
                        } else {
                            "other"
                        };
                        count_name(&mut local.failure_kinds, kind.as_bytes(), 1);
                        local.first_error.get_or_insert_with(|| format!("reconnect: {text}"));
                        // Back off like a client would, then try again.
                        let at = micros(clock) + backoff_us(attempts[i]);
                        schedule_reconnect(&mut due, at, i);
                        clients[i].state = ClientState::Down;
                    }
                }
            }
            () = mux.ready() => {
                mux.take(&mut ready);
                for &i in &ready {
                    let client = &mut clients[i];
                    let Some(mut conn) = client.conn.take() else { continue };
                    let mut sync_answer: Option<Vec<u8>> = None;
                    let sync_id = client.sync.map(|(id, _)| id);
                    let mut live = Vec::new();
                    conn.pump(mux.waker(i), |message, out| match decode(proto, message) {
                        Incoming::Event(b"message:new", data) => {
                            if let Some(seq) = find_u64(data, b"\"seq\":") {
                                live.push(seq);
                            }
                        }
                        Incoming::Ack(id, body) if Some(id) == sync_id => sync_answer = Some(body.to_vec()),
                        Incoming::Ping => push_text(out, ENGINE_IO_PONG),
                        _ => {}
                    });
                    let closed = conn.closed;
                    client.conn = Some(conn);
                    let room_id = &room_ids[client.room];
                    for seq in live {
                        client.record(seq);
                    }
                    if let Some(body) = sync_answer {
                        let reason = client.sync.take().map_or(SyncReason::Gap, |(_, reason)| reason);
                        match serde_json::from_slice::<SyncAck>(&body) {
                            Ok(ack) if ack.ok => {
                                for m in ack.messages.iter().filter(|m| &m.conversation_id == room_id) {
                                    client.record(m.seq);
                                }
                                if ack.has_more {
                                    local.sync_calls += 1;
                                    client.send_sync(reason, &mut emit, proto, room_id, mux.waker(i));
                                } else if reason == SyncReason::Verify {
                                    client.verified = true;
                                    local.verified += 1;
                                } else if client.state == ClientState::Syncing {
                                    client.state = ClientState::CaughtUp;
                                    if client.caught_up_at.is_none() {
                                        client.caught_up_at = Some(micros(clock));
                                        local.caught_up += 1;
                                    }
                                }
                            }
                            _ => {
                                local.first_error.get_or_insert_with(|| format!("sync: {}", String::from_utf8_lossy(&body)));
                                local.sync_calls += 1;
                                client.send_sync(reason, &mut emit, proto, room_id, mux.waker(i));
                            }
                        }
                    }
                    // A hole in what arrived (seqs are published in order, so a hole below the
                    // highest seq seen is a skipped delivery): sync, as the contract says.
                    if client.sync.is_none()
                        && client.contiguous < client.highest
                        && matches!(client.state, ClientState::Live | ClientState::CaughtUp)
                        && !verifying
                    {
                        local.gap_syncs += 1;
                        local.sync_calls += 1;
                        client.send_sync(SyncReason::Gap, &mut emit, proto, room_id, mux.waker(i));
                    }
                    if verifying && !client.verified && client.sync.is_none() {
                        local.sync_calls += 1;
                        client.send_sync(SyncReason::Verify, &mut emit, proto, room_id, mux.waker(i));
                    }
                    if closed && client.state != ClientState::Down {
                        // Not our doing: reconnect after a back-off, as a client would.
                        local.unexpected_closes += 1;
                        local.first_error.get_or_insert_with(|| "the server closed a client connection".into());
                        client.conn = None;
                        client.sync = None;
                        client.state = ClientState::Down;
                        let at = micros(clock) + backoff_us(attempts[i]);
                        schedule_reconnect(&mut due, at, i);
                    }
                }
            }
        }
        let mut shared = lock(&stats);
        shared.caught_up += std::mem::take(&mut local.caught_up);
        shared.verified += std::mem::take(&mut local.verified);
        shared.reconnect_failures += std::mem::take(&mut local.reconnect_failures);
        shared.unexpected_closes += std::mem::take(&mut local.unexpected_closes);
        shared.sync_calls += std::mem::take(&mut local.sync_calls);
        shared.gap_syncs += std::mem::take(&mut local.gap_syncs);
        for (kind, n) in local.failure_kinds.drain(..) {
            count_name(&mut shared.failure_kinds, &kind, n);
        }
        if shared.first_error.is_none() {
            shared.first_error = local.first_error.take();
        }
    }
}

#[derive(Default)]
struct SenderStats {
    acked: u64,
    errors: u64,
    first_error: Option<String>,
    in_flight: usize,
    /// Per room, the highest seq acked.
    room_max: HashMap<usize, u64>,
    /// Acks by the time they arrived (µs), to count what was sent while clients were away.
    ack_times: Vec<u64>,
}

struct Sender {
    conn: Conn,
    rooms: Vec<usize>,
    turn: usize,
    next_id: u64,
    in_flight: HashMap<u64, usize>,
}

async fn sender_task(
    mut senders: Vec<Sender>,
    room_ids: Arc<Vec<String>>,
    rate_each: f64,
    proto: Proto,
    clock: Instant,
    mut phase_rx: watch::Receiver<StormPhase>,
    stats: Arc<Mutex<SenderStats>>,
) {
    let mux = Mux::new(senders.len());
    let mut ready = Vec::new();
    let mut emit = Emit::default();
    let period = Duration::from_secs_f64(1.0 / rate_each);
    let now = tokio::time::Instant::now();
    let mut schedule: VecDeque<(tokio::time::Instant, usize)> = {
        let mut s: Vec<_> =
            (0..senders.len()).map(|i| (now + period.mul_f64(rand::random::<f64>()), i)).collect();
        s.sort_unstable();
        s.into()
    };
    let mut local = SenderStats::default();
    loop {
        let next_due = schedule.front().map(|(due, _)| *due);
        tokio::select! {
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                match *phase_rx.borrow_and_update() {
                    StormPhase::StopSending => schedule.clear(),
                    StormPhase::Finish => return,
                    _ => {}
                }
            }
            () = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)), if next_due.is_some() => {
                let now = tokio::time::Instant::now();
                while let Some(&(due, i)) = schedule.front() {
                    if due > now {
                        break;
                    }
                    schedule.pop_front();
                    schedule.push_back((due + period, i));
                    let sender = &mut senders[i];
                    sender.next_id += 1;
                    let room = sender.rooms[sender.turn % sender.rooms.len()];
                    sender.turn += 1;
                    sender.in_flight.insert(sender.next_id, room);
                    let room_id = &room_ids[room];
                    let id = sender.next_id;
                    emit.event(sender.conn.out(), proto, "message:send", sender.next_id, |s| {
                        let _ = write!(s, r#"{{"conversation_id":"{room_id}","content":"storm {id}"}}"#);
                    });
                    sender.conn.flush(mux.waker(i));
                }
            }
            () = mux.ready() => {
                mux.take(&mut ready);
                for &i in &ready {
                    let sender = &mut senders[i];
                    let mut acks = Vec::new();
                    sender.conn.pump(mux.waker(i), |message, out| match decode(proto, message) {
                        Incoming::Ack(id, body) => acks.push((id, ack_ok(body).then(|| find_u64(body, b"\"seq\":")).flatten(), body.to_vec())),
                        Incoming::Ping => push_text(out, ENGINE_IO_PONG),
                        _ => {}
                    });
                    for (id, seq, body) in acks {
                        let Some(room) = sender.in_flight.remove(&id) else { continue };
                        match seq {
                            Some(seq) => {
                                local.acked += 1;
                                local.ack_times.push(micros(clock));
                                let max = local.room_max.entry(room).or_default();
                                *max = (*max).max(seq);
                            }
                            None => {
                                local.errors += 1;
                                local.first_error.get_or_insert_with(|| String::from_utf8_lossy(&body).into_owned());
                            }
                        }
                    }
                    if sender.conn.closed {
                        local.first_error.get_or_insert_with(|| "the server closed a sender connection".into());
                        local.errors += sender.in_flight.len() as u64;
                        sender.in_flight.clear();
                    }
                }
            }
        }
        let mut shared = lock(&stats);
        shared.acked += std::mem::take(&mut local.acked);
        shared.errors += std::mem::take(&mut local.errors);
        shared.ack_times.append(&mut local.ack_times);
        for (room, seq) in local.room_max.drain() {
            let max = shared.room_max.entry(room).or_default();
            *max = (*max).max(seq);
        }
        shared.in_flight = senders.iter().map(|s| s.in_flight.len()).sum();
        if shared.first_error.is_none() {
            shared.first_error = local.first_error.take();
        }
    }
}

async fn storm(config: &Config) -> anyhow::Result<Storm> {
    let target = config.target;
    ensure!(target.has_rest(), "the storm needs a server with history (sync): not the ceiling relay");
    let mut server = ServerProcess::start(target, &config.launch).await?;
    let addr = server.addr;
    let size = config.room_size;
    let n = config.storm_clients / size * size;
    let room_count = n / size;
    // One sender client per 10 rooms, member (and owner) of those rooms.
    let sender_count = room_count.div_ceil(10);
    let (mut users, mut tokens) = users(n, "storm")?;
    let (sender_users, sender_tokens) = self::users(sender_count, "sender")?;
    users.extend(sender_users);
    tokens.extend(sender_tokens);
    let rooms: Vec<Vec<usize>> = (0..room_count)
        .map(|r| std::iter::once(n + r % sender_count).chain(r * size..(r + 1) * size).collect())
        .collect();
    let started = Instant::now();
    let room_ids = Arc::new(create_rooms(target, addr, &rooms, &users, &tokens).await?);
    println!(
        "{} storm: {n} clients in {room_count} rooms of {size}, {sender_count} senders at {} msg/s in all; rooms created in {:.1} s",
        target.key(),
        config.storm_rate,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let conns = connect_all(&[addr], target, &tokens[..n], None, 0, 256).await?;
    let initial_connect_secs = started.elapsed().as_secs_f64();
    let sender_conns = connect_all(&[addr], target, &tokens[n..], None, n, 64).await?;
    println!("  {n} clients connected in {initial_connect_secs:.1} s");

    let clock = Instant::now();
    let proto = target.proto();
    let tokens = Arc::new(tokens);
    let (phase_tx, phase_rx) = watch::channel(StormPhase::Live);
    let sender_stats = Arc::new(Mutex::new(SenderStats::default()));
    let mut sender_tasks = Vec::new();
    let mut senders: Vec<Sender> = sender_conns
        .into_iter()
        .enumerate()
        .map(|(s, conn)| Sender {
            conn,
            rooms: (0..room_count).filter(|r| r % sender_count == s).collect(),
            turn: 0,
            next_id: 0,
            in_flight: HashMap::new(),
        })
        .collect();
    let rate_each = config.storm_rate / sender_count as f64;
    while !senders.is_empty() {
        let rest = senders.split_off(senders.len().min(config.per_task));
        sender_tasks.push(tokio::spawn(sender_task(
            senders,
            room_ids.clone(),
            rate_each,
            proto,
            clock,
            phase_rx.clone(),
            sender_stats.clone(),
        )));
        senders = rest;
    }
    let mut all_stats = Vec::new();
    let mut tasks = Vec::new();
    let mut clients: Vec<StormClient> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| StormClient {
            conn: Some(conn),
            index: i,
            room: i / size,
            got: Vec::new(),
            contiguous: 0,
            highest: 0,
            state: ClientState::Live,
            next_id: 0,
            sync: None,
            caught_up_at: None,
            before_verify: None,
            verified: false,
        })
        .collect();
    while !clients.is_empty() {
        let rest = clients.split_off(clients.len().min(config.per_task));
        let stats = Arc::new(Mutex::new(StormStats::default()));
        all_stats.push(stats.clone());
        tasks.push(tokio::spawn(storm_task(
            clients,
            room_ids.clone(),
            tokens.clone(),
            addr,
            proto,
            clock,
            phase_rx.clone(),
            stats,
        )));
        clients = rest;
    }
    let cpu_before = server.cpu_time();
    tokio::time::sleep(config.storm_live).await;
    phase_tx.send(StormPhase::Drop)?;
    let dropped_at = micros(clock);
    println!("  live {:.1} s, dropped all {n}", config.storm_live.as_secs_f64());
    tokio::time::sleep(config.storm_offline).await;
    let reconnect_at = micros(clock);
    phase_tx
        .send(StormPhase::Reconnect { at: reconnect_at, jitter: config.storm_jitter.as_micros() as u64 })?;
    let deadline = Instant::now() + config.storm_timeout;
    let mut peak_rss = server.rss();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        peak_rss = peak_rss.max(server.rss());
        let caught_up: usize = all_stats.iter().map(|s| lock(s).caught_up).sum();
        if caught_up >= n || Instant::now() > deadline || !server.alive() {
            break;
        }
    }
    let caught_up: usize = all_stats.iter().map(|s| lock(s).caught_up).sum();
    println!(
        "  {caught_up} of {n} caught up {:.2} s after the reconnect signal",
        (micros(clock) - reconnect_at) as f64 / 1e6
    );
    // Keep sending a little after everyone is back, then let everything land.
    tokio::time::sleep(config.storm_offline / 2).await;
    phase_tx.send(StormPhase::StopSending)?;
    let settle = Instant::now() + Duration::from_secs(10);
    while lock(&sender_stats).in_flight > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(500).max(config.storm_offline / 2)).await;
    let cpu = server.cpu_time().saturating_sub(cpu_before);
    let verify_at = micros(clock);
    phase_tx.send(StormPhase::Verify)?;
    let settle = Instant::now() + Duration::from_secs(20);
    while all_stats.iter().map(|s| lock(s).verified).sum::<usize>() < n && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    phase_tx.send(StormPhase::Finish)?;
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await?);
    }
    for task in sender_tasks {
        task.await?;
    }
    let alive = server.alive();
    let senders = std::mem::take(&mut *lock(&sender_stats));
    let (mut expected, mut lost, mut duplicates, mut clients_with_loss) = (0u64, 0u64, 0u64, 0usize);
    let mut not_stored = 0u64;
    let mut catch_up: Vec<u64> = Vec::new();
    let missing = |got: &Vec<u8>, last: u64| {
        (1..=last as usize).filter(|&seq| got.get(seq).is_none_or(|n| *n == 0)).count() as u64
    };
    let mut late = 0usize;
    for (room, got, verified, caught_up_at) in &outcomes {
        let last = senders.room_max.get(room).copied().unwrap_or(0);
        if caught_up_at.is_none_or(|at| at > verify_at) {
            // Still reconnecting when the check began: not lost, late (counted apart).
            late += 1;
            if let Some(at) = caught_up_at {
                catch_up.push(at.saturating_sub(reconnect_at));
            }
            not_stored += missing(verified, last);
            continue;
        }
        expected += last;
        let missed = missing(got, last);
        lost += missed;
        if missed > 0 && std::env::var("STORM_DEBUG").is_ok() {
            let holes: Vec<usize> =
                (1..=last as usize).filter(|&seq| got.get(seq).is_none_or(|n| *n == 0)).collect();
            eprintln!("room {room} last {last} missing {holes:?}");
        }
        not_stored += missing(verified, last);
        clients_with_loss += usize::from(missed > 0);
        duplicates += got.iter().map(|n| u64::from(n.saturating_sub(1))).sum::<u64>();
        if let Some(at) = caught_up_at {
            catch_up.push(at.saturating_sub(reconnect_at));
        }
    }
    catch_up.sort_unstable();
    let stats = all_stats.iter().fold(StormStats::default(), |mut total, s| {
        let mut s = lock(s);
        total.reconnect_failures += s.reconnect_failures;
        total.unexpected_closes += s.unexpected_closes;
        total.sync_calls += s.sync_calls;
        total.gap_syncs += s.gap_syncs;
        for (kind, n) in s.failure_kinds.drain(..) {
            count_name(&mut total.failure_kinds, &kind, n);
        }
        total.verified += s.verified;
        if total.first_error.is_none() {
            total.first_error = s.first_error.take();
        }
        total
    });
    if let Some(err) = stats.first_error.as_ref().or(senders.first_error.as_ref()) {
        println!("  first error: {err}");
    }
    let secs = |us: Option<&u64>| us.map(|us| *us as f64 / 1e6);
    let record = Storm {
        target: target.key().into(),
        smoke: config.smoke,
        clients: n,
        rooms: room_count,
        senders: sender_count,
        send_rate: config.storm_rate,
        initial_connect_secs,
        offline_secs: config.storm_offline.as_secs_f64(),
        jitter_secs: config.storm_jitter.as_secs_f64(),
        caught_up_secs: (catch_up.len() == n).then(|| secs(catch_up.last())).flatten(),
        caught_up_p50_secs: secs(catch_up.get(catch_up.len() / 2)),
        caught_up_p99_secs: secs(
            catch_up.get((catch_up.len() * 99 / 100).min(catch_up.len().saturating_sub(1))),
        ),
        caught_up: catch_up.len(),
        reconnect_failures: stats.reconnect_failures,
        failure_kinds: stats
            .failure_kinds
            .iter()
            .map(|(kind, n)| (String::from_utf8_lossy(kind).into_owned(), *n))
            .collect(),
        unexpected_closes: stats.unexpected_closes,
        sync_calls: stats.sync_calls,
        messages: senders.acked,
        send_errors: senders.errors,
        messages_while_away: senders
            .ack_times
            .iter()
            .filter(|t| **t > dropped_at && **t < reconnect_at)
            .count() as u64,
        expected_deliveries: expected,
        late_clients: late,
        lost,
        not_stored,
        verified: stats.verified,
        clients_with_loss,
        gap_syncs: stats.gap_syncs,
        duplicates,
        server_cpu_secs: cpu.as_secs_f64(),
        server_rss_mb: peak_rss.map(|b| b as f64 / (1 << 20) as f64),
        server: server.describe(),
    };
    println!(
        "  caught up: all after {} s (p50 {} s, p99 {} s); {} messages ({} while away), {} expected deliveries, lost {} (not stored {}), gap syncs {}, duplicates {}, sync calls {}, reconnect failures {}, send errors {}",
        record.caught_up_secs.map_or("-".into(), |s| format!("{s:.2}")),
        record.caught_up_p50_secs.map_or("-".into(), |s| format!("{s:.2}")),
        record.caught_up_p99_secs.map_or("-".into(), |s| format!("{s:.2}")),
        record.messages,
        record.messages_while_away,
        record.expected_deliveries,
        record.lost,
        record.not_stored,
        record.gap_syncs,
        record.duplicates,
        record.sync_calls,
        record.reconnect_failures,
        record.send_errors
    );
    if !alive {
        bail!("the server exited during the storm");
    }
    Ok(record)
}

// ---------------------------------------------------------------------------- idle

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Idle {
    pub target: String,
    pub smoke: bool,
    pub settle_secs: f64,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// The server's VmRSS and RssAnon before the first connection, bytes.
    pub baseline_rss: u64,
    pub baseline_anon: u64,
    /// One per count, in order.
    pub points: Vec<IdlePoint>,
    /// After every connection closed (and a settle), bytes.
    pub after_close_rss: Option<u64>,
    pub after_close_anon: Option<u64>,
    /// Handshakes that failed (or did not see `ready` within 30 s), and the first error.
    pub connect_failures: u64,
    pub first_failure: Option<String>,
    /// Connections the server closed while they idled.
    pub dropped: usize,
    /// The server's CPU over the last count's settle time, every connection idle (the
    /// keepalive), and the pings the clients answered meanwhile (Engine.IO and WebSocket).
    pub idle_cpu_secs: f64,
    pub idle_window_secs: f64,
    pub idle_pings: u64,
    pub server: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdlePoint {
    /// The count aimed at, and the connections open when measured.
    pub wanted: usize,
    pub connections: usize,
    /// Time to open the connections since the previous count.
    pub open_secs: f64,
    /// VmRSS and RssAnon, bytes.
    pub rss: u64,
    pub anon: u64,
    pub threads: u64,
    /// Pings the clients had answered by then.
    pub pings: u64,
}

impl Idle {
    /// Growth over the baseline per connection at `point`: (all of RSS, anonymous), bytes.
    pub fn per_connection(&self, point: &IdlePoint) -> (f64, f64) {
        let n = point.connections.max(1) as f64;
        (
            point.rss.saturating_sub(self.baseline_rss) as f64 / n,
            point.anon.saturating_sub(self.baseline_anon) as f64 / n,
        )
    }

    /// Growth per connection between point `i - 1` and point `i`: (RSS, anonymous), bytes.
    pub fn marginal(&self, i: usize) -> Option<(f64, f64)> {
        let (a, b) = (self.points.get(i.checked_sub(1)?)?, self.points.get(i)?);
        let n = b.connections.checked_sub(a.connections).filter(|n| *n > 0)? as f64;
        Some(((b.rss as f64 - a.rss as f64) / n, (b.anon as f64 - a.anon as f64) / n))
    }
}

#[derive(Default)]
struct IdleStats {
    /// Connections handed to the task and not closed by the server.
    open: usize,
    pings: u64,
    dropped: usize,
}

/// Keeps `conns` open and answering pings until `stop` says so; then drops them (closing
/// each connection).
async fn idle_task(
    mut conns: Vec<Conn>,
    proto: Proto,
    mut stop: watch::Receiver<bool>,
    stats: Arc<Mutex<IdleStats>>,
) {
    let mux = Mux::new(conns.len());
    let mut ready = Vec::new();
    let mut gone = vec![false; conns.len()];
    lock(&stats).open += conns.len();
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow_and_update() {
                    break;
                }
            }
            () = mux.ready() => {
                mux.take(&mut ready);
                let (mut pings, mut dropped) = (0u64, 0usize);
                for &i in &ready {
                    if gone[i] {
                        continue;
                    }
                    let conn = &mut conns[i];
                    let before = conn.pings;
                    conn.pump(mux.waker(i), |message, out| {
                        if decode(proto, message) == Incoming::Ping {
                            pings += 1;
                            push_text(out, ENGINE_IO_PONG);
                        }
                    });
                    pings += conn.pings - before;
                    if conn.closed {
                        gone[i] = true;
                        dropped += 1;
                    }
                }
                if pings > 0 || dropped > 0 {
                    let mut shared = lock(&stats);
                    shared.pings += pings;
                    shared.dropped += dropped;
                    shared.open -= dropped;
                }
            }
        }
    }
    let open = gone.iter().filter(|g| !**g).count();
    drop(conns);
    lock(&stats).open -= open;
}

async fn idle(config: &Config) -> anyhow::Result<Idle> {
    let target = config.target;
    ensure!(target.has_rest(), "the idle scenario measures chatd and the Node peer, not the ceiling relay");
    let counts = &config.idle_counts;
    ensure!(
        !counts.is_empty() && counts.windows(2).all(|w| w[0] < w[1]),
        "idle counts must be increasing, e.g. 10000,18000"
    );
    let max = *counts.last().unwrap_or(&0);
    let mut server = ServerProcess::start(target, &config.launch).await?;
    let addr = server.addr;
    let proto = target.proto();
    let (_, tokens) = users(max, "idle")?;
    // Let the server finish starting (SQLite, first allocations) before the baseline.
    tokio::time::sleep(Duration::from_secs(1).min(config.idle_settle * 2)).await;
    let baseline_rss = server.rss().context("the server's VmRSS")?;
    let baseline_anon = server.rss_anon().context("the server's RssAnon")?;
    let settle = config.idle_settle;
    println!(
        "{} idle: counts {counts:?}, settle {:.1} s; baseline RSS {:.1} MiB ({:.1} MiB anonymous)",
        target.key(),
        settle.as_secs_f64(),
        baseline_rss as f64 / 1048576.0,
        baseline_anon as f64 / 1048576.0
    );
    println!(
        "{:>11} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "connections", "open s", "RSS MiB", "B/conn", "anon B/c", "marginal", "marg anon", "threads"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let stats = Arc::new(Mutex::new(IdleStats::default()));
    let mut tasks = Vec::new();
    let mut points: Vec<IdlePoint> = Vec::new();
    let (mut failures, mut first_failure) = (0u64, None::<String>);
    let mut opened = 0;
    let (mut idle_cpu_secs, mut idle_window_secs, mut idle_pings) = (0.0, 0.0, 0);
    for &count in counts {
        let started = Instant::now();
        // In chunks, each handed to idling tasks at once, so that no connection waits
        // unanswered through a ping round while the rest of a count is opened.
        while opened < count {
            let chunk = (count - opened).min(1000);
            let results: Vec<anyhow::Result<Conn>> =
                futures::stream::iter(tokens[opened..opened + chunk].iter().enumerate())
                    .map(|(i, token)| async move {
                        let source = Some(source_for(opened + i));
                        tokio::time::timeout(
                            Duration::from_secs(30),
                            connect_client(addr, proto, source, token),
                        )
                        .await
                        .map_err(|_| anyhow::anyhow!("no ready within 30 s"))?
                    })
                    .buffer_unordered(config.idle_concurrency)
                    .collect()
                    .await;
            opened += chunk;
            let mut conns = Vec::with_capacity(chunk);
            for result in results {
                match result {
                    Ok(conn) => conns.push(conn),
                    Err(err) => {
                        failures += 1;
                        first_failure.get_or_insert_with(|| format!("{err:#}"));
                    }
                }
            }
            while !conns.is_empty() {
                let rest = conns.split_off(conns.len().min(config.per_task));
                tasks.push(tokio::spawn(idle_task(conns, proto, stop_rx.clone(), stats.clone())));
                conns = rest;
            }
        }
        let open_secs = started.elapsed().as_secs_f64();
        // The keepalive's cost: the server's CPU over the last count's settle time.
        let (cpu_before, pings_before, window_start) =
            (server.cpu_time(), lock(&stats).pings, Instant::now());
        tokio::time::sleep(settle).await;
        idle_cpu_secs = server.cpu_time().saturating_sub(cpu_before).as_secs_f64();
        idle_window_secs = window_start.elapsed().as_secs_f64();
        idle_pings = lock(&stats).pings - pings_before;
        ensure!(server.alive(), "the server exited while {count} connections idled");
        let (connections, pings) = {
            let s = lock(&stats);
            (s.open, s.pings)
        };
        let point = IdlePoint {
            wanted: count,
            connections,
            open_secs,
            rss: server.rss().context("VmRSS")?,
            anon: server.rss_anon().context("RssAnon")?,
            threads: server.threads().unwrap_or(0),
            pings,
        };
        points.push(point);
        let partial = Idle {
            target: target.key().into(),
            smoke: config.smoke,
            settle_secs: settle.as_secs_f64(),
            concurrency: config.idle_concurrency,
            baseline_rss,
            baseline_anon,
            points: points.clone(),
            after_close_rss: None,
            after_close_anon: None,
            connect_failures: failures,
            first_failure: None,
            dropped: 0,
            idle_cpu_secs: 0.0,
            idle_window_secs: 0.0,
            idle_pings: 0,
            server: Value::Null,
        };
        let last = partial.points.last().expect("just pushed");
        let (per, per_anon) = partial.per_connection(last);
        let marginal = partial.marginal(partial.points.len() - 1);
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        println!(
            "{:>11} {:>8.1} {:>10.1} {:>10.0} {:>10.0} {:>10} {:>10} {:>8}",
            last.connections,
            open_secs,
            last.rss as f64 / 1048576.0,
            per,
            per_anon,
            cell(marginal.map(|m| m.0)),
            cell(marginal.map(|m| m.1)),
            last.threads
        );
        if connections != count {
            println!("  !! {connections} of {count} connections are open ({failures} failed to open)");
        }
    }
    if let Some(err) = &first_failure {
        println!("  first connect failure: {err}");
    }

    let (dropped, open_at_end) = {
        let s = lock(&stats);
        (s.dropped, s.open)
    };
    println!(
        "  idle CPU at {open_at_end} connections: {:.2} % of a core over {idle_window_secs:.1} s, {idle_pings} pings answered; {dropped} connections closed by the server",
        idle_cpu_secs / idle_window_secs.max(1e-9) * 100.0
    );

    // Close everything; what the server keeps.
    stop_tx.send(true)?;
    for task in tasks {
        task.await?;
    }
    tokio::time::sleep(settle.min(Duration::from_secs(10))).await;
    let (after_close_rss, after_close_anon) = (server.rss(), server.rss_anon());
    if let Some(after) = after_close_rss {
        println!(
            "  after closing all: RSS {:.1} MiB ({:+.1} MiB over the baseline)",
            after as f64 / 1048576.0,
            (after as f64 - baseline_rss as f64) / 1048576.0
        );
    }
    ensure!(server.alive(), "the server exited");
    Ok(Idle {
        target: target.key().into(),
        smoke: config.smoke,
        settle_secs: settle.as_secs_f64(),
        concurrency: config.idle_concurrency,
        baseline_rss,
        baseline_anon,
        points,
        after_close_rss,
        after_close_anon,
        connect_failures: failures,
        first_failure,
        dropped,
        idle_cpu_secs,
        idle_window_secs,
        idle_pings,
        server: server.describe(),
    })
}
