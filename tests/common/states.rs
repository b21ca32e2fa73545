//! Conversation states end to end over REST, shared by the admin suite (SQLite) and the
//! PostgreSQL server tests: per-member archive (back on a new message unless muted), timed
//! mutes, and a conversation's status (archived by its owner, blocked by the platform with a
//! reason), which makes it read-only. The server must have the admin API on (`admin`).

use serde_json::{Value, json};

use super::{Client, TestServer};

fn listed(page: &Value) -> Vec<String> {
    page["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect()
}

async fn send(client: &Client, id: &str, content: &str) -> super::Reply {
    client.post(&format!("/api/conversations/{id}/messages"), json!({ "content": content })).await
}

/// The whole scenario, on any backend; `admin` holds the admin key.
pub async fn assert_conversation_states(server: &TestServer, admin: &Client) {
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = alice.create("group", &["bob", "carol"]).await["id"].as_str().expect("id").to_owned();
    let first = send(&alice, &id, "hello").await.expect(201);

    // Archive: out of the default list, in the archived one, back on a new message.
    bob.put(&format!("/api/conversations/{id}/archive"), json!({})).await.expect(204);
    assert!(!listed(&bob.get("/api/conversations").await.expect(200)).contains(&id));
    let archived = bob.get("/api/conversations?archived=true").await.expect(200);
    assert_eq!(listed(&archived), vec![id.clone()]);
    assert_eq!(archived["conversations"][0]["archived"], true);
    send(&alice, &id, "are you there?").await.expect(201);
    assert!(
        listed(&bob.get("/api/conversations").await.expect(200)).contains(&id),
        "a new message brings it back"
    );
    // Muted and archived: it stays archived.
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    bob.put(&format!("/api/conversations/{id}/notifications"), json!({ "enabled": false, "until": until }))
        .await
        .expect(204);
    let seen = bob.get(&format!("/api/conversations/{id}")).await.expect(200);
    assert!(seen["muted_until"].is_string(), "{seen}");
    assert_eq!(alice.get(&format!("/api/conversations/{id}")).await.expect(200)["muted_until"], Value::Null);
    bob.put(&format!("/api/conversations/{id}/archive"), json!({})).await.expect(204);
    send(&alice, &id, "still there?").await.expect(201);
    assert!(!listed(&bob.get("/api/conversations").await.expect(200)).contains(&id), "muted: stays archived");
    bob.delete(&format!("/api/conversations/{id}/archive")).await.expect(204);
    assert!(listed(&bob.get("/api/conversations").await.expect(200)).contains(&id));
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    bob.put(&format!("/api/conversations/{id}/notifications"), json!({ "enabled": false, "until": past }))
        .await
        .assert_error(400, "invalid");
    bob.put(&format!("/api/conversations/{id}/notifications"), json!({ "enabled": true, "until": until }))
        .await
        .assert_error(400, "invalid");
    server
        .client("eve")
        .put(&format!("/api/conversations/{id}/archive"), json!({}))
        .await
        .assert_error(403, "not_a_member");

    // Status: the owner archives it (read-only for everyone), then reopens it.
    bob.patch(&format!("/api/conversations/{id}"), json!({ "status": "archived" }))
        .await
        .assert_error(403, "forbidden");
    let closed =
        alice.patch(&format!("/api/conversations/{id}"), json!({ "status": "archived" })).await.expect(200);
    assert_eq!((closed["status"].as_str(), closed["status_reason"].clone()), (Some("archived"), Value::Null));
    send(&bob, &id, "let me in").await.assert_error(403, "forbidden");
    send(&alice, &id, "me too?").await.assert_error(403, "forbidden");
    let first_id = first["id"].as_str().expect("id");
    alice
        .patch(&format!("/api/messages/{first_id}"), json!({ "content": "edited" }))
        .await
        .assert_error(403, "forbidden");
    bob.put(&format!("/api/messages/{first_id}/reactions/👍"), json!({}))
        .await
        .assert_error(403, "forbidden");
    alice
        .patch(&format!("/api/conversations/{id}"), json!({ "status": "blocked" }))
        .await
        .assert_error(403, "forbidden");
    alice.patch(&format!("/api/conversations/{id}"), json!({ "status": "active" })).await.expect(200);
    send(&bob, &id, "open again").await.expect(201);

    // The platform blocks it with a reason; only the platform reopens it.
    let blocked = admin
        .patch(
            &format!("/api/admin/conversations/{id}"),
            json!({ "status": "blocked", "status_reason": "fraudulent listing" }),
        )
        .await
        .expect(200);
    assert_eq!(
        (blocked["status"].as_str(), blocked["status_reason"].as_str()),
        (Some("blocked"), Some("fraudulent listing"))
    );
    let refused = send(&bob, &id, "hello?").await;
    refused.assert_error(403, "forbidden");
    assert!(
        refused.body["error"]["message"].as_str().unwrap_or("").contains("fraudulent listing"),
        "{:?}",
        refused.body
    );
    assert_eq!(
        bob.get(&format!("/api/conversations/{id}")).await.expect(200)["status_reason"],
        "fraudulent listing"
    );
    alice
        .patch(&format!("/api/conversations/{id}"), json!({ "status": "active" }))
        .await
        .assert_error(403, "forbidden");
    // System messages still go in (the operator explains).
    admin
        .post(
            &format!("/api/admin/conversations/{id}/messages"),
            json!({ "content": "closed by the platform" }),
        )
        .await
        .expect(201);
    admin.patch(&format!("/api/admin/conversations/{id}"), json!({ "status": "active" })).await.expect(200);
    send(&bob, &id, "thanks").await.expect(201);
    admin
        .patch("/api/admin/conversations/nope", json!({ "status": "blocked" }))
        .await
        .assert_error(404, "not_found");
}
