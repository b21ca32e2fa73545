//! Background work: every long-lived loop of a node (bus and presence connections, the hub's
//! relay and sweep, ban following, the PostgreSQL group writer, the push worker, housekeeping,
//! backend probes, the metrics listener) is started here with a name. One cancellation stops
//! them all at shutdown, and a loop that panics is logged with its name instead of vanishing.
//!
//! Short-lived work tied to one request or connection (a typing timer, a notification stream,
//! a rebuild after a bus loss) is not a background loop and is spawned where it happens. The
//! SQLite writer is an OS thread, not a task (its statements block), and ends when its store
//! is dropped.

use std::future::Future;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The node's background loops. Cheap to clone; clones share the loops.
#[derive(Clone, Default)]
pub struct Tasks {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// An empty set, not cancelled.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `work` until it ends or the set is stopped; `name` names it in logs. The returned
    /// handle lets an owner abort it early (e.g. when the owner is dropped).
    pub fn spawn<F>(&self, name: &'static str, work: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = work => {}
            }
        });
        let abort = task.abort_handle();
        self.tracker.spawn(async move {
            if let Err(err) = task.await
                && err.is_panic()
            {
                tracing::error!(task = name, error = %err, "a background task panicked");
            }
        });
        abort
    }

    /// Whether [`Tasks::stop`] has begun.
    pub fn stopping(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Stops every loop and waits up to `grace` for them to end; returns whether all did.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn stopping_ends_every_loop_and_a_panic_does_not_take_the_others_down() {
        let tasks = Tasks::new();
        let ended = Arc::new(AtomicBool::new(false));
        tasks.spawn("forever", {
            let ended = ended.clone();
            async move {
                struct Flag(Arc<AtomicBool>);
                impl Drop for Flag {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                let _flag = Flag(ended);
                std::future::pending::<()>().await;
            }
        });
        tasks.spawn("panics", async { panic!("on purpose") });
        tokio::task::yield_now().await;
        assert!(!ended.load(Ordering::SeqCst));
        assert!(tasks.stop(Duration::from_secs(5)).await, "every loop ended");
        assert!(ended.load(Ordering::SeqCst), "the pending loop was dropped");
        assert!(tasks.stopping());
    }
}
