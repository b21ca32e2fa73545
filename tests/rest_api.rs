//! The REST API as a specification: every `/api` route driven over real HTTP against a real
//! server (SQLite in a temp dir), one behaviour per test, each named for the behaviour it
//! pins down. The contract is `PROTOCOL.md` (the project's copy: `docs/protocol.md`).

mod common;

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Client, Reply, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_owned()
}

fn conversation_path(id: &str) -> String {
    format!("/api/conversations/{id}")
}

fn messages_path(conversation_id: &str) -> String {
    format!("/api/conversations/{conversation_id}/messages")
}

fn members_path(conversation_id: &str) -> String {
    format!("/api/conversations/{conversation_id}/members")
}

fn member_path(conversation_id: &str, user_id: &str) -> String {
    format!("/api/conversations/{conversation_id}/members/{user_id}")
}

fn read_path(conversation_id: &str) -> String {
    format!("/api/conversations/{conversation_id}/read")
}

fn notifications_path(conversation_id: &str) -> String {
    format!("/api/conversations/{conversation_id}/notifications")
}

fn message_path(message_id: &str) -> String {
    format!("/api/messages/{message_id}")
}

/// Creates a group owned by `owner` with `members` and returns its id.
async fn group(owner: &Client, members: &[&str]) -> String {
    id_of(&owner.create("group", members).await)
}

/// A group owned by alice with `admin` as admin and `member` as plain member.
async fn group_with_roles(alice: &Client, admin: &str, member: &str) -> String {
    let id = group(alice, &[member]).await;
    add_members(alice, &id, &[admin], Some("admin")).await.expect(200);
    id
}

async fn add_members(client: &Client, conversation_id: &str, user_ids: &[&str], role: Option<&str>) -> Reply {
    let mut body = json!({ "user_ids": user_ids });
    if let Some(role) = role {
        body["role"] = json!(role);
    }
    client.post(&members_path(conversation_id), body).await
}

async fn post_message(client: &Client, conversation_id: &str, body: Value) -> Reply {
    client.post(&messages_path(conversation_id), body).await
}

/// Sends `n` text messages "m1".."mn" one after the other.
async fn send_many(client: &Client, conversation_id: &str, n: usize) -> Vec<Value> {
    let mut sent = Vec::with_capacity(n);
    for i in 1..=n {
        sent.push(client.send(conversation_id, &format!("m{i}")).await);
    }
    sent
}

async fn history(client: &Client, conversation_id: &str, query: &str) -> Value {
    client.get(&format!("{}{query}", messages_path(conversation_id))).await.expect(200)
}

async fn mark_read(client: &Client, conversation_id: &str, seq: i64) -> i64 {
    let body = client.post(&read_path(conversation_id), json!({ "seq": seq })).await.expect(200);
    body["last_read_seq"].as_i64().unwrap_or_else(|| panic!("no last_read_seq in {body}"))
}

async fn unread_count(client: &Client, conversation_id: &str) -> i64 {
    client.get(&conversation_path(conversation_id)).await.expect(200)["unread_count"]
        .as_i64()
        .expect("unread_count")
}

/// The member entry of `user_id` in a conversation body.
fn member<'a>(conversation: &'a Value, user_id: &str) -> &'a Value {
    conversation["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["user_id"] == user_id)
        .unwrap_or_else(|| panic!("{user_id} is not a member of {conversation}"))
}

fn role_of<'a>(conversation: &'a Value, user_id: &str) -> &'a str {
    member(conversation, user_id)["role"].as_str().expect("role")
}

fn member_ids(conversation: &Value) -> BTreeSet<String> {
    conversation["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["user_id"].as_str().expect("user_id").to_owned())
        .collect()
}

fn ids(values: &Value) -> Vec<String> {
    values.as_array().expect("array").iter().map(id_of).collect()
}

fn seqs(page: &Value) -> Vec<i64> {
    page["messages"].as_array().expect("messages").iter().map(|m| m["seq"].as_i64().expect("seq")).collect()
}

/// Asserts the contract's timestamp form: RFC 3339, UTC, milliseconds, `Z`.
#[track_caller]
fn assert_timestamp(value: &Value) {
    let pattern = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").unwrap();
    let text = value.as_str().unwrap_or_else(|| panic!("timestamp expected, got {value}"));
    assert!(pattern.is_match(text), "{text} is not RFC 3339 UTC with milliseconds");
    assert!(chrono::DateTime::parse_from_rfc3339(text).is_ok(), "{text} does not parse");
}

fn millis(timestamp: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(timestamp.as_str().expect("timestamp"))
        .expect("RFC 3339")
        .timestamp_millis()
}

/// Waits, without sleeping, until the wall clock (the server runs in this process) is past
/// `timestamp`, so that the next write gets a strictly later millisecond.
async fn clock_past(timestamp: &Value) {
    let at = millis(timestamp);
    while chrono::Utc::now().timestamp_millis() <= at {
        tokio::task::yield_now().await;
    }
}

/// The HS256 secret the server generated into its data directory.
fn server_secret(server: &TestServer) -> Vec<u8> {
    let text = std::fs::read_to_string(server.data_dir.path().join("jwt-secret")).expect("jwt-secret");
    text.trim().as_bytes().to_vec()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn claims(sub: &str, exp: u64) -> Value {
    json!({ "sub": sub, "exp": exp })
}

fn sign(alg: Algorithm, claims: &impl serde::Serialize, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// Sends a request whose body carries no `Content-Type` header at all.
async fn post_without_content_type(client: &Client, path: &str, body: &str) -> Reply {
    let mut req = client.http.post(format!("{}{path}", client.base)).body(body.to_owned());
    if let Some(token) = &client.token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    Reply { status, headers, body: resp.json().await.unwrap_or(Value::Null) }
}

// ---------------------------------------------------------------------------------------------
// POST /api/conversations
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_a_direct_conversation_answers_201_with_the_contract_shape() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let body = json!({ "type": "direct", "members": ["bob"], "context": "product:981" });
    let conversation = alice.post("/api/conversations", body).await.expect(201);

    assert!(conversation["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(conversation["type"], "direct");
    assert_eq!(conversation["name"], Value::Null);
    assert_eq!(conversation["context"], "product:981");
    assert_eq!(conversation["metadata"], json!({}));
    assert_eq!(conversation["last_seq"], 0);
    assert_eq!(conversation["last_message"], Value::Null);
    assert_eq!(conversation["last_message_at"], Value::Null);
    assert_timestamp(&conversation["created_at"]);
    assert_eq!(conversation["unread_count"], 0);
    assert_eq!(conversation["members"].as_array().unwrap().len(), 2);
    for m in conversation["members"].as_array().unwrap() {
        assert_timestamp(&m["joined_at"]);
        assert_eq!(m["last_read_seq"], 0);
        // The mute flag is the caller's own business only.
        let own = m["user_id"] == "alice";
        assert_eq!(m.get("notifications").cloned(), own.then_some(json!(true)), "{m}");
    }
    assert_eq!(role_of(&conversation, "alice"), "owner");
    assert_eq!(role_of(&conversation, "bob"), "member");
}

#[tokio::test]
async fn creating_the_same_direct_conversation_again_answers_200_with_the_same_id() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let first = alice.create("direct", &["bob"]).await;

    for (client, members) in [
        (&alice, json!(["bob"])),
        (&alice, json!(["bob", "alice"])),
        (&alice, json!(["alice", "bob"])),
        (&bob, json!(["alice"])),
        (&bob, json!(["alice", "bob"])),
        (&bob, json!(["bob", "alice"])),
    ] {
        let again = client.post("/api/conversations", json!({ "type": "direct", "members": members })).await;
        let again = again.expect(200);
        assert_eq!(again["id"], first["id"], "members {members}");
        assert_eq!(member_ids(&again), member_ids(&first));
    }
    let listed = alice.get("/api/conversations").await.expect(200);
    assert_eq!(ids(&listed["conversations"]), vec![id_of(&first)]);
}

#[tokio::test]
async fn a_direct_conversation_with_another_context_is_a_new_conversation() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let create = |context: Value| {
        let alice = alice.clone();
        async move {
            alice
                .post(
                    "/api/conversations",
                    json!({ "type": "direct", "members": ["bob"], "context": context }),
                )
                .await
        }
    };
    let product_1 = create(json!("product:1")).await.expect(201);
    let product_2 = create(json!("product:2")).await.expect(201);
    let no_context = create(Value::Null).await.expect(201);
    assert_ne!(product_1["id"], product_2["id"]);
    assert_ne!(product_1["id"], no_context["id"]);
    assert_ne!(product_2["id"], no_context["id"]);
    assert_eq!(create(json!("product:1")).await.expect(200)["id"], product_1["id"]);
    assert_eq!(create(Value::Null).await.expect(200)["id"], no_context["id"]);
}

#[tokio::test]
async fn a_direct_conversation_needs_exactly_one_other_member() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    for members in [json!([]), json!(["alice"]), json!(["bob", "carol"])] {
        let reply = alice.post("/api/conversations", json!({ "type": "direct", "members": members })).await;
        reply.assert_error(400, "invalid");
    }
    let listed = alice.get("/api/conversations").await.expect(200);
    assert_eq!(listed["conversations"], json!([]));
}

#[tokio::test]
async fn creating_a_group_keeps_its_name_and_metadata_and_makes_the_caller_owner() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let body = json!({
        "type": "group", "members": ["bob", "carol"], "name": "Ski trip", "metadata": { "topic": "ski", "n": 3 }
    });
    let conversation = alice.post("/api/conversations", body).await.expect(201);
    assert_eq!(conversation["type"], "group");
    assert_eq!(conversation["name"], "Ski trip");
    assert_eq!(conversation["context"], Value::Null);
    assert_eq!(conversation["metadata"], json!({ "topic": "ski", "n": 3 }));
    assert_eq!(member_ids(&conversation), ["alice", "bob", "carol"].map(String::from).into());
    assert_eq!(role_of(&conversation, "alice"), "owner");
    assert_eq!(role_of(&conversation, "bob"), "member");
    assert_eq!(role_of(&conversation, "carol"), "member");
}

