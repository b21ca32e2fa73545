//! The push worker: drains the durable outbox of push jobs (see [`Store::claim_push_jobs`]).
//!
//! One worker runs per node. It leases a batch of due jobs, builds each job's payload from
//! the store (preview at most the configured length, badge = the recipient's total unread),
//! sends it to every device of the recipient through the provider of the device's platform,
//! then finishes the job: completed when at least one device got it; rescheduled with
//! exponential backoff and jitter when a provider asked to retry and none got it; dropped
//! (and logged) after the configured number of attempts, or when nothing can be delivered.
//! Devices a provider reports gone are deleted. The devices of one job are sent to
//! concurrently, at most [`PushSettings::device_concurrency`] at once, and the lease is always
//! longer than the worst-case send of a job ([`PushSettings::min_lease`]). Before each send,
//! and in every finishing call, the worker checks that its claim still holds the job (the
//! claim's attempt is the fence), so a worker that outlived its lease sends and changes
//! nothing.
//!
//! The worker never runs on the chat send path: routing only records jobs, and the store
//! wakes the worker ([`Store::push_enqueued`]); jobs recorded on other nodes, or due again
//! after a backoff, are found by polling.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use governor::{DefaultDirectRateLimiter, Quota};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;

use crate::tasks::Tasks;

use super::error::StoreError;
use super::model::{Device, Platform};
use super::notification_routing::preview;
use super::ports::{ClaimedPushJob, Push, PushError, PushJob, PushPayload, Store};
use super::telemetry;
use super::time::Timestamp;

/// The longest a provider's `Retry-After` may postpone a job.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How often finished jobs older than [`FINISHED_RETENTION`] are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);
/// How long finished (sent or dropped) jobs are kept, for inspection.
const FINISHED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most finished jobs one prune deletes.
const PRUNE_BATCH: usize = 1000;
/// Most HTTP requests one provider makes for one send (FCM: an access token, the send, and
/// once more both when the token was refused), each bounded by the request timeout.
pub const REQUESTS_PER_SEND: u32 = 4;
/// What a lease adds to the sends' worst case: the store calls before and after them.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// How the worker claims, retries and gives up; defaults suit production.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// Most jobs claimed (and sent concurrently) at once.
    pub batch_size: usize,
    /// How long a claimed job stays leased to this worker; the configuration makes it at
    /// least [`PushSettings::min_lease`].
    pub lease: Duration,
    /// Attempts after which a job that still could not be delivered is dropped.
    pub max_attempts: u32,
    /// Delay before the second attempt; each later one doubles it (plus jitter).
    pub retry_base: Duration,
    /// Longest delay between attempts (before a provider's `Retry-After`).
    pub retry_max: Duration,
    /// Sleep between claims when nothing is due (new jobs on this node wake it earlier).
    pub poll_interval: Duration,
    /// Most characters of the message in a notification.
    pub preview_chars: usize,
    /// Skip a job when a newer one for the same user and conversation is pending (that one
    /// carries the newest message and the badge); on when pushes wait to collapse.
    pub collapse: bool,
    /// Most jobs started per second on this node (0: no cap). A backlog then drains at this
    /// pace instead of taking the CPU the chat send path needs.
    pub max_rate: u32,
    /// Most devices of one job sent to at once.
    pub device_concurrency: usize,
    /// Longest one send to one device may take: the providers' request timeout ×
    /// [`REQUESTS_PER_SEND`].
    pub send_timeout: Duration,
    /// Most devices a user keeps (`--max-devices-per-user`), for [`PushSettings::min_lease`].
    pub max_devices: usize,
}

