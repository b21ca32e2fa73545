//! SQLite backend: the zero-config default.
//!
//! One dedicated writer thread owns the only write connection and group-commits: it takes
//! every write job that is pending (up to [`MAX_BATCH`]), runs them in one transaction and
//! commits once (see [`commit_batch`] for failures). It only writes: each committed batch
//! goes, in commit order, to a second thread that runs the commit hooks, publishes what
//! they published as one bus message, and answers the callers, while the writer goes on
//! with the next batch. Appends keep the members of the
//! conversations they write to in memory and write their unread counts once per batch (see
//! [`appends`]). Reads run on a small pool of read-only connections (WAL lets them proceed
//! while the writer commits).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::{Notify, mpsc, oneshot};

use appends::Appends;

use crate::core::error::StoreError;
use crate::core::events::NotificationSettingsUpdate;
use crate::core::model::{
    Block, Conversation, ConversationType, Device, Member, Message, MessageType, NotificationSettings,
    Platform, Role,
};
use crate::core::ports::{
    ActivityCursor, AppendOutcome, ClaimedPushJob, CommitHook, ConversationUpdate, Created,
    DISCONNECT_MARKS_KEPT, HistoryRange, Membership, NewConversation, NewDevice, NewMessage, NewNotification,
    Publications, PushJob, Store, clip_push_error,
};
use crate::core::realtime::{ConversationHead, Notification};
use crate::core::time::Timestamp;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;
/// How long the writer waits for more jobs before committing a batch, when the previous
/// batch showed concurrent writers (a lone writer never waits).
const LINGER: Duration = Duration::from_micros(250);
/// Write jobs that may wait for the writer before senders are slowed down.
const WRITE_QUEUE: usize = 8192;
/// Read connections.
const READERS: usize = 4;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_push.sql"),
    include_str!("../../migrations/sqlite/0003_push_claims.sql"),
    include_str!("../../migrations/sqlite/0004_notifications.sql"),
    include_str!("../../migrations/sqlite/0005_notification_settings.sql"),
    include_str!("../../migrations/sqlite/0006_bans_blocks.sql"),
    include_str!("../../migrations/sqlite/0007_device_refresh.sql"),
    include_str!("../../migrations/sqlite/0008_message_version.sql"),
    include_str!("../../migrations/sqlite/0009_disconnects.sql"),
];

/// The columns [`MessageRow::from_row`] reads, as a literal (for `concat!`).
macro_rules! message_columns {
    () => {
        "id, conversation_id, seq, sender_id, type, content, client_id, \
         reply_to_id, attachments, metadata, created_at, edited_at, deleted_at, version"
    };
}

const MESSAGE_COLUMNS: &str = message_columns!();

mod appends;

/// How hard SQLite syncs a commit to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Survives a crash of the process (WAL `synchronous=NORMAL`); the default.
    #[default]
    Normal,
    /// Also survives power loss (`synchronous=FULL`), at several times the commit cost.
    Full,
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

fn json_error(err: serde_json::Error) -> StoreError {
    StoreError::Backend(Box::new(err))
}

/// What a write job may touch, as far as the appends' cache ([`appends`]) is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Touches {
    /// An append: it goes through the cache.
    Append,
    /// Something the cache holds (members, read markers, notification switches, devices,
    /// notification logs opened, blocks, messages, conversations): the cache is flushed and
    /// dropped before it runs.
    AppendState,
    /// Nothing an append reads (notification log entries, push outbox, settings, bans).
    Other,
}

/// A write to run inside the writer's transaction, answered after the commit.
trait WriteJob: Send {
    /// What the job may change.
    fn touches(&self) -> Touches;
    /// Runs the work; false if it failed.
    fn run(&mut self, conn: &Connection, appends: &mut Appends) -> bool;
    /// Settles the outcome once the transaction's fate is known and, after a commit, runs
    /// the commit hook, which publishes into its group's `publications`.
    fn settle(&mut self, commit: &Result<(), String>, publications: &mut Publications);
    /// Answers the caller with the settled outcome.
    fn answer(self: Box<Self>);
}

/// Work run right after a job's commit, before its caller is answered.
type OnCommit<T> = Box<dyn FnOnce(&T, &mut Publications) + Send>;

struct Job<T, F> {
    touches: Touches,
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    /// Runs after a successful commit, in commit order.
    on_commit: Option<OnCommit<T>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection, &mut Appends) -> Result<T, StoreError> + Send,
{
    fn touches(&self) -> Touches {
        self.touches
    }

    fn run(&mut self, conn: &Connection, appends: &mut Appends) -> bool {
        let Some(work) = self.work.take() else { return false };
        let result = catch_unwind(AssertUnwindSafe(|| work(conn, appends)))
            .unwrap_or_else(|_| Err(StoreError::Backend("write job panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn settle(&mut self, commit: &Result<(), String>, publications: &mut Publications) {
        let outcome = match (commit, self.result.take()) {
            (Err(err), _) => Err(StoreError::Backend(format!("commit failed: {err}").into())),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Backend("write job was not run".into())),
        };
        if let (Ok(value), Some(on_commit)) = (&outcome, self.on_commit.take()) {
            on_commit(value, publications);
        }
        self.result = Some(outcome);
    }

    fn answer(self: Box<Self>) {
        let outcome =
            self.result.unwrap_or_else(|| Err(StoreError::Backend("write job was not settled".into())));
        let _ = self.reply.send(outcome);
    }
}

/// Read connections; each call takes a free one, or waits for one.
struct ReaderPool {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl ReaderPool {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.connections.len();
        for i in 0..n {
            if let Ok(conn) = self.connections[(start + i) % n].try_lock() {
                return f(&conn);
            }
        }
        // All busy: wait on one. A poisoned lock only means an earlier reader panicked; the
        // connection itself is still usable.
        let conn = self.connections[start % n].lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }
}

/// The SQLite [`Store`].
pub struct SqliteStore {
    writer: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Arc<ReaderPool>,
    /// Signalled after push jobs are recorded (see [`Store::push_enqueued`]).
    push_enqueued: Notify,
}

fn configure(conn: &Connection, synchronous: Synchronous) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Plan each statement once. Without this, the bundled SQLite (built with STAT4)
    // re-prepares cached join queries whenever a bound value changes, which cost more than
    // the queries themselves.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
         PRAGMA cache_size = -16000; PRAGMA mmap_size = 268435456;"
    ))
}

