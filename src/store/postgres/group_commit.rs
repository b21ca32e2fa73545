//! Group commit of appends on PostgreSQL.
//!
//! One writer task per store (per node) takes every pending append (up to [`MAX_GROUP`]) and
//! writes them in one transaction with four round trips, whatever the group's size:
//!
//! 1. `BEGIN`;
//! 2. pipelined: lock the group's conversation rows (`FOR NO KEY UPDATE`, ordered by id, so groups
//!    of several nodes never deadlock) and read their `last_seq`; check every job at once
//!    (membership, blocks, the replied-to message, an earlier message with its `client_id`)
//!    over `unnest` arrays; read the members of those conversations;
//! 3. pipelined: bump each conversation's `last_seq` by its number of accepted messages, insert
//!    the accepted messages, add to the members' unread counts (all three multi-row);
//! 4. `COMMIT`.
//!
//! Seqs are assigned in submission order and are gap-free per conversation: the conversation
//! row stays locked from step 2 to the commit, and every other write that changes members or
//! seqs locks it first. A refused job (no conversation, not a member, blocked, reply not
//! found, a `client_id` repeat — of a committed message or of an earlier job of the same
//! group) writes nothing and leaves its group-mates alone. If the transaction fails as a
//! whole (deadlock, serialization failure, lost connection, or a job whose input PostgreSQL
//! rejects), it is retried and then replayed one job at a time, so one bad job never fails
//! the others. Commit hooks run on the writer task after the commit, in submission order
//! (and so in seq order per conversation); what they publish leaves as one bus message per
//! group, and only then are the callers answered. The writer owns
//! each job once it is queued, so a cancelled caller's append still completes and hooks.
//! Meanwhile the next group gathers: no timer, a lone append is written at once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::{Json, ToSql};

use super::{MESSAGE_COLUMNS, annotations, get, member_at, message_at, pool_error};
use crate::core::error::StoreError;
use crate::core::model::{ConversationStatus, Message, MessageType};
use crate::core::ports::{AppendOutcome, CommitHook, NewMessage, Publications, Recipient, ThreadReply};
use crate::core::time::Timestamp;
use crate::store::append_rules::{self, AppendFacts, Verdict};
use crate::tasks::Tasks;

/// Most appends written in one transaction.
pub const MAX_GROUP: usize = 512;
/// Appends that may wait for the writer before callers are slowed down.
const QUEUE: usize = 8192;
/// How often a whole group is tried again after a deadlock, serialization failure or lost
/// connection, before it is replayed one append at a time.
const GROUP_RETRIES: usize = 1;
/// How often one append alone is tried again after such a failure.
const SINGLE_RETRIES: usize = 3;

/// An append waiting for its group.
struct AppendJob {
    new: NewMessage,
    on_commit: CommitHook,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// The handle callers queue appends through; the writer task stops once it is dropped.
pub(super) struct AppendQueue {
    jobs: mpsc::Sender<AppendJob>,
}

impl AppendQueue {
    /// Starts the writer as one of `tasks`.
    pub(super) fn start(pool: Pool, tasks: &Tasks) -> AppendQueue {
        let (jobs, pending) = mpsc::channel(QUEUE);
        tasks.spawn("postgres group writer", run_writer(pool, pending));
        AppendQueue { jobs }
    }

