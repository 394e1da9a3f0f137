//! Server configuration: command-line flags (with `SWITCHBOARD_*` environment
//! fallbacks), parsing of durations and sizes, and the validated [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version = env!("SWITCHBOARD_VERSION"), about = "A dense relay gateway for long-lived client connections")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(Box<ServeArgs>),
    /// Print a signed client token.
    Token(TokenArgs),
}

/// Flags of `switchboard token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// File holding the shared HS256 secret (or set SWITCHBOARD_SECRET).
    #[arg(long, env = "SWITCHBOARD_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Account id (1-64 chars of [A-Za-z0-9._-]).
    #[arg(long)]
    pub account: String,
    /// Client id (1-64 chars of [A-Za-z0-9._-]).
    #[arg(long)]
    pub client: String,
    /// Role: agent or console.
    #[arg(long, default_value = "agent")]
    pub role: String,
    /// Lifetime of the token, e.g. 30m, 24h, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// Flags of `switchboard serve`. Each also reads `SWITCHBOARD_<NAME>` and
/// the `--config` TOML file (keys as the flag names, `-` or `_`):
/// flag > environment > file > default.
#[derive(Debug, Args, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML configuration file (keys are the flag names without `--`).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (as TOML) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// Client listener address.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Worker threads (event loops), each with its own SO_REUSEPORT listener; 0 = one per core.
    #[arg(long, env = "SWITCHBOARD_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// How clients are spread over the workers: `account` (all clients of an account on one
    /// worker, and a send connection moves to its account's worker, so relaying never crosses
    /// workers) or `client` (each client hashed on its own: even spread of one large account,
    /// but most messages cross from the sender's worker to the recipient's).
    #[arg(long, env = "SWITCHBOARD_SHARD_BY", value_enum, default_value_t = ShardBy::Account)]
    #[serde(serialize_with = "ser_display")]
    pub shard_by: ShardBy,
    /// File holding the shared HS256 token secret. The secret itself may instead be given in SWITCHBOARD_SECRET. Trailing whitespace (a final newline) is not part of it; at least 32 bytes (HS256).
    #[arg(long, env = "SWITCHBOARD_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Development mode: prints two ready tokens and curl commands, signed with the given secret (--secret-file or SWITCHBOARD_SECRET), else with a random secret for this run.
    #[arg(long, env = "SWITCHBOARD_DEV")]
    pub dev: bool,
    /// Node id reported to clients (default: a random id).
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,
    /// Send an SSE heartbeat comment after this long without writing to a receive connection.
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT", default_value = "60s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub heartbeat: Duration,
    /// Hold messages for a disconnected client this long before it counts as gone.
    #[arg(long, env = "SWITCHBOARD_HOLD", default_value = "60s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub hold: Duration,
    /// Most messages retained per client (for holding and Last-Event-ID replay).
    #[arg(long, env = "SWITCHBOARD_HOLD_MAX_MESSAGES", default_value_t = 1000)]
    pub hold_max_messages: usize,
    /// Most message bytes retained per client, e.g. 1MiB.
    #[arg(long, env = "SWITCHBOARD_HOLD_MAX_BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub hold_max_bytes: usize,
    /// Most message bytes retained on this node in all (every worker together), e.g. 4GiB;
    /// `auto` = a quarter of the memory (physical, or the cgroup's limit if lower). Past
    /// three quarters of it, the recipient's delivered messages (kept for replay) make
    /// room; past all of it, the oldest messages of the client held the longest go (a
    /// gap with reason memory_limit).
    #[arg(long, env = "SWITCHBOARD_HOLD_TOTAL_BYTES", default_value = "auto", value_parser = parse_total)]
    #[serde(serialize_with = "ser_total")]
    pub hold_total_bytes: HoldTotal,
    /// Peers that exchanged a message within this window get `peer-gone` when a client goes offline.
    #[arg(long, env = "SWITCHBOARD_CONVERSATION_TTL", default_value = "10m", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub conversation_ttl: Duration,
    /// Largest message body accepted by POST /v1/send, e.g. 64KiB.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE", default_value = "64KiB", value_parser = parse_size)]
    pub max_message: usize,
    /// Most bytes queued for one slow receive connection before it is closed (its messages stay held).
    #[arg(long, env = "SWITCHBOARD_MAX_OUTBOUND", default_value = "1MiB", value_parser = parse_size)]
    pub max_outbound: usize,
    /// SO_SNDBUF of client sockets, e.g. 64KiB; 0 leaves the kernel's autotuning
    /// (up to net.ipv4.tcp_wmem's maximum per connection). A cap bounds the
    /// kernel memory a slow reader can pin.
    #[arg(long, env = "SWITCHBOARD_SEND_BUFFER", default_value = "0", value_parser = parse_size)]
    pub send_buffer: usize,
    /// Most open client connections on this node; past it new connections get 503.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 1_000_000)]
    pub max_connections: usize,
    /// Most open connections per account on this node, receive streams and keep-alive send
    /// connections alike (0 = no limit); past it new ones get 503.
    #[arg(long, env = "SWITCHBOARD_MAX_ACCOUNT_CONNECTIONS", default_value_t = 0)]
    pub max_account_connections: usize,
    /// Most connections without a valid-token request yet, on this node (each worker
    /// gets its share; 0 = no separate limit). Past it, and at --max-connections, a new
    /// connection closes the oldest one still waiting for its first request.
    #[arg(long, env = "SWITCHBOARD_MAX_UNAUTHENTICATED", default_value_t = 0)]
    pub max_unauthenticated: usize,
    /// Most new connections per second from one source address (an IPv6 one by its /64),
    /// with a burst of one second's worth (0 = no limit). Past it a new connection gets
    /// 429 with Retry-After; far past it, it is closed at once. Leave 0 behind a load
    /// balancer (every connection then comes from its address).
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_NEW_CONNECTIONS_PER_ADDRESS",
        default_value_t = 0
    )]
    pub max_new_connections_per_address: u32,
    /// Close a connection whose first request head is not complete within this time.
    #[arg(long, env = "SWITCHBOARD_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub handshake_timeout: Duration,
    /// Close a request whose body is not complete within this time.
    #[arg(long, env = "SWITCHBOARD_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub body_timeout: Duration,
    /// Close a keep-alive send connection idle for this long between requests.
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    /// TCP keepalive: idle time before the first probe.
    #[arg(long, env = "SWITCHBOARD_KEEPALIVE_IDLE", default_value = "15s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub keepalive_idle: Duration,
    /// TCP keepalive: interval between probes.
    #[arg(long, env = "SWITCHBOARD_KEEPALIVE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub keepalive_interval: Duration,
    /// TCP keepalive: unanswered probes before the connection is dropped.
    #[arg(long, env = "SWITCHBOARD_KEEPALIVE_COUNT", default_value_t = 3)]
    pub keepalive_count: u32,
    /// TCP_USER_TIMEOUT: drop a connection whose sent data stays unacknowledged this long.
    #[arg(long, env = "SWITCHBOARD_USER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub user_timeout: Duration,
    /// On SIGTERM/SIGINT: spread reconnect notices over this window, then exit.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// Admin listener (info, connections, metrics, health, profiles); "off" disables it.
    #[arg(long, env = "SWITCHBOARD_ADMIN", default_value = "127.0.0.1:9090")]
    pub admin: String,
    /// Host names (comma-separated, without port) the admin listener answers besides
    /// localhost, loopback addresses and the address a request arrived on; other `Host`
    /// values get 421 (a defence against DNS rebinding). `*` answers any.
    #[arg(long, env = "SWITCHBOARD_ADMIN_HOSTS", default_value = "")]
    pub admin_hosts: String,
    /// Serve the client port over TLS with this certificate chain (PEM); needs --tls-key. SIGHUP reloads both.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Close a TLS connection whose handshake is not complete within this time.
    #[arg(long, env = "SWITCHBOARD_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub tls_handshake_timeout: Duration,
    /// Join a cluster through this Redis (redis://HOST:PORT); without it the node runs alone.
    #[arg(long, env = "SWITCHBOARD_REDIS")]
    pub redis: Option<String>,
    /// A node whose heartbeat in Redis is older than this counts as dead; its clients as gone.
    #[arg(long, env = "SWITCHBOARD_NODE_TTL", default_value = "15s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub node_ttl: Duration,
    /// Dial/read/write timeout of Redis operations, and how long another node may take to answer.
    #[arg(long, env = "SWITCHBOARD_REDIS_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub redis_timeout: Duration,
    /// Close a send (non-receive) connection after its current answer once it is this old.
    #[arg(long, env = "SWITCHBOARD_SEND_LIFETIME", default_value = "10m", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub send_lifetime: Duration,
    /// Web pages of these origins may use the client API from a browser (CORS), e.g.
    /// `https://console.example.com,http://127.0.0.1:8000` (scheme://host[:port], no path),
    /// or `*` for any origin. A request with an Origin header from any other origin gets 403
    /// before its token is read. Default: none (same-origin pages and non-browser clients only).
    /// In the TOML file: an array of strings.
    #[arg(long, env = "SWITCHBOARD_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = "SWITCHBOARD_LOG_LEVEL", default_value = "info")]
    #[serde(serialize_with = "ser_display")]
    pub log_level: log::LevelFilter,
    /// Per-connection warnings that come in floods (connections refused past
    /// --max-connections or --max-account-connections, 503s for want of an answer
    /// in time) are logged at most once per this interval per worker and kind; the
    /// lines not logged are counted in the next one (0 = log every one).
    #[arg(long, env = "SWITCHBOARD_LOG_THROTTLE", default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub log_throttle: Duration,
}

