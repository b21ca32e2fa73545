//! The ports the core needs from the outside world, one file per port. Backends implement
//! them; only the wiring in `state.rs` names a concrete backend.

mod annotations;
mod bus;
mod limit;
mod media;
mod presence;
mod push;
mod push_outbox;
mod search;
mod store;
mod uploads;

pub use annotations::*;
pub use bus::*;
pub use limit::*;
pub use media::*;
pub use presence::*;
pub use push::*;
pub use push_outbox::*;
pub use search::*;
pub use store::*;
pub use uploads::*;

/// The outcome of probing a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendHealth {
    /// The backend's name, as the metrics label it (`redis`).
    pub backend: &'static str,
    /// Whether it answered.
    pub up: bool,
}
