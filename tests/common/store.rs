//! Building blocks for tests that drive a `Store` directly.

use chatd::core::model::{JsonObject, MessageType};
use chatd::core::ports::NewMessage;

/// A fresh time-ordered id, as the core makes them.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A text message from `sender` to append to `conversation_id`.
pub fn text(conversation_id: &str, sender: &str, content: &str) -> NewMessage {
    NewMessage {
        id: new_id(),
        conversation_id: conversation_id.into(),
        sender_id: sender.into(),
        kind: MessageType::Text,
        content: Some(content.into()),
        client_id: None,
        reply_to_id: None,
        attachments: Vec::new(),
        metadata: JsonObject::new(),
        thread_id: None,
        also_in_conversation: false,
        mentions: Vec::new(),
        mentions_all: false,
    }
}

/// `new` with an idempotency key.
pub fn with_client_id(mut new: NewMessage, client_id: &str) -> NewMessage {
    new.client_id = Some(client_id.into());
    new
}
