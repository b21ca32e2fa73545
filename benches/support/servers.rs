//! The servers the load generator measures, each as its own process: chatd (one binary,
//! measured over Socket.IO and over plain WS), the Node.js Socket.IO peer
//! (benches/peers/node-socketio) and the ceiling relay (this load generator with
//! `--serve-ceiling`). Optionally pinned to one CPU with `taskset`; CPU time, RSS and threads
//! are read from /proc.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::wire::Proto;
use super::{Connection, SECRET};

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// chatd over Socket.IO.
    ChatdSio,
    /// chatd over its plain WebSocket `/ws`.
    ChatdWs,
    /// The Node.js + Socket.IO peer.
    Node,
    /// The ceiling relay: plain-WS framing, pre-encoded frames, no auth, no persistence.
    Ceiling,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::ChatdSio, Target::ChatdWs, Target::Node, Target::Ceiling];

    /// The command-line name.
    pub fn key(self) -> &'static str {
        match self {
            Target::ChatdSio => "chatd-sio",
            Target::ChatdWs => "chatd-ws",
            Target::Node => "node",
            Target::Ceiling => "ceiling",
        }
    }

    pub fn parse(key: &str) -> anyhow::Result<Target> {
        Target::ALL
            .into_iter()
            .find(|t| t.key() == key)
            .with_context(|| format!("unknown target {key:?} (chatd-sio, chatd-ws, node, ceiling)"))
    }

    /// How it is described in tables.
    pub fn label(self) -> &'static str {
        match self {
            Target::ChatdSio => "chatd, Socket.IO",
            Target::ChatdWs => "chatd, plain WS",
            Target::Node => "Node peer, Socket.IO",
            Target::Ceiling => "ceiling relay, plain WS",
        }
    }

    pub fn proto(self) -> Proto {
        match self {
            Target::ChatdSio | Target::Node => Proto::SocketIo,
            Target::ChatdWs | Target::Ceiling => Proto::Ws,
        }
    }

    /// Whether conversations are created over REST (else rooms are joined by event).
    pub fn has_rest(self) -> bool {
        self != Target::Ceiling
    }
}

/// How to start servers.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Pin the server to this CPU (`taskset -c`).
    pub cpu: Option<usize>,
    /// Attach to servers that are already running instead of starting one: each node's
    /// address and, for CPU accounting, its pid. Empty: start one. Several are nodes of one
    /// cluster; the fan-out and ack scenarios spread their clients over them.
    pub attach: Vec<(SocketAddr, Option<u32>)>,
    /// The program that serves the ceiling relay with `--serve-ceiling ADDR` (the load
    /// generator itself).
    pub ceiling_exe: Option<PathBuf>,
    /// Where the servers' data directories go (default: the system temp dir).
    pub data_root: Option<PathBuf>,
    /// chatd on PostgreSQL: the database URL (`postgres://…`) it is started with, each run
    /// on a schema of its own (`schema=bench_<pid>_<n>`, dropped when the server stops).
    pub database_url: Option<String>,
}

/// A running server; a started one is killed when dropped.
pub struct ServerProcess {
    child: Option<Child>,
    pid: Option<u32>,
    /// Where it listens (the first node's address when attached to several).
    pub addr: SocketAddr,
    /// Every node's address, `addr` first (one entry unless attached to several nodes).
    pub addrs: Vec<SocketAddr>,
    /// The other attached nodes' pids, counted in [`ServerProcess::cpu_time`].
    other_pids: Vec<u32>,
    log: Arc<Mutex<ServerLog>>,
    /// Tokio threads right after start, before any blocking-pool thread exists: the workers.
    tokio_at_start: Option<u64>,
    /// The PostgreSQL schema this run created, dropped on drop.
    schema: Option<BenchSchema>,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh PostgreSQL schema for one run; dropped (best effort) on drop.
struct BenchSchema {
    base_url: String,
    name: String,
}

impl BenchSchema {
    fn fresh(base_url: &str) -> BenchSchema {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        BenchSchema {
            base_url: base_url.to_owned(),
            name: format!("bench_{}_{n}_{nanos}", std::process::id()),
        }
    }

    /// The URL chatd is given: the base URL with `schema=` set.
    fn url(&self) -> String {
        let separator = if self.base_url.contains('?') { '&' } else { '?' };
        format!("{}{separator}schema={}", self.base_url, self.name)
    }
}

impl Drop for BenchSchema {
    fn drop(&mut self) {
        let (base, name) = (self.base_url.clone(), self.name.clone());
        // A thread of its own: this may run inside the load generator's runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(&base, tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(connection);
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: could not drop benchmark schema {}", self.name);
        }
    }
}

