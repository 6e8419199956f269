//! The web page's session view in a real browser (Debian's Chromium
//! driven by Playwright, `web/tests/session.mjs` and `restart.mjs`) on
//! real computers with the mock agent: the desktop drawn by noVNC and
//! taken over, a message answered with the agent's steps shown live,
//! files, the lifecycle, remix and delete; and the page coming back by
//! itself after the server restarts. Screenshots go to this test's output
//! directory. Needs root, the image, `node`, the page's npm packages,
//! `/usr/bin/chromium` and tesseract (the test script installs them).

use std::path::Path;

use raworc_testkit::model::{ScriptedModel, Step};
use raworc_testkit::process::ServerProcess;
use raworc_testkit::web::{run_browser_test, BrowserTest};
use raworc_testkit::{Backend, TestApp, TestDb};
use serde_json::json;

const RAWORC: &str = env!("CARGO_BIN_EXE_raworc");
const KEY: &str = "sk-ant-web-test-key";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_page_comes_back_after_the_server_restarts() {
    // The answer after the restart comes from a scripted model: thinking,
    // a tool call, then the reply; the page shows each as it comes.
    let model = ScriptedModel::start(vec![
        Step::reply(
            vec![
                json!({"type": "thinking", "thinking": "The page asked for a command.", "signature": "sig"}),
                json!({"type": "tool_use", "name": "bash", "input": {"command": "echo after-the-restart"}}),
            ],
            "tool_use",
        ),
        Step::text("Done after the restart."),
    ])
    .await
    .with_key(KEY);
    let db = TestDb::new(Backend::Sqlite);
    let args = [
        raworc_testkit::computer::serve_args(),
        model.serve_anthropic_args(),
    ]
    .concat();
    let server = ServerProcess::start(Path::new(RAWORC), &db, &args);
    let addr = server.addr.to_string();
    let app = server.app(&db).await;
    let id = app.running_session(json!({"name": "restarted"})).await;

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-restart-screenshots");
    let shots_arg = shots.to_string_lossy();
    let base = format!("http://{addr}");
    let mut page = BrowserTest::spawn("restart.mjs", &[&base, "admin-password", &shots_arg, &id]);
    assert_eq!(page.request().await.as_deref(), Some("restart"));
    // A graceful stop (as for an upgrade), then the same address again.
    assert!(server.terminate().success());
    let server = ServerProcess::start_at(Path::new(RAWORC), &db, &addr, &args);
    page.done().await;
    page.finish().await;
    assert!(shots.join("02-after.png").exists());
    model.assert_no_violations();
    drop(server);
}
