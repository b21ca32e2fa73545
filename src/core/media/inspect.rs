//! Attachment inspection: decides what uploaded bytes really are (the declared type
//! and file name are never trusted) and produces the version that is safe to store.
//!
//! * JPEG, PNG, GIF and WebP are decoded (after a header-only size check), rotated
//!   upright according to EXIF orientation and re-encoded, so no EXIF/XMP/text
//!   metadata survives; a thumbnail is made.
//! * HEIC/HEIF cannot be decoded in pure Rust: its Exif and XMP items are zeroed in place.
//! * PDF, plain text, office files, MP4, WebM, M4A and MP3 are kept byte for byte.
//! * Everything else is refused with a human-readable [`Refusal`].
//!
//! Pure and synchronous: run it on a blocking thread. It never panics on any input.

mod detect;
mod heic;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::io::Cursor;

use bytes::Bytes;
use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::imageops::FilterType;
use image::metadata::{LoopCount, Orientation};
use image::{
    AnimationDecoder, DynamicImage, ImageDecoder, ImageEncoder, ImageError, ImageFormat, ImageReader, Limits,
};

use detect::{Detected, RasterFormat};

/// JPEG quality used when re-encoding JPEG photos.
const JPEG_QUALITY: u8 = 85;
/// JPEG quality used for thumbnails.
const THUMBNAIL_JPEG_QUALITY: u8 = 80;
/// GIF encoder speed (1 = best palette, 30 = fastest); only matters for frames with
/// more than 256 colours after compositing.
const GIF_ENCODER_SPEED: i32 = 10;
/// Extensions under which a text file would be run or rendered as active content
/// when a recipient downloads and opens it, so text uploads with them are refused.
const DANGEROUS_TEXT_EXTENSIONS: [&str; 24] = [
    "html", "htm", "xhtml", "xht", "shtml", "mht", "mhtml", "svg", "svgz", "xml", "xsl", "xslt", "js", "mjs",
    "hta", "htc", "vbs", "vbe", "wsf", "wsh", "bat", "cmd", "ps1", "sh",
];

/// Resource bounds for [`inspect`]. Use `..InspectLimits::default()` to set only some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectLimits {
    /// Largest accepted image area (width × height, checked from the header before decoding).
    pub max_pixels: u64,
    /// Longest side of generated thumbnails; 0 disables thumbnails.
    pub thumbnail_edge: u32,
    /// Most frames an animated GIF may have.
    pub max_gif_frames: u32,
    /// Most pixels all frames of an animated GIF may add up to (bounds re-encoding time).
    pub max_animation_pixels: u64,
}

impl Default for InspectLimits {
    fn default() -> Self {
        InspectLimits {
            max_pixels: 40_000_000,
            thumbnail_edge: 320,
            max_gif_frames: 1_000,
            max_animation_pixels: 50_000_000,
        }
    }
}

/// The broad category of an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A still or animated picture.
    Image,
    /// MP4 or WebM video.
    Video,
    /// M4A or MP3 audio.
    Audio,
    /// Anything else accepted (documents, text).
    File,
}

impl Kind {
    /// Lower-case name for APIs and storage: "image", "video", "audio" or "file".
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Video => "video",
            Kind::Audio => "audio",
            Kind::File => "file",
        }
    }
}

/// A small preview of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// Encoded preview (JPEG when opaque, PNG when it has transparency).
    pub bytes: Bytes,
    /// `image/jpeg` or `image/png`.
    pub content_type: &'static str,
    /// Preview width in pixels; the longer side is at most `thumbnail_edge`.
    pub width: u32,
    /// Preview height in pixels.
    pub height: u32,
}

/// The verdict on an accepted upload: what it is and what to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// Broad category.
    pub kind: Kind,
    /// The verified MIME type, e.g. `image/png` or `text/plain; charset=utf-8`.
    pub content_type: &'static str,
    /// What to store: the re-encoded image, the scrubbed HEIC, or the original bytes.
    pub bytes: Bytes,
    /// Images that were decoded: width and height after EXIF orientation.
    pub dimensions: Option<(u32, u32)>,
    /// Images that were decoded: a preview, never larger than the image itself.
    pub thumbnail: Option<Thumbnail>,
    /// True only for JPEG, PNG, GIF and WebP, which a browser may show inline.
    pub inline: bool,
    /// The canonical file extension for `content_type` (no dot), e.g. `png`: use it
    /// to fix up the download name so the client's extension cannot change how the
    /// file is opened.
    pub extension: &'static str,
}

