//! PostgreSQL backend: one database shared by every chatd node.
//!
//! Each write is one transaction on a pooled connection, except appends: each node's writer
//! task group-commits every pending append in one transaction (see [`group_commit`]).
//! Appends to a conversation serialize on its row: a group locks its conversations' rows
//! (in id order, so groups of several nodes never deadlock) and holds the locks until it
//! commits, so seqs are gap-free across nodes. Every other write that changes the members
//! or their unread counts locks the same row first, which keeps membership checks,
//! recipients and unread counts exact under concurrency. Commit hooks run on the writer in
//! commit order, so in seq order per conversation on each node.
//!
//! Push workers on every node claim due jobs with one `UPDATE … WHERE id IN (SELECT … FOR
//! UPDATE SKIP LOCKED) RETURNING …`, so they take disjoint jobs without waiting for each other.

mod annotations;
mod conversations;
mod devices;
mod group_commit;
mod members;
mod messages;
mod moderation;
mod notifications;
mod push_outbox;
mod search;
mod uploads;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio_postgres::types::{FromSql, Json, ToSql};
use tokio_postgres::{NoTls, Row};

use crate::core::error::StoreError;
use crate::core::model::{
    Block, Conversation, ConversationStatus, ConversationType, Device, JsonObject, Member, Message,
    MessageType, NotificationSettings, Platform, ReactionRef, Role, ThreadSummary,
};
use crate::core::ports::{
    ActivityCursor, AppendOutcome, ClaimedPushJob, CommitHook, ConversationStore, ConversationUpdate,
    Created, DISCONNECT_MARKS_KEPT, DeviceStore, HistoryRange, MemberStore, Membership, MessageStore,
    ModerationStore, NewConversation, NewDevice, NewMessage, NewNotification, NotificationStore, PushJob,
    PushOutbox, Store, clip_push_error,
};
use crate::core::requests::NotificationSettingsUpdate;
use crate::core::server_events::{ConversationHead, Notification, NotificationKind};
use crate::core::time::Timestamp;
use crate::tasks::Tasks;

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_init.sql"),
    include_str!("../../../migrations/postgres/0002_push.sql"),
    include_str!("../../../migrations/postgres/0003_push_claims.sql"),
    include_str!("../../../migrations/postgres/0004_notifications.sql"),
    include_str!("../../../migrations/postgres/0005_notification_settings.sql"),
    include_str!("../../../migrations/postgres/0006_bans_blocks.sql"),
    include_str!("../../../migrations/postgres/0007_device_refresh.sql"),
    include_str!("../../../migrations/postgres/0008_message_version.sql"),
    include_str!("../../../migrations/postgres/0009_disconnects.sql"),
    include_str!("../../../migrations/postgres/0010_uploads.sql"),
    include_str!("../../../migrations/postgres/0011_search.sql"),
    include_str!("../../../migrations/postgres/0012_reactions_threads_pins.sql"),
    include_str!("../../../migrations/postgres/0013_conversation_states.sql"),
];

/// Connections each node keeps at most, unless configured.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Longest wait for a free pooled connection before a request fails as unavailable.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a new connection to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.seq, m.sender_id, m.type, m.content, m.client_id, \
     m.reply_to_id, m.attachments, m.metadata, m.created_at, m.edited_at, m.deleted_at, m.version, m.revision, \
     m.thread_id, m.also_in_conversation, m.reply_count, m.last_reply_at, m.thread_participants, m.mentions, \
     m.mentions_all, m.reaction_counts, m.latest_reactions, m.pinned_at, m.pinned_by";

/// A `postgres://` (or `postgresql://`) URL that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid PostgreSQL URL: {0}")]
pub struct InvalidUrl(String);

/// Where and how to reach PostgreSQL, parsed from a libpq-style URL.
///
/// Besides the standard parameters (`options`, `application_name`, `connect_timeout`, ...),
/// the URL may carry `schema=NAME`: chatd then creates that schema if needed and works only
/// inside it (several deployments or tests can share one database).
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    connect: tokio_postgres::Config,
    schema: Option<String>,
    pool_size: usize,
}

