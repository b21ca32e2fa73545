//! The push outbox: recording, claiming with leases, completing, retrying, dropping,
//! delaying and collapsing, pruning, and concurrent claimers.

use super::*;

store_tests!(
    push_jobs_are_recorded_and_listed_oldest_first,
    the_push_outbox_depth_counts_unfinished_jobs_leased_or_not,
    due_push_jobs_are_claimed_oldest_first_up_to_the_limit_and_not_again_while_leased,
    a_push_job_whose_lease_ran_out_is_claimed_again_with_its_attempt_counted,
    a_completed_push_job_is_never_claimed_again,
    a_retried_push_job_is_claimed_only_from_its_next_attempt_with_its_error,
    a_dropped_push_job_is_never_claimed_again,
    finished_push_jobs_are_pruned_within_the_limit_and_unfinished_ones_are_kept,
    a_worker_whose_lease_ran_out_cannot_finish_or_reschedule_the_newer_claim,
    concurrent_claimers_take_every_push_job_exactly_once,
    a_delayed_push_job_is_due_only_after_its_delay_and_a_newer_one_collapses_it,
);

async fn push_jobs_are_recorded_and_listed_oldest_first(store: Arc<dyn Store>, _db: Db) {
    store.enqueue_push(Vec::new()).await.expect("nothing to enqueue");
    let jobs: Vec<PushJob> = (1..=5)
        .map(|n| PushJob {
            id: new_id(),
            user_id: format!("user{n}"),
            conversation_id: "c".into(),
            message_id: format!("m{n}"),
            seq: n,
            created_at: Timestamp(1_000 + n),
        })
        .collect();
    store.enqueue_push(jobs[3..].to_vec()).await.expect("enqueue");
    store.enqueue_push(jobs[..3].to_vec()).await.expect("enqueue");
    assert_eq!(store.pending_push_jobs(100).await.expect("pending"), jobs);
    assert_eq!(store.pending_push_jobs(2).await.expect("pending"), jobs[..2].to_vec());
}

async fn the_push_outbox_depth_counts_unfinished_jobs_leased_or_not(store: Arc<dyn Store>, _db: Db) {
    assert_eq!(store.push_outbox_depth().await.expect("depth"), 0);
    let jobs = push_jobs(4);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(store.push_outbox_depth().await.expect("depth"), 4);
    let claimed = store.claim_push_jobs(2, LONG_LEASE).await.expect("claim");
    assert_eq!(store.push_outbox_depth().await.expect("depth"), 4, "leased jobs are still pending");
    assert!(store.complete_push_job(&claimed[0].job.id, claimed[0].attempt).await.expect("complete"));
    assert!(store.drop_push_job(&claimed[1].job.id, claimed[1].attempt, "gone").await.expect("drop"));
    assert_eq!(store.push_outbox_depth().await.expect("depth"), 2, "finished jobs are not");
}

/// A lease no test outlives.
const LONG_LEASE: Duration = Duration::from_secs(600);
/// A lease a test waits out with [`sleep_past_short_lease`].
const SHORT_LEASE: Duration = Duration::from_millis(50);

/// Sleeps until a [`SHORT_LEASE`] (or a delay as short) taken now has surely run out.
async fn sleep_past_short_lease() {
    tokio::time::sleep(SHORT_LEASE * 3).await;
}

/// `n` push jobs, oldest first, due long ago.
fn push_jobs(n: i64) -> Vec<PushJob> {
    (1..=n)
        .map(|n| PushJob {
            id: new_id(),
            user_id: format!("user{n}"),
            conversation_id: "c".into(),
            message_id: format!("m{n}"),
            seq: n,
            created_at: Timestamp(1_000 + n),
        })
        .collect()
}

async fn claim(store: &Arc<dyn Store>, limit: usize, lease: Duration) -> Vec<ClaimedPushJob> {
    store.claim_push_jobs(limit, lease).await.expect("claim")
}

fn jobs_of(claimed: &[ClaimedPushJob]) -> Vec<PushJob> {
    claimed.iter().map(|c| c.job.clone()).collect()
}

fn attempts_of(claimed: &[ClaimedPushJob]) -> Vec<u32> {
    claimed.iter().map(|c| c.attempt).collect()
}

