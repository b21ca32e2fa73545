//! Writes that keep a message's derived state in step, run inside the writer's transaction:
//! the conversation's revision counter, and a thread root's summary and followers.

use super::*;
use crate::core::ports::ThreadReply;
use crate::store::append_rules;

/// Takes a conversation's next revision (see migrations/sqlite/0012): the value the changed
/// message carries.
pub(super) fn next_revision(conn: &Connection, conversation_id: &str) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "UPDATE conversations SET last_revision = last_revision + 1 WHERE id = ?1 RETURNING last_revision",
    )?
    .query_row([conversation_id], |r| r.get(0))
    .optional()?
    .ok_or_else(|| StoreError::Backend(format!("conversation {conversation_id} vanished").into()))
}

/// Records a reply by `replier` (mentioning `mentioned`) in the thread of `root_id`: the
/// root's summary, version and revision move, and the root's author, the replier and the
/// mentioned follow the thread.
pub(super) fn record_reply(
    conn: &Connection,
    root_id: &str,
    replier: &str,
    mentioned: &[&str],
    at: Timestamp,
) -> Result<ThreadReply, StoreError> {
    let (conversation_id, author, participants): (String, String, String) = conn
        .prepare_cached("SELECT conversation_id, sender_id, thread_participants FROM messages WHERE id = ?1")?
        .query_row([root_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let mut participants: Vec<String> = parse_json(&participants)?;
    if participants.is_empty() {
        participants.push(author.clone());
    }
    let participants = append_rules::with_participant(participants, replier);
    let mut follow = conn.prepare_cached(
        "INSERT OR IGNORE INTO thread_followers (root_id, user_id, since) VALUES (?1, ?2, ?3)",
    )?;
    for user_id in [author.as_str(), replier].into_iter().chain(mentioned.iter().copied()) {
        follow.execute(params![root_id, user_id, at.millis()])?;
    }
    let revision = next_revision(conn, &conversation_id)?;
    conn.prepare_cached(
        "UPDATE messages SET reply_count = reply_count + 1, last_reply_at = ?2, thread_participants = ?3, \
         version = version + 1, revision = ?4 WHERE id = ?1",
    )?
    .execute(params![
        root_id,
        at.millis(),
        serde_json::to_string(&participants).map_err(json_error)?,
        revision
    ])?;
    let root = message_by_id(conn, root_id)?
        .ok_or_else(|| StoreError::Backend(format!("thread root {root_id} vanished").into()))?;
    let followers = query_all(
        conn,
        "SELECT user_id FROM thread_followers WHERE root_id = ?1 ORDER BY since, user_id",
        [root_id],
        |r| r.get(0),
    )?;
    Ok(ThreadReply { root, followers })
}

/// A reply of the thread of `root_id` was deleted: one reply fewer on the root.
pub(super) fn record_reply_deleted(conn: &Connection, root_id: &str) -> Result<(), StoreError> {
    let conversation_id: Option<String> = conn
        .prepare_cached("SELECT conversation_id FROM messages WHERE id = ?1")?
        .query_row([root_id], |r| r.get(0))
        .optional()?;
    let Some(conversation_id) = conversation_id else { return Ok(()) };
    let revision = next_revision(conn, &conversation_id)?;
    conn.prepare_cached(
        "UPDATE messages SET reply_count = max(reply_count - 1, 0), version = version + 1, revision = ?2 \
         WHERE id = ?1",
    )?
    .execute(params![root_id, revision])?;
    Ok(())
}
