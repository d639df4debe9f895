//! Reads and writes as a read-only server tells them (`match.access`), from a statement's text
//! alone: what a PostgreSQL hot standby and a MariaDB with `read_only` refuse. Each list was
//! taken from the real servers (PostgreSQL 15 standby, MariaDB 10.11 with a user without
//! `READ ONLY ADMIN`); `tests/read_only.rs` compares them statement by statement.
//!
//! What the text cannot tell is a read here: a function with side effects inside a SELECT
//! (`nextval()`, `setval()`, `pg_notify()`), `EXECUTE` of a statement prepared with SQL's
//! `PREPARE`, `CALL` and `DO` (their bodies decide), and a locking clause beyond the first
//! 4 KiB of a statement.

use crate::protocol::sql::{words, Dialect, Word};

/// How a PostgreSQL standby words its refusal (both SQLSTATE 25006).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// "cannot execute {command} in a read-only transaction"
    ReadOnly,
    /// "cannot execute {command} during recovery" (VACUUM, LISTEN, COPY FROM, ...)
    Recovery,
}

/// A statement a PostgreSQL standby refuses: the command as the server names it in its error
/// (`INSERT`, `SELECT FOR UPDATE`, `CREATE TABLE AS`) and the wording of the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgWrite {
    pub command: String,
    pub refusal: Refusal,
}

