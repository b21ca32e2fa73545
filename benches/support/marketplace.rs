//! The marketplace scenario: many buyers and sellers, each in one two-person conversation.
//!
//! 10,000 clients in 5,000 direct conversations (user `2k` and user `2k + 1`); every client
//! sends `message:send` with an ack at a fixed rate from its own random offset (its send
//! interval starts after that offset, so the clients never tick in lockstep). The rate per
//! client is stepped up until p99 exceeds 100 ms and the knee is bisected, with the fan-out
//! scenario's climb ([`climb`]): latency is send → `message:new` at the partner, and the ack
//! latency (send → the sender's ack, which chatd and the peer give only once the message is
//! committed) is timed beside it. The figure of merit is sends per second at p99 ≤ 100 ms;
//! the server's CPU per message comes with every step.
//!
//! The load generator holds all 10,000 connections in one process (the fd limit here is
//! 20,000 per process), bound to source addresses 127.0.0.2..=127.0.0.9 (1,250 each).
//! `Settings::smoke` is the same with 200 clients.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::ensure;
use serde_json::{Value, json};

use super::Connection;
use super::report::{CPU_ALIGN, CPU_HEADER, by_target, cpu_cells, each_run, label, ms, ratio, thousands};
use super::scenarios::{Config, Fanout, FanoutStep, Record, Shape, climb, connect_all, users};
use super::servers::{ServerProcess, Target};

/// The scenario's size and rates.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Clients (an even number: two per conversation).
    pub clients: usize,
    /// Messages per second per client, stepped through in order.
    pub rates: Vec<f64>,
}

impl Settings {
    /// 10,000 clients in 5,000 conversations; from 1,000 sends/s up.
    pub fn full() -> Settings {
        Settings { clients: 10_000, rates: vec![0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0] }
    }

    /// 200 clients: proves the path works.
    pub fn smoke() -> Settings {
        Settings { clients: 200, rates: vec![0.5, 2.0] }
    }
}

/// Runs the scenario against a fresh server.
pub async fn run(config: &Config) -> anyhow::Result<Fanout> {
    let target = config.target;
    let settings = &config.marketplace;
    let n = settings.clients;
    ensure!(n >= 2 && n.is_multiple_of(2), "the marketplace needs an even number of clients");
    let mut server = ServerProcess::start(target, &config.launch).await?;
    let started = Instant::now();
    let (users, tokens) = users(n, "trader")?;
    let conversations = create_pairs(target, server.addr, &users, &tokens).await?;
    let conversation_of: Vec<String> = (0..n).map(|i| conversations[i / 2].clone()).collect();
    let created_secs = started.elapsed().as_secs_f64();
    let joins = (!target.has_rest()).then_some(&conversation_of[..]);
    let conns = connect_all(&server.addrs, target, &tokens, joins, 0, 128).await?;
    println!(
        "{} marketplace: {n} clients in {} direct conversations, {} tasks; conversations created in {created_secs:.1} s, connected in {:.1} s",
        target.key(),
        n / 2,
        n.div_ceil(config.per_task),
        started.elapsed().as_secs_f64() - created_secs
    );
    let clients = conns
        .into_iter()
        .zip(conversation_of)
        .map(|(conn, conversation)| super::scenarios::FanClient::new(conn, conversation))
        .collect();
    let shape = Shape {
        clients: n,
        recipients: 1,
        rates: settings.rates.clone(),
        // At well under one send per client per step, the window's edges cost no client a
        // whole send on average: what is left is chance, a few standard deviations of it.
        missed_sends_allowed: 3.0 * (n as f64).sqrt(),
    };
    let steps = climb(config, &mut server, clients, &shape).await?;
    Ok(Fanout {
        target: target.key().into(),
        smoke: config.smoke,
        clients: n,
        room_size: 2,
        warmup_secs: config.warmup.as_secs_f64(),
        step_secs: config.step.as_secs_f64(),
        p99_limit_ms: config.p99_limit_ms,
        steps,
        server: server.describe(),
    })
}

