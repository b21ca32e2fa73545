//! The command line: every setting as a flag, a `CHATD_*` environment variable (both by clap)
//! or a key of the TOML file, and how they resolve into a [`Config`].

use super::media::{media_config, media_limits};
use super::*;

macro_rules! or_file {
    ($cli:ident, $file:ident: $($field:ident),+) => {
        Settings { config: $cli.config, $($field: $cli.$field.or($file.$field)),+ }
    };
}

/// Every setting, as given; `None` means "not set here". Shared by `serve`, `token` and
/// `migrate` so they all find the same data directory and key.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with any of these settings (keys as the flag names, with underscores).
    #[arg(long, env = "CHATD_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address and port to listen on for every transport [default: 127.0.0.1:3000].
    #[arg(long, env = "CHATD_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,

    /// Serve `GET /metrics` on this address (its own listener) instead of the main one,
    /// e.g. `127.0.0.1:9100`. Unset: on the main listener.
    #[arg(long, env = "CHATD_METRICS_BIND", value_name = "ADDR")]
    pub metrics_bind: Option<SocketAddr>,

    /// Directory for the SQLite database and the generated JWT secret; created if missing
    /// [default: ./chatd-data].
    #[arg(long, env = "CHATD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Database to use. Unset: SQLite in the data directory. `sqlite:PATH` picks another
    /// SQLite file; `postgres://USER:PASSWORD@HOST:PORT/DB` (or `postgresql://`) uses
    /// PostgreSQL, optionally with `?schema=NAME` to keep chatd's tables in that schema.
    #[arg(long, env = "CHATD_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Most connections this node opens to PostgreSQL [default: 16].
    #[arg(long, env = "CHATD_DATABASE_POOL_SIZE", value_name = "N")]
    pub database_pool_size: Option<usize>,

    /// Redis for the bus and the per-user rate limits across nodes (`redis://host:6379`).
    /// Unset: in-process bus and per-node limits (one node).
    #[arg(long, env = "CHATD_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis channel and key, so deployments can share one Redis
    /// [default: chatd].
    #[arg(long, env = "CHATD_REDIS_PREFIX", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,

    /// With Redis: seconds after which the users of a node that stopped answering (crashed,
    /// cut off) are offline; each node renews itself every third of it [default: 30].
    #[arg(long, env = "CHATD_PRESENCE_TTL", value_name = "SECS")]
    pub presence_ttl: Option<u64>,

    /// HS256 secret the platform signs tokens with (at least 16 bytes). Unset: one is
    /// generated once and kept in the data directory (file `jwt-secret`).
    #[arg(long, env = "CHATD_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key file (RSA → RS256, EC P-256 → ES256); replaces the shared secret.
    #[arg(long, env = "CHATD_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `aud` claim. Unset: not checked.
    #[arg(long, env = "CHATD_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim. Unset: not checked.
    #[arg(long, env = "CHATD_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,

    /// Bearer key of the admin API (at least 16 bytes). Unset: admin API off.
    #[arg(long, env = "CHATD_ADMIN_KEY", value_name = "KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Development mode: enables `POST /api/dev/token`, which hands a token to anyone.
    /// Never use it in production.
    #[arg(long, env = "CHATD_DEV", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub dev: Option<bool>,

    /// Message writes (send/edit/delete) per user per second, shared by every node with
    /// `--redis-url`; 0 disables [default: 10].
    #[arg(long, env = "CHATD_RATE_LIMIT", value_name = "N")]
    pub rate_limit: Option<u32>,

    /// Burst size of the per-user message rate limit [default: 20].
    #[arg(long, env = "CHATD_RATE_LIMIT_BURST", value_name = "N")]
    pub rate_limit_burst: Option<u32>,

    /// Per-user budget of `typing:start` and `typing:stop` together: requests per second,
    /// slash, burst; over it `rate_limited`; rate 0 disables [default: 5/30].
    #[arg(long, env = "CHATD_TYPING_BUDGET", value_name = "RATE/BURST")]
    pub typing_budget: Option<Budget>,

    /// Per-user budget of `presence:query` (RATE/BURST; rate 0 disables) [default: 5/30].
    #[arg(long, env = "CHATD_PRESENCE_BUDGET", value_name = "RATE/BURST")]
    pub presence_budget: Option<Budget>,

    /// Per-user budget of `sync` (RATE/BURST; rate 0 disables) [default: 5/30].
    #[arg(long, env = "CHATD_SYNC_BUDGET", value_name = "RATE/BURST")]
    pub sync_budget: Option<Budget>,

    /// Per-user budget of conversation creation, `POST /api/conversations` (RATE/BURST;
    /// rate 0 disables) [default: 2/30].
    #[arg(long, env = "CHATD_CREATE_BUDGET", value_name = "RATE/BURST")]
    pub create_budget: Option<Budget>,

    /// Per-user budget of member additions, `POST /api/conversations/{id}/members`
    /// (RATE/BURST; rate 0 disables) [default: 5/30].
    #[arg(long, env = "CHATD_MEMBERS_BUDGET", value_name = "RATE/BURST")]
    pub members_budget: Option<Budget>,

    /// Per-user budget of message search, `GET /api/search` (RATE/BURST; rate 0 disables)
    /// [default: 2/20].
    #[arg(long, env = "CHATD_SEARCH_BUDGET", value_name = "RATE/BURST")]
    pub search_budget: Option<Budget>,

    /// Longest message content in characters [default: 4000].
    #[arg(long, env = "CHATD_MAX_CONTENT_CHARS", value_name = "N")]
    pub max_content_chars: Option<usize>,

    /// Mask phone and bank account numbers in stored message content (see docs/protocol.md).
    #[arg(long, env = "CHATD_MASK_PII", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub mask_pii: Option<bool>,

    /// SQLite durability: `normal` survives a process crash, `full` also power loss
    /// [default: normal].
    #[arg(long, env = "CHATD_SQLITE_SYNCHRONOUS", value_name = "MODE")]
    pub sqlite_synchronous: Option<Synchronous>,

    /// Seconds between WebSocket pings sent to `/ws` clients [default: 25].
    #[arg(long, env = "CHATD_WS_PING_INTERVAL", value_name = "SECS")]
    pub ws_ping_interval: Option<u64>,

    /// Seconds between keep-alive comments on `GET /api/notifications/stream` [default: 15].
    #[arg(long, env = "CHATD_SSE_KEEP_ALIVE", value_name = "SECS")]
    pub sse_keep_alive: Option<u64>,

    /// A `/ws` connection that sends nothing (not even a pong) for this many seconds is
    /// closed [default: 60].
    #[arg(long, env = "CHATD_WS_IDLE_TIMEOUT", value_name = "SECS")]
    pub ws_idle_timeout: Option<u64>,

    /// Bytes of outbound frames a `/ws` connection may have waiting; a client that reads
    /// slower than that is disconnected (close 1008) instead of buffered [default: 1048576].
    #[arg(long, env = "CHATD_WS_MAX_QUEUED_BYTES", value_name = "BYTES")]
    pub ws_max_queued_bytes: Option<usize>,

    /// Secret the `webhook` push provider signs each request body with (HMAC-SHA256, header
    /// `X-Chatd-Signature`). Unset: webhook devices are not sent to.
    #[arg(long, env = "CHATD_WEBHOOK_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// PEM P-256 private key (SEC1 or PKCS#8) the `webpush` provider signs VAPID JWTs with;
    /// its public key is the `applicationServerKey` browsers subscribe with. Needs
    /// `--vapid-subject`. Unset: webpush devices are not sent to.
    #[arg(long, env = "CHATD_VAPID_PRIVATE_KEY", value_name = "FILE")]
    pub vapid_private_key: Option<PathBuf>,

    /// Contact for the push services, the VAPID JWT's `sub`: `mailto:…` or `https://…`.
    #[arg(long, env = "CHATD_VAPID_SUBJECT", value_name = "URI")]
    pub vapid_subject: Option<String>,

    /// Seconds a push service keeps an undelivered Web Push notification (`TTL`)
    /// [default: 86400].
    #[arg(long, env = "CHATD_WEBPUSH_TTL", value_name = "SECS")]
    pub webpush_ttl: Option<u64>,

    /// Push jobs the worker claims and sends at once [default: 32].
    #[arg(long, env = "CHATD_PUSH_BATCH_SIZE", value_name = "N")]
    pub push_batch_size: Option<usize>,

    /// Attempts after which an undeliverable push is dropped (and logged) [default: 8].
    #[arg(long, env = "CHATD_PUSH_MAX_ATTEMPTS", value_name = "N")]
    pub push_max_attempts: Option<u32>,

    /// Delay before retrying a failed push, doubled per attempt, with jitter [default: 5000].
    #[arg(long, env = "CHATD_PUSH_RETRY_BASE_MS", value_name = "MS")]
    pub push_retry_base_ms: Option<u64>,

    /// Longest delay between push attempts [default: 900000].
    #[arg(long, env = "CHATD_PUSH_RETRY_MAX_MS", value_name = "MS")]
    pub push_retry_max_ms: Option<u64>,

    /// How often an idle push worker looks for due jobs (jobs recorded on this node wake it
    /// at once) [default: 1000].
    #[arg(long, env = "CHATD_PUSH_POLL_MS", value_name = "MS")]
    pub push_poll_ms: Option<u64>,

    /// How long a push waits for later messages of the same conversation to the same user,
    /// which collapse it: one push for the newest, badge = total unread. 0: every message is
    /// pushed [default: 0].
    #[arg(long, env = "CHATD_PUSH_COLLAPSE_MS", value_name = "MS")]
    pub push_collapse_ms: Option<u64>,

    /// Most push jobs this node starts per second, so that a backlog drains without taking
    /// the CPU the chat needs; 0: no cap [default: 1000].
    #[arg(long, env = "CHATD_PUSH_RATE", value_name = "JOBS_PER_SECOND")]
    pub push_rate: Option<u32>,

    /// Let users register webhook and Web Push endpoints on private, loopback and link-local
    /// addresses, and over plain http (only for closed networks and tests: it lets any user
    /// make chatd call internal services) [default: false].
    #[arg(long, env = "CHATD_PUSH_ALLOW_PRIVATE_ENDPOINTS", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub push_allow_private_endpoints: Option<bool>,

    /// Host names webhook and Web Push endpoints must have (each also admits its subdomains),
    /// comma-separated; unset: any public host.
    #[arg(long, env = "CHATD_PUSH_ALLOWED_HOSTS", value_name = "HOSTS", value_delimiter = ',')]
    pub push_allowed_hosts: Option<Vec<String>>,

    /// Most push devices one user keeps; registering one more replaces the one least
    /// recently registered or refreshed [default: 10].
    #[arg(long, env = "CHATD_MAX_DEVICES_PER_USER", value_name = "N")]
    pub max_devices_per_user: Option<usize>,

    /// Timeout of one request to a push provider [default: 10000].
    #[arg(long, env = "CHATD_PUSH_TIMEOUT_MS", value_name = "MS")]
    pub push_timeout_ms: Option<u64>,

    /// Google service-account JSON key file of the Firebase project; enables the `fcm` push
    /// provider (FCM HTTP v1). Unset: fcm devices are not sent to.
    #[arg(long, env = "CHATD_FCM_SERVICE_ACCOUNT", value_name = "FILE")]
    pub fcm_service_account: Option<PathBuf>,

    /// Base URL of the FCM API [default: https://fcm.googleapis.com].
    #[arg(long, env = "CHATD_FCM_ENDPOINT", value_name = "URL")]
    pub fcm_endpoint: Option<String>,

    /// APNs token-auth signing key (`.p8` PEM); with the key id, team id and topic, enables
    /// the `apns` push provider. Unset: apns devices are not sent to.
    #[arg(long, env = "CHATD_APNS_KEY_FILE", value_name = "FILE")]
    pub apns_key_file: Option<PathBuf>,

    /// Id of the APNs signing key (the provider token's `kid`).
    #[arg(long, env = "CHATD_APNS_KEY_ID", value_name = "ID")]
    pub apns_key_id: Option<String>,

    /// Apple developer team id (the provider token's `iss`).
    #[arg(long, env = "CHATD_APNS_TEAM_ID", value_name = "ID")]
    pub apns_team_id: Option<String>,

    /// The app's bundle id, sent as `apns-topic`.
    #[arg(long, env = "CHATD_APNS_TOPIC", value_name = "BUNDLE_ID")]
    pub apns_topic: Option<String>,

    /// Base URL of APNs [default: https://api.push.apple.com; the sandbox is
    /// https://api.sandbox.push.apple.com].
    #[arg(long, env = "CHATD_APNS_ENDPOINT", value_name = "URL")]
    pub apns_endpoint: Option<String>,

    /// Most realtime connections (Socket.IO, WebSocket, SSE together) this node holds; the
    /// next handshake is refused (`server_full` / 503) [default: 100000].
    #[arg(long, env = "CHATD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most realtime connections one user holds on this node; the next is refused
    /// (`rate_limited` / 429), open ones are never dropped for it [default: 20].
    #[arg(long, env = "CHATD_MAX_CONNECTIONS_PER_USER", value_name = "N")]
    pub max_connections_per_user: Option<usize>,

    /// Realtime handshakes per second per client IP; 0 disables the limit [default: 50].
    #[arg(long, env = "CHATD_HANDSHAKE_RATE", value_name = "N")]
    pub handshake_rate: Option<u32>,

    /// Burst of realtime handshakes per client IP [default: 200].
    #[arg(long, env = "CHATD_HANDSHAKE_BURST", value_name = "N")]
    pub handshake_burst: Option<u32>,

    /// Comma-separated origins (`https://app.example.com`) allowed to open realtime
    /// connections from a browser; a handshake with another `Origin` is refused (`forbidden`),
    /// one without `Origin` (native apps) is allowed. Unset: every origin [default: unset].
    #[arg(long, env = "CHATD_ALLOWED_ORIGINS", value_name = "ORIGINS")]
    pub allowed_origins: Option<String>,

    /// Deepest JSON nesting accepted in event payloads and REST bodies [default: 32].
    #[arg(long, env = "CHATD_MAX_JSON_DEPTH", value_name = "N")]
    pub max_json_depth: Option<usize>,

    /// Most outbound messages waiting for one realtime connection; a client that lets more
    /// pile up is disconnected (it reconnects and syncs) [default: 1000].
    #[arg(long, env = "CHATD_MAX_OUTBOUND_QUEUE", value_name = "N")]
    pub max_outbound_queue: Option<usize>,

    /// Seconds a shutdown (SIGTERM) may take to finish in-flight requests and close
    /// connections before the process exits anyway [default: 10].
    #[arg(long, env = "CHATD_SHUTDOWN_TIMEOUT", value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,

    /// chatd's base URL as clients reach it (`https://chat.example.com`), for the upload URLs
    /// of the local media store. Unset: those URLs are relative to the URL the client used.
    #[arg(long, env = "CHATD_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Directory of uploaded media on local disk [default: media in the data directory].
    #[arg(long, env = "CHATD_MEDIA_DIR", value_name = "DIR")]
    pub media_dir: Option<PathBuf>,

    /// Declares `--media-dir` shared by every node (a network file system): required to
    /// keep media on disk with PostgreSQL, where several nodes may serve one deployment.
    #[arg(long, env = "CHATD_MEDIA_DIR_SHARED", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub media_dir_shared: Option<bool>,

    /// Keep media in this S3 bucket (any S3-compatible store) instead of on local disk.
    #[arg(long, env = "CHATD_MEDIA_S3_BUCKET", value_name = "BUCKET")]
    pub media_s3_bucket: Option<String>,

    /// The S3 endpoint (`http://127.0.0.1:8333` for SeaweedFS or MinIO). Unset: AWS.
    #[arg(long, env = "CHATD_MEDIA_S3_ENDPOINT", value_name = "URL")]
    pub media_s3_endpoint: Option<String>,

    /// The S3 region [default: AWS_REGION, else us-east-1].
    #[arg(long, env = "CHATD_MEDIA_S3_REGION", value_name = "REGION")]
    pub media_s3_region: Option<String>,

    /// The S3 access key id. Unset: AWS_ACCESS_KEY_ID.
    #[arg(long, env = "CHATD_MEDIA_S3_ACCESS_KEY_ID", value_name = "KEY")]
    pub media_s3_access_key_id: Option<String>,

    /// The S3 secret access key. Unset: AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "CHATD_MEDIA_S3_SECRET_ACCESS_KEY", value_name = "SECRET", hide_env_values = true)]
    pub media_s3_secret_access_key: Option<String>,

    /// Largest upload in bytes [default: 26214400, 25 MiB].
    #[arg(long, env = "CHATD_MEDIA_MAX_BYTES", value_name = "BYTES")]
    pub media_max_bytes: Option<u64>,

    /// Most pixels (width × height) of an uploaded image, checked before decoding
    /// [default: 40000000].
    #[arg(long, env = "CHATD_MEDIA_MAX_PIXELS", value_name = "N")]
    pub media_max_pixels: Option<u64>,

    /// What may be attached, narrower than the default of every type chatd accepts: a comma
    /// list of kinds (`image`, `video`, `audio`, `file`) and MIME types (`application/pdf`),
    /// e.g. `image,application/pdf` for photos and PDFs only.
    #[arg(long, env = "CHATD_MEDIA_ALLOWED_TYPES", value_name = "LIST")]
    pub media_allowed_types: Option<String>,

    /// Uploads one user may open in 24 hours [default: 500].
    #[arg(long, env = "CHATD_MEDIA_UPLOADS_PER_DAY", value_name = "N")]
    pub media_uploads_per_day: Option<u64>,

    /// How long an upload may wait to be attached to a message; never attached, it is
    /// deleted after it (`30m`, `24h`) [default: 24h].
    #[arg(long, env = "CHATD_MEDIA_UPLOAD_EXPIRY", value_name = "DURATION")]
    pub media_upload_expiry: Option<String>,

    /// How long a deleted message's media are kept before they are deleted [default: 24h].
    #[arg(long, env = "CHATD_MEDIA_RETENTION", value_name = "DURATION")]
    pub media_retention: Option<String>,
}

