//! MySQL packets as they pass: framed incrementally (3-byte length, sequence id, payload; a
//! payload of 16 MiB − 1 continues in the next packet) with only their first bytes kept, and
//! the fields the session reads from them and writes into them.

use crate::protocol::ErrorReply;

/// A query (`COM_QUERY`): the command byte, then the text.
pub(super) const COM_QUERY: u8 = 0x03;
/// A payload this long continues in the next packet.
pub(super) const CONTINUED: usize = 0xff_ffff;

/// One packet being read: header bytes, then the payload (the first bytes kept).
#[derive(Default)]
pub(super) struct Framer {
    header: [u8; 4],
    header_len: usize,
    /// Payload bytes still to come, once the header is whole.
    left: Option<usize>,
    len: usize,
    seq: u8,
    keep: Vec<u8>,
    keep_want: usize,
    reported: bool,
    /// Bytes of the current packet read (header included), for the rewriting.
    read: usize,
    /// The packet continues a payload of 16 MiB − 1 (part of the same message).
    continuation: bool,
}

/// One complete (or, for a long command, captured) packet.
pub(super) struct Packet<'a> {
    pub(super) seq: u8,
    pub(super) len: usize,
    pub(super) payload: &'a [u8],
    /// A continuation of the previous packet's payload.
    pub(super) continuation: bool,
    pub(super) at: usize,
    pub(super) head: usize,
}

/// What reading a chunk produced.
pub(super) enum Step<'a> {
    /// A packet's kept bytes are read (the whole packet, or a command's first 4 KiB).
    Packet(Packet<'a>),
    /// The packet reported earlier ended at `at`.
    End { at: usize },
}

impl Framer {
    /// Reads `chunk`; `keep(seq, first payload byte)` says how many payload bytes to keep.
    pub(super) fn read(
        &mut self,
        chunk: &[u8],
        keep: &mut dyn FnMut(u8) -> usize,
        step: &mut dyn FnMut(Step<'_>),
    ) {
        let mut at = 0;
        while at < chunk.len() {
            let rest = chunk.get(at..).unwrap_or_default();
            match self.left {
                None => {
                    let take = (4 - self.header_len).min(rest.len());
                    if let (Some(dst), Some(src)) = (
                        self.header.get_mut(self.header_len..self.header_len + take),
                        rest.get(..take),
                    ) {
                        dst.copy_from_slice(src);
                    }
                    self.header_len += take;
                    self.read += take;
                    at += take;
                    if self.header_len == 4 {
                        let [a, b, c, seq] = self.header;
                        let len = usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16;
                        self.header_len = 0;
                        self.len = len;
                        self.seq = seq;
                        self.left = Some(len);
                        self.keep.clear();
                        self.keep_want = usize::MAX;
                        self.reported = false;
                        if len == 0 {
                            self.keep_want = 0;
                            self.finish(at, step);
                        }
                    }
                }
                Some(left) => {
                    if self.keep_want == usize::MAX {
                        let first = rest.first().copied().unwrap_or(0);
                        self.keep_want =
                            if self.continuation { 0 } else { keep(first) }.min(self.len);
                    }
                    let room = self.keep_want.saturating_sub(self.keep.len());
                    let take = if room > 0 { room.min(left) } else { left }.min(rest.len());
                    if room > 0 {
                        self.keep
                            .extend_from_slice(rest.get(..take).unwrap_or_default());
                    }
                    self.read += take;
                    at += take;
                    let left = left - take;
                    self.left = Some(left);
                    if !self.reported && self.keep.len() >= self.keep_want && left > 0 {
                        self.reported = true;
                        step(Step::Packet(self.packet(at)));
                    }
                    if left == 0 {
                        self.finish(at, step);
                    }
                }
            }
        }
    }

    fn packet(&self, at: usize) -> Packet<'_> {
        Packet {
            seq: self.seq,
            len: self.len,
            payload: &self.keep,
            continuation: self.continuation,
            at,
            head: self.read,
        }
    }

