//! RESP, Redis's protocol (RESP2 and RESP3), framed incrementally in both directions.
//!
//! A client sends commands: arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or
//! inline commands (`PING\r\n`). A server sends one value per command (simple strings `+`,
//! errors `-`, integers `:`, bulk strings `$`, arrays `*`, and RESP3's null `_`, boolean `#`,
//! double `,`, big number `(`, blob error `!`, verbatim string `=`, map `%`, set `~`, push `>`
//! and attribute `|`), plus out-of-band pushes. Bytes arrive in chunks of any size; [`Resp`]
//! reports each value without holding more than its first [`CAPTURE_LIMIT`] bytes of command
//! text, or a short capture of a reply (an error's line, an array's first string). Payloads
//! are counted past. Anything that does not fit stops the reading of that connection
//! ([`Step::Unreadable`], once); the caller lets the bytes pass untouched.
//!
//! Written here rather than taken from `redis-protocol`: that crate decodes whole buffered
//! frames into owned values; a filter needs both directions streamed with bounded memory, and
//! positions in the chunk for the rewriting.

use crate::protocol::CAPTURE_LIMIT;
/// The longest inline command Redis accepts (64 KiB); a longer line is not Redis.
const INLINE_LIMIT: usize = 64 * 1024;
/// Bytes of an error reply's line kept (its code and message).
const ERROR_KEEP: usize = 512;
/// Bytes of a line kept (a CR at the end of one chunk may be inside the line, hence the +1),
/// however the line arrives: whole in one chunk or over several.
const LINE_KEEP: usize = if ERROR_KEEP > CAPTURE_LIMIT {
    ERROR_KEEP
} else {
    CAPTURE_LIMIT
} + 1;
/// Bytes of a reply's first string kept (`message`, `subscribe`, `QUEUED`...).
const WORD_KEEP: usize = 32;
/// Deepest nesting followed (Redis itself nests replies a few levels at most).
const MAX_DEPTH: usize = 64;
/// Longest bulk string Redis accepts (proto-max-bulk-len's ceiling).
const MAX_BULK: i64 = 512 * 1024 * 1024;

/// What reading a chunk produced, in order. Positions are offsets in the chunk being read.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A client command, as soon as its name and text are read (the whole command, or its
    /// first [`CAPTURE_LIMIT`] bytes of text): `at` is just past what was read, `head` how
    /// many bytes of the command that is (those before `at` in this chunk, the rest in
    /// earlier chunks).
    Command {
        name: &'a [u8],
        text: &'a [u8],
        /// How many arguments follow the name (as the array's header declares them).
        args: u64,
        at: usize,
        head: usize,
    },
    /// The client command's last byte is at `at` (exclusive); also reported alone for bytes
    /// that carry no command (an empty line, `*0`).
    CommandEnd { at: usize },
    /// A complete top-level value from the server: its type byte, its capture (an error's
    /// line, a simple string, an aggregate's first string), the last integer among an
    /// aggregate's elements, where it ends and its size.
    Reply {
        kind: u8,
        text: &'a [u8],
        number: Option<i64>,
        at: usize,
        head: u64,
    },
    /// An error inside an aggregate reply (an `EXEC` result, a script's array): its line.
    NestedError(&'a [u8]),
    /// The bytes do not follow the protocol: reading stops for good.
    Unreadable,
}

/// An open aggregate: elements still to come; an attribute does not count as an element of
/// its parent.
#[derive(Debug, Clone, Copy)]
struct Frame {
    left: u64,
    attribute: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a value's type byte.
    Type,
    /// Reading the line after type byte `kind` (its payload, or a length or count).
    Line(u8),
    /// Reading a bulk payload: bytes left.
    Bulk(u64),
    /// The CRLF after a bulk payload: bytes left.
    Crlf(u8),
    Done,
}

