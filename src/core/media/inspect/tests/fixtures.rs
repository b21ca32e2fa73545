//! Test fixtures built in code: images, EXIF blocks, ZIP/OLE containers, HEIF boxes.

use std::io::{Cursor, Write};

use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{Delay, DynamicImage, Frame, Rgb, RgbImage, Rgba, RgbaImage};

/// Marker planted in GPS metadata; must never survive inspection.
pub const GPS_MARKER: &[u8] = b"GPS-SECRET-48.8584N-2.2945E";
/// Marker planted in XMP metadata of the HEIC fixture.
pub const XMP_MARKER: &[u8] = b"XMP-SECRET-LOCATION";
/// Payload standing in for coded HEVC pixels in the HEIC fixture; must survive.
pub const HEVC_PAYLOAD: &[u8] = b"HEVC-CODED-PIXELS-STAND-IN-0123456789";

/// A smooth colour gradient, so JPEG output is realistic and deterministic.
pub fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 255 / width.max(1)) as u8, (y * 255 / height.max(1)) as u8, ((x + y) % 256) as u8])
    })
}

/// A photo-like image: gradient plus deterministic noise (harder to compress).
pub fn noisy_photo(width: u32, height: u32) -> RgbImage {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let noise = (state % 24) as u32;
        Rgb([
            ((x * 200 / width) + noise) as u8,
            ((y * 200 / height) + noise) as u8,
            ((x ^ y) % 200 + noise) as u8,
        ])
    })
}

pub fn jpeg_of(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality).encode_image(image).unwrap();
    out
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    jpeg_of(&gradient(width, height), 90)
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(gradient(width, height)).write_with_encoder(PngEncoder::new(&mut out)).unwrap();
    out
}

/// A PNG whose left half is fully transparent.
pub fn png_with_alpha(width: u32, height: u32) -> Vec<u8> {
    let image =
        RgbaImage::from_fn(width, height, |x, _| Rgba([200, 10, 10, if x < width / 2 { 0 } else { 255 }]));
    let mut out = Vec::new();
    DynamicImage::ImageRgba8(image).write_with_encoder(PngEncoder::new(&mut out)).unwrap();
    out
}

pub fn webp(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(gradient(width, height))
        .write_with_encoder(WebPEncoder::new_lossless(&mut out))
        .unwrap();
    out
}

/// An animated GIF with three differently coloured frames.
pub fn animated_gif(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        for colour in [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]] {
            let buffer = RgbaImage::from_pixel(width, height, Rgba(colour));
            let delay = Delay::from_numer_denom_ms(100, 1);
            encoder.encode_frame(Frame::from_parts(buffer, 0, 0, delay)).unwrap();
        }
    }
    out
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

pub fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A PNG with a valid IHDR claiming `width`×`height` RGBA and a garbage IDAT.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", b"not really deflate data");
    png_chunk(&mut out, b"IEND", b"");
    out
}

/// A little-endian TIFF block with an Orientation tag and a GPS IFD holding
/// latitude and a map datum string containing [`GPS_MARKER`].
pub fn exif_tiff(orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    let entry = |tiff: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32| {
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&kind.to_le_bytes());
        tiff.extend_from_slice(&count.to_le_bytes());
        tiff.extend_from_slice(&value.to_le_bytes());
    };
    // IFD0 at 8: 2 entries, ends at 8 + 2 + 24 + 4 = 38.
    tiff.extend_from_slice(&2u16.to_le_bytes());
    entry(&mut tiff, 0x0112, 3, 1, u32::from(orientation));
    entry(&mut tiff, 0x8825, 4, 1, 38);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    // GPS IFD at 38: 3 entries, ends at 38 + 2 + 36 + 4 = 80.
    tiff.extend_from_slice(&3u16.to_le_bytes());
    entry(&mut tiff, 0x0001, 2, 2, u32::from_le_bytes(*b"N\0\0\0"));
    entry(&mut tiff, 0x0002, 5, 3, 80);
    entry(&mut tiff, 0x0012, 2, GPS_MARKER.len() as u32 + 1, 104);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    for (numerator, denominator) in [(48u32, 1u32), (51, 1), (2400, 100)] {
        tiff.extend_from_slice(&numerator.to_le_bytes());
        tiff.extend_from_slice(&denominator.to_le_bytes());
    }
    assert_eq!(tiff.len(), 104);
    tiff.extend_from_slice(GPS_MARKER);
    tiff.push(0);
    tiff
}

