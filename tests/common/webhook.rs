//! A local HTTP server standing in for a platform's webhook receiver: it records every
//! request exactly as it arrived and answers with scripted statuses.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::Value;
use tokio::sync::Notify;

/// Long enough for anything the test waits for; never reached when the code works.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// How long the tests watch for requests that must not come (many retry periods).
pub const QUIET: Duration = Duration::from_millis(600);

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
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

#[derive(Default)]
struct Recorded {
    requests: Mutex<Vec<Received>>,
    /// Statuses to answer with, in order; 200 once they run out.
    script: Mutex<VecDeque<u16>>,
    arrived: Notify,
}

pub struct Receiver {
    pub addr: SocketAddr,
    recorded: Arc<Recorded>,
}

impl Receiver {
    /// A receiver on `listener` answering `script` first, then 200.
    pub async fn start(listener: tokio::net::TcpListener, script: &[u16]) -> Receiver {
        let recorded = Arc::new(Recorded::default());
        recorded.script.lock().unwrap().extend(script);
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
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let status = recorded.script.lock().unwrap().pop_front().unwrap_or(200);
    recorded.requests.lock().unwrap().push(Received { method, path: uri.path().to_owned(), headers, body });
    recorded.arrived.notify_waiters();
    StatusCode::from_u16(status).unwrap()
}
