//! Offline push through the FCM HTTP v1 and APNs providers, end to end: a real chatd
//! (in-process) and local servers standing in for Google's OAuth token endpoint, the FCM API
//! and APNs (HTTP/2 cleartext), which record every request exactly as it arrived. Keys are
//! generated per test; the tests verify chatd's JWTs with the public halves.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use axum::http::{Method, Version};
use chatd::config::Config;
use chatd::push::apns::ApnsConfig;
use common::webhook::{Received, Receiver, Reply, wait_until_no_devices};
use common::{Client, TestServer};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

const PROJECT: &str = "chatd-test";
const CLIENT_EMAIL: &str = "chatd-push@chatd-test.iam.gserviceaccount.com";
const ACCESS_TOKEN: &str = "ya29.test-access-token";
const FCM_TOKEN: &str = "bob-fcm-registration-token";
const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "TEAM456XYZ";
const TOPIC: &str = "com.example.chat";
const APNS_TOKEN: &str = "7f3a9c0e1b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a";

/// A fresh RSA key pair as (PKCS#8 private PEM, public PEM).
fn rsa_keys() -> (String, String) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA key");
    let public = rsa::RsaPublicKey::from(&private);
    (
        private.to_pkcs8_pem(LineEnding::LF).expect("private PEM").to_string(),
        public.to_public_key_pem(LineEnding::LF).expect("public PEM"),
    )
}

/// A fresh P-256 key pair as (PKCS#8 private PEM, as in an APNs `.p8` file; public PEM).
fn p256_keys() -> (String, String) {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = p256::SecretKey::random(&mut rand_core::OsRng);
    (
        private.to_pkcs8_pem(LineEnding::LF).expect("private PEM").to_string(),
        private.public_key().to_public_key_pem(LineEnding::LF).expect("public PEM"),
    )
}

/// Fast retries, no rate limit.
fn fast(config: &mut Config) {
    config.limits.messages_per_second = 0;
    config.push.worker.retry_base = Duration::from_millis(20);
    config.push.worker.retry_max = Duration::from_millis(100);
    config.push.worker.poll_interval = Duration::from_millis(50);
}

