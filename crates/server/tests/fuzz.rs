//! Property tests against the real router, in process: arbitrary JSON
//! values, byte strings, path segments, query strings and methods never
//! produce a 5xx; every error is `{"error", "status"}` JSON; every mutating
//! call is audited; and the server stays healthy.
//!
//! Each endpoint group runs `PROPTEST_CASES` cases (default 256) per
//! endpoint. The database is SQLite unless `RAWORC_FUZZ_DATABASES` lists
//! others (e.g. `sqlite,postgres,mysql`).

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};
use raworc_server::{AppState, ServerConfig};
use raworc_testkit::{Backend, TestDb};
use serde_json::{json, Map, Value};
use tower::ServiceExt;

const ADMIN_PASSWORD: &str = "fuzz-admin-password";
/// An operator the fuzzer may change at will (the admin is never a target).
const TARGET_OPERATOR: &str = "fuzzer";

/// The router and state over a fresh database, on a runtime of its own.
struct Harness {
    rt: tokio::runtime::Runtime,
    router: Router,
    state: AppState,
    admin: String,
    user: String,
    session: String,
    backend: Backend,
    db: Option<TestDb>,
}

/// The answer to one request.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Harness {
    fn new(backend: Backend) -> Harness {
        raworc_testkit::init_logging();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let db = TestDb::new(backend);
        let mut config =
            ServerConfig::new("127.0.0.1:0".parse().unwrap(), db.dir.path().join("data"));
        config.database_url = Some(db.url.clone());
        config.admin_password = Some(ADMIN_PASSWORD.into());
        config.runtime = raworc_server::config::RuntimeKind::None;
        let state = rt
            .block_on(raworc_server::build_state(config))
            .unwrap_or_else(|e| panic!("state on {}: {e:#}", backend.name()));
        let router = raworc_server::app::router(state.clone());
        let mut h = Harness {
            rt,
            router,
            state,
            admin: String::new(),
            user: String::new(),
            session: String::new(),
            backend,
            db: Some(db),
        };
        let (admin, user, session) = h.rt.block_on(h.setup());
        (h.admin, h.user, h.session) = (admin, user, session);
        h
    }

    /// The admin's token, a user principal's token and a session id.
    async fn setup(&self) -> (String, String, String) {
        let login = self
            .call(
                Method::POST,
                "/api/v0/operators/admin/login",
                None,
                Some("application/json"),
                json!({ "pass": ADMIN_PASSWORD }).to_string().into_bytes(),
            )
            .await;
        assert_eq!(login.status, StatusCode::OK);
        let admin = login.json()["token"].as_str().unwrap().to_string();
        let r = self
            .call_json(
                Method::POST,
                "/api/v0/operators",
                &admin,
                json!({"user": TARGET_OPERATOR, "pass": "fuzzer-password", "role": "user"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let r = self
            .call_json(
                Method::POST,
                "/api/v0/auth/token",
                &admin,
                json!({"principal": "fuzz-user", "principal_type": "User"}),
            )
            .await;
        let user = r.json()["token"].as_str().unwrap().to_string();
        let r = self
            .call_json(
                Method::POST,
                "/api/v0/sessions",
                &admin,
                json!({"name": "target", "secrets": {"K": "v"}, "prompt": "hi"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let session = r.json()["id"].as_str().unwrap().to_string();
        (admin, user, session)
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Body::from(body)).expect("a valid request");
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("response body")
            .to_vec();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn call_json(&self, method: Method, uri: &str, token: &str, body: Value) -> Answer {
        self.call(
            method,
            uri,
            Some(token),
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    /// A GET as the admin.
    async fn admin_get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, Some(&self.admin), None, vec![])
            .await
    }

    /// Sends `input` and checks the properties every answer must have.
    async fn check(&self, input: &Input) -> TestCaseResult {
        let uri = input.uri(self);
        let token = match input.token {
            Who::Admin => Some(self.admin.as_str()),
            Who::User => Some(self.user.as_str()),
            Who::Nobody => None,
        };
        let what = format!(
            "{} {uri} [{}] {:?} body {:?}",
            input.method,
            self.backend.name(),
            input.content_type,
            String::from_utf8_lossy(&input.body)
        );
        let a = self
            .call(
                input.method.clone(),
                &uri,
                token,
                input.content_type.as_deref(),
                input.body.clone(),
            )
            .await;
        let text = String::from_utf8_lossy(&a.body).into_owned();
        prop_assert!(!a.status.is_server_error(), "{what}\n→ {} {text}", a.status);
        let request_id = a
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        prop_assert!(request_id.is_some(), "{what}: no x-request-id");
        if a.status.as_u16() >= 400 && input.method != Method::HEAD {
            let ct = a
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            prop_assert!(
                ct.starts_with("application/json"),
                "{what}\n→ {} with content type {ct:?}: {text}",
                a.status
            );
            let v = a.json();
            prop_assert!(
                v["error"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{what}\n→ no error message: {text}"
            );
            prop_assert_eq!(
                v["status"].as_u64(),
                Some(u64::from(a.status.as_u16())),
                "{}\n→ {} {}",
                what,
                a.status,
                text
            );
            prop_assert_eq!(
                v.as_object().map(Map::len),
                Some(2),
                "{}: extra fields",
                what
            );
        }
        if !matches!(input.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            self.audited(&what, request_id.as_deref().unwrap_or(""), a.status)
                .await?;
        }
        Ok(())
    }

    /// The call with `request_id` is in the audit log with its outcome.
    async fn audited(&self, what: &str, request_id: &str, status: StatusCode) -> TestCaseResult {
        let log = self.admin_get("/api/v0/audit?limit=3").await;
        prop_assert_eq!(log.status, StatusCode::OK);
        let entries = log.json();
        let entry = entries
            .as_array()
            .and_then(|a| a.iter().find(|e| e["request_id"] == request_id));
        prop_assert!(
            entry.is_some(),
            "{what}: not audited (request {request_id})"
        );
        prop_assert_eq!(
            entry.unwrap()["outcome"].as_u64(),
            Some(u64::from(status.as_u16())),
            "{}",
            what
        );
        Ok(())
    }

    /// Health, the target session and the admin's login are all intact.
    async fn healthy(&self) {
        let h = self
            .call(Method::GET, "/health/detailed", None, None, vec![])
            .await;
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.json()["database"]["status"], "healthy");
        let s = self
            .admin_get(&format!("/api/v0/sessions/{}", self.session))
            .await;
        assert!(
            s.status == StatusCode::OK || s.status == StatusCode::NOT_FOUND,
            "{}",
            s.status
        );
        let list = self.admin_get("/api/v0/sessions").await;
        assert_eq!(list.status, StatusCode::OK);
        assert!(list.json().is_array());
        let login = self
            .call(
                Method::POST,
                "/api/v0/operators/admin/login",
                None,
                Some("application/json"),
                json!({ "pass": ADMIN_PASSWORD }).to_string().into_bytes(),
            )
            .await;
        assert!(
            login.status == StatusCode::OK || login.status == StatusCode::TOO_MANY_REQUESTS,
            "admin login: {}",
            login.status
        );
    }

    /// Runs `cases` of `strategy` through [`Harness::check`].
    fn run(&self, name: &str, strategy: impl Strategy<Value = Input>) {
        let mut runner = TestRunner::new(config());
        let result = runner.run(&strategy, |input| self.rt.block_on(self.check(&input)));
        if let Err(e) = result {
            panic!("{name} on {}: {e}", self.backend.name());
        }
        self.rt.block_on(self.healthy());
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.rt.block_on(self.state.store.close());
        if let Some(db) = self.db.take() {
            if !std::thread::panicking() {
                self.rt.block_on(db.drop_database());
            }
        }
    }
}

fn config() -> Config {
    Config {
        // Regressions are reported in the failure message; no files in the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// The databases to fuzz: `RAWORC_FUZZ_DATABASES`, default SQLite only.
fn backends() -> Vec<Backend> {
    let list = std::env::var("RAWORC_FUZZ_DATABASES").unwrap_or_else(|_| "sqlite".into());
    [Backend::Sqlite, Backend::Postgres, Backend::MySql]
        .into_iter()
        .filter(|b| list.split(',').any(|x| x.trim() == b.name()))
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Who {
    Admin,
    User,
    Nobody,
}

/// Where a path parameter points.
#[derive(Debug, Clone)]
enum Seg {
    /// The real session (for `{id}`) or the target operator (for `{name}`).
    Real,
    /// Any segment, already percent-encoded.
    Raw(String),
}

#[derive(Debug, Clone)]
struct Input {
    method: Method,
    /// A path template with `{id}` and `{name}`, and maybe `?query`.
    path: String,
    param: Seg,
    content_type: Option<String>,
    body: Vec<u8>,
    token: Who,
}

impl Input {
    fn uri(&self, h: &Harness) -> String {
        let (id, name) = match &self.param {
            Seg::Real => (h.session.clone(), TARGET_OPERATOR.to_string()),
            Seg::Raw(s) => (s.clone(), s.clone()),
        };
        self.path.replace("{id}", &id).replace("{name}", &name)
    }
}

fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pct_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

const INTERESTING: &[&str] = &[
    "",
    " ",
    "\0",
    "a\0b",
    "admin",
    "user",
    "User",
    "Operator",
    "paused",
    "running",
    "closed",
    "deleted",
    "created",
    "assistant",
    "system",
    "tool",
    "API_KEY",
    "1BAD",
    "password1",
    "fuzzer",
    "💥",
    "\u{202e}",
    "session-x",
    "../../etc/passwd",
    "%00",
    "null",
    "{}",
    "99999999999999999999999",
    "-1",
    "1970-01-01T00:00:00Z",
];

const KEYS: &[&str] = &[
    "name",
    "instructions",
    "setup",
    "secrets",
    "prompt",
    "metadata",
    "state",
    "data",
    "code",
    "content",
    "role",
    "user",
    "pass",
    "description",
    "principal",
    "principal_type",
    "expires_in_s",
];

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        3 => "[a-zA-Z0-9_ .-]{0,16}",
        3 => prop::sample::select(INTERESTING).prop_map(String::from),
        1 => (0usize..2000).prop_map(|n| "x".repeat(n)),
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(String::from),
        1 => arb_string(),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop::num::f64::NORMAL.prop_map(|n| json!(n)),
        prop::sample::select(&[0i64, 1, -1, 8, 255, 256, 1024][..]).prop_map(|n| json!(n)),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(arb_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects made of the API's own field names: near-valid bodies that get
/// past parsing into validation and the store.
fn near_valid_object() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        3 => arb_string().prop_map(Value::String),
        1 => arb_json(),
        1 => prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}|[^\0]{0,4}", arb_string(), 0..4)
            .prop_map(|m| json!(m)),
        1 => any::<bool>().prop_map(Value::Bool),
    ];
    prop::collection::btree_map(
        prop::sample::select(KEYS).prop_map(String::from),
        value,
        0..5,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        5 => near_valid_object().prop_map(|v| v.to_string().into_bytes()),
        3 => arb_json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => (arb_json(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, at, byte)| {
            // Valid JSON with one byte changed: truncations, stray bytes.
            let mut b = v.to_string().into_bytes();
            let i = at.index(b.len());
            b[i] = byte;
            b
        }),
        1 => Just(Vec::new()),
    ]
}

fn arb_content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        8 => Just(Some("application/json".to_string())),
        1 => Just(None),
        2 => prop::sample::select(&[
            "text/plain",
            "application/json; charset=utf-8",
            "application/problem+json",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            ";;",
            "application/json; charset=latin1",
            "multipart/form-data; boundary=x",
        ][..])
        .prop_map(|s| Some(s.to_string())),
    ]
}

/// A path segment, percent-encoded where needed; never decodes to `admin`.
fn arb_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9._~-]{1,24}",
        2 => any::<String>().prop_map(|s| pct_encode(&s)),
        1 => "(%[0-9A-Fa-f]{2}){1,8}",
        1 => prop::sample::select(&[
            ".", "..", "%2e%2e", "session-", "%2F", "a;b", "a,b", "@", "+", "%", "%zz", "%0", "a%00b",
            "session-01a207ba614177a984550fe0c1521dc1", "*", "!$&'()",
        ][..]).prop_map(String::from),
        1 => (0usize..400).prop_map(|n| "s".repeat(n)),
    ]
    .prop_filter("never the admin", |s| pct_decode(s) != b"admin")
}

fn arb_param() -> impl Strategy<Value = Seg> {
    prop_oneof![
        4 => Just(Seg::Real),
        1 => arb_segment().prop_map(Seg::Raw),
    ]
}

fn arb_who() -> impl Strategy<Value = Who> {
    prop_oneof![
        8 => Just(Who::Admin),
        1 => Just(Who::User),
        1 => Just(Who::Nobody),
    ]
}

const QUERY_KEYS: &[&str] = &[
    "limit",
    "offset",
    "after",
    "state",
    "principal",
    "session_id",
    "since",
    "until",
];

fn arb_query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<i128>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(&[
            "", "-1", "0", "1", "1.5", "abc", "18446744073709551615", "9223372036854775808",
            "2024-01-01T00:00:00Z", "2024-13-01T00:00:00Z", "0000-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59.999999999-23:59", "created", "deleted", "admin", "%00", "%FF",
            "%", "+", "a+b", "%2B",
        ][..]).prop_map(String::from),
        2 => arb_string().prop_map(|s| pct_encode(&s)),
    ]
}