/// Why an upload was refused; `Display` is a reason fit to show the uploader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Zero bytes.
    #[error("the file is empty")]
    Empty,
    /// The content is of a type we never accept.
    #[error("the file is not an allowed type (detected: {detected})")]
    NotAllowed {
        /// What the content looked like, e.g. `application/x-executable`.
        detected: String,
    },
    /// Plain text whose name would make it run or render when opened after download.
    #[error("text files named *.{extension} are not allowed")]
    DangerousTextName {
        /// The offending extension, lower case.
        extension: &'static str,
    },
    /// The header declares more pixels than allowed.
    #[error("the image is {width}×{height} pixels; at most {max_pixels} pixels are allowed")]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit in force.
        max_pixels: u64,
    },
    /// An animated GIF with too many frames or too many pixels over all frames.
    #[error(
        "the animation is too large; at most {max_frames} frames and {max_pixels} pixels over all frames are allowed"
    )]
    AnimationTooLarge {
        /// Frame limit in force.
        max_frames: u32,
        /// Total pixel limit in force.
        max_pixels: u64,
    },
    /// Decoding needed more memory than the limits allow.
    #[error("the image needs too much memory to decode: {0}")]
    DecodeLimit(String),
    /// The image data could not be decoded.
    #[error("the image is corrupt: {0}")]
    CorruptImage(String),
    /// The HEIC/HEIF box structure could not be parsed, so its metadata cannot be removed.
    #[error("the HEIC file could not be parsed ({0})")]
    HeicUnparsable(&'static str),
    /// Re-encoding a decoded image failed (a server-side problem, not the client's).
    #[error("the image could not be re-encoded: {0}")]
    ReencodeFailed(String),
}

/// Inspects an upload. `filename` is only used to refuse text files whose extension
/// would make them dangerous to open; the type always comes from the bytes.
pub fn inspect(bytes: Bytes, filename: &str, limits: &InspectLimits) -> Result<Inspected, Refusal> {
    let plain = |kind, content_type, extension, bytes| Inspected {
        kind,
        content_type,
        bytes,
        dimensions: None,
        thumbnail: None,
        inline: false,
        extension,
    };
    match detect::detect(&bytes)? {
        Detected::Raster(format) => inspect_raster(&bytes, format, limits),
        Detected::Heif(content_type) => {
            let mut scrubbed = bytes.to_vec();
            heic::scrub(&mut scrubbed).map_err(Refusal::HeicUnparsable)?;
            let extension = if content_type == "image/heic" { "heic" } else { "heif" };
            Ok(plain(Kind::Image, content_type, extension, scrubbed.into()))
        }
        Detected::Text => {
            refuse_dangerous_text_name(filename)?;
            Ok(plain(Kind::File, "text/plain; charset=utf-8", "txt", bytes))
        }
        Detected::Document(content_type, ext) => Ok(plain(Kind::File, content_type, ext, bytes)),
        Detected::Video(content_type, ext) => Ok(plain(Kind::Video, content_type, ext, bytes)),
        Detected::Audio(content_type, ext) => Ok(plain(Kind::Audio, content_type, ext, bytes)),
    }
}

