//! The Redis presence directory on its own, as two nodes see it: node-level joins and leaves,
//! focus, a dead node retired with its users reported, and a node's users put back after
//! Redis forgot everything (a restart without persistence).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatd::core::ports::{PresenceDirectory, Reach};
use chatd::presence::redis::RedisPresence;
use chatd::tasks::Tasks;
use common::redis::{OwnRedis, unique_prefix};

/// A node's time to live: long enough that a busy machine still renews it in time (renewals
/// come several times per TTL), short enough to wait out.
const TTL: Duration = Duration::from_secs(2);
/// How long a test waits for something that must happen (generous: CI machines are busy).
const PATIENCE: Duration = Duration::from_secs(30);

/// Whether `came_online` ran for a join (after everything queued before it is done).
async fn joined(directory: &RedisPresence, user: &str) -> bool {
    let flag = Arc::new(Mutex::new(false));
    let set = flag.clone();
    directory.node_joined(user, Box::new(move || *set.lock().unwrap() = true));
    flushed(directory).await;
    *flag.lock().unwrap()
}

/// Whether `went_offline` ran for a leave (after everything queued before it is done).
async fn left(directory: &RedisPresence, user: &str) -> bool {
    let flag = Arc::new(Mutex::new(false));
    let set = flag.clone();
    directory.node_left(user, Box::new(move |_| *set.lock().unwrap() = true));
    flushed(directory).await;
    *flag.lock().unwrap()
}

/// Resolves once everything queued on `directory` before it was carried out.
async fn flushed(directory: &RedisPresence) {
    reach(directory, &[], "-").await;
}

async fn reach(directory: &RedisPresence, users: &[&str], conversation: &str) -> Vec<Reach> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    let local = vec![Reach::Offline; users.len()];
    directory.reach(users, conversation, local, Box::new(move |r| drop(tx.send(r))));
    rx.await.expect("answered")
}

async fn online(directory: &RedisPresence, user: &str) -> bool {
    directory.info(&[user.to_owned()]).await.expect("info")[0].online
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_presence_and_focus() {
    let redis = OwnRedis::start().await;
    let prefix = unique_prefix();
    let a = RedisPresence::connect(&redis.url(), &prefix, TTL, &Tasks::new()).await.expect("node a");
    let b = RedisPresence::connect(&redis.url(), &prefix, TTL, &Tasks::new()).await.expect("node b");

    assert!(joined(&a, "bob").await, "first node: bob came online");
    assert!(!joined(&b, "bob").await, "second node: he already was");
    a.focus_changed("bob", "c1", true);
    flushed(&a).await;
    assert_eq!(reach(&b, &["bob", "carol"], "c1").await, [Reach::Focused, Reach::Offline]);
    assert_eq!(reach(&b, &["bob"], "c2").await, [Reach::Online]);
    assert!(!left(&a, "bob").await, "still on node b");
    assert_eq!(reach(&b, &["bob"], "c1").await, [Reach::Online], "node a's focus left with it");
    assert!(left(&b, "bob").await, "gone everywhere");
    let info = a.info(&["bob".to_owned(), "never".to_owned()]).await.expect("info");
    assert!(!info[0].online && info[0].last_seen_at.is_some(), "{info:?}");
    assert!(!info[1].online && info[1].last_seen_at.is_none(), "{info:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_nodes_users_are_reported_once_and_others_stay_online() {
    let redis = OwnRedis::start().await;
    let prefix = unique_prefix();
    let survivor = RedisPresence::connect(&redis.url(), &prefix, TTL, &Tasks::new()).await.expect("survivor");
    let mut departures = survivor.departures().expect("departures");
    assert!(survivor.departures().is_none(), "one consumer");
    {
        let doomed = RedisPresence::connect(&redis.url(), &prefix, TTL, &Tasks::new()).await.expect("doomed");
        joined(&doomed, "bob").await;
        joined(&doomed, "dave").await;
        joined(&survivor, "dave").await;
        assert!(online(&survivor, "bob").await);
        // Dropped here: `doomed` stops renewing itself, as if killed.
    }
    let departure =
        tokio::time::timeout(PATIENCE, departures.recv()).await.expect("a departure").expect("departure");
    assert_eq!(departure.user_id, "bob");
    assert!(!online(&survivor, "bob").await);
    assert!(online(&survivor, "dave").await, "dave is still on the survivor");
    assert!(
        tokio::time::timeout(TTL * 2, departures.recv()).await.is_err(),
        "nobody else departed, and bob only once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_puts_its_users_back_after_redis_forgot_them() {
    let mut redis = OwnRedis::start().await;
    let prefix = unique_prefix();
    let a = RedisPresence::connect(&redis.url(), &prefix, TTL, &Tasks::new()).await.expect("node a");
    joined(&a, "bob").await;
    a.focus_changed("bob", "c1", true);
    flushed(&a).await;
    redis.kill();
    redis.restart().await;
    let b = RedisPresence::connect(&redis.url(), &prefix, TTL, &Tasks::new()).await.expect("node b");
    let mut restored = false;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if reach(&b, &["bob"], "c1").await == [Reach::Focused] {
            restored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(restored, "node a's next tick put bob and his focus back");
}
