//! Message search: Korean stems with particles attached, English words and prefixes,
//! one- and two-character queries, membership scoping, deleted and edited messages,
//! filters and cursor pages.

use chatd::core::ports::{SHORT_QUERY_SCAN, SearchCursor, SearchPage, SearchQuery};

use super::*;

store_tests!(
    search_finds_korean_stems_english_prefixes_and_short_words,
    search_sees_only_current_members_and_live_text,
    search_pages_newest_first_and_applies_its_filters,
    a_short_query_scans_a_bounded_number_of_messages_per_page,
);

fn query(user: &str, words: &[&str]) -> SearchQuery {
    SearchQuery {
        user_id: user.into(),
        words: words.iter().map(|w| w.to_string()).collect(),
        conversation_id: None,
        sender_id: None,
        after: None,
        before: None,
        cursor: None,
        limit: 20,
    }
}

async fn search(store: &Arc<dyn Store>, query: SearchQuery) -> SearchPage {
    store.search_messages(query).await.expect("search")
}

/// The contents found, in the order returned.
async fn found(store: &Arc<dyn Store>, user: &str, words: &[&str]) -> Vec<String> {
    let page = search(store, query(user, words)).await;
    page.messages.into_iter().map(|m| m.content.unwrap_or_default()).collect()
}

/// Sends with a pause first, so creation times strictly increase.
async fn send_later(store: &Arc<dyn Store>, conversation_id: &str, sender: &str, content: &str) -> Message {
    tokio::time::sleep(Duration::from_millis(3)).await;
    send(store, conversation_id, sender, content).await
}

async fn search_finds_korean_stems_english_prefixes_and_short_words(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    for content in ["검색을 해보세요", "반갑습니다", "Hello world", "nothing here", "50% off_sale"]
    {
        send_later(&store, &id, "alice", content).await;
    }
    assert_eq!(found(&store, "bob", &["검색"]).await, vec!["검색을 해보세요"]);
    assert_eq!(found(&store, "bob", &["검색을"]).await, vec!["검색을 해보세요"]);
    assert_eq!(found(&store, "bob", &["반갑"]).await, vec!["반갑습니다"]);
    assert_eq!(found(&store, "bob", &["검"]).await, vec!["검색을 해보세요"]);
    assert_eq!(found(&store, "bob", &["hel"]).await, vec!["Hello world"]);
    assert_eq!(found(&store, "bob", &["HELLO"]).await, vec!["Hello world"]);
    assert_eq!(found(&store, "bob", &["wOrLd", "hello"]).await, vec!["Hello world"]);
    assert_eq!(found(&store, "bob", &["hello", "검색"]).await, Vec::<String>::new());
    assert_eq!(found(&store, "bob", &["검색", "해보"]).await, vec!["검색을 해보세요"]);
    // Wildcards are plain text.
    assert_eq!(found(&store, "bob", &["%"]).await, vec!["50% off_sale"]);
    assert_eq!(found(&store, "bob", &["f_s"]).await, vec!["50% off_sale"]);
    assert_eq!(found(&store, "bob", &["o_"]).await, Vec::<String>::new());
    assert_eq!(found(&store, "bob", &["absent"]).await, Vec::<String>::new());
}

async fn search_sees_only_current_members_and_live_text(store: Arc<dyn Store>, _db: Db) {
    let ours = create(&store, group("alice", &["bob"])).await;
    let theirs = create(&store, group("carol", &["dave"])).await;
    send_later(&store, &ours, "alice", "the secret plan 비밀 계획").await;
    send_later(&store, &theirs, "carol", "the secret plan 비밀 계획 too").await;
    assert_eq!(found(&store, "bob", &["secret"]).await, vec!["the secret plan 비밀 계획"]);
    assert_eq!(found(&store, "bob", &["비밀"]).await, vec!["the secret plan 비밀 계획"]);
    assert_eq!(found(&store, "eve", &["secret"]).await, Vec::<String>::new());
    assert_eq!(found(&store, "eve", &["비"]).await, Vec::<String>::new());

    let doomed = send_later(&store, &ours, "alice", "delete me 지워").await;
    assert_eq!(found(&store, "bob", &["delete"]).await.len(), 1);
    store.delete_message(&doomed.id, Timestamp::now()).await.expect("delete").expect("found");
    assert_eq!(found(&store, "bob", &["delete"]).await, Vec::<String>::new());
    assert_eq!(found(&store, "bob", &["지워"]).await, Vec::<String>::new());

    let edited = send_later(&store, &ours, "alice", "old wording 옛말").await;
    store.edit_message(&edited.id, "new phrasing 새말".into(), Timestamp::now()).await.expect("edit");
    assert_eq!(found(&store, "bob", &["wording"]).await, Vec::<String>::new());
    assert_eq!(found(&store, "bob", &["옛말"]).await, Vec::<String>::new());
    assert_eq!(found(&store, "bob", &["phrasing"]).await, vec!["new phrasing 새말"]);
    assert_eq!(found(&store, "bob", &["새말"]).await, vec!["new phrasing 새말"]);

    // Membership counts as of now: a member who left finds nothing there any more.
    assert!(store.remove_member(&ours, "bob").await.expect("leave"));
    assert_eq!(found(&store, "bob", &["secret"]).await, Vec::<String>::new());
    assert_eq!(found(&store, "bob", &["새"]).await, Vec::<String>::new());
}

