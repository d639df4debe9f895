//! Just enough SQL to count statements: where a simple Query's statements end, and each one's
//! first keyword. Semicolons inside string literals (`'...'`, `E'...'`), quoted identifiers
//! (`"..."`), dollar-quoted strings (`$$...$$`, `$tag$...$tag$`) and comments (`-- ...`,
//! nested `/* ... */`) do not end a statement.

/// The first keywords that name a statement's command (the `command` label, the list issue 11
/// fixes); anything else is `other`.
pub const COMMANDS: [&str; 37] = [
    "select",
    "insert",
    "update",
    "delete",
    "merge",
    "with",
    "copy",
    "begin",
    "start",
    "commit",
    "end",
    "rollback",
    "savepoint",
    "release",
    "set",
    "show",
    "call",
    "do",
    "create",
    "alter",
    "drop",
    "truncate",
    "grant",
    "revoke",
    "vacuum",
    "analyze",
    "explain",
    "lock",
    "listen",
    "notify",
    "fetch",
    "declare",
    "close",
    "discard",
    "prepare",
    "execute",
    "deallocate",
];

/// A statement's command: an index into [`COMMANDS`], or `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command(u8);

impl Command {
    pub const OTHER: Command = Command(COMMANDS.len() as u8);

    /// Its position in [`COMMANDS`] (`COMMANDS.len()` for `other`).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The `command` label value.
    pub fn name(self) -> &'static str {
        COMMANDS
            .get(usize::from(self.0))
            .copied()
            .unwrap_or("other")
    }

    /// The command of a statement: its first keyword (after spaces, comments and opening
    /// parentheses), case-insensitively.
    pub fn of(statement: &[u8]) -> Command {
        let rest = skip_blanks(statement);
        let word_len = rest
            .iter()
            .position(|b| !b.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let word = rest.get(..word_len).unwrap_or_default();
        COMMANDS
            .iter()
            .position(|c| c.as_bytes().eq_ignore_ascii_case(word))
            .map_or(Command::OTHER, |i| Command(i as u8))
    }
}

/// `text` without leading whitespace, comments and parentheses (`(SELECT 1) UNION ...`).
fn skip_blanks(mut text: &[u8]) -> &[u8] {
    loop {
        match text {
            [b, rest @ ..] if b.is_ascii_whitespace() || *b == b'(' => text = rest,
            [b'-', b'-', ..] => {
                let end = text.iter().position(|&b| b == b'\n').unwrap_or(text.len());
                text = text.get(end..).unwrap_or_default();
            }
            [b'/', b'*', ..] => text = skip_block_comment(text),
            _ => return text,
        }
    }
}

/// `text` (starting with `/*`) after its comment, which may nest.
fn skip_block_comment(text: &[u8]) -> &[u8] {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(pair) = text.get(i..i + 2) {
        match pair {
            b"/*" => {
                depth += 1;
                i += 2;
            }
            b"*/" => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return text.get(i..).unwrap_or_default();
                }
            }
            _ => i += 1,
        }
    }
    &[]
}

/// The statements of a simple Query's text, in order, without the empty ones (`SELECT 1;;`
/// has one). A statement cut off by the capture limit is the last one.
pub fn statements(text: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b';' => {
                push_statement(&mut out, text.get(start..i).unwrap_or_default());
                start = i + 1;
                i += 1;
            }
            b'\'' | b'"' => i = skip_quoted(text, i, b),
            b'-' if text.get(i + 1) == Some(&b'-') => {
                i = text
                    .get(i..)
                    .and_then(|t| t.iter().position(|&c| c == b'\n'))
                    .map_or(text.len(), |n| i + n);
            }
            b'/' if text.get(i + 1) == Some(&b'*') => {
                let rest = skip_block_comment(text.get(i..).unwrap_or_default());
                i = text.len() - rest.len();
            }
            b'$' => i = skip_dollar_quoted(text, i),
            _ => i += 1,
        }
    }
    push_statement(&mut out, text.get(start..).unwrap_or_default());
    out
}

fn push_statement<'a>(out: &mut Vec<&'a [u8]>, statement: &'a [u8]) {
    if !skip_blanks(statement).is_empty() {
        out.push(statement);
    }
}

/// The index after the quoted section opening at `at` with `quote` (a doubled quote is part
/// of it; so is a backslash-escaped one, which only `E'...'` strings have, but treating every
/// string alike errs only on strings ending in a backslash with standard_conforming_strings).
fn skip_quoted(text: &[u8], at: usize, quote: u8) -> usize {
    let escapes = quote == b'\''
        && at > 0
        && matches!(text.get(at - 1), Some(b'e' | b'E'))
        && !text
            .get(at.wrapping_sub(2))
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
    let mut i = at + 1;
    while let Some(&b) = text.get(i) {
        if escapes && b == b'\\' {
            i += 2;
            continue;
        }
        if b == quote {
            if text.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    text.len()
}

/// The index after a dollar-quoted string opening at `at` (`$$` or `$tag$`), or after the `$`
/// when it opens none (a parameter such as `$1`).
fn skip_dollar_quoted(text: &[u8], at: usize) -> usize {
    let tag_end = text
        .get(at + 1..)
        .and_then(|t| {
            t.iter()
                .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
        })
        .map(|n| at + 1 + n);
    let Some(tag_end) = tag_end else {
        return text.len();
    };
    let tag = text.get(at..=tag_end).unwrap_or_default();
    let opens = text.get(tag_end) == Some(&b'$') && !tag.get(1).is_some_and(u8::is_ascii_digit);
    if !opens {
        return at + 1;
    }
    let body = tag_end + 1;
    text.get(body..)
        .and_then(|t| t.windows(tag.len()).position(|w| w == tag))
        .map_or(text.len(), |n| body + n + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        statements(text.as_bytes())
            .iter()
            .map(|s| String::from_utf8_lossy(s).trim().to_owned())
            .collect()
    }

    #[test]
    fn statements_split_only_at_top_level_semicolons() {
        assert_eq!(split("SELECT 1; SELECT 2"), ["SELECT 1", "SELECT 2"]);
        assert_eq!(split("SELECT 1;;  ; "), ["SELECT 1"]);
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
            assert_eq!(Command::of(text.as_bytes()).name(), want, "{text:?}");
        }
        assert_eq!(Command::OTHER.name(), "other");
    }
}
