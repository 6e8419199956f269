//! Health, version, the OpenAPI document and docs, metrics and request ids.

use std::collections::{BTreeMap, BTreeSet};

use raworc_testkit::{Backend, StatusCode, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

async fn text(app: &TestApp, path: &str) -> (StatusCode, String, String) {
    let resp = app
        .client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_version() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for path in ["/health", "/health/", "/api/v0/health"] {
        let r = app.get(path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.body, json!({"status": "healthy", "service": "raworc"}));
        assert!(r.content_type.starts_with("application/json"));
    }
    let d = app.get("/health/detailed", None).await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.body["status"], "healthy");
    assert_eq!(d.body["service"], "raworc");
    assert_eq!(d.body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(d.body["database"]["status"], "healthy");
    assert_eq!(d.body["database"]["detail"], "sqlite");
    assert!(d.body["database"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(d.body["uptime_s"].is_u64());
    for part in ["runtime", "image"] {
        assert_eq!(d.body[part]["status"], "not_configured", "{part}");
    }
    let v = app.get("/api/v0/version", None).await;
    assert_eq!(v.status, StatusCode::OK);
    assert_eq!(
        v.body,
        json!({"version": env!("CARGO_PKG_VERSION"), "api": "v0"})
    );
    app.stop().await;
}

/// Every route under `/api/v0` that app.rs mounts, with its methods.
fn api_routes() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        ("/api/v0/version", vec!["get"]),
        ("/api/v0/health", vec!["get"]),
        ("/api/v0/operators", vec!["get", "post"]),
        ("/api/v0/operators/{name}", vec!["get", "put", "delete"]),
        ("/api/v0/operators/{name}/password", vec!["put"]),
        ("/api/v0/operators/{name}/login", vec!["post"]),
        ("/api/v0/auth", vec!["get"]),
        ("/api/v0/auth/token", vec!["post"]),
        ("/api/v0/sessions", vec!["get", "post"]),
        ("/api/v0/sessions/{id}", vec!["get", "put", "delete"]),
        ("/api/v0/sessions/{id}/state", vec!["put"]),
        ("/api/v0/sessions/{id}/close", vec!["post"]),
        ("/api/v0/sessions/{id}/restore", vec!["post"]),
        ("/api/v0/sessions/{id}/remix", vec!["post"]),
        (
            "/api/v0/sessions/{id}/messages",
            vec!["get", "post", "delete"],
        ),
        ("/api/v0/sessions/{id}/messages/count", vec!["get"]),
        ("/api/v0/sessions/{id}/screenshot", vec!["get"]),
        ("/api/v0/sessions/{id}/computer", vec!["post"]),
        ("/api/v0/sessions/{id}/exec", vec!["post"]),
        ("/api/v0/sessions/{id}/files", vec!["get"]),
        ("/api/v0/sessions/{id}/files/{path}", vec!["get", "put"]),
        ("/api/v0/sessions/stream", vec!["get"]),
        ("/api/v0/sessions/{id}/events", vec!["get"]),
        ("/api/v0/sessions/{id}/events/stream", vec!["get"]),
        ("/api/v0/sessions/{id}/screenshots/{shot}", vec!["get"]),
        ("/api/v0/sessions/{id}/cancel", vec!["post"]),
        ("/api/v0/audit", vec!["get"]),
    ])
}