impl PushSettings {
    /// The shortest safe lease: every device of a job sent, [`PushSettings::device_concurrency`]
    /// at a time, each taking its worst case [`PushSettings::send_timeout`], plus a margin for
    /// the store calls. A worker whose sends take longer anyway (a user with more devices than
    /// the cap allows today, a paused process) stops sending once the lease has run out.
    pub fn min_lease(&self) -> Duration {
        let rounds = self.max_devices.max(1).div_ceil(self.device_concurrency.max(1));
        let rounds = u32::try_from(rounds).unwrap_or(u32::MAX);
        self.send_timeout.saturating_mul(rounds).saturating_add(LEASE_MARGIN)
    }
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            batch_size: 32,
            lease: Duration::from_secs(30),
            max_attempts: 8,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(900),
            poll_interval: Duration::from_secs(1),
            preview_chars: 100,
            collapse: false,
            max_rate: 1000,
            device_concurrency: 10,
            send_timeout: Duration::from_secs(10).saturating_mul(REQUESTS_PER_SEND),
            max_devices: 10,
        }
    }
}

/// The delay before the attempt after `attempt` (from 1): `retry_base` doubled per earlier
/// attempt, at most `retry_max`, of which the upper half is scaled by `jitter` (in [0, 1])
/// so that jobs failing together do not retry together.
pub fn backoff(attempt: u32, retry_base: Duration, retry_max: Duration, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    let full = retry_base.saturating_mul(1 << doublings).min(retry_max);
    let half = full / 2;
    half.saturating_add(half.mul_f64(jitter.clamp(0.0, 1.0)))
}

/// The push providers a node has, one per platform.
#[derive(Default, Clone)]
pub struct Providers {
    by_platform: Vec<(Platform, Arc<dyn Push>)>,
}

impl Providers {
    /// Adds (or replaces) the provider of `platform`.
    pub fn with(mut self, platform: Platform, provider: Arc<dyn Push>) -> Self {
        self.by_platform.retain(|(p, _)| *p != platform);
        self.by_platform.push((platform, provider));
        self
    }

    /// The provider of `platform`, if there is one.
    pub fn get(&self, platform: Platform) -> Option<&Arc<dyn Push>> {
        self.by_platform.iter().find(|(p, _)| *p == platform).map(|(_, provider)| provider)
    }

    /// Whether there is no provider at all (then the worker has nothing to do).
    pub fn is_empty(&self) -> bool {
        self.by_platform.is_empty()
    }
}

/// Drains the push outbox; see the module docs.
pub struct PushWorker {
    store: Arc<dyn Store>,
    providers: Providers,
    settings: PushSettings,
    /// Paces job starts to `settings.max_rate`; `None` when uncapped.
    pace: Option<DefaultDirectRateLimiter>,
}

/// A running worker; [`PushWorkerHandle::stop`] ends it gracefully.
pub struct PushWorkerHandle {
    stop: watch::Sender<bool>,
    ended: oneshot::Receiver<()>,
}

impl PushWorkerHandle {
    /// Stops claiming, lets the jobs being sent finish (each send is bounded by its
    /// provider's timeout) and returns once the worker has ended. Jobs it had not finished
    /// stay leased and are claimed again when the lease runs out.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        // An error means the worker ended without saying so: it panicked (logged by the
        // task set) or the set was stopped first.
        let _ = self.ended.await;
    }
}

/// What became of one claimed job (for logs and tests).
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// At least one device got it.
    Delivered,
    /// Rescheduled for `at`.
    Retried {
        /// When it is due again.
        at: Timestamp,
    },
    /// Given up on, for `reason`.
    Dropped {
        /// Why.
        reason: String,
    },
    /// Another claim of the job has taken over (this worker's lease ran out).
    Superseded,
}

/// What became of one device's send.
enum DeviceSend {
    /// No provider for the device's platform.
    NoProvider,
    /// Not sent: the claim no longer holds the job.
    Fenced,
    /// Sent, with the provider's answer.
    Done(Result<(), PushError>),
}

impl PushWorker {
    /// A worker over `store` sending through `providers`.
    pub fn new(store: Arc<dyn Store>, providers: Providers, settings: PushSettings) -> PushWorker {
        let pace = NonZeroU32::new(settings.max_rate).map(|rate| {
            let burst = u32::try_from(settings.batch_size).ok().and_then(NonZeroU32::new).unwrap_or(rate);
            DefaultDirectRateLimiter::direct(Quota::per_second(rate).allow_burst(burst.min(rate)))
        });
        PushWorker { store, providers, settings, pace }
    }

