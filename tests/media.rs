//! Photos and files end to end, through the real protocol against a real server: the same
//! scenarios on local disk and on S3 (a real SeaweedFS that checks signatures, lengths and
//! types). Uploads go where `POST /api/uploads` says, exactly as a client sends them.

mod common;

use std::time::Duration;

use chatd::config::{Config, MediaStorage};
use chatd::media::s3::S3Config;
use common::media::{
    GPS_MARKER, encoded, executable, jpeg_with_gps, open_upload, png_header_only, put_bytes, send_uploads,
    upload,
};
use common::weed::Weed;
use common::ws::Ws;
use common::{Client, TestServer};
use image::ImageFormat;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "media-test-admin-key-0123456789";

/// Where a test server keeps its media.
#[derive(Clone)]
enum Storage {
    Local,
    S3(S3Config),
}

/// A server on `storage`, without message rate limits, after `tweak`.
async fn server(storage: &Storage, tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        if let Storage::S3(s3) = storage {
            config.media.store = MediaStorage::S3(s3.clone());
        }
        tweak(config);
    })
    .await
}

/// Whether `key` is in the server's media store, asked of the store itself.
async fn stored(server: &TestServer, key: &str) -> bool {
    let media = chatd::state::open_media(&server.state.config).await.expect("media store");
    media.size(key).await.expect("size").is_some()
}

/// GET `path` as `client` (bearer), following redirects; status, headers and bytes.
async fn download(client: &Client, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = client.http.get(format!("{}{path}", client.base));
    if let Some(token) = &client.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("download");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.bytes().await.expect("body").to_vec())
}

