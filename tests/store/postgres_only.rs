//! PostgreSQL only: what has no SQLite counterpart.

use super::*;
use crate::push_jobs::every_push_job_is_claimed_exactly_once;

#[tokio::test]
async fn postgres_an_unreachable_database_is_reported_unavailable_not_a_panic() {
    let port = common::free_port();
    let config = PostgresConfig::from_url(&format!("postgres://root@127.0.0.1:{port}/test")).expect("url");
    match PostgresStore::connect(&config, &chatd::tasks::Tasks::new()).await {
        Err(StoreError::Unavailable(message)) => assert!(message.contains("connect"), "{message}"),
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_nodes_starting_together_migrate_one_fresh_schema_once() {
    let schema = Schema::fresh();
    let config = schema.config();
    let tasks = chatd::tasks::Tasks::new();
    let opened = join_all((0..4).map(|_| PostgresStore::connect(&config, &tasks))).await;
    let stores: Vec<PostgresStore> = opened.into_iter().map(|r| r.expect("connect")).collect();
    let id =
        create(&(Arc::new(stores.into_iter().next().expect("one")) as Arc<dyn Store>), group("a", &[])).await;
    let again: Arc<dyn Store> =
        Arc::new(PostgresStore::connect(&config, &chatd::tasks::Tasks::new()).await.expect("reconnect"));
    assert!(again.conversation(&id, "a").await.expect("read").is_some());
}

#[tokio::test]
async fn postgres_a_search_path_without_a_schema_is_an_error_not_a_panic() {
    let base = common::pg::base_url();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3Dchatd_no_such_schema");
    let missing =
        PostgresStore::connect(&PostgresConfig::from_url(&url).expect("url"), &chatd::tasks::Tasks::new())
            .await;
    assert!(missing.is_err(), "nowhere to create tables is an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_killed_by_the_server_are_replaced() {
    let schema = Schema::fresh();
    let url = format!("{}&application_name={}", schema.url, schema.name);
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&PostgresConfig::from_url(&url).expect("url"), &chatd::tasks::Tasks::new())
            .await
            .expect("connect"),
    );
    let id = create(&store, group("alice", &["bob"])).await;
    send(&store, &id, "alice", "before").await;

    let (admin, connection) = tokio_postgres::connect(&common::pg::base_url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&schema.name],
        )
        .await
        .expect("terminate");
    assert!(!killed.is_empty(), "the store had connections to kill");
    tokio::time::sleep(Duration::from_millis(200)).await;

    store.ping().await.expect("ping on a new connection");
    assert_eq!(send(&store, &id, "bob", "after").await.seq, 2);
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_claimers_on_two_nodes_take_every_push_job_exactly_once() {
    let schema = Schema::fresh();
    let mut nodes: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..2 {
        nodes.push(Arc::new(
            PostgresStore::connect(&schema.config(), &chatd::tasks::Tasks::new()).await.expect("connect"),
        ));
    }
    every_push_job_is_claimed_exactly_once(&nodes, 8, 500).await;
}
