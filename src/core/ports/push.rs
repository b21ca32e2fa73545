//! The push port: the outbox's jobs as the worker sees them and the providers that send
//! one notification to one device.

use async_trait::async_trait;
use serde::Serialize;

use std::time::Duration;

use crate::core::model::Device;
use crate::core::time::Timestamp;

/// A push notification owed to an offline member, recorded durably (the outbox) and sent
/// later by a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct PushJob {
    /// Fresh time-ordered id.
    pub id: String,
    /// Recipient.
    pub user_id: String,
    /// Conversation of the message.
    pub conversation_id: String,
    /// The message.
    pub message_id: String,
    /// Its seq.
    pub seq: i64,
    /// When the job was recorded.
    pub created_at: Timestamp,
}

/// A push job leased to one worker by [`PushOutbox::claim_push_jobs`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedPushJob {
    /// The job.
    pub job: PushJob,
    /// Which claim of the job this is, from 1; every claim counts, including those whose
    /// lease ran out before the worker finished or rescheduled the job.
    pub attempt: u32,
    /// End of the lease: from then on the job is due again unless it was finished or
    /// rescheduled meanwhile.
    pub leased_until: Timestamp,
    /// The error the last [`PushOutbox::retry_push_job`] recorded, if any.
    pub last_error: Option<String>,
}

/// Longest error text (in bytes) a push job keeps; see [`clip_push_error`].
pub const PUSH_ERROR_MAX_BYTES: usize = 1024;

/// `error` cut to at most [`PUSH_ERROR_MAX_BYTES`] at a character boundary, as stores keep it
/// (a provider's error body can be arbitrarily long).
pub fn clip_push_error(error: &str) -> &str {
    let mut end = error.len().min(PUSH_ERROR_MAX_BYTES);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error.get(..end).unwrap_or_default()
}

/// What one push notification says, the same for every provider (each maps it onto its
/// own request). Holds no more of the message than the configured preview length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushPayload {
    /// `"mention"` when the message mentions the recipient, else `"message"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Headline: the conversation's name, or the sender for an unnamed conversation.
    pub title: String,
    /// The message preview; `None` when there is no text to show.
    pub body: Option<String>,
    /// Conversation of the message.
    pub conversation_id: String,
    /// The message.
    pub message_id: String,
    /// Its seq.
    pub seq: i64,
    /// Who sent it.
    pub sender_id: String,
    /// The recipient's total unread count (the app icon badge).
    pub badge: i64,
    /// Set when pushes collapse (`--push-collapse-ms`): the device shows only the newest
    /// notification with this id (APNs `apns-collapse-id`, FCM `collapse_key`); it is the
    /// conversation id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_id: Option<String>,
}

/// Why a push provider did not deliver a notification, classed by what the worker does next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PushError {
    /// Transient (5xx, 408, 429, timeout, connection error): send again later, not before
    /// `retry_after` if the provider said so.
    #[error("{reason}")]
    Retry {
        /// What went wrong, for the log and the job's last error.
        reason: String,
        /// The provider's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The provider reports the device's token dead: the device is deleted.
    #[error("device gone: {0}")]
    DeviceGone(String),
    /// Sending this again will not help (rejected request, misconfigured device).
    #[error("{0}")]
    Permanent(String),
}

/// Sends one notification to one device through one push service (FCM, APNs, Web Push, a
/// webhook). Implementations bound each send by a timeout (the worker's lease assumes it)
/// and never panic on what a provider answers.
#[async_trait]
pub trait Push: Send + Sync + 'static {
    /// Delivers `payload` to `device` (of this provider's platform).
    async fn send(&self, device: &Device, payload: &PushPayload) -> Result<(), PushError>;
}
