//! One suite of checks run against both media backends: local disk (in a temporary directory)
//! and S3 (a SeaweedFS `weed mini` of the test's own, which checks signatures, policies,
//! lengths and types; see common/weed.rs). Uploads go through `upload_target` exactly as a
//! client would send them; redirects are fetched as a browser would.

mod common;

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use chatd::core::ports::{ByteRange, Download, Media, MediaError, ObjectHeaders, UploadSpec, UploadTarget};
use chatd::media::local::LocalMedia;
use common::weed::Weed;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::signer::{Method, Signer};

/// 36 bytes, each telling its offset.
const CONTENT: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn image_headers() -> ObjectHeaders {
    ObjectHeaders { content_type: "image/png".to_owned(), content_disposition: "inline".to_owned() }
}

fn file_headers() -> ObjectHeaders {
    ObjectHeaders {
        content_type: "application/pdf".to_owned(),
        content_disposition: r#"attachment; filename="report 2026.pdf""#.to_owned(),
    }
}

fn local_media() -> (tempfile::TempDir, LocalMedia) {
    let dir = tempfile::tempdir().expect("temp dir");
    let media = LocalMedia::open(&dir.path().join("media"), None).expect("open");
    (dir, media)
}

fn upload_spec(key: &str, size: u64, expires_in: Duration) -> UploadSpec {
    UploadSpec {
        upload_id: key.trim_start_matches("uploads/").to_owned(),
        key: key.to_owned(),
        content_type: "image/png".to_owned(),
        size,
        expires_in,
        token: "t0k+en/=".to_owned(),
    }
}

/// put, size, read (bounded), replace, delete, delete again.
async fn check_objects(media: &dyn Media) {
    let key = "attachments/a1";
    assert_eq!(media.size(key).await.expect("size"), None);
    assert!(matches!(media.read(key, 100).await, Err(MediaError::NotFound)));

    media.put(key, Bytes::from_static(CONTENT), &image_headers()).await.expect("put");
    assert_eq!(media.size(key).await.expect("size"), Some(36));
    assert_eq!(media.read(key, 36).await.expect("read"), CONTENT);
    assert!(matches!(media.read(key, 35).await, Err(MediaError::TooLarge(35))));

    media.put(key, Bytes::from_static(b"replaced"), &file_headers()).await.expect("replace");
    assert_eq!(media.read(key, 100).await.expect("read"), &b"replaced"[..]);

    media.delete(key).await.expect("delete");
    assert_eq!(media.size(key).await.expect("size"), None);
    media.delete(key).await.expect("deleting a deleted object");
    media.delete("thumbnails/never-stored").await.expect("deleting a missing object");
}

/// What a client receives for one download.
struct Fetched {
    range: Range<u64>,
    total: u64,
    body: Vec<u8>,
}

/// Serves `key` as chatd would and receives it as a client would: a stream read through, a
/// redirect fetched with the equivalent `Range` header. `Err` is the backend's refusal or the
/// store's status.
async fn fetch(media: &dyn Media, key: &str, range: Option<ByteRange>) -> Result<Fetched, String> {
    let download = media
        .download(key, range.clone(), &file_headers(), Duration::from_secs(60))
        .await
        .map_err(|err| err.to_string())?;
    match download {
        Download::Unsatisfiable { .. } => Err("416".to_owned()),
        Download::Stream(stream) => {
            let chunks: Vec<Bytes> = stream.body.try_collect().await.expect("body");
            Ok(Fetched { range: stream.range, total: stream.total, body: chunks.concat() })
        }
        Download::Redirect(url) => {
            let mut request = reqwest::Client::new().get(&url);
            if let Some(range) = &range {
                request = request.header("Range", range_header(range));
            }
            let response = request.send().await.expect("GET the redirect");
            if !response.status().is_success() {
                return Err(response.status().as_str().to_owned());
            }
            let header = |name: &str| response.headers()[name].to_str().expect("header").to_owned();
            assert_eq!(header("Content-Type"), file_headers().content_type);
            assert_eq!(header("Content-Disposition"), file_headers().content_disposition);
            let (range, total) = match response.headers().get("Content-Range") {
                Some(value) => parse_content_range(value.to_str().expect("Content-Range")),
                None => {
                    let length = response.content_length().expect("length");
                    (0..length, length)
                }
            };
            Ok(Fetched { range, total, body: response.bytes().await.expect("body").to_vec() })
        }
    }
}

fn range_header(range: &ByteRange) -> String {
    match range {
        ByteRange::Bounded(offsets) => format!("bytes={}-{}", offsets.start, offsets.end - 1),
        ByteRange::From(start) => format!("bytes={start}-"),
        ByteRange::Last(count) => format!("bytes=-{count}"),
    }
}

