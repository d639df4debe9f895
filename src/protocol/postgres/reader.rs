//! The PostgreSQL frontend/backend protocol (version 3), framed incrementally in both directions.
//!
//! Bytes arrive in chunks of any size (a message split over many reads, many messages in one
//! read); [`Reader`] turns them into whole messages without ever holding more than a message's
//! first [`CAPTURE_LIMIT`] bytes, and only for the message types whose contents matter
//! (statement text, error codes, transaction status). Everything else is counted past.
//!
//! A session starts with an untagged message from the client: a StartupMessage, an
//! SSLRequest or GSSENCRequest (answered by the server with one untagged byte, `S`/`G` to
//! encrypt or `N` to go on in plaintext, after which the client sends its StartupMessage), or a
//! CancelRequest (a connection that is not a session). From then on every message is a type
//! byte and a 4-byte length that counts itself. Anything that does not fit stops the reading of
//! that connection: [`Reader`] reports [`Step::Unreadable`] once and the caller lets the bytes
//! pass untouched.
//!
//! Written here rather than taken from `postgres-protocol`: that crate parses the backend side
//! of whole buffered messages for a client and brings its authentication crypto with it; a
//! filter needs both directions, streamed, with bounded memory.

use crate::flow::Direction;

/// Bytes of a message kept for its contents: statement text beyond this is not matched.
pub use crate::protocol::CAPTURE_LIMIT;
/// The protocol's own limit on a message's length (PostgreSQL refuses longer ones: 1 GB).
const MAX_MESSAGE: u32 = 0x4000_0000;
/// An untagged startup-phase message is at most this long (PostgreSQL's limit is 10 000).
const MAX_STARTUP: u32 = 10_000;

/// Protocol 3.x: the major version in the high 16 bits of a StartupMessage's code.
const PROTOCOL_3: u32 = 3;
/// A CancelRequest: length, code, process id, and a key of 4 bytes (3.0) up to 256 (3.2).
const CANCEL_LEN: std::ops::RangeInclusive<u32> = 16..=268;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// What the first client message said the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A StartupMessage (protocol 3.`minor`): a plaintext session.
    Startup { minor: u16 },
    /// An SSLRequest or GSSENCRequest: the server's one-byte answer decides.
    EncryptionRequest,
    /// A CancelRequest: not a session, no queries.
    Cancel,
}

/// One complete message.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The type byte (`Q`, `P`, `E`...); 0 for the untagged startup-phase messages.
    pub tag: u8,
    /// The body's length as the message header gives it.
    pub len: u32,
    /// The body's first bytes (up to [`CAPTURE_LIMIT`]), for the tags whose contents matter.
    pub body: &'a [u8],
    /// Whether the contents were kept and cut at [`CAPTURE_LIMIT`] (types whose contents are
    /// not kept have an empty `body` and are not "truncated").
    pub truncated: bool,
    /// Where in the chunk being read the message was reported: just past its header and kept
    /// contents (a message is reported as soon as those are read, before the rest of its body
    /// passes).
    pub at: usize,
    /// Bytes of the message read when it was reported (header and kept contents); those
    /// before `at` in this chunk, the rest in earlier chunks.
    pub head: usize,
}

/// What reading a chunk produced, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// The client's first message.
    Opened(Opening),
    /// The server's one-byte answer to an SSLRequest or GSSENCRequest: `true` to encrypt (the
    /// rest is TLS or GSS, not readable), `false` to continue in plaintext.
    Encryption(bool),
    Message(Message<'a>),
    /// The bytes do not follow the protocol: reading stops for good.
    Unreadable,
}

/// Where one direction's reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Client only: the untagged opening message (again after an encryption request answered
    /// `N`).
    Opening,
    /// Server only: before the answer to an encryption request (one untagged byte).
    EncryptionAnswer,
    /// Tagged messages.
    Tagged,
    /// Encrypted, a cancel request, or unreadable: nothing more is read.
    Done,
}

