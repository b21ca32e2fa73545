//! `POST /api/conversations/{id}/members` and `DELETE /api/conversations/{id}/members/{user_id}`:
//! roles, ownership hand-over, and leaving.

use super::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_and_members_leaving_at_the_same_moment_never_leave_the_group_without_an_owner() {
    let server = TestServer::start().await;
    common::assert_concurrent_leaves_keep_an_owner(&server).await;
}