/// All `$ref` targets in `v`.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.insert(v.as_str().unwrap().to_string());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_route() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app.get("/api/v0/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type.starts_with("application/json"));
    let doc = r.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Raworc API");
    assert!(doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    let expected = api_routes();
    let listed: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = expected.keys().copied().collect();
    assert_eq!(listed, wanted, "paths in the document vs. app.rs");
    for (path, methods) in &expected {
        let ops = paths[*path].as_object().unwrap();
        let mut have: Vec<&str> = ops
            .keys()
            .map(String::as_str)
            .filter(|k| ["get", "put", "post", "delete", "patch"].contains(k))
            .collect();
        have.sort();
        let mut want = methods.clone();
        want.sort();
        assert_eq!(have, want, "methods of {path}");
        for m in methods {
            let op = &ops[*m];
            assert!(op["responses"].is_object(), "{m} {path} has responses");
            let secured = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            let public =
                ["/api/v0/version", "/api/v0/health"].contains(path) || path.ends_with("/login");
            assert_eq!(secured, !public, "{m} {path}: bearer security");
            if path.contains("{id}") || path.contains("{name}") {
                let params = op["parameters"].as_array().expect("parameters");
                assert!(
                    params.iter().any(|p| p["in"] == "path"),
                    "{m} {path} documents its path parameter"
                );
            }
        }
    }
    // A few by name, with their request bodies.
    assert!(paths["/api/v0/sessions/{id}/messages"]["post"]["requestBody"].is_object());
    assert!(paths["/api/v0/operators/{name}/login"]["post"]["requestBody"].is_object());
    let audit_params: Vec<&str> = paths["/api/v0/audit"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "principal",
        "session_id",
        "since",
        "until",
        "limit",
        "offset",
    ] {
        assert!(audit_params.contains(&p), "audit parameter {p}");
    }
    // The bearer scheme.
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    // Every reference resolves.
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "$ref {r} does not resolve"
        );
    }
    for schema in ["Session", "Message", "Operator", "ErrorBody", "AuditEntry"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    // Every documented operation is routed (no fallback 404, no 405).
    let t = app.admin_token.clone();
    for (path, methods) in &expected {
        let concrete = path
            .replace("{id}", "session-x")
            .replace("{name}", "nobody");
        for m in methods {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let body = (method == Method::POST || method == Method::PUT).then(|| json!({}));
            let r = app.call(method, &concrete, Some(&t), body).await;
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
            assert!(
                !r.error().starts_with("no route"),
                "{m} {path} is documented but not routed"
            );
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_serve_html() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, ct, body) = text(&app, "/docs/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(body.to_lowercase().contains("swagger"), "{body}");
    // The UI loads the API's own document.
    let (status, _, init) = text(&app, "/docs/swagger-initializer.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(init.contains("/api/v0/openapi.json"), "{init}");
    let (status, ct, _) = text(&app, "/docs").await;
    assert_eq!(status, StatusCode::OK, "/docs redirects to the UI");
    assert!(ct.starts_with("text/html"), "{ct}");
    app.stop().await;
}

/// The value of the sample `name{labels}` in a text exposition.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let all = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        all.then(|| value.trim().parse().unwrap())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_sessions() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.admin_token.clone();
    let ids = [
        app.session(&t, json!({})).await,
        app.session(&t, json!({})).await,
        app.session(&t, json!({})).await,
    ];
    app.post(
        &format!("/api/v0/sessions/{}/close", ids[0]),
        Some(&t),
        json!({}),
    )
    .await;
    for _ in 0..3 {
        let r = app
            .get(
                &format!("/api/v0/sessions/{}/messages/count", ids[1]),
                Some(&t),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    app.get("/api/v0/sessions/session-missing", Some(&t)).await;
    app.get("/api/v0/no-such-route", Some(&t)).await;

    let (status, ct, m) = text(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        ct.starts_with("application/openmetrics-text") || ct.starts_with("text/plain"),
        "{ct}"
    );
    assert!(m.contains("# TYPE raworc_http_requests counter"), "{m}");
    assert!(m.trim_end().ends_with("# EOF"), "{m}");
    let count = |route: &str, method: &str, status: &str| {
        sample(
            &m,
            "raworc_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(
        count("/api/v0/sessions/{id}/messages/count", "GET", "200"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(count("/api/v0/sessions", "POST", "201"), Some(3.0));
    assert_eq!(
        count("/api/v0/sessions/{id}/close", "POST", "200"),
        Some(1.0)
    );
    assert_eq!(count("/api/v0/sessions/{id}", "GET", "404"), Some(1.0));
    assert_eq!(
        count("/api/v0/operators/{name}/login", "POST", "200"),
        Some(1.0)
    );
    assert!(count("unmatched", "GET", "404").is_some(), "{m}");
    assert!(
        sample(
            &m,
            "raworc_http_request_duration_seconds_count",
            &[("route", "/api/v0/sessions/{id}/messages/count")]
        ) == Some(3.0),
        "{m}"
    );
    let sessions = |state: &str| sample(&m, "raworc_sessions", &[("state", state)]);
    assert_eq!(sessions("created"), Some(2.0), "{m}");
    assert_eq!(sessions("closed"), Some(1.0));
    for state in [
        "starting", "running", "paused", "closing", "errored", "deleted",
    ] {
        assert_eq!(sessions(state), Some(0.0), "{state}");
    }
    // The gauge follows changes.
    app.session(&t, json!({})).await;
    app.delete(&format!("/api/v0/sessions/{}", ids[1]), Some(&t))
        .await;
    let (_, _, m) = text(&app, "/metrics").await;
    let sessions = |state: &str| sample(&m, "raworc_sessions", &[("state", state)]);
    assert_eq!(sessions("created"), Some(2.0));
    assert_eq!(sessions("deleted"), Some(1.0));
    // The first scrape is counted too.
    assert_eq!(
        sample(
            &m,
            "raworc_http_requests_total",
            &[("route", "/metrics"), ("status", "200")]
        ),
        Some(1.0)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_request_ids() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let id_of = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let mut seen = BTreeSet::new();
    for (method, path) in [
        (Method::GET, "/health"),
        (Method::GET, "/health/detailed"),
        (Method::GET, "/metrics"),
        (Method::GET, "/api/v0/version"),
        (Method::GET, "/api/v0/sessions"),
        (Method::GET, "/api/v0/openapi.json"),
        (Method::GET, "/docs/"),
        (Method::GET, "/nope"),
        (Method::PATCH, "/api/v0/sessions"),
        (Method::POST, "/api/v0/sessions"),
    ] {
        let resp = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        let id = id_of(&resp).unwrap_or_else(|| panic!("{method} {path}: no x-request-id"));
        assert!(!id.is_empty() && id.len() <= 64, "{id}");
        assert!(seen.insert(id), "request ids are unique");
    }
    // A sane client id is echoed; anything else is replaced.
    for sane in ["abc-123", "trace.id:1_2", &"a".repeat(64)] {
        let resp = app
            .client
            .get(format!("{}/health", app.base))
            .header("x-request-id", sane)
            .send()
            .await
            .unwrap();
        assert_eq!(id_of(&resp).as_deref(), Some(sane));
    }
    for insane in ["has space", &"a".repeat(65), "semi;colon", "", "<script>"] {
        let resp = app
            .client
            .get(format!("{}/api/v0/sessions", app.base))
            .header("x-request-id", insane)
            .send()
            .await
            .unwrap();
        let id = id_of(&resp).unwrap();
        assert_ne!(id, insane);
        assert!(
            id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "generated: {id}"
        );
    }
    app.stop().await;
}