#[tokio::test]
async fn creating_a_conversation_with_a_malformed_body_is_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    for body in [
        json!({ "type": "channel", "members": ["bob"] }),
        json!({ "type": "group" }),
        json!({ "type": "group", "members": "bob" }),
        json!({ "type": "group", "members": ["bob"], "color": "red" }),
        json!({ "type": "group", "members": [""] }),
    ] {
        alice.post("/api/conversations", body).await.assert_error(400, "invalid");
    }
}

// ---------------------------------------------------------------------------------------------
// GET /api/conversations
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn conversations_are_listed_newest_activity_first() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let a = group(&alice, &["bob"]).await;
    let b = group(&alice, &["bob"]).await;
    let c = alice.create("group", &["bob"]).await;
    let listed = alice.get("/api/conversations").await.expect(200);
    assert_eq!(ids(&listed["conversations"]), vec![id_of(&c), b.clone(), a.clone()]);

    clock_past(&c["created_at"]).await;
    alice.send(&a, "bump").await;
    let listed = alice.get("/api/conversations").await.expect(200);
    assert_eq!(ids(&listed["conversations"]), vec![a, id_of(&c), b]);
}

#[tokio::test]
async fn the_conversation_list_pages_with_a_cursor_until_next_cursor_is_null() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    for _ in 0..7 {
        group(&alice, &["bob"]).await;
    }
    let everything = alice.get("/api/conversations?limit=100").await.expect(200);
    assert_eq!(everything["next_cursor"], Value::Null);
    let all = ids(&everything["conversations"]);
    assert_eq!(all.len(), 7);

    let mut walked = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("/api/conversations?limit=3&cursor={c}"),
            None => "/api/conversations?limit=3".to_owned(),
        };
        let page = alice.get(&query).await.expect(200);
        let page_ids = ids(&page["conversations"]);
        sizes.push(page_ids.len());
        walked.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert_eq!(page["next_cursor"], Value::Null);
                break;
            }
        }
        assert!(sizes.len() < 10, "the cursor walk does not end");
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(walked, all, "pages must cover every conversation once, in list order");
}

#[tokio::test]
async fn the_conversation_list_shows_each_last_message_and_the_callers_unread_count() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let busy = group(&alice, &["bob"]).await;
    let quiet = group(&alice, &["bob"]).await;
    bob.send(&busy, "one").await;
    let two = bob.send(&busy, "two").await;

    let listed = alice.get("/api/conversations").await.expect(200);
    let find = |id: &str| {
        listed["conversations"].as_array().unwrap().iter().find(|c| c["id"] == id).cloned().unwrap()
    };
    let (busy_entry, quiet_entry) = (find(&busy), find(&quiet));
    assert_eq!(busy_entry["last_message"], two);
    assert_eq!(busy_entry["last_seq"], 2);
    assert_eq!(busy_entry["last_message_at"], two["created_at"]);
    assert_eq!(busy_entry["unread_count"], 2);
    assert_eq!(quiet_entry["last_message"], Value::Null);
    assert_eq!(quiet_entry["last_message_at"], Value::Null);
    assert_eq!(quiet_entry["unread_count"], 0);

    let bobs = bob.get("/api/conversations").await.expect(200);
    let bobs_busy =
        bobs["conversations"].as_array().unwrap().iter().find(|c| c["id"] == busy.as_str()).unwrap();
    assert_eq!(bobs_busy["unread_count"], 0, "the sender has nothing unread");
}

#[tokio::test]
async fn the_conversation_list_rejects_a_cursor_it_did_not_issue() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    for cursor in ["garbage", "abc.def", "123."] {
        alice.get(&format!("/api/conversations?cursor={cursor}")).await.assert_error(400, "invalid");
    }
}

#[tokio::test]
async fn the_conversation_list_rejects_a_limit_below_one() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    for limit in ["0", "-1", "ten"] {
        alice.get(&format!("/api/conversations?limit={limit}")).await.assert_error(400, "invalid");
    }
}

// ---------------------------------------------------------------------------------------------
// GET /api/conversations/{id}
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_member_can_get_a_conversation() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let created = alice.create("group", &["bob"]).await;
    let seen_by_bob = bob.get(&conversation_path(&id_of(&created))).await.expect(200);
    assert_eq!(seen_by_bob["id"], created["id"]);
    // The same members; each view shows only its caller's own mute flag.
    let without_flags = |conversation: &Value| -> Vec<Value> {
        let members = conversation["members"].as_array().expect("members").iter().cloned();
        members
            .map(|mut m| {
                m.as_object_mut().expect("member").remove("notifications");
                m
            })
            .collect()
    };
    assert_eq!(without_flags(&seen_by_bob), without_flags(&created));
    assert_eq!(member(&seen_by_bob, "bob")["notifications"], true);
    assert_eq!(member(&created, "alice")["notifications"], true);
    assert_eq!(seen_by_bob["created_at"], created["created_at"]);
}

#[tokio::test]
async fn getting_a_conversation_as_a_non_member_is_not_a_member() {
    let server = TestServer::start().await;
    let id = group(&server.client("alice"), &["bob"]).await;
    server.client("mallory").get(&conversation_path(&id)).await.assert_error(403, "not_a_member");
}

#[tokio::test]
async fn getting_an_unknown_conversation_is_not_found() {
    let server = TestServer::start().await;
    server.client("alice").get(&conversation_path("no-such-id")).await.assert_error(404, "not_found");
}

// ---------------------------------------------------------------------------------------------
// PATCH /api/conversations/{id}
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_owner_can_rename_a_group_and_replace_its_metadata() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let body = json!({ "type": "group", "members": ["bob"], "name": "Old", "metadata": { "a": 1 } });
    let id = id_of(&alice.post("/api/conversations", body).await.expect(201));

    let patched =
        alice.patch(&conversation_path(&id), json!({ "name": "New", "metadata": { "b": 2 } })).await;
    let patched = patched.expect(200);
    assert_eq!(patched["name"], "New");
    assert_eq!(patched["metadata"], json!({ "b": 2 }));
    let seen_by_bob = bob.get(&conversation_path(&id)).await.expect(200);
    assert_eq!(seen_by_bob["name"], "New");
    assert_eq!(seen_by_bob["metadata"], json!({ "b": 2 }));

    let renamed_only = alice.patch(&conversation_path(&id), json!({ "name": "Newer" })).await.expect(200);
    assert_eq!(renamed_only["name"], "Newer");
    assert_eq!(renamed_only["metadata"], json!({ "b": 2 }), "fields left out stay as they are");
}

