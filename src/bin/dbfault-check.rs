//! `dbfault-check FILE...`: the former name of `dbfault check FILE...`, kept for CI pipelines
//! that call it. `dbfault-check --plugin-config FILE` is `dbfault show FILE`.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    dbfault::cli::command::die_on_closed_pipe();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    match args.first_mut() {
        Some(first) if first == "--plugin-config" => *first = "show".into(),
        _ => args.insert(0, "check".into()),
    }
    std::process::exit(dbfault::cli::command::main(&args));
}

#[cfg(target_arch = "wasm32")]
fn main() {}