/// `bytes a-b/total` → (a..b+1, total).
fn parse_content_range(value: &str) -> (Range<u64>, u64) {
    let (offsets, total) = value.trim_start_matches("bytes ").split_once('/').expect("a/b");
    let (start, last) = offsets.split_once('-').expect("a-b");
    let number = |text: &str| text.parse::<u64>().expect("number");
    (number(start)..number(last) + 1, number(total))
}

/// The whole object and each kind of range; a range past the end is refused (416).
async fn check_downloads(media: &dyn Media) {
    let key = "attachments/d1";
    media.put(key, Bytes::from_static(CONTENT), &file_headers()).await.expect("put");
    let cases = [
        (None, 0..36),
        (Some(ByteRange::Bounded(2..6)), 2..6),
        (Some(ByteRange::Bounded(30..100)), 30..36),
        (Some(ByteRange::From(10)), 10..36),
        (Some(ByteRange::Last(5)), 31..36),
        (Some(ByteRange::Last(100)), 0..36),
    ];
    for (range, expected) in cases {
        let fetched = fetch(media, key, range.clone()).await.expect("download");
        assert_eq!(fetched.range, expected, "{range:?}");
        assert_eq!(fetched.total, 36, "{range:?}");
        assert_eq!(fetched.body, &CONTENT[expected.start as usize..expected.end as usize], "{range:?}");
    }
    for past_the_end in [ByteRange::From(36), ByteRange::Bounded(40..50)] {
        let refused = fetch(media, key, Some(past_the_end.clone())).await.err();
        assert_eq!(refused.as_deref(), Some("416"), "{past_the_end:?}");
    }
}

#[tokio::test]
async fn local_objects() {
    let (_dir, media) = local_media();
    check_objects(&media).await;
}

#[tokio::test]
async fn s3_objects() {
    let weed = Weed::start().await;
    check_objects(&weed.media().await).await;
}

#[tokio::test]
async fn local_downloads() {
    let (_dir, media) = local_media();
    check_downloads(&media).await;
    let missing = media.download("attachments/none", None, &file_headers(), Duration::from_secs(60)).await;
    assert!(matches!(missing, Err(MediaError::NotFound)));
}

#[tokio::test]
async fn s3_downloads() {
    let weed = Weed::start().await;
    check_downloads(&weed.media().await).await;
}

/// No HTTP route receives local uploads yet: the target's shape is what a client is told.
#[tokio::test]
async fn local_upload_target_is_a_put_to_chatd() {
    let (dir, media) = local_media();
    assert!(media.receives_uploads());
    let spec = upload_spec("uploads/u1", 36, Duration::from_secs(600));
    let target = media.upload_target(&spec).await.expect("target");
    assert_eq!(target.method, "PUT");
    assert_eq!(target.url, "/api/uploads/u1/content?token=t0k%2Ben%2F%3D");
    assert_eq!(serde_json::Value::Object(target.headers), serde_json::json!({ "Content-Type": "image/png" }));
    assert!(target.fields.is_empty());

    let with_origin =
        LocalMedia::open(&dir.path().join("other"), Some("https://chat.example/".to_owned())).expect("open");
    let target = with_origin.upload_target(&spec).await.expect("target");
    assert_eq!(target.url, "https://chat.example/api/uploads/u1/content?token=t0k%2Ben%2F%3D");
}

/// Sends the multipart form a browser would: `fields` in order, then the file. Returns the
/// status and the body (the store's error document on a refusal).
async fn post_form(url: &str, fields: &[(String, String)], file: &[u8]) -> (reqwest::StatusCode, String) {
    let boundary = "chatd-media-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .bytes(),
        );
    }
    body.extend(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.png\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .bytes(),
    );
    body.extend(file);
    body.extend(format!("\r\n--{boundary}--\r\n").bytes());
    let response = reqwest::Client::new()
        .post(url)
        .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .expect("POST");
    (response.status(), response.text().await.expect("body"))
}

fn form_fields(target: &UploadTarget) -> Vec<(String, String)> {
    let field = |(name, value): (&String, &serde_json::Value)| {
        (name.clone(), value.as_str().expect("string field").to_owned())
    };
    target.fields.iter().map(field).collect()
}

