//! The web page's session view in a real browser (Debian's Chromium
//! driven by Playwright, `web/tests/session.mjs`) on a real computer with
//! the mock agent: the desktop drawn by noVNC, a message answered with the
//! agent's steps shown live. Screenshots go to this test's output
//! directory. Needs root, the image, `node`, the page's npm packages and
//! `/usr/bin/chromium` (the test script installs them).

use std::path::Path;

use raworc_testkit::{Backend, TestApp};

const RAWORC: &str = env!("CARGO_BIN_EXE_raworc");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_page_shows_the_desktop_and_the_agents_work() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
    })
    .await;
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-session-screenshots");
    let out = tokio::process::Command::new("node")
        .arg("tests/session.mjs")
        .arg(&app.base)
        .arg("admin-password")
        .arg(&shots)
        .current_dir(&web)
        .output()
        .await
        .expect("node (the test script installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(shots.join("02-desktop.png").exists());
    app.stop().await;
}
