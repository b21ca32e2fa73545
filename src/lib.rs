//! chatd: a real-time chat backend. Conversations, durable gap-free messages, receipts and
//! notification routing, served over REST, Socket.IO and plain WebSocket on one port.
//!
//! Layers: [`core`] holds every chat rule and the ports it needs; [`store`], [`bus`],
//! [`presence`] and [`media`] implement the ports; [`hub`] is the node's one realtime relay and
//! registry; [`transport`] adapts protocols to the core and the hub; [`state`] wires them;
//! [`server`] runs them.

pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod core;
pub mod hub;
pub mod limit;
pub mod media;
pub mod presence;
pub mod push;
pub mod server;
pub mod state;
pub mod store;
pub mod tasks;
pub mod transport;
