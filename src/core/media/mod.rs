//! Media rules that need no storage: the limits, what the bytes of an upload really are and
//! how they are made safe ([`inspect`]), and the object keys and headers chatd uses.

pub mod inspect;

use std::time::Duration;

/// Limits on uploads and how long media are kept.
#[derive(Debug, Clone)]
pub struct MediaLimits {
    /// Largest upload, in bytes.
    pub max_bytes: u64,
    /// Most pixels of an image (width × height), checked before decoding.
    pub max_pixels: u64,
    /// Uploads one user may open in 24 hours.
    pub uploads_per_day: u64,
    /// How long an upload may wait to be attached; its bytes are deleted after.
    pub upload_expiry: Duration,
    /// How long a deleted message's media are kept.
    pub retention: Duration,
    /// Images processed at once on this node (each holds its decoded pixels).
    pub concurrent_processing: usize,
    /// What may be attached, narrower than everything [`inspect`] accepts: kinds (`image`,
    /// `video`, `audio`, `file`) and verified MIME types (`application/pdf`), lowercase;
    /// `None`: everything it accepts.
    pub allowed_types: Option<Vec<String>>,
}

impl MediaLimits {
    /// Whether an inspected file of `kind` and verified `content_type` may be attached.
    pub fn allows(&self, kind: inspect::Kind, content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        self.allowed_types
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|entry| entry == kind.as_str() || entry == essence))
    }
}

impl Default for MediaLimits {
    fn default() -> Self {
        MediaLimits {
            max_bytes: 25 * 1024 * 1024,
            max_pixels: 40_000_000,
            uploads_per_day: 500,
            upload_expiry: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(24 * 3600),
            concurrent_processing: 2,
            allowed_types: None,
        }
    }
}

/// Where an upload's raw bytes go.
pub fn upload_key(upload_id: &str) -> String {
    format!("uploads/{upload_id}")
}

/// Where an attachment's checked bytes go.
pub fn attachment_key(attachment_id: &str) -> String {
    format!("attachments/{attachment_id}")
}

/// Where an attachment's thumbnail goes.
pub fn thumbnail_key(attachment_id: &str) -> String {
    format!("thumbnails/{attachment_id}")
}

/// A `Content-Disposition` value naming `filename` (RFC 6266, with the RFC 8187 UTF-8 form
/// and an ASCII fallback): `inline` only when `inline`.
pub fn content_disposition(inline: bool, filename: &str) -> String {
    let kind = if inline { "inline" } else { "attachment" };
    let fallback: String = filename
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' || c == ' ' { c } else { '_' })
        .collect();
    let mut encoded = String::with_capacity(filename.len() * 3);
    for byte in filename.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// A file name as given, made safe to store and show: the last path component, without
/// control characters, at most 255 characters; `None` when nothing is left.
pub fn clean_filename(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim();
    (!cleaned.is_empty() && cleaned != "." && cleaned != "..").then(|| cleaned.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_directories_and_control_characters() {
        assert_eq!(clean_filename("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(clean_filename("C:\\Users\\me\\사진.jpg").as_deref(), Some("사진.jpg"));
        assert_eq!(clean_filename("a\u{0}b\nc.txt").as_deref(), Some("abc.txt"));
        assert_eq!(clean_filename("dir/"), None);
        assert_eq!(clean_filename(".."), None);
    }

    #[test]
    fn dispositions_quote_nothing_a_header_could_break_on() {
        assert_eq!(
            content_disposition(false, "a \"b\".pdf"),
            "attachment; filename=\"a _b_.pdf\"; filename*=UTF-8''a%20%22b%22.pdf"
        );
        assert_eq!(
            content_disposition(true, "사진.jpg"),
            "inline; filename=\"__.jpg\"; filename*=UTF-8''%EC%82%AC%EC%A7%84.jpg"
        );
    }
}