/// Whether a declared MIME type (parameters ignored, case-insensitive) is one we could
/// ever accept. Declared types are only hints, so `application/octet-stream` passes;
/// markup types (`text/html`, `image/svg+xml`, ...) and unknown types do not.
pub fn declared_type_allowed(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/octet-stream"
            | "image/jpeg"
            | "image/jpg"
            | "image/pjpeg"
            | "image/png"
            | "image/gif"
            | "image/webp"
            | "image/heic"
            | "image/heif"
            | "image/heic-sequence"
            | "image/heif-sequence"
            | "application/pdf"
            | "text/plain"
            | "application/rtf"
            | "text/rtf"
            | "application/msword"
            | "application/vnd.ms-excel"
            | "application/vnd.ms-powerpoint"
            | "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            | "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            | "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            | "application/vnd.oasis.opendocument.text"
            | "application/vnd.oasis.opendocument.spreadsheet"
            | "application/vnd.oasis.opendocument.presentation"
            | "video/mp4"
            | "video/webm"
            | "audio/mp4"
            | "audio/m4a"
            | "audio/x-m4a"
            | "audio/mpeg"
            | "audio/mp3"
    )
}

/// Refuses text uploads named like HTML, SVG, scripts and the like. Windows ignores
/// trailing dots and spaces, so they are ignored here too.
fn refuse_dangerous_text_name(filename: &str) -> Result<(), Refusal> {
    let trimmed = filename.trim_end_matches(['.', ' ']);
    let Some((_, extension)) = trimmed.rsplit_once('.') else {
        return Ok(());
    };
    match DANGEROUS_TEXT_EXTENSIONS.iter().find(|dangerous| extension.eq_ignore_ascii_case(dangerous)) {
        Some(extension) => Err(Refusal::DangerousTextName { extension }),
        None => Ok(()),
    }
}

/// Maps decoder errors to refusals: limit hits are reported as such, the rest as corruption.
fn decode_refusal(error: ImageError) -> Refusal {
    match error {
        ImageError::Limits(limit) => Refusal::DecodeLimit(limit.to_string()),
        other => Refusal::CorruptImage(other.to_string()),
    }
}

fn reencode_refusal(error: ImageError) -> Refusal {
    Refusal::ReencodeFailed(error.to_string())
}

/// Decoder limits: room for the image at 8 bytes per pixel (RGBA16) plus 64 MiB of
/// decoder working memory.
fn decode_limits(limits: &InspectLimits) -> Limits {
    let mut decode = Limits::default();
    decode.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    decode
}

/// Refuses images whose declared area exceeds the limit (or is zero).
fn check_area(width: u32, height: u32, limits: &InspectLimits) -> Result<(), Refusal> {
    if width == 0 || height == 0 {
        return Err(Refusal::CorruptImage("the image has no pixels".to_owned()));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(Refusal::TooManyPixels { width, height, max_pixels: limits.max_pixels });
    }
    Ok(())
}

fn inspect_raster(bytes: &[u8], format: RasterFormat, limits: &InspectLimits) -> Result<Inspected, Refusal> {
    let (image_format, content_type, extension) = match format {
        RasterFormat::Jpeg => (ImageFormat::Jpeg, "image/jpeg", "jpg"),
        RasterFormat::Png => (ImageFormat::Png, "image/png", "png"),
        RasterFormat::Gif => (ImageFormat::Gif, "image/gif", "gif"),
        RasterFormat::Webp => (ImageFormat::WebP, "image/webp", "webp"),
    };
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), image_format)
        .into_dimensions()
        .map_err(decode_refusal)?;
    check_area(width, height, limits)?;
    let (encoded, image) = match format {
        RasterFormat::Gif => reencode_gif(bytes, limits)?,
        RasterFormat::Jpeg => reencode_still(bytes, image_format, StillCodec::Jpeg, limits)?,
        RasterFormat::Png => reencode_still(bytes, image_format, StillCodec::Png, limits)?,
        RasterFormat::Webp => reencode_still(bytes, image_format, StillCodec::LosslessWebp, limits)?,
    };
    Ok(Inspected {
        kind: Kind::Image,
        content_type,
        bytes: encoded.into(),
        dimensions: Some((image.width(), image.height())),
        thumbnail: make_thumbnail(&image, limits.thumbnail_edge)?,
        inline: true,
        extension,
    })
}

/// The encoders used for still images.
#[derive(Debug, Clone, Copy)]
enum StillCodec {
    /// Baseline JPEG at [`JPEG_QUALITY`].
    Jpeg,
    /// PNG with default compression.
    Png,
    /// Lossless WebP (the only WebP encoder the `image` crate has).
    LosslessWebp,
}