impl PostgresConfig {
    /// Parses `url`, taking out chatd's own `schema` parameter.
    pub fn from_url(url: &str) -> Result<PostgresConfig, InvalidUrl> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut schema = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", name)) => {
                    if !valid_schema_name(name) {
                        return Err(InvalidUrl(format!(
                            "schema {name:?} must be 1 to 63 of a-z, 0-9 and _, not starting with a digit"
                        )));
                    }
                    schema = Some(name.to_owned());
                }
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        let mut connect = tokio_postgres::Config::from_str(&rest).map_err(|e| InvalidUrl(describe(&e)))?;
        if let Some(schema) = &schema {
            let options = match connect.get_options() {
                Some(given) => format!("{given} -c search_path={schema}"),
                None => format!("-c search_path={schema}"),
            };
            connect.options(options);
        }
        if connect.get_application_name().is_none() {
            connect.application_name("chatd");
        }
        if connect.get_connect_timeout().is_none() {
            connect.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(PostgresConfig { connect, schema, pool_size: DEFAULT_POOL_SIZE })
    }

    /// The same configuration with at most `size` pooled connections (at least 1).
    pub fn with_pool_size(mut self, size: usize) -> PostgresConfig {
        self.pool_size = size.max(1);
        self
    }

    /// The schema given with `schema=`, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Connections kept at most.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// `host:port/database` for messages (never the password).
    pub fn describe(&self) -> String {
        let host = match self.connect.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.connect.get_ports().first().copied().unwrap_or(5432);
        let database = self.connect.get_dbname().or(self.connect.get_user()).unwrap_or("");
        match &self.schema {
            Some(schema) => format!("{host}:{port}/{database} (schema {schema})"),
            None => format!("{host}:{port}/{database}"),
        }
    }
}

fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An error with its causes, since tokio-postgres puts the detail in the source.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether the error means the database cannot be reached or is refusing work for now.
fn is_unavailable(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(state) = err.code() {
        // 08: connection exception; 53: insufficient resources; 57P: operator intervention
        // (shutdown, cannot connect now); 28: invalid authorization; 3D000: no such database.
        let code = state.code();
        return ["08", "53", "57P", "28"].iter().any(|class| code.starts_with(class)) || code == "3D000";
    }
    std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>())
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        if is_unavailable(&err) {
            StoreError::Unavailable(format!("PostgreSQL: {}", describe(&err)))
        } else {
            StoreError::Backend(format!("PostgreSQL: {}", describe(&err)).into())
        }
    }
}

fn pool_error(err: PoolError) -> StoreError {
    match err {
        PoolError::Timeout(_) => StoreError::Unavailable(format!(
            "PostgreSQL: no connection could be had within {} s",
            WAIT_TIMEOUT.as_secs()
        )),
        PoolError::Backend(err) => {
            StoreError::Unavailable(format!("cannot connect to PostgreSQL: {}", describe(&err)))
        }
        PoolError::Closed => StoreError::Unavailable("the PostgreSQL pool is closed".into()),
        other => StoreError::Backend(format!("PostgreSQL pool: {other}").into()),
    }
}

fn unknown_name(column: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("unknown {column} {value:?} in the database").into())
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    Ok(row.try_get(index)?)
}

/// A count or size as a query parameter.
fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A claim's attempt as the `INTEGER` column holds it; one beyond that range becomes -1,
/// which no job's attempt count equals (so fenced updates change nothing).
fn attempt_param(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(-1)
}

/// The message whose [`MESSAGE_COLUMNS`] start at column `at`; `None` when a left join
/// found none.
fn message_at(row: &Row, at: usize) -> Result<Option<Message>, StoreError> {
    let Some(id) = get::<Option<String>>(row, at)? else { return Ok(None) };
    let kind: String = get(row, at + 4)?;
    Ok(Some(Message {
        id,
        conversation_id: get(row, at + 1)?,
        seq: get(row, at + 2)?,
        sender_id: get(row, at + 3)?,
        kind: MessageType::parse(&kind).ok_or_else(|| unknown_name("message type", &kind))?,
        content: get(row, at + 5)?,
        client_id: get(row, at + 6)?,
        reply_to_id: get(row, at + 7)?,
        attachments: get::<Json<Vec<JsonObject>>>(row, at + 8)?.0,
        metadata: get::<Json<JsonObject>>(row, at + 9)?.0,
        created_at: Timestamp(get(row, at + 10)?),
        edited_at: get::<Option<i64>>(row, at + 11)?.map(Timestamp),
        deleted_at: get::<Option<i64>>(row, at + 12)?.map(Timestamp),
        version: get(row, at + 13)?,
        revision: get(row, at + 14)?,
        thread_id: get(row, at + 15)?,
        also_in_conversation: get(row, at + 16)?,
        thread: ThreadSummary::of(
            get(row, at + 17)?,
            get::<Option<i64>>(row, at + 18)?.map(Timestamp),
            get::<Json<Vec<String>>>(row, at + 19)?.0,
        ),
        mentions: get::<Json<Vec<String>>>(row, at + 20)?.0,
        mentions_all: get(row, at + 21)?,
        reaction_counts: get::<Json<std::collections::BTreeMap<String, i64>>>(row, at + 22)?.0,
        latest_reactions: get::<Json<Vec<ReactionRef>>>(row, at + 23)?.0,
        pinned_at: get::<Option<i64>>(row, at + 24)?.map(Timestamp),
        pinned_by: get(row, at + 25)?,
    }))
}

