//! Conversations: creation (direct keys, also on two nodes at once), lookup, membership
//! kinds, listing with a cursor, updates, and durability across reopening the store.

use super::*;

store_tests!(
    ping_answers,
    a_group_is_created_with_its_members_oldest_first,
    a_repeated_direct_key_returns_the_existing_conversation,
    a_direct_conversation_created_on_two_nodes_at_once_exists_once,
    an_unknown_conversation_is_none_and_a_non_members_unread_count_is_zero,
    membership_tells_no_conversation_not_member_and_member_with_kind,
    conversations_are_listed_newest_activity_first_with_a_cursor,
    update_conversation_replaces_only_the_given_fields,
    everything_survives_reopening_the_store,
    all_conversations_are_listed_newest_activity_first_with_a_cursor,
);

async fn ping_answers(store: Arc<dyn Store>, _db: Db) {
    store.ping().await.expect("ping");
}

async fn a_group_is_created_with_its_members_oldest_first(store: Arc<dyn Store>, _db: Db) {
    let mut new = group("alice", &["bob", "carol"]);
    new.context = Some("team:7".into());
    new.metadata = object(json!({ "topic": "launch", "n": 1 }));
    let created_at = new.created_at;
    let created = store.create_conversation(new.clone()).await.expect("create").expect("no block");
    assert!(created.created);
    assert_eq!(created.id, new.id);

    let conversation = store.conversation(&created.id, "bob").await.expect("read").expect("exists");
    assert_eq!(conversation.kind, ConversationType::Group);
    assert_eq!(conversation.name.as_deref(), Some("team"));
    assert_eq!(conversation.context.as_deref(), Some("team:7"));
    assert_eq!(conversation.metadata, new.metadata);
    assert_eq!(conversation.created_at, created_at);
    assert_eq!((conversation.last_seq, conversation.last_message.is_none()), (0, true));
    assert_eq!(conversation.last_message_at, None);
    assert_eq!(conversation.unread_count, 0);
    let members: Vec<(&str, Role, i64, bool)> = conversation
        .members
        .iter()
        .map(|m| (m.user_id.as_str(), m.role, m.last_read_seq, m.notifications))
        .collect();
    assert_eq!(
        members,
        vec![
            ("alice", Role::Owner, 0, true),
            ("bob", Role::Member, 0, true),
            ("carol", Role::Member, 0, true)
        ]
    );
    assert!(conversation.members.iter().all(|m| m.joined_at == created_at));
}

async fn a_repeated_direct_key_returns_the_existing_conversation(store: Arc<dyn Store>, _db: Db) {
    let first = store
        .create_conversation(direct("alice", "bob", "alice|bob|product:981"))
        .await
        .expect("first")
        .expect("no block");
    assert!(first.created);
    let again = store
        .create_conversation(direct("bob", "alice", "alice|bob|product:981"))
        .await
        .expect("again")
        .expect("no block");
    assert_eq!((again.id.as_str(), again.created), (first.id.as_str(), false));
    let other = store
        .create_conversation(direct("alice", "bob", "alice|bob|product:982"))
        .await
        .expect("other")
        .expect("no block");
    assert!(other.created);
    assert_ne!(other.id, first.id);
    let conversation = store.conversation(&first.id, "alice").await.expect("read").expect("exists");
    assert_eq!(conversation.kind, ConversationType::Direct);
    assert!(conversation.private_preview, "created with private_preview");
    assert_eq!(conversation.context.as_deref(), Some("product:981"));
}

async fn a_direct_conversation_created_on_two_nodes_at_once_exists_once(store: Arc<dyn Store>, db: Db) {
    let other = db.another_node().await;
    let attempts = (0..16).map(|n| {
        let node = if n % 2 == 0 { store.clone() } else { other.clone() };
        tokio::spawn(async move { node.create_conversation(direct("alice", "bob", "alice|bob|")).await })
    });
    let results: Vec<_> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("task").expect("create").expect("no block"))
        .collect();
    let ids: BTreeSet<&str> = results.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one conversation: {results:?}");
    assert_eq!(results.iter().filter(|c| c.created).count(), 1);
    let heads = store.conversation_heads("alice").await.expect("heads");
    assert_eq!(heads.len(), 1);
}

async fn an_unknown_conversation_is_none_and_a_non_members_unread_count_is_zero(
    store: Arc<dyn Store>,
    _db: Db,
) {
    assert!(store.conversation("nope", "alice").await.expect("read").is_none());
    let id = create(&store, group("alice", &["bob"])).await;
    send(&store, &id, "alice", "hi").await;
    assert_eq!(unread_of(&store, &id, "bob").await, 1);
    assert_eq!(unread_of(&store, &id, "mallory").await, 0);
}

async fn membership_tells_no_conversation_not_member_and_member_with_kind(store: Arc<dyn Store>, _db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    assert!(matches!(store.membership("nope", "alice").await.expect("m"), Membership::NoConversation));
    assert!(matches!(store.membership(&id, "mallory").await.expect("m"), Membership::NotMember));
    match store.membership(&id, "alice").await.expect("m") {
        Membership::Member { member, kind, .. } => {
            assert_eq!(
                (member.user_id.as_str(), member.role, kind),
                ("alice", Role::Owner, ConversationType::Group)
            );
        }
        other => panic!("{other:?}"),
    }
}

