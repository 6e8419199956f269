//! The audit log through the real HTTP server, on every database: every
//! mutating call leaves one record (successes and failures alike), reads
//! leave none, and admins can filter and page the log.

use raworc_testkit::{backend_tests, Backend, StatusCode, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

backend_tests!(
    mutating_calls_are_recorded,
    filters_and_paging,
    reads_are_not_recorded_and_only_admins_read_the_log,
);

/// One call's status, body and `x-request-id`.
struct Call {
    status: StatusCode,
    body: Value,
    request_id: String,
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    request_id: Option<&str>,
) -> Call {
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(id) = request_id {
        req = req.header("x-request-id", id);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .expect("every response has x-request-id")
        .to_str()
        .unwrap()
        .to_string();
    let body = resp.json().await.unwrap_or(Value::Null);
    Call {
        status,
        body,
        request_id,
    }
}

/// The audit log as the admin sees it with `query`.
async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/api/v0/audit{query}"), Some(&app.admin_token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "audit{query}: {:?}", r.body);
    r.body.as_array().expect("a list").clone()
}

/// The entry of the call with `request_id`; there must be exactly one.
#[track_caller]
fn entry<'a>(log: &'a [Value], request_id: &str) -> &'a Value {
    let found: Vec<&Value> = log
        .iter()
        .filter(|e| e["request_id"] == request_id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "entries for request {request_id}: {found:?}\nlog: {log:#?}"
    );
    found[0]
}

