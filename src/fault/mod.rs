//! Fault rules and what they do to a connection.
//!
//! - [`matching`]: which upstreams a rule names (hosts, clusters, ports).
//! - [`engine`]: the VM's rules over time — which are active, and which rule decides for a
//!   connection.
//! - [`connection`]: one connection's fault state machine, fed data events and ticks.
//! - one file per fault kind: [`abort`], [`blackhole`], [`delay`], [`cut`].

pub mod abort;
pub mod blackhole;
pub mod connection;
pub mod cut;
pub mod delay;
pub mod engine;
pub mod matching;

use crate::schedule::Window;
use matching::Match;
use std::time::Duration;

/// One validated rule from `faults[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `[a-z0-9._-]+`, unique: the `fault` label and the name in logs.
    pub name: String,
    pub enabled: bool,
    pub matcher: Match,
    /// Share of matching connections affected, in basis points (0 to 10000).
    pub percentage_bp: u32,
    pub apply_to: ApplyTo,
    pub window: Option<Window>,
    pub dry_run: bool,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    /// Connections already open are affected too when the rule becomes active.
    All,
    /// Only connections whose upstream is identified while the rule is active.
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Abort,
    Blackhole(blackhole::Blackhole),
    Delay(delay::Delay),
    Cut(cut::Cut),
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Abort => "abort",
            FaultKind::Blackhole(_) => "blackhole",
            FaultKind::Delay(_) => "delay",
            FaultKind::Cut(_) => "cut",
        }
    }
}

/// Direction of a data event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The result of a data event: the effect on its bytes, and whether to close the connection
/// right away (only when nothing of this event needs to reach the database first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub effect: Effect,
    pub close: bool,
}

impl Outcome {
    pub const FORWARD: Outcome = Outcome {
        effect: Effect::Forward,
        close: false,
    };
}

/// What a tick asks the host to do to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickAction {
    Close,
    /// Release the held client → database bytes.
    Resume,
}

/// Converts a duration to nanoseconds, saturating (durations are validated to at most days).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
