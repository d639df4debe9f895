//! Redis, as it passes through the filter: [`resp`] frames the values of each direction,
//! [`commands`] names commands, [`miss`] answers reads of missing keys, [`session`] pairs commands with replies (what gets counted and
//! timed) and rewrites them for rules.

pub mod commands;
pub mod miss;
pub mod resp;
pub mod session;
mod tracker;
