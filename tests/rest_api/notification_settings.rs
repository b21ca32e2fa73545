//! `PUT /api/conversations/{id}/notifications`: a member's own notification switch.

use super::*;

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
