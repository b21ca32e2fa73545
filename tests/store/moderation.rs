//! Moderation: bans, operator disconnect marks and blocks.

use super::*;

store_tests!(
    bans_are_recorded_listed_and_lifted,
    disconnect_marks_keep_the_latest_per_user_and_are_read_from_a_time_on,
    blocks_are_recorded_per_blocker_and_found_either_way,
    a_blocked_pair_cannot_append_to_their_direct_conversation_either_way,
    blocks_leave_group_conversations_alone,
    appends_return_whom_each_recipient_blocks_among_the_members,
    contacts_leave_out_users_blocked_either_way,
    no_conversation_is_created_or_joined_across_a_block,
);

async fn no_conversation_is_created_or_joined_across_a_block(store: Arc<dyn Store>, _db: Db) {
    assert!(store.block_user("alice", "mallory", Timestamp::now()).await.expect("block"));
    // A group whose owner one of its members blocks: refused, nothing written.
    let refused = store.create_conversation(group("mallory", &["alice", "bob"])).await.expect("create");
    assert!(refused.is_none(), "{refused:?}");
    assert!(store.conversation_heads("bob").await.expect("heads").is_empty(), "nothing was written");
    // A direct pair either way.
    let direct = |a: &str, b: &str| NewConversation {
        direct_key: Some(format!("{a}|{b}")),
        kind: ConversationType::Direct,
        ..group(a, &[b])
    };
    assert!(store.create_conversation(direct("mallory", "alice")).await.expect("create").is_none());
    assert!(store.create_conversation(direct("alice", "mallory")).await.expect("create").is_none());
    // Adding the blocker: refused, nobody added (not even bob).
    let id = create(&store, group("mallory", &["carol"])).await;
    let added = store
        .add_members(&id, vec!["bob".into(), "alice".into()], Role::Member, Timestamp::now(), "mallory")
        .await
        .expect("add");
    assert!(added.is_none(), "{added:?}");
    assert!(store.conversation_heads("bob").await.expect("heads").is_empty(), "nobody was added");
    // The blocker herself may share a group with the user she blocks.
    let hers = store.create_conversation(group("alice", &["mallory"])).await.expect("create");
    assert!(hers.is_some_and(|created| created.created));
    let added = store.add_members(&id, vec!["bob".into()], Role::Member, Timestamp::now(), "mallory").await;
    assert_eq!(added.expect("add"), Some(vec!["bob".to_owned()]));
}

async fn bans_are_recorded_listed_and_lifted(store: Arc<dyn Store>, db: Db) {
    assert!(store.banned_users().await.expect("bans").is_empty());
    assert!(store.ban_user("mallory", Some("spam".into()), Timestamp::now()).await.expect("ban"));
    assert!(!store.ban_user("mallory", None, Timestamp::now()).await.expect("ban again"), "not new");
    assert!(store.ban_user("eve", None, Timestamp::now()).await.expect("ban"));
    assert_eq!(store.banned_users().await.expect("bans"), vec!["eve", "mallory"]);
    assert_eq!(db.another_node().await.banned_users().await.expect("bans"), vec!["eve", "mallory"]);
    assert!(store.unban_user("mallory").await.expect("unban"));
    assert!(!store.unban_user("mallory").await.expect("unban again"), "nothing left to lift");
    assert_eq!(store.banned_users().await.expect("bans"), vec!["eve"]);
}

async fn disconnect_marks_keep_the_latest_per_user_and_are_read_from_a_time_on(
    store: Arc<dyn Store>,
    db: Db,
) {
    let now = Timestamp::now().millis();
    let marks = |mut found: Vec<(String, Timestamp)>| {
        found.sort();
        found
    };
    assert!(store.disconnected_since(Timestamp(0)).await.expect("marks").is_empty());
    store.mark_disconnected("mallory", Timestamp(now - 10_000)).await.expect("mark");
    store.mark_disconnected("eve", Timestamp(now - 1_000)).await.expect("mark");
    // An earlier mark never replaces a later one.
    store.mark_disconnected("eve", Timestamp(now - 5_000)).await.expect("mark");
    assert_eq!(
        marks(store.disconnected_since(Timestamp(now - 60_000)).await.expect("marks")),
        [("eve".to_owned(), Timestamp(now - 1_000)), ("mallory".to_owned(), Timestamp(now - 10_000))]
    );
    assert_eq!(
        db.another_node().await.disconnected_since(Timestamp(now - 5_000)).await.expect("marks"),
        [("eve".to_owned(), Timestamp(now - 1_000))],
        "another node reads the same marks"
    );
    // A later mark replaces the user's earlier one; marks older than a day are pruned.
    store.mark_disconnected("mallory", Timestamp(now)).await.expect("mark");
    store.mark_disconnected("old", Timestamp(now - 2 * 86_400_000)).await.expect("mark");
    store.mark_disconnected("eve", Timestamp(now)).await.expect("mark");
    assert_eq!(
        marks(store.disconnected_since(Timestamp(0)).await.expect("marks")),
        [("eve".to_owned(), Timestamp(now)), ("mallory".to_owned(), Timestamp(now))]
    );
}

