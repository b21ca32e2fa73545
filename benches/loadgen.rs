//! The load generator of issue 5: the same scenarios against chatd over Socket.IO, chatd
//! over plain WS, the Node.js Socket.IO peer (benches/peers/node-socketio) and a ceiling relay
//! (see `support/scenarios.rs` for what each scenario does and measures, `support/wire.rs`
//! for the client, `support/ceiling.rs` for the relay). `benches/run.sh` runs them all and
//! writes benches/RESULTS.md.
//!
//! ```text
//! cargo bench --bench loadgen -- --target chatd-sio|chatd-ws|node|ceiling \
//!     --scenario fanout|acks|storm|idle|marketplace [--smoke] [--server-cpu 0] [--out results.jsonl]
//!     [--data-root /dev/shm] [--clients N] [--senders N] [--step-secs S] [--rates 1,2,4]
//!     [--storm-rate MSGS_PER_S] [--per-task N] [--attach ADDR[,ADDR…] [--pid PID[,PID…]]]
//!     [--counts 10000,18000] [--settle-secs S] [--database-url postgres://…]
//! cargo bench --bench loadgen -- --serve-ceiling 127.0.0.1:4100   # the ceiling relay alone
//! cargo bench --bench loadgen -- --report results.jsonl [--section headline|fanout|acks|storm|idle|marketplace|servers]
//! ```
//! `--clients` sets the fan-out, storm and marketplace client counts, `--rates` the fan-out's
//! and the marketplace's rates per client, `--senders` the ack scenario's,
//! `--counts` the idle scenario's connection counts and `--settle-secs` how long they idle
//! before each measurement, `--data-root` where the servers' temporary data directories go, `--attach` measures a
//! server that is already running (several comma-separated addresses: the nodes of one
//! cluster; the fan-out scenario connects its clients to them round-robin, so every room has
//! members on several nodes, and the server CPU is the sum over the `--pid`s; the ack
//! scenario spreads its senders the same way), `--database-url` runs chatd on PostgreSQL
//! (each run on a fresh schema of that database, dropped afterwards) instead of SQLite. `STORM_DEBUG=1` prints every client's missing seqs after
//! a storm that lost messages.
//! Each run starts its own server process (fresh database), pinned with `taskset -c` when
//! `--server-cpu` is given (pin the load generator itself from outside: `taskset -c 1 cargo
//! bench ...`). chatd runs with `--rate-limit 0` and `TOKIO_WORKER_THREADS=1`.

mod support;

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use support::scenarios::{self, Config};
use support::servers::Target;
use support::{ceiling, report};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let value = |name: &str| -> Option<&str> {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
    };
    let flag = |name: &str| args.iter().any(|a| a == name);

    if let Some(addr) = value("--serve-ceiling") {
        return ceiling::serve(std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?);
    }
    if let Some(path) = value("--report") {
        let records = report::read(path.as_ref())?;
        let section = value("--section").unwrap_or("all");
        let text = match section {
            "headline" => report::headline(&records),
            "fanout" => report::fanout_tables(&records),
            "acks" => report::acks_table(&records),
            "storm" => report::storm_table(&records),
            "idle" => report::idle_table(&records),
            "marketplace" => support::marketplace::tables(&records),
            "servers" => report::servers_table(&records),
            _ => [
                report::headline(&records),
                report::fanout_tables(&records),
                report::acks_table(&records),
                report::storm_table(&records),
                report::idle_table(&records),
                support::marketplace::tables(&records),
                report::servers_table(&records),
            ]
            .join("\n"),
        };
        print!("{text}");
        return Ok(());
    }

    let target = Target::parse(value("--target").context("--target is required")?)?;
    let scenario = value("--scenario")
        .context("--scenario is required (fanout, acks, storm, idle, marketplace)")?
        .to_owned();
    let mut config = if flag("--smoke") { Config::smoke(target) } else { Config::full(target) };
    config.launch.cpu = value("--server-cpu").map(str::parse).transpose()?;
    config.launch.ceiling_exe = Some(std::env::current_exe()?);
    config.launch.data_root = value("--data-root").map(Into::into);
    config.launch.database_url = value("--database-url").map(Into::into);
    if let Some(addrs) = value("--attach") {
        let pids: Vec<u32> = match value("--pid") {
            Some(pids) => pids.split(',').map(|p| p.trim().parse()).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        for (i, addr) in addrs.split(',').enumerate() {
            config.launch.attach.push((addr.trim().parse()?, pids.get(i).copied()));
        }
        if !pids.is_empty() && pids.len() != config.launch.attach.len() {
            bail!("--pid needs one pid per --attach address");
        }
    }
    if let Some(n) = value("--clients") {
        config.fanout_clients = n.parse()?;
        config.storm_clients = n.parse()?;
        config.marketplace.clients = n.parse()?;
    }
    if let Some(n) = value("--senders") {
        config.ack_senders = n.parse()?;
    }
    if let Some(s) = value("--step-secs") {
        config.step = Duration::from_secs_f64(s.parse()?);
        config.ack_time = config.step;
    }
    if let Some(rates) = value("--rates") {
        config.rates = rates.split(',').map(str::parse).collect::<Result<_, _>>()?;
        config.marketplace.rates = config.rates.clone();
    }
    if let Some(n) = value("--per-task") {
        config.per_task = n.parse()?;
    }
    if let Some(counts) = value("--counts") {
        config.idle_counts = counts.split(',').map(|c| c.trim().parse()).collect::<Result<_, _>>()?;
    }
    if let Some(s) = value("--settle-secs") {
        config.idle_settle = Duration::from_secs_f64(s.parse()?);
    }
    if let Some(rate) = value("--storm-rate") {
        config.storm_rate = rate.parse()?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let record = runtime.block_on(scenarios::run(&config, &scenario))?;
    if let Some(path) = value("--out") {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(file, "{}", serde_json::to_string(&record)?)?;
    }
    if matches!(&record, scenarios::Record::Storm(s) if s.lost > 0) {
        bail!("messages were lost in the storm");
    }
    Ok(())
}
