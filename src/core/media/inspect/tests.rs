mod fixtures;

use std::time::Instant;

use bytes::Bytes;
use image::{AnimationDecoder, GenericImageView, ImageFormat};

use super::*;
use fixtures::*;

fn run(bytes: &[u8], filename: &str) -> Result<Inspected, Refusal> {
    inspect(Bytes::copy_from_slice(bytes), filename, &InspectLimits::default())
}

fn refused_as(bytes: &[u8], filename: &str) -> String {
    match run(bytes, filename) {
        Err(Refusal::NotAllowed { detected }) => detected,
        other => panic!("expected NotAllowed for {filename}, got {other:?}"),
    }
}

#[test]
fn png_declared_as_jpeg_comes_back_as_png() {
    let out = run(&png(64, 32), "photo.jpg").unwrap();
    assert_eq!(out.content_type, "image/png");
    assert_eq!(out.extension, "png");
    assert_eq!(out.kind, Kind::Image);
    assert!(out.inline);
    assert_eq!(out.dimensions, Some((64, 32)));
    assert_eq!(image::guess_format(&out.bytes).unwrap(), ImageFormat::Png);
}

#[test]
fn executables_named_as_images_are_refused() {
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.resize(128, 0);
    assert_eq!(refused_as(&elf, "x.png"), "application/x-executable");
    let mut pe = b"MZ\x90\0".to_vec();
    pe.resize(256, 0);
    pe[0x3C] = 0x80;
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    let detected = refused_as(&pe, "x.png");
    assert!(detected.contains("executable"), "{detected}");
    let message = run(&elf, "x.png").unwrap_err().to_string();
    assert_eq!(message, "the file is not an allowed type (detected: application/x-executable)");
}

#[test]
fn jpeg_exif_with_gps_is_stripped() {
    let input = with_exif(&jpeg(120, 80), 1);
    assert!(contains(&input, GPS_MARKER));
    let out = run(&input, "holiday.jpg").unwrap();
    assert_eq!(out.content_type, "image/jpeg");
    assert!(!contains(&out.bytes, GPS_MARKER));
    assert!(!contains(&out.bytes, b"Exif\0\0"));
    assert!(!contains(&out.bytes, &[0xFF, 0xE1]), "an APP1 segment survived");
    assert_eq!(out.dimensions, Some((120, 80)));
}

#[test]
fn exif_orientation_six_rotates_the_image() {
    // Left half red, right half blue; orientation 6 means "rotate 90° clockwise to view".
    let original = image::RgbImage::from_fn(200, 100, |x, _| {
        if x < 100 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) }
    });
    let out = run(&with_exif(&jpeg_of(&original, 95), 6), "rotated.jpg").unwrap();
    assert_eq!(out.dimensions, Some((100, 200)));
    let decoded = image::load_from_memory(&out.bytes).unwrap();
    assert_eq!(decoded.dimensions(), (100, 200));
    let top = decoded.get_pixel(50, 30);
    let bottom = decoded.get_pixel(50, 170);
    assert!(top[0] > 200 && top[2] < 60, "top should be red: {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "bottom should be blue: {bottom:?}");
    let thumbnail = out.thumbnail.unwrap();
    assert_eq!((thumbnail.width, thumbnail.height), (100, 200));
}

#[test]
fn thumbnails_fit_the_edge_and_never_upscale() {
    let big = run(&jpeg(1000, 500), "big.jpg").unwrap().thumbnail.unwrap();
    assert_eq!((big.width, big.height), (320, 160));
    assert_eq!(big.content_type, "image/jpeg");
    let decoded = image::load_from_memory(&big.bytes).unwrap();
    assert_eq!(decoded.dimensions(), (320, 160));

    let small = run(&png(100, 50), "small.png").unwrap().thumbnail.unwrap();
    assert_eq!((small.width, small.height), (100, 50));
    let decoded = image::load_from_memory(&small.bytes).unwrap();
    assert_eq!(decoded.dimensions(), (100, 50));

    let tall = run(&png(10, 1000), "tall.png").unwrap().thumbnail.unwrap();
    assert_eq!((tall.width, tall.height), (3, 320));
}

