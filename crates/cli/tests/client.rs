//! The CLI against a scripted one-request HTTP server (no real Raworc):
//! argument parsing as the binary flattens it, and the request/response
//! handling of login, token and api.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use clap::{CommandFactory, Parser};
use raworc_cli::config::Config;
use raworc_cli::{run_in, ClientCommand, Context};

/// Like the real binary: the client commands flattened next to `serve`.
#[derive(Parser, Debug)]
#[command(name = "raworc")]
struct Cli {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(clap::Subcommand, Debug)]
enum Top {
    Serve,
    #[command(flatten)]
    Client(ClientCommand),
}

fn parse(args: &[&str]) -> ClientCommand {
    let mut argv = vec!["raworc"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).unwrap().cmd {
        Top::Client(c) => c,
        Top::Serve => panic!("parsed as serve"),
    }
}

#[test]
fn the_command_tree_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn flags_match_the_original_cli() {
    match parse(&["login", "-u", "admin", "-p", "pw", "-s", "http://h:1"]) {
        ClientCommand::Login(a) => {
            assert_eq!((a.user.as_str(), a.pass.as_str()), ("admin", "pw"));
            assert_eq!(a.server.as_deref(), Some("http://h:1"));
        }
        other => panic!("{other:?}"),
    }
    match parse(&["token", "-p", "bob", "-t", "user"]) {
        ClientCommand::Token(a) => {
            assert_eq!(a.principal, "bob");
            assert_eq!(a.principal_type, raworc_api::PrincipalType::User);
        }
        other => panic!("{other:?}"),
    }
    assert!(Cli::try_parse_from(["raworc", "token", "-p", "bob", "-t", "root"]).is_err());
    match parse(&[
        "api", "sessions", "-m", "post", "-b", "{}", "-H", "A: 1", "-H", "B: 2", "--raw", "-s",
    ]) {
        ClientCommand::Api(a) => {
            assert_eq!(a.endpoint, "sessions");
            assert_eq!(a.method, "post");
            assert_eq!(a.headers, ["A: 1", "B: 2"]);
            assert!(a.raw && a.status);
        }
        other => panic!("{other:?}"),
    }
    match parse(&["api", "version", "--raw", "-p"]) {
        ClientCommand::Api(a) => assert!(a.pretty && !a.raw, "the last of -p/--raw wins"),
        other => panic!("{other:?}"),
    }
    match parse(&["start", "-r", "--bind", "0.0.0.0:9100", "--data-dir", "/d"]) {
        ClientCommand::Start(a) => {
            assert!(a.restart);
            assert_eq!(a.bind, "0.0.0.0:9100");
        }
        other => panic!("{other:?}"),
    }
    match parse(&["start"]) {
        ClientCommand::Start(a) => assert_eq!(a.bind, "127.0.0.1:9000"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(parse(&["stop", "-y"]), ClientCommand::Stop(a) if a.yes));
    assert!(matches!(parse(&["clean", "-y", "-a"]), ClientCommand::Clean(a) if a.yes && a.all));
    assert!(
        matches!(parse(&["reset", "-y", "-s"]), ClientCommand::Reset(a) if a.yes && a.services_only)
    );
    assert!(matches!(parse(&["logout"]), ClientCommand::Logout));
    assert!(matches!(parse(&["auth", "-t", "x"]), ClientCommand::Auth(a) if a.token.is_some()));
}

/// What the fake server saw.
struct Seen {
    request_line: String,
    headers: Vec<String>,
    body: String,
}

/// Serves exactly one request with `status` and a JSON `body`.
fn one_shot(status: &str, body_out: &'static str) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let status = status.to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut headers = Vec::new();
        let mut len = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            headers.push(line);
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body_out.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body_out.as_bytes()).unwrap();
        let _ = tx.send(Seen {
            request_line: request_line.trim_end().to_string(),
            headers,
            body: String::from_utf8(body).unwrap(),
        });
    });
    (base, rx)
}

fn ctx(dir: &tempfile::TempDir, server: &str) -> Context {
    Context {
        home: dir.path().join("home"),
        env_server: Some(server.to_string()),
    }
}

