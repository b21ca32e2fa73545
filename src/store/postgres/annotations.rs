//! Reactions, pins, thread pages, changed messages and unread mentions (see
//! [`AnnotationStore`]), and the writes that keep derived message state in step (revisions,
//! thread summaries), shared with appends and deletes. Every change takes the conversation's
//! next revision by updating its row, which also serializes changes per conversation.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;

use super::*;
use crate::core::model::{LATEST_REACTIONS, Reaction};
use crate::core::ports::{Annotated, AnnotationStore, ReactionCursor, ThreadReply};
use crate::store::append_rules;
use crate::store::page_of_messages;

/// Takes a conversation's next revision (see migrations/postgres/0012); the value the changed
/// message carries.
pub(super) async fn next_revision(tx: &Transaction<'_>, conversation_id: &str) -> Result<i64, StoreError> {
    let bump = tx
        .prepare_cached("UPDATE conversations SET last_revision = last_revision + 1 WHERE id = $1 RETURNING last_revision")
        .await?;
    match tx.query_opt(&bump, &[&conversation_id]).await? {
        Some(row) => get(&row, 0),
        None => Err(StoreError::Backend(format!("conversation {conversation_id} vanished").into())),
    }
}

/// The message as `tx` sees it.
async fn current(tx: &Transaction<'_>, message_id: &str) -> Result<Message, StoreError> {
    let read =
        tx.prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1")).await?;
    messages_from(&tx.query(&read, &[&message_id]).await?)?
        .pop()
        .ok_or_else(|| StoreError::Backend(format!("message {message_id} vanished").into()))
}

/// Records a reply by `replier` (mentioning `mentioned`) in the thread of `root_id`: the
/// root's summary, version and revision move, and the root's author, the replier and the
/// mentioned follow the thread. The caller holds the conversation's row lock.
pub(super) async fn record_reply(
    tx: &Transaction<'_>,
    root_id: &str,
    replier: &str,
    mentioned: &[&str],
    at: Timestamp,
) -> Result<ThreadReply, StoreError> {
    let read = tx
        .prepare_cached("SELECT conversation_id, sender_id, thread_participants FROM messages WHERE id = $1")
        .await?;
    let row = tx.query_one(&read, &[&root_id]).await?;
    let (conversation_id, author): (String, String) = (get(&row, 0)?, get(&row, 1)?);
    let mut participants = get::<Json<Vec<String>>>(&row, 2)?.0;
    if participants.is_empty() {
        participants.push(author.clone());
    }
    let participants = append_rules::with_participant(participants, replier);
    let mut followers: Vec<&str> = vec![author.as_str(), replier];
    followers.extend(mentioned.iter().copied());
    let follow = tx
        .prepare_cached(
            "INSERT INTO thread_followers (root_id, user_id, since) SELECT $1, u, $3 FROM unnest($2::text[]) AS u \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    tx.execute(&follow, &[&root_id, &followers, &at.millis()]).await?;
    let revision = next_revision(tx, &conversation_id).await?;
    let update = tx
        .prepare_cached(
            "UPDATE messages SET reply_count = reply_count + 1, last_reply_at = $2, thread_participants = $3, \
             version = version + 1, revision = $4 WHERE id = $1",
        )
        .await?;
    tx.execute(&update, &[&root_id, &at.millis(), &Json(&participants), &revision]).await?;
    let root = current(tx, root_id).await?;
    let list = tx
        .prepare_cached("SELECT user_id FROM thread_followers WHERE root_id = $1 ORDER BY since, user_id")
        .await?;
    let followers = tx
        .query(&list, &[&root_id])
        .await?
        .iter()
        .map(|row| get(row, 0))
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ThreadReply { root, followers })
}

/// A reply of the thread of `root_id`, in `conversation_id`, was deleted: one reply fewer on
/// the root.
pub(super) async fn record_reply_deleted(
    tx: &Transaction<'_>,
    conversation_id: &str,
    root_id: &str,
) -> Result<(), StoreError> {
    let revision = next_revision(tx, conversation_id).await?;
    let update = tx
        .prepare_cached(
            "UPDATE messages SET reply_count = GREATEST(reply_count - 1, 0), version = version + 1, revision = $2 \
             WHERE id = $1",
        )
        .await?;
    tx.execute(&update, &[&root_id, &revision]).await?;
    Ok(())
}

/// A message's conversation, whether it is deleted and whether it is pinned, locking its
/// conversation's row first (every change takes a revision from it); `None` if there is no
/// such message.
async fn lock_message(
    tx: &Transaction<'_>,
    message_id: &str,
) -> Result<Option<(String, bool, bool)>, StoreError> {
    let find = tx.prepare_cached("SELECT conversation_id FROM messages WHERE id = $1").await?;
    let Some(row) = tx.query_opt(&find, &[&message_id]).await? else { return Ok(None) };
    let conversation_id: String = get(&row, 0)?;
    let lock = tx.prepare_cached("SELECT 1 FROM conversations WHERE id = $1 FOR NO KEY UPDATE").await?;
    tx.query_opt(&lock, &[&conversation_id]).await?;
    let state = tx
        .prepare_cached("SELECT deleted_at IS NOT NULL, pinned_at IS NOT NULL FROM messages WHERE id = $1")
        .await?;
    let row = tx.query_one(&state, &[&message_id]).await?;
    Ok(Some((conversation_id, get(&row, 0)?, get(&row, 1)?)))
}

