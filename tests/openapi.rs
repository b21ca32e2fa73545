//! `GET /api/openapi.json` against the implementation: every documented operation is served,
//! and the real responses of a scripted session (successes and each kind of error) are
//! documented for their operation and validate against the document's schemas.

mod common;

use common::{Client, Reply, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

/// Starts a server with `--dev` (so `/api/dev/token` is served and documented).
async fn dev_server() -> TestServer {
    TestServer::start_with(|config| {
        config.dev = true;
        config.limits.messages_per_second = 0;
    })
    .await
}

impl Reply {
    /// The same reply with another status, to show the checker refusing it.
    fn with_status(mut self, status: u16) -> Reply {
        self.status = reqwest::StatusCode::from_u16(status).expect("status");
        self
    }
}

async fn document(server: &TestServer) -> Value {
    let reply = server.anonymous().get("/api/openapi.json").await;
    assert_eq!(reply.headers["content-type"], "application/json");
    reply.expect(200)
}

/// Escapes one JSON pointer token for use in a URI fragment.
fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1").replace('{', "%7B").replace('}', "%7D")
}

/// The documented operations as (method, path template).
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                found.push((method.to_owned(), path.clone()));
            }
        }
    }
    found
}

/// Checks a real response against the document: its operation lists the status, and the body
/// validates against that response's schema (a JSON body when the document gives one, none
/// otherwise).
struct Conformance {
    doc: Value,
}

impl Conformance {
    #[track_caller]
    fn check(&self, method: &str, template: &str, reply: &Reply) {
        let status = reply.status.as_u16().to_string();
        let operation = &self.doc["paths"][template][method];
        assert!(operation.is_object(), "{method} {template} is not documented");
        let mut pointer = format!("#/paths/{}/{method}/responses/{status}", pointer_token(template));
        let mut response = &operation["responses"][&status];
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which is not documented: {:?}",
            reply.body
        );
        if let Some(reference) = response["$ref"].as_str() {
            pointer = reference.to_owned();
            let name = reference.rsplit('/').next().expect("response name");
            response = &self.doc["components"]["responses"][name];
        }
        let Some(schema) = response["content"].get("application/json").map(|content| &content["schema"])
        else {
            assert!(
                reply.body.is_null(),
                "{method} {template} {status} documents no body but sent {:?}",
                reply.body
            );
            return;
        };
        assert!(schema.is_object(), "no schema at {pointer}");
        assert_eq!(reply.headers["content-type"], "application/json", "{method} {template} {status}");
        let mut root = self.doc.clone();
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        root["$ref"] = json!(format!("{pointer}/content/application~1json/schema"));
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|err| panic!("schema for {method} {template} {status}: {err}"));
        let errors: Vec<String> =
            validator.iter_errors(&reply.body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{method} {template} {status}: {errors:#?}\nbody: {:#}", reply.body);
        if status == "429" {
            assert!(reply.headers.contains_key("retry-after"), "429 without Retry-After");
        }
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_bearer_auth() {
    let server = dev_server().await;
    let doc = document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["security"], json!([{ "bearer": [] }]));
    for schema in ["Message", "Conversation", "Member", "Device"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} schema missing");
    }
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let server = dev_server().await;
    let doc = document(&server).await;
    let client = server.client("alice");
    let ops = operations(&doc);
    assert!(ops.len() >= 20, "only {} operations documented", ops.len());
    for (method, template) in ops {
        if template == "/api/notifications/stream" {
            continue; // never ends; checked by `the_notification_stream_conforms`
        }
        let path = template.replace("{id}", "x").replace("{user_id}", "x");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let body = [Method::POST, Method::PUT, Method::PATCH].contains(&method).then(|| json!({}));
        let reply = client.call(method.clone(), &path, body).await;
        assert_ne!(reply.status.as_u16(), 405, "{method} {template} is documented but not routed");
        assert_ne!(
            reply.body["error"]["message"], "no such route",
            "{method} {template} is documented but not routed"
        );
    }
}

#[tokio::test]
async fn dev_token_is_documented_only_when_served() {
    let without = TestServer::start().await;
    let doc = document(&without).await;
    assert!(doc["paths"].get("/api/dev/token").is_none());
    without
        .anonymous()
        .post("/api/dev/token", json!({ "user_id": "a" }))
        .await
        .assert_error(404, "not_found");

    let with = dev_server().await;
    let doc = document(&with).await;
    let conformance = Conformance { doc };
    let reply = with.anonymous().post("/api/dev/token", json!({ "user_id": "a" })).await;
    assert_eq!(reply.status, 200);
    conformance.check("post", "/api/dev/token", &reply);
    let reply = with.anonymous().post("/api/dev/token", json!({ "user": "a" })).await;
    conformance.check("post", "/api/dev/token", &reply);
}

