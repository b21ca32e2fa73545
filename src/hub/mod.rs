//! The realtime hub: one per node, under every realtime transport (Socket.IO, plain
//! WebSocket, the SSE notification stream, and every surface to come). It keeps
//!
//! - **one registry** of this node's connections, the user of each and the conversations
//!   each follows ([`registry`]); the node watches a bus topic while a connection needs it;
//! - **one bus relay**: every bus message is applied here, in order, once per node;
//!   a delivery is encoded at most once per wire format ([`Outgoing`]) and queued to each
//!   recipient's [`Sink`], whose writer sends everything queued for it in one write;
//! - **one connection lifecycle**: [`Hub::register`] (before anything can be missed) →
//!   [`Hub::open`] (the user's conversations read from the store, re-checked against
//!   membership changes the bus made meanwhile) → events ([`Hub::in_flight`]) →
//!   [`Hub::close`];
//! - **one policy for lost bus messages**: when the bus says it may have dropped messages
//!   (a reconnect) or the relay fell behind, every connection's subscriptions are rebuilt
//!   from the store and the connection gets `sync:required` with its conversations' newest
//!   seqs, so it `sync`s what it missed. The same on every transport; nothing is lost
//!   silently.
//!
//! A transport only frames: it decodes requests into client events (`transport::dispatch`)
//! and implements [`Sink`] (write pre-encoded frames, close).

mod outgoing;
mod registry;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

pub use self::outgoing::Outgoing;
use self::registry::{Registry, Target, TopicChanges};
use crate::core::model::User;
use crate::core::ports::{Bus, Store};
use crate::core::ports::{BusMessage, DisconnectReason};
use crate::core::server_events::{Ready, ServerEvent, SyncRequired};
use crate::core::telemetry::{self, Transport};
use crate::core::time::Timestamp;
use crate::core::{Chat, ChatError};
use crate::tasks::Tasks;

/// How a transport writes to one of its connections. Called under the hub's registry lock:
/// implementations only queue (or mark) and wake the connection's writer, never wait.
pub trait Sink: Send + Sync + 'static {
    /// Queues `event` for the connection. Frames queued while the connection's writer is busy
    /// leave together, in order, in one write. Returns whether it counts as delivered in
    /// `chatd_deliveries_total` (false: dropped, or counted by the transport when written).
    fn send(&self, event: &Arc<Outgoing>) -> bool;

    /// Ends the connection for `reason` (see [`Close`] for what each transport does).
    fn close(&self, reason: Close);

    /// One keepalive round, every `--ws-ping-interval` (ping, or close a silent client).
    /// Transports with a heartbeat of their own leave it empty.
    fn keepalive(&self) {}

    /// Once a second, for time-based checks (token expiry) of transports that keep no task
    /// per connection to wait on them.
    fn tick(&self) {}
}

/// Why the hub ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Graceful shutdown: finish the running event, answer it, then close (reconnect).
    Restart,
    /// An operator disconnected the user; reconnecting is allowed.
    Admin,
    /// The user was banned; reconnecting is refused.
    Banned,
    /// Bus messages were lost and the connection's state could not be rebuilt (the store
    /// did not answer): reconnect and `sync`.
    Resync,
}

impl From<DisconnectReason> for Close {
    fn from(reason: DisconnectReason) -> Close {
        match reason {
            DisconnectReason::Admin => Close::Admin,
            DisconnectReason::Banned => Close::Banned,
        }
    }
}

/// A connection's place in the hub: its id, its name in the core ([`User::connection`]),
/// and its subscriptions.
pub struct Link {
    hub: Arc<Hub>,
    id: u64,
    name: String,
}

impl Link {
    /// The connection's name in the core: `<transport>:<node>:<n>`, unique across the nodes
    /// sharing a bus.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Follow a conversation from now on (the client's `conversation:join`).
    pub fn subscribe(&self, conversation_id: &str) {
        self.hub.change(|registry, changes| {
            registry.set_left(self.id, conversation_id, false);
            registry.subscribe(self.id, conversation_id, changes);
        });
    }

