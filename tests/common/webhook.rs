//! A local HTTP server standing in for a platform's webhook receiver (or FCM, its OAuth token
//! endpoint, APNs): it records every request exactly as it arrived and answers with scripted
//! replies. It speaks HTTP/1.1 and HTTP/2 cleartext (prior knowledge), as APNs needs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

/// Long enough for anything the test waits for; never reached when the code works.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// How long the tests watch for requests that must not come (many retry periods).
pub const QUIET: Duration = Duration::from_millis(600);
/// How long a request waits for the others of [`Receiver::answer_together`] before it is
/// answered alone (never reached when they come together).
pub const GATE_PATIENCE: Duration = Duration::from_secs(5);

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub version: Version,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: String::new() }
    }

    /// `status` with a JSON body.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply { status, headers: vec![("content-type", "application/json".into())], body: body.to_string() }
    }
}

struct Recorded {
    requests: Mutex<Vec<Received>>,
    /// Replies to answer with, in order; `default` once they run out.
    script: Mutex<VecDeque<Reply>>,
    default: Reply,
    arrived: Notify,
    /// Paths whose next request is answered only once its sender is used (or dropped).
    holds: Mutex<Vec<(String, oneshot::Receiver<()>)>>,
    /// When non-zero, each request is answered only once this many have arrived.
    together: AtomicUsize,
    /// Requests answered alone: the others of `together` did not come in time.
    alone: AtomicUsize,
}

pub struct Receiver {
    pub addr: SocketAddr,
    recorded: Arc<Recorded>,
}

impl Receiver {
    /// A receiver on `listener` answering `script` first, then 200.
    pub async fn start(listener: tokio::net::TcpListener, script: &[u16]) -> Receiver {
        let script = script.iter().map(|&status| Reply::status(status)).collect();
        Receiver::start_replying(listener, script, Reply::status(200)).await
    }

    /// A receiver on a free port answering `script` first, then `default`.
    pub async fn bind_replying(script: Vec<Reply>, default: Reply) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::start_replying(listener, script, default).await
    }

    async fn start_replying(
        listener: tokio::net::TcpListener,
        script: Vec<Reply>,
        default: Reply,
    ) -> Receiver {
        let recorded = Arc::new(Recorded {
            requests: Mutex::default(),
            script: Mutex::new(script.into()),
            default,
            arrived: Notify::new(),
            holds: Mutex::default(),
            together: AtomicUsize::new(0),
            alone: AtomicUsize::new(0),
        });
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(record).with_state(recorded.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, recorded }
    }

    pub async fn bind(script: &[u16]) -> Receiver {
        Receiver::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), script).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Holds the answer to the next request for `path` until the returned sender is used or
    /// dropped (at most [`PATIENCE`]).
    pub fn hold(&self, path: &str) -> oneshot::Sender<()> {
        let (release, released) = oneshot::channel();
        self.recorded.holds.lock().unwrap().push((path.to_owned(), released));
        release
    }

    /// From now on, answers each request only once `n` requests have arrived in all (waiting
    /// at most [`GATE_PATIENCE`]); see [`Receiver::answered_alone`].
    pub fn answer_together(&self, n: usize) {
        self.recorded.together.store(n, Ordering::SeqCst);
    }

    /// How many requests waited in vain for the others of [`Receiver::answer_together`].
    pub fn answered_alone(&self) -> usize {
        self.recorded.alone.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.recorded.requests.lock().unwrap().clone()
    }

    /// Waits (at most [`PATIENCE`]) until `n` requests have arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let arrived = self.recorded.arrived.notified();
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "expected {n} webhook requests within {PATIENCE:?}, got {}: {requests:?}",
                    requests.len()
                );
            }
        }
    }

    /// Asserts that no request beyond the first `n` arrives for a while.
    pub async fn assert_no_more_than(&self, n: usize) {
        tokio::time::sleep(QUIET).await;
        let requests = self.requests();
        assert_eq!(requests.len(), n, "no further webhook requests: {requests:?}");
    }
}

async fn record(
    State(recorded): State<Arc<Recorded>>,
    version: Version,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = recorded.script.lock().unwrap().pop_front().unwrap_or_else(|| recorded.default.clone());
    recorded.requests.lock().unwrap().push(Received {
        version,
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    });
    recorded.arrived.notify_waiters();
    let held = {
        let mut holds = recorded.holds.lock().unwrap();
        holds.iter().position(|(path, _)| path == uri.path()).map(|i| holds.remove(i).1)
    };
    if let Some(released) = held {
        let _ = tokio::time::timeout(PATIENCE, released).await;
    }
    let together = recorded.together.load(Ordering::SeqCst);
    if together > 0 {
        let deadline = tokio::time::Instant::now() + GATE_PATIENCE;
        loop {
            let arrived = recorded.arrived.notified();
            if recorded.requests.lock().unwrap().len() >= together {
                break;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                recorded.alone.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// Waits until `client`'s user has no device left.
pub async fn wait_until_no_devices(client: &super::Client) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let devices = client.get("/api/devices").await.expect(200);
        if devices["devices"] == serde_json::json!([]) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the device was not removed: {devices}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A member who muted a group still gets a push, typed `mention`, for a message naming them in
/// `mentions` and for `mentions_all`, and no other. `server` runs the push worker with webhook
/// delivery to `receiver` allowed; shared by the push suite (SQLite) and PostgreSQL's.
pub async fn assert_mentions_pushed_through_a_mute(server: &super::TestServer, receiver: &Receiver) {
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let endpoint = receiver.url("/hook");
    bob.post("/api/devices", json!({"platform": "webhook", "token": "bob-phone", "endpoint": endpoint}))
        .await
        .expect(201);
    let created = alice.create("group", &["bob", "carol"]).await;
    let conversation = created["id"].as_str().expect("id");
    let messages = format!("/api/conversations/{conversation}/messages");
    bob.put(&format!("/api/conversations/{conversation}/notifications"), json!({"enabled": false}))
        .await
        .expect(204);

    alice.send(conversation, "not for bob").await;
    let named =
        alice.post(&messages, json!({"content": "@bob can you?", "mentions": ["bob"]})).await.expect(201);
    let requests = receiver.wait_for(1).await;
    assert_eq!(
        (requests[0].json()["message_id"].clone(), requests[0].json()["type"].clone()),
        (named["id"].clone(), json!("mention"))
    );
    let everyone =
        alice.post(&messages, json!({"content": "@all standup", "mentions_all": true})).await.expect(201);
    let requests = receiver.wait_for(2).await;
    assert_eq!(requests[1].json()["message_id"], everyone["id"]);
    assert_eq!(requests[1].json()["type"], "mention");
    receiver.assert_no_more_than(2).await;
}