/// Rewrites a message's reaction summary from its reactions, with the conversation's next
/// revision; returns the message.
async fn refresh_reactions(
    tx: &Transaction<'_>,
    message_id: &str,
    conversation_id: &str,
) -> Result<Message, StoreError> {
    let count = tx
        .prepare_cached("SELECT emoji, count(*) FROM reactions WHERE message_id = $1 GROUP BY emoji")
        .await?;
    let counts = tx
        .query(&count, &[&message_id])
        .await?
        .iter()
        .map(|row| Ok((get(row, 0)?, get(row, 1)?)))
        .collect::<Result<BTreeMap<String, i64>, StoreError>>()?;
    let newest = tx
        .prepare_cached(
            "SELECT user_id, emoji FROM reactions WHERE message_id = $1 \
             ORDER BY created_at DESC, user_id DESC, emoji DESC LIMIT $2",
        )
        .await?;
    let latest = tx
        .query(&newest, &[&message_id, &as_i64(LATEST_REACTIONS)])
        .await?
        .iter()
        .map(|row| Ok(ReactionRef { user_id: get(row, 0)?, emoji: get(row, 1)? }))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let revision = next_revision(tx, conversation_id).await?;
    let update = tx
        .prepare_cached(
            "UPDATE messages SET reaction_counts = $2, latest_reactions = $3, version = version + 1, revision = $4 \
             WHERE id = $1",
        )
        .await?;
    tx.execute(&update, &[&message_id, &Json(&counts), &Json(&latest), &revision]).await?;
    current(tx, message_id).await
}

/// Sets or clears a message's pin, with the conversation's next revision.
async fn set_pin(
    tx: &Transaction<'_>,
    message_id: &str,
    conversation_id: &str,
    pin: Option<(&str, Timestamp)>,
) -> Result<Message, StoreError> {
    let revision = next_revision(tx, conversation_id).await?;
    let update = tx
        .prepare_cached(
            "UPDATE messages SET pinned_by = $2, pinned_at = $3, version = version + 1, revision = $4 WHERE id = $1",
        )
        .await?;
    tx.execute(&update, &[&message_id, &pin.map(|p| p.0), &pin.map(|p| p.1.millis()), &revision]).await?;
    current(tx, message_id).await
}

/// One reaction or pin change, as [`PostgresStore::annotate`] applies it.
enum Change<'a> {
    AddReaction { user_id: &'a str, emoji: &'a str, at: Timestamp, max_per_user: usize },
    RemoveReaction { user_id: &'a str, emoji: &'a str },
    Pin { user_id: &'a str, at: Timestamp, max_pins: usize },
    Unpin,
}

/// Applies `change` to a message of `conversation_id` (deleted, pinned as given), inside `tx`.
async fn apply(
    tx: &Transaction<'_>,
    message_id: &str,
    conversation_id: &str,
    (deleted, pinned): (bool, bool),
    change: Change<'_>,
) -> Result<Annotated, StoreError> {
    match change {
        Change::AddReaction { user_id, emoji, at, max_per_user } => {
            if deleted {
                return Ok(Annotated::Deleted);
            }
            let mine = tx
                .prepare_cached(
                    "SELECT count(*), count(*) FILTER (WHERE emoji = $3) FROM reactions \
                     WHERE message_id = $1 AND user_id = $2",
                )
                .await?;
            let row = tx.query_one(&mine, &[&message_id, &user_id, &emoji]).await?;
            let (count, same): (i64, i64) = (get(&row, 0)?, get(&row, 1)?);
            if same > 0 {
                return Ok(Annotated::Unchanged(current(tx, message_id).await?));
            }
            if count >= as_i64(max_per_user) {
                return Ok(Annotated::LimitReached);
            }
            let insert = tx
                .prepare_cached(
                    "INSERT INTO reactions (message_id, user_id, emoji, created_at) VALUES ($1, $2, $3, $4)",
                )
                .await?;
            tx.execute(&insert, &[&message_id, &user_id, &emoji, &at.millis()]).await?;
            Ok(Annotated::Changed(refresh_reactions(tx, message_id, conversation_id).await?))
        }
        Change::RemoveReaction { user_id, emoji } => {
            let delete = tx
                .prepare_cached("DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3")
                .await?;
            if tx.execute(&delete, &[&message_id, &user_id, &emoji]).await? == 0 {
                return Ok(Annotated::Unchanged(current(tx, message_id).await?));
            }
            Ok(Annotated::Changed(refresh_reactions(tx, message_id, conversation_id).await?))
        }
        Change::Pin { user_id, at, max_pins } => {
            if deleted {
                return Ok(Annotated::Deleted);
            }
            if pinned {
                return Ok(Annotated::Unchanged(current(tx, message_id).await?));
            }
            let count = tx
                .prepare_cached(
                    "SELECT count(*) FROM messages WHERE conversation_id = $1 AND pinned_at IS NOT NULL",
                )
                .await?;
            let pins: i64 = get(&tx.query_one(&count, &[&conversation_id]).await?, 0)?;
            if pins >= as_i64(max_pins) {
                return Ok(Annotated::LimitReached);
            }
            Ok(Annotated::Changed(set_pin(tx, message_id, conversation_id, Some((user_id, at))).await?))
        }
        Change::Unpin => {
            if !pinned {
                return Ok(Annotated::Unchanged(current(tx, message_id).await?));
            }
            Ok(Annotated::Changed(set_pin(tx, message_id, conversation_id, None).await?))
        }
    }
}