/// One direction of one connection.
#[derive(Debug)]
pub struct Resp {
    client: bool,
    state: State,
    /// The current line's kept bytes, and its full length so far.
    line: Vec<u8>,
    line_len: usize,
    stack: Vec<Frame>,
    /// Bytes of the current top-level value read so far (0: between values).
    value_bytes: u64,
    /// Client: the command's text and name; whether it was reported.
    text: Vec<u8>,
    name_len: usize,
    elements: u64,
    /// Client: the top-level array's declared length (an inline command's word count).
    declared: u64,
    reported: bool,
    /// Server: the top-level value's type, capture and last integer.
    kind: u8,
    capture: Vec<u8>,
    number: Option<i64>,
    /// The bulk string being read is captured (into `text` or `capture`), and how much.
    bulk_keep: usize,
}

impl Resp {
    pub fn client() -> Resp {
        Resp::new(true)
    }

    pub fn server() -> Resp {
        Resp::new(false)
    }

    fn new(client: bool) -> Resp {
        Resp {
            client,
            state: State::Type,
            line: Vec::new(),
            line_len: 0,
            stack: Vec::new(),
            value_bytes: 0,
            text: Vec::new(),
            name_len: 0,
            elements: 0,
            declared: 0,
            reported: false,
            kind: 0,
            capture: Vec::new(),
            number: None,
            bulk_keep: 0,
        }
    }

    pub fn reading(&self) -> bool {
        self.state != State::Done
    }

    pub fn stop(&mut self) {
        self.state = State::Done;
        self.stack = Vec::new();
        self.text = Vec::new();
        self.capture = Vec::new();
        self.line = Vec::new();
    }

    /// How many of the next bytes need not be seen: the rest of a bulk string nothing keeps
    /// (a value read by `GET`; a command's argument past its reported text).
    pub fn skippable(&self) -> usize {
        match self.state {
            State::Bulk(left) if self.bulk_keep == 0 && (!self.client || self.reported) => {
                usize::try_from(left).unwrap_or(usize::MAX)
            }
            _ => 0,
        }
    }

    /// Passes over `n` bytes (at most [`Resp::skippable`]) without seeing them.
    pub fn skip(&mut self, n: usize) {
        let n = n.min(self.skippable());
        if let State::Bulk(left) = self.state {
            let left = left - n as u64;
            self.value_bytes += n as u64;
            self.state = if left == 0 {
                State::Crlf(2)
            } else {
                State::Bulk(left)
            };
        }
    }

    /// The top-level value being read, if one is under way and (for a client command) not
    /// reported yet: its type byte and the bytes of it read so far.
    pub fn unreported(&self) -> Option<(u8, u64)> {
        if self.state == State::Done || self.value_bytes == 0 || (self.client && self.reported) {
            return None;
        }
        Some((self.kind, self.value_bytes))
    }