fn messages_from(rows: &[Row]) -> Result<Vec<Message>, StoreError> {
    rows.iter().filter_map(|row| message_at(row, 0).transpose()).collect()
}

/// The member whose columns (user_id, role, joined_at, last_read_seq, notifications) start
/// at column `at`.
fn member_at(row: &Row, at: usize) -> Result<Member, StoreError> {
    let role: String = get(row, at + 1)?;
    Ok(Member {
        user_id: get(row, at)?,
        role: Role::parse(&role).ok_or_else(|| unknown_name("role", &role))?,
        joined_at: Timestamp(get(row, at + 2)?),
        last_read_seq: get(row, at + 3)?,
        notifications: get(row, at + 4)?,
        shown_notifications: None,
    })
}

fn device_from(row: &Row) -> Result<Device, StoreError> {
    let platform: String = get(row, 1)?;
    Ok(Device {
        id: get(row, 0)?,
        platform: Platform::parse(&platform).ok_or_else(|| unknown_name("platform", &platform))?,
        token: get(row, 2)?,
        endpoint: get(row, 3)?,
        keys: get::<Option<Json<JsonObject>>>(row, 4)?.map(|keys| keys.0),
        created_at: Timestamp(get(row, 5)?),
    })
}

/// A push job from a row starting (id, user_id, conversation_id, message_id, seq, created_at).
fn push_job_from(row: &Row) -> Result<PushJob, StoreError> {
    Ok(PushJob {
        id: get(row, 0)?,
        user_id: get(row, 1)?,
        conversation_id: get(row, 2)?,
        message_id: get(row, 3)?,
        seq: get(row, 4)?,
        created_at: Timestamp(get(row, 5)?),
    })
}

/// Conversation columns followed by the viewer's unread count and the last message, as
/// [`conversations_from`] reads them.
const CONVERSATION_COLUMNS: &str = "c.id, c.type, c.name, c.context, c.metadata, c.last_seq, \
     c.last_message_at, c.created_at, COALESCE(v.unread_count, 0), c.private_preview, \
     (SELECT count(*) FROM mentions mn WHERE mn.user_id = v.user_id AND mn.conversation_id = c.id \
       AND mn.seq > v.last_read_seq), c.status, c.status_reason, COALESCE(v.archived, false), v.muted_until";

/// A page cursor as the two nullable query parameters (activity time, id) the listing
/// queries compare against; both null for the first page.
fn cursor_bounds(after: Option<&ActivityCursor>) -> (Option<i64>, Option<&str>) {
    match after {
        Some(cursor) => (Some(cursor.activity_at.millis()), Some(cursor.id.as_str())),
        None => (None, None),
    }
}

/// Builds conversations from rows of [`CONVERSATION_COLUMNS`] + [`MESSAGE_COLUMNS`], loading
/// their members in one more query.
async fn conversations_from(client: &Object, rows: Vec<Row>) -> Result<Vec<Conversation>, StoreError> {
    let ids = rows.iter().map(|row| get::<String>(row, 0)).collect::<Result<Vec<_>, _>>()?;
    let mut members: std::collections::HashMap<String, Vec<Member>> = std::collections::HashMap::new();
    if !ids.is_empty() {
        let statement = client
            .prepare_cached(
                "SELECT conversation_id, user_id, role, joined_at, last_read_seq, notifications FROM members \
                 WHERE conversation_id = ANY($1) ORDER BY conversation_id, joined_at, user_id",
            )
            .await?;
        for row in client.query(&statement, &[&ids]).await? {
            members.entry(get(&row, 0)?).or_default().push(member_at(&row, 1)?);
        }
    }
    rows.iter()
        .map(|row| {
            let id: String = get(row, 0)?;
            let kind: String = get(row, 1)?;
            Ok(Conversation {
                kind: ConversationType::parse(&kind)
                    .ok_or_else(|| unknown_name("conversation type", &kind))?,
                name: get(row, 2)?,
                context: get(row, 3)?,
                metadata: get::<Json<JsonObject>>(row, 4)?.0,
                members: members.remove(&id).unwrap_or_default(),
                last_seq: get(row, 5)?,
                last_message_at: get::<Option<i64>>(row, 6)?.map(Timestamp),
                created_at: Timestamp(get(row, 7)?),
                unread_count: get(row, 8)?,
                private_preview: get(row, 9)?,
                unread_mentions: get(row, 10)?,
                status: {
                    let status: &str = get(row, 11)?;
                    ConversationStatus::parse(status).ok_or_else(|| unknown_name("status", status))?
                },
                status_reason: get(row, 12)?,
                archived: get(row, 13)?,
                muted_until: get::<Option<i64>>(row, 14)?.map(Timestamp),
                last_message: message_at(row, 15)?,
                id,
            })
        })
        .collect()
}

