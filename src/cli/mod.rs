//! Native-only support for the `dbfault` command (and its `dbfault-check` alias): text for
//! people, file editing. None of it is built into the Wasm module.
//!
//! - [`command`]: the commands' arguments and exit statuses; [`inspect`]: `check` and `list`; [`drill`]: `dbfault drill` (the
//!   incidents as rules); [`describe`](mod@describe): rules in words;
//! - [`yaml`]: YAML and JSON text with byte positions; [`toggle`]: `on`/`off` as a one-value
//!   edit; [`merge`]: a drill's rules into a file's configurations; [`status`]: which sidecars
//!   run a file's configuration, asked of Prometheus; [`spec`]: the commands and options as data,
//!   from which the overview, the shell completions and the man page are generated.

pub mod command;
pub mod completion;
pub mod describe;
pub mod drill;
pub mod inspect;
pub mod merge;
pub mod prometheus;
pub mod spec;
pub mod status;
pub mod toggle;
pub mod yaml;

pub use describe::describe;