#[test]
fn transparent_images_get_png_thumbnails() {
    let out = run(&png_with_alpha(400, 200), "logo.png").unwrap();
    let thumbnail = out.thumbnail.unwrap();
    assert_eq!(thumbnail.content_type, "image/png");
    assert_eq!((thumbnail.width, thumbnail.height), (320, 160));
    let decoded = image::load_from_memory(&thumbnail.bytes).unwrap();
    assert_eq!(decoded.get_pixel(10, 80)[3], 0);
}

#[test]
fn huge_png_header_is_refused_before_decoding() {
    let refusal = run(&png_header_only(50_000, 50_000), "bomb.png").unwrap_err();
    assert_eq!(refusal, Refusal::TooManyPixels { width: 50_000, height: 50_000, max_pixels: 40_000_000 });
    assert_eq!(refusal.to_string(), "the image is 50000×50000 pixels; at most 40000000 pixels are allowed");
}

#[test]
fn huge_jpeg_and_gif_headers_are_refused() {
    for (input, name) in
        [(jpeg_claiming(60_000, 60_000), "bomb.jpg"), (gif_claiming(65_535, 65_535), "bomb.gif")]
    {
        let refusal = run(&input, name).unwrap_err();
        assert!(matches!(refusal, Refusal::TooManyPixels { .. }), "{refusal:?}");
    }
    let tiny = run(&gif_claiming(1, 1), "dot.gif").unwrap();
    assert_eq!(tiny.dimensions, Some((1, 1)));
}

#[test]
fn png_text_chunks_are_dropped() {
    let input = png_with_text(30, 20);
    assert!(contains(&input, GPS_MARKER));
    let out = run(&input, "a.png").unwrap();
    assert!(!contains(&out.bytes, GPS_MARKER));
    assert!(!contains(&out.bytes, b"tEXt"));
}

#[test]
fn small_png_header_with_garbage_data_is_corrupt() {
    let refusal = run(&png_header_only(16, 16), "broken.png").unwrap_err();
    assert!(matches!(refusal, Refusal::CorruptImage(_)), "{refusal:?}");
    assert!(refusal.to_string().starts_with("the image is corrupt: "));
}

#[test]
fn webp_is_reencoded_as_webp() {
    let out = run(&webp(40, 30), "a.webp").unwrap();
    assert_eq!(out.content_type, "image/webp");
    assert_eq!(image::guess_format(&out.bytes).unwrap(), ImageFormat::WebP);
    assert_eq!(out.dimensions, Some((40, 30)));
}

#[test]
fn animated_gif_keeps_its_frames() {
    let out = run(&animated_gif(48, 24), "party.gif").unwrap();
    assert_eq!(out.content_type, "image/gif");
    assert_eq!(out.dimensions, Some((48, 24)));
    let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&out.bytes[..])).unwrap();
    let frames = decoder.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[1].buffer().get_pixel(5, 5).0, [0, 255, 0, 255]);

    let limits = InspectLimits { max_gif_frames: 2, ..InspectLimits::default() };
    let refusal = inspect(Bytes::from(animated_gif(48, 24)), "party.gif", &limits).unwrap_err();
    assert!(matches!(refusal, Refusal::AnimationTooLarge { .. }), "{refusal:?}");
}

#[test]
fn heic_exif_and_xmp_are_blanked_in_place() {
    let (input, _) = heic();
    assert!(contains(&input, GPS_MARKER) && contains(&input, XMP_MARKER));
    let out = run(&input, "IMG_0001.HEIC").unwrap();
    assert_eq!(out.content_type, "image/heic");
    assert_eq!(out.kind, Kind::Image);
    assert!(!out.inline);
    assert_eq!(out.dimensions, None);
    assert!(out.thumbnail.is_none());
    assert_eq!(out.bytes.len(), input.len());
    assert!(!contains(&out.bytes, GPS_MARKER));
    assert!(!contains(&out.bytes, XMP_MARKER));
    let (_, payload_start) = heic();
    let metadata_start = payload_start + HEVC_PAYLOAD.len();
    assert_eq!(&out.bytes[payload_start..metadata_start], HEVC_PAYLOAD);
    assert!(out.bytes[metadata_start..].iter().all(|&b| b == 0));
    assert_eq!(out.bytes[..payload_start], input[..payload_start]);
}