/// Applies every migration not yet recorded in `chatd_migrations`, one node at a time.
async fn migrate(pool: &Pool, schema: Option<&str>) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await?;
    // Nodes starting together take turns; the lock is released at commit.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('chatd migrations ' || COALESCE($1::text, current_schema()::text, '')))",
        &[&schema],
    )
    .await?;
    if let Some(schema) = schema {
        // The name was checked to be a plain lower-case identifier.
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS chatd_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let applied: i32 =
        get(&tx.query_one("SELECT COALESCE(max(version), 0) FROM chatd_migrations", &[]).await?, 0)?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(applied).unwrap_or(0)) {
        tx.batch_execute(sql).await?;
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO chatd_migrations (version, applied_at) VALUES ($1, $2)",
            &[&version, &Timestamp::now().millis()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The PostgreSQL [`Store`].
pub struct PostgresStore {
    pool: Pool,
    /// Appends go through this node's group-commit writer (see [`group_commit`]).
    appends: group_commit::AppendQueue,
    /// Signalled after push jobs are recorded (see [`Store::push_enqueued`]).
    push_enqueued: Notify,
}

impl PostgresStore {
    /// Connects, creates the schema if one is configured and applies migrations. Must be
    /// called inside a Tokio runtime; the group writer runs as one of `tasks`.
    pub async fn connect(config: &PostgresConfig, tasks: &Tasks) -> Result<PostgresStore, StoreError> {
        let manager = Manager::from_config(
            config.connect.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        migrate(&pool, config.schema()).await?;
        let store = PostgresStore {
            appends: group_commit::AppendQueue::start(pool.clone(), tasks),
            pool,
            push_enqueued: Notify::new(),
        };
        store.check_korean_trigrams().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Runs one statement (prepared once per connection) and returns its rows.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }

    /// Runs one statement and returns the number of rows it changed.
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.execute(&statement, params).await?)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.query("SELECT 1", &[]).await.map(|_| ())
    }
}

/// The advisory-lock class of blocks: [`ModerationStore::block_user`] takes the blocked
/// user's lock exclusively, [`blocks_between`] shares the locks of the users it checks.
const BLOCKS_LOCK: i32 = 0x626c6b; // "blk"

/// Whether one of `others` blocks `user_id` or, with `either_way`, `user_id` blocks one of
/// them: the block rule of creating a conversation or adding members. Takes the checked
/// users' block locks (shared) first, so a block being committed is waited for and seen,
/// and a block that starts after waits for this transaction.
async fn blocks_between(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: &str,
    others: &[&str],
    either_way: bool,
) -> Result<bool, StoreError> {
    let mut locked: Vec<&str> = vec![user_id];
    if either_way {
        locked.extend_from_slice(others);
    }
    locked.sort_unstable();
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared($1, hashtext(u)) FROM unnest($2::text[]) AS t (u)",
        &[&BLOCKS_LOCK, &locked],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM blocks WHERE \
               (blocked_id = $1 AND blocker_id = ANY($2)) OR ($3 AND blocker_id = $1 AND blocked_id = ANY($2)))",
            &[&user_id, &others, &either_way],
        )
        .await?;
    get(&row, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parameter_becomes_the_search_path_and_leaves_the_rest() {
        let config =
            PostgresConfig::from_url("postgres://root@127.0.0.1:5432/test?schema=chat_a&application_name=x")
                .expect("valid");
        assert_eq!(config.schema(), Some("chat_a"));
        assert_eq!(config.connect.get_options(), Some("-c search_path=chat_a"));
        assert_eq!(config.connect.get_application_name(), Some("x"));
        assert_eq!(config.describe(), "127.0.0.1:5432/test (schema chat_a)");
    }

    #[test]
    fn a_schema_name_that_is_not_a_plain_identifier_is_refused() {
        for bad in ["", "Chat", "1chat", "chat;drop", "a-b"] {
            let url = format!("postgres://root@127.0.0.1/test?schema={bad}");
            assert!(PostgresConfig::from_url(&url).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unknown_url_parameters_are_refused() {
        assert!(PostgresConfig::from_url("postgres://root@127.0.0.1/test?bogus=1").is_err());
    }

    #[test]
    fn the_password_never_shows_in_descriptions() {
        let config = PostgresConfig::from_url("postgresql://u:secret@db.internal:6543/chat").expect("valid");
        assert!(!config.describe().contains("secret"));
        assert!(!format!("{config:?}").contains("secret"));
        assert_eq!(config.describe(), "db.internal:6543/chat");
    }
}
