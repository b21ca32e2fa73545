//! Appends, the commit hook, edits, deletes and history; concurrent appends on one and two
//! nodes; and a full SQLite disk in the middle of a commit group.

use super::*;

store_tests!(
    appends_get_gap_free_seqs_and_return_the_members_with_their_unread_counts,
    a_message_keeps_every_field_it_was_sent_with,
    refused_appends_write_nothing_and_consume_no_seq,
    a_client_id_repeat_returns_the_original_per_sender_and_conversation,
    the_commit_hook_runs_once_before_append_returns,
    the_commit_hook_runs_even_if_the_caller_gives_up,
    edit_replaces_content_of_live_messages_only,
    delete_clears_the_message_once_and_fixes_unread_counts,
    history_pages_run_backward_from_the_newest_or_forward_from_a_seq,
    concurrent_appends_get_seqs_one_to_n_and_hooks_run_in_seq_order,
    concurrent_appends_on_two_nodes_share_one_gap_free_sequence,
    a_client_id_sent_concurrently_on_two_nodes_is_written_once,
    concurrent_repeats_of_client_ids_on_one_node_commit_each_key_once,
    a_system_message_needs_no_membership_and_counts_as_unread_for_everyone,
);

async fn appends_get_gap_free_seqs_and_return_the_members_with_their_unread_counts(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let id = create(&store, group("alice", &["bob", "carol"])).await;
    store
        .upsert_device(
            NewDevice {
                id: new_id(),
                user_id: "bob".into(),
                platform: Platform::Fcm,
                token: "t".into(),
                endpoint: None,
                keys: None,
                created_at: Timestamp::now(),
            },
            10,
        )
        .await
        .expect("device");
    for n in 1..=3 {
        let outcome = append(&store, text(&id, "alice", &format!("m{n}"))).await;
        let AppendOutcome::Committed { message, mut recipients, .. } = outcome else { panic!("{outcome:?}") };
        assert_eq!(message.seq, n);
        recipients.sort_by(|a, b| a.member.user_id.cmp(&b.member.user_id));
        let seen: Vec<(&str, bool, i64)> =
            recipients.iter().map(|r| (r.member.user_id.as_str(), r.has_devices, r.unread_count)).collect();
        assert_eq!(seen, vec![("alice", false, 0), ("bob", true, n), ("carol", false, n)]);
    }
    let before = Timestamp::now();
    let fourth = send(&store, &id, "bob", "m4").await;
    assert!(fourth.created_at >= Timestamp(before.millis() - 1000) && fourth.created_at <= Timestamp::now());
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2, 3, 4]);
    let conversation = store.conversation(&id, "alice").await.expect("read").expect("exists");
    assert_eq!((conversation.last_seq, conversation.unread_count), (4, 1));
    assert_eq!(conversation.last_message, Some(fourth.clone()));
    assert_eq!(conversation.last_message_at, Some(fourth.created_at));
    assert_unread_counts_exact(&store, &id).await;
}

async fn a_message_keeps_every_field_it_was_sent_with(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let first = send(&store, &id, "bob", "first").await;
    let new = NewMessage {
        id: new_id(),
        conversation_id: id.clone(),
        sender_id: "alice".into(),
        kind: MessageType::Image,
        content: Some("caption ✓ \"quoted\"\nline".into()),
        client_id: Some("c-1".into()),
        reply_to_id: Some(first.id.clone()),
        attachments: vec![object(json!({ "url": "https://x/y.png", "w": 10, "nested": { "a": [1, null] } }))],
        metadata: object(json!({ "product_id": 981, "nul": "a\u{0}b", "big": 12345678901234_i64 })),
        thread_id: None,
        also_in_conversation: false,
        mentions: vec!["bob".into()],
        mentions_all: false,
    };
    let message = committed(&append(&store, new.clone()).await).clone();
    let read = store.message(&new.id).await.expect("read").expect("exists");
    assert_eq!(read, message);
    assert_eq!(
        (read.kind, read.content.as_deref(), read.client_id.as_deref(), read.reply_to_id.as_deref()),
        (MessageType::Image, new.content.as_deref(), Some("c-1"), Some(first.id.as_str()))
    );
    assert_eq!((read.attachments, read.metadata), (new.attachments, new.metadata));
    assert_eq!((read.edited_at, read.deleted_at), (None, None));
    assert!(store.message("nope").await.expect("read").is_none());
}

