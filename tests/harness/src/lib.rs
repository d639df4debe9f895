//! dbfault's end-to-end test harness: real processes on loopback, readiness waits instead of
//! sleeps, logs dumped when a test fails, cleanup in `Drop`.
//!
//! # Layout
//! - [`core`]: the repository, temp dirs, `wait_for`, child processes, free ports without races.
//! - [`envoy`]: Envoy with dbfault (shipped config through `scripts/localenv.py`, or a bootstrap
//!   of the test's own), its stats, configuration pushes waited for until every worker runs them.
//! - [`postgres`], [`redis`], [`mariadb`], [`tls`], [`firestore`]: the servers behind Envoy and
//!   their clients.
//! - [`istio`]: the Istio-shaped sidecar bootstrap and istiod's ECDS resource.
//! - [`tcp`], [`http`]: raw clients (a hang or a close as a client sees it; admin endpoints).

pub mod core;
pub mod envoy;
pub mod firestore;
pub mod http;
pub mod istio;
pub mod mariadb;
pub mod postgres;
pub mod redis;
pub mod tcp;
pub mod tls;

pub use crate::core::{
    assert_held, config, documented_sidecar_choice, finish_by_deadline, lines, localenv_output,
    median, output_with_input, python_json, repo, run_ok, start_on_free_port, test_deadline, timed,
    wait_for, OutputByDeadline, Process, TempDir,
};
pub use envoy::{envoy_1_36_bin, envoy_bin, render_ecds, wasm_path, Envoy, EnvoyBuilder};
pub use firestore::{firestore_emulator_installed, plants_firestore, FirestoreEmulator};
pub use http::http_get;
pub use istio::{istiod_ecds, replace_once, sidecar_bootstrap};
pub use mariadb::{mariadb, mariadb_command, MariaDb};
pub use postgres::{pg_url, psql, psql_script, psql_try, PgMessage, Postgres, PsqlSession, RawPg};
pub use redis::{resp, resp_bulk, Redis, RedisConn};
pub use tcp::{read_to_close, stays_silent};
pub use tls::{tls_echo_once, tls_get, TlsEchoServer, TlsServer, TlsSession};
