//! The words of one statement (keywords, names, numbers) outside strings, quoted identifiers
//! and comments, with their depth in parentheses: what telling reads from writes needs
//! (`protocol::access`), read with the same lexical rules as the splitter.

use super::{
    after_line, dash_comment, e_string, executable_opener, nested_comment_end, plain_comment_end,
    skip_dollar_quoted, skip_quoted, Dialect,
};

/// A word of a statement outside strings, quoted identifiers and comments: a keyword, a name
/// or a number, with how deep in parentheses it is and whether a `(` is right before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word<'a> {
    pub text: &'a [u8],
    pub depth: u32,
    pub opens: bool,
}

impl Word<'_> {
    /// Whether it is `keyword` (ASCII, upper case), whatever its case.
    pub fn is(&self, keyword: &str) -> bool {
        self.text.eq_ignore_ascii_case(keyword.as_bytes())
    }
}

/// The words of one statement's text, in order, read with the dialect's lexical rules (MySQL:
/// executable comments' contents are read as text, as the server runs them).
pub fn words(text: &[u8], dialect: Dialect) -> Words<'_> {
    Words {
        text,
        at: 0,
        depth: 0,
        opens: false,
        dialect,
    }
}

/// See [`words`].
pub struct Words<'a> {
    text: &'a [u8],
    at: usize,
    depth: u32,
    opens: bool,
    dialect: Dialect,
}

impl<'a> Iterator for Words<'a> {
    type Item = Word<'a>;

    fn next(&mut self) -> Option<Word<'a>> {
        let text = self.text;
        let (mysql, escapes_everywhere) = match self.dialect {
            Dialect::Postgres { standard_strings } => (false, !standard_strings),
            Dialect::Mysql { backslash_escapes } => (true, backslash_escapes),
        };
        loop {
            let i = self.at;
            let b = *text.get(i)?;
            if b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 {
                let len = text
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .position(|&c| {
                        !(c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80)
                    })
                    .unwrap_or(text.len() - i);
                self.at = i + len;
                // `E'...'`: the word is the string's prefix.
                if !mysql && len == 1 && matches!(b, b'e' | b'E') && text.get(i + 1) == Some(&b'\'')
                {
                    continue;
                }
                let opens = std::mem::take(&mut self.opens);
                return Some(Word {
                    text: text.get(i..i + len).unwrap_or_default(),
                    depth: self.depth,
                    opens,
                });
            }
            self.at = match b {
                b'(' => {
                    self.depth += 1;
                    self.opens = true;
                    i + 1
                }
                b')' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.opens = false;
                    i + 1
                }
                b'\'' | b'"' => {
                    self.opens = false;
                    let escapes = if b == b'"' {
                        mysql && escapes_everywhere
                    } else {
                        escapes_everywhere || (!mysql && e_string(text, i))
                    };
                    skip_quoted(text, i, b, escapes)
                }
                b'`' if mysql => {
                    self.opens = false;
                    skip_quoted(text, i, b, false)
                }
                b'-' if text.get(i + 1) == Some(&b'-') && (!mysql || dash_comment(text, i)) => {
                    text.len() - after_line(text.get(i..).unwrap_or_default()).len()
                }
                b'#' if mysql => text.len() - after_line(text.get(i..).unwrap_or_default()).len(),
                b'*' if mysql && text.get(i + 1) == Some(&b'/') => i + 2,
                b'/' if text.get(i + 1) == Some(&b'*') => match executable_opener(text, i) {
                    Some(n) if mysql => i + n,
                    _ if mysql => plain_comment_end(text, i),
                    _ => nested_comment_end(text, i),
                },
                b'$' if !mysql => {
                    self.opens = false;
                    skip_dollar_quoted(text, i)
                }
                b if b.is_ascii_whitespace() => i + 1,
                _ => {
                    self.opens = false;
                    i + 1
                }
            };
        }
    }
}