impl Settings {
    /// Fills what flags and environment left unset from the TOML file, if one is given.
    pub fn with_file(self) -> anyhow::Result<Settings> {
        let Some(path) = &self.config else { return Ok(self) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: Settings = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let cli = self;
        Ok(
            or_file!(cli, file: bind, metrics_bind, data_dir, database_url, database_pool_size, redis_url, redis_prefix, presence_ttl, jwt_secret,
            jwt_public_key,
            jwt_audience, jwt_issuer, admin_key, dev, rate_limit, rate_limit_burst,
            typing_budget, presence_budget, sync_budget, create_budget, members_budget, search_budget,
            max_content_chars, mask_pii, sqlite_synchronous, ws_ping_interval, sse_keep_alive, ws_idle_timeout,
            ws_max_queued_bytes, webhook_secret, vapid_private_key, vapid_subject, webpush_ttl, push_batch_size,
            push_max_attempts, push_retry_base_ms, push_retry_max_ms, push_poll_ms, push_collapse_ms, push_rate, push_timeout_ms, push_allow_private_endpoints, push_allowed_hosts, max_devices_per_user,
            fcm_service_account, fcm_endpoint, apns_key_file, apns_key_id, apns_team_id, apns_topic, apns_endpoint,
            max_connections, max_connections_per_user, handshake_rate, handshake_burst, allowed_origins,
            max_json_depth, max_outbound_queue, shutdown_timeout, public_url, media_dir, media_dir_shared,
            media_s3_bucket, media_s3_endpoint, media_s3_region, media_s3_access_key_id,
            media_s3_secret_access_key, media_allowed_types, media_max_bytes, media_max_pixels, media_uploads_per_day,
            media_upload_expiry, media_retention),
        )
    }

    /// Applies defaults and checks combinations.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let settings = self.with_file()?;
        let push = push_config(&settings)?;
        let connections = connection_limits(&settings)?;
        let media_limits = media_limits(&settings)?;
        let data_dir = settings.data_dir.clone().unwrap_or_else(|| PathBuf::from("./chatd-data"));
        let database = match settings.database_url.as_deref() {
            None => Database::Sqlite(data_dir.join("chatd.db")),
            Some(url) => {
                if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
                    Database::Sqlite(PathBuf::from(path))
                } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    let pool_size = settings.database_pool_size.unwrap_or(DEFAULT_POOL_SIZE);
                    if pool_size == 0 {
                        anyhow::bail!("--database-pool-size must be at least 1");
                    }
                    Database::Postgres(Box::new(PostgresConfig::from_url(url)?.with_pool_size(pool_size)))
                } else {
                    anyhow::bail!(
                        "unsupported --database-url: expected sqlite:PATH or postgres://USER@HOST:PORT/DATABASE"
                    );
                }
            }
        };
        let media = media_config(&settings, &data_dir, matches!(database, Database::Postgres(_)))?;
        let redis = match settings.redis_url {
            Some(url) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => {
                anyhow::bail!("unsupported --redis-url {url:?}: expected redis://HOST[:PORT][/DB]")
            }
            Some(url) => Some(RedisConfig {
                url,
                prefix: settings.redis_prefix.unwrap_or_else(|| "chatd".to_owned()),
                presence_ttl: Duration::from_secs(settings.presence_ttl.unwrap_or(30).max(1)),
            }),
            None => None,
        };
        if settings.admin_key.as_ref().is_some_and(|key| key.len() < 16) {
            anyhow::bail!("--admin-key must be at least 16 bytes");
        }
        if settings.max_devices_per_user == Some(0) {
            anyhow::bail!("--max-devices-per-user must be at least 1");
        }
        let defaults = ChatLimits::default();
        Ok(Config {
            bind: settings.bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000))),
            metrics_bind: settings.metrics_bind,
            data_dir,
            database,
            redis,
            jwt: JwtConfig {
                secret: settings.jwt_secret,
                public_key: settings.jwt_public_key,
                audience: settings.jwt_audience,
                issuer: settings.jwt_issuer,
            },
            admin_key: settings.admin_key,
            dev: settings.dev.unwrap_or(false),
            limits: ChatLimits {
                messages_per_second: settings.rate_limit.unwrap_or(defaults.messages_per_second),
                message_burst: settings.rate_limit_burst.unwrap_or(defaults.message_burst),
                budgets: EventBudgets {
                    typing: settings.typing_budget.unwrap_or(defaults.budgets.typing),
                    presence: settings.presence_budget.unwrap_or(defaults.budgets.presence),
                    sync: settings.sync_budget.unwrap_or(defaults.budgets.sync),
                    create_conversation: settings
                        .create_budget
                        .unwrap_or(defaults.budgets.create_conversation),
                    add_members: settings.members_budget.unwrap_or(defaults.budgets.add_members),
                    search: settings.search_budget.unwrap_or(defaults.budgets.search),
                },
                max_content_chars: settings.max_content_chars.unwrap_or(defaults.max_content_chars),
                mask_pii: settings.mask_pii.unwrap_or(false),
                push_collapse: Duration::from_millis(settings.push_collapse_ms.unwrap_or(0)),
                max_devices_per_user: settings.max_devices_per_user.unwrap_or(defaults.max_devices_per_user),
                push_endpoints: EndpointPolicy {
                    allow_private: settings.push_allow_private_endpoints.unwrap_or(false),
                    allowed_hosts: settings
                        .push_allowed_hosts
                        .unwrap_or_default()
                        .iter()
                        .map(|host| host.trim().trim_end_matches('.').to_ascii_lowercase())
                        .filter(|host| !host.is_empty())
                        .collect(),
                },
                media: media_limits,
                ..defaults
            },
            sqlite_synchronous: settings.sqlite_synchronous.unwrap_or_default(),
            ws: WsConfig {
                ping_interval: Duration::from_secs(settings.ws_ping_interval.unwrap_or(25).max(1)),
                idle_timeout: Duration::from_secs(settings.ws_idle_timeout.unwrap_or(60).max(1)),
                max_queued_bytes: settings.ws_max_queued_bytes.unwrap_or(1 << 20),
            },
            push,
            sse_keep_alive: Duration::from_secs(settings.sse_keep_alive.unwrap_or(15).max(1)),
            media,
            connections,
        })
    }
}

