//! Connections that have not yet made a request with a valid token, in
//! accept order, so that the oldest can make room: when the node is at
//! `--max-connections`, or the worker at its share of
//! `--max-unauthenticated`, a new connection closes the oldest
//! unauthenticated one still waiting for its first request instead of being
//! refused. Idle sockets opened to fill the node then only push each other
//! out, while a client that sends its request promptly gets through.

use std::collections::VecDeque;

use slab::Slab;

use super::conn::{Conn, State};

/// Queue of (slab index, generation) in accept order, with the count of
/// connections in it that are still unauthenticated and open. Entries of
/// connections that authenticated or closed are skipped when met, and
/// dropped in a sweep once they outnumber the live ones.
#[derive(Default)]
pub struct Unauthenticated {
    queue: VecDeque<(u32, u32)>,
    live: usize,
}

/// Least queue length before stale entries are swept out.
const SWEEP_MIN: usize = 1024;

impl Unauthenticated {
    /// Notes a connection just accepted.
    pub fn accepted(&mut self, idx: usize, gen: u32, conns: &Slab<Conn>) {
        self.live += 1;
        self.queue.push_back((idx as u32, gen));
        if self.queue.len() >= SWEEP_MIN && self.queue.len() > 2 * self.live {
            self.queue.retain(|&(i, g)| {
                conns
                    .get(i as usize)
                    .is_some_and(|c| c.gen == g && !c.authed)
            });
        }
    }

    /// One connection fewer is unauthenticated (it authenticated or closed).
    pub fn left(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    /// Unauthenticated connections open on this worker.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The oldest connection (other than `except`) that is unauthenticated
    /// and still waiting for its first request, taken off the queue.
    /// Connections answered and lingering are not taken: closing them could
    /// turn their answer into a reset.
    pub fn oldest_waiting(&mut self, conns: &Slab<Conn>, except: usize) -> Option<usize> {
        let mut skipped = Vec::new();
        let mut found = None;
        while let Some((i, g)) = self.queue.pop_front() {
            let Some(c) = conns.get(i as usize).filter(|c| c.gen == g && !c.authed) else {
                continue; // closed or authenticated: drop the entry
            };
            // A connection whose request has arrived (read, or still in the
            // socket: one peek) is a client that talks, not an idle socket.
            if i as usize != except
                && c.requests == 0
                && !c.close_after_flush
                && matches!(c.state, State::Request(_))
                && c.inbuf.is_empty()
                && !matches!(c.stream.peek(&mut [0u8; 1]), Ok(n) if n > 0)
            {
                found = Some(i as usize);
                break;
            }
            skipped.push((i, g));
        }
        // Lingering (or the new) connections keep their place at the front.
        for e in skipped.into_iter().rev() {
            self.queue.push_front(e);
        }
        found
    }
}
