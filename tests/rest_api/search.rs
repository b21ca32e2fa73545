//! `GET /api/search`: message search over the caller's conversations.

use common::search::{assert_search_end_to_end, found, search_path};

use super::*;

#[tokio::test]
async fn search_finds_korean_stems_short_words_and_prefixes_in_the_callers_live_messages_only() {
    let server = TestServer::start().await;
    assert_search_end_to_end(&server).await;
}

#[tokio::test]
async fn searches_past_the_budget_are_rate_limited() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.limits.budgets.search = chatd::core::budget::Budget::new(1, 2);
    })
    .await;
    let alice = server.client("alice");
    for _ in 0..2 {
        alice.get(&search_path(&[("q", "hello")])).await.expect(200);
    }
    let refused = alice.get(&search_path(&[("q", "hello")])).await;
    refused.assert_error(429, "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_blank_or_overlong_query_is_invalid() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    alice.get("/api/search").await.assert_error(400, "invalid");
    alice.get(&search_path(&[("q", "   ")])).await.assert_error(400, "invalid");
    alice.get(&search_path(&[("q", &"가".repeat(201))])).await.assert_error(400, "invalid");
    alice.get(&search_path(&[("q", &"가".repeat(200))])).await.expect(200);
    alice.get(&search_path(&[("q", "x"), ("limit", "0")])).await.assert_error(400, "invalid");
    alice.get(&search_path(&[("q", "x"), ("before", "yesterday")])).await.assert_error(400, "invalid");
    alice.get(&search_path(&[("q", "x"), ("cursor", "bogus")])).await.assert_error(400, "invalid");
    alice.get(&search_path(&[("q", "x"), ("bogus", "1")])).await.assert_error(400, "invalid");
    server.anonymous().get(&search_path(&[("q", "x")])).await.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn a_conversation_the_caller_is_not_in_is_not_found_like_one_that_does_not_exist() {
    let server = TestServer::start().await;
    let (alice, eve) = (server.client("alice"), server.client("eve"));
    let id = group(&alice, &["bob"]).await;
    alice.send(&id, "private words").await;
    eve.get(&search_path(&[("q", "private"), ("conversation_id", &id)])).await.assert_error(404, "not_found");
    eve.get(&search_path(&[("q", "private"), ("conversation_id", "no-such")]))
        .await
        .assert_error(404, "not_found");
    let own = alice.get(&search_path(&[("q", "private"), ("conversation_id", &id)])).await.expect(200);
    assert_eq!(own["results"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn results_page_newest_first_with_the_cursor() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    let mut sent: Vec<Value> = Vec::new();
    for n in 0..7 {
        if let Some(previous) = sent.last() {
            clock_past(&previous["created_at"]).await;
        }
        sent.push(alice.send(&id, &format!("주간 보고 {n}")).await);
    }
    for q in ["보고", "주간 보고", "보"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut pairs = vec![("q", q), ("limit", "3")];
            if let Some(cursor) = &cursor {
                pairs.push(("cursor", cursor));
            }
            let page = bob.get(&search_path(&pairs)).await.expect(200);
            let results = page["results"].as_array().expect("results");
            assert!(results.len() <= 3);
            seen.extend(results.iter().map(|hit| id_of(&hit["message"])));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let newest_first: Vec<String> = sent.iter().rev().map(id_of).collect();
        assert_eq!(seen, newest_first, "pages of {q}");
    }
}

#[tokio::test]
async fn from_before_and_after_narrow_the_results() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let id = group(&alice, &["bob"]).await;
    let mut sent: Vec<Value> = Vec::new();
    for (n, client) in [&alice, &bob, &alice, &bob].into_iter().enumerate() {
        if let Some(previous) = sent.last() {
            clock_past(&previous["created_at"]).await;
        }
        sent.push(client.send(&id, &format!("meeting notes {n}")).await);
    }
    let contents = |page: Value| -> Vec<String> {
        page["results"].as_array().expect("results").iter().map(|hit| id_of(&hit["message"])).collect()
    };
    let from_bob = bob.get(&search_path(&[("q", "notes"), ("from", "bob")])).await.expect(200);
    assert_eq!(contents(from_bob), vec![id_of(&sent[3]), id_of(&sent[1])]);
    let (after, before) =
        (sent[0]["created_at"].as_str().expect("t"), sent[3]["created_at"].as_str().expect("t"));
    let window =
        bob.get(&search_path(&[("q", "meeting"), ("after", after), ("before", before)])).await.expect(200);
    assert_eq!(contents(window), vec![id_of(&sent[2]), id_of(&sent[1])]);
    assert_eq!(found(&bob, "notes 2").await, vec!["meeting notes 2"]);
}
