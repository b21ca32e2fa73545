//! Appends on the SQLite writer thread, and what the writer remembers between them.
//!
//! The writer is the only connection that writes, so it can keep each conversation's
//! members (with their unread counts, whether they have devices and a notification log) in
//! memory instead of reading them for every append: [`Appends`] caches them per conversation and counts the
//! unread messages each append adds in memory. The counts reach `members` in one statement
//! per batch ([`Appends::flush`]), always inside the batch's transaction and before its
//! commit, so what is committed is exact and durable.
//!
//! Invariants: the cache holds the committed state plus this batch's appends. Anything else
//! that may change what it holds (members, roles, read markers, notification switches,
//! devices, notification logs opened, blocks, messages, conversations) first flushes and
//! drops it
//! ([`Appends::invalidate`], run by the writer before such jobs); a batch that rolls back
//! drops it; and a commit by any other connection (`PRAGMA data_version` moved) drops it
//! before the next batch. The cache is bounded by [`MAX_CACHED_RECIPIENTS`].

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::{json_error, query_messages, threads, unknown_name};
use crate::core::error::StoreError;
use crate::core::model::{ConversationStatus, ConversationType, Member, Message, Role};
use crate::core::ports::{AppendOutcome, NewMessage, Recipient};
use crate::core::time::Timestamp;
use crate::store::append_rules::{self, AppendFacts, Verdict};

/// Members kept in memory at most, over all cached conversations; beyond it the cache is
/// dropped and refilled as appends come.
const MAX_CACHED_RECIPIENTS: usize = 65_536;

/// A conversation as appends need it.
struct CachedConversation {
    /// A direct conversation (else a group).
    direct: bool,
    /// Its status and the status's reason.
    status: (ConversationStatus, Option<String>),
    /// A direct conversation of two members who block each other (either way): non-system
    /// messages are refused.
    blocked: bool,
    /// Every member, unread counts including this batch's appends.
    recipients: Vec<Recipient>,
    /// Per recipient (same order): unread messages added since the last flush.
    unread_added: Vec<i64>,
}

/// The writer's memory of conversations between appends; see the module docs.
#[derive(Default)]
pub(super) struct Appends {
    conversations: HashMap<String, CachedConversation>,
    cached_recipients: usize,
    /// Some conversation has unread counts not yet written.
    dirty: bool,
    /// `PRAGMA data_version` when the cache was last known good.
    data_version: Option<i64>,
    /// Reused buffers: the flush's JSON, and a message's attachments and metadata.
    flush_json: Vec<u8>,
    attachments: Vec<u8>,
    metadata: Vec<u8>,
}

impl Appends {
    /// Drops the cache if another connection committed since the last batch. Call at the
    /// start of each batch, inside its transaction.
    pub(super) fn begin_batch(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let version: i64 = conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?;
        if self.data_version != Some(version) {
            self.forget();
            self.data_version = Some(version);
        }
        Ok(())
    }

    /// Drops everything cached, pending unread counts included (after a rollback).
    pub(super) fn forget(&mut self) {
        self.conversations.clear();
        self.cached_recipients = 0;
        self.dirty = false;
    }

    /// Writes the pending unread counts, then drops the cache: before a job that may change
    /// what it holds.
    pub(super) fn invalidate(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.flush(conn)?;
        self.forget();
        Ok(())
    }