/// What the server wrote to stderr: warnings and errors, and chatd's relay lag reports.
#[derive(Default)]
pub struct ServerLog {
    pub lines: usize,
    /// The first few lines.
    pub first: Vec<String>,
    /// chatd: "relay fell behind" reports and the bus messages they skipped.
    pub relay_lag_reports: usize,
    pub relay_skipped: u64,
}

/// Reads a server's stderr into `log` (on a thread of its own).
fn collect_stderr(stderr: std::process::ChildStderr, log: Arc<Mutex<ServerLog>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            log.lines += 1;
            if line.contains("fell behind") {
                log.relay_lag_reports += 1;
                let skipped = line.split("skipped=").nth(1).and_then(|s| s.split_whitespace().next());
                log.relay_skipped += skipped.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            }
            if log.first.len() < 5 {
                log.first.push(line.chars().take(300).collect());
            }
        }
    });
}

/// The Node peer's directory.
pub fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peers/node-socketio")
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn pinned(cpu: Option<usize>, program: impl Into<PathBuf>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(program.into());
            command
        }
        None => Command::new(program.into()),
    }
}

impl ServerProcess {
    pub async fn start(target: Target, launch: &Launch) -> anyhow::Result<ServerProcess> {
        if let Some(&(addr, pid)) = launch.attach.first() {
            return Ok(ServerProcess {
                child: None,
                pid,
                addr,
                addrs: launch.attach.iter().map(|(addr, _)| *addr).collect(),
                other_pids: launch.attach[1..].iter().filter_map(|(_, pid)| *pid).collect(),
                log: Arc::default(),
                tokio_at_start: None,
                schema: None,
                _dir: None,
            });
        }
        let dir = match &launch.data_root {
            Some(root) => tempfile::tempdir_in(root)?,
            None => tempfile::tempdir()?,
        };
        let mut schema = None;
        let (child, addr) = match target {
            Target::ChatdSio | Target::ChatdWs => {
                let addr = free_addr()?;
                let mut database = Vec::new();
                if let Some(url) = &launch.database_url {
                    let fresh = BenchSchema::fresh(url);
                    database =
                        vec!["--database-url".to_owned(), fresh.url(), "--media-dir-shared".to_owned()];
                    schema = Some(fresh);
                }
                let child = pinned(launch.cpu, env!("CARGO_BIN_EXE_chatd"))
                    .args(["serve", "--rate-limit", "0", "--jwt-secret", SECRET, "--bind", &addr.to_string()])
                    // The load generators open thousands of connections from a few loopback
                    // addresses: the per-IP handshake limit would pace them.
                    .args(["--handshake-rate", "0"])
                    .arg("--data-dir")
                    .arg(dir.path())
                    .args(&database)
                    // chatd has no worker-thread setting; Tokio's default builder reads this.
                    .env("TOKIO_WORKER_THREADS", "1")
                    .env("CHATD_LOG", "warn")
                    .env("NO_COLOR", "1")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("starting chatd")?;
                (child, addr)
            }
            Target::Node => {
                let peer = peer_dir();
                if !peer.join("node_modules/socket.io").exists() {
                    bail!("the Node peer's dependencies are missing: run `npm ci` in {}", peer.display());
                }
                let mut child = pinned(launch.cpu, "node")
                    .arg(peer.join("server.js"))
                    .current_dir(&peer)
                    .env("PORT", "0")
                    .env("HOST", "127.0.0.1")
                    .env("JWT_SECRET", SECRET)
                    .env("DB_PATH", dir.path().join("peer.db"))
                    .env("NODE_ENV", "production")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("starting node (is Node.js installed?)")?;
                let stdout = child.stdout.take().context("node's stdout")?;
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let mut lines = BufReader::new(stdout).lines();
                    for line in lines.by_ref().map_while(Result::ok) {
                        if let Some(addr) = line.strip_prefix("listening on ") {
                            let _ = tx.send(addr.trim().to_owned());
                            break;
                        }
                    }
                    // Keep draining so the peer never blocks on a full pipe.
                    for _ in lines {}
                });
                let addr = rx.recv_timeout(Duration::from_secs(20)).context("the Node peer did not start")?;
                (child, addr.parse().with_context(|| format!("peer address {addr:?}"))?)
            }
            Target::Ceiling => {
                let exe = launch.ceiling_exe.clone().context("no program to serve the ceiling relay")?;
                let addr = free_addr()?;
                let child = pinned(launch.cpu, exe)
                    .args(["--serve-ceiling", &addr.to_string()])
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting the ceiling relay")?;
                (child, addr)
            }
        };
        let mut child = child;
        let pid = Some(child.id());
        let log = Arc::new(Mutex::new(ServerLog::default()));
        if let Some(stderr) = child.stderr.take() {
            collect_stderr(stderr, log.clone());
        }
        let mut server = ServerProcess {
            child: Some(child),
            pid,
            addr,
            addrs: vec![addr],
            other_pids: Vec::new(),
            log,
            tokio_at_start: None,
            schema,
            _dir: Some(dir),
        };
        let started = Instant::now();
        while TcpStream::connect(addr).await.is_err() {
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{} exited at start: {status}", target.key());
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("{} did not start listening on {addr}", target.key());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.tokio_at_start = server.describe()["tokio_threads"].as_u64();
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// CPU time (user + system, all threads) used so far, summed over every node with a
    /// known pid; zero when unknown.
    pub fn cpu_time(&self) -> Duration {
        self.pid.iter().chain(&self.other_pids).filter_map(|pid| cpu_time_of(&pid.to_string())).sum()
    }

    /// Resident set size now, bytes (VmRSS).
    pub fn rss(&self) -> Option<u64> {
        self.status_kb("VmRSS:").map(|kb| kb * 1024)
    }

    /// Anonymous resident memory now, bytes (RssAnon: heap and stacks, without file and
    /// shared-memory pages such as SQLite's database on tmpfs).
    pub fn rss_anon(&self) -> Option<u64> {
        self.status_kb("RssAnon:").map(|kb| kb * 1024)
    }

    /// Threads now.
    pub fn threads(&self) -> Option<u64> {
        self.status_kb("Threads:")
    }

    /// A numeric field of /proc/<pid>/status (`name` with its colon; sizes are in kB).
    pub fn status_kb(&self, name: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        status.lines().find_map(|l| l.strip_prefix(name))?.trim().trim_end_matches("kB").trim().parse().ok()
    }

    /// Where the process may run, its threads by name, and Tokio worker count.
    pub fn describe(&self) -> Value {
        let Some(pid) = self.pid else { return json!({}) };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let cpus =
            status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|s| s.trim().to_owned());
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .map(|n| n.trim().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        // Tokio names its workers (and its blocking-pool threads, which come and go)
        // "tokio-rt-worker" ("tokio-runtime-worker" before 1.5x, cut to 15 characters).
        let workers = names.iter().filter(|n| n.starts_with("tokio-r")).count();
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut info = json!({
            "cpus_allowed": cpus,
            "threads": names.len(),
            "tokio_threads": workers,
            "tokio_threads_at_start": self.tokio_at_start,
            "stderr_lines": log.lines,
            "stderr_first": log.first,
            "relay_lag_reports": log.relay_lag_reports,
            "relay_skipped": log.relay_skipped,
        });
        // Attached to a cluster: the figures above are the first node's; CPU is everyone's.
        if self.addrs.len() > 1 {
            info["nodes"] = json!(self.addrs.len());
            info["node_pids"] = json!(self.pid.iter().chain(&self.other_pids).collect::<Vec<_>>());
        }
        info
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The schema goes once the server that used it is gone.
        drop(self.schema.take());
    }
}