async fn refused_appends_write_nothing_and_consume_no_seq(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let other = create(&store, group("alice", &[])).await;
    let elsewhere = send(&store, &other, "alice", "elsewhere").await;
    send(&store, &id, "alice", "one").await;

    assert!(matches!(append(&store, text(&id, "mallory", "x")).await, AppendOutcome::NotMember));
    assert!(matches!(append(&store, text("nope", "alice", "x")).await, AppendOutcome::NoConversation));
    let mut reply = text(&id, "alice", "x");
    reply.reply_to_id = Some(elsewhere.id.clone());
    assert!(matches!(append(&store, reply).await, AppendOutcome::ReplyNotFound));
    let mut reply = text(&id, "alice", "x");
    reply.reply_to_id = Some("nope".into());
    assert!(matches!(append(&store, reply).await, AppendOutcome::ReplyNotFound));

    assert_eq!(last_seq(&store, &id).await, 1);
    assert_eq!(send(&store, &id, "bob", "two").await.seq, 2, "no seq was consumed");
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2]);
    assert_unread_counts_exact(&store, &id).await;
}

async fn a_client_id_repeat_returns_the_original_per_sender_and_conversation(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let other = create(&store, group("alice", &[])).await;
    let original = committed(&append(&store, with_client_id(text(&id, "alice", "hi"), "c-1")).await).clone();
    match append(&store, with_client_id(text(&id, "alice", "different text"), "c-1")).await {
        AppendOutcome::Duplicate(message) => assert_eq!(message, original),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert_eq!(last_seq(&store, &id).await, 1, "a duplicate consumes no seq");
    assert_eq!(unread_of(&store, &id, "bob").await, 1, "nor counts as unread");
    // The key is per sender and per conversation.
    assert_eq!(committed(&append(&store, with_client_id(text(&id, "bob", "hi"), "c-1")).await).seq, 2);
    assert_eq!(committed(&append(&store, with_client_id(text(&other, "alice", "hi"), "c-1")).await).seq, 1);
    // Messages without a key never collide.
    send(&store, &id, "alice", "a").await;
    send(&store, &id, "alice", "a").await;
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2, 3, 4]);
}

async fn the_commit_hook_runs_once_before_append_returns(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let hook: CommitHook = {
        let seen = seen.clone();
        Box::new(move |outcome, _| {
            if let AppendOutcome::Committed { message, .. } = outcome {
                seen.lock().expect("lock").push(message.seq);
            }
        })
    };
    let outcome = store.append_message(text(&id, "alice", "hi"), hook).await.expect("append");
    assert_eq!(committed(&outcome).seq, 1);
    assert_eq!(*seen.lock().expect("lock"), vec![1], "ran exactly once, before the return");
}

async fn the_commit_hook_runs_even_if_the_caller_gives_up(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let (ran, hooked) = tokio::sync::oneshot::channel::<i64>();
    let hook: CommitHook = Box::new(move |outcome, _| {
        if let AppendOutcome::Committed { message, .. } = outcome {
            let _ = ran.send(message.seq);
        }
    });
    let new = text(&id, "alice", "abandoned");
    let message_id = new.id.clone();
    {
        let mut call = std::pin::pin!(store.append_message(new, hook));
        // Started, then dropped: the caller is cancelled.
        let _ = futures::poll!(call.as_mut());
    }
    let seq =
        tokio::time::timeout(Duration::from_secs(10), hooked).await.expect("hook within 10 s").expect("ran");
    assert_eq!(seq, 1);
    assert_eq!(store.message(&message_id).await.expect("read").expect("committed").seq, 1);
}

async fn edit_replaces_content_of_live_messages_only(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let message = send(&store, &id, "alice", "draft").await;
    let edited =
        store.edit_message(&message.id, "final".into(), Timestamp(9_000)).await.expect("edit").expect("live");
    assert_eq!((edited.content.as_deref(), edited.edited_at), (Some("final"), Some(Timestamp(9_000))));
    assert_eq!((edited.seq, edited.created_at), (message.seq, message.created_at));
    assert_eq!((message.version, edited.version), (1, 2), "an edit is a new version");
    assert_eq!(store.message(&message.id).await.expect("read"), Some(edited));
    let (deleted, _) =
        store.delete_message(&message.id, Timestamp(9_500)).await.expect("delete").expect("exists");
    assert_eq!(deleted.version, 3, "so is the delete");
    assert!(
        store.edit_message(&message.id, "again".into(), Timestamp(10_000)).await.expect("edit").is_none()
    );
    assert!(store.edit_message("nope", "x".into(), Timestamp(10_000)).await.expect("edit").is_none());
}