/// Splices an APP1 `Exif\0\0` segment right after the SOI marker of `jpeg`.
pub fn with_exif(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&exif_tiff(orientation));
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A ZIP archive with stored (uncompressed) entries, in the given order.
pub fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let mut common = Vec::new();
        common.extend_from_slice(&20u16.to_le_bytes()); // version needed
        common.extend_from_slice(&[0; 8]); // flags, method (stored), time, date
        common.extend_from_slice(&crc.to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&0u16.to_le_bytes()); // extra length
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        central.extend_from_slice(&common);
        central.extend_from_slice(&[0; 10]); // comment, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

pub fn docx() -> Vec<u8> {
    stored_zip(&[
        ("[Content_Types].xml", b"<?xml version=\"1.0\"?><Types/>"),
        ("_rels/.rels", b"<?xml version=\"1.0\"?><Relationships/>"),
        ("word/document.xml", b"<?xml version=\"1.0\"?><w:document/>"),
    ])
}

/// A legacy Word file: an OLE compound file whose root CLSID is Word's.
pub fn legacy_doc() -> Vec<u8> {
    let mut file = cfb::CompoundFile::create(Cursor::new(Vec::new())).unwrap();
    let word = uuid::Uuid::parse_str("00020906-0000-0000-c000-000000000046").unwrap();
    file.set_storage_clsid("/", word).unwrap();
    file.create_stream("/WordDocument").unwrap().write_all(&[0xEC, 0xA5, 0xC1, 0x00]).unwrap();
    file.flush().unwrap();
    file.into_inner().into_inner()
}

fn iso_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

fn full_box(kind: &[u8; 4], version: u8, body: &[u8]) -> Vec<u8> {
    let mut content = vec![version, 0, 0, 0];
    content.extend_from_slice(body);
    iso_box(kind, &content)
}

fn infe(item_id: u16, item_type: &[u8; 4], extra: &[u8]) -> Vec<u8> {
    let mut body = item_id.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(item_type);
    body.push(0); // empty item_name
    body.extend_from_slice(extra);
    full_box(b"infe", 2, &body)
}

/// A minimal HEIC-like file: `ftyp heic`, a `meta` box (hdlr pict, iinf with an hvc1,
/// an Exif and an XMP item, iloc v0) and an `mdat` holding the three payloads.
/// Returns the file and the offset of [`HEVC_PAYLOAD`] in it.
pub fn heic() -> (Vec<u8>, usize) {
    let mut exif = vec![0, 0, 0, 6];
    exif.extend_from_slice(b"Exif\0\0");
    exif.extend_from_slice(&exif_tiff(1));
    let mut xmp = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>".to_vec();
    xmp.extend_from_slice(XMP_MARKER);
    xmp.extend_from_slice(b"</x:xmpmeta>");
    let payloads: [&[u8]; 3] = [HEVC_PAYLOAD, &exif, &xmp];

    let ftyp = iso_box(b"ftyp", b"heic\0\0\0\0mif1heic");
    let hdlr = full_box(b"hdlr", 0, b"\0\0\0\0pict\0\0\0\0\0\0\0\0\0\0\0\0\0");
    let mut iinf_body = 3u16.to_be_bytes().to_vec();
    iinf_body.extend_from_slice(&infe(1, b"hvc1", b""));
    iinf_body.extend_from_slice(&infe(2, b"Exif", b""));
    iinf_body.extend_from_slice(&infe(3, b"mime", b"application/rdf+xml\0"));
    let iinf = full_box(b"iinf", 0, &iinf_body);
    let meta_with = |first_offset: u32| {
        let mut iloc_body = vec![0x44, 0x00];
        iloc_body.extend_from_slice(&3u16.to_be_bytes());
        let mut offset = first_offset;
        for (id, payload) in (1u16..).zip(payloads) {
            iloc_body.extend_from_slice(&id.to_be_bytes());
            iloc_body.extend_from_slice(&0u16.to_be_bytes()); // data_reference_index
            iloc_body.extend_from_slice(&1u16.to_be_bytes()); // extent_count
            iloc_body.extend_from_slice(&offset.to_be_bytes());
            iloc_body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            offset += payload.len() as u32;
        }
        let iloc = full_box(b"iloc", 0, &iloc_body);
        full_box(b"meta", 0, &[hdlr.clone(), iinf.clone(), iloc].concat())
    };
    let meta_len = meta_with(0).len();
    let payload_start = ftyp.len() + meta_len + 8;
    let mdat = iso_box(b"mdat", &payloads.concat());
    let file = [ftyp, meta_with(payload_start as u32), mdat].concat();
    (file, payload_start)
}

