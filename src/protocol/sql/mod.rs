//! Just enough SQL to count statements and to place a stand-in safely: where a query's
//! statements end, and each one's first keyword, in each dialect's own lexical rules. One
//! lexer serves splitting, labelling and matching, so the three never disagree.
//!
//! PostgreSQL: `'...'` (backslash escapes in `E'...'`, and in every string while the server
//! reports `standard_conforming_strings = off`), `"..."` identifiers, dollar quotes (`$$...$$`,
//! `$tag$...$tag$`), `--` and nested `/* ... */` comments.
//!
//! MySQL/MariaDB: `'...'` and `"..."` strings (backslash escapes unless the server reports
//! `NO_BACKSLASH_ESCAPES`), `` `...` `` identifiers, `#` comments, `-- ` comments (two dashes
//! and a space or control character: `5--1` is arithmetic), `/* ... */` comments that do not
//! nest, and executable comments (`/*! ... */`, `/*M! ... */`) whose contents the server runs.
//! Two things cannot be known from the session: whether `ANSI_QUOTES` makes `"` quote an
//! identifier (no backslash escapes) and whether the server runs a versioned executable
//! comment. The text is read every way; where the readings disagree on where statements
//! start, the whole text is one statement (so a stand-in replaces all of it and can never land
//! inside a comment or a string).

mod words;
pub use words::{words, Word, Words};

/// The first keywords that name a statement's command (the `command` label, the list issue 11
/// fixes); anything else is `other`.
pub const COMMANDS: [&str; 39] = [
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
    "cluster",
    "reindex",
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
    pub fn of(statement: &[u8], dialect: Dialect) -> Command {
        let rest = skip_blanks(statement, dialect);
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

/// A session's SQL dialect and what its server said about quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `standard_strings`: `standard_conforming_strings` is on (the default since 9.1).
    Postgres { standard_strings: bool },
    /// `backslash_escapes`: `NO_BACKSLASH_ESCAPES` is off (the default).
    Mysql { backslash_escapes: bool },
}

impl Dialect {
    pub const POSTGRES: Dialect = Dialect::Postgres {
        standard_strings: true,
    };
    pub const MYSQL: Dialect = Dialect::Mysql {
        backslash_escapes: true,
    };
}

/// One way of reading MySQL text where the session cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    dialect: Dialect,
    /// MySQL: `"` quotes an identifier (`ANSI_QUOTES`).
    ansi_quotes: bool,
    /// MySQL: executable comments' contents are statements' text (else comments).
    executable: bool,
}

/// `text` without leading whitespace, comments and parentheses (`(SELECT 1) UNION ...`).
fn skip_blanks(mut text: &[u8], dialect: Dialect) -> &[u8] {
    let mysql = matches!(dialect, Dialect::Mysql { .. });
    loop {
        match text {
            [b, rest @ ..] if b.is_ascii_whitespace() || *b == b'(' => text = rest,
            [b'-', b'-', ..] if !mysql || dash_comment(text, 0) => text = after_line(text),
            [b'#', ..] if mysql => text = after_line(text),
            // The end of an executable comment whose contents were blank (`/*!40101 */`).
            [b'*', b'/', rest @ ..] if mysql => text = rest,
            [b'/', b'*', ..] => {
                // An executable comment's contents are text: only its opener is skipped.
                let end = match executable_opener(text, 0).filter(|_| mysql) {
                    Some(opener) => opener,
                    None if mysql => plain_comment_end(text, 0),
                    None => nested_comment_end(text, 0),
                };
                text = text.get(end..).unwrap_or_default();
            }
            _ => return text,
        }
    }
}

/// `text` from its first line break on.
fn after_line(text: &[u8]) -> &[u8] {
    let end = text.iter().position(|&b| b == b'\n').unwrap_or(text.len());
    text.get(end..).unwrap_or_default()
}

/// MySQL: whether the `--` at `at` opens a comment (a space or control character follows, or
/// nothing).
fn dash_comment(text: &[u8], at: usize) -> bool {
    text.get(at + 2).is_none_or(|b| *b <= b' ')
}

/// The index after the (possibly nested) comment opening at `at` with `/*`.
fn nested_comment_end(text: &[u8], at: usize) -> usize {
    let mut depth = 0usize;
    let mut i = at;
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
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    text.len()
}

