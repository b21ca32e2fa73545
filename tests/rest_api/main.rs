//! The REST API as a specification: every `/api` route driven over real HTTP against a real
//! server (SQLite in a temp dir), one behaviour per test, each named for the behaviour it
//! pins down. The contract is `PROTOCOL.md` (the project's copy: `docs/protocol.md`).
//!
//! One test binary, one module per resource; the helpers every module shares live here.

#[path = "../common/mod.rs"]
mod common;

mod annotations;
mod auth;
mod conversations;
mod devices;
mod members;
mod messages;
mod notification_settings;
mod options;
mod routing;
mod search;
mod unread;

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