    /// Adds the unread messages counted since the last flush to `members`, in one statement.
    pub(super) fn flush(&mut self, conn: &Connection) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        let json = &mut self.flush_json;
        json.clear();
        json.push(b'[');
        let mut first = true;
        for (conversation_id, cached) in &mut self.conversations {
            for (recipient, added) in cached.recipients.iter().zip(cached.unread_added.iter_mut()) {
                if *added == 0 {
                    continue;
                }
                if !first {
                    json.push(b',');
                }
                first = false;
                let entry = (conversation_id.as_str(), recipient.member.user_id.as_str(), *added);
                serde_json::to_writer(&mut *json, &entry).map_err(json_error)?;
                *added = 0;
            }
        }
        json.push(b']');
        let json = std::str::from_utf8(json).map_err(|e| StoreError::Backend(Box::new(e)))?;
        conn.prepare_cached(
            "UPDATE members SET unread_count = unread_count + d.n \
             FROM (SELECT value ->> 0 AS conversation_id, value ->> 1 AS user_id, value ->> 2 AS n \
                   FROM json_each(?1)) AS d \
             WHERE members.conversation_id = d.conversation_id AND members.user_id = d.user_id",
        )?
        .execute([json])?;
        self.dirty = false;
        Ok(())
    }

    /// The conversation, from the cache or the database; `None` if it does not exist.
    fn conversation(
        &mut self,
        conn: &Connection,
        conversation_id: &str,
    ) -> Result<Option<&mut CachedConversation>, StoreError> {
        if !self.conversations.contains_key(conversation_id) {
            let Some(loaded) = load_conversation(conn, conversation_id)? else { return Ok(None) };
            if self.cached_recipients + loaded.recipients.len() > MAX_CACHED_RECIPIENTS {
                self.flush(conn)?;
                self.forget();
            }
            self.cached_recipients += loaded.recipients.len();
            self.conversations.insert(conversation_id.to_owned(), loaded);
        }
        Ok(self.conversations.get_mut(conversation_id))
    }

    /// Appends a message with the next seq, or refuses it; see [`crate::core::ports::MessageStore::append_message`]
    /// and the rules in [`crate::store::append_rules`].
    pub(super) fn append(
        &mut self,
        conn: &Connection,
        mut new: NewMessage,
    ) -> Result<AppendOutcome, StoreError> {
        let cached = self.conversation(conn, &new.conversation_id)?.map(|cached| &*cached);
        match append_rules::judge(&new, &mut Facts { conn, new: &new, cached })? {
            Verdict::Accept => {}
            Verdict::Repeat(original) => return Ok(AppendOutcome::Duplicate(original)),
            Verdict::Refuse(refusal) => return Ok(refusal.into()),
        }
        if let Some(cached) = cached
            && !new.mentions.is_empty()
        {
            new.mentions = append_rules::member_mentions(&new, |id| {
                cached.recipients.iter().any(|r| r.member.user_id == id)
            });
        }
        let now = Timestamp::now();
        let seq: i64 = conn
            .prepare_cached(
                "UPDATE conversations SET last_seq = last_seq + 1, last_message_at = ?2, activity_at = ?2 \
                 WHERE id = ?1 RETURNING last_seq",
            )?
            .query_row(params![new.conversation_id, now.millis()], |r| r.get(0))
            .optional()?
            .ok_or_else(|| {
                StoreError::Backend(format!("conversation {} vanished", new.conversation_id).into())
            })?;
        self.attachments.clear();
        serde_json::to_writer(&mut self.attachments, &new.attachments).map_err(json_error)?;
        self.metadata.clear();
        serde_json::to_writer(&mut self.metadata, &new.metadata).map_err(json_error)?;
        let utf8 = |bytes| std::str::from_utf8(bytes).map_err(|e| StoreError::Backend(Box::new(e)));
        let mentions = serde_json::to_string(&new.mentions).map_err(json_error)?;
        conn.prepare_cached(
            "INSERT INTO messages (id, conversation_id, seq, sender_id, type, content, client_id, \
             reply_to_id, attachments, metadata, created_at, thread_id, also_in_conversation, mentions, \
             mentions_all) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?
        .execute(params![
            new.id,
            new.conversation_id,
            seq,
            new.sender_id,
            new.kind.as_str(),
            new.content,
            new.client_id,
            new.reply_to_id,
            utf8(&self.attachments)?,
            utf8(&self.metadata)?,
            now.millis(),
            new.thread_id,
            new.thread_id.is_some() && new.also_in_conversation,
            mentions,
            new.mentions_all,
        ])?;
        if let Some(content) = &new.content {
            // The search index (migrations/sqlite/0011_search.sql), in this transaction.
            conn.prepare_cached("INSERT INTO messages_search (rowid, content) VALUES (?1, ?2)")?
                .execute(params![conn.last_insert_rowid(), content])?;
        }
        // The insert succeeded: count it (the lookup again, since `self` was borrowed).
        let Some(cached) = self.conversations.get_mut(new.conversation_id.as_str()) else {
            return Err(StoreError::Backend("a cached conversation vanished".into()));
        };
        let members = cached.recipients.iter().map(|r| r.member.user_id.as_str());
        let mentioned = append_rules::mentioned_members(&new, &new.mentions, members);
        if !mentioned.is_empty() {
            let mut insert = conn.prepare_cached(
                "INSERT OR IGNORE INTO mentions (user_id, conversation_id, seq) VALUES (?1, ?2, ?3)",
            )?;
            for user_id in &mentioned {
                insert.execute(params![user_id, new.conversation_id, seq])?;
            }
        }
        let thread = match &new.thread_id {
            Some(root_id) => {
                Some(Box::new(threads::record_reply(conn, root_id, &new.sender_id, &mentioned, now)?))
            }
            None => None,
        };
        // A new message brings the conversation back for members who archived it, unless
        // they muted it.
        if cached.recipients.iter().any(|r| r.archived && r.member.notifications) {
            conn.prepare_cached(
                "UPDATE members SET archived = 0 WHERE conversation_id = ?1 AND archived AND notifications",
            )?
            .execute([&new.conversation_id])?;
            for recipient in cached.recipients.iter_mut().filter(|r| r.member.notifications) {
                recipient.archived = false;
            }
        }
        let unread = append_rules::shown_in_timeline(&new);
        for (recipient, added) in cached.recipients.iter_mut().zip(cached.unread_added.iter_mut()) {
            if unread && recipient.member.user_id != new.sender_id {
                recipient.unread_count += 1;
                *added += 1;
                self.dirty = true;
            }
        }
        let recipients = cached.recipients.clone();
        Ok(AppendOutcome::Committed { message: new.committed(seq, now), recipients, thread })
    }
}