#[tokio::test]
async fn an_admin_can_rename_a_group() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group_with_roles(&alice, "adam", "bob").await;
    let patched = server.client("adam").patch(&conversation_path(&id), json!({ "name": "By admin" })).await;
    assert_eq!(patched.expect(200)["name"], "By admin");
}

#[tokio::test]
async fn a_plain_member_cannot_change_a_group() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let reply = server.client("bob").patch(&conversation_path(&id), json!({ "name": "Mine" })).await;
    reply.assert_error(403, "forbidden");
    assert_eq!(alice.get(&conversation_path(&id)).await.expect(200)["name"], Value::Null);
}

#[tokio::test]
async fn a_non_member_cannot_change_a_group() {
    let server = TestServer::start().await;
    let id = group(&server.client("alice"), &["bob"]).await;
    let reply = server.client("mallory").patch(&conversation_path(&id), json!({ "name": "Mine" })).await;
    reply.assert_error(403, "not_a_member");
}

#[tokio::test]
async fn patching_with_a_malformed_body_is_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    for body in [
        json!({ "name": 5 }),
        json!({ "metadata": "x" }),
        json!({ "topic": "x" }),
        json!({ "name": "a\u{0007}" }),
    ] {
        alice.patch(&conversation_path(&id), body).await.assert_error(400, "invalid");
    }
    assert_eq!(alice.get(&conversation_path(&id)).await.expect(200)["name"], Value::Null);
}

#[tokio::test]
async fn patching_an_unknown_conversation_is_not_found() {
    let server = TestServer::start().await;
    let reply = server.client("alice").patch(&conversation_path("no-such-id"), json!({ "name": "x" })).await;
    reply.assert_error(404, "not_found");
}

// ---------------------------------------------------------------------------------------------
// POST /api/conversations/{id}/members
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_owner_adds_members_and_admins() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let with_dave = add_members(&alice, &id, &["dave"], None).await.expect(200);
    assert_eq!(role_of(&with_dave, "dave"), "member");
    let with_erin = add_members(&alice, &id, &["erin", "frank"], Some("admin")).await.expect(200);
    assert_eq!(role_of(&with_erin, "erin"), "admin");
    assert_eq!(role_of(&with_erin, "frank"), "admin");
    assert_eq!(member_ids(&with_erin), ["alice", "bob", "dave", "erin", "frank"].map(String::from).into());
    // The newcomers see it too.
    server.client("dave").get(&conversation_path(&id)).await.expect(200);
}

#[tokio::test]
async fn an_admin_adds_ordinary_members() {
    let server = TestServer::start().await;
    let id = group_with_roles(&server.client("alice"), "adam", "bob").await;
    let added = add_members(&server.client("adam"), &id, &["dave"], Some("member")).await.expect(200);
    assert_eq!(role_of(&added, "dave"), "member");
}

#[tokio::test]
async fn an_admin_cannot_add_admins() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group_with_roles(&alice, "adam", "bob").await;
    add_members(&server.client("adam"), &id, &["dave"], Some("admin")).await.assert_error(403, "forbidden");
    assert!(!member_ids(&alice.get(&conversation_path(&id)).await.expect(200)).contains("dave"));
}

#[tokio::test]
async fn a_plain_member_cannot_add_members() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    add_members(&server.client("bob"), &id, &["dave"], None).await.assert_error(403, "forbidden");
    assert!(!member_ids(&alice.get(&conversation_path(&id)).await.expect(200)).contains("dave"));
}

#[tokio::test]
async fn a_non_member_cannot_add_members() {
    let server = TestServer::start().await;
    let id = group(&server.client("alice"), &["bob"]).await;
    add_members(&server.client("mallory"), &id, &["mallory"], None).await.assert_error(403, "not_a_member");
}

#[tokio::test]
async fn members_cannot_be_added_to_a_direct_conversation() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = id_of(&alice.create("direct", &["bob"]).await);
    add_members(&alice, &id, &["carol"], None).await.assert_error(409, "conflict");
    assert_eq!(member_ids(&alice.get(&conversation_path(&id)).await.expect(200)).len(), 2);
}

#[tokio::test]
async fn the_owner_role_cannot_be_granted_by_adding_members() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    add_members(&alice, &id, &["dave"], Some("owner")).await.assert_error(400, "invalid");
    add_members(&alice, &id, &["dave"], Some("superuser")).await.assert_error(400, "invalid");
    add_members(&alice, &id, &[], None).await.assert_error(400, "invalid");
}

#[tokio::test]
async fn re_adding_existing_members_changes_nothing() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group_with_roles(&alice, "adam", "bob").await;
    let before = alice.get(&conversation_path(&id)).await.expect(200);

    let after = add_members(&alice, &id, &["alice", "adam", "bob"], None).await.expect(200);
    assert_eq!(after["members"], before["members"]);
    let after = add_members(&alice, &id, &["bob"], Some("admin")).await.expect(200);
    assert_eq!(after["members"], before["members"]);
}

// ---------------------------------------------------------------------------------------------
// DELETE /api/conversations/{id}/members/{user_id}
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_member_added_later_sees_earlier_history_but_not_as_unread() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    alice.send(&id, "before carol").await;
    alice.send(&id, "also before carol").await;
    let conversation = alice.post(&members_path(&id), json!({"user_ids": ["carol"]})).await.expect(200);
    assert_eq!(member(&conversation, "carol")["last_read_seq"], 2);
    let carol = server.client("carol");
    assert_eq!(carol.get(&conversation_path(&id)).await.expect(200)["unread_count"], 0);
    assert_eq!(history(&carol, &id, "").await["messages"].as_array().map(Vec::len), Some(2));
    alice.send(&id, "welcome carol").await;
    assert_eq!(carol.get("/api/unread").await.expect(200)["total"], 1);
}

#[tokio::test]
async fn a_member_can_leave_a_group() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob", "carol"]).await;
    let reply = bob.delete(&member_path(&id, "bob")).await;
    assert_eq!(reply.status.as_u16(), 204);
    assert_eq!(reply.body, Value::Null);
    let members = member_ids(&alice.get(&conversation_path(&id)).await.expect(200));
    assert_eq!(members, ["alice", "carol"].map(String::from).into());
    bob.get(&conversation_path(&id)).await.assert_error(403, "not_a_member");
}

#[tokio::test]
async fn the_owner_can_remove_admins_and_members() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group_with_roles(&alice, "adam", "bob").await;
    assert_eq!(alice.delete(&member_path(&id, "adam")).await.status.as_u16(), 204);
    assert_eq!(alice.delete(&member_path(&id, "bob")).await.status.as_u16(), 204);
    let members = member_ids(&alice.get(&conversation_path(&id)).await.expect(200));
    assert_eq!(members, ["alice"].map(String::from).into());
}

#[tokio::test]
async fn an_admin_can_remove_a_plain_member() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group_with_roles(&alice, "adam", "bob").await;
    assert_eq!(server.client("adam").delete(&member_path(&id, "bob")).await.status.as_u16(), 204);
    assert!(!member_ids(&alice.get(&conversation_path(&id)).await.expect(200)).contains("bob"));
}

#[tokio::test]
async fn an_admin_cannot_remove_the_owner_or_another_admin() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group_with_roles(&alice, "adam", "bob").await;
    add_members(&alice, &id, &["ada"], Some("admin")).await.expect(200);
    let adam = server.client("adam");
    adam.delete(&member_path(&id, "alice")).await.assert_error(403, "forbidden");
    adam.delete(&member_path(&id, "ada")).await.assert_error(403, "forbidden");
    let conversation = alice.get(&conversation_path(&id)).await.expect(200);
    assert_eq!(role_of(&conversation, "alice"), "owner");
    assert_eq!(role_of(&conversation, "ada"), "admin");
}

