//! Test harness: a real chatd server on an ephemeral port over a temporary SQLite file (or a
//! fresh PostgreSQL schema, see [`pg`]),
//! and a small HTTP client speaking the REST contract.
#![allow(dead_code)]

pub mod annotations;
pub mod cluster;
pub mod media;
pub mod node;
pub mod pg;
pub mod proxy;
pub mod redis;
pub mod search;
pub mod sse;
pub mod states;
pub mod store;
pub mod webhook;
pub mod weed;
pub mod ws;

use std::net::SocketAddr;
use std::time::Duration;

use chatd::config::Config;
use chatd::state::AppState;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

/// A running server; stops (gracefully) when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub state: AppState,
    pub data_dir: tempfile::TempDir,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// A server with default configuration, except rate limiting switched off.
    pub async fn start() -> TestServer {
        Self::start_with(|config| config.limits.messages_per_second = 0).await
    }

    /// A server whose configuration `tweak` may adjust first.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::with_data_dir(data_dir.path()).expect("config");
        // The tests' push receivers listen on 127.0.0.1.
        config.limits.push_endpoints.allow_private = true;
        // Tests open connections from one IP far faster than any client would; the per-IP
        // handshake limit is tested on its own (tests/limits.rs turns it on).
        config.connections.handshake_rate = 0;
        tweak(&mut config);
        Self::start_in(data_dir, config).await
    }

    /// A server over an existing data directory and configuration.
    pub async fn start_in(data_dir: tempfile::TempDir, config: Config) -> TestServer {
        let state = AppState::build(config).await.expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                chatd::server::serve(listener, state, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
            }
        });
        TestServer {
            addr,
            base: format!("http://{addr}"),
            state,
            data_dir,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting, waits for in-flight requests, and hands back the data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data_dir, dir)
    }

    /// A token for `user_id` signed with the server's key (valid 1 h).
    pub fn token(&self, user_id: &str) -> String {
        self.state.auth.mint(user_id, None, Duration::from_secs(3600)).expect("mint")
    }

    /// A client acting as `user_id`.
    pub fn client(&self, user_id: &str) -> Client {
        Client { base: self.base.clone(), token: Some(self.token(user_id)), http: self.http.clone() }
    }

    /// A client sending no token.
    pub fn anonymous(&self) -> Client {
        Client { base: self.base.clone(), token: None, http: self.http.clone() }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A response: status, parsed JSON body (Null when empty), and headers.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The `error.code` of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the status and the contract error code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "status of {:?}", self.body);
        assert_eq!(self.code(), code, "code of {:?}", self.body);
        assert!(self.body["error"]["message"].is_string(), "message of {:?}", self.body);
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "status of {:?}", self.body);
        self.body
    }
}

/// A REST client for one user (or none).
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

impl Client {
    /// Same client with another token.
    /// Every message of a conversation over REST, walked forward 100 at a time.
    pub async fn all_messages(&self, conversation_id: &str) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        let mut after = 0;
        loop {
            let body = self
                .get(&format!("/api/conversations/{conversation_id}/messages?after_seq={after}&limit=100"))
                .await
                .expect(200);
            let page = body["messages"].as_array().expect("messages").clone();
            let has_more = body["has_more"].as_bool().expect("has_more");
            if let Some(last) = page.last() {
                after = last["seq"].as_i64().expect("seq");
            }
            all.extend(page);
            if !has_more {
                return all;
            }
            assert!(all.len() < 100_000, "history walk does not end");
        }
    }

    pub fn with_token(&self, token: &str) -> Client {
        Client { token: Some(token.to_owned()), ..self.clone() }
    }

    /// Sends a request with an optional JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        Self::finish(req).await
    }

    /// Sends a request with a raw body and content type.
    pub async fn raw(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        Self::finish(req).await
    }

    async fn finish(req: reqwest::RequestBuilder) -> Reply {
        Self::try_finish(req).await.expect("request")
    }

    /// A POST that may fail to reach the server (e.g. a killed node): `None` then.
    pub async fn try_post(&self, path: &str, body: Value) -> Option<Reply> {
        let mut req = self.http.post(format!("{}{}", self.base, path)).json(&body);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        Self::try_finish(req).await.ok()
    }

    async fn try_finish(req: reqwest::RequestBuilder) -> reqwest::Result<Reply> {
        let resp = req.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Ok(Reply { status, body, headers })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a conversation and returns its JSON (asserting 201).
    pub async fn create(&self, kind: &str, members: &[&str]) -> Value {
        self.post("/api/conversations", serde_json::json!({ "type": kind, "members": members }))
            .await
            .expect(201)
    }

    /// Sends a text message and returns it (asserting 201).
    pub async fn send(&self, conversation_id: &str, content: &str) -> Value {
        self.post(
            &format!("/api/conversations/{conversation_id}/messages"),
            serde_json::json!({ "content": content }),
        )
        .await
        .expect(201)
    }
}

// ---------------------------------------------------------------------------------------
// The real `chatd` binary as a child process.