async fn delete_clears_the_message_once_and_fixes_unread_counts(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob", "carol"])).await;
    let mut new = text(&id, "alice", "oops");
    new.attachments = vec![object(json!({ "url": "u" }))];
    new.metadata = object(json!({ "k": "v" }));
    let message = committed(&append(&store, new).await).clone();
    send(&store, &id, "alice", "kept").await;
    store.mark_read(&id, "carol", 1).await.expect("read");
    assert_eq!((unread_of(&store, &id, "bob").await, unread_of(&store, &id, "carol").await), (2, 1));

    let (deleted, now) =
        store.delete_message(&message.id, Timestamp(7_000)).await.expect("delete").expect("exists");
    assert!(now);
    assert_eq!(deleted.content, None);
    assert!(deleted.attachments.is_empty() && deleted.metadata.is_empty());
    assert_eq!((deleted.deleted_at, deleted.seq), (Some(Timestamp(7_000)), 1));
    assert_eq!(unread_of(&store, &id, "bob").await, 1, "bob had not read it");
    assert_eq!(unread_of(&store, &id, "carol").await, 1, "carol had read it");
    assert_eq!(unread_of(&store, &id, "alice").await, 0);

    let (again, now) =
        store.delete_message(&message.id, Timestamp(8_000)).await.expect("delete").expect("exists");
    assert!(!now);
    assert_eq!(again.deleted_at, Some(Timestamp(7_000)));
    assert_eq!((deleted.version, again.version), (2, 2), "deleting again changes nothing");
    assert_eq!(unread_of(&store, &id, "bob").await, 1, "counted down once");
    assert!(store.delete_message("nope", Timestamp(8_000)).await.expect("delete").is_none());
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2], "a deleted message keeps its seq");
    assert_unread_counts_exact(&store, &id).await;
}

async fn history_pages_run_backward_from_the_newest_or_forward_from_a_seq(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &[])).await;
    for n in 1..=10 {
        send(&store, &id, "alice", &format!("m{n}")).await;
    }
    let page = |after_seq, before_seq, limit| HistoryRange { after_seq, before_seq, limit };
    let (newest, more) = store.messages(&id, page(None, None, 3)).await.expect("page");
    assert_eq!((seqs(&newest), more), (vec![8, 9, 10], true));
    let (older, more) = store.messages(&id, page(None, Some(8), 3)).await.expect("page");
    assert_eq!((seqs(&older), more), (vec![5, 6, 7], true));
    let (oldest, more) = store.messages(&id, page(None, Some(3), 3)).await.expect("page");
    assert_eq!((seqs(&oldest), more), (vec![1, 2], false));
    let (forward, more) = store.messages(&id, page(Some(2), None, 3)).await.expect("page");
    assert_eq!((seqs(&forward), more), (vec![3, 4, 5], true));
    let (tail, more) = store.messages(&id, page(Some(7), None, 3)).await.expect("page");
    assert_eq!((seqs(&tail), more), (vec![8, 9, 10], false));
    let (between, more) = store.messages(&id, page(Some(2), Some(6), 10)).await.expect("page");
    assert_eq!((seqs(&between), more), (vec![3, 4, 5], false));
    let (exact, more) = store.messages(&id, page(Some(0), None, 10)).await.expect("page");
    assert_eq!((exact.len(), more), (10, false));
    let (none, more) = store.messages("nope", page(None, None, 10)).await.expect("page");
    assert_eq!((none.len(), more), (0, false));
}

