//! Settings from flags, `CHATD_*` environment variables and an optional TOML file.
//! Precedence: flag, then environment (both handled by clap), then file, then default.

mod media;
mod settings;

pub use settings::Settings;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::core::ChatLimits;
use crate::core::budget::{Budget, EventBudgets};
use crate::core::media::MediaLimits;
use crate::core::push_endpoints::EndpointPolicy;
use crate::core::push_worker::{PushSettings, REQUESTS_PER_SEND};
use crate::media::s3::S3Config;
use crate::push::apns::ApnsConfig;
use crate::store::postgres::{DEFAULT_POOL_SIZE, PostgresConfig};
use crate::store::sqlite::Synchronous;

/// Which store backend to open.
#[derive(Debug, Clone)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (shared by every node).
    Postgres(Box<PostgresConfig>),
}

/// Where the Redis bus, presence directory and shared rate limits live.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://…` URL.
    pub url: String,
    /// Prefix of channel and key names (`<prefix>:c:…`, `<prefix>:u:…`, `<prefix>:rl:…`).
    pub prefix: String,
    /// How long a node's users stay online after the node stopped answering.
    pub presence_ttl: Duration,
}

/// How tokens are verified.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    /// Shared HS256 secret; generated into the data dir when neither this nor a key is set.
    pub secret: Option<String>,
    /// PEM public key file.
    pub public_key: Option<PathBuf>,
    /// Required audience.
    pub audience: Option<String>,
    /// Required issuer.
    pub issuer: Option<String>,
}

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub bind: SocketAddr,
    /// Where `/metrics` is served on a listener of its own; `None`: on the main one.
    pub metrics_bind: Option<SocketAddr>,
    /// Data directory (SQLite file, generated secret).
    pub data_dir: PathBuf,
    /// Store backend.
    pub database: Database,
    /// Redis bus; `None`: the in-process bus.
    pub redis: Option<RedisConfig>,
    /// Token verification.
    pub jwt: JwtConfig,
    /// Admin API key.
    pub admin_key: Option<String>,
    /// Development mode.
    pub dev: bool,
    /// Limits enforced by the core.
    pub limits: ChatLimits,
    /// SQLite durability.
    pub sqlite_synchronous: Synchronous,
    /// Plain WebSocket keepalive and backpressure.
    pub ws: WsConfig,
    /// The push worker and its providers.
    pub push: PushConfig,
    /// Interval of the keep-alive comments on notification streams (SSE).
    pub sse_keep_alive: Duration,
    /// Limits on realtime connections and payloads, and the shutdown bound.
    pub connections: ConnectionLimits,
    /// Where uploads and attachments are stored.
    pub media: MediaConfig,
}

/// Where media are stored.
#[derive(Debug, Clone)]
pub enum MediaStorage {
    /// Files in this directory (the embedded default).
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Config),
}

/// Media storage and the URL its upload links start with.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The backend.
    pub store: MediaStorage,
    /// chatd's base URL as clients reach it, without a trailing slash; `None`: upload links
    /// are relative.
    pub public_url: Option<String>,
}

/// Limits on realtime connections (Socket.IO, WebSocket, SSE) and on JSON payloads.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Most realtime connections on this node.
    pub max_connections: usize,
    /// Most realtime connections of one user on this node.
    pub max_per_user: usize,
    /// Handshakes per second per client IP; 0: unlimited.
    pub handshake_rate: u32,
    /// Handshake burst per client IP.
    pub handshake_burst: u32,
    /// Browser origins allowed to connect (lowercase, no trailing slash); `None`: any.
    pub allowed_origins: Option<Vec<String>>,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: usize,
    /// Most outbound messages queued for one connection before it is cut off.
    pub max_outbound_queue: usize,
    /// Longest a graceful shutdown may take.
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 100_000,
            max_per_user: 20,
            handshake_rate: 50,
            handshake_burst: 200,
            allowed_origins: None,
            max_json_depth: 32,
            max_outbound_queue: 1000,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// The push worker and its providers.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// How the worker claims, retries and gives up (its `preview_chars` is replaced by
    /// [`ChatLimits::preview_chars`] when wired).
    pub worker: PushSettings,
    /// Timeout of one provider request.
    pub request_timeout: Duration,
    /// Key of the webhook signatures; `None`: webhook devices are not sent to.
    pub webhook_secret: Option<String>,
    /// The Web Push provider's VAPID identity; `None`: webpush devices are not sent to.
    pub webpush: Option<WebPushConfig>,
    /// Service-account key file of the FCM provider; `None`: fcm devices are not sent to.
    pub fcm_service_account: Option<PathBuf>,
    /// Base URL of the FCM API.
    pub fcm_endpoint: String,
    /// The APNs provider's key and app; `None`: apns devices are not sent to.
    pub apns: Option<ApnsConfig>,
}

/// The Web Push provider's settings.
#[derive(Debug, Clone)]
pub struct WebPushConfig {
    /// PEM P-256 private key file (VAPID).
    pub private_key: PathBuf,
    /// The VAPID JWT's `sub`: `mailto:…` or `https://…`.
    pub subject: String,
    /// How long push services keep undelivered notifications (`TTL` header).
    pub ttl: Duration,
}

/// Keepalive and backpressure of `/ws` connections.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// How often the server pings each connection.
    pub ping_interval: Duration,
    /// Silence (no frame, no pong) after which a connection is closed.
    pub idle_timeout: Duration,
    /// Outbound bytes a connection may have waiting before it is cut off as a slow consumer.
    pub max_queued_bytes: usize,
}

impl Config {
    /// A configuration with every default, rooted at `data_dir` (handy for tests and tools).
    pub fn with_data_dir(data_dir: impl AsRef<Path>) -> anyhow::Result<Config> {
        Settings { data_dir: Some(data_dir.as_ref().to_owned()), ..Settings::default() }.resolve()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_lease_outlasts_the_worst_case_send_of_a_job() {
        for (timeout_ms, max_devices) in [(None, None), (Some(60_000), None), (Some(2_000), Some(50))] {
            let settings = Settings {
                data_dir: Some(PathBuf::from("unused")),
                push_timeout_ms: timeout_ms,
                max_devices_per_user: max_devices,
                ..Settings::default()
            };
            let worker = settings.resolve().expect("resolves").push.worker;
            let request = Duration::from_millis(timeout_ms.unwrap_or(10_000));
            let rounds = max_devices.unwrap_or(10).div_ceil(worker.device_concurrency);
            let worst = request * REQUESTS_PER_SEND * u32::try_from(rounds).expect("small");
            assert!(worker.lease > worst, "lease {:?} <= worst-case send {worst:?}", worker.lease);
        }
    }
}