/// Pushes wait 50 ms to collapse (and so carry a collapse id).
fn collapsing(config: &mut Config) {
    config.limits.push_collapse = Duration::from_millis(50);
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

fn id(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

/// Registers a device of `platform` for `client`'s user.
async fn device(client: &Client, platform: &str, token: &str) {
    client.post("/api/devices", json!({"platform": platform, "token": token})).await.expect(201);
}

// ---------------------------------------------------------------------------------------
// FCM.

/// Google's stand-ins and chatd set up for FCM.
struct Fcm {
    token_endpoint: Receiver,
    api: Receiver,
    public_pem: String,
    server: TestServer,
    _dir: tempfile::TempDir,
}

impl Fcm {
    /// The FCM API answers `script` first, then 200.
    async fn start(script: Vec<Reply>) -> Fcm {
        Fcm::start_with(script, |_| {}).await
    }

    /// As [`Fcm::start`], with `tweak` applied to chatd's configuration.
    async fn start_with(script: Vec<Reply>, tweak: impl FnOnce(&mut Config)) -> Fcm {
        let (private_pem, public_pem) = rsa_keys();
        let token_endpoint = Receiver::bind_replying(
            Vec::new(),
            Reply::json(
                200,
                json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
            ),
        )
        .await;
        let api =
            Receiver::bind_replying(script, Reply::json(200, json!({"name": "projects/x/messages/1"}))).await;
        let dir = tempfile::tempdir().unwrap();
        let account = dir.path().join("service-account.json");
        let key_file = json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": private_pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "1234567890",
            "token_uri": token_endpoint.url("/token"),
        });
        std::fs::write(&account, key_file.to_string()).unwrap();
        let endpoint = api.url("");
        let server = TestServer::start_with(|config: &mut Config| {
            fast(config);
            config.push.fcm_service_account = Some(account);
            config.push.fcm_endpoint = endpoint;
            tweak(config);
        })
        .await;
        Fcm { token_endpoint, api, public_pem, server, _dir: dir }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_exchanges_a_signed_assertion_once_and_sends_both_messages_with_the_access_token() {
    let fcm = Fcm::start(Vec::new()).await;
    let (alice, bob) = (fcm.server.client("alice"), fcm.server.client("bob"));
    device(&bob, "fcm", FCM_TOKEN).await;
    let conversation = id(&alice.create("direct", &["bob"]).await);
    let first = alice.send(&conversation, "hello bob").await;
    fcm.api.wait_for(1).await;
    let second = alice.send(&conversation, "again").await;
    let sends = fcm.api.wait_for(2).await;

    // The token exchange: one form POST carrying an RS256 assertion.
    let exchanges = fcm.token_endpoint.requests();
    assert_eq!(exchanges.len(), 1, "one token exchange for two sends: {exchanges:?}");
    let exchange = &exchanges[0];
    assert_eq!((exchange.method.clone(), exchange.path.as_str()), (Method::POST, "/token"));
    assert_eq!(header(exchange, "content-type"), "application/x-www-form-urlencoded");
    let form = std::str::from_utf8(&exchange.body).unwrap();
    let assertion = form
        .strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
        .unwrap_or_else(|| panic!("unexpected form: {form}"));
    let token_uri = fcm.token_endpoint.url("/token");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&token_uri]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let key = DecodingKey::from_rsa_pem(fcm.public_pem.as_bytes()).unwrap();
    let claims =
        jsonwebtoken::decode::<Value>(assertion, &key, &validation).expect("a valid assertion").claims;
    assert_eq!(claims["scope"], "https://www.googleapis.com/auth/firebase.messaging");
    let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    let now = chrono::Utc::now().timestamp();
    assert!((now - 60..=now).contains(&iat), "a current iat: {iat}");
    assert_eq!(exp - iat, 3600, "valid one hour");

    // The sends: the access token as bearer, the payload mapped onto an FCM message.
    for (send, message, text, seq) in [(&sends[0], &first, "hello bob", 1), (&sends[1], &second, "again", 2)]
    {
        assert_eq!(send.method, Method::POST);
        assert_eq!(send.path, format!("/v1/projects/{PROJECT}/messages:send"));
        assert_eq!(header(send, "authorization"), format!("Bearer {ACCESS_TOKEN}"));
        assert_eq!(header(send, "content-type"), "application/json");
        assert_eq!(
            send.json(),
            json!({"message": {
                "token": FCM_TOKEN,
                "notification": {"title": "alice", "body": text},
                "data": {
                    "type": "message",
                    "conversation_id": conversation,
                    "message_id": message["id"],
                    "seq": seq.to_string(),
                    "sender_id": "alice",
                    "badge": seq.to_string(),
                },
                "android": {"notification": {"notification_count": seq}},
                "apns": {"payload": {"aps": {"badge": seq}}},
            }})
        );
    }
    fcm.api.assert_no_more_than(2).await;
    assert_eq!(fcm.token_endpoint.requests().len(), 1);
    assert!(fcm.server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "every job finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_with_collapsing_on_gives_the_conversation_as_collapse_key() {
    let fcm = Fcm::start_with(Vec::new(), collapsing).await;
    let (alice, bob) = (fcm.server.client("alice"), fcm.server.client("bob"));
    device(&bob, "fcm", FCM_TOKEN).await;
    let conversation = id(&alice.create("direct", &["bob"]).await);
    alice.send(&conversation, "hello bob").await;

    let send = fcm.api.wait_for(1).await.remove(0).json();
    assert_eq!(send["message"]["android"]["collapse_key"], json!(conversation));
    assert_eq!(send["message"]["apns"]["headers"]["apns-collapse-id"], json!(conversation));
    assert_eq!(send["message"]["notification"]["body"], "hello bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_unregistered_removes_the_device_and_nothing_more_is_sent() {
    let unregistered = Reply::json(
        404,
        json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}),
    );
    let fcm = Fcm::start(vec![unregistered]).await;
    let (alice, bob) = (fcm.server.client("alice"), fcm.server.client("bob"));
    device(&bob, "fcm", FCM_TOKEN).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    alice.send(&conversation, "hello").await;

    fcm.api.wait_for(1).await;
    wait_until_no_devices(&bob).await;
    alice.send(&conversation, "anyone there?").await;
    fcm.api.assert_no_more_than(1).await;
    assert!(fcm.server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "nothing left to send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_answering_401_gets_a_fresh_access_token_and_the_send_repeated_once() {
    let fcm =
        Fcm::start(vec![Reply::json(401, json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}))])
            .await;
    let (alice, bob) = (fcm.server.client("alice"), fcm.server.client("bob"));
    device(&bob, "fcm", FCM_TOKEN).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    alice.send(&conversation, "hello").await;

    let sends = fcm.api.wait_for(2).await;
    assert_eq!(sends[0].body, sends[1].body, "the same message again");
    fcm.api.assert_no_more_than(2).await;
    assert_eq!(fcm.token_endpoint.requests().len(), 2, "the rejected token was replaced");
}