async fn concurrent_appends_get_seqs_one_to_n_and_hooks_run_in_seq_order(store: Arc<dyn Store>, _db: Db) {
    const N: i64 = 200;
    let id = create(&store, group("alice", &["bob", "carol"])).await;
    let hooked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let senders = ["alice", "bob", "carol"];
    let tasks = (0..N).map(|n| {
        let (store, hooked, id) = (store.clone(), hooked.clone(), id.clone());
        let sender = senders[n as usize % senders.len()];
        tokio::spawn(async move {
            let hook: CommitHook = Box::new(move |outcome, _| {
                if let AppendOutcome::Committed { message, .. } = outcome {
                    hooked.lock().expect("lock").push(message.seq);
                }
            });
            store.append_message(text(&id, sender, &format!("m{n}")), hook).await
        })
    });
    let mut acked: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| committed(&r.expect("task").expect("append")).seq)
        .collect();
    acked.sort_unstable();
    let all: Vec<i64> = (1..=N).collect();
    assert_eq!(acked, all, "every seq once, no gap");
    assert_eq!(*hooked.lock().expect("lock"), all, "hooks ran in seq order");
    assert_eq!(seqs(&history(&store, &id).await), all);
    assert_unread_counts_exact(&store, &id).await;
}

async fn concurrent_appends_on_two_nodes_share_one_gap_free_sequence(store: Arc<dyn Store>, db: Db) {
    const N: i64 = 120;
    let other = db.another_node().await;
    let id = create(&store, group("alice", &["bob"])).await;
    let hooked: [Arc<Mutex<Vec<i64>>>; 2] = Default::default();
    let tasks = (0..N).map(|n| {
        let node = (n % 2) as usize;
        let store = if node == 0 { store.clone() } else { other.clone() };
        let (hooked, id) = (hooked[node].clone(), id.clone());
        tokio::spawn(async move {
            let hook: CommitHook = Box::new(move |outcome, _| {
                if let AppendOutcome::Committed { message, .. } = outcome {
                    hooked.lock().expect("lock").push(message.seq);
                }
            });
            store.append_message(text(&id, if node == 0 { "alice" } else { "bob" }, "x"), hook).await
        })
    });
    let mut acked: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| committed(&r.expect("task").expect("append")).seq)
        .collect();
    acked.sort_unstable();
    assert_eq!(acked, (1..=N).collect::<Vec<_>>());
    for node in &hooked {
        let seen = node.lock().expect("lock").clone();
        assert_eq!(seen.len() as i64, N / 2);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "each node's hooks in seq order: {seen:?}");
    }
    assert_unread_counts_exact(&store, &id).await;
}