/// The headers of chatd's own answer to GET `path` as `client` (a redirect not followed).
async fn chatd_answer(client: &Client, path: &str) -> reqwest::header::HeaderMap {
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let response = http
        .get(format!("{}{path}", client.base))
        .bearer_auth(client.token.as_deref().expect("token"))
        .send()
        .await
        .expect("download");
    assert!([200, 302].contains(&response.status().as_u16()), "{path}: {}", response.status());
    response.headers().clone()
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Alice and Bob in a new group conversation; Carol outside it.
async fn trio(server: &TestServer) -> (Client, Client, Client, String) {
    let (alice, bob, carol) = (server.client("alice"), server.client("bob"), server.client("carol"));
    let conversation = id(&alice.create("group", &["bob"]).await);
    (alice, bob, carol, conversation)
}

/// A PNG declared as JPEG comes back a PNG: kind, type, size, dimensions and thumbnail in the
/// message everyone gets (REST ack, Bob's `/ws`, history); Bob downloads both; Carol gets 404
/// for both, with or without `?token=`.
async fn a_png_declared_as_jpeg_is_accepted_as_png(server: &TestServer) {
    let (alice, bob, carol, conversation) = trio(server).await;
    let mut bob_ws = Ws::connect(server, "bob").await;
    let png = encoded(1000, 500, ImageFormat::Png);
    let upload_id = upload(&alice, &conversation, "cat.jpg", "image/jpeg", png).await;
    let message = send_uploads(&alice, &conversation, "image", &[&upload_id]).await.expect(201);
    let attachment = &message["attachments"][0];
    assert_eq!(attachment["kind"], "image");
    assert_eq!(attachment["content_type"], "image/png");
    assert_eq!(attachment["name"], "cat.jpg");
    assert_eq!((attachment["width"].as_u64(), attachment["height"].as_u64()), (Some(1000), Some(500)));
    assert_eq!(attachment["thumbnail"], json!({"width": 320, "height": 160}));
    assert!(attachment.get("upload_id").is_none(), "the upload id is not shown: {attachment}");
    let live = bob_ws.next("message:new").await;
    assert_eq!(live["attachments"], message["attachments"], "the same object for every recipient");
    let history = bob.all_messages(&conversation).await;
    assert_eq!(history[0]["attachments"], message["attachments"]);

    let attachment_id = attachment["id"].as_str().expect("attachment id");
    let (status, headers, bytes) = download(&bob, &format!("/api/attachments/{attachment_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/png");
    assert!(headers["content-disposition"].to_str().expect("ascii").starts_with("inline"));
    assert_eq!(bytes.len() as u64, attachment["size"].as_u64().expect("size"), "size is the stored length");
    let decoded = image::load_from_memory_with_format(&bytes, ImageFormat::Png).expect("a PNG");
    assert_eq!((decoded.width(), decoded.height()), (1000, 500));
    let ranged = bob
        .http
        .get(format!("{}/api/attachments/{attachment_id}", bob.base))
        .bearer_auth(bob.token.as_deref().expect("token"))
        .header("range", "bytes=0-9")
        .send()
        .await
        .expect("ranged download");
    assert_eq!(ranged.status().as_u16(), 206);
    assert_eq!(ranged.bytes().await.expect("body").as_ref(), &bytes[..10], "the first ten bytes");
    let (status, _, thumbnail) = download(&bob, &format!("/api/attachments/{attachment_id}/thumbnail")).await;
    assert_eq!(status, 200);
    let thumbnail = image::load_from_memory(&thumbnail).expect("an image");
    assert_eq!((thumbnail.width(), thumbnail.height()), (320, 160));

    for path in
        [format!("/api/attachments/{attachment_id}"), format!("/api/attachments/{attachment_id}/thumbnail")]
    {
        let (status, _, _) = download(&carol, &path).await;
        assert_eq!(status, 404, "a non-member gets 404 for {path}");
        let token = server.token("carol");
        let (status, _, _) = download(&server.anonymous(), &format!("{path}?token={token}")).await;
        assert_eq!(status, 404, "also with ?token=");
        let (status, _, _) = download(&server.anonymous(), &path).await;
        assert_eq!(status, 401, "no token: 401");
        let (status, _, _) =
            download(&server.anonymous(), &format!("{path}?token={}", server.token("bob"))).await;
        assert_eq!(status, 200, "a member's ?token= works (for <img src>)");
    }
    let (status, _, _) = download(&bob, "/api/attachments/0190f000-0000-7000-8000-000000000000").await;
    assert_eq!(status, 404, "an unknown id is the same 404");
}

/// An executable renamed `.png`, HTML, and a bomb's header are refused with the reason, and
/// no message is stored.
async fn bad_bytes_are_refused_and_nothing_is_stored(server: &TestServer) {
    let (alice, _, _, conversation) = trio(server).await;
    let cases = [
        ("setup.png", "image/png", executable(), "not an allowed type"),
        (
            "page.txt",
            "text/plain",
            b"<!DOCTYPE html><script>alert(1)</script>".to_vec(),
            "not an allowed type",
        ),
        ("bomb.png", "image/png", png_header_only(50_000, 50_000), "pixels"),
    ];
    for (filename, content_type, bytes, reason) in cases {
        let upload_id = upload(&alice, &conversation, filename, content_type, bytes).await;
        let reply = send_uploads(&alice, &conversation, "image", &[&upload_id]).await;
        reply.assert_error(400, "invalid");
        let message = reply.body["error"]["message"].as_str().expect("message");
        assert!(message.contains(reason), "{filename}: {message:?} should say {reason:?}");
    }
    assert!(alice.all_messages(&conversation).await.is_empty(), "no message was stored");
    for content_type in ["text/html", "image/svg+xml", "application/xhtml+xml"] {
        let reply = alice
            .post(
                "/api/uploads",
                json!({"conversation_id": conversation, "filename": "x", "content_type": content_type, "size": 10}),
            )
            .await;
        reply.assert_error(400, "invalid");
    }
}

/// EXIF GPS is gone from the stored JPEG; orientation is applied first.
async fn a_jpeg_with_gps_exif_comes_back_without_it(server: &TestServer) {
    let (alice, bob, _, conversation) = trio(server).await;
    let jpeg = jpeg_with_gps(200, 100, Some(6));
    assert!(contains(&jpeg, GPS_MARKER));
    let upload_id = upload(&alice, &conversation, "IMG_0001.JPG", "image/jpeg", jpeg).await;
    let message = send_uploads(&alice, &conversation, "image", &[&upload_id]).await.expect(201);
    let attachment = &message["attachments"][0];
    assert_eq!(attachment["content_type"], "image/jpeg");
    assert_eq!(
        (attachment["width"].as_u64(), attachment["height"].as_u64()),
        (Some(100), Some(200)),
        "rotated"
    );
    let attachment_id = attachment["id"].as_str().expect("id");
    let (status, _, bytes) = download(&bob, &format!("/api/attachments/{attachment_id}")).await;
    assert_eq!(status, 200);
    assert!(!contains(&bytes, GPS_MARKER), "the GPS block is gone");
    assert!(!contains(&bytes, b"Exif\0\0"), "no EXIF at all");
    let decoded = image::load_from_memory(&bytes).expect("a JPEG");
    assert_eq!((decoded.width(), decoded.height()), (100, 200));
    assert!(!stored(server, &format!("uploads/{upload_id}")).await, "the raw upload (with GPS) is deleted");
}

/// Every upload that is not the sender's own, in this conversation, uploaded, at its declared
/// size, is refused; one upload cannot go into two messages; a repeated send reuses it.
async fn foreign_unknown_and_reused_uploads_are_refused(server: &TestServer) {
    let (alice, bob, _, conversation) = trio(server).await;
    let other = id(&alice.create("group", &["bob"]).await);
    let pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n".to_vec();
    let bobs = upload(&bob, &conversation, "bob.pdf", "application/pdf", pdf.clone()).await;
    let elsewhere = upload(&alice, &other, "other.pdf", "application/pdf", pdf.clone()).await;
    let never = open_upload(&alice, &conversation, "never.pdf", "application/pdf", pdf.len()).await;
    let never = never["upload_id"].as_str().expect("upload_id").to_owned();
    // A store without a length policy could hold other bytes than declared: put them there.
    let resized = upload(&alice, &conversation, "resized.pdf", "application/pdf", pdf.clone()).await;
    let media = chatd::state::open_media(&server.state.config).await.expect("media store");
    let headers = chatd::core::ports::ObjectHeaders {
        content_type: "application/pdf".into(),
        content_disposition: "attachment".into(),
    };
    let longer = [pdf.as_slice(), b"% more"].concat();
    media.put(&format!("uploads/{resized}"), longer.into(), &headers).await.expect("put");
    for (upload_id, reason) in [
        (resized.as_str(), "were declared"),
        (bobs.as_str(), "not an upload of yours"),
        (elsewhere.as_str(), "not an upload of yours"),
        ("0190f000-0000-7000-8000-000000000000", "not an upload of yours"),
        (never.as_str(), "never uploaded"),
    ] {
        let reply = send_uploads(&alice, &conversation, "file", &[upload_id]).await;
        reply.assert_error(400, "invalid");
        let message = reply.body["error"]["message"].as_str().expect("message");
        assert!(message.contains(reason), "{message:?} should say {reason:?}");
    }
    let mine = upload(&alice, &conversation, "deal.pdf", "application/pdf", pdf).await;
    let body = json!({"type": "file", "client_id": "c-1", "attachments": [{"upload_id": mine}]});
    let path = format!("/api/conversations/{conversation}/messages");
    let first = alice.post(&path, body.clone()).await.expect(201);
    assert_eq!(first["attachments"][0]["kind"], "file");
    assert_eq!(first["attachments"][0]["content_type"], "application/pdf");
    let again = alice.post(&path, body).await.expect(200);
    assert_eq!(again["id"], first["id"], "a repeated send returns the original");
    let reply = send_uploads(&alice, &conversation, "file", &[&mine]).await;
    reply.assert_error(400, "invalid");
    assert!(reply.body["error"]["message"].as_str().expect("message").contains("already attached"));
    let (status, headers, _) =
        download(&bob, &format!("/api/attachments/{}", first["attachments"][0]["id"].as_str().expect("id")))
            .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-disposition"].to_str().expect("ascii").starts_with("attachment"),
        "a PDF downloads"
    );
    let own = chatd_answer(
        &bob,
        &format!("/api/attachments/{}", first["attachments"][0]["id"].as_str().expect("id")),
    )
    .await;
    assert_eq!(own["x-content-type-options"], "nosniff", "chatd's own answer (bytes or redirect)");
    assert_eq!(own["content-security-policy"], "default-src 'none'; sandbox");
}

/// Over the size limit: refused when opened, and bytes beyond the declared length are refused
/// by the storage (chatd's own PUT, or S3's signed policy).
async fn sizes_are_enforced(server: &TestServer) {
    let (alice, _, _, conversation) = trio(server).await;
    let max = server.state.chat.limits().media.max_bytes;
    let reply = alice
        .post(
            "/api/uploads",
            json!({"conversation_id": conversation, "filename": "big.bin", "content_type": "application/pdf", "size": max + 1}),
        )
        .await;
    reply.assert_error(413, "too_large");
    let ticket = open_upload(&alice, &conversation, "a.pdf", "application/pdf", 10).await;
    let status =
        put_bytes(&alice, &ticket, "application/pdf", b"%PDF-1.4 and more than ten bytes".to_vec()).await;
    assert!(status >= 400, "the storage refuses a longer body: {status}");
    let key = format!("uploads/{}", ticket["upload_id"].as_str().expect("upload_id"));
    assert!(!stored(server, &key).await, "nothing stored");
}

/// A deleted message's attachment is 404 at once.
async fn a_deleted_message_hides_its_media(server: &TestServer) {
    let (alice, bob, _, conversation) = trio(server).await;
    let upload_id =
        upload(&alice, &conversation, "a.png", "image/png", encoded(64, 64, ImageFormat::Png)).await;
    let message = send_uploads(&alice, &conversation, "image", &[&upload_id]).await.expect(201);
    let attachment_id = message["attachments"][0]["id"].as_str().expect("id").to_owned();
    alice.delete(&format!("/api/messages/{}", id(&message))).await.expect(200);
    let (status, _, _) = download(&bob, &format!("/api/attachments/{attachment_id}")).await;
    assert_eq!(status, 404);
}

/// Every scenario that needs no special settings, on one server.
async fn everyday_scenarios(storage: &Storage) {
    let server = server(storage, |_| {}).await;
    a_png_declared_as_jpeg_is_accepted_as_png(&server).await;
    bad_bytes_are_refused_and_nothing_is_stored(&server).await;
    a_jpeg_with_gps_exif_comes_back_without_it(&server).await;
    foreign_unknown_and_reused_uploads_are_refused(&server).await;
    sizes_are_enforced(&server).await;
    a_deleted_message_hides_its_media(&server).await;
}

/// With short lifetimes: an unattached upload is gone after its expiry, and a deleted
/// message's media after the retention; the daily quota refuses the next upload.
async fn lifecycle_scenarios(storage: &Storage) {
    let server = server(storage, |config| {
        config.limits.media.upload_expiry = Duration::from_secs(2);
        config.limits.media.retention = Duration::from_secs(1);
        config.limits.media.uploads_per_day = 3;
        config.limits.media.allowed_types = Some(vec!["image".into(), "text/plain".into()]);
        config.admin_key = Some(ADMIN_KEY.into());
    })
    .await;
    let (alice, bob, _, conversation) = trio(&server).await;
    let dave = server.client("dave");
    let group = id(&dave.create("group", &["alice"]).await);
    server.anonymous().with_token(ADMIN_KEY).put("/api/admin/users/dave/ban", json!({})).await.expect(204);
    let reply = dave
        .post(
            "/api/uploads",
            json!({"conversation_id": group, "filename": "a.png", "content_type": "image/png", "size": 10}),
        )
        .await;
    reply.assert_error(403, "forbidden");
    let png = || encoded(40, 30, ImageFormat::Png);
    let kept = upload(&alice, &conversation, "kept.png", "image/png", png()).await;
    let forgotten = upload(&alice, &conversation, "forgotten.png", "image/png", png()).await;
    let message = send_uploads(&alice, &conversation, "image", &[&kept]).await.expect(201);
    let attachment_id = message["attachments"][0]["id"].as_str().expect("id").to_owned();
    let third = upload(&bob, &conversation, "bob.png", "image/png", png()).await;
    assert!(!third.is_empty());
    let pdf = upload(&bob, &conversation, "a.pdf", "application/pdf", b"%PDF-1.4\n%%EOF\n".to_vec()).await;
    let reply = send_uploads(&bob, &conversation, "file", &[&pdf]).await;
    reply.assert_error(400, "invalid");
    assert!(reply.body["error"]["message"].as_str().expect("message").contains("not allowed here"));
    let notes = upload(&bob, &conversation, "notes.txt", "text/plain", "메모".as_bytes().to_vec()).await;
    send_uploads(&bob, &conversation, "file", &[&notes]).await.expect(201);
    let _ = upload(&alice, &conversation, "third.png", "image/png", png()).await;
    let reply = alice
        .post(
            "/api/uploads",
            json!({"conversation_id": conversation, "filename": "4.png", "content_type": "image/png", "size": 10}),
        )
        .await;
    reply.assert_error(429, "rate_limited");
    assert!(reply.headers.contains_key("retry-after"));

    assert!(stored(&server, &format!("uploads/{forgotten}")).await);
    alice.delete(&format!("/api/messages/{}", id(&message))).await.expect(200);
    assert!(stored(&server, &format!("attachments/{attachment_id}")).await, "kept during the retention");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let upload_gone = !stored(&server, &format!("uploads/{forgotten}")).await;
        let attachment_gone = !stored(&server, &format!("attachments/{attachment_id}")).await
            && !stored(&server, &format!("thumbnails/{attachment_id}")).await;
        if upload_gone && attachment_gone {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "expired media were not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reply = send_uploads(&alice, &conversation, "image", &[&forgotten]).await;
    reply.assert_error(400, "invalid");
    assert!(reply.body["error"]["message"].as_str().expect("message").contains("expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_on_local_disk() {
    everyday_scenarios(&Storage::Local).await;
    lifecycle_scenarios(&Storage::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_on_s3() {
    let weed = Weed::start().await;
    let storage = Storage::S3(weed.config());
    everyday_scenarios(&storage).await;
    lifecycle_scenarios(&storage).await;
}
