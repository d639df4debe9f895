//! `dbfault`: check, list and switch the rules of dbfault configurations (plugin JSON, Istio
//! `WasmPlugin` manifests, ECDS files). See `dbfault --help` and [`dbfault::cli::command`].

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    dbfault::cli::command::die_on_closed_pipe();
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(dbfault::cli::command::main(&args));
}

#[cfg(target_arch = "wasm32")]
fn main() {}