async fn blocks_are_recorded_per_blocker_and_found_either_way(store: Arc<dyn Store>, _db: Db) {
    let first = Timestamp(Timestamp::now().millis() - 1000);
    assert!(store.block_user("alice", "bob", first).await.expect("block"));
    assert!(!store.block_user("alice", "bob", Timestamp::now()).await.expect("block again"), "not new");
    assert!(store.block_user("alice", "carol", Timestamp::now()).await.expect("block"));
    let blocks = store.blocks_of("alice").await.expect("blocks");
    assert_eq!(blocks.iter().map(|b| b.user_id.as_str()).collect::<Vec<_>>(), ["bob", "carol"]);
    assert_eq!(blocks[0], Block { user_id: "bob".into(), created_at: first }, "the first block's time stays");
    assert!(store.blocks_of("bob").await.expect("blocks").is_empty(), "blocks are one-way records");

    let others: Vec<String> = ["bob", "carol", "dave"].map(String::from).to_vec();
    let mut among = store.blocked_among("alice", &others).await.expect("among");
    among.sort();
    assert_eq!(among, ["bob", "carol"]);
    let among = store.blocked_among("bob", &["alice".into(), "dave".into()]).await.expect("among");
    assert_eq!(among, ["alice"], "found from the blocked side too");
    assert!(store.blocked_among("alice", &[]).await.expect("among").is_empty());

    assert!(store.unblock_user("alice", "bob").await.expect("unblock"));
    assert!(!store.unblock_user("alice", "bob").await.expect("unblock again"));
    assert!(!store.unblock_user("bob", "carol").await.expect("not a block"));
    assert!(store.blocked_among("bob", &["alice".into()]).await.expect("among").is_empty());
}

async fn a_blocked_pair_cannot_append_to_their_direct_conversation_either_way(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let id = create(&store, direct("alice", "bob", "alice|bob|")).await;
    send(&store, &id, "alice", "before").await;
    store.block_user("bob", "alice", Timestamp::now()).await.expect("block");
    assert!(matches!(append(&store, text(&id, "alice", "x")).await, AppendOutcome::Blocked));
    assert!(matches!(append(&store, text(&id, "bob", "x")).await, AppendOutcome::Blocked), "both ways");
    assert_eq!(last_seq(&store, &id).await, 1, "a refused append consumes no seq");
    assert_eq!(unread_of(&store, &id, "bob").await, 1);
    store.unblock_user("bob", "alice").await.expect("unblock");
    assert_eq!(send(&store, &id, "alice", "after").await.seq, 2);
}

async fn blocks_leave_group_conversations_alone(store: Arc<dyn Store>, _db: Db) {
    let pair = create(&store, group("alice", &["bob"])).await;
    let team = create(&store, group("alice", &["bob", "carol"])).await;
    store.block_user("alice", "bob", Timestamp::now()).await.expect("block");
    assert_eq!(send(&store, &pair, "bob", "hi").await.seq, 1, "a two-member group is still a group");
    assert_eq!(send(&store, &team, "alice", "hi").await.seq, 1);
}

async fn appends_return_whom_each_recipient_blocks_among_the_members(store: Arc<dyn Store>, _db: Db) {
    let team = create(&store, group("alice", &["bob", "carol"])).await;
    store.block_user("alice", "bob", Timestamp::now()).await.expect("block");
    store.block_user("alice", "dave", Timestamp::now()).await.expect("block a non-member");
    let blocks_of = |outcome: AppendOutcome| {
        let AppendOutcome::Committed { mut recipients, .. } = outcome else { panic!("{outcome:?}") };
        recipients.sort_by(|a, b| a.member.user_id.cmp(&b.member.user_id));
        recipients.into_iter().map(|r| (r.member.user_id, r.blocks)).collect::<Vec<_>>()
    };
    let none = Vec::<String>::new;
    let expected =
        vec![("alice".into(), vec!["bob".to_owned()]), ("bob".into(), none()), ("carol".into(), none())];
    assert_eq!(blocks_of(append(&store, text(&team, "bob", "one")).await), expected);
    // A block made between two appends is seen by the next one.
    store.block_user("carol", "alice", Timestamp::now()).await.expect("block");
    let expected = vec![
        ("alice".into(), vec!["bob".to_owned()]),
        ("bob".into(), none()),
        ("carol".into(), vec!["alice".to_owned()]),
    ];
    assert_eq!(blocks_of(append(&store, text(&team, "bob", "two")).await), expected);
}

async fn contacts_leave_out_users_blocked_either_way(store: Arc<dyn Store>, _db: Db) {
    create(&store, group("alice", &["bob", "carol"])).await;
    create(&store, direct("alice", "dave", "alice|dave|")).await;
    store.block_user("alice", "bob", Timestamp::now()).await.expect("block");
    store.block_user("dave", "alice", Timestamp::now()).await.expect("block");
    assert_eq!(store.contacts("alice").await.expect("contacts"), vec!["carol"]);
    assert_eq!(store.contacts("bob").await.expect("contacts"), vec!["carol"]);
    let mut contacts = store.contacts("carol").await.expect("contacts");
    contacts.sort();
    assert_eq!(contacts, vec!["alice", "bob"], "others are unaffected");
}