/// Decodes a still image within the limits, turns it upright according to its EXIF
/// orientation and re-encodes it. Returns the new file and the upright image.
fn reencode_still(
    bytes: &[u8],
    image_format: ImageFormat,
    codec: StillCodec,
    limits: &InspectLimits,
) -> Result<(Vec<u8>, DynamicImage), Refusal> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format);
    reader.limits(decode_limits(limits));
    let mut decoder = reader.into_decoder().map_err(decode_refusal)?;
    // A malformed EXIF block only loses the rotation; it does not refuse the photo.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let icc_profile = decoder.icc_profile().ok().flatten();
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_refusal)?;
    image.apply_orientation(orientation);
    let mut out = Vec::new();
    match codec {
        StillCodec::Jpeg => {
            out = encode_jpeg(&image, JPEG_QUALITY, icc_profile.as_deref())?;
            Ok(())
        }
        StillCodec::Png => write_pixels(&image, PngEncoder::new(&mut out), icc_profile),
        StillCodec::LosslessWebp => {
            write_pixels(&eight_bit(&image), WebPEncoder::new_lossless(&mut out), icc_profile)
        }
    }
    .map_err(reencode_refusal)?;
    Ok((out, image))
}

/// Writes only the pixels and the ICC colour profile (kept so wide-gamut photos
/// still show correctly; it describes the display colours, not the photo or person).
fn write_pixels<E: ImageEncoder>(
    image: &DynamicImage,
    mut encoder: E,
    icc_profile: Option<Vec<u8>>,
) -> image::ImageResult<()> {
    if let Some(profile) = icc_profile {
        // An encoder that cannot carry a profile just drops it.
        let _ = encoder.set_icc_profile(profile);
    }
    image.write_with_encoder(encoder)
}

/// `image` as a baseline JPEG at `quality`, with `icc_profile` if given and nothing else
/// (no EXIF, no XMP, no comment). `jpeg-encoder` rather than `image`'s own encoder: the same
/// output at several times the speed.
fn encode_jpeg(image: &DynamicImage, quality: u8, icc_profile: Option<&[u8]>) -> Result<Vec<u8>, Refusal> {
    let pixels = jpeg_compatible(image);
    let (Ok(width), Ok(height)) = (u16::try_from(pixels.width()), u16::try_from(pixels.height())) else {
        return Err(Refusal::ReencodeFailed("a JPEG is at most 65535 pixels on a side".into()));
    };
    let color = if pixels.color().channel_count() == 1 {
        jpeg_encoder::ColorType::Luma
    } else {
        jpeg_encoder::ColorType::Rgb
    };
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    if let Some(profile) = icc_profile {
        encoder.add_icc_profile(profile).map_err(|err| Refusal::ReencodeFailed(err.to_string()))?;
    }
    encoder
        .encode(pixels.as_bytes(), width, height, color)
        .map_err(|err| Refusal::ReencodeFailed(err.to_string()))?;
    Ok(out)
}

/// The image as 8-bit grey or RGB (JPEG has no alpha and no 16-bit samples).
fn jpeg_compatible(image: &DynamicImage) -> Cow<'_, DynamicImage> {
    match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => Cow::Borrowed(image),
        DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) => {
            Cow::Owned(DynamicImage::ImageLuma8(image.to_luma8()))
        }
        _ => Cow::Owned(DynamicImage::ImageRgb8(image.to_rgb8())),
    }
}

/// The image as 8-bit RGB or RGBA (what the WebP encoder takes).
fn eight_bit(image: &DynamicImage) -> Cow<'_, DynamicImage> {
    match image {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => Cow::Borrowed(image),
        _ if image.color().has_alpha() => Cow::Owned(DynamicImage::ImageRgba8(image.to_rgba8())),
        _ => Cow::Owned(DynamicImage::ImageRgb8(image.to_rgb8())),
    }
}

