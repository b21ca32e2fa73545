//! The Socket.IO client side of the tests: scenarios of tests/node/driver.mjs, run with the
//! official `socket.io-client` from npm (installed with `npm ci` on first use if missing).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::TestServer;

/// tests/node, with its npm dependencies installed (once per test run).
pub fn node_driver_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
        if !dir.join("node_modules/socket.io-client").exists() {
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm runs (Node.js and npm are needed for the Socket.IO tests)");
            assert!(status.success(), "npm ci in tests/node failed");
        }
        dir
    })
}

/// Runs one driver scenario against `server`; returns the JSON it printed.
pub async fn scenario(server: &TestServer, name: &str) -> Value {
    scenario_with_env(server, name, &[]).await
}

/// [`scenario`] with extra environment variables for the driver.
pub async fn scenario_with_env(server: &TestServer, name: &str, env: &[(&str, &str)]) -> Value {
    let node_dir = node_driver_dir();
    let secret = std::fs::read_to_string(server.data_dir.path().join("jwt-secret")).expect("jwt secret");
    let run = tokio::process::Command::new("node")
        .arg("--experimental-websocket") // the plain-WS client of `cross_transport` (Node 20)
        .arg(node_dir.join("driver.mjs"))
        .arg(name)
        .env("CHATD_URL", &server.base)
        .env("CHATD_SECRET", secret.trim())
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .unwrap_or_else(|_| panic!("scenario {name} did not finish"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "scenario {name} failed:\n{stdout}\n{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("scenario result is JSON")
}

/// One official `socket.io-client` connection (tests/node/client.mjs in a Node process),
/// driven like [`super::ws::Ws`]: events it received are kept as `{event, data}` until looked at.
pub struct SioClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    next_id: u64,
    /// Events received and not looked at yet, as `{event, data}`.
    pub pushes: std::collections::VecDeque<Value>,
    /// The `ready` payload.
    pub ready: Value,
}

/// Starts the stock socket.io-client driver (`tests/node/client.mjs`) against `base` with
/// `token`, its stdin and stdout piped.
fn spawn_client(base: &str, token: &str) -> tokio::process::Child {
    tokio::process::Command::new("node")
        .arg(node_driver_dir().join("client.mjs"))
        .arg(base)
        .arg(token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (Node.js is needed for the Socket.IO tests)")
}

impl SioClient {
    /// Connects to `base` (`http://host:port`) with `token` and waits for `ready`.
    pub async fn connect(base: &str, token: &str) -> SioClient {
        use tokio::io::AsyncBufReadExt;
        let mut child = spawn_client(base, token);
        let stdin = child.stdin.take().expect("stdin");
        let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut client =
            SioClient { child, stdin, lines, next_id: 0, pushes: Default::default(), ready: Value::Null };
        client.ready = client.next("ready").await;
        client
    }

    /// Tries to connect to `base` with `token`, expecting the handshake to be refused;
    /// returns the `connect_error` message (the contract's error code).
    pub async fn refused(base: &str, token: &str) -> String {
        use tokio::io::AsyncBufReadExt;
        let mut child = spawn_client(base, token);
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the client answers within 30 s")
            .expect("read from the client")
            .expect("the client printed a line");
        let value: Value = serde_json::from_str(&line).expect("a JSON line");
        let _ = child.kill().await;
        value["connect_error"]
            .as_str()
            .unwrap_or_else(|| panic!("expected a connect_error, got {value}"))
            .to_owned()
    }

    /// The next line the client printed, within `within` (None: nothing came).
    async fn line(&mut self, within: Duration) -> Option<Value> {
        let line = tokio::time::timeout(within, self.lines.next_line()).await.ok()?;
        let line = line.expect("read from the client").expect("the client is running");
        let value: Value = serde_json::from_str(&line).expect("a JSON line");
        assert!(value.get("connect_error").is_none(), "connect_error: {value}");
        Some(value)
    }

    /// Emits `event` with an ack callback and returns the ack; events meanwhile are kept.
    pub async fn call(&mut self, event: &str, data: Value) -> Value {
        use tokio::io::AsyncWriteExt;
        self.next_id += 1;
        let id = self.next_id;
        let command = serde_json::json!({ "id": id, "event": event, "data": data }).to_string() + "\n";
        self.stdin.write_all(command.as_bytes()).await.expect("write to the client");
        loop {
            let line = self
                .line(super::ws::WAIT)
                .await
                .unwrap_or_else(|| panic!("no ack within {:?}", super::ws::WAIT));
            if line.get("ack") == Some(&serde_json::json!(id)) {
                return line["data"].clone();
            }
            self.keep(line);
        }
    }

    /// Like [`SioClient::call`], asserting success.
    pub async fn ok(&mut self, event: &str, data: Value) -> Value {
        let ack = self.call(event, data).await;
        assert_eq!(ack["ok"], true, "{event}: {ack}");
        ack
    }

    /// The next event named `event` (earlier events of other names are kept).
    pub async fn next(&mut self, event: &str) -> Value {
        if let Some(i) = self.pushes.iter().position(|p| p["event"] == event) {
            return self.pushes.remove(i).map(|p| p["data"].clone()).unwrap_or_default();
        }
        loop {
            let line = self
                .line(super::ws::WAIT)
                .await
                .unwrap_or_else(|| panic!("no {event} within {:?}", super::ws::WAIT));
            if line["event"] == event {
                return line["data"].clone();
            }
            self.keep(line);
        }
    }

    /// Reads for `within`, keeping every event.
    pub async fn gather(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.line(left).await {
                Some(line) => self.keep(line),
                None => return,
            }
        }
    }

    /// Waits (at most `within`) for the connection to end; its `disconnect` reason (`io server
    /// disconnect` when the server closed it), or `None` if it stayed open. Events that arrive
    /// meanwhile are kept.
    pub async fn disconnected(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line()).await.ok()?;
            let Ok(Some(line)) = line else { return Some("the client exited".to_owned()) };
            let value: Value = serde_json::from_str(&line).expect("a JSON line");
            if let Some(reason) = value.get("disconnect") {
                return Some(reason.as_str().unwrap_or_default().to_owned());
            }
            if value.get("event").is_some() {
                self.pushes.push_back(value);
            }
        }
    }

    fn keep(&mut self, line: Value) {
        assert!(line.get("disconnect").is_none(), "the socket disconnected: {line}");
        if line.get("event").is_some() {
            self.pushes.push_back(line);
        }
    }
}

impl Drop for SioClient {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
