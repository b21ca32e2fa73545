//! A user's notification stream (served as SSE): their `notification`
//! events, each with its id in the user's notification log, resumable from an id.
//!
//! Every `notification` is recorded in the recipient's log before it is published (see
//! [`routing`](super::notification_routing)), with an id per user that is gap-free and commits in order. A
//! stream keeps a cursor (the last id it delivered) and only ever delivers the log's entries
//! after it, in id order: a live event whose id is the cursor's successor goes out as it is;
//! anything else (an id further ahead, a lagging or reconnected bus) makes the stream read
//! the missing entries from the log. So nothing is lost or repeated between the replay of a
//! resumed stream and its live events, nor when the bus drops messages and later ones arrive.
//! Live events come from the stream's connection in the realtime hub ([`LiveFeed`]).
//!
//! An open stream counts as a connection of its user (online, focused on nothing): a user
//! whose only client is a stream is "online elsewhere" and gets `notification`s (in the
//! stream) rather than push jobs, and appears online to their contacts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::Deserialize;
use tokio::sync::mpsc;

use super::chat::Chat;
use super::error::{ChatError, StoreError};
use super::model::User;
use crate::core::server_events::{Notification, NotificationKind, ServerEvent};

/// Entries read from the log per query while catching up.
const PAGE: usize = 200;
/// Items a stream may have ready before its task waits for the client to read.
const QUEUE: usize = 64;

/// What a notification stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A `notification`; its `id` is always set.
    Notification(Notification),
    /// The log no longer holds the notifications with ids `from..=to` (they aged out or
    /// were trimmed before the client resumed): the client should refresh what it shows
    /// (the unread counts). Sent once, before the entries that follow them.
    Gap {
        /// First id missing.
        from: i64,
        /// Last id missing.
        to: i64,
    },
}

/// An open notification stream. Dropping it closes the stream (the user's connection ends).
pub struct NotificationStream {
    items: mpsc::Receiver<StreamItem>,
}

impl NotificationStream {
    /// The next item; `None` once the stream ended (the log became unreadable, or the node
    /// is going away): the client reconnects with its last id and loses nothing.
    pub async fn next(&mut self) -> Option<StreamItem> {
        self.items.recv().await
    }
}

/// A `notification` as relayed by another node (only what the stream needs to re-emit it).
#[derive(Deserialize)]
struct RelayedNotification {
    id: Option<i64>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    emoji: Option<String>,
    conversation_id: String,
    message_id: String,
    seq: i64,
    sender_id: String,
    preview: Option<String>,
    unread_count: i64,
}

/// The notification an event carries, if it is a `notification` with an id (typed, or as
/// relayed by another node).
pub fn notification_of(event: &ServerEvent) -> Option<Notification> {
    let notification = match event {
        ServerEvent::Notification(notification) => notification.clone(),
        ServerEvent::Relayed(relayed) if relayed.name == "notification" => {
            let wire: RelayedNotification = serde_json::from_str(relayed.data.get()).ok()?;
            Notification {
                id: wire.id,
                kind: NotificationKind::parse(&wire.kind).unwrap_or(NotificationKind::Message),
                emoji: wire.emoji,
                conversation_id: wire.conversation_id,
                message_id: wire.message_id,
                seq: wire.seq,
                sender_id: wire.sender_id,
                preview: wire.preview,
                unread_count: wire.unread_count,
            }
        }
        _ => return None,
    };
    notification.id.is_some().then_some(notification)
}

/// Most live notifications waiting for a stream's task; beyond that they are dropped and the
/// stream reads them from the log instead.
const LIVE_QUEUE: usize = 256;

/// What the realtime hub tells an open stream.
enum Live {
    Notification(Notification),
    /// Live events may have been missed: read the log from the cursor.
    Resync,
    /// The stream must end (operator disconnect, ban, shutdown).
    End,
}