/// The realtime connection limits and the shutdown bound from `settings`.
fn connection_limits(settings: &Settings) -> anyhow::Result<ConnectionLimits> {
    let defaults = ConnectionLimits::default();
    let allowed_origins = match settings.allowed_origins.as_deref() {
        None => None,
        Some(list) => {
            let origins: Vec<String> = list
                .split(',')
                .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|origin| !origin.is_empty())
                .collect();
            if let Some(bad) =
                origins.iter().find(|o| !(o.starts_with("https://") || o.starts_with("http://")))
            {
                anyhow::bail!("--allowed-origins: {bad:?} is not an origin (scheme://host[:port])");
            }
            Some(origins)
        }
    };
    let limits = ConnectionLimits {
        max_connections: settings.max_connections.unwrap_or(defaults.max_connections),
        max_per_user: settings.max_connections_per_user.unwrap_or(defaults.max_per_user),
        handshake_rate: settings.handshake_rate.unwrap_or(defaults.handshake_rate),
        handshake_burst: settings.handshake_burst.unwrap_or(defaults.handshake_burst),
        allowed_origins,
        max_json_depth: settings.max_json_depth.unwrap_or(defaults.max_json_depth),
        max_outbound_queue: settings.max_outbound_queue.unwrap_or(defaults.max_outbound_queue),
        shutdown_timeout: settings.shutdown_timeout.map_or(defaults.shutdown_timeout, Duration::from_secs),
    };
    if limits.max_connections == 0 || limits.max_per_user == 0 || limits.max_outbound_queue == 0 {
        anyhow::bail!(
            "--max-connections, --max-connections-per-user and --max-outbound-queue must be at least 1"
        );
    }
    if limits.max_json_depth == 0 || limits.max_json_depth > 128 {
        anyhow::bail!("--max-json-depth must be between 1 and 128");
    }
    Ok(limits)
}

