//! The wiring: picks backends from the configuration and hands transports one cloneable
//! [`AppState`]. The only module that names concrete backends.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::auth::{Authenticator, KeySource};
use crate::bus::local::LocalBus;
use crate::bus::redis::RedisBus;
use crate::config::{Config, Database, MediaStorage};
use crate::core::admission::Admission;
use crate::core::budget::{BudgetKind, BudgetLimiters};
use crate::core::model::Platform;
use crate::core::model::User;
use crate::core::ports::{Bus, Media, PresenceDirectory, RateLimiter, Store};
use crate::core::push_worker::{Providers, PushSettings, PushWorker};
use crate::core::{Chat, ChatError};
use crate::limit::handshake::HandshakeLimiter;
use crate::limit::local::LocalRateLimiter;
use crate::limit::redis::RedisRateLimiter;
use crate::media::local::LocalMedia;
use crate::media::s3::S3Media;
use crate::presence::redis::RedisPresence;
use crate::push::apns::ApnsPush;
use crate::push::fcm::{FcmPush, ServiceAccount};
use crate::push::webhook::WebhookPush;
use crate::push::webpush::{VapidKey, WebPush};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::tasks::Tasks;

/// File in the data directory holding the generated HS256 secret.
const SECRET_FILE: &str = "jwt-secret";

/// Shared handles of a running node; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// The chat core.
    pub chat: Arc<Chat>,
    /// The store behind the core (for probes and operator tools).
    pub store: Arc<dyn Store>,
    /// The bus the core publishes on; realtime transports subscribe to it.
    pub bus: Arc<dyn Bus>,
    /// Token verification.
    pub auth: Arc<Authenticator>,
    /// Set when shutting down: readiness turns false.
    pub draining: Arc<AtomicBool>,
    /// Sends the push outbox; `None` when no push provider is configured.
    pub push_worker: Option<Arc<PushWorker>>,
    /// Counts realtime connections against the node and per-user caps.
    pub admission: Arc<Admission>,
    /// Realtime handshakes per client IP.
    pub handshakes: Arc<HandshakeLimiter>,
    /// The node's background loops (src/tasks.rs), stopped together at shutdown.
    pub tasks: Tasks,
}

impl AppState {
    /// Opens the store and builds the core. Must run inside a Tokio runtime.
    pub async fn build(config: Config) -> anyhow::Result<AppState> {
        let auth = authenticator(&config)?;
        let tasks = Tasks::new();
        let store: Arc<dyn Store> = match &config.database {
            Database::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                Arc::new(
                    SqliteStore::open(path, config.sqlite_synchronous)
                        .with_context(|| format!("opening SQLite database {}", path.display()))?,
                )
            }
            Database::Postgres(postgres) => Arc::new(
                PostgresStore::connect(postgres, &tasks)
                    .await
                    .with_context(|| format!("opening PostgreSQL database {}", postgres.describe()))?,
            ),
        };
        let (bus, directory): (Arc<dyn Bus>, Option<Arc<dyn PresenceDirectory>>) = match &config.redis {
            None => (Arc::new(LocalBus::default()), None),
            Some(redis) => {
                let connecting = || format!("connecting to Redis at {}", redis.url);
                let bus =
                    RedisBus::connect(&redis.url, &redis.prefix, &tasks).await.with_context(connecting)?;
                let directory = RedisPresence::connect(&redis.url, &redis.prefix, redis.presence_ttl, &tasks)
                    .await
                    .with_context(connecting)?;
                (Arc::new(bus), Some(Arc::new(directory)))
            }
        };
        // One Redis connection (multiplexed) for every shared limiter.
        let limits_redis = match &config.redis {
            Some(redis) => Some(
                RedisRateLimiter::open(&redis.url)
                    .await
                    .with_context(|| format!("connecting the rate limiters to Redis at {}", redis.url))?,
            ),
            None => None,
        };
        let (per_second, burst) = (config.limits.messages_per_second, config.limits.message_burst);
        let limiter = rate_limiter(&config, limits_redis.as_ref(), "", per_second, burst);
        let mut budgets = Vec::new();
        for kind in BudgetKind::ALL {
            let budget = config.limits.budgets.of(kind);
            let limiter =
                rate_limiter(&config, limits_redis.as_ref(), kind.name(), budget.per_second, budget.burst);
            budgets.push((kind, limiter));
        }
        let chat = Arc::new(
            Chat::with_presence(
                store.clone(),
                bus.clone(),
                limiter,
                config.limits.clone(),
                directory,
                &tasks,
            )
            .with_budgets(BudgetLimiters::new(budgets))
            .with_media(open_media(&config).await?),
        );
        chat.start_media_housekeeping();
        chat.start_bans().await.context("loading the banned users")?;
        let push_worker = push_worker(&config, &store)?;
        let limits = &config.connections;
        let admission = Admission::new(limits.max_connections, limits.max_per_user);
        let handshakes = Arc::new(HandshakeLimiter::new(limits.handshake_rate, limits.handshake_burst));
        Ok(AppState {
            config: Arc::new(config),
            chat,
            store,
            bus,
            auth: Arc::new(auth),
            draining: Arc::new(AtomicBool::new(false)),
            push_worker,
            admission,
            handshakes,
            tasks,
        })
    }

    /// Whether the node is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Verifies a user's token and admits the user (a banned user is `forbidden`); returns
    /// the user and the token's expiry (Unix seconds). What every transport calls first.
    pub fn authenticate(&self, token: &str) -> Result<(User, u64), ChatError> {
        let (user, expires_at) = self.auth.verify_session(token)?;
        self.chat.refuse_banned(&user)?;
        Ok((user, expires_at))
    }
}