/// The hub's end of a stream's live feed (held by the stream's hub connection). Never
/// blocks: a stream that falls behind catches up from the log.
pub struct LiveFeed {
    sender: mpsc::UnboundedSender<Live>,
    waiting: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl LiveFeed {
    /// A live notification for the stream (already addressed to its user).
    pub fn notification(&self, notification: Notification) {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= LIVE_QUEUE {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.dropped.store(true, Ordering::SeqCst);
            return;
        }
        let _ = self.sender.send(Live::Notification(notification));
    }

    /// Live events may have been missed: the stream catches up from the log.
    pub fn resync(&self) {
        let _ = self.sender.send(Live::Resync);
    }

    /// Ends the stream.
    pub fn end(&self) {
        let _ = self.sender.send(Live::End);
    }
}

/// The stream's end of its live feed.
pub struct LiveEvents {
    receiver: mpsc::UnboundedReceiver<Live>,
    waiting: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl LiveEvents {
    /// The next thing to do; a feed that dropped notifications asks for a catch-up first.
    async fn next(&mut self) -> Live {
        if self.dropped.swap(false, Ordering::SeqCst) {
            return Live::Resync;
        }
        match self.receiver.recv().await {
            Some(Live::Notification(notification)) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                Live::Notification(notification)
            }
            Some(other) => other,
            None => Live::End,
        }
    }
}

/// A live feed for one stream: the hub's end and the stream's end.
pub fn live_feed() -> (LiveFeed, LiveEvents) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let (waiting, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    (
        LiveFeed { sender, waiting: waiting.clone(), dropped: dropped.clone() },
        LiveEvents { receiver, waiting, dropped },
    )
}

/// Why a stream's task stops.
enum Stop {
    /// The client went away.
    Closed,
    /// The log could not be read.
    Store(StoreError),
}

/// The delivering half of a stream: its cursor and its queue.
struct Feed {
    chat: Arc<Chat>,
    user_id: String,
    /// The last id delivered (or skipped as before the stream's start).
    cursor: i64,
    items: mpsc::Sender<StreamItem>,
}

impl Feed {
    async fn send(&self, item: StreamItem) -> Result<(), Stop> {
        self.items.send(item).await.map_err(|_| Stop::Closed)
    }

    /// Delivers every logged entry after the cursor, saying first if some are gone.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let page = self
                .chat
                .store
                .notifications_after(&self.user_id, self.cursor, PAGE)
                .await
                .map_err(Stop::Store)?;
            let full = page.len() == PAGE;
            for notification in page {
                let Some(id) = notification.id else { continue };
                if id > self.cursor + 1 {
                    self.send(StreamItem::Gap { from: self.cursor + 1, to: id - 1 }).await?;
                }
                self.send(StreamItem::Notification(notification)).await?;
                self.cursor = id;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Applies one live notification: the cursor's successor goes out as is, an older one
    /// is dropped, a newer one means entries are missing here: read them from the log.
    async fn live(&mut self, notification: Notification) -> Result<(), Stop> {
        let Some(id) = notification.id else { return Ok(()) };
        if id <= self.cursor {
            return Ok(());
        }
        if id == self.cursor + 1 {
            self.send(StreamItem::Notification(notification)).await?;
            self.cursor = id;
            return Ok(());
        }
        self.catch_up().await
    }

    /// Runs until the client goes away or the log fails; `resume` replays the log first.
    async fn run(&mut self, mut live: LiveEvents, resume: bool) -> Stop {
        let result = async {
            if resume {
                self.catch_up().await?;
            }
            loop {
                let next = tokio::select! {
                    () = self.items.closed() => return Err(Stop::Closed),
                    next = live.next() => next,
                };
                match next {
                    Live::Notification(notification) => self.live(notification).await?,
                    Live::Resync => self.catch_up().await?,
                    Live::End => return Err(Stop::Closed),
                }
            }
        };
        match result.await {
            Ok(()) => Stop::Closed,
            Err(stop) => stop,
        }
    }
}

impl Chat {
    /// Opens the user's notification stream, fed live by `live` (from the stream's hub
    /// connection, registered before this call so nothing recorded from then on is missed;
    /// `user.connection` is that connection's name). With `last_event_id` it first replays
    /// the log's entries after that id (saying so with a [`StreamItem::Gap`] if some are no
    /// longer kept), then goes on live; without, it starts with the next notification. An id
    /// beyond the newest one given counts as the newest (the log was reset). The stream
    /// counts as a connection of the user until it is dropped.
    pub async fn notification_stream(
        self: &Arc<Self>,
        user: &User,
        last_event_id: Option<i64>,
        live: LiveEvents,
    ) -> Result<NotificationStream, ChatError> {
        if last_event_id.is_some_and(|id| id < 0) {
            return Err(ChatError::invalid("Last-Event-ID must be a notification id (0 or more)"));
        }
        // The user's topic is live before the log is read: whatever is recorded from here
        // on reaches this stream live or is found in the log.
        self.bus.settled().await;
        let latest = self.store.open_notification_log(&user.id).await?;
        self.connect(user).await?;
        let (tx, items) = mpsc::channel(QUEUE);
        let cursor = last_event_id.map_or(latest, |id| id.min(latest));
        let mut feed = Feed { chat: self.clone(), user_id: user.id.clone(), cursor, items: tx };
        let resume = last_event_id.is_some();
        let connection = user.clone();
        tokio::spawn(async move {
            if let Stop::Store(err) = feed.run(live, resume).await {
                super::telemetry::store_error();
                tracing::warn!(error = %err, user = %feed.user_id, "notification log unreadable; stream closed");
            }
            if let Err(err) = feed.chat.disconnect(&connection).await {
                tracing::warn!(error = %err, "closing a notification stream");
            }
        });
        Ok(NotificationStream { items })
    }
}
