//! Clustering: nodes bridged by Redis.
//!
//! Each node runs a bridge (`server::bridge`) that keeps the node's presence in
//! Redis, forwards sends for clients held by other nodes over Redis pub/sub,
//! hands sessions over when a client reconnects to another node, and reaps the
//! presence of nodes that died. Workers never block on Redis: they talk to the
//! bridge through a bounded channel, and the bridge answers through the
//! workers' inboxes.

pub mod wire;

use std::time::Duration;

/// Settings of the Redis bridge.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub redis_url: String,
    /// A node counts as dead when its heartbeat is older than this.
    pub node_ttl: Duration,
    /// Dial, read and write timeout of each Redis operation, and how long a
    /// remote node may take to answer a send or a takeover.
    pub timeout: Duration,
}

/// What the presence table says about a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceState {
    Online,
    Held,
}

impl PresenceState {
    /// The state as the presence table stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceState::Online => "online",
            PresenceState::Held => "held",
        }
    }
}

/// One presence entry as stored in Redis: `node|role|state|since_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    pub node: String,
    pub role: crate::auth::Role,
    pub online: bool,
    pub since_ms: u64,
}

impl PresenceEntry {
    /// Encodes the Redis hash value.
    pub fn encode(
        node: &str,
        role: crate::auth::Role,
        state: PresenceState,
        since_ms: u64,
    ) -> String {
        format!("{node}|{}|{}|{since_ms}", role.as_str(), state.as_str())
    }

    /// Decodes a Redis hash value; `None` if it is not one of ours.
    pub fn decode(s: &str) -> Option<PresenceEntry> {
        let mut it = s.split('|');
        let node = it.next()?.to_string();
        let role = crate::auth::Role::parse(it.next()?)?;
        let online = match it.next()? {
            "online" => true,
            "held" => false,
            _ => return None,
        };
        let since_ms = it.next()?.parse().ok()?;
        if it.next().is_some() || node.is_empty() {
            return None;
        }
        Some(PresenceEntry {
            node,
            role,
            online,
            since_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn presence_round_trip() {
        let s = PresenceEntry::encode("n1", Role::Console, PresenceState::Held, 42);
        assert_eq!(
            PresenceEntry::decode(&s),
            Some(PresenceEntry {
                node: "n1".into(),
                role: Role::Console,
                online: false,
                since_ms: 42
            })
        );
        for bad in [
            "",
            "n1",
            "n1|agent|online",
            "n1|boss|online|1",
            "n1|agent|gone|1",
            "|agent|online|1",
            "n1|agent|online|x",
            "n1|agent|online|1|x",
        ] {
            assert_eq!(PresenceEntry::decode(bad), None, "{bad}");
        }
    }
}
