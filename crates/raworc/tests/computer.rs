//! Real computers on the `local` runtime: the built image, real namespaces,
//! `raworc host` (this crate's binary) as PID 1, a real X server, browser
//! and window manager. Needs root.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use raworc_host::client::{HostClient, HostError};
use raworc_host::proto::ExecRequest;
use raworc_runtime::local::{LocalConfig, LocalRuntime};
use raworc_runtime::{ComputerSpec, ComputerState, Runtime};
use raworc_testkit::computer::{await_some, Image};
use serde_json::{json, Value};

fn runtime(dir: &Path) -> LocalRuntime {
    LocalRuntime::new(LocalConfig {
        computers_dir: dir.join("computers"),
        image: raworc_testkit::computer::image_rootfs(),
        host_binary: env!("CARGO_BIN_EXE_raworc").into(),
        limits: LocalConfig::default_limits(),
        allow_user_namespaces: false,
        warm_pool: 0,
        pool_display: Default::default(),
    })
}

fn spec(id: &str) -> ComputerSpec {
    ComputerSpec {
        id: format!("{id}-{}", std::process::id()),
        ..ComputerSpec::default()
    }
}

async fn screenshot(host: &HostClient) -> Image {
    Image::decode(&host.screenshot().await.expect("screenshot"))
}

async fn exec(host: &HostClient, command: &str) -> raworc_host::proto::ExecResult {
    host.exec(&ExecRequest {
        command: command.into(),
        timeout_s: Some(30),
    })
    .await
    .expect("exec")
}

async fn act(host: &HostClient, input: Value) -> raworc_host::proto::ComputerResult {
    host.computer(&input)
        .await
        .unwrap_or_else(|e| panic!("{input}: {e}"))
}

/// The region (around the screen's centre) the click test watches.
const WATCH: (u32, u32, u32, u32) = (500, 380, 260, 220);

/// The watched region of a fresh screenshot.
async fn watched(host: &HostClient) -> Vec<u8> {
    screenshot(host)
        .await
        .region(WATCH.0, WATCH.1, WATCH.2, WATCH.3)
}

/// The watched region once two screenshots in a row agree on it.
async fn settled_region(host: &HostClient) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = watched(host).await;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = watched(host).await;
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "timed out: the screen to settle");
        last = now;
    }
}