/// A CPU accounting snapshot: the server process, this process, and every CPU's counters
/// (/proc/stat: user nice system idle iowait irq softirq steal, in 10 ms ticks).
pub struct Usage {
    server: Duration,
    loadgen: Duration,
    cpus: Vec<Vec<u64>>,
}

/// CPU use over an interval, in cores' worth (1.0 = one CPU busy all the time).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CpuReport {
    /// The server process (all its threads).
    pub server: f64,
    /// The load generator process.
    pub loadgen: f64,
    /// On the server's CPU: the kernel's softirq work (loopback TCP, mostly) and everything
    /// else that ran there (other processes, interrupts, steal). Unpinned: the whole machine.
    pub server_cpu_softirq: f64,
    pub server_cpu_others: f64,
    /// The same on the load generator's CPU (zero when unpinned).
    pub loadgen_cpu_softirq: f64,
    pub loadgen_cpu_others: f64,
}

fn proc_stat_cpus() -> Vec<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| l.split_whitespace().skip(1).take(8).filter_map(|v| v.parse().ok()).collect())
        .collect()
}

/// The one CPU this process may run on, if it is pinned to one.
pub fn own_cpu() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?.trim().parse().ok()
}

impl Usage {
    pub fn now(server: &ServerProcess) -> Usage {
        Usage {
            server: server.cpu_time(),
            loadgen: cpu_time_of("self").unwrap_or_default(),
            cpus: proc_stat_cpus(),
        }
    }