/// The index after the comment opening at `at` with `/*` that ends at the first `*/`.
fn plain_comment_end(text: &[u8], at: usize) -> usize {
    text.get(at + 2..)
        .and_then(|t| t.windows(2).position(|w| w == b"*/"))
        .map_or(text.len(), |n| at + 2 + n + 2)
}

/// MySQL: the length of an executable comment's opener at `at` (`/*!` or `/*M!` and its
/// version digits), if one opens there.
fn executable_opener(text: &[u8], at: usize) -> Option<usize> {
    let rest = text.get(at..)?;
    let bang = if rest.starts_with(b"/*!") {
        3
    } else if rest.starts_with(b"/*M!") {
        4
    } else {
        return None;
    };
    let digits = rest
        .get(bang..)
        .map_or(0, |t| t.iter().take_while(|b| b.is_ascii_digit()).count());
    Some(bang + digits)
}

/// A few values kept inline, more on the heap: a query's statements and separators are
/// almost always one or two, and reading every query costs no allocation for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Few<T: Copy + Default> {
    Inline([T; 2], usize),
    Heap(Vec<T>),
}

impl<T: Copy + Default> Default for Few<T> {
    fn default() -> Self {
        Few::Inline([T::default(); 2], 0)
    }
}

impl<T: Copy + Default> Few<T> {
    pub fn push(&mut self, value: T) {
        match self {
            Few::Inline(values, len) => match values.get_mut(*len) {
                Some(slot) => {
                    *slot = value;
                    *len += 1;
                }
                None => {
                    let mut all = values.to_vec();
                    all.push(value);
                    *self = Few::Heap(all);
                }
            },
            Few::Heap(values) => values.push(value),
        }
    }

    pub fn as_slice(&self) -> &[T] {
        match self {
            Few::Inline(values, len) => values.get(..*len).unwrap_or_default(),
            Few::Heap(values) => values,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.as_slice().iter()
    }

    fn clear(&mut self) {
        *self = Few::default();
    }
}

/// Where the statement separators (top-level semicolons) of `text` are under one reading.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cuts {
    at: Few<usize>,
    /// MySQL: a `"` section with a backslash in it was met (under `ANSI_QUOTES` it would end
    /// at another place), or an executable comment (it may be a comment) — the points where
    /// the readings part. Text with neither reads the same every way.
    ambiguous: bool,
    /// MySQL: a string or `"` section with a backslash in it was met: it ends elsewhere if
    /// `NO_BACKSLASH_ESCAPES` is the other way, which a `SET sql_mode` earlier in the same
    /// query can make it (MySQL parses a multi-statement query one statement at a time).
    backslash: bool,
}

fn cuts(text: &[u8], reading: Reading) -> Cuts {
    let mut out = Cuts::default();
    let mut i = 0;
    let mut in_executable = false;
    let (mysql, escapes_everywhere) = match reading.dialect {
        Dialect::Postgres { standard_strings } => (false, !standard_strings),
        Dialect::Mysql { backslash_escapes } => (true, backslash_escapes),
    };
    while let Some(&b) = text.get(i) {
        if !matches!(
            b,
            b';' | b'\'' | b'"' | b'`' | b'-' | b'#' | b'*' | b'/' | b'$'
        ) {
            // Most of a statement is none of these: passed over in a tight loop.
            let rest = text.get(i..).unwrap_or_default();
            i += rest
                .iter()
                .position(|b| {
                    matches!(
                        b,
                        b';' | b'\'' | b'"' | b'`' | b'-' | b'#' | b'*' | b'/' | b'$'
                    )
                })
                .unwrap_or(rest.len());
            continue;
        }
        match b {
            b';' => {
                out.at.push(i);
                i += 1;
            }
            b'\'' | b'"' => {
                let escapes = if b == b'"' {
                    mysql && !reading.ansi_quotes && escapes_everywhere
                } else {
                    escapes_everywhere || (!mysql && e_string(text, i))
                };
                let end = skip_quoted(text, i, b, escapes);
                // Without a backslash inside, every reading of a quoted section ends at the
                // same place.
                let backslash = mysql
                    && text
                        .get(i..end)
                        .is_some_and(|quoted| quoted.contains(&b'\\'));
                out.backslash |= backslash;
                out.ambiguous |= backslash && b == b'"' && escapes;
                i = end;
            }
            b'`' if mysql => i = skip_quoted(text, i, b, false),
            b'-' if text.get(i + 1) == Some(&b'-') && (!mysql || dash_comment(text, i)) => {
                i = text.len() - after_line(text.get(i..).unwrap_or_default()).len();
            }
            b'#' if mysql => {
                i = text.len() - after_line(text.get(i..).unwrap_or_default()).len();
            }
            b'*' if in_executable && text.get(i + 1) == Some(&b'/') => {
                in_executable = false;
                i += 2;
            }
            b'/' if text.get(i + 1) == Some(&b'*') => {
                let opener = executable_opener(text, i).filter(|_| mysql && !in_executable);
                out.ambiguous |= opener.is_some();
                match opener {
                    Some(n) if reading.executable => {
                        in_executable = true;
                        i += n;
                    }
                    _ if mysql => i = plain_comment_end(text, i),
                    _ => i = nested_comment_end(text, i),
                }
            }
            b'$' if !mysql => i = skip_dollar_quoted(text, i),
            _ => i += 1,
        }
    }
    out
}