    /// Queues an append and waits for its outcome; `on_commit` runs first, on the writer.
    /// Once queued (the first poll, unless the queue is full), the append completes even if
    /// this future is dropped.
    pub(super) async fn append(
        &self,
        new: NewMessage,
        on_commit: CommitHook,
    ) -> Result<AppendOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the PostgreSQL append writer has stopped".into());
        self.jobs.send(AppendJob { new, on_commit, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer: one group in flight at a time; what arrives meanwhile is the next group.
async fn run_writer(pool: Pool, mut pending: mpsc::Receiver<AppendJob>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while pending.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (news, waiting): (Vec<NewMessage>, Vec<_>) =
            group.drain(..).map(|job| (job.new, (job.on_commit, job.reply))).unzip();
        let outcomes = write_group(&pool, news).await;
        let mut publications = Publications::default();
        let mut replies = Vec::with_capacity(outcomes.len());
        for ((on_commit, reply), outcome) in waiting.into_iter().zip(outcomes) {
            if let Ok(outcome) = &outcome {
                on_commit(outcome, &mut publications);
            }
            replies.push((reply, outcome));
        }
        publications.publish();
        for (reply, outcome) in replies {
            let _ = reply.send(outcome);
        }
    }
}

/// Why a group's transaction failed, and whether trying it again may help.
struct GroupFailure {
    error: StoreError,
    /// A deadlock, serialization failure or lost connection: nothing wrong with the jobs.
    transient: bool,
}

impl From<tokio_postgres::Error> for GroupFailure {
    fn from(err: tokio_postgres::Error) -> Self {
        // 40001: serialization failure; 40P01: deadlock detected.
        let transient =
            err.is_closed() || err.code().is_some_and(|state| matches!(state.code(), "40001" | "40P01"));
        GroupFailure { error: err.into(), transient }
    }
}

impl From<StoreError> for GroupFailure {
    fn from(error: StoreError) -> Self {
        let transient = matches!(error, StoreError::Unavailable(_));
        GroupFailure { error, transient }
    }
}

/// Writes a group and returns one outcome per job, in order: the whole group in one
/// transaction (tried again after a transient failure), else one job at a time.
async fn write_group(pool: &Pool, news: Vec<NewMessage>) -> Vec<Result<AppendOutcome, StoreError>> {
    if news.len() == 1 {
        let decision = attempt(pool, &news, SINGLE_RETRIES).await.and_then(only);
        let outcome = decision.map(|decision| settle_one(news, decision));
        return vec![outcome];
    }
    let error = match attempt(pool, &news, GROUP_RETRIES).await {
        Ok(decisions) => return settle(news, decisions).into_iter().map(Ok).collect(),
        Err(error) => error,
    };
    tracing::warn!(%error, jobs = news.len(), "a group of appends failed; writing them one at a time");
    let mut outcomes = Vec::with_capacity(news.len());
    for new in news {
        let decision = attempt(pool, std::slice::from_ref(&new), SINGLE_RETRIES).await.and_then(only);
        outcomes.push(decision.map(|decision| settle_one(vec![new], decision)));
    }
    outcomes
}

/// [`try_group`], tried again up to `retries` times while it fails transiently.
async fn attempt(pool: &Pool, news: &[NewMessage], retries: usize) -> Result<Vec<Decision>, StoreError> {
    let mut tries = 0;
    loop {
        match try_group(pool, news).await {
            Ok(decisions) => return Ok(decisions),
            Err(GroupFailure { transient: true, .. }) if tries < retries => tries += 1,
            Err(failure) => return Err(failure.error),
        }
    }
}

/// The decision of a group of one.
fn only(mut decisions: Vec<Decision>) -> Result<Decision, StoreError> {
    match (decisions.pop(), decisions.is_empty()) {
        (Some(decision), true) => Ok(decision),
        _ => Err(StoreError::Backend("a group of one append got no single decision".into())),
    }
}

/// [`settle`] for a group of one job.
fn settle_one(news: Vec<NewMessage>, decision: Decision) -> AppendOutcome {
    // A group of one has no earlier job to repeat, so this is never `RepeatOf`.
    settle(news, vec![decision]).pop().unwrap_or(AppendOutcome::NoConversation)
}

/// What became of one job of a committed group.
enum Decision {
    /// Written with this seq; the recipients with their unread counts after it.
    Committed {
        seq: i64,
        created_at: Timestamp,
        recipients: Vec<Recipient>,
        /// The mentions kept (members other than the sender).
        mentions: Vec<String>,
        /// For a thread reply, its root and followers after it (filled in after the writes).
        thread: Option<Box<ThreadReply>>,
    },
    /// The same `client_id` as the earlier job at this index of the group, which committed.
    RepeatOf(usize),
    /// Refused, or a repeat of a message committed earlier; nothing written.
    Other(Box<AppendOutcome>),
}

/// The outcomes of a committed group, moving each job's fields into its message.
fn settle(news: Vec<NewMessage>, decisions: Vec<Decision>) -> Vec<AppendOutcome> {
    let mut outcomes: Vec<AppendOutcome> = Vec::with_capacity(news.len());
    for (new, decision) in news.into_iter().zip(decisions) {
        let outcome = match decision {
            Decision::Committed { seq, created_at, recipients, mentions, thread } => {
                let new = NewMessage { mentions, ..new };
                AppendOutcome::Committed { message: new.committed(seq, created_at), recipients, thread }
            }
            Decision::RepeatOf(index) => match outcomes.get(index) {
                Some(AppendOutcome::Committed { message, .. }) => AppendOutcome::Duplicate(message.clone()),
                // Never happens: a repeat always points at an earlier committed job.
                _ => AppendOutcome::NoConversation,
            },
            Decision::Other(outcome) => *outcome,
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// `FOR NO KEY UPDATE`, the lock an `UPDATE` of `last_seq` takes: it excludes other appends
/// and the membership changes (`FOR UPDATE`), not the `FOR KEY SHARE` of foreign-key checks
/// (a read marker's update takes one), which would deadlock against the members' rows.
const LOCK_CONVERSATIONS: &str = "SELECT id, last_seq, type, status, status_reason FROM conversations WHERE id = ANY($1) ORDER BY id \
     FOR NO KEY UPDATE";

/// Per job (by 1-based ordinal): sender is a member; refused by a block (direct
/// conversations, non-system messages: the sender and a member block each other, either
/// way); the replied-to message is in the conversation; the thread root is a root of the
/// conversation, not deleted; the original of a `client_id` repeat. Jobs of conversations that do not exist have no row.
fn check_jobs_sql() -> String {
    format!(
        "SELECT g.ord, \
           EXISTS (SELECT 1 FROM members mb WHERE mb.conversation_id = g.conv AND mb.user_id = g.sender), \
           c.type = 'direct' AND NOT g.system AND EXISTS (SELECT 1 FROM members mb JOIN blocks b \
             ON (b.blocker_id = g.sender AND b.blocked_id = mb.user_id) \
             OR (b.blocker_id = mb.user_id AND b.blocked_id = g.sender) \
             WHERE mb.conversation_id = g.conv), \
           g.reply_to IS NULL OR EXISTS (SELECT 1 FROM messages r \
             WHERE r.id = g.reply_to AND r.conversation_id = g.conv), \
           g.thread IS NULL OR EXISTS (SELECT 1 FROM messages r \
             WHERE r.id = g.thread AND r.conversation_id = g.conv AND r.thread_id IS NULL \
             AND r.deleted_at IS NULL), \
           {MESSAGE_COLUMNS} \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[]) \
           WITH ORDINALITY AS g (conv, sender, client_id, reply_to, system, thread, ord) \
         JOIN conversations c ON c.id = g.conv \
         LEFT JOIN messages m ON g.client_id IS NOT NULL AND m.conversation_id = g.conv \
           AND m.sender_id = g.sender AND m.client_id = g.client_id"
    )
}

const LOAD_MEMBERS: &str = "SELECT mb.conversation_id, mb.user_id, mb.role, mb.joined_at, mb.last_read_seq, \
       mb.notifications, EXISTS (SELECT 1 FROM devices d WHERE d.user_id = mb.user_id), mb.unread_count, \
       EXISTS (SELECT 1 FROM notification_counters n WHERE n.user_id = mb.user_id), \
       ARRAY(SELECT b.blocked_id FROM blocks b JOIN members o \
         ON o.conversation_id = mb.conversation_id AND o.user_id = b.blocked_id WHERE b.blocker_id = mb.user_id), \
       mb.archived \
     FROM members mb WHERE mb.conversation_id = ANY($1)";

/// Brings a conversation back for the members who archived it, unless they muted it.
const UNARCHIVE: &str = "UPDATE members SET archived = false \
     WHERE conversation_id = ANY($1) AND archived AND notifications";

const BUMP_SEQS: &str = "UPDATE conversations c SET last_seq = c.last_seq + v.n, last_message_at = $3, \
       activity_at = $3 \
     FROM unnest($1::text[], $2::bigint[]) AS v (id, n) WHERE c.id = v.id RETURNING c.id, c.last_seq";

const INSERT_MESSAGES: &str = "INSERT INTO messages (id, conversation_id, seq, sender_id, type, content, \
       client_id, reply_to_id, attachments, metadata, created_at, thread_id, also_in_conversation, mentions, \
       mentions_all) \
     SELECT t.id, t.conv, t.seq, t.sender, t.kind, t.content, t.client_id, t.reply_to, t.attachments, \
       t.metadata, $11, t.thread, t.also, t.mentions, t.mentions_all \
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], \
       $8::text[], $9::json[], $10::json[], $12::text[], $13::bool[], $14::json[], $15::bool[]) \
       AS t (id, conv, seq, sender, kind, content, client_id, reply_to, attachments, metadata, thread, also, \
         mentions, mentions_all)";

/// The unread mentions of a group: one row per (member, conversation, seq).
const INSERT_MENTIONS: &str = "INSERT INTO mentions (user_id, conversation_id, seq) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING";

/// Rows are given sorted by (conversation, user), so concurrent writers that update several
/// members of one conversation in key order (deleting a message) lock them in the same order.
const ADD_UNREAD: &str = "UPDATE members m SET unread_count = m.unread_count + d.n \
     FROM unnest($1::text[], $2::text[], $3::bigint[]) AS d (conv, user_id, n) \
     WHERE m.conversation_id = d.conv AND m.user_id = d.user_id";

/// A conversation of the group as its lock found it, and what the group adds to it.
struct ConversationState {
    last_seq: i64,
    /// A direct conversation (else a group).
    direct: bool,
    /// Its status and the status's reason.
    status: (ConversationStatus, Option<String>),
    /// Accepted messages so far.
    added: i64,
    /// Its members, unread counts as they stand after the accepted messages so far.
    recipients: Vec<Recipient>,
    /// Per member (same order): unread messages the group adds.
    unread_added: Vec<i64>,
}

/// An earlier message with the same `client_id` as a job: committed before, or an earlier
/// job of the same group (its index).
enum Earlier {
    Stored(Box<Message>),
    InGroup(usize),
}

/// What the append rules ask about one job, answered from the group's check query and the
/// jobs of the group accepted before it.
struct Facts<'a> {
    check: Checked,
    exists: bool,
    /// The conversation's status and reason.
    status: (ConversationStatus, Option<String>),
    /// The conversation is a group and the sender one of its owners or admins.
    manages_group: bool,
    key: Option<(&'a str, &'a str, &'a str)>,
    keys: &'a HashMap<(&'a str, &'a str, &'a str), usize>,
}

impl AppendFacts for Facts<'_> {
    type Earlier = Earlier;

    fn conversation_exists(&mut self) -> Result<bool, StoreError> {
        Ok(self.exists)
    }

    fn conversation_status(&mut self) -> Result<(ConversationStatus, Option<String>), StoreError> {
        Ok(self.status.clone())
    }

    fn sender_is_member(&mut self) -> Result<bool, StoreError> {
        Ok(self.check.member)
    }

    fn direct_members_block_each_other(&mut self) -> Result<bool, StoreError> {
        Ok(self.check.blocked)
    }

    fn earlier_with_client_id(&mut self) -> Result<Option<Earlier>, StoreError> {
        if let Some(original) = self.check.original.take() {
            return Ok(Some(Earlier::Stored(Box::new(original))));
        }
        Ok(self.key.and_then(|key| self.keys.get(&key)).map(|first| Earlier::InGroup(*first)))
    }

    fn reply_in_conversation(&mut self) -> Result<bool, StoreError> {
        Ok(self.check.reply_ok)
    }

    fn thread_root_in_conversation(&mut self) -> Result<bool, StoreError> {
        Ok(self.check.thread_ok)
    }

    fn sender_manages_group(&mut self) -> Result<bool, StoreError> {
        Ok(self.manages_group)
    }
}

/// Per job, what the check query found.
#[derive(Default)]
struct Checked {
    found: bool,
    member: bool,
    blocked: bool,
    reply_ok: bool,
    thread_ok: bool,
    original: Option<Message>,
}

/// Writes `news` in one transaction; one decision per job, in order, once committed.
async fn try_group(pool: &Pool, news: &[NewMessage]) -> Result<Vec<Decision>, GroupFailure> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await?;
    let now = Timestamp::now();

    let mut conversation_ids: Vec<&str> = news.iter().map(|n| n.conversation_id.as_str()).collect();
    conversation_ids.sort_unstable();
    conversation_ids.dedup();
    let convs: Vec<&str> = news.iter().map(|n| n.conversation_id.as_str()).collect();
    let senders: Vec<&str> = news.iter().map(|n| n.sender_id.as_str()).collect();
    let client_ids: Vec<Option<&str>> = news.iter().map(|n| n.client_id.as_deref()).collect();
    let reply_tos: Vec<Option<&str>> = news.iter().map(|n| n.reply_to_id.as_deref()).collect();
    let systems: Vec<bool> = news.iter().map(|n| n.kind == MessageType::System).collect();
    let threads: Vec<Option<&str>> = news.iter().map(|n| n.thread_id.as_deref()).collect();

    let lock = tx.prepare_cached(LOCK_CONVERSATIONS).await?;
    let check = tx.prepare_cached(&check_jobs_sql()).await?;
    let members = tx.prepare_cached(LOAD_MEMBERS).await?;
    // One round trip: the lock is taken before the other two statements start, so they read
    // the members, blocks and messages as of after it (READ COMMITTED: a snapshot per
    // statement).
    let lock_params: [&(dyn ToSql + Sync); 1] = [&conversation_ids];
    let check_params: [&(dyn ToSql + Sync); 6] =
        [&convs, &senders, &client_ids, &reply_tos, &systems, &threads];
    let (locked, checked, member_rows) = tokio::try_join!(
        tx.query(&lock, &lock_params),
        tx.query(&check, &check_params),
        tx.query(&members, &lock_params),
    )?;

    let mut states: HashMap<&str, ConversationState> = HashMap::with_capacity(locked.len());
    for row in &locked {
        let id: &str = get(row, 0)?;
        let kind: &str = get(row, 2)?;
        let status: &str = get(row, 3)?;
        let status = ConversationStatus::parse(status).ok_or_else(|| {
            StoreError::Backend(format!("unknown status {status:?} in the database").into())
        })?;
        let state = ConversationState {
            last_seq: get(row, 1)?,
            direct: kind == "direct",
            status: (status, get(row, 4)?),
            added: 0,
            recipients: Vec::new(),
            unread_added: Vec::new(),
        };
        states.insert(id, state);
    }
    for row in &member_rows {
        let id: &str = get(row, 0)?;
        if let Some(state) = states.get_mut(id) {
            state.recipients.push(Recipient {
                member: member_at(row, 1)?,
                has_devices: get(row, 6)?,
                has_notification_log: get(row, 8)?,
                unread_count: get(row, 7)?,
                blocks: get(row, 9)?,
                archived: get(row, 10)?,
            });
            state.unread_added.push(0);
        }
    }
    let mut checks: Vec<Checked> = (0..news.len()).map(|_| Checked::default()).collect();
    for row in &checked {
        let ordinal: i64 = get(row, 0)?;
        let Some(check) = usize::try_from(ordinal - 1).ok().and_then(|i| checks.get_mut(i)) else {
            continue;
        };
        *check = Checked {
            found: true,
            member: get(row, 1)?,
            blocked: get(row, 2)?,
            reply_ok: get(row, 3)?,
            thread_ok: get(row, 4)?,
            original: message_at(row, 5)?,
        };
    }

    let mut decisions = Vec::with_capacity(news.len());
    // (conversation, sender, client_id) of accepted jobs → the job's index.
    let mut keys: HashMap<(&str, &str, &str), usize> = HashMap::new();
    // (member, conversation, seq) of every mention the group adds.
    let mut mentioned: Vec<(String, &str, i64)> = Vec::new();
    // Conversations some member archived (and did not mute): a new message brings them back.
    let mut unarchive: Vec<&str> = Vec::new();
    for (index, (new, check)) in news.iter().zip(checks).enumerate() {
        let key = new.client_id.as_deref().map(|c| (new.conversation_id.as_str(), new.sender_id.as_str(), c));
        let state = states.get_mut(new.conversation_id.as_str()).filter(|_| check.found);
        let manages_group = state.as_ref().is_some_and(|s| {
            !s.direct
                && s.recipients
                    .iter()
                    .any(|r| r.member.user_id == new.sender_id && r.member.role.is_manager())
        });
        let status = state.as_ref().map_or((ConversationStatus::Active, None), |s| s.status.clone());
        let facts = &mut Facts { check, exists: state.is_some(), status, manages_group, key, keys: &keys };
        let verdict = append_rules::judge(new, facts)?;
        let state = match (verdict, state) {
            (Verdict::Accept, Some(state)) => state,
            (Verdict::Accept, None) => {
                decisions.push(Decision::Other(Box::new(AppendOutcome::NoConversation)));
                continue;
            }
            (Verdict::Repeat(Earlier::Stored(original)), _) => {
                decisions.push(Decision::Other(Box::new(AppendOutcome::Duplicate(*original))));
                continue;
            }
            (Verdict::Repeat(Earlier::InGroup(first)), _) => {
                decisions.push(Decision::RepeatOf(first));
                continue;
            }
            (Verdict::Refuse(refusal), _) => {
                decisions.push(Decision::Other(Box::new(refusal.into())));
                continue;
            }
        };
        if let Some(key) = key {
            keys.insert(key, index);
        }
        state.added += 1;
        let seq = state.last_seq + state.added;
        if state.recipients.iter().any(|r| r.archived && r.member.notifications) {
            unarchive.push(new.conversation_id.as_str());
            for recipient in state.recipients.iter_mut().filter(|r| r.member.notifications) {
                recipient.archived = false;
            }
        }
        let unread = append_rules::shown_in_timeline(new);
        for (recipient, added) in state.recipients.iter_mut().zip(state.unread_added.iter_mut()) {
            if unread && recipient.member.user_id != new.sender_id {
                recipient.unread_count += 1;
                *added += 1;
            }
        }
        let kept =
            append_rules::member_mentions(new, |id| state.recipients.iter().any(|r| r.member.user_id == id));
        let members = state.recipients.iter().map(|r| r.member.user_id.as_str());
        for user_id in append_rules::mentioned_members(new, &kept, members) {
            mentioned.push((user_id.to_owned(), new.conversation_id.as_str(), seq));
        }
        decisions.push(Decision::Committed {
            seq,
            created_at: now,
            recipients: state.recipients.clone(),
            mentions: kept,
            thread: None,
        });
    }

    let accepted: Vec<(&NewMessage, i64, &[String])> = news
        .iter()
        .zip(&decisions)
        .filter_map(|(new, decision)| match decision {
            Decision::Committed { seq, mentions, .. } => Some((new, *seq, mentions.as_slice())),
            _ => None,
        })
        .collect();
    if accepted.is_empty() {
        tx.rollback().await?;
        return Ok(decisions);
    }

    let mut bumped: Vec<(&str, i64)> =
        states.iter().filter(|(_, s)| s.added > 0).map(|(id, s)| (*id, s.added)).collect();
    bumped.sort_unstable();
    let (bump_ids, bump_counts): (Vec<&str>, Vec<i64>) = bumped.iter().copied().unzip();
    let mut unread: Vec<(&str, &str, i64)> = states
        .iter()
        .flat_map(|(id, s)| {
            s.recipients
                .iter()
                .zip(&s.unread_added)
                .filter(|(_, added)| **added > 0)
                .map(|(r, added)| (*id, r.member.user_id.as_str(), *added))
        })
        .collect();
    unread.sort_unstable();
    let unread_convs: Vec<&str> = unread.iter().map(|u| u.0).collect();
    let unread_users: Vec<&str> = unread.iter().map(|u| u.1).collect();
    let unread_counts: Vec<i64> = unread.iter().map(|u| u.2).collect();

    let ids: Vec<&str> = accepted.iter().map(|(n, _, _)| n.id.as_str()).collect();
    let convs: Vec<&str> = accepted.iter().map(|(n, _, _)| n.conversation_id.as_str()).collect();
    let seqs: Vec<i64> = accepted.iter().map(|(_, seq, _)| *seq).collect();
    let senders: Vec<&str> = accepted.iter().map(|(n, _, _)| n.sender_id.as_str()).collect();
    let kinds: Vec<&str> = accepted.iter().map(|(n, _, _)| n.kind.as_str()).collect();
    let contents: Vec<Option<&str>> = accepted.iter().map(|(n, _, _)| n.content.as_deref()).collect();
    let client_ids: Vec<Option<&str>> = accepted.iter().map(|(n, _, _)| n.client_id.as_deref()).collect();
    let reply_tos: Vec<Option<&str>> = accepted.iter().map(|(n, _, _)| n.reply_to_id.as_deref()).collect();
    let attachments: Vec<_> = accepted.iter().map(|(n, _, _)| Json(&n.attachments)).collect();
    let metadata: Vec<_> = accepted.iter().map(|(n, _, _)| Json(&n.metadata)).collect();
    let thread_ids: Vec<Option<&str>> = accepted.iter().map(|(n, _, _)| n.thread_id.as_deref()).collect();
    let also: Vec<bool> =
        accepted.iter().map(|(n, _, _)| n.thread_id.is_some() && n.also_in_conversation).collect();
    let mentions: Vec<_> = accepted.iter().map(|(_, _, kept)| Json(*kept)).collect();
    let mentions_all: Vec<bool> = accepted.iter().map(|(n, _, _)| n.mentions_all).collect();
    let created_at = now.millis();

    let bump = tx.prepare_cached(BUMP_SEQS).await?;
    let insert = tx.prepare_cached(INSERT_MESSAGES).await?;
    let add_unread = tx.prepare_cached(ADD_UNREAD).await?;
    // One round trip for the three writes.
    let bump_params: [&(dyn ToSql + Sync); 3] = [&bump_ids, &bump_counts, &created_at];
    let insert_params: [&(dyn ToSql + Sync); 15] = [
        &ids,
        &convs,
        &seqs,
        &senders,
        &kinds,
        &contents,
        &client_ids,
        &reply_tos,
        &attachments,
        &metadata,
        &created_at,
        &thread_ids,
        &also,
        &mentions,
        &mentions_all,
    ];
    let unread_params: [&(dyn ToSql + Sync); 3] = [&unread_convs, &unread_users, &unread_counts];
    let (bumped_rows, inserted, _) = tokio::try_join!(
        tx.query(&bump, &bump_params),
        tx.execute(&insert, &insert_params),
        tx.execute(&add_unread, &unread_params),
    )?;
    // Under the locks nothing else moves these rows; anything else is a bug, not a commit.
    let mut expected: HashMap<&str, i64> = HashMap::with_capacity(bumped.len());
    for (id, added) in &bumped {
        if let Entry::Vacant(slot) = expected.entry(*id) {
            slot.insert(states.get(*id).map_or(0, |s| s.last_seq) + added);
        }
    }
    for row in &bumped_rows {
        let (id, last_seq): (&str, i64) = (get(row, 0)?, get(row, 1)?);
        if expected.remove(id) != Some(last_seq) {
            return Err(StoreError::Backend(format!("conversation {id} moved under its lock").into()).into());
        }
    }
    if !expected.is_empty() || inserted != accepted.len() as u64 {
        return Err(StoreError::Backend("a group of appends wrote fewer rows than it accepted".into()).into());
    }
    if !unarchive.is_empty() {
        let statement = tx.prepare_cached(UNARCHIVE).await?;
        tx.execute(&statement, &[&unarchive]).await?;
    }
    if !mentioned.is_empty() {
        let users: Vec<&str> = mentioned.iter().map(|m| m.0.as_str()).collect();
        let convs: Vec<&str> = mentioned.iter().map(|m| m.1).collect();
        let seqs: Vec<i64> = mentioned.iter().map(|m| m.2).collect();
        let insert = tx.prepare_cached(INSERT_MENTIONS).await?;
        tx.execute(&insert, &[&users, &convs, &seqs]).await?;
    }
    // Thread replies (rare) move their roots one at a time, in seq order.
    for (new, decision) in news.iter().zip(decisions.iter_mut()) {
        if let (Some(root_id), Decision::Committed { created_at, mentions, thread, recipients, .. }) =
            (&new.thread_id, decision)
        {
            let everyone = recipients.iter().map(|r| r.member.user_id.as_str());
            let mentioned = append_rules::mentioned_members(new, mentions, everyone);
            let reply =
                annotations::record_reply(&tx, root_id, &new.sender_id, &mentioned, *created_at).await?;
            *thread = Some(Box::new(reply));
        }
    }
    tx.commit().await?;
    Ok(decisions)
}