async fn due_push_jobs_are_claimed_oldest_first_up_to_the_limit_and_not_again_while_leased(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let jobs = push_jobs(5);
    let not_due =
        PushJob { created_at: Timestamp::now().plus(Duration::from_secs(3600)), ..push_jobs(1).remove(0) };
    store.enqueue_push(vec![not_due.clone()]).await.expect("enqueue");
    store.enqueue_push(jobs[2..].to_vec()).await.expect("enqueue");
    store.enqueue_push(jobs[..2].to_vec()).await.expect("enqueue");
    assert!(claim(&store, 0, LONG_LEASE).await.is_empty(), "a limit of 0 claims nothing");

    let before = Timestamp::now();
    let first = claim(&store, 2, LONG_LEASE).await;
    let after = Timestamp::now();
    assert_eq!(jobs_of(&first), jobs[..2].to_vec());
    assert_eq!(attempts_of(&first), vec![1, 1]);
    for claimed in &first {
        assert_eq!(claimed.last_error, None);
        assert!(
            before.plus(LONG_LEASE) <= claimed.leased_until && claimed.leased_until <= after.plus(LONG_LEASE),
            "leased for the lease from the claim"
        );
    }

    let rest = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&rest), jobs[2..].to_vec(), "only due jobs not leased already");
    assert_eq!(attempts_of(&rest), vec![1, 1, 1]);
    assert!(claim(&store, 10, LONG_LEASE).await.is_empty(), "leased or not due yet: nothing to claim");

    let mut pending = jobs.clone();
    pending.push(not_due);
    assert_eq!(
        store.pending_push_jobs(100).await.expect("pending"),
        pending,
        "claimed jobs are still pending"
    );
}

async fn a_push_job_whose_lease_ran_out_is_claimed_again_with_its_attempt_counted(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let jobs = push_jobs(3);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(jobs_of(&claim(&store, 2, SHORT_LEASE).await), jobs[..2].to_vec());
    assert_eq!(jobs_of(&claim(&store, 1, LONG_LEASE).await), jobs[2..].to_vec());
    sleep_past_short_lease().await;

    let again = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&again), jobs[..2].to_vec(), "expired leases only");
    assert_eq!(attempts_of(&again), vec![2, 2]);
    assert!(claim(&store, 10, LONG_LEASE).await.is_empty());
}

async fn a_completed_push_job_is_never_claimed_again(store: Arc<dyn Store>, _db: Db) {
    let jobs = push_jobs(2);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(jobs_of(&claim(&store, 2, SHORT_LEASE).await), jobs);
    assert!(store.complete_push_job(&jobs[0].id, 1).await.expect("complete"));
    assert!(!store.complete_push_job(&jobs[0].id, 1).await.expect("complete"), "completed once only");
    assert!(!store.complete_push_job("no-such-job", 1).await.expect("complete"));
    sleep_past_short_lease().await;

    let again = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&again), jobs[1..].to_vec(), "the sent job's lease expiring does not matter");
    assert_eq!(attempts_of(&again), vec![2]);
    assert!(
        !store.retry_push_job(&jobs[0].id, 1, Timestamp(0), "late").await.expect("retry"),
        "a sent job is not revived"
    );
    assert!(claim(&store, 10, LONG_LEASE).await.is_empty());
    assert_eq!(store.pending_push_jobs(100).await.expect("pending"), jobs[1..].to_vec());
}

async fn a_retried_push_job_is_claimed_only_from_its_next_attempt_with_its_error(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let jobs = push_jobs(2);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(jobs_of(&claim(&store, 1, LONG_LEASE).await), jobs[..1].to_vec());
    let id = &jobs[0].id;

    let in_an_hour = Timestamp::now().plus(Duration::from_secs(3600));
    assert!(store.retry_push_job(id, 1, in_an_hour, "503 from the provider").await.expect("retry"));
    assert!(!store.retry_push_job("no-such-job", 1, in_an_hour, "x").await.expect("retry"));
    let others = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&others), jobs[1..].to_vec(), "not before its next attempt");

    let soon = Timestamp::now().plus(SHORT_LEASE);
    let long_error = "é".repeat(600);
    assert!(store.retry_push_job(id, 1, soon, &long_error).await.expect("retry"));
    sleep_past_short_lease().await;
    let again = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&again), jobs[..1].to_vec(), "due at its next attempt");
    assert_eq!(attempts_of(&again), vec![2], "the claim counts, not the retry");
    assert_eq!(again[0].last_error.as_deref(), Some("é".repeat(512).as_str()), "clipped to 1024 bytes");
}

