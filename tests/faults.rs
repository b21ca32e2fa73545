//! Issue 17's fault-injection suite: three `chatd serve` nodes on a PostgreSQL and a Redis of
//! the test's own, clients on both transports (plain WebSocket from this process, the stock
//! `socket.io-client` from tests/node/faults.mjs) sending with acks, and one fault after
//! another injected while they send: a Redis restart, a PostgreSQL restart, PostgreSQL paused
//! (SIGSTOP) for 3 s, a node killed with SIGKILL and restarted, and 200 ms of added latency
//! between the nodes and Redis. During each fault a user with a `/ws` and a Socket.IO
//! connection on every node is banned, and another such user leaves a group.
//!
//! After each fault, and at the end: every acked message is in the history exactly once, no
//! conversation has a seq gap, every client caught up through `sync` holds exactly the history
//! and never got a message of a conversation it is not in, the user who left hears nothing of
//! the group any more on any node, and the banned user's connections were closed on every node
//! within 5 s of the ban and new ones are refused. The
//! table it prints (fault → acked, lost, duplicated, time to converge) is the one README.md's
//! "Reliability" section quotes.
//!
//! `cargo test --test faults` runs the short version (every fault, 30 clients);
//! `CHATD_FAULTS=full` runs the full one (200 clients). Needs `redis-server` and PostgreSQL's
//! server binaries (`initdb`, `postgres`), and Node.js for the Socket.IO clients.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{Cluster, SECRET, token};
use common::node::SioClient;
use common::pg::OwnPostgres;
use common::proxy::LatencyProxy;
use common::redis::OwnRedis;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const ADMIN_KEY: &str = "faults-admin-key-0123456789";
/// How long a client waits for a send's ack before it gives up on the connection and resends
/// (on a new one): shorter than a PostgreSQL pause, so a resend can race the original.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client waits for any other ack (`sync`) before it gives up on the connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(8);
/// The bound on every wait for the system to recover (generous: a loaded 2-core machine).
const RECOVERY: Duration = Duration::from_secs(90);
/// How soon after a fault every client must hold the whole history by itself (through live
/// delivery and the syncs it makes on `sync:required`, a reconnect or a gap): generous, for a
/// loaded machine; the table shows the time it took.
const SELF_CONVERGENCE: Duration = Duration::from_secs(30);
/// How soon a ban must have closed the banned user's connections on every node.
const BAN_BOUND: Duration = Duration::from_secs(5);
/// The user who creates every group (never connects; reads the histories).
const OWNER: &str = "owner";

/// How much traffic: `CHATD_FAULTS=full` or the short default.
struct Scale {
    name: &'static str,
    clients: usize,
    groups: usize,
    /// Each client sends one message per interval.
    interval: Duration,
}

impl Scale {
    /// `CHATD_FAULTS=full` or else the short run.
    fn from_env() -> Scale {
        match std::env::var("CHATD_FAULTS").as_deref() {
            Ok("full") => {
                Scale { name: "full", clients: 200, groups: 25, interval: Duration::from_millis(2000) }
            }
            _ => Scale { name: "short", clients: 30, groups: 5, interval: Duration::from_millis(600) },
        }
    }
}

/// A send a client got an ack for.
#[derive(Clone, Debug)]
struct Acked {
    conversation: String,
    seq: i64,
    client_id: String,
}

/// What a client holds of one conversation after catching up.
#[derive(Clone, Debug, serde::Deserialize)]
struct Received {
    count: i64,
    max: i64,
    missing: Vec<i64>,
}

/// A client's account at a checkpoint: its sends acked since the last one, how many attempts
/// failed (no ack in time, a lost connection or an error ack) and had to be repeated, how
/// often it had to connect again, and what it holds.
#[derive(Debug)]
struct ClientReport {
    user: String,
    acked: Vec<Acked>,
    retried: usize,
    /// Why attempts failed: an error ack's code, or `no ack` (none in time, or the connection
    /// was lost), with how often.
    failures: BTreeMap<String, usize>,
    reconnected: usize,
    /// `message:new` pushes of conversations the client is not in (must stay 0).
    strays: usize,
    received: BTreeMap<String, Received>,
}

impl ClientReport {
    /// Reads a report printed by tests/node/faults.mjs.
    fn from_json(value: &Value) -> ClientReport {
        let acked = value["acked"]
            .as_array()
            .expect("acked")
            .iter()
            .map(|a| Acked {
                conversation: a[0].as_str().expect("conversation").to_owned(),
                seq: a[1].as_i64().expect("seq"),
                client_id: a[2].as_str().expect("client_id").to_owned(),
            })
            .collect();
        let received = serde_json::from_value(value["received"].clone()).expect("received");
        let retried = value["retried"].as_u64().expect("retried") as usize;
        let reconnected = value["reconnected"].as_u64().expect("reconnected") as usize;
        let user = value["user"].as_str().expect("user").to_owned();
        let failures = serde_json::from_value(value["failures"].clone()).expect("failures");
        let strays = value["strays"].as_u64().expect("strays") as usize;
        ClientReport { user, acked, retried, failures, reconnected, strays, received }
    }
}

// ---------------------------------------------------------------------------------------
// Plain WebSocket clients, one task each.

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the harness tells a traffic client.
enum Command {
    /// Start sending.
    Run,
    /// Stop sending; answer once no send waits for its ack.
    Stop(oneshot::Sender<()>),
    /// Whether the client holds every seq up to these heads (and nothing past them), as it
    /// is, without being told to sync.
    Peek(Arc<HashMap<String, i64>>, oneshot::Sender<bool>),
    /// Catch up with `sync`; answer with the report.
    Settle(oneshot::Sender<ClientReport>),
}

