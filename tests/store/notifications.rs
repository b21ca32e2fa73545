//! The notification log (ids per user, retention, pruning, two nodes) and notification
//! settings.

use super::*;

store_tests!(
    notification_ids_are_per_user_from_one_gap_free_and_read_back_in_order,
    the_notification_log_keeps_the_newest_entries_per_user,
    old_notifications_are_pruned_within_the_limit_and_ids_are_never_reused,
    notifications_recorded_concurrently_on_two_nodes_get_gap_free_ids_committed_in_order,
    notification_settings_default_to_on_and_keep_the_fields_not_given,
);

fn notification(user_id: &str, seq: i64) -> NewNotification {
    NewNotification {
        user_id: user_id.to_owned(),
        notification: Notification {
            id: None,
            // Every third one a reaction, so kinds and emoji round-trip through the log.
            kind: if seq % 3 == 0 { NotificationKind::Reaction } else { NotificationKind::Message },
            emoji: (seq % 3 == 0).then(|| "👍".to_owned()),
            conversation_id: "c1".into(),
            message_id: format!("m{seq}"),
            seq,
            sender_id: "alice".into(),
            preview: (seq % 2 == 0).then(|| format!("hello {seq}")),
            unread_count: seq,
        },
        created_at: Timestamp::now(),
    }
}

/// Opens the notification logs of `users`.
async fn open_logs(store: &Arc<dyn Store>, users: &[&str]) {
    for user in users {
        store.open_notification_log(user).await.expect("open log");
    }
}

/// The seqs of a user's kept notifications after `after`, with their ids.
async fn logged(store: &Arc<dyn Store>, user_id: &str, after: i64) -> Vec<(i64, i64)> {
    let entries = store.notifications_after(user_id, after, 10_000).await.expect("read log");
    entries.iter().map(|n| (n.id.expect("logged entries have ids"), n.seq)).collect()
}

async fn notification_ids_are_per_user_from_one_gap_free_and_read_back_in_order(
    store: Arc<dyn Store>,
    _db: Db,
) {
    assert_eq!(store.latest_notification_id("bob").await.expect("latest"), 0);
    // dave never opened a log: his notifications are not recorded.
    let batch = vec![notification("bob", 1), notification("dave", 1)];
    assert_eq!(store.record_notifications(batch, 100).await.expect("record"), vec![None, None]);
    open_logs(&store, &["bob", "carol"]).await;
    let batch = vec![
        notification("bob", 1),
        notification("carol", 1),
        notification("dave", 1),
        notification("bob", 2),
    ];
    assert_eq!(
        store.record_notifications(batch, 100).await.expect("record"),
        vec![Some(1), Some(1), None, Some(2)]
    );
    assert_eq!(
        store.record_notifications(vec![notification("bob", 3)], 100).await.expect("record"),
        vec![Some(3)]
    );
    assert_eq!(store.open_notification_log("bob").await.expect("open again"), 3, "opening is idempotent");
    assert_eq!(logged(&store, "dave", 0).await, vec![]);
    assert_eq!(store.latest_notification_id("bob").await.expect("latest"), 3);
    assert_eq!(store.latest_notification_id("carol").await.expect("latest"), 1);

    let entries = store.notifications_after("bob", 0, 100).await.expect("read");
    let mut expected = notification("bob", 2).notification;
    expected.id = Some(2);
    assert_eq!(entries.get(1), Some(&expected), "every field comes back");
    assert_eq!(logged(&store, "bob", 0).await, vec![(1, 1), (2, 2), (3, 3)]);
    assert_eq!(logged(&store, "bob", 1).await, vec![(2, 2), (3, 3)]);
    assert_eq!(logged(&store, "bob", 3).await, vec![]);
    let first_two = store.notifications_after("bob", 0, 2).await.expect("read");
    assert_eq!(first_two.iter().map(|n| n.id).collect::<Vec<_>>(), vec![Some(1), Some(2)], "limit applies");
    assert_eq!(
        store.record_notifications(Vec::new(), 100).await.expect("record nothing"),
        Vec::<Option<i64>>::new()
    );
}

async fn the_notification_log_keeps_the_newest_entries_per_user(store: Arc<dyn Store>, _db: Db) {
    open_logs(&store, &["bob", "carol"]).await;
    for seq in 1..=5 {
        store.record_notifications(vec![notification("bob", seq)], 3).await.expect("record");
    }
    store.record_notifications(vec![notification("carol", 1)], 3).await.expect("record");
    assert_eq!(logged(&store, "bob", 0).await, vec![(3, 3), (4, 4), (5, 5)]);
    assert_eq!(logged(&store, "carol", 0).await, vec![(1, 1)], "another user's log is untouched");
    let batch = (6..=10).map(|seq| notification("bob", seq)).collect();
    assert_eq!(
        store.record_notifications(batch, 3).await.expect("record"),
        [6, 7, 8, 9, 10].map(Some).to_vec()
    );
    assert_eq!(logged(&store, "bob", 0).await, vec![(8, 8), (9, 9), (10, 10)], "trimmed within a batch too");
}