/// A HEIF file using `iloc` version 1: the hvc1 item lives in `mdat`
/// (construction method 0) and the XMP item in the meta box's `idat`
/// (construction method 1). Returns the file and the offset of the `idat` payload.
pub fn heic_with_idat() -> (Vec<u8>, usize) {
    let mut xmp = b"<x:xmpmeta>".to_vec();
    xmp.extend_from_slice(XMP_MARKER);
    xmp.extend_from_slice(b"</x:xmpmeta>");
    let ftyp = iso_box(b"ftyp", b"mif1\0\0\0\0mif1miaf");
    let hdlr = full_box(b"hdlr", 0, b"\0\0\0\0pict\0\0\0\0\0\0\0\0\0\0\0\0\0");
    let mut iinf_body = 2u16.to_be_bytes().to_vec();
    iinf_body.extend_from_slice(&infe(1, b"hvc1", b""));
    iinf_body.extend_from_slice(&infe(2, b"mime", b"APPLICATION/RDF+XML\0"));
    let iinf = full_box(b"iinf", 0, &iinf_body);
    let idat = iso_box(b"idat", &xmp);
    let meta_with = |mdat_payload: u32| {
        let mut iloc_body = vec![0x44, 0x00];
        iloc_body.extend_from_slice(&2u16.to_be_bytes());
        // item id, construction method, data_reference_index, extent_count, offset, length
        for (id, method, offset, length) in
            [(1u16, 0u16, mdat_payload, HEVC_PAYLOAD.len() as u32), (2, 1, 0, xmp.len() as u32)]
        {
            for field in [id, method, 0, 1] {
                iloc_body.extend_from_slice(&field.to_be_bytes());
            }
            iloc_body.extend_from_slice(&offset.to_be_bytes());
            iloc_body.extend_from_slice(&length.to_be_bytes());
        }
        let iloc = full_box(b"iloc", 1, &iloc_body);
        full_box(b"meta", 0, &[hdlr.clone(), iinf.clone(), iloc, idat.clone()].concat())
    };
    let meta_len = meta_with(0).len();
    let mdat_payload = ftyp.len() + meta_len + 8;
    let idat_payload = ftyp.len() + meta_len - xmp.len();
    let mdat = iso_box(b"mdat", HEVC_PAYLOAD);
    let file = [ftyp, meta_with(mdat_payload as u32), mdat].concat();
    (file, idat_payload)
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// `png` with a `tEXt` chunk holding [`GPS_MARKER`] inserted before `IEND`.
pub fn png_with_text(width: u32, height: u32) -> Vec<u8> {
    let original = png(width, height);
    let iend = original.len() - 12;
    let mut out = original[..iend].to_vec();
    let mut text = b"Comment\0".to_vec();
    text.extend_from_slice(GPS_MARKER);
    png_chunk(&mut out, b"tEXt", &text);
    out.extend_from_slice(&original[iend..]);
    out
}

/// `jpeg` with its SOF0 frame header patched to claim `width`×`height`.
pub fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg(16, 16);
    let sof = out.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    out
}

/// A GIF whose logical screen claims `width`×`height` with one 1×1 frame.
pub fn gif_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255]); // 2-colour global table
    out.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0x02, 0x02, 0x44, 0x01, 0, 0x3B]);
    out
}
