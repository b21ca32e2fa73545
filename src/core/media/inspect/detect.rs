//! Content sniffing: decides what a byte string really is from its magic bytes,
//! never from a declared type or file name.

use super::Refusal;

/// What the bytes were recognised as, before any per-format processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Detected {
    /// A raster format the `image` crate decodes and we re-encode.
    Raster(RasterFormat),
    /// HEIC/HEIF still image (ISOBMFF); the value is the MIME type.
    Heif(&'static str),
    /// A document kept byte for byte; values are the MIME type and file extension.
    Document(&'static str, &'static str),
    /// Plain UTF-8 text.
    Text,
    /// Video kept byte for byte; values are the MIME type and file extension.
    Video(&'static str, &'static str),
    /// Audio kept byte for byte; values are the MIME type and file extension.
    Audio(&'static str, &'static str),
}

/// The raster formats that are decoded and re-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RasterFormat {
    Jpeg,
    Png,
    Gif,
    Webp,
}

/// HEIF brands (ISO/IEC 23008-12) that identify HEVC-coded images or sequences.
const HEIC_BRANDS: [&[u8; 4]; 6] = [b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"];
/// Generic HEIF brands, used with any codec (AVIF shares them, so they need a second look).
const HEIF_BRANDS: [&[u8; 4]; 3] = [b"mif1", b"msf1", b"heif"];
/// MP4 major brands accepted as `video/mp4`.
const MP4_VIDEO_BRANDS: [&[u8; 4]; 16] = [
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8", b"iso9", b"mp41", b"mp42",
    b"avc1", b"dash", b"M4V ", b"M4VH", b"mmp4",
];
/// MP4 major brands accepted as `audio/mp4`.
const MP4_AUDIO_BRANDS: [&[u8; 4]; 2] = [b"M4A ", b"M4B "];

/// Office formats recognised by `infer`: (its MIME type, extension).
const OFFICE_TYPES: [(&str, &str); 9] = [
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    ("application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx"),
    ("application/vnd.oasis.opendocument.text", "odt"),
    ("application/vnd.oasis.opendocument.spreadsheet", "ods"),
    ("application/vnd.oasis.opendocument.presentation", "odp"),
    ("application/msword", "doc"),
    ("application/vnd.ms-excel", "xls"),
    ("application/vnd.ms-powerpoint", "ppt"),
];

/// Classifies `bytes`, or refuses them naming what they looked like.
pub(super) fn detect(bytes: &[u8]) -> Result<Detected, Refusal> {
    if bytes.is_empty() {
        return Err(Refusal::Empty);
    }
    if let Some(found) = detect_binary(bytes)? {
        return Ok(found);
    }
    if bytes.starts_with(b"PK\x03\x04")
        && let Some(found) = classify_ooxml(bytes)?
    {
        return Ok(found);
    }
    let sniffed = infer::get(bytes);
    if let Some(kind) = sniffed {
        if let Some((mime, ext)) = OFFICE_TYPES.iter().find(|(m, _)| *m == kind.mime_type()) {
            return Ok(Detected::Document(mime, ext));
        }
        if kind.mime_type() == "video/webm" {
            return Ok(Detected::Video("video/webm", "webm"));
        }
    }
    match text_verdict(bytes) {
        TextVerdict::Plain => Ok(Detected::Text),
        TextVerdict::Markup(detected) => Err(not_allowed(detected)),
        TextVerdict::Binary => {
            Err(not_allowed(sniffed.map_or("application/octet-stream", |kind| kind.mime_type())))
        }
    }
}

fn not_allowed(detected: &str) -> Refusal {
    Refusal::NotAllowed { detected: detected.to_owned() }
}

/// Formats whose magic bytes we check ourselves (exactly, so text never matches them).
fn detect_binary(bytes: &[u8]) -> Result<Option<Detected>, Refusal> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    let found = if starts(&[0xFF, 0xD8, 0xFF]) {
        Detected::Raster(RasterFormat::Jpeg)
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Detected::Raster(RasterFormat::Png)
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Detected::Raster(RasterFormat::Gif)
    } else if bytes.len() >= 12 && starts(b"RIFF") && bytes[8..12] == *b"WEBP" {
        Detected::Raster(RasterFormat::Webp)
    } else if starts(b"%PDF-") {
        Detected::Document("application/pdf", "pdf")
    } else if starts(b"{\\rtf") {
        Detected::Document("application/rtf", "rtf")
    } else if is_mp3(bytes) {
        Detected::Audio("audio/mpeg", "mp3")
    } else if bytes.len() >= 12 && bytes[4..8] == *b"ftyp" {
        return classify_ftyp(bytes).map(Some);
    } else {
        return Ok(None);
    };
    Ok(Some(found))
}

