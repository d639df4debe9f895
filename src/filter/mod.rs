//! The proxy-wasm contexts: they translate host callbacks into calls on the pure core.
//!
//! State that must outlive one plugin configuration lives in [`VmState`], one per Wasm VM (one
//! VM per Envoy worker): an ECDS update creates a new root context in the same VM, while the
//! connections opened under the old one keep their stream contexts.

mod root;
mod stream;

pub use root::Root;

use crate::config::Config;
use crate::metrics::Telemetry;
use std::cell::RefCell;
use std::rc::Rc;

#[derive(Default)]
struct VmState {
    /// The newest accepted configuration.
    config: Rc<Config>,
    telemetry: Telemetry,
    /// Root contexts whose configuration was accepted and that are not done yet.
    live_roots: usize,
}

thread_local! {
    static VM: RefCell<VmState> = RefCell::default();
}

/// Runs `f` on this VM's state; `None` if it is unavailable (re-entered), so callers fail open.
fn with_vm<R>(f: impl FnOnce(&mut VmState) -> R) -> Option<R> {
    VM.try_with(|vm| vm.try_borrow_mut().ok().map(|mut vm| f(&mut vm)))
        .ok()
        .flatten()
}