#[tokio::test]
async fn login_saves_server_token_and_user() {
    let (base, seen) = one_shot(
        "200 OK",
        r#"{"token":"tok123","token_type":"Bearer","expires_at":"2030-01-01T00:00:00Z","user":"admin","role":"admin"}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(&dir, "http://unused:1");
    let cmd = parse(&["login", "-u", "admin", "-p", "pw", "-s", &base]);
    run_in(cmd, &ctx).await.unwrap();
    let seen = seen.recv().unwrap();
    assert_eq!(
        seen.request_line,
        "POST /api/v0/operators/admin/login HTTP/1.1"
    );
    assert_eq!(seen.body, r#"{"pass":"pw"}"#);
    let cfg = Config::load(&ctx.home).unwrap();
    assert_eq!(cfg.server.as_deref(), Some(base.as_str()));
    assert_eq!(cfg.token.as_deref(), Some("tok123"));
    assert_eq!(cfg.user.as_deref(), Some("admin"));
}

#[tokio::test]
async fn a_wrong_password_is_a_plain_401() {
    let (base, _seen) = one_shot(
        "401 Unauthorized",
        r#"{"error":"invalid credentials","status":401}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let cmd = parse(&["login", "-u", "admin", "-p", "bad", "-s", &base]);
    let err = run_in(cmd, &ctx(&dir, &base)).await.unwrap_err();
    assert_eq!(format!("{err:#}"), "401 Unauthorized: invalid credentials");
    assert!(Config::load(&dir.path().join("home"))
        .unwrap()
        .token
        .is_none());
}

#[tokio::test]
async fn api_sends_the_token_and_maps_404() {
    let (base, seen) = one_shot(
        "404 Not Found",
        r#"{"error":"session 'x' not found","status":404}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(&dir, &base);
    Config {
        token: Some("tok".into()),
        ..Default::default()
    }
    .save(&ctx.home)
    .unwrap();
    let cmd = parse(&["api", "/sessions/x", "-m", "post", "-H", "X-Test: 1"]);
    let err = run_in(cmd, &ctx).await.unwrap_err();
    assert_eq!(format!("{err:#}"), "404 Not Found: session 'x' not found");
    let seen = seen.recv().unwrap();
    assert_eq!(seen.request_line, "POST /api/v0/sessions/x HTTP/1.1");
    assert_eq!(seen.body, "{}");
    let has = |h: &str| seen.headers.iter().any(|l| l.eq_ignore_ascii_case(h));
    assert!(has("authorization: Bearer tok"));
    assert!(has("content-type: application/json"));
    assert!(has("x-test: 1"));
}

#[tokio::test]
async fn api_without_login_gets_the_login_hint_on_401() {
    let (base, seen) = one_shot(
        "401 Unauthorized",
        r#"{"error":"missing token","status":401}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let err = run_in(parse(&["api", "sessions"]), &ctx(&dir, &base))
        .await
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "not logged in: run 'raworc login -u admin -p admin'"
    );
    let seen = seen.recv().unwrap();
    assert_eq!(seen.request_line, "GET /api/v0/sessions HTTP/1.1");
    assert!(!seen
        .headers
        .iter()
        .any(|l| l.to_ascii_lowercase().starts_with("authorization")));
}

#[tokio::test]
async fn invalid_json_body_fails_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = parse(&["api", "sessions", "-m", "POST", "-b", "{oops"]);
    let err = run_in(cmd, &ctx(&dir, "http://127.0.0.1:1"))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").starts_with("--body is not valid JSON"));
}

#[tokio::test]
async fn token_needs_a_login_and_sends_the_principal() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_in(
        parse(&["token", "-p", "bob", "-t", "USER"]),
        &ctx(&dir, "http://127.0.0.1:1"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "not logged in: run 'raworc login -u admin -p admin'"
    );

    let (base, seen) = one_shot(
        "201 Created",
        r#"{"token":"minted","token_type":"Bearer","expires_at":"2030-01-01T00:00:00Z"}"#,
    );
    let ctx = ctx(&dir, &base);
    Config {
        token: Some("admintok".into()),
        ..Default::default()
    }
    .save(&ctx.home)
    .unwrap();
    run_in(parse(&["token", "-p", "bob", "-t", "operator"]), &ctx)
        .await
        .unwrap();
    let seen = seen.recv().unwrap();
    assert_eq!(seen.request_line, "POST /api/v0/auth/token HTTP/1.1");
    let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(body["principal"], "bob");
    assert_eq!(body["principal_type"], "Operator");
}

#[tokio::test]
async fn auth_status_reports_an_expired_token() {
    let (base, _seen) = one_shot(
        "401 Unauthorized",
        r#"{"error":"token expired","status":401}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(&dir, &base);
    Config {
        token: Some("old".into()),
        user: Some("admin".into()),
        ..Default::default()
    }
    .save(&ctx.home)
    .unwrap();
    let err = run_in(parse(&["auth"]), &ctx).await.unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "401 Unauthorized: token expired; your token may have expired — run 'raworc login'"
    );
}

#[test]
fn session_flags_parse_as_the_binary_reads_them() {
    let parse_session = |args: &[&str]| {
        let mut argv = vec!["raworc", "session"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(raworc_cli::expand_args(argv)) {
            Ok(Cli {
                cmd: Top::Client(ClientCommand::Session(a)),
            }) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    };
    let a = parse_session(&[
        "-S", "{}", "-i", "x", "-if", "i.md", "-s", "y", "-sf", "s.sh", "-p", "go", "-n", "demo",
    ]);
    assert_eq!(a.instructions_file.as_deref(), Some("i.md".as_ref()));
    assert_eq!(a.setup_file.as_deref(), Some("s.sh".as_ref()));
    assert_eq!(a.prompt.as_deref(), Some("go"));
    let a = parse_session(&["-R", "abc", "-d", "false", "-c", "true"]);
    assert_eq!(a.remix.as_deref(), Some("abc"));
    assert_eq!((a.data, a.code), (Some(false), Some(true)));
    let a = parse_session(&["-r", "abc"]);
    assert_eq!(a.restore.as_deref(), Some("abc"));
}

#[tokio::test]
async fn session_needs_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_in(
        parse(&["session", "-p", "hello"]),
        &ctx(&dir, "http://127.0.0.1:1"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "not logged in: run 'raworc login -u admin -p admin'"
    );
}

#[tokio::test]
async fn session_with_bad_secrets_sends_nothing() {
    let (base, seen) = one_shot("201 Created", "{}");
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(&dir, &base);
    Config {
        token: Some("tok".into()),
        ..Default::default()
    }
    .save(&ctx.home)
    .unwrap();
    let err = run_in(parse(&["session", "-S", "{oops"]), &ctx)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").starts_with("--secrets must be a JSON object of name → value"),
        "{err:#}"
    );
    assert!(seen
        .recv_timeout(std::time::Duration::from_millis(300))
        .is_err());
}

#[tokio::test]
async fn session_create_sends_only_what_was_given_and_reports_a_refusal() {
    let (base, seen) = one_shot(
        "429 Too Many Requests",
        r#"{"error":"every computer is taken","status":429}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(&dir, &base);
    Config {
        token: Some("tok".into()),
        ..Default::default()
    }
    .save(&ctx.home)
    .unwrap();
    let cmd = parse(&[
        "session",
        "-S",
        r#"{"TOKEN":"abc123xyz"}"#,
        "-i",
        "be brief",
        "-p",
        "hello",
    ]);
    let err = run_in(cmd, &ctx).await.unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "cannot create the session: 429 Too Many Requests: every computer is taken"
    );
    let seen = seen.recv().unwrap();
    assert_eq!(seen.request_line, "POST /api/v0/sessions HTTP/1.1");
    assert!(seen
        .headers
        .iter()
        .any(|h| h == "authorization: Bearer tok"));
    let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"instructions": "be brief", "secrets": {"TOKEN": "abc123xyz"}}),
        "the prompt is sent as a message once the session runs"
    );
}