/// Applies every migration newer than the database's `user_version`.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let applied = usize::try_from(version).unwrap_or(0);
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations and starts the
    /// writer thread. Must be called inside a Tokio runtime.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        configure(&conn, synchronous)?;
        migrate(&mut conn)?;

        let mut connections = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure(&reader, synchronous)?;
            connections.push(Mutex::new(reader));
        }

        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_writer(conn, rx))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(ReaderPool { connections, next: AtomicUsize::new(0) }),
            push_enqueued: Notify::new(),
        })
    }

    /// The database file's size in pages (`PRAGMA page_count`).
    pub async fn page_count(&self) -> Result<u64, StoreError> {
        let pages =
            self.write_apart(|conn| Ok(conn.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))?));
        Ok(u64::try_from(pages.await?).unwrap_or(0))
    }

    /// Caps the database file at `pages` pages (`PRAGMA max_page_count` on the writer, never
    /// below its current size); returns the cap in force. Writes that need more fail with
    /// `SQLITE_FULL`, as on a full disk: for fault-injection tests.
    pub async fn set_max_page_count(&self, pages: u64) -> Result<u64, StoreError> {
        let cap = self.write_apart(move |conn| {
            Ok(conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get::<_, i64>(0))?)
        });
        Ok(u64::try_from(cap.await?).unwrap_or(0))
    }

    /// Runs `work` in the writer's next transaction; returns after it committed. For work
    /// that may change what appends cache (see [`Touches::AppendState`]).
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(Touches::AppendState, move |conn, _| work(conn), None).await
    }

    /// [`SqliteStore::write`] for work that changes nothing an append reads (see
    /// [`Touches::Other`]): the appends' cache stays.
    async fn write_apart<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(Touches::Other, move |conn, _| work(conn), None).await
    }

    /// Queues a job for the writer and waits for its answer; `on_commit` runs right after
    /// the commit, before the answer (jobs are finished in commit order, so hooks run in
    /// commit order).
    async fn submit<T, F>(
        &self,
        touches: Touches,
        work: F,
        on_commit: Option<OnCommit<T>>,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Appends) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn WriteJob> =
            Box::new(Job { touches, work: Some(work), result: None, on_commit, reply });
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }

    /// Runs `work` on a read connection off the async threads.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(work))
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
}

/// Moves pending jobs into `batch` until it is full or nothing is pending.
fn drain(jobs: &mut mpsc::Receiver<Box<dyn WriteJob>>, batch: &mut Vec<Box<dyn WriteJob>>) {
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// A committed (or failed) batch on its way to the thread that answers it.
struct Committed {
    jobs: Vec<Box<dyn WriteJob>>,
    commit: Result<(), String>,
}

/// The writer loop: group-commits whatever is pending until every sender is gone. Under
/// concurrency it lingers up to [`LINGER`] so a batch fills before paying for a commit.
/// Committed batches go to the answering thread ([`answer_batches`]) in commit order.
fn run_writer(conn: Connection, mut jobs: mpsc::Receiver<Box<dyn WriteJob>>) {
    let (committed, to_answer) = std::sync::mpsc::channel::<Committed>();
    let (recycle, recycled) = std::sync::mpsc::channel::<Vec<Box<dyn WriteJob>>>();
    let mut answerer = Some(committed);
    if let Err(err) = std::thread::Builder::new()
        .name("sqlite-answers".into())
        .spawn(move || answer_batches(to_answer, recycle))
    {
        tracing::error!(error = %err, "no SQLite answering thread; the writer answers itself");
        answerer = None;
    }
    let mut appends = Appends::default();
    let mut concurrent = false;
    while let Some(job) = jobs.blocking_recv() {
        let mut batch = recycled.try_recv().unwrap_or_else(|_| Vec::with_capacity(MAX_BATCH));
        batch.push(job);
        drain(&mut jobs, &mut batch);
        if concurrent && batch.len() < MAX_BATCH {
            let deadline = Instant::now() + LINGER;
            while batch.len() < MAX_BATCH && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(50));
                drain(&mut jobs, &mut batch);
            }
        }
        concurrent = batch.len() > 1;
        let commit = commit_batch(&conn, &mut batch, &mut appends);
        if let Err(err) = &commit {
            tracing::error!(error = %err, jobs = batch.len(), "SQLite batch failed");
        }
        let unanswered = match &answerer {
            Some(answerer) => answerer.send(Committed { jobs: batch, commit }).err().map(|e| e.0),
            None => Some(Committed { jobs: batch, commit }),
        };
        // The answering thread is gone (it cannot be, short of a bug): answer here.
        if let Some(Committed { jobs, commit }) = unanswered {
            answerer = None;
            settle_and_answer(jobs, &commit);
        }
    }
}

/// The answering thread: settles each committed batch, batch after batch in commit order,
/// then hands the emptied vector back to the writer.
fn answer_batches(
    committed: std::sync::mpsc::Receiver<Committed>,
    recycle: std::sync::mpsc::Sender<Vec<Box<dyn WriteJob>>>,
) {
    for Committed { jobs, commit } in committed {
        let _ = recycle.send(settle_and_answer(jobs, &commit));
    }
}

/// Runs a batch's commit hooks in order, publishes what they published as one bus message,
/// then answers every caller; returns the emptied vector.
fn settle_and_answer(
    mut jobs: Vec<Box<dyn WriteJob>>,
    commit: &Result<(), String>,
) -> Vec<Box<dyn WriteJob>> {
    let mut publications = Publications::default();
    for job in &mut jobs {
        // A hook that panics loses its own fan-out, not the others'.
        let _ = catch_unwind(AssertUnwindSafe(|| job.settle(commit, &mut publications)));
    }
    publications.publish();
    for job in jobs.drain(..) {
        job.answer();
    }
    jobs
}

/// Runs a cached statement that returns no rows (transaction control).
fn execute_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs every job of the batch in one transaction and commits it.
///
/// Jobs check before they write, so a job that fails has usually written nothing and the
/// batch goes on without it, unless SQLite rolled the transaction back on its own (checked
/// after every failed job). A job that fails after writing (an I/O error, say) cannot be
/// separated from its batch-mates: the whole batch is rolled back and every job fails, so
/// nothing unacknowledged is ever committed and no seq is ever skipped. (This replaces a
/// savepoint per job, whose page journaling cost more than the writes themselves.) The
/// appends' unread counts are written before the commit; after a rollback their cache is
/// dropped.
fn commit_batch(
    conn: &Connection,
    batch: &mut [Box<dyn WriteJob>],
    appends: &mut Appends,
) -> Result<(), String> {
    let result = run_batch(conn, batch, appends);
    if result.is_err() {
        appends.forget();
        if !conn.is_autocommit()
            && let Err(err) = execute_cached(conn, "ROLLBACK")
        {
            tracing::error!(error = %err, "SQLite rollback failed");
        }
    }
    result
}