    /// What was used since `earlier`, over `secs`; `server_cpu` is where the server is pinned.
    pub fn since(&self, earlier: &Usage, server_cpu: Option<usize>, secs: f64) -> CpuReport {
        let ticks = |cpu: &[u64], before: &[u64], fields: &[usize]| -> f64 {
            fields
                .iter()
                .map(|&i| cpu.get(i).unwrap_or(&0).saturating_sub(*before.get(i).unwrap_or(&0)))
                .sum::<u64>() as f64
                / 100.0
        };
        const BUSY: [usize; 5] = [0, 1, 2, 5, 7]; // user nice system irq steal
        const SOFTIRQ: [usize; 1] = [6];
        let server = self.server.saturating_sub(earlier.server).as_secs_f64();
        let loadgen = self.loadgen.saturating_sub(earlier.loadgen).as_secs_f64();
        let on = |cpu: Option<usize>, fields: &[usize]| -> Option<f64> {
            let cpu = cpu?;
            Some(ticks(self.cpus.get(cpu)?, earlier.cpus.get(cpu)?, fields))
        };
        let mut report = CpuReport { server: server / secs, loadgen: loadgen / secs, ..CpuReport::default() };
        let loadgen_cpu = own_cpu();
        match (on(server_cpu, &BUSY), on(loadgen_cpu, &BUSY)) {
            (Some(server_busy), Some(loadgen_busy)) if server_cpu != loadgen_cpu => {
                report.server_cpu_softirq = on(server_cpu, &SOFTIRQ).unwrap_or(0.0) / secs;
                report.server_cpu_others = (server_busy - server).max(0.0) / secs;
                report.loadgen_cpu_softirq = on(loadgen_cpu, &SOFTIRQ).unwrap_or(0.0) / secs;
                report.loadgen_cpu_others = (loadgen_busy - loadgen).max(0.0) / secs;
            }
            _ => {
                let all = |fields: &[usize]| -> f64 {
                    self.cpus.iter().zip(&earlier.cpus).map(|(now, before)| ticks(now, before, fields)).sum()
                };
                report.server_cpu_softirq = all(&SOFTIRQ) / secs;
                report.server_cpu_others = (all(&BUSY) - server - loadgen).max(0.0) / secs;
            }
        }
        report
    }
}

/// CPU time of `/proc/<pid>` ("self" for this process).
pub fn cpu_time_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name, utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    Some(Duration::from_millis(ticks * 10)) // USER_HZ = 100
}

/// Creates the conversations (groups; each list's first member is its owner) and returns
/// their ids: over REST for chatd and the peer, made-up names for the ceiling relay (whose
/// clients join by event). `tokens[i]` is user i's token.
pub async fn create_rooms(
    target: Target,
    addr: SocketAddr,
    rooms: &[Vec<usize>],
    users: &[String],
    tokens: &[String],
) -> anyhow::Result<Vec<String>> {
    if !target.has_rest() {
        return Ok((0..rooms.len()).map(|r| format!("room-{r}")).collect());
    }
    let mut ids = vec![String::new(); rooms.len()];
    let workers = 8.min(rooms.len().max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let mine: Vec<(usize, Vec<String>, String)> = rooms
            .iter()
            .enumerate()
            .skip(w)
            .step_by(workers)
            .map(|(r, members)| {
                (r, members.iter().map(|&m| users[m].clone()).collect(), tokens[members[0]].clone())
            })
            .collect();
        tasks.spawn(async move {
            let mut done = Vec::with_capacity(mine.len());
            for (r, members, owner) in mine {
                let mut http = Connection::open(addr, &owner).await?;
                let body = json!({"type": "group", "members": members}).to_string();
                let (status, body) = http.post("/api/conversations", &body).await?;
                anyhow::ensure!(
                    status == 201,
                    "create conversation: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                let conversation: Value = serde_json::from_slice(&body)?;
                done.push((r, conversation["id"].as_str().unwrap_or_default().to_owned()));
            }
            anyhow::Ok(done)
        });
    }
    while let Some(done) = tasks.join_next().await {
        for (r, id) in done?? {
            ids[r] = id;
        }
    }
    Ok(ids)
}
