//! The vocabulary of data flowing through a connection, shared by the protocol readers, the
//! faults and the filter: which way bytes go, what becomes of them, whether the connection
//! closes.

/// Direction of a data event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → database (`on_downstream_data`).
    ToDatabase,
    /// Database → client (`on_upstream_data`).
    ToClient,
}

/// What to do with the bytes of one data event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Forward everything.
    Forward,
    /// Keep the bytes buffered in Envoy (client → database only) until resumed.
    Hold,
    /// Forward the first `keep` bytes and discard the rest.
    Drop { keep: usize },
}

/// How a data event closes the connection (`Option<Close>`: `None` when it does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Inside the callback: nothing of this event needs to reach its peer.
    Now,
    /// At the next tick: the kept bytes of this event must travel on first (a close inside the
    /// callback would discard them); everything until then is dropped.
    AtNextTick,
}
