//! The Redis presence directory: who is online across nodes, and what they look at.
//!
//! Each node registers itself with an expiry it renews every third of the time to live
//! (`tick`), and records, per user, the nodes holding a connection of theirs and the
//! conversations those connections look at. A node that stops renewing (killed, cut off)
//! is retired by the next live node's tick: its users without another live node are
//! reported as [`Departure`]s, so their contacts hear `user:offline` within the time to live.
//! Every operation is one call of one Lua script (`presence.lua`), atomic in Redis.
//!
//! Calls are queued and carried out by one task in call order, everything pending in one
//! pipelined round trip; callbacks run in the same order. When Redis cannot be reached the
//! callbacks get the node's own view. The task keeps what this node has told Redis, and puts
//! it back when a tick finds that Redis forgot the node (a Redis restart).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::core::ports::{Departure, PresenceDirectory, PresenceError, Reach};
use crate::core::server_events::PresenceInfo;
use crate::core::time::Timestamp;
use crate::tasks::Tasks;

/// Most operations carried out in one pipelined round trip.
const MAX_PIPELINE: usize = 256;
/// How long a user's last-seen time is kept after they went offline.
const LAST_SEEN_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);

/// One queued operation and whoever waits for its outcome.
enum Op {
    Joined {
        user_id: String,
        came_online: Box<dyn FnOnce() + Send>,
    },
    Left {
        user_id: String,
        went_offline: Box<dyn FnOnce(Timestamp) + Send>,
    },
    Focus {
        user_id: String,
        conversation_id: String,
        focused: bool,
    },
    Reach {
        user_ids: Vec<String>,
        conversation_id: String,
        local: Vec<Reach>,
        answer: Box<dyn FnOnce(Vec<Reach>) + Send>,
    },
    Info {
        user_ids: Vec<String>,
        answer: oneshot::Sender<Result<Vec<PresenceInfo>, PresenceError>>,
    },
    Tick,
}

/// The Redis [`PresenceDirectory`]. Dropping it stops its tasks: the node stops renewing
/// itself and is retired like a crashed one.
pub struct RedisPresence {
    ops: mpsc::UnboundedSender<Op>,
    departures: Mutex<Option<mpsc::UnboundedReceiver<Departure>>>,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for RedisPresence {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RedisPresence {
    /// Connects to Redis at `url`, registers this node (a fresh id per process) under
    /// `prefix`, and starts renewing it every third of `ttl`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        ttl: Duration,
        tasks: &Tasks,
    ) -> redis::RedisResult<RedisPresence> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(2));
        let connection = redis::aio::ConnectionManager::new_with_config(client, config).await?;
        let (ops, queued) = mpsc::unbounded_channel();
        let (departed, departures) = mpsc::unbounded_channel();
        let worker = Worker {
            connection,
            script: redis::Script::new(include_str!("presence.lua")),
            prefix: prefix.to_owned(),
            node: uuid::Uuid::now_v7().to_string(),
            ttl,
            held: HashMap::new(),
            restore_pending: false,
            departed,
        };
        // The first tick registers the node before any other operation.
        let _ = ops.send(Op::Tick);
        let working = tasks.spawn("redis presence worker", worker.run(queued));
        let ticker = ops.clone();
        let ticking = tasks.spawn("redis presence ticker", async move {
            let mut every = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
            every.tick().await;
            loop {
                every.tick().await;
                if ticker.send(Op::Tick).is_err() {
                    return;
                }
            }
        });
        Ok(RedisPresence { ops, departures: Mutex::new(Some(departures)), tasks: [working, ticking] })
    }

    fn queue(&self, op: Op) {
        if self.ops.send(op).is_err() {
            tracing::error!("presence directory task is gone");
        }
    }
}

#[async_trait]
impl PresenceDirectory for RedisPresence {
    fn node_joined(&self, user_id: &str, came_online: Box<dyn FnOnce() + Send>) {
        self.queue(Op::Joined { user_id: user_id.to_owned(), came_online });
    }

    fn node_left(&self, user_id: &str, went_offline: Box<dyn FnOnce(Timestamp) + Send>) {
        self.queue(Op::Left { user_id: user_id.to_owned(), went_offline });
    }

    fn focus_changed(&self, user_id: &str, conversation_id: &str, focused: bool) {
        self.queue(Op::Focus {
            user_id: user_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            focused,
        });
    }