fn run_batch(
    conn: &Connection,
    batch: &mut [Box<dyn WriteJob>],
    appends: &mut Appends,
) -> Result<(), String> {
    execute_cached(conn, "BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
    appends.begin_batch(conn).map_err(|e| e.to_string())?;
    for job in batch.iter_mut() {
        if job.touches() == Touches::AppendState {
            appends.invalidate(conn).map_err(|e| e.to_string())?;
        }
        let changes_before = conn.total_changes();
        if !job.run(conn, appends) {
            if conn.total_changes() != changes_before {
                return Err("a write failed after changing rows; the batch was rolled back".into());
            }
            // Some failures (`SQLITE_FULL`, I/O errors, out of memory) make SQLite roll the
            // whole transaction back on its own: the jobs before this one are undone, and
            // those after it would each commit alone, unacknowledged, after the seqs of the
            // undone ones. The batch fails instead.
            if conn.is_autocommit() {
                return Err("SQLite rolled the transaction back after a failed write".into());
            }
        }
    }
    appends.flush(conn).map_err(|e| e.to_string())?;
    execute_cached(conn, "COMMIT").map_err(|e| e.to_string())
}

fn timestamp(millis: Option<i64>) -> Option<Timestamp> {
    millis.map(Timestamp)
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(json_error)
}

fn unknown_name(column: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("unknown {column} {value:?} in the database").into())
}

/// Raw message columns, converted outside rusqlite's row callback so JSON errors surface.
struct MessageRow {
    id: String,
    conversation_id: String,
    seq: i64,
    sender_id: String,
    kind: String,
    content: Option<String>,
    client_id: Option<String>,
    reply_to_id: Option<String>,
    attachments: String,
    metadata: String,
    created_at: i64,
    edited_at: Option<i64>,
    deleted_at: Option<i64>,
    version: i64,
}

impl MessageRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(MessageRow {
            id: row.get(0)?,
            conversation_id: row.get(1)?,
            seq: row.get(2)?,
            sender_id: row.get(3)?,
            kind: row.get(4)?,
            content: row.get(5)?,
            client_id: row.get(6)?,
            reply_to_id: row.get(7)?,
            attachments: row.get(8)?,
            metadata: row.get(9)?,
            created_at: row.get(10)?,
            edited_at: row.get(11)?,
            deleted_at: row.get(12)?,
            version: row.get(13)?,
        })
    }

    fn into_message(self) -> Result<Message, StoreError> {
        Ok(Message {
            kind: MessageType::parse(&self.kind).ok_or_else(|| unknown_name("message type", &self.kind))?,
            attachments: parse_json(&self.attachments)?,
            metadata: parse_json(&self.metadata)?,
            id: self.id,
            conversation_id: self.conversation_id,
            seq: self.seq,
            sender_id: self.sender_id,
            content: self.content,
            client_id: self.client_id,
            reply_to_id: self.reply_to_id,
            created_at: Timestamp(self.created_at),
            edited_at: timestamp(self.edited_at),
            deleted_at: timestamp(self.deleted_at),
            version: self.version,
        })
    }
}

/// Runs a cached query and collects every row through `map`.
fn query_all<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    Ok(conn.prepare_cached(sql)?.query_map(params, map)?.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn query_messages(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Message>, StoreError> {
    query_all(conn, sql, params, MessageRow::from_row)?.into_iter().map(MessageRow::into_message).collect()
}

fn message_by_id(conn: &Connection, id: &str) -> Result<Option<Message>, StoreError> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1");
    Ok(query_messages(conn, &sql, [id])?.pop())
}

fn member_from_row(row: &Row<'_>) -> rusqlite::Result<(String, String, i64, i64, bool)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
}

fn into_member(
    (user_id, role, joined_at, last_read_seq, notifications): (String, String, i64, i64, bool),
) -> Result<Member, StoreError> {
    Ok(Member {
        role: Role::parse(&role).ok_or_else(|| unknown_name("role", &role))?,
        user_id,
        joined_at: Timestamp(joined_at),
        last_read_seq,
        notifications,
        shown_notifications: None,
    })
}

/// Makes the longest-standing admin (else member; ties: the first listed) of conversation
/// `?1` its owner when it has members but no owner.
const SUCCESSION: &str = "UPDATE members SET role = 'owner' \
     WHERE conversation_id = ?1 \
     AND NOT EXISTS (SELECT 1 FROM members WHERE conversation_id = ?1 AND role = 'owner') \
     AND user_id = (SELECT user_id FROM members WHERE conversation_id = ?1 \
         ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1)";

/// The members of a conversation, oldest first.
fn load_members(conn: &Connection, conversation_id: &str) -> Result<Vec<Member>, StoreError> {
    conn.prepare_cached(
        "SELECT user_id, role, joined_at, last_read_seq, notifications FROM members \
         WHERE conversation_id = ?1 ORDER BY joined_at, user_id",
    )?
    .query_map([conversation_id], member_from_row)?
    .collect::<rusqlite::Result<Vec<_>>>()?
    .into_iter()
    .map(into_member)
    .collect()
}

/// The user's notification settings; the defaults without a row.
fn load_notification_settings(conn: &Connection, user_id: &str) -> Result<NotificationSettings, StoreError> {
    Ok(conn
        .prepare_cached("SELECT enabled, mentions_when_muted FROM notification_settings WHERE user_id = ?1")?
        .query_row([user_id], |r| {
            Ok(NotificationSettings { enabled: r.get(0)?, mentions_when_muted: r.get(1)? })
        })
        .optional()?
        .unwrap_or_default())
}

/// Loads a conversation with members, last message and `viewer`'s unread count.
fn load_conversation(conn: &Connection, id: &str, viewer: &str) -> Result<Option<Conversation>, StoreError> {
    let head = conn
        .prepare_cached(
            "SELECT type, name, context, metadata, last_seq, last_message_at, created_at, private_preview \
             FROM conversations WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, bool>(7)?,
            ))
        })
        .optional()?;
    let Some((kind, name, context, metadata, last_seq, last_message_at, created_at, private_preview)) = head
    else {
        return Ok(None);
    };
    let members = load_members(conn, id)?;
    let last_message = if last_seq > 0 {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq = ?2");
        query_messages(conn, &sql, params![id, last_seq])?.pop()
    } else {
        None
    };
    let unread_count: i64 = conn
        .prepare_cached("SELECT unread_count FROM members WHERE conversation_id = ?1 AND user_id = ?2")?
        .query_row(params![id, viewer], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    Ok(Some(Conversation {
        id: id.to_owned(),
        kind: ConversationType::parse(&kind).ok_or_else(|| unknown_name("conversation type", &kind))?,
        name,
        context,
        metadata: parse_json(&metadata)?,
        members,
        last_seq,
        last_message,
        last_message_at: timestamp(last_message_at),
        created_at: Timestamp(created_at),
        unread_count,
        private_preview,
    }))
}

