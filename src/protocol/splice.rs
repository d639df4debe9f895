//! Rewriting a stream event by event, shared by the protocols: what the bytes of one data
//! event become when rules act on the requests or replies in it. A message whose decision
//! needs more bytes than the event has is withheld (its start kept here) until it can be
//! decided; a replaced message's remaining bytes are dropped as they arrive.

use crate::flow::{Close, Direction};
use crate::protocol::{Act, ErrorReply, Verdict};

/// What becomes of a message that was just read.
#[derive(Debug)]
pub(crate) enum Edit {
    /// Replaced by these bytes.
    Replace(Vec<u8>),
    /// Replaced by these bytes, and nothing after it reaches the peer.
    ReplaceThenEnd(Vec<u8>),
    /// Neither it nor anything after it reaches the peer.
    End,
}

/// A rule's act on the request just read, as an edit — the same in every protocol: an error
/// replaces the request by what `provoke` builds for it (a request the server fails without
/// touching data) and is handed to `inject` to await the server's answer, and when fatal
/// nothing after it reaches the server; a delay holds the stream until the latest hold asked;
/// an abort ends the connection.
pub(crate) fn edit_for(
    act: Option<Act>,
    hold_until: &mut Option<u64>,
    provoke: impl FnOnce(&ErrorReply) -> Vec<u8>,
    inject: impl FnOnce(ErrorReply),
) -> Option<Edit> {
    match act? {
        Act::Error(reply) => {
            let edit = Edit::for_error(&reply, provoke(&reply));
            inject(reply);
            Some(edit)
        }
        Act::Delay(until) => {
            *hold_until = Some(hold_until.map_or(until, |t| t.max(until)));
            None
        }
        Act::Abort => Some(Edit::End),
        // Answered by the Redis session itself (the only protocol with `miss` rules).
        Act::Miss => None,
    }
}

/// What reading one event found, for [`Splice::rewrite`] to finish the event with.
#[derive(Debug, Default)]
pub(crate) struct Read {
    /// Bytes read of a message still undecided at the end of the chunk: withheld until it is.
    pub(crate) undecided: Option<u64>,
    /// An edit ends the connection.
    pub(crate) closes: bool,
    /// Hold the client → database stream until then (a delayed request).
    pub(crate) hold_until: Option<u64>,
}

impl Edit {
    /// `bytes` in a message's place for a rule's error `reply`: the stream ends after it when
    /// the error is fatal. The request the rule acted on is replaced so (by its stand-in), and
    /// so is the server's answer to the stand-in (by the rule's error, in every protocol).
    pub(crate) fn for_error(reply: &ErrorReply, bytes: Vec<u8>) -> Edit {
        if reply.fatal {
            Edit::ReplaceThenEnd(bytes)
        } else {
            Edit::Replace(bytes)
        }
    }
}

/// One direction's rewriting state.
#[derive(Debug, Default)]
pub(crate) struct Splice {
    /// The start of a message not decided yet, withheld from the peer.
    pub(crate) stash: Vec<u8>,
    /// Bytes of a replaced message still to come, when its length is known (PostgreSQL).
    pub(crate) drop_left: u64,
    /// The rest of a replaced message is dropped until its end is read (Redis, MySQL).
    pub(crate) dropping: bool,
    /// Nothing more reaches the peer in this direction.
    pub(crate) ended: bool,
}

/// Both directions' rewriting state of one connection.
#[derive(Debug, Default)]
pub(crate) struct Splices {
    to_database: Splice,
    to_client: Splice,
}

impl Splices {
    pub(crate) fn of(&mut self, dir: Direction) -> &mut Splice {
        match dir {
            Direction::ToDatabase => &mut self.to_database,
            Direction::ToClient => &mut self.to_client,
        }
    }

    /// Whether events in `dir` must be rewritten for what earlier ones decided.
    pub(crate) fn busy(&self, dir: Direction) -> bool {
        match dir {
            Direction::ToDatabase => self.to_database.busy(),
            Direction::ToClient => self.to_client.busy(),
        }
    }
}

impl Splice {
    /// The one skeleton of every protocol's rewriting of one event: nothing passes after a
    /// message that ended the stream; a stream no longer read (`reading`) passes, its withheld
    /// bytes first; otherwise `read` reads the chunk, placing each
    /// message's edit on the output as it is decided (the withheld start of the message being
    /// read comes as the carry), and what it found finishes the event.
    pub(crate) fn rewrite(
        &mut self,
        chunk: &[u8],
        reading: bool,
        read: impl FnOnce(&mut Splice, &mut Output<'_>, &mut Vec<u8>) -> Read,
    ) -> Verdict {
        if let Some(verdict) = self.ended() {
            return verdict;
        }
        if !reading {
            return self.pass(chunk);
        }
        let (mut carry, mut output) = self.begin(chunk);
        let found = read(self, &mut output, &mut carry);
        self.finish(
            output,
            carry,
            found.undecided,
            found.closes,
            found.hold_until,
        )
    }

    /// After a message that ended the stream, nothing more passes (the connection is closing).
    fn ended(&self) -> Option<Verdict> {
        self.ended.then(|| Verdict {
            replace: Some(Vec::new()),
            ..Verdict::default()
        })
    }

    /// Whether events must be rewritten for what earlier ones decided.
    pub(crate) fn busy(&self) -> bool {
        !self.stash.is_empty() || self.drop_left > 0 || self.dropping || self.ended
    }

    /// Places the edit of a request read from `start` to `at` (see [`place`]). The rest of a
    /// replaced request whose end is not read yet is dropped as it arrives, until
    /// [`Splice::request_end`] (Redis, MySQL: their requests' lengths are not known up front).
    /// Returns whether the edit ends the connection.
    pub(crate) fn place_request(
        &mut self,
        output: &mut Output<'_>,
        carry: &mut Vec<u8>,
        edit: Option<Edit>,
        start: isize,
        at: usize,
    ) -> bool {
        let replaced = edit.is_some();
        let closes = matches!(edit, Some(Edit::End));
        place(output, carry, self, edit, start, at);
        if replaced && !self.ended {
            self.dropping = true;
        }
        closes
    }

    /// A request's end was read at `at`: the rest of a replaced one is dropped up to there.
    /// Returns whether one was being dropped.
    pub(crate) fn request_end(&mut self, output: &mut Output<'_>, at: usize) -> bool {
        let was = self.dropping;
        if was {
            output.drop_to(at);
            self.dropping = false;
        }
        was
    }

    /// The rest of the event, while a replaced request's rest is being dropped.
    pub(crate) fn drop_rest(&self, output: &mut Output<'_>) {
        if self.dropping {
            output.drop_to(output.chunk.len());
        }
    }

    /// The start of rewriting one event: the bytes withheld before it (to be placed in front
    /// of what they belong to) and the event's output, unchanged so far.
    fn begin<'a>(&mut self, chunk: &'a [u8]) -> (Vec<u8>, Output<'a>) {
        let carry = std::mem::take(&mut self.stash);
        (
            carry,
            Output {
                chunk,
                out: None,
                pos: 0,
            },
        )
    }