async fn a_delayed_push_job_is_due_only_after_its_delay_and_a_newer_one_collapses_it(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let now = Timestamp::now();
    let job = |user: &str, seq: i64| PushJob {
        id: new_id(),
        user_id: user.into(),
        conversation_id: "c".into(),
        message_id: format!("m{seq}"),
        seq,
        created_at: now,
    };
    let (older, newer, other_user) = (job("bob", 1), job("bob", 2), job("carol", 3));
    store.enqueue_push_delayed(vec![older.clone(), newer.clone()], SHORT_LEASE).await.expect("enqueue");
    store.enqueue_push_delayed(vec![other_user.clone()], LONG_LEASE).await.expect("enqueue");
    assert!(claim(&store, 10, LONG_LEASE).await.is_empty(), "nothing due before the delay");
    assert!(store.newer_push_job(&older).await.expect("newer"), "bob's seq 2 collapses seq 1");
    assert!(!store.newer_push_job(&newer).await.expect("newer"), "nothing newer than seq 2");
    assert!(!store.newer_push_job(&other_user).await.expect("newer"), "other users do not count");
    sleep_past_short_lease().await;
    let claimed = claim(&store, 10, LONG_LEASE).await;
    assert_eq!(jobs_of(&claimed).len(), 2, "bob's two are due, carol's is not yet");
    assert!(store.complete_push_job(&newer.id, 1).await.expect("complete"));
    assert!(!store.newer_push_job(&older).await.expect("newer"), "a finished job collapses nothing");
}

async fn a_dropped_push_job_is_never_claimed_again(store: Arc<dyn Store>, _db: Db) {
    let jobs = push_jobs(2);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(jobs_of(&claim(&store, 2, SHORT_LEASE).await), jobs);
    assert!(store.drop_push_job(&jobs[0].id, 1, "the device is gone").await.expect("drop"));
    assert!(!store.drop_push_job(&jobs[0].id, 1, "again").await.expect("drop"), "dropped once only");
    assert!(!store.drop_push_job("no-such-job", 1, "x").await.expect("drop"));
    assert!(!store.retry_push_job(&jobs[0].id, 1, Timestamp(0), "x").await.expect("retry"), "not revived");
    assert!(!store.complete_push_job(&jobs[0].id, 1).await.expect("complete"), "not sent after all");
    sleep_past_short_lease().await;

    assert_eq!(jobs_of(&claim(&store, 10, LONG_LEASE).await), jobs[1..].to_vec());
    assert_eq!(store.pending_push_jobs(100).await.expect("pending"), jobs[1..].to_vec());
}

async fn finished_push_jobs_are_pruned_within_the_limit_and_unfinished_ones_are_kept(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let jobs = push_jobs(6);
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    assert_eq!(jobs_of(&claim(&store, 5, LONG_LEASE).await), jobs[..5].to_vec());
    for job in &jobs[..3] {
        assert!(store.complete_push_job(&job.id, 1).await.expect("complete"));
    }
    assert!(store.drop_push_job(&jobs[3].id, 1, "gone").await.expect("drop"));
    // jobs[4] is leased, jobs[5] waits: neither is finished.

    assert_eq!(store.prune_push_jobs(Timestamp(0), 100).await.expect("prune"), 0, "none finished that early");
    let cutoff = Timestamp::now().plus(Duration::from_secs(1));
    assert_eq!(store.prune_push_jobs(cutoff, 0).await.expect("prune"), 0);
    assert_eq!(store.prune_push_jobs(cutoff, 3).await.expect("prune"), 3);
    assert_eq!(
        store.prune_push_jobs(cutoff, 100).await.expect("prune"),
        1,
        "the dropped job was kept until now"
    );
    assert_eq!(store.prune_push_jobs(cutoff, 100).await.expect("prune"), 0);
    assert_eq!(store.pending_push_jobs(100).await.expect("pending"), jobs[4..].to_vec());
    assert_eq!(jobs_of(&claim(&store, 10, LONG_LEASE).await), jobs[5..].to_vec());
}