/// One direction of one connection.
#[derive(Debug)]
pub struct Reader {
    dir: Direction,
    phase: Phase,
    /// The header being read: up to 5 bytes (tag + length, or 8 for the opening message).
    header: [u8; 8],
    header_len: usize,
    /// The message whose body is being read: tag, body length, bytes of it still to come.
    current: Option<(u8, u32, u32)>,
    /// The captured start of the current body.
    capture: Vec<u8>,
    /// How many body bytes of the current message to capture.
    capture_want: usize,
    /// The current message was reported already (its contents are read; the rest of its body
    /// is counted past).
    reported: bool,
    /// Position in the chunk being read where the current header or body part starts.
    offset: usize,
}

/// Which messages' contents are kept, and how much of them.
fn capture_for(dir: Direction, tag: u8) -> usize {
    match (dir, tag) {
        // Client: simple Query, Parse (statement name + text), Bind (portal + statement names),
        // Execute (portal name), Close (what is closed), the opening message's code.
        (Direction::ToDatabase, b'Q' | b'P' | b'B' | b'E' | b'C' | 0) => CAPTURE_LIMIT,
        // Server: ErrorResponse (its fields, the SQLSTATE among them), ParameterStatus (the
        // quoting a session's text is read with), NegotiateProtocolVersion (its newest minor
        // version). Everything else is passed over uncopied.
        (Direction::ToClient, b'E') => 256,
        (Direction::ToClient, b'S') => 64,
        (Direction::ToClient, b'v') => 4,
        _ => 0,
    }
}

impl Reader {
    /// The reader of the client → server direction (it starts with the opening message).
    pub fn client() -> Reader {
        Reader::new(Direction::ToDatabase, Phase::Opening)
    }

    /// The reader of the server → client direction.
    pub fn server() -> Reader {
        Reader::new(Direction::ToClient, Phase::Tagged)
    }

    fn new(dir: Direction, phase: Phase) -> Reader {
        Reader {
            dir,
            phase,
            header: [0; 8],
            header_len: 0,
            current: None,
            capture: Vec::new(),
            capture_want: 0,
            reported: false,
            offset: 0,
        }
    }

    /// Whether this reader still reads (not encrypted, cancelled or given up).
    pub fn reading(&self) -> bool {
        self.phase != Phase::Done
    }

    /// The server reader expects the one-byte answer to an encryption request next.
    pub fn expect_encryption_answer(&mut self) {
        if self.phase != Phase::Done {
            self.phase = Phase::EncryptionAnswer;
        }
    }

    /// The client reader expects an opening message again (after an `N` answer).
    pub fn expect_opening(&mut self) {
        if self.phase != Phase::Done {
            self.phase = Phase::Opening;
        }
    }

    /// Nothing more is read on this direction (the session is encrypted or not understood).
    pub fn stop(&mut self) {
        self.phase = Phase::Done;
        self.current = None;
        self.capture = Vec::new();
    }

    /// How many of the next bytes need not be seen: the rest of a message body whose contents
    /// are not kept (or are kept already), so that a caller can pass over them without copying
    /// them out of Envoy's buffer (COPY data, result rows).
    pub fn skippable(&self) -> usize {
        match self.current {
            Some((_, _, remaining))
                if self.phase != Phase::Done && self.capture.len() >= self.capture_want =>
            {
                remaining as usize
            }
            _ => 0,
        }
    }

    /// Passes over `n` bytes (at most [`Reader::skippable`]) without seeing them.
    pub fn skip(&mut self, n: usize) {
        let n = n.min(self.skippable());
        if let Some((_, _, left)) = self.current.as_mut() {
            *left -= n as u32;
            if *left == 0 {
                self.finish();
            }
        }
    }

    /// The message being read that was not reported yet, if any: its type byte (0 for the
    /// opening message, or while its header is incomplete in the opening phase) and how many
    /// of its bytes were read so far. A caller that rewrites messages withholds those bytes
    /// until the message is reported.
    pub fn unreported(&self) -> Option<(u8, usize)> {
        match self.current {
            _ if self.phase == Phase::Done => None,
            // The opening message's header is 8 bytes (length and code), a tagged one's 5.
            Some((tag, _, _)) if !self.reported => {
                Some((tag, if tag == 0 { 8 } else { 5 } + self.capture.len()))
            }
            None if self.header_len > 0 => Some((
                if self.phase == Phase::Opening {
                    0
                } else {
                    self.header[0]
                },
                self.header_len,
            )),
            _ => None,
        }
    }

