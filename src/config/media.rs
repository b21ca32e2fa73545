//! The media settings: upload limits, lifetimes, and where media are stored.

use super::*;
use crate::core::media::inspect;

/// The upload limits and media lifetimes from `settings`.
pub(super) fn media_limits(settings: &Settings) -> anyhow::Result<MediaLimits> {
    let defaults = MediaLimits::default();
    let duration = |flag: &str, value: &Option<String>, default: Duration| -> anyhow::Result<Duration> {
        match value {
            None => Ok(default),
            Some(text) => humantime::parse_duration(text)
                .with_context(|| format!("--{flag} {text:?}: expected a duration such as 30m or 24h")),
        }
    };
    let limits = MediaLimits {
        max_bytes: settings.media_max_bytes.unwrap_or(defaults.max_bytes),
        max_pixels: settings.media_max_pixels.unwrap_or(defaults.max_pixels),
        uploads_per_day: settings.media_uploads_per_day.unwrap_or(defaults.uploads_per_day),
        upload_expiry: duration(
            "media-upload-expiry",
            &settings.media_upload_expiry,
            defaults.upload_expiry,
        )?,
        retention: duration("media-retention", &settings.media_retention, defaults.retention)?,
        allowed_types: settings.media_allowed_types.as_deref().map(allowed_types).transpose()?,
        ..defaults
    };
    if limits.max_bytes == 0 || limits.max_pixels == 0 {
        anyhow::bail!("--media-max-bytes and --media-max-pixels must be at least 1");
    }
    if limits.upload_expiry.is_zero() {
        anyhow::bail!("--media-upload-expiry must be longer than zero");
    }
    Ok(limits)
}

/// Where media are stored, from `settings`: local disk unless an S3 bucket is named. Local
/// disk with PostgreSQL (several nodes) is refused unless the directory is declared shared.
pub(super) fn media_config(
    settings: &Settings,
    data_dir: &Path,
    postgres: bool,
) -> anyhow::Result<MediaConfig> {
    let public_url = settings.public_url.as_ref().map(|url| url.trim_end_matches('/').to_owned());
    if let Some(url) =
        public_url.as_ref().filter(|url| !(url.starts_with("http://") || url.starts_with("https://")))
    {
        anyhow::bail!("--public-url {url:?}: expected http://… or https://…");
    }
    let store = match &settings.media_s3_bucket {
        Some(bucket) => MediaStorage::S3(S3Config {
            bucket: bucket.clone(),
            endpoint: settings.media_s3_endpoint.clone(),
            region: settings
                .media_s3_region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .unwrap_or_else(|| "us-east-1".to_owned()),
            access_key_id: settings.media_s3_access_key_id.clone(),
            secret_access_key: settings.media_s3_secret_access_key.clone(),
            session_token: None,
        }),
        None => {
            let shared = settings.media_dir_shared.unwrap_or(false);
            if postgres && !shared {
                anyhow::bail!(
                    "media on local disk with PostgreSQL: other nodes could not serve them. Name an S3 \
                     bucket (--media-s3-bucket), or declare --media-dir shared by every node \
                     (--media-dir-shared)"
                );
            }
            MediaStorage::Local(settings.media_dir.clone().unwrap_or_else(|| data_dir.join("media")))
        }
    };
    Ok(MediaConfig { store, public_url })
}

/// `--media-allowed-types`: kinds and MIME types chatd can accept at all, lowercase.
fn allowed_types(list: &str) -> anyhow::Result<Vec<String>> {
    let entries: Vec<String> =
        list.split(',').map(|entry| entry.trim().to_ascii_lowercase()).filter(|e| !e.is_empty()).collect();
    for entry in &entries {
        let kind = ["image", "video", "audio", "file"].contains(&entry.as_str());
        if !kind && (entry == "application/octet-stream" || !inspect::declared_type_allowed(entry)) {
            anyhow::bail!(
                "--media-allowed-types: {entry:?} is neither a kind (image, video, audio, file) nor a type chatd accepts"
            );
        }
    }
    if entries.is_empty() {
        anyhow::bail!("--media-allowed-types is empty");
    }
    Ok(entries)
}
