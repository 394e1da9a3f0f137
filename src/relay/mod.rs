//! The relay's rules, with no I/O: sessions and their index, retained logs
//! and their tally, the order in which sessions became held, conversation
//! notes, and the hand-over snapshot. Time is passed in; the worker in
//! [`crate::server`] owns the state and moves the bytes.

pub(crate) mod core;
pub(crate) mod held_order;
pub(crate) mod pairs;
pub(crate) mod retained;
pub(crate) mod session;
pub(crate) mod session_index;
#[cfg(test)]
pub(crate) mod sim;
#[cfg(test)]
pub(crate) mod sim_node;
pub(crate) mod stream;