/// An ID3v2 tag (with a real version byte) or an MPEG audio frame header.
fn is_mp3(bytes: &[u8]) -> bool {
    match bytes {
        [b'I', b'D', b'3', major, minor, ..] => (2..=4).contains(major) && *minor != 0xFF,
        [0xFF, second, third, ..] => {
            let sync = second & 0xE0 == 0xE0;
            let version_ok = second & 0x18 != 0x08;
            let layer3 = second & 0x06 == 0x02;
            let bitrate_ok = third >> 4 != 0x0F;
            let rate_ok = (third >> 2) & 0x03 != 0x03;
            sync && version_ok && layer3 && bitrate_ok && rate_ok
        }
        _ => false,
    }
}

/// Sorts an ISO base media file (starts with an `ftyp` box) by its brands.
fn classify_ftyp(bytes: &[u8]) -> Result<Detected, Refusal> {
    let declared = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let box_end = usize::try_from(declared).unwrap_or(usize::MAX).min(bytes.len());
    let major = &bytes[8..12];
    let compatible: Vec<&[u8]> = bytes.get(16..box_end).unwrap_or_default().chunks_exact(4).collect();
    let has = |brands: &[&[u8; 4]]| {
        brands.iter().any(|brand| major == *brand || compatible.contains(&brand.as_slice()))
    };
    if has(&[b"avif", b"avis"]) {
        return Err(not_allowed("image/avif"));
    }
    if has(&HEIC_BRANDS) {
        return Ok(Detected::Heif("image/heic"));
    }
    if HEIF_BRANDS.iter().any(|brand| major == *brand) {
        return Ok(Detected::Heif("image/heif"));
    }
    if MP4_AUDIO_BRANDS.iter().any(|brand| major == *brand) {
        return Ok(Detected::Audio("audio/mp4", "m4a"));
    }
    if MP4_VIDEO_BRANDS.iter().any(|brand| major == *brand) {
        return Ok(Detected::Video("video/mp4", "mp4"));
    }
    if major == b"qt  " {
        return Err(not_allowed("video/quicktime"));
    }
    let brand = String::from_utf8_lossy(major).trim_end().to_owned();
    Err(Refusal::NotAllowed { detected: format!("ISO media with brand {brand:?}") })
}

/// Recognises Office Open XML (docx/xlsx/pptx) from the ZIP central directory:
/// a `[Content_Types].xml` entry plus a `word/`, `xl/` or `ppt/` part. Macro-enabled
/// documents (a `vbaProject.bin` part) are refused. `None` when the ZIP is not OOXML
/// or its directory cannot be read (the caller then falls back to `infer`).
fn classify_ooxml(bytes: &[u8]) -> Result<Option<Detected>, Refusal> {
    let Some(names) = zip_entry_names(bytes) else {
        return Ok(None);
    };
    if !names.contains(&b"[Content_Types].xml".as_slice()) {
        return Ok(None);
    }
    if names.iter().any(|name| name.ends_with(b"vbaProject.bin")) {
        return Err(not_allowed("application/vnd.ms-office.vbaProject (macros)"));
    }
    let has_part = |prefix: &[u8]| names.iter().any(|name| name.starts_with(prefix));
    let found = if has_part(b"word/") {
        OFFICE_TYPES[0]
    } else if has_part(b"xl/") {
        OFFICE_TYPES[1]
    } else if has_part(b"ppt/") {
        OFFICE_TYPES[2]
    } else {
        return Ok(None);
    };
    Ok(Some(Detected::Document(found.0, found.1)))
}

