//! Blocking between users (`/api/blocks`), through a real server: direct messages and edits
//! between a blocked pair are refused with `forbidden` both ways on REST and WebSocket, no
//! new direct conversation between them, presence hidden from each other; a blocked user
//! cannot put the blocker into a group, and in a group both share the blocker sees the
//! blocked user's messages without notifications or pushes; unblocking restores everything.

mod common;

use std::time::Duration;

use chatd::config::Config;
use common::TestServer;
use common::webhook::Receiver;
use common::ws::Ws;
use serde_json::{Value, json};

async fn server() -> TestServer {
    TestServer::start().await
}

/// A direct conversation between `a` and `b` (created by `a`); returns its id.
async fn direct(server: &TestServer, a: &str, b: &str) -> String {
    let conversation = server.client(a).create("direct", &[b]).await;
    conversation["id"].as_str().expect("id").to_owned()
}

/// Asserts `client` receives no `event` about `user_id` within a short while.
async fn no_presence_of(client: &mut Ws, event: &str, user_id: &str) {
    client.gather(Duration::from_millis(300)).await;
    let about = |p: &&Value| p["event"] == event && p["data"]["user_id"] == user_id;
    assert!(client.pushes.iter().find(about).is_none(), "{event} of {user_id}: {:?}", client.pushes);
}