fn unread_after(
    conn: &Connection,
    conversation_id: &str,
    user_id: &str,
    last_read_seq: i64,
) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM messages WHERE conversation_id = ?1 AND seq > ?3 \
             AND sender_id <> ?2 AND deleted_at IS NULL",
        )?
        .query_row(params![conversation_id, user_id, last_read_seq], |r| r.get(0))?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await?;
        if self.writer.is_closed() {
            return Err(StoreError::Unavailable("the SQLite writer has stopped".into()));
        }
        Ok(())
    }

    async fn create_conversation(&self, new: NewConversation) -> Result<Created, StoreError> {
        self.write(move |conn| {
            if let Some(key) = &new.direct_key {
                let existing: Option<String> = conn
                    .prepare_cached("SELECT id FROM conversations WHERE direct_key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?;
                if let Some(id) = existing {
                    return Ok(Created { id, created: false });
                }
            }
            let metadata = serde_json::to_string(&new.metadata).map_err(json_error)?;
            let at = new.created_at.millis();
            conn.prepare_cached(
                "INSERT INTO conversations (id, type, name, context, metadata, direct_key, activity_at, created_at, \
                   private_preview) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
            )?
            .execute(params![
                new.id,
                new.kind.as_str(),
                new.name,
                new.context,
                metadata,
                new.direct_key,
                at,
                new.private_preview
            ])?;
            let mut insert = conn.prepare_cached(
                "INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (user_id, role) in &new.members {
                insert.execute(params![new.id, user_id, role.as_str(), at])?;
            }
            Ok(Created { id: new.id, created: true })
        })
        .await
    }

    async fn conversation(&self, id: &str, viewer: &str) -> Result<Option<Conversation>, StoreError> {
        let (id, viewer) = (id.to_owned(), viewer.to_owned());
        self.read(move |conn| load_conversation(conn, &id, &viewer)).await
    }

    async fn membership(&self, conversation_id: &str, user_id: &str) -> Result<Membership, StoreError> {
        let (conversation_id, user_id) = (conversation_id.to_owned(), user_id.to_owned());
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT c.type, m.user_id, m.role, m.joined_at, m.last_read_seq, m.notifications \
                     FROM conversations c LEFT JOIN members m \
                       ON m.conversation_id = c.id AND m.user_id = ?2 \
                     WHERE c.id = ?1",
                )?
                .query_row(params![conversation_id, user_id], |r| {
                    let kind: String = r.get(0)?;
                    let member: Option<String> = r.get(1)?;
                    Ok((
                        kind,
                        member.map(|uid| {
                            Ok::<_, rusqlite::Error>((uid, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                        }),
                    ))
                })
                .optional()?;
            let Some((kind, member)) = row else { return Ok(Membership::NoConversation) };
            let kind =
                ConversationType::parse(&kind).ok_or_else(|| unknown_name("conversation type", &kind))?;
            match member {
                None => Ok(Membership::NotMember),
                Some(fields) => Ok(Membership::Member { member: into_member(fields?)?, kind }),
            }
        })
        .await
    }

    async fn conversations_of(
        &self,
        user_id: &str,
        after: Option<ActivityCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let (after_at, after_id) = match &after {
                Some(c) => (Some(c.activity_at.millis()), Some(c.id.as_str())),
                None => (None, None),
            };
            let ids = conn
                .prepare_cached(
                    "SELECT c.id FROM members m JOIN conversations c ON c.id = m.conversation_id \
                     WHERE m.user_id = ?1 \
                       AND (?2 IS NULL OR c.activity_at < ?2 OR (c.activity_at = ?2 AND c.id < ?3)) \
                     ORDER BY c.activity_at DESC, c.id DESC LIMIT ?4",
                )?
                .query_map(params![user_id, after_at, after_id, limit as i64], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut conversations = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(c) = load_conversation(conn, &id, &user_id)? {
                    conversations.push(c);
                }
            }
            Ok(conversations)
        })
        .await
    }

    async fn update_conversation(&self, id: &str, update: ConversationUpdate) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let metadata =
                update.metadata.map(|m| serde_json::to_string(&m)).transpose().map_err(json_error)?;
            let changed = conn
                .prepare_cached(
                    "UPDATE conversations SET name = COALESCE(?2, name), metadata = COALESCE(?3, metadata), \
                       private_preview = COALESCE(?4, private_preview) \
                     WHERE id = ?1",
                )?
                .execute(params![id, update.name, metadata, update.private_preview])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn add_members(
        &self,
        conversation_id: &str,
        user_ids: Vec<String>,
        role: Role,
        joined_at: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let conversation_id = conversation_id.to_owned();
        self.write(move |conn| {
            let mut insert = conn.prepare_cached(
                "INSERT INTO members (conversation_id, user_id, role, joined_at, last_read_seq) \
                 VALUES (?1, ?2, ?3, ?4, (SELECT last_seq FROM conversations WHERE id = ?1)) \
                 ON CONFLICT DO NOTHING",
            )?;
            let mut added = Vec::new();
            for user_id in user_ids {
                if insert.execute(params![conversation_id, user_id, role.as_str(), joined_at.millis()])? == 1
                {
                    added.push(user_id);
                }
            }
            Ok(added)
        })
        .await
    }

    async fn remove_member(&self, conversation_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let (conversation_id, user_id) = (conversation_id.to_owned(), user_id.to_owned());
        // The one writer runs this whole: no other change of the members interleaves.
        self.write(move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM members WHERE conversation_id = ?1 AND user_id = ?2")?
                .execute(params![conversation_id, user_id])?;
            conn.prepare_cached(SUCCESSION)?.execute(params![conversation_id])?;
            Ok(removed == 1)
        })
        .await
    }

    async fn append_message(
        &self,
        new: NewMessage,
        on_commit: CommitHook,
    ) -> Result<AppendOutcome, StoreError> {
        self.submit(Touches::Append, move |conn, appends| appends.append(conn, new), Some(on_commit)).await
    }

    async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| message_by_id(conn, &id)).await
    }

    async fn edit_message(
        &self,
        id: &str,
        content: String,
        at: Timestamp,
    ) -> Result<Option<Message>, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE messages SET content = ?2, edited_at = ?3, version = version + 1 \
                     WHERE id = ?1 AND deleted_at IS NULL",
                )?
                .execute(params![id, content, at.millis()])?;
            if changed == 0 {
                return Ok(None);
            }
            message_by_id(conn, &id)
        })
        .await
    }

    async fn delete_message(&self, id: &str, at: Timestamp) -> Result<Option<(Message, bool)>, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached(
                    "UPDATE messages SET content = NULL, attachments = '[]', metadata = '{}', deleted_at = ?2, \
                     version = version + 1 WHERE id = ?1 AND deleted_at IS NULL",
                )?
                .execute(params![id, at.millis()])?;
            let message = message_by_id(conn, &id)?;
            if let (1, Some(m)) = (deleted, &message) {
                // It no longer counts as unread for those who had not read it.
                conn.prepare_cached(
                    "UPDATE members SET unread_count = unread_count - 1 \
                     WHERE conversation_id = ?1 AND user_id <> ?2 AND last_read_seq < ?3 AND unread_count > 0",
                )?
                .execute(params![m.conversation_id, m.sender_id, m.seq])?;
            }
            Ok(message.map(|m| (m, deleted == 1)))
        })
        .await
    }

    async fn messages(
        &self,
        conversation_id: &str,
        range: HistoryRange,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let conversation_id = conversation_id.to_owned();
        self.read(move |conn| {
            let after = range.after_seq.unwrap_or(0);
            let before = range.before_seq.unwrap_or(i64::MAX);
            let fetch = range.limit as i64 + 1;
            let mut messages = if range.after_seq.is_some() {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND seq < ?3 \
                     ORDER BY seq ASC LIMIT ?4"
                );
                query_messages(conn, &sql, params![conversation_id, after, before, fetch])?
            } else {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND seq < ?3 \
                     ORDER BY seq DESC LIMIT ?4"
                );
                query_messages(conn, &sql, params![conversation_id, after, before, fetch])?
            };
            let has_more = messages.len() > range.limit;
            messages.truncate(range.limit);
            if range.after_seq.is_none() {
                messages.reverse();
            }
            Ok((messages, has_more))
        })
        .await
    }

    async fn mark_read(
        &self,
        conversation_id: &str,
        user_id: &str,
        seq: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let (conversation_id, user_id) = (conversation_id.to_owned(), user_id.to_owned());
        self.write(move |conn| {
            let before: Option<i64> = conn
                .prepare_cached(
                    "SELECT last_read_seq FROM members WHERE conversation_id = ?1 AND user_id = ?2",
                )?
                .query_row(params![conversation_id, user_id], |r| r.get(0))
                .optional()?;
            let Some(before) = before else { return Ok(None) };
            let last_read_seq: Option<i64> = conn
                .prepare_cached(
                    "UPDATE members SET last_read_seq = max(last_read_seq, \
                       min(?3, (SELECT last_seq FROM conversations WHERE id = ?1))) \
                     WHERE conversation_id = ?1 AND user_id = ?2 RETURNING last_read_seq",
                )?
                .query_row(params![conversation_id, user_id, seq], |r| r.get(0))
                .optional()?;
            if let Some(last_read_seq) = last_read_seq.filter(|after| *after > before) {
                // Recount what is left after the marker: usually nothing, read to the end.
                let unread = unread_after(conn, &conversation_id, &user_id, last_read_seq)?;
                conn.prepare_cached(
                    "UPDATE members SET unread_count = ?3 WHERE conversation_id = ?1 AND user_id = ?2",
                )?
                .execute(params![conversation_id, user_id, unread])?;
            }
            Ok(last_read_seq.map(|after| (before, after)))
        })
        .await
    }

    async fn set_notifications(
        &self,
        conversation_id: &str,
        user_id: &str,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        let (conversation_id, user_id) = (conversation_id.to_owned(), user_id.to_owned());
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE members SET notifications = ?3 WHERE conversation_id = ?1 AND user_id = ?2",
                )?
                .execute(params![conversation_id, user_id, enabled])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn notification_settings(&self, user_id: &str) -> Result<NotificationSettings, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| load_notification_settings(conn, &user_id)).await
    }

    async fn update_notification_settings(
        &self,
        user_id: &str,
        update: NotificationSettingsUpdate,
    ) -> Result<NotificationSettings, StoreError> {
        let user_id = user_id.to_owned();
        self.write_apart(move |conn| {
            let current = load_notification_settings(conn, &user_id)?;
            let settings = NotificationSettings {
                enabled: update.enabled.unwrap_or(current.enabled),
                mentions_when_muted: update.mentions_when_muted.unwrap_or(current.mentions_when_muted),
            };
            conn.prepare_cached(
                "INSERT INTO notification_settings (user_id, enabled, mentions_when_muted) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (user_id) DO UPDATE SET enabled = ?2, mentions_when_muted = ?3",
            )?
            .execute(params![user_id, settings.enabled, settings.mentions_when_muted])?;
            Ok(settings)
        })
        .await
    }

    async fn unread_counts(&self, user_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT conversation_id, unread_count FROM members WHERE user_id = ?1 AND unread_count > 0",
                [&user_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    async fn conversation_heads(&self, user_id: &str) -> Result<Vec<ConversationHead>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT c.id, c.last_seq FROM members m JOIN conversations c ON c.id = m.conversation_id \
                     WHERE m.user_id = ?1 ORDER BY c.id",
                [&user_id],
                |r| Ok(ConversationHead { id: r.get(0)?, last_seq: r.get(1)? }),
            )
        })
        .await
    }

    async fn contacts(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT DISTINCT other.user_id FROM members mine \
                     JOIN members other ON other.conversation_id = mine.conversation_id \
                     WHERE mine.user_id = ?1 AND other.user_id <> ?1 \
                       AND NOT EXISTS (SELECT 1 FROM blocks b \
                         WHERE (b.blocker_id = ?1 AND b.blocked_id = other.user_id) \
                            OR (b.blocker_id = other.user_id AND b.blocked_id = ?1))",
                [&user_id],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn enqueue_push_delayed(&self, jobs: Vec<PushJob>, delay: Duration) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.write_apart(move |conn| {
            let mut insert = conn.prepare_cached(
                "INSERT INTO push_jobs (id, user_id, conversation_id, message_id, seq, created_at, next_attempt_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for job in jobs {
                insert.execute(params![
                    job.id,
                    job.user_id,
                    job.conversation_id,
                    job.message_id,
                    job.seq,
                    job.created_at.millis(),
                    job.created_at.plus(delay).millis()
                ])?;
            }
            Ok(())
        })
        .await?;
        self.push_enqueued.notify_one();
        Ok(())
    }

    async fn push_enqueued(&self) {
        self.push_enqueued.notified().await
    }

    async fn newer_push_job(&self, job: &PushJob) -> Result<bool, StoreError> {
        let (user, conversation, seq) = (job.user_id.clone(), job.conversation_id.clone(), job.seq);
        self.read(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT 1 FROM push_jobs WHERE user_id = ?1 AND conversation_id = ?2 AND seq > ?3 \
                     AND finished_at IS NULL LIMIT 1",
                )?
                .exists(params![user, conversation, seq])?;
            Ok(found)
        })
        .await
    }

    async fn pending_push_jobs(&self, limit: usize) -> Result<Vec<PushJob>, StoreError> {
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT id, user_id, conversation_id, message_id, seq, created_at FROM push_jobs \
                     WHERE finished_at IS NULL ORDER BY id LIMIT ?1",
                [limit as i64],
                |r| {
                    Ok(PushJob {
                        id: r.get(0)?,
                        user_id: r.get(1)?,
                        conversation_id: r.get(2)?,
                        message_id: r.get(3)?,
                        seq: r.get(4)?,
                        created_at: Timestamp(r.get(5)?),
                    })
                },
            )
        })
        .await
    }

    async fn push_outbox_depth(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            let depth: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM push_jobs WHERE finished_at IS NULL")?
                .query_row([], |row| row.get(0))?;
            Ok(u64::try_from(depth).unwrap_or(0))
        })
        .await
    }

    async fn claim_push_jobs(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedPushJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The one writer runs claims one at a time, so no two can take the same job.
        self.write_apart(move |conn| {
            let now = Timestamp::now();
            let leased_until = now.plus(lease);
            let mut claimed = query_all(
                conn,
                "UPDATE push_jobs SET next_attempt_at = ?1, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM push_jobs \
                     WHERE finished_at IS NULL AND next_attempt_at <= ?2 \
                     ORDER BY next_attempt_at, id LIMIT ?3) \
                 RETURNING id, user_id, conversation_id, message_id, seq, created_at, attempts, last_error",
                params![leased_until.millis(), now.millis(), i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok((
                        PushJob {
                            id: r.get(0)?,
                            user_id: r.get(1)?,
                            conversation_id: r.get(2)?,
                            message_id: r.get(3)?,
                            seq: r.get(4)?,
                            created_at: Timestamp(r.get(5)?),
                        },
                        r.get::<_, i64>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                },
            )?
            .into_iter()
            .map(|(job, attempts, last_error)| {
                let attempt = u32::try_from(attempts).map_err(|_| {
                    StoreError::Backend(format!("push job {} has {attempts} attempts", job.id).into())
                })?;
                Ok(ClaimedPushJob { job, attempt, leased_until, last_error })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            claimed.sort_by(|a, b| a.job.id.cmp(&b.job.id));
            Ok(claimed)
        })
        .await
    }

    async fn push_job_held(&self, id: &str, attempt: u32) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            let held = conn
                .prepare_cached(
                    "SELECT 1 FROM push_jobs \
                     WHERE id = ?1 AND attempts = ?2 AND finished_at IS NULL AND next_attempt_at > ?3",
                )?
                .exists(params![id, attempt, Timestamp::now().millis()])?;
            Ok(held)
        })
        .await
    }

    async fn complete_push_job(&self, id: &str, attempt: u32) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write_apart(move |conn| {
            let now = Timestamp::now().millis();
            let changed = conn
                .prepare_cached(
                    "UPDATE push_jobs SET sent_at = ?2, finished_at = ?2 \
                     WHERE id = ?1 AND attempts = ?3 AND finished_at IS NULL",
                )?
                .execute(params![id, now, attempt])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn retry_push_job(
        &self,
        id: &str,
        attempt: u32,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<bool, StoreError> {
        let (id, error) = (id.to_owned(), clip_push_error(error).to_owned());
        self.write_apart(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE push_jobs SET next_attempt_at = ?2, last_error = ?3 \
                     WHERE id = ?1 AND attempts = ?4 AND finished_at IS NULL",
                )?
                .execute(params![id, next_attempt_at.millis(), error, attempt])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn drop_push_job(&self, id: &str, attempt: u32, reason: &str) -> Result<bool, StoreError> {
        let (id, reason) = (id.to_owned(), clip_push_error(reason).to_owned());
        self.write_apart(move |conn| {
            let now = Timestamp::now().millis();
            let changed = conn
                .prepare_cached(
                    "UPDATE push_jobs SET finished_at = ?2, last_error = ?3 \
                     WHERE id = ?1 AND attempts = ?4 AND finished_at IS NULL",
                )?
                .execute(params![id, now, reason, attempt])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn prune_push_jobs(&self, finished_before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        self.write_apart(move |conn| {
            Ok(conn
                .prepare_cached(
                    "DELETE FROM push_jobs WHERE id IN (SELECT id FROM push_jobs \
                     WHERE finished_at < ?1 ORDER BY finished_at LIMIT ?2)",
                )?
                .execute(params![finished_before.millis(), i64::try_from(limit).unwrap_or(i64::MAX)])?)
        })
        .await
    }

    async fn record_notifications(
        &self,
        notifications: Vec<NewNotification>,
        keep: usize,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        if notifications.is_empty() {
            return Ok(Vec::new());
        }
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        self.write_apart(move |conn| {
            // The writer is the only writer: bumping the counter and inserting in one job
            // commits ids in order.
            let mut bump = conn.prepare_cached(
                "UPDATE notification_counters SET last_id = last_id + 1 WHERE user_id = ?1 RETURNING last_id",
            )?;
            let mut insert = conn.prepare_cached(
                "INSERT INTO notifications (user_id, id, conversation_id, message_id, seq, sender_id, \
                 preview, unread_count, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut trim =
                conn.prepare_cached("DELETE FROM notifications WHERE user_id = ?1 AND id <= ?2")?;
            let mut ids = Vec::with_capacity(notifications.len());
            for new in notifications {
                // No counter: the user's log is not open.
                let Some(id) = bump.query_row(params![new.user_id], |r| r.get::<_, i64>(0)).optional()?
                else {
                    ids.push(None);
                    continue;
                };
                let n = &new.notification;
                insert.execute(params![
                    new.user_id,
                    id,
                    n.conversation_id,
                    n.message_id,
                    n.seq,
                    n.sender_id,
                    n.preview,
                    n.unread_count,
                    new.created_at.millis()
                ])?;
                if id > keep {
                    trim.execute(params![new.user_id, id - keep])?;
                }
                ids.push(Some(id));
            }
            Ok(ids)
        })
        .await
    }

    async fn notifications_after(
        &self,
        user_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let user_id = user_id.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT id, conversation_id, message_id, seq, sender_id, preview, unread_count \
                 FROM notifications WHERE user_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                params![user_id, after, limit],
                |r| {
                    Ok(Notification {
                        id: Some(r.get(0)?),
                        kind: "message",
                        conversation_id: r.get(1)?,
                        message_id: r.get(2)?,
                        seq: r.get(3)?,
                        sender_id: r.get(4)?,
                        preview: r.get(5)?,
                        unread_count: r.get(6)?,
                    })
                },
            )
        })
        .await
    }

    async fn open_notification_log(&self, user_id: &str) -> Result<i64, StoreError> {
        let user_id = user_id.to_owned();
        // Appends cache whether each member has a log: opening one drops that cache.
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO notification_counters (user_id, last_id) VALUES (?1, 0) ON CONFLICT (user_id) DO NOTHING",
            )?
            .execute([&user_id])?;
            Ok(conn
                .prepare_cached("SELECT last_id FROM notification_counters WHERE user_id = ?1")?
                .query_row([&user_id], |r| r.get(0))?)
        })
        .await
    }

    async fn latest_notification_id(&self, user_id: &str) -> Result<i64, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT last_id FROM notification_counters WHERE user_id = ?1")?
                .query_row([&user_id], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    async fn prune_notifications(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        self.write_apart(move |conn| {
            Ok(conn
                .prepare_cached(
                    "DELETE FROM notifications WHERE (user_id, id) IN (SELECT user_id, id FROM notifications \
                     WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
                )?
                .execute(params![before.millis(), i64::try_from(limit).unwrap_or(i64::MAX)])?)
        })
        .await
    }

    async fn upsert_device(&self, device: NewDevice, max_per_user: usize) -> Result<Device, StoreError> {
        self.write(move |conn| {
            let keys = device.keys.as_ref().map(serde_json::to_string).transpose().map_err(json_error)?;
            let id: String = conn
                .prepare_cached(
                    "INSERT INTO devices (id, user_id, platform, token, endpoint, keys, created_at, refreshed_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) \
                     ON CONFLICT (user_id, platform, token) DO UPDATE SET endpoint = ?5, keys = ?6, refreshed_at = ?7 \
                     RETURNING id",
                )?
                .query_row(
                    params![
                        device.id,
                        device.user_id,
                        device.platform.as_str(),
                        device.token,
                        device.endpoint,
                        keys,
                        device.created_at.millis()
                    ],
                    |r| r.get(0),
                )?;
            // The writer is the only one: nothing registers a device between these statements.
            conn.prepare_cached(
                "DELETE FROM devices WHERE user_id = ?1 AND id <> ?2 AND id NOT IN (\
                 SELECT id FROM devices WHERE user_id = ?1 AND id <> ?2 \
                 ORDER BY refreshed_at DESC, id DESC LIMIT ?3)",
            )?
            .execute(params![device.user_id, id, i64::try_from(max_per_user.saturating_sub(1)).unwrap_or(i64::MAX)])?;
            load_devices(conn, &device.user_id, Some(&id))?
                .pop()
                .ok_or_else(|| StoreError::Backend("the device just written is missing".into()))
        })
        .await
    }

    async fn devices(&self, user_id: &str) -> Result<Vec<Device>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| load_devices(conn, &user_id, None)).await
    }

    async fn remove_device(&self, user_id: &str, device_id: &str) -> Result<bool, StoreError> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM devices WHERE id = ?1 AND user_id = ?2")?
                .execute(params![device_id, user_id])?;
            Ok(removed == 1)
        })
        .await
    }

    async fn all_conversations(
        &self,
        after: Option<ActivityCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.read(move |conn| {
            let (after_at, after_id) = match &after {
                Some(c) => (Some(c.activity_at.millis()), Some(c.id.as_str())),
                None => (None, None),
            };
            let ids = conn
                .prepare_cached(
                    "SELECT id FROM conversations \
                     WHERE (?1 IS NULL OR activity_at < ?1 OR (activity_at = ?1 AND id < ?2)) \
                     ORDER BY activity_at DESC, id DESC LIMIT ?3",
                )?
                .query_map(params![after_at, after_id, limit as i64], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut conversations = Vec::with_capacity(ids.len());
            for id in ids {
                // No member has an empty id, so the unread count is nobody's: 0.
                if let Some(c) = load_conversation(conn, &id, "")? {
                    conversations.push(c);
                }
            }
            Ok(conversations)
        })
        .await
    }

    async fn ban_user(
        &self,
        user_id: &str,
        reason: Option<String>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let user_id = user_id.to_owned();
        self.write_apart(move |conn| {
            let existed = conn.prepare_cached("SELECT 1 FROM bans WHERE user_id = ?1")?.exists([&user_id])?;
            conn.prepare_cached(
                "INSERT INTO bans (user_id, reason, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (user_id) DO UPDATE SET reason = excluded.reason",
            )?
            .execute(params![user_id, reason, at.millis()])?;
            Ok(!existed)
        })
        .await
    }

    async fn unban_user(&self, user_id: &str) -> Result<bool, StoreError> {
        let user_id = user_id.to_owned();
        self.write_apart(move |conn| {
            Ok(conn.prepare_cached("DELETE FROM bans WHERE user_id = ?1")?.execute([&user_id])? == 1)
        })
        .await
    }

    async fn banned_users(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| query_all(conn, "SELECT user_id FROM bans ORDER BY user_id", [], |r| r.get(0))).await
    }

    async fn mark_disconnected(&self, user_id: &str, at: Timestamp) -> Result<(), StoreError> {
        let user_id = user_id.to_owned();
        self.write_apart(move |conn| {
            conn.prepare_cached(
                "INSERT INTO disconnects (user_id, at) VALUES (?1, ?2) \
                 ON CONFLICT (user_id) DO UPDATE SET at = max(at, excluded.at)",
            )?
            .execute(params![user_id, at.millis()])?;
            conn.prepare_cached("DELETE FROM disconnects WHERE at < ?1")?
                .execute([at.minus(DISCONNECT_MARKS_KEPT).millis()])?;
            Ok(())
        })
        .await
    }

    async fn disconnected_since(&self, since: Timestamp) -> Result<Vec<(String, Timestamp)>, StoreError> {
        self.read(move |conn| {
            query_all(conn, "SELECT user_id, at FROM disconnects WHERE at >= ?1", [since.millis()], |r| {
                Ok((r.get(0)?, Timestamp(r.get(1)?)))
            })
        })
        .await
    }

    async fn block_user(&self, blocker: &str, blocked: &str, at: Timestamp) -> Result<bool, StoreError> {
        let (blocker, blocked) = (blocker.to_owned(), blocked.to_owned());
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![blocker, blocked, at.millis()])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn unblock_user(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        let (blocker, blocked) = (blocker.to_owned(), blocked.to_owned());
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2")?
                .execute(params![blocker, blocked])?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn blocks_of(&self, blocker: &str) -> Result<Vec<Block>, StoreError> {
        let blocker = blocker.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT blocked_id, created_at FROM blocks WHERE blocker_id = ?1 ORDER BY created_at, blocked_id",
                [&blocker],
                |r| Ok(Block { user_id: r.get(0)?, created_at: Timestamp(r.get(1)?) }),
            )
        })
        .await
    }

    async fn blocked_among(&self, user_id: &str, others: &[String]) -> Result<Vec<String>, StoreError> {
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let (user_id, others) = (user_id.to_owned(), others.to_vec());
        self.read(move |conn| {
            let mut either_way = conn.prepare_cached(
                "SELECT 1 FROM blocks WHERE (blocker_id = ?1 AND blocked_id = ?2) \
                                         OR (blocker_id = ?2 AND blocked_id = ?1)",
            )?;
            let mut blocked = Vec::new();
            for other in others {
                if either_way.exists(params![user_id, other])? {
                    blocked.push(other);
                }
            }
            Ok(blocked)
        })
        .await
    }
}