/// A `/ws` client that behaves as a careful chat client should (the same rules as
/// tests/node/faults.mjs): every send has a `client_id` and is resent with it until acked;
/// it reconnects to the first node that answers (its home node first) and calls `sync` after
/// connecting, on `sync:required`, and when a seq gap stays open for a second.
struct WsClient {
    user: String,
    home: usize,
    nodes: Arc<Vec<SocketAddr>>,
    conversations: Vec<String>,
    received: HashMap<String, BTreeSet<i64>>,
    contiguous: HashMap<String, i64>,
    acked: Vec<Acked>,
    retried: usize,
    failures: BTreeMap<String, usize>,
    /// Connections opened since the last report, after the first one.
    reconnected: usize,
    connected_once: bool,
    strays: usize,
    socket: Option<Socket>,
    next_id: u64,
    need_sync: bool,
    sync_requests: u64,
    /// `(conversation, client_id)` of the send waiting for its ack.
    pending: Option<(String, String)>,
    sent: usize,
    sending: bool,
    interval: Duration,
    /// Where in the interval this client sends (spreads the clients' sends out).
    phase: Duration,
    next_send_at: Instant,
    gap_since: Option<Instant>,
}

impl WsClient {
    fn new(
        user: String,
        home: usize,
        nodes: Arc<Vec<SocketAddr>>,
        conversations: Vec<String>,
        interval: Duration,
        phase: Duration,
    ) -> WsClient {
        WsClient {
            user,
            home,
            nodes,
            received: conversations.iter().map(|c| (c.clone(), BTreeSet::new())).collect(),
            contiguous: conversations.iter().map(|c| (c.clone(), 0)).collect(),
            conversations,
            acked: Vec::new(),
            retried: 0,
            failures: BTreeMap::new(),
            reconnected: 0,
            connected_once: false,
            strays: 0,
            socket: None,
            next_id: 0,
            need_sync: true,
            sync_requests: 0,
            pending: None,
            sent: 0,
            sending: false,
            interval,
            phase,
            next_send_at: Instant::now(),
            gap_since: None,
        }
    }

    /// Records a seq of one of the client's conversations.
    fn take(&mut self, conversation: &str, seq: i64) {
        let Some(seqs) = self.received.get_mut(conversation) else { return };
        seqs.insert(seq);
        let last = self.contiguous.get_mut(conversation).expect("tracked conversation");
        while seqs.contains(&(*last + 1)) {
            *last += 1;
        }
    }

    /// Asks for a sync; one already running when asked does not count.
    fn request_sync(&mut self) {
        self.need_sync = true;
        self.sync_requests += 1;
    }

    /// Whether the client holds a seq past a missing one.
    fn has_gap(&self) -> bool {
        self.conversations.iter().any(|c| self.received[c].len() as i64 > self.contiguous[c])
    }

    fn on_push(&mut self, frame: &Value) {
        match frame["event"].as_str() {
            Some("message:new") => {
                if let (Some(conversation), Some(seq)) =
                    (frame["data"]["conversation_id"].as_str(), frame["data"]["seq"].as_i64())
                {
                    if self.received.contains_key(conversation) {
                        self.take(conversation, seq);
                    } else {
                        self.strays += 1;
                    }
                }
            }
            Some("sync:required") => self.request_sync(),
            _ => {}
        }
    }

