//! The Wasm floors of `make bench`. With any plugin configuration but `floor`: a network filter
//! that forwards everything and does nothing else (what any Wasm filter pays). With `floor`:
//! exactly the host calls a request's telemetry cannot do without — each direction's bytes read
//! once, and on each answer one clock read and one histogram sample — and nothing else (the
//! floor of dbfault's awareness, scripts/cpu_bench.py). With `CALL N` (`buffer`, `clock`,
//! `histogram`, `counter`, `property`): that one host call N times per data event in either
//! direction, and nothing else (what each kind of host call costs Envoy, scripts/cpu_bench.py
//! --host-calls).
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, MetricType};
use std::time::UNIX_EPOCH;

#[derive(Default, Clone, Copy)]
enum Call {
    #[default]
    None,
    Buffer,
    Clock,
    Histogram(u32),
    Counter(u32),
    Property,
}

#[derive(Default)]
struct Root {
    /// The histogram of floor mode (`None`: the no-op filter).
    floor: Option<u32>,
    /// A host call to repeat per data event, and how often.
    call: (Call, u32),
}

struct Stream {
    floor: Option<u32>,
    call: (Call, u32),
    last: u64,
}

impl Stream {
    fn repeat(&self, size: usize, downstream: bool) {
        let (call, n) = self.call;
        for _ in 0..n {
            match call {
                Call::None => return,
                Call::Buffer if downstream => {
                    let _ = self.get_downstream_data(0, size);
                }
                Call::Buffer => {
                    let _ = self.get_upstream_data(0, size);
                }
                Call::Clock => {
                    let _ = hostcalls::get_current_time();
                }
                Call::Histogram(id) => {
                    let _ = hostcalls::record_metric(id, 100);
                }
                Call::Counter(id) => {
                    let _ = hostcalls::increment_metric(id, 1);
                }
                Call::Property => {
                    let _ = self.get_property(vec!["xds", "cluster_name"]);
                }
            }
        }
    }
}

impl Context for Root {}
impl Context for Stream {}

impl StreamContext for Stream {
    fn on_downstream_data(&mut self, size: usize, _end: bool) -> Action {
        self.repeat(size, true);
        if self.floor.is_some() {
            let _ = self.get_downstream_data(0, size);
        }
        Action::Continue
    }

    fn on_upstream_data(&mut self, size: usize, _end: bool) -> Action {
        self.repeat(size, false);
        if let Some(id) = self.floor {
            let _ = self.get_upstream_data(0, size);
            let now = hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_micros() as u64);
            let _ = hostcalls::record_metric(id, now.saturating_sub(self.last).min(1 << 30));
            self.last = now;
        }
        Action::Continue
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let floor = config == "floor";
        self.floor = if floor {
            hostcalls::define_metric(MetricType::Histogram, "floor_duration_us").ok()
        } else {
            None
        };
        let mut words = config.split(' ');
        let (name, n) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        let call = match name {
            "buffer" => Call::Buffer,
            "clock" => Call::Clock,
            "histogram" => hostcalls::define_metric(MetricType::Histogram, "calls_histogram")
                .map_or(Call::None, Call::Histogram),
            "counter" => hostcalls::define_metric(MetricType::Counter, "calls_counter")
                .map_or(Call::None, Call::Counter),
            "property" => Call::Property,
            _ => Call::None,
        };
        self.call = (call, n.parse().unwrap_or(0));
        true
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Stream {
            floor: self.floor,
            call: self.call,
            last: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::<Root>::default() });
}}
