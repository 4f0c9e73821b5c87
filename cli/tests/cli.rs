//! The `tether` command as a user meets it (issue 14): each bad input gives its exit code
//! and a message saying what is wrong; `pub`/`sub` report an unreachable or refusing server
//! promptly; `wss://` with a private CA works through `--ca-file`. Loopback only; every
//! process is bounded in time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TETHER: &str = env!("CARGO_BIN_EXE_tether");
/// No command in these tests may take longer (each is expected to take well under it).
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `tether args…` with `stdin`, killed after [`LIMIT`]; returns its output.
fn tether(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(TETHER)
        .args(args)
        .env_remove("TETHER_KEY")
        .env_remove("TETHER_KEYS")
        .env_remove("TETHER_TOKEN")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts tether");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("writes stdin");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("waits").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "tether {args:?} still running after {LIMIT:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts the exit code and that stderr contains `message`.
fn expect(output: &Output, code: i32, message: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(
        stderr.contains(message),
        "stderr should contain {message:?}: {stderr}"
    );
}

/// A `tether serve` on a free loopback port, stopped (SIGTERM, then kill) when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(extra: &[&str]) -> Serve {
        let mut args = vec![
            "serve",
            "--key",
            "app:app-secret",
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new(TETHER)
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts tether serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reads the first line");
        // "tether server on ws://127.0.0.1:PORT/ (…)"
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("ws://") || word.starts_with("wss://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        Serve { child, url }
    }

    /// Sends SIGTERM and returns the exit status and how long the server took to stop.
    fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success());
        loop {
            if let Some(status) = self.child.try_wait().expect("waits") {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < LIMIT, "serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
struct KillOnDrop(Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binds")
        .local_addr()
        .expect("address")
        .port()
}

/// A fresh directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates a scratch directory");
    dir
}

#[test]
fn token_refuses_bad_values_with_exit_code_2_and_says_why() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["token", "--key", "app:secret", "--client-id", ""],
            "--client-id \"\": ",
        ),
        (
            &[
                "token",
                "--key",
                "app:secret",
                "--client-id",
                "alice",
                "--ttl",
                "18446744073709551615",
            ],
            "--ttl 18446744073709551615: too large",
        ),
        (
            &[
                "token",
                "--key",
                "app:secret",
                "--client-id",
                "alice",
                "--cap",
                "chat:*=subscribe+post",
            ],
            "unknown operation \"post\"; valid operations: subscribe, publish, history",
        ),
        (
            &[
                "token",
                "--key",
                "app:secret",
                "--client-id",
                "alice",
                "--cap",
                "chat:*",
            ],
            "expected pattern=op+op (operations: subscribe, publish, history)",
        ),
        (
            &["token", "--key", "app:", "--client-id", "alice"],
            "a key's secret is empty",
        ),
        (
            &["token", "--key", "app", "--client-id", "alice"],
            "a key is name:secret",
        ),
    ];
    for (args, message) in cases {
        expect(&tether(args, b""), 2, message);
    }
    let good = tether(
        &[
            "token",
            "--key",
            "app:secret",
            "--client-id",
            "alice",
            "--ttl",
            "60",
        ],
        b"",
    );
    assert!(good.status.success());
    assert_eq!(
        String::from_utf8_lossy(&good.stdout).matches('.').count(),
        2,
        "a JWT"
    );
}