/// Creates a direct conversation between users `2k` and `2k + 1` for every `k` (over REST,
/// as user `2k`, 8 at a time) and returns their ids; made-up names for the ceiling relay.
async fn create_pairs(
    target: Target,
    addr: SocketAddr,
    users: &[String],
    tokens: &[String],
) -> anyhow::Result<Vec<String>> {
    let pairs = users.len() / 2;
    if !target.has_rest() {
        return Ok((0..pairs).map(|k| format!("pair-{k}")).collect());
    }
    let mut ids = vec![String::new(); pairs];
    let workers = 8.min(pairs.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let mine: Vec<(usize, String, String)> = (w..pairs)
            .step_by(workers)
            .map(|k| (k, users[2 * k + 1].clone(), tokens[2 * k].clone()))
            .collect();
        tasks.spawn(async move {
            let mut done = Vec::with_capacity(mine.len());
            for (k, partner, token) in mine {
                let mut http = Connection::open(addr, &token).await?;
                let body = json!({"type": "direct", "members": [partner]}).to_string();
                let (status, body) = http.post("/api/conversations", &body).await?;
                ensure!(
                    status == 201 || status == 200,
                    "create direct conversation: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                let conversation: Value = serde_json::from_slice(&body)?;
                done.push((k, conversation["id"].as_str().unwrap_or_default().to_owned()));
            }
            anyhow::Ok(done)
        });
    }
    while let Some(done) = tasks.join_next().await {
        for (k, id) in done?? {
            ids[k] = id;
        }
    }
    Ok(ids)
}

// ---------------------------------------------------------------------------- report

/// The marketplace records, in the order they ran.
fn marketplaces(records: &[Record]) -> Vec<&Fanout> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Marketplace(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// A passing step's figure: sends per second.
fn best_step(run: &Fanout) -> Option<&FanoutStep> {
    run.steps.iter().filter(|s| s.pass).max_by(|a, b| a.sends_per_s.total_cmp(&b.sends_per_s))
}

/// The best run of a target (the one whose best step sent most) and that step.
fn best<'a>(records: &'a [Record], key: &str) -> Option<(&'a Fanout, &'a FanoutStep)> {
    marketplaces(records)
        .into_iter()
        .filter(|m| m.target == key)
        .filter_map(|m| Some((m, best_step(m)?)))
        .max_by(|a, b| a.1.sends_per_s.total_cmp(&b.1.sends_per_s))
}

/// Server CPU time per message sent at a step, µs (one delivery and one ack each).
fn us_per_message(step: &FanoutStep) -> f64 {
    step.cpu.server * 1e6 / step.sends_per_s.max(1.0)
}

/// The headline's marketplace rows (sends/s, then CPU per message), or nothing when the
/// scenario did not run.
pub fn headline_rows(records: &[Record]) -> String {
    let Some(clients) = marketplaces(records).first().map(|m| m.clients) else { return String::new() };
    let sends = |key: &str| best(records, key).map(|(_, s)| s.sends_per_s);
    let cost = |key: &str| best(records, key).map(|(_, s)| us_per_message(s));
    let cell = |v: Option<f64>| v.map_or("–".into(), thousands);
    let us = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0} µs"));
    let (ws, sio, node) = (sends("chatd-ws"), sends("chatd-sio"), sends("node"));
    let (cws, csio, cnode) = (cost("chatd-ws"), cost("chatd-sio"), cost("node"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| marketplace: sends/s at p99 ≤ 100 ms ({} clients in direct conversations, all sending with acks) | {} | {} | {} | **{}** | **{}** | |",
        thousands(clients as f64),
        cell(ws),
        cell(sio),
        cell(node),
        ratio(ws, node),
        ratio(sio, node)
    );
    let _ = writeln!(
        out,
        "| marketplace: server CPU per message (1 delivery + ack), at that step; lower is better | {} | {} | {} | **{}** | **{}** | |",
        us(cws),
        us(csio),
        us(cnode),
        ratio(cnode, cws),
        ratio(cnode, csio)
    );
    out
}

/// One row of a run's every-step table.
fn step_row(out: &mut String, s: &FanoutStep) {
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |",
        s.rate,
        thousands(s.offered_sends_per_s),
        thousands(s.sends_per_s),
        thousands(s.deliveries_per_s),
        thousands(s.other_events_per_s),
        ms(s.p50_ms),
        ms(s.p99_ms),
        ms(s.p999_ms),
        ms(s.max_ms),
        ms(s.ack_p50_ms),
        ms(s.ack_p99_ms),
        cpu_cells(&s.cpu),
        s.max_send_lag_ms,
        if s.pass { "ok".to_owned() } else { s.note.clone() }
    );
}