impl PostgresStore {
    /// Runs one change in a transaction, after locking the message's conversation row.
    async fn annotate(&self, message_id: &str, change: Change<'_>) -> Result<Annotated, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let outcome = match lock_message(&tx, message_id).await? {
            None => Annotated::NoMessage,
            Some((conversation_id, deleted, pinned)) => {
                apply(&tx, message_id, &conversation_id, (deleted, pinned), change).await?
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }
}

#[async_trait]
impl AnnotationStore for PostgresStore {
    async fn add_reaction(
        &self,
        message_id: &str,
        user_id: &str,
        emoji: &str,
        at: Timestamp,
        max_per_user: usize,
    ) -> Result<Annotated, StoreError> {
        self.annotate(message_id, Change::AddReaction { user_id, emoji, at, max_per_user }).await
    }

    async fn remove_reaction(
        &self,
        message_id: &str,
        user_id: &str,
        emoji: &str,
    ) -> Result<Annotated, StoreError> {
        self.annotate(message_id, Change::RemoveReaction { user_id, emoji }).await
    }

    async fn reactions(
        &self,
        message_id: &str,
        after: Option<ReactionCursor>,
        limit: usize,
    ) -> Result<Vec<Reaction>, StoreError> {
        let (at, user, emoji) = match &after {
            Some(c) => (c.created_at.millis(), c.user_id.as_str(), c.emoji.as_str()),
            None => (i64::MIN, "", ""),
        };
        self.query(
            "SELECT user_id, emoji, created_at FROM reactions WHERE message_id = $1 \
               AND (created_at, user_id, emoji) > ($2, $3, $4) ORDER BY created_at, user_id, emoji LIMIT $5",
            &[&message_id, &at, &user, &emoji, &as_i64(limit)],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(Reaction { user_id: get(row, 0)?, emoji: get(row, 1)?, created_at: Timestamp(get(row, 2)?) })
        })
        .collect()
    }

    async fn pin_message(
        &self,
        message_id: &str,
        user_id: &str,
        at: Timestamp,
        max_pins: usize,
    ) -> Result<Annotated, StoreError> {
        self.annotate(message_id, Change::Pin { user_id, at, max_pins }).await
    }

    async fn unpin_message(&self, message_id: &str) -> Result<Annotated, StoreError> {
        self.annotate(message_id, Change::Unpin).await
    }

    async fn pinned_messages(&self, conversation_id: &str) -> Result<Vec<Message>, StoreError> {
        let rows = self
            .query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = $1 AND m.pinned_at IS NOT NULL \
                     ORDER BY m.pinned_at DESC, m.seq DESC"
                ),
                &[&conversation_id],
            )
            .await?;
        messages_from(&rows)
    }

    async fn thread_replies(
        &self,
        root_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let rows = self
            .query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.thread_id = $1 AND m.seq > $2 \
                     ORDER BY m.seq LIMIT $3"
                ),
                &[&root_id, &after_seq, &as_i64(limit).saturating_add(1)],
            )
            .await?;
        Ok(page_of_messages(messages_from(&rows)?, limit))
    }

    async fn changed_messages(
        &self,
        conversation_id: &str,
        after_revision: i64,
        up_to_seq: i64,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let rows = self
            .query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = $1 AND m.revision > $2 \
                     AND m.seq <= $3 ORDER BY m.revision LIMIT $4"
                ),
                &[&conversation_id, &after_revision, &up_to_seq, &as_i64(limit).saturating_add(1)],
            )
            .await?;
        Ok(page_of_messages(messages_from(&rows)?, limit))
    }

    async fn unread_mentions(&self, user_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        self.query(
            "SELECT mn.conversation_id, count(*) FROM mentions mn JOIN members m \
               ON m.conversation_id = mn.conversation_id AND m.user_id = mn.user_id \
             WHERE mn.user_id = $1 AND mn.seq > m.last_read_seq GROUP BY mn.conversation_id",
            &[&user_id],
        )
        .await?
        .iter()
        .map(|row| Ok((get(row, 0)?, get(row, 1)?)))
        .collect()
    }
}