async fn old_notifications_are_pruned_within_the_limit_and_ids_are_never_reused(
    store: Arc<dyn Store>,
    _db: Db,
) {
    open_logs(&store, &["bob", "carol"]).await;
    let old = |user: &str, seq| NewNotification { created_at: Timestamp(1_000), ..notification(user, seq) };
    store
        .record_notifications(vec![old("bob", 1), old("bob", 2), old("carol", 1)], 100)
        .await
        .expect("record");
    store.record_notifications(vec![notification("bob", 3)], 100).await.expect("record");
    assert_eq!(store.prune_notifications(Timestamp(1_000), 100).await.expect("prune"), 0, "strictly before");
    assert_eq!(store.prune_notifications(Timestamp(2_000), 0).await.expect("prune"), 0);
    assert_eq!(store.prune_notifications(Timestamp(2_000), 2).await.expect("prune"), 2);
    assert_eq!(store.prune_notifications(Timestamp(2_000), 100).await.expect("prune"), 1);
    assert_eq!(logged(&store, "bob", 0).await, vec![(3, 3)]);
    assert_eq!(logged(&store, "carol", 0).await, vec![]);
    assert_eq!(store.latest_notification_id("carol").await.expect("latest"), 1, "the counter stays");
    assert_eq!(
        store.record_notifications(vec![notification("carol", 2)], 100).await.expect("record"),
        vec![Some(2)]
    );
}

async fn notifications_recorded_concurrently_on_two_nodes_get_gap_free_ids_committed_in_order(
    store: Arc<dyn Store>,
    db: Db,
) {
    const N: i64 = 60;
    open_logs(&store, &["bob", "carol"]).await;
    let other = db.another_node().await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A reader that must never see an id before every smaller one is committed.
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let ids = logged(&store, "bob", 0).await;
                let expected: Vec<i64> = (1..=ids.len() as i64).collect();
                assert_eq!(ids.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected, "a hole was visible");
                tokio::task::yield_now().await;
            }
        })
    };
    let tasks = (0..N).map(|n| {
        let store = if n % 2 == 0 { store.clone() } else { other.clone() };
        // Two users per batch, in either order, so batches lock counters in both orders.
        let batch = if n % 3 == 0 {
            vec![notification("bob", n), notification("carol", n)]
        } else {
            vec![notification("carol", n), notification("bob", n)]
        };
        tokio::spawn(async move { store.record_notifications(batch, 1000).await })
    });
    let results = join_all(tasks).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.expect("reader");
    let mut ids: Vec<i64> = results
        .into_iter()
        .flat_map(|r| r.expect("task").expect("record"))
        .map(|id| id.expect("logged"))
        .collect();
    ids.sort_unstable();
    let per_user: Vec<i64> = (1..=N).flat_map(|id| [id, id]).collect();
    assert_eq!(ids, per_user, "each user got 1..=N");
    assert_eq!(logged(&store, "bob", 0).await.len() as i64, N);
    assert_eq!(store.latest_notification_id("carol").await.expect("latest"), N);
}

async fn notification_settings_default_to_on_and_keep_the_fields_not_given(store: Arc<dyn Store>, _db: Db) {
    let on = NotificationSettings { enabled: true, mentions_when_muted: true };
    assert_eq!(store.notification_settings("alice").await.expect("read"), on, "defaults");
    let off = NotificationSettingsUpdate { enabled: Some(false), mentions_when_muted: None };
    let now = store.update_notification_settings("alice", off).await.expect("update");
    assert_eq!(now, NotificationSettings { enabled: false, mentions_when_muted: true });
    let mentions = NotificationSettingsUpdate { enabled: None, mentions_when_muted: Some(false) };
    let now = store.update_notification_settings("alice", mentions).await.expect("update");
    assert_eq!(now, NotificationSettings { enabled: false, mentions_when_muted: false });
    assert_eq!(store.notification_settings("alice").await.expect("read"), now, "stored");
    let nothing = store.update_notification_settings("alice", NotificationSettingsUpdate::default()).await;
    assert_eq!(nothing.expect("update"), now, "an empty update changes nothing");
    assert_eq!(store.notification_settings("bob").await.expect("read"), on, "per user");
}
