//! `tether serve` as a process, for what only a process shows: its open-file limit, and how
//! its accept loop behaves when the process is out of file descriptors (issue 13, defect 2).
//! Linux only (`/proc`, `ulimit` through `sh`); loopback only.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `tether serve` on a free loopback port, started through `sh` with `limits` (e.g.
/// `ulimit -Sn 256`) applied first; its stderr is collected.
struct Serve {
    child: Child,
    address: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    fn start(limits: &str) -> Serve {
        let script =
            format!("{limits}; exec \"$0\" serve --key app:app-secret --listen 127.0.0.1:0");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_tether"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts tether serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            collected.lock().expect("not poisoned").push_str(&text);
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reads the first line");
        // "tether server on ws://127.0.0.1:PORT/ (Ctrl-C to stop)"
        let address = line
            .split("ws://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Serve {
            child,
            address,
            stderr,
        }
    }

    /// The soft and hard limits on open files of the process.
    fn open_file_limits(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id()))
            .expect("reads /proc limits");
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .expect("an open-files line");
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields[3].to_owned(), fields[4].to_owned())
    }

    /// Stops the server and returns what it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        self.stderr.lock().expect("not poisoned").clone()
    }
}

#[test]
fn serve_raises_its_soft_open_file_limit_to_the_hard_limit() {
    let serve = Serve::start("ulimit -Sn 256");
    let (soft, hard) = serve.open_file_limits();
    serve.stop();
    assert_ne!(soft, "256", "the soft limit was not raised");
    assert_eq!(soft, hard);
}

/// Out of file descriptors, the accept loop logged "Too many open files" hundreds of times
/// (a 50 ms pause, every time); it backs off now, logs once per episode, and serves again
/// once descriptors are free.
#[test]
fn accept_errors_back_off_log_once_and_the_server_recovers() {
    let serve = Serve::start("ulimit -n 48");
    // Silent sockets until the server's descriptors run out, then two more seconds of it.
    let mut held = Vec::new();
    let start = Instant::now();
    while held.len() < 100 && start.elapsed() < Duration::from_secs(5) {
        if let Ok(socket) = TcpStream::connect(serve.address) {
            held.push(socket);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    drop(held);
    // The handshake deadline (5 s) frees the server's side of the silent sockets.
    std::thread::sleep(Duration::from_secs(6));
    let url = format!("ws://{}/", serve.address);
    let recovered = tungstenite::connect(url.as_str()).is_ok();
    let logs = serve.stop();
    let failures = logs.matches("accept failed").count();
    assert!(
        logs.contains("open-file limit is below the connection cap"),
        "warned about the limit: {logs}"
    );
    assert!(
        failures >= 1,
        "the server did run out of descriptors: {logs}"
    );
    assert!(
        failures <= 3,
        "{failures} accept-failure lines in ~2 s of errors: {logs}"
    );
    assert!(
        recovered,
        "the server accepts again once descriptors are free"
    );
}