/// How a node spreads clients over its workers (`--shard-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShardBy {
    /// Every client of an account on the worker its account hashes to; a
    /// send connection is handed to that worker at its first send.
    Account,
    /// Each client on the worker its `account/client` hashes to.
    Client,
}

impl std::fmt::Display for ShardBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShardBy::Account => "account",
            ShardBy::Client => "client",
        })
    }
}

/// Validated runtime configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub workers: usize,
    /// How clients are spread over the workers.
    pub shard_by: ShardBy,
    pub node_id: String,
    pub heartbeat: Duration,
    pub hold: Duration,
    pub hold_max_messages: usize,
    pub hold_max_bytes: usize,
    /// Most message bytes retained on the node (all workers together).
    pub hold_total_bytes: usize,
    pub conversation_ttl: Duration,
    pub max_message: usize,
    pub max_outbound: usize,
    pub send_buffer: usize,
    pub max_connections: usize,
    pub max_account_connections: usize,
    /// Most connections without a valid-token request yet (0 = no separate limit).
    pub max_unauthenticated: usize,
    /// New connections per second per source address (0 = no limit).
    pub max_new_connections_per_address: u32,
    pub handshake_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub keepalive_idle: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_count: u32,
    pub user_timeout: Duration,
    pub drain_timeout: Duration,
    pub send_lifetime: Duration,
    /// Least time between two lines of one kind of throttled warning (`server::throttle`).
    pub log_throttle: Duration,
    /// TLS certificate chain and key files, when the client port speaks TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub tls_handshake_timeout: Duration,
    /// Redis bridge settings, on a clustered node.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Admin listener address, `None` when disabled.
    pub admin: Option<SocketAddr>,
    /// Extra `Host` names the admin listener answers (`--admin-hosts`).
    pub admin_hosts: Vec<String>,
    /// Limits on request heads.
    pub head_limits: crate::proto::head::Limits,
    /// Origins whose pages may make cross-origin requests (`--allowed-origins`).
    pub allowed_origins: crate::proto::cors::Origins,
}

