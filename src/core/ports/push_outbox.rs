//! The push outbox port: durable push jobs, leased to one worker at a time across nodes.
//! Part of [`super::Store`].

use std::time::Duration;

use async_trait::async_trait;

use super::{ClaimedPushJob, PushJob};
use crate::core::error::StoreError;
use crate::core::time::Timestamp;

/// The push outbox: durable jobs, leased to one worker at a time across nodes.
#[async_trait]
pub trait PushOutbox: Send + Sync + 'static {
    /// Records push jobs durably, due at once.
    async fn enqueue_push(&self, jobs: Vec<PushJob>) -> Result<(), StoreError> {
        self.enqueue_push_delayed(jobs, std::time::Duration::ZERO).await
    }

    /// Records push jobs durably, due `delay` after they were created (a later message of
    /// the same conversation may collapse them meanwhile, see [`PushOutbox::newer_push_job`]).
    async fn enqueue_push_delayed(
        &self,
        jobs: Vec<PushJob>,
        delay: std::time::Duration,
    ) -> Result<(), StoreError>;

    /// Whether an unfinished push job for the same user and conversation with a higher seq
    /// exists (the job is collapsed into that one).
    async fn newer_push_job(&self, job: &PushJob) -> Result<bool, StoreError>;

    /// Resolves once [`PushOutbox::enqueue_push`] recorded jobs through this store (this node)
    /// since the previous call resolved, at once if that already happened. Lets the push
    /// worker wake up for new jobs instead of waiting for its next poll. A store that cannot
    /// tell never resolves (the worker polls anyway, and jobs from other nodes are found by
    /// polling).
    async fn push_enqueued(&self) {
        std::future::pending::<()>().await
    }

    /// Push jobs not yet finished (neither sent nor dropped), leased or not, oldest first.
    async fn pending_push_jobs(&self, limit: usize) -> Result<Vec<PushJob>, StoreError>;

    /// How many push jobs are not finished (neither sent nor dropped), leased or not: the
    /// outbox depth operators watch. A count over the outbox's partial index; never called
    /// on the send path.
    async fn push_outbox_depth(&self) -> Result<u64, StoreError>;

    /// Leases up to `limit` due push jobs to the caller: jobs not finished whose
    /// `next_attempt_at` is at or before now, earliest due first (which for jobs never retried
    /// is oldest first), ties by id. Each claimed job's `next_attempt_at` becomes now + `lease`
    /// and its attempt count goes up by one; the result is ordered by id.
    ///
    /// Atomic across every node sharing the database: concurrent claims never return the same
    /// job, and never wait for one another (a job another claim is taking is skipped). While
    /// leased, a job is not claimed again; once the lease runs out (its worker died or was
    /// too slow) it is due again, with the attempt counted. A worker should therefore finish
    /// or reschedule a job well within its lease; delivery is at least once. "Now" is this
    /// node's clock, so nodes' clocks must agree to well within a lease.
    async fn claim_push_jobs(&self, limit: usize, lease: Duration)
    -> Result<Vec<ClaimedPushJob>, StoreError>;

    /// Whether claim `attempt` still holds job `id`: the job is unfinished, has not been
    /// claimed again since, and the claim's lease has not run out. The push worker checks it
    /// before each send, so a worker that outlived its lease sends nothing more.
    async fn push_job_held(&self, id: &str, attempt: u32) -> Result<bool, StoreError>;

    /// Marks a job sent: it is finished and never claimed again (lease or not). False, and
    /// nothing changes, when no unfinished job has that id (already sent, dropped, pruned),
    /// or when it has been claimed again since claim `attempt` (see below).
    ///
    /// Fencing: this, [`PushOutbox::retry_push_job`] and [`PushOutbox::drop_push_job`] act only while
    /// the job's attempt count is still `attempt` (the [`ClaimedPushJob::attempt`] of the
    /// caller's claim), so a worker whose lease ran out and whose job was claimed again
    /// cannot overwrite what the newer claim's worker decides.
    async fn complete_push_job(&self, id: &str, attempt: u32) -> Result<bool, StoreError>;

    /// Reschedules an unfinished job: it is not claimed before `next_attempt_at`, and the
    /// `error` (clipped by [`clip_push_error`]) is kept as its last error. The attempt count
    /// is unchanged (the next claim counts). False, and nothing changes, when no unfinished
    /// job has that id, or it was claimed again since claim `attempt`; a finished job is
    /// never revived.
    async fn retry_push_job(
        &self,
        id: &str,
        attempt: u32,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<bool, StoreError>;

    /// Gives up on a job: it is finished without being sent and never claimed again; the row
    /// is kept, with `reason` (clipped by [`clip_push_error`]) as its last error, until
    /// [`PushOutbox::prune_push_jobs`] removes it. False, and nothing changes, when no unfinished
    /// job has that id, or it was claimed again since claim `attempt`.
    async fn drop_push_job(&self, id: &str, attempt: u32, reason: &str) -> Result<bool, StoreError>;

    /// Deletes up to `limit` finished (sent or dropped) jobs that finished before
    /// `finished_before`, earliest finished first; returns how many. Unfinished jobs are never
    /// deleted. Bounded so a periodic call never holds the database for long.
    async fn prune_push_jobs(&self, finished_before: Timestamp, limit: usize) -> Result<usize, StoreError>;
}