/// Words in upper case, separated by spaces (keywords are ASCII; anything else is `?`).
fn upper(words: &[Word<'_>]) -> String {
    let mut out = String::new();
    for w in words {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(w.text.iter().map(|&b| {
            if b.is_ascii() {
                char::from(b.to_ascii_uppercase())
            } else {
                '?'
            }
        }));
    }
    out
}

fn named(command: &str, refusal: Refusal) -> Option<PgWrite> {
    Some(PgWrite {
        command: command.to_owned(),
        refusal,
    })
}

/// The row-locking clause among `words` (`FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`,
/// `FOR KEY SHARE`, at any depth), as the server names the statement then.
fn locking(words: &[Word<'_>]) -> Option<&'static str> {
    (0..words.len()).find_map(|i| {
        let at = |n: usize| words.get(i + n);
        let is = |n: usize, k: &str| at(n).is_some_and(|w| w.is(k));
        if !is(0, "for") {
            None
        } else if is(1, "update") {
            Some("SELECT FOR UPDATE")
        } else if is(1, "share") {
            Some("SELECT FOR SHARE")
        } else if is(1, "no") && is(2, "key") && is(3, "update") {
            Some("SELECT FOR NO KEY UPDATE")
        } else if is(1, "key") && is(2, "share") {
            Some("SELECT FOR KEY SHARE")
        } else {
            None
        }
    })
}

/// Object kinds named by two or three words after CREATE, ALTER and DROP.
const COMPOUND: [&[&str]; 12] = [
    &["materialized", "view"],
    &["foreign", "data", "wrapper"],
    &["foreign", "table"],
    &["event", "trigger"],
    &["text", "search", "parser"],
    &["text", "search", "dictionary"],
    &["text", "search", "template"],
    &["text", "search", "configuration"],
    &["operator", "class"],
    &["operator", "family"],
    &["user", "mapping"],
    &["access", "method"],
];

/// Words between CREATE and the object kind that PostgreSQL leaves out of the command's name.
const CREATE_MODIFIERS: [&str; 13] = [
    "or",
    "replace",
    "temp",
    "temporary",
    "unlogged",
    "global",
    "local",
    "unique",
    "default",
    "trusted",
    "procedural",
    "constraint",
    "recursive",
];

/// `CREATE`/`ALTER`/`DROP` and the object kind, as PostgreSQL names the command.
fn ddl(verb: &str, rest: &[Word<'_>]) -> String {
    let rest: Vec<Word<'_>> = rest
        .iter()
        .copied()
        .skip_while(|w| verb == "CREATE" && CREATE_MODIFIERS.iter().any(|m| w.is(m)))
        .collect();
    let kind = COMPOUND
        .iter()
        .find(|c| c.len() <= rest.len() && c.iter().zip(&rest).all(|(k, w)| w.is(k)))
        .map_or(rest.get(..1).unwrap_or_default(), |c| {
            rest.get(..c.len()).unwrap_or_default()
        });
    let mut kind = upper(kind);
    // Users and groups are roles.
    if kind == "USER" || kind == "GROUP" {
        kind = "ROLE".into();
    }
    format!("{verb} {kind}")
}

/// Whether a PostgreSQL standby refuses the statement, and how it names it (see the module
/// comment for what cannot be told from the text).
pub fn postgres(text: &[u8]) -> Option<PgWrite> {
    let all: Vec<Word<'_>> = words(text, Dialect::POSTGRES).collect();
    postgres_words(&all)
}

fn postgres_words(all: &[Word<'_>]) -> Option<PgWrite> {
    use Refusal::{ReadOnly, Recovery};
    let first = all.first()?;
    let base = first.depth;
    // The statement's own words (not inside parentheses).
    let top = |w: &&Word<'_>| w.depth == base;
    let second = all.get(1);
    let key = first.text.to_ascii_lowercase();
    let own_name = || upper(std::slice::from_ref(first));
    match key.as_slice() {
        b"insert" | b"update" | b"delete" | b"merge" => named(&own_name(), ReadOnly),
        b"select" | b"values" | b"table" => {
            if let Some(name) = locking(all) {
                return named(name, ReadOnly);
            }
            let into = first.is("select") && all.iter().filter(top).any(|w| w.is("into"));
            into.then(|| named("SELECT INTO", ReadOnly)).flatten()
        }
        b"with" => {
            // The main statement: the first of these at the statement's own depth (the
            // common table expressions' bodies are in parentheses).
            let main = all.iter().filter(top).find(|w| {
                [
                    "select", "insert", "update", "delete", "merge", "values", "table",
                ]
                .iter()
                .any(|k| w.is(k))
            })?;
            let main_name = upper(std::slice::from_ref(main));
            if main_name != "SELECT" && main_name != "VALUES" && main_name != "TABLE" {
                return named(&main_name, ReadOnly);
            }
            if let Some(name) = locking(all) {
                return named(name, ReadOnly);
            }
            // A data-modifying common table expression: the server names the main statement.
            let modifies = all.iter().any(|w| {
                w.opens
                    && w.depth == base + 1
                    && ["insert", "update", "delete", "merge"]
                        .iter()
                        .any(|k| w.is(k))
            });
            modifies.then(|| named(&main_name, ReadOnly)).flatten()
        }
        b"explain" => {
            // Only EXPLAIN ANALYZE runs the statement.
            let mut rest = all.get(1..).unwrap_or_default();
            let mut analyze = false;
            if rest.first().is_some_and(|w| w.opens && w.depth == base + 1) {
                let options: Vec<&Word<'_>> = rest.iter().take_while(|w| w.depth > base).collect();
                analyze = options.iter().enumerate().any(|(i, w)| {
                    w.is("analyze")
                        && !options
                            .get(i + 1)
                            .is_some_and(|v| v.is("false") || v.is("off") || v.is("0"))
                });
                rest = rest.get(options.len()..).unwrap_or_default();
            } else {
                while let Some(w) = rest.first() {
                    if w.is("analyze") || w.is("analyse") {
                        analyze = true;
                    } else if !w.is("verbose") {
                        break;
                    }
                    rest = rest.get(1..).unwrap_or_default();
                }
            }
            if analyze {
                postgres_words(rest)
            } else {
                None
            }
        }
        b"copy" => all
            .iter()
            .filter(top)
            .any(|w| w.is("from"))
            .then(|| named("COPY", Recovery))
            .flatten(),
        b"create" => {
            let rest = all.get(1..).unwrap_or_default();
            let mut name = ddl("CREATE", rest);
            if name == "CREATE TABLE" && all.iter().filter(top).any(|w| w.is("as")) {
                name.push_str(" AS");
            }
            named(&name, ReadOnly)
        }
        b"alter" => {
            if second.is_some_and(|w| w.is("system")) {
                return None;
            }
            if second.is_some_and(|w| w.is("default")) {
                return named("ALTER DEFAULT PRIVILEGES", ReadOnly);
            }
            named(&ddl("ALTER", all.get(1..).unwrap_or_default()), ReadOnly)
        }
        b"drop" => {
            if second.is_some_and(|w| w.is("owned")) {
                return named("DROP OWNED", ReadOnly);
            }
            named(&ddl("DROP", all.get(1..).unwrap_or_default()), ReadOnly)
        }
        b"truncate" => named("TRUNCATE TABLE", ReadOnly),
        b"grant" | b"revoke" | b"comment" => named(&own_name(), ReadOnly),
        b"security" => named("SECURITY LABEL", ReadOnly),
        b"reassign" => named("REASSIGN OWNED", ReadOnly),
        b"import" => named("IMPORT FOREIGN SCHEMA", ReadOnly),
        b"refresh" => named("REFRESH MATERIALIZED VIEW", ReadOnly),
        b"vacuum" | b"analyze" | b"cluster" | b"reindex" | b"listen" | b"notify" => {
            named(&own_name(), Recovery)
        }
        b"analyse" => named("ANALYZE", Recovery),
        b"lock" => {
            // ACCESS SHARE, ROW SHARE and ROW EXCLUSIVE are allowed; the default is ACCESS
            // EXCLUSIVE.
            let mode: Vec<&Word<'_>> = all
                .iter()
                .filter(top)
                .skip_while(|w| !w.is("in"))
                .skip(1)
                .take_while(|w| !w.is("mode"))
                .collect();
            let weak = matches!(
                mode.as_slice(),
                [a, b] if (a.is("access") || a.is("row")) && b.is("share")
            ) || matches!(mode.as_slice(), [a, b] if a.is("row") && b.is("exclusive"));
            (!weak).then(|| named("LOCK TABLE", Recovery)).flatten()
        }
        b"prepare" if second.is_some_and(|w| w.is("transaction")) => {
            named("PREPARE TRANSACTION", Recovery)
        }
        b"declare" => locking(all).and_then(|name| named(name, ReadOnly)),
        _ => None,
    }
}

/// Whether a MariaDB with `read_only` refuses the statement to a user without the privilege
/// that bypasses it (error 1290).
pub fn mysql(text: &[u8]) -> bool {
    let all: Vec<Word<'_>> = words(text, Dialect::MYSQL).collect();
    let Some(first) = all.first() else {
        return false;
    };
    let base = first.depth;
    let top: Vec<&Word<'_>> = all.iter().filter(|w| w.depth == base).collect();
    let second = top.get(1);
    let key = first.text.to_ascii_lowercase();
    match key.as_slice() {
        b"insert" | b"update" | b"delete" | b"replace" | b"load" | b"truncate" | b"rename"
        | b"grant" | b"revoke" | b"alter" => true,
        // Temporary tables are the session's own: allowed.
        b"create" | b"drop" => !top.iter().skip(1).take(3).any(|w| w.is("temporary")),
        b"select" | b"with" | b"values" | b"table" => {
            // `FOR UPDATE` locks rows for writing (`LOCK IN SHARE MODE` is allowed).
            all.windows(2)
                .any(|p| matches!(p, [f, u] if f.is("for") && u.is("update")))
        }
        b"analyze" | b"optimize" | b"repair" => true,
        b"set" => second.is_some_and(|w| w.is("password")),
        b"lock" => top.iter().any(|w| w.is("write")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(text: &str) -> Option<(String, Refusal)> {
        postgres(text.as_bytes()).map(|w| (w.command, w.refusal))
    }

    #[test]
    fn postgres_names_what_it_refuses_as_the_server_does() {
        use Refusal::*;
        for (text, name, refusal) in [
            ("insert into t values (1)", "INSERT", ReadOnly),
            ("  /* c */ UPDATE t SET v = 1", "UPDATE", ReadOnly),
            (
                "SELECT * FROM t FOR NO KEY UPDATE",
                "SELECT FOR NO KEY UPDATE",
                ReadOnly,
            ),
            (
                "SELECT * FROM (SELECT * FROM t FOR KEY SHARE) s",
                "SELECT FOR KEY SHARE",
                ReadOnly,
            ),
            ("SELECT * INTO t2 FROM t", "SELECT INTO", ReadOnly),
            (
                "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x",
                "SELECT",
                ReadOnly,
            ),
            (
                "WITH x AS (SELECT 1) UPDATE t SET v = 2",
                "UPDATE",
                ReadOnly,
            ),
            ("EXPLAIN ANALYZE VERBOSE DELETE FROM t", "DELETE", ReadOnly),
            (
                "EXPLAIN (ANALYZE, BUFFERS) INSERT INTO t VALUES (1)",
                "INSERT",
                ReadOnly,
            ),
            ("COPY t (a, b) FROM STDIN", "COPY", Recovery),
            ("CREATE TEMP TABLE t (id int)", "CREATE TABLE", ReadOnly),
            (
                "CREATE UNLOGGED TABLE t AS SELECT 1",
                "CREATE TABLE AS",
                ReadOnly,
            ),
            (
                "CREATE OR REPLACE MATERIALIZED VIEW m AS SELECT 1",
                "CREATE MATERIALIZED VIEW",
                ReadOnly,
            ),
            ("create unique index on t (v)", "CREATE INDEX", ReadOnly),
            ("CREATE USER u", "CREATE ROLE", ReadOnly),
            (
                "ALTER FOREIGN TABLE f ADD COLUMN c int",
                "ALTER FOREIGN TABLE",
                ReadOnly,
            ),
            ("DROP TABLE IF EXISTS t", "DROP TABLE", ReadOnly),
            ("TRUNCATE t", "TRUNCATE TABLE", ReadOnly),
            ("LOCK t", "LOCK TABLE", Recovery),
            (
                "LOCK TABLE t IN SHARE ROW EXCLUSIVE MODE",
                "LOCK TABLE",
                Recovery,
            ),
            ("PREPARE TRANSACTION 'x'", "PREPARE TRANSACTION", Recovery),
            (
                "DECLARE c CURSOR FOR SELECT * FROM t FOR SHARE",
                "SELECT FOR SHARE",
                ReadOnly,
            ),
            ("vacuum (verbose) t", "VACUUM", Recovery),
        ] {
            assert_eq!(pg(text), Some((name.to_owned(), refusal)), "{text}");
        }
    }

    #[test]
    fn postgres_reads_and_what_looks_like_a_write_inside_text_pass() {
        for text in [
            "SELECT 1",
            "SELECT 'insert into t values (1)' -- for update",
            "SELECT $$ FOR UPDATE $$, \"for\" FROM t",
            "SELECT substring('abc' from 1 for 2)",
            "EXPLAIN INSERT INTO t VALUES (1)",
            "EXPLAIN (ANALYZE false) DELETE FROM t",
            "EXPLAIN (ANALYZE off, COSTS) DELETE FROM t",
            "COPY t TO STDOUT",
            "COPY (SELECT * FROM t WHERE a IN (SELECT b FROM u)) TO STDOUT",
            "LOCK TABLE t IN ACCESS SHARE MODE",
            "LOCK TABLE t IN ROW EXCLUSIVE MODE",
            "ALTER SYSTEM SET work_mem = '8MB'",
            "PREPARE p AS INSERT INTO t VALUES (1)",
            "DECLARE c CURSOR FOR SELECT * FROM t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SELECT nextval('s')",
            "UNLISTEN ch",
            "CHECKPOINT",
            "SET work_mem = '8MB'",
            "",
            "/* only a comment */",
        ] {
            assert_eq!(pg(text), None, "{text}");
        }
    }

    #[test]
    fn mysql_writes_are_what_read_only_refuses() {
        for text in [
            "INSERT INTO t VALUES (1)",
            "replace into t values (1)",
            "/*!40101 UPDATE t SET v = 1 */",
            "SELECT * FROM t FOR UPDATE",
            "LOAD DATA INFILE 'x' INTO TABLE t",
            "CREATE TABLE t (id int)",
            "DROP TABLE t",
            "LOCK TABLES t WRITE",
            "SET PASSWORD = PASSWORD('x')",
            "ANALYZE TABLE t",
        ] {
            assert!(mysql(text.as_bytes()), "{text}");
        }
        for text in [
            "SELECT 1",
            "SELECT * FROM t LOCK IN SHARE MODE",
            "SELECT 'for update' # insert",
            "CREATE TEMPORARY TABLE t (id int)",
            "DROP TEMPORARY TABLE t",
            "SET @x = 1",
            "START TRANSACTION",
            "DO 1",
            "LOCK TABLES t READ",
            "SHOW TABLES",
        ] {
            assert!(!mysql(text.as_bytes()), "{text}");
        }
    }
}