impl Config {
    /// Defaults as for `serve` with no flags, on `listen`, with `workers` threads.
    pub fn new(listen: SocketAddr, workers: usize) -> Config {
        Config {
            listen,
            workers: workers.max(1),
            shard_by: ShardBy::Account,
            node_id: format!("node-{}", crate::ids::SessionId::random()),
            heartbeat: Duration::from_secs(60),
            hold: Duration::from_secs(60),
            hold_max_messages: 1000,
            hold_max_bytes: 1 << 20,
            hold_total_bytes: auto_hold_total(),
            conversation_ttl: Duration::from_secs(600),
            max_message: 64 << 10,
            max_outbound: 1 << 20,
            send_buffer: 0,
            max_connections: 1_000_000,
            max_account_connections: 0,
            max_unauthenticated: 0,
            max_new_connections_per_address: 0,
            handshake_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            keepalive_idle: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(5),
            keepalive_count: 3,
            user_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            send_lifetime: Duration::from_secs(600),
            log_throttle: Duration::from_secs(10),
            cluster: None,
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
            admin: None,
            admin_hosts: Vec::new(),
            head_limits: Default::default(),
            allowed_origins: Default::default(),
        }
    }

    /// Builds the configuration from `serve` flags, checking values that clap cannot.
    pub fn from_args(a: &ServeArgs) -> Result<Config, String> {
        let workers = if a.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            a.workers
        };
        if workers > 1024 {
            return Err(format!("--workers {workers}: at most 1024"));
        }
        let mut c = Config::new(a.listen, workers);
        c.shard_by = a.shard_by;
        if let Some(id) = &a.node_id {
            if !crate::auth::valid_id(id) {
                return Err(format!(
                    "--node-id {id:?}: use 1-64 chars of [A-Za-z0-9._-]"
                ));
            }
            c.node_id = id.clone();
        }
        let nonzero = |name: &str, d: Duration| {
            if d.is_zero() {
                Err(format!("--{name} must be greater than zero"))
            } else {
                Ok(d)
            }
        };
        c.heartbeat = nonzero("heartbeat", a.heartbeat)?;
        c.hold = a.hold;
        c.hold_max_messages = a.hold_max_messages;
        c.hold_max_bytes = a.hold_max_bytes;
        if let HoldTotal::Bytes(t) = a.hold_total_bytes {
            c.hold_total_bytes = t;
        }
        c.conversation_ttl = a.conversation_ttl;
        if a.max_message == 0 || a.max_message > (1 << 30) {
            return Err("--max-message must be between 1 byte and 1GiB".into());
        }
        c.max_message = a.max_message;
        c.max_outbound = a.max_outbound.max(4096);
        if a.send_buffer > (1 << 30) {
            return Err("--send-buffer must be at most 1GiB (0 = kernel autotuning)".into());
        }
        c.send_buffer = a.send_buffer;
        c.max_connections = a.max_connections;
        c.max_account_connections = a.max_account_connections;
        c.max_unauthenticated = a.max_unauthenticated;
        c.max_new_connections_per_address = a.max_new_connections_per_address;
        c.handshake_timeout = nonzero("handshake-timeout", a.handshake_timeout)?;
        c.body_timeout = nonzero("body-timeout", a.body_timeout)?;
        c.idle_timeout = nonzero("idle-timeout", a.idle_timeout)?;
        c.keepalive_idle = nonzero("keepalive-idle", a.keepalive_idle)?;
        c.keepalive_interval = nonzero("keepalive-interval", a.keepalive_interval)?;
        c.keepalive_count = a.keepalive_count.max(1);
        c.user_timeout = a.user_timeout;
        c.drain_timeout = a.drain_timeout;
        c.send_lifetime = nonzero("send-lifetime", a.send_lifetime)?;
        c.log_throttle = a.log_throttle;
        if let (Some(c2), Some(k)) = (&a.tls_cert, &a.tls_key) {
            c.tls = Some((c2.clone(), k.clone()));
        }
        c.tls_handshake_timeout = nonzero("tls-handshake-timeout", a.tls_handshake_timeout)?;
        if let Some(url) = &a.redis {
            if !(url.starts_with("redis://") || url.starts_with("unix://")) {
                return Err(format!("--redis {url:?}: expected redis://HOST:PORT"));
            }
            c.cluster = Some(crate::cluster::ClusterConfig {
                redis_url: url.clone(),
                node_ttl: nonzero("node-ttl", a.node_ttl)?,
                timeout: nonzero("redis-timeout", a.redis_timeout)?,
            });
        }
        c.admin = match a.admin.as_str() {
            "off" | "" => None,
            s => Some(
                s.parse()
                    .map_err(|_| format!("--admin {s:?}: expected HOST:PORT or off"))?,
            ),
        };
        c.allowed_origins = crate::proto::cors::Origins::parse(&a.allowed_origins)
            .map_err(|e| format!("--allowed-origins {e}"))?;
        c.admin_hosts = parse_admin_hosts(&a.admin_hosts)?;
        if c.admin.is_some_and(|x| x == c.listen && x.port() != 0) {
            return Err("--admin must not be the client --listen address".into());
        }
        Ok(c)
    }
}

