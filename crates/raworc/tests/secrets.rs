//! Secrets at rest: a session's secrets reach its computer (files in a
//! tmpfs, the environment of commands) and nowhere else on this machine —
//! not the computers' disks, not a remix's layers or snapshots, not the
//! btrfs disk image, not the server's log. Real computers; needs root.

use std::path::Path;

use raworc_testkit::process::ServerProcess;
use raworc_testkit::scan::files_holding;
use raworc_testkit::{Backend, TestDb};
use serde_json::json;

const RAWORC: &str = env!("CARGO_BIN_EXE_raworc");
/// The secret's value: long and odd enough to be found nowhere by chance.
const SECRET: &str = "sk-test-7f3a9c1e-not-for-any-disk-b5d2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_live_in_computers_memory_and_nowhere_on_disk() {
    let db = TestDb::new(Backend::Sqlite);
    let images = raworc_testkit::computer::images_dir();
    // Disks on a (small) btrfs disk image, where remixes are snapshots.
    let args = [
        "--images-dir",
        images.to_str().unwrap(),
        "--disk-image-size",
        "1",
    ];
    let server = ServerProcess::start(Path::new(RAWORC), &db, &args);
    let app = server.app(&db).await;
    let token = app.admin_token.clone();
    let setup = "test \"$API_KEY\" = \"$(cat /session/secrets/API_KEY)\" && echo setup-saw-it";
    let id = app
        .session(
            &token,
            json!({"name": "keeper", "secrets": {"API_KEY": SECRET}, "setup": setup}),
        )
        .await;
    app.await_state(&token, &id, "running").await;
    // Inside: a 0600 file of the computer's user on a tmpfs, and the
    // environment of commands; setup saw both.
    let check = "stat -f -c %T /session/secrets; stat -c '%a %U' /session/secrets/API_KEY; \
                 cat /session/secrets/API_KEY; echo; echo \"$API_KEY\"; cat /session/code/setup.log";
    let expected = format!("tmpfs\n600 computer\n{SECRET}\n{SECRET}\nsetup-saw-it\n");
    assert_eq!(app.run(&token, &id, check).await, expected);
    // A copy the agent makes on purpose is the session's business; this
    // test looks for what Raworc itself leaves.

    // Remix of the running session (a snapshot), then close and restore.
    let child = app
        .remix(&token, &id, json!({"data": true, "code": true}))
        .await;
    app.await_state(&token, &child, "running").await;
    assert_eq!(app.run(&token, &child, check).await, expected);
    for session in [&id, &child] {
        app.close(&token, session).await;
    }
    app.restore(&token, &id).await;
    assert_eq!(app.run(&token, &id, check).await, expected);

    // A clean stop: computers stopped, the disk image unmounted.
    let log = server.log();
    assert!(server.terminate().success());
    // The last lines may still be on their way from the pipe.
    let log = raworc_testkit::computer::await_some("the whole log", 10, || async {
        let text = log.text();
        text.contains("shutting down").then_some(text)
    })
    .await;
    let data_dir = db.dir.path().join("data");
    assert!(
        data_dir.join("disks.btrfs").is_file(),
        "the disks were not on a disk image"
    );
    let holding = files_holding(&data_dir, SECRET.as_bytes());
    assert!(holding.is_empty(), "the secret is on disk in {holding:?}");
    assert!(!log.contains(SECRET), "the secret is in the server's log");
    // The scan itself finds what is there.
    std::fs::write(data_dir.join("probe"), format!("x{SECRET}y")).unwrap();
    assert_eq!(files_holding(&data_dir, SECRET.as_bytes()).len(), 1);
}
