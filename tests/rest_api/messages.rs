//! `POST`/`GET /api/conversations/{id}/messages` and `PATCH`/`DELETE /api/messages/{id}`:
//! sending, the content rules, history pages, edits and deletes.

use super::*;

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
async fn location_and_product_messages_need_their_metadata() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let send = |body: Value| {
        let (alice, path) = (alice.clone(), messages_path(&id));
        async move { alice.post(&path, body).await }
    };
    let here = json!({"type": "location", "metadata": {"latitude": 37.5665, "longitude": 126.978}});
    assert_eq!(send(here).await.expect(201)["metadata"]["latitude"], 37.5665);
    for metadata in [
        json!({}),
        json!({"latitude": 91, "longitude": 0}),
        json!({"latitude": 0, "longitude": -180.5}),
        json!({"latitude": "37.5", "longitude": 127}),
    ] {
        send(json!({"type": "location", "metadata": metadata})).await.assert_error(400, "invalid");
    }
    for product_id in [json!("981"), json!(981)] {
        send(json!({"type": "product", "metadata": {"product_id": product_id}})).await.expect(201);
    }
    for metadata in
        [json!({}), json!({"product_id": ""}), json!({"product_id": -1}), json!({"product_id": [1]})]
    {
        send(json!({"type": "product", "metadata": metadata})).await.assert_error(400, "invalid");
    }
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