async fn a_client_id_sent_concurrently_on_two_nodes_is_written_once(store: Arc<dyn Store>, db: Db) {
    let other = db.another_node().await;
    let id = create(&store, group("alice", &["bob"])).await;
    for round in 0..5 {
        let client_id = format!("retry-{round}");
        let tasks = (0..12).map(|n| {
            let store = if n % 2 == 0 { store.clone() } else { other.clone() };
            let new = with_client_id(text(&id, "alice", "same"), &client_id);
            tokio::spawn(async move { store.append_message(new, no_hook()).await })
        });
        let outcomes: Vec<AppendOutcome> =
            join_all(tasks).await.into_iter().map(|r| r.expect("task").expect("never an error")).collect();
        let originals: Vec<&Message> = outcomes
            .iter()
            .filter_map(|o| match o {
                AppendOutcome::Committed { message, .. } => Some(message),
                _ => None,
            })
            .collect();
        assert_eq!(originals.len(), 1, "exactly one commit: {outcomes:?}");
        for outcome in &outcomes {
            match outcome {
                AppendOutcome::Committed { .. } => {}
                AppendOutcome::Duplicate(message) => assert_eq!(message, originals[0]),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(seqs(&history(&store, &id).await), vec![1, 2, 3, 4, 5]);
    assert_eq!(unread_of(&store, &id, "bob").await, 5);
}

async fn concurrent_repeats_of_client_ids_on_one_node_commit_each_key_once(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    // Sent all at once, so that repeats share a commit group (where the backend has them).
    let tasks = (0..60).map(|n| {
        let store = store.clone();
        let new = with_client_id(text(&id, "alice", &format!("try {n}")), &format!("k{}", n % 6));
        tokio::spawn(async move { store.append_message(new, no_hook()).await })
    });
    let outcomes: Vec<AppendOutcome> =
        join_all(tasks).await.into_iter().map(|r| r.expect("task").expect("never an error")).collect();
    let mut originals: std::collections::BTreeMap<String, Message> = std::collections::BTreeMap::new();
    for outcome in &outcomes {
        if let AppendOutcome::Committed { message, .. } = outcome {
            let key = message.client_id.clone().expect("key");
            assert!(originals.insert(key, message.clone()).is_none(), "a key committed twice");
        }
    }
    assert_eq!(originals.len(), 6, "one commit per key");
    for outcome in &outcomes {
        match outcome {
            AppendOutcome::Committed { .. } => {}
            AppendOutcome::Duplicate(message) => {
                assert_eq!(Some(message), originals.get(message.client_id.as_deref().expect("key")));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seqs(&history(&store, &id).await), (1..=6).collect::<Vec<_>>());
    assert_eq!(unread_of(&store, &id, "bob").await, 6);
}

async fn a_system_message_needs_no_membership_and_counts_as_unread_for_everyone(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let id = create(&store, direct("alice", "bob", "alice|bob|")).await;
    store.block_user("alice", "bob", Timestamp::now()).await.expect("block");
    let mut new = text(&id, "system", "Order #981 was shipped");
    new.kind = MessageType::System;
    let outcome = append(&store, new).await;
    let AppendOutcome::Committed { message, recipients, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!((message.seq, message.kind, message.sender_id.as_str()), (1, MessageType::System, "system"));
    assert_eq!(recipients.len(), 2);
    assert!(recipients.iter().all(|r| r.unread_count == 1), "{recipients:?}");
    assert_eq!(unread_of(&store, &id, "alice").await, 1);
    assert_eq!(unread_of(&store, &id, "bob").await, 1);
    let mut new = text("nope", "system", "x");
    new.kind = MessageType::System;
    assert!(matches!(append(&store, new).await, AppendOutcome::NoConversation));
}

// ---------------------------------------------------------------------------------------
// SQLite only: a full disk in the middle of a commit group.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_full_disk_under_concurrent_sends_acks_nothing_missing_from_the_history_and_skips_no_seq() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite =
        Arc::new(SqliteStore::open(&dir.path().join("chatd.db"), Synchronous::Normal).expect("open"));
    let store: Arc<dyn Store> = sqlite.clone();
    let id = create(&store, group("alice", &["bob", "carol"])).await;
    send(&store, &id, "alice", "before the disk filled up").await;
    let pages = sqlite.page_count().await.expect("page count");
    sqlite.set_max_page_count(pages + 16).await.expect("cap");

    // Small messages sent in parallel with large conversations being created, so that
    // failures land in the middle of commit groups: once the cap is near, a creation fails
    // (SQLITE_FULL, with nothing written yet) and SQLite rolls the whole transaction back,
    // while the small messages after it in the same group still fit.
    let senders = (0..8).map(|n| {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..150 {
                let content = format!("{n}-{i}");
                if let Ok(AppendOutcome::Committed { message, .. }) =
                    store.append_message(text(&id, "alice", &content), no_hook()).await
                {
                    acked.push((message.id, message.seq));
                }
            }
            acked
        })
    });
    let creators = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut failed = 0;
            for _ in 0..60 {
                let mut new = group("carol", &["dave"]);
                new.metadata.insert("blob".into(), json!("x".repeat(40_000)));
                if store.create_conversation(new).await.is_err() {
                    failed += 1;
                }
            }
            failed
        })
    });
    let (senders, creators) = tokio::join!(join_all(senders), join_all(creators));
    let acked: Vec<(String, i64)> =
        senders.into_iter().flat_map(|sender| sender.expect("sender task")).collect();
    let failed: usize = creators.into_iter().map(|creator| creator.expect("creator task")).sum();
    assert!(failed > 0, "the disk never filled up: raise the load or lower the cap");

    sqlite.set_max_page_count(u64::from(u32::MAX)).await.expect("uncap");
    let messages = history(&store, &id).await;
    let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
    let expected: Vec<i64> = (1..=i64::try_from(messages.len()).expect("small")).collect();
    assert_eq!(seqs, expected, "no seq skipped");
    let in_history: BTreeSet<(String, i64)> = messages.iter().map(|m| (m.id.clone(), m.seq)).collect();
    for message in &acked {
        assert!(in_history.contains(message), "acked but not in the history: {message:?}");
    }
    assert_eq!(in_history.len(), acked.len() + 1, "everything in the history was acked");
    let after = send(&store, &id, "bob", "the disk has room again").await;
    assert_eq!(after.seq, i64::try_from(messages.len()).expect("small") + 1);
}
