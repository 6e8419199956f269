//! The web page's browser tests (`web/tests/*.mjs`: Playwright driving
//! Debian's Chromium), run against a test server.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// The repository's `web/` folder.
pub fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

/// Runs `node tests/<script> <args…>` in `web/`; fails the test with its
/// output unless it passes, and returns what it printed.
pub async fn run_browser_test(script: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new("node")
        .arg(format!("tests/{script}"))
        .args(args)
        .current_dir(web_dir())
        .output()
        .await
        .expect("node (the test script installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test {script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("steps passed"), "{stdout}");
    stdout
}

/// A browser test that asks the Rust test to act midway: it prints a line
/// `@what` and waits for a line on its stdin once that is done.
pub struct BrowserTest {
    script: String,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    printed: String,
}

impl BrowserTest {
    /// Starts `node tests/<script> <args…>` in `web/`.
    pub fn spawn(script: &str, args: &[&str]) -> BrowserTest {
        let mut child = tokio::process::Command::new("node")
            .arg(format!("tests/{script}"))
            .args(args)
            .current_dir(web_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node (the test script installs it)");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        BrowserTest {
            script: script.to_string(),
            child,
            stdout,
            printed: String::new(),
        }
    }

    /// The next request of the script (`what` of its `@what` line), or
    /// `None` once it has ended.
    pub async fn request(&mut self) -> Option<String> {
        while let Ok(Some(line)) = self.stdout.next_line().await {
            if let Some(what) = line.strip_prefix('@') {
                return Some(what.to_string());
            }
            self.printed.push_str(&line);
            self.printed.push('\n');
        }
        None
    }

    /// Tells the script its request is done.
    pub async fn done(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin
            .write_all(b"done\n")
            .await
            .expect("writing to the browser test");
    }

    /// Waits for the script's end; fails the test unless it passed.
    pub async fn finish(mut self) -> String {
        while self.request().await.is_some() {}
        let status = self.child.wait().await.expect("waiting for node");
        assert!(
            status.success() && self.printed.contains("steps passed"),
            "the browser test {} failed:\n{}",
            self.script,
            self.printed
        );
        self.printed
    }
}
