//! A TCP proxy that can add latency, switchable at runtime: put between the nodes and Redis,
//! it makes every byte each way arrive a set time after it was sent (each chunk read is held
//! until then, without slowing the chunks behind it), as a slow network would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Chunks read but not yet written, per direction of one connection.
const IN_FLIGHT_CHUNKS: usize = 1024;

/// A listening proxy to one target; stops accepting (and drops its connections) when dropped.
pub struct LatencyProxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    delay_micros: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl LatencyProxy {
    /// Listens on a free loopback port and forwards every connection to `target`, at first
    /// without delay.
    pub async fn start(target: std::net::SocketAddr) -> LatencyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let delay_micros = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let delay_micros = delay_micros.clone();
            async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    connections.spawn(forward(client, target, delay_micros.clone()));
                    while connections.try_join_next().is_some() {}
                }
            }
        });
        LatencyProxy { port, delay_micros, task }
    }

    /// Sets the delay added to every chunk from now on, both ways (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_micros.store(delay.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays one client connection to `target` until either side closes (a target that refuses
/// the connection, e.g. a restarting Redis, closes the client's at once).
async fn forward(client: TcpStream, target: std::net::SocketAddr, delay_micros: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(target).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Whichever direction ends first ends the connection: dropping the other half closes it.
    tokio::select! {
        _ = pipe(client_read, server_write, delay_micros.clone()) => {}
        _ = pipe(server_read, client_write, delay_micros) => {}
    }
}

/// Copies `from` to `to`, each chunk written no earlier than the delay after it was read.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_micros: Arc<AtomicU64>,
) {
    let (chunks, mut due) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    let reader = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            let delay = Duration::from_micros(delay_micros.load(Ordering::Relaxed));
            let at = tokio::time::Instant::now() + delay;
            if chunks.send((at, buffer[..read].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The writer ends once the reader is done and every held chunk is written.
    let (_, ()) = tokio::join!(reader, writer);
}