/// The push worker's settings and the providers' secrets from `settings`.
fn push_config(settings: &Settings) -> anyhow::Result<PushConfig> {
    let defaults = PushSettings::default();
    let ms = |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
    let request_timeout = ms(settings.push_timeout_ms, Duration::from_secs(10));
    let mut worker = PushSettings {
        batch_size: settings.push_batch_size.unwrap_or(defaults.batch_size),
        send_timeout: request_timeout.saturating_mul(REQUESTS_PER_SEND),
        max_devices: settings.max_devices_per_user.unwrap_or(ChatLimits::default().max_devices_per_user),
        max_attempts: settings.push_max_attempts.unwrap_or(defaults.max_attempts),
        retry_base: ms(settings.push_retry_base_ms, defaults.retry_base),
        retry_max: ms(settings.push_retry_max_ms, defaults.retry_max),
        poll_interval: ms(settings.push_poll_ms, defaults.poll_interval),
        max_rate: settings.push_rate.unwrap_or(defaults.max_rate),
        // The wiring uses the core's limit (`ChatLimits::preview_chars`), as notifications do.
        ..defaults
    };
    // Always longer than the worst-case send of a job, so that no other node claims a job
    // while it is being sent.
    worker.lease = worker.lease.max(worker.min_lease());
    if worker.batch_size == 0 || worker.max_attempts == 0 {
        anyhow::bail!("--push-batch-size and --push-max-attempts must be at least 1");
    }
    if worker.poll_interval.is_zero() || request_timeout.is_zero() {
        anyhow::bail!("--push-poll-ms and --push-timeout-ms must be at least 1");
    }
    if let Some(secret) = &settings.webhook_secret
        && secret.len() < 16
    {
        anyhow::bail!("--webhook-secret must be at least 16 bytes");
    }
    let webpush = match (&settings.vapid_private_key, &settings.vapid_subject) {
        (None, None) => None,
        (Some(private_key), Some(subject)) => {
            if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
                anyhow::bail!("--vapid-subject must be a mailto: or https:// URI");
            }
            Some(WebPushConfig {
                private_key: private_key.clone(),
                subject: subject.clone(),
                ttl: Duration::from_secs(settings.webpush_ttl.unwrap_or(86_400)),
            })
        }
        _ => anyhow::bail!("--vapid-private-key and --vapid-subject go together"),
    };
    let fcm_endpoint =
        settings.fcm_endpoint.clone().unwrap_or_else(|| crate::push::fcm::DEFAULT_ENDPOINT.into());
    let apns_endpoint =
        settings.apns_endpoint.clone().unwrap_or_else(|| crate::push::apns::DEFAULT_ENDPOINT.into());
    for (flag, url) in [("--fcm-endpoint", &fcm_endpoint), ("--apns-endpoint", &apns_endpoint)] {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            anyhow::bail!("{flag} must be an http(s) URL, got {url:?}");
        }
    }
    let apns = match (
        &settings.apns_key_file,
        &settings.apns_key_id,
        &settings.apns_team_id,
        &settings.apns_topic,
    ) {
        (None, None, None, None) => None,
        (Some(key_file), Some(key_id), Some(team_id), Some(topic)) => Some(ApnsConfig {
            key_file: key_file.clone(),
            key_id: key_id.clone(),
            team_id: team_id.clone(),
            topic: topic.clone(),
            endpoint: apns_endpoint,
        }),
        _ => {
            anyhow::bail!("APNs needs all of --apns-key-file, --apns-key-id, --apns-team-id and --apns-topic")
        }
    };
    Ok(PushConfig {
        worker,
        request_timeout,
        webhook_secret: settings.webhook_secret.clone(),
        webpush,
        fcm_service_account: settings.fcm_service_account.clone(),
        fcm_endpoint,
        apns,
    })
}