    fn reach(
        &self,
        user_ids: Vec<String>,
        conversation_id: &str,
        local: Vec<Reach>,
        answer: Box<dyn FnOnce(Vec<Reach>) + Send>,
    ) {
        self.queue(Op::Reach { user_ids, conversation_id: conversation_id.to_owned(), local, answer });
    }

    async fn info(&self, user_ids: &[String]) -> Result<Vec<PresenceInfo>, PresenceError> {
        let (answer, answered) = oneshot::channel();
        self.queue(Op::Info { user_ids: user_ids.to_vec(), answer });
        answered.await.map_err(|_| PresenceError("presence directory task is gone".into()))?
    }

    fn departures(&self) -> Option<mpsc::UnboundedReceiver<Departure>> {
        self.departures.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

/// The task that talks to Redis.
struct Worker {
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
    prefix: String,
    node: String,
    ttl: Duration,
    /// What this node told Redis: its users and the conversations they look at here.
    held: HashMap<String, HashSet<String>>,
    /// Redis forgot this node and the restore has not succeeded yet.
    restore_pending: bool,
    departed: mpsc::UnboundedSender<Departure>,
}

impl Worker {
    async fn run(mut self, mut queued: mpsc::UnboundedReceiver<Op>) {
        let mut batch = Vec::with_capacity(MAX_PIPELINE);
        while queued.recv_many(&mut batch, MAX_PIPELINE).await > 0 {
            let pipe = self.pipeline(&batch);
            let replies = self.carry_out(pipe, batch.len()).await;
            for (op, reply) in batch.drain(..).zip(replies) {
                self.settle(op, reply).await;
            }
        }
    }

    /// An invocation of the script for `operation` with `args`.
    fn invocation<'a>(&'a self, operation: &str, args: &[&str]) -> redis::ScriptInvocation<'a> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(operation).arg(&self.prefix).arg(&self.node);
        for arg in args {
            invocation.arg(*arg);
        }
        invocation
    }

    /// The batch as one pipeline, one script call per operation; records what this node
    /// holds on the way.
    fn pipeline(&mut self, batch: &[Op]) -> redis::Pipeline {
        let kept = LAST_SEEN_KEPT.as_millis().to_string();
        let ttl = self.ttl.as_millis().to_string();
        let mut pipe = redis::pipe();
        for op in batch {
            // Record what this node holds first, so a restore includes it.
            match op {
                Op::Joined { user_id, .. } => {
                    self.held.entry(user_id.clone()).or_default();
                }
                Op::Left { user_id, .. } => {
                    self.held.remove(user_id);
                }
                Op::Focus { user_id, conversation_id, focused } => {
                    if let Some(looked_at) = self.held.get_mut(user_id) {
                        if *focused {
                            looked_at.insert(conversation_id.clone());
                        } else {
                            looked_at.remove(conversation_id);
                        }
                    }
                }
                _ => {}
            }
            let invocation = match op {
                Op::Joined { user_id, .. } => self.invocation("join", &[user_id]),
                Op::Left { user_id, .. } => self.invocation("leave", &[user_id, &kept]),
                Op::Focus { user_id, conversation_id, focused } => {
                    self.invocation("focus", &[user_id, conversation_id, if *focused { "1" } else { "0" }])
                }
                Op::Reach { user_ids, conversation_id, .. } => {
                    let mut args = vec![conversation_id.as_str()];
                    args.extend(user_ids.iter().map(String::as_str));
                    self.invocation("reach", &args)
                }
                Op::Info { user_ids, .. } => {
                    self.invocation("info", &user_ids.iter().map(String::as_str).collect::<Vec<_>>())
                }
                Op::Tick => self.invocation("tick", &[&ttl, &kept]),
            };
            pipe.invoke_script(&invocation);
        }
        pipe
    }

    /// Runs the `count` operations of `pipe` in one round trip (loading the script first if
    /// Redis lost it): one reply per operation, or `None` for each when Redis did not answer.
    async fn carry_out(&mut self, pipe: redis::Pipeline, count: usize) -> Vec<Option<redis::Value>> {
        let mut result = pipe.query_async::<Vec<redis::Value>>(&mut self.connection).await;
        if let Err(err) = &result
            && err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        {
            // No operation ran: load the script and send them again.
            result = match self.script.prepare_invoke().load_async(&mut self.connection).await {
                Ok(_) => pipe.query_async(&mut self.connection).await,
                Err(err) => Err(err),
            };
        }
        match result {
            Ok(replies) if replies.len() == count => replies.into_iter().map(Some).collect(),
            Ok(replies) => {
                tracing::error!(expected = count, got = replies.len(), "presence directory answered oddly");
                vec![None; count]
            }
            Err(err) => {
                tracing::warn!(error = %err, operations = count, "presence directory unreachable; using this node's view");
                vec![None; count]
            }
        }
    }

