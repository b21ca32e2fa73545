//! Offline push to a browser through the Web Push provider, end to end: a real chatd
//! (in-process) with a VAPID key generated here, and a local HTTP server standing in for
//! the browser's push service, recording each request exactly as it arrived. The test holds
//! the subscription's private key and auth secret, as the browser would, and decrypts the
//! body with its own implementation of RFC 8291 / RFC 8188 (independent of chatd's).

mod common;

use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use axum::http::Method;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chatd::config::{Config, WebPushConfig};
use common::TestServer;
use common::webhook::{Received, Receiver, wait_until_no_devices};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use p256::{PublicKey, SecretKey};
use serde_json::{Value, json};
use sha2::Sha256;

const SUBJECT: &str = "mailto:ops@chatd.example";
const TTL_SECS: u64 = 3600;

/// The server's VAPID key pair, its private half in a PEM file chatd reads.
struct Vapid {
    secret: SecretKey,
    dir: tempfile::TempDir,
}

impl Vapid {
    fn generate() -> Vapid {
        let secret = SecretKey::random(&mut rand_core::OsRng);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vapid.pem"), secret.to_sec1_pem(LineEnding::LF).unwrap().as_bytes())
            .unwrap();
        Vapid { secret, dir }
    }

    /// The public key as `k=` carries it: uncompressed point, base64url.
    fn public_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.secret.public_key().to_encoded_point(false).as_bytes())
    }
}

/// What a browser's `PushSubscription` holds: its P-256 key pair and 16-byte auth secret.
struct Subscription {
    secret: SecretKey,
    auth: [u8; 16],
}

impl Subscription {
    fn generate() -> Subscription {
        Subscription { secret: SecretKey::random(&mut rand_core::OsRng), auth: rand::random() }
    }

    fn keys(&self) -> Value {
        json!({
            "p256dh": URL_SAFE_NO_PAD.encode(self.secret.public_key().to_encoded_point(false).as_bytes()),
            "auth": URL_SAFE_NO_PAD.encode(self.auth),
        })
    }

    /// Decrypts an `aes128gcm` body (RFC 8188 §2) whose keys come from RFC 8291 §3.4; panics
    /// on anything malformed. Returns the plaintext with the padding removed.
    fn decrypt(&self, body: &[u8]) -> Vec<u8> {
        assert!(body.len() > 21, "a header");
        let salt = &body[..16];
        let record_size = u32::from_be_bytes(body[16..20].try_into().unwrap());
        let id_len = usize::from(body[20]);
        assert_eq!((record_size, id_len), (4096, 65), "rs = 4096, key id = a P-256 point");
        let as_public =
            PublicKey::from_sec1_bytes(&body[21..21 + id_len]).expect("key id is the sender's key");
        let record = &body[21 + id_len..];
        assert!(record.len() <= record_size as usize, "a single record");

        let ua_public = self.secret.public_key().to_encoded_point(false);
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), as_public.as_affine());
        let mut info = b"WebPush: info\0".to_vec();
        info.extend_from_slice(ua_public.as_bytes());
        info.extend_from_slice(as_public.to_encoded_point(false).as_bytes());
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes()).expand(&info, &mut ikm).unwrap();
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).unwrap();
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce).unwrap();
        let mut plain = Aes128Gcm::new_from_slice(&cek)
            .unwrap()
            .decrypt(&Nonce::from(nonce), record)
            .expect("the record decrypts and authenticates");
        // Strip the padding: zeros after the delimiter, which is 0x02 for the last record.
        while plain.last() == Some(&0) {
            plain.pop();
        }
        assert_eq!(plain.pop(), Some(0x02), "the last record's delimiter");
        plain
    }
}

