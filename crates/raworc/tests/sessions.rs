//! Sessions with real computers, driven through the HTTP API only: the
//! operator brings computers up and down as sessions move through their
//! lifecycle, and the direct computer API acts on them. Needs root.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use raworc_testkit::computer::{await_some, cgroup_dirs, cgroup_file, Image};
use raworc_testkit::{Backend, StatusCode, TestApp};
use serde_json::{json, Value};

const RAWORC: &str = env!("CARGO_BIN_EXE_raworc");

async fn app() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC))
    })
    .await
}

async fn act(app: &TestApp, token: &str, id: &str, input: Value) -> Value {
    let r = app
        .post(
            &format!("/api/v0/sessions/{id}/computer"),
            Some(token),
            input.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{input}: {:?}", r.body);
    r.body
}

/// The region (around the screen's centre) the click test watches.
const WATCH: (u32, u32, u32, u32) = (500, 380, 260, 220);

async fn watched(app: &TestApp, token: &str, id: &str) -> Vec<u8> {
    app.screenshot(token, id)
        .await
        .region(WATCH.0, WATCH.1, WATCH.2, WATCH.3)
}

/// The watched region once two screenshots in a row agree on it.
async fn settled(app: &TestApp, token: &str, id: &str) -> Vec<u8> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = watched(app, token, id).await;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let now = watched(app, token, id).await;
        if now == last {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: the screen to settle"
        );
        last = now;
    }
}

