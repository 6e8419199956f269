//! The web page's browser tests (`web/tests/*.mjs`: Playwright driving
//! Debian's Chromium), run against a test server.

use std::path::PathBuf;

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
