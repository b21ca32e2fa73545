//! The domain core: every chat rule lives here, once.
//!
//! Transports (REST, Socket.IO, plain WebSocket) decode requests into the types of
//! [`requests`], call one method of [`chat::Chat`], and encode the result. The core talks to
//! storage only through the [`ports`] traits, so it compiles and is tested without axum,
//! socketioxide or any database driver.

pub mod admission;
pub mod budget;
pub mod chat;
pub mod error;
pub mod lease;
pub mod media;
pub mod model;
pub mod moderation;
pub mod notification_routing;
pub mod notifications;
pub mod pii;
pub mod ports;
pub mod presence;
pub mod push_endpoints;
pub mod push_worker;
pub mod requests;
pub mod server_events;
pub mod telemetry;
pub mod time;
pub mod typing;
pub mod validate;

pub use chat::{Chat, ChatLimits};
pub use error::ChatError;
pub use model::*;