#[tokio::test]
async fn a_plain_member_cannot_remove_someone_else() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob", "carol"]).await;
    server.client("bob").delete(&member_path(&id, "carol")).await.assert_error(403, "forbidden");
    assert!(member_ids(&alice.get(&conversation_path(&id)).await.expect(200)).contains("carol"));
}

#[tokio::test]
async fn the_owner_leaving_hands_ownership_to_the_longest_standing_admin() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    // bob is the oldest member, zed the older admin, amy the newer admin (names sort the
    // other way round, so order by name would pick wrong).
    let id = group(&alice, &["bob"]).await;
    let with_zed = add_members(&alice, &id, &["zed"], Some("admin")).await.expect(200);
    clock_past(&member(&with_zed, "zed")["joined_at"]).await;
    add_members(&alice, &id, &["amy"], Some("admin")).await.expect(200);

    assert_eq!(alice.delete(&member_path(&id, "alice")).await.status.as_u16(), 204);
    let conversation = server.client("bob").get(&conversation_path(&id)).await.expect(200);
    assert_eq!(member_ids(&conversation), ["amy", "bob", "zed"].map(String::from).into());
    assert_eq!(role_of(&conversation, "zed"), "owner");
    assert_eq!(role_of(&conversation, "amy"), "admin");
    assert_eq!(role_of(&conversation, "bob"), "member");
}

#[tokio::test]
async fn the_owner_leaving_a_group_without_admins_hands_ownership_to_the_longest_standing_member() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let created = alice.create("group", &["zed"]).await;
    let id = id_of(&created);
    clock_past(&member(&created, "zed")["joined_at"]).await;
    add_members(&alice, &id, &["amy"], None).await.expect(200);

    assert_eq!(alice.delete(&member_path(&id, "alice")).await.status.as_u16(), 204);
    let conversation = server.client("zed").get(&conversation_path(&id)).await.expect(200);
    assert_eq!(role_of(&conversation, "zed"), "owner");
    assert_eq!(role_of(&conversation, "amy"), "member");
}

#[tokio::test]
async fn the_owner_leaving_hands_ownership_to_the_first_listed_of_members_who_joined_together() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    // Created together, bob and carol joined in the same millisecond; the member list
    // ("oldest first") is the tie-break, so the successor is the one listed first.
    let created = alice.create("group", &["carol", "bob"]).await;
    let id = id_of(&created);
    let listed: Vec<&str> = created["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .filter(|u| *u != "alice")
        .collect();
    assert_eq!(member(&created, "bob")["joined_at"], member(&created, "carol")["joined_at"]);

    assert_eq!(alice.delete(&member_path(&id, "alice")).await.status.as_u16(), 204);
    let conversation = server.client("bob").get(&conversation_path(&id)).await.expect(200);
    assert_eq!(role_of(&conversation, listed[0]), "owner");
    assert_eq!(role_of(&conversation, listed[1]), "member");
}

#[tokio::test]
async fn members_cannot_be_removed_from_a_direct_conversation() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = id_of(&alice.create("direct", &["bob"]).await);
    alice.delete(&member_path(&id, "bob")).await.assert_error(409, "conflict");
    server.client("bob").delete(&member_path(&id, "bob")).await.assert_error(409, "conflict");
    assert_eq!(member_ids(&alice.get(&conversation_path(&id)).await.expect(200)).len(), 2);
}

#[tokio::test]
async fn a_removed_member_can_no_longer_read_or_send() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    bob.send(&id, "hello").await;
    assert_eq!(alice.delete(&member_path(&id, "bob")).await.status.as_u16(), 204);
    bob.get(&messages_path(&id)).await.assert_error(403, "not_a_member");
    post_message(&bob, &id, json!({ "content": "still here?" })).await.assert_error(403, "not_a_member");
}

// ---------------------------------------------------------------------------------------------
// POST /api/conversations/{id}/messages
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sending_answers_201_with_the_message_and_gap_free_seqs_from_1() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let sent = send_many(&alice, &id, 3).await;
    assert_eq!(sent.iter().map(|m| m["seq"].as_i64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3]);

    let first = &sent[0];
    assert!(first["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(first["conversation_id"], id.as_str());
    assert_eq!(first["sender_id"], "alice");
    assert_eq!(first["type"], "text");
    assert_eq!(first["content"], "m1");
    assert_eq!(first["client_id"], Value::Null);
    assert_eq!(first["reply_to_id"], Value::Null);
    assert_eq!(first["attachments"], json!([]));
    assert_eq!(first["metadata"], json!({}));
    assert_timestamp(&first["created_at"]);
    assert_eq!(first["edited_at"], Value::Null);
    assert_eq!(first["deleted_at"], Value::Null);
    assert_eq!(alice.get(&conversation_path(&id)).await.expect(200)["last_seq"], 3);
}

#[tokio::test]
async fn repeating_a_client_id_answers_200_with_the_original_message_and_no_new_seq() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let original =
        post_message(&alice, &id, json!({ "content": "hi", "client_id": "c-123" })).await.expect(201);
    assert_eq!(original["client_id"], "c-123");

    let repeat =
        post_message(&alice, &id, json!({ "content": "hi", "client_id": "c-123" })).await.expect(200);
    assert_eq!(repeat, original);
    let changed =
        post_message(&alice, &id, json!({ "content": "other", "client_id": "c-123" })).await.expect(200);
    assert_eq!(changed, original, "a repeat returns the original, whatever it carries");

    assert_eq!(alice.send(&id, "next").await["seq"], 2);
    assert_eq!(seqs(&history(&alice, &id, "").await), vec![1, 2]);
}

#[tokio::test]
async fn a_client_id_is_scoped_to_its_sender_and_conversation() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    let other = group(&alice, &["bob"]).await;
    let mine = post_message(&alice, &id, json!({ "content": "a", "client_id": "same" })).await.expect(201);
    let bobs = post_message(&bob, &id, json!({ "content": "b", "client_id": "same" })).await.expect(201);
    let elsewhere =
        post_message(&alice, &other, json!({ "content": "c", "client_id": "same" })).await.expect(201);
    assert_eq!(
        (mine["seq"].as_i64(), bobs["seq"].as_i64(), elsewhere["seq"].as_i64()),
        (Some(1), Some(2), Some(1))
    );
}

#[tokio::test]
async fn an_image_message_may_carry_attachments_without_content() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let attachments = json!([{ "url": "https://cdn.example/a.jpg", "width": 640, "height": 480 }]);
    let body = json!({ "type": "image", "attachments": attachments, "metadata": { "album": "x" } });
    let sent = post_message(&alice, &id, body).await.expect(201);
    assert_eq!(sent["type"], "image");
    assert_eq!(sent["content"], Value::Null);
    assert_eq!(sent["attachments"], attachments);
    assert_eq!(sent["metadata"], json!({ "album": "x" }));
}

#[tokio::test]
async fn a_text_message_without_content_is_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    post_message(&alice, &id, json!({})).await.assert_error(400, "invalid");
    post_message(&alice, &id, json!({ "type": "text", "content": null })).await.assert_error(400, "invalid");
}

#[tokio::test]
async fn blank_content_is_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    for content in ["", "   ", " \n\t "] {
        post_message(&alice, &id, json!({ "content": content })).await.assert_error(400, "invalid");
    }
}

#[tokio::test]
async fn content_over_4000_characters_is_too_large() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    post_message(&alice, &id, json!({ "content": "a".repeat(4001) })).await.assert_error(413, "too_large");
    post_message(&alice, &id, json!({ "content": "가".repeat(4001) })).await.assert_error(413, "too_large");
    assert_eq!(history(&alice, &id, "").await["messages"], json!([]));
}

#[tokio::test]
async fn content_of_exactly_4000_multibyte_characters_is_accepted() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let content = "가".repeat(4000);
    let sent = post_message(&alice, &id, json!({ "content": content })).await.expect(201);
    assert_eq!(sent["content"], content.as_str());
}

