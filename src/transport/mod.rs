//! Transports: thin adapters that decode requests, call the core, and encode results.
//! No chat rule lives here.

pub mod admin;
pub mod dispatch;
pub mod guard;
pub mod http;
pub mod openapi;
pub mod prometheus;
pub mod socketio;
pub mod sse;
pub mod web;
pub mod ws;
