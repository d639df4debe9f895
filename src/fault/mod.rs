//! Fault rules and what they do to a connection.
//!
//! - [`rule`]: one entry of `faults[]` — its common fields (name, match, percentage, window...)
//!   and their parsing; the kind-specific part is parsed by the kind's module.
//! - [`matching`]: which upstreams a rule names.
//! - [`engine`]: the VM's rules over time — which are active, and which rule decides for a
//!   connection.
//! - [`connection`]: one connection's byte ledger and the dispatch to the fault acting on it.
//! - one module per fault kind, each owning its parameters (parsing and validation), its
//!   per-connection state and its behaviour: [`abort`], [`blackhole`], [`delay`], [`cut`],
//!   [`error`] and [`miss`] (whose work is done by the protocol layer), [`idle`].
//!   A new kind is a new module implementing [`Kind`] and [`Behaviour`], plus one line in the
//!   `kinds!` list below.

pub mod abort;
pub mod blackhole;
pub mod connection;
pub mod cut;
pub mod delay;
pub mod engine;
pub mod error;
pub mod idle;
pub mod matching;
pub mod miss;
pub mod recovery;
pub mod rule;

use crate::config::fields::Fields;
use crate::config::ConfigError;
use crate::flow::{Close, Direction, Effect};
use connection::Ledger;

pub use rule::{ApplyTo, Rule};

/// The result of a data event: the effect on its bytes, and whether it closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub effect: Effect,
    pub close: Option<Close>,
}

impl Outcome {
    pub const FORWARD: Outcome = Outcome {
        effect: Effect::Forward,
        close: None,
    };
}

/// What a tick asks the host to do to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickAction {
    Close,
    /// Release the held client → database bytes.
    Resume,
}

/// What becomes of a connection when the rule that faulted it stops being active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Traffic flows untouched again.
    Clean,
    /// Held bytes are released at the next tick, then traffic flows untouched.
    Release,
    /// Bytes were lost and the stream cannot resume: closed at the next tick.
    Close,
}

/// What a fault starting on a connection may need to know.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub now: u64,
    /// When the connection's upstream was identified (its first byte).
    pub opened_at: u64,
    /// Bytes forwarded so far, both directions.
    pub forwarded: u64,
    /// When it last carried a byte (its identification, if it carried none since).
    pub last_activity: u64,
    /// The connection's random seed (for jitter).
    pub seed: u64,
    /// The fault starts while the event that identified the upstream is handled (that event
    /// comes next); otherwise the connection was already open.
    pub identifying: bool,
}

/// A fault kind's parameters, as a rule's `<KEY>: {...}` gives them.
pub trait Kind: Sized {
    /// The rule key that selects the kind, also its name in logs and in `dbfault check`.
    const KEY: &'static str;
    /// The keys its parameter object may have.
    const PARAMS: &'static [&'static str];
    /// Its state on one connection.
    type State: Behaviour;

    /// Validates the parameter object (field paths in errors come from `params`).
    fn parse(params: &Fields<'_>) -> Result<Self, ConfigError>;

    fn start(&self, at: Start) -> Self::State;
}

/// What a fault does to one connection. The connection's [`Ledger`] counts every byte; the
/// fault decides through it.
pub trait Behaviour {
    /// A data event of `size` bytes (for a paused stream: everything buffered so far). `now`
    /// is asked only when a decision needs the time.
    fn on_data(
        &mut self,
        ledger: &mut Ledger,
        dir: Direction,
        size: usize,
        now: &mut dyn FnMut() -> u64,
    ) -> Outcome;

    /// A tick at `now` for a connection whose [`Behaviour::next_wake`] was due.
    fn on_tick(&mut self, ledger: &mut Ledger, now: u64) -> Option<TickAction>;

    /// The earliest time the fault needs a tick; `None` when it needs none.
    fn next_wake(&self) -> Option<u64>;

    /// The rule stopped being active.
    fn end(&self, ledger: &Ledger) -> Ending;
}

/// The registry: one line per kind (`Variant => module`). It generates [`FaultKind`] (a rule's
/// kind and parameters) and [`FaultState`] (the state on a connection), with closed-enum
/// dispatch.
macro_rules! kinds {
    ($($variant:ident => $module:ident),+ $(,)?) => {
        /// A rule's fault kind with its parameters.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum FaultKind {
            $($variant($module::$variant)),+
        }

        /// The state of a rule's fault on one connection.
        #[derive(Debug)]
        pub enum FaultState {
            $($variant(<$module::$variant as Kind>::State)),+
        }

        /// The rule keys of all kinds, in registration order.
        pub const KIND_KEYS: &[&str] = &[$(<$module::$variant as Kind>::KEY),+];

        impl FaultKind {
            pub fn name(&self) -> &'static str {
                match self {
                    $(FaultKind::$variant(_) => <$module::$variant as Kind>::KEY),+
                }
            }

            /// Parses the kind given under `key` of the rule `rule` (`None`: no kind has it).
            pub fn parse(key: &str, rule: &Fields<'_>) -> Option<Result<FaultKind, ConfigError>> {
                $(
                    if key == <$module::$variant as Kind>::KEY {
                        return Some(parse_kind::<$module::$variant>(rule).map(FaultKind::$variant));
                    }
                )+
                None
            }

            pub fn start(&self, at: Start) -> FaultState {
                match self {
                    $(FaultKind::$variant(k) => FaultState::$variant(k.start(at))),+
                }
            }
        }

        impl Behaviour for FaultState {
            fn on_data(
                &mut self,
                ledger: &mut Ledger,
                dir: Direction,
                size: usize,
                now: &mut dyn FnMut() -> u64,
            ) -> Outcome {
                match self {
                    $(FaultState::$variant(s) => s.on_data(ledger, dir, size, now)),+
                }
            }

            fn on_tick(&mut self, ledger: &mut Ledger, now: u64) -> Option<TickAction> {
                match self {
                    $(FaultState::$variant(s) => s.on_tick(ledger, now)),+
                }
            }

            fn next_wake(&self) -> Option<u64> {
                match self {
                    $(FaultState::$variant(s) => s.next_wake()),+
                }
            }

            fn end(&self, ledger: &Ledger) -> Ending {
                match self {
                    $(FaultState::$variant(s) => s.end(ledger)),+
                }
            }
        }
    };
}

kinds! {
    Abort => abort,
    Blackhole => blackhole,
    Delay => delay,
    Cut => cut,
    Error => error,
    Idle => idle,
    Miss => miss,
}

fn parse_kind<K: Kind>(rule: &Fields<'_>) -> Result<K, ConfigError> {
    match rule.object(K::KEY, K::PARAMS)? {
        Some(params) => K::parse(&params),
        None => Err(ConfigError::new(rule.path(K::KEY), "missing")),
    }
}
