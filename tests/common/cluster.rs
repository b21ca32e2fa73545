//! Several chatd nodes as one service: separate `chatd serve` processes on one PostgreSQL
//! database (a fresh schema of the machine's PostgreSQL, or a test's own server) and one Redis
//! (a channel prefix of their own per test), signing tokens with one shared secret.

use std::time::Duration;

use chatd::auth::{Authenticator, KeySource};

use super::ServerProcess;
use super::ws::Ws;

/// The JWT secret every node of a [`Cluster`] shares.
pub const SECRET: &str = "cluster-test-secret-0123456789";

/// A token for `user`, valid 1 h on every node of a [`Cluster`].
pub fn token(user: &str) -> String {
    let auth = Authenticator::new(KeySource::Secret(SECRET.as_bytes().to_vec()), None, None).expect("auth");
    auth.mint(user, None, Duration::from_secs(3600)).expect("mint")
}

/// Nodes sharing a PostgreSQL database and a Redis. Fields drop in order: the nodes stop
/// before their schema (if the cluster made one) is dropped.
pub struct Cluster {
    /// The nodes, `None` while one is down (see [`Cluster::kill_node`]).
    pub nodes: Vec<Option<ServerProcess>>,
    /// Working directory of the nodes; holds their logs (`node<i>.log`, `node<i>-<n>.log`
    /// after a restart).
    pub dir: tempfile::TempDir,
    /// The schema the cluster made on the machine's PostgreSQL, if it made one.
    pub schema: Option<super::pg::Schema>,
    /// The `--database-url` of every node.
    pub database_url: String,
    /// The `--redis-url` of every node.
    pub redis: String,
    /// The `--redis-prefix` of every node.
    pub prefix: String,
    /// `--rate-limit N --rate-limit-burst B` of every node.
    rate_limit: (u32, u32),
    /// Flags every node gets besides the shared ones.
    extra: Vec<String>,
    /// How many times each node was started.
    starts: Vec<usize>,
}

impl Cluster {
    /// `count` nodes without rate limits.
    pub async fn start(count: usize, redis: &str) -> Cluster {
        Self::start_limited(count, redis, (0, 0)).await
    }

    /// `count` nodes allowing each user `per_second` message writes with bursts of `burst`.
    pub async fn start_limited(count: usize, redis: &str, rate_limit: (u32, u32)) -> Cluster {
        Self::start_with(count, redis, rate_limit, &[]).await
    }

    /// `count` nodes on a fresh schema of the machine's PostgreSQL, with a rate limit and
    /// `extra` flags.
    pub async fn start_with(count: usize, redis: &str, rate_limit: (u32, u32), extra: &[&str]) -> Cluster {
        let schema = super::pg::Schema::fresh();
        let url = schema.url.clone();
        Self::start_on(Some(schema), &url, count, redis, rate_limit, extra).await
    }

    /// `count` nodes on the database at `database_url` (`schema`: the schema it names, dropped
    /// with the cluster), with a rate limit and `extra` flags.
    pub async fn start_on(
        schema: Option<super::pg::Schema>,
        database_url: &str,
        count: usize,
        redis: &str,
        rate_limit: (u32, u32),
        extra: &[&str],
    ) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            schema,
            database_url: database_url.to_owned(),
            redis: redis.to_owned(),
            prefix: super::redis::unique_prefix(),
            rate_limit,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            starts: Vec::new(),
        };
        for n in 0..count {
            cluster.starts.push(1);
            let addr = format!("127.0.0.1:{}", super::free_port()).parse().expect("loopback address");
            let node = cluster.start_node(n, addr).await;
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    async fn start_node(&self, n: usize, addr: std::net::SocketAddr) -> ServerProcess {
        let (per_second, burst) = (self.rate_limit.0.to_string(), self.rate_limit.1.to_string());
        let mut args = vec![
            "--database-url",
            &self.database_url,
            "--redis-url",
            &self.redis,
            "--redis-prefix",
            &self.prefix,
            "--jwt-secret",
            SECRET,
            "--rate-limit",
            &per_second,
            "--rate-limit-burst",
            &burst,
            "--media-dir-shared",
        ];
        args.extend(self.extra.iter().map(String::as_str));
        let log = match self.starts[n] {
            1 => format!("node{n}.log"),
            start => format!("node{n}-{start}.log"),
        };
        ServerProcess::start_at(self.dir.path(), addr, &args, &[], self.dir.path().join(log)).await
    }

    /// Node `i` (panics if it is down).
    pub fn node(&self, i: usize) -> &ServerProcess {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// A `/ws` connection of `user` to node `i`.
    pub async fn ws(&self, i: usize, user: &str) -> Ws {
        Ws::connect_to(self.node(i).addr(), &token(user)).await
    }

    /// Kills node `i` at once (SIGKILL), as a crash would; returns the address it listened on.
    pub fn kill_node(&mut self, i: usize) -> std::net::SocketAddr {
        let node = self.nodes[i].take().expect("node is running");
        let addr = node.addr();
        node.kill();
        addr
    }

    /// Starts node `i` again on `addr` (its old address, so its clients find it again) and
    /// waits until it answers.
    pub async fn restart_node(&mut self, i: usize, addr: std::net::SocketAddr) {
        assert!(self.nodes[i].is_none(), "node {i} is still running");
        self.starts[i] += 1;
        let node = self.start_node(i, addr).await;
        self.nodes[i] = Some(node);
    }

    /// The last `lines` lines of every log the nodes wrote (for a failure message).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
            .map(|dir| dir.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {}\n", log.display()));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}
