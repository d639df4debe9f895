//! The configuration parser on arbitrary bytes: it must return Ok or a one-line error, never
//! panic; and a configuration it accepts must describe itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match dbfault::plugin::Config::parse(data) {
        Ok(config) => {
            let _ = dbfault::cli::describe(&config);
        }
        Err(err) => assert!(!err.to_string().contains('\n'), "multi-line error: {err}"),
    }
});
