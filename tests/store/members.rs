//! Members: additions and their read markers, removals and ownership hand-over, also
//! concurrent with each other and with appends.

use super::*;

store_tests!(
    added_members_start_read_up_to_the_last_seq_and_existing_ones_are_left_alone,
    remove_member_reports_whether_it_removed_and_passes_ownership,
    concurrent_removals_of_the_owner_and_members_always_leave_an_owner,
    a_member_removed_concurrently_cannot_append_after_the_removal,
    members_added_during_appends_get_exact_unread_counts,
);

async fn added_members_start_read_up_to_the_last_seq_and_existing_ones_are_left_alone(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let id = create(&store, group("alice", &["bob"])).await;
    send(&store, &id, "alice", "one").await;
    send(&store, &id, "alice", "two").await;
    let added = store
        .add_members(
            &id,
            vec!["carol".into(), "bob".into(), "dave".into()],
            Role::Admin,
            Timestamp(5_000),
            "alice",
        )
        .await
        .expect("add");
    assert_eq!(added, Some(vec!["carol".to_owned(), "dave".to_owned()]));
    let conversation = store.conversation(&id, "carol").await.expect("read").expect("exists");
    let carol = conversation.member("carol").expect("carol");
    assert_eq!((carol.role, carol.last_read_seq, carol.joined_at), (Role::Admin, 2, Timestamp(5_000)));
    assert_eq!(conversation.unread_count, 0, "earlier history is visible but not unread");
    assert_eq!(conversation.member("bob").expect("bob").role, Role::Member);
    send(&store, &id, "alice", "three").await;
    assert_eq!(unread_of(&store, &id, "carol").await, 1);
    assert_unread_counts_exact(&store, &id).await;
}

async fn remove_member_reports_whether_it_removed_and_passes_ownership(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob", "carol"])).await;
    assert!(!store.remove_member(&id, "mallory").await.expect("remove"));
    assert!(store.remove_member(&id, "carol").await.expect("remove"));
    assert!(matches!(store.membership(&id, "carol").await.expect("m"), Membership::NotMember));
    assert!(store.remove_member(&id, "alice").await.expect("remove"));
    let conversation = store.conversation(&id, "bob").await.expect("read").expect("exists");
    let members: Vec<(&str, Role)> =
        conversation.members.iter().map(|m| (m.user_id.as_str(), m.role)).collect();
    assert_eq!(members, vec![("bob", Role::Owner)]);
}

async fn concurrent_removals_of_the_owner_and_members_always_leave_an_owner(store: Arc<dyn Store>, db: Db) {
    let others = ["m1", "m2", "m3", "m4", "m5", "m6"];
    for _ in 0..3 {
        let id = create(&store, group("alice", &others)).await;
        // The owner and the four longest-standing members leave at once, over two nodes.
        let second = db.another_node().await;
        let leaving = ["alice", "m1", "m2", "m3", "m4"];
        let removals = leaving.iter().enumerate().map(|(i, user)| {
            let store = if i % 2 == 0 { store.clone() } else { second.clone() };
            let id = id.clone();
            async move { store.remove_member(&id, user).await.expect("remove") }
        });
        assert!(join_all(removals).await.into_iter().all(|removed| removed));
        let conversation = store.conversation(&id, "m5").await.expect("read").expect("exists");
        let roles: Vec<(&str, Role)> =
            conversation.members.iter().map(|m| (m.user_id.as_str(), m.role)).collect();
        assert_eq!(roles, vec![("m5", Role::Owner), ("m6", Role::Member)]);
    }
}

async fn a_member_removed_concurrently_cannot_append_after_the_removal(store: Arc<dyn Store>, db: Db) {
    let other = db.another_node().await;
    for _round in 0..3 {
        let id = create(&store, group("alice", &["bob", "carol"])).await;
        // Several appenders on both nodes send as carol until refused a few times each.
        let appenders = (0..6).map(|task| {
            let store = if task % 2 == 0 { store.clone() } else { other.clone() };
            let id = id.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut refused = 0;
                for n in 0..2_000 {
                    let started = tokio::time::Instant::now();
                    let new = text(&id, "carol", &format!("t{task} m{n}"));
                    let outcome = store.append_message(new, no_hook()).await.expect("append");
                    if matches!(outcome, AppendOutcome::NotMember) {
                        refused += 1;
                    }
                    outcomes.push((started, outcome));
                    if refused == 3 {
                        break;
                    }
                }
                outcomes
            })
        });
        let appenders: Vec<_> = appenders.collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(store.remove_member(&id, "carol").await.expect("remove"));
        let removed_at = tokio::time::Instant::now();
        let at_removal = history(&store, &id).await;

        let mut acked = Vec::new();
        for appender in appenders {
            let outcomes = appender.await.expect("task");
            for (started, outcome) in &outcomes {
                match outcome {
                    AppendOutcome::Committed { message, recipients, .. } => {
                        assert!(*started < removed_at, "an append started after the removal committed");
                        assert!(
                            recipients.iter().any(|r| r.member.user_id == "carol"),
                            "a member as of the commit"
                        );
                        acked.push(message.seq);
                    }
                    AppendOutcome::NotMember => {}
                    other => panic!("{other:?}"),
                }
            }
            // Once refused, always refused.
            let first_refused = outcomes.iter().position(|(_, o)| matches!(o, AppendOutcome::NotMember));
            let first_refused = first_refused.expect("refused after the removal");
            assert!(outcomes[first_refused..].iter().all(|(_, o)| matches!(o, AppendOutcome::NotMember)));
        }
        acked.sort_unstable();
        let final_history = history(&store, &id).await;
        assert_eq!(seqs(&final_history), seqs(&at_removal), "nothing of carol's committed after her removal");
        assert_eq!(seqs(&final_history), acked, "exactly the acked messages");
        assert_eq!(acked, (1..=acked.len() as i64).collect::<Vec<_>>(), "gap-free");
        assert_unread_counts_exact(&store, &id).await;
    }
}

async fn members_added_during_appends_get_exact_unread_counts(store: Arc<dyn Store>, db: Db) {
    let other = db.another_node().await;
    let id = create(&store, group("alice", &[])).await;
    let appends = (0..60).map(|n| {
        let store = if n % 2 == 0 { store.clone() } else { other.clone() };
        let id = id.clone();
        tokio::spawn(async move {
            committed(&store.append_message(text(&id, "alice", "x"), no_hook()).await.expect("append")).seq
        })
    });
    let adds = (0..10).map(|n| {
        let store = if n % 2 == 0 { other.clone() } else { store.clone() };
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(n * 3)).await;
            store
                .add_members(&id, vec![format!("user{n}")], Role::Member, Timestamp::now(), "owner")
                .await
                .expect("add")
                .expect("no block")
        })
    });
    let (appended, added) = futures::join!(join_all(appends), join_all(adds));
    assert!(appended.into_iter().all(|r| r.is_ok()));
    assert!(added.into_iter().all(|r| r.expect("task").len() == 1));
    assert_eq!(seqs(&history(&store, &id).await), (1..=60).collect::<Vec<_>>());
    assert_unread_counts_exact(&store, &id).await;
}