/// `--admin-hosts`: comma-separated names, IP addresses (`[v6]`) or `*`.
fn parse_admin_hosts(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            let ok = h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:[]*".contains(&b));
            if ok {
                Ok(h.to_string())
            } else {
                Err(format!(
                    "--admin-hosts {h:?}: expected host names or addresses separated by commas"
                ))
            }
        })
        .collect()
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl ServeArgs {
    /// The effective configuration as TOML (what `--print-config` shows).
    pub fn to_toml(&self) -> String {
        toml::to_string(self)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

/// Parses the command line, filling `serve` options that no flag or
/// environment variable set from the `--config` TOML file. Unknown keys and
/// bad values are errors that name the key.
pub fn parse_cli_with_file(argv: Vec<std::ffi::OsString>) -> Result<Cli, CliError> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command()
        .try_get_matches_from(&argv)
        .map_err(CliError::Clap)?;
    let Some(("serve", sub)) = matches.subcommand() else {
        return Cli::from_arg_matches(&matches).map_err(CliError::Clap);
    };
    let Some(path) = sub.get_one::<PathBuf>("config") else {
        return Cli::from_arg_matches(&matches).map_err(CliError::Clap);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::File(format!("config file {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| CliError::File(format!("config file {}: {e}", path.display())))?;
    let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
    let mut extra: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in &table {
        let id = key.replace('-', "_");
        let known = cmd
            .get_arguments()
            .any(|a| a.get_id().as_str() == id && a.get_long().is_some());
        if !known || id == "config" || id == "print_config" {
            return Err(CliError::File(format!(
                "config file {}: unknown key {key:?}",
                path.display()
            )));
        }
        use clap::parser::ValueSource;
        if matches!(
            sub.value_source(&id),
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        ) {
            continue; // a flag or the environment wins over the file
        }
        let flag = format!("--{}", id.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => extra.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(v) => extra.push(format!("{flag}={v}").into()),
            toml::Value::Integer(v) => extra.push(format!("{flag}={v}").into()),
            toml::Value::Float(v) => extra.push(format!("{flag}={v}").into()),
            // A list option (`allowed-origins = ["https://a", "https://b"]`).
            toml::Value::Array(items) if is_list(&cmd, &id) => {
                let mut strings = Vec::with_capacity(items.len());
                for item in items {
                    match item.as_str() {
                        Some(s) if !s.contains(',') => strings.push(s),
                        _ => {
                            return Err(CliError::File(format!(
                                "config file {}: key {key:?}: expected an array of strings without commas",
                                path.display()
                            )))
                        }
                    }
                }
                if !strings.is_empty() {
                    extra.push(format!("{flag}={}", strings.join(",")).into());
                }
            }
            _ => {
                return Err(CliError::File(format!(
                    "config file {}: key {key:?}: expected a string, number or boolean{}",
                    path.display(),
                    if is_list(&cmd, &id) {
                        ", or an array of strings"
                    } else {
                        ""
                    }
                )))
            }
        }
    }
    let mut full = argv;
    full.extend(extra);
    Cli::try_parse_from(full).map_err(|e| {
        CliError::File(format!(
            "config file {} or flags: {}",
            path.display(),
            e.render()
        ))
    })
}

/// True if option `id` of `cmd` takes a list of values.
fn is_list(cmd: &clap::Command, id: &str) -> bool {
    cmd.get_arguments()
        .any(|a| a.get_id().as_str() == id && a.get_value_delimiter().is_some())
}

/// Why the command line (or the config file) was refused.
#[derive(Debug)]
pub enum CliError {
    /// From clap: also `--help` and `--version`, which `exit()` prints and exits 0 for.
    Clap(clap::Error),
    /// A problem with the `--config` file; the text names the file and key.
    File(String),
}

/// Parses a duration such as `500ms`, `1s`, `10m`, `24h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("bad duration {s:?}: {e} (examples: 500ms, 10s, 5m, 24h)"))
}

/// The value of `--hold-total-bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldTotal {
    /// A quarter of the memory ([`auto_hold_total`]).
    Auto,
    /// This many bytes.
    Bytes(usize),
}

/// Parses `--hold-total-bytes`: `auto` or a size of at least 64 KiB.
pub fn parse_total(s: &str) -> Result<HoldTotal, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(HoldTotal::Auto);
    }
    let n = parse_size(s)?;
    if n < 64 << 10 {
        return Err(format!(
            "{s:?} is too small: at least 64KiB (or auto, a quarter of the memory)"
        ));
    }
    Ok(HoldTotal::Bytes(n))
}