#[tokio::test]
async fn control_characters_in_content_are_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    for content in ["a\u{0001}b", "a\rb", "a\u{0000}b", "a\u{007f}b", "a\u{001b}[31mb"] {
        post_message(&alice, &id, json!({ "content": content })).await.assert_error(400, "invalid");
    }
}

#[tokio::test]
async fn newlines_and_tabs_in_content_are_kept_verbatim() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let content = "line one\nline two\n\tindented\ttab 🙂";
    assert_eq!(alice.send(&id, content).await["content"], content);
    assert_eq!(history(&alice, &id, "").await["messages"][0]["content"], content);
}

#[tokio::test]
async fn users_cannot_send_system_messages() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    post_message(&alice, &id, json!({ "type": "system", "content": "alice joined" }))
        .await
        .assert_error(400, "invalid");
}

#[tokio::test]
async fn an_unknown_field_in_a_message_is_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    post_message(&alice, &id, json!({ "content": "hi", "colour": "red" })).await.assert_error(400, "invalid");
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    for body in [
        json!({ "content": 5 }),
        json!({ "content": "hi", "type": "sticker" }),
        json!({ "content": "hi", "attachments": "a.jpg" }),
        json!({ "content": "hi", "attachments": ["a.jpg"] }),
        json!({ "content": "hi", "metadata": [] }),
        json!(["hi"]),
    ] {
        post_message(&alice, &id, body).await.assert_error(400, "invalid");
    }
}

#[tokio::test]
async fn malformed_json_is_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let reply =
        alice.raw(Method::POST, &messages_path(&id), "application/json", br#"{"content": "#.to_vec()).await;
    reply.assert_error(400, "invalid");
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    post_without_content_type(&alice, &messages_path(&id), r#"{"content":"hi"}"#)
        .await
        .assert_error(400, "invalid");
    let reply =
        alice.raw(Method::POST, &messages_path(&id), "text/plain", br#"{"content":"hi"}"#.to_vec()).await;
    reply.assert_error(400, "invalid");
}

#[tokio::test]
async fn a_body_over_64_kib_is_too_large() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let body = json!({ "content": "hi", "metadata": { "padding": "x".repeat(64 * 1024) } });
    let reply =
        alice.raw(Method::POST, &messages_path(&id), "application/json", body.to_string().into_bytes()).await;
    reply.assert_error(413, "too_large");
    assert_eq!(history(&alice, &id, "").await["messages"], json!([]));
}

#[tokio::test]
async fn more_than_10_attachments_is_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let attachments = |n: usize| {
        (0..n).map(|i| json!({ "url": format!("https://cdn.example/{i}.jpg") })).collect::<Vec<_>>()
    };
    post_message(&alice, &id, json!({ "type": "image", "attachments": attachments(11) }))
        .await
        .assert_error(400, "invalid");
    post_message(&alice, &id, json!({ "type": "image", "attachments": attachments(10) })).await.expect(201);
}

#[tokio::test]
async fn a_reply_must_point_to_a_message_of_the_same_conversation() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let other = group(&alice, &["bob"]).await;
    let elsewhere = alice.send(&other, "over there").await;
    post_message(&alice, &id, json!({ "content": "re", "reply_to_id": elsewhere["id"] }))
        .await
        .assert_error(400, "invalid");
    post_message(&alice, &id, json!({ "content": "re", "reply_to_id": "no-such-message" }))
        .await
        .assert_error(400, "invalid");
}

#[tokio::test]
async fn a_reply_to_a_message_of_the_same_conversation_keeps_reply_to_id() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    let question = alice.send(&id, "lunch?").await;
    let answer =
        post_message(&bob, &id, json!({ "content": "yes", "reply_to_id": question["id"] })).await.expect(201);
    assert_eq!(answer["reply_to_id"], question["id"]);
    assert_eq!(history(&alice, &id, "").await["messages"][1]["reply_to_id"], question["id"]);
}

#[tokio::test]
async fn a_conversation_id_in_the_body_must_match_the_path() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let other = group(&alice, &["bob"]).await;
    post_message(&alice, &id, json!({ "conversation_id": other, "content": "hi" }))
        .await
        .assert_error(400, "invalid");
    let sent = post_message(&alice, &id, json!({ "conversation_id": id, "content": "hi" })).await.expect(201);
    assert_eq!(sent["conversation_id"], id.as_str());
    assert_eq!(history(&alice, &other, "").await["messages"], json!([]));
}

#[tokio::test]
async fn a_non_member_cannot_send() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    post_message(&server.client("mallory"), &id, json!({ "content": "hi" }))
        .await
        .assert_error(403, "not_a_member");
    assert_eq!(history(&alice, &id, "").await["messages"], json!([]));
}

#[tokio::test]
async fn sending_to_an_unknown_conversation_is_not_found() {
    let server = TestServer::start().await;
    post_message(&server.client("alice"), "no-such-id", json!({ "content": "hi" }))
        .await
        .assert_error(404, "not_found");
}

// ---------------------------------------------------------------------------------------------
// GET /api/conversations/{id}/messages
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn history_defaults_to_the_newest_30_ascending_with_has_more() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    send_many(&alice, &id, 35).await;
    let page = history(&alice, &id, "").await;
    assert_eq!(seqs(&page), (6..=35).collect::<Vec<_>>());
    assert_eq!(page["has_more"], true);
    assert_eq!(page["messages"][0]["content"], "m6");
}

#[tokio::test]
async fn history_has_no_more_when_everything_fits_in_one_page() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    assert_eq!(history(&alice, &id, "").await, json!({ "messages": [], "has_more": false }));
    send_many(&alice, &id, 3).await;
    let page = history(&alice, &id, "").await;
    assert_eq!(seqs(&page), vec![1, 2, 3]);
    assert_eq!(page["has_more"], false);
}

#[tokio::test]
async fn history_pages_backward_with_before_seq_and_forward_with_after_seq_over_the_same_messages() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    send_many(&alice, &id, 75).await;

    // Backward from the newest page.
    let mut backward: Vec<Value> = Vec::new();
    let mut page = history(&alice, &id, "?limit=30").await;
    loop {
        let mut messages = page["messages"].as_array().unwrap().clone();
        let oldest = messages.first().map(|m| m["seq"].as_i64().unwrap());
        messages.extend(backward);
        backward = messages;
        if page["has_more"] == false {
            break;
        }
        page = history(&alice, &id, &format!("?limit=30&before_seq={}", oldest.unwrap())).await;
    }

    // Forward from the start.
    let mut forward: Vec<Value> = Vec::new();
    let mut after = 0;
    loop {
        let page = history(&alice, &id, &format!("?limit=30&after_seq={after}")).await;
        let messages = page["messages"].as_array().unwrap();
        forward.extend(messages.iter().cloned());
        if page["has_more"] == false {
            break;
        }
        after = messages.last().unwrap()["seq"].as_i64().unwrap();
    }

    let all_seqs = (1..=75).collect::<Vec<_>>();
    assert_eq!(backward.iter().map(|m| m["seq"].as_i64().unwrap()).collect::<Vec<_>>(), all_seqs);
    assert_eq!(forward.iter().map(|m| m["seq"].as_i64().unwrap()).collect::<Vec<_>>(), all_seqs);
    assert_eq!(backward, forward, "both walks return the same messages");
}

#[tokio::test]
async fn history_pages_are_capped_at_100_messages() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    send_many(&alice, &id, 105).await;
    let page = history(&alice, &id, "?limit=1000").await;
    assert_eq!(seqs(&page), (6..=105).collect::<Vec<_>>());
    assert_eq!(page["has_more"], true);
    let page = history(&alice, &id, "?limit=1000&after_seq=0").await;
    assert_eq!(seqs(&page), (1..=100).collect::<Vec<_>>());
}

#[tokio::test]
async fn negative_or_zero_history_bounds_are_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    for query in ["?limit=-1", "?limit=0", "?before_seq=-1", "?after_seq=-5", "?limit=many"] {
        alice.get(&format!("{}{query}", messages_path(&id))).await.assert_error(400, "invalid");
    }
}