fn messages_path(id: &str) -> String {
    format!("/api/conversations/{id}/messages")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_is_idempotent_listed_per_user_and_undone() {
    let server = server().await;
    let alice = server.client("alice");
    let first = alice.post("/api/blocks", json!({ "user_id": "bob" })).await.expect(201);
    assert_eq!(first["user_id"], "bob");
    assert!(first["created_at"].is_string());
    let again = alice.post("/api/blocks", json!({ "user_id": "bob" })).await.expect(200);
    assert_eq!(again, first, "blocking again answers with the existing block");
    alice.post("/api/blocks", json!({ "user_id": "carol" })).await.expect(201);

    let listed = alice.get("/api/blocks").await.expect(200);
    let ids: Vec<&Value> =
        listed["blocks"].as_array().expect("blocks").iter().map(|b| &b["user_id"]).collect();
    assert_eq!(ids, [&json!("bob"), &json!("carol")]);
    assert_eq!(server.client("bob").get("/api/blocks").await.expect(200), json!({ "blocks": [] }));

    alice.delete("/api/blocks/bob").await.expect(204);
    alice.delete("/api/blocks/bob").await.assert_error(404, "not_found");
    assert_eq!(alice.get("/api/blocks").await.expect(200)["blocks"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_block_requests_are_refused() {
    let server = server().await;
    let alice = server.client("alice");
    alice.post("/api/blocks", json!({ "user_id": "alice" })).await.assert_error(400, "invalid");
    alice.post("/api/blocks", json!({ "user_id": "" })).await.assert_error(400, "invalid");
    alice.post("/api/blocks", json!({ "user_id": "bob", "extra": 1 })).await.assert_error(400, "invalid");
    server
        .anonymous()
        .post("/api/blocks", json!({ "user_id": "bob" }))
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_between_a_blocked_pair_are_refused_both_ways_until_unblocked() {
    let server = server().await;
    let id = direct(&server, "alice", "bob").await;
    server.client("alice").send(&id, "before").await;
    let mut bob_ws = Ws::connect(&server, "bob").await;
    let mut alice_ws = Ws::connect(&server, "alice").await;

    server.client("bob").post("/api/blocks", json!({ "user_id": "alice" })).await.expect(201);
    for user in ["alice", "bob"] {
        let reply = server.client(user).post(&messages_path(&id), json!({ "content": "hi" })).await;
        reply.assert_error(403, "forbidden");
    }
    let ack = alice_ws.call("message:send", json!({ "conversation_id": id, "content": "hi" })).await;
    assert_eq!((ack["ok"].clone(), ack["error"]["code"].clone()), (json!(false), json!("forbidden")));
    let ack = bob_ws.call("message:send", json!({ "conversation_id": id, "content": "hi" })).await;
    assert_eq!(ack["error"]["code"], "forbidden");
    bob_ws.none("message:new", Duration::from_millis(200)).await;
    let history = server.client("alice").get(&messages_path(&id)).await.expect(200);
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(1), "nothing was written");

    server.client("bob").delete("/api/blocks/alice").await.expect(204);
    let sent = alice_ws.ok("message:send", json!({ "conversation_id": id, "content": "after" })).await;
    assert_eq!(sent["message"]["seq"], 2);
    assert_eq!(bob_ws.next("message:new").await["content"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_direct_conversation_between_a_blocked_pair_is_refused() {
    let server = server().await;
    server.client("alice").post("/api/blocks", json!({ "user_id": "bob" })).await.expect(201);
    for (from, to) in [("alice", "bob"), ("bob", "alice")] {
        let body = json!({ "type": "direct", "members": [to], "context": "product:1" });
        server.client(from).post("/api/conversations", body).await.assert_error(403, "forbidden");
    }
    server.client("alice").delete("/api/blocks/bob").await.expect(204);
    direct(&server, "bob", "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_hidden_between_a_blocked_pair_and_shown_again_after_unblocking() {
    let server = server().await;
    direct(&server, "alice", "bob").await;
    let conversation = server.client("alice").create("group", &["bob", "carol"]).await;
    assert!(conversation["id"].is_string());
    server.client("alice").post("/api/blocks", json!({ "user_id": "bob" })).await.expect(201);

    let mut alice = Ws::connect(&server, "alice").await;
    let mut carol = Ws::connect(&server, "carol").await;
    let mut bob = Ws::connect(&server, "bob").await;
    assert_eq!(carol.next("user:online").await["user_id"], "bob", "others still see bob");
    no_presence_of(&mut alice, "user:online", "bob").await;

    let query = json!({ "user_ids": ["alice", "carol"] });
    let presence = bob.ok("presence:query", query).await["presence"].clone();
    assert_eq!(presence["alice"], json!({ "online": false, "last_seen_at": null }), "hidden from bob");
    assert_eq!(presence["carol"]["online"], true);
    let presence = alice.ok("presence:query", json!({ "user_ids": ["bob"] })).await["presence"].clone();
    assert_eq!(presence["bob"], json!({ "online": false, "last_seen_at": null }), "hidden both ways");

    drop(bob);
    assert_eq!(carol.next("user:offline").await["user_id"], "bob");
    no_presence_of(&mut alice, "user:offline", "bob").await;

    server.client("alice").delete("/api/blocks/bob").await.expect(204);
    let _bob = Ws::connect(&server, "bob").await;
    while alice.next("user:online").await["user_id"] != "bob" {}
    let presence = alice.ok("presence:query", json!({ "user_ids": ["bob"] })).await["presence"].clone();
    assert_eq!(presence["bob"]["online"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_conversations_are_unaffected_by_blocks() {
    let server = server().await;
    let group = server.client("alice").create("group", &["bob"]).await;
    let id = group["id"].as_str().expect("id");
    server.client("alice").post("/api/blocks", json!({ "user_id": "bob" })).await.expect(201);
    let mut alice = Ws::connect(&server, "alice").await;
    server.client("bob").send(id, "still here").await;
    assert_eq!(alice.next("message:new").await["content"], "still here");
    server.client("alice").send(id, "me too").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_cannot_create_a_group_with_or_add_the_user_who_blocks_them() {
    let server = server().await;
    server.client("alice").post("/api/blocks", json!({ "user_id": "mallory" })).await.expect(201);
    let mallory = server.client("mallory");
    let body = json!({ "type": "group", "members": ["carol", "alice"] });
    mallory.post("/api/conversations", body).await.assert_error(403, "forbidden");

    let group = mallory.create("group", &["carol"]).await;
    let members_path = format!("/api/conversations/{}/members", group["id"].as_str().expect("id"));
    mallory.post(&members_path, json!({ "user_ids": ["alice"] })).await.assert_error(403, "forbidden");
    mallory
        .post(&members_path, json!({ "user_ids": ["dave", "alice"] }))
        .await
        .assert_error(403, "forbidden");
    let conversation = server.client("mallory").get(&members_path.replace("/members", "")).await.expect(200);
    assert_eq!(conversation["members"].as_array().map(Vec::len), Some(2), "nobody was added");
    mallory.post(&members_path, json!({ "user_ids": ["dave"] })).await.expect(200);

    // One way: the blocker may still put the blocked user into a group.
    server.client("alice").create("group", &["mallory"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_shared_group_the_blocker_gets_the_blocked_users_messages_but_no_notification() {
    let server = server().await;
    let group = server.client("carol").create("group", &["alice", "mallory"]).await;
    let id = group["id"].as_str().expect("id");
    server.client("alice").post("/api/blocks", json!({ "user_id": "mallory" })).await.expect(201);
    let mut alice = Ws::connect(&server, "alice").await;

    let muted = server.client("mallory").send(id, "from mallory").await;
    let heard = server.client("carol").send(id, "from carol").await;
    assert_eq!(alice.next("message:new").await["id"], muted["id"], "the message itself still arrives");
    assert_eq!(alice.next("message:new").await["id"], heard["id"]);
    // Notifications leave in commit order: mallory's would come first.
    assert_eq!(alice.next("notification").await["message_id"], heard["id"]);
    let history = server.client("alice").get(&messages_path(id)).await.expect(200);
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_shared_group_the_blocker_gets_no_push_for_the_blocked_users_messages() {
    let receiver = Receiver::bind(&[]).await;
    let server = TestServer::start_with(|config: &mut Config| {
        config.push.webhook_secret = Some("test-webhook-secret-0123456789".into());
        config.push.worker.poll_interval = Duration::from_millis(50);
    })
    .await;
    let alice = server.client("alice");
    let device = json!({ "platform": "webhook", "token": "alice-phone", "endpoint": receiver.url("/hook") });
    alice.post("/api/devices", device).await.expect(201);
    let group = server.client("carol").create("group", &["alice", "mallory"]).await;
    let id = group["id"].as_str().expect("id");
    alice.post("/api/blocks", json!({ "user_id": "mallory" })).await.expect(201);

    server.client("mallory").send(id, "from mallory").await;
    let heard = server.client("carol").send(id, "from carol").await;
    // Jobs are sent oldest first: a push for mallory's message would come first.
    let requests = receiver.wait_for(1).await;
    assert_eq!(requests[0].json()["message_id"], heard["id"]);
    receiver.assert_no_more_than(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_of_a_blocked_pairs_direct_conversation_cannot_be_edited_reacted_to_or_pinned() {
    let server = server().await;
    let id = direct(&server, "alice", "mallory").await;
    let old = server.client("mallory").send(&id, "before").await;
    let mine = server.client("alice").send(&id, "mine").await;
    server.client("alice").post("/api/blocks", json!({ "user_id": "mallory" })).await.expect(201);

    let edit = |message: &Value| format!("/api/messages/{}", message["id"].as_str().expect("id"));
    let body = json!({ "content": "edited" });
    server.client("mallory").patch(&edit(&old), body.clone()).await.assert_error(403, "forbidden");
    server.client("alice").patch(&edit(&mine), body.clone()).await.assert_error(403, "forbidden");
    let mut mallory = Ws::connect(&server, "mallory").await;
    let ack = mallory.call("message:edit", json!({ "message_id": old["id"], "content": "edited" })).await;
    assert_eq!(ack["error"]["code"], "forbidden");
    let history = server.client("alice").get(&messages_path(&id)).await.expect(200);
    assert_eq!(history["messages"][0]["content"], "before", "nothing was edited");

    // Nor reacted to, unreacted or pinned, either way.
    let reaction = |message: &Value| format!("{}/reactions/👍", edit(message));
    let pin = |message: &Value| format!("{}/pin", edit(message));
    server.client("mallory").put(&reaction(&mine), json!({})).await.assert_error(403, "forbidden");
    server.client("alice").delete(&reaction(&old)).await.assert_error(403, "forbidden");
    server.client("mallory").post(&pin(&mine), json!({})).await.assert_error(403, "forbidden");
    server.client("alice").delete(&pin(&old)).await.assert_error(403, "forbidden");

    server.client("alice").delete("/api/blocks/mallory").await.expect(204);
    server.client("mallory").patch(&edit(&old), body).await.expect(200);
    server.client("mallory").post(&pin(&mine), json!({})).await.expect(200);
}