#[tokio::test]
async fn s3_presigned_post_uploads_the_declared_object() {
    let weed = Weed::start().await;
    let media = weed.media().await;
    assert!(!media.receives_uploads());
    let spec = upload_spec("uploads/u1", 36, Duration::from_secs(600));
    let target = media.upload_target(&spec).await.expect("target");
    assert_eq!(target.method, "POST");
    assert_eq!(target.url, format!("{}/{}", weed.endpoint, Weed::BUCKET));
    assert!(target.headers.is_empty());

    let (status, body) = post_form(&target.url, &form_fields(&target), CONTENT).await;
    assert!(status.is_success(), "{status}: {body}");
    assert_eq!(media.size(&spec.key).await.expect("size"), Some(36));
    assert_eq!(media.read(&spec.key, 36).await.expect("read"), CONTENT);
}

/// Each upload the policy does not allow is refused by the store for that reason (SeaweedFS's
/// error document says which), and leaves no object.
#[tokio::test]
async fn s3_presigned_post_refuses_what_the_policy_does_not_allow() {
    let weed = Weed::start().await;
    let media = weed.media().await;
    let refused = async |key: &str, fields: Vec<(String, String)>, file: &[u8], reason: &str| {
        let (status, body) = post_form(&format!("{}/{}", weed.endpoint, Weed::BUCKET), &fields, file).await;
        assert!(status.is_client_error(), "{key}: {status}");
        assert!(body.contains(reason), "{key}: expected {reason}, got {body}");
        assert_eq!(media.size(key).await.expect("size"), None, "{key}");
    };
    let fields_for = async |key: &str, expires_in: Duration| {
        form_fields(&media.upload_target(&upload_spec(key, 36, expires_in)).await.expect("target"))
    };
    let minutes = Duration::from_secs(600);

    let longer = [CONTENT, b"!"].concat();
    refused("uploads/longer", fields_for("uploads/longer", minutes).await, &longer, "EntityTooLarge").await;
    refused("uploads/shorter", fields_for("uploads/shorter", minutes).await, &CONTENT[1..], "EntityTooSmall")
        .await;

    let mut other_type = fields_for("uploads/type", minutes).await;
    other_type.iter_mut().filter(|(name, _)| name == "Content-Type").for_each(|(_, value)| {
        *value = "text/html".to_owned();
    });
    refused("uploads/type", other_type, CONTENT, "Policy Condition failed").await;

    let mut tampered = fields_for("uploads/tampered", minutes).await;
    tampered.iter_mut().filter(|(name, _)| name == "x-amz-signature").for_each(|(_, value)| {
        let flipped = if value.ends_with('0') { '1' } else { '0' };
        value.pop();
        value.push(flipped);
    });
    refused("uploads/tampered", tampered, CONTENT, "SignatureDoesNotMatch").await;

    let mut other_key = fields_for("uploads/granted", minutes).await;
    other_key.iter_mut().filter(|(name, _)| name == "key").for_each(|(_, value)| {
        *value = "uploads/elsewhere".to_owned();
    });
    refused("uploads/elsewhere", other_key, CONTENT, "Policy Condition failed").await;

    let expiring = fields_for("uploads/expired", Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    refused("uploads/expired", expiring, CONTENT, "Policy expired").await;
}

/// The redirect answers with the headers given at download time (whatever was stored), and
/// stops working once it expires. `put`'s own headers are what a plain signed GET gets.
#[tokio::test]
async fn s3_redirect_serves_given_headers_until_it_expires() {
    let weed = Weed::start().await;
    let media = weed.media().await;
    let key = "attachments/r1";
    media.put(key, Bytes::from_static(CONTENT), &image_headers()).await.expect("put");

    let Download::Redirect(url) =
        media.download(key, None, &file_headers(), Duration::from_secs(2)).await.expect("download")
    else {
        panic!("S3 downloads are redirects");
    };
    let response = reqwest::get(&url).await.expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["Content-Type"], "application/pdf");
    assert_eq!(response.headers()["Content-Disposition"], r#"attachment; filename="report 2026.pdf""#);
    assert_eq!(response.bytes().await.expect("body"), CONTENT);

    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&weed.endpoint)
        .with_allow_http(true)
        .with_bucket_name(Weed::BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(Weed::ACCESS_KEY)
        .with_secret_access_key(Weed::SECRET_KEY)
        .build()
        .expect("store");
    let plain = store
        .signed_url(Method::GET, &object_store::path::Path::from(key), Duration::from_secs(60))
        .await
        .expect("sign");
    let response = reqwest::get(plain).await.expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["Content-Type"], "image/png");
    assert_eq!(
        response.headers().get("Content-Disposition").map(|v| v.to_str().expect("text")),
        Some("inline")
    );
    assert_eq!(store.head(&object_store::path::Path::from(key)).await.expect("head").size, 36);

    // X-Amz-Date has whole seconds: the URL dies between 1 and 2 s from now.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let expired = reqwest::get(&url).await.expect("GET");
    assert_eq!(expired.status(), 403);
}