async fn search_pages_newest_first_and_applies_its_filters(store: Arc<dyn Store>, _db: Db) {
    let first = create(&store, group("alice", &["bob"])).await;
    let second = create(&store, group("bob", &["alice"])).await;
    let mut sent = Vec::new();
    for n in 0..7 {
        let (conversation, sender) = if n % 2 == 0 { (&first, "alice") } else { (&second, "bob") };
        sent.push(send_later(&store, conversation, sender, &format!("report {n} 보고서")).await);
    }
    for words in [&["report"][..], &["보고"][..], &["보"][..]] {
        let mut seen = Vec::new();
        let mut cursor: Option<SearchCursor> = None;
        loop {
            let page =
                search(&store, SearchQuery { cursor: cursor.clone(), limit: 3, ..query("alice", words) })
                    .await;
            seen.extend(page.messages.iter().map(|m| m.id.clone()));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let newest_first: Vec<String> = sent.iter().rev().map(|m| m.id.clone()).collect();
        assert_eq!(seen, newest_first, "pages of {words:?}");
    }

    let ids = |page: SearchPage| page.messages.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let only_first = SearchQuery { conversation_id: Some(first.clone()), ..query("bob", &["report"]) };
    let expected: Vec<String> =
        sent.iter().rev().filter(|m| m.conversation_id == first).map(|m| m.id.clone()).collect();
    assert_eq!(ids(search(&store, only_first).await), expected);
    let from_bob = SearchQuery { sender_id: Some("bob".into()), ..query("alice", &["보고서"]) };
    let expected: Vec<String> =
        sent.iter().rev().filter(|m| m.sender_id == "bob").map(|m| m.id.clone()).collect();
    assert_eq!(ids(search(&store, from_bob).await), expected);
    let window = SearchQuery {
        after: Some(sent[1].created_at),
        before: Some(sent[5].created_at),
        ..query("alice", &["report"])
    };
    let expected: Vec<String> = sent[2..5].iter().rev().map(|m| m.id.clone()).collect();
    assert_eq!(ids(search(&store, window).await), expected);
}

async fn a_short_query_scans_a_bounded_number_of_messages_per_page(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let oldest = send_later(&store, &id, "alice", "검색을 해보세요").await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    for chunk in 0..(SHORT_QUERY_SCAN / 500) {
        let sends = (0..500).map(|n| {
            let (store, id) = (store.clone(), id.clone());
            async move { send(&store, &id, "alice", &format!("filler {chunk} {n}")).await }
        });
        join_all(sends).await;
    }
    // The first page scans the newest SHORT_QUERY_SCAN messages, finds nothing, and says
    // where to go on; the next page finds the oldest message.
    let first = search(&store, query("bob", &["검"])).await;
    assert!(first.messages.is_empty());
    let cursor = first.next.expect("a next page after a cut-short scan");
    let second = search(&store, SearchQuery { cursor: Some(cursor), ..query("bob", &["검"]) }).await;
    assert_eq!(second.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), vec![oldest.id.clone()]);
    assert_eq!(second.next, None);
    // A word the index serves finds it at once.
    assert_eq!(search(&store, query("bob", &["검색을"])).await.messages.len(), 1);
}

/// The SQLite migrations before the search one (0011), applied by hand to make a database
/// as an earlier chatd left it.
const SQLITE_BEFORE_SEARCH: [&str; 10] = [
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_push.sql"),
    include_str!("../../migrations/sqlite/0003_push_claims.sql"),
    include_str!("../../migrations/sqlite/0004_notifications.sql"),
    include_str!("../../migrations/sqlite/0005_notification_settings.sql"),
    include_str!("../../migrations/sqlite/0006_bans_blocks.sql"),
    include_str!("../../migrations/sqlite/0007_device_refresh.sql"),
    include_str!("../../migrations/sqlite/0008_message_version.sql"),
    include_str!("../../migrations/sqlite/0009_disconnects.sql"),
    include_str!("../../migrations/sqlite/0010_uploads.sql"),
];

/// SQLite: messages written before the search migration are indexed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_search_migration_indexes_existing_messages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("chatd.db");
    let id = "c-before-search";
    {
        let conn = rusqlite::Connection::open(&path).expect("open raw");
        for migration in SQLITE_BEFORE_SEARCH {
            conn.execute_batch(migration).expect("an earlier migration");
        }
        conn.execute_batch(&format!(
            "PRAGMA user_version = {}; \
             INSERT INTO conversations (id, type, last_seq, activity_at, created_at) VALUES ('{id}', 'group', 1, 1, 1); \
             INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES ('{id}', 'alice', 'owner', 1), \
               ('{id}', 'bob', 'member', 1); \
             INSERT INTO messages (id, conversation_id, seq, sender_id, type, content, created_at) \
               VALUES ('m-1', '{id}', 1, 'alice', 'text', '이전 메시지 검색을 해보세요', 1);",
            SQLITE_BEFORE_SEARCH.len()
        ))
        .expect("a database from before the search migration");
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, Synchronous::Normal).expect("reopen"));
    assert_eq!(found(&store, "bob", &["검색을"]).await, vec!["이전 메시지 검색을 해보세요"]);
    send(&store, id, "alice", "이후 메시지 검색을").await;
    assert_eq!(found(&store, "bob", &["메시지", "검색을"]).await.len(), 2);
}