/// Waits until the watched region does (or does not) equal `reference`.
async fn await_region(host: &HostClient, what: &str, reference: &[u8], equal: bool) {
    await_some(what, 15, || {
        let host = host.clone();
        async move { ((watched(&host).await == reference) == equal).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_comes_up_and_serves_commands_files_screenshots_and_input() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let mut spec = spec("tools");
    spec.setup = Some("echo hello-from-setup; echo \"$API_KEY\" > /session/data/seen\n".into());
    spec.instructions = Some("Be kind.\n".into());
    spec.secrets.insert("API_KEY".into(), "s3cret-value".into());

    let ready = rt.start(&spec).await.expect("the computer starts");
    assert_eq!((ready.display.width, ready.display.height), (1024, 768));
    let setup = ready.setup.expect("setup ran");
    assert_eq!(setup.exit_code, 0);
    assert!(setup.output_tail.contains("hello-from-setup"), "{setup:?}");
    // Asked again (as after a crash in the middle of a start), the running
    // computer is waited for, not started twice: it keeps its one session.
    let again = rt.start(&spec).await.expect("a second start");
    assert_eq!(again.setup.map(|s| s.exit_code), Some(0));
    assert_eq!(rt.state(&spec.id).await.unwrap(), ComputerState::Running);
    // The secrets reached the computer over its socket, into memory only.
    let disk = dir.path().join("computers").join(&spec.id);
    let config = std::fs::read_to_string(disk.join("run/config.json")).unwrap();
    assert!(!config.contains("s3cret-value"), "{config}");
    assert!(!disk.join("upper/session/secrets/API_KEY").exists());
    let host = rt.host(&spec.id).unwrap();

    // Commands: the computer's user, in /session, with the secrets.
    let out = exec(
        &host,
        "id -u; pwd; echo \"$API_KEY\"; stat -c %a /session/secrets/API_KEY; \
         cat /session/secrets/API_KEY; echo; cat /session/code/instructions.md; \
         cat /session/data/seen; cat /session/code/setup.log; echo oops >&2; exit 3",
    )
    .await;
    assert_eq!(out.exit_code, 3, "{out:?}");
    assert_eq!(
        out.stdout,
        "1000\n/session\ns3cret-value\n600\ns3cret-value\nBe kind.\ns3cret-value\nhello-from-setup\n"
    );
    assert_eq!(out.stderr, "oops\n");
    let slow = host
        .exec(&ExecRequest {
            command: "echo started; sleep 30".into(),
            timeout_s: Some(1),
        })
        .await
        .unwrap();
    assert!(slow.timed_out, "{slow:?}");
    assert_eq!((slow.exit_code, slow.stdout.as_str()), (124, "started\n"));

    // Files, both ways, with the user's rights.
    host.write_file("/session/data/dir/up load.txt", "uploaded ✓".into())
        .await
        .expect("upload");
    let back = host
        .read_file("/session/data/dir/up load.txt")
        .await
        .unwrap();
    assert_eq!(&back[..], "uploaded ✓".as_bytes());
    let out = exec(&host, "stat -c '%U %s' '/session/data/dir/up load.txt'").await;
    assert_eq!(out.stdout, format!("computer {}\n", "uploaded ✓".len()));
    for (path, status) in [
        ("/nope/missing", 404),
        ("/etc/shadow", 403),
        ("/session", 400),
    ] {
        match host.read_file(path).await {
            Err(HostError::Status { status: s, .. }) => assert_eq!(s, status, "{path}"),
            other => panic!("{path}: {other:?}"),
        }
    }

    // A screenshot is a PNG of the whole display.
    let shot = screenshot(&host).await;
    assert_eq!((shot.width, shot.height), (1024, 768));
    let zoom = act(&host, json!({"action": "zoom", "region": [0, 0, 200, 100]})).await;
    let zoomed = base64::engine::general_purpose::STANDARD
        .decode(zoom.image.expect("zoom returns an image"))
        .unwrap();
    let zoomed = Image::decode(&zoomed);
    assert_eq!((zoomed.width, zoomed.height), (200, 100));

    // The pointer goes where it is told.
    act(
        &host,
        json!({"action": "mouse_move", "coordinate": [300, 200]}),
    )
    .await;
    let pos = act(&host, json!({"action": "cursor_position"})).await;
    assert_eq!(pos.output.as_deref(), Some("X=300,Y=200"));

    // A right click in the browser opens its context menu; Escape closes it.
    let before = settled_region(&host).await;
    act(
        &host,
        json!({"action": "right_click", "coordinate": [WATCH.0 + 10, WATCH.1 + 10]}),
    )
    .await;
    await_region(&host, "the context menu to show", &before, false).await;
    act(&host, json!({"action": "key", "text": "Escape"})).await;
    await_region(&host, "the context menu to close", &before, true).await;

    // Typed text lands in the focused window.
    let out = exec(
        &host,
        "xterm -title typing-target -geometry 60x8+40+40 -e sh -c 'cat > /tmp/typed' \
         >/dev/null 2>&1 &",
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    // Mapped (not merely created), then clicked until the window manager
    // says it is the active window.
    let window = await_some("the terminal window on screen", 30, || {
        let host = host.clone();
        async move {
            let out = exec(&host, "xwininfo -name typing-target 2>/dev/null").await;
            let id = out
                .stdout
                .lines()
                .find_map(|l| l.split("Window id: ").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned);
            id.filter(|_| out.stdout.contains("IsViewable"))
        }
    })
    .await;
    act(
        &host,
        json!({"action": "left_click", "coordinate": [120, 100]}),
    )
    .await;
    await_some("the terminal to have the focus", 15, || {
        let host = host.clone();
        let window = window.clone();
        async move {
            let out = exec(&host, "xprop -root _NET_ACTIVE_WINDOW").await;
            out.stdout.trim_end().ends_with(&window).then_some(())
        }
    })
    .await;
    act(
        &host,
        json!({"action": "type", "text": "Hello, Raworc! é\n"}),
    )
    .await;
    act(&host, json!({"action": "key", "text": "ctrl+d"})).await;
    let typed = await_some("the typed text in the file", 15, || {
        let host = host.clone();
        async move {
            // ctrl+d ends `cat`, and with it the terminal.
            let out = exec(
                &host,
                "cat /tmp/typed 2>/dev/null; pgrep -x xterm || echo closed",
            )
            .await;
            out.stdout.ends_with("closed\n").then_some(out.stdout)
        }
    })
    .await;
    assert_eq!(typed, "Hello, Raworc! é\nclosed\n");

    // Bad actions are refused with the right status and a reason.
    for (input, status, says) in [
        (
            json!({"action": "left_click", "coordinate": [1024, 10]}),
            400,
            "outside",
        ),
        (json!({"action": "fly"}), 422, "unknown action"),
        (json!({"action": "key"}), 422, "text is required"),
    ] {
        match host.computer(&input).await {
            Err(HostError::Status { status: s, message }) => {
                assert_eq!(s, status, "{input}: {message}");
                assert!(message.contains(says), "{input}: {message}");
            }
            other => panic!("{input}: {other:?}"),
        }
    }

    rt.stop(&spec.id).await.expect("stop");
    assert_eq!(rt.state(&spec.id).await.unwrap(), ComputerState::Stopped);
    rt.remove(&spec.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_fails_the_start_with_its_output_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let mut spec = spec("badsetup");
    spec.setup = Some("echo about to fail; exit 3\n".into());
    let err = rt.start(&spec).await.expect_err("setup fails");
    let msg = err.to_string();
    assert!(msg.contains("setup.sh exited with 3"), "{msg}");
    assert!(msg.contains("about to fail"), "{msg}");
    assert_eq!(rt.state(&spec.id).await.unwrap(), ComputerState::Stopped);
    assert!(rt.running().is_empty());
    assert!(rt.host(&spec.id).is_err());
    rt.remove(&spec.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_freezes_stop_keeps_the_disk_and_remove_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let spec = spec("lifecycle");
    rt.start(&spec).await.expect("start");
    let host = rt.host(&spec.id).unwrap();
    host.write_file("/home/computer/kept.txt", "still here".into())
        .await
        .unwrap();

    rt.pause(&spec.id).await.unwrap();
    assert_eq!(rt.state(&spec.id).await.unwrap(), ComputerState::Paused);
    // A frozen computer answers nothing.
    let frozen = tokio::time::timeout(Duration::from_millis(500), exec(&host, "echo hi")).await;
    assert!(frozen.is_err(), "a paused computer ran a command");
    rt.resume(&spec.id).await.unwrap();
    assert_eq!(exec(&host, "echo hi").await.stdout, "hi\n");

    rt.stop(&spec.id).await.unwrap();
    assert_eq!(rt.state(&spec.id).await.unwrap(), ComputerState::Stopped);
    assert!(rt.host(&spec.id).is_err());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&spec.id), "mounts left behind");

    // Started again from its kept disk.
    rt.start(&spec).await.expect("restart");
    let host = rt.host(&spec.id).unwrap();
    let kept = host.read_file("/home/computer/kept.txt").await.unwrap();
    assert_eq!(&kept[..], b"still here");

    rt.remove(&spec.id).await.unwrap();
    assert_eq!(rt.state(&spec.id).await.unwrap(), ComputerState::Absent);
    assert!(!dir.path().join("computers").join(&spec.id).exists());
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let leftover = cgroups
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|path| {
            ["memory", "pids"].iter().any(|c| {
                Path::new("/sys/fs/cgroup")
                    .join(c)
                    .join(path.trim_start_matches('/'))
                    .join("raworc")
                    .join(format!("computer-{}", spec.id))
                    .exists()
            })
        });
    assert!(!leftover, "the computer's cgroup is left behind");
}