    /// Reads `chunk`, calling `step` for everything it completes, in order. Returns the number
    /// of bytes consumed: all of them, unless reading stopped within the chunk.
    pub fn read(&mut self, chunk: &[u8], step: &mut dyn FnMut(Step<'_>)) -> usize {
        let mut rest = chunk;
        while !rest.is_empty() {
            self.offset = chunk.len() - rest.len();
            match self.phase {
                Phase::Done => break,
                Phase::EncryptionAnswer => {
                    let Some((&answer, tail)) = rest.split_first() else {
                        break;
                    };
                    rest = tail;
                    match answer {
                        b'N' => {
                            self.phase = Phase::Tagged;
                            step(Step::Encryption(false));
                        }
                        b'S' | b'G' => {
                            self.stop();
                            step(Step::Encryption(true));
                        }
                        // A server refusing the request outright answers with an ErrorResponse
                        // (old servers): read it as a tagged message.
                        b'E' => {
                            self.phase = Phase::Tagged;
                            self.header = [0; 8];
                            self.header[0] = b'E';
                            self.header_len = 1;
                        }
                        _ => self.give_up(step),
                    }
                }
                Phase::Opening | Phase::Tagged => {
                    if self.current.is_none() {
                        rest = self.read_header(rest, step);
                    } else {
                        rest = self.read_body(rest, step);
                    }
                }
            }
        }
        chunk.len() - rest.len()
    }

    fn give_up(&mut self, step: &mut dyn FnMut(Step<'_>)) {
        self.stop();
        step(Step::Unreadable);
    }

    /// Reads header bytes from `rest`; starts the message once the header is whole.
    fn read_header<'a>(&mut self, rest: &'a [u8], step: &mut dyn FnMut(Step<'_>)) -> &'a [u8] {
        let opening = self.phase == Phase::Opening;
        let need = if opening { 8 } else { 5 };
        let take = (need - self.header_len).min(rest.len());
        let (head, tail) = rest.split_at(take);
        if let Some(slot) = self.header.get_mut(self.header_len..self.header_len + take) {
            slot.copy_from_slice(head);
        }
        self.header_len += take;
        if self.header_len < need {
            return tail;
        }
        self.header_len = 0;
        self.offset += take;
        let word = |at: usize| {
            let mut b = [0u8; 4];
            if let Some(src) = self.header.get(at..at + 4) {
                b.copy_from_slice(src);
            }
            u32::from_be_bytes(b)
        };
        if opening {
            let (len, code) = (word(0), word(4));
            let opening_kind = match code {
                SSL_REQUEST | GSSENC_REQUEST if len == 8 => Opening::EncryptionRequest,
                CANCEL_REQUEST if CANCEL_LEN.contains(&len) => Opening::Cancel,
                _ if code >> 16 == PROTOCOL_3 && (8..=MAX_STARTUP).contains(&len) => {
                    Opening::Startup {
                        minor: (code & 0xffff) as u16,
                    }
                }
                _ => {
                    self.give_up(step);
                    return tail;
                }
            };
            step(Step::Opened(opening_kind));
            match opening_kind {
                Opening::Startup { .. } => {
                    self.phase = Phase::Tagged;
                    self.begin(0, len - 8, step);
                }
                // The server answers first: `N` and the client sends an opening message again;
                // `S`/`G` and the session layer stops this reader.
                Opening::EncryptionRequest => {}
                Opening::Cancel => self.stop(),
            }
            return tail;
        }
        let tag = self.header[0];
        let len = word(1);
        // Tags are ASCII letters, and digits for ParseComplete/BindComplete/CloseComplete.
        if !tag.is_ascii_alphanumeric() || !(4..=MAX_MESSAGE).contains(&len) {
            self.give_up(step);
            return tail;
        }
        self.begin(tag, len - 4, step);
        tail
    }

    /// Starts a message of `body_len` bytes; reported at once when none of it is kept.
    fn begin(&mut self, tag: u8, body_len: u32, step: &mut dyn FnMut(Step<'_>)) {
        self.capture_want = capture_for(self.dir, tag).min(body_len as usize);
        self.capture.clear();
        self.current = Some((tag, body_len, body_len));
        self.reported = false;
        if self.capture_want == 0 {
            self.report(step);
        }
        if body_len == 0 {
            self.finish();
        }
    }

    fn read_body<'a>(&mut self, rest: &'a [u8], step: &mut dyn FnMut(Step<'_>)) -> &'a [u8] {
        let Some((_, _, remaining)) = self.current else {
            return rest;
        };
        let take = (remaining as usize).min(rest.len());
        let (part, tail) = rest.split_at(take);
        let room = self.capture_want.saturating_sub(self.capture.len());
        if room > 0 {
            let kept = room.min(part.len());
            self.capture
                .extend_from_slice(part.get(..kept).unwrap_or_default());
            if self.capture.len() >= self.capture_want {
                self.offset += kept;
                self.report(step);
            }
        }
        if let Some((_, _, left)) = self.current.as_mut() {
            *left -= take as u32;
            if *left == 0 {
                self.finish();
            }
        }
        tail
    }

    /// Reports the current message: its header and kept contents are read (`offset` is just
    /// past them).
    fn report(&mut self, step: &mut dyn FnMut(Step<'_>)) {
        let Some((tag, len, _)) = self.current else {
            return;
        };
        self.reported = true;
        let header = if tag == 0 { 8 } else { 5 };
        step(Step::Message(Message {
            tag,
            len,
            body: &self.capture,
            truncated: self.capture_want > 0 && (self.capture.len() as u64) < u64::from(len),
            at: self.offset,
            head: header + self.capture.len(),
        }));
    }

    /// The current message's last byte was read.
    fn finish(&mut self) {
        self.current = None;
        // Keep the allocation for the next message, but never more than the limit.
        self.capture.clear();
    }
}

/// Whether a client's first bytes open a PostgreSQL connection: a StartupMessage (protocol 3),
/// an SSLRequest, a GSSENCRequest or a CancelRequest, whatever the port.
pub fn opens_connection(first: &[u8]) -> bool {
    let word = |at: usize| {
        first
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
    };
    match (word(0), word(4)) {
        (Some(len), Some(code)) => match code {
            SSL_REQUEST | GSSENC_REQUEST => len == 8,
            CANCEL_REQUEST => CANCEL_LEN.contains(&len),
            _ => code >> 16 == PROTOCOL_3 && (8..=MAX_STARTUP).contains(&len),
        },
        _ => false,
    }
}

/// The first NUL-terminated string of `body` and what follows it.
pub fn cstr(body: &[u8]) -> (&[u8], &[u8]) {
    match body.iter().position(|&b| b == 0) {
        Some(end) => (
            body.get(..end).unwrap_or_default(),
            body.get(end + 1..).unwrap_or_default(),
        ),
        None => (body, &[]),
    }
}

/// The SQLSTATE of an ErrorResponse body (its `C` field), if present.
pub fn sqlstate(body: &[u8]) -> Option<&[u8]> {
    let mut fields = body;
    while let Some((&code, rest)) = fields.split_first() {
        if code == 0 {
            return None;
        }
        let end = rest.iter().position(|&b| b == 0)?;
        let (value, after) = rest.split_at(end);
        if code == b'C' {
            return Some(value);
        }
        fields = after.get(1..)?;
    }
    None
}

/// The statement text of a simple Query body, or of a Parse body after the statement name
/// (up to the terminating NUL, or all of a truncated capture).
pub fn statement_text(tag: u8, body: &[u8]) -> &[u8] {
    let text = match tag {
        b'Q' => body,
        b'P' => match body.iter().position(|&b| b == 0) {
            Some(end) => body.get(end + 1..).unwrap_or_default(),
            None => &[],
        },
        _ => &[],
    };
    match text.iter().position(|&b| b == 0) {
        Some(end) => text.get(..end).unwrap_or_default(),
        None => text,
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
