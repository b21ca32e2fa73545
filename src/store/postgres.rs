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

mod group_commit;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio_postgres::types::{FromSql, Json, ToSql};
use tokio_postgres::{NoTls, Row};

use crate::core::error::StoreError;
use crate::core::events::NotificationSettingsUpdate;
use crate::core::model::{
    Block, Conversation, ConversationType, Device, JsonObject, Member, Message, MessageType,
    NotificationSettings, Platform, Role,
};
use crate::core::ports::{
    ActivityCursor, AppendOutcome, ClaimedPushJob, CommitHook, ConversationUpdate, Created,
    DISCONNECT_MARKS_KEPT, HistoryRange, Membership, NewConversation, NewDevice, NewMessage, NewNotification,
    PushJob, Store, clip_push_error,
};
use crate::core::realtime::{ConversationHead, Notification};
use crate::core::time::Timestamp;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_push.sql"),
    include_str!("../../migrations/postgres/0003_push_claims.sql"),
    include_str!("../../migrations/postgres/0004_notifications.sql"),
    include_str!("../../migrations/postgres/0005_notification_settings.sql"),
    include_str!("../../migrations/postgres/0006_bans_blocks.sql"),
    include_str!("../../migrations/postgres/0007_device_refresh.sql"),
    include_str!("../../migrations/postgres/0008_message_version.sql"),
    include_str!("../../migrations/postgres/0009_disconnects.sql"),
];