fn arb_query() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(
            (
                prop_oneof![
                    4 => prop::sample::select(QUERY_KEYS).prop_map(String::from),
                    1 => arb_string().prop_map(|s| pct_encode(&s)),
                ],
                arb_query_value(),
            ),
            0..5,
        )
        .prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        }),
        1 => "[A-Za-z0-9=&%+._~-]{0,40}",
    ]
}

/// Every route that takes a JSON body.
const JSON_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v0/sessions"),
    ("PUT", "/api/v0/sessions/{id}"),
    ("PUT", "/api/v0/sessions/{id}/state"),
    ("POST", "/api/v0/sessions/{id}/remix"),
    ("POST", "/api/v0/sessions/{id}/messages"),
    ("POST", "/api/v0/operators"),
    ("PUT", "/api/v0/operators/{name}"),
    ("PUT", "/api/v0/operators/{name}/password"),
    ("POST", "/api/v0/operators/{name}/login"),
    ("POST", "/api/v0/auth/token"),
];

/// Every route that takes query parameters, and some that ignore them.
const QUERY_ROUTES: &[&str] = &[
    "/api/v0/sessions",
    "/api/v0/operators",
    "/api/v0/audit",
    "/api/v0/sessions/{id}/messages",
    "/api/v0/sessions/{id}",
    "/api/v0/sessions/{id}/messages/count",
    "/api/v0/version",
    "/health",
];

