//! `/api/devices`: push device registration, validation per platform, the push-endpoint
//! policy, and removal.

use super::*;

// ---------------------------------------------------------------------------------------------
// /api/devices
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn registering_a_device_answers_201_and_the_same_token_keeps_its_id() {
    let server = TestServer::start().await;
    let bob = server.client("bob");
    let first = bob.post("/api/devices", json!({"platform": "fcm", "token": "tok-1"})).await.expect(201);
    assert_eq!(first["platform"], "fcm");
    assert_eq!(first["token"], "tok-1");
    assert_eq!(first["endpoint"], Value::Null);
    assert_timestamp(&first["created_at"]);
    let again = bob.post("/api/devices", json!({"platform": "fcm", "token": "tok-1"})).await.expect(201);
    assert_eq!(again["id"], first["id"]);
    let web = json!({"platform": "webpush", "token": "browser", "endpoint": "https://push.example/abc",
                     "keys": {"p256dh": "BOr-key", "auth": "secret"}});
    let web = bob.post("/api/devices", web).await.expect(201);
    assert_eq!(web["keys"]["auth"], "secret");
    let listed = bob.get("/api/devices").await.expect(200);
    assert_eq!(ids(&listed["devices"]), vec![id_of(&first), id_of(&web)]);
    assert_eq!(server.client("alice").get("/api/devices").await.expect(200)["devices"], json!([]));
}

#[tokio::test]
async fn devices_are_validated_per_platform() {
    let server = TestServer::start().await;
    let bob = server.client("bob");
    for body in [
        json!({"platform": "carrier-pigeon", "token": "t"}),
        json!({"platform": "fcm", "token": ""}),
        json!({"platform": "fcm"}),
        json!({"platform": "webpush", "token": "t", "endpoint": "https://push.example/x"}),
        json!({"platform": "webpush", "token": "t", "keys": {"p256dh": "k", "auth": "a"}}),
        json!({"platform": "webhook", "token": "t"}),
        json!({"platform": "webhook", "token": "t", "endpoint": "ftp://example"}),
        json!({"platform": "fcm", "token": "t", "extra": 1}),
    ] {
        bob.post("/api/devices", body.clone()).await.assert_error(400, "invalid");
    }
    bob.post(
        "/api/devices",
        json!({"platform": "webhook", "token": "t", "endpoint": "https://hooks.example/chat"}),
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn push_endpoints_must_be_public_https_hosts_unless_private_ones_are_allowed() {
    let strict = TestServer::start_with(|config| config.limits.push_endpoints.allow_private = false).await;
    let bob = strict.client("bob");
    for endpoint in [
        "http://hooks.example/chat",
        "https://127.0.0.1:8080/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.7/hook",
        "https://[::1]/hook",
        "https://localhost/hook",
        "https://user:password@hooks.example/chat",
    ] {
        let reply = bob
            .post("/api/devices", json!({"platform": "webhook", "token": "t", "endpoint": endpoint}))
            .await;
        reply.assert_error(400, "invalid");
        let web = json!({"platform": "webpush", "token": "w", "endpoint": endpoint, "keys": {"p256dh": "k", "auth": "a"}});
        bob.post("/api/devices", web).await.assert_error(400, "invalid");
    }
    bob.post(
        "/api/devices",
        json!({"platform": "webhook", "token": "t", "endpoint": "https://hooks.example/chat"}),
    )
    .await
    .expect(201);

    let listed = TestServer::start_with(|config| {
        config.limits.push_endpoints.allow_private = false;
        config.limits.push_endpoints.allowed_hosts = vec!["push.example".into()];
    })
    .await;
    let carol = listed.client("carol");
    let hook = |endpoint: &str| json!({"platform": "webhook", "token": endpoint, "endpoint": endpoint});
    carol.post("/api/devices", hook("https://eu.push.example/x")).await.expect(201);
    carol.post("/api/devices", hook("https://hooks.example/chat")).await.assert_error(400, "invalid");

    let open = TestServer::start().await;
    open.client("dave").post("/api/devices", hook("http://127.0.0.1:8080/hook")).await.expect(201);
}

#[tokio::test]
async fn a_device_can_be_removed_only_by_its_owner() {
    let server = TestServer::start().await;
    let bob = server.client("bob");
    let device = bob.post("/api/devices", json!({"platform": "apns", "token": "a1"})).await.expect(201);
    let path = format!("/api/devices/{}", id_of(&device));
    server.client("mallory").delete(&path).await.assert_error(404, "not_found");
    assert_eq!(bob.delete(&path).await.status.as_u16(), 204);
    bob.delete(&path).await.assert_error(404, "not_found");
    assert_eq!(bob.get("/api/devices").await.expect(200)["devices"], json!([]));
    server.anonymous().get("/api/devices").await.assert_error(401, "unauthorized");
}
