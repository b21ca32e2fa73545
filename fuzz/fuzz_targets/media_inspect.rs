//! Media inspection of uploaded bytes, which a client controls entirely: any bytes under any
//! file name → [`inspect`]. Properties: it never panics; an accepted file has one of the
//! allowed types; an image never exceeds the pixel limit, keeps no EXIF block, and its
//! thumbnail fits the thumbnail edge; a refusal always has a reason to send.
#![no_main]

use chatd::core::media::inspect::{InspectLimits, Kind, inspect};
use libfuzzer_sys::fuzz_target;

/// Every type `inspect` may accept.
const ALLOWED: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/heic",
    "image/heif",
    "application/pdf",
    "text/plain; charset=utf-8",
    "application/rtf",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
    "video/mp4",
    "video/webm",
    "audio/mp4",
    "audio/mpeg",
];

fuzz_target!(|input: &[u8]| {
    // Small limits, so pixel bombs are refused quickly and every image path stays cheap.
    let limits = InspectLimits { max_pixels: 1 << 20, thumbnail_edge: 64, ..InspectLimits::default() };
    match inspect(bytes::Bytes::copy_from_slice(input), "upload.bin", &limits) {
        Ok(inspected) => {
            assert!(ALLOWED.contains(&inspected.content_type), "accepted {}", inspected.content_type);
            if let Some((width, height)) = inspected.dimensions {
                assert!(u64::from(width) * u64::from(height) <= limits.max_pixels);
            }
            if inspected.kind == Kind::Image && inspected.inline {
                assert!(!inspected.bytes.windows(6).any(|w| w == b"Exif\0\0"), "EXIF survived re-encoding");
            }
            if let Some(thumbnail) = &inspected.thumbnail {
                assert!(thumbnail.width.max(thumbnail.height) <= limits.thumbnail_edge);
            }
        }
        Err(refusal) => assert!(!refusal.to_string().is_empty()),
    }
});
