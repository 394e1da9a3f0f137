//! Presence look-ups: which node holds a client (or an account's whole
//! presence table), the commands that need one, and the memo of recent
//! answers.

use super::*;

/// What a command needed to look up in Redis before it can run.
pub(super) enum Lookup {
    None,
    /// Which node holds the client (and whether that node is alive).
    Node(Option<(String, bool)>),
    /// An account's whole presence table.
    All(HashMap<String, String>),
}

impl Lookup {
    pub(super) fn node(&mut self) -> Option<(String, bool)> {
        match std::mem::replace(self, Lookup::None) {
            Lookup::Node(n) => n,
            _ => None,
        }
    }
    pub(super) fn all(&mut self) -> HashMap<String, String> {
        match std::mem::replace(self, Lookup::None) {
            Lookup::All(a) => a,
            _ => HashMap::new(),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub(super) enum LookupKind {
    None,
    Node,
    All,
    /// A note answered from the [`PresenceMemo`]: the node last seen holding the client.
    Known(Option<String>),
    /// A send routed from the [`PresenceMemo`] of routes to this (live) node.
    Cached(String),
}

/// (account, client).
type ClientKey = (Box<str>, Box<str>);

/// Recent answers to presence look-ups (which node holds a client), reused
/// for a short time instead of another `HGET`. Two are kept:
///
/// - routes for sends, 1 s, positive answers only: a node forwarding many
///   messages to the same clients would otherwise do one `HGET` per message.
///   A cached route can be stale (the client moved); the node it names then
///   answers "not here", and the send is retried once with a fresh look-up
///   (`Pending::Send` keeps the message for that). Routes to nodes that are
///   not alive are not used.
/// - answers for conversation notes (`Touch`), 2 s, "no node" included: notes
///   are best effort, and a busy sender whose session is on no node would
///   otherwise cost one `HGET` per note.
pub(super) struct PresenceMemo {
    map: HashMap<ClientKey, (Option<String>, Instant)>,
    ttl: Duration,
    /// Most answers remembered (the memo is cleared when it is full).
    max: usize,
}

impl PresenceMemo {
    pub(super) fn new(ttl: Duration, max: usize) -> PresenceMemo {
        PresenceMemo {
            map: HashMap::new(),
            ttl,
            max,
        }
    }

    /// The remembered answer, if still fresh.
    pub(super) fn get(&self, account: &str, client: &str, now: Instant) -> Option<&Option<String>> {
        // Tuple keys of boxes cannot be borrowed as (&str, &str): build the key.
        let (node, at) = self.map.get(&(account.into(), client.into()))?;
        (now.duration_since(*at) < self.ttl).then_some(node)
    }

    pub(super) fn put(&mut self, account: &str, client: &str, node: Option<String>, now: Instant) {
        if self.map.len() >= self.max {
            self.map.clear();
        }
        self.map
            .insert((account.into(), client.into()), (node, now));
    }

    pub(super) fn forget(&mut self, account: &str, client: &str) {
        self.map.remove(&(account.into(), client.into()));
    }
}

/// Adds the Redis look-up a command needs to `pipe`, and says which kind.
pub(super) fn lookup_cmd(pipe: &mut redis::Pipeline, cmd: &BridgeCmd) -> LookupKind {
    match cmd {
        BridgeCmd::Send {
            account,
            to: client,
            ..
        }
        | BridgeCmd::Takeover {
            account, client, ..
        }
        | BridgeCmd::Touch {
            account, client, ..
        } => {
            pipe.cmd("HGET").arg(account_key(account)).arg(&**client);
            LookupKind::Node
        }
        BridgeCmd::List { account, .. } => {
            pipe.cmd("HGETALL").arg(account_key(account));
            LookupKind::All
        }
        _ => LookupKind::None,
    }
}

/// The node a presence value names, and whether that node is alive.
pub(super) fn node_of(v: &redis::Value, live: &HashSet<String>) -> Option<(String, bool)> {
    let s: Option<String> = redis::from_redis_value(v).ok()?;
    let e = PresenceEntry::decode(&s?)?;
    let alive = live.contains(&e.node);
    Some((e.node, alive))
}
/// True if a presence look-up's answer names a node other than `me` that is
/// not in `live`.
pub(super) fn names_unknown_node(v: &redis::Value, live: &HashSet<String>, me: &str) -> bool {
    let unknown =
        |s: &str| PresenceEntry::decode(s).is_some_and(|e| e.node != me && !live.contains(&e.node));
    if let Ok(Some(s)) = redis::from_redis_value::<Option<String>>(v) {
        return unknown(&s);
    }
    redis::from_redis_value::<HashMap<String, String>>(v)
        .is_ok_and(|all| all.values().any(|s| unknown(s)))
}