    /// The event's bytes when nothing more is read: withheld bytes go out first.
    fn pass(&mut self, chunk: &[u8]) -> Verdict {
        let carry = std::mem::take(&mut self.stash);
        Verdict {
            replace: (!carry.is_empty()).then(|| [carry.as_slice(), chunk].concat()),
            ..Verdict::default()
        }
    }

    /// The end of a rewritten event. `undecided`: bytes read of a message still undecided at
    /// the end of the chunk (withheld until it is); `carry`: withheld bytes not placed yet
    /// (not expected: they pass, in front). `closes`: an edit ends the connection.
    fn finish(
        &mut self,
        mut output: Output<'_>,
        mut carry: Vec<u8>,
        undecided: Option<u64>,
        closes: bool,
        hold_until: Option<u64>,
    ) -> Verdict {
        let chunk = output.chunk;
        if let Some(read) = undecided.filter(|_| !self.ended) {
            let start = chunk.len() as i128 - i128::from(read);
            if start >= 0 {
                let start = start as usize;
                output.copy_to(start);
                self.stash = chunk.get(start..).unwrap_or_default().to_vec();
            } else {
                carry.extend_from_slice(chunk);
                self.stash = std::mem::take(&mut carry);
            }
            output.drop_to(chunk.len());
        }
        let mut replace = output.finish();
        if !carry.is_empty() {
            let mut bytes = carry;
            bytes.extend_from_slice(replace.as_deref().unwrap_or(chunk));
            replace = Some(bytes);
        }
        let close = closes.then_some(match &replace {
            Some(bytes) if bytes.is_empty() => Close::Now,
            _ => Close::AtNextTick,
        });
        Verdict {
            replace,
            hold_until,
            close,
        }
    }
}

/// Places, on an event's output, the edit of a message that started at `start` (negative: in
/// an earlier event, withheld in `carry`) and was read up to `at`; the rest of a replaced
/// message is dropped until its end is read. Returns whether it ends the stream.
pub(crate) fn place(
    output: &mut Output<'_>,
    carry: &mut Vec<u8>,
    splice: &mut Splice,
    edit: Option<Edit>,
    start: isize,
    at: usize,
) -> bool {
    let Some(edit) = edit else {
        // Kept: withheld bytes of it go out first.
        if !carry.is_empty() {
            let bytes = std::mem::take(carry);
            output.insert(&bytes);
        }
        return false;
    };
    output.copy_to(usize::try_from(start).unwrap_or(0));
    carry.clear();
    let ends = matches!(edit, Edit::ReplaceThenEnd(_) | Edit::End);
    if let Edit::Replace(bytes) | Edit::ReplaceThenEnd(bytes) = edit {
        output.insert(&bytes);
    }
    output.drop_to(at);
    if ends {
        splice.ended = true;
        output.drop_to(output.chunk.len());
    }
    ends
}

/// The output of one rewritten event, built only once something changes.
pub(crate) struct Output<'a> {
    pub(crate) chunk: &'a [u8],
    pub(crate) out: Option<Vec<u8>>,
    /// The chunk's bytes before this are accounted for (in `out`, or unchanged while it is
    /// `None`).
    pub(crate) pos: usize,
}

impl Output<'_> {
    pub(crate) fn out(&mut self) -> &mut Vec<u8> {
        let (chunk, pos) = (self.chunk, self.pos);
        self.out
            .get_or_insert_with(|| chunk.get(..pos).unwrap_or_default().to_vec())
    }

    /// The chunk's bytes up to `to` pass.
    pub(crate) fn copy_to(&mut self, to: usize) {
        let to = to.min(self.chunk.len()).max(self.pos);
        if let Some(out) = self.out.as_mut() {
            out.extend_from_slice(self.chunk.get(self.pos..to).unwrap_or_default());
        }
        self.pos = to;
    }

    /// The chunk's bytes up to `to` are discarded.
    pub(crate) fn drop_to(&mut self, to: usize) {
        let to = to.min(self.chunk.len()).max(self.pos);
        if to > self.pos {
            self.out();
            self.pos = to;
        }
    }

    pub(crate) fn insert(&mut self, bytes: &[u8]) {
        self.out().extend_from_slice(bytes);
    }

    pub(crate) fn finish(mut self) -> Option<Vec<u8>> {
        let len = self.chunk.len();
        self.copy_to(len);
        self.out
    }
}
