//! PostgreSQL, as it passes through the filter: [`reader`] frames the messages of each
//! direction, [`session`] pairs the client's statements with
//! the server's answers (what gets counted and timed).

mod names;
mod place;
pub mod reader;
pub mod session;
mod stand_in;
mod tracker;

#[cfg(test)]
pub(crate) mod wire_bytes;

pub use reader::{
    opens_connection, sqlstate, statement_text, Message, Opening, Reader, Step, CAPTURE_LIMIT,
};