/// A server with the Web Push provider on and fast retries.
async fn server(vapid: &Vapid) -> TestServer {
    let private_key = vapid.dir.path().join("vapid.pem");
    TestServer::start_with(|config: &mut Config| {
        config.limits.messages_per_second = 0;
        config.push.webpush =
            Some(WebPushConfig { private_key, subject: SUBJECT.into(), ttl: Duration::from_secs(TTL_SECS) });
        config.push.worker.retry_base = Duration::from_millis(20);
        config.push.worker.retry_max = Duration::from_millis(100);
        config.push.worker.poll_interval = Duration::from_millis(50);
    })
    .await
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

async fn webpush_device(client: &common::Client, endpoint: &str, subscription: &Subscription) -> String {
    let device = client
        .post(
            "/api/devices",
            json!({"platform": "webpush", "token": endpoint, "endpoint": endpoint, "keys": subscription.keys()}),
        )
        .await
        .expect(201);
    device["id"].as_str().unwrap().to_owned()
}

fn id(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

/// Checks `Authorization: vapid t=<JWT>, k=<key>` as a push service would (RFC 8292 §3).
fn assert_vapid(request: &Received, vapid: &Vapid, origin: &str) {
    let authorization = header(request, "authorization");
    let rest = authorization.strip_prefix("vapid ").expect("the vapid scheme");
    let (t, k) = rest.split_once(", ").expect("t and k parameters");
    let jwt = t.strip_prefix("t=").expect("t=");
    assert_eq!(k.strip_prefix("k="), Some(vapid.public_b64().as_str()), "k is the VAPID public key");

    let public_pem = vapid.secret.public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let key = jsonwebtoken::DecodingKey::from_ec_pem(public_pem.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[origin]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims =
        jsonwebtoken::decode::<Value>(jwt, &key, &validation).expect("a JWT signed by the VAPID key").claims;
    assert_eq!(claims["aud"], origin, "aud is the endpoint's origin");
    assert_eq!(claims["sub"], SUBJECT);
    let exp = claims["exp"].as_i64().expect("exp");
    let now = chrono::Utc::now().timestamp();
    assert!(exp > now + 3600 && exp <= now + 24 * 3600, "exp within 24 hours: {exp} (now {now})");
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_browser_gets_an_encrypted_vapid_signed_push_it_can_decrypt() {
    let receiver = Receiver::bind(&[201]).await;
    let vapid = Vapid::generate();
    let subscription = Subscription::generate();
    let server = server(&vapid).await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webpush_device(&bob, &receiver.url("/wpush/v2/bob-subscription"), &subscription).await;
    let conversation = id(&alice.create("direct", &["bob"]).await);

    let message = alice.send(&conversation, &"é".repeat(150)).await;
    let requests = receiver.wait_for(1).await;
    let request = &requests[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/wpush/v2/bob-subscription");
    assert_eq!(header(request, "content-encoding"), "aes128gcm");
    assert_eq!(header(request, "content-type"), "application/octet-stream");
    assert_eq!(header(request, "ttl"), TTL_SECS.to_string());
    assert_eq!(header(request, "urgency"), "high");
    let topic = header(request, "topic");
    assert!(topic.len() <= 32 && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
    assert_vapid(request, &vapid, &format!("http://{}", receiver.addr));

    let plaintext = subscription.decrypt(&request.body);
    let payload: Value = serde_json::from_slice(&plaintext).expect("the plaintext is JSON");
    assert_eq!(
        payload,
        json!({
            "type": "message",
            "title": "alice",
            "body": "é".repeat(100),
            "conversation_id": conversation,
            "message_id": message["id"],
            "seq": 1,
            "sender_id": "alice",
            "badge": 1,
        }),
        "the preview is cut to the configured 100 characters"
    );
    receiver.assert_no_more_than(1).await;

    let second = alice.send(&conversation, "short").await;
    let requests = receiver.wait_for(2).await;
    let payload: Value = serde_json::from_slice(&subscription.decrypt(&requests[1].body)).unwrap();
    assert_eq!(payload["message_id"], second["id"]);
    assert_eq!(
        (payload["seq"].as_i64(), payload["badge"].as_i64()),
        (Some(2), Some(2)),
        "badge = total unread"
    );
    assert_eq!(header(&requests[1], "topic"), topic, "one topic per conversation");
    assert_ne!(requests[0].body[..16], requests[1].body[..16], "a fresh salt per message");
    assert_ne!(requests[0].body[21..86], requests[1].body[21..86], "a fresh ephemeral key per message");
    receiver.assert_no_more_than(2).await;
    assert!(server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "every job finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_service_answering_503_then_429_gets_the_push_again_until_delivered() {
    let receiver = Receiver::bind(&[503, 429]).await;
    let vapid = Vapid::generate();
    let subscription = Subscription::generate();
    let server = server(&vapid).await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webpush_device(&bob, &receiver.url("/push/bob"), &subscription).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    let message = alice.send(&conversation, "hello").await;

    let requests = receiver.wait_for(3).await;
    for request in &requests {
        let payload: Value = serde_json::from_slice(&subscription.decrypt(&request.body)).unwrap();
        assert_eq!(payload["message_id"], message["id"], "the same notification each time");
    }
    receiver.assert_no_more_than(3).await;
    assert!(server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "the job is finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_service_answering_410_removes_the_subscription() {
    let receiver = Receiver::bind(&[410]).await;
    let vapid = Vapid::generate();
    let server = server(&vapid).await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    webpush_device(&bob, &receiver.url("/push/gone"), &Subscription::generate()).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    alice.send(&conversation, "hello").await;

    receiver.wait_for(1).await;
    wait_until_no_devices(&bob).await;
    alice.send(&conversation, "anyone there?").await;
    receiver.assert_no_more_than(1).await;
    assert!(server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "nothing left to send");
}
