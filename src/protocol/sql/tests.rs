//! Unit tests of `sql.rs`.

use super::*;

fn split(text: &str) -> Vec<String> {
    split_in(text, Dialect::POSTGRES)
}

fn split_in(text: &str, dialect: Dialect) -> Vec<String> {
    statements(text.as_bytes(), dialect)
        .iter()
        .map(|s| String::from_utf8_lossy(s).trim().to_owned())
        .collect()
}

#[test]
fn statements_split_only_at_top_level_semicolons() {
    assert_eq!(split("SELECT 1; SELECT 2"), ["SELECT 1", "SELECT 2"]);
    assert_eq!(split("SELECT 1;;  ; "), ["SELECT 1"]);
    // Past the two kept inline, the rest spill over in order.
    assert_eq!(
        split("SELECT 1; SELECT 2; SELECT 3;; SELECT 4; SELECT 5"),
        ["SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4", "SELECT 5"]
    );
    assert_eq!(split(""), Vec::<String>::new());
    assert_eq!(
        split("SELECT ';'; SELECT 'it''s;'"),
        ["SELECT ';'", "SELECT 'it''s;'"]
    );
    assert_eq!(
        split(r#"SELECT "a;b" FROM t; SELECT 2"#),
        [r#"SELECT "a;b" FROM t"#, "SELECT 2"]
    );
    assert_eq!(
        split("SELECT 1 -- ; not here\n; SELECT 2"),
        ["SELECT 1 -- ; not here", "SELECT 2"]
    );
    assert_eq!(
        split("SELECT /* ; /* nested ; */ ; */ 1; SELECT 2").len(),
        2
    );
    assert_eq!(
        split("DO $$ BEGIN PERFORM 1; END $$; SELECT $1; SELECT $tag$;$tag$"),
        [
            "DO $$ BEGIN PERFORM 1; END $$",
            "SELECT $1",
            "SELECT $tag$;$tag$"
        ]
    );
    assert_eq!(
        split(r"SELECT E'\';'; SELECT 2"),
        [r"SELECT E'\';'", "SELECT 2"]
    );
    // Unterminated: the rest is one statement (a capture cut short).
    assert_eq!(split("SELECT 1; SELECT 'abc"), ["SELECT 1", "SELECT 'abc"]);
    assert_eq!(split("-- only a comment"), Vec::<String>::new());
}

#[test]
fn commands_are_first_keywords() {
    let cases = [
        ("SELECT 1", "select"),
        ("  insert into t values (1)", "insert"),
        ("-- why\nUPDATE t SET a = 1", "update"),
        ("/* x */ (SELECT 1) UNION (SELECT 2)", "select"),
        ("WITH x AS (SELECT 1) DELETE FROM t", "with"),
        ("begin", "begin"),
        ("START TRANSACTION", "start"),
        ("vacuum analyze", "vacuum"),
        ("selectx", "other"),
        ("", "other"),
        ("123", "other"),
        ("LISTEN ch", "listen"),
    ];
    for (text, want) in cases {
        assert_eq!(
            Command::of(text.as_bytes(), Dialect::POSTGRES).name(),
            want,
            "{text:?}"
        );
    }
    assert_eq!(Command::OTHER.name(), "other");
}

#[test]
fn postgres_follows_standard_conforming_strings() {
    let off = Dialect::Postgres {
        standard_strings: false,
    };
    // With it on, a backslash is an ordinary character: the string ends at the second quote.
    assert_eq!(
        split(r"SELECT 'a\'; SELECT 2; -- '"),
        [r"SELECT 'a\'", "SELECT 2"]
    );
    assert_eq!(split_in(r"SELECT 'a\'; SELECT 2; -- '", off).len(), 1);
}

#[test]
fn mysql_comments_quoting_and_executable_comments() {
    let my = Dialect::MYSQL;
    let no_escapes = Dialect::Mysql {
        backslash_escapes: false,
    };
    let cases: &[(&str, &[&str])] = &[
        // `#` comments to the end of the line.
        (
            "SELECT 1 # note; b\nUNION SELECT 2",
            &["SELECT 1 # note; b\nUNION SELECT 2"],
        ),
        // `-- ` needs a space; `--1` is minus minus one.
        ("SELECT 5--1; SELECT 2", &["SELECT 5--1", "SELECT 2"]),
        (
            "SELECT 5 -- ; x\n; SELECT 2",
            &["SELECT 5 -- ; x", "SELECT 2"],
        ),
        // Backslash escapes in both kinds of string.
        (
            r"INSERT INTO t (v) VALUES ('it\'s; x')",
            &[r"INSERT INTO t (v) VALUES ('it\'s; x')"],
        ),
        (
            r"SELECT 'it\'s; ok'; SELECT 2",
            &[r"SELECT 'it\'s; ok'", "SELECT 2"],
        ),
        ("SELECT `a;``b`; SELECT 2", &["SELECT `a;``b`", "SELECT 2"]),
        // Comments do not nest.
        (
            "SELECT /* /* */ 1; SELECT 2",
            &["SELECT /* /* */ 1", "SELECT 2"],
        ),
        // Executable comments with no semicolon inside: both readings agree.
        (
            "/*!40101 SET NAMES utf8 */; SELECT 2",
            &["/*!40101 SET NAMES utf8 */", "SELECT 2"],
        ),
        // ...with one inside, they disagree: the whole text is one statement.
        (
            "SELECT 1 /*!99999 ; SELECT 3 */; SELECT 2",
            &["SELECT 1 /*!99999 ; SELECT 3 */; SELECT 2"],
        ),
        // `"` with a backslash: a string (escaped quote) or, under ANSI_QUOTES, an identifier
        // ending at it. They disagree: one statement.
        (
            r#"SELECT "a\"; SELECT 2; -- "; SELECT 3"#,
            &[r#"SELECT "a\"; SELECT 2; -- "; SELECT 3"#],
        ),
        // ...and agree without a backslash.
        (
            r#"SELECT "a;b"; SELECT 2"#,
            &[r#"SELECT "a;b""#, "SELECT 2"],
        ),
        // PostgreSQL's dollar quotes mean nothing here.
        ("SELECT $$; SELECT 2", &["SELECT $$", "SELECT 2"]),
    ];
    for (text, want) in cases {
        assert_eq!(&split_in(text, my), want, "{text:?}");
    }
    // A `SET sql_mode` earlier in the query may turn backslash escapes off for the
    // statements after it: where that moves a separator, the query is one statement.
    assert_eq!(
        split_in(
            r"SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 'a\'; DELETE FROM t; -- '",
            my
        )
        .len(),
        1
    );
    assert_eq!(
        split_in(r"SET SQL_MODE = ''; SELECT 'a\'; ok'; SELECT 2", no_escapes).len(),
        1
    );
    // Without a backslash in a string, the mode changes nothing.
    assert_eq!(
        split_in("SET sql_mode = 'ANSI'; SELECT 'a;b'; SELECT 2", my).len(),
        3
    );
    // NO_BACKSLASH_ESCAPES: a backslash is an ordinary character.
    assert_eq!(
        split_in(r"SELECT 'a\'; SELECT 2", no_escapes),
        [r"SELECT 'a\'", "SELECT 2"]
    );
    assert_eq!(
        Command::of(b"# why\n-- and\n/* how */ (SELECT 1)", my).name(),
        "select"
    );
    assert_eq!(Command::of(b"--1", my).name(), "other");
    // Found by the oracle: an empty executable comment hid the statement's command.
    assert_eq!(
        Command::of(b"/*!40101 */ DELETE FROM t", my).name(),
        "delete"
    );
    assert_eq!(
        Command::of(b"/*M!100100 */ UPDATE t SET v = 1", my).name(),
        "update"
    );
    assert_eq!(Command::of(b"/*!40101 SET NAMES utf8 */", my).name(), "set");
}
