//! Transports: thin adapters that decode requests, call the core, and encode results.
//! No chat rule lives here.

pub mod dispatch;
pub mod handshake;
pub mod http;
pub mod openapi;
pub mod prometheus;
pub mod socketio;
pub mod sse;
pub mod web;
pub mod ws;

/// Largest request body or event payload (the contract's 64 KiB cap), on every transport.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
