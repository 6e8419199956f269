//! Authorization matrix: every `/api/v0` endpoint × every kind of caller,
//! on every database.
//!
//! Each row of [`ROWS`] is one request (method, path template, body) and the
//! status each caller must get. Callers:
//!
//! * anonymous — no `Authorization` header;
//! * expired — an admin token signed with the server's real key, correct
//!   token generation, `exp` in the past;
//! * forged — the same admin claims (valid `exp`) signed with another secret;
//! * garbage — a bearer value that is not a JWT at all;
//! * owner — a `user`-role operator that owns the session `{sid}`;
//! * other — another `user`-role operator;
//! * admin — the bootstrap `admin` operator.
//!
//! The first four share the "unauth" column: 401 everywhere except the
//! public routes (version, login). Sessions of others answer 404, not 403,
//! so that their ids cannot be probed. A denied call (any non-2xx) must also
//! leave operators, sessions and the target session's messages unchanged.

use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use raworc_api::{OperatorRole, PrincipalType};
use raworc_server::auth::jwt::{Claims, JwtKeys};
use raworc_testkit::{backend_tests, Backend, Reply, StatusCode, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

backend_tests!(rbac_matrix);

/// What has to exist, newly made, before each caller's attempt of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    /// Only the shared fixtures.
    No,
    /// `{sid}` is a new session of the owner.
    Session,
    /// `{sid}` is a new, closed session of the owner.
    ClosedSession,
    /// `{target}` is a new `user`-role operator.
    Operator,
}

/// Expected status: [anonymous/expired/forged/garbage, owner, other, admin].
type Expect = [u16; 4];

