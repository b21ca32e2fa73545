//! `POST /api/conversations/{id}/read` and `GET /api/unread`: read markers and unread counts.

use super::*;

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
        json!({ "total": 7, "conversations": { &busy: 5, &other: 2 }, "mentions": {} })
    );

    mark_read(&bob, &busy, 3).await;
    assert_eq!(unread_count(&bob, &busy).await, 2);
    assert_eq!(
        bob.get("/api/unread").await.expect(200),
        json!({ "total": 4, "conversations": { &busy: 2, &other: 2 }, "mentions": {} })
    );

    mark_read(&bob, &busy, 5).await;
    assert_eq!(unread_count(&bob, &busy).await, 0);
    assert_eq!(
        bob.get("/api/unread").await.expect(200),
        json!({ "total": 2, "conversations": { &other: 2 }, "mentions": {} })
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
        json!({ "total": 1, "conversations": { &id: 1 }, "mentions": {} })
    );
    assert_eq!(
        server.client("carol").get("/api/unread").await.expect(200),
        json!({ "total": 0, "conversations": {}, "mentions": {} })
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
    assert_eq!(
        bob.get("/api/unread").await.expect(200),
        json!({ "total": 2, "conversations": { &id: 2 }, "mentions": {} })
    );
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
    assert_eq!(
        bob.get("/api/unread").await.expect(200),
        json!({ "total": 0, "conversations": {}, "mentions": {} })
    );
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
