//! Database wire protocols, read as they pass: pure, incremental, bounded in memory. Only the
//! framing lives here so far (issue 11 builds PostgreSQL awareness on it).

pub mod postgres;
