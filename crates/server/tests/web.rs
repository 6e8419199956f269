//! The web page in a real browser: Debian's Chromium driven by Playwright
//! (`web/tests/ui.mjs`) against the real server — log in, a user's own
//! sessions only, a session created from the form, changes arriving live,
//! the API's errors shown, log out, an expired login. Screenshots of each
//! step go to this test's output directory. Needs `node`, the page's npm
//! packages (`npm ci` in `web/`) and `/usr/bin/chromium`, which the test
//! script installs.
//!
//! The admin pages likewise (`web/tests/admin.mjs`): operators created,
//! re-keyed, promoted and deleted from the page, the audit log filtered and
//! paged through the address, and a user-role operator refused.

use std::path::Path;

use raworc_testkit::web::run_browser_test;
use raworc_testkit::{Backend, StatusCode, TestApp};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_works_in_a_real_browser() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.admin_token.clone();
    // The page is served at / with its title.
    let page = app
        .client
        .get(format!("{}/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<title>Raworc</title>"));
    let r = app
        .post(
            "/api/v0/operators",
            Some(&t),
            json!({"user": "alice", "pass": "alice-password", "role": "user"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    app.session(&t, json!({"name": "admins-session"})).await;

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    let shots_arg = shots.to_string_lossy();
    run_browser_test(
        "ui.mjs",
        &[
            &app.base,
            "admin-password",
            "alice",
            "alice-password",
            &shots_arg,
        ],
    )
    .await;
    assert!(shots.join("01-wrong-password.png").exists());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_pages_work_in_a_real_browser() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.admin_token.clone();
    // More than one page (50) of audit entries, to page through.
    for i in 0..50 {
        let r = app
            .put(
                "/api/v0/operators/admin",
                Some(&t),
                json!({"description": format!("the first admin ({i})")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-admin-screenshots");
    let shots_arg = shots.to_string_lossy();
    run_browser_test("admin.mjs", &[&app.base, "admin-password", &shots_arg]).await;
    assert!(shots.join("01-operators.png").exists());
    // What the page did is in the store: bob is gone, his actions recorded.
    let r = app.get("/api/v0/operators/bob", Some(&t)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = app.get("/api/v0/audit?principal=bob", Some(&t)).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(2), "{:?}", r.body);
    app.stop().await;
}
