//! `raworc serve` as a child process, for tests that kill the control
//! plane the hard way (`kill -9`) and start it again.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{TestApp, TestDb};

/// The log of a [`ServerProcess`].
#[derive(Clone)]
pub struct ServerLog(std::sync::Arc<std::sync::Mutex<String>>);

impl ServerLog {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A `raworc serve` process.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Starts `raworc serve` on a random port over `db` with `args` added,
    /// and returns once it listens. Its log goes to the test's output and
    /// is kept ([`ServerProcess::log`]).
    pub fn start<S: AsRef<OsStr>>(raworc: &Path, db: &TestDb, args: &[S]) -> ServerProcess {
        ServerProcess::start_at(raworc, db, "127.0.0.1:0", args)
    }

    /// As [`ServerProcess::start`], listening on `bind` (a restarted
    /// server on the address its clients know).
    pub fn start_at<S: AsRef<OsStr>>(
        raworc: &Path,
        db: &TestDb,
        bind: &str,
        args: &[S],
    ) -> ServerProcess {
        let data_dir = db.dir.path().join("data");
        let mut child = Command::new(raworc)
            .arg("serve")
            .args(["--bind", bind, "--database-url", &db.url])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--admin-password", "admin-password"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting raworc serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[serve] {line}");
                if let Ok(mut kept) = kept.lock() {
                    kept.push_str(&line);
                    kept.push('\n');
                }
                if line.contains("Raworc is listening") {
                    let url = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("url=http://"))
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    let _ = tx.send(url);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(600))
            .ok()
            .flatten()
            .expect("raworc serve reports where it listens");
        ServerProcess { child, addr, log }
    }

    /// What the server logs, as it comes (readable after it has ended).
    pub fn log(&self) -> ServerLog {
        ServerLog(self.log.clone())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client of this server, logged in as admin.
    pub async fn app(&self, db: &TestDb) -> TestApp {
        TestApp::attach(self.addr, db.dir.path().join("data")).await
    }

    /// `kill -9`: no clean-up of any kind.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a graceful exit; its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("waiting for raworc serve")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
