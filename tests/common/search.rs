//! `GET /api/search` end to end, shared by the REST suite (SQLite) and the PostgreSQL
//! server tests: Korean stems, short words, English prefixes, highlights, membership,
//! deleted and edited messages.

use serde_json::{Value, json};

use super::{Client, TestServer};

/// `/api/search?` with `pairs` form-encoded (Korean, spaces and `+` survive).
pub fn search_path(pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        query.append_pair(key, value);
    }
    format!("/api/search?{}", query.finish())
}

/// The caller's results for `q` (status 200 asserted).
pub async fn search(client: &Client, q: &str) -> Value {
    client.get(&search_path(&[("q", q)])).await.expect(200)
}

/// The contents of the results for `q`, in the order returned.
pub async fn found(client: &Client, q: &str) -> Vec<String> {
    let page = search(client, q).await;
    page["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {page}"))
        .iter()
        .map(|hit| hit["message"]["content"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Sends `content` once the clock has moved past the previous message, so creation times
/// strictly increase.
async fn send_after(
    client: &Client,
    conversation_id: &str,
    content: &str,
    previous: Option<&Value>,
) -> Value {
    if let Some(previous) = previous {
        let at = chrono::DateTime::parse_from_rfc3339(previous["created_at"].as_str().expect("created_at"))
            .expect("RFC 3339")
            .timestamp_millis();
        while chrono::Utc::now().timestamp_millis() <= at {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    client.send(conversation_id, content).await
}

/// The whole scenario the issue asks for, on any backend.
pub async fn assert_search_end_to_end(server: &TestServer) {
    let (alice, bob, eve) = (server.client("alice"), server.client("bob"), server.client("eve"));
    let id = alice.create("group", &["bob"]).await["id"].as_str().expect("id").to_owned();
    let mut last = None;
    for content in ["검색을 해보세요", "반갑습니다", "오늘 Hello, hello!", "say help please"] {
        last = Some(send_after(&alice, &id, content, last.as_ref()).await);
    }

    // Korean stems with particles attached, one syllable, English words and prefixes.
    assert_eq!(found(&bob, "검색").await, vec!["검색을 해보세요"]);
    assert_eq!(found(&bob, "반갑").await, vec!["반갑습니다"]);
    assert_eq!(found(&bob, "검").await, vec!["검색을 해보세요"]);
    assert_eq!(found(&bob, "HELLO").await, vec!["오늘 Hello, hello!"]);
    assert_eq!(found(&bob, "hel").await, vec!["say help please", "오늘 Hello, hello!"]);
    assert_eq!(found(&bob, "  hel   please ").await, vec!["say help please"]);

    // Highlights: character offsets, Korean before the match, every occurrence.
    let page = search(&bob, "hello").await;
    assert_eq!(page["results"][0]["highlights"], json!([[3, 8], [10, 15]]));
    assert_eq!(page["next_cursor"], Value::Null);
    let page = search(&bob, "보세 검색을").await;
    assert_eq!(page["results"][0]["highlights"], json!([[0, 3], [5, 7]]));
    assert_eq!(page["results"][0]["message"]["conversation_id"], id);

    // A non-member searching for a phrase they know finds nothing.
    eve.create("group", &["carol"]).await;
    assert!(found(&eve, "반갑습니다").await.is_empty());
    assert!(found(&eve, "검").await.is_empty());
    let not_theirs = eve.get(&search_path(&[("q", "검색"), ("conversation_id", &id)])).await;
    not_theirs.assert_error(404, "not_found");

    // Deleted messages are skipped; edited ones are found by their new text only.
    let doomed = alice.send(&id, "지워질 메시지 ephemeral").await;
    assert_eq!(found(&bob, "ephemeral").await.len(), 1);
    let doomed_path = format!("/api/messages/{}", doomed["id"].as_str().expect("id"));
    alice.delete(&doomed_path).await.expect(200);
    assert!(found(&bob, "ephemeral").await.is_empty());
    assert!(found(&bob, "지워").await.is_empty());
    let edited = alice.send(&id, "첫 문장 original").await;
    let edited_path = format!("/api/messages/{}", edited["id"].as_str().expect("id"));
    alice.patch(&edited_path, json!({ "content": "고친 문장 revised" })).await.expect(200);
    assert!(found(&bob, "original").await.is_empty());
    assert!(found(&bob, "첫").await.is_empty());
    assert_eq!(found(&bob, "revised").await, vec!["고친 문장 revised"]);
    assert_eq!(found(&bob, "고친").await, vec!["고친 문장 revised"]);
}