/// Connections each node keeps at most, unless configured.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Longest wait for a free pooled connection before a request fails as unavailable.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a new connection to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.seq, m.sender_id, m.type, m.content, m.client_id, \
     m.reply_to_id, m.attachments, m.metadata, m.created_at, m.edited_at, m.deleted_at, m.version";

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
     c.last_message_at, c.created_at, COALESCE(v.unread_count, 0), c.private_preview";

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
                last_message: message_at(row, 10)?,
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
    /// called inside a Tokio runtime.
    pub async fn connect(config: &PostgresConfig) -> Result<PostgresStore, StoreError> {
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
        Ok(PostgresStore {
            appends: group_commit::AppendQueue::start(pool.clone()),
            pool,
            push_enqueued: Notify::new(),
        })
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

    async fn create_conversation(&self, new: NewConversation) -> Result<Created, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let at = new.created_at.millis();
        let insert = tx
            .prepare_cached(
                "INSERT INTO conversations (id, type, name, context, metadata, direct_key, activity_at, created_at, \
                   private_preview) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) ON CONFLICT (direct_key) DO NOTHING",
            )
            .await?;
        let inserted = tx
            .execute(
                &insert,
                &[
                    &new.id,
                    &new.kind.as_str(),
                    &new.name,
                    &new.context,
                    &Json(&new.metadata),
                    &new.direct_key,
                    &at,
                    &new.private_preview,
                ],
            )
            .await?;
        if inserted == 0 {
            // A direct conversation of this pair and context exists (perhaps just created by
            // another node): return it.
            tx.rollback().await?;
            let rows =
                self.query("SELECT id FROM conversations WHERE direct_key = $1", &[&new.direct_key]).await?;
            let row = rows
                .first()
                .ok_or_else(|| StoreError::Backend("a direct_key conflict left no conversation".into()))?;
            return Ok(Created { id: get(row, 0)?, created: false });
        }
        let (user_ids, roles): (Vec<&str>, Vec<&str>) =
            new.members.iter().map(|(user_id, role)| (user_id.as_str(), role.as_str())).unzip();
        let members = tx
            .prepare_cached(
                "INSERT INTO members (conversation_id, user_id, role, joined_at) \
                 SELECT $1, u, r, $4 FROM unnest($2::text[], $3::text[]) AS t (u, r)",
            )
            .await?;
        tx.execute(&members, &[&new.id, &user_ids, &roles, &at]).await?;
        tx.commit().await?;
        Ok(Created { id: new.id, created: true })
    }

    async fn conversation(&self, id: &str, viewer: &str) -> Result<Option<Conversation>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {CONVERSATION_COLUMNS}, {MESSAGE_COLUMNS} FROM conversations c \
                 LEFT JOIN members v ON v.conversation_id = c.id AND v.user_id = $2 \
                 LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq \
                 WHERE c.id = $1"
            ))
            .await?;
        let rows = client.query(&statement, &[&id, &viewer]).await?;
        Ok(conversations_from(&client, rows).await?.pop())
    }

    async fn membership(&self, conversation_id: &str, user_id: &str) -> Result<Membership, StoreError> {
        let rows = self
            .query(
                "SELECT c.type, m.user_id, m.role, m.joined_at, m.last_read_seq, m.notifications \
                 FROM conversations c LEFT JOIN members m ON m.conversation_id = c.id AND m.user_id = $2 \
                 WHERE c.id = $1",
                &[&conversation_id, &user_id],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(Membership::NoConversation) };
        let kind: String = get(row, 0)?;
        let kind = ConversationType::parse(&kind).ok_or_else(|| unknown_name("conversation type", &kind))?;
        if get::<Option<String>>(row, 1)?.is_none() {
            return Ok(Membership::NotMember);
        }
        Ok(Membership::Member { member: member_at(row, 1)?, kind })
    }

    async fn conversations_of(
        &self,
        user_id: &str,
        after: Option<ActivityCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        let (after_at, after_id) = cursor_bounds(after.as_ref());
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {CONVERSATION_COLUMNS}, {MESSAGE_COLUMNS} FROM members v \
                 JOIN conversations c ON c.id = v.conversation_id \
                 LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq \
                 WHERE v.user_id = $1 \
                   AND ($2::BIGINT IS NULL OR c.activity_at < $2 OR (c.activity_at = $2 AND c.id < $3)) \
                 ORDER BY c.activity_at DESC, c.id DESC LIMIT $4"
            ))
            .await?;
        let rows = client.query(&statement, &[&user_id, &after_at, &after_id, &as_i64(limit)]).await?;
        conversations_from(&client, rows).await
    }

    async fn update_conversation(&self, id: &str, update: ConversationUpdate) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE conversations SET name = COALESCE($2, name), metadata = COALESCE($3, metadata), \
                   private_preview = COALESCE($4, private_preview) WHERE id = $1",
                &[&id, &update.name, &update.metadata.as_ref().map(Json), &update.private_preview],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn add_members(
        &self,
        conversation_id: &str,
        user_ids: Vec<String>,
        role: Role,
        joined_at: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Waits for appends in flight, so the new members' read markers are at the real last seq.
        let lock = tx.prepare_cached("SELECT last_seq FROM conversations WHERE id = $1 FOR UPDATE").await?;
        let Some(row) = tx.query_opt(&lock, &[&conversation_id]).await? else {
            tx.rollback().await?;
            return Ok(Vec::new());
        };
        let last_seq: i64 = get(&row, 0)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO members (conversation_id, user_id, role, joined_at, last_read_seq) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .await?;
        let mut added = Vec::new();
        for user_id in user_ids {
            let inserted = tx
                .execute(
                    &insert,
                    &[&conversation_id, &user_id, &role.as_str(), &joined_at.millis(), &last_seq],
                )
                .await?;
            if inserted == 1 {
                added.push(user_id);
            }
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn remove_member(&self, conversation_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Waits for appends and other member changes in flight: a removed member's append
        // either committed before this or sees the removal, and concurrent leaves take turns,
        // each seeing the members the previous left.
        let lock = tx.prepare_cached("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE").await?;
        tx.query_opt(&lock, &[&conversation_id]).await?;
        let delete =
            tx.prepare_cached("DELETE FROM members WHERE conversation_id = $1 AND user_id = $2").await?;
        let removed = tx.execute(&delete, &[&conversation_id, &user_id]).await?;
        let succession = tx
            .prepare_cached(
                "UPDATE members SET role = 'owner' \
                 WHERE conversation_id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND role = 'owner') \
                 AND user_id = (SELECT user_id FROM members WHERE conversation_id = $1 \
                     ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1)",
            )
            .await?;
        tx.execute(&succession, &[&conversation_id]).await?;
        tx.commit().await?;
        Ok(removed == 1)
    }

    async fn append_message(
        &self,
        new: NewMessage,
        on_commit: CommitHook,
    ) -> Result<AppendOutcome, StoreError> {
        self.appends.append(new, on_commit).await
    }

    async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let rows =
            self.query(&format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1"), &[&id]).await?;
        Ok(messages_from(&rows)?.pop())
    }

    async fn edit_message(
        &self,
        id: &str,
        content: String,
        at: Timestamp,
    ) -> Result<Option<Message>, StoreError> {
        let rows = self
            .query(
                &format!(
                    "UPDATE messages AS m SET content = $2, edited_at = $3, version = m.version + 1 \
                     WHERE m.id = $1 AND m.deleted_at IS NULL \
                     RETURNING {MESSAGE_COLUMNS}"
                ),
                &[&id, &content, &at.millis()],
            )
            .await?;
        Ok(messages_from(&rows)?.pop())
    }

    async fn delete_message(&self, id: &str, at: Timestamp) -> Result<Option<(Message, bool)>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let find = tx.prepare_cached("SELECT conversation_id FROM messages WHERE id = $1").await?;
        let Some(row) = tx.query_opt(&find, &[&id]).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let conversation_id: String = get(&row, 0)?;
        // Unread counts change below: the conversation row first, like appends.
        let lock = tx.prepare_cached("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE").await?;
        tx.query_opt(&lock, &[&conversation_id]).await?;
        let delete = tx
            .prepare_cached(&format!(
                "UPDATE messages AS m SET content = NULL, attachments = '[]', metadata = '{{}}', deleted_at = $2, \
                 version = m.version + 1 WHERE m.id = $1 AND m.deleted_at IS NULL RETURNING {MESSAGE_COLUMNS}"
            ))
            .await?;
        let result = match messages_from(&tx.query(&delete, &[&id, &at.millis()]).await?)?.pop() {
            Some(message) => {
                // It no longer counts as unread for those who had not read it.
                let unread = tx
                    .prepare_cached(
                        "UPDATE members SET unread_count = unread_count - 1 \
                         WHERE conversation_id = $1 AND user_id <> $2 AND last_read_seq < $3 AND unread_count > 0",
                    )
                    .await?;
                tx.execute(&unread, &[&message.conversation_id, &message.sender_id, &message.seq]).await?;
                Some((message, true))
            }
            None => {
                let read = tx
                    .prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1"))
                    .await?;
                messages_from(&tx.query(&read, &[&id]).await?)?.pop().map(|message| (message, false))
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    async fn messages(
        &self,
        conversation_id: &str,
        range: HistoryRange,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let after = range.after_seq.unwrap_or(0);
        let before = range.before_seq.unwrap_or(i64::MAX);
        let fetch = as_i64(range.limit).saturating_add(1);
        let order = if range.after_seq.is_some() { "ASC" } else { "DESC" };
        let rows = self
            .query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m \
                     WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq {order} LIMIT $4"
                ),
                &[&conversation_id, &after, &before, &fetch],
            )
            .await?;
        let mut messages = messages_from(&rows)?;
        let has_more = messages.len() > range.limit;
        messages.truncate(range.limit);
        if range.after_seq.is_none() {
            messages.reverse();
        }
        Ok((messages, has_more))
    }

    async fn mark_read(
        &self,
        conversation_id: &str,
        user_id: &str,
        seq: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let lock = tx
            .prepare_cached(
                "SELECT last_read_seq FROM members WHERE conversation_id = $1 AND user_id = $2 FOR UPDATE",
            )
            .await?;
        let Some(row) = tx.query_opt(&lock, &[&conversation_id, &user_id]).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let before: i64 = get(&row, 0)?;
        // Capped at the last committed seq: an append in flight is not readable yet.
        let raise = tx
            .prepare_cached(
                "UPDATE members SET last_read_seq = GREATEST(last_read_seq, \
                   LEAST($3, (SELECT last_seq FROM conversations WHERE id = $1))) \
                 WHERE conversation_id = $1 AND user_id = $2 RETURNING last_read_seq",
            )
            .await?;
        let after: i64 = get(&tx.query_one(&raise, &[&conversation_id, &user_id, &seq]).await?, 0)?;
        if after > before {
            // Recount what is left after the marker: usually nothing, read to the end.
            let recount = tx
                .prepare_cached(
                    "UPDATE members SET unread_count = (SELECT count(*) FROM messages \
                       WHERE conversation_id = $1 AND seq > $3 AND sender_id <> $2 AND deleted_at IS NULL) \
                     WHERE conversation_id = $1 AND user_id = $2",
                )
                .await?;
            tx.execute(&recount, &[&conversation_id, &user_id, &after]).await?;
        }
        tx.commit().await?;
        Ok(Some((before, after)))
    }

    async fn set_notifications(
        &self,
        conversation_id: &str,
        user_id: &str,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE members SET notifications = $3 WHERE conversation_id = $1 AND user_id = $2",
                &[&conversation_id, &user_id, &enabled],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn notification_settings(&self, user_id: &str) -> Result<NotificationSettings, StoreError> {
        let rows = self
            .query(
                "SELECT enabled, mentions_when_muted FROM notification_settings WHERE user_id = $1",
                &[&user_id],
            )
            .await?;
        match rows.first() {
            Some(row) => {
                Ok(NotificationSettings { enabled: get(row, 0)?, mentions_when_muted: get(row, 1)? })
            }
            None => Ok(NotificationSettings::default()),
        }
    }

    async fn update_notification_settings(
        &self,
        user_id: &str,
        update: NotificationSettingsUpdate,
    ) -> Result<NotificationSettings, StoreError> {
        // One statement: absent fields keep the stored value, or the default for a new row.
        let defaults = NotificationSettings::default();
        let rows = self
            .query(
                "INSERT INTO notification_settings AS s (user_id, enabled, mentions_when_muted) \
                 VALUES ($1, COALESCE($2::boolean, $4::boolean), COALESCE($3::boolean, $5::boolean)) \
                 ON CONFLICT (user_id) DO UPDATE SET enabled = COALESCE($2::boolean, s.enabled), \
                   mentions_when_muted = COALESCE($3::boolean, s.mentions_when_muted) \
                 RETURNING enabled, mentions_when_muted",
                &[
                    &user_id,
                    &update.enabled,
                    &update.mentions_when_muted,
                    &defaults.enabled,
                    &defaults.mentions_when_muted,
                ],
            )
            .await?;
        let row = rows.first().ok_or_else(|| StoreError::Backend("upsert returned no row".into()))?;
        Ok(NotificationSettings { enabled: get(row, 0)?, mentions_when_muted: get(row, 1)? })
    }

    async fn unread_counts(&self, user_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        self.query(
            "SELECT conversation_id, unread_count FROM members WHERE user_id = $1 AND unread_count > 0",
            &[&user_id],
        )
        .await?
        .iter()
        .map(|row| Ok((get(row, 0)?, get(row, 1)?)))
        .collect()
    }

    async fn conversation_heads(&self, user_id: &str) -> Result<Vec<ConversationHead>, StoreError> {
        self.query(
            "SELECT c.id, c.last_seq FROM members m JOIN conversations c ON c.id = m.conversation_id \
             WHERE m.user_id = $1 ORDER BY c.id",
            &[&user_id],
        )
        .await?
        .iter()
        .map(|row| Ok(ConversationHead { id: get(row, 0)?, last_seq: get(row, 1)? }))
        .collect()
    }

    async fn contacts(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        self.query(
            "SELECT DISTINCT other.user_id FROM members mine \
             JOIN members other ON other.conversation_id = mine.conversation_id \
             WHERE mine.user_id = $1 AND other.user_id <> $1 \
               AND NOT EXISTS (SELECT 1 FROM blocks b \
                 WHERE (b.blocker_id = $1 AND b.blocked_id = other.user_id) \
                    OR (b.blocker_id = other.user_id AND b.blocked_id = $1))",
            &[&user_id],
        )
        .await?
        .iter()
        .map(|row| get(row, 0))
        .collect()
    }

    async fn enqueue_push_delayed(&self, jobs: Vec<PushJob>, delay: Duration) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        let users: Vec<&str> = jobs.iter().map(|j| j.user_id.as_str()).collect();
        let conversations: Vec<&str> = jobs.iter().map(|j| j.conversation_id.as_str()).collect();
        let messages: Vec<&str> = jobs.iter().map(|j| j.message_id.as_str()).collect();
        let seqs: Vec<i64> = jobs.iter().map(|j| j.seq).collect();
        let created: Vec<i64> = jobs.iter().map(|j| j.created_at.millis()).collect();
        let due: Vec<i64> = jobs.iter().map(|j| j.created_at.plus(delay).millis()).collect();
        self.execute(
            "INSERT INTO push_jobs (id, user_id, conversation_id, message_id, seq, created_at, next_attempt_at) \
             SELECT id, u, c, m, s, t, d \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[]) \
               AS j (id, u, c, m, s, t, d)",
            &[&ids, &users, &conversations, &messages, &seqs, &created, &due],
        )
        .await?;
        self.push_enqueued.notify_one();
        Ok(())
    }

    async fn push_enqueued(&self) {
        self.push_enqueued.notified().await
    }

    async fn newer_push_job(&self, job: &PushJob) -> Result<bool, StoreError> {
        let rows = self
            .query(
                "SELECT 1 FROM push_jobs WHERE user_id = $1 AND conversation_id = $2 AND seq > $3 \
                 AND finished_at IS NULL LIMIT 1",
                &[&job.user_id, &job.conversation_id, &job.seq],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn pending_push_jobs(&self, limit: usize) -> Result<Vec<PushJob>, StoreError> {
        self.query(
            "SELECT id, user_id, conversation_id, message_id, seq, created_at FROM push_jobs \
             WHERE finished_at IS NULL ORDER BY id LIMIT $1",
            &[&as_i64(limit)],
        )
        .await?
        .iter()
        .map(push_job_from)
        .collect()
    }

    async fn push_outbox_depth(&self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT COUNT(*) FROM push_jobs WHERE finished_at IS NULL", &[]).await?;
        let depth: i64 = rows.first().map(|row| row.try_get(0)).transpose()?.unwrap_or(0);
        Ok(u64::try_from(depth).unwrap_or(0))
    }

    async fn claim_push_jobs(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedPushJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = Timestamp::now();
        let leased_until = now.plus(lease);
        // One statement: the subquery locks the due rows it picks and skips rows other claims
        // hold, so concurrent claims on any node take disjoint jobs without waiting; a row
        // another claim took and committed meanwhile fails the re-check of the due condition.
        let rows = self
            .query(
                "UPDATE push_jobs SET next_attempt_at = $1, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM push_jobs \
                     WHERE finished_at IS NULL AND next_attempt_at <= $2 \
                     ORDER BY next_attempt_at, id LIMIT $3 \
                     FOR UPDATE SKIP LOCKED) \
                 RETURNING id, user_id, conversation_id, message_id, seq, created_at, attempts, last_error",
                &[&leased_until.millis(), &now.millis(), &as_i64(limit)],
            )
            .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let job = push_job_from(row)?;
                let attempts: i32 = get(row, 6)?;
                let attempt = u32::try_from(attempts).map_err(|_| {
                    StoreError::Backend(format!("push job {} has {attempts} attempts", job.id).into())
                })?;
                Ok(ClaimedPushJob { job, attempt, leased_until, last_error: get(row, 7)? })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by(|a, b| a.job.id.cmp(&b.job.id));
        Ok(claimed)
    }

    async fn push_job_held(&self, id: &str, attempt: u32) -> Result<bool, StoreError> {
        let rows = self
            .query(
                "SELECT 1 FROM push_jobs \
                 WHERE id = $1 AND attempts = $2 AND finished_at IS NULL AND next_attempt_at > $3",
                &[&id, &attempt_param(attempt), &Timestamp::now().millis()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn complete_push_job(&self, id: &str, attempt: u32) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE push_jobs SET sent_at = $2, finished_at = $2 \
                 WHERE id = $1 AND attempts = $3 AND finished_at IS NULL",
                &[&id, &Timestamp::now().millis(), &attempt_param(attempt)],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn retry_push_job(
        &self,
        id: &str,
        attempt: u32,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE push_jobs SET next_attempt_at = $2, last_error = $3 \
                 WHERE id = $1 AND attempts = $4 AND finished_at IS NULL",
                &[&id, &next_attempt_at.millis(), &clip_push_error(error), &attempt_param(attempt)],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn drop_push_job(&self, id: &str, attempt: u32, reason: &str) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE push_jobs SET finished_at = $2, last_error = $3 \
                 WHERE id = $1 AND attempts = $4 AND finished_at IS NULL",
                &[&id, &Timestamp::now().millis(), &clip_push_error(reason), &attempt_param(attempt)],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn prune_push_jobs(&self, finished_before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let deleted = self
            .execute(
                "DELETE FROM push_jobs WHERE id IN (SELECT id FROM push_jobs \
                 WHERE finished_at < $1 ORDER BY finished_at LIMIT $2)",
                &[&finished_before.millis(), &as_i64(limit)],
            )
            .await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    async fn record_notifications(
        &self,
        notifications: Vec<NewNotification>,
        keep: usize,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        if notifications.is_empty() {
            return Ok(Vec::new());
        }
        let keep = as_i64(keep.max(1));
        // Entries by user, users in a fixed order: concurrent batches lock counter rows in
        // the same order, so they never deadlock.
        let mut by_user: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
        for (index, new) in notifications.iter().enumerate() {
            by_user.entry(new.user_id.as_str()).or_default().push(index);
        }
        let mut ids: Vec<Option<i64>> = vec![None; notifications.len()];
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The row lock taken here is held to commit: another node's ids for this user come
        // after these and commit after them.
        let bump = tx
            .prepare_cached(
                "UPDATE notification_counters SET last_id = last_id + $2 WHERE user_id = $1 RETURNING last_id",
            )
            .await?;
        let mut opened = Vec::new();
        for (user_id, indexes) in &by_user {
            let count = as_i64(indexes.len());
            // No counter: the user's log is not open.
            let Some(row) = tx.query_opt(&bump, &[user_id, &count]).await? else { continue };
            let last: i64 = get(&row, 0)?;
            opened.push(*user_id);
            for (offset, index) in indexes.iter().enumerate() {
                if let Some(id) = ids.get_mut(*index) {
                    *id = Some(last - count + 1 + as_i64(offset));
                }
            }
        }
        if opened.is_empty() {
            tx.commit().await?;
            return Ok(ids);
        }
        let logged: Vec<(&NewNotification, i64)> =
            notifications.iter().zip(&ids).filter_map(|(n, id)| id.map(|id| (n, id))).collect();
        let users: Vec<&str> = logged.iter().map(|(n, _)| n.user_id.as_str()).collect();
        let numbers: Vec<i64> = logged.iter().map(|(_, id)| *id).collect();
        let conversations: Vec<&str> =
            logged.iter().map(|(n, _)| n.notification.conversation_id.as_str()).collect();
        let messages: Vec<&str> = logged.iter().map(|(n, _)| n.notification.message_id.as_str()).collect();
        let seqs: Vec<i64> = logged.iter().map(|(n, _)| n.notification.seq).collect();
        let senders: Vec<&str> = logged.iter().map(|(n, _)| n.notification.sender_id.as_str()).collect();
        let previews: Vec<Option<&str>> =
            logged.iter().map(|(n, _)| n.notification.preview.as_deref()).collect();
        let unread: Vec<i64> = logged.iter().map(|(n, _)| n.notification.unread_count).collect();
        let created: Vec<i64> = logged.iter().map(|(n, _)| n.created_at.millis()).collect();
        let insert = tx
            .prepare_cached(
                "INSERT INTO notifications (user_id, id, conversation_id, message_id, seq, sender_id, \
                 preview, unread_count, created_at) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], \
                 $6::text[], $7::text[], $8::bigint[], $9::bigint[])",
            )
            .await?;
        tx.execute(
            &insert,
            &[&users, &numbers, &conversations, &messages, &seqs, &senders, &previews, &unread, &created],
        )
        .await?;
        let trim = tx
            .prepare_cached(
                "DELETE FROM notifications n USING notification_counters c \
                 WHERE c.user_id = ANY($1) AND n.user_id = c.user_id AND n.id <= c.last_id - $2",
            )
            .await?;
        tx.execute(&trim, &[&opened, &keep]).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn notifications_after(
        &self,
        user_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows = self
            .query(
                "SELECT id, conversation_id, message_id, seq, sender_id, preview, unread_count \
                 FROM notifications WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&user_id, &after, &as_i64(limit)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Notification {
                    id: Some(get(row, 0)?),
                    kind: "message",
                    conversation_id: get(row, 1)?,
                    message_id: get(row, 2)?,
                    seq: get(row, 3)?,
                    sender_id: get(row, 4)?,
                    preview: get(row, 5)?,
                    unread_count: get(row, 6)?,
                })
            })
            .collect()
    }

    async fn open_notification_log(&self, user_id: &str) -> Result<i64, StoreError> {
        self.execute(
            "INSERT INTO notification_counters (user_id, last_id) VALUES ($1, 0) ON CONFLICT (user_id) DO NOTHING",
            &[&user_id],
        )
        .await?;
        self.latest_notification_id(user_id).await
    }

    async fn latest_notification_id(&self, user_id: &str) -> Result<i64, StoreError> {
        let rows =
            self.query("SELECT last_id FROM notification_counters WHERE user_id = $1", &[&user_id]).await?;
        match rows.first() {
            Some(row) => get(row, 0),
            None => Ok(0),
        }
    }

    async fn prune_notifications(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let deleted = self
            .execute(
                "DELETE FROM notifications WHERE (user_id, id) IN (SELECT user_id, id FROM notifications \
                 WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
                &[&before.millis(), &as_i64(limit)],
            )
            .await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    async fn upsert_device(&self, device: NewDevice, max_per_user: usize) -> Result<Device, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Registrations of one user take turns, so that two at once cannot both keep a slot.
        let lock =
            tx.prepare_cached("SELECT pg_advisory_xact_lock(hashtext('chatd devices ' || $1::text))").await?;
        tx.execute(&lock, &[&device.user_id]).await?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO devices (id, user_id, platform, token, endpoint, keys, created_at, refreshed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                 ON CONFLICT (user_id, platform, token) DO UPDATE \
                 SET endpoint = EXCLUDED.endpoint, keys = EXCLUDED.keys, refreshed_at = EXCLUDED.refreshed_at \
                 RETURNING id, platform, token, endpoint, keys, created_at",
            )
            .await?;
        let rows = tx
            .query(
                &upsert,
                &[
                    &device.id,
                    &device.user_id,
                    &device.platform.as_str(),
                    &device.token,
                    &device.endpoint,
                    &device.keys.as_ref().map(Json),
                    &device.created_at.millis(),
                ],
            )
            .await?;
        let written = rows
            .first()
            .map(device_from)
            .ok_or_else(|| StoreError::Backend("the device just written is missing".into()))??;
        let evict = tx
            .prepare_cached(
                "DELETE FROM devices WHERE user_id = $1 AND id <> $2 AND id NOT IN (\
                 SELECT id FROM devices WHERE user_id = $1 AND id <> $2 \
                 ORDER BY refreshed_at DESC, id DESC LIMIT $3)",
            )
            .await?;
        tx.execute(&evict, &[&device.user_id, &written.id, &as_i64(max_per_user.saturating_sub(1))]).await?;
        tx.commit().await?;
        Ok(written)
    }

    async fn devices(&self, user_id: &str) -> Result<Vec<Device>, StoreError> {
        self.query(
            "SELECT id, platform, token, endpoint, keys, created_at FROM devices WHERE user_id = $1 ORDER BY id",
            &[&user_id],
        )
        .await?
        .iter()
        .map(device_from)
        .collect()
    }

    async fn remove_device(&self, user_id: &str, device_id: &str) -> Result<bool, StoreError> {
        let removed = self
            .execute("DELETE FROM devices WHERE id = $1 AND user_id = $2", &[&device_id, &user_id])
            .await?;
        Ok(removed == 1)
    }

    async fn all_conversations(
        &self,
        after: Option<ActivityCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        let (after_at, after_id) = cursor_bounds(after.as_ref());
        let client = self.client().await?;
        // `v` (the viewer) joins nothing: the unread count is nobody's, 0.
        let statement = client
            .prepare_cached(&format!(
                "SELECT {CONVERSATION_COLUMNS}, {MESSAGE_COLUMNS} FROM conversations c \
                 LEFT JOIN members v ON false \
                 LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq \
                 WHERE ($1::BIGINT IS NULL OR c.activity_at < $1 OR (c.activity_at = $1 AND c.id < $2)) \
                 ORDER BY c.activity_at DESC, c.id DESC LIMIT $3"
            ))
            .await?;
        let rows = client.query(&statement, &[&after_at, &after_id, &as_i64(limit)]).await?;
        conversations_from(&client, rows).await
    }

    async fn ban_user(
        &self,
        user_id: &str,
        reason: Option<String>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        // `xmax = 0` only for a freshly inserted row, not for one the conflict updated.
        let rows = self
            .query(
                "INSERT INTO bans (user_id, reason, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET reason = EXCLUDED.reason RETURNING (xmax = 0)",
                &[&user_id, &reason, &at.millis()],
            )
            .await?;
        rows.first().map_or(Ok(false), |row| get(row, 0))
    }

    async fn unban_user(&self, user_id: &str) -> Result<bool, StoreError> {
        Ok(self.execute("DELETE FROM bans WHERE user_id = $1", &[&user_id]).await? == 1)
    }

    async fn banned_users(&self) -> Result<Vec<String>, StoreError> {
        self.query("SELECT user_id FROM bans ORDER BY user_id", &[])
            .await?
            .iter()
            .map(|row| get(row, 0))
            .collect()
    }

    async fn mark_disconnected(&self, user_id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO disconnects (user_id, at) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET at = GREATEST(disconnects.at, EXCLUDED.at)",
            &[&user_id, &at.millis()],
        )
        .await?;
        let horizon = at.minus(DISCONNECT_MARKS_KEPT).millis();
        self.execute("DELETE FROM disconnects WHERE at < $1", &[&horizon]).await?;
        Ok(())
    }

    async fn disconnected_since(&self, since: Timestamp) -> Result<Vec<(String, Timestamp)>, StoreError> {
        self.query("SELECT user_id, at FROM disconnects WHERE at >= $1", &[&since.millis()])
            .await?
            .iter()
            .map(|row| Ok((get(row, 0)?, Timestamp(get(row, 1)?))))
            .collect()
    }

    async fn block_user(&self, blocker: &str, blocked: &str, at: Timestamp) -> Result<bool, StoreError> {
        let inserted = self
            .execute(
                "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&blocker, &blocked, &at.millis()],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn unblock_user(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        let deleted = self
            .execute("DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2", &[&blocker, &blocked])
            .await?;
        Ok(deleted == 1)
    }

    async fn blocks_of(&self, blocker: &str) -> Result<Vec<Block>, StoreError> {
        self.query(
            "SELECT blocked_id, created_at FROM blocks WHERE blocker_id = $1 ORDER BY created_at, blocked_id",
            &[&blocker],
        )
        .await?
        .iter()
        .map(|row| Ok(Block { user_id: get(row, 0)?, created_at: Timestamp(get(row, 1)?) }))
        .collect()
    }

    async fn blocked_among(&self, user_id: &str, others: &[String]) -> Result<Vec<String>, StoreError> {
        if others.is_empty() {
            return Ok(Vec::new());
        }
        self.query(
            "SELECT o FROM unnest($2::text[]) AS o WHERE EXISTS (SELECT 1 FROM blocks b \
               WHERE (b.blocker_id = $1 AND b.blocked_id = o) OR (b.blocker_id = o AND b.blocked_id = $1))",
            &[&user_id, &others],
        )
        .await?
        .iter()
        .map(|row| get(row, 0))
        .collect()
    }
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
