//! Switchboard: a dense, thread-per-core relay gateway.
//!
//! Clients keep one long-lived Server-Sent-Events *receive connection* open and
//! send messages to other clients of the same account with short HTTP POST
//! *send connections*. The protocol code in [`proto`] and [`auth`] is sans-IO:
//! pure functions and state machines over byte slices, with time passed in as a
//! value. The event loop in [`server`] only moves bytes.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod alloc;
pub mod auth;
pub mod cluster;
pub mod config;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod ids;
pub mod proto;
pub mod relay;
pub mod server;
pub mod timer;
