//! The real `raworc` binary end to end: start a server in the background,
//! log in, call the API, mint a token, log out, stop and clean.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

/// Runs `raworc args…` with `RAWORC_HOME=home` and no other Raworc settings
/// from the environment (the started server inherits them) but the test
/// image, so that a started server has computers without building one.
fn raworc(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raworc"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RAWORC_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RAWORC_HOME", home)
        .env("RAWORC_IMAGES_DIR", raworc_testkit::computer::images_dir())
        .env("RUST_LOG", "info")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running raworc")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the command succeeded; returns its stdout.
#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts the command failed with exit code 1; returns its stderr.
#[track_caller]
fn fails(o: Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /health` over plain TCP: `Some(status line)` if anything answers.
fn health(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// Stops a server this test started, should the test fail half way.
struct StopOnDrop {
    home: PathBuf,
    data: PathBuf,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().into_owned();
        let _ = raworc(&self.home, &["stop", "--data-dir", &data]);
    }
}

#[test]
fn start_login_api_token_logout_stop_clean() {
    let tmp = tempfile::tempdir().unwrap();
    // The home is the temp dir, so its default data dir is the one we pass.
    let home = tmp.path().to_path_buf();
    let data = home.join("data");
    let data_arg = data.to_string_lossy().into_owned();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let url = format!("http://127.0.0.1:{port}");
    let _guard = StopOnDrop {
        home: home.clone(),
        data: data.clone(),
    };

    // start
    let out = ok(raworc(
        &home,
        &["start", "--bind", &bind, "--data-dir", &data_arg],
    ));
    assert!(out.contains(&url), "start prints the URL: {out}");
    assert!(
        out.contains("user: admin") && out.contains("password: admin"),
        "start prints the credentials: {out}"
    );
    assert!(out.contains("raworc login -u admin -p admin"), "{out}");
    let answer = health(port).expect("the server answers");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""status":"healthy""#), "{answer}");
    assert!(data.join("raworc.pid").exists());
    assert!(data.join("raworc.db").exists());
    let pid: u32 = std::fs::read_to_string(data.join("raworc.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Starting again finds it running.
    let again = ok(raworc(
        &home,
        &["start", "--bind", &bind, "--data-dir", &data_arg],
    ));
    assert!(again.contains("already running"), "{again}");
    assert!(again.contains(&pid.to_string()), "{again}");

    // login
    let out = ok(raworc(
        &home,
        &["login", "-u", "admin", "-p", "admin", "-s", &url],
    ));
    assert!(out.contains("Logged in"), "{out}");
    assert!(out.contains("admin"), "{out}");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["server"], url.as_str());
    assert!(config["token"].as_str().is_some_and(|t| !t.is_empty()));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("config.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is private");
    }
    let wrong = fails(raworc(
        &home,
        &["login", "-u", "admin", "-p", "wrong-password", "-s", &url],
    ));
    assert!(wrong.contains("401"), "{wrong}");

    // api: create and list
    let created: Value =
        serde_json::from_str(&ok(raworc(&home, &["api", "sessions", "-m", "POST"])))
            .expect("api prints the session as JSON");
    assert_eq!(created["state"], "created");
    assert_eq!(created["owner"], "admin");
    let id = created["id"].as_str().unwrap().to_string();
    let listed: Value = serde_json::from_str(&ok(raworc(&home, &["api", "sessions"]))).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let msg = ok(raworc(
        &home,
        &[
            "api",
            &format!("sessions/{id}/messages"),
            "-m",
            "post",
            "-b",
            r#"{"content": "hello from the cli"}"#,
            "--raw",
            "-s",
        ],
    ));
    let mut lines = msg.lines();
    assert_eq!(lines.next(), Some("HTTP 201 Created"), "{msg}");
    let m: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(m["content"], "hello from the cli");

    // api: an unknown id is a one-line error and exit 1
    let err = fails(raworc(&home, &["api", "sessions/nope"]));
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("404"), "{err}");
    assert!(err.contains("nope"), "{err}");

    // token
    let out = raworc(&home, &["token", "-p", "bob", "-t", "User"]);
    let token = ok(out).trim().to_string();
    assert_eq!(token.lines().count(), 1, "only the token on stdout");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let who: Value = serde_json::from_str(&ok(raworc(
        &home,
        &[
            "api",
            "auth",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ],
    )))
    .unwrap();
    assert_eq!(who["user"], "bob");
    assert_eq!(who["type"], "User");
    let bobs: Value = serde_json::from_str(&ok(raworc(
        &home,
        &[
            "api",
            "sessions",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ],
    )))
    .unwrap();
    assert_eq!(
        bobs,
        serde_json::json!([]),
        "bob sees none of admin's sessions"
    );

    // logout: the token is gone, the server is kept
    let out = ok(raworc(&home, &["logout"]));
    assert!(out.contains("Logged out"), "{out}");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["server"], url.as_str());
    assert!(config.get("token").is_none());
    let err = fails(raworc(&home, &["api", "sessions"]));
    assert!(
        err.contains("login") || err.contains("401"),
        "the error says to log in: {err}"
    );
    let err = fails(raworc(&home, &["token", "-p", "bob", "-t", "User"]));
    assert!(err.contains("login"), "{err}");

    // stop (the default data dir is the one we started with)
    let out = ok(raworc(&home, &["stop"]));
    assert!(out.contains("Stopped"), "{out}");
    assert!(out.contains(&pid.to_string()), "{out}");
    assert!(health(port).is_none(), "nothing answers after stop");
    assert!(!data.join("raworc.pid").exists());
    let out = ok(raworc(&home, &["stop"]));
    assert!(out.contains("not running"), "{out}");
    let err = fails(raworc(&home, &["api", "version"]));
    assert!(err.contains("cannot reach"), "{err}");

    // clean
    let log = std::fs::read_to_string(data.join("raworc.log")).unwrap();
    assert!(log.contains("Raworc is listening"), "{log}");
    let out = ok(raworc(&home, &["clean", "-y", "--data-dir", &data_arg]));
    assert!(out.contains("Removed"), "{out}");
    assert!(!data.exists(), "the data dir is gone");
    assert!(
        home.join("config.json").exists(),
        "clean keeps the CLI config"
    );
    let out = ok(raworc(&home, &["clean", "-y", "--data-dir", &data_arg]));
    assert!(out.contains("Nothing to clean"), "{out}");
}
