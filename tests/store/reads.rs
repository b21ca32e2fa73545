//! Read markers, unread counts, a member's notification switch, conversation heads and
//! contacts.

use super::*;

store_tests!(
    mark_read_raises_caps_and_never_lowers_the_marker,
    set_notifications_switches_a_members_notifications,
    a_timed_mute_ends_at_its_time,
    unread_counts_list_only_conversations_with_unread_messages,
    conversation_heads_and_contacts_cover_the_users_conversations,
    read_markers_under_concurrent_appends_and_reads_stay_monotonic_and_counts_exact,
);

async fn mark_read_raises_caps_and_never_lowers_the_marker(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    for n in 1..=5 {
        send(&store, &id, "alice", &format!("m{n}")).await;
    }
    assert_eq!(store.mark_read(&id, "mallory", 3).await.expect("read"), None);
    assert_eq!(store.mark_read("nope", "bob", 3).await.expect("read"), None);
    assert_eq!(store.mark_read(&id, "bob", 3).await.expect("read"), Some((0, 3)));
    assert_eq!(unread_of(&store, &id, "bob").await, 2);
    assert_eq!(store.mark_read(&id, "bob", 1).await.expect("read"), Some((3, 3)), "never lowered");
    assert_eq!(store.mark_read(&id, "bob", 99).await.expect("read"), Some((3, 5)), "capped at the last seq");
    assert_eq!(unread_of(&store, &id, "bob").await, 0);
    assert_eq!(member_marker(&store, &id, "bob").await, 5);
    assert_unread_counts_exact(&store, &id).await;
}

async fn set_notifications_switches_a_members_notifications(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    assert!(store.set_notifications(&id, "bob", false, None).await.expect("set"));
    let Membership::Member { member, .. } = store.membership(&id, "bob").await.expect("m") else { panic!() };
    assert!(!member.notifications);
    assert!(store.set_notifications(&id, "bob", true, None).await.expect("set"));
    let conversation = store.conversation(&id, "bob").await.expect("read").expect("exists");
    assert!(conversation.member("bob").expect("bob").notifications);
    assert!(!store.set_notifications(&id, "mallory", false, None).await.expect("set"));
}

async fn a_timed_mute_ends_at_its_time(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob", "carol"])).await;
    let now = Timestamp::now();
    assert!(
        store
            .set_notifications(&id, "bob", false, Some(now.plus(Duration::from_secs(60))))
            .await
            .expect("set")
    );
    assert!(store.set_notifications(&id, "carol", false, None).await.expect("set"));
    assert_eq!(store.end_mutes(now).await.expect("end"), 0, "not yet");
    assert_eq!(
        store.conversation(&id, "bob").await.expect("read").expect("exists").muted_until,
        Some(now.plus(Duration::from_secs(60)))
    );
    assert_eq!(store.end_mutes(now.plus(Duration::from_secs(61))).await.expect("end"), 1);
    let conversation = store.conversation(&id, "bob").await.expect("read").expect("exists");
    assert!(conversation.member("bob").expect("bob").notifications);
    assert_eq!(conversation.muted_until, None);
    assert!(!conversation.member("carol").expect("carol").notifications, "a mute without an end stays");
}

async fn unread_counts_list_only_conversations_with_unread_messages(store: Arc<dyn Store>, _db: Db) {
    let a = create(&store, group("alice", &["bob"])).await;
    let b = create(&store, group("alice", &["bob"])).await;
    create(&store, group("alice", &["bob"])).await;
    send(&store, &a, "alice", "1").await;
    send(&store, &a, "alice", "2").await;
    send(&store, &b, "alice", "1").await;
    send(&store, &b, "bob", "mine").await;
    let mut counts = store.unread_counts("bob").await.expect("counts");
    counts.sort();
    let mut expected = vec![(a.clone(), 2), (b.clone(), 1)];
    expected.sort();
    assert_eq!(counts, expected);
    store.mark_read(&b, "bob", 2).await.expect("read");
    assert_eq!(store.unread_counts("bob").await.expect("counts"), vec![(a, 2)]);
    assert!(store.unread_counts("nobody").await.expect("counts").is_empty());
}

async fn conversation_heads_and_contacts_cover_the_users_conversations(store: Arc<dyn Store>, _db: Db) {
    let a = create(&store, group("alice", &["bob", "carol"])).await;
    let b = create(&store, direct("alice", "dave", "alice|dave|")).await;
    create(&store, group("erin", &["frank"])).await;
    send(&store, &a, "bob", "1").await;
    send(&store, &a, "bob", "2").await;
    let heads = store.conversation_heads("alice").await.expect("heads");
    let mut expected = vec![
        ConversationHead { id: a.clone(), last_seq: 2, last_revision: 0 },
        ConversationHead { id: b, last_seq: 0, last_revision: 0 },
    ];
    expected.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(heads, expected, "sorted by id");
    let mut contacts = store.contacts("alice").await.expect("contacts");
    contacts.sort();
    assert_eq!(contacts, vec!["bob", "carol", "dave"]);
    let mut contacts = store.contacts("bob").await.expect("contacts");
    contacts.sort();
    assert_eq!(contacts, vec!["alice", "carol"]);
    assert!(store.contacts("nobody").await.expect("contacts").is_empty());
}

async fn read_markers_under_concurrent_appends_and_reads_stay_monotonic_and_counts_exact(
    store: Arc<dyn Store>,
    db: Db,
) {
    let other = db.another_node().await;
    let id = create(&store, group("alice", &["bob"])).await;
    let appends = (0..80).map(|n| {
        let store = if n % 2 == 0 { store.clone() } else { other.clone() };
        let id = id.clone();
        tokio::spawn(async move {
            committed(&store.append_message(text(&id, "alice", "x"), no_hook()).await.expect("append")).seq
        })
    });
    let reads = (0..80).map(|n| {
        let store = if n % 2 == 0 { other.clone() } else { store.clone() };
        let id = id.clone();
        tokio::spawn(async move {
            store.mark_read(&id, "bob", (n * 7) % 90).await.expect("read").expect("member")
        })
    });
    let (appended, marks) = futures::join!(join_all(appends), join_all(reads));
    let appended: Vec<i64> = appended.into_iter().map(|r| r.expect("task")).collect();
    let highest_requested = (0..80).map(|n| (n * 7) % 90).max().unwrap_or(0);
    for mark in marks {
        let (before, after) = mark.expect("task");
        assert!(after >= before, "never lowered: {before} -> {after}");
        assert!(after <= 80, "capped at the last seq");
    }
    assert_eq!(appended.len(), 80);
    let marker = member_marker(&store, &id, "bob").await;
    assert!(marker <= highest_requested.min(80));
    // A final read to the end: nothing unread, and every count exact along the way.
    assert_unread_counts_exact(&store, &id).await;
    assert_eq!(store.mark_read(&id, "bob", 80).await.expect("read").expect("member").1, 80);
    assert_eq!(unread_of(&store, &id, "bob").await, 0);
    assert_eq!(store.mark_read(&id, "bob", 3).await.expect("read").expect("member"), (80, 80));
}
