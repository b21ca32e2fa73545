//! A plain-WebSocket (`/ws`) test client speaking the JSON frame contract.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestServer;

/// How long a client waits for a frame, an ack or a close that must come: generous, so that
/// a busy 2-core CI machine never fails a test by being slow.
pub const WAIT: Duration = Duration::from_secs(30);

/// A `/ws` client that keeps pushes it has not looked at yet.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub next_id: u64,
    pub pushes: VecDeque<Value>,
    pub ready: Value,
}

impl Ws {
    /// Connects as `user` with `?token=` and waits for `ready`.
    pub async fn connect(server: &TestServer, user: &str) -> Ws {
        Self::connect_to(server.addr, &server.token(user)).await
    }

    /// Connects to the server at `addr` with `token` and waits for `ready`.
    pub async fn connect_to(addr: std::net::SocketAddr, token: &str) -> Ws {
        Self::open(&format!("ws://{addr}/ws?token={token}")).await
    }

    /// Connects as `user` over a socket with a 4 KiB receive window and waits for `ready`:
    /// a client that then stops reading fills the server's queue for it quickly.
    pub async fn connect_slow(server: &TestServer, user: &str) -> Ws {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        let tcp = socket.connect(server.addr).await.expect("connect");
        let url = format!("ws://{}/ws?token={}", server.addr, server.token(user));
        let (stream, _) =
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)).await.expect("upgrade");
        let mut ws = Ws { stream, next_id: 0, pushes: VecDeque::new(), ready: Value::Null };
        ws.ready = ws.next("ready").await;
        ws
    }

    pub async fn open(request: impl IntoClientRequest + Unpin) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
        let mut ws = Ws { stream, next_id: 0, pushes: VecDeque::new(), ready: Value::Null };
        ws.ready = ws.next("ready").await;
        ws
    }

    pub async fn send_frame(&mut self, frame: Value) {
        self.stream.send(Message::text(frame.to_string())).await.expect("send");
    }

    /// The next JSON text frame (pings are answered by the client library while reading).
    pub async fn frame(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no frame within {WAIT:?}"))
                .expect("the connection is open")
                .expect("a readable frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
                Message::Close(close) => panic!("closed by the server: {close:?}"),
                _ => continue,
            }
        }
    }

    /// Sends `event` with an id and returns its ack; pushes that arrive meanwhile are kept.
    pub async fn call(&mut self, event: &str, data: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send_frame(json!({ "id": id, "event": event, "data": data })).await;
        loop {
            let frame = self.frame().await;
            if frame.get("id") == Some(&json!(id)) {
                return frame["ack"].clone();
            }
            self.pushes.push_back(frame);
        }
    }

    /// Like [`Ws::call`], asserting success.
    pub async fn ok(&mut self, event: &str, data: Value) -> Value {
        let ack = self.call(event, data).await;
        assert_eq!(ack["ok"], true, "{event}: {ack}");
        ack
    }

    /// The next push named `event` (earlier pushes of other names are kept).
    pub async fn next(&mut self, event: &str) -> Value {
        if let Some(i) = self.pushes.iter().position(|p| p["event"] == event) {
            return self.pushes.remove(i).map(|p| p["data"].clone()).unwrap_or_default();
        }
        loop {
            let frame = self.frame().await;
            assert!(frame.get("id").is_none(), "unexpected ack {frame}");
            if frame["event"] == event {
                return frame["data"].clone();
            }
            self.pushes.push_back(frame);
        }
    }

    /// Asserts no push named `event` arrives within `within` (pushes kept from before are
    /// not looked at).
    pub async fn none(&mut self, event: &str, within: Duration) {
        let before = self.pushes.len();
        self.gather(within).await;
        if let Some(frame) = self.pushes.iter().skip(before).find(|frame| frame["event"] == event) {
            panic!("unexpected {frame}");
        }
    }

    /// Reads frames for `within`, keeping every push.
    pub async fn gather(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, self.stream.next()).await {
            if let Message::Text(text) = message {
                self.pushes.push_back(serde_json::from_str(&text).expect("JSON frame"));
            }
        }
    }

    /// Reads until the server closes; returns its close frame (None if the TCP connection
    /// just ended).
    pub async fn closed(&mut self, within: Duration) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await.expect("closed in time") {
                Some(Ok(Message::Close(close))) => return close,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// Sends `messages` messages of 4,000 characters from alice into `conversation_id` over
/// `senders` concurrent REST clients (about 8 MB for 2,000), and asserts that `follower`
/// receives every one, in seq order, meanwhile.
pub async fn flood_and_follow(
    server: &TestServer,
    conversation_id: &str,
    messages: usize,
    senders: usize,
    follower: &mut Ws,
) {
    let content = "x".repeat(4000);
    // The senders stay at most WINDOW messages ahead of what the follower has read, so a
    // follower slowed by a busy machine is never itself a slow consumer (its server-side
    // queue may be as small as 100 frames).
    const WINDOW: usize = 50;
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let (alice, id, content) = (server.client("alice"), conversation_id.to_owned(), content.clone());
            let window = window.clone();
            tokio::spawn(async move {
                for _ in 0..messages / senders {
                    window.acquire().await.expect("the window stays open").forget();
                    alice.send(&id, &content).await;
                }
            })
        })
        .collect();
    for seq in 1..=messages {
        assert_eq!(
            follower.next("message:new").await["seq"],
            seq as i64,
            "the follower keeps receiving, in order"
        );
        window.add_permits(1);
    }
    for task in tasks {
        task.await.expect("sender");
    }
}