#[tokio::test]
async fn a_deleted_message_keeps_its_seq_in_history_with_null_content() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let sent = send_many(&alice, &id, 3).await;
    alice.delete(&message_path(&id_of(&sent[1]))).await.expect(200);

    let page = history(&alice, &id, "").await;
    assert_eq!(seqs(&page), vec![1, 2, 3]);
    let deleted = &page["messages"][1];
    assert_eq!(deleted["id"], sent[1]["id"]);
    assert_eq!(deleted["content"], Value::Null);
    assert_timestamp(&deleted["deleted_at"]);
    assert_eq!(page["messages"][0]["content"], "m1");
    assert_eq!(page["messages"][2]["content"], "m3");
}

#[tokio::test]
async fn history_is_for_members_of_existing_conversations_only() {
    let server = TestServer::start().await;
    let id = group(&server.client("alice"), &["bob"]).await;
    server.client("mallory").get(&messages_path(&id)).await.assert_error(403, "not_a_member");
    server.client("alice").get(&messages_path("no-such-id")).await.assert_error(404, "not_found");
}

// ---------------------------------------------------------------------------------------------
// PATCH /api/messages/{id}
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_sender_can_edit_a_message() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    let original = bob.send(&id, "helo").await;
    let edited = bob.patch(&message_path(&id_of(&original)), json!({ "content": "hello" })).await.expect(200);
    assert_eq!(edited["id"], original["id"]);
    assert_eq!(edited["seq"], original["seq"]);
    assert_eq!(edited["content"], "hello");
    assert_eq!(edited["created_at"], original["created_at"]);
    assert_timestamp(&edited["edited_at"]);
    assert_eq!(history(&alice, &id, "").await["messages"][0], edited);
}

#[tokio::test]
async fn only_the_sender_can_edit_a_message_not_even_the_owner() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    let message = bob.send(&id, "mine").await;
    alice
        .patch(&message_path(&id_of(&message)), json!({ "content": "yours" }))
        .await
        .assert_error(403, "forbidden");
    assert_eq!(history(&alice, &id, "").await["messages"][0]["content"], "mine");
}

#[tokio::test]
async fn a_deleted_message_cannot_be_edited() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let message = alice.send(&id, "oops").await;
    alice.delete(&message_path(&id_of(&message))).await.expect(200);
    alice
        .patch(&message_path(&id_of(&message)), json!({ "content": "back" }))
        .await
        .assert_error(409, "conflict");
}

#[tokio::test]
async fn editing_an_unknown_message_is_not_found() {
    let server = TestServer::start().await;
    let reply =
        server.client("alice").patch(&message_path("no-such-message"), json!({ "content": "x" })).await;
    reply.assert_error(404, "not_found");
}

#[tokio::test]
async fn a_non_member_cannot_edit_a_message() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let message = alice.send(&id, "hi").await;
    let reply =
        server.client("mallory").patch(&message_path(&id_of(&message)), json!({ "content": "x" })).await;
    reply.assert_error(403, "not_a_member");
}

#[tokio::test]
async fn an_edit_follows_the_content_rules() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let path = message_path(&id_of(&alice.send(&id, "hi").await));
    alice.patch(&path, json!({ "content": "  " })).await.assert_error(400, "invalid");
    alice.patch(&path, json!({ "content": "a\rb" })).await.assert_error(400, "invalid");
    alice.patch(&path, json!({ "content": "a".repeat(4001) })).await.assert_error(413, "too_large");
    alice.patch(&path, json!({})).await.assert_error(400, "invalid");
    alice.patch(&path, json!({ "message_id": "another", "content": "x" })).await.assert_error(400, "invalid");
    assert_eq!(history(&alice, &id, "").await["messages"][0]["edited_at"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// DELETE /api/messages/{id}
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_sender_can_delete_a_message() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let body = json!({ "type": "image", "content": "look", "attachments": [{ "url": "https://cdn.example/a.jpg" }] });
    let sent = post_message(&alice, &id, body).await.expect(201);
    let deleted = alice.delete(&message_path(&id_of(&sent))).await.expect(200);
    assert_eq!(deleted["id"], sent["id"]);
    assert_eq!(deleted["seq"], sent["seq"]);
    assert_eq!(deleted["content"], Value::Null);
    assert_eq!(deleted["attachments"], json!([]));
    assert_timestamp(&deleted["deleted_at"]);
}

#[tokio::test]
async fn a_group_owner_or_admin_can_delete_others_messages() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group_with_roles(&alice, "adam", "bob").await;
    let bob = server.client("bob");
    let first = bob.send(&id, "spam").await;
    let second = bob.send(&id, "more spam").await;
    let by_owner = alice.delete(&message_path(&id_of(&first))).await.expect(200);
    assert_eq!(by_owner["content"], Value::Null);
    let by_admin = server.client("adam").delete(&message_path(&id_of(&second))).await.expect(200);
    assert_eq!(by_admin["content"], Value::Null);
    assert_eq!(by_admin["sender_id"], "bob");
}

#[tokio::test]
async fn in_a_direct_conversation_only_the_sender_may_delete() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = id_of(&alice.create("direct", &["bob"]).await);
    let message = server.client("bob").send(&id, "my words").await;
    alice.delete(&message_path(&id_of(&message))).await.assert_error(403, "forbidden");
    assert_eq!(history(&alice, &id, "").await["messages"][0]["content"], "my words");
}

#[tokio::test]
async fn explicit_null_attachments_and_metadata_mean_none() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let sent = alice
        .post(&messages_path(&id), json!({"content": "hi", "attachments": null, "metadata": null}))
        .await
        .expect(201);
    assert_eq!(sent["attachments"], json!([]));
    assert_eq!(sent["metadata"], json!({}));
}

#[tokio::test]
async fn a_plain_member_cannot_delete_others_messages() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob", "carol"]).await;
    let message = server.client("carol").send(&id, "mine").await;
    server.client("bob").delete(&message_path(&id_of(&message))).await.assert_error(403, "forbidden");
    assert_eq!(history(&alice, &id, "").await["messages"][0]["content"], "mine");
}

#[tokio::test]
async fn deleting_a_message_twice_succeeds_both_times() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let path = message_path(&id_of(&alice.send(&id, "bye").await));
    let first = alice.delete(&path).await.expect(200);
    let second = alice.delete(&path).await.expect(200);
    assert_eq!(second, first, "the second delete changes nothing");
}

#[tokio::test]
async fn deleting_needs_an_existing_message_in_a_conversation_of_the_caller() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let message = alice.send(&id, "hi").await;
    alice.delete(&message_path("no-such-message")).await.assert_error(404, "not_found");
    server.client("mallory").delete(&message_path(&id_of(&message))).await.assert_error(403, "not_a_member");
}

// ---------------------------------------------------------------------------------------------
// POST /api/conversations/{id}/read and GET /api/unread
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn marking_read_answers_the_new_last_read_seq() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    send_many(&alice, &id, 3).await;
    assert_eq!(mark_read(&bob, &id, 2).await, 2);
    let conversation = bob.get(&conversation_path(&id)).await.expect(200);
    assert_eq!(member(&conversation, "bob")["last_read_seq"], 2);
}

#[tokio::test]
async fn the_read_marker_never_moves_backwards() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    send_many(&alice, &id, 5).await;
    assert_eq!(mark_read(&bob, &id, 4).await, 4);
    assert_eq!(mark_read(&bob, &id, 2).await, 4);
    assert_eq!(mark_read(&bob, &id, 0).await, 4);
    assert_eq!(member(&bob.get(&conversation_path(&id)).await.expect(200), "bob")["last_read_seq"], 4);
}

#[tokio::test]
async fn the_read_marker_is_capped_at_the_last_seq() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    send_many(&alice, &id, 3).await;
    assert_eq!(mark_read(&bob, &id, 1_000).await, 3);
    // Messages sent later are unread, not swallowed by an over-eager marker.
    alice.send(&id, "later").await;
    assert_eq!(unread_count(&bob, &id).await, 1);
}