/// The statements between `cuts`, without the empty ones.
fn statements_between<'a>(text: &'a [u8], cuts: &[usize], dialect: Dialect) -> Few<&'a [u8]> {
    let mut out = Few::default();
    let mut start = 0;
    for end in cuts.iter().copied().chain([text.len()]) {
        let statement = text.get(start..end).unwrap_or_default();
        if !skip_blanks(statement, dialect).is_empty() {
            out.push(statement);
        }
        start = end + 1;
    }
    out
}

/// PostgreSQL: whether the `'` at `at` opens an `E'...'` string.
fn e_string(text: &[u8], at: usize) -> bool {
    at > 0
        && matches!(text.get(at - 1), Some(b'e' | b'E'))
        && !text
            .get(at.wrapping_sub(2))
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// The index after the quoted section opening at `at` with `quote`: a doubled quote is part
/// of it, and so, with `escapes`, is a backslash and the byte after it.
fn skip_quoted(text: &[u8], at: usize, quote: u8, escapes: bool) -> usize {
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

/// The statements of a query's text, in order, without the empty ones (`SELECT 1;;` has
/// one). A statement cut off by the capture limit is the last one.
pub fn statements(text: &[u8], dialect: Dialect) -> Few<&[u8]> {
    let first = Reading {
        dialect,
        ansi_quotes: false,
        executable: true,
    };
    let mut cut = cuts(text, first);
    // MySQL text that met a point where readings part is read the other ways too (rarely:
    // most queries read the same every way and are lexed once).
    let mode_may_change = cut.backslash && contains_ignoring_case(text, b"sql_mode");
    if (cut.ambiguous || mode_may_change)
        && !other_readings_agree(text, cut.at.as_slice(), first, mode_may_change)
    {
        cut.at.clear();
    }
    statements_between(text, cut.at.as_slice(), dialect)
}

/// Whether the other readings of MySQL text (`ANSI_QUOTES` on, executable comments taken as
/// comments, and with `flip_escapes` `NO_BACKSLASH_ESCAPES` the other way; each alone and
/// together) put the statement separators where `first` put them: `at`. Readings that agree
/// at every separator also agree with any mix of them that a `SET` inside the query makes: at
/// a separator every reading is between statements.
fn other_readings_agree(text: &[u8], at: &[usize], first: Reading, flip_escapes: bool) -> bool {
    let Dialect::Mysql { backslash_escapes } = first.dialect else {
        return true;
    };
    let escapes: &[bool] = if flip_escapes {
        &[backslash_escapes, !backslash_escapes]
    } else {
        &[backslash_escapes]
    };
    escapes.iter().all(|&escapes| {
        [(false, true), (true, true), (false, false), (true, false)]
            .into_iter()
            .all(|(ansi_quotes, executable)| {
                let reading = Reading {
                    dialect: Dialect::Mysql {
                        backslash_escapes: escapes,
                    },
                    ansi_quotes,
                    executable,
                };
                reading == first || cuts(text, reading).at.as_slice() == at
            })
    })
}

/// Whether `text` holds `word` (ASCII, lower case), whatever its case.
fn contains_ignoring_case(text: &[u8], word: &[u8]) -> bool {
    text.windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests;
