//! YAML (and JSON, which YAML reads) as a tree of nodes that know where they are in the source,
//! so that `dbfault on|off` can change one value and keep every other byte of a file: comments,
//! key order, quoting and layout that users keep in git.

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A node and its byte range in the source.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar {
        value: String,
        style: ScalarStyle,
        start: usize,
        end: usize,
    },
    Seq {
        items: Vec<Node>,
    },
    Map {
        entries: Vec<(Node, Node)>,
        /// `{...}` rather than indented lines.
        flow: bool,
    },
    /// An alias (`*name`): never edited through.
    Alias,
}

impl Node {
    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value node of `key` in a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match self {
            Node::Map { entries, .. } => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Node] {
        match self {
            Node::Seq { items } => items,
            _ => &[],
        }
    }
}

/// The documents of `text`, each as its root node (an empty document is skipped).
pub fn documents(text: &str) -> Result<Vec<Node>, String> {
    // The parser's positions count characters; edits need byte offsets.
    let mut offsets: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    offsets.push(text.len());
    let byte = |chars: usize| offsets.get(chars).copied().unwrap_or(text.len());
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    // Nodes being built, innermost last; a mapping's pending key waits beside it.
    let mut stack: Vec<(Node, Option<Node>)> = Vec::new();
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            format!(
                "YAML error at line {} column {}: {}",
                e.marker().line(),
                e.marker().col() + 1,
                e.info()
            )
        })?;
        let done = match event {
            Event::Scalar(value, style, _, _) => {
                let mut start = byte(span.start.index());
                // A block scalar's span starts at its content; the node starts at its `|` or `>`.
                if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
                    start = text
                        .get(..start)
                        .and_then(|t| t.rfind(['|', '>']))
                        .unwrap_or(start);
                }
                let mut end = byte(span.end.index());
                if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
                    // ...and ends at its last character, before the line breaks after it.
                    let content = text.get(start..end).unwrap_or_default();
                    end = start + content.trim_end_matches(['\n', '\r', ' ']).len();
                }
                Some(Node::Scalar {
                    value: value.into_owned(),
                    style,
                    start,
                    end,
                })
            }
            Event::Alias(_) => Some(Node::Alias),
            Event::SequenceStart(..) => {
                stack.push((Node::Seq { items: Vec::new() }, None));
                None
            }
            Event::MappingStart(..) => {
                let at = byte(span.start.index());
                let flow = text.get(at..).is_some_and(|t| t.starts_with('{'));
                stack.push((
                    Node::Map {
                        entries: Vec::new(),
                        flow,
                    },
                    None,
                ));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => stack.pop().map(|(n, _)| n),
            _ => None,
        };
        let Some(node) = done else { continue };
        match stack.last_mut() {
            None => docs.push(node),
            Some((Node::Seq { items }, _)) => items.push(node),
            Some((Node::Map { entries, .. }, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
            Some(_) => return Err("malformed YAML event stream".into()),
        }
    }
    Ok(docs)
}

/// One replacement of `start..end` in a source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// `text` with `edits` (non-overlapping) applied.
pub fn apply(text: &str, edits: &[Edit]) -> Result<String, String> {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| e.start);
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for e in sorted {
        let kept = text
            .get(at..e.start)
            .ok_or_else(|| format!("overlapping or misplaced edit at byte {}", e.start))?;
        out.push_str(kept);
        out.push_str(&e.text);
        at = e.end;
    }
    out.push_str(text.get(at..).ok_or("edit past the end of the text")?);
    Ok(out)
}

/// `value` as a YAML scalar in the style `style` had, as far as that style can hold it: quoted
/// styles stay quoted; a literal block stays a literal block at `indent`; anything else becomes
/// single-quoted, or double-quoted when it has line breaks or control characters. A block ends
/// at its last character: the line breaks after it stay in the text.
pub fn scalar(value: &str, style: ScalarStyle, indent: usize) -> String {
    match style {
        // JSON's escapes are YAML's: the one style that holds any string on one line.
        _ if style == ScalarStyle::DoubleQuoted
            || value.contains(char::is_control) && style != ScalarStyle::Literal =>
        {
            serde_json::to_string(value).unwrap_or_default()
        }
        ScalarStyle::Literal if !value.trim_end_matches('\n').is_empty() => {
            let body = value.trim_end_matches('\n');
            let chomp = match value.len() - body.len() {
                0 => "-",
                1 => "",
                _ => "+",
            };
            let pad = " ".repeat(indent);
            let mut out = format!("|{chomp}");
            for line in body.split('\n') {
                out.push('\n');
                if !line.is_empty() {
                    out.push_str(&pad);
                }
                out.push_str(line);
            }
            out
        }
        _ => format!("'{}'", value.replace('\'', "''")),
    }
}

/// Column (in characters) of byte `at` on its line.
pub fn column(text: &str, at: usize) -> usize {
    let line_start = text
        .get(..at)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1);
    text.get(line_start..at).map_or(0, |t| t.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_know_their_bytes() {
        let text = "# c\nspec:\n  name: é-x   # comment\n  list: [1, 'two']\n  flow: {a: \"b\"}\n";
        let docs = documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        let spec = docs[0].get("spec").unwrap();
        let Some(Node::Scalar { start, end, .. }) = spec.get("name") else {
            panic!()
        };
        assert_eq!(&text[*start..*end], "é-x");
        let two = &spec.get("list").unwrap().items()[1];
        let Node::Scalar {
            start, end, style, ..
        } = two
        else {
            panic!()
        };
        assert_eq!(
            (&text[*start..*end], *style),
            ("'two'", ScalarStyle::SingleQuoted)
        );
        assert!(matches!(
            spec.get("flow"),
            Some(Node::Map { flow: true, .. })
        ));
        assert!(matches!(&docs[0], Node::Map { flow: false, .. }));
        assert_eq!(column(text, text.find("name").unwrap()), 2);
    }

    #[test]
    fn several_documents_and_errors() {
        assert_eq!(documents("a: 1\n---\nb: 2\n").unwrap().len(), 2);
        let e = documents("a: [1,\n").unwrap_err();
        assert!(e.starts_with("YAML error at line"), "{e}");
    }

    #[test]
    fn scalars_keep_their_style() {
        for (v, style) in [
            ("it's {\"x\": 1}", ScalarStyle::SingleQuoted),
            ("a\"b\\c", ScalarStyle::DoubleQuoted),
            ("{\n  \"a\": 1\n}\n", ScalarStyle::Literal),
            ("x\n", ScalarStyle::Plain),
        ] {
            let text = format!("k: {}\n", scalar(v, style, 2));
            let docs = documents(&text).unwrap();
            assert_eq!(docs[0].get("k").unwrap().as_str(), Some(v), "{text}");
        }
    }

    #[test]
    fn edits_apply_in_any_order() {
        let e = |start, end, text: &str| Edit {
            start,
            end,
            text: text.into(),
        };
        assert_eq!(
            apply("abcdef", &[e(4, 5, "E"), e(0, 1, "A"), e(2, 2, "+")]).unwrap(),
            "Ab+cdEf"
        );
        assert!(apply("abc", &[e(0, 2, "x"), e(1, 3, "y")]).is_err());
    }
}
