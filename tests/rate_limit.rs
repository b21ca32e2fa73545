//! The `RateLimiter` contract, one suite run against both backends: every test of the suite
//! runs once on the node-local limiter and once on the Redis one (the machine's Redis on
//! 127.0.0.1:6379, keys under a prefix of the test's own), as `local::NAME` and `redis::NAME`.
//! Then what only the Redis limiter does: two nodes share one budget, keys expire once a
//! bucket is full again, and while Redis is down or hung the node-local limiter decides.

mod common;

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatd::core::error::RateLimited;
use chatd::core::ports::RateLimiter;
use chatd::limit::local::LocalRateLimiter;
use chatd::limit::redis::{CHECK_TIMEOUT, RETRY_AFTER_FAILURE, RedisRateLimiter};
use common::redis::{OwnRedis, unique_prefix};

const REDIS_URL: &str = "redis://127.0.0.1:6379";

// ---------------------------------------------------------------------------------------
// The two backends.

/// Builds a limiter of one backend for `per_second` writes with bursts of `burst`.
#[derive(Clone, Copy)]
enum Backend {
    Local,
    Redis,
}

impl Backend {
    async fn limiter(self, per_second: u32, burst: u32) -> Arc<dyn RateLimiter> {
        match self {
            Backend::Local => Arc::new(LocalRateLimiter::new(per_second, burst)),
            Backend::Redis => Arc::new(redis_limiter(REDIS_URL, &unique_prefix(), per_second, burst).await),
        }
    }
}

/// A Redis limiter at `url` with keys under `prefix`, falling back to a node-local one.
async fn redis_limiter(url: &str, prefix: &str, per_second: u32, burst: u32) -> RedisRateLimiter {
    let rate = NonZeroU32::new(per_second).expect("a rate");
    let fallback = Arc::new(LocalRateLimiter::new(per_second, burst));
    RedisRateLimiter::connect(url, prefix, rate, burst, fallback)
        .await
        .unwrap_or_else(|e| panic!("Redis is needed for these tests ({url}): {e}"))
}

async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    test(backend).await;
}

/// Declares each test once per backend.
macro_rules! limiter_tests {
    ($($name:ident),+ $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $name() {
                    super::run(super::Backend::Local, super::$name).await;
                }
            )+
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    super::run(super::Backend::Redis, super::$name).await;
                }
            )+
        }
    };
}

limiter_tests!(
    a_burst_is_admitted_then_refused_with_a_sane_retry_after,
    the_budget_refills_at_the_rate,
    each_user_has_a_budget_of_their_own,
);

/// `n` checks of `user` in a row: how many were admitted, and the refusals.
async fn checks(limiter: &dyn RateLimiter, user: &str, n: usize) -> (usize, Vec<RateLimited>) {
    let mut admitted = 0;
    let mut refused = Vec::new();
    for _ in 0..n {
        match limiter.check(user).await {
            Ok(()) => admitted += 1,
            Err(refusal) => refused.push(refusal),
        }
    }
    (admitted, refused)
}

// ---------------------------------------------------------------------------------------
// The contract.

async fn a_burst_is_admitted_then_refused_with_a_sane_retry_after(backend: Backend) {
    let limiter = backend.limiter(1, 5).await;
    let started = Instant::now();
    let (admitted, refused) = checks(&*limiter, "alice", 8).await;
    let took = started.elapsed();
    // The burst of 5, and no more within a second (plus one per second a stalled machine
    // took over the checks).
    let refills = (took + Duration::from_millis(50)).as_secs() as usize;
    assert!((5..=5 + refills).contains(&admitted), "admitted {admitted} of 8 in {took:?}");
    assert_eq!(refused.len(), 8 - admitted);
    for RateLimited { retry_after } in refused {
        // One write per second: the next one is due a second after the burst began, and the
        // checks took `took` of that second.
        assert!(
            retry_after + took > Duration::from_millis(500) && retry_after <= Duration::from_secs(1),
            "retry_after {retry_after:?} after {took:?}"
        );
    }
}