#[tokio::test]
async fn a_scripted_session_conforms_to_the_document() {
    let server = dev_server().await;
    let c = Conformance { doc: document(&server).await };
    let alice = server.client("alice");
    let bob = server.client("bob");
    let mallory = server.client("mallory");

    c.check("get", "/healthz", &server.anonymous().get("/healthz").await);
    c.check("get", "/readyz", &server.anonymous().get("/readyz").await);

    // Conversations.
    let created =
        alice.post("/api/conversations", json!({ "type": "group", "members": ["bob"], "name": "g" })).await;
    assert_eq!(created.status, 201);
    c.check("post", "/api/conversations", &created);
    let group = created.body["id"].as_str().expect("id").to_owned();
    let direct = json!({ "type": "direct", "members": ["bob"], "context": "product:1" });
    c.check("post", "/api/conversations", &alice.post("/api/conversations", direct.clone()).await);
    let again = alice.post("/api/conversations", direct).await;
    assert_eq!(again.status, 200);
    c.check("post", "/api/conversations", &again);
    let direct_id = again.body["id"].as_str().expect("id").to_owned();
    c.check(
        "post",
        "/api/conversations",
        &alice.post("/api/conversations", json!({ "type": "group" })).await,
    );
    let raw = alice.raw(Method::POST, "/api/conversations", "application/json", b"{".to_vec()).await;
    c.check("post", "/api/conversations", &raw);
    let huge = alice.raw(Method::POST, "/api/conversations", "application/json", vec![b' '; 70 * 1024]).await;
    assert_eq!(huge.status, 413);
    c.check("post", "/api/conversations", &huge);
    c.check("get", "/api/conversations", &server.anonymous().get("/api/conversations").await);

    let list = alice.get("/api/conversations?limit=1").await;
    assert!(list.body["next_cursor"].is_string());
    c.check("get", "/api/conversations", &list);
    c.check("get", "/api/conversations", &alice.get("/api/conversations?limit=0").await);
    c.check("get", "/api/conversations/{id}", &alice.get(&format!("/api/conversations/{group}")).await);
    c.check("get", "/api/conversations/{id}", &mallory.get(&format!("/api/conversations/{group}")).await);
    c.check("get", "/api/conversations/{id}", &alice.get("/api/conversations/nope").await);
    let renamed = alice
        .patch(&format!("/api/conversations/{group}"), json!({ "name": "h", "metadata": { "k": 1 } }))
        .await;
    c.check("patch", "/api/conversations/{id}", &renamed);
    c.check(
        "patch",
        "/api/conversations/{id}",
        &bob.patch(&format!("/api/conversations/{group}"), json!({ "name": "x" })).await,
    );

    // Members.
    let members = format!("/api/conversations/{group}/members");
    c.check(
        "post",
        "/api/conversations/{id}/members",
        &alice.post(&members, json!({ "user_ids": ["carol", "dave"] })).await,
    );
    let direct_members = format!("/api/conversations/{direct_id}/members");
    let conflict = alice.post(&direct_members, json!({ "user_ids": ["carol"] })).await;
    assert_eq!(conflict.status, 409);
    c.check("post", "/api/conversations/{id}/members", &conflict);
    let member = "/api/conversations/{id}/members/{user_id}";
    c.check("delete", member, &alice.delete(&format!("{members}/dave")).await);
    c.check("delete", member, &bob.delete(&format!("{members}/carol")).await);
    c.check("delete", member, &alice.delete(&format!("{direct_members}/bob")).await);

    // Messages.
    let messages = format!("/api/conversations/{group}/messages");
    let sent = alice.post(&messages, json!({ "content": "hi", "client_id": "c1" })).await;
    assert_eq!(sent.status, 201);
    c.check("post", "/api/conversations/{id}/messages", &sent);
    let repeat = alice.post(&messages, json!({ "content": "hi", "client_id": "c1" })).await;
    assert_eq!(repeat.status, 200);
    c.check("post", "/api/conversations/{id}/messages", &repeat);
    let too_long = alice.post(&messages, json!({ "content": "a".repeat(4001) })).await;
    assert_eq!(too_long.status, 413);
    c.check("post", "/api/conversations/{id}/messages", &too_long);
    c.check(
        "post",
        "/api/conversations/{id}/messages",
        &mallory.post(&messages, json!({ "content": "x" })).await,
    );
    c.check(
        "post",
        "/api/conversations/{id}/messages",
        &alice.post(&messages, json!({ "content": 1 })).await,
    );
    let message = sent.body["id"].as_str().expect("id").to_owned();
    c.check(
        "get",
        "/api/conversations/{id}/messages",
        &bob.get(&format!("{messages}?after_seq=0&limit=5")).await,
    );
    c.check("get", "/api/conversations/{id}/messages", &bob.get(&format!("{messages}?before_seq=-1")).await);
    let edit = format!("/api/messages/{message}");
    c.check("patch", "/api/messages/{id}", &alice.patch(&edit, json!({ "content": "edited" })).await);
    c.check("patch", "/api/messages/{id}", &bob.patch(&edit, json!({ "content": "mine" })).await);
    let deleted = alice.delete(&edit).await;
    assert!(deleted.body["deleted_at"].is_string());
    c.check("delete", "/api/messages/{id}", &deleted);
    let edit_deleted = alice.patch(&edit, json!({ "content": "late" })).await;
    assert_eq!(edit_deleted.status, 409);
    c.check("patch", "/api/messages/{id}", &edit_deleted);
    c.check("delete", "/api/messages/{id}", &alice.delete("/api/messages/nope").await);
    let read = format!("/api/conversations/{group}/read");
    c.check("post", "/api/conversations/{id}/read", &bob.post(&read, json!({ "seq": 1 })).await);
    c.check("post", "/api/conversations/{id}/read", &bob.post(&read, json!({ "seq": "1" })).await);
    let notifications = format!("/api/conversations/{group}/notifications");
    let muted = bob.put(&notifications, json!({ "enabled": false })).await;
    assert_eq!(muted.status, 204);
    c.check("put", "/api/conversations/{id}/notifications", &muted);
    c.check(
        "put",
        "/api/conversations/{id}/notifications",
        &mallory.put(&notifications, json!({ "enabled": true })).await,
    );
    alice.post(&messages, json!({ "content": "again" })).await.expect(201);
    let unread = bob.get("/api/unread").await;
    assert_eq!(unread.body["total"], 1);
    c.check("get", "/api/unread", &unread);

    // Search.
    let found = bob.get("/api/search?q=again&limit=1").await;
    assert_eq!(found.body["results"][0]["highlights"], json!([[0, 5]]));
    c.check("get", "/api/search", &found);
    c.check("get", "/api/search", &bob.get("/api/search?q=%20").await);
    c.check(
        "get",
        "/api/search",
        &mallory.get(&format!("/api/search?q=again&conversation_id={group}")).await,
    );
    c.check("get", "/api/search", &server.anonymous().get("/api/search?q=again").await);

    // Devices.
    let device = bob.post("/api/devices", json!({ "platform": "fcm", "token": "t1" })).await;
    assert_eq!(device.status, 201);
    c.check("post", "/api/devices", &device);
    let webpush = json!({ "platform": "webpush", "token": "w", "endpoint": "https://push.example/1",
        "keys": { "p256dh": "k", "auth": "a" } });
    c.check("post", "/api/devices", &bob.post("/api/devices", webpush).await);
    c.check(
        "post",
        "/api/devices",
        &bob.post("/api/devices", json!({ "platform": "webhook", "token": "h" })).await,
    );
    c.check("get", "/api/devices", &bob.get("/api/devices").await);
    let device_id = device.body["id"].as_str().expect("id").to_owned();
    c.check("delete", "/api/devices/{id}", &bob.delete(&format!("/api/devices/{device_id}")).await);
    c.check("delete", "/api/devices/{id}", &bob.delete(&format!("/api/devices/{device_id}")).await);
}

