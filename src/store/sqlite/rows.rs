//! Reading rows: messages, members, conversations and devices as the core's model types, shared by every concern's queries.

use super::*;

pub(super) fn timestamp(millis: Option<i64>) -> Option<Timestamp> {
    millis.map(Timestamp)
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(json_error)
}

pub(super) fn unknown_name(column: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("unknown {column} {value:?} in the database").into())
}

/// Raw message columns, converted outside rusqlite's row callback so JSON errors surface.
pub(super) struct MessageRow {
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
    revision: i64,
    thread_id: Option<String>,
    also_in_conversation: bool,
    reply_count: i64,
    last_reply_at: Option<i64>,
    thread_participants: String,
    mentions: String,
    mentions_all: bool,
    reaction_counts: String,
    latest_reactions: String,
    pinned_at: Option<i64>,
    pinned_by: Option<String>,
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
            revision: row.get(14)?,
            thread_id: row.get(15)?,
            also_in_conversation: row.get(16)?,
            reply_count: row.get(17)?,
            last_reply_at: row.get(18)?,
            thread_participants: row.get(19)?,
            mentions: row.get(20)?,
            mentions_all: row.get(21)?,
            reaction_counts: row.get(22)?,
            latest_reactions: row.get(23)?,
            pinned_at: row.get(24)?,
            pinned_by: row.get(25)?,
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
            revision: self.revision,
            thread_id: self.thread_id,
            also_in_conversation: self.also_in_conversation,
            thread: ThreadSummary::of(
                self.reply_count,
                timestamp(self.last_reply_at),
                parse_json(&self.thread_participants)?,
            ),
            mentions: parse_json(&self.mentions)?,
            mentions_all: self.mentions_all,
            reaction_counts: parse_json(&self.reaction_counts)?,
            latest_reactions: parse_json(&self.latest_reactions)?,
            pinned_at: timestamp(self.pinned_at),
            pinned_by: self.pinned_by,
        })
    }
}

/// Runs a cached query and collects every row through `map`.
pub(super) fn query_all<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    Ok(conn.prepare_cached(sql)?.query_map(params, map)?.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn query_messages(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Message>, StoreError> {
    query_all(conn, sql, params, MessageRow::from_row)?.into_iter().map(MessageRow::into_message).collect()
}

pub(super) fn message_by_id(conn: &Connection, id: &str) -> Result<Option<Message>, StoreError> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1");
    Ok(query_messages(conn, &sql, [id])?.pop())
}

pub(super) fn member_from_row(row: &Row<'_>) -> rusqlite::Result<(String, String, i64, i64, bool)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
}

pub(super) fn into_member(
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
pub(super) const SUCCESSION: &str = "UPDATE members SET role = 'owner' \
     WHERE conversation_id = ?1 \
     AND NOT EXISTS (SELECT 1 FROM members WHERE conversation_id = ?1 AND role = 'owner') \
     AND user_id = (SELECT user_id FROM members WHERE conversation_id = ?1 \
         ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1)";

/// The members of a conversation, oldest first.
pub(super) fn load_members(conn: &Connection, conversation_id: &str) -> Result<Vec<Member>, StoreError> {
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
pub(super) fn load_notification_settings(
    conn: &Connection,
    user_id: &str,
) -> Result<NotificationSettings, StoreError> {
    Ok(conn
        .prepare_cached("SELECT enabled, mentions_when_muted FROM notification_settings WHERE user_id = ?1")?
        .query_row([user_id], |r| {
            Ok(NotificationSettings { enabled: r.get(0)?, mentions_when_muted: r.get(1)? })
        })
        .optional()?
        .unwrap_or_default())
}

/// Loads a conversation with members, last message and `viewer`'s unread count.
pub(super) fn load_conversation(
    conn: &Connection,
    id: &str,
    viewer: &str,
) -> Result<Option<Conversation>, StoreError> {
    let head = conn
        .prepare_cached(
            "SELECT type, name, context, metadata, last_seq, last_message_at, created_at, private_preview, \
               status, status_reason \
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
                (r.get::<_, String>(8)?, r.get::<_, Option<String>>(9)?),
            ))
        })
        .optional()?;
    let Some((kind, name, context, metadata, last_seq, last_message_at, created_at, private_preview, status)) =
        head
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
    let (unread_count, unread_mentions, archived, muted_until): (i64, i64, bool, Option<i64>) = conn
        .prepare_cached(
            "SELECT m.unread_count, (SELECT count(*) FROM mentions mn WHERE mn.user_id = m.user_id \
               AND mn.conversation_id = m.conversation_id AND mn.seq > m.last_read_seq), m.archived, m.muted_until \
             FROM members m WHERE m.conversation_id = ?1 AND m.user_id = ?2",
        )?
        .query_row(params![id, viewer], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?
        .unwrap_or((0, 0, false, None));
    let (status, status_reason) = status;
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
        unread_mentions,
        private_preview,
        status: ConversationStatus::parse(&status).ok_or_else(|| unknown_name("status", &status))?,
        status_reason,
        archived,
        muted_until: timestamp(muted_until),
    }))
}

pub(super) fn unread_after(
    conn: &Connection,
    conversation_id: &str,
    user_id: &str,
    last_read_seq: i64,
) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM messages WHERE conversation_id = ?1 AND seq > ?3 \
             AND sender_id <> ?2 AND deleted_at IS NULL AND (thread_id IS NULL OR also_in_conversation)",
        )?
        .query_row(params![conversation_id, user_id, last_read_seq], |r| r.get(0))?)
}

/// The user's devices (only `only_id`, if given), oldest first.
pub(super) fn load_devices(
    conn: &Connection,
    user_id: &str,
    only_id: Option<&str>,
) -> Result<Vec<Device>, StoreError> {
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

/// Whether one of `others` blocks `user_id` or, with `either_way`, `user_id` blocks one of
/// them: the block rule of creating a conversation or adding members.
pub(super) fn blocks_between(
    conn: &Connection,
    user_id: &str,
    others: &[&str],
    either_way: bool,
) -> Result<bool, StoreError> {
    let others = serde_json::to_string(others).map_err(json_error)?;
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM blocks WHERE \
               (blocked_id = ?1 AND blocker_id IN (SELECT value FROM json_each(?2))) \
               OR (?3 AND blocker_id = ?1 AND blocked_id IN (SELECT value FROM json_each(?2)))",
        )?
        .exists(params![user_id, others, either_way])?)
}
