//! One server event on its way to this node's connections, encoded at most once per wire
//! format however many connections receive it: the JSON payload (what Socket.IO emits and
//! SSE streams read) and the plain-WebSocket frame `{"event":…,"data":…}`.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;

use crate::core::ports::{BusMessage, Delivery};
use crate::core::server_events::ServerEvent;

/// A server event shared by every recipient on this node; the encodings are made on first
/// use and then shared (reference-counted bytes), never re-encoded per recipient.
pub struct Outgoing {
    source: Source,
    payload: OnceLock<Option<Box<RawValue>>>,
    ws_frame: OnceLock<Option<Utf8Bytes>>,
}

/// Where the event lives: inside the bus message that carried it (not copied), or owned
/// (an event the hub makes itself, such as `sync:required`).
enum Source {
    /// The delivery `message` is, or the one at `index` of the batch it is.
    Bus {
        message: Arc<BusMessage>,
        index: Option<usize>,
    },
    Own(Box<ServerEvent>),
}

impl Outgoing {
    /// The event of the [`BusMessage::Deliver`] that `message` is (`index` `None`) or that
    /// its batch holds at `index`; `None` if that is not a delivery.
    pub fn from_bus(message: &Arc<BusMessage>, index: Option<usize>) -> Option<Arc<Outgoing>> {
        delivery(message, index)
            .is_some()
            .then(|| Outgoing::new(Source::Bus { message: message.clone(), index }))
    }

    /// An event made on this node.
    pub fn event(event: ServerEvent) -> Arc<Outgoing> {
        Outgoing::new(Source::Own(Box::new(event)))
    }

    fn new(source: Source) -> Arc<Outgoing> {
        Arc::new(Outgoing { source, payload: OnceLock::new(), ws_frame: OnceLock::new() })
    }

    /// The typed event.
    pub fn server_event(&self) -> &ServerEvent {
        match &self.source {
            Source::Bus { message, index } => match delivery(message, *index) {
                Some(Delivery { event, .. }) => event,
                // `from_bus` only wraps deliveries.
                None => unreachable!("an Outgoing is only made from a delivery"),
            },
            Source::Own(event) => event,
        }
    }

    /// The event's wire name.
    pub fn name(&self) -> &str {
        self.server_event().name()
    }

    /// The payload as JSON, encoded on first use (a relayed event's payload as it came).
    /// `None` only if the event cannot be encoded (logged once).
    pub fn payload(&self) -> Option<&RawValue> {
        if let ServerEvent::Relayed(relayed) = self.server_event() {
            return Some(&relayed.data);
        }
        self.payload
            .get_or_init(|| {
                serde_json::to_string(self.server_event())
                    .and_then(RawValue::from_string)
                    .map_err(
                        |err| tracing::error!(error = %err, event = self.name(), "could not encode event"),
                    )
                    .ok()
            })
            .as_deref()
    }

    /// The plain-WebSocket text frame `{"event": name, "data": payload}`, made on first use.
    pub fn ws_frame(&self) -> Option<Utf8Bytes> {
        self.ws_frame
            .get_or_init(|| {
                let payload = self.payload()?;
                let name = serde_json::to_string(self.name()).ok()?;
                let mut frame = String::with_capacity(name.len() + payload.get().len() + 20);
                frame.push_str("{\"event\":");
                frame.push_str(&name);
                frame.push_str(",\"data\":");
                frame.push_str(payload.get());
                frame.push('}');
                Some(Utf8Bytes::from(frame))
            })
            .clone()
    }
}

/// The delivery `message` is (`index` `None`), or the one at `index` of the batch it is.
fn delivery(message: &BusMessage, index: Option<usize>) -> Option<&Delivery> {
    let message = match (message, index) {
        (BusMessage::Batch(messages), Some(index)) => messages.get(index)?,
        (message, None) => message,
        _ => return None,
    };
    match message {
        BusMessage::Deliver(delivery) => Some(delivery),
        _ => None,
    }
}