async fn conversations_are_listed_newest_activity_first_with_a_cursor(store: Arc<dyn Store>, _db: Db) {
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut new = group("alice", &["bob"]);
        new.created_at = Timestamp(1_000 + n);
        ids.push(create(&store, new).await);
    }
    // Two conversations with the same activity time are ordered by id, descending.
    let mut tie = group("alice", &["bob"]);
    tie.created_at = Timestamp(1_004);
    ids.push(create(&store, tie).await);
    create(&store, group("carol", &[])).await;

    let listed: Vec<String> = store
        .conversations_of("alice", None, 100, None)
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect();
    let mut expected = vec![ids[5].clone(), ids[4].clone(), ids[3].clone(), ids[2].clone(), ids[1].clone()];
    expected.push(ids[0].clone());
    if ids[4] > ids[5] {
        expected.swap(0, 1);
    }
    assert_eq!(listed, expected);

    // A message moves its conversation to the top, with the message and the viewer's count.
    let message = send(&store, &ids[0], "bob", "bump").await;
    let page = store.conversations_of("alice", None, 2, None).await.expect("page");
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].id, ids[0]);
    assert_eq!(page[0].last_message.as_ref(), Some(&message));
    assert_eq!(page[0].last_message_at, Some(message.created_at));
    assert_eq!(page[0].unread_count, 1);
    assert_eq!(page[0].members.len(), 2);

    // Paging with the cursor of the last item walks the rest without repeats.
    let mut walked = vec![page[0].id.clone(), page[1].id.clone()];
    let mut cursor = ActivityCursor {
        activity_at: page[1].last_message_at.unwrap_or(page[1].created_at),
        id: page[1].id.clone(),
    };
    loop {
        let next = store.conversations_of("alice", Some(cursor.clone()), 2, None).await.expect("page");
        let Some(last) = next.last() else { break };
        cursor = ActivityCursor {
            activity_at: last.last_message_at.unwrap_or(last.created_at),
            id: last.id.clone(),
        };
        walked.extend(next.iter().map(|c| c.id.clone()));
    }
    let all: Vec<String> = store
        .conversations_of("alice", None, 100, None)
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(walked, all);
    assert_eq!(all.len(), 6);
}

async fn update_conversation_replaces_only_the_given_fields(store: Arc<dyn Store>, _db: Db) {
    let mut new = group("alice", &[]);
    new.metadata = object(json!({ "a": 1 }));
    let id = create(&store, new).await;
    let rename = ConversationUpdate { name: Some("renamed".into()), ..Default::default() };
    assert!(store.update_conversation(&id, rename).await.expect("update"));
    let read = store.conversation(&id, "alice").await.expect("read").expect("exists");
    assert_eq!((read.name.as_deref(), read.metadata.clone()), (Some("renamed"), object(json!({ "a": 1 }))));
    assert!(!read.private_preview);
    let redescribe =
        ConversationUpdate { metadata: Some(object(json!({ "b": [1, 2] }))), ..Default::default() };
    assert!(store.update_conversation(&id, redescribe).await.expect("update"));
    let read = store.conversation(&id, "alice").await.expect("read").expect("exists");
    assert_eq!((read.name.as_deref(), read.metadata), (Some("renamed"), object(json!({ "b": [1, 2] }))));
    let private = ConversationUpdate { private_preview: Some(true), ..Default::default() };
    assert!(store.update_conversation(&id, private).await.expect("update"));
    let read = store.conversation(&id, "alice").await.expect("read").expect("exists");
    assert!(read.private_preview, "private_preview set");
    assert_eq!(read.name.as_deref(), Some("renamed"), "the other fields kept");
    let listed = store.conversations_of("alice", None, 10, None).await.expect("list");
    assert!(listed.iter().find(|c| c.id == id).expect("listed").private_preview, "listed with the flag");
    let rename = ConversationUpdate { name: Some("x".into()), ..Default::default() };
    assert!(!store.update_conversation("nope", rename).await.expect("update"));
}

async fn everything_survives_reopening_the_store(store: Arc<dyn Store>, db: Db) {
    let id = create(&store, group("alice", &["bob"])).await;
    let sent = send(&store, &id, "alice", "durable").await;
    store.mark_read(&id, "bob", 1).await.expect("read");
    let before = store.conversation(&id, "bob").await.expect("read").expect("exists");
    drop(store);
    let reopened = db.another_node().await;
    assert_eq!(reopened.conversation(&id, "bob").await.expect("read"), Some(before));
    assert_eq!(history(&reopened, &id).await, vec![sent]);
    assert_eq!(send(&reopened, &id, "bob", "next").await.seq, 2);
}

async fn all_conversations_are_listed_newest_activity_first_with_a_cursor(store: Arc<dyn Store>, _db: Db) {
    let first = create(&store, group("alice", &["bob"])).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = create(&store, direct("carol", "dave", "carol|dave|")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = create(&store, group("erin", &[])).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    send(&store, &first, "bob", "activity").await;

    let all = store.all_conversations(None, 10).await.expect("all");
    let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), third.as_str(), second.as_str()]);
    assert!(all.iter().all(|c| c.unread_count == 0), "nobody's unread count");
    assert_eq!(all[0].members.len(), 2);
    assert_eq!(all[0].last_message.as_ref().map(|m| m.seq), Some(1));

    let page = store.all_conversations(None, 2).await.expect("page");
    let last = page.last().expect("two");
    let cursor =
        ActivityCursor { activity_at: last.last_message_at.unwrap_or(last.created_at), id: last.id.clone() };
    let rest = store.all_conversations(Some(cursor), 10).await.expect("rest");
    assert_eq!(rest.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [second.as_str()]);
}