    /// Stop following a conversation (the client's `conversation:leave`).
    pub fn unsubscribe(&self, conversation_id: &str) {
        self.hub.change(|registry, changes| {
            registry.set_left(self.id, conversation_id, true);
            registry.unsubscribe(self.id, conversation_id, changes);
        });
    }
}

/// Counts work still running (realtime events being handled, connection tasks), so a
/// shutdown can wait for it: every acked message is committed, every close handshake done,
/// before the process exits.
#[derive(Default)]
pub struct InFlight {
    running: AtomicUsize,
    idle: Notify,
}

/// One unit of running work; the count goes down when dropped.
pub struct Running(Arc<InFlight>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Counts one unit until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    /// Resolves once no event is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The hub of one node.
pub struct Hub {
    chat: Arc<Chat>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    /// A random tag naming this node in connection names.
    node: String,
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    in_flight: Arc<InFlight>,
    /// Connection tasks still running, their close handshake included.
    tasks: Arc<InFlight>,
    /// A rebuild after lost bus messages is running; `resync_again` asks it for one more round.
    resyncing: AtomicBool,
    resync_again: AtomicBool,
}

impl Hub {
    /// A hub relaying `bus` to this node's connections, with a keepalive round every
    /// `keepalive`. Must be called inside a Tokio runtime: starts the relay and the sweeper
    /// as `tasks`; they end when the hub is dropped or the tasks are stopped.
    pub fn start(
        chat: Arc<Chat>,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        keepalive: Duration,
        tasks: &Tasks,
    ) -> Arc<Hub> {
        let messages = bus.subscribe();
        let hub = Arc::new(Hub {
            chat,
            store,
            bus,
            node: format!("{:08x}", rand::random::<u32>()),
            registry: RwLock::default(),
            next_id: AtomicU64::new(1),
            in_flight: Arc::default(),
            tasks: Arc::default(),
            resyncing: AtomicBool::new(false),
            resync_again: AtomicBool::new(false),
        });
        tasks.spawn("hub relay", relay(Arc::downgrade(&hub), messages));
        tasks.spawn("hub sweep", sweep(Arc::downgrade(&hub), keepalive));
        hub
    }

    // The registry lock is held for short, non-blocking sections only (no `.await` inside):
    // a std lock, read-mostly (every delivery reads, subscription changes write).
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a registry change and tells the bus which topics the node needs now.
    fn change<T>(&self, f: impl FnOnce(&mut Registry, &mut TopicChanges) -> T) -> T {
        let mut changes = TopicChanges::default();
        let mut registry = self.write();
        let result = f(&mut registry, &mut changes);
        // Told under the lock, so the bus sees watches and unwatches in registry order.
        for topic in changes.watch.drain(..) {
            self.bus.watch(topic);
        }
        for topic in changes.unwatch.drain(..) {
            self.bus.unwatch(topic);
        }
        result
    }

    /// Events being handled on this node.
    pub fn in_flight(&self) -> &Arc<InFlight> {
        &self.in_flight
    }

    /// Counts a connection task until the guard drops ([`Hub::closed`] waits for them).
    pub fn task(&self) -> Running {
        self.tasks.enter()
    }

    /// Resolves once every counted connection task has ended.
    pub async fn closed(&self) {
        self.tasks.idle().await;
    }

    /// Registers a connection of `user_id` (a stream when `follows_conversations` is false:
    /// only its user's events reach it). From now on nothing addressed to the user is
    /// missed; its conversations follow in [`Hub::open`].
    pub fn register(
        self: &Arc<Self>,
        transport: Transport,
        user_id: &str,
        follows_conversations: bool,
        sink: Arc<dyn Sink>,
    ) -> Link {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let target = Target { id, user_id: Arc::from(user_id), sink };
        self.change(|registry, changes| {
            registry.insert(target, Timestamp::now(), follows_conversations, changes)
        });
        Link { hub: self.clone(), id, name: format!("{}:{}:{id}", transport.as_str(), self.node) }
    }

    /// Connects a registered connection's user in the core (presence, `user:online`) and
    /// subscribes the connection to the user's conversations; returns its `ready`. `user`
    /// carries the link's name as its connection.
    pub async fn open(&self, link: &Link, user: &User) -> Result<Ready, ChatError> {
        // The user's topic must be live before the store is read: a membership change
        // committed after the read then reaches the registry's window.
        self.bus.settled().await;
        match self.chat.connect(user).await {
            Ok(ready) => {
                self.change(|registry, changes| {
                    registry.apply_snapshot(link.id, &ready.conversations, changes)
                });
                self.bus.settled().await;
                Ok(ready)
            }
            Err(err) => {
                self.write().close_window(link.id);
                Err(err)
            }
        }
    }

    /// Takes a connection out of the registry at once; the core's disconnect bookkeeping
    /// (presence, `user:offline`, typing) follows. `user` is the one given to [`Hub::open`]
    /// (`opened` false: it never got there).
    pub async fn close(&self, link: &Link, user: &User, opened: bool) {
        self.remove(link);
        if opened && let Err(err) = self.chat.disconnect(user).await {
            tracing::warn!(error = %err, user = %user.id, "disconnect bookkeeping failed");
        }
    }

    /// Takes a connection out of the registry (idempotent).
    pub fn remove(&self, link: &Link) {
        self.change(|registry, changes| registry.remove(link.id, changes));
    }

    /// Graceful shutdown: every connection finishes its running event, answers it, closes.
    pub fn drain(&self) {
        self.close_every(Close::Restart);
    }

    /// Closes every connection of this node for `reason`.
    fn close_every(&self, reason: Close) {
        // Closed outside the lock: a transport's close may call back into the hub.
        let sinks: Vec<Arc<dyn Sink>> = self.read().sinks().cloned().collect();
        for sink in sinks {
            sink.close(reason);
        }
    }

    /// Applies one bus message to this node's connections (a batch's messages in order).
    fn apply(self: &Arc<Self>, message: &Arc<BusMessage>) {
        match message.as_ref() {
            BusMessage::Batch(messages) => {
                for (index, inner) in messages.iter().enumerate() {
                    self.apply_one(message, inner, Some(index));
                }
            }
            inner => self.apply_one(message, inner, None),
        }
    }

    /// Applies `message`, which is `carrier` (`index` `None`) or its batch's message at `index`.
    fn apply_one(self: &Arc<Self>, carrier: &Arc<BusMessage>, message: &BusMessage, index: Option<usize>) {
        match message {
            BusMessage::Deliver(delivery) => {
                let Some(event) = Outgoing::from_bus(carrier, index) else { return };
                let except_connection =
                    delivery.except_connection.as_deref().and_then(|name| self.local_id(name));
                let mut delivered = 0;
                self.read().for_each_recipient(
                    &delivery.to,
                    except_connection,
                    delivery.except_user.as_deref(),
                    |target| delivered += usize::from(target.sink.send(&event)),
                );
                if delivered > 0 {
                    telemetry::delivered(&delivery.event, delivered);
                }
            }
            BusMessage::Subscribe { user_id, conversation_id } => {
                self.change(|registry, changes| {
                    registry.membership_changed(user_id, conversation_id, true, changes)
                });
            }
            BusMessage::Unsubscribe { user_id, conversation_id } => {
                self.change(|registry, changes| {
                    registry.membership_changed(user_id, conversation_id, false, changes)
                });
            }
            BusMessage::Disconnect { user_id, reason } => {
                let sinks: Vec<Arc<dyn Sink>> = self.read().sinks_of_user(user_id).cloned().collect();
                for sink in sinks {
                    sink.close(Close::from(*reason));
                }
            }
            BusMessage::BanChanged { .. } | BusMessage::Batch(_) => {}
            BusMessage::Gap => self.lost("the bus reconnected"),
        }
    }

    /// The local id of connection `name` if it is one of this node's.
    fn local_id(&self, name: &str) -> Option<u64> {
        let mut parts = name.splitn(3, ':');
        let (_transport, node, id) = (parts.next()?, parts.next()?, parts.next()?);
        if node != self.node {
            return None;
        }
        id.parse().ok()
    }

    /// The policy for lost bus messages: rebuild every connection's subscriptions from the
    /// store and tell each to `sync` (`sync:required`). One rebuild at a time; a loss
    /// reported during one makes it run once more.
    fn lost(self: &Arc<Self>, cause: &'static str) {
        tracing::warn!(
            cause,
            "bus messages may have been lost; rebuilding subscriptions and asking clients to sync"
        );
        telemetry::bus_error();
        self.resync_again.store(true, Ordering::SeqCst);
        if self.resyncing.swap(true, Ordering::SeqCst) {
            return;
        }
        let hub = self.clone();
        tokio::spawn(async move {
            while hub.resync_again.swap(false, Ordering::SeqCst) {
                hub.resync_all().await;
            }
            hub.resyncing.store(false, Ordering::SeqCst);
            // A loss reported between the last check and the flag's reset.
            if hub.resync_again.load(Ordering::SeqCst) {
                hub.lost("the bus reported another loss during the rebuild");
            }
        });
    }

    /// One rebuild round over every connection of this node, one store read per user.
    async fn resync_all(&self) {
        let users = {
            let mut registry = self.write();
            let users = registry.by_user();
            for (_, ids) in &users {
                for id in ids {
                    registry.open_window(*id);
                }
            }
            users
        };
        self.bus.settled().await;
        for (user_id, ids) in users {
            match self.store.conversation_heads(&user_id).await {
                Ok(heads) => {
                    let repaired: Vec<Arc<dyn Sink>> = self.change(|registry, changes| {
                        let open: Vec<u64> = ids
                            .iter()
                            .copied()
                            .filter(|id| registry.apply_snapshot(*id, &heads, changes))
                            .collect();
                        open.iter().filter_map(|id| registry.sink(*id).cloned()).collect()
                    });
                    let event =
                        Outgoing::event(ServerEvent::SyncRequired(SyncRequired { conversations: heads }));
                    for sink in repaired {
                        sink.send(&event);
                    }
                }
                Err(err) => {
                    telemetry::store_error();
                    tracing::warn!(error = %err, user = %user_id, "could not rebuild subscriptions; closing the user's connections");
                    let sinks: Vec<Arc<dyn Sink>> = {
                        let registry = self.read();
                        ids.iter().filter_map(|id| registry.sink(*id).cloned()).collect()
                    };
                    for sink in sinks {
                        sink.close(Close::Resync);
                    }
                }
            }
        }
        self.bus.settled().await;
    }
}

/// Applies bus messages to the hub's connections, in order, while the hub exists.
async fn relay(hub: Weak<Hub>, mut messages: broadcast::Receiver<Arc<BusMessage>>) {
    loop {
        let message = messages.recv().await;
        let Some(hub) = hub.upgrade() else { break };
        match message {
            Ok(message) => hub.apply(&message),
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                tracing::warn!(skipped, "the hub's relay fell behind the bus");
                hub.lost("the relay fell behind");
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// Runs the keepalive rounds (every `period`) and the one-second ticks while the hub exists.
async fn sweep(hub: Weak<Hub>, period: Duration) {
    let mut keepalive = tokio::time::interval(period);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    for interval in [&mut keepalive, &mut second] {
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.reset();
    }
    loop {
        let keepalive_round = tokio::select! {
            _ = keepalive.tick() => true,
            _ = second.tick() => false,
        };
        let Some(hub) = hub.upgrade() else { break };
        let closing: Vec<(Arc<dyn Sink>, Close)> = {
            let registry = hub.read();
            for sink in registry.sinks() {
                if keepalive_round {
                    sink.keepalive();
                } else {
                    sink.tick();
                }
            }
            // A ban or an operator's disconnect whose bus message was lost still ends the
            // user's connections here.
            let banned = registry.users().filter(|user_id| hub.chat.is_banned(user_id)).flat_map(|user_id| {
                registry.sinks_of_user(user_id).map(|sink| (sink.clone(), Close::Banned))
            });
            let disconnected: Vec<_> = hub.chat.with_disconnect_marks(|marks| {
                marks
                    .iter()
                    .flat_map(|(user_id, at)| registry.sinks_of_user_opened_before(user_id, *at))
                    .map(|sink| (sink.clone(), Close::Admin))
                    .collect()
            });
            banned.chain(disconnected).collect()
        };
        for (sink, close) in closing {
            sink.close(close);
        }
    }
}
