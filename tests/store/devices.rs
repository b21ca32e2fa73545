//! Push devices: upserts, listing and removal per user, and the per-user device cap.

use super::*;

store_tests!(
    devices_are_upserted_listed_and_removed_per_user,
    registering_past_the_device_cap_replaces_the_least_recently_refreshed_device,
);

async fn devices_are_upserted_listed_and_removed_per_user(store: Arc<dyn Store>, _db: Db) {
    let device = |token: &str, endpoint: Option<&str>, keys: Option<JsonObject>, at| NewDevice {
        id: new_id(),
        user_id: "alice".into(),
        platform: Platform::Webpush,
        token: token.into(),
        endpoint: endpoint.map(Into::into),
        keys,
        created_at: Timestamp(at),
    };
    let first = store
        .upsert_device(
            device("t1", Some("https://push/1"), Some(object(json!({ "p256dh": "k", "auth": "a" }))), 1_000),
            10,
        )
        .await
        .expect("upsert");
    assert_eq!(
        (first.platform, first.token.as_str(), first.created_at),
        (Platform::Webpush, "t1", Timestamp(1_000))
    );
    let refreshed = store
        .upsert_device(
            device(
                "t1",
                Some("https://push/2"),
                Some(object(json!({ "p256dh": "k2", "auth": "a2" }))),
                2_000,
            ),
            10,
        )
        .await
        .expect("upsert");
    assert_eq!(
        (refreshed.id.as_str(), refreshed.created_at),
        (first.id.as_str(), Timestamp(1_000)),
        "same device"
    );
    assert_eq!(refreshed.endpoint.as_deref(), Some("https://push/2"));
    assert_eq!(refreshed.keys, Some(object(json!({ "p256dh": "k2", "auth": "a2" }))));
    let second = store.upsert_device(device("t2", None, None, 3_000), 10).await.expect("upsert");
    assert_eq!((second.endpoint.clone(), second.keys.clone()), (None, None));
    let mut bobs = device("t1", None, None, 4_000);
    bobs.user_id = "bob".into();
    let bobs = store.upsert_device(bobs, 10).await.expect("upsert");
    assert_ne!(bobs.id, first.id, "the token is per user");

    assert_eq!(store.devices("alice").await.expect("devices"), vec![refreshed.clone(), second.clone()]);
    assert!(!store.remove_device("alice", &bobs.id).await.expect("remove"), "not alice's");
    assert!(store.remove_device("alice", &first.id).await.expect("remove"));
    assert!(!store.remove_device("alice", &first.id).await.expect("remove"));
    assert_eq!(store.devices("alice").await.expect("devices"), vec![second]);
    assert_eq!(store.devices("bob").await.expect("devices"), vec![bobs]);
}

async fn registering_past_the_device_cap_replaces_the_least_recently_refreshed_device(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let device = |token: &str, at| NewDevice {
        id: new_id(),
        user_id: "alice".into(),
        platform: Platform::Fcm,
        token: token.into(),
        endpoint: None,
        keys: None,
        created_at: Timestamp(at),
    };
    for (token, at) in [("t1", 1_000), ("t2", 2_000), ("t3", 3_000)] {
        store.upsert_device(device(token, at), 3).await.expect("upsert");
    }
    // Refreshing t1 makes t2 the least recently registered or refreshed.
    store.upsert_device(device("t1", 4_000), 3).await.expect("refresh");
    store.upsert_device(device("t4", 5_000), 3).await.expect("upsert");
    let tokens = |devices: Vec<chatd::core::model::Device>| {
        devices.into_iter().map(|d| d.token).collect::<BTreeSet<_>>()
    };
    let kept = tokens(store.devices("alice").await.expect("devices"));
    assert_eq!(kept, BTreeSet::from(["t1".to_owned(), "t3".to_owned(), "t4".to_owned()]));
    // A lower cap (a restart with another flag) trims on the next registration.
    store.upsert_device(device("t5", 6_000), 2).await.expect("upsert");
    let kept = tokens(store.devices("alice").await.expect("devices"));
    assert_eq!(kept, BTreeSet::from(["t4".to_owned(), "t5".to_owned()]));
    let mut bobs = device("t1", 7_000);
    bobs.user_id = "bob".into();
    store.upsert_device(bobs, 1).await.expect("upsert");
    assert_eq!(store.devices("alice").await.expect("devices").len(), 2, "another user's cap is their own");
}
