//! The proxy-wasm contexts (Wasm only): each host callback calls the filter with the real host,
//! [`ProxyWasm`]. Everything they call is plain Rust over the [`crate::host::Host`] seam.

use super::root::Root;
use super::stream::Stream;
use crate::flow::Direction;
use crate::host::ProxyWasm;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, PeerType};

impl Context for Root {
    fn on_done(&mut self) -> bool {
        self.done(&mut ProxyWasm);
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        self.configure(&mut ProxyWasm, plugin_configuration_size)
    }

    fn on_tick(&mut self) {
        self.tick(&mut ProxyWasm);
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Stream::new(context_id, self.context_id())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        self.finish(&mut ProxyWasm);
        true
    }
}

impl StreamContext for Stream {
    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        self.on_data(&mut ProxyWasm, Direction::ToDatabase, data_size)
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        self.on_data(&mut ProxyWasm, Direction::ToClient, data_size)
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        self.closed(&mut ProxyWasm);
    }

    fn on_upstream_close(&mut self, _peer_type: PeerType) {
        self.closed(&mut ProxyWasm);
    }

    fn on_log(&mut self) {
        self.finish(&mut ProxyWasm);
    }
}
