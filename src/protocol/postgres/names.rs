//! Named prepared statements and portals, remembered by the text they were prepared with
//! (bounded: the oldest are forgotten first, and their executions count as `other`).

use crate::protocol::sql::Command;
use std::collections::VecDeque;
use std::rc::Rc;

// Statement text is kept for named statements (and again for portals) up to the same bound.
use crate::protocol::{MAX_PREPARED, MAX_PREPARED_TEXT};

/// A prepared statement: its command and (the start of) its text.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) command: Command,
    pub(super) text: Box<[u8]>,
}

/// Named statements or portals (a portal shares its statement's text), oldest first.
#[derive(Debug, Default)]
pub(super) struct Names {
    entries: VecDeque<(Vec<u8>, Rc<Prepared>)>,
    text_bytes: usize,
}

impl Names {
    pub(super) fn set(&mut self, name: &[u8], prepared: Rc<Prepared>) {
        self.remove(name);
        self.text_bytes += prepared.text.len();
        self.entries.push_back((name.to_vec(), prepared));
        while self.entries.len() > MAX_PREPARED || self.text_bytes > MAX_PREPARED_TEXT {
            match self.entries.pop_front() {
                Some((_, gone)) => self.text_bytes -= gone.text.len(),
                None => break,
            }
        }
    }

    pub(super) fn get(&self, name: &[u8]) -> Option<&Rc<Prepared>> {
        self.entries
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    pub(super) fn remove(&mut self, name: &[u8]) {
        let text_bytes = &mut self.text_bytes;
        self.entries.retain(|(n, p)| {
            let keep = n != name;
            if !keep {
                *text_bytes -= p.text.len();
            }
            keep
        });
    }
}
