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
use crate::core::model::{
    Block, Conversation, ConversationStatus, ConversationType, Device, Member, Message, MessageType,
    NotificationSettings, Platform, ReactionRef, Role, ThreadSummary,
};
use crate::core::ports::{
    ActivityCursor, AppendOutcome, ClaimedPushJob, CommitHook, ConversationStore, ConversationUpdate,
    Created, DISCONNECT_MARKS_KEPT, DeviceStore, HistoryRange, MemberStore, Membership, MessageStore,
    ModerationStore, NewConversation, NewDevice, NewMessage, NewNotification, NotificationStore,
    Publications, PushJob, PushOutbox, Store, clip_push_error,
};
use crate::core::requests::NotificationSettingsUpdate;
use crate::core::server_events::{ConversationHead, Notification, NotificationKind};
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
    include_str!("../../../migrations/sqlite/0001_init.sql"),
    include_str!("../../../migrations/sqlite/0002_push.sql"),
    include_str!("../../../migrations/sqlite/0003_push_claims.sql"),
    include_str!("../../../migrations/sqlite/0004_notifications.sql"),
    include_str!("../../../migrations/sqlite/0005_notification_settings.sql"),
    include_str!("../../../migrations/sqlite/0006_bans_blocks.sql"),
    include_str!("../../../migrations/sqlite/0007_device_refresh.sql"),
    include_str!("../../../migrations/sqlite/0008_message_version.sql"),
    include_str!("../../../migrations/sqlite/0009_disconnects.sql"),
    include_str!("../../../migrations/sqlite/0010_uploads.sql"),
    include_str!("../../../migrations/sqlite/0011_search.sql"),
    include_str!("../../../migrations/sqlite/0012_reactions_threads_pins.sql"),
    include_str!("../../../migrations/sqlite/0013_conversation_states.sql"),
];

/// The columns [`MessageRow::from_row`] reads, as a literal (for `concat!`).
macro_rules! message_columns {
    () => {
        "id, conversation_id, seq, sender_id, type, content, client_id, \
         reply_to_id, attachments, metadata, created_at, edited_at, deleted_at, version, revision, \
         thread_id, also_in_conversation, reply_count, last_reply_at, thread_participants, mentions, \
         mentions_all, reaction_counts, latest_reactions, pinned_at, pinned_by"
    };
}

const MESSAGE_COLUMNS: &str = message_columns!();

mod annotations;
mod appends;
mod conversations;
mod devices;
mod members;
mod messages;
mod moderation;
mod notifications;
mod push_outbox;
mod rows;
mod search;
mod threads;
mod uploads;

use rows::*;

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

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await?;
        if self.writer.is_closed() {
            return Err(StoreError::Unavailable("the SQLite writer has stopped".into()));
        }
        Ok(())
    }
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
        use crate::core::ports::BusMessage;

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
