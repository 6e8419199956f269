//! The web page's session view in a real browser (Debian's Chromium
//! driven by Playwright, `web/tests/session.mjs`) on a real computer with
//! the mock agent: the desktop drawn by noVNC, a message answered with the
//! agent's steps shown live. Screenshots go to this test's output
//! directory. Needs root, the image, `node`, the page's npm packages and
//! `/usr/bin/chromium` (the test script installs them).

use std::path::Path;

use raworc_testkit::web::run_browser_test;
use raworc_testkit::{Backend, TestApp};

const RAWORC: &str = env!("CARGO_BIN_EXE_raworc");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_page_shows_the_desktop_and_the_agents_work() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
    })
    .await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-session-screenshots");
    let shots_arg = shots.to_string_lossy();
    run_browser_test("session.mjs", &[&app.base, "admin-password", &shots_arg]).await;
    assert!(shots.join("02-desktop.png").exists());
    app.stop().await;
}
