//! Keep-alive send connections counted against their account's
//! `--max-account-connections`, as receive connections are (`attach`).
//!
//! A connection counts for the account of its latest authenticated send or
//! listing from that request until it closes, becomes a receive stream (which
//! counts by itself), or makes a request for another account (then it counts
//! for that one). The account is kept in a per-worker side table by slab index
//! (`Worker::senders`), not in `Conn`: only connections that sent something
//! pay for it, idle unauthenticated sockets and receive streams do not. With
//! no cap (`0`, the default) nothing is counted or stored.

use super::worker::Worker;

/// The answer to a connection over the cap: the same as for a receive
/// connection over it (`attach`).
pub(super) const OVER_CAP: &str =
    "too many connections for this account on this node; try another node or later";

impl Worker {
    /// Counts connection `idx` as one of `account`'s connections, if it is not
    /// already. False, the connection answered `503 account_connection_limit`
    /// and closing, if the account is at `--max-account-connections`.
    pub(super) fn count_sender(&mut self, idx: usize, account: &str) -> bool {
        if self.shared.config.max_account_connections == 0 {
            return true;
        }
        if self.senders.get(&idx).is_some_and(|a| &**a == account) {
            return true;
        }
        self.uncount_sender(idx);
        if self.shared.accounts.acquire(account, false) {
            self.senders.insert(idx, account.into());
            return true;
        }
        if let Some(more) = self.noisy(super::throttle::Noisy::AccountLimit) {
            log::warn!(
                "{} refused: account {account} has {} connections (limit {}){more}",
                self.conns[idx].sid,
                self.shared.accounts.get(account),
                self.shared.config.max_account_connections
            );
        }
        self.respond_error(idx, 503, "account_connection_limit", OVER_CAP, true);
        false
    }

    /// Stops counting connection `idx` as a send connection (it closed or
    /// became a receive stream).
    pub(super) fn uncount_sender(&mut self, idx: usize) {
        if self.senders.is_empty() {
            return;
        }
        if let Some(account) = self.senders.remove(&idx) {
            self.shared.accounts.release(&account);
        }
    }

    /// Gives back the side table's memory after a peak of send connections.
    pub(super) fn shrink_senders(&mut self) {
        if self.senders.capacity() > 64 && self.senders.len() < self.senders.capacity() / 4 {
            self.senders.shrink_to_fit();
        }
    }
}