    /// Reads `chunk`, calling `step` for everything it completes, in order.
    pub fn read(&mut self, chunk: &[u8], step: &mut dyn FnMut(Step<'_>)) {
        let mut at = 0;
        while at < chunk.len() {
            let rest = chunk.get(at..).unwrap_or_default();
            let used = match self.state {
                State::Done => return,
                State::Type => {
                    let Some(&kind) = rest.first() else {
                        return;
                    };
                    self.begin_value(kind);
                    if self.state == State::Line(0) && kind == b'\n' {
                        // An inline line that is only its LF: empty, as Redis reads it.
                        self.end_line(0, &[], at + 1, step);
                    }
                    1
                }
                State::Line(kind) => match rest.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        let part = rest.get(..end).unwrap_or_default();
                        self.value_bytes += end as u64 + 1;
                        let whole = if self.line.is_empty() {
                            part.len()
                        } else {
                            self.line_len + part.len()
                        };
                        if self.client && whole > INLINE_LIMIT {
                            // Too long, however it was chunked (the check below sees only the
                            // lines that span chunks).
                            self.give_up(step);
                        } else if self.line.is_empty() {
                            // The whole line is in this chunk: read in place, as much of it as
                            // is kept of a line over several chunks (an inline command's words
                            // are joined after, so the text is the same either way).
                            self.line_len = part.len();
                            let kept = part.get(..LINE_KEEP.min(part.len())).unwrap_or(part);
                            self.end_line(kind, kept, at + end + 1, step);
                        } else {
                            self.keep_line(part);
                            let line = std::mem::take(&mut self.line);
                            self.end_line(kind, &line, at + end + 1, step);
                            self.line = line;
                            self.line.clear();
                        }
                        end + 1
                    }
                    None => {
                        self.keep_line(rest);
                        self.value_bytes += rest.len() as u64;
                        if self.client && self.line_len > INLINE_LIMIT {
                            self.give_up(step);
                        }
                        rest.len()
                    }
                },
                State::Bulk(left) => {
                    // A payload whose start is kept is read up to where the capture is full,
                    // so that a command is reported there (not after a megabyte).
                    let limit = if self.bulk_keep > 0 {
                        self.bulk_keep
                    } else {
                        usize::MAX
                    };
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(rest.len())
                        .min(limit);
                    self.keep_bulk(rest.get(..take).unwrap_or_default());
                    self.value_bytes += take as u64;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::Crlf(2)
                    } else {
                        State::Bulk(left)
                    };
                    if self.client && !self.reported && self.text.len() >= CAPTURE_LIMIT {
                        self.report_command(at + take, step);
                    }
                    take
                }
                State::Crlf(left) => {
                    let take = usize::from(left).min(rest.len());
                    self.value_bytes += take as u64;
                    let left = left - take as u8;
                    if left == 0 {
                        self.state = State::Type;
                        self.element_done(at + take, step);
                    } else {
                        self.state = State::Crlf(left);
                    }
                    take
                }
            };
            at += used;
        }
    }

    fn give_up(&mut self, step: &mut dyn FnMut(Step<'_>)) {
        self.stop();
        step(Step::Unreadable);
    }

    /// A value starts with `kind` (at any depth).
    fn begin_value(&mut self, kind: u8) {
        if self.stack.is_empty() && self.value_bytes == 0 {
            // A new top-level value.
            self.kind = kind;
            self.capture.clear();
            self.number = None;
            self.text.clear();
            self.name_len = 0;
            self.elements = 0;
            self.declared = 0;
            self.reported = false;
        }
        self.value_bytes += 1;
        self.line.clear();
        self.line_len = 0;
        if self.client && self.stack.is_empty() && kind != b'*' {
            // An inline command: the type byte is its first character.
            self.keep_line(&[kind]);
            self.state = State::Line(0);
        } else {
            self.state = State::Line(kind);
        }
    }

    fn keep_line(&mut self, bytes: &[u8]) {
        // The line's CR is dropped at its end (`end_line`): a CR at the end of one chunk may
        // be inside the line.
        let room = LINE_KEEP.saturating_sub(self.line.len());
        self.line
            .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
        self.line_len += bytes.len();
    }

    /// The line after type byte `kind` ended at `at`.
    fn end_line(&mut self, kind: u8, line: &[u8], at: usize, step: &mut dyn FnMut(Step<'_>)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.state = State::Type;
        let depth = self.stack.len();
        match kind {
            // An inline command (client): words separated by spaces.
            0 => {
                let mut words = line
                    .split(|&b| b == b' ' || b == b'\t')
                    .filter(|w| !w.is_empty());
                if let Some(name) = words.next() {
                    self.text.clear();
                    self.push_text(name);
                    self.name_len = self.text.len();
                    self.declared = 1;
                    for w in words {
                        self.push_text(w);
                        self.declared += 1;
                    }
                    self.report_command(at, step);
                    step(Step::CommandEnd { at });
                } else {
                    // An empty line is ignored by Redis too; its bytes end here.
                    step(Step::CommandEnd { at });
                }
                self.value_bytes = 0;
            }
            b'$' | b'=' | b'!' => match parse_int(line) {
                Some(-1) if !self.client || depth == 0 => self.element_done(at, step),
                Some(n) if (0..=MAX_BULK).contains(&n) => {
                    if self.client && depth != 1 {
                        return self.give_up(step);
                    }
                    self.begin_bulk(kind);
                    self.state = if n == 0 {
                        State::Crlf(2)
                    } else {
                        State::Bulk(n as u64)
                    };
                }
                _ => self.give_up(step),
            },
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                if self.client && (kind != b'*' || depth != 0) {
                    return self.give_up(step);
                }
                let count = match parse_int(line) {
                    Some(-1) => 0,
                    Some(n) if n >= 0 => n as u64,
                    _ => return self.give_up(step),
                };
                let count = if matches!(kind, b'%' | b'|') {
                    count.saturating_mul(2)
                } else {
                    count
                };
                if count == 0 {
                    if self.client && depth == 0 {
                        // `*0` / `*-1`: no command (Redis ignores it); its bytes end here.
                        self.value_bytes = 0;
                        step(Step::CommandEnd { at });
                        return;
                    }
                    return self.element_done(at, step);
                }
                if depth >= MAX_DEPTH {
                    return self.give_up(step);
                }
                if self.client {
                    self.declared = count;
                }
                self.stack.push(Frame {
                    left: count,
                    attribute: kind == b'|',
                });
            }
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' if !self.client => {
                if depth == 0 {
                    let keep = if kind == b'-' { ERROR_KEEP } else { WORD_KEEP };
                    self.capture.clear();
                    self.capture
                        .extend_from_slice(line.get(..keep.min(line.len())).unwrap_or_default());
                } else {
                    if kind == b'-' {
                        let keep = ERROR_KEEP.min(line.len());
                        step(Step::NestedError(line.get(..keep).unwrap_or_default()));
                    }
                    if depth == 1 {
                        if kind == b':' {
                            self.number = parse_int(line);
                        }
                        if kind == b'+' && self.capture.is_empty() {
                            let keep = WORD_KEEP.min(line.len());
                            self.capture
                                .extend_from_slice(line.get(..keep).unwrap_or_default());
                        }
                    }
                }
                self.element_done(at, step);
            }
            _ => self.give_up(step),
        }
    }

    /// A bulk payload of type `kind` begins: decides what of it is kept.
    fn begin_bulk(&mut self, kind: u8) {
        let depth = self.stack.len();
        self.bulk_keep = if self.client {
            if self.elements > 0 && self.text.len() < CAPTURE_LIMIT {
                self.text.push(b' ');
            }
            CAPTURE_LIMIT.saturating_sub(self.text.len())
        } else if depth == 0 {
            // A blob error's text is an error line.
            self.capture.clear();
            if kind == b'!' {
                ERROR_KEEP
            } else {
                0
            }
        } else if depth == 1 && self.capture.is_empty() {
            WORD_KEEP
        } else {
            0
        };
    }

    fn keep_bulk(&mut self, part: &[u8]) {
        if self.bulk_keep == 0 {
            return;
        }
        let n = self.bulk_keep.min(part.len());
        let bytes = part.get(..n).unwrap_or_default();
        if self.client {
            self.text.extend_from_slice(bytes);
        } else {
            self.capture.extend_from_slice(bytes);
        }
        self.bulk_keep -= n;
    }

    fn push_text(&mut self, word: &[u8]) {
        if !self.text.is_empty() {
            self.text.push(b' ');
        }
        let room = CAPTURE_LIMIT.saturating_sub(self.text.len());
        self.text
            .extend_from_slice(word.get(..room.min(word.len())).unwrap_or_default());
        self.text.truncate(CAPTURE_LIMIT);
    }

    /// An element (or a whole top-level value) ended at `at`.
    fn element_done(&mut self, at: usize, step: &mut dyn FnMut(Step<'_>)) {
        self.bulk_keep = 0;
        if self.client {
            if self.elements == 0 {
                self.name_len = self.text.len();
            }
            self.elements += 1;
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return self.value_done(at, step);
            };
            top.left -= 1;
            if top.left > 0 {
                if self.client && self.text.len() >= CAPTURE_LIMIT {
                    self.report_command(at, step);
                }
                return;
            }
            let attribute = top.attribute;
            self.stack.pop();
            if attribute {
                // An attribute precedes a value and is not one of its parent's elements.
                if self.stack.is_empty() {
                    return self.value_done(at, step);
                }
                return;
            }
        }
    }

    fn value_done(&mut self, at: usize, step: &mut dyn FnMut(Step<'_>)) {
        if self.client {
            self.report_command(at, step);
            step(Step::CommandEnd { at });
        } else {
            step(Step::Reply {
                kind: self.kind,
                text: &self.capture,
                number: self.number,
                at,
                head: self.value_bytes,
            });
        }
        self.value_bytes = 0;
    }

    fn report_command(&mut self, at: usize, step: &mut dyn FnMut(Step<'_>)) {
        if self.reported {
            return;
        }
        self.reported = true;
        let name_len = self.name_len.min(self.text.len());
        step(Step::Command {
            name: self.text.get(..name_len).unwrap_or_default(),
            text: &self.text,
            args: self.declared.saturating_sub(1),
            at,
            head: usize::try_from(self.value_bytes).unwrap_or(usize::MAX),
        });
    }
}

/// A RESP integer line (`-1`, `42`).
fn parse_int(line: &[u8]) -> Option<i64> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreadable(data: &[u8], size: usize) -> bool {
        let mut r = Resp::client();
        let mut seen = false;
        for chunk in data.chunks(size) {
            r.read(chunk, &mut |s| seen |= matches!(s, Step::Unreadable));
        }
        seen
    }

    fn commands(mut reader: Resp, data: &[u8], size: usize) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in data.chunks(size) {
            reader.read(chunk, &mut |s| {
                if let Step::Command { text, .. } = s {
                    out.push(String::from_utf8_lossy(text).into_owned());
                }
            });
        }
        out
    }

    #[test]
    fn a_long_line_read_in_place_keeps_what_a_chunked_one_keeps() {
        // Found by the fuzzer (the regression seed, read by the server reader in chunks of 13):
        // a line whole in one chunk was read to its end, one over several chunks to its first
        // 4 KiB; with runs of spaces between its words, their texts differed.
        let input = include_bytes!("../../../fuzz/seeds/redis/regression-long-inline-words");
        let data = input.get(2..).unwrap_or_default();
        let whole = commands(Resp::server(), data, data.len());
        assert!(!whole.is_empty());
        for size in [13, 100, 4096] {
            assert_eq!(
                commands(Resp::server(), data, size),
                whole,
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_bare_lf_is_an_empty_inline_line() {
        // Found by the fuzzer: a bare LF where a command starts was kept as the first byte of
        // an inline line, which then ran into the next command. Redis 7 answers
        // `PING\r\n\n*2\r\n$4\r\nECHO\r\n$1\r\n^\r\n` with `+PONG` and `$1 ^`: the LF is an
        // empty line, skipped.
        let data = b"PING\r\n\n*2\r\n$4\r\nECHO\r\n$1\r\n^\r\n\n\nGET k\n";
        for size in [1, 2, 3, data.len()] {
            assert_eq!(
                commands(Resp::client(), data, size),
                ["PING", "ECHO ^", "GET k"],
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn an_inline_line_past_the_limit_is_unreadable_however_it_is_chunked() {
        // Found by the fuzzer: in one chunk the line was read as a command, in several not.
        let mut long = vec![b'x'; INLINE_LIMIT + 1];
        long.extend_from_slice(b"\r\n");
        let mut fits = vec![b'x'; INLINE_LIMIT - 1];
        fits.extend_from_slice(b"\r\n");
        for size in [10, 4096, long.len()] {
            assert!(unreadable(&long, size), "chunks of {size}");
            assert!(!unreadable(&fits, size), "chunks of {size}");
        }
    }
}
