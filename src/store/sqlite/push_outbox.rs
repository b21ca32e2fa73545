//! The push outbox: durable jobs leased to one worker at a time.

use super::*;

#[async_trait]
impl PushOutbox for SqliteStore {
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
}