async fn the_budget_refills_at_the_rate(backend: Backend) {
    // 5 per second: one write every 200 ms.
    let limiter = backend.limiter(5, 2).await;
    let (admitted, refused) = checks(&*limiter, "alice", 3).await;
    assert_eq!((admitted, refused.len()), (2, 1));
    let retry_after = refused[0].retry_after;
    assert!(retry_after <= Duration::from_millis(200), "retry_after {retry_after:?}");

    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    limiter.check("alice").await.expect("one write has refilled");
    let again = limiter.check("alice").await.expect_err("only one");
    assert!(again.retry_after > Duration::from_millis(50), "{again:?}");

    tokio::time::sleep(Duration::from_millis(420)).await;
    let (admitted, _) = checks(&*limiter, "alice", 3).await;
    assert_eq!(admitted, 2, "a full bucket holds the burst, no more");
}

async fn each_user_has_a_budget_of_their_own(backend: Backend) {
    let limiter = backend.limiter(1, 3).await;
    assert_eq!(checks(&*limiter, "alice", 5).await.0, 3);
    assert_eq!(checks(&*limiter, "bob", 5).await.0, 3, "alice's sends do not count against bob");
}

// ---------------------------------------------------------------------------------------
// The node-local limiter only.

#[tokio::test]
async fn a_rate_of_zero_admits_everything() {
    let limiter = LocalRateLimiter::new(0, 1);
    assert_eq!(checks(&limiter, "alice", 1000).await.0, 1000);
}

// ---------------------------------------------------------------------------------------
// The Redis limiter only.

#[tokio::test]
async fn two_nodes_share_one_budget() {
    let prefix = unique_prefix();
    let node_a = redis_limiter(REDIS_URL, &prefix, 1, 6).await;
    let node_b = redis_limiter(REDIS_URL, &prefix, 1, 6).await;
    let (mut admitted, mut refused_on) = (0, [0, 0]);
    let started = Instant::now();
    for i in 0..20 {
        let node = if i % 2 == 0 { &node_a } else { &node_b };
        match node.check("alice").await {
            Ok(()) => admitted += 1,
            Err(_) => refused_on[i % 2] += 1,
        }
    }
    // 6, or 7 if the test straddled a refill (one more per second a stalled machine took);
    // each node alone would admit 6.
    let refills = started.elapsed().as_secs() as usize;
    assert!((6..=7 + refills).contains(&admitted), "admitted {admitted} of 20 across two nodes");
    assert!(refused_on[0] > 0 && refused_on[1] > 0, "both nodes refuse: {refused_on:?}");
}

#[tokio::test]
async fn a_users_key_expires_once_the_bucket_is_full_again() {
    let prefix = unique_prefix();
    // One write per second: a second of slack for a busy machine between a write and the
    // look at its key.
    let limiter = redis_limiter(REDIS_URL, &prefix, 1, 3).await;
    let mut redis = redis_connection(REDIS_URL).await;
    let key = limiter.key("alice");
    assert_eq!(key, format!("{prefix}:rl:alice"));

    let first = Instant::now();
    limiter.check("alice").await.expect("admitted");
    let ttl = pttl(&mut redis, &key).await;
    assert!((1..=1000).contains(&ttl), "one write at 1/s refills in 1 s: PTTL {ttl}");
    limiter.check("alice").await.expect("admitted");
    limiter.check("alice").await.expect("admitted");
    let ttl = pttl(&mut redis, &key).await;
    // Three writes refill in 3 s, less what has refilled since the first (and a few ms for
    // the rounding of two clocks).
    let lowest = 3000 - first.elapsed().as_millis() as i64 - 10;
    assert!((lowest..=3000).contains(&ttl), "three writes refill in 3 s: PTTL {ttl}");

    tokio::time::sleep(Duration::from_millis(3050)).await;
    assert_eq!(pttl(&mut redis, &key).await, -2, "gone: a full bucket needs no key");
}

