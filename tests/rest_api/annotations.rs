//! Reactions, threads, pins, mentions and changed messages over REST (SQLite); the same
//! scenarios run on PostgreSQL in tests/postgres_server.rs.

use common::annotations::*;

use super::*;

async fn server() -> TestServer {
    TestServer::start_with(|config| config.limits.messages_per_second = 0).await
}

#[tokio::test]
async fn reactions_are_counted_exactly_under_concurrency_and_idempotent() {
    assert_reactions_end_to_end(&server().await).await;
}

#[tokio::test]
async fn thread_replies_keep_seqs_gap_free_and_count_only_timeline_messages_as_unread() {
    assert_threads_end_to_end(&server().await).await;
}

#[tokio::test]
async fn pins_follow_roles_and_the_limit() {
    assert_pins_end_to_end(&server().await).await;
}

#[tokio::test]
async fn mentions_keep_members_only_and_count_until_read() {
    assert_mentions_end_to_end(&server().await).await;
}

#[tokio::test]
async fn changed_messages_come_back_in_revision_order() {
    assert_changes_end_to_end(&server().await).await;
}
