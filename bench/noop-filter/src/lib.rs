//! A network filter that forwards everything and does nothing else.
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::ContextType;

struct Root;
struct Stream;

impl Context for Root {}
impl Context for Stream {}
impl StreamContext for Stream {}

impl RootContext for Root {
    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Stream))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}