#[tokio::test]
async fn rate_limited_sends_conform_to_the_document() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 1;
        config.limits.message_burst = 1;
    })
    .await;
    let c = Conformance { doc: document(&server).await };
    let alice: Client = server.client("alice");
    let group = alice.create("group", &["bob"]).await["id"].as_str().expect("id").to_owned();
    let messages = format!("/api/conversations/{group}/messages");
    let mut limited = None;
    for i in 0..5 {
        let reply = alice.post(&messages, json!({ "content": format!("m{i}") })).await;
        c.check("post", "/api/conversations/{id}/messages", &reply);
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
    }
    assert!(limited.is_some(), "no 429 within 5 sends at 1/s");
}

#[tokio::test]
async fn refused_creations_and_member_additions_conform_to_the_document() {
    let server = TestServer::start_with(|config| {
        config.limits.budgets.create_conversation = chatd::core::budget::Budget::new(1, 2);
        config.limits.budgets.add_members = chatd::core::budget::Budget::new(1, 1);
    })
    .await;
    let c = Conformance { doc: document(&server).await };
    let alice: Client = server.client("alice");
    server.client("bob").post("/api/blocks", json!({ "user_id": "alice" })).await.expect(201);
    let refused = alice.post("/api/conversations", json!({ "type": "group", "members": ["bob"] })).await;
    refused.assert_error(403, "forbidden");
    c.check("post", "/api/conversations", &refused);
    let group = alice.create("group", &["carol"]).await["id"].as_str().expect("id").to_owned();
    let mut limited = None;
    for _ in 0..30 {
        let reply = alice.post("/api/conversations", json!({ "type": "group", "members": ["carol"] })).await;
        c.check("post", "/api/conversations", &reply);
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
    }
    assert!(limited.is_some(), "no 429 within 30 creations at 1/s");
    let members = format!("/api/conversations/{group}/members");
    let mut limited = None;
    for i in 0..30 {
        let reply = alice.post(&members, json!({ "user_ids": [format!("user{i}")] })).await;
        c.check("post", "/api/conversations/{id}/members", &reply);
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
    }
    assert!(limited.is_some(), "no 429 within 30 member additions at 1/s");
}