fn json_inputs(method: &'static str, path: &'static str) -> impl Strategy<Value = Input> {
    (arb_param(), arb_content_type(), arb_body(), arb_who()).prop_map(
        move |(param, content_type, body, token)| Input {
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            path: path.to_string(),
            param,
            content_type,
            body,
            token,
        },
    )
}

fn json_routes(range: std::ops::Range<usize>) {
    for b in backends() {
        let h = Harness::new(b);
        for &(method, path) in &JSON_ROUTES[range.clone()] {
            h.run(&format!("{method} {path}"), json_inputs(method, path));
        }
    }
}

#[test]
fn session_bodies() {
    json_routes(0..5);
}

#[test]
fn operator_and_auth_bodies() {
    json_routes(5..10);
}

#[test]
fn query_strings() {
    for b in backends() {
        let h = Harness::new(b);
        let inputs = (
            prop::sample::select(QUERY_ROUTES),
            arb_query(),
            arb_param(),
            arb_who(),
        )
            .prop_map(|(path, query, param, token)| Input {
                method: Method::GET,
                path: format!("{path}?{query}"),
                param,
                content_type: None,
                body: vec![],
                token,
            });
        h.run("query strings", inputs);
    }
}

const VOCABULARY: &[&str] = &[
    "api",
    "v0",
    "v1",
    "sessions",
    "operators",
    "messages",
    "count",
    "state",
    "close",
    "restore",
    "remix",
    "login",
    "password",
    "auth",
    "token",
    "audit",
    "version",
    "health",
    "detailed",
    "metrics",
    "docs",
    "openapi.json",
    "{id}",
    "{name}",
    "",
];

