//! The `switchboard` command: `serve` runs the gateway, `token` prints a client token.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use switchboard::auth::{self, Role};
use switchboard::config::{Command, Config, ServeArgs, TokenArgs};
use switchboard::server::Server;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc options (read once at start; see `switchboard::alloc`): unused dirty
/// pages go back to the kernel after 1 s (default 10 s, and only while the
/// process keeps allocating), without a second "muzzy" stage; a node has few
/// threads, so 4 arenas are plenty. `MALLOC_CONF`-style text, NUL-terminated.
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8] = b"dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:4\0";

fn main() -> ExitCode {
    let cli = match switchboard::config::parse_cli_with_file(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(switchboard::config::CliError::Clap(e)) => e.exit(),
        Err(switchboard::config::CliError::File(e)) => {
            eprintln!("switchboard: {}", e.trim_end());
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve(a) => serve(&a),
        Command::Token(a) => token(&a),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Shortest secret accepted, in bytes: HS256 needs a key of at least 256
/// bits (RFC 7518, section 3.2).
const MIN_SECRET_LEN: usize = 32;

/// Reads the secret from `file`, else from SWITCHBOARD_SECRET; `Ok(None)`
/// if neither is given. Trailing whitespace (spaces, tabs, CR, LF: the
/// newline an editor or `echo` leaves) is not part of it; anything before
/// is, byte for byte. Refuses a secret shorter than [`MIN_SECRET_LEN`] bytes.
fn given_secret(file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, String> {
    let (mut secret, from) = match file {
        Some(p) => (
            std::fs::read(p).map_err(|e| format!("reading secret file {}: {e}", p.display()))?,
            format!("the secret in {}", p.display()),
        ),
        None => match std::env::var("SWITCHBOARD_SECRET") {
            Ok(s) => (s.into_bytes(), "SWITCHBOARD_SECRET".to_string()),
            Err(_) => return Ok(None),
        },
    };
    while secret.last().is_some_and(|b| b.is_ascii_whitespace()) {
        secret.pop();
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "{from} is {} bytes long (after dropping trailing whitespace); HS256 needs at \
             least {MIN_SECRET_LEN} (256 bits, RFC 7518 3.2): make one with \
             `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`",
            secret.len()
        ));
    }
    Ok(Some(secret))
}

/// [`given_secret`], which must be given.
fn load_secret(file: Option<&std::path::Path>) -> Result<Vec<u8>, String> {
    given_secret(file)?.ok_or_else(|| {
        "no secret: pass --secret-file FILE, set SWITCHBOARD_SECRET, or use --dev".into()
    })
}

fn token(a: &TokenArgs) -> ExitCode {
    let secret = match load_secret(a.secret_file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchboard token: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(role) = Role::parse(&a.role) else {
        eprintln!(
            "switchboard token: --role must be agent or console, not {:?}",
            a.role
        );
        return ExitCode::from(2);
    };
    match auth::sign(
        &secret,
        &a.account,
        &a.client,
        role,
        now_secs(),
        a.ttl.as_secs(),
    ) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard token: {}", e.message());
            ExitCode::from(2)
        }
    }
}

fn serve(a: &ServeArgs) -> ExitCode {
    if a.print_config {
        print!("{}", a.to_toml());
        return match Config::from_args(a) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchboard serve: {e}");
                ExitCode::from(2)
            }
        };
    }
    let _ = simplelog::TermLogger::init(
        a.log_level,
        simplelog::ConfigBuilder::new()
            .set_time_format_rfc3339()
            .set_thread_level(log::LevelFilter::Off)
            .set_target_level(log::LevelFilter::Off)
            .build(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    );
    let config = match Config::from_args(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard serve: {e}");
            return ExitCode::from(2);
        }
    };
    // With --dev, a secret that is given (file or environment) wins over a
    // random one, so more dev clients can be minted with `switchboard token`.
    let (secret, random) = match given_secret(a.secret_file.as_deref()) {
        Ok(Some(s)) => (s, false),
        Ok(None) if a.dev => {
            let mut s = [0u8; 32];
            for chunk in s.chunks_mut(8) {
                chunk.copy_from_slice(&switchboard::ids::random_u64().to_le_bytes());
            }
            let hex = s.iter().map(|b| format!("{b:02x}")).collect::<String>();
            (hex.into_bytes(), true)
        }
        Ok(None) => {
            eprintln!("switchboard serve: no secret: pass --secret-file FILE, set SWITCHBOARD_SECRET, or use --dev");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("switchboard serve: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::start(config.clone(), &secret) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchboard serve: cannot start on {}: {e}", config.listen);
            return ExitCode::from(1);
        }
    };
    let addr = server.local_addr();
    install_panic_hook();
    let admin = match config.admin.map(|a| server.start_admin(a)) {
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            eprintln!(
                "switchboard serve: cannot listen on admin address {:?}: {e}",
                config.admin
            );
            return ExitCode::from(1);
        }
        None => None,
    };
    if let Err(e) = watch_signals(server.shared().clone()) {
        eprintln!("switchboard serve: cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    log::info!(
        "node {} listening on {addr} with {} workers; retained messages limited to {} in all (--hold-total-bytes)",
        config.node_id,
        config.workers,
        switchboard::config::format_size(config.hold_total_bytes)
    );
    println!("switchboard listening on http://{addr}");
    if let Some(a) = admin {
        log::info!("admin listening on {a}");
        println!("switchboard admin on http://{a}");
    }
    if a.dev {
        let day = 24 * 3600;
        let agent = auth::sign(&secret, "demo", "agent-1", Role::Agent, now_secs(), day)
            .unwrap_or_default();
        let console = auth::sign(&secret, "demo", "console-1", Role::Console, now_secs(), day)
            .unwrap_or_default();
        println!();
        if random {
            println!(
                "dev mode: a random secret for this run; tokens valid for 24h in account \"demo\":"
            );
        } else {
            println!(
                "dev mode: the given secret; tokens valid for 24h in account \"demo\" \
                 (`switchboard token` with the same secret mints more):"
            );
        }
        println!("  agent-1   (agent):   {agent}");
        println!("  console-1 (console): {console}");
        println!();
        println!("receive as agent-1:");
        println!("  curl -N -H 'Authorization: Bearer {agent}' http://{addr}/v1/receive");
        println!("send from console-1 to agent-1:");
        println!("  curl -X POST -H 'Authorization: Bearer {console}' --data 'hello agent' http://{addr}/v1/send/agent-1");
        println!("list the account's clients:");
        println!("  curl -H 'Authorization: Bearer {console}' http://{addr}/v1/clients");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    server.join();
    log::info!("node {} stopped", config.node_id);
    ExitCode::SUCCESS
}

/// Logs panics (with a backtrace) through the logger, so they land next to the session's other lines.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("?");
        let bt = std::backtrace::Backtrace::force_capture();
        log::error!("panic in thread {name}: {info}\n{bt}");
    }));
}

/// First SIGTERM/SIGINT: drain. A second one: exit at once.
fn watch_signals(shared: std::sync::Arc<switchboard::server::Shared>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                if sig == SIGHUP {
                    match &shared.tls {
                        Some(t) => match t.reload() {
                            Ok(()) => log::info!("SIGHUP: TLS certificate and key reloaded; open connections keep theirs"),
                            Err(e) => log::error!("SIGHUP: TLS reload failed, keeping the old certificate: {e}"),
                        },
                        None => log::info!("SIGHUP: nothing to reload (no TLS)"),
                    }
                    continue;
                }
                seen += 1;
                if seen == 1 {
                    log::info!(
                        "signal {sig}: draining over {:?}; send it again to exit at once",
                        shared.config.drain_timeout
                    );
                    switchboard::server::drain(&shared);
                } else {
                    log::warn!("signal {sig} again: exiting now");
                    std::process::exit(1);
                }
            }
        })?;
    Ok(())
}