#[test]
fn heif_xmp_in_idat_is_blanked() {
    let (input, idat_payload) = heic_with_idat();
    assert!(contains(&input, XMP_MARKER));
    let out = run(&input, "x.heif").unwrap();
    assert_eq!(out.content_type, "image/heif");
    assert_eq!(out.bytes.len(), input.len());
    assert!(!contains(&out.bytes, XMP_MARKER));
    let xmp_len = input.len() - idat_payload - 8 - HEVC_PAYLOAD.len();
    assert!(out.bytes[idat_payload..idat_payload + xmp_len].iter().all(|&b| b == 0));
    assert!(contains(&out.bytes, HEVC_PAYLOAD));
}

#[test]
fn broken_heic_is_refused() {
    let (input, payload_start) = heic();
    let truncated = &input[..payload_start - 20];
    let refusal = run(truncated, "x.heic").unwrap_err();
    assert!(matches!(refusal, Refusal::HeicUnparsable(_)), "{refusal:?}");
    assert!(refusal.to_string().starts_with("the HEIC file could not be parsed"));
    // An Exif extent pointing past the end of the file.
    let mut beyond = input.clone();
    beyond.truncate(input.len() - 10);
    let refusal = run(&beyond, "x.heic").unwrap_err();
    assert!(matches!(refusal, Refusal::HeicUnparsable(_)), "{refusal:?}");
}

#[test]
fn markup_is_refused_even_with_bom_and_whitespace() {
    let documents: [&[u8]; 8] = [
        b"<!DOCTYPE html><html><body>hi</body></html>",
        b"<html><script>alert(1)</script></html>",
        b"  \n\t<HTML>",
        b"\xEF\xBB\xBF  <html><body>x</body></html>",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
        b"\xEF\xBB\xBF\r\n <svg onload=\"alert(1)\"/>",
        b"<?xml version=\"1.0\"?><svg/>",
        b"<!-- comment --><p>hello</p>",
    ];
    for document in documents {
        let detected = refused_as(document, "notes.txt");
        assert!(["text/html", "image/svg+xml", "text/xml"].contains(&detected.as_str()), "{detected}");
    }
    assert_eq!(refused_as(b"#!/bin/sh\nrm -rf /\n", "a.txt"), "text/x-shellscript");
}

#[test]
fn plain_text_is_accepted() {
    let text = "Hello, world!\r\n\tTabs, form feeds \u{0C} and ünïcödé 👋\n2 < 3 and <3\n";
    let out = run(text.as_bytes(), "notes.txt").unwrap();
    assert_eq!(out.content_type, "text/plain; charset=utf-8");
    assert_eq!(out.kind, Kind::File);
    assert!(!out.inline);
    assert_eq!(&out.bytes[..], text.as_bytes());
    let with_bom = run(b"\xEF\xBB\xBFbom text", "bom.txt").unwrap();
    assert_eq!(with_bom.content_type, "text/plain; charset=utf-8");
    // Text that starts like a binary magic is still text.
    let look_alike = run(b"ID3 tags explained\nMZ is not an exe\n", "id3.md").unwrap();
    assert_eq!(look_alike.content_type, "text/plain; charset=utf-8");
}

#[test]
fn binary_or_dangerously_named_text_is_refused() {
    assert_eq!(refused_as(b"abc\0def", "a.txt"), "application/octet-stream");
    assert_eq!(refused_as(b"abc\x1b[31mred", "a.txt"), "application/octet-stream");
    assert_eq!(refused_as(b"caf\xe9", "a.txt"), "application/octet-stream");
    let refusal = run(b"just words", "page.HTML. ").unwrap_err();
    assert_eq!(refusal, Refusal::DangerousTextName { extension: "html" });
    assert_eq!(run(b"", "empty.txt").unwrap_err(), Refusal::Empty);
}

