//! Media throughput: how long one 12-megapixel JPEG takes to check and process (decode,
//! orientation, re-encode without metadata, thumbnail), and complete uploads per second
//! through the local-disk backend.
//!
//! An upload here is the whole client round: `POST /api/uploads`, `PUT` of the bytes to the
//! URL it answered, and the message that attaches it (201 only after chatd checked the bytes,
//! stored the attachment and committed the message). Runs the real `chatd` binary on a temp
//! data directory; prints figures, asserts nothing.
//!
//! `cargo bench --bench media`; env `BENCH_SECONDS` (default 5) sets each step's length.

mod support;

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatd::core::media::inspect::{InspectLimits, inspect};
use image::{ImageFormat, RgbImage};
use serde_json::{Value, json};
use support::{Server, create_group, tokens};

const CLIENTS: usize = 8;

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    processing_time()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        // The daily upload quota would stop a benchmark after 500 uploads per user.
        let server = Server::start_with(&["--media-uploads-per-day", "1000000000"]).await?;
        let pdf = Bytes::from(pdf(100 * 1024));
        let photo = Bytes::from(jpeg(1280, 960)?);
        println!("## uploads through the local backend ({CLIENTS} clients, {seconds} s each)");
        for (label, kind, content_type, bytes) in [
            ("PDF, 100 KiB", "file", "application/pdf", pdf),
            ("JPEG 1280×960", "image", "image/jpeg", photo),
        ] {
            let rate =
                uploads_per_second(&server, kind, content_type, bytes.clone(), Duration::from_secs(seconds))
                    .await?;
            println!("{label} ({} bytes): {rate:.0} uploads/s", bytes.len());
        }
        Ok(())
    })
}

/// A photo-like image: smooth gradients with some texture, so encoders have real work.
fn photo(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let noise = (x.wrapping_mul(7919) ^ y.wrapping_mul(104_729)) % 32;
        image::Rgb([((x / 16) % 256) as u8, ((y / 12) % 256) as u8, (128 + noise) as u8])
    })
}

/// [`photo`] as a JPEG.
fn jpeg(width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Cursor::new(Vec::new());
    photo(width, height).write_to(&mut bytes, ImageFormat::Jpeg)?;
    Ok(bytes.into_inner())
}

/// A PDF-shaped file of `size` bytes.
fn pdf(size: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.resize(size - 6, b' ');
    bytes.extend(b"%%EOF\n");
    bytes
}

/// Times `inspect` on a 4000 × 3000 JPEG, as chatd runs it when a message attaches one.
fn processing_time() -> anyhow::Result<()> {
    let bytes = Bytes::from(jpeg(4000, 3000)?);
    let limits = InspectLimits::default();
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let inspected = inspect(bytes.clone(), "photo.jpg", &limits).map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(started.elapsed());
        anyhow::ensure!(inspected.thumbnail.is_some(), "no thumbnail");
    }
    times.sort();
    println!("## processing one 12-megapixel JPEG ({} bytes), one core", bytes.len());
    println!(
        "check + decode + re-encode + 320 px thumbnail: median {:.0} ms, best {:.0} ms (5 runs)",
        times[2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3
    );
    Ok(())
}

/// Complete uploads per second by [`CLIENTS`] concurrent clients, each its own user in one group.
async fn uploads_per_second(
    server: &Server,
    kind: &'static str,
    content_type: &'static str,
    bytes: Bytes,
    length: Duration,
) -> anyhow::Result<f64> {
    let users: Vec<String> = (0..CLIENTS).map(|i| format!("uploader{i}-{kind}")).collect();
    let tokens = tokens(&users)?;
    let members: Vec<&String> = users.iter().collect();
    let conversation = create_group(server.addr, &tokens[0], &members[1..]).await?;
    let base = format!("http://{}", server.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for token in tokens {
        let (base, conversation, bytes) = (base.clone(), conversation.clone(), bytes.clone());
        let (stop, done) = (stop.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                one_upload(&http, &base, &token, &conversation, kind, content_type, bytes.clone()).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for client in clients {
        client.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

/// One client round: open, upload, attach.
async fn one_upload(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    conversation: &str,
    kind: &str,
    content_type: &str,
    bytes: Bytes,
) -> anyhow::Result<()> {
    let open = json!({"conversation_id": conversation, "filename": "f", "content_type": content_type, "size": bytes.len()});
    let ticket: Value =
        http.post(format!("{base}/api/uploads")).bearer_auth(token).json(&open).send().await?.json().await?;
    let url = ticket["url"].as_str().ok_or_else(|| anyhow::anyhow!("no upload url: {ticket}"))?;
    let put =
        http.put(format!("{base}{url}")).header("content-type", content_type).body(bytes).send().await?;
    anyhow::ensure!(put.status().as_u16() == 204, "upload: {}", put.status());
    let message = json!({"type": kind, "attachments": [{"upload_id": ticket["upload_id"]}]});
    let sent = http
        .post(format!("{base}/api/conversations/{conversation}/messages"))
        .bearer_auth(token)
        .json(&message)
        .send()
        .await?;
    anyhow::ensure!(sent.status().as_u16() == 201, "send: {} {}", sent.status(), sent.text().await?);
    Ok(())
}