/// A conversation's members (with devices and unread counts) and whether it is a blocked
/// direct pair, in one query (plus a block lookup for two-member direct conversations);
/// `None` if it does not exist.
fn load_conversation(
    conn: &Connection,
    conversation_id: &str,
) -> Result<Option<CachedConversation>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT c.type, m.user_id, m.role, m.joined_at, m.last_read_seq, m.notifications, \
           EXISTS (SELECT 1 FROM devices d WHERE d.user_id = m.user_id), m.unread_count, \
           EXISTS (SELECT 1 FROM notification_counters n WHERE n.user_id = m.user_id), \
           (SELECT json_group_array(b.blocked_id) FROM blocks b JOIN members o \
              ON o.conversation_id = c.id AND o.user_id = b.blocked_id WHERE b.blocker_id = m.user_id), \
           m.archived, c.status, c.status_reason \
         FROM conversations c LEFT JOIN members m ON m.conversation_id = c.id WHERE c.id = ?1",
    )?;
    let mut rows = statement.query([conversation_id])?;
    let mut found = false;
    let mut direct = false;
    let mut status = (ConversationStatus::Active, None);
    let mut recipients = Vec::new();
    while let Some(row) = rows.next()? {
        found = true;
        direct = row.get_ref(0)?.as_str().map_err(|e| StoreError::Backend(Box::new(e)))?
            == ConversationType::Direct.as_str();
        let name: String = row.get(11)?;
        status =
            (ConversationStatus::parse(&name).ok_or_else(|| unknown_name("status", &name))?, row.get(12)?);
        let Some(user_id) = row.get::<_, Option<String>>(1)? else { continue };
        let role = row.get_ref(2)?.as_str().map_err(|e| StoreError::Backend(Box::new(e)))?;
        recipients.push(Recipient {
            member: Member {
                role: Role::parse(role).ok_or_else(|| unknown_name("role", role))?,
                user_id,
                joined_at: Timestamp(row.get(3)?),
                last_read_seq: row.get(4)?,
                notifications: row.get(5)?,
                shown_notifications: None,
            },
            has_devices: row.get(6)?,
            has_notification_log: row.get(8)?,
            unread_count: row.get(7)?,
            blocks: serde_json::from_str(&row.get::<_, String>(9)?).map_err(json_error)?,
            archived: row.get(10)?,
        });
    }
    if !found {
        return Ok(None);
    }
    // Blocks matter only between the two members of a direct conversation.
    let blocked = match recipients.as_slice() {
        [a, b] if direct => conn
            .prepare_cached(
                "SELECT 1 FROM blocks WHERE (blocker_id = ?1 AND blocked_id = ?2) \
                                         OR (blocker_id = ?2 AND blocked_id = ?1)",
            )?
            .exists(params![a.member.user_id, b.member.user_id])?,
        _ => false,
    };
    let unread_added = vec![0; recipients.len()];
    Ok(Some(CachedConversation { direct, status, blocked, recipients, unread_added }))
}

/// What an append's rules ask, answered from the member cache and, for repeats and replies,
/// the database.
struct Facts<'a> {
    conn: &'a Connection,
    new: &'a NewMessage,
    cached: Option<&'a CachedConversation>,
}

impl AppendFacts for Facts<'_> {
    type Earlier = Message;

    fn conversation_exists(&mut self) -> Result<bool, StoreError> {
        Ok(self.cached.is_some())
    }

    fn conversation_status(&mut self) -> Result<(ConversationStatus, Option<String>), StoreError> {
        Ok(self.cached.map_or((ConversationStatus::Active, None), |c| c.status.clone()))
    }

    fn sender_is_member(&mut self) -> Result<bool, StoreError> {
        Ok(self.cached.is_some_and(|c| c.recipients.iter().any(|r| r.member.user_id == self.new.sender_id)))
    }

    fn direct_members_block_each_other(&mut self) -> Result<bool, StoreError> {
        Ok(self.cached.is_some_and(|c| c.blocked))
    }

    fn earlier_with_client_id(&mut self) -> Result<Option<Message>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conversation_id = ?1 AND sender_id = ?2 AND client_id = ?3"
        );
        let new = self.new;
        Ok(query_messages(self.conn, SQL, params![new.conversation_id, new.sender_id, new.client_id])?.pop())
    }

    fn reply_in_conversation(&mut self) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM messages WHERE id = ?1 AND conversation_id = ?2")?
            .exists(params![self.new.reply_to_id, self.new.conversation_id])?)
    }

    fn thread_root_in_conversation(&mut self) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM messages WHERE id = ?1 AND conversation_id = ?2 AND thread_id IS NULL AND deleted_at IS NULL",
            )?
            .exists(params![self.new.thread_id, self.new.conversation_id])?)
    }

    fn sender_manages_group(&mut self) -> Result<bool, StoreError> {
        Ok(self.cached.is_some_and(|c| {
            !c.direct
                && c.recipients
                    .iter()
                    .any(|r| r.member.user_id == self.new.sender_id && r.member.role.is_manager())
        }))
    }
}