#[test]
fn pdf_is_a_file() {
    let pdf = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";
    let out = run(pdf, "report.png").unwrap();
    assert_eq!(out.content_type, "application/pdf");
    assert_eq!(out.kind, Kind::File);
    assert!(!out.inline);
    assert_eq!(&out.bytes[..], pdf);
}

#[test]
fn office_documents_are_accepted_and_plain_zips_refused() {
    let out = run(&docx(), "cv.docx").unwrap();
    assert_eq!(out.content_type, "application/vnd.openxmlformats-officedocument.wordprocessingml.document");
    assert_eq!(out.kind, Kind::File);
    assert_eq!(out.extension, "docx");

    let doc = run(&legacy_doc(), "old.doc").unwrap();
    assert_eq!(doc.content_type, "application/msword");

    let odt = stored_zip(&[
        ("mimetype", b"application/vnd.oasis.opendocument.text"),
        ("content.xml", b"<office:document-content/>"),
    ]);
    assert_eq!(run(&odt, "a.odt").unwrap().content_type, "application/vnd.oasis.opendocument.text");
    assert_eq!(run(b"{\\rtf1\\ansi hello}", "a.rtf").unwrap().content_type, "application/rtf");

    let docm = stored_zip(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("word/document.xml", b"<w:document/>"),
        ("word/vbaProject.bin", b"macros"),
    ]);
    assert!(refused_as(&docm, "cv.docx").contains("macros"));
    let xlsx = stored_zip(&[("[Content_Types].xml", b"<Types/>"), ("xl/workbook.xml", b"<w/>")]);
    assert_eq!(run(&xlsx, "a.xlsx").unwrap().extension, "xlsx");

    let zip = stored_zip(&[("hello.txt", b"hello"), ("run.exe", b"MZ")]);
    assert_eq!(refused_as(&zip, "cv.docx"), "application/zip");
}

#[test]
fn media_types_are_recognised() {
    let ftyp = |brand: &[u8; 4]| {
        let mut file = vec![0, 0, 0, 24];
        file.extend_from_slice(b"ftyp");
        file.extend_from_slice(brand);
        file.extend_from_slice(&[0, 0, 0, 0]);
        file.extend_from_slice(b"isommp42");
        file.extend_from_slice(&[0, 0, 0, 8, b'm', b'd', b'a', b't']);
        file
    };
    let mp4 = run(&ftyp(b"isom"), "v.mp4").unwrap();
    assert_eq!((mp4.kind, mp4.content_type), (Kind::Video, "video/mp4"));
    let m4a = run(&ftyp(b"M4A "), "a.m4a").unwrap();
    assert_eq!((m4a.kind, m4a.content_type), (Kind::Audio, "audio/mp4"));
    assert_eq!(refused_as(&ftyp(b"qt  "), "v.mp4"), "video/quicktime");
    assert_eq!(refused_as(&ftyp(b"avif"), "v.avif"), "image/avif");

    let mut mp3 = b"ID3\x04\0\0\0\0\0\0".to_vec();
    mp3.extend_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
    mp3.resize(400, 0);
    let audio = run(&mp3, "song.mp3").unwrap();
    assert_eq!((audio.kind, audio.content_type), (Kind::Audio, "audio/mpeg"));

    let mut webm = vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01];
    webm.extend_from_slice(b"\x42\x82\x84webm");
    webm.resize(300, 0);
    let video = run(&webm, "clip.webm").unwrap();
    assert_eq!((video.kind, video.content_type), (Kind::Video, "video/webm"));
    let mut mkv = webm.clone();
    mkv[12..16].copy_from_slice(b"mtro");
    assert!(run(&mkv, "clip.webm").is_err());
}