async fn mutating_calls_are_recorded(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let start = audit(&app, "").await;
    // The testkit's own admin login is the only entry so far.
    assert_eq!(start.len(), 1, "{start:?}");
    assert_eq!(start[0]["action"], "POST /api/v0/operators/{name}/login");

    let create = call(
        &app,
        Method::POST,
        "/api/v0/sessions",
        Some(&t),
        Some(json!({"name": "audited"})),
        None,
    )
    .await;
    assert_eq!(create.status, StatusCode::CREATED);
    let id = create.body["id"].as_str().unwrap().to_string();
    let message = call(
        &app,
        Method::POST,
        &format!("/api/v0/sessions/{id}/messages"),
        Some(&t),
        Some(json!({"content": "hello"})),
        Some("client-chosen-id.42"),
    )
    .await;
    assert_eq!(message.status, StatusCode::CREATED);
    assert_eq!(
        message.request_id, "client-chosen-id.42",
        "a sane client request id is used"
    );
    let close = call(
        &app,
        Method::POST,
        &format!("/api/v0/sessions/{id}/close"),
        Some(&t),
        None,
        None,
    )
    .await;
    assert_eq!(close.status, StatusCode::OK);
    let missing = call(
        &app,
        Method::DELETE,
        "/api/v0/sessions/session-missing",
        Some(&t),
        None,
        None,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad_login = call(
        &app,
        Method::POST,
        "/api/v0/operators/admin/login",
        None,
        Some(json!({"pass": "not-the-password"})),
        Some("bad id with spaces"),
    )
    .await;
    assert_eq!(bad_login.status, StatusCode::UNAUTHORIZED);
    assert_ne!(
        bad_login.request_id, "bad id with spaces",
        "an unsafe client request id is replaced"
    );
    let operator = call(
        &app,
        Method::POST,
        "/api/v0/operators",
        Some(&t),
        Some(json!({"user": "carol", "pass": "carol-password", "role": "user"})),
        None,
    )
    .await;
    assert_eq!(operator.status, StatusCode::CREATED);
    let anonymous = call(
        &app,
        Method::POST,
        "/api/v0/sessions",
        None,
        Some(json!({})),
        None,
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let invalid = call(
        &app,
        Method::PUT,
        &format!("/api/v0/sessions/{id}"),
        Some(&t),
        Some(json!({"name": 5})),
        None,
    )
    .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);

    let log = audit(&app, "").await;
    assert_eq!(log.len(), 1 + 8, "one entry per mutating call: {log:#?}");
    // Newest first.
    let ids: Vec<i64> = log.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert_eq!(log[0]["request_id"], invalid.request_id.as_str());

    let check = |c: &Call,
                 principal: &str,
                 principal_type: Value,
                 action: &str,
                 target: &str,
                 session: Value| {
        let e = entry(&log, &c.request_id);
        assert_eq!(e["principal"], principal, "{e}");
        assert_eq!(e["principal_type"], principal_type, "{e}");
        assert_eq!(e["action"], action, "{e}");
        assert_eq!(e["target"], target, "{e}");
        assert_eq!(e["session_id"], session, "{e}");
        assert_eq!(e["outcome"], c.status.as_u16(), "{e}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).is_ok(),
            "{e}"
        );
    };
    let op = json!("Operator");
    check(
        &create,
        "admin",
        op.clone(),
        "POST /api/v0/sessions",
        "/api/v0/sessions",
        json!(id),
    );
    check(
        &message,
        "admin",
        op.clone(),
        "POST /api/v0/sessions/{id}/messages",
        &format!("/api/v0/sessions/{id}/messages"),
        json!(id),
    );
    check(
        &close,
        "admin",
        op.clone(),
        "POST /api/v0/sessions/{id}/close",
        &format!("/api/v0/sessions/{id}/close"),
        json!(id),
    );
    check(
        &missing,
        "admin",
        op.clone(),
        "DELETE /api/v0/sessions/{id}",
        "/api/v0/sessions/session-missing",
        json!("session-missing"),
    );
    // A failed login is recorded under the name that was tried.
    check(
        &bad_login,
        "admin",
        op.clone(),
        "POST /api/v0/operators/{name}/login",
        "/api/v0/operators/admin/login",
        Value::Null,
    );
    check(
        &operator,
        "admin",
        op.clone(),
        "POST /api/v0/operators",
        "/api/v0/operators",
        Value::Null,
    );
    check(
        &anonymous,
        "anonymous",
        Value::Null,
        "POST /api/v0/sessions",
        "/api/v0/sessions",
        Value::Null,
    );
    check(
        &invalid,
        "admin",
        op.clone(),
        "PUT /api/v0/sessions/{id}",
        &format!("/api/v0/sessions/{id}"),
        json!(id),
    );

    // Calls by other principals carry their names, also when refused.
    let carol = app.login("carol", "carol-password").await;
    let refused = call(
        &app,
        Method::POST,
        "/api/v0/operators",
        Some(&carol),
        Some(json!({"user": "dave", "pass": "dave-password"})),
        None,
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let minted = call(
        &app,
        Method::POST,
        "/api/v0/auth/token",
        Some(&t),
        Some(json!({"principal": "svc", "principal_type": "User"})),
        None,
    )
    .await;
    let svc = minted.body["token"].as_str().unwrap().to_string();
    let by_user = call(
        &app,
        Method::POST,
        "/api/v0/sessions",
        Some(&svc),
        Some(json!({})),
        None,
    )
    .await;
    assert_eq!(by_user.status, StatusCode::CREATED);
    let log = audit(&app, "").await;
    let e = entry(&log, &refused.request_id);
    assert_eq!(
        (&e["principal"], &e["outcome"]),
        (&json!("carol"), &json!(403))
    );
    let e = entry(&log, &minted.request_id);
    assert_eq!(e["action"], "POST /api/v0/auth/token");
    assert_eq!(e["outcome"], 201);
    let e = entry(&log, &by_user.request_id);
    assert_eq!(e["principal"], "svc");
    assert_eq!(e["principal_type"], "User");
    assert_eq!(e["session_id"], by_user.body["id"]);
    app.stop().await;
}

async fn filters_and_paging(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let erin = app.operator("erin", "user").await;
    let a = app.session(&t, json!({})).await;
    let bee = app.session(&erin, json!({})).await;
    for i in 0..3 {
        app.post(
            &format!("/api/v0/sessions/{a}/messages"),
            Some(&t),
            json!({"content": format!("a{i}")}),
        )
        .await;
    }
    app.post(
        &format!("/api/v0/sessions/{bee}/messages"),
        Some(&erin),
        json!({"content": "b"}),
    )
    .await;
    app.post(
        &format!("/api/v0/sessions/{bee}/close"),
        Some(&erin),
        json!({}),
    )
    .await;
    let all = audit(&app, "?limit=1000").await;
    // admin login, create erin, erin's login, 2 creates, 4 messages, 1 close.
    assert_eq!(all.len(), 10, "{all:#?}");

    // principal=
    let erins = audit(&app, "?principal=erin").await;
    assert_eq!(erins.len(), 4, "login, create, message, close: {erins:#?}");
    assert!(erins.iter().all(|e| e["principal"] == "erin"));
    assert_eq!(audit(&app, "?principal=nobody").await.len(), 0);

    // session_id=
    let of_a = audit(&app, &format!("?session_id={a}")).await;
    assert_eq!(of_a.len(), 4, "create and three messages: {of_a:#?}");
    assert!(of_a.iter().all(|e| e["session_id"] == a.as_str()));
    let of_b = audit(&app, &format!("?session_id={bee}&principal=erin")).await;
    assert_eq!(of_b.len(), 3, "{of_b:#?}");
    assert_eq!(
        audit(&app, &format!("?session_id={bee}&principal=admin"))
            .await
            .len(),
        0,
        "filters combine"
    );

    // since= (at or after) and until= (before), RFC 3339.
    let at = |e: &Value| {
        chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let pivot = &all[4];
    let pivot_ms = at(pivot);
    let since = audit(
        &app,
        &format!("?limit=1000&since={}", pivot["at"].as_str().unwrap()),
    )
    .await;
    let expect: Vec<&Value> = all.iter().filter(|e| at(e) >= pivot_ms).collect();
    assert_eq!(since.iter().collect::<Vec<_>>(), expect);
    assert!(since.contains(pivot));
    let until = audit(
        &app,
        &format!("?limit=1000&until={}", pivot["at"].as_str().unwrap()),
    )
    .await;
    let expect: Vec<&Value> = all.iter().filter(|e| at(e) < pivot_ms).collect();
    assert_eq!(until.iter().collect::<Vec<_>>(), expect);
    assert!(!until.contains(pivot));
    assert_eq!(since.len() + until.len(), all.len());
    // Other offsets than Z mean the same instant (`+` must be escaped in a query).
    let shifted = chrono::DateTime::from_timestamp_millis(pivot_ms)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    assert!(shifted.contains("+02:00"));
    let since_shifted = audit(
        &app,
        &format!("?limit=1000&since={}", shifted.replace('+', "%2B")),
    )
    .await;
    assert_eq!(since_shifted, since);
    let future = audit(&app, "?since=2999-01-01T00:00:00Z").await;
    assert!(future.is_empty());
    let past = audit(&app, "?until=2000-01-01T00:00:00Z").await;
    assert!(past.is_empty());
    let window = audit(
        &app,
        "?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z&limit=1000",
    )
    .await;
    assert_eq!(window.len(), all.len());
    for bad in [
        "since=yesterday",
        "since=2024-01-01",
        "until=2024-01-01T00:00:00",
        "until=1700000000",
    ] {
        let r = app.get(&format!("/api/v0/audit?{bad}"), Some(&t)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
        assert_eq!(r.body["status"], 400);
        let field = bad.split('=').next().unwrap();
        assert!(r.error().contains(field), "{bad}: {}", r.error());
    }

    // limit / offset page through the newest-first list.
    let mut paged = Vec::new();
    for page in 0..4 {
        let p = audit(&app, &format!("?limit=3&offset={}", page * 3)).await;
        assert!(p.len() <= 3);
        paged.extend(p);
    }
    assert_eq!(paged, all, "pages put together are the whole log");
    assert_eq!(audit(&app, "?limit=1").await, all[..1].to_vec());
    assert_eq!(audit(&app, "?offset=9").await, all[9..].to_vec());
    assert!(audit(&app, "?offset=10").await.is_empty());
    let r = app.get("/api/v0/audit?limit=x", Some(&t)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Filters and paging together.
    let p = audit(&app, &format!("?session_id={a}&limit=2&offset=1")).await;
    assert_eq!(p, of_a[1..3].to_vec());
    app.stop().await;
}

async fn reads_are_not_recorded_and_only_admins_read_the_log(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let frank = app.operator("frank", "user").await;
    let id = app.session(&frank, json!({"prompt": "hi"})).await;
    let before = audit(&app, "").await;
    for path in [
        "/api/v0/sessions".to_string(),
        format!("/api/v0/sessions/{id}"),
        format!("/api/v0/sessions/{id}/messages"),
        format!("/api/v0/sessions/{id}/messages/count"),
        "/api/v0/sessions/session-missing".to_string(),
        "/api/v0/operators".to_string(),
        "/api/v0/operators/frank".to_string(),
        "/api/v0/auth".to_string(),
        "/api/v0/version".to_string(),
        "/api/v0/audit".to_string(),
        "/health".to_string(),
        "/metrics".to_string(),
        "/api/v0/nope".to_string(),
    ] {
        for token in [Some(t.as_str()), Some(frank.as_str()), None] {
            app.get(&path, token).await;
        }
    }
    let r = app
        .client
        .head(format!("{}/api/v0/sessions", app.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let after = audit(&app, "").await;
    assert_eq!(before, after, "reads left audit records");
    assert!(after
        .iter()
        .all(|e| !e["action"].as_str().unwrap().starts_with("GET")));

    // Non-admins cannot read the log, whatever the filter.
    let user = app
        .post(
            "/api/v0/auth/token",
            Some(&t),
            json!({"principal": "gina", "principal_type": "User"}),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    for token in [&frank, &user] {
        for q in ["", "?principal=frank", "?session_id=x", "?limit=1"] {
            let r = app.get(&format!("/api/v0/audit{q}"), Some(token)).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{q}: {:?}", r.body);
            assert_eq!(r.body["status"], 403);
        }
    }
    let r = app.get("/api/v0/audit", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}