/// Decodes every GIF frame and writes it to a fresh GIF (keeping delays and the loop
/// count, dropping comments and application extensions). Returns the new file and the
/// first frame, which stands for the image in dimensions and thumbnail.
fn reencode_gif(bytes: &[u8], limits: &InspectLimits) -> Result<(Vec<u8>, DynamicImage), Refusal> {
    let too_large = || Refusal::AnimationTooLarge {
        max_frames: limits.max_gif_frames,
        max_pixels: limits.max_animation_pixels,
    };
    let mut decoder = GifDecoder::new(Cursor::new(bytes)).map_err(decode_refusal)?;
    decoder.set_limits(decode_limits(limits)).map_err(decode_refusal)?;
    let repeat = match decoder.loop_count() {
        LoopCount::Infinite => Repeat::Infinite,
        LoopCount::Finite(count) => Repeat::Finite(u16::try_from(count.get()).unwrap_or(u16::MAX)),
    };
    let mut out = Vec::new();
    let mut first_frame = None;
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, GIF_ENCODER_SPEED);
        encoder.set_repeat(repeat).map_err(reencode_refusal)?;
        let (mut frames, mut pixels) = (0u32, 0u64);
        for frame in decoder.into_frames() {
            let frame = frame.map_err(decode_refusal)?;
            let buffer = frame.buffer();
            frames += 1;
            pixels = pixels.saturating_add(u64::from(buffer.width()) * u64::from(buffer.height()));
            if frames > limits.max_gif_frames || pixels > limits.max_animation_pixels {
                return Err(too_large());
            }
            if first_frame.is_none() {
                first_frame = Some(DynamicImage::ImageRgba8(buffer.clone()));
            }
            encoder.encode_frame(frame).map_err(reencode_refusal)?;
        }
    }
    let first_frame = first_frame.ok_or_else(|| Refusal::CorruptImage("the GIF has no frames".to_owned()))?;
    Ok((out, first_frame))
}

/// Size of a thumbnail: the long side shrunk to `edge`, aspect kept, never upscaled.
fn thumbnail_size(width: u32, height: u32, edge: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= edge {
        return (width, height);
    }
    let scale = |side: u32| {
        let scaled = (u64::from(side) * u64::from(edge) + u64::from(long) / 2) / u64::from(long);
        u32::try_from(scaled).unwrap_or(edge).clamp(1, edge)
    };
    (scale(width), scale(height))
}

/// Whether every pixel is fully opaque.
fn is_opaque(image: &DynamicImage) -> bool {
    match image {
        _ if !image.color().has_alpha() => true,
        DynamicImage::ImageRgba8(buffer) => buffer.pixels().all(|p| p[3] == u8::MAX),
        DynamicImage::ImageLumaA8(buffer) => buffer.pixels().all(|p| p[1] == u8::MAX),
        other => other.to_rgba16().pixels().all(|p| p[3] == u16::MAX),
    }
}

/// Makes the preview: Triangle (bilinear) filtering, JPEG if opaque, PNG otherwise.
fn make_thumbnail(image: &DynamicImage, edge: u32) -> Result<Option<Thumbnail>, Refusal> {
    if edge == 0 {
        return Ok(None);
    }
    let (width, height) = thumbnail_size(image.width(), image.height(), edge);
    let resized = if (width, height) == (image.width(), image.height()) {
        Cow::Borrowed(image)
    } else if image.width() / 2 > width && image.height() / 2 > height {
        // Large reductions: a fast area-averaging pass to twice the size, then Triangle.
        let halfway = image.thumbnail_exact(width * 2, height * 2);
        Cow::Owned(halfway.resize_exact(width, height, FilterType::Triangle))
    } else {
        Cow::Owned(image.resize_exact(width, height, FilterType::Triangle))
    };
    let mut out = Vec::new();
    let content_type = if is_opaque(&resized) {
        out = encode_jpeg(&resized, THUMBNAIL_JPEG_QUALITY, None)?;
        "image/jpeg"
    } else {
        let rgba = DynamicImage::ImageRgba8(resized.to_rgba8());
        rgba.write_with_encoder(PngEncoder::new(&mut out)).map_err(reencode_refusal)?;
        "image/png"
    };
    Ok(Some(Thumbnail { bytes: out.into(), content_type, width, height }))
}