#[test]
fn serve_refuses_bad_keys_files_and_addresses_naming_them() {
    let dir = scratch("serve");
    let keys = dir.join("keys.txt");
    std::fs::write(&keys, "# keys\napp:one\n\nbroken-line\n").expect("writes");
    let duplicate = dir.join("duplicate.txt");
    std::fs::write(&duplicate, "app:one\napp:two\n").expect("writes");
    let keys_arg = keys.to_string_lossy().into_owned();
    let duplicate_arg = duplicate.to_string_lossy().into_owned();
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (
            vec!["serve", "--key", "app:"],
            2,
            "a key's secret is empty".into(),
        ),
        (
            vec!["serve", "--key", ":secret"],
            2,
            "a key's name is empty".into(),
        ),
        (
            vec!["serve", "--key", "app:one", "--key", "app:two"],
            2,
            "key \"app\" is given twice".into(),
        ),
        (
            vec!["serve", "--keys-file", &keys_arg],
            2,
            format!("{keys_arg}:4: a key is name:secret"),
        ),
        (
            vec!["serve", "--keys-file", &duplicate_arg],
            2,
            format!("{duplicate_arg}:2: key \"app\" is given twice"),
        ),
        (
            vec!["serve", "--keys-file", "/no/such/keys"],
            2,
            "keys file /no/such/keys: ".into(),
        ),
        (
            vec![
                "serve",
                "--key",
                "app:one",
                "--tls-cert",
                "/no/cert.pem",
                "--tls-key",
                "/no/key.pem",
            ],
            2,
            "TLS certificate /no/cert.pem: ".into(),
        ),
        (
            vec!["serve", "--key", "app:one", "--listen", "256.0.0.1:1"],
            1,
            "cannot listen on 256.0.0.1:1: ".into(),
        ),
    ];
    for (args, code, message) in &cases {
        expect(&tether(args, b""), *code, message);
    }
    // An address in use is named too.
    let busy = TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = busy.local_addr().expect("address").to_string();
    expect(
        &tether(&["serve", "--key", "app:one", "--listen", &address], b""),
        1,
        &format!("cannot listen on {address}: "),
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pub_and_sub_report_an_unreachable_or_refusing_server_promptly() {
    let refused = format!("ws://127.0.0.1:{}/", closed_port());
    for command in ["pub", "sub"] {
        let mut args = vec![command, "news"];
        if command == "pub" {
            args.push("hello");
        }
        args.extend(["--key", "app:app-secret", "--url", &refused]);
        let started = Instant::now();
        let output = tether(&args, b"");
        expect(
            &output,
            1,
            &format!("cannot connect to {refused}: Connection refused"),
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{command} took {:?}",
            started.elapsed()
        );
    }
    let output = tether(
        &[
            "pub",
            "news",
            "x",
            "--key",
            "a:b",
            "--url",
            "ws://no-such-host.invalid:7400/",
        ],
        b"",
    );
    expect(
        &output,
        1,
        "cannot connect to ws://no-such-host.invalid:7400/: ",
    );

    let serve = Serve::start(&[]);
    let wrong = tether(
        &["sub", "news", "--key", "app:wrong", "--url", &serve.url],
        b"",
    );
    expect(
        &wrong,
        1,
        "the server refused the connection: unknown key or wrong secret (40101 invalid_credentials)",
    );
    let wrong = tether(
        &["pub", "news", "x", "--key", "nobody:x", "--url", &serve.url],
        b"",
    );
    expect(&wrong, 1, "(40101 invalid_credentials)");
    expect(
        &tether(&["pub", "news", "x", "--url", &serve.url], b""),
        2,
        "give --key name:secret or --token",
    );
    expect(
        &tether(
            &[
                "pub",
                "news",
                "x",
                "--key",
                "app:app-secret",
                "--url",
                "http://127.0.0.1:1/",
            ],
            b"",
        ),
        2,
        "--url: unsupported URL",
    );
}

/// Reads lines from `reader` until one contains `wanted` (bounded by [`LIMIT`]).
fn wait_for_line(reader: &mut impl BufRead, wanted: &str) -> String {
    let started = Instant::now();
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).expect("reads");
        assert!(read > 0, "ended before {wanted:?}; saw: {seen}");
        if line.contains(wanted) {
            return line;
        }
        seen.push_str(&line);
        assert!(
            started.elapsed() < LIMIT,
            "no {wanted:?} in time; saw: {seen}"
        );
    }
}

