//! Tests of the configuration layers (flag > environment > `--config` file >
//! default) through `switchboard serve --print-config`, of config-file errors
//! (exit status 2, naming the key or file), and of `--help`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "switchboard-config-test-{tag}-{}-{}",
            std::process::id(),
            switchboard::ids::random_u64()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the binary with `args` and exactly the `SWITCHBOARD_*` variables in `env`.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run switchboard")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `serve --print-config` with `extra` flags, `env`, and an optional file; returns the parsed TOML.
fn effective(extra: &[&str], env: &[(&str, &str)], file: Option<&Path>) -> toml::Table {
    let mut args = vec!["serve", "--print-config"];
    let f;
    if let Some(p) = file {
        f = p.to_string_lossy().into_owned();
        args.push("--config");
        args.push(&f);
    }
    args.extend_from_slice(extra);
    let o = run(&args, env);
    assert!(
        o.status.success(),
        "{args:?} {env:?}: status {:?}, stderr {}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
        .parse()
        .unwrap_or_else(|e| panic!("--print-config output is not TOML: {e}\n{}", stdout(&o)))
}

fn heartbeat(t: &toml::Table) -> &str {
    t["heartbeat"].as_str().expect("heartbeat is a string")
}

#[test]
fn precedence_flag_env_file_default() {
    let dir = TempDir::new("precedence");
    let file = dir.file("sb.toml", "heartbeat = \"5s\"\n");
    let env = [("SWITCHBOARD_HEARTBEAT", "7s")];
    let flag = ["--heartbeat", "9s"];

    // Each layer alone.
    assert_eq!(heartbeat(&effective(&[], &[], None)), "1m", "default");
    assert_eq!(heartbeat(&effective(&[], &[], Some(&file))), "5s", "file");
    assert_eq!(heartbeat(&effective(&[], &env, None)), "7s", "env");
    assert_eq!(heartbeat(&effective(&flag, &[], None)), "9s", "flag");
    // Pairs and all three.
    assert_eq!(
        heartbeat(&effective(&[], &env, Some(&file))),
        "7s",
        "env > file"
    );
    assert_eq!(
        heartbeat(&effective(&flag, &[], Some(&file))),
        "9s",
        "flag > file"
    );
    assert_eq!(heartbeat(&effective(&flag, &env, None)), "9s", "flag > env");
    assert_eq!(
        heartbeat(&effective(&flag, &env, Some(&file))),
        "9s",
        "flag > env > file"
    );
    // The config file itself may come from the environment.
    let f = file.to_string_lossy().into_owned();
    let t = effective(&[], &[("SWITCHBOARD_CONFIG", &f)], None);
    assert_eq!(heartbeat(&t), "5s", "SWITCHBOARD_CONFIG");
}

#[test]
fn file_sets_every_kind_of_value_and_other_keys_keep_defaults() {
    let dir = TempDir::new("kinds");
    let file = dir.file(
        "sb.toml",
        "# a comment\n\
         listen = \"127.0.0.1:18080\"\n\
         workers = 3\n\
         shard-by = \"client\"\n\
         dev = true\n\
         node-id = \"edge-1\"\n\
         hold_max_messages = 42\n\
         max-message = \"128KiB\"\n\
         drain-timeout = \"45s\"\n\
         admin = \"off\"\n\
         log-level = \"debug\"\n",
    );
    let t = effective(&[], &[], Some(&file));
    assert_eq!(t["listen"].as_str(), Some("127.0.0.1:18080"));
    assert_eq!(t["workers"].as_integer(), Some(3));
    assert_eq!(t["shard-by"].as_str(), Some("client"));
    assert_eq!(t["dev"].as_bool(), Some(true));
    assert_eq!(t["node-id"].as_str(), Some("edge-1"));
    assert_eq!(
        t["hold-max-messages"].as_integer(),
        Some(42),
        "underscore key"
    );
    assert_eq!(t["max-message"].as_integer(), Some(128 * 1024));
    assert_eq!(t["drain-timeout"].as_str(), Some("45s"));
    assert_eq!(t["admin"].as_str(), Some("off"));
    assert_eq!(
        t["log-level"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("debug")
    );
    // Untouched keys keep their defaults.
    let d = effective(&[], &[], None);
    for key in [
        "heartbeat",
        "hold",
        "idle-timeout",
        "body-timeout",
        "send-lifetime",
    ] {
        assert_eq!(t[key], d[key], "{key}");
    }
    // A flag still wins over a file value of another kind.
    let t = effective(
        &["--workers", "5", "--admin", "127.0.0.1:9999"],
        &[],
        Some(&file),
    );
    assert_eq!(t["workers"].as_integer(), Some(5));
    assert_eq!(t["admin"].as_str(), Some("127.0.0.1:9999"));
}

#[test]
fn print_config_round_trips_as_a_config_file() {
    let dir = TempDir::new("roundtrip");
    let first = effective(
        &["--heartbeat", "12s", "--workers", "2", "--hold", "90s"],
        &[],
        None,
    );
    let file = dir.file("sb.toml", &toml::to_string(&first).unwrap());
    let second = effective(&[], &[], Some(&file));
    assert_eq!(first, second);
}

/// Runs `serve --config <file> --print-config` and asserts exit status 2 with
/// stderr containing every one of `needles`.
fn expect_file_error(text: &str, needles: &[&str]) -> String {
    let dir = TempDir::new("bad");
    let file = dir.file("bad.toml", text);
    let f = file.to_string_lossy().into_owned();
    let o = run(&["serve", "--config", &f, "--print-config"], &[]);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{text:?}: status {:?}, stderr {err}",
        o.status
    );
    for n in needles {
        assert!(
            err.contains(n),
            "{text:?}: stderr does not name {n:?}: {err}"
        );
    }
    assert!(
        err.contains(&f),
        "{text:?}: stderr does not name the file: {err}"
    );
    assert!(
        stdout(&o).is_empty(),
        "printed a config anyway: {}",
        stdout(&o)
    );
    err
}

#[test]
fn unknown_key_is_refused_naming_it() {
    expect_file_error("heartbeat = \"5s\"\nheartbeet = \"5s\"\n", &["heartbeet"]);
    // Keys that are flags but not settings are unknown too.
    expect_file_error("print-config = true\n", &["print-config"]);
    expect_file_error("config = \"/etc/other.toml\"\n", &["config"]);
}

#[test]
fn bad_value_is_refused_naming_the_flag() {
    expect_file_error("heartbeat = \"soon\"\n", &["--heartbeat", "soon"]);
    expect_file_error("workers = \"many\"\n", &["--workers"]);
    expect_file_error("max-message = \"12XB\"\n", &["--max-message"]);
    expect_file_error("listen = \"not an address\"\n", &["--listen"]);
    // An enumerated value: the error names the flag, the value and the choices.
    expect_file_error(
        "shard-by = \"region\"\n",
        &["--shard-by", "region", "account", "client"],
    );
}

#[test]
fn table_and_array_values_are_refused() {
    expect_file_error("[heartbeat]\nevery = \"5s\"\n", &["heartbeat"]);
    expect_file_error("heartbeat = { every = \"5s\" }\n", &["heartbeat"]);
    expect_file_error("workers = [1, 2]\n", &["workers"]);
}

#[test]
fn allowed_origins_come_from_flag_env_and_file_array() {
    let origins = |t: &toml::Table| -> Vec<String> {
        t["allowed-origins"]
            .as_array()
            .expect("allowed-origins is an array")
            .iter()
            .map(|v| v.as_str().expect("a string").to_string())
            .collect()
    };
    let dir = TempDir::new("origins");
    let file = dir.file(
        "sb.toml",
        "allowed-origins = [\"https://console.example.com\", \"http://127.0.0.1:8000\"]\n",
    );
    let env = [(
        "SWITCHBOARD_ALLOWED_ORIGINS",
        "https://a.example,https://b.example",
    )];
    let flag = ["--allowed-origins", "*"];
    assert!(
        origins(&effective(&[], &[], None)).is_empty(),
        "default: none"
    );
    assert_eq!(
        origins(&effective(&[], &[], Some(&file))),
        ["https://console.example.com", "http://127.0.0.1:8000"]
    );
    assert_eq!(
        origins(&effective(&[], &env, Some(&file))),
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(origins(&effective(&flag, &env, Some(&file))), ["*"]);
    // Repeated flags and commas add up.
    let t = effective(
        &[
            "--allowed-origins",
            "https://a,https://b",
            "--allowed-origins",
            "https://c",
        ],
        &[],
        None,
    );
    assert_eq!(origins(&t), ["https://a", "https://b", "https://c"]);
    // An empty array is the default; round trip through --print-config.
    let empty = dir.file("empty.toml", "allowed-origins = []\n");
    assert!(origins(&effective(&[], &[], Some(&empty))).is_empty());
    let again = dir.file("again.toml", &toml::to_string(&t).unwrap());
    assert_eq!(effective(&[], &[], Some(&again)), t);
    // Not origins: refused at start, naming the flag and the value.
    for bad in [
        "https://console.example.com/",
        "console.example.com",
        "*,https://a",
    ] {
        let o = run(
            &["serve", "--dev", "--allowed-origins", bad, "--print-config"],
            &[],
        );
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--allowed-origins"),
            "{bad}: {}",
            stderr(&o)
        );
    }
    expect_file_error("allowed-origins = [1]\n", &["allowed-origins"]);
    let bad = dir.file("bad.toml", "allowed-origins = \"https://a/\"\n");
    let f = bad.to_string_lossy().into_owned();
    let o = run(&["serve", "--config", &f, "--print-config"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--allowed-origins"), "{}", stderr(&o));
    let o = run(&["serve", "--help"], &[]);
    assert!(
        stdout(&o).contains("SWITCHBOARD_ALLOWED_ORIGINS"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn invalid_toml_is_refused() {
    expect_file_error("heartbeat = \n", &[]);
}

#[test]
fn missing_config_file_is_refused_naming_it() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("does-not-exist.toml");
    let p = path.to_string_lossy().into_owned();
    let o = run(&["serve", "--config", &p, "--print-config"], &[]);
    assert_eq!(o.status.code(), Some(2), "stderr {}", stderr(&o));
    assert!(
        stderr(&o).contains(&p),
        "stderr does not name {p}: {}",
        stderr(&o)
    );
    // Also when serving for real (not just printing).
    let o = run(
        &[
            "serve",
            "--config",
            &p,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "stderr {}", stderr(&o));
    assert!(stderr(&o).contains(&p));
}

#[test]
fn invalid_combined_values_are_status_2() {
    // Values that parse but fail validation (Config::from_args) also give 2.
    let o = run(&["serve", "--print-config", "--heartbeat", "0s"], &[]);
    assert_eq!(o.status.code(), Some(2), "stderr {}", stderr(&o));
    assert!(stderr(&o).contains("--heartbeat"), "{}", stderr(&o));
    let o = run(&["serve", "--print-config", "--heartbeat", "soon"], &[]);
    assert_eq!(o.status.code(), Some(2), "stderr {}", stderr(&o));
    assert!(stderr(&o).contains("--heartbeat"), "{}", stderr(&o));
    let o = run(
        &["serve", "--print-config"],
        &[("SWITCHBOARD_HEARTBEAT", "soon")],
    );
    assert_eq!(o.status.code(), Some(2), "stderr {}", stderr(&o));
}

#[test]
fn help_lists_every_option_and_exits_0() {
    let o = run(&["serve", "--help"], &[]);
    assert_eq!(o.status.code(), Some(0), "stderr {}", stderr(&o));
    let help = stdout(&o);
    for opt in [
        "--config",
        "--print-config",
        "--listen",
        "--workers",
        "--shard-by",
        "--secret-file",
        "--dev",
        "--node-id",
        "--heartbeat",
        "--hold",
        "--hold-max-messages",
        "--hold-max-bytes",
        "--conversation-ttl",
        "--max-message",
        "--max-outbound",
        "--send-buffer",
        "--max-connections",
        "--max-unauthenticated",
        "--max-new-connections-per-address",
        "--handshake-timeout",
        "--body-timeout",
        "--idle-timeout",
        "--keepalive-idle",
        "--keepalive-interval",
        "--keepalive-count",
        "--user-timeout",
        "--drain-timeout",
        "--admin",
        "--admin-hosts",
        "--send-lifetime",
        "--log-level",
        "--log-throttle",
        "--allowed-origins",
    ] {
        assert!(
            help.contains(&format!("{opt} ")) || help.contains(&format!("{opt}\n")),
            "--help does not list {opt}:\n{help}"
        );
    }
    // Every key --print-config shows is a documented option.
    let t = effective(&[], &[], None);
    for key in t.keys() {
        assert!(
            help.contains(&format!("--{key}")),
            "--help does not list --{key}"
        );
    }
    // Each setting names its environment variable.
    assert!(help.contains("SWITCHBOARD_HEARTBEAT"), "{help}");
    assert!(help.contains("SWITCHBOARD_DRAIN_TIMEOUT"), "{help}");
    let o = run(&["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("serve") && stdout(&o).contains("token"));
}

#[test]
fn version_flag_prints_the_build_version() {
    let o = run(&["--version"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let v = stdout(&o);
    let v = v
        .trim()
        .strip_prefix("switchboard ")
        .expect("switchboard <version>");
    assert!(v.contains('+') && v.ends_with('Z'), "{v}");
}

#[test]
fn deploy_sample_config_has_every_setting_at_its_default() {
    let sample_path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/switchboard.toml");
    let sample = std::fs::read_to_string(sample_path).expect("deploy/switchboard.toml");
    // The shipped file (all commented out) changes nothing.
    let defaults = effective(&[], &[], None);
    assert_eq!(effective(&[], &[], Some(Path::new(sample_path))), defaults);
    // Uncommenting every `# key = value` line (except settings without a
    // default) still gives the defaults, and covers every printed setting.
    let no_default = ["node-id", "secret-file", "redis", "tls-cert", "tls-key"];
    let mut text = String::new();
    let mut keys = Vec::new();
    for line in sample.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((k, _)) = rest.split_once(" = ") else {
            continue;
        };
        if k.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !no_default.contains(&k) {
            text.push_str(rest);
            text.push('\n');
            keys.push(k.to_string());
        }
    }
    for key in defaults.keys() {
        assert!(keys.contains(key), "deploy/switchboard.toml lacks {key}");
    }
    let dir = TempDir::new("sample");
    let file = dir.file("sample.toml", &text);
    assert_eq!(
        effective(&[], &[], Some(&file)),
        defaults,
        "uncommented sample:\n{text}"
    );
}

/// Values clap parses but the server refuses (out of range) exit 2 and name the flag.
#[test]
fn out_of_range_values_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--send-buffer", "2GiB"),
        ("--max-message", "0"),
        ("--heartbeat", "0s"),
    ] {
        let o = run(&["serve", "--dev", flag, value, "--print-config"], &[]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(flag),
            "{flag} {value}: stderr does not name it: {}",
            stderr(&o)
        );
    }
    let o = run(
        &[
            "serve",
            "--dev",
            "--admin-hosts",
            "ok.example,bad/host",
            "--print-config",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--admin-hosts"), "{}", stderr(&o));
    let o = run(
        &["serve", "--dev", "--print-config"],
        &[("SWITCHBOARD_ADMIN_HOSTS", "a.example, b.example")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("admin-hosts = \"a.example, b.example\""),
        "{}",
        stdout(&o)
    );
    let o = run(
        &["serve", "--dev", "--send-buffer", "64KiB", "--print-config"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("send-buffer = 65536"), "{}", stdout(&o));
}

/// A secret shorter than 32 bytes (after its trailing whitespace, which is
/// not part of it) is refused at start, from the file or the environment,
/// for `serve` (with or without `--dev`) and `token`.
#[test]
fn short_secrets_are_refused_at_start() {
    let dir = TempDir::new("short-secret");
    let short = dir.file("short", &format!("{}\n", "s".repeat(31)));
    let padded = dir.file("padded", &format!("{}  \r\n\n", "s".repeat(31)));
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    for file in [&short, &padded] {
        let f = path(file);
        for args in [
            vec![
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "off",
                "--secret-file",
                &f,
            ],
            vec![
                "serve",
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "off",
                "--secret-file",
                &f,
            ],
            vec![
                "token",
                "--secret-file",
                &f,
                "--account",
                "a",
                "--client",
                "c",
            ],
        ] {
            let o = run(&args, &[]);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains("31 bytes") && stderr(&o).contains("at least 32"),
                "{args:?}: {}",
                stderr(&o)
            );
        }
    }
    let o = run(
        &["serve", "--listen", "127.0.0.1:0", "--admin", "off"],
        &[("SWITCHBOARD_SECRET", "too-short")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("SWITCHBOARD_SECRET is 9 bytes"),
        "{}",
        stderr(&o)
    );
    // 32 bytes and a trailing newline: accepted, and the newline is not signed with.
    let ok = dir.file("ok", &format!("{}\n", "k".repeat(32)));
    let o = run(
        &[
            "token",
            "--secret-file",
            &path(&ok),
            "--account",
            "a",
            "--client",
            "c",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let tok = stdout(&o);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let v = switchboard::auth::Verifier::new("k".repeat(32).as_bytes());
    assert!(v.verify(tok.trim(), now).is_ok(), "{tok}");
}

/// `serve --dev` with a secret given (file or environment) uses it: the
/// tokens it prints verify with that secret, so `switchboard token` can mint
/// a third dev client. Without one it says it made a random secret.
#[test]
fn dev_mode_uses_a_given_secret() {
    use std::io::BufRead;
    let dir = TempDir::new("dev-secret");
    let secret = "dev-secret-0123456789abcdef0123456789";
    let file = dir.file("secret", &format!("{secret}\n"));
    let f = file.to_string_lossy().into_owned();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], bool);
    let cases: [Case; 3] = [
        (&["--secret-file", &f], &[], true),
        (&[], &[("SWITCHBOARD_SECRET", secret)], true),
        (&[], &[], false),
    ];
    for (args, env, given) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
        ]);
        cmd.args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SWITCHBOARD_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn switchboard");
        let out = child.stdout.take().expect("stdout");
        let mut said = String::new();
        let mut agent = None;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("dev mode:") {
                said = line.clone();
            }
            if let Some(t) = line.trim().strip_prefix("agent-1   (agent):") {
                agent = Some(t.trim().to_string());
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let agent = agent.unwrap_or_else(|| panic!("{args:?} {env:?}: no agent token printed"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let verifies = switchboard::auth::Verifier::new(secret.as_bytes())
            .verify(&agent, now)
            .is_ok();
        assert_eq!(verifies, given, "{args:?} {env:?}: {said}");
        assert_eq!(said.contains("random"), !given, "{said}");
    }
}
