//! Native-only support for the command-line tools (`dbfault-check`): text for people. None of
//! it is built into the Wasm module.

pub mod describe;

pub use describe::describe;
