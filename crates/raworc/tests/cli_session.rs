//! `raworc session`, the real binary, against a server with computers and
//! the mock agent: a script's prompt answered on stdout, prompts read from
//! stdin in order, a closed session restored, a new session's flags, a
//! remix, Ctrl-C cancelling the agent's work, and bad input refused before
//! anything is created. Needs root (computers).

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use raworc_testkit::computer::await_some;
use raworc_testkit::{Backend, StatusCode, TestApp};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

const RAWORC: &str = env!("CARGO_BIN_EXE_raworc");

async fn mock_app() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
    })
    .await
}

/// `raworc args…` with its own home and no other Raworc settings from the
/// environment; stdin, stdout and stderr are pipes (not terminals).
fn raworc(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(RAWORC);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RAWORC_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RAWORC_HOME", home)
        .env("NO_COLOR", "1")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `raworc args…` with `input` on stdin, then the end of input.
async fn run(home: &Path, args: &[&str], input: &str) -> Output {
    let mut child = raworc(home, args).spawn().expect("running raworc");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("writing stdin");
    drop(stdin);
    finish(child).await
}

async fn finish(child: Child) -> Output {
    tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("raworc finished in time")
        .expect("raworc's output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success; returns stdout.
#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// A CLI home logged in to `app` as admin, the way a user does it.
async fn logged_in(app: &TestApp) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let out = run(
        home.path(),
        &["auth", "-t", &app.admin_token, "-s", &app.base],
        "",
    )
    .await;
    ok(&out);
    home
}

async fn sessions(app: &TestApp) -> Vec<Value> {
    let r = app.get("/api/v0/sessions", Some(&app.admin_token)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body.as_array().expect("a list").clone()
}

async fn messages(app: &TestApp, id: &str) -> Vec<Value> {
    let r = app
        .get(
            &format!("/api/v0/sessions/{id}/messages?limit=1000"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body.as_array().expect("a list").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_gets_its_reply_and_a_restored_session_answers_stdin_in_order() {
    let app = mock_app().await;
    let home = logged_in(&app).await;
    let home = home.path();

    // A new session, one prompt, stdin not a terminal: the reply alone on stdout.
    let out = run(home, &["session", "-p", "run `echo from-cli`"], "").await;
    let reply = ok(&out);
    assert!(reply.contains("from-cli"), "{reply}");
    let err = stderr(&out);
    assert!(err.contains("→ bash: echo from-cli"), "{err}");
    assert!(err.contains("✓ from-cli"), "{err}");
    assert!(!reply.contains('→'), "steps stay off stdout: {reply}");

    let all = sessions(&app).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let id = all[0]["id"].as_str().unwrap().to_owned();
    assert!(err.contains(&id), "the session's id is shown: {err}");
    let msgs = messages(&app, &id).await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content"], "run `echo from-cli`");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(reply.trim_end(), msgs[1]["content"].as_str().unwrap());

    // Closed, then restored by `-r`; prompts from stdin answered in order.
    app.close(&app.admin_token, &id).await;
    let input = "run `echo first-answer`\n\nrun `echo second-answer`\n/status\n";
    let out = run(home, &["session", "-r", &id], input).await;
    let text = ok(&out);
    let first = text.find("first-answer").expect("the first reply");
    let second = text.find("second-answer").expect("the second reply");
    assert!(first < second, "{text}");
    assert!(
        !text.contains("from-cli"),
        "old replies are not shown: {text}"
    );
    assert!(text.contains(&format!("id:       {id}")), "{text}");
    assert!(text.contains("state:    running"), "{text}");
    assert!(text.contains("messages: 6"), "{text}");
    assert!(text.contains("busy:"), "{text}");
    let msgs = messages(&app, &id).await;
    let users: Vec<&str> = msgs
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        users,
        [
            "run `echo from-cli`",
            "run `echo first-answer`",
            "run `echo second-answer`"
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_takes_secrets_instructions_and_setup_from_flags_and_files() {
    let app = mock_app().await;
    let home = logged_in(&app).await;
    let home = home.path();

    // Bad secrets: a one-line error, nothing created.
    for bad in ["{oops", r#"{"TOKEN": 1}"#, r#"["TOKEN"]"#] {
        let out = run(home, &["session", "-S", bad, "-p", "hi"], "").await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains("--secrets must be a JSON object"), "{err}");
        assert_eq!(stdout(&out), "");
    }
    assert!(sessions(&app).await.is_empty());

    let files = tempfile::tempdir().unwrap();
    let instructions = files.path().join("instructions.md");
    let setup = files.path().join("setup.sh");
    std::fs::write(&instructions, "Rules from the file.\n").unwrap();
    std::fs::write(&setup, "echo from-setup-file > /session/data/file.txt\n").unwrap();
    let out = run(
        home,
        &[
            "session",
            "-n",
            "flags",
            "-S",
            r#"{"TOKEN":"abc123xyz"}"#,
            "-i",
            "Inline rules.",
            "-if",
            instructions.to_str().unwrap(),
            "-s",
            "echo from-setup-flag > /session/data/flag.txt",
            "-sf",
            setup.to_str().unwrap(),
            "-p",
            "run `cat /session/data/flag.txt /session/data/file.txt /session/code/instructions.md`",
        ],
        "",
    )
    .await;
    let reply = ok(&out);
    for wanted in [
        "from-setup-flag",
        "from-setup-file",
        "Inline rules.",
        "Rules from the file.",
    ] {
        assert!(reply.contains(wanted), "{wanted} missing: {reply}");
    }
    let all = sessions(&app).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let s = &all[0];
    assert_eq!(s["name"], "flags");
    assert_eq!(s["instructions"], "Inline rules.\n\nRules from the file.\n");
    assert_eq!(
        s["setup"],
        "echo from-setup-flag > /session/data/flag.txt\necho from-setup-file > /session/data/file.txt\n"
    );
    assert_eq!(s["secrets"], json!(["TOKEN"]));
    let id = s["id"].as_str().unwrap();
    assert_eq!(
        app.run(&app.admin_token, id, "cat /session/secrets/TOKEN")
            .await
            .trim(),
        "abc123xyz"
    );
    app.stop().await;
}

/// Waits for a `tool_use` event of session `id` whose command contains `cmd`.
async fn await_tool_use(app: &TestApp, id: &str, cmd: &str) {
    await_some(&format!("the agent to run {cmd}"), 120, || async {
        let r = app
            .get(
                &format!("/api/v0/sessions/{id}/events?limit=1000"),
                Some(&app.admin_token),
            )
            .await;
        r.body.as_array()?.iter().find(|e| {
            e["type"] == "tool_use"
                && e["metadata"]["input"]["command"]
                    .as_str()
                    .is_some_and(|c| c.contains(cmd))
        })?;
        Some(())
    })
    .await
}

fn interrupt(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("a running child") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remix_without_data_and_ctrl_c_cancels_then_leaves() {
    let app = mock_app().await;
    let token = app.admin_token.clone();
    let home = logged_in(&app).await;
    let home = home.path();
    let parent = app.session(&token, json!({"name": "parent"})).await;
    app.await_state(&token, &parent, "running").await;
    app.run(
        &token,
        &parent,
        "echo data > /session/data/d.txt; echo code > /session/code/c.txt",
    )
    .await;

    // -R ID -d false: a child with the parent's code and not its data.
    let out = run(
        home,
        &["session", "-R", &parent, "-d", "false", "-n", "child"],
        "",
    )
    .await;
    ok(&out);
    let child = sessions(&app)
        .await
        .into_iter()
        .find(|s| s["parent_id"] == parent.as_str())
        .expect("the remix");
    assert_eq!(child["name"], "child");
    assert_eq!(child["state"], "running", "the CLI waited for it: {child}");
    let child = child["id"].as_str().unwrap().to_owned();
    let probe = "cat /session/data/d.txt 2>/dev/null || echo no-data; \
                 cat /session/code/c.txt 2>/dev/null || echo no-code";
    assert_eq!(app.run(&token, &child, probe).await, "no-data\ncode\n");

    // Ctrl-C during a step cancels the agent's work; the reply says so.
    let mut cli = raworc(home, &["session", "-r", &child]).spawn().unwrap();
    let mut stdin = cli.stdin.take().unwrap();
    stdin
        .write_all(b"run `sleep 2; echo slept`\n")
        .await
        .unwrap();
    await_tool_use(&app, &child, "sleep 2").await;
    interrupt(&cli);
    drop(stdin);
    let out = finish(cli).await;
    let reply = ok(&out);
    assert!(reply.contains("cancelled"), "{reply}");
    assert!(stderr(&out).contains("cancelling…"), "{}", stderr(&out));

    // A second Ctrl-C in the same step leaves at once.
    let mut cli = raworc(home, &["session", "-r", &child]).spawn().unwrap();
    let mut stdin = cli.stdin.take().unwrap();
    stdin.write_all(b"run `sleep 20`\n").await.unwrap();
    await_tool_use(&app, &child, "sleep 20").await;
    interrupt(&cli);
    tokio::time::sleep(Duration::from_millis(500)).await;
    interrupt(&cli);
    let out = tokio::time::timeout(Duration::from_secs(10), cli.wait_with_output())
        .await
        .expect("the CLI leaves at the second Ctrl-C")
        .unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    app.stop().await;
}

#[tokio::test]
async fn help_lists_every_flag() {
    let home = tempfile::tempdir().unwrap();
    let out = run(home.path(), &["session", "--help"], "").await;
    let help = ok(&out);
    for flag in [
        "-r, --restore",
        "-R, --remix",
        "-d, --data",
        "-c, --code",
        "-S, --secrets",
        "-i, --instructions",
        "--instructions-file",
        "-if PATH",
        "-s, --setup",
        "--setup-file",
        "-sf PATH",
        "-p, --prompt",
        "-n, --name",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
}