// ---------------------------------------------------------------------------------------
// APNs.

/// The APNs stand-in and chatd set up for it.
struct Apns {
    api: Receiver,
    public_pem: String,
    server: TestServer,
    _dir: tempfile::TempDir,
}

impl Apns {
    /// APNs answers `script` first, then 200.
    async fn start(script: Vec<Reply>) -> Apns {
        Apns::start_with(script, |_| {}).await
    }

    /// As [`Apns::start`], with `tweak` applied to chatd's configuration.
    async fn start_with(script: Vec<Reply>, tweak: impl FnOnce(&mut Config)) -> Apns {
        let (private_pem, public_pem) = p256_keys();
        let api = Receiver::bind_replying(script, Reply::status(200)).await;
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join(format!("AuthKey_{KEY_ID}.p8"));
        std::fs::write(&key_file, private_pem).unwrap();
        let apns = ApnsConfig {
            key_file,
            key_id: KEY_ID.into(),
            team_id: TEAM_ID.into(),
            topic: TOPIC.into(),
            endpoint: api.url(""),
        };
        let server = TestServer::start_with(|config: &mut Config| {
            fast(config);
            config.push.apns = Some(apns);
            tweak(config);
        })
        .await;
        Apns { api, public_pem, server, _dir: dir }
    }