/// Path placeholders: `{sid}` a session of the owner, `{admin_sid}` a session
/// of the admin, `{owner}`, `{other}`, `{target}` (a third `user` operator),
/// `{self}` (the caller's own operator; the owner for unauthenticated
/// callers), `{new}` a name not yet used, `{file}` a path inside a computer, `{shot}` a screenshot's id. Bodies use the same placeholders.
type Row = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Fresh,
    Expect,
);

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // method   path                                 body                                                          fresh                 anon owner other admin
    ("GET",    "/version",                           None,                                                         Fresh::No,            [200, 200, 200, 200]),
    ("GET",    "/health",                            None,                                                         Fresh::No,            [200, 200, 200, 200]),
    // Operators: admin-only, except reading oneself and changing one's own password.
    ("GET",    "/operators",                         None,                                                         Fresh::No,            [401, 403, 403, 200]),
    ("POST",   "/operators",                         Some(r#"{"user":"{new}","pass":"new-op-password","role":"user"}"#), Fresh::No,     [401, 403, 403, 201]),
    ("POST",   "/operators",                         Some(r#"{"user":"{new}","pass":"new-op-password","role":"admin"}"#), Fresh::No,    [401, 403, 403, 201]),
    ("GET",    "/operators/{self}",                  None,                                                         Fresh::No,            [401, 200, 200, 200]),
    ("GET",    "/operators/{owner}",                 None,                                                         Fresh::No,            [401, 200, 403, 200]),
    // A user cannot tell a missing operator from one it may not see.
    ("GET",    "/operators/nobody",                  None,                                                         Fresh::No,            [401, 403, 403, 404]),
    ("GET",    "/operators/{target}",                None,                                                         Fresh::No,            [401, 403, 403, 200]),
    ("PUT",    "/operators/{target}",                Some(r#"{"description":"changed"}"#),                         Fresh::No,            [401, 403, 403, 200]),
    ("PUT",    "/operators/{owner}",                 Some(r#"{"description":"changed"}"#),                         Fresh::No,            [401, 403, 403, 200]),
    ("PUT",    "/operators/{self}",                  Some(r#"{"role":"admin"}"#),                                  Fresh::No,            [401, 403, 403, 200]),
    ("DELETE", "/operators/{target}",                None,                                                         Fresh::Operator,      [401, 403, 403, 200]),
    ("DELETE", "/operators/{owner}",                 None,                                                         Fresh::No,            [401, 403, 403, 0]),
    ("PUT",    "/operators/{self}/password",         Some(r#"{"pass":"{self}-password"}"#),                        Fresh::No,            [401, 200, 200, 200]),
    ("PUT",    "/operators/{owner}/password",        Some(r#"{"pass":"owner-password"}"#),                         Fresh::No,            [401, 200, 403, 200]),
    ("PUT",    "/operators/{target}/password",       Some(r#"{"pass":"changed-password"}"#),                       Fresh::No,            [401, 403, 403, 200]),
    // Login is public: a bad or missing token is irrelevant to it.
    ("POST",   "/operators/{owner}/login",           Some(r#"{"pass":"owner-password"}"#),                         Fresh::No,            [200, 200, 200, 200]),
    // Tokens.
    ("GET",    "/auth",                              None,                                                         Fresh::No,            [401, 200, 200, 200]),
    ("POST",   "/auth/token",                        Some(r#"{"principal":"minted","principal_type":"User"}"#),    Fresh::No,            [401, 403, 403, 201]),
    ("POST",   "/auth/token",                        Some(r#"{"principal":"{owner}","principal_type":"Operator"}"#), Fresh::No,          [401, 403, 403, 201]),
    // Sessions: everyone authenticated has their own; others' are hidden (404).
    ("GET",    "/sessions",                          None,                                                         Fresh::No,            [401, 200, 200, 200]),
    ("POST",   "/sessions",                          Some(r#"{"name":"mine"}"#),                                   Fresh::No,            [401, 201, 201, 201]),
    ("GET",    "/sessions/{sid}",                    None,                                                         Fresh::No,            [401, 200, 404, 200]),
    ("GET",    "/sessions/session-missing",          None,                                                         Fresh::No,            [401, 404, 404, 404]),
    ("GET",    "/sessions/{admin_sid}",              None,                                                         Fresh::No,            [401, 404, 404, 200]),
    ("PUT",    "/sessions/{sid}",                    Some(r#"{"name":"renamed"}"#),                                Fresh::No,            [401, 200, 404, 200]),
    ("PUT",    "/sessions/{admin_sid}",              Some(r#"{"name":"renamed"}"#),                                Fresh::No,            [401, 404, 404, 200]),
    ("DELETE", "/sessions/{sid}",                    None,                                                         Fresh::Session,       [401, 200, 404, 200]),
    // No computer runtime exists, so a session never runs and cannot be
    // paused: 409 shows the call got past authorization to the state machine.
    ("PUT",    "/sessions/{sid}/state",              Some(r#"{"state":"paused"}"#),                                Fresh::No,            [401, 409, 404, 409]),
    ("POST",   "/sessions/{sid}/close",              None,                                                         Fresh::Session,       [401, 200, 404, 200]),
    ("POST",   "/sessions/{sid}/restore",            None,                                                         Fresh::ClosedSession, [401, 200, 404, 200]),
    ("POST",   "/sessions/{sid}/remix",              None,                                                         Fresh::No,            [401, 201, 404, 201]),
    ("POST",   "/sessions/{admin_sid}/remix",        None,                                                         Fresh::No,            [401, 404, 404, 201]),
    // Messages follow the session's visibility; only admins post non-user roles.
    ("GET",    "/sessions/{sid}/messages",           None,                                                         Fresh::No,            [401, 200, 404, 200]),
    ("POST",   "/sessions/{sid}/messages",           Some(r#"{"content":"hello"}"#),                               Fresh::No,            [401, 201, 404, 201]),
    ("POST",   "/sessions/{sid}/messages",           Some(r#"{"content":"hello","role":"assistant"}"#),            Fresh::No,            [401, 403, 404, 201]),
    ("DELETE", "/sessions/{sid}/messages",           None,                                                         Fresh::No,            [401, 200, 404, 200]),
    ("GET",    "/sessions/{sid}/messages/count",     None,                                                         Fresh::No,            [401, 200, 404, 200]),
    ("GET",    "/sessions/{admin_sid}/messages/count", None,                                                       Fresh::No,            [401, 404, 404, 200]),
    // Events and the agent follow the session's visibility (a stream's 200 is
    // its start; its body goes on). Without a runtime there is no agent, so
    // no screenshot exists and a cancel stops nothing.
    ("GET",    "/sessions/stream",                   None,                                                         Fresh::No,            [401, 200, 200, 200]),
    ("GET",    "/sessions/{sid}/events",             None,                                                         Fresh::No,            [401, 200, 404, 200]),
    ("GET",    "/sessions/{admin_sid}/events",       None,                                                         Fresh::No,            [401, 404, 404, 200]),
    ("GET",    "/sessions/{sid}/events/stream",      None,                                                         Fresh::No,            [401, 200, 404, 200]),
    ("GET",    "/sessions/{admin_sid}/events/stream", None,                                                        Fresh::No,            [401, 404, 404, 200]),
    ("GET",    "/sessions/{sid}/screenshots/{shot}", None,                                                         Fresh::No,            [401, 404, 404, 404]),
    ("POST",   "/sessions/{sid}/cancel",             None,                                                         Fresh::No,            [401, 202, 404, 202]),
    ("POST",   "/sessions/{admin_sid}/cancel",       None,                                                         Fresh::No,            [401, 404, 404, 202]),
    // The direct computer API follows the session's visibility; without a
    // runtime no session runs, so the owner and admin get 409 (not running).
    ("GET",    "/sessions/{sid}/screenshot",         None,                                                         Fresh::No,            [401, 409, 404, 409]),
    ("POST",   "/sessions/{sid}/computer",           Some(r#"{"action":"screenshot"}"#),                           Fresh::No,            [401, 409, 404, 409]),
    ("POST",   "/sessions/{sid}/exec",               Some(r#"{"command":"true"}"#),                                Fresh::No,            [401, 409, 404, 409]),
    ("GET",    "/sessions/{sid}/files/{file}",       None,                                                         Fresh::No,            [401, 409, 404, 409]),
    ("PUT",    "/sessions/{sid}/files/{file}",       Some(r#"{"any":"bytes"}"#),                                   Fresh::No,            [401, 409, 404, 409]),
    ("GET",    "/sessions/{sid}/files?path=/session/data", None,                                                   Fresh::No,            [401, 409, 404, 409]),
    ("GET",    "/sessions/{admin_sid}/files?path=/session/data", None,                                             Fresh::No,            [401, 404, 404, 409]),
    ("GET",    "/sessions/{admin_sid}/screenshot",   None,                                                         Fresh::No,            [401, 404, 404, 409]),
    // Audit: admins only.
    ("GET",    "/audit",                             None,                                                         Fresh::No,            [401, 403, 403, 200]),
];

/// `0` in the admin column: the admin deleting the owner would break the
/// remaining rows, so that one cell is not run (deleting operators as admin
/// is covered by `DELETE /operators/{target}`).
const SKIP: u16 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Expired,
    Forged,
    Garbage,
    Owner,
    Other,
    Admin,
}

const CALLERS: [Caller; 7] = [
    Caller::Anonymous,
    Caller::Expired,
    Caller::Forged,
    Caller::Garbage,
    Caller::Owner,
    Caller::Other,
    Caller::Admin,
];

impl Caller {
    fn expected(self, e: &Expect) -> u16 {
        match self {
            Caller::Anonymous | Caller::Expired | Caller::Forged | Caller::Garbage => e[0],
            Caller::Owner => e[1],
            Caller::Other => e[2],
            Caller::Admin => e[3],
        }
    }

    /// The operator this caller is, or the owner for unauthenticated callers.
    fn self_name(self) -> &'static str {
        match self {
            Caller::Other => OTHER,
            Caller::Admin => ADMIN,
            _ => OWNER,
        }
    }
}

const OWNER: &str = "owner";
const OTHER: &str = "other";
const TARGET: &str = "third";
const ADMIN: &str = "admin";

/// Everything the rows refer to.
struct Fixture<'a> {
    app: &'a TestApp,
    keys: JwtKeys,
    forged_keys: JwtKeys,
    owner: String,
    other: String,
    admin: String,
    sid: String,
    admin_sid: String,
    counter: u32,
}

/// What a denied call must not change.
#[derive(Debug, PartialEq)]
struct Snapshot {
    operators: Vec<(String, OperatorRole, Option<String>, i64, i64)>,
    sessions: Vec<(String, String, Option<String>, i64, i64)>,
    messages: Option<i64>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl<'a> Fixture<'a> {
    async fn new(app: &'a TestApp) -> Fixture<'a> {
        let key_b64 = std::fs::read_to_string(app.data_dir.join("jwt.key")).expect("jwt.key");
        let secret = STANDARD.decode(key_b64.trim()).expect("jwt.key is base64");
        let owner = app.operator(OWNER, "user").await;
        let other = app.operator(OTHER, "user").await;
        // The target operator gets no token: it is only acted upon.
        let r = app
            .post(
                "/api/v0/operators",
                Some(&app.admin_token),
                json!({"user": TARGET, "pass": "third-password", "role": "user"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let sid = app
            .session(&owner, json!({"name": "owned", "prompt": "first"}))
            .await;
        let admin_sid = app
            .session(
                &app.admin_token,
                json!({"name": "admins", "prompt": "first"}),
            )
            .await;
        Fixture {
            app,
            keys: JwtKeys::from_secret(&secret),
            forged_keys: JwtKeys::from_secret(b"not the server's secret, but a well-formed one"),
            owner,
            other,
            admin: app.admin_token.clone(),
            sid,
            admin_sid,
            counter: 0,
        }
    }

    /// The admin's claims with the current token generation.
    async fn admin_claims(&self, exp: i64) -> Claims {
        let op = self
            .app
            .state()
            .store
            .get_operator(ADMIN)
            .await
            .unwrap()
            .expect("admin exists");
        Claims {
            sub: ADMIN.into(),
            typ: PrincipalType::Operator,
            role: OperatorRole::Admin,
            r#gen: Some(op.token_gen),
            iat: now() - 7200,
            exp,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    async fn token(&self, caller: Caller) -> Option<String> {
        match caller {
            Caller::Anonymous => None,
            Caller::Expired => {
                let claims = self.admin_claims(now() - 3600).await;
                Some(self.keys.issue(&claims).unwrap())
            }
            Caller::Forged => {
                let claims = self.admin_claims(now() + 3600).await;
                Some(self.forged_keys.issue(&claims).unwrap())
            }
            Caller::Garbage => Some("garbage.not-a.jwt".into()),
            Caller::Owner => Some(self.owner.clone()),
            Caller::Other => Some(self.other.clone()),
            Caller::Admin => Some(self.admin.clone()),
        }
    }

    /// The bad tokens differ from a good one only in what they mean to test.
    async fn check_forgeries(&self) {
        let good = self
            .keys
            .issue(&self.admin_claims(now() + 3600).await)
            .unwrap();
        let r = self.app.get("/api/v0/auth", Some(&good)).await;
        assert_eq!(r.status, StatusCode::OK, "control token: {:?}", r.body);
        assert_eq!(r.body["role"], "admin");
        let expired = self.token(Caller::Expired).await.unwrap();
        let r = self.app.get("/api/v0/auth", Some(&expired)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.error().contains("expired"), "{}", r.error());
        let forged = self.token(Caller::Forged).await.unwrap();
        let r = self.app.get("/api/v0/auth", Some(&forged)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.error(), "invalid token");
    }

    async fn new_session(&self, closed: bool) -> String {
        let id = self.app.session(&self.owner, json!({"prompt": "hi"})).await;
        if closed {
            let r = self
                .app
                .post(
                    &format!("/api/v0/sessions/{id}/close"),
                    Some(&self.owner),
                    json!({}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "closing: {:?}", r.body);
        }
        id
    }

    async fn new_operator(&mut self) -> String {
        self.counter += 1;
        let name = format!("target-{}", self.counter);
        let r = self
            .app
            .post(
                "/api/v0/operators",
                Some(&self.admin),
                json!({"user": name, "pass": "target-password", "role": "user"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        name
    }

    async fn snapshot(&self, session: Option<&str>) -> Snapshot {
        let store = &self.app.state().store;
        let operators = store
            .list_operators(10_000, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.name, o.role, o.description, o.token_gen, o.updated_at))
            .collect();
        let sessions = store
            .list_sessions(None, None, 10_000, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|s| {
                (
                    s.id,
                    s.state.as_str().to_string(),
                    s.name,
                    s.updated_at,
                    s.message_seq,
                )
            })
            .collect();
        let messages = match session {
            Some(id) => Some(store.count_messages(id).await.unwrap()),
            None => None,
        };
        Snapshot {
            operators,
            sessions,
            messages,
        }
    }

    /// Logs `name` in again after its password (and so its token) changed.
    async fn relogin(&mut self, name: &str) {
        if ![OWNER, OTHER, ADMIN].contains(&name) {
            return;
        }
        let token = self.app.login(name, &format!("{name}-password")).await;
        match name {
            OWNER => self.owner = token,
            OTHER => self.other = token,
            _ => self.admin = token,
        }
    }
}

/// `{x}` placeholders replaced; `{}` for each parameter, and the query
/// string left out, to compare with OpenAPI.
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    let path = path.split('?').next().unwrap_or(path);
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// Every operation in the OpenAPI document has at least one row.
async fn check_coverage(app: &TestApp) {
    let doc = app.get("/api/v0/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let paths = doc.body["paths"].as_object().expect("paths");
    let mut missing = Vec::new();
    let mut count = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            count += 1;
            let want = shape(path.strip_prefix("/api/v0").unwrap_or(path));
            let covered = ROWS
                .iter()
                .any(|r| r.0.eq_ignore_ascii_case(method) && shape(r.1) == want);
            if !covered {
                missing.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert!(
        count >= 24,
        "the OpenAPI document lists only {count} operations"
    );
    assert!(
        missing.is_empty(),
        "endpoints without an authorization row: {missing:?}"
    );
}

/// Checks of the body of a successful reply, beyond its status.
fn check_body(
    method: &str,
    path: &str,
    caller: Caller,
    fx: &Fixture<'_>,
    r: &Reply,
) -> Option<String> {
    match (method, path) {
        ("GET", "/sessions") => {
            let ids: Vec<&str> = r
                .body
                .as_array()?
                .iter()
                .filter_map(|s| s["id"].as_str())
                .collect();
            let sees_owned = ids.contains(&fx.sid.as_str());
            let sees_admins = ids.contains(&fx.admin_sid.as_str());
            let want = match caller {
                Caller::Owner => (true, false),
                Caller::Other => (false, false),
                _ => (true, true),
            };
            ((sees_owned, sees_admins) != want).then(|| {
                format!(
                    "sees (owner's, admin's) session = {:?}, expected {want:?}",
                    (sees_owned, sees_admins)
                )
            })
        }
        ("GET", "/auth") => (r.body["user"] != caller.self_name()).then(|| {
            format!(
                "GET /auth names {} instead of {}",
                r.body["user"],
                caller.self_name()
            )
        }),
        ("POST", "/sessions")
        | ("POST", "/sessions/{sid}/remix")
        | ("POST", "/sessions/{admin_sid}/remix") => (r.body["owner"] != caller.self_name())
            .then(|| format!("new session owned by {}, not the caller", r.body["owner"])),
        _ => None,
    }
}

async fn rbac_matrix(b: Backend) {
    let started = Instant::now();
    // Login limits are exercised in auth.rs; here they would only get in the way.
    let app = TestApp::spawn_with(b, |c| {
        c.login_limit_per_name = 10_000;
        c.login_limit_per_addr = 10_000;
    })
    .await;
    check_coverage(&app).await;
    let mut fx = Fixture::new(&app).await;
    fx.check_forgeries().await;

    let mut failures = Vec::new();
    let mut calls = 0;
    for (row_no, &(method, template, body, fresh, expect)) in ROWS.iter().enumerate() {
        for caller in CALLERS {
            let want = caller.expected(&expect);
            if want == SKIP {
                continue;
            }
            let sid = match fresh {
                Fresh::Session => fx.new_session(false).await,
                Fresh::ClosedSession => fx.new_session(true).await,
                _ => fx.sid.clone(),
            };
            let target = match fresh {
                Fresh::Operator => fx.new_operator().await,
                _ => TARGET.to_string(),
            };
            fx.counter += 1;
            let new = format!("new-{}", fx.counter);
            let fill = |s: &str| {
                s.replace("{sid}", &sid)
                    .replace("{admin_sid}", &fx.admin_sid)
                    .replace("{owner}", OWNER)
                    .replace("{other}", OTHER)
                    .replace("{target}", &target)
                    .replace("{self}", caller.self_name())
                    .replace("{new}", &new)
                    .replace("{file}", "tmp/file.txt")
                    .replace("{shot}", "shot-0190aa")
            };
            let path = format!("/api/v0{}", fill(template));
            let body: Option<Value> =
                body.map(|b| serde_json::from_str(&fill(b)).expect("row body is JSON"));
            let session_in_path = if template.contains("{admin_sid}") {
                Some(fx.admin_sid.clone())
            } else if template.contains("{sid}") {
                Some(sid.clone())
            } else {
                None
            };
            let denied = !(200..300).contains(&want);
            let before = if denied {
                Some(fx.snapshot(session_in_path.as_deref()).await)
            } else {
                None
            };

            let token = fx.token(caller).await;
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let r = app.call(m, &path, token.as_deref(), body).await;
            calls += 1;
            let here =
                format!("row {row_no} `{method} {template}` as {caller:?} ({method} {path})");
            if r.status.as_u16() != want {
                failures.push(format!(
                    "{here}: expected {want}, got {} {}",
                    r.status.as_u16(),
                    r.body
                ));
            } else if denied {
                if r.body["status"] != want || r.error().is_empty() {
                    failures.push(format!(
                        "{here}: error body is not {{error, status}}: {}",
                        r.body
                    ));
                }
                let after = fx.snapshot(session_in_path.as_deref()).await;
                if before.as_ref() != Some(&after) {
                    failures.push(format!(
                        "{here}: denied with {want} but changed state:\n  before {before:?}\n  after  {after:?}"
                    ));
                }
            } else if let Some(problem) = check_body(method, template, caller, &fx, &r) {
                failures.push(format!("{here}: {problem}"));
            }

            // A successful password change revokes that operator's tokens.
            if template.ends_with("/password") && r.status.is_success() {
                let name = path
                    .trim_start_matches("/api/v0/operators/")
                    .trim_end_matches("/password")
                    .to_string();
                fx.relogin(&name).await;
            }
        }
    }

    // Privileges did not leak through the rows above.
    let owner = app
        .state()
        .store
        .get_operator(OWNER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.role, OperatorRole::User, "the owner stayed a user");

    assert!(
        failures.is_empty(),
        "{} of {calls} authorization checks failed on {}:\n{}",
        failures.len(),
        b.name(),
        failures.join("\n")
    );
    eprintln!(
        "rbac matrix on {}: {} rows, {calls} calls in {:.1?}",
        b.name(),
        ROWS.len(),
        started.elapsed()
    );
    app.stop().await;
}
