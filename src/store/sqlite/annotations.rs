//! Reactions, pins, thread pages, changed messages and unread mentions (see
//! [`AnnotationStore`]).

use std::collections::BTreeMap;

use super::threads::next_revision;
use super::*;
use crate::core::model::{LATEST_REACTIONS, Reaction};
use crate::core::ports::{Annotated, AnnotationStore, ReactionCursor};
use crate::store::page_of_messages;

/// A message's conversation, whether it is deleted and whether it is pinned; `None` if
/// there is no such message.
fn message_state(conn: &Connection, message_id: &str) -> Result<Option<(String, bool, bool)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT conversation_id, deleted_at IS NOT NULL, pinned_at IS NOT NULL FROM messages WHERE id = ?1",
        )?
        .query_row([message_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// The message as it stands, for an answer.
fn current(conn: &Connection, message_id: &str) -> Result<Message, StoreError> {
    message_by_id(conn, message_id)?
        .ok_or_else(|| StoreError::Backend(format!("message {message_id} vanished").into()))
}

/// Rewrites a message's reaction summary from its reactions, with the conversation's next
/// revision; returns the message.
fn refresh_reactions(
    conn: &Connection,
    message_id: &str,
    conversation_id: &str,
) -> Result<Message, StoreError> {
    let counts: BTreeMap<String, i64> = query_all(
        conn,
        "SELECT emoji, count(*) FROM reactions WHERE message_id = ?1 GROUP BY emoji",
        [message_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?
    .into_iter()
    .collect();
    let latest = query_all(
        conn,
        "SELECT user_id, emoji FROM reactions WHERE message_id = ?1 \
         ORDER BY created_at DESC, user_id DESC, emoji DESC LIMIT ?2",
        params![message_id, LATEST_REACTIONS as i64],
        |r| Ok(ReactionRef { user_id: r.get(0)?, emoji: r.get(1)? }),
    )?;
    let revision = next_revision(conn, conversation_id)?;
    conn.prepare_cached(
        "UPDATE messages SET reaction_counts = ?2, latest_reactions = ?3, version = version + 1, revision = ?4 \
         WHERE id = ?1",
    )?
    .execute(params![
        message_id,
        serde_json::to_string(&counts).map_err(json_error)?,
        serde_json::to_string(&latest).map_err(json_error)?,
        revision
    ])?;
    current(conn, message_id)
}

/// Sets or clears a message's pin, with the conversation's next revision.
fn set_pin(
    conn: &Connection,
    message_id: &str,
    conversation_id: &str,
    pin: Option<(&str, Timestamp)>,
) -> Result<Message, StoreError> {
    let revision = next_revision(conn, conversation_id)?;
    conn.prepare_cached(
        "UPDATE messages SET pinned_by = ?2, pinned_at = ?3, version = version + 1, revision = ?4 WHERE id = ?1",
    )?
    .execute(params![message_id, pin.map(|p| p.0), pin.map(|p| p.1.millis()), revision])?;
    current(conn, message_id)
}

#[async_trait]
impl AnnotationStore for SqliteStore {
    async fn add_reaction(
        &self,
        message_id: &str,
        user_id: &str,
        emoji: &str,
        at: Timestamp,
        max_per_user: usize,
    ) -> Result<Annotated, StoreError> {
        let (message_id, user_id, emoji) = (message_id.to_owned(), user_id.to_owned(), emoji.to_owned());
        self.write_apart(move |conn| {
            let Some((conversation_id, deleted, _)) = message_state(conn, &message_id)? else {
                return Ok(Annotated::NoMessage);
            };
            if deleted {
                return Ok(Annotated::Deleted);
            }
            let there = conn
                .prepare_cached(
                    "SELECT 1 FROM reactions WHERE message_id = ?1 AND user_id = ?2 AND emoji = ?3",
                )?
                .exists(params![message_id, user_id, emoji])?;
            if there {
                return Ok(Annotated::Unchanged(current(conn, &message_id)?));
            }
            let mine: i64 = conn
                .prepare_cached("SELECT count(*) FROM reactions WHERE message_id = ?1 AND user_id = ?2")?
                .query_row(params![message_id, user_id], |r| r.get(0))?;
            if mine >= max_per_user as i64 {
                return Ok(Annotated::LimitReached);
            }
            conn.prepare_cached(
                "INSERT INTO reactions (message_id, user_id, emoji, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![message_id, user_id, emoji, at.millis()])?;
            Ok(Annotated::Changed(refresh_reactions(conn, &message_id, &conversation_id)?))
        })
        .await
    }

    async fn remove_reaction(
        &self,
        message_id: &str,
        user_id: &str,
        emoji: &str,
    ) -> Result<Annotated, StoreError> {
        let (message_id, user_id, emoji) = (message_id.to_owned(), user_id.to_owned(), emoji.to_owned());
        self.write_apart(move |conn| {
            let Some((conversation_id, _, _)) = message_state(conn, &message_id)? else {
                return Ok(Annotated::NoMessage);
            };
            let removed = conn
                .prepare_cached(
                    "DELETE FROM reactions WHERE message_id = ?1 AND user_id = ?2 AND emoji = ?3",
                )?
                .execute(params![message_id, user_id, emoji])?;
            if removed == 0 {
                return Ok(Annotated::Unchanged(current(conn, &message_id)?));
            }
            Ok(Annotated::Changed(refresh_reactions(conn, &message_id, &conversation_id)?))
        })
        .await
    }

    async fn reactions(
        &self,
        message_id: &str,
        after: Option<ReactionCursor>,
        limit: usize,
    ) -> Result<Vec<Reaction>, StoreError> {
        let message_id = message_id.to_owned();
        self.read(move |conn| {
            let (at, user, emoji) = match &after {
                Some(c) => (c.created_at.millis(), c.user_id.as_str(), c.emoji.as_str()),
                None => (i64::MIN, "", ""),
            };
            query_all(
                conn,
                "SELECT user_id, emoji, created_at FROM reactions WHERE message_id = ?1 \
                   AND (created_at, user_id, emoji) > (?2, ?3, ?4) \
                 ORDER BY created_at, user_id, emoji LIMIT ?5",
                params![message_id, at, user, emoji, limit as i64],
                |r| Ok(Reaction { user_id: r.get(0)?, emoji: r.get(1)?, created_at: Timestamp(r.get(2)?) }),
            )
        })
        .await
    }

    async fn pin_message(
        &self,
        message_id: &str,
        user_id: &str,
        at: Timestamp,
        max_pins: usize,
    ) -> Result<Annotated, StoreError> {
        let (message_id, user_id) = (message_id.to_owned(), user_id.to_owned());
        self.write_apart(move |conn| {
            let Some((conversation_id, deleted, pinned)) = message_state(conn, &message_id)? else {
                return Ok(Annotated::NoMessage);
            };
            if deleted {
                return Ok(Annotated::Deleted);
            }
            if pinned {
                return Ok(Annotated::Unchanged(current(conn, &message_id)?));
            }
            let pins: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM messages WHERE conversation_id = ?1 AND pinned_at IS NOT NULL",
                )?
                .query_row([&conversation_id], |r| r.get(0))?;
            if pins >= max_pins as i64 {
                return Ok(Annotated::LimitReached);
            }
            Ok(Annotated::Changed(set_pin(conn, &message_id, &conversation_id, Some((&user_id, at)))?))
        })
        .await
    }

    async fn unpin_message(&self, message_id: &str) -> Result<Annotated, StoreError> {
        let message_id = message_id.to_owned();
        self.write_apart(move |conn| {
            let Some((conversation_id, _, pinned)) = message_state(conn, &message_id)? else {
                return Ok(Annotated::NoMessage);
            };
            if !pinned {
                return Ok(Annotated::Unchanged(current(conn, &message_id)?));
            }
            Ok(Annotated::Changed(set_pin(conn, &message_id, &conversation_id, None)?))
        })
        .await
    }

    async fn pinned_messages(&self, conversation_id: &str) -> Result<Vec<Message>, StoreError> {
        let conversation_id = conversation_id.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND pinned_at IS NOT NULL \
                 ORDER BY pinned_at DESC, seq DESC"
            );
            query_messages(conn, &sql, [&conversation_id])
        })
        .await
    }

    async fn thread_replies(
        &self,
        root_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let root_id = root_id.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            );
            Ok(page_of_messages(query_messages(conn, &sql, params![root_id, after_seq, limit as i64 + 1])?, limit))
        })
        .await
    }

    async fn changed_messages(
        &self,
        conversation_id: &str,
        after_revision: i64,
        up_to_seq: i64,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let conversation_id = conversation_id.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND revision > ?2 AND seq <= ?3 \
                 ORDER BY revision LIMIT ?4"
            );
            let rows = query_messages(conn, &sql, params![conversation_id, after_revision, up_to_seq, limit as i64 + 1])?;
            Ok(page_of_messages(rows, limit))
        })
        .await
    }

    async fn unread_mentions(&self, user_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT mn.conversation_id, count(*) FROM mentions mn JOIN members m \
                   ON m.conversation_id = mn.conversation_id AND m.user_id = mn.user_id \
                 WHERE mn.user_id = ?1 AND mn.seq > m.last_read_seq GROUP BY mn.conversation_id",
                [&user_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }
}