#[tokio::test]
async fn reading_lowers_the_unread_counts() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let busy = group(&alice, &["bob"]).await;
    let other = group(&alice, &["bob"]).await;
    send_many(&alice, &busy, 5).await;
    send_many(&alice, &other, 2).await;
    assert_eq!(unread_count(&bob, &busy).await, 5);
    assert_eq!(
        bob.get("/api/unread").await.expect(200),
        json!({ "total": 7, "conversations": { &busy: 5, &other: 2 } })
    );

    mark_read(&bob, &busy, 3).await;
    assert_eq!(unread_count(&bob, &busy).await, 2);
    assert_eq!(
        bob.get("/api/unread").await.expect(200),
        json!({ "total": 4, "conversations": { &busy: 2, &other: 2 } })
    );

    mark_read(&bob, &busy, 5).await;
    assert_eq!(unread_count(&bob, &busy).await, 0);
    assert_eq!(
        bob.get("/api/unread").await.expect(200),
        json!({ "total": 2, "conversations": { &other: 2 } })
    );
}

#[tokio::test]
async fn own_messages_never_count_as_unread() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    send_many(&alice, &id, 3).await;
    bob.send(&id, "reply").await;
    assert_eq!(unread_count(&alice, &id).await, 1);
    assert_eq!(unread_count(&bob, &id).await, 3);
    assert_eq!(
        alice.get("/api/unread").await.expect(200),
        json!({ "total": 1, "conversations": { &id: 1 } })
    );
    assert_eq!(
        server.client("carol").get("/api/unread").await.expect(200),
        json!({ "total": 0, "conversations": {} })
    );
}

#[tokio::test]
async fn deleted_messages_do_not_count_as_unread() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    let sent = send_many(&alice, &id, 3).await;
    alice.delete(&message_path(&id_of(&sent[0]))).await.expect(200);
    assert_eq!(unread_count(&bob, &id).await, 2);
    assert_eq!(bob.get("/api/unread").await.expect(200), json!({ "total": 2, "conversations": { &id: 2 } }));
}

#[tokio::test]
async fn deleting_an_already_read_message_leaves_the_unread_count_alone() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    let sent = send_many(&alice, &id, 4).await;
    mark_read(&bob, &id, 2).await;
    assert_eq!(unread_count(&bob, &id).await, 2);
    alice.delete(&message_path(&id_of(&sent[0]))).await.expect(200);
    assert_eq!(unread_count(&bob, &id).await, 2, "message 1 was already read");
    alice.delete(&message_path(&id_of(&sent[2]))).await.expect(200);
    assert_eq!(unread_count(&bob, &id).await, 1, "message 3 was not");
    alice.delete(&message_path(&id_of(&sent[2]))).await.expect(200);
    assert_eq!(unread_count(&bob, &id).await, 1, "deleting twice counts once");
    mark_read(&bob, &id, 4).await;
    assert_eq!(bob.get("/api/unread").await.expect(200), json!({ "total": 0, "conversations": {} }));
}

#[tokio::test]
async fn marking_read_needs_membership_and_a_valid_seq() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    alice.send(&id, "hi").await;
    let mallory = server.client("mallory");
    mallory.post(&read_path(&id), json!({ "seq": 1 })).await.assert_error(403, "not_a_member");
    bob.post(&read_path("no-such-id"), json!({ "seq": 1 })).await.assert_error(404, "not_found");
    for body in
        [json!({ "seq": -1 }), json!({}), json!({ "seq": "1" }), json!({ "seq": 1, "conversation_id": "x" })]
    {
        bob.post(&read_path(&id), body).await.assert_error(400, "invalid");
    }
}

// ---------------------------------------------------------------------------------------------
// PUT /api/conversations/{id}/notifications
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn switching_notifications_off_shows_in_the_callers_member_entry_and_nobody_elses_view() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    let reply = bob.put(&notifications_path(&id), json!({ "enabled": false })).await;
    assert_eq!(reply.status.as_u16(), 204);
    assert_eq!(reply.body, Value::Null);
    let conversation = bob.get(&conversation_path(&id)).await.expect(200);
    assert_eq!(member(&conversation, "bob")["notifications"], false);
    assert!(member(&conversation, "alice").get("notifications").is_none(), "{conversation}");

    // Alice sees her own flag, never Bob's: not in the conversation, the list, or answers
    // to her changes.
    let conversation = alice.get(&conversation_path(&id)).await.expect(200);
    assert_eq!(member(&conversation, "alice")["notifications"], true);
    assert!(member(&conversation, "bob").get("notifications").is_none(), "{conversation}");
    let list = alice.get("/api/conversations").await.expect(200);
    assert!(member(&list["conversations"][0], "bob").get("notifications").is_none(), "{list}");
    let renamed = alice.patch(&conversation_path(&id), json!({ "name": "renamed" })).await.expect(200);
    assert!(member(&renamed, "bob").get("notifications").is_none(), "{renamed}");

    assert_eq!(bob.put(&notifications_path(&id), json!({ "enabled": true })).await.status.as_u16(), 204);
    assert_eq!(member(&bob.get(&conversation_path(&id)).await.expect(200), "bob")["notifications"], true);
}

#[tokio::test]
async fn a_non_member_cannot_switch_notifications() {
    let server = TestServer::start().await;
    let id = group(&server.client("alice"), &["bob"]).await;
    let reply = server.client("mallory").put(&notifications_path(&id), json!({ "enabled": false })).await;
    reply.assert_error(403, "not_a_member");
    let reply =
        server.client("alice").put(&notifications_path("no-such-id"), json!({ "enabled": false })).await;
    reply.assert_error(404, "not_found");
}

#[tokio::test]
async fn switching_notifications_needs_a_boolean_enabled() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    for body in [
        json!({}),
        json!({ "enabled": "no" }),
        json!({ "enabled": 0 }),
        json!({ "enabled": false, "mute": 1 }),
    ] {
        alice.put(&notifications_path(&id), body).await.assert_error(400, "invalid");
    }
    assert_eq!(member(&alice.get(&conversation_path(&id)).await.expect(200), "alice")["notifications"], true);
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_api_route_requires_a_bearer_token() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let message = id_of(&alice.send(&id, "hi").await);
    let routes = [
        (Method::POST, "/api/conversations".to_owned(), Some(json!({ "type": "group", "members": [] }))),
        (Method::GET, "/api/conversations".to_owned(), None),
        (Method::GET, conversation_path(&id), None),
        (Method::PATCH, conversation_path(&id), Some(json!({ "name": "x" }))),
        (Method::POST, members_path(&id), Some(json!({ "user_ids": ["carol"] }))),
        (Method::DELETE, member_path(&id, "bob"), None),
        (Method::GET, messages_path(&id), None),
        (Method::POST, messages_path(&id), Some(json!({ "content": "hi" }))),
        (Method::PATCH, message_path(&message), Some(json!({ "content": "x" }))),
        (Method::DELETE, message_path(&message), None),
        (Method::POST, read_path(&id), Some(json!({ "seq": 1 }))),
        (Method::PUT, notifications_path(&id), Some(json!({ "enabled": false }))),
        (Method::GET, "/api/unread".to_owned(), None),
    ];
    let anonymous = server.anonymous();
    let basic = alice.clone();
    for (method, path, body) in routes {
        anonymous.call(method.clone(), &path, body.clone()).await.assert_error(401, "unauthorized");
        // A token in another scheme is no bearer token.
        let mut req = basic.http.request(method.clone(), format!("{}{path}", basic.base));
        req = req.header("authorization", format!("Basic {}", alice.token.as_deref().unwrap()));
        if let Some(body) = body {
            req = req.json(&body);
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), 401, "{method} {path} with Basic auth");
    }
    // Nothing above changed anything.
    let conversation = alice.get(&conversation_path(&id)).await.expect(200);
    assert_eq!(member_ids(&conversation).len(), 2);
    assert_eq!(conversation["name"], Value::Null);
    assert_eq!(seqs(&history(&alice, &id, "").await), vec![1]);
}