#[test]
fn declared_types() {
    for allowed in [
        "image/png",
        "IMAGE/JPEG",
        "text/plain; charset=utf-8",
        "application/octet-stream",
        " video/mp4 ",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ] {
        assert!(declared_type_allowed(allowed), "{allowed}");
    }
    for refused in [
        "text/html",
        "text/html; charset=utf-8",
        "image/svg+xml",
        "application/xhtml+xml",
        "application/x-msdownload",
        "application/zip",
        "",
        "nonsense",
    ] {
        assert!(!declared_type_allowed(refused), "{refused}");
    }
    assert_eq!(Kind::Image.as_str(), "image");
    assert_eq!(Kind::File.as_str(), "file");
}

/// Truncations and byte flips of every fixture, plus random bytes: never a panic.
#[test]
fn mangled_inputs_never_panic() {
    let mut samples = vec![
        jpeg(48, 32),
        with_exif(&jpeg(48, 32), 6),
        png(48, 32),
        png_with_alpha(32, 16),
        webp(40, 20),
        animated_gif(16, 16),
        heic().0,
        docx(),
        legacy_doc(),
        b"%PDF-1.7\n".to_vec(),
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200 {
        let len = (next() % 600) as usize;
        samples.push((0..len).map(|_| next() as u8).collect());
    }
    let limits = InspectLimits::default();
    for sample in &samples {
        let step = (sample.len() / 60).max(1);
        for cut in (0..sample.len()).step_by(step) {
            let _ = inspect(Bytes::copy_from_slice(&sample[..cut]), "f", &limits);
        }
        for _ in 0..20 {
            let mut flipped = sample.clone();
            if let Some(byte) = flipped.get_mut((next() as usize) % sample.len().max(1)) {
                *byte ^= 1 << (next() % 8);
            }
            let _ = inspect(Bytes::from(flipped), "f", &limits);
        }
    }
}

/// Times the whole pipeline for a 12-megapixel photo. Run with
/// `cargo test --release -- --ignored --nocapture twelve_megapixel`.
#[test]
#[ignore]
fn twelve_megapixel_jpeg_timing() {
    let photo = jpeg_of(&noisy_photo(4000, 3000), 90);
    let limits = InspectLimits::default();
    let mut decode_times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let out = inspect(Bytes::from(photo.clone()), "big.jpg", &limits).unwrap();
        decode_times.push(started.elapsed());
        assert_eq!(out.dimensions, Some((4000, 3000)));
    }
    let started = Instant::now();
    let decoded = image::load_from_memory(&photo).unwrap();
    let decode_only = started.elapsed();
    let started = Instant::now();
    let mut reencoded = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut reencoded, JPEG_QUALITY)
        .encode_image(&decoded)
        .unwrap();
    let encode_only = started.elapsed();
    println!("decode alone: {decode_only:?}; JPEG q{JPEG_QUALITY} encode alone: {encode_only:?}");
    let mut thumbnail_times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let thumbnail = make_thumbnail(&decoded, 320).unwrap().unwrap();
        thumbnail_times.push(started.elapsed());
        assert_eq!((thumbnail.width, thumbnail.height), (320, 240));
    }
    println!(
        "input {} bytes; inspect(): {decode_times:?}; thumbnail alone: {thumbnail_times:?}",
        photo.len()
    );
}

/// Times an animated GIF of 50 photo-like 480×270 frames (more than 256 colours
/// after compositing, so the encoder quantises). Run like the test above.
#[test]
#[ignore]
fn animated_gif_timing() {
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(&mut gif, 30);
        for shift in 0..50u8 {
            let frame = image::RgbaImage::from_fn(480, 270, |x, y| {
                image::Rgba([(x as u8).wrapping_add(shift), y as u8, (x ^ y) as u8, 255])
            });
            let delay = image::Delay::from_numer_denom_ms(40, 1);
            encoder.encode_frame(image::Frame::from_parts(frame, 0, 0, delay)).unwrap();
        }
    }
    let started = Instant::now();
    let out = inspect(Bytes::from(gif.clone()), "a.gif", &InspectLimits::default()).unwrap();
    println!("GIF 50×480×270: {} → {} bytes in {:?}", gif.len(), out.bytes.len(), started.elapsed());
}
