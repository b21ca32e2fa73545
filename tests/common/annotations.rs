//! Reactions, threads, pins, mentions and change revisions end to end over REST, shared by
//! the REST suite (SQLite) and the PostgreSQL server tests. Message rate limits must be off
//! (one user makes more than a burst of changes here).

use serde_json::{Value, json};

use super::{Client, TestServer};

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_owned()
}

/// A message as `client` reads it from the history (its current state).
async fn message_as_seen_by(client: &Client, conversation_id: &str, message_id: &str) -> Value {
    client
        .all_messages(conversation_id)
        .await
        .into_iter()
        .find(|m| m["id"] == message_id)
        .unwrap_or_else(|| panic!("{message_id} not in the history"))
}

async fn conversation(client: &Client, id: &str) -> Value {
    client.get(&format!("/api/conversations/{id}")).await.expect(200)
}

async fn send_json(client: &Client, conversation_id: &str, body: Value) -> Value {
    client.post(&format!("/api/conversations/{conversation_id}/messages"), body).await.expect(201)
}

/// Reactions: 50 members reacting at once are counted exactly, PUT and DELETE are idempotent,
/// the 21st distinct reaction of one user is `too_large`, bad emoji are `invalid`, non-members
/// are refused, every member reads the same bytes, reacting leaves unread counts alone, and
/// the list pages through every reaction.
pub async fn assert_reactions_end_to_end(server: &TestServer) {
    let alice = server.client("alice");
    let users: Vec<String> = (0..50).map(|i| format!("u{i:02}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let id = id_of(&alice.create("group", &names).await);
    let message = alice.send(&id, "react to me").await;
    let message_id = id_of(&message);
    let path = |emoji: &str| format!("/api/messages/{message_id}/reactions/{emoji}");
    let unread_before = conversation(&server.client("u01"), &id).await["unread_count"].clone();

    let reacting = users.iter().map(|user| {
        let client = server.client(user);
        let path = path("👍");
        async move { client.put(&path, json!({})).await.expect(204) }
    });
    futures_util::future::join_all(reacting).await;
    let seen = message_as_seen_by(&alice, &id, &message_id).await;
    assert_eq!(seen["reaction_counts"], json!({ "👍": 50 }), "{seen}");
    assert_eq!(seen["latest_reactions"].as_array().map(Vec::len), Some(10));
    assert_eq!(message_as_seen_by(&server.client("u07"), &id, &message_id).await, seen, "same bytes for all");
    assert_eq!(conversation(&server.client("u01"), &id).await["unread_count"], unread_before);

    let u00 = server.client("u00");
    u00.put(&path("👍"), json!({})).await.expect(204);
    u00.delete(&path("👍")).await.expect(204);
    u00.delete(&path("👍")).await.expect(204);
    let seen = message_as_seen_by(&alice, &id, &message_id).await;
    assert_eq!(seen["reaction_counts"], json!({ "👍": 49 }));

    // Emoji with modifiers and sequences are one reaction each; shortcodes too.
    for emoji in ["👍🏽", "🇰🇷", "👨‍👩‍👧", ":party_parrot:", "1️⃣"] {
        u00.put(&path(emoji), json!({})).await.expect(204);
    }
    for bad in ["ab", "a", "👍👍", ":Bad Code:", "%20"] {
        u00.put(&path(bad), json!({})).await.assert_error(400, "invalid");
    }
    for i in 0..15 {
        u00.put(&path(&format!(":r{i}:")), json!({})).await.expect(204);
    }
    u00.put(&path(":one_too_many:"), json!({})).await.assert_error(413, "too_large");
    server.client("eve").put(&path("👍"), json!({})).await.assert_error(403, "not_a_member");

    let mut listed = Vec::new();
    let mut next = format!("/api/messages/{message_id}/reactions?limit=30");
    loop {
        let page = alice.get(&next).await.expect(200);
        listed.extend(page["reactions"].as_array().expect("reactions").clone());
        match page["next_cursor"].as_str() {
            Some(cursor) => next = format!("/api/messages/{message_id}/reactions?limit=30&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(listed.len(), 49 + 20, "every reaction once");
    let seen = message_as_seen_by(&alice, &id, &message_id).await;
    assert_eq!(
        seen["reaction_counts"]
            .as_object()
            .map(|counts| counts.values().filter_map(Value::as_i64).sum::<i64>()),
        Some(69)
    );

    // Deleting the message takes its reactions with it.
    alice.delete(&format!("/api/messages/{message_id}")).await.expect(200);
    let seen = message_as_seen_by(&alice, &id, &message_id).await;
    assert_eq!(seen["reaction_counts"], json!({}));
    u00.put(&path("👍"), json!({})).await.assert_error(409, "conflict");
}

/// Threads: replies take the conversation's next seq and carry `thread_id`; the root's summary
/// counts them and names the participants; thread-only replies are not unread, replies also
/// in the conversation are; a reply to a reply is `invalid`; the thread pages its replies.
pub async fn assert_threads_end_to_end(server: &TestServer) {
    let (alice, bob, carol) = (server.client("alice"), server.client("bob"), server.client("carol"));
    let id = id_of(&alice.create("group", &["bob", "carol"]).await);
    let root = alice.send(&id, "which day suits you?").await;
    let root_id = id_of(&root);
    assert_eq!(root["thread"], Value::Null);
    assert_eq!(root["thread_id"], Value::Null);

    let reply = send_json(&bob, &id, json!({ "content": "tuesday", "thread_id": root_id })).await;
    assert_eq!(reply["thread_id"], root_id.as_str());
    assert_eq!(reply["seq"].as_i64(), root["seq"].as_i64().map(|s| s + 1));
    assert_eq!(reply["also_in_conversation"], false);
    let also = send_json(
        &bob,
        &id,
        json!({ "content": "or wednesday", "thread_id": root_id, "also_in_conversation": true }),
    )
    .await;
    assert_eq!(also["also_in_conversation"], true);
    // Only the root and the reply also in the conversation are unread for carol.
    assert_eq!(conversation(&carol, &id).await["unread_count"], 2);

    bob.post(
        &format!("/api/conversations/{id}/messages"),
        json!({ "content": "x", "thread_id": id_of(&reply) }),
    )
    .await
    .assert_error(400, "invalid");
    bob.post(&format!("/api/conversations/{id}/messages"), json!({ "content": "x", "thread_id": "nope" }))
        .await
        .assert_error(400, "invalid");

    let root_now = message_as_seen_by(&carol, &id, &root_id).await;
    assert_eq!(root_now["thread"]["reply_count"], 2, "{root_now}");
    assert_eq!(root_now["thread"]["participants"], json!(["alice", "bob"]));
    assert_eq!(root_now["thread"]["last_reply_at"], also["created_at"]);
    assert!(root_now["version"].as_i64() > root["version"].as_i64());

    let page = carol.get(&format!("/api/messages/{root_id}/thread?limit=1")).await.expect(200);
    assert_eq!(page["root"]["id"], root_id.as_str());
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["has_more"], true);
    let last_seq = page["messages"][0]["seq"].as_i64().expect("seq");
    let rest = carol.get(&format!("/api/messages/{root_id}/thread?after_seq={last_seq}")).await.expect(200);
    assert_eq!(rest["messages"][0]["id"], also["id"]);
    assert_eq!(rest["has_more"], false);
    carol.get(&format!("/api/messages/{}/thread", id_of(&reply))).await.assert_error(400, "invalid");

    // The history stays gap-free, replies included.
    let seqs: Vec<i64> = carol.all_messages(&id).await.iter().filter_map(|m| m["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());

    // A deleted reply leaves the count.
    bob.delete(&format!("/api/messages/{}", id_of(&reply))).await.expect(200);
    assert_eq!(message_as_seen_by(&carol, &id, &root_id).await["thread"]["reply_count"], 1);
    // A deleted root takes no more replies.
    alice.delete(&format!("/api/messages/{root_id}")).await.expect(200);
    bob.post(
        &format!("/api/conversations/{id}/messages"),
        json!({ "content": "late", "thread_id": root_id }),
    )
    .await
    .assert_error(400, "invalid");
}

/// Pins: group members may not, owners may; pinning twice changes nothing; the list shows
/// the pins; the 51st is `too_large`; deleting unpins; either member of a direct chat may pin.
pub async fn assert_pins_end_to_end(server: &TestServer) {
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = id_of(&alice.create("group", &["bob"]).await);
    let mut ids = Vec::new();
    for i in 0..51 {
        ids.push(id_of(&alice.send(&id, &format!("notice {i}")).await));
    }
    bob.post(&format!("/api/messages/{}/pin", ids[0]), json!({})).await.assert_error(403, "forbidden");
    let pinned = alice.post(&format!("/api/messages/{}/pin", ids[0]), json!({})).await.expect(200);
    assert_eq!(pinned["pinned_by"], "alice");
    assert!(pinned["pinned_at"].is_string());
    let again = alice.post(&format!("/api/messages/{}/pin", ids[0]), json!({})).await.expect(200);
    assert_eq!(again["version"], pinned["version"], "pinning a pinned message changes nothing");
    for message_id in &ids[1..50] {
        alice.post(&format!("/api/messages/{message_id}/pin"), json!({})).await.expect(200);
    }
    alice.post(&format!("/api/messages/{}/pin", ids[50]), json!({})).await.assert_error(413, "too_large");
    let pins = bob.get(&format!("/api/conversations/{id}/pins")).await.expect(200);
    assert_eq!(pins["messages"].as_array().map(Vec::len), Some(50));
    alice.delete(&format!("/api/messages/{}", ids[0])).await.expect(200);
    let pins = bob.get(&format!("/api/conversations/{id}/pins")).await.expect(200);
    assert_eq!(pins["messages"].as_array().map(Vec::len), Some(49), "a deleted message is unpinned");
    alice.post(&format!("/api/messages/{}/pin", ids[0]), json!({})).await.assert_error(409, "conflict");
    let unpinned = alice.delete(&format!("/api/messages/{}/pin", ids[1])).await.expect(200);
    assert_eq!(unpinned["pinned_at"], Value::Null);
    server
        .client("eve")
        .get(&format!("/api/conversations/{id}/pins"))
        .await
        .assert_error(403, "not_a_member");

    let direct = id_of(&alice.create("direct", &["bob"]).await);
    let message_id = id_of(&alice.send(&direct, "meet at 5").await);
    bob.post(&format!("/api/messages/{message_id}/pin"), json!({})).await.expect(200);
}

/// Mentions: only members other than the sender are kept; the mentioned member's
/// `unread_mentions` and `/api/unread` count them until read; `mentions_all` is for owners
/// and admins; the earlier `metadata.mentions` still mentions.
pub async fn assert_mentions_end_to_end(server: &TestServer) {
    let (alice, bob, carol) = (server.client("alice"), server.client("bob"), server.client("carol"));
    let id = id_of(&alice.create("group", &["bob", "carol"]).await);
    let sent =
        send_json(&alice, &id, json!({ "content": "@bob look", "mentions": ["bob", "eve", "alice", "bob"] }))
            .await;
    assert_eq!(sent["mentions"], json!(["bob"]), "non-members and the sender are dropped");
    assert_eq!(conversation(&bob, &id).await["unread_mentions"], 1);
    assert_eq!(conversation(&carol, &id).await["unread_mentions"], 0);
    let unread = bob.get("/api/unread").await.expect(200);
    assert_eq!(unread["mentions"], json!({ &id: 1 }));

    let legacy =
        send_json(&alice, &id, json!({ "content": "@carol", "metadata": { "mentions": ["carol"] } })).await;
    assert_eq!(legacy["mentions"], json!(["carol"]));
    bob.post(
        &format!("/api/conversations/{id}/messages"),
        json!({ "content": "@all", "mentions_all": true }),
    )
    .await
    .assert_error(403, "forbidden");
    let everyone = send_json(&alice, &id, json!({ "content": "@all meeting", "mentions_all": true })).await;
    assert_eq!(everyone["mentions_all"], true);
    assert_eq!(conversation(&bob, &id).await["unread_mentions"], 2);
    assert_eq!(conversation(&carol, &id).await["unread_mentions"], 2);
    assert_eq!(conversation(&alice, &id).await["unread_mentions"], 0);

    let seq = everyone["seq"].as_i64().expect("seq");
    bob.post(&format!("/api/conversations/{id}/read"), json!({ "seq": seq })).await.expect(200);
    assert_eq!(conversation(&bob, &id).await["unread_mentions"], 0);
    assert_eq!(bob.get("/api/unread").await.expect(200)["mentions"], json!({}));
    // A deleted message no longer counts as a mention.
    alice.delete(&format!("/api/messages/{}", id_of(&legacy))).await.expect(200);
    assert_eq!(conversation(&carol, &id).await["unread_mentions"], 1);
}

/// Changes: every change after send (reaction, edit, pin, delete) moves the conversation's
/// revision; `GET …/changes?after_revision=` answers the changed messages as they stand, in
/// revision order, limited to the seqs the client holds.
pub async fn assert_changes_end_to_end(server: &TestServer) {
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = id_of(&alice.create("group", &["bob"]).await);
    let first = id_of(&alice.send(&id, "one").await);
    let second = id_of(&alice.send(&id, "two").await);
    let base = format!("/api/conversations/{id}/changes");
    assert_eq!(bob.get(&format!("{base}?after_revision=0")).await.expect(200)["messages"], json!([]));
    bob.put(&format!("/api/messages/{first}/reactions/👍"), json!({})).await.expect(204);
    alice.patch(&format!("/api/messages/{second}"), json!({ "content": "two!" })).await.expect(200);
    alice.post(&format!("/api/messages/{first}/pin"), json!({})).await.expect(200);
    let changed = bob.get(&format!("{base}?after_revision=0")).await.expect(200);
    let list = changed["messages"].as_array().expect("messages");
    // first changed twice (revisions 1 and 3): it is listed once, at its latest revision.
    let order: Vec<(&str, i64)> =
        list.iter().map(|m| (m["id"].as_str().unwrap_or(""), m["revision"].as_i64().unwrap_or(0))).collect();
    assert_eq!(order, vec![(second.as_str(), 2), (first.as_str(), 3)]);
    assert_eq!(list[1]["reaction_counts"], json!({ "👍": 1 }));
    assert_eq!(list[1]["pinned_by"], "alice");
    let after = bob.get(&format!("{base}?after_revision=2")).await.expect(200);
    assert_eq!(after["messages"].as_array().map(Vec::len), Some(1));
    let held = bob.get(&format!("{base}?after_revision=0&up_to_seq=1")).await.expect(200);
    assert_eq!(held["messages"].as_array().map(Vec::len), Some(1), "only messages the client holds");
    assert_eq!(conversation(&bob, &id).await["last_seq"], 2);
    server.client("eve").get(&format!("{base}?after_revision=0")).await.assert_error(403, "not_a_member");
}