/// Entry names from a ZIP's central directory (no ZIP64), or `None` if unreadable.
fn zip_entry_names(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    const EOCD_LEN: usize = 22;
    let read_u16 = |at: usize| -> Option<usize> {
        let field = bytes.get(at..at.checked_add(2)?)?;
        Some(usize::from(u16::from_le_bytes([field[0], field[1]])))
    };
    let read_u32 = |at: usize| -> Option<usize> {
        let field = bytes.get(at..at.checked_add(4)?)?;
        usize::try_from(u32::from_le_bytes([field[0], field[1], field[2], field[3]])).ok()
    };
    let last_start = bytes.len().checked_sub(EOCD_LEN)?;
    let first_start = last_start.saturating_sub(usize::from(u16::MAX));
    let eocd = (first_start..=last_start).rev().find(|&at| bytes[at..].starts_with(b"PK\x05\x06"))?;
    let entry_count = read_u16(eocd + 10)?;
    let mut at = read_u32(eocd + 16)?;
    let mut names = Vec::with_capacity(entry_count.min(4096));
    for _ in 0..entry_count {
        if !bytes.get(at..)?.starts_with(b"PK\x01\x02") {
            return None;
        }
        let name_len = read_u16(at + 28)?;
        let extra_len = read_u16(at + 30)?;
        let comment_len = read_u16(at + 32)?;
        let name_start = at + 46;
        names.push(bytes.get(name_start..name_start + name_len)?);
        at = name_start + name_len + extra_len + comment_len;
    }
    Some(names)
}

/// The outcome of the plain-text rules.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TextVerdict {
    /// Valid UTF-8, no control characters, no markup at the start.
    Plain,
    /// Text a browser would render as a document; the value is the reported type.
    Markup(&'static str),
    /// Not text at all.
    Binary,
}

/// Applies the plain-text rules: valid UTF-8 (BOM allowed), no C0 control
/// characters other than tab, LF, CR and FF, and no markup at the start.
///
/// Markup is any `<` followed by a letter, `!`, `?` or `/` as the first
/// non-whitespace character: a superset of `<!doctype`, `<html`, `<svg`, `<?xml`,
/// `<script`, `<!--` and every other tag a browser might sniff. Shell scripts
/// (`#!`) count as markup too: they are refused as scripts.
pub(super) fn text_verdict(bytes: &[u8]) -> TextVerdict {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return TextVerdict::Binary;
    };
    let allowed_control = |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{0C}');
    if text.chars().any(|c| c < ' ' && !allowed_control(c)) {
        return TextVerdict::Binary;
    }
    let body = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let start = body.trim_start_matches([' ', '\t', '\n', '\r', '\u{0C}']);
    if start.starts_with("#!") {
        return TextVerdict::Markup("text/x-shellscript");
    }
    let mut chars = start.chars();
    if chars.next() != Some('<') {
        return TextVerdict::Plain;
    }
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || matches!(c, '!' | '?' | '/') => {
            let lower: String = start.chars().take(5).collect::<String>().to_ascii_lowercase();
            if lower.starts_with("<svg") {
                TextVerdict::Markup("image/svg+xml")
            } else if lower.starts_with("<?xml") {
                TextVerdict::Markup("text/xml")
            } else {
                TextVerdict::Markup("text/html")
            }
        }
        _ => TextVerdict::Plain,
    }
}
