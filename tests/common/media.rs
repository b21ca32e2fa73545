//! Media test helpers: files built in code (images with and without EXIF GPS, a PNG header
//! claiming 50,000 × 50,000 pixels, an executable) and the two-step upload a client makes.

use std::io::Cursor;

use image::{ImageFormat, RgbImage};
use reqwest::Method;
use serde_json::{Value, json};

use super::Client;

/// Text hidden in the GPS block of [`jpeg_with_gps`].
pub const GPS_MARKER: &[u8] = b"GPS-MARKER-37.5665N-126.9780E";

/// A `width` × `height` image with a gradient (so re-encoding has something to keep).
pub fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]))
}

/// [`picture`] encoded as `format`.
pub fn encoded(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    picture(width, height).write_to(&mut bytes, format).expect("encode");
    bytes.into_inner()
}

/// A JPEG whose APP1 Exif block holds a GPS IFD containing [`GPS_MARKER`] and, when given,
/// an orientation tag.
pub fn jpeg_with_gps(width: u32, height: u32, orientation: Option<u16>) -> Vec<u8> {
    let jpeg = encoded(width, height, ImageFormat::Jpeg);
    // TIFF, big-endian: IFD0 at 8 with GPSInfo (0x8825) and maybe Orientation (0x0112);
    // the GPS IFD after it with one UNDEFINED entry pointing at the marker.
    let entries: u16 = if orientation.is_some() { 2 } else { 1 };
    let ifd0_len = 2 + 12 * u32::from(entries) + 4;
    let gps_at = 8 + ifd0_len;
    let marker_at = gps_at + 2 + 12 + 4;
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend(entries.to_be_bytes());
    if let Some(orientation) = orientation {
        tiff.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1]);
        tiff.extend(orientation.to_be_bytes());
        tiff.extend([0, 0]);
    }
    tiff.extend([0x88, 0x25, 0, 4, 0, 0, 0, 1]);
    tiff.extend(gps_at.to_be_bytes());
    tiff.extend(0u32.to_be_bytes());
    tiff.extend(1u16.to_be_bytes());
    tiff.extend([0x00, 0x1b, 0, 7]);
    tiff.extend((GPS_MARKER.len() as u32).to_be_bytes());
    tiff.extend(marker_at.to_be_bytes());
    tiff.extend(0u32.to_be_bytes());
    tiff.extend(GPS_MARKER);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend([0xff, 0xe1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

/// CRC-32 (IEEE) as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG whose header claims `width` × `height` pixels, with a few bytes of pixel data: a
/// decompression bomb's shape, harmless unless something decodes it.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        png.extend(&body);
        png.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    png
}

/// The start of an x86-64 ELF executable.
pub fn executable() -> Vec<u8> {
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0\x01\0\0\0".to_vec();
    elf.resize(512, 0);
    elf
}

/// Opens an upload as `client`; the JSON answer (`upload_id`, `method`, `url`, …).
pub async fn open_upload(
    client: &Client,
    conversation: &str,
    filename: &str,
    content_type: &str,
    size: usize,
) -> Value {
    client
        .post(
            "/api/uploads",
            json!({"conversation_id": conversation, "filename": filename, "content_type": content_type, "size": size}),
        )
        .await
        .expect(201)
}

/// Uploads `bytes` where `ticket` says, as a client would; the storage's HTTP status.
pub async fn put_bytes(client: &Client, ticket: &Value, content_type: &str, bytes: Vec<u8>) -> u16 {
    let url = ticket["url"].as_str().expect("url");
    let url = if url.starts_with('/') { format!("{}{url}", client.base) } else { url.to_owned() };
    let request = match ticket["method"].as_str().expect("method") {
        "PUT" => {
            let mut request = client.http.request(Method::PUT, url).body(bytes);
            for (name, value) in ticket["headers"].as_object().expect("headers") {
                request = request.header(name.as_str(), value.as_str().expect("header value"));
            }
            request
        }
        "POST" => {
            let mut form = reqwest::multipart::Form::new();
            for (name, value) in ticket["fields"].as_object().expect("fields") {
                form = form.text(name.clone(), value.as_str().expect("field value").to_owned());
            }
            let file = reqwest::multipart::Part::bytes(bytes)
                .file_name("upload")
                .mime_str(content_type)
                .expect("mime");
            client.http.post(url).multipart(form.part("file", file))
        }
        other => panic!("unknown upload method {other}"),
    };
    request.send().await.expect("upload request").status().as_u16()
}

/// Opens an upload and uploads `bytes` (declared as `content_type`); the upload id.
pub async fn upload(
    client: &Client,
    conversation: &str,
    filename: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> String {
    let ticket = open_upload(client, conversation, filename, content_type, bytes.len()).await;
    let status = put_bytes(client, &ticket, content_type, bytes).await;
    assert!((200..300).contains(&status), "upload answered {status}");
    ticket["upload_id"].as_str().expect("upload_id").to_owned()
}

/// Sends a message of `kind` carrying `upload_ids`, without text; the raw reply.
pub async fn send_uploads(
    client: &Client,
    conversation: &str,
    kind: &str,
    upload_ids: &[&str],
) -> super::Reply {
    let attachments: Vec<Value> = upload_ids.iter().map(|id| json!({"upload_id": id})).collect();
    client
        .post(
            &format!("/api/conversations/{conversation}/messages"),
            json!({"type": kind, "attachments": attachments}),
        )
        .await
}