/// A per-user limiter of `per_second` with bursts of `burst` (the message limiter when `kind`
/// is empty, else the budget of that kind, in a key namespace of its own): shared through
/// Redis when the node runs with Redis (failing open to this node's own limiter while Redis
/// is unreachable), else this node's own.
fn rate_limiter(
    config: &Config,
    connection: Option<&redis::aio::ConnectionManager>,
    kind: &str,
    per_second: u32,
    burst: u32,
) -> Arc<dyn RateLimiter> {
    let local = Arc::new(LocalRateLimiter::new(per_second, burst));
    let (Some(redis), Some(connection), Some(per_second)) =
        (&config.redis, connection, std::num::NonZeroU32::new(per_second))
    else {
        return local;
    };
    let prefix = if kind.is_empty() { redis.prefix.clone() } else { format!("{}:{kind}", redis.prefix) };
    Arc::new(RedisRateLimiter::over(connection.clone(), &prefix, per_second, burst, local))
}

/// The push worker with the providers `config` enables; `None` (and said once in the log)
/// when none is, as jobs could not be sent anyway (they stay recorded).
fn push_worker(config: &Config, store: &Arc<dyn Store>) -> anyhow::Result<Option<Arc<PushWorker>>> {
    let mut providers = Providers::default();
    match &config.push.webhook_secret {
        Some(secret) => {
            let webhook =
                WebhookPush::new(secret, config.push.request_timeout, config.limits.push_endpoints.clone())
                    .context("building the webhook push provider's HTTP client")?;
            providers = providers.with(Platform::Webhook, Arc::new(webhook));
        }
        None => tracing::info!("no --webhook-secret: webhook devices are not sent to"),
    }
    match &config.push.webpush {
        Some(webpush) => {
            let path = webpush.private_key.display();
            let pem = std::fs::read_to_string(&webpush.private_key)
                .with_context(|| format!("reading VAPID private key {path}"))?;
            let vapid =
                VapidKey::from_pem(&pem).with_context(|| format!("loading VAPID private key {path}"))?;
            tracing::info!(public_key = vapid.public_key(), "web push on: the VAPID public key");
            let provider = WebPush::new(
                vapid,
                &webpush.subject,
                webpush.ttl,
                config.push.request_timeout,
                config.limits.push_endpoints.clone(),
            )
            .context("building the web push provider")?;
            providers = providers.with(Platform::Webpush, Arc::new(provider));
        }
        None => tracing::info!("no --vapid-private-key: webpush devices are not sent to"),
    }
    match &config.push.fcm_service_account {
        Some(path) => {
            let account = ServiceAccount::from_file(path)?;
            let fcm = FcmPush::new(account, &config.push.fcm_endpoint, config.push.request_timeout)?;
            providers = providers.with(Platform::Fcm, Arc::new(fcm));
        }
        None => tracing::info!("no --fcm-service-account: fcm devices are not sent to"),
    }
    match &config.push.apns {
        Some(apns) => {
            let apns = ApnsPush::new(apns, config.push.request_timeout)?;
            providers = providers.with(Platform::Apns, Arc::new(apns));
        }
        None => tracing::info!("no --apns-key-file: apns devices are not sent to"),
    }
    if providers.is_empty() {
        tracing::info!("no push provider configured: push jobs are recorded but not sent");
        return Ok(None);
    }
    let settings = PushSettings {
        preview_chars: config.limits.preview_chars,
        collapse: !config.limits.push_collapse.is_zero(),
        ..config.push.worker.clone()
    };
    Ok(Some(Arc::new(PushWorker::new(store.clone(), providers, settings))))
}

/// The token verifier for `config`: public key, configured secret, or the secret generated
/// once into the data directory.
pub fn authenticator(config: &Config) -> anyhow::Result<Authenticator> {
    let jwt = &config.jwt;
    let key = match (&jwt.public_key, &jwt.secret) {
        (Some(path), _) => KeySource::PublicKeyPem(
            std::fs::read(path).with_context(|| format!("reading JWT public key {}", path.display()))?,
        ),
        (None, Some(secret)) => KeySource::Secret(secret.as_bytes().to_vec()),
        (None, None) => KeySource::Secret(stored_secret(&config.data_dir)?),
    };
    Authenticator::new(key, jwt.audience.clone(), jwt.issuer.clone())
}

/// Reads the generated secret, creating it (readable by the owner only) on first use.
fn stored_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok(text.trim().as_bytes().to_vec()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let secret: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
    // Write it complete under a unique temporary name, then hard-link it into place: the link
    // either creates `jwt-secret` with its content, or fails because another process (a
    // concurrent `chatd token`, say) created it first. Creating `jwt-secret` directly would
    // let a concurrent reader find it still empty.
    let tmp = data_dir.join(format!(".{SECRET_FILE}.{}.{:016x}", std::process::id(), rand::random::<u64>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        std::io::Write::write_all(&mut file, secret.as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a JWT secret");
            Ok(secret.into_bytes())
        }
        // Another process created it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => stored_secret(data_dir),
        Err(err) => Err(err).with_context(|| format!("creating {}", path.display())),
    }
}

/// Opens the configured media store: a directory (created if missing) or an S3 bucket
/// (checked reachable).
pub async fn open_media(config: &Config) -> anyhow::Result<Arc<dyn Media>> {
    Ok(match &config.media.store {
        MediaStorage::Local(dir) => Arc::new(
            LocalMedia::open(dir, config.media.public_url.clone())
                .with_context(|| format!("opening the media directory {}", dir.display()))?,
        ),
        MediaStorage::S3(s3) => Arc::new(
            S3Media::connect(s3).await.with_context(|| format!("opening the S3 bucket {}", s3.bucket))?,
        ),
    })
}