/// RESULTS.md's marketplace section: the best step per server, then every step of every run.
pub fn tables(records: &[Record]) -> String {
    let mut out = String::new();
    let all = marketplaces(records);
    let Some(first) = all.first() else { return "(not run)\n".into() };
    let node = best(records, "node").map(|(_, s)| s.sends_per_s);
    let _ = writeln!(
        out,
        "{} clients in {} direct (two-person) conversations, all online; every client sends `message:send` with an ack at a fixed rate from its own random offset, and each message reaches the partner as `message:new`. Steps of {} s (after {} s of warm-up) climb until p99 > {} ms, with the fan-out's retries and bisection. Latency is send → `message:new` at the partner (never delivered = infinitely late); *ack* is send → the sender's ack, which comes once the message is committed. A step passes when p99 ≤ {} ms, every delivery arrived, no send failed and the load generator kept the offered rate. *Server µs per message* is the server's CPU time (all its threads) over the step divided by the messages sent: one durable append, one delivery, the ack (and chatd's `notification` to the partner).\n",
        thousands(first.clients as f64),
        thousands((first.clients / 2) as f64),
        first.step_secs,
        first.warmup_secs,
        first.p99_limit_ms,
        first.p99_limit_ms
    );
    let _ = writeln!(
        out,
        "| server | max sends/s, p99 ≤ {} ms | each run | deliveries/s | p50 ms | p99 ms | ack p50 ms | ack p99 ms | {CPU_HEADER} | server µs per message | vs Node |",
        first.p99_limit_ms
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|{CPU_ALIGN}|---:|---:|");
    let groups = by_target(all, |m| &m.target);
    for (key, runs) in &groups {
        let each: Vec<f64> = runs.iter().map(|m| best_step(m).map_or(0.0, |s| s.sends_per_s)).collect();
        let Some((_, b)) = best(records, key) else {
            let _ = writeln!(out, "| {} | no step passed | | | | | | | | | | | | |", label(key));
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |",
            label(key),
            thousands(b.sends_per_s),
            each_run(&each),
            thousands(b.deliveries_per_s),
            ms(b.p50_ms),
            ms(b.p99_ms),
            ms(b.ack_p50_ms),
            ms(b.ack_p99_ms),
            cpu_cells(&b.cpu),
            us_per_message(b),
            ratio(Some(b.sends_per_s), node),
        );
    }
    for (key, runs) in &groups {
        for (i, m) in runs.iter().enumerate() {
            let run =
                if runs.len() > 1 { format!(" (run {} of {})", i + 1, runs.len()) } else { String::new() };
            let _ = writeln!(
                out,
                "\n<details><summary>{}{run}: every step, in rate order</summary>\n",
                label(key)
            );
            let _ = writeln!(
                out,
                "| msg/s per client | offered sends/s | sends/s | deliveries/s | other pushes/s | p50 ms | p99 ms | p999 ms | max ms | ack p50 ms | ack p99 ms | {CPU_HEADER} | lag ms | |"
            );
            let _ = writeln!(
                out,
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{CPU_ALIGN}|---:|---|"
            );
            let mut steps: Vec<&FanoutStep> = m.steps.iter().collect();
            steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            for s in steps {
                step_row(&mut out, s);
            }
            let _ = writeln!(out, "\n</details>");
        }
    }
    out
}