#[tokio::test]
async fn a_garbage_token_is_unauthorized() {
    let server = TestServer::start().await;
    for token in ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..."] {
        server
            .anonymous()
            .with_token(token)
            .get("/api/conversations")
            .await
            .assert_error(401, "unauthorized");
    }
}

#[tokio::test]
async fn a_token_crafted_with_the_servers_secret_is_accepted() {
    let server = TestServer::start().await;
    let token = sign(Algorithm::HS256, &claims("alice", unix_now() + 3600), &server_secret(&server));
    let client = server.anonymous().with_token(&token);
    let created = client.create("group", &["bob"]).await;
    assert_eq!(role_of(&created, "alice"), "owner");
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_unauthorized() {
    let server = TestServer::start().await;
    let token =
        sign(Algorithm::HS256, &claims("alice", unix_now() + 3600), b"not-the-server-secret-at-all-0123");
    server.anonymous().with_token(&token).get("/api/conversations").await.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn an_expired_token_is_token_expired() {
    let server = TestServer::start().await;
    let token = sign(Algorithm::HS256, &claims("alice", unix_now() - 3600), &server_secret(&server));
    server.anonymous().with_token(&token).get("/api/conversations").await.assert_error(401, "token_expired");
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_unauthorized() {
    let server = TestServer::start().await;
    // base64url of {"alg":"none","typ":"JWT"}, valid claims, empty signature.
    const NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    let valid = server.token("alice");
    let claims_part = valid.split('.').nth(1).expect("claims segment");
    for token in [format!("{NONE_HEADER}.{claims_part}."), format!("{NONE_HEADER}.{claims_part}")] {
        server
            .anonymous()
            .with_token(&token)
            .get("/api/conversations")
            .await
            .assert_error(401, "unauthorized");
    }
}

#[tokio::test]
async fn a_token_with_another_algorithm_is_unauthorized_even_with_the_right_secret() {
    let server = TestServer::start().await;
    let secret = server_secret(&server);
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(alg, &claims("alice", unix_now() + 3600), &secret);
        server
            .anonymous()
            .with_token(&token)
            .get("/api/conversations")
            .await
            .assert_error(401, "unauthorized");
    }
}

#[tokio::test]
async fn a_token_without_exp_or_sub_is_unauthorized() {
    let server = TestServer::start().await;
    let secret = server_secret(&server);
    for claims in [
        json!({ "sub": "alice" }),
        json!({ "exp": unix_now() + 3600 }),
        json!({ "sub": "", "exp": unix_now() + 3600 }),
    ] {
        let token = sign(Algorithm::HS256, &claims, &secret);
        let reply = server.anonymous().with_token(&token).get("/api/conversations").await;
        reply.assert_error(401, "unauthorized");
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limiting, PII masking, dev mode
// ---------------------------------------------------------------------------------------------

async fn rate_limited_server() -> TestServer {
    TestServer::start_with(|c| {
        c.limits.messages_per_second = 10;
        c.limits.message_burst = 20;
    })
    .await
}

#[tokio::test]
async fn sending_faster_than_the_limit_is_rate_limited_with_retry_after() {
    let server = rate_limited_server().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let replies = futures::future::join_all(
        (0..30).map(|i| post_message(&alice, &id, json!({ "content": format!("flood {i}") }))),
    )
    .await;

    let accepted = replies.iter().filter(|r| r.status.as_u16() == 201).count();
    let limited: Vec<&Reply> = replies.iter().filter(|r| r.status.as_u16() == 429).collect();
    assert_eq!(accepted + limited.len(), 30, "only 201 or 429: {replies:?}");
    assert!(accepted >= 20, "the burst of 20 is allowed, got {accepted}");
    assert!(!limited.is_empty(), "30 sends at once exceed a burst of 20");
    for reply in limited {
        reply.assert_error(429, "rate_limited");
        let retry_after = reply.headers.get("retry-after").expect("Retry-After header").to_str().unwrap();
        let seconds: u64 = retry_after.parse().unwrap_or_else(|_| panic!("Retry-After {retry_after:?}"));
        assert!(seconds >= 1);
    }
    // Refused sends took no seq.
    let page = history(&alice, &id, "?limit=100").await;
    assert_eq!(seqs(&page), (1..=accepted as i64).collect::<Vec<_>>());
}

#[tokio::test]
async fn one_users_rate_limit_does_not_affect_another() {
    let server = rate_limited_server().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    let replies =
        futures::future::join_all((0..30).map(|_| post_message(&alice, &id, json!({ "content": "flood" }))))
            .await;
    assert!(replies.iter().any(|r| r.status.as_u16() == 429), "alice is over her limit");
    for _ in 0..5 {
        bob.send(&id, "still fine").await;
    }
}

#[tokio::test]
async fn with_mask_pii_phone_numbers_are_stored_masked() {
    let server = TestServer::start_with(|c| {
        c.limits.messages_per_second = 0;
        c.limits.mask_pii = true;
    })
    .await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let sent = alice.send(&id, "call 010-1234-5678 please").await;
    assert_eq!(sent["content"], "call ***-****-**** please");
    assert_eq!(history(&alice, &id, "").await["messages"][0]["content"], "call ***-****-**** please");
    let edited =
        alice.patch(&message_path(&id_of(&sent)), json!({ "content": "010-1234-5678" })).await.expect(200);
    assert_eq!(edited["content"], "***-****-****");
}

#[tokio::test]
async fn without_mask_pii_phone_numbers_are_stored_as_sent() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    assert_eq!(alice.send(&id, "call 010-1234-5678").await["content"], "call 010-1234-5678");
}

#[tokio::test]
async fn the_dev_token_endpoint_is_absent_outside_dev_mode() {
    let server = TestServer::start().await;
    let reply = server.anonymous().post("/api/dev/token", json!({ "user_id": "dave" })).await;
    reply.assert_error(404, "not_found");
}

#[tokio::test]
async fn the_dev_token_endpoint_issues_tokens_that_work_on_the_api() {
    let server = TestServer::start_with(|c| c.dev = true).await;
    let reply = server.anonymous().post("/api/dev/token", json!({ "user_id": "dave", "name": "Dave" })).await;
    let token = reply.expect(200)["token"].as_str().expect("token").to_owned();
    let dave = server.anonymous().with_token(&token);
    let created = dave.create("group", &["erin"]).await;
    assert_eq!(role_of(&created, "dave"), "owner");
    assert_eq!(
        ids(&dave.get("/api/conversations").await.expect(200)["conversations"]),
        vec![id_of(&created)]
    );
    server.anonymous().post("/api/dev/token", json!({ "user_id": "" })).await.assert_error(400, "invalid");
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_are_not_found_in_the_contract_shape() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    for path in ["/api/nope", "/api/conversations/x/y/z", "/nope"] {
        let reply = alice.get(path).await;
        reply.assert_error(404, "not_found");
        let content_type = reply.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(content_type.starts_with("application/json"), "{path}: {content_type}");
    }
}

#[tokio::test]
async fn a_wrong_method_on_a_known_route_is_405() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    for (method, path) in [
        (Method::PUT, "/api/conversations".to_owned()),
        (Method::DELETE, conversation_path(&id)),
        (Method::GET, read_path(&id)),
        (Method::POST, "/api/unread".to_owned()),
        (Method::GET, message_path("any")),
    ] {
        let reply = alice.call(method.clone(), &path, None).await;
        assert_eq!(reply.status.as_u16(), 405, "{method} {path}: {:?}", reply.body);
        assert!(reply.body["error"]["code"].is_string(), "{method} {path}: {:?}", reply.body);
    }
}

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
async fn a_body_that_is_not_a_json_object_is_invalid_even_if_its_values_fit_by_position() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    for body in [json!(["group", ["bob"]]), json!("group"), json!(7), json!(null)] {
        alice.post("/api/conversations", body).await.assert_error(400, "invalid");
    }
    alice.post("/api/conversations", json!({"type": "group", "members": ["bob"]})).await.expect(201);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_and_members_leaving_at_the_same_moment_never_leave_the_group_without_an_owner() {
    let server = TestServer::start().await;
    common::assert_concurrent_leaves_keep_an_owner(&server).await;
}