    /// Asserts `request` is an HTTP/2 APNs request for `APNS_TOKEN` with a provider JWT that
    /// verifies with the test key.
    fn assert_apns_request(&self, request: &Received) {
        assert_eq!(request.version, Version::HTTP_2, "APNs is HTTP/2");
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, format!("/3/device/{APNS_TOKEN}"));
        assert_eq!(header(request, "apns-topic"), TOPIC);
        assert_eq!(header(request, "apns-push-type"), "alert");
        assert_eq!(header(request, "apns-priority"), "10");
        let jwt = header(request, "authorization").strip_prefix("bearer ").expect("a bearer provider token");
        let jwt_header = jsonwebtoken::decode_header(jwt).unwrap();
        assert_eq!((jwt_header.alg, jwt_header.kid.as_deref()), (Algorithm::ES256, Some(KEY_ID)));
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.required_spec_claims = HashSet::from(["iss".to_owned(), "iat".to_owned()]);
        validation.set_issuer(&[TEAM_ID]);
        let key = DecodingKey::from_ec_pem(self.public_pem.as_bytes()).unwrap();
        let claims =
            jsonwebtoken::decode::<Value>(jwt, &key, &validation).expect("a valid provider JWT").claims;
        let iat = claims["iat"].as_i64().unwrap();
        let now = chrono::Utc::now().timestamp();
        assert!((now - 60..=now).contains(&iat), "a current iat: {iat}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_gets_an_http2_post_with_a_verified_provider_jwt_topic_and_alert_payload() {
    let apns = Apns::start(Vec::new()).await;
    let (alice, bob) = (apns.server.client("alice"), apns.server.client("bob"));
    device(&bob, "apns", APNS_TOKEN).await;
    let conversation = id(&alice.create("direct", &["bob"]).await);
    let first = alice.send(&conversation, "hello bob").await;
    apns.api.wait_for(1).await;
    let second = alice.send(&conversation, "again").await;
    let requests = apns.api.wait_for(2).await;

    for (request, message, text, seq) in
        [(&requests[0], &first, "hello bob", 1), (&requests[1], &second, "again", 2)]
    {
        apns.assert_apns_request(request);
        assert_eq!(header(request, "content-type"), "application/json");
        assert!(request.headers.get("apns-collapse-id").is_none(), "collapsing is off");
        assert_eq!(
            request.json(),
            json!({
                "aps": {"alert": {"title": "alice", "body": text}, "badge": seq, "sound": "default"},
                "type": "message",
                "conversation_id": conversation,
                "message_id": message["id"],
                "seq": seq,
                "sender_id": "alice",
            })
        );
    }
    assert_eq!(
        header(&requests[0], "authorization"),
        header(&requests[1], "authorization"),
        "the provider JWT is reused"
    );
    apns.api.assert_no_more_than(2).await;
    assert!(apns.server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "every job finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_with_collapsing_on_sends_the_conversation_as_apns_collapse_id() {
    let apns = Apns::start_with(Vec::new(), collapsing).await;
    let (alice, bob) = (apns.server.client("alice"), apns.server.client("bob"));
    device(&bob, "apns", APNS_TOKEN).await;
    let conversation = id(&alice.create("direct", &["bob"]).await);
    alice.send(&conversation, "hello bob").await;

    let request = apns.api.wait_for(1).await.remove(0);
    apns.assert_apns_request(&request);
    assert_eq!(header(&request, "apns-collapse-id"), conversation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_answering_410_removes_the_device_and_nothing_more_is_sent() {
    let apns = Apns::start(vec![Reply::json(
        410,
        json!({"reason": "Unregistered", "timestamp": 1_700_000_000_000_i64}),
    )])
    .await;
    let (alice, bob) = (apns.server.client("alice"), apns.server.client("bob"));
    device(&bob, "apns", APNS_TOKEN).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    alice.send(&conversation, "hello").await;

    let requests = apns.api.wait_for(1).await;
    apns.assert_apns_request(&requests[0]);
    wait_until_no_devices(&bob).await;
    alice.send(&conversation, "anyone there?").await;
    apns.api.assert_no_more_than(1).await;
    assert!(apns.server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "nothing left to send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_failing_with_500_then_200_delivers_the_message_once() {
    let apns = Apns::start(vec![Reply::json(500, json!({"reason": "InternalServerError"}))]).await;
    let (alice, bob) = (apns.server.client("alice"), apns.server.client("bob"));
    device(&bob, "apns", APNS_TOKEN).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    let message = alice.send(&conversation, "hello").await;

    let requests = apns.api.wait_for(2).await;
    for request in &requests {
        apns.assert_apns_request(request);
        assert_eq!(request.json()["message_id"], message["id"], "the same notification each time");
    }
    apns.api.assert_no_more_than(2).await;
    assert!(apns.server.state.store.pending_push_jobs(10).await.unwrap().is_empty(), "the job is finished");
    assert_eq!(bob.get("/api/devices").await.expect(200)["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_expired_provider_token_is_renewed_and_the_send_repeated_once() {
    let apns = Apns::start(vec![Reply::json(403, json!({"reason": "ExpiredProviderToken"}))]).await;
    let (alice, bob) = (apns.server.client("alice"), apns.server.client("bob"));
    device(&bob, "apns", APNS_TOKEN).await;
    let conversation = id(&alice.create("group", &["bob"]).await);
    alice.send(&conversation, "hello").await;

    let requests = apns.api.wait_for(2).await;
    apns.assert_apns_request(&requests[1]);
    assert_eq!(requests[0].body, requests[1].body);
    apns.api.assert_no_more_than(2).await;
}
