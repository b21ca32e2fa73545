//! `POST`, `GET` and `PATCH` of `/api/conversations` and `/api/conversations/{id}`.

use super::*;

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

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_invalid_even_if_its_values_fit_by_position() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    for body in [json!(["group", ["bob"]]), json!("group"), json!(7), json!(null)] {
        alice.post("/api/conversations", body).await.assert_error(400, "invalid");
    }
    alice.post("/api/conversations", json!({"type": "group", "members": ["bob"]})).await.expect(201);
}
