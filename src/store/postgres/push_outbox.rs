//! The push outbox: durable jobs leased to one worker at a time.

use super::*;

#[async_trait]
impl PushOutbox for PostgresStore {
    async fn enqueue_push_delayed(&self, jobs: Vec<PushJob>, delay: Duration) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        let users: Vec<&str> = jobs.iter().map(|j| j.user_id.as_str()).collect();
        let conversations: Vec<&str> = jobs.iter().map(|j| j.conversation_id.as_str()).collect();
        let messages: Vec<&str> = jobs.iter().map(|j| j.message_id.as_str()).collect();
        let seqs: Vec<i64> = jobs.iter().map(|j| j.seq).collect();
        let created: Vec<i64> = jobs.iter().map(|j| j.created_at.millis()).collect();
        let due: Vec<i64> = jobs.iter().map(|j| j.created_at.plus(delay).millis()).collect();
        self.execute(
            "INSERT INTO push_jobs (id, user_id, conversation_id, message_id, seq, created_at, next_attempt_at) \
             SELECT id, u, c, m, s, t, d \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[]) \
               AS j (id, u, c, m, s, t, d)",
            &[&ids, &users, &conversations, &messages, &seqs, &created, &due],
        )
        .await?;
        self.push_enqueued.notify_one();
        Ok(())
    }

    async fn push_enqueued(&self) {
        self.push_enqueued.notified().await
    }

    async fn newer_push_job(&self, job: &PushJob) -> Result<bool, StoreError> {
        let rows = self
            .query(
                "SELECT 1 FROM push_jobs WHERE user_id = $1 AND conversation_id = $2 AND seq > $3 \
                 AND finished_at IS NULL LIMIT 1",
                &[&job.user_id, &job.conversation_id, &job.seq],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn pending_push_jobs(&self, limit: usize) -> Result<Vec<PushJob>, StoreError> {
        self.query(
            "SELECT id, user_id, conversation_id, message_id, seq, created_at FROM push_jobs \
             WHERE finished_at IS NULL ORDER BY id LIMIT $1",
            &[&as_i64(limit)],
        )
        .await?
        .iter()
        .map(push_job_from)
        .collect()
    }

    async fn push_outbox_depth(&self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT COUNT(*) FROM push_jobs WHERE finished_at IS NULL", &[]).await?;
        let depth: i64 = rows.first().map(|row| row.try_get(0)).transpose()?.unwrap_or(0);
        Ok(u64::try_from(depth).unwrap_or(0))
    }

    async fn claim_push_jobs(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedPushJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = Timestamp::now();
        let leased_until = now.plus(lease);
        // One statement: the subquery locks the due rows it picks and skips rows other claims
        // hold, so concurrent claims on any node take disjoint jobs without waiting; a row
        // another claim took and committed meanwhile fails the re-check of the due condition.
        let rows = self
            .query(
                "UPDATE push_jobs SET next_attempt_at = $1, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM push_jobs \
                     WHERE finished_at IS NULL AND next_attempt_at <= $2 \
                     ORDER BY next_attempt_at, id LIMIT $3 \
                     FOR UPDATE SKIP LOCKED) \
                 RETURNING id, user_id, conversation_id, message_id, seq, created_at, attempts, last_error",
                &[&leased_until.millis(), &now.millis(), &as_i64(limit)],
            )
            .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let job = push_job_from(row)?;
                let attempts: i32 = get(row, 6)?;
                let attempt = u32::try_from(attempts).map_err(|_| {
                    StoreError::Backend(format!("push job {} has {attempts} attempts", job.id).into())
                })?;
                Ok(ClaimedPushJob { job, attempt, leased_until, last_error: get(row, 7)? })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by(|a, b| a.job.id.cmp(&b.job.id));
        Ok(claimed)
    }

    async fn push_job_held(&self, id: &str, attempt: u32) -> Result<bool, StoreError> {
        let rows = self
            .query(
                "SELECT 1 FROM push_jobs \
                 WHERE id = $1 AND attempts = $2 AND finished_at IS NULL AND next_attempt_at > $3",
                &[&id, &attempt_param(attempt), &Timestamp::now().millis()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn complete_push_job(&self, id: &str, attempt: u32) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE push_jobs SET sent_at = $2, finished_at = $2 \
                 WHERE id = $1 AND attempts = $3 AND finished_at IS NULL",
                &[&id, &Timestamp::now().millis(), &attempt_param(attempt)],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn retry_push_job(
        &self,
        id: &str,
        attempt: u32,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE push_jobs SET next_attempt_at = $2, last_error = $3 \
                 WHERE id = $1 AND attempts = $4 AND finished_at IS NULL",
                &[&id, &next_attempt_at.millis(), &clip_push_error(error), &attempt_param(attempt)],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn drop_push_job(&self, id: &str, attempt: u32, reason: &str) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE push_jobs SET finished_at = $2, last_error = $3 \
                 WHERE id = $1 AND attempts = $4 AND finished_at IS NULL",
                &[&id, &Timestamp::now().millis(), &clip_push_error(reason), &attempt_param(attempt)],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn prune_push_jobs(&self, finished_before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let deleted = self
            .execute(
                "DELETE FROM push_jobs WHERE id IN (SELECT id FROM push_jobs \
                 WHERE finished_at < $1 ORDER BY finished_at LIMIT $2)",
                &[&finished_before.millis(), &as_i64(limit)],
            )
            .await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }
}
