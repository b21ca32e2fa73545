//! PostgreSQL for tests: a fresh schema per test in the database named by
//! `CHATD_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`, which `.ci/run`
//! provides), dropped again when the test ends, pass or fail; and [`OwnPostgres`], a server of a
//! test's own for tests that stop or pause the database.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chatd::config::Database;
use chatd::store::postgres::PostgresConfig;

/// The database tests create their schemas in.
pub fn base_url() -> String {
    std::env::var("CHATD_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// A schema of its own for one test; dropped (best effort) on drop.
pub struct Schema {
    /// The schema's name.
    pub name: String,
    /// The database URL with `schema=` set to it.
    pub url: String,
}

impl Schema {
    /// A new, unique schema name (chatd creates the schema on first connect).
    pub fn fresh() -> Schema {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name =
            format!("chatd_test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let base = base_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}schema={name}");
        Schema { name, url }
    }

    /// The store configuration for this schema.
    pub fn config(&self) -> PostgresConfig {
        PostgresConfig::from_url(&self.url).expect("test PostgreSQL URL")
    }

    /// The chatd database setting for this schema.
    pub fn database(&self) -> Database {
        Database::Postgres(Box::new(self.config()))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // A thread of its own, so this works inside and outside a runtime.
        let (base, name) = (base_url(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(&base, tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: could not drop test schema {}", self.name);
        }
    }
}

/// A PostgreSQL server of the test's own (for tests that stop, restart or pause the database;
/// the machine's server on :5432 is shared and must never be touched): a cluster made with
/// `initdb` in a temporary directory, listening on a free loopback port with trust
/// authentication and its unix socket in that directory, run without `fsync` for speed.
/// As root it runs as the `postgres` user (PostgreSQL refuses root). Stopped on drop.
pub struct OwnPostgres {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    paused: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb` (or `initdb` on `PATH`).
fn postgres_bin_dir() -> std::path::PathBuf {
    let mut found: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|entry| {
                    let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = entry.path().join("bin");
                    bin.join("initdb").exists().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    let on_path = std::process::Command::new("sh").args(["-c", "command -v initdb"]).output();
    if let Ok(output) = on_path
        && output.status.success()
    {
        let path = std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if let Some(bin) = path.parent() {
            return bin.to_owned();
        }
    }
    panic!(
        "PostgreSQL's server binaries (initdb, postgres) were not found in /usr/lib/postgresql/*/bin \
         or on PATH: install them (Debian/Ubuntu: apt-get install postgresql)"
    );
}

/// Whether this process runs as root (then PostgreSQL must run as another user).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(1).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

/// `uid` and `gid` of the `postgres` user.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = std::process::Command::new("id").args([flag, "postgres"]).output().expect("run id");
        assert!(
            output.status.success(),
            "running as root, PostgreSQL needs a `postgres` user to run as (apt-get install postgresql creates it)"
        );
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("numeric id")
    };
    (id("-u"), id("-g"))
}

impl OwnPostgres {
    /// Creates a cluster with `initdb`, starts it on a free port and waits until it answers.
    pub async fn start() -> OwnPostgres {
        let bin = postgres_bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        if running_as_root() {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the data dir to postgres");
        }
        let mut postgres = OwnPostgres { port: super::free_port(), bin, dir, child: None, paused: false };
        let output = postgres
            .command("initdb")
            .arg("-D")
            .arg(postgres.data_dir())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"])
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::create_dir_all(postgres.socket_dir()).expect("socket dir");
        if running_as_root() {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(postgres.socket_dir(), Some(uid), Some(gid)).expect("chown socket dir");
        }
        postgres.launch().await;
        postgres
    }

    /// A command running the PostgreSQL program `program`, as `postgres` when we are root.
    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if running_as_root() {
            let mut command = std::process::Command::new("setpriv");
            command.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(path);
            command
        } else {
            std::process::Command::new(path)
        }
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("socket")
    }

    /// Its URL (database `postgres`, user `postgres`, over TCP).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Starts the postmaster on the cluster and waits (at most ~20 s) until it answers.
    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("postgres log");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "synchronous_commit=off", "-c", "max_connections=300"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        for _ in 0..400 {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("postgres exited early ({status}); log:\n{}", self.log_text());
            }
            if let Ok((client, connection)) =
                tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                if client.simple_query("SELECT 1").await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("postgres did not answer on port {} within ~20 s; log:\n{}", self.port, self.log_text());
    }

    /// Stops the server (fast shutdown: open sessions are cut, as in a database restart) and
    /// waits until it exited.
    pub async fn stop(&mut self) {
        if self.paused {
            self.resume();
        }
        let Some(mut child) = self.child.take() else { return };
        signal(child.id(), "INT");
        for _ in 0..400 {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the server and starts it again on the same port and data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// Freezes the postmaster and every backend (SIGSTOP), as a stalled machine would: open
    /// connections stay open and nothing answers.
    pub fn pause(&mut self) {
        let postmaster = self.child.as_ref().expect("postgres is running").id();
        signal(postmaster, "STOP");
        for pid in children_of(postmaster) {
            signal(pid, "STOP");
        }
        self.paused = true;
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&mut self) {
        let postmaster = self.child.as_ref().expect("postgres is running").id();
        for pid in children_of(postmaster) {
            signal(pid, "CONT");
        }
        signal(postmaster, "CONT");
        self.paused = false;
    }
}

/// Sends `SIG<name>` to `pid` (best effort: the process may have just exited).
fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

/// The processes whose parent is `pid` (PostgreSQL's backends put themselves in sessions of
/// their own, so a process-group signal would miss them).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_string_lossy().parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The fields after the command name, which is in parentheses and may hold spaces.
            let after = &stat[stat.rfind(')')? + 1..];
            let parent: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
            (parent == pid).then_some(child)
        })
        .collect()
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "QUIT");
            for _ in 0..100 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