/// A `chatd` command (the binary Cargo built for these tests) that inherits no `CHATD_*`
/// setting from the test environment.
pub fn chatd_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CHATD_") {
            command.env_remove(key);
        }
    }
    command.stdin(std::process::Stdio::null());
    command
}

/// Runs `command` to completion with captured output, killing it (and failing) if it is
/// still running after 30 s. For commands that print little (pipes are read at the end).
pub fn run_bounded(command: &mut std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn chatd");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!("chatd did not exit within 30 s; stderr:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

/// `chatd token <user> <args>` run in `cwd`; asserts success and returns the token.
pub fn cli_token(cwd: &std::path::Path, user: &str, args: &[&str]) -> String {
    let output = run_bounded(chatd_command().args(["token", user]).args(args).current_dir(cwd));
    assert!(output.status.success(), "chatd token failed: {}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).expect("utf-8 token").trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    token
}

/// A loopback port nobody listens on right now (bound, then released for a child to take).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("addr").port()
}

/// A running `chatd serve` child process; killed on drop, so a failing test leaves no
/// process behind.
pub struct ServerProcess {
    child: Option<std::process::Child>,
    pub base: String,
    log: std::path::PathBuf,
}

impl ServerProcess {
    /// Starts `chatd serve --bind 127.0.0.1:<free port> <args>` in `cwd`, its stderr going to
    /// the file `log`, and waits (at most ~10 s) until `/healthz` answers.
    pub async fn start(cwd: &std::path::Path, args: &[&str], log: std::path::PathBuf) -> ServerProcess {
        Self::start_with_env(cwd, args, &[], log).await
    }

    /// [`ServerProcess::start`] with `CHATD_*` (or other) environment variables set.
    pub async fn start_with_env(
        cwd: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: std::path::PathBuf,
    ) -> ServerProcess {
        let addr = format!("127.0.0.1:{}", free_port()).parse().expect("loopback address");
        Self::start_at(cwd, addr, args, env, log).await
    }

    /// [`ServerProcess::start_with_env`] on a given address (e.g. a killed node's, to bring it
    /// back where its clients reconnect).
    pub async fn start_at(
        cwd: &std::path::Path,
        addr: std::net::SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
        log: std::path::PathBuf,
    ) -> ServerProcess {
        let addr = addr.to_string();
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = chatd_command()
            .arg("serve")
            .args(["--bind", &addr])
            .args(args)
            .envs(env.iter().copied())
            .current_dir(cwd)
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn chatd serve");
        let mut server = ServerProcess { child: Some(child), base: format!("http://{addr}"), log };
        server.wait_until_up().await;
        server
    }

    /// `host:port` the server listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base.trim_start_matches("http://").parse().expect("listen address")
    }

    /// The process id (for reading `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_until_up(&mut self) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().expect("client");
        for _ in 0..100 {
            if let Some(status) = self.child.as_mut().expect("child").try_wait().expect("try_wait") {
                panic!("chatd serve exited early ({status}); log:\n{}", self.log_text());
            }
            if let Ok(resp) = http.get(format!("{}/healthz", self.base)).send().await
                && resp.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chatd serve did not answer /healthz within ~10 s; log:\n{}", self.log_text());
    }

    /// Sends SIGTERM and waits (at most ~15 s) for the process to exit; returns its status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("child");
        let kill = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM failed");
        for _ in 0..300 {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("chatd serve did not exit within ~15 s of SIGTERM; log:\n{}", self.log_text());
    }

    /// A REST client for this server with `token`.
    pub fn client(&self, token: &str) -> Client {
        Client { base: self.base.clone(), token: Some(token.to_owned()), http: reqwest::Client::new() }
    }

    /// A REST client sending no token.
    pub fn anonymous(&self) -> Client {
        Client { base: self.base.clone(), token: None, http: reqwest::Client::new() }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three times: the owner and the four longest-standing of six members leave a group at once
/// over REST; the fifth member must be its owner afterwards.
pub async fn assert_concurrent_leaves_keep_an_owner(server: &TestServer) {
    let others = ["m1", "m2", "m3", "m4", "m5", "m6"];
    for _ in 0..3 {
        let created = server
            .client("alice")
            .post("/api/conversations", serde_json::json!({ "type": "group", "members": others }))
            .await
            .expect(201);
        let id = created["id"].as_str().expect("id").to_owned();
        let leaves = ["alice", "m1", "m2", "m3", "m4"].map(|user| {
            let client = server.client(user);
            let path = format!("/api/conversations/{id}/members/{user}");
            async move { client.delete(&path).await.status.as_u16() }
        });
        assert_eq!(futures::future::join_all(leaves).await, vec![204; 5]);
        let conversation = server.client("m5").get(&format!("/api/conversations/{id}")).await.expect(200);
        let roles: Vec<(String, String)> = conversation["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (m["user_id"].as_str().unwrap_or("").to_owned(), m["role"].as_str().unwrap_or("").to_owned())
            })
            .collect();
        assert_eq!(roles, [("m5".to_owned(), "owner".to_owned()), ("m6".to_owned(), "member".to_owned())]);
    }
}
