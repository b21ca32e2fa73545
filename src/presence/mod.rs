//! Presence directory backends (presence shared by several nodes). A single node needs none:
//! the core's own registry is the whole truth there.

pub mod redis;
