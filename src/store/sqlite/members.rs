//! Members: standing, additions, removals with owner succession, read markers, mute switches, unread counts.

use super::*;

#[async_trait]
impl MemberStore for SqliteStore {
    async fn membership(&self, conversation_id: &str, user_id: &str) -> Result<Membership, StoreError> {
        let (conversation_id, user_id) = (conversation_id.to_owned(), user_id.to_owned());
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT c.type, m.user_id, m.role, m.joined_at, m.last_read_seq, m.notifications, c.status \
                     FROM conversations c LEFT JOIN members m \
                       ON m.conversation_id = c.id AND m.user_id = ?2 \
                     WHERE c.id = ?1",
                )?
                .query_row(params![conversation_id, user_id], |r| {
                    let kind: String = r.get(0)?;
                    let member: Option<String> = r.get(1)?;
                    let status: String = r.get(6)?;
                    Ok((
                        (kind, status),
                        member.map(|uid| {
                            Ok::<_, rusqlite::Error>((uid, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                        }),
                    ))
                })
                .optional()?;
            let Some(((kind, status), member)) = row else { return Ok(Membership::NoConversation) };
            let kind =
                ConversationType::parse(&kind).ok_or_else(|| unknown_name("conversation type", &kind))?;
            let status = ConversationStatus::parse(&status).ok_or_else(|| unknown_name("status", &status))?;
            match member {
                None => Ok(Membership::NotMember),
                Some(fields) => Ok(Membership::Member { member: into_member(fields?)?, kind, status }),
            }
        })
        .await
    }

    async fn add_members(
        &self,
        conversation_id: &str,
        user_ids: Vec<String>,
        role: Role,
        joined_at: Timestamp,
        by: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let (conversation_id, by) = (conversation_id.to_owned(), by.to_owned());
        self.write(move |conn| {
            let named: Vec<&str> = user_ids.iter().map(String::as_str).collect();
            if blocks_between(conn, &by, &named, false)? {
                return Ok(None);
            }
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
            Ok(Some(added))
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
        until: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let (conversation_id, user_id) = (conversation_id.to_owned(), user_id.to_owned());
        let until = until.filter(|_| !enabled).map(|t| t.millis());
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE members SET notifications = ?3, muted_until = ?4 \
                     WHERE conversation_id = ?1 AND user_id = ?2",
                )?
                .execute(params![conversation_id, user_id, enabled, until])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn set_archived(
        &self,
        conversation_id: &str,
        user_id: &str,
        archived: bool,
    ) -> Result<bool, StoreError> {
        let (conversation_id, user_id) = (conversation_id.to_owned(), user_id.to_owned());
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE members SET archived = ?3 WHERE conversation_id = ?1 AND user_id = ?2",
                )?
                .execute(params![conversation_id, user_id, archived])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn end_mutes(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.write(move |conn| {
            Ok(conn
                .prepare_cached(
                    "UPDATE members SET notifications = 1, muted_until = NULL \
                     WHERE muted_until IS NOT NULL AND muted_until <= ?1",
                )?
                .execute([now.millis()])?)
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
}