#[tokio::test]
async fn with_redis_down_the_node_local_limiter_decides() {
    let mut redis = OwnRedis::start().await;
    let limiter = redis_limiter(&redis.url(), &unique_prefix(), 1, 3).await;
    assert_eq!(checks(&limiter, "alice", 2).await.0, 2, "counted in Redis");

    redis.kill();
    let started = Instant::now();
    let (admitted, refused) = checks(&limiter, "alice", 5).await;
    // Fail open to this node's own budget (which Redis' two writes did not touch), not to
    // no limit at all, and without waiting on Redis for every check.
    assert_eq!((admitted, refused.len()), (3, 2), "the local burst of 3");
    assert!(refused.iter().all(|r| r.retry_after <= Duration::from_secs(1)), "{refused:?}");
    assert!(started.elapsed() < CHECK_TIMEOUT * 2 + Duration::from_millis(500), "{:?}", started.elapsed());

    // Back in Redis once it answers again (checks skip Redis for a while after a failure,
    // and the connection is re-established in the background).
    redis.restart().await;
    let mut connection = redis_connection(&redis.url()).await;
    // At most 30 s (generous: the reconnection runs in the background on a busy machine).
    let deadline = Instant::now() + RETRY_AFTER_FAILURE * 30;
    for attempt in 0.. {
        let user = format!("bob{attempt}");
        limiter.check(&user).await.expect("admitted");
        if pttl(&mut connection, &limiter.key(&user)).await > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "budgets never went back to Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_hung_redis_costs_one_check_timeout_not_one_per_check() {
    let redis = OwnRedis::start().await;
    let limiter = redis_limiter(&redis.url(), &unique_prefix(), 100, 100).await;
    limiter.check("alice").await.expect("admitted");

    // Redis accepts the command and does not answer for 3 s.
    let mut connection = redis_connection(&redis.url()).await;
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query_async(&mut connection)
        .await
        .expect("pause");
    let started = Instant::now();
    for _ in 0..20 {
        limiter.check("alice").await.expect("admitted by the local limiter");
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= CHECK_TIMEOUT, "the first check waited for Redis: {elapsed:?}");
    // One timeout per check would be 20 of them; a busy machine may straddle the skip window
    // once more (a second timeout) and stall a little.
    assert!(elapsed < CHECK_TIMEOUT * 6, "the others did not: {elapsed:?}");
}

async fn redis_connection(url: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(url).expect("redis url").get_multiplexed_async_connection().await.expect("redis")
}

/// Milliseconds until `key` expires; -2 when it does not exist, -1 when it never expires.
async fn pttl(redis: &mut ::redis::aio::MultiplexedConnection, key: &str) -> i64 {
    ::redis::cmd("PTTL").arg(key).query_async(redis).await.expect("PTTL")
}

/// A node on Redis shares one connection among its message limiter and its five event
/// budgets (#17: it opened one per limiter): counted with `CLIENT LIST` on a Redis of the
/// test's own, a node holds the bus's two, presence's one and the limiters' one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shares_one_redis_connection_among_all_its_limiters() {
    let redis = OwnRedis::start().await;
    let url = redis.url();
    let _server = common::TestServer::start_with(|config| {
        config.redis = Some(chatd::config::RedisConfig {
            url,
            prefix: unique_prefix(),
            presence_ttl: Duration::from_secs(30),
        });
    })
    .await;
    let mut connection = redis_connection(&redis.url()).await;
    let clients: String =
        ::redis::cmd("CLIENT").arg("LIST").query_async(&mut connection).await.expect("CLIENT LIST");
    // This test's own connection is one of them.
    let node = clients.lines().count() - 1;
    assert!(node <= 4, "the node holds {node} Redis connections:\n{clients}");
}