#[tokio::test]
async fn the_notification_stream_conforms() {
    let server = dev_server().await;
    let c = Conformance { doc: document(&server).await };
    let stream = "/api/notifications/stream";
    c.check("get", stream, &server.anonymous().get(stream).await);
    c.check("get", stream, &server.client("alice").get(&format!("{stream}?last_event_id=x")).await);
    let operation = &c.doc["paths"][stream]["get"];
    assert!(operation["responses"]["200"]["content"]["text/event-stream"].is_object());
    let open = server
        .http
        .get(format!("{}{stream}", server.base))
        .bearer_auth(server.token("alice"))
        .send()
        .await
        .expect("stream");
    assert_eq!(open.status(), 200);
    assert_eq!(open.headers()["content-type"], "text/event-stream");
}

#[tokio::test]
#[should_panic(expected = "/content")]
async fn the_checker_refuses_a_message_that_breaks_the_schema() {
    let server = dev_server().await;
    let c = Conformance { doc: document(&server).await };
    let alice = server.client("alice");
    let group = alice.create("group", &["bob"]).await["id"].as_str().expect("id").to_owned();
    let mut sent =
        alice.post(&format!("/api/conversations/{group}/messages"), json!({ "content": "hi" })).await;
    sent.body["content"] = json!(7);
    c.check("post", "/api/conversations/{id}/messages", &sent);
}

#[tokio::test]
#[should_panic(expected = "not documented")]
async fn the_checker_refuses_an_undocumented_status() {
    let server = dev_server().await;
    let c = Conformance { doc: document(&server).await };
    c.check("get", "/api/unread", &server.client("alice").get("/api/unread?x").await.with_status(404));
}

#[tokio::test]
async fn the_admin_api_is_documented_with_its_own_security_only_when_served_and_conforms() {
    const KEY: &str = "openapi-admin-key-0123456789";
    let without = TestServer::start().await;
    let doc = document(&without).await;
    assert!(
        operations(&doc).iter().all(|(_, path)| !path.starts_with("/api/admin")),
        "no admin operation without --admin-key"
    );

    let server = TestServer::start_with(|config| config.admin_key = Some(KEY.into())).await;
    let doc = document(&server).await;
    let admin_ops: Vec<(String, String)> =
        operations(&doc).into_iter().filter(|(_, path)| path.starts_with("/api/admin")).collect();
    assert_eq!(admin_ops.len(), 10, "{admin_ops:?}");
    let admin = server.client("alice").with_token(KEY);
    for (method, template) in &admin_ops {
        assert_eq!(
            doc["paths"][template][method]["security"],
            json!([{ "admin_key": [] }]),
            "{method} {template}"
        );
        let path = template.replace("{id}", "x");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let body = [Method::POST, Method::PUT].contains(&method).then(|| json!({}));
        let reply = admin.call(method.clone(), &path, body).await;
        assert_ne!(reply.status.as_u16(), 405, "{method} {template} is documented but not routed");
        assert_ne!(reply.body["error"]["message"], "no such route", "{method} {template} is not routed");
    }

    let conformance = Conformance { doc };
    conformance.check("get", "/api/admin/stats", &admin.get("/api/admin/stats").await);
    let created = admin
        .post("/api/admin/conversations", json!({ "type": "direct", "members": ["bob"], "owner": "alice" }))
        .await;
    conformance.check("post", "/api/admin/conversations", &created);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let posted =
        admin.post(&format!("/api/admin/conversations/{id}/messages"), json!({ "content": "hi" })).await;
    conformance.check("post", "/api/admin/conversations/{id}/messages", &posted);
    conformance.check(
        "get",
        "/api/admin/conversations/{id}",
        &admin.get(&format!("/api/admin/conversations/{id}")).await,
    );
    conformance.check(
        "get",
        "/api/admin/conversations",
        &admin.get("/api/admin/conversations?user_id=bob").await,
    );
    conformance.check("get", "/api/admin/users/{id}", &admin.get("/api/admin/users/bob").await);
    conformance.check("get", "/api/admin/stats", &server.client("alice").get("/api/admin/stats").await);
}