    /// Connects to the first node that answers with `ready`, home first.
    async fn connect(&mut self) {
        for k in 0..self.nodes.len() {
            let addr = self.nodes[(self.home + k) % self.nodes.len()];
            if let Some(socket) = open_ready(addr, &self.user).await {
                self.socket = Some(socket);
                self.request_sync();
                if std::mem::replace(&mut self.connected_once, true) {
                    self.reconnected += 1;
                }
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Sends `event` and waits (at most `timeout`) for its ack, handling pushes meanwhile;
    /// `None` (and the connection dropped) when the connection failed or no ack came in time.
    async fn call(&mut self, event: &str, data: Value, timeout: Duration) -> Option<Value> {
        let mut socket = self.socket.take()?;
        self.next_id += 1;
        let id = self.next_id;
        let frame = json!({ "id": id, "event": event, "data": data }).to_string();
        socket.send(Message::text(frame)).await.ok()?;
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                    if frame["id"] == id {
                        self.socket = Some(socket);
                        return Some(frame["ack"].clone());
                    }
                    self.on_push(&frame);
                }
                Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) | Err(_) => return None,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Reads pushes for up to `within`.
    async fn idle(&mut self, within: Duration) {
        let Some(mut socket) = self.socket.take() else { return };
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, socket.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Text(text)))) => {
                    if let Ok(frame) = serde_json::from_str::<Value>(&text) {
                        self.on_push(&frame);
                    }
                }
                Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => return,
                Ok(Some(Ok(_))) => {}
            }
        }
        self.socket = Some(socket);
    }

    /// Catches up every conversation from its first missing seq until nothing is newer.
    async fn sync(&mut self) {
        let asked = self.sync_requests;
        loop {
            let since: serde_json::Map<String, Value> =
                self.conversations.iter().map(|c| (c.clone(), json!(self.contiguous[c]))).collect();
            let Some(ack) = self.call("sync", json!({ "conversations": since }), ACK_TIMEOUT).await else {
                return;
            };
            if ack["ok"] != true {
                tokio::time::sleep(Duration::from_millis(500)).await;
                return;
            }
            for message in ack["messages"].as_array().into_iter().flatten() {
                if let (Some(conversation), Some(seq)) =
                    (message["conversation_id"].as_str(), message["seq"].as_i64())
                {
                    self.take(conversation, seq);
                }
            }
            if ack["has_more"] != true {
                break;
            }
        }
        if self.sync_requests == asked {
            self.need_sync = false;
        }
        self.gap_since = None;
    }

    /// One attempt at the pending send.
    async fn send(&mut self) {
        let Some((conversation, client_id)) = self.pending.clone() else { return };
        let data = json!({
            "conversation_id": conversation,
            "content": format!("{} says {client_id}", self.user),
            "client_id": client_id,
        });
        let Some(ack) = self.call("message:send", data, SEND_TIMEOUT).await else {
            self.retried += 1;
            *self.failures.entry("no ack".to_owned()).or_default() += 1;
            return;
        };
        match ack["message"]["seq"].as_i64() {
            Some(seq) if ack["ok"] == true => {
                self.take(&conversation, seq);
                self.acked.push(Acked { conversation, seq, client_id });
                self.pending = None;
            }
            _ => {
                self.retried += 1;
                let code = ack["error"]["code"].as_str().unwrap_or("malformed ack").to_owned();
                *self.failures.entry(code).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// One step of the client's life; false when there was nothing to do.
    async fn step(&mut self) -> bool {
        if self.socket.is_none() {
            self.connect().await;
            return true;
        }
        if self.pending.is_some() {
            self.send().await;
            return true;
        }
        if self.has_gap() {
            let since = *self.gap_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(1) {
                self.request_sync();
            }
        } else {
            self.gap_since = None;
        }
        if self.need_sync {
            self.sync().await;
            return true;
        }
        if self.sending && Instant::now() >= self.next_send_at {
            let conversation = self.conversations[self.sent % self.conversations.len()].clone();
            self.pending = Some((conversation, format!("{}-{}", self.user, self.sent)));
            self.sent += 1;
            self.next_send_at = (self.next_send_at + self.interval).max(Instant::now());
            return true;
        }
        false
    }

    /// Whether the client holds exactly seqs 1 to the head of each of its conversations.
    fn holds_exactly(&self, heads: &HashMap<String, i64>) -> bool {
        self.conversations.iter().all(|c| {
            let head = heads.get(c).copied().unwrap_or(0);
            self.received[c].len() as i64 == head && self.contiguous[c] == head
        })
    }

    fn report(&mut self) -> ClientReport {
        let received = self
            .conversations
            .iter()
            .map(|c| {
                let seqs = &self.received[c];
                let max = seqs.last().copied().unwrap_or(0);
                let missing = (1..=max).filter(|s| !seqs.contains(s)).take(20).collect();
                (c.clone(), Received { count: seqs.len() as i64, max, missing })
            })
            .collect();
        ClientReport {
            user: self.user.clone(),
            acked: std::mem::take(&mut self.acked),
            retried: std::mem::take(&mut self.retried),
            failures: std::mem::take(&mut self.failures),
            reconnected: std::mem::take(&mut self.reconnected),
            strays: self.strays,
            received,
        }
    }

    /// Lives until the harness drops its command sender.
    async fn live(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut stopped: Option<oneshot::Sender<()>> = None;
        let mut settled: Option<oneshot::Sender<ClientReport>> = None;
        loop {
            loop {
                match commands.try_recv() {
                    Ok(Command::Run) => {
                        self.sending = true;
                        self.next_send_at = Instant::now() + self.phase;
                    }
                    Ok(Command::Stop(reply)) => {
                        self.sending = false;
                        stopped = Some(reply);
                    }
                    Ok(Command::Peek(heads, reply)) => {
                        let _ = reply.send(self.holds_exactly(&heads));
                    }
                    Ok(Command::Settle(reply)) => {
                        self.request_sync();
                        settled = Some(reply);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            if self.pending.is_none()
                && let Some(reply) = stopped.take()
            {
                let _ = reply.send(());
            }
            if self.socket.is_some()
                && !self.need_sync
                && self.pending.is_none()
                && let Some(reply) = settled.take()
            {
                let _ = reply.send(self.report());
            }
            if !self.step().await {
                self.idle(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A `/ws` connection of `user` to `addr` that got its `ready` (within 4 s), or `None`.
async fn open_ready(addr: SocketAddr, user: &str) -> Option<Socket> {
    let url = format!("ws://{addr}/ws?token={}", token(user));
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(4), tokio_tungstenite::connect_async(url))
        .await
        .ok()?
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await.ok()?? {
            Ok(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).ok()?;
                if frame["event"] == "ready" {
                    return Some(socket);
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Socket.IO clients: tests/node/faults.mjs.

/// The Node.js process running the Socket.IO traffic clients.
struct SioClients {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl SioClients {
    /// Starts the clients (`(user, home node, conversations)`) and waits until every one is
    /// connected and synced.
    async fn start(
        nodes: &[SocketAddr],
        clients: &[(String, usize, Vec<String>)],
        interval: Duration,
    ) -> Self {
        let mut child = tokio::process::Command::new("node")
            .arg(common::node::node_driver_dir().join("faults.mjs"))
            .env("CHATD_SECRET", SECRET)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (Node.js is needed for the Socket.IO clients)");
        let stdin = child.stdin.take().expect("stdin");
        let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut sio = SioClients { _child: child, stdin, lines };
        let clients: Vec<Value> = clients
            .iter()
            .map(|(user, home, conversations)| json!({ "user": user, "home": home, "conversations": conversations }))
            .collect();
        let nodes: Vec<String> = nodes.iter().map(|a| format!("http://{a}")).collect();
        sio.send(json!({
            "cmd": "start",
            "nodes": nodes,
            "clients": clients,
            "interval_ms": interval.as_millis() as u64,
            "send_timeout_ms": SEND_TIMEOUT.as_millis() as u64,
            "ack_timeout_ms": ACK_TIMEOUT.as_millis() as u64,
        }))
        .await;
        sio.answer("started").await;
        sio
    }

    /// Writes one command line.
    async fn send(&mut self, command: Value) {
        let line = command.to_string() + "\n";
        self.stdin.write_all(line.as_bytes()).await.expect("write to the Socket.IO clients");
    }

    /// The next line holding `key`, within [`RECOVERY`].
    async fn answer(&mut self, key: &str) -> Value {
        let deadline = Instant::now() + RECOVERY;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("the Socket.IO clients did not answer {key} in time"))
                .expect("read the Socket.IO clients")
                .expect("the Socket.IO clients are running");
            let value: Value = serde_json::from_str(&line).expect("a JSON line");
            if value.get(key).is_some() {
                return value[key].clone();
            }
        }
    }
}

/// Every traffic client, on both transports.
struct Traffic {
    ws: Vec<mpsc::UnboundedSender<Command>>,
    sio: SioClients,
}

impl Traffic {
    /// Every client starts sending.
    async fn run(&mut self) {
        for client in &self.ws {
            let _ = client.send(Command::Run);
        }
        self.sio.send(json!({ "cmd": "run" })).await;
    }

    /// Stops sending and waits until every send was acked.
    async fn stop(&mut self) {
        let mut waits = Vec::new();
        for client in &self.ws {
            let (reply, wait) = oneshot::channel();
            let _ = client.send(Command::Stop(reply));
            waits.push(wait);
        }
        self.sio.send(json!({ "cmd": "stop" })).await;
        let all = futures::future::join_all(waits);
        tokio::time::timeout(RECOVERY, all).await.expect("every /ws send acked in time");
        self.sio.answer("stopped").await;
    }

    /// How many clients do not hold exactly the histories whose newest seqs are `heads`, as
    /// they are (live delivery and the syncs they chose to make).
    async fn behind(&mut self, heads: &HashMap<String, i64>) -> usize {
        let heads = Arc::new(heads.clone());
        let mut waits = Vec::new();
        for client in &self.ws {
            let (reply, wait) = oneshot::channel();
            let _ = client.send(Command::Peek(heads.clone(), reply));
            waits.push(wait);
        }
        self.sio.send(json!({ "cmd": "peek", "heads": *heads })).await;
        let all = futures::future::join_all(waits);
        let ws = tokio::time::timeout(RECOVERY, all).await.expect("every /ws client answered in time");
        let ws_behind = ws.into_iter().filter(|caught_up| !matches!(caught_up, Ok(true))).count();
        let sio_behind = self.sio.answer("behind").await.as_u64().expect("count") as usize;
        ws_behind + sio_behind
    }

    /// Every client catches up; their reports.
    async fn settle(&mut self) -> Vec<ClientReport> {
        let mut waits = Vec::new();
        for client in &self.ws {
            let (reply, wait) = oneshot::channel();
            let _ = client.send(Command::Settle(reply));
            waits.push(wait);
        }
        self.sio.send(json!({ "cmd": "settle" })).await;
        let all = futures::future::join_all(waits);
        let ws = tokio::time::timeout(RECOVERY, all).await.expect("every /ws client caught up in time");
        let mut reports: Vec<ClientReport> =
            ws.into_iter().map(|r| r.expect("a /ws client report")).collect();
        let sio = self.sio.answer("settled").await;
        reports.extend(sio.as_array().expect("reports").iter().map(ClientReport::from_json));
        reports
    }
}

// ---------------------------------------------------------------------------------------
// The banned user and the user who leaves.

/// When a watched connection ended, and its close frame's code and reason if it had one.
type Closed = Option<(Instant, Option<(u16, String)>)>;

/// A `/ws` connection watched in the background: the `message:new` pushes it got and when
/// and how it was closed. With `reconnect`, a lost connection is opened again to the same
/// node (until the watch is dropped).
struct Watch {
    messages: Arc<Mutex<Vec<(String, i64)>>>,
    closed: Arc<Mutex<Closed>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Connects `user` to `addr` (retrying while the node is busy) and starts watching.
    async fn open(addr: SocketAddr, user: &str, reconnect: bool) -> Watch {
        let deadline = Instant::now() + RECOVERY;
        let socket = loop {
            if let Some(socket) = open_ready(addr, user).await {
                break socket;
            }
            assert!(Instant::now() < deadline, "{user} could not connect to {addr}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let messages = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(None));
        let task = tokio::spawn({
            let (messages, closed, user) = (messages.clone(), closed.clone(), user.to_owned());
            async move {
                let mut socket = Some(socket);
                loop {
                    let Some(mut open) = socket.take() else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        socket = open_ready(addr, &user).await;
                        continue;
                    };
                    let close = loop {
                        match open.next().await {
                            Some(Ok(Message::Text(text))) => {
                                let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                                if frame["event"] == "message:new" {
                                    let data = &frame["data"];
                                    let entry = (
                                        data["conversation_id"].as_str().unwrap_or_default().to_owned(),
                                        data["seq"].as_i64().unwrap_or(0),
                                    );
                                    messages.lock().expect("messages").push(entry);
                                }
                            }
                            Some(Ok(Message::Close(frame))) => {
                                break frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break None,
                        }
                    };
                    closed.lock().expect("closed").get_or_insert((Instant::now(), close));
                    if !reconnect {
                        return;
                    }
                }
            }
        });
        Watch { messages, closed, task }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A REST call through the first node that answers in time, retried (every node in turn)
/// until `done` accepts the reply; returns the reply and when it came.
async fn until_done(
    nodes: &[SocketAddr],
    bearer: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    done: impl Fn(u16, &Value) -> bool,
) -> (Value, Instant) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("http client");
    let deadline = Instant::now() + RECOVERY;
    for attempt in 0.. {
        assert!(Instant::now() < deadline, "{method} {path} never succeeded");
        let addr = nodes[attempt % nodes.len()];
        let mut request = http.request(method.clone(), format!("http://{addr}{path}")).bearer_auth(bearer);
        if let Some(body) = &body {
            request = request.json(body);
        }
        if let Ok(response) = request.send().await {
            let status = response.status().as_u16();
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            if done(status, &body) {
                return (body, Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!("the loop only ends by returning or failing")
}

/// Bans `user` through the admin API; when the ban was acknowledged (204).
async fn ban(nodes: Arc<Vec<SocketAddr>>, user: String) -> Instant {
    let path = format!("/api/admin/users/{user}/ban");
    let body = Some(json!({ "reason": "fault suite" }));
    until_done(&nodes, ADMIN_KEY, reqwest::Method::PUT, &path, body, |status, _| status == 204).await.1
}

/// `user` leaves `group`; then the owner sends one message into it: its seq, the first the
/// user must never receive.
async fn leave(nodes: Arc<Vec<SocketAddr>>, user: String, group: String) -> i64 {
    let path = format!("/api/conversations/{group}/members/{user}");
    // A retry of a leave whose 204 was lost finds the user gone already.
    let left = |status: u16, body: &Value| status == 204 || body["error"]["code"] == "not_a_member";
    until_done(&nodes, &token(&user), reqwest::Method::DELETE, &path, None, left).await;
    let path = format!("/api/conversations/{group}/messages");
    let body = json!({ "content": format!("{user} has left"), "client_id": format!("{OWNER}-after-{user}") });
    let sent = |status: u16, _: &Value| status == 201 || status == 200;
    let (message, _) =
        until_done(&nodes, &token(OWNER), reqwest::Method::POST, &path, Some(body), sent).await;
    message["seq"].as_i64().expect("seq")
}

// ---------------------------------------------------------------------------------------
// Faults.

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    RedisRestart,
    PostgresRestart,
    PostgresPause,
    NodeKill,
    RedisLatency,
}

impl Fault {
    const ALL: [Fault; 5] = [
        Fault::RedisRestart,
        Fault::PostgresRestart,
        Fault::PostgresPause,
        Fault::NodeKill,
        Fault::RedisLatency,
    ];

    /// Its line in the table.
    fn name(self) -> &'static str {
        match self {
            Fault::RedisRestart => "Redis restarted (down 2 s)",
            Fault::PostgresRestart => "PostgreSQL restarted (down 1 s)",
            Fault::PostgresPause => "PostgreSQL paused (SIGSTOP 3 s)",
            Fault::NodeKill => "node SIGKILLed, back after 1 s",
            Fault::RedisLatency => "+200 ms Redis latency for 3 s",
        }
    }

    /// A short name, for user names.
    fn slug(self) -> &'static str {
        match self {
            Fault::RedisRestart => "redis-restart",
            Fault::PostgresRestart => "pg-restart",
            Fault::PostgresPause => "pg-pause",
            Fault::NodeKill => "node-kill",
            Fault::RedisLatency => "redis-latency",
        }
    }
}

/// The node [`Fault::NodeKill`] kills.
const KILLED: usize = 2;

/// Everything the suite runs. Fields drop in order: the nodes stop before their backends.
struct Setup {
    cluster: Cluster,
    proxy: LatencyProxy,
    redis: OwnRedis,
    postgres: OwnPostgres,
    nodes: Arc<Vec<SocketAddr>>,
    groups: Vec<String>,
    /// Group `k % groups` is the one leaver `k` (one per fault) belongs to.
    leavers: Vec<String>,
}

impl Setup {
    /// Starts the fault, runs it for its duration and ends it (waiting until the backend or
    /// node answers again).
    async fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::RedisRestart => {
                self.redis.kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.redis.restart().await;
            }
            Fault::PostgresRestart => {
                self.postgres.stop().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.postgres.restart().await;
            }
            Fault::PostgresPause => {
                self.postgres.pause();
                let paused = Instant::now();
                // The pause is real: nothing answers.
                let answer = tokio::time::timeout(Duration::from_secs(1), async {
                    let (client, connection) =
                        tokio_postgres::connect(&self.postgres.url(), tokio_postgres::NoTls).await?;
                    tokio::spawn(connection);
                    client.simple_query("SELECT 1").await.map(|_| ())
                })
                .await;
                assert!(answer.is_err(), "a paused PostgreSQL answered: {answer:?}");
                tokio::time::sleep_until(paused + Duration::from_secs(3)).await;
                self.postgres.resume();
            }
            Fault::NodeKill => {
                let addr = self.cluster.kill_node(KILLED);
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.cluster.restart_node(KILLED, addr).await;
            }
            Fault::RedisLatency => {
                self.proxy.set_delay(Duration::from_millis(200));
                let slowed = Instant::now();
                // The latency is real: a PING through the proxy takes both ways' delay.
                let url = format!("redis://127.0.0.1:{}", self.proxy.port);
                let mut redis = redis::Client::open(url)
                    .expect("redis url")
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect through the proxy");
                let sent = Instant::now();
                let _: String = redis::cmd("PING").query_async(&mut redis).await.expect("PING");
                let round_trip = sent.elapsed();
                assert!(
                    round_trip >= Duration::from_millis(400),
                    "PING took {round_trip:?} through the proxy"
                );
                tokio::time::sleep_until(slowed + Duration::from_secs(3)).await;
                self.proxy.set_delay(Duration::ZERO);
            }
        }
    }

    /// The newest seq of every group, read over REST as their owner.
    async fn heads(&self) -> HashMap<String, i64> {
        let mut heads = HashMap::new();
        for group in &self.groups {
            let path = format!("/api/conversations/{group}");
            let (conversation, _) =
                until_done(&self.nodes, &token(OWNER), reqwest::Method::GET, &path, None, |s, _| s == 200)
                    .await;
            heads.insert(group.clone(), conversation["last_seq"].as_i64().expect("last_seq"));
        }
        heads
    }

    /// Every message of `group`, read over REST as its owner (retried while a node or the
    /// database still recovers).
    async fn history(&self, group: &str) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let after = all.last().map_or(0, |m| m["seq"].as_i64().unwrap_or(0));
            let path = format!("/api/conversations/{group}/messages?after_seq={after}&limit=100");
            let (page, _) =
                until_done(&self.nodes, &token(OWNER), reqwest::Method::GET, &path, None, |s, _| s == 200)
                    .await;
            all.extend(page["messages"].as_array().expect("messages").iter().cloned());
            if page["has_more"] != true {
                return all;
            }
        }
    }
}

/// One line of the table.
struct Row {
    fault: &'static str,
    /// What the fault's checkpoint found.
    tally: Tally,
    converged: Duration,
    /// Longest time from the ban's 204 to the close of one of the user's connections.
    ban_closed: Option<Duration>,
    /// Whether the user who left heard nothing of the group afterwards.
    left_quiet: Option<bool>,
}

/// What one checkpoint found new since the last one.
struct Tally {
    acked: usize,
    /// Send attempts that failed and were repeated (with the same `client_id`).
    retried: usize,
    /// Why send attempts failed, with how often.
    failures: BTreeMap<String, usize>,
    /// Clients' connections opened again after losing one.
    reconnected: usize,
    lost: usize,
    duplicated: usize,
}

/// What the checkpoints have seen so far.
#[derive(Default)]
struct Ledger {
    acked: Vec<Acked>,
    lost: usize,
    duplicated: usize,
    problems: Vec<String>,
}

impl Ledger {
    /// Checks the histories and the clients' reports; what is new since the last checkpoint.
    async fn checkpoint(&mut self, setup: &Setup, reports: Vec<ClientReport>, label: &str) -> Tally {
        let (mut new_acked, mut retried, mut reconnected) = (0, 0, 0);
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        let mut holdings = Vec::new();
        let mut strays = Vec::new();
        for report in reports {
            if report.strays > 0 {
                strays.push((report.user.clone(), report.strays));
            }
            new_acked += report.acked.len();
            retried += report.retried;
            reconnected += report.reconnected;
            for (why, count) in report.failures {
                *failures.entry(why).or_default() += count;
            }
            self.acked.extend(report.acked);
            holdings.push((report.user, report.received));
        }
        let mut heads = HashMap::new();
        let mut by_client_id: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        for group in &setup.groups {
            let history = setup.history(group).await;
            let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap_or(0)).collect();
            if seqs != (1..=seqs.len() as i64).collect::<Vec<_>>() {
                self.problems.push(format!("{label}: {group} has a seq gap: {seqs:?}"));
            }
            heads.insert(group.clone(), seqs.last().copied().unwrap_or(0));
            for message in &history {
                if let Some(client_id) = message["client_id"].as_str() {
                    let seq = message["seq"].as_i64().unwrap_or(0);
                    by_client_id.entry(client_id.to_owned()).or_default().push((group.clone(), seq));
                }
            }
        }
        let duplicated: usize = by_client_id.values().map(|found| found.len() - 1).sum();
        let lost: Vec<&Acked> = self
            .acked
            .iter()
            .filter(|a| {
                !by_client_id.get(&a.client_id).is_some_and(|f| f.contains(&(a.conversation.clone(), a.seq)))
            })
            .collect();
        for acked in lost.iter().take(10) {
            self.problems.push(format!("{label}: acked {acked:?} is not in the history"));
        }
        for (client_id, found) in by_client_id.iter().filter(|(_, f)| f.len() > 1).take(10) {
            self.problems
                .push(format!("{label}: {client_id} is in the history {} times: {found:?}", found.len()));
        }
        for (user, strays) in &strays {
            self.problems
                .push(format!("{label}: {user} got {strays} message(s) of conversations it is not in"));
        }
        for (user, received) in holdings {
            for (group, held) in received {
                let head = heads.get(&group).copied().unwrap_or(0);
                if held.count != head || held.max != head {
                    self.problems.push(format!(
                        "{label}: {user} holds {} messages of {group} up to seq {} (missing {:?}); the history has {head}",
                        held.count, held.max, held.missing
                    ));
                }
            }
        }
        let (new_lost, new_duplicated) =
            (lost.len().saturating_sub(self.lost), duplicated.saturating_sub(self.duplicated));
        self.lost = self.lost.max(lost.len());
        self.duplicated = self.duplicated.max(duplicated);
        Tally { acked: new_acked, retried, failures, reconnected, lost: new_lost, duplicated: new_duplicated }
    }
}

/// Waits until every client holds exactly the history by itself; the time since `healed`
/// (a problem if it takes longer than [`SELF_CONVERGENCE`]).
async fn converge(
    setup: &Setup,
    traffic: &mut Traffic,
    ledger: &mut Ledger,
    healed: Instant,
    label: &str,
) -> Duration {
    let heads = setup.heads().await;
    let deadline = Instant::now() + SELF_CONVERGENCE;
    loop {
        let behind = traffic.behind(&heads).await;
        if behind == 0 {
            return healed.elapsed();
        }
        if Instant::now() >= deadline {
            ledger.problems.push(format!(
                "{label}: {behind} client(s) still did not hold the whole history by themselves {SELF_CONVERGENCE:?} after the fault"
            ));
            return healed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs one fault under traffic with a ban and a leave during it, then checks everything.
async fn run_fault(
    setup: &mut Setup,
    traffic: &mut Traffic,
    ledger: &mut Ledger,
    fault: Fault,
    index: usize,
) -> Row {
    let banned = format!("banned-{}", fault.slug());
    let mut ban_watches = Vec::new();
    let mut ban_sio = Vec::new();
    for addr in setup.nodes.iter() {
        ban_watches.push((*addr, Watch::open(*addr, &banned, false).await));
        let mut sio = SioClient::connect(&format!("http://{addr}"), &token(&banned)).await;
        let ended = tokio::spawn(async move {
            let reason = sio.disconnected(RECOVERY).await;
            (Instant::now(), reason)
        });
        ban_sio.push((*addr, ended));
    }
    let leaver = setup.leavers[index].clone();
    let group = setup.groups[index % setup.groups.len()].clone();
    let mut leave_watches = Vec::new();
    let mut leave_sio = Vec::new();
    for addr in setup.nodes.iter() {
        leave_watches.push(Watch::open(*addr, &leaver, true).await);
        // Socket.IO too: what it got until told to stop (or until its node dies).
        let mut sio = SioClient::connect(&format!("http://{addr}"), &token(&leaver)).await;
        let (stop, stopped) = oneshot::channel::<()>();
        let heard = tokio::spawn(async move {
            tokio::select! {
                _ = stopped => {}
                _ = sio.disconnected(RECOVERY * 4) => {}
            }
            std::mem::take(&mut sio.pushes)
        });
        leave_sio.push((stop, heard));
    }

    traffic.run().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The ban and the leave start as the fault does, and retry until the service takes them.
    let nodes = setup.nodes.clone();
    let during = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ban = tokio::spawn(ban(nodes.clone(), banned.clone()));
        let left = leave(nodes, leaver, group).await;
        (ban.await.expect("ban task"), left)
    });
    setup.inject(fault).await;
    let healed = Instant::now();
    let (banned_at, first_unheard) = tokio::time::timeout(RECOVERY, during)
        .await
        .expect("the ban and the leave went through in time")
        .expect("ban and leave");
    traffic.stop().await;
    let converged = converge(setup, traffic, ledger, healed, fault.name()).await;
    let reports = traffic.settle().await;
    let tally = ledger.checkpoint(setup, reports, fault.name()).await;
    // The banned user's connections: closed by every node within the bound (the killed node's
    // died with it), and every node refuses a new one.
    let ban_deadline = banned_at + BAN_BOUND;
    tokio::time::sleep_until(ban_deadline + Duration::from_millis(200)).await;
    let mut ban_closed = Duration::ZERO;
    for (i, (addr, watch)) in ban_watches.iter().enumerate() {
        let closed = watch.closed.lock().expect("closed").clone();
        match closed {
            Some((_, None)) if fault == Fault::NodeKill && i == KILLED => {}
            Some((at, Some((1008, reason)))) if reason == "forbidden: banned" && at <= ban_deadline => {
                ban_closed = ban_closed.max(at.saturating_duration_since(banned_at));
            }
            other => ledger.problems.push(format!(
                "{}: the banned user's connection to {addr} was not closed for the ban within {BAN_BOUND:?}: {other:?}",
                fault.name()
            )),
        }
    }
    for (i, (addr, ended)) in ban_sio.into_iter().enumerate() {
        if !ended.is_finished() {
            ended.abort();
            ledger.problems.push(format!(
                "{}: the banned user's Socket.IO connection to {addr} was still open {BAN_BOUND:?} after the ban",
                fault.name()
            ));
            continue;
        }
        match ended.await.expect("Socket.IO watch") {
            _ if fault == Fault::NodeKill && i == KILLED => {}
            (at, Some(reason)) if reason == "io server disconnect" && at <= ban_deadline => {
                ban_closed = ban_closed.max(at.saturating_duration_since(banned_at));
            }
            other => ledger.problems.push(format!(
                "{}: the banned user's Socket.IO connection to {addr} was not closed for the ban within {BAN_BOUND:?}: {other:?}",
                fault.name()
            )),
        }
        let refused =
            SioClient::refused(&format!("http://{addr}"), &token(&format!("banned-{}", fault.slug()))).await;
        if refused != "forbidden" {
            ledger.problems.push(format!(
                "{}: a new Socket.IO connection of the banned user to {addr} got {refused:?}, not forbidden",
                fault.name()
            ));
        }
    }
    for addr in setup.nodes.iter() {
        let url = format!("ws://{addr}/ws?token={}", token(&format!("banned-{}", fault.slug())));
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 403 => {}
            other => ledger.problems.push(format!(
                "{}: a new connection of the banned user to {addr} was not refused with 403: {:?}",
                fault.name(),
                other.map(|(_, response)| response.status())
            )),
        }
    }
    // The user who left: nothing of the group from the owner's message on, on any node.
    let group = &setup.groups[index % setup.groups.len()];
    let mut left_quiet = true;
    let mut heard_by_connection: Vec<Vec<(String, i64)>> =
        leave_watches.iter().map(|w| w.messages.lock().expect("messages").clone()).collect();
    for (stop, heard) in leave_sio {
        let _ = stop.send(());
        let pushes = heard.await.expect("Socket.IO leaver");
        let messages = pushes.iter().filter(|p| p["event"] == "message:new").map(|p| {
            (
                p["data"]["conversation_id"].as_str().unwrap_or_default().to_owned(),
                p["data"]["seq"].as_i64().unwrap_or(0),
            )
        });
        heard_by_connection.push(messages.collect());
    }
    for messages in heard_by_connection {
        // A watch that heard nothing of the group before the leave would prove nothing after.
        if !messages.iter().any(|(c, seq)| c == group && *seq < first_unheard) {
            ledger.problems.push(format!(
                "{}: a connection of the user who left heard nothing of {group} before",
                fault.name()
            ));
        }
        let heard: Vec<(String, i64)> =
            messages.into_iter().filter(|(c, seq)| c == group && *seq >= first_unheard).collect();
        if !heard.is_empty() {
            left_quiet = false;
            ledger.problems.push(format!("{}: a user who left {group} still got {heard:?}", fault.name()));
        }
    }
    Row { fault: fault.name(), tally, converged, ban_closed: Some(ban_closed), left_quiet: Some(left_quiet) }
}

fn print_table(scale: &Scale, rows: &[Row]) {
    println!();
    println!("fault suite ({}: {} clients, 3 nodes)", scale.name, scale.clients);
    println!(
        "| fault | acked | retried | reconnected | lost | duplicated | converged in | ban closed in | left group quiet |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let ban = row.ban_closed.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        let quiet = row.left_quiet.map_or("-", |q| if q { "yes" } else { "no" });
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} s | {ban} | {quiet} |",
            row.fault,
            row.tally.acked,
            row.tally.retried,
            row.tally.reconnected,
            row.tally.lost,
            row.tally.duplicated,
            row.converged.as_secs_f64()
        );
    }
    println!();
    for row in rows.iter().filter(|r| !r.tally.failures.is_empty()) {
        let failures: Vec<String> = row.tally.failures.iter().map(|(why, n)| format!("{why} ×{n}")).collect();
        println!("{}: failed send attempts: {}", row.fault, failures.join(", "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_every_fault_exactly_once_and_every_client_converges() {
    let scale = Scale::from_env();
    let postgres = OwnPostgres::start().await;
    let redis = OwnRedis::start().await;
    let proxy = LatencyProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port))).await;
    let redis_url = format!("redis://127.0.0.1:{}", proxy.port);
    let flags = ["--admin-key", ADMIN_KEY, "--handshake-rate", "0", "--presence-ttl", "5"];
    let cluster = Cluster::start_on(None, &postgres.url(), 3, &redis_url, (0, 0), &flags).await;
    let nodes: Arc<Vec<SocketAddr>> = Arc::new((0..3).map(|i| cluster.node(i).addr()).collect());

    // Client i is in groups i and i + 1 (mod the group count); leaver k in group k.
    let users: Vec<String> = (0..scale.clients).map(|i| format!("u{i}")).collect();
    let leavers: Vec<String> = Fault::ALL.iter().map(|f| format!("leaver-{}", f.slug())).collect();
    let owner = cluster.node(0).client(&token(OWNER));
    let mut groups = Vec::new();
    for g in 0..scale.groups {
        let mut members: Vec<&str> = (0..scale.clients)
            .filter(|i| i % scale.groups == g || (i + 1) % scale.groups == g)
            .map(|i| users[i].as_str())
            .collect();
        members.extend(
            leavers.iter().enumerate().filter(|(k, _)| k % scale.groups == g).map(|(_, l)| l.as_str()),
        );
        let created = owner
            .post(
                "/api/conversations",
                json!({ "type": "group", "name": format!("g{g}"), "members": members }),
            )
            .await
            .expect(201);
        groups.push(created["id"].as_str().expect("id").to_owned());
    }
    let conversations_of =
        |i: usize| vec![groups[i % scale.groups].clone(), groups[(i + 1) % scale.groups].clone()];

    // Even clients on /ws in this process, odd ones on Socket.IO in Node; homes round robin.
    let mut ws = Vec::new();
    let mut sio_clients = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let home = (i / 2) % 3;
        if i % 2 == 0 {
            let phase = scale.interval.mul_f64(i as f64 / scale.clients as f64);
            let client =
                WsClient::new(user.clone(), home, nodes.clone(), conversations_of(i), scale.interval, phase);
            let (commands, receiver) = mpsc::unbounded_channel();
            tokio::spawn(client.live(receiver));
            ws.push(commands);
        } else {
            sio_clients.push((user.clone(), home, conversations_of(i)));
        }
    }
    let sio = SioClients::start(&nodes, &sio_clients, scale.interval).await;
    let mut traffic = Traffic { ws, sio };
    let mut setup = Setup { cluster, proxy, redis, postgres, nodes, groups, leavers };
    let mut ledger = Ledger::default();

    let started = Instant::now();
    let mut rows = Vec::new();
    for (index, fault) in Fault::ALL.into_iter().enumerate() {
        rows.push(run_fault(&mut setup, &mut traffic, &mut ledger, fault, index).await);
    }
    // A last stretch without a fault, then the whole history once more.
    traffic.run().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ended = Instant::now();
    traffic.stop().await;
    let converged = converge(&setup, &mut traffic, &mut ledger, ended, "end").await;
    let reports = traffic.settle().await;
    let tally = ledger.checkpoint(&setup, reports, "end").await;
    rows.push(Row {
        fault: "end (2 s more, no fault)",
        tally,
        converged,
        ban_closed: None,
        left_quiet: None,
    });
    print_table(&scale, &rows);
    println!("total acked: {} in {:.0} s", ledger.acked.len(), started.elapsed().as_secs_f64());

    if !ledger.problems.is_empty() {
        panic!(
            "the fault suite found {} problem(s):\n{}\n\nnode logs (tails):\n{}",
            ledger.problems.len(),
            ledger.problems.join("\n"),
            setup.cluster.log_tails(40)
        );
    }
    assert!(rows.iter().all(|r| r.tally.lost == 0 && r.tally.duplicated == 0));
}