    /// Hands an operation's outcome to whoever waits for it; `None`: Redis did not answer.
    async fn settle(&mut self, op: Op, reply: Option<redis::Value>) {
        match op {
            Op::Joined { came_online, .. } => {
                if reply.is_none_or(|reply| integer(&reply) == Some(1)) {
                    came_online();
                }
            }
            Op::Left { went_offline, .. } => match reply.map(|reply| integer(&reply)) {
                None => went_offline(Timestamp::now()),
                Some(Some(at)) if at >= 0 => went_offline(Timestamp(at)),
                Some(_) => {}
            },
            Op::Focus { .. } => {}
            Op::Reach { user_ids, local, answer, .. } => {
                let reaches = reply.and_then(|reply| integers(&reply)).filter(|r| r.len() == user_ids.len());
                answer(match reaches {
                    Some(reaches) => reaches
                        .into_iter()
                        .map(|r| match r {
                            2 => Reach::Focused,
                            1 => Reach::Online,
                            _ => Reach::Offline,
                        })
                        .collect(),
                    None => local,
                });
            }
            Op::Info { user_ids, answer } => {
                let infos = reply.and_then(|reply| integers(&reply)).filter(|r| r.len() == user_ids.len());
                let _ = answer.send(
                    infos
                        .map(|infos| {
                            infos
                                .into_iter()
                                .map(|i| match i {
                                    1 => PresenceInfo { online: true, last_seen_at: None },
                                    0 => PresenceInfo { online: false, last_seen_at: None },
                                    at => PresenceInfo { online: false, last_seen_at: Some(Timestamp(at)) },
                                })
                                .collect()
                        })
                        .ok_or_else(|| PresenceError("Redis did not answer".into())),
                );
            }
            Op::Tick => {
                let Some(values) = reply.and_then(|reply| tick_reply(&reply)) else { return };
                let (known, departed) = values;
                for departure in departed {
                    tracing::info!(user = %departure.user_id, "user went offline with a node that stopped answering");
                    let _ = self.departed.send(departure);
                }
                self.restore_pending |= !known;
                if self.restore_pending {
                    self.restore().await;
                }
            }
        }
    }

    /// Puts back every user and focus this node holds (Redis forgot this node).
    async fn restore(&mut self) {
        if self.held.is_empty() {
            self.restore_pending = false;
            return;
        }
        tracing::warn!(users = self.held.len(), "presence directory forgot this node; restoring its users");
        let mut pipe = redis::pipe();
        for (user_id, looked_at) in &self.held {
            let mut args = vec![user_id.as_str()];
            args.extend(looked_at.iter().map(String::as_str));
            pipe.invoke_script(&self.invocation("restore", &args)).ignore();
        }
        match pipe.query_async::<()>(&mut self.connection).await {
            Ok(()) => self.restore_pending = false,
            Err(err) => tracing::warn!(error = %err, "restoring presence failed; the next tick tries again"),
        }
    }
}

fn integer(value: &redis::Value) -> Option<i64> {
    match value {
        redis::Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn integers(value: &redis::Value) -> Option<Vec<i64>> {
    match value {
        redis::Value::Array(items) => items.iter().map(integer).collect(),
        _ => None,
    }
}

/// `{known, user, last_seen, …}` of a tick.
fn tick_reply(value: &redis::Value) -> Option<(bool, Vec<Departure>)> {
    let redis::Value::Array(items) = value else { return None };
    let (known, rest) = items.split_first()?;
    let departed = rest
        .chunks(2)
        .filter_map(|pair| match pair {
            [redis::Value::BulkString(user), redis::Value::Int(at)] => Some(Departure {
                user_id: String::from_utf8_lossy(user).into_owned(),
                last_seen_at: Timestamp(*at),
            }),
            _ => None,
        })
        .collect();
    Some((integer(known)? == 1, departed))
}