fn ser_total<S: serde::Serializer>(v: &HoldTotal, s: S) -> Result<S::Ok, S::Error> {
    match v {
        HoldTotal::Bytes(n) => s.serialize_str(&n.to_string()),
        HoldTotal::Auto => s.serialize_str("auto"),
    }
}

/// `--hold-total-bytes auto`: a quarter of the memory this process may use,
/// the smaller of the machine's (`MemTotal`) and the cgroup's limit (v2
/// `memory.max`, or v1 `memory.limit_in_bytes`), or 1 GiB when neither can be
/// read.
pub fn auto_hold_total() -> usize {
    let mem_total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        kb.checked_mul(1024)
    });
    // cgroup v2 ("max" when unlimited), else v1 (a huge number when unlimited,
    // which the minimum with MemTotal absorbs).
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| {
        std::fs::read_to_string(p)
            .ok()?
            .trim()
            .parse::<usize>()
            .ok()
    });
    let limit = match (mem_total, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => 4 << 30,
    };
    (limit / 4).max(64 << 10)
}

/// Parses a byte size such as `65536`, `64KiB`, `64KB`, `1MiB`, `1M` (K/M/G are powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("bad size {s:?} (examples: 65536, 64KiB, 1MiB)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("bad size unit in {s:?} (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A byte count for people: `512 B`, `64 KiB`, `1.5 MiB`, `3.87 GiB` (the
/// largest unit it reaches, with at most two decimals, trailing zeros cut).
pub fn format_size(n: usize) -> String {
    const UNITS: [(&str, usize); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    let Some((unit, size)) = UNITS.into_iter().find(|&(_, size)| n >= size) else {
        return format!("{n} B");
    };
    let text = format!("{:.2}", n as f64 / size as f64);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(64 << 10), "64 KiB");
        assert_eq!(format_size(1536 << 10), "1.5 MiB");
        assert_eq!(format_size((1 << 30) + (1 << 20)), "1 GiB");
        assert_eq!(format_size(4_155_000_000), "3.87 GiB");
        assert_eq!(format_size(2 << 40), "2 TiB");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert!(parse_size("").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn hold_totals() {
        assert_eq!(parse_total("auto"), Ok(HoldTotal::Auto));
        assert_eq!(parse_total("AUTO"), Ok(HoldTotal::Auto));
        assert_eq!(parse_total("64KiB"), Ok(HoldTotal::Bytes(64 << 10)));
        assert_eq!(parse_total("4GiB"), Ok(HoldTotal::Bytes(4 << 30)));
        assert!(parse_total("0").is_err());
        assert!(parse_total("1KiB").is_err());
        assert!(parse_total("lots").is_err());
        // A quarter of a real machine's memory: more than 64 KiB, less than all of it.
        let auto = auto_hold_total();
        assert!(auto >= 64 << 10, "{auto}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert!(parse_duration("soon").is_err());
    }
}
