//! `plants`: the demo app. It writes a new plant to PostgreSQL every half second, the way a real
//! service would: through one long-lived pooled connection, reconnecting after a broken
//! connection, and retrying a write that failed with a transient SQLSTATE (class 40:
//! serialization failure, deadlock) on the same connection, as retry logic written against
//! those codes does. It knows nothing of dbfault; pointed at Envoy, its database goes away,
//! fails and comes back on the operator's command.
//!
//! `DATABASE_URL` (default `host=127.0.0.1 port=15432 user=postgres dbname=postgres
//! connect_timeout=3`), `PLANTS_INTERVAL_MS` (default 500).

use postgres::{Client, NoTls, Statement};
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

const DEFAULT_URL: &str =
    "host=127.0.0.1 port=15432 user=postgres dbname=postgres connect_timeout=3";
const SPECIES: [&str; 8] = [
    "fern", "monstera", "ficus", "cactus", "basil", "orchid", "aloe", "ivy",
];

/// Attempts per write when the database answers with a transient error.
const ATTEMPTS: u32 = 3;

/// The client's error with its cause, as the driver reports it (and the SQLSTATE of a server
/// error).
fn describe(err: &postgres::Error) -> String {
    let text = match std::error::Error::source(err) {
        Some(cause) if !err.to_string().contains(&cause.to_string()) => format!("{err}: {cause}"),
        _ => err.to_string(),
    };
    match err.code() {
        Some(code) => format!("{text} (SQLSTATE {})", code.code()),
        None => text,
    }
}

/// Serialization failures and deadlocks: the transaction may simply be retried.
fn transient(err: &postgres::Error) -> bool {
    err.code().is_some_and(|c| c.code().starts_with("40"))
}

/// The pooled connection and its prepared insert (one round trip per write once prepared).
struct Pooled {
    client: Client,
    insert: Statement,
}

fn connect(url: &str) -> Result<Pooled, postgres::Error> {
    let mut client = Client::connect(url, NoTls)?;
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS plants (
             id serial PRIMARY KEY, name text NOT NULL, planted_at timestamptz DEFAULT now())",
    )?;
    let insert = client.prepare("INSERT INTO plants (name) VALUES ($1) RETURNING id")?;
    Ok(Pooled { client, insert })
}

fn write_plant(pool: &mut Option<Pooled>, url: &str, name: &str) -> Result<i32, postgres::Error> {
    let pooled = if let Some(pooled) = pool {
        pooled
    } else {
        pool.insert(connect(url)?)
    };
    let row = pooled.client.query_one(&pooled.insert, &[&name])?;
    Ok(row.get(0))
}

fn main() {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let interval = std::env::var("PLANTS_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_millis(500), Duration::from_millis);
    let mut pool: Option<Pooled> = None;
    let mut out = std::io::stdout();
    for n in 0u64.. {
        let started = Instant::now();
        let species = SPECIES.get(n as usize % SPECIES.len()).unwrap_or(&"fern");
        let name = format!("{species}-{n}");
        let mut attempt = 1;
        let line = loop {
            match write_plant(&mut pool, &url, &name) {
                Ok(id) => {
                    break format!(
                        "writing a new plant to the database... ✅ success (plant #{id}, {} ms{})",
                        started.elapsed().as_millis(),
                        match attempt - 1 {
                            0 => String::new(),
                            1 => ", after 1 retry".to_owned(),
                            n => format!(", after {n} retries"),
                        }
                    )
                }
                Err(err) if transient(&err) && attempt < ATTEMPTS => {
                    // The session is still usable: retry on it.
                    let _ = writeln!(
                        out,
                        "writing a new plant to the database... 🚫 Failed adding plant: {}, retrying",
                        describe(&err)
                    );
                    attempt += 1;
                }
                Err(err) => {
                    if !transient(&err) {
                        // A broken connection is not reused: the next write reconnects.
                        pool = None;
                    }
                    break format!(
                        "writing a new plant to the database... 🚫 Failed adding plant: {}",
                        describe(&err)
                    );
                }
            }
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}
