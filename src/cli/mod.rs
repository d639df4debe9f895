//! Native-only support for the `dbfault` command (and its `dbfault-check` alias): text for
//! people, file editing. None of it is built into the Wasm module.

pub mod command;
pub mod describe;
pub mod drill;
pub mod toggle;
pub mod yaml;

pub use describe::describe;