/// The user's devices (only `only_id`, if given), oldest first.
fn load_devices(conn: &Connection, user_id: &str, only_id: Option<&str>) -> Result<Vec<Device>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT id, platform, token, endpoint, keys, created_at FROM devices \
             WHERE user_id = ?1 AND (?2 IS NULL OR id = ?2) ORDER BY id",
        )?
        .query_map(params![user_id, only_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, platform, token, endpoint, keys, created_at)| {
            Ok(Device {
                id,
                platform: Platform::parse(&platform).ok_or_else(|| unknown_name("platform", &platform))?,
                token,
                endpoint,
                keys: keys.as_deref().map(parse_json).transpose()?,
                created_at: Timestamp(created_at),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job<T: Send + 'static>(
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<T, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let work = move |conn: &Connection, _: &mut Appends| work(conn);
        let job =
            Job { touches: Touches::AppendState, work: Some(work), result: None, on_commit: None, reply };
        (Box::new(job), answer)
    }

    fn database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("t.db")).expect("open");
        migrate(&mut conn).expect("migrate");
        conn.execute(
            "INSERT INTO conversations (id, type, activity_at, created_at) VALUES ('c', 'group', 0, 0)",
            [],
        )
        .expect("conversation");
        (dir, conn)
    }

    fn bump(conn: &Connection) -> Result<i64, StoreError> {
        Ok(conn.query_row(
            "UPDATE conversations SET last_seq = last_seq + 1 RETURNING last_seq",
            [],
            |r| r.get(0),
        )?)
    }

    fn run(conn: &mut Connection, mut batch: Vec<Box<dyn WriteJob>>) -> Result<(), String> {
        let commit = commit_batch(conn, &mut batch, &mut Appends::default());
        settle_and_answer(batch, &commit);
        commit
    }

    #[test]
    fn a_batch_publishes_what_its_hooks_published_as_one_bus_message() {
        use crate::bus::local::LocalBus;
        use crate::core::ports::Bus;
        use crate::core::realtime::BusMessage;

        let (_dir, conn) = database();
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
        let mut feed = bus.subscribe();
        let mut batch = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..3 {
            let (reply, answer) = oneshot::channel();
            let (bus, published) = (bus.clone(), std::sync::mpsc::channel());
            let hook: OnCommit<i64> = Box::new(move |seq, publications| {
                publications.push(&bus, BusMessage::Gap);
                let _ = published.0.send(*seq);
            });
            let work = |conn: &Connection, _: &mut Appends| bump(conn);
            batch.push(Box::new(Job {
                touches: Touches::AppendState,
                work: Some(work),
                result: None,
                on_commit: Some(hook),
                reply,
            }) as Box<dyn WriteJob>);
            answers.push((answer, published.1));
        }
        let commit = commit_batch(&conn, &mut batch, &mut Appends::default());
        assert!(commit.is_ok());
        std::thread::spawn(move || settle_and_answer(batch, &commit)).join().expect("settled");
        match feed.try_recv().expect("one bus message").as_ref() {
            BusMessage::Batch(messages) => assert_eq!(messages.len(), 3, "the three hooks' messages"),
            other => panic!("expected one batch, got {other:?}"),
        }
        assert!(feed.try_recv().is_err(), "nothing else was published");
        for (n, (mut answer, hooked)) in answers.into_iter().enumerate() {
            assert_eq!(answer.try_recv().expect("answered").expect("committed"), n as i64 + 1);
            assert_eq!(hooked.recv().expect("hook ran"), n as i64 + 1, "hooks ran in commit order");
        }
    }

    #[test]
    fn a_job_failing_before_it_writes_leaves_its_batch_mates_committed() {
        let (_dir, mut conn) = database();
        let (first, first_answer) = job(bump);
        let (failing, failing_answer) = job(|_: &Connection| -> Result<(), StoreError> {
            Err(StoreError::Backend("refused before writing".into()))
        });
        let (second, second_answer) = job(bump);
        assert!(run(&mut conn, vec![first, failing, second]).is_ok());
        assert_eq!(first_answer.blocking_recv().expect("answer").expect("first"), 1);
        assert!(failing_answer.blocking_recv().expect("answer").is_err());
        assert_eq!(second_answer.blocking_recv().expect("answer").expect("second"), 2);
    }

    #[test]
    fn a_job_failing_after_it_wrote_rolls_back_the_whole_batch() {
        let (_dir, mut conn) = database();
        let (first, first_answer) = job(bump);
        let (failing, _) = job(|conn: &Connection| -> Result<(), StoreError> {
            bump(conn)?;
            Err(StoreError::Backend("failed midway".into()))
        });
        assert!(run(&mut conn, vec![first, failing]).is_err());
        assert!(first_answer.blocking_recv().expect("answer").is_err(), "nothing uncommitted is acked");
        let last_seq: i64 =
            conn.query_row("SELECT last_seq FROM conversations", [], |r| r.get(0)).expect("read");
        assert_eq!(last_seq, 0, "no seq was consumed");
    }
}