    /// Runs the worker as one of `tasks` until [`PushWorkerHandle::stop`].
    pub fn spawn(self: Arc<Self>, tasks: &Tasks) -> PushWorkerHandle {
        let (stop, stopped) = watch::channel(false);
        let (done, ended) = oneshot::channel();
        tasks.spawn("push worker", async move {
            self.run(stopped).await;
            let _ = done.send(());
        });
        PushWorkerHandle { stop, ended }
    }

    /// The worker loop: claim a batch and send it, or sleep until polled, woken or stopped.
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            batch = self.settings.batch_size,
            max_attempts = self.settings.max_attempts,
            "push worker started"
        );
        let mut last_prune: Option<tokio::time::Instant> = None;
        while !*stop.borrow() {
            let claimed = match self.clone().run_once().await {
                Ok(claimed) => claimed,
                Err(err) => {
                    telemetry::store_error();
                    tracing::warn!(error = %err, "push worker: claiming jobs failed");
                    0
                }
            };
            if claimed > 0 {
                continue;
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
                last_prune = Some(tokio::time::Instant::now());
                self.prune().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = self.store.push_enqueued() => {}
                _ = stop.changed() => {}
            }
        }
        tracing::info!("push worker stopped");
    }

    /// Claims one batch of due jobs and sends them concurrently (started no faster than
    /// `max_rate`), returning once each is finished or rescheduled; returns how many were
    /// claimed.
    pub async fn run_once(self: Arc<Self>) -> Result<usize, StoreError> {
        // No more than the pace starts within a second, so that no claimed job waits for its
        // turn while its lease runs.
        let limit = match self.settings.max_rate {
            0 => self.settings.batch_size,
            rate => self.settings.batch_size.min(usize::try_from(rate).unwrap_or(usize::MAX)),
        };
        let claimed = self.store.claim_push_jobs(limit, self.settings.lease).await?;
        let count = claimed.len();
        let mut sends = JoinSet::new();
        for job in claimed {
            if let Some(pace) = &self.pace {
                pace.until_ready().await;
            }
            let worker = self.clone();
            sends.spawn(async move { worker.process(job).await });
        }
        while let Some(result) = sends.join_next().await {
            if let Err(err) = result
                && err.is_panic()
            {
                tracing::error!("push worker: a send panicked");
            }
        }
        Ok(count)
    }

    /// Sends one claimed job and finishes it; store errors leave it leased (it is claimed
    /// again when the lease runs out).
    async fn process(&self, claimed: ClaimedPushJob) -> Option<JobOutcome> {
        let job_id = claimed.job.id.clone();
        match self.try_process(&claimed).await {
            Ok(outcome) => {
                match &outcome {
                    JobOutcome::Delivered => {
                        tracing::debug!(job = %job_id, attempt = claimed.attempt, "push delivered")
                    }
                    JobOutcome::Retried { at } => {
                        tracing::debug!(job = %job_id, attempt = claimed.attempt, at = %at.to_rfc3339(), "push retried")
                    }
                    JobOutcome::Dropped { reason } => {
                        tracing::info!(job = %job_id, attempt = claimed.attempt, %reason, "push dropped")
                    }
                    JobOutcome::Superseded => {
                        tracing::warn!(job = %job_id, attempt = claimed.attempt, "push job lease ran out before it was finished")
                    }
                }
                Some(outcome)
            }
            Err(err) => {
                telemetry::store_error();
                tracing::warn!(job = %job_id, error = %err, "push worker: store failed; the job is retried after its lease");
                None
            }
        }
    }

    async fn try_process(&self, claimed: &ClaimedPushJob) -> Result<JobOutcome, StoreError> {
        let (job, attempt) = (&claimed.job, claimed.attempt);
        if attempt > self.settings.max_attempts {
            // Earlier claims' leases ran out without a result (the worker died or hung).
            let reason = format!(
                "gave up after {} attempts; last error: {}",
                self.settings.max_attempts,
                claimed.last_error.as_deref().unwrap_or("none (leases ran out)")
            );
            return self.drop_job(claimed, reason).await;
        }
        let payload = match self.payload(job).await? {
            Ok(payload) => payload,
            Err(skip) => return self.drop_job(claimed, skip.to_owned()).await,
        };
        let devices = self.store.devices(&job.user_id).await?;
        // At most `device_concurrency` sends at once, started in the devices' order.
        let bound = Semaphore::new(self.settings.device_concurrency.max(1));
        let mut sends = Vec::with_capacity(devices.len());
        for device in &devices {
            let (bound, payload) = (&bound, &payload);
            sends.push(async move {
                let _permit = bound.acquire().await;
                (device, self.send_fenced(claimed, device, payload).await)
            });
        }
        let sends = join_all(sends).await;
        let mut delivered = false;
        let mut fenced = false;
        let mut retry: Option<(String, Option<Duration>)> = None;
        let mut failures = Vec::new();
        for (device, send) in sends {
            match send? {
                DeviceSend::NoProvider => {
                    failures.push(format!("{}: no provider configured", device.platform.as_str()))
                }
                DeviceSend::Fenced => fenced = true,
                DeviceSend::Done(Ok(())) => delivered = true,
                DeviceSend::Done(Err(PushError::Retry { reason, retry_after })) => {
                    let later = retry.as_ref().and_then(|(_, after)| *after).max(retry_after);
                    retry = Some((format!("device {}: {reason}", device.id), later));
                }
                DeviceSend::Done(Err(PushError::DeviceGone(reason))) => {
                    self.remove_device(job, device, &reason).await?;
                    failures.push(format!("device {} gone: {reason}", device.id));
                }
                DeviceSend::Done(Err(PushError::Permanent(reason))) => {
                    tracing::warn!(job = %job.id, device = %device.id, %reason, "push refused by the provider");
                    failures.push(format!("device {}: {reason}", device.id));
                }
            }
        }
        if fenced && !delivered {
            // The claim no longer holds the job: whoever holds it now finishes it.
            return Ok(JobOutcome::Superseded);
        }
        if delivered {
            // A device that asked for a retry misses this one rather than the others getting
            // it twice.
            return Ok(
                self.fenced(self.store.complete_push_job(&job.id, attempt).await?, JobOutcome::Delivered)
            );
        }
        if let Some((error, retry_after)) = retry {
            if attempt >= self.settings.max_attempts {
                let reason = format!("gave up after {attempt} attempts; last error: {error}");
                return self.drop_job(claimed, reason).await;
            }
            let delay = backoff(attempt, self.settings.retry_base, self.settings.retry_max, rand::random())
                .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
            let at = Timestamp::now().plus(delay);
            let retried = self.store.retry_push_job(&job.id, attempt, at, &error).await?;
            return Ok(self.fenced(retried, JobOutcome::Retried { at }));
        }
        let reason = if devices.is_empty() { "no devices".to_owned() } else { failures.join("; ") };
        self.drop_job(claimed, reason).await
    }

    /// Sends `payload` to `device` if this claim still holds the job (checked right before,
    /// see [`Store::push_job_held`]).
    async fn send_fenced(
        &self,
        claimed: &ClaimedPushJob,
        device: &Device,
        payload: &PushPayload,
    ) -> Result<DeviceSend, StoreError> {
        let Some(provider) = self.providers.get(device.platform) else {
            return Ok(DeviceSend::NoProvider);
        };
        if Timestamp::now() >= claimed.leased_until
            || !self.store.push_job_held(&claimed.job.id, claimed.attempt).await?
        {
            return Ok(DeviceSend::Fenced);
        }
        Ok(DeviceSend::Done(provider.send(device, payload).await))
    }

    /// The job's notification, or why none is owed any more.
    async fn payload(&self, job: &PushJob) -> Result<Result<PushPayload, &'static str>, StoreError> {
        let Some(conversation) = self.store.conversation(&job.conversation_id, &job.user_id).await? else {
            return Ok(Err("the conversation is gone"));
        };
        let Some(member) = conversation.member(&job.user_id) else {
            return Ok(Err("no longer a member"));
        };
        if member.last_read_seq >= job.seq {
            return Ok(Err("read before it was sent"));
        }
        if self.settings.collapse && self.store.newer_push_job(job).await? {
            return Ok(Err("collapsed into the push of a newer message"));
        }
        let Some(message) = self.store.message(&job.message_id).await? else {
            return Ok(Err("the message is gone"));
        };
        if message.deleted_at.is_some() {
            return Ok(Err("the message was deleted"));
        }
        let user = self.store.notification_settings(&job.user_id).await?;
        if !user.enabled {
            return Ok(Err("the user turned notifications off"));
        }
        let mention_overrides_mute = user.mentions_when_muted && message.mentions(&job.user_id);
        if !(member.notifications || mention_overrides_mute) {
            return Ok(Err("the conversation is muted"));
        }
        let badge = self.store.unread_counts(&job.user_id).await?.iter().map(|(_, n)| n).sum();
        Ok(Ok(PushPayload {
            kind: if message.mentions(&job.user_id) { "mention" } else { "message" },
            title: conversation.name.clone().unwrap_or_else(|| message.sender_id.clone()),
            body: if conversation.private_preview {
                None
            } else {
                preview(&message, self.settings.preview_chars)
            },
            conversation_id: job.conversation_id.clone(),
            message_id: job.message_id.clone(),
            seq: job.seq,
            sender_id: message.sender_id,
            badge,
            collapse_id: self.settings.collapse.then(|| job.conversation_id.clone()),
        }))
    }

    async fn remove_device(&self, job: &PushJob, device: &Device, reason: &str) -> Result<(), StoreError> {
        if self.store.remove_device(&job.user_id, &device.id).await? {
            tracing::info!(user = %job.user_id, device = %device.id, platform = device.platform.as_str(), %reason,
                "push provider reports the device gone: removed it");
        }
        Ok(())
    }

    async fn drop_job(&self, claimed: &ClaimedPushJob, reason: String) -> Result<JobOutcome, StoreError> {
        let dropped = self.store.drop_push_job(&claimed.job.id, claimed.attempt, &reason).await?;
        if dropped && reason.starts_with("gave up") {
            tracing::warn!(job = %claimed.job.id, user = %claimed.job.user_id, %reason, "push job dropped");
        }
        Ok(self.fenced(dropped, JobOutcome::Dropped { reason }))
    }

    fn fenced(&self, applied: bool, outcome: JobOutcome) -> JobOutcome {
        if applied { outcome } else { JobOutcome::Superseded }
    }

    async fn prune(&self) {
        let retention = i64::try_from(FINISHED_RETENTION.as_millis()).unwrap_or(i64::MAX);
        let cutoff = Timestamp::now().millis().saturating_sub(retention);
        match self.store.prune_push_jobs(Timestamp(cutoff), PRUNE_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "pruned finished push jobs"),
            Err(err) => {
                telemetry::store_error();
                tracing::warn!(error = %err, "pruning finished push jobs failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(900);

    #[test]
    fn backoff_doubles_per_attempt_with_the_upper_half_jittered() {
        assert_eq!(backoff(1, BASE, MAX, 0.0), Duration::from_millis(2500));
        assert_eq!(backoff(1, BASE, MAX, 1.0), BASE);
        assert_eq!(backoff(2, BASE, MAX, 0.0), BASE);
        assert_eq!(backoff(3, BASE, MAX, 0.5), Duration::from_secs(15));
    }

    #[test]
    fn backoff_is_capped_and_never_overflows() {
        assert_eq!(backoff(9, BASE, MAX, 1.0), MAX);
        assert_eq!(backoff(u32::MAX, BASE, MAX, 1.0), MAX);
        let day = Duration::from_secs(86_400);
        assert_eq!(backoff(u32::MAX, day, day, 1.0), day);
        assert_eq!(backoff(0, BASE, MAX, 7.0), BASE, "attempt 0 counts as the first; jitter clamped");
    }
}