/// Pauses (`paused`) or resumes (`running`) session `id`.
async fn set_state(app: &TestApp, token: &str, id: &str, state: &str) {
    let r = app
        .put(
            &format!("/api/v0/sessions/{id}/state"),
            Some(token),
            json!({ "state": state }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{state}: {:?}", r.body);
}

/// Waits until every process of computer `id` is frozen (cgroup v1 or v2).
async fn await_frozen(id: &str) {
    await_some("the computer to freeze", 15, || async {
        let v1 = cgroup_file(id, "freezer.state").map(|s| s.trim() == "FROZEN");
        let v2 = cgroup_file(id, "cgroup.events").map(|s| s.contains("frozen 1"));
        v1.or(v2).unwrap_or(false).then_some(())
    })
    .await;
}

/// Waits until computer `id` runs commands again.
async fn await_awake(app: &TestApp, token: &str, id: &str) {
    await_some("the computer to answer again", 15, || async {
        let r = app.exec(token, id, "echo awake", 30).await;
        (r.status == StatusCode::OK && r.body["stdout"] == "awake\n").then_some(())
    })
    .await;
}

fn computer_dir(app: &TestApp, id: &str) -> PathBuf {
    app.data_dir.join("computers").join(id)
}

/// Whether any cgroup of computer `id` is left on this machine.
fn cgroup_left(id: &str) -> bool {
    !cgroup_dirs(id).is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lives_its_whole_life_on_a_real_computer() {
    let app = app().await;
    let token = app.operator("dev", "user").await;
    let other = app.operator("eve", "user").await;
    let id = app
        .session(
            &token,
            json!({
                "name": "life",
                "instructions": "Be brief.",
                "setup": "echo ran >> /session/data/setup-runs\n",
                "secrets": {"API_KEY": "k-123"}
            }),
        )
        .await;
    let s = app.await_state(&token, &id, "running").await;
    assert!(s["error"].is_null(), "{s:?}");

    // Commands: the computer's user, in /session, with secrets and setup done.
    let out = app.run(&token,
        &id,
        "id -u; pwd; echo \"$API_KEY\"; cat /session/code/instructions.md; echo; cat /session/data/setup-runs")
    .await;
    assert_eq!(out, "1000\n/session\nk-123\nBe brief.\nran\n");
    let failed = app
        .exec(&token, &id, "echo out; echo err >&2; exit 7", 30)
        .await;
    assert_eq!(failed.status, StatusCode::OK);
    assert_eq!(
        (
            &failed.body["exit_code"],
            &failed.body["stdout"],
            &failed.body["stderr"]
        ),
        (&json!(7), &json!("out\n"), &json!("err\n"))
    );

    // Files, both ways.
    let path = format!("/api/v0/sessions/{id}/files/session/data/notes/a b.txt");
    let put = app
        .client
        .put(format!("{}{path}", app.base))
        .bearer_auth(&token)
        .body("kept ✓")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let got = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap(), "kept ✓".as_bytes());
    let missing = app
        .get(
            &format!("/api/v0/sessions/{id}/files/nope/missing"),
            Some(&token),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{:?}", missing.body);

    // Someone else's session does not exist for them.
    for r in [
        app.get(&format!("/api/v0/sessions/{id}/screenshot"), Some(&other))
            .await,
        app.exec(&other, &id, "true", 30).await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    }

    // Screenshots are PNGs at the display's size; a click changes the screen.
    let shot = app.screenshot(&token, &id).await;
    assert_eq!((shot.width, shot.height), (1024, 768));
    let before = settled(&app, &token, &id).await;
    act(
        &app,
        &token,
        &id,
        json!({"action": "right_click", "coordinate": [WATCH.0 + 10, WATCH.1 + 10]}),
    )
    .await;
    await_some("the context menu to show", 15, || async {
        (watched(&app, &token, &id).await != before).then_some(())
    })
    .await;
    act(
        &app,
        &token,
        &id,
        json!({"action": "key", "text": "Escape"}),
    )
    .await;
    let shot = act(&app, &token, &id, json!({"action": "screenshot"})).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["image"].as_str().expect("an image"))
        .unwrap();
    assert_eq!(Image::decode(&png).width, 1024);

    // Typed text lands in the focused window.
    app.run(&token,
        &id,
        "xterm -title typing-target -geometry 60x8+40+40 -e sh -c 'cat > /tmp/typed' >/dev/null 2>&1 &")
    .await;
    // Mapped (not merely created), then clicked until the window manager
    // says it is the active window: typing before that would go elsewhere.
    let window = await_some("the terminal window on screen", 30, || async {
        let out = app
            .run(
                &token,
                &id,
                "xwininfo -name typing-target 2>/dev/null || true",
            )
            .await;
        let window = out
            .lines()
            .find_map(|l| l.split("Window id: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned);
        window.filter(|_| out.contains("IsViewable"))
    })
    .await;
    await_some("the terminal to have the focus", 15, || async {
        act(
            &app,
            &token,
            &id,
            json!({"action": "left_click", "coordinate": [120, 100]}),
        )
        .await;
        let out = app.run(&token, &id, "xprop -root _NET_ACTIVE_WINDOW").await;
        out.trim_end().ends_with(&window).then_some(())
    })
    .await;
    act(
        &app,
        &token,
        &id,
        json!({"action": "type", "text": "typed via the API\n"}),
    )
    .await;
    act(
        &app,
        &token,
        &id,
        json!({"action": "key", "text": "ctrl+d"}),
    )
    .await;
    let typed = await_some("the typed text", 15, || async {
        let out = app
            .run(
                &token,
                &id,
                "cat /tmp/typed 2>/dev/null; pgrep -x xterm || echo closed",
            )
            .await;
        out.ends_with("closed\n").then_some(out)
    })
    .await;
    assert_eq!(typed, "typed via the API\nclosed\n");

    // Bad input: the right status and a reason, nothing done.
    for (input, status) in [
        (
            json!({"action": "left_click", "coordinate": [1024, 10]}),
            400,
        ),
        (json!({"action": "fly"}), 422),
        (json!(["screenshot"]), 422),
    ] {
        let r = app
            .post(
                &format!("/api/v0/sessions/{id}/computer"),
                Some(&token),
                input.clone(),
            )
            .await;
        assert_eq!(r.status.as_u16(), status, "{input}: {:?}", r.body);
        assert!(!r.error().is_empty());
    }
    for body in [
        json!({"command": ""}),
        json!({"command": "true", "timeout_s": 0}),
        json!({"command": "true", "timeout_s": 100000}),
        json!({"command": "true", "nope": 1}),
        json!({"timeout_s": 5}),
    ] {
        let r = app
            .post(
                &format!("/api/v0/sessions/{id}/exec"),
                Some(&token),
                body.clone(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            r.body
        );
    }

    // Pause freezes every process; the computer API says why it refuses.
    set_state(&app, &token, &id, "paused").await;
    let r = app.exec(&token, &id, "true", 30).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.error().contains("paused"), "{}", r.error());
    await_frozen(&id).await;
    set_state(&app, &token, &id, "running").await;
    await_awake(&app, &token, &id).await;

    // Close stops every process and keeps the disk.
    app.close(&token, &id).await;
    assert!(app.state().runtime.as_ref().unwrap().running().is_empty());
    assert!(!cgroup_left(&id), "a closed computer keeps its cgroup");
    let r = app.exec(&token, &id, "true", 30).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.error().contains("closed"), "{}", r.error());
    assert!(computer_dir(&app, &id).join("upper").is_dir());

    // Restore starts it again from the kept disk; setup runs again.
    app.restore(&token, &id).await;
    let out = app
        .run(
            &token,
            &id,
            "cat '/session/data/notes/a b.txt'; echo; cat /session/data/setup-runs",
        )
        .await;
    assert_eq!(out, "kept ✓\nran\nran\n");

    // Delete: processes and disk go, the row stays as `deleted`.
    let r = app
        .delete(&format!("/api/v0/sessions/{id}"), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    await_some("the computer to be removed", 30, || async {
        (!computer_dir(&app, &id).exists()).then_some(())
    })
    .await;
    assert!(app.state().runtime.as_ref().unwrap().running().is_empty());
    assert!(!cgroup_left(&id));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "mounts left behind");
    app.stop().await;
}

/// Uploads `content` as the file at `path` inside session `id`'s computer.
async fn upload(app: &TestApp, token: &str, id: &str, path: &str, content: &'static str) {
    let put = app
        .client
        .put(format!("{}/api/v0/sessions/{id}/files{path}", app.base))
        .bearer_auth(token)
        .body(content)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT, "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_computers_directories_are_listed_as_its_user_sees_them() {
    let app = app().await;
    let admin = app.admin_token.clone();
    let other = app.operator("eve", "user").await;
    let id = app.session(&admin, json!({"name": "listed"})).await;
    app.await_state(&admin, &id, "running").await;
    let list = |path: &str| format!("/api/v0/sessions/{id}/files?path={path}");

    upload(&app, &admin, &id, "/session/data/b.txt", "12345").await;
    upload(&app, &admin, &id, "/session/data/a.txt", "abc").await;
    app.run(
        &admin,
        &id,
        "mkdir /session/data/sub && ln -s b.txt /session/data/link",
    )
    .await;
    let r = app.get(&list("/session/data"), Some(&admin)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["path"], "/session/data");
    assert_eq!(r.body["truncated"], false);
    let entries = r.body["entries"].as_array().expect("entries");
    let seen: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default(),
                e["kind"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("sub", "dir"),
            ("a.txt", "file"),
            ("b.txt", "file"),
            ("link", "link")
        ],
        "{entries:?}"
    );
    // Sizes as lstat gives them: a link's is its own (the target's name).
    assert_eq!(entries[1]["size"], 3);
    assert_eq!(entries[2]["size"], 5);
    assert_eq!(entries[3]["size"], "b.txt".len());
    // Modification times are RFC 3339 in UTC, to the computer's clock.
    let mtime = app
        .run(
            &admin,
            &id,
            "date -u -d @$(stat -c %Y /session/data/a.txt) +%Y-%m-%dT%H:%M:%S",
        )
        .await;
    let modified = entries[1]["modified"].as_str().unwrap_or_default();
    assert!(
        modified.starts_with(mtime.trim()) && modified.ends_with('Z'),
        "{modified} vs {mtime}"
    );
    // The same directory however it is named; a subdirectory.
    let again = app.get(&list("/session//data/"), Some(&admin)).await;
    assert_eq!(again.body["path"], "/session/data");
    let sub = app.get(&list("/session/data/sub"), Some(&admin)).await;
    assert_eq!(sub.status, StatusCode::OK, "{:?}", sub.body);
    assert_eq!(sub.body["entries"], json!([]));

    // What cannot be listed.
    let missing = app.get(&list("/session/data/nope"), Some(&admin)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{:?}", missing.body);
    let file = app.get(&list("/session/data/a.txt"), Some(&admin)).await;
    assert_eq!(file.status, StatusCode::BAD_REQUEST, "{:?}", file.body);
    assert!(file.error().contains("not a directory"), "{:?}", file.body);
    for bad in [
        list("../x"),
        list("session/data"),
        list("/session/../etc"),
        list(""),
        format!("/api/v0/sessions/{id}/files"),
    ] {
        let r = app.get(&bad, Some(&admin)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
        assert!(r.error().contains("path"), "{bad}: {:?}", r.body);
    }

    // Someone else's session does not exist for them.
    let r = app.get(&list("/session/data"), Some(&other)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    app.stop().await;
}

/// Polls session `id` every few milliseconds and, the moment it first
/// reads `running`, takes a screenshot: what a client would see first.
async fn first_look_when_running(app: &TestApp, token: &str, id: &str) -> Image {
    let path = format!("/api/v0/sessions/{id}");
    await_some(&format!("session {id} to run"), 120, || async {
        let r = app.get(&path, Some(token)).await;
        assert_ne!(r.body["state"], "errored", "{:?}", r.body);
        (r.body["state"] == "running").then_some(())
    })
    .await;
    app.screenshot(token, id).await
}

#[track_caller]
fn assert_painted(image: &Image, what: &str) {
    assert!(
        image.shows_painted_desktop(),
        "{what}: the first screenshot at `running` is not a painted desktop \
         (browser chrome {} colours, panel {} colours)",
        image.colours(0, 0, image.width, 80),
        image.colours(0, image.height - 24, image.width, 24)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_means_a_painted_desktop_for_starts_restores_and_remixes() {
    let app = app().await;
    let token = app.admin_token.clone();
    let id = app.session(&token, json!({"name": "painted"})).await;
    assert_painted(
        &first_look_when_running(&app, &token, &id).await,
        "a new session",
    );

    let child = app.remix(&token, &id, json!({})).await;
    assert_painted(
        &first_look_when_running(&app, &token, &child).await,
        "a remix",
    );

    app.close(&token, &id).await;
    app.request_restore(&token, &id).await;
    assert_painted(
        &first_look_when_running(&app, &token, &id).await,
        "a restore",
    );
    // The browser runs without a warning bar about its flags: the row under
    // the toolbar is the page's (white), not an info bar's.
    let shot = app.screenshot(&token, &id).await;
    let below_toolbar = shot.region(10, 100, shot.width - 20, 30);
    assert!(
        below_toolbar.iter().all(|&v| v == 255),
        "something sits between the toolbar and the page"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_errors_the_session_with_its_output_until_fixed() {
    let app = app().await;
    let token = app.operator("dev", "user").await;
    let id = app
        .session(&token, json!({"setup": "echo about to fail; exit 3\n"}))
        .await;
    let s = app.await_state(&token, &id, "errored").await;
    let error = s["error"].as_str().unwrap_or_default();
    assert!(error.contains("setup.sh exited with 3"), "{error}");
    assert!(error.contains("about to fail"), "{error}");
    assert!(app.state().runtime.as_ref().unwrap().running().is_empty());

    let r = app
        .put(
            &format!("/api/v0/sessions/{id}"),
            Some(&token),
            json!({"setup": "echo fixed\n"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .post(
            &format!("/api/v0/sessions/{id}/restore"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let s = app.await_state(&token, &id, "running").await;
    assert!(s["error"].is_null(), "the old reason is cleared: {s:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_sessions_bounds_computers_and_a_restart_brings_running_sessions_back() {
    let enable = |c: &mut raworc_server::ServerConfig| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        c.max_sessions = 1;
    };
    let app = TestApp::spawn_with(Backend::Sqlite, enable).await;
    let token = app.operator("dev", "user").await;
    let id = app.session(&token, json!({})).await;
    let r = app.post("/api/v0/sessions", Some(&token), json!({})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    assert!(r.error().contains("at most 1"), "{}", r.error());
    app.await_state(&token, &id, "running").await;
    app.run(&token, &id, "echo before > /session/data/mark")
        .await;

    // A graceful restart stops the computer and starts it again after.
    let data_dir = app.data_dir.clone();
    let db = app.stop_keep().await;
    assert!(!cgroup_left(&id), "shutdown leaves the computer running");
    let app = TestApp::respawn_with(Backend::Sqlite, db, enable).await;
    assert_eq!(app.data_dir, data_dir);
    let token = app.login("dev", "dev-password").await;
    let mark = await_some("the computer to be back", 120, || async {
        let r = app.exec(&token, &id, "cat /session/data/mark", 30).await;
        (r.status == StatusCode::OK).then_some(r.body["stdout"].clone())
    })
    .await;
    assert_eq!(mark, "before\n", "the disk survived the restart");

    // Room comes back once the session is closed.
    app.close(&token, &id).await;
    let second = app.session(&token, json!({})).await;
    app.await_state(&token, &second, "running").await;
    app.stop().await;
}

/// PID 1 of computer `id`, from its pid file.
fn computer_pid(data_dir: &Path, id: &str) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("computers").join(id).join("pid")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_running_computers_are_adopted_and_dead_ones_restarted() {
    use raworc_testkit::process::ServerProcess;
    let db = raworc_testkit::TestDb::new(Backend::Sqlite);
    let images = raworc_testkit::computer::images_dir();
    let args = ["--images-dir", images.to_str().unwrap()];
    let server = ServerProcess::start(Path::new(RAWORC), &db, &args);
    let app = server.app(&db).await;
    let token = app.admin_token.clone();
    let kept = app.session(&token, json!({"name": "kept"})).await;
    let dies = app.session(&token, json!({"name": "dies"})).await;
    app.await_state(&token, &kept, "running").await;
    app.await_state(&token, &dies, "running").await;
    // A background process that must survive the control plane's crash.
    app.run(
        &token,
        &kept,
        "setsid sleep 1000 >/dev/null 2>&1 < /dev/null &",
    )
    .await;
    let kept_pid = computer_pid(&app.data_dir, &kept).expect("pid file");
    let dies_pid = computer_pid(&app.data_dir, &dies).expect("pid file");

    server.kill();
    assert!(alive(kept_pid), "computers outlive a crashed control plane");
    // One computer dies while nobody watches.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dies_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let server = ServerProcess::start(Path::new(RAWORC), &db, &args);
    let app = server.app(&db).await;
    // Adopted as it was: same PID 1, background process still there.
    let out = app
        .run(
            &token,
            &kept,
            "pgrep -x sleep >/dev/null && echo still-sleeping",
        )
        .await;
    assert_eq!(out, "still-sleeping\n");
    assert_eq!(computer_pid(&app.data_dir, &kept), Some(kept_pid));
    // The dead one is started again from its disk.
    let back = await_some("the dead computer to be back", 120, || async {
        let r = app.exec(&token, &dies, "echo up", 30).await;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(back, ());
    let new_pid = computer_pid(&app.data_dir, &dies).expect("pid file");
    assert_ne!(new_pid, dies_pid);
    assert!(!alive(dies_pid));

    // An adopted computer pauses (its cgroup found again) and resumes.
    set_state(&app, &token, &kept, "paused").await;
    await_frozen(&kept).await;
    set_state(&app, &token, &kept, "running").await;
    await_awake(&app, &token, &kept).await;

    // An adopted computer closes like any other.
    app.close(&token, &kept).await;
    assert!(!alive(kept_pid), "the adopted computer stopped");
    assert!(!cgroup_left(&kept));

    // A graceful stop stops every computer.
    assert!(server.terminate().success());
    assert!(!alive(new_pid), "SIGTERM leaves a computer running");
    assert!(!cgroup_left(&dies));
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remix_forks_the_disk_with_or_without_data_and_code() {
    let app = app().await;
    let token = app.operator("dev", "user").await;
    let parent = app
        .session(
            &token,
            json!({"instructions": "parent rules", "setup": "true"}),
        )
        .await;
    app.await_state(&token, &parent, "running").await;
    app.run(
        &token,
        &parent,
        "echo data > /session/data/d.txt; echo code > /session/code/c.txt; \
         echo home > ~/h.txt; head -c 10000000 /dev/urandom > /session/data/big",
    )
    .await;
    app.close(&token, &parent).await;

    // What each child sees: data file, code file, home file.
    let probe = "cat /session/data/d.txt 2>/dev/null || echo no-data; \
                 cat /session/code/c.txt 2>/dev/null || echo no-code; cat ~/h.txt";
    let mut children = Vec::new();
    for (body, expected) in [
        (json!({}), "data\ncode\nhome\n"),
        (json!({"data": false}), "no-data\ncode\nhome\n"),
        (json!({"code": false}), "data\nno-code\nhome\n"),
    ] {
        let r = app
            .post(
                &format!("/api/v0/sessions/{parent}/remix"),
                Some(&token),
                body.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let child = r.body["id"].as_str().unwrap().to_owned();
        app.await_state(&token, &child, "running").await;
        assert_eq!(app.run(&token, &child, probe).await, expected, "{body}");
        children.push(child);
    }
    // Without code, nothing of the parent's code comes along.
    let out = app
        .run(&token, &children[2], "ls -A /session/code | wc -l")
        .await;
    assert_eq!(out, "0\n");

    // The parent goes on with its own disk; children do not see its changes.
    app.restore(&token, &parent).await;
    assert_eq!(app.run(&token, &parent, probe).await, "data\ncode\nhome\n");
    app.run(
        &token,
        &parent,
        "echo later > /session/data/later.txt; rm /session/data/d.txt",
    )
    .await;
    let out = app
        .run(
            &token,
            &children[0],
            "cat /session/data/d.txt; ls /session/data/later.txt 2>&1 || true",
        )
        .await;
    assert!(
        out.starts_with("data\n") && out.contains("No such file"),
        "{out}"
    );

    // A running parent can be remixed too: the child has what it had just now.
    let r = app
        .post(
            &format!("/api/v0/sessions/{parent}/remix"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let live = r.body["id"].as_str().unwrap().to_owned();
    app.await_state(&token, &live, "running").await;
    let out = app
        .run(
            &token,
            &live,
            "cat /session/data/later.txt; ls /session/data/d.txt 2>&1 || true",
        )
        .await;
    assert!(
        out.starts_with("later\n") && out.contains("No such file"),
        "{out}"
    );
    assert_eq!(
        app.run(&token, &parent, "echo still-running").await,
        "still-running\n"
    );

    // Once every session is deleted, no layer is left.
    for id in children.iter().chain([&live, &parent]) {
        let r = app
            .delete(&format!("/api/v0/sessions/{id}"), Some(&token))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let layers = app.data_dir.join("computers").join(".layers");
    await_some("every layer to be removed", 60, || async {
        let left = std::fs::read_dir(&layers).map(|d| d.count()).unwrap_or(0);
        let computers = std::fs::read_dir(app.data_dir.join("computers"))
            .map(|d| d.flatten().filter(|e| e.file_name() != ".layers").count())
            .unwrap_or(0);
        (left == 0 && computers == 0).then_some(())
    })
    .await;
    app.stop().await;
}

/// An RFB client over the desktop WebSocket, enough to shake hands, move
/// the pointer and read framebuffer updates.
struct Rfb {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    buf: std::collections::VecDeque<u8>,
    /// Bytes per pixel of the server's format.
    bpp: usize,
}

impl Rfb {
    async fn connect(
        app: &TestApp,
        id: &str,
        query: &str,
    ) -> Result<Rfb, tokio_tungstenite::tungstenite::Error> {
        let url = format!("ws://{}/vnc/{id}/stream?{query}", app.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Rfb {
            ws,
            buf: Default::default(),
            bpp: 4,
        })
    }

    async fn read(&mut self, n: usize) -> Vec<u8> {
        use futures::StreamExt;
        while self.buf.len() < n {
            let message = tokio::time::timeout(std::time::Duration::from_secs(30), self.ws.next())
                .await
                .expect("the desktop stream answers")
                .expect("the stream is open")
                .expect("a frame");
            if let tokio_tungstenite::tungstenite::Message::Binary(b) = message {
                self.buf.extend(b.iter());
            }
        }
        self.buf.drain(..n).collect()
    }

    async fn send(&mut self, bytes: &[u8]) {
        use futures::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                bytes.to_vec().into(),
            ))
            .await
            .expect("sent");
    }

    /// Handshake (no authentication inside: the WebSocket is the gate);
    /// the desktop's size.
    async fn handshake(&mut self) -> (u16, u16) {
        let version = self.read(12).await;
        assert!(version.starts_with(b"RFB 003."), "{version:?}");
        self.send(b"RFB 003.008\n").await;
        let n = self.read(1).await[0] as usize;
        let types = self.read(n).await;
        assert!(types.contains(&1), "security None offered: {types:?}");
        self.send(&[1]).await;
        assert_eq!(self.read(4).await, [0, 0, 0, 0], "security result");
        self.send(&[1]).await;
        let init = self.read(24).await;
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        self.read(name_len).await;
        self.bpp = init[4] as usize / 8;
        (
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        )
    }
}

impl Rfb {
    /// Moves the pointer, then asks for a whole frame and reads it: the
    /// server handles a client's messages in order.
    async fn point_and_refresh(&mut self, x: u16, y: u16) {
        let [xh, xl] = x.to_be_bytes();
        let [yh, yl] = y.to_be_bytes();
        self.send(&[5, 0, xh, xl, yh, yl]).await;
        self.send(&[3, 0, 0, 0, 0, 0, 4, 0, 3, 0]).await;
        loop {
            match self.read(1).await[0] {
                0 => {
                    let head = self.read(3).await;
                    let rects = u16::from_be_bytes([head[1], head[2]]);
                    for _ in 0..rects {
                        let r = self.read(12).await;
                        let (w, h) = (
                            u16::from_be_bytes([r[4], r[5]]) as usize,
                            u16::from_be_bytes([r[6], r[7]]) as usize,
                        );
                        let encoding = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
                        assert_eq!(encoding, 0, "raw encoding (the only one asked for)");
                        self.read(w * h * self.bpp).await;
                    }
                    return;
                }
                2 => {}
                3 => {
                    let head = self.read(7).await;
                    let len = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
                    self.read(len as usize).await;
                }
                other => panic!("unexpected server message {other}"),
            }
        }
    }
}

async fn cursor(app: &TestApp, token: &str, id: &str) -> String {
    act(app, token, id, json!({"action": "cursor_position"})).await["output"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desktop_streams_over_a_websocket_view_only_unless_control_is_asked() {
    let app = app().await;
    let token = app.operator("dev", "user").await;
    let other = app.operator("eve", "user").await;
    let id = app.session(&token, json!({})).await;
    app.await_state(&token, &id, "running").await;

    let info = app.get(&format!("/vnc/{id}/info"), Some(&token)).await;
    assert_eq!(info.status, StatusCode::OK, "{:?}", info.body);
    assert_eq!(info.body["available"], true);
    assert_eq!(info.body["websocket_path"], format!("/vnc/{id}/stream"));
    // Tokens in URLs only where a browser has no other way: the stream.
    let by_query = app
        .get(&format!("/vnc/{id}/info?token={token}"), None)
        .await;
    assert_eq!(by_query.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.get(&format!("/vnc/{id}/info"), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get(&format!("/vnc/{id}/info"), Some(&other))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let workers = app.get("/sessions/workers/health", Some(&token)).await;
    assert_eq!(workers.status, StatusCode::OK, "{:?}", workers.body);
    assert_eq!(workers.body["running"], 1);
    assert_eq!(workers.body["computers"][0]["session_id"], id.as_str());
    let theirs = app.get("/sessions/workers/health", Some(&other)).await;
    assert_eq!(
        theirs.body["computers"],
        json!([]),
        "others' computers are hidden"
    );
    assert_eq!(
        app.get("/sessions/workers/health", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // No token, a bad token, someone else's session: no stream.
    use tokio_tungstenite::tungstenite::Error as WsError;
    for (query, status) in [
        ("", 401),
        ("token=nope", 401),
        (&*format!("token={other}"), 404),
    ] {
        match Rfb::connect(&app, &id, query).await {
            Err(WsError::Http(r)) => assert_eq!(r.status().as_u16(), status, "{query}"),
            Err(e) => panic!("{query}: {e}"),
            Ok(_) => panic!("{query}: the stream opened"),
        }
    }

    // A viewer sees the desktop but moves nothing.
    act(
        &app,
        &token,
        &id,
        json!({"action": "mouse_move", "coordinate": [10, 10]}),
    )
    .await;
    let mut viewer = Rfb::connect(&app, &id, &format!("token={token}"))
        .await
        .expect("view");
    assert_eq!(viewer.handshake().await, (1024, 768));
    viewer.send(&[2, 0, 0, 1, 0, 0, 0, 0]).await;
    viewer.point_and_refresh(400, 300).await;
    assert_eq!(cursor(&app, &token, &id).await, "X=10,Y=10");

    // Asking for control moves the pointer.
    let mut driver = Rfb::connect(&app, &id, &format!("token={token}&control=true"))
        .await
        .expect("control");
    driver.handshake().await;
    driver.send(&[2, 0, 0, 1, 0, 0, 0, 0]).await;
    driver.point_and_refresh(300, 200).await;
    await_some("the pointer to move", 15, || async {
        (cursor(&app, &token, &id).await == "X=300,Y=200").then_some(())
    })
    .await;

    // A closed session has no desktop to watch.
    app.close(&token, &id).await;
    match Rfb::connect(&app, &id, &format!("token={token}")).await {
        Err(WsError::Http(r)) => assert_eq!(r.status().as_u16(), 409),
        other => panic!("a closed session streamed: {:?}", other.is_ok()),
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_paused_then_closed_and_use_keeps_them_running() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        c.idle_pause_s = 2;
        c.idle_close_s = 5;
        c.operator_resync_ms = 200;
    })
    .await;
    let token = app.operator("dev", "user").await;
    let id = app.session(&token, json!({})).await;
    app.await_state(&token, &id, "running").await;

    // Used more often than the pause timeout: it stays running.
    let used_until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < used_until {
        assert_eq!(app.run(&token, &id, "echo busy").await, "busy\n");
        let s = app
            .get(&format!("/api/v0/sessions/{id}"), Some(&token))
            .await;
        assert_eq!(s.body["state"], "running", "paused while in use");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    // Left alone: paused, then closed with the disk kept.
    let paused_at = std::time::Instant::now();
    app.await_state(&token, &id, "paused").await;
    assert!(paused_at.elapsed() >= std::time::Duration::from_millis(1000));
    app.await_state(&token, &id, "closed").await;
    assert!(computer_dir(&app, &id).join("upper").is_dir());
    assert!(app.state().runtime.as_ref().unwrap().running().is_empty());
    // Both changes are in the audit log, by the operator.
    let audit = app
        .get(
            &format!("/api/v0/audit?principal=operator&session_id={id}"),
            Some(&app.admin_token),
        )
        .await;
    let actions: Vec<&str> = audit
        .body
        .as_array()
        .expect("audit rows")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"PUT /api/v0/sessions/{id}/state"),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"POST /api/v0/sessions/{id}/close"),
        "{actions:?}"
    );
    app.stop().await;
}

/// Whether `path` is a mount point of a btrfs file system.
fn btrfs_mounted_at(path: &Path) -> bool {
    let path = path.canonicalize().unwrap_or_default();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            fields.get(4) == Some(&&*path.to_string_lossy()) && l.contains(" - btrfs ")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_btrfs_disk_image_a_running_session_is_remixed_by_snapshot() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        c.disk_image_size = 4;
    })
    .await;
    let computers = app.data_dir.join("computers");
    assert!(btrfs_mounted_at(&computers), "the disk image is mounted");
    let token = app.operator("dev", "user").await;
    let parent = app.session(&token, json!({})).await;
    app.await_state(&token, &parent, "running").await;
    app.run(&token, &parent, "head -c 50M /dev/urandom > /session/data/blob; sha256sum /session/data/blob > /session/data/sum").await;

    // Remixed while it runs: the child starts from a snapshot of its disk.
    let r = app
        .post(
            &format!("/api/v0/sessions/{parent}/remix"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let child = r.body["id"].as_str().unwrap().to_owned();
    app.await_state(&token, &child, "running").await;
    app.run(&token, &child, "cd /session/data && sha256sum -c sum")
        .await;
    let layers = std::fs::read_to_string(computers.join(&child).join("layers")).unwrap();
    // The layer entry names the snapshot and the upper layer inside it.
    let entry = layers.lines().next().expect("a layer");
    let snapshot = entry
        .strip_suffix("/upper")
        .expect("a snapshot's upper layer");
    let layer = computers.join(".layers").join(snapshot);
    let ro = std::process::Command::new("btrfs")
        .args(["property", "get", "-ts"])
        .arg(&layer)
        .arg("ro")
        .output()
        .expect("btrfs");
    assert_eq!(
        String::from_utf8_lossy(&ro.stdout).trim(),
        "ro=true",
        "a read-only snapshot at {}: {}",
        layer.display(),
        String::from_utf8_lossy(&ro.stderr)
    );
    assert_eq!(
        app.run(&token, &parent, "echo parent-goes-on").await,
        "parent-goes-on\n"
    );
    app.run(&token, &parent, "echo later > /session/data/later")
        .await;
    let out = app
        .exec(&token, &child, "cat /session/data/later", 30)
        .await;
    assert_ne!(
        out.body["exit_code"], 0,
        "the child sees the parent's later changes"
    );

    // Deleting both leaves no layer; a clean stop unmounts the image.
    for id in [&child, &parent] {
        let r = app
            .delete(&format!("/api/v0/sessions/{id}"), Some(&token))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    await_some("every layer to be removed", 60, || async {
        let left = std::fs::read_dir(computers.join(".layers"))
            .map(|d| d.count())
            .unwrap_or(0);
        (left == 0).then_some(())
    })
    .await;
    let data_dir = app.data_dir.clone();
    app.stop().await;
    assert!(
        !btrfs_mounted_at(&data_dir.join("computers")),
        "unmounted at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remix_keeps_its_copy_when_the_parent_is_deleted_right_after() {
    let app = app().await;
    let token = app.operator("dev", "user").await;
    let parent = app.session(&token, json!({})).await;
    app.await_state(&token, &parent, "running").await;
    app.run(&token, &parent, "echo inherited > /session/data/d.txt")
        .await;
    app.close(&token, &parent).await;

    // The parent goes before the child has started.
    let r = app
        .post(
            &format!("/api/v0/sessions/{parent}/remix"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let child = r.body["id"].as_str().unwrap().to_owned();
    let r = app
        .delete(&format!("/api/v0/sessions/{parent}"), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    app.await_state(&token, &child, "running").await;
    assert_eq!(
        app.run(&token, &child, "cat /session/data/d.txt").await,
        "inherited\n"
    );
    app.stop().await;
}

/// The warm pool's figures from `/sessions/workers/health`.
async fn warm_pool(app: &TestApp) -> Value {
    let r = app
        .get("/sessions/workers/health", Some(&app.admin_token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["warm_pool"].clone()
}

async fn await_pool_ready(app: &TestApp, n: u64) {
    await_some("the warm pool to fill", 120, || async {
        (warm_pool(app).await["ready"] == n).then_some(())
    })
    .await;
}

/// A limit of computer `id`'s cgroup, found from its PID 1 (a pooled
/// computer keeps the group it was made with).
fn computer_limit(data_dir: &Path, id: &str, controller: &str, file: &str) -> String {
    let pid = computer_pid(data_dir, id).expect("the computer's pid");
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = groups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
        .expect("the computer's group");
    std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{path}/{file}"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_serves_creates_with_their_own_identity_and_nothing_of_others() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        c.warm_pool = 1;
    })
    .await;
    let token = app.admin_token.clone();
    await_pool_ready(&app, 1).await;
    // Pooled computers are not sessions' computers.
    let health = app.get("/sessions/workers/health", Some(&token)).await;
    assert_eq!(health.body["running"], 0, "{:?}", health.body);

    let a = app
        .session(
            &token,
            json!({
                "name": "pooled-a",
                "instructions": "Pool A",
                "setup": "echo a-setup > /session/data/a.txt",
                "secrets": {"POOL_KEY": "secret-of-a"},
                "limits": {"memory_mb": 1024, "pids": 777},
            }),
        )
        .await;
    assert_painted(
        &first_look_when_running(&app, &token, &a).await,
        "a pooled claim",
    );
    let pool = warm_pool(&app).await;
    assert_eq!(
        (pool["claims"].as_u64(), pool["misses"].as_u64()),
        (Some(1), Some(0)),
        "{pool}"
    );
    let seen = app
        .run(
            &token,
            &a,
            "hostname; cat /session/code/instructions.md; echo; cat /session/data/a.txt; \
             cat /session/secrets/POOL_KEY; echo; echo \"$POOL_KEY\"",
        )
        .await;
    assert_eq!(
        seen,
        format!("{a}\nPool A\na-setup\nsecret-of-a\nsecret-of-a\n")
    );
    assert_eq!(
        computer_limit(&app.data_dir, &a, "pids", "pids.max"),
        "777",
        "the session's limits"
    );

    // The pool refills; the next claimant sees nothing of the first.
    await_pool_ready(&app, 1).await;
    let b = app
        .session(
            &token,
            json!({"name": "pooled-b", "secrets": {"OTHER": "b"}}),
        )
        .await;
    assert_painted(
        &first_look_when_running(&app, &token, &b).await,
        "a second claim",
    );
    let seen = app
        .run(
            &token,
            &b,
            "hostname; ls /session/data /session/code /session/secrets; echo \"[$POOL_KEY]\"",
        )
        .await;
    assert_eq!(
        seen,
        format!("{b}\n/session/code:\n\n/session/data:\n\n/session/secrets:\nOTHER\n[]\n")
    );
    assert_eq!(warm_pool(&app).await["claims"], 2);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for line in [
        "raworc_warm_pool_target 1",
        "raworc_warm_pool_claims 2",
        "raworc_warm_pool_misses 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in /metrics:\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("raworc_warm_pool_last_fill_seconds ") && !l.ends_with(" 0.0")),
        "{metrics}"
    );

    // What the pool cannot serve starts cold: egress.
    let misses = warm_pool(&app).await["misses"].clone();
    let e = app
        .session(&token, json!({"name": "cold", "network": "egress"}))
        .await;
    app.await_state(&token, &e, "running").await;
    assert_eq!(warm_pool(&app).await["misses"], misses, "egress is no miss");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_warm_pool_leaves_no_orphan() {
    use raworc_testkit::process::ServerProcess;
    let db = raworc_testkit::TestDb::new(Backend::Sqlite);
    let images = raworc_testkit::computer::images_dir();
    let args = [
        "--images-dir",
        images.to_str().unwrap(),
        "--warm-pool",
        "1",
        "--disk-image-size",
        "0",
    ];
    let server = ServerProcess::start(Path::new(RAWORC), &db, &args);
    let app = server.app(&db).await;
    await_pool_ready(&app, 1).await;
    let computers = app.data_dir.join("computers");
    let pooled: Vec<String> = std::fs::read_dir(&computers)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("pool-"))
        .collect();
    assert_eq!(pooled.len(), 1, "{pooled:?}");
    let old = pooled[0].clone();
    let old_pid = computer_pid(&app.data_dir, &old).expect("pooled pid");
    server.kill();

    let server = ServerProcess::start(Path::new(RAWORC), &db, &args);
    let app = server.app(&db).await;
    await_pool_ready(&app, 1).await;
    // The old pooled computer is gone: process, disk and cgroup.
    await_some("the old pooled computer to end", 30, || async {
        (!alive(old_pid)).then_some(())
    })
    .await;
    assert!(!computers.join(&old).exists(), "its disk is left");
    assert!(cgroup_dirs(&old).is_empty(), "its cgroup is left");
    let status = server.terminate();
    assert!(status.success());
    // A clean stop takes the pool with it.
    let left: Vec<_> = std::fs::read_dir(&computers)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pool-"))
        .collect();
    assert!(left.is_empty(), "pooled computers left after a clean stop");
}
