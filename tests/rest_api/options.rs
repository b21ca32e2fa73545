//! Server options seen through the API: the message rate limit, PII masking, dev mode's
//! token endpoint.

use super::*;

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