#[test]
fn sub_prints_messages_published_with_a_name_and_from_stdin_then_stops_on_sigterm() {
    let serve = Serve::start(&[]);
    let mut sub = KillOnDrop(
        Command::new(TETHER)
            .args([
                "sub",
                "news",
                "--key",
                "app:app-secret",
                "--url",
                &serve.url,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts sub"),
    );
    let mut stderr = BufReader::new(sub.stderr.take().expect("stderr"));
    wait_for_line(&mut stderr, "subscribed to news");
    let published = tether(
        &[
            "pub",
            "news",
            "hello there",
            "--name",
            "greeting",
            "--key",
            "app:app-secret",
            "--url",
            &serve.url,
        ],
        b"",
    );
    assert!(published.status.success(), "{published:?}");
    let piped = tether(
        &[
            "pub",
            "news",
            "-",
            "--key",
            "app:app-secret",
            "--url",
            &serve.url,
        ],
        b"from stdin\n",
    );
    assert!(piped.status.success(), "{piped:?}");
    let mut stdout = BufReader::new(sub.stdout.take().expect("stdout"));
    let first = wait_for_line(&mut stdout, "hello there");
    assert!(
        first.contains(" news ") && first.contains(" greeting from app: "),
        "{first}"
    );
    let second = wait_for_line(&mut stdout, "from stdin");
    assert!(second.contains(" message from app: "), "{second}");
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(sub.id().to_string())
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = sub.try_wait().expect("waits") {
            break status;
        }
        assert!(started.elapsed() < LIMIT, "sub ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    assert!(rest.contains("SIGTERM: closing"), "{rest}");
}

#[test]
fn serve_stops_on_sigterm() {
    let serve = Serve::start(&[]);
    let (status, took) = serve.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Writes a CA and a `localhost` certificate it signed; returns (CA PEM, cert PEM, key PEM)
/// paths.
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("a CA");
    let server_key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&server_key, &ca)
        .expect("signed");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("writes");
    std::fs::write(&paths.1, server.pem()).expect("writes");
    std::fs::write(&paths.2, server_key.serialize_pem()).expect("writes");
    paths
}

#[test]
fn wss_with_a_private_ca_works_through_ca_file_and_is_refused_plainly_without_it() {
    let dir = scratch("wss");
    let (ca, cert, key) = private_ca(&dir);
    let serve = Serve::start(&[
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    assert!(serve.url.starts_with("wss://"), "{}", serve.url);
    let url = serve.url.replace("127.0.0.1", "localhost");
    let ca_arg = ca.to_string_lossy().into_owned();
    let trusted = tether(
        &[
            "pub",
            "news",
            "secure",
            "--key",
            "app:app-secret",
            "--url",
            &url,
            "--ca-file",
            &ca_arg,
        ],
        b"",
    );
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    // The system store does not know this CA: a plain certificate error, promptly.
    let untrusted = tether(
        &["pub", "news", "x", "--key", "app:app-secret", "--url", &url],
        b"",
    );
    expect(
        &untrusted,
        1,
        &format!("cannot connect to {url}: invalid peer certificate: UnknownIssuer"),
    );
    // A CA file that is not PEM is named, with the problem.
    let bogus = dir.join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").expect("writes");
    let bogus_arg = bogus.to_string_lossy().into_owned();
    expect(
        &tether(
            &[
                "pub",
                "news",
                "x",
                "--key",
                "app:app-secret",
                "--url",
                &url,
                "--ca-file",
                &bogus_arg,
            ],
            b"",
        ),
        2,
        &format!("--ca-file {bogus_arg}: no certificate in it"),
    );
    drop(serve);
    let _ = std::fs::remove_dir_all(dir);
}

/// `serve` on SIGTERM tells every connected client `server_shutting_down` before it exits:
/// it waits for each connection to close in order instead of exiting with frames queued or
/// bytes unread (which reset the connection: `sub` saw `transport_closed` in 4 runs of 20).
#[test]
fn serve_on_sigterm_tells_its_subscribers_before_exiting() {
    for round in 0..12 {
        let serve = Serve::start(&[]);
        let mut sub = KillOnDrop(
            Command::new(TETHER)
                .args([
                    "sub",
                    "news",
                    "--key",
                    "app:app-secret",
                    "--url",
                    &serve.url,
                ])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starts sub"),
        );
        let mut stderr = BufReader::new(sub.stderr.take().expect("stderr"));
        wait_for_line(&mut stderr, "subscribed to news");
        let (status, _) = serve.terminate();
        assert!(status.success(), "round {round}: {status:?}");
        let line = wait_for_line(&mut stderr, "Connected -> Disconnected");
        let _ = sub.kill();
        let _ = sub.wait();
        assert!(
            line.contains("server_shutting_down"),
            "round {round}: the subscriber was not told: {line}"
        );
    }
}

/// Issue 19, item 4: `serve --config` — a bad value names the file, line and key (exit 2);
/// an environment override is checked the same way; `--print-config` shows the effective
/// configuration (file, environment and options merged) with secrets masked.
#[test]
fn serve_config_file_errors_name_file_line_and_key_and_print_config_masks_secrets() {
    let dir = scratch("config");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:0\"\n\n[hub]\nmax_connections = -3\n",
    )
    .expect("writes");
    let bad_arg = bad.to_string_lossy().into_owned();
    expect(
        &tether(&["serve", "--config", &bad_arg, "--key", "a:b"], b""),
        2,
        &format!("{bad_arg}:4, key `hub.max_connections`"),
    );
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "[hub]\nsesion_ttl = \"5m\"\n").expect("writes");
    let unknown_arg = unknown.to_string_lossy().into_owned();
    expect(
        &tether(&["serve", "--config", &unknown_arg, "--key", "a:b"], b""),
        2,
        "unknown field `sesion_ttl`",
    );
    let good = dir.join("tether.toml");
    std::fs::write(
        &good,
        "[hub]\nsession_ttl = \"5m\"\n\n[[hub.keys]]\nname = \"app\"\nsecret = \"file-secret\"\n",
    )
    .expect("writes");
    let good_arg = good.to_string_lossy().into_owned();
    let output = Command::new(TETHER)
        .args([
            "serve",
            "--config",
            &good_arg,
            "--key",
            "cli:cli-secret",
            "--listen",
        ])
        .arg("127.0.0.1:7999")
        .args(["--print-config"])
        .env_remove("TETHER_KEYS")
        .env("TETHER__HUB__HEARTBEAT_INTERVAL", "20s")
        .output()
        .expect("runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{printed}");
    for expected in [
        "listen = \"127.0.0.1:7999\"",
        "session_ttl = \"5m\"",
        "heartbeat_interval = \"20s\"",
        "name = \"app\"",
        "name = \"cli\"",
    ] {
        assert!(printed.contains(expected), "{expected} in:\n{printed}");
    }
    assert!(
        !printed.contains("file-secret") && !printed.contains("cli-secret"),
        "{printed}"
    );
    let output = Command::new(TETHER)
        .args(["serve", "--config", &good_arg])
        .env("TETHER__HUB__SESSION_TTL", "soon")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("TETHER__HUB__SESSION_TTL (hub.session_ttl)"),
        "{stderr}"
    );
}

/// Issue 19, item 6: `tether revoke` calls the server's HTTP API; a wrong key or an
/// unreachable API is a run-time failure (exit 1) that says why.
#[test]
fn revoke_calls_the_http_api_and_reports_refusals() {
    let api_port = closed_port();
    let api = format!("127.0.0.1:{api_port}");
    let _serve = Serve::start(&["--api-listen", &api]);
    let url = format!("http://{api}");
    let done = tether(
        &[
            "revoke",
            "--api",
            &url,
            "--key",
            "app:app-secret",
            "--client-id",
            "alice",
        ],
        b"",
    );
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert_eq!(done.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("revoked: 0 connection(s) closed"),
        "{stdout}"
    );
    expect(
        &tether(
            &["revoke", "--api", &url, "--key", "app:wrong", "--all"],
            b"",
        ),
        1,
        "401 Unauthorized: invalid_credentials",
    );
    let closed = format!("http://127.0.0.1:{}", closed_port());
    expect(
        &tether(
            &[
                "revoke",
                "--api",
                &closed,
                "--key",
                "app:app-secret",
                "--all",
            ],
            b"",
        ),
        1,
        "/api/revoke: ",
    );
    expect(
        &tether(
            &[
                "revoke",
                "--api",
                &url,
                "--key",
                "app:app-secret",
                "--all",
                "--issued-before",
                "yesterday",
            ],
            b"",
        ),
        2,
        "--issued-before \"yesterday\"",
    );
}
