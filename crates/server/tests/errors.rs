//! Error responses through the real HTTP server: every error is JSON
//! `{"error": "...", "status": N}` with the status of the response, and a
//! rejected request changes nothing.

use raworc_testkit::{backend_tests, Backend, Reply, StatusCode, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

backend_tests!(
    unknown_ids_are_404,
    illegal_transitions_are_409,
    rejected_requests_change_nothing,
    nul_and_oversized_values_are_client_errors,
    huge_offsets_are_not_server_errors,
);

/// Asserts `r` is an error response with `status`, JSON content type and
/// exactly the `error` and `status` fields; returns the message.
#[track_caller]
fn assert_error(r: &Reply, status: StatusCode) -> String {
    assert_eq!(r.status, status, "unexpected status; body {:?}", r.body);
    assert!(
        r.content_type.starts_with("application/json"),
        "error content type is {:?} for {status}",
        r.content_type
    );
    let obj = r
        .body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not a JSON object: {:?}", r.body));
    assert_eq!(
        obj.len(),
        2,
        "error body has exactly error and status: {:?}",
        r.body
    );
    assert_eq!(r.body["status"], status.as_u16(), "{:?}", r.body);
    let msg = r.body["error"].as_str().expect("error is a string");
    assert!(!msg.trim().is_empty(), "error message is empty");
    msg.to_string()
}

fn request(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(&app.admin_token)
}

async fn raw_json(app: &TestApp, method: Method, path: &str, body: &str) -> Reply {
    app.raw(
        method,
        path,
        Some(&app.admin_token),
        "application/json",
        body.as_bytes().to_vec(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    for (method, path) in [
        (Method::POST, "/api/v0/sessions".to_string()),
        (Method::PUT, format!("/api/v0/sessions/{id}")),
        (Method::PUT, format!("/api/v0/sessions/{id}/state")),
        (Method::POST, format!("/api/v0/sessions/{id}/remix")),
        (Method::POST, format!("/api/v0/sessions/{id}/messages")),
        (Method::POST, "/api/v0/operators".to_string()),
        (Method::PUT, "/api/v0/operators/admin".to_string()),
        (Method::POST, "/api/v0/operators/admin/login".to_string()),
        (Method::POST, "/api/v0/auth/token".to_string()),
    ] {
        for body in ["{,}", "[", "{not json}", r#"{"na"#, "\u{feff}{}", "nul"] {
            let r = raw_json(&app, method.clone(), &path, body).await;
            let msg = assert_error(&r, StatusCode::BAD_REQUEST);
            assert!(
                msg.to_lowercase().contains("json"),
                "{method} {path} {body:?}: {msg}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_field_types_are_422_naming_the_field() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            "/api/v0/sessions".into(),
            json!({"name": 5}),
            "name",
        ),
        (
            Method::POST,
            "/api/v0/sessions".into(),
            json!({"secrets": {"K": 1}}),
            "secrets",
        ),
        (
            Method::POST,
            "/api/v0/sessions".into(),
            json!({"instructions": ["a"]}),
            "instructions",
        ),
        (
            Method::PUT,
            format!("/api/v0/sessions/{id}"),
            json!({"setup": true}),
            "setup",
        ),
        (
            Method::PUT,
            format!("/api/v0/sessions/{id}/state"),
            json!({"state": 1}),
            "state",
        ),
        (
            Method::POST,
            format!("/api/v0/sessions/{id}/remix"),
            json!({"data": "yes"}),
            "data",
        ),
        (
            Method::POST,
            format!("/api/v0/sessions/{id}/messages"),
            json!({"content": 5}),
            "content",
        ),
        (
            Method::POST,
            format!("/api/v0/sessions/{id}/messages"),
            json!({"content": "x", "role": "robot"}),
            "role",
        ),
        (
            Method::POST,
            "/api/v0/operators".into(),
            json!({"user": "bob", "pass": 12345678}),
            "pass",
        ),
        (
            Method::PUT,
            "/api/v0/operators/admin".into(),
            json!({"role": "root"}),
            "role",
        ),
        (
            Method::POST,
            "/api/v0/auth/token".into(),
            json!({"principal": "bob", "principal_type": "User", "expires_in_s": -1}),
            "expires_in_s",
        ),
    ];
    for (method, path, body, field) in cases {
        let r = app
            .call(method.clone(), &path, Some(&t), Some(body.clone()))
            .await;
        let msg = assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            msg.contains(field),
            "{method} {path} {body}: message does not name '{field}': {msg}"
        );
    }
    // A missing required field is named too.
    let r = app
        .post("/api/v0/operators", Some(&t), json!({"user": "bob"}))
        .await;
    let msg = assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(msg.contains("pass"), "{msg}");
    // So are values that parse but are invalid.
    let r = app
        .post("/api/v0/sessions", Some(&t), json!({"metadata": [1]}))
        .await;
    assert!(assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY).contains("metadata"));
    let r = app
        .post("/api/v0/sessions", Some(&t), json!({"name": "  "}))
        .await;
    assert!(assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY).contains("name"));
    let r = app
        .post(
            "/api/v0/sessions",
            Some(&t),
            json!({"secrets": {"1BAD": "v"}}),
        )
        .await;
    assert!(assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY).contains("secrets"));
    let r = app
        .post(
            "/api/v0/operators",
            Some(&t),
            json!({"user": "bob", "pass": "short"}),
        )
        .await;
    assert!(assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY).contains("pass"));
    // A JSON body of the wrong shape altogether. (Arrays are not listed:
    // serde reads `[]` as a struct with every field defaulted.)
    for body in [json!("text"), json!(7), json!(true), json!(null)] {
        let r = app.post("/api/v0/sessions", Some(&t), body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        let r = app.post("/api/v0/operators", Some(&t), body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_422() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v0/sessions".to_string(),
            json!({"name": "x", "colour": "red"}),
        ),
        (
            Method::PUT,
            format!("/api/v0/sessions/{id}"),
            json!({"state": "running"}),
        ),
        (
            Method::PUT,
            format!("/api/v0/sessions/{id}/state"),
            json!({"state": "paused", "force": true}),
        ),
        (
            Method::POST,
            format!("/api/v0/sessions/{id}/remix"),
            json!({"secrets": false}),
        ),
        (
            Method::POST,
            format!("/api/v0/sessions/{id}/messages"),
            json!({"content": "x", "author": "me"}),
        ),
        (
            Method::POST,
            "/api/v0/operators".to_string(),
            json!({"user": "bob", "pass": "password1", "admin": true}),
        ),
        (
            Method::PUT,
            "/api/v0/operators/admin/password".to_string(),
            json!({"pass": "password1", "old": "x"}),
        ),
        (
            Method::POST,
            "/api/v0/operators/admin/login".to_string(),
            json!({"pass": "admin-password", "password": "x"}),
        ),
        (
            Method::POST,
            "/api/v0/auth/token".to_string(),
            json!({"principal": "bob", "principal_type": "User", "role": "admin"}),
        ),
    ] {
        // The one key that is no field of the endpoint's body.
        let unknown = [
            "colour", "state", "force", "secrets", "author", "admin", "old", "password", "role",
        ]
        .into_iter()
        .find(|k| body.get(k).is_some() && !(path.ends_with("/state") && *k == "state"))
        .unwrap();
        let r = app
            .call(method.clone(), &path, Some(&t), Some(body.clone()))
            .await;
        let msg = assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            msg.contains("unknown field") && msg.contains(unknown),
            "{method} {path}: {msg} (field {unknown})"
        );
    }
    // The unknown field did not sneak in: the session is unchanged.
    let s = app.get(&format!("/api/v0/sessions/{id}"), Some(&t)).await;
    assert_eq!(s.body["state"], "created");
    // And the admin password was not changed: logging in still works.
    app.login("admin", "admin-password").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_content_type_is_415() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    let json_body = r#"{"content": "hello", "state": "paused", "pass": "password1"}"#;
    for (method, path) in [
        (Method::PUT, format!("/api/v0/sessions/{id}")),
        (Method::PUT, format!("/api/v0/sessions/{id}/state")),
        (Method::POST, format!("/api/v0/sessions/{id}/messages")),
        (Method::POST, "/api/v0/operators".to_string()),
        (Method::PUT, "/api/v0/operators/admin".to_string()),
        (Method::PUT, "/api/v0/operators/admin/password".to_string()),
        (Method::POST, "/api/v0/operators/admin/login".to_string()),
        (Method::POST, "/api/v0/auth/token".to_string()),
    ] {
        let r = app
            .send(request(&app, method.clone(), &path).body(json_body))
            .await;
        let msg = assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(msg.contains("Content-Type"), "{method} {path}: {msg}");
        let r = app
            .send(
                request(&app, method.clone(), &path)
                    .header("content-type", "text/plain")
                    .body(json_body),
            )
            .await;
        assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    // Session create and remix take an optional body: none at all is fine
    // without a content type, but a body that is there must be JSON.
    for path in [
        "/api/v0/sessions".to_string(),
        format!("/api/v0/sessions/{id}/remix"),
    ] {
        let r = app
            .send(request(&app, Method::POST, &path).body(r#"{"name": "x"}"#))
            .await;
        assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let r = app
            .send(
                request(&app, Method::POST, &path)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("name=x"),
            )
            .await;
        assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let list = app.get("/api/v0/sessions", Some(&t)).await;
    assert_eq!(
        list.body.as_array().unwrap().len(),
        1,
        "nothing was created"
    );
    let r = app
        .send(request(&app, Method::POST, "/api/v0/sessions"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "an empty body needs no type");
    let r = app
        .send(
            request(&app, Method::POST, "/api/v0/sessions")
                .header("content-type", "application/vnd.raworc+json; charset=utf-8")
                .body(r#"{"name": "typed"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "+json types are JSON");
    assert_eq!(r.body["name"], "typed");
    // Nothing was posted.
    let c = app
        .get(&format!("/api/v0/sessions/{id}/messages/count"), Some(&t))
        .await;
    assert_eq!(c.body["count"], 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.body_limit = 1024).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    let big = json!({ "content": "x".repeat(2048), "name": "y".repeat(2048) }).to_string();
    assert!(big.len() > 2048);
    for (method, path) in [
        (Method::POST, "/api/v0/sessions".to_string()),
        (Method::PUT, format!("/api/v0/sessions/{id}")),
        (Method::POST, format!("/api/v0/sessions/{id}/remix")),
        (Method::POST, format!("/api/v0/sessions/{id}/messages")),
        (Method::POST, "/api/v0/operators".to_string()),
        (Method::POST, "/api/v0/operators/admin/login".to_string()),
    ] {
        let r = raw_json(&app, method.clone(), &path, &big).await;
        let msg = assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(msg.contains("too large"), "{method} {path}: {msg}");
    }
    // Just under the limit is fine.
    let ok = json!({ "content": "x".repeat(900) });
    let r = app
        .post(&format!("/api/v0/sessions/{id}/messages"), Some(&t), ok)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let c = app
        .get(&format!("/api/v0/sessions/{id}/messages/count"), Some(&t))
        .await;
    assert_eq!(c.body["count"], 1, "only the small message was stored");
    let list = app.get("/api/v0/sessions", Some(&t)).await;
    assert_eq!(
        list.body.as_array().unwrap().len(),
        1,
        "no remix, no create"
    );
    app.stop().await;
}

async fn unknown_ids_are_404(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let s = "/api/v0/sessions/session-nope";
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, s.into(), None),
        (Method::PUT, s.into(), Some(json!({"name": "x"}))),
        (Method::DELETE, s.into(), None),
        (
            Method::PUT,
            format!("{s}/state"),
            Some(json!({"state": "paused"})),
        ),
        (Method::POST, format!("{s}/close"), None),
        (Method::POST, format!("{s}/restore"), None),
        (Method::POST, format!("{s}/remix"), Some(json!({}))),
        (Method::GET, format!("{s}/messages"), None),
        (
            Method::POST,
            format!("{s}/messages"),
            Some(json!({"content": "hi"})),
        ),
        (Method::DELETE, format!("{s}/messages"), None),
        (Method::GET, format!("{s}/messages/count"), None),
        (Method::GET, "/api/v0/operators/nobody".into(), None),
        (
            Method::PUT,
            "/api/v0/operators/nobody".into(),
            Some(json!({"description": "x"})),
        ),
        (Method::DELETE, "/api/v0/operators/nobody".into(), None),
        (
            Method::PUT,
            "/api/v0/operators/nobody/password".into(),
            Some(json!({"pass": "password1"})),
        ),
        (
            Method::POST,
            "/api/v0/auth/token".into(),
            Some(json!({"principal": "nobody", "principal_type": "Operator"})),
        ),
    ];
    for (method, path, body) in cases {
        let r = app.call(method.clone(), &path, Some(&t), body).await;
        let msg = assert_error(&r, StatusCode::NOT_FOUND);
        assert!(
            msg.contains("nope") || msg.contains("nobody"),
            "{method} {path}: the message names what is missing: {msg}"
        );
    }
    // A deleted session is gone for every route.
    let id = app.session(&t, json!({})).await;
    app.delete(&format!("/api/v0/sessions/{id}"), Some(&t))
        .await;
    for path in [
        format!("/api/v0/sessions/{id}"),
        format!("/api/v0/sessions/{id}/messages"),
    ] {
        assert_error(&app.get(&path, Some(&t)).await, StatusCode::NOT_FOUND);
    }
    assert_error(
        &app.post(
            &format!("/api/v0/sessions/{id}/restore"),
            Some(&t),
            json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
    );
    // Logging in as an unknown operator is 401, not 404: names cannot be probed.
    let r = app
        .post(
            "/api/v0/operators/nobody/login",
            None,
            json!({"pass": "whatever1"}),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_json() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.admin_token.clone();
    for (method, path) in [
        (Method::GET, "/api/v0/nope"),
        (Method::GET, "/nope"),
        (Method::POST, "/api/v0/sessions/x/y/z"),
        (Method::GET, "/api/v1/sessions"),
        (Method::DELETE, "/api/v0/sessions/x/messages/count/extra"),
    ] {
        for token in [Some(t.as_str()), None] {
            let r = app.call(method.clone(), path, token, None).await;
            let msg = assert_error(&r, StatusCode::NOT_FOUND);
            assert!(msg.contains(path), "{method} {path}: {msg}");
        }
    }
    // The web page's missing files are 404 too, in the same JSON shape
    // (`/` itself is the page).
    let r = app.get("/ui/nope.js", None).await;
    assert_error(&r, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_405_json() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (method, path, allowed) in [
        (Method::PATCH, "/api/v0/sessions", "POST"),
        (Method::DELETE, "/api/v0/version", "GET"),
        (Method::GET, "/api/v0/sessions/x/close", "POST"),
        (Method::PUT, "/api/v0/audit", "GET"),
        (Method::POST, "/health", "GET"),
        (Method::DELETE, "/api/v0/auth/token", "POST"),
        (Method::GET, "/api/v0/operators/admin/login", "POST"),
    ] {
        let r = app.send(request(&app, method.clone(), path)).await;
        assert_error(&r, StatusCode::METHOD_NOT_ALLOWED);
        let allow = r
            .headers
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            allow.contains(allowed),
            "{method} {path}: Allow header {allow:?}"
        );
        assert!(
            r.headers.contains_key("x-request-id"),
            "{method} {path}: the rewritten error keeps the request id"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_400_naming_the_parameter() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    for (path, param) in [
        ("/api/v0/sessions?limit=abc".to_string(), "limit"),
        ("/api/v0/sessions?offset=-1".to_string(), "offset"),
        ("/api/v0/sessions?limit=99999999999".to_string(), "limit"),
        ("/api/v0/sessions?state=flying".to_string(), "state"),
        ("/api/v0/operators?limit=1.5".to_string(), "limit"),
        ("/api/v0/audit?offset=x".to_string(), "offset"),
        ("/api/v0/audit?since=yesterday".to_string(), "since"),
        (
            "/api/v0/audit?until=2024-13-01T00:00:00Z".to_string(),
            "until",
        ),
        (format!("/api/v0/sessions/{id}/messages?after=abc"), "after"),
        (format!("/api/v0/sessions/{id}/messages?limit=-5"), "limit"),
    ] {
        let r = app.get(&path, Some(&t)).await;
        let msg = assert_error(&r, StatusCode::BAD_REQUEST);
        assert!(
            msg.contains(param),
            "{path}: message names '{param}': {msg}"
        );
    }
    // Unknown parameters are ignored, as is usual for query strings.
    let r = app.get("/api/v0/sessions?colour=red", Some(&t)).await;
    assert_eq!(r.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bad_tokens_are_401_json() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for token in [None, Some("garbage"), Some("a.b.c")] {
        let r = app.get("/api/v0/sessions", token).await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
        let r = app.post("/api/v0/sessions", token, json!({})).await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
    }
    let r = app
        .send(
            app.client
                .get(format!("{}/api/v0/sessions", app.base))
                .header("authorization", "Basic YWRtaW46YWRtaW4="),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED);
    let r = app
        .post(
            "/api/v0/operators/admin/login",
            None,
            json!({"pass": "wrong-password"}),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED);
    // A user principal is 403 on admin routes, still JSON.
    let r = app
        .post(
            "/api/v0/auth/token",
            Some(&app.admin_token),
            json!({"principal": "bob", "principal_type": "User"}),
        )
        .await;
    let bob = r.body["token"].as_str().unwrap().to_string();
    assert_error(
        &app.get("/api/v0/operators", Some(&bob)).await,
        StatusCode::FORBIDDEN,
    );
    app.stop().await;
}

async fn illegal_transitions_are_409(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    let p = |s: &str| format!("/api/v0/sessions/{id}{s}");
    // created: cannot pause, resume or restore.
    for state in ["paused", "running"] {
        let r = app
            .put(&p("/state"), Some(&t), json!({"state": state}))
            .await;
        let msg = assert_error(&r, StatusCode::CONFLICT);
        assert!(msg.contains("created"), "{msg}");
    }
    // States that cannot be set directly.
    for state in ["closed", "deleted", "created", "starting"] {
        let r = app
            .put(&p("/state"), Some(&t), json!({"state": state}))
            .await;
        assert_error(&r, StatusCode::CONFLICT);
    }
    assert_error(
        &app.post(&p("/restore"), Some(&t), json!({})).await,
        StatusCode::CONFLICT,
    );
    // closed: cannot close again, pause or resume.
    let r = app.post(&p("/close"), Some(&t), json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_error(
        &app.post(&p("/close"), Some(&t), json!({})).await,
        StatusCode::CONFLICT,
    );
    assert_error(
        &app.put(&p("/state"), Some(&t), json!({"state": "running"}))
            .await,
        StatusCode::CONFLICT,
    );
    // The failed attempts left the state alone.
    let s = app.get(&p(""), Some(&t)).await;
    assert_eq!(s.body["state"], "closed");
    // Creating an operator that exists is a conflict too.
    let r = app
        .post(
            "/api/v0/operators",
            Some(&t),
            json!({"user": "admin", "pass": "password1"}),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT);
    app.stop().await;
}

/// Everything that can be counted through the API.
async fn counts(app: &TestApp, session: &str) -> Value {
    let t = &app.admin_token;
    let len = |v: &Value| v.as_array().map(Vec::len).unwrap_or(usize::MAX);
    let sessions = app.get("/api/v0/sessions?limit=1000", Some(t)).await;
    let deleted = app
        .get("/api/v0/sessions?state=deleted&limit=1000", Some(t))
        .await;
    let operators = app.get("/api/v0/operators?limit=1000", Some(t)).await;
    let messages = app
        .get(
            &format!("/api/v0/sessions/{session}/messages/count"),
            Some(t),
        )
        .await;
    let one = app
        .get(&format!("/api/v0/sessions/{session}"), Some(t))
        .await;
    let secrets = app.state().store.session_secrets(session).await.unwrap();
    json!({
        "sessions": len(&sessions.body),
        "deleted": len(&deleted.body),
        "operators": len(&operators.body),
        "messages": messages.body["count"],
        "session": {
            "name": one.body["name"], "state": one.body["state"],
            "instructions": one.body["instructions"], "metadata": one.body["metadata"],
            "updated_at": one.body["updated_at"], "secrets": one.body["secrets"],
        },
        "sealed": secrets.len(),
    })
}

async fn rejected_requests_change_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app
        .session(
            &t,
            json!({"name": "keep", "instructions": "i", "secrets": {"K": "v"}, "prompt": "first"}),
        )
        .await;
    let before = counts(&app, &id).await;
    assert_eq!(before["sessions"], 1);
    assert_eq!(before["messages"], 1);
    let m = format!("/api/v0/sessions/{id}/messages");
    let s = format!("/api/v0/sessions/{id}");

    // Creates that fail validation after parsing, including late checks
    // (secrets, prompt) that come after earlier fields were accepted.
    for body in [
        json!({"name": "n", "secrets": {"OK": "v", "1BAD": "v"}}),
        json!({"name": "n", "secrets": {"OK": "v\u{0}"}}),
        json!({"name": "n", "prompt": "   "}),
        json!({"name": "n", "metadata": "not an object"}),
        json!({"name": ""}),
        json!({"name": "n", "extra": 1}),
    ] {
        let r = app.post("/api/v0/sessions", Some(&t), body.clone()).await;
        assert!(r.status.is_client_error(), "{body}: {:?}", r.body);
    }
    assert_error(
        &raw_json(&app, Method::POST, "/api/v0/sessions", "{").await,
        StatusCode::BAD_REQUEST,
    );
    // Remixes that fail.
    for body in [json!({"name": " "}), json!({"prompt": ""}), json!({"x": 1})] {
        let r = app.post(&format!("{s}/remix"), Some(&t), body).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // Updates that fail.
    for body in [
        json!({"name": " "}),
        json!({"metadata": [1]}),
        json!({"name": "new", "state": "x"}),
        json!({"name": 1}),
    ] {
        let r = app.put(&s, Some(&t), body).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // Messages that fail.
    for body in [
        json!({"content": ""}),
        json!({"content": "x", "role": "robot"}),
        json!({"content": "x", "metadata": 5}),
        json!({"text": "x"}),
    ] {
        let r = app.post(&m, Some(&t), body).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let r = app
        .send(request(&app, Method::POST, &m).body(r#"{"content":"x"}"#))
        .await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A user principal cannot post as the assistant, nor touch this session.
    let user = app
        .post(
            "/api/v0/auth/token",
            Some(&t),
            json!({"principal": "u1", "principal_type": "User"}),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_error(
        &app.post(&m, Some(&user), json!({"content": "x"})).await,
        StatusCode::NOT_FOUND,
    );
    assert_error(&app.delete(&s, Some(&user)).await, StatusCode::NOT_FOUND);
    // Illegal transitions.
    assert_error(
        &app.put(&format!("{s}/state"), Some(&t), json!({"state": "paused"}))
            .await,
        StatusCode::CONFLICT,
    );
    assert_error(
        &app.post(&format!("{s}/restore"), Some(&t), json!({})).await,
        StatusCode::CONFLICT,
    );
    // Operators that fail.
    for body in [
        json!({"user": "admin", "pass": "password1"}),
        json!({"user": "bad name", "pass": "password1"}),
        json!({"user": "bob", "pass": "short"}),
        json!({"user": "bob", "pass": "password1", "role": "root"}),
    ] {
        let r = app.post("/api/v0/operators", Some(&t), body.clone()).await;
        assert!(r.status.is_client_error(), "{body}: {:?}", r.body);
    }
    let r = app
        .post(
            "/api/v0/operators",
            Some(&user),
            json!({"user": "bob", "pass": "password1"}),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN);

    let after = counts(&app, &id).await;
    assert_eq!(before, after, "a rejected request changed something");
    // And the message sequence did not move: the next message is number 2.
    let r = app.post(&m, Some(&t), json!({"content": "second"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["seq"], 2);
    app.stop().await;
}

/// Values a database may refuse (NUL bytes, ids longer than any column)
/// are the client's error, never a 500.
async fn nul_and_oversized_values_are_client_errors(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    let nul = "a\u{0}b";
    let long = "s".repeat(300);
    let bodies: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/api/v0/sessions".into(),
            json!({"name": nul}),
        ),
        (
            Method::POST,
            "/api/v0/sessions".into(),
            json!({"instructions": nul}),
        ),
        (
            Method::POST,
            "/api/v0/sessions".into(),
            json!({"setup": nul}),
        ),
        (
            Method::POST,
            "/api/v0/sessions".into(),
            json!({"prompt": nul}),
        ),
        (
            Method::POST,
            "/api/v0/sessions".into(),
            json!({"metadata": {"k": nul, nul: 1}}),
        ),
        (
            Method::PUT,
            format!("/api/v0/sessions/{id}"),
            json!({"name": nul}),
        ),
        (
            Method::POST,
            format!("/api/v0/sessions/{id}/remix"),
            json!({"name": nul, "prompt": nul}),
        ),
        (
            Method::POST,
            format!("/api/v0/sessions/{id}/messages"),
            json!({"content": nul}),
        ),
        (
            Method::POST,
            "/api/v0/operators".into(),
            json!({"user": "nul1", "pass": "password1", "description": nul}),
        ),
        (
            Method::PUT,
            "/api/v0/operators/admin".into(),
            json!({"description": nul}),
        ),
        (
            Method::PUT,
            "/api/v0/sessions/session-x/state".into(),
            json!({"state": nul}),
        ),
    ];
    for (method, path, body) in bodies {
        let r = app
            .call(method.clone(), &path, Some(&t), Some(body.clone()))
            .await;
        assert!(
            r.status.is_success() || r.status.is_client_error(),
            "{method} {path} {body}: {} {:?}",
            r.status,
            r.body
        );
        if !r.status.is_success() {
            assert_error(&r, r.status);
        }
    }
    // NUL and overlong values in paths and queries.
    for path in [
        "/api/v0/sessions/a%00b".to_string(),
        format!("/api/v0/sessions/{long}"),
        format!("/api/v0/sessions/{long}/messages"),
        "/api/v0/operators/a%00b".to_string(),
        format!("/api/v0/operators/{long}"),
        "/api/v0/sessions?state=a%00b".to_string(),
        "/api/v0/audit?principal=a%00b".to_string(),
        "/api/v0/audit?session_id=a%00b".to_string(),
        format!("/api/v0/audit?session_id={long}"),
        format!("/api/v0/audit?principal={long}"),
    ] {
        let r = app.get(&path, Some(&t)).await;
        assert!(
            r.status.is_success() || r.status.is_client_error(),
            "GET {path}: {} {:?}",
            r.status,
            r.body
        );
    }
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v0/sessions/a%00b/messages".to_string(),
            Some(json!({"content": "x"})),
        ),
        (Method::POST, format!("/api/v0/sessions/{long}/close"), None),
        (Method::DELETE, format!("/api/v0/operators/{long}"), None),
        (
            Method::POST,
            "/api/v0/operators/a%00b/login".to_string(),
            Some(json!({"pass": "password1"})),
        ),
        (
            Method::POST,
            format!("/api/v0/operators/{long}/login"),
            Some(json!({"pass": "password1"})),
        ),
    ] {
        let r = app.call(method.clone(), &path, Some(&t), body).await;
        assert!(
            r.status.is_client_error(),
            "{method} {path}: {} {:?}",
            r.status,
            r.body
        );
        assert_error(&r, r.status);
    }
    // Even these odd calls were audited.
    let audit = app.get("/api/v0/audit?limit=1000", Some(&t)).await;
    let targets: Vec<&str> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    for path in [
        format!("/api/v0/sessions/{long}/close"),
        format!("/api/v0/operators/{long}"),
        format!("/api/v0/operators/{long}/login"),
        "/api/v0/operators/a%00b/login".to_string(),
    ] {
        assert!(
            targets.contains(&path.as_str()),
            "{path} is missing from the audit log"
        );
    }
    // The server is still fine.
    assert_eq!(
        app.get(&format!("/api/v0/sessions/{id}"), Some(&t))
            .await
            .status,
        StatusCode::OK
    );
    app.stop().await;
}

async fn huge_offsets_are_not_server_errors(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({"prompt": "p"})).await;
    let max = u64::MAX;
    for path in [
        format!("/api/v0/sessions?offset={max}"),
        format!("/api/v0/operators?offset={max}"),
        format!("/api/v0/audit?offset={max}"),
        format!("/api/v0/sessions/{id}/messages?offset={max}"),
        format!("/api/v0/sessions/{id}/messages?after={}", i64::MIN),
        format!("/api/v0/sessions/{id}/messages?after={}", i64::MAX),
        format!("/api/v0/sessions?limit={}", u32::MAX),
        "/api/v0/sessions?limit=0".to_string(),
        "/api/v0/audit?since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59Z".to_string(),
    ] {
        let r = app.get(&path, Some(&t)).await;
        assert_eq!(r.status, StatusCode::OK, "GET {path}: {:?}", r.body);
        assert!(r.body.is_array(), "GET {path}: {:?}", r.body);
    }
    let r = app
        .get(&format!("/api/v0/sessions?offset={max}"), Some(&t))
        .await;
    assert_eq!(r.body, json!([]), "an offset past the end is an empty page");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_json_objects() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    // serde reads structs from arrays too; the API must not.
    for (method, path, body) in [
        (Method::POST, "/api/v0/sessions".to_string(), "[]"),
        (
            Method::POST,
            format!("/api/v0/sessions/{id}/remix"),
            "[true, false]",
        ),
        (
            Method::POST,
            format!("/api/v0/sessions/{id}/messages"),
            r#"["hi"]"#,
        ),
        (
            Method::POST,
            "/api/v0/operators/admin/login".to_string(),
            r#"["admin-password"]"#,
        ),
    ] {
        let r = raw_json(&app, method.clone(), &path, body).await;
        let msg = assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(msg.contains("JSON object"), "{method} {path} {body}: {msg}");
    }
    let sessions = app.get("/api/v0/sessions", Some(&t)).await;
    assert_eq!(
        sessions.body.as_array().map(Vec::len),
        Some(1),
        "nothing was created"
    );
    app.stop().await;
}