#[test]
fn paths_and_methods() {
    for b in backends() {
        let h = Harness::new(b);
        let segment = prop_oneof![
            3 => prop::sample::select(VOCABULARY).prop_map(String::from),
            1 => arb_segment(),
        ];
        let method = prop_oneof![
            4 => prop::sample::select(&[
                "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
            ][..]).prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
            1 => "[A-Z]{1,12}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
            1 => (250usize..400).prop_map(|n| Method::from_bytes("X".repeat(n).as_bytes()).unwrap()),
        ];
        let inputs = (
            method,
            prop::bool::weighted(0.8),
            prop::collection::vec(segment, 0..6),
            prop::option::weighted(0.3, arb_query()),
            arb_param(),
            arb_content_type(),
            arb_body(),
            arb_who(),
        )
            .prop_map(
                |(method, api, segments, query, param, content_type, body, token)| {
                    let mut path = if api {
                        "/api/v0".to_string()
                    } else {
                        String::new()
                    };
                    for s in segments {
                        path.push('/');
                        path.push_str(&s);
                    }
                    if path.is_empty() {
                        path.push('/');
                    }
                    if let Some(q) = query {
                        path.push('?');
                        path.push_str(&q);
                    }
                    Input {
                        method,
                        path,
                        param,
                        content_type,
                        body,
                        token,
                    }
                },
            );
        h.run("paths and methods", inputs);
    }
}

/// The harness itself: a valid request succeeds, so the properties above
/// are not vacuous.
#[test]
fn harness_reaches_the_handlers() {
    let h = Harness::new(Backend::Sqlite);
    let input = Input {
        method: Method::POST,
        path: "/api/v0/sessions/{id}/messages".into(),
        param: Seg::Real,
        content_type: Some("application/json".into()),
        body: br#"{"content": "hello"}"#.to_vec(),
        token: Who::Admin,
    };
    h.rt.block_on(async {
        h.check(&input).await.unwrap();
        let count = h
            .call(
                Method::GET,
                &input.uri(&h).replace("messages", "messages/count"),
                Some(&h.admin),
                None,
                vec![],
            )
            .await;
        assert_eq!(count.json()["count"], 2, "prompt + fuzzed message");
    });
}