    fn finish(&mut self, at: usize, step: &mut dyn FnMut(Step<'_>)) {
        if self.reported {
            step(Step::End { at });
        } else {
            step(Step::Packet(self.packet(at)));
            step(Step::End { at });
        }
        self.left = None;
        self.read = 0;
        self.continuation = self.len == CONTINUED;
    }

    /// How many of the next bytes need not be seen: the rest of a packet whose kept bytes were
    /// reported (a row's body, a long value).
    pub(super) fn skippable(&self) -> usize {
        match self.left {
            Some(left) if self.reported => left,
            _ => 0,
        }
    }

    /// Passes over `n` bytes (at most [`Framer::skippable`]) without seeing them; a packet
    /// that ends there ends as [`Framer::read`] ends it (its `End` step aside: the server
    /// side, the only one skipped, has no use for it).
    pub(super) fn skip(&mut self, n: usize) {
        let n = n.min(self.skippable());
        if let Some(left) = self.left {
            self.read += n;
            self.left = Some(left - n);
            if left == n {
                self.left = None;
                self.read = 0;
                self.continuation = self.len == CONTINUED;
            }
        }
    }

    /// The packet under way and not reported yet: bytes of it read.
    pub(super) fn unreported(&self) -> Option<usize> {
        match self.left {
            Some(_) if !self.reported => Some(self.read),
            None if self.header_len > 0 => Some(self.read),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Framer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framer").field("left", &self.left).finish()
    }
}

/// An ERR packet with sequence id `seq`.
pub(super) fn err_packet(seq: u8, reply: &ErrorReply, errno: u16) -> Vec<u8> {
    let message = reply.message.as_bytes();
    let sqlstate = reply.code.unwrap_or(*b"HY000");
    let len = 1 + 2 + 1 + 5 + message.len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
    out.push(seq);
    out.push(0xff);
    out.extend_from_slice(&errno.to_le_bytes());
    out.push(b'#');
    out.extend_from_slice(&sqlstate);
    out.extend_from_slice(message);
    out
}

pub(super) fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

/// A length-encoded integer at the start of `bytes`.
pub(super) fn lenenc(bytes: &[u8]) -> Option<u64> {
    let (&first, rest) = bytes.split_first()?;
    let take = |n: usize| {
        let mut b = [0u8; 8];
        b.get_mut(..n)?.copy_from_slice(rest.get(..n)?);
        Some(u64::from_le_bytes(b))
    };
    match first {
        0..=0xfa => Some(u64::from(first)),
        0xfc => take(2),
        0xfd => take(3),
        0xfe => take(8),
        _ => None,
    }
}

/// The status flags of an OK packet (after its affected rows and last insert id) or of an EOF.
pub(super) fn status_flags(payload: &[u8]) -> u16 {
    match payload.first() {
        Some(0xfe) if payload.len() < 9 => {
            // EOF: header, warnings (2), status (2).
            u16::from_le_bytes([
                payload.get(3).copied().unwrap_or(0),
                payload.get(4).copied().unwrap_or(0),
            ])
        }
        Some(0x00 | 0xfe) => {
            let mut at = 1;
            for _ in 0..2 {
                let width = match payload.get(at) {
                    Some(0xfc) => 3,
                    Some(0xfd) => 4,
                    Some(0xfe) => 9,
                    _ => 1,
                };
                at += width;
            }
            u16::from_le_bytes([
                payload.get(at).copied().unwrap_or(0),
                payload.get(at + 1).copied().unwrap_or(0),
            ])
        }
        _ => 0,
    }
}

/// An ERR packet's errno, SQLSTATE class and message.
pub(super) fn err_fields(payload: &[u8]) -> (u16, [u8; 2], &[u8]) {
    let errno = u16::from_le_bytes([
        payload.get(1).copied().unwrap_or(0),
        payload.get(2).copied().unwrap_or(0),
    ]);
    match payload.get(3) {
        Some(b'#') => (
            errno,
            [
                payload.get(4).copied().unwrap_or(b'X'),
                payload.get(5).copied().unwrap_or(b'X'),
            ],
            payload.get(9..).unwrap_or_default(),
        ),
        _ => (errno, *b"HY", payload.get(3..).unwrap_or_default()),
    }
}

/// Whether a packet ends a result set's rows: an EOF, or (DEPRECATE_EOF) an OK with the EOF
/// header; a row starting with 0xfe is at least 16 MiB.
pub(super) fn ends_rows(payload: &[u8], len: usize) -> bool {
    payload.first() == Some(&0xfe) && len < CONTINUED
}
