//! The Redis bus: several nodes as one service. Every message goes out with `PUBLISH` on
//! the channel of its topic (`<prefix>:c:<conversation>` or `<prefix>:u:<user>`), and a node
//! `SUBSCRIBE`s only to the channels of topics its connections need, so a node hears nothing
//! about conversations and users it does not serve. The publishing node hears its own
//! messages back the same way, which keeps one order for everyone: Redis delivers one
//! connection's publications in order.
//!
//! Publishing never waits for Redis: messages are encoded at once, in order, and written
//! by one task, pipelined (all pending in one round trip). When Redis is unreachable they
//! are dropped and logged; committed messages stay in the store and clients repair with
//! `sync`. The subscriber reconnects with backoff, resubscribes every watched channel, and
//! then puts [`BusMessage::Gap`] in the node's stream so connections catch up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::core::ports::{Audience, BusMessage, Delivery, DisconnectReason};
use crate::core::ports::{BackendHealth, Bus, Topic};
use crate::core::server_events::{RelayedEvent, ServerEvent};
use crate::core::telemetry::bus_error;
use crate::core::time::Timestamp;
use crate::tasks::Tasks;

/// Messages buffered for this node's transports (as the in-process bus).
const FEED_CAPACITY: usize = crate::bus::local::CAPACITY;
/// Encoded messages waiting to be published; beyond this they are dropped (and logged).
const OUTGOING_CAPACITY: usize = 65_536;
/// Most messages written in one pipelined round trip.
const MAX_PIPELINE: usize = 512;
/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The Redis [`Bus`].
pub struct RedisBus {
    prefix: String,
    outgoing: mpsc::Sender<(String, Vec<u8>)>,
    feed: broadcast::Sender<Arc<BusMessage>>,
    /// Watch counts per channel; the subscriber task keeps Redis in line with the keys.
    watched: Arc<Mutex<HashMap<String, usize>>>,
    commands: mpsc::UnboundedSender<Command>,
    /// A handle on the publishing connection, for health probes.
    probe: redis::aio::ConnectionManager,
}

/// Work for the subscriber task, in the order it was asked for.
enum Command {
    Subscribe(String),
    Unsubscribe(String),
    /// Answer once every command before this one was carried out.
    Settle(oneshot::Sender<()>),
}

/// A bus message as it travels through Redis.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Outgoing<'a> {
    Deliver {
        to: &'a Audience,
        except_connection: &'a Option<String>,
        except_user: &'a Option<String>,
        event: &'a str,
        data: &'a ServerEvent,
        /// Commit time of a `message:new`, in Unix milliseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        committed_at: Option<i64>,
    },
    Subscribe {
        user_id: &'a str,
        conversation_id: &'a str,
    },
    Unsubscribe {
        user_id: &'a str,
        conversation_id: &'a str,
    },
    Disconnect {
        user_id: &'a str,
        reason: DisconnectReason,
    },
    BanChanged {
        user_id: &'a str,
        banned: bool,
    },
}

/// [`Outgoing`] as it is read back, the payload left encoded. A flat struct, because an
/// internally tagged enum cannot hold a `RawValue`.
#[derive(Deserialize)]
struct Incoming {
    kind: Kind,
    #[serde(default)]
    to: Option<Audience>,
    #[serde(default)]
    except_connection: Option<String>,
    #[serde(default)]
    except_user: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    committed_at: Option<i64>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    reason: Option<DisconnectReason>,
    #[serde(default)]
    banned: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Deliver,
    Subscribe,
    Unsubscribe,
    Disconnect,
    BanChanged,
}

impl Incoming {
    /// The bus message, or `None` when a field its kind needs is missing.
    fn into_message(self) -> Option<BusMessage> {
        Some(match self.kind {
            Kind::Deliver => BusMessage::Deliver(Delivery {
                to: self.to?,
                except_connection: self.except_connection,
                except_user: self.except_user,
                event: ServerEvent::Relayed(RelayedEvent {
                    name: self.event?,
                    data: self.data?,
                    committed_at: self.committed_at.map(Timestamp),
                }),
            }),
            Kind::Subscribe => {
                BusMessage::Subscribe { user_id: self.user_id?, conversation_id: self.conversation_id? }
            }
            Kind::Unsubscribe => {
                BusMessage::Unsubscribe { user_id: self.user_id?, conversation_id: self.conversation_id? }
            }
            Kind::Disconnect => BusMessage::Disconnect { user_id: self.user_id?, reason: self.reason? },
            Kind::BanChanged => BusMessage::BanChanged { user_id: self.user_id?, banned: self.banned? },
        })
    }
}