async fn a_worker_whose_lease_ran_out_cannot_finish_or_reschedule_the_newer_claim(
    store: Arc<dyn Store>,
    _db: Db,
) {
    let jobs = push_jobs(1);
    let id = &jobs[0].id;
    store.enqueue_push(jobs.clone()).await.expect("enqueue");
    let stale = claim(&store, 1, SHORT_LEASE).await;
    assert_eq!(attempts_of(&stale), vec![1]);
    sleep_past_short_lease().await;
    let fresh = claim(&store, 1, LONG_LEASE).await;
    assert_eq!(jobs_of(&fresh), jobs, "the lease ran out: claimed again");
    assert_eq!(attempts_of(&fresh), vec![2]);

    // The first worker finally finishes: whatever it decides is ignored.
    assert!(!store.complete_push_job(id, 1).await.expect("complete"), "stale complete");
    assert!(!store.retry_push_job(id, 1, Timestamp(0), "stale").await.expect("retry"), "stale retry");
    assert!(!store.drop_push_job(id, 1, "stale").await.expect("drop"), "stale drop");
    assert!(!store.complete_push_job(id, 3).await.expect("complete"), "a claim that never was");
    assert!(claim(&store, 1, LONG_LEASE).await.is_empty(), "still leased to the second worker");
    assert_eq!(store.pending_push_jobs(10).await.expect("pending"), jobs, "still unfinished");

    // The second worker's retry counts; once its retry is due, the third claim sees its error.
    let soon = Timestamp::now().plus(SHORT_LEASE);
    assert!(store.retry_push_job(id, 2, soon, "503").await.expect("retry"));
    assert!(!store.complete_push_job(id, 1).await.expect("complete"), "still stale");
    sleep_past_short_lease().await;
    let third = claim(&store, 1, LONG_LEASE).await;
    assert_eq!(attempts_of(&third), vec![3]);
    assert_eq!(third[0].last_error.as_deref(), Some("503"), "the stale retry's error was not kept");
    assert!(!store.drop_push_job(id, 2, "stale").await.expect("drop"));
    assert!(store.complete_push_job(id, 3).await.expect("complete"));
    assert!(store.pending_push_jobs(10).await.expect("pending").is_empty());
}

/// Runs `claimers` workers on each store, each claiming up to 7 jobs at a time (long lease)
/// and completing them, until nothing is left to claim; returns every claimed job's id
/// (repeats included). Each claim is checked to return at most 7 jobs, each a first attempt.
async fn claim_and_complete_concurrently(stores: &[Arc<dyn Store>], claimers: usize) -> Vec<String> {
    const LIMIT: usize = 7;
    let workers = stores.iter().flat_map(|store| {
        (0..claimers).map(move |_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut taken = Vec::new();
                loop {
                    let claimed = store.claim_push_jobs(LIMIT, LONG_LEASE).await?;
                    if claimed.is_empty() {
                        return Ok::<_, StoreError>(taken);
                    }
                    assert!(claimed.len() <= LIMIT, "claimed {} > {LIMIT}", claimed.len());
                    for job in claimed {
                        assert_eq!(job.attempt, 1, "{} claimed before", job.job.id);
                        assert!(
                            store.complete_push_job(&job.job.id, job.attempt).await?,
                            "{} was finished",
                            job.job.id
                        );
                        taken.push(job.job.id);
                    }
                }
            })
        })
    });
    let mut taken = Vec::new();
    for worker in join_all(workers.collect::<Vec<_>>()).await {
        taken.extend(worker.expect("claimer task").expect("claimer"));
    }
    taken
}

/// Enqueues `n` jobs, runs [`claim_and_complete_concurrently`] and checks each job was
/// claimed exactly once in total and none is left.
pub(super) async fn every_push_job_is_claimed_exactly_once(
    stores: &[Arc<dyn Store>],
    claimers: usize,
    n: i64,
) {
    let jobs = push_jobs(n);
    for batch in jobs.chunks(100) {
        stores[0].enqueue_push(batch.to_vec()).await.expect("enqueue");
    }
    let mut taken = claim_and_complete_concurrently(stores, claimers).await;
    taken.sort();
    let mut expected: Vec<String> = jobs.into_iter().map(|job| job.id).collect();
    expected.sort();
    assert_eq!(taken.len(), expected.len(), "claims in total");
    assert_eq!(taken, expected, "every job exactly once");
    for store in stores {
        assert!(claim(store, 10, LONG_LEASE).await.is_empty());
        assert!(store.pending_push_jobs(10).await.expect("pending").is_empty());
    }
}

async fn concurrent_claimers_take_every_push_job_exactly_once(store: Arc<dyn Store>, _db: Db) {
    every_push_job_is_claimed_exactly_once(&[store], 8, 300).await;
}