/// The message as published; `None` for what is never published as such ([`BusMessage::Gap`],
/// and [`BusMessage::Batch`], whose messages are published one by one).
fn encode(message: &BusMessage) -> Option<Result<Vec<u8>, serde_json::Error>> {
    let outgoing = match message {
        BusMessage::Deliver(d) => Outgoing::Deliver {
            to: &d.to,
            except_connection: &d.except_connection,
            except_user: &d.except_user,
            event: d.event.name(),
            data: &d.event,
            committed_at: d.event.committed_at().map(Timestamp::millis),
        },
        BusMessage::Subscribe { user_id, conversation_id } => {
            Outgoing::Subscribe { user_id, conversation_id }
        }
        BusMessage::Unsubscribe { user_id, conversation_id } => {
            Outgoing::Unsubscribe { user_id, conversation_id }
        }
        BusMessage::Disconnect { user_id, reason } => Outgoing::Disconnect { user_id, reason: *reason },
        BusMessage::BanChanged { user_id, banned } => Outgoing::BanChanged { user_id, banned: *banned },
        BusMessage::Gap | BusMessage::Batch(_) => return None,
    };
    Some(serde_json::to_vec(&outgoing))
}

impl RedisBus {
    /// Connects to Redis at `url` (publishing connection first, so a wrong URL fails at
    /// startup) and starts the publisher and subscriber tasks. Channels are named under
    /// `prefix`, so several deployments (or tests) can share one Redis.
    pub async fn connect(url: &str, prefix: &str, tasks: &Tasks) -> redis::RedisResult<RedisBus> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(MAX_BACKOFF);
        let publisher = redis::aio::ConnectionManager::new_with_config(client.clone(), config).await?;
        let (outgoing, queued) = mpsc::channel(OUTGOING_CAPACITY);
        let (commands, pending) = mpsc::unbounded_channel();
        let feed = broadcast::channel(FEED_CAPACITY).0;
        let watched = Arc::new(Mutex::new(HashMap::new()));
        let probe = publisher.clone();
        tasks.spawn("redis bus publisher", publish_loop(publisher, queued));
        tasks.spawn("redis bus subscriber", subscribe_loop(client, watched.clone(), pending, feed.clone()));
        Ok(RedisBus { prefix: prefix.to_owned(), outgoing, feed, watched, commands, probe })
    }

    fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Conversation(id) => format!("{}:c:{id}", self.prefix),
            Topic::User(id) => format!("{}:u:{id}", self.prefix),
            Topic::Everyone => format!("{}:all", self.prefix),
        }
    }

    fn send(&self, topic: &Topic, message: &BusMessage) {
        let payload = match encode(message) {
            None => return,
            Some(Ok(payload)) => payload,
            Some(Err(err)) => {
                bus_error();
                tracing::error!(error = %err, "could not encode a bus message");
                return;
            }
        };
        if self.outgoing.try_send((self.channel(topic), payload)).is_err() {
            bus_error();
            tracing::warn!("redis publish queue full; message dropped (clients repair with sync)");
        }
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn publish(&self, message: BusMessage) {
        if let BusMessage::Batch(messages) = message {
            return self.publish_all(messages);
        }
        if let Some(topic) = message.topic() {
            return self.send(&topic, &message);
        }
        // A delivery to several users: once per user, each copy addressed to that user only,
        // so a node serving several of them delivers each copy once.
        if let BusMessage::Deliver(delivery) = &message
            && let Audience::Users(users) = &delivery.to
        {
            for user in users {
                let copy = BusMessage::Deliver(Delivery {
                    to: Audience::Users(vec![user.clone()]),
                    ..delivery.clone()
                });
                self.send(&Topic::User(user.clone()), &copy);
            }
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<BusMessage>> {
        self.feed.subscribe()
    }

    fn watch(&self, topic: Topic) {
        let channel = self.channel(&topic);
        let mut watched = self.watched();
        let count = watched.entry(channel.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            let _ = self.commands.send(Command::Subscribe(channel));
        }
    }

    fn unwatch(&self, topic: Topic) {
        let channel = self.channel(&topic);
        let mut watched = self.watched();
        let Some(count) = watched.get_mut(&channel) else { return };
        *count -= 1;
        if *count == 0 {
            watched.remove(&channel);
            let _ = self.commands.send(Command::Unsubscribe(channel));
        }
    }

    async fn settled(&self) {
        let (done, settled) = oneshot::channel();
        if self.commands.send(Command::Settle(done)).is_ok() {
            let _ = settled.await;
        }
    }

    async fn health(&self) -> Option<BackendHealth> {
        let mut connection = self.probe.clone();
        let up = redis::cmd("PING").query_async::<()>(&mut connection).await.is_ok();
        Some(BackendHealth { backend: "redis", up })
    }
}

/// Writes queued messages to Redis in order, everything pending in one pipeline.
async fn publish_loop(
    mut connection: redis::aio::ConnectionManager,
    mut queued: mpsc::Receiver<(String, Vec<u8>)>,
) {
    let mut batch = Vec::with_capacity(MAX_PIPELINE);
    while queued.recv_many(&mut batch, MAX_PIPELINE).await > 0 {
        let mut pipe = redis::pipe();
        for (channel, payload) in &batch {
            pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        }
        if let Err(err) = pipe.query_async::<()>(&mut connection).await {
            bus_error();
            tracing::warn!(error = %err, dropped = batch.len(), "redis publish failed (clients repair with sync)");
        }
        batch.clear();
    }
}

/// Keeps one subscriber connection: subscribes to what is watched, feeds what arrives to the
/// node's transports, and after a lost connection reconnects, resubscribes and reports a gap.
async fn subscribe_loop(
    client: redis::Client,
    watched: Arc<Mutex<HashMap<String, usize>>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    feed: broadcast::Sender<Arc<BusMessage>>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(err) => {
                bus_error();
                tracing::warn!(error = %err, "redis subscriber cannot connect; retrying");
                // Nothing can be subscribed meanwhile: let waiters go (they repair with sync).
                answer_settles(&mut commands);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let channels: Vec<String> = {
            let watched = watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            watched.keys().cloned().collect()
        };
        if !channels.is_empty()
            && let Err(err) = sink.subscribe(&channels).await
        {
            bus_error();
            tracing::warn!(error = %err, "redis resubscribe failed; reconnecting");
            continue;
        }
        backoff = Duration::from_millis(50);
        if connected_before {
            tracing::info!(channels = channels.len(), "redis subscriber reconnected");
            let _ = feed.send(Arc::new(BusMessage::Gap));
        }
        connected_before = true;
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let result = match command {
                        None => return,
                        Some(Command::Subscribe(channel)) => sink.subscribe(channel).await,
                        Some(Command::Unsubscribe(channel)) => sink.unsubscribe(channel).await,
                        Some(Command::Settle(done)) => {
                            let _ = done.send(());
                            Ok(())
                        }
                    };
                    if let Err(err) = result {
                        bus_error();
                        tracing::warn!(error = %err, "redis subscription change failed; reconnecting");
                        break;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        bus_error();
                        tracing::warn!("redis subscriber connection lost; reconnecting");
                        break;
                    };
                    let decoded = serde_json::from_slice::<Incoming>(message.get_payload_bytes());
                    match decoded.map(Incoming::into_message) {
                        Ok(Some(message)) => {
                            let _ = feed.send(Arc::new(message));
                        }
                        Ok(None) => {
                            bus_error();
                            tracing::warn!(channel = message.get_channel_name(), "incomplete bus message");
                        }
                        Err(err) => {
                            bus_error();
                            tracing::warn!(error = %err, channel = message.get_channel_name(), "unreadable bus message");
                        }
                    }
                }
            }
        }
    }
}

/// Answers every settle request already queued, and keeps the other commands' effect:
/// they are reflected in the watch counts, which the next connection subscribes from.
fn answer_settles(commands: &mut mpsc::UnboundedReceiver<Command>) {
    while let Ok(command) = commands.try_recv() {
        if let Command::Settle(done) = command {
            let _ = done.send(());
        }
    }
}
