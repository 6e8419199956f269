//! Session secrets, on every database: the API never returns a value, the
//! database never holds the plaintext (only a sealed value that opens with
//! the server's key), and a configured key is the one used.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use raworc_server::crypto::SecretBox;
use raworc_server::ServerConfig;
use raworc_testkit::{backend_tests, Backend, StatusCode, TestApp, TestDb};
use serde_json::{json, Value};

backend_tests!(
    values_never_leave_through_the_api,
    plaintext_never_reaches_the_database,
    the_key_file_survives_a_restart,
    a_configured_key_is_used,
);

fn canary(kind: &str) -> String {
    format!("{kind}-canary-{}", uuid::Uuid::new_v4().simple())
}

/// Fails if `canary` appears anywhere in `v`'s JSON text.
#[track_caller]
fn assert_hidden(what: &str, v: &Value, canary: &str) {
    let text = v.to_string();
    assert!(!text.contains(canary), "{what} shows the secret: {text}");
}

async fn values_never_leave_through_the_api(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let secret = canary("plaintext");
    let r = app
        .post(
            "/api/v0/sessions",
            Some(&t),
            json!({"name": "s", "secrets": {"API_KEY": secret, "OTHER": "x"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(
        r.body["secrets"],
        json!(["API_KEY", "OTHER"]),
        "names are shown"
    );
    assert_hidden("create", &r.body, &secret);
    let id = r.body["id"].as_str().unwrap().to_string();

    let got = app.get(&format!("/api/v0/sessions/{id}"), Some(&t)).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["secrets"], json!(["API_KEY", "OTHER"]));
    assert_hidden("get", &got.body, &secret);
    let list = app.get("/api/v0/sessions", Some(&t)).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    assert_hidden("list", &list.body, &secret);

    let remix = app
        .post(&format!("/api/v0/sessions/{id}/remix"), Some(&t), json!({}))
        .await;
    assert_eq!(remix.status, StatusCode::CREATED);
    assert_eq!(remix.body["secrets"], json!(["API_KEY", "OTHER"]));
    assert_hidden("remix", &remix.body, &secret);
    let child = remix.body["id"].as_str().unwrap().to_string();
    let got = app
        .get(&format!("/api/v0/sessions/{child}"), Some(&t))
        .await;
    assert_hidden("remixed get", &got.body, &secret);
    let upd = app
        .put(
            &format!("/api/v0/sessions/{id}"),
            Some(&t),
            json!({"name": "renamed"}),
        )
        .await;
    assert_eq!(upd.status, StatusCode::OK);
    assert_hidden("update", &upd.body, &secret);
    // Secrets cannot be changed, or read back, through an update.
    let r = app
        .put(
            &format!("/api/v0/sessions/{id}"),
            Some(&t),
            json!({"secrets": {"API_KEY": "new"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Rejected creates do not echo the value either.
    for body in [
        json!({"secrets": {"1BAD": secret}}),
        json!({"secrets": {"K": secret}, "name": 5}),
        json!({"secrets": {"K": secret}, "bogus": true}),
        json!({"secrets": {"K": secret, "L": 7}}),
        json!({"secrets": {"K": format!("{secret}\u{0}")}}),
    ] {
        let r = app.post("/api/v0/sessions", Some(&t), body).await;
        assert!(r.status.is_client_error(), "{:?}", r.body);
        assert_hidden("an error", &r.body, &secret);
    }

    // Nor do the audit log, messages, metrics or the OpenAPI document.
    let audit = app.get("/api/v0/audit?limit=1000", Some(&t)).await;
    assert!(!audit.body.as_array().unwrap().is_empty());
    assert_hidden("audit", &audit.body, &secret);
    let msgs = app
        .get(&format!("/api/v0/sessions/{id}/messages"), Some(&t))
        .await;
    assert_hidden("messages", &msgs.body, &secret);
    for path in ["/metrics", "/api/v0/openapi.json", "/health/detailed"] {
        let text = app.text(path).await;
        assert!(!text.contains(&secret), "{path} shows the secret");
    }

    // The values are there, sealed, for the runtime: both sessions open.
    for s in [&id, &child] {
        let sealed = app.state().store.session_secrets(s).await.unwrap();
        let names: Vec<&str> = sealed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["API_KEY", "OTHER"]);
        assert!(!sealed[0].1.contains(&secret));
        assert_eq!(
            app.state().secrets.open("API_KEY", &sealed[0].1).unwrap(),
            secret
        );
        assert_eq!(
            app.state().secrets.open("OTHER", &sealed[1].1).unwrap(),
            "x"
        );
    }
    app.stop().await;
}

/// Every file under `dir`, recursively, as (path, bytes).
fn read_tree(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(read_tree(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every row of every table in the test database, as text.
async fn all_rows(backend: Backend, url: &str) -> Vec<(String, String)> {
    use sqlx::Row;
    let mut rows = Vec::new();
    match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            for table in tables {
                let sql = format!("SELECT t::text AS row FROM \"{table}\" t");
                for r in sqlx::query(&sql).fetch_all(&pool).await.unwrap() {
                    rows.push((table.clone(), r.get::<String, _>("row")));
                }
            }
            pool.close().await;
        }
        Backend::MySql => {
            let pool = sqlx::MySqlPool::connect(url).await.unwrap();
            let tables: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT CAST(table_name AS BINARY) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            for table in tables {
                let table = String::from_utf8(table).unwrap();
                let columns: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT CAST(column_name AS BINARY) FROM information_schema.columns \
                     WHERE table_schema = DATABASE() AND table_name = ?",
                )
                .bind(&table)
                .fetch_all(&pool)
                .await
                .unwrap();
                let cols: Vec<String> = columns
                    .into_iter()
                    .map(|c| format!("`{}`", String::from_utf8(c).unwrap()))
                    .collect();
                let sql = format!(
                    "SELECT CAST(CONCAT_WS('|', {}) AS BINARY) AS row_text FROM `{table}`",
                    cols.join(", ")
                );
                for r in sqlx::query(&sql).fetch_all(&pool).await.unwrap() {
                    let bytes: Vec<u8> = r.get("row_text");
                    rows.push((table.clone(), String::from_utf8_lossy(&bytes).into_owned()));
                }
            }
            pool.close().await;
        }
        Backend::Sqlite => unreachable!("SQLite is read as files"),
    }
    rows
}

async fn plaintext_never_reaches_the_database(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let secret = canary("plaintext");
    // Not secret: proves the scan below sees what the server stored.
    let visible = canary("name");
    let id = app
        .session(
            &t,
            json!({"name": visible, "secrets": {"API_KEY": secret}, "prompt": "use API_KEY"}),
        )
        .await;
    let child = app
        .post(&format!("/api/v0/sessions/{id}/remix"), Some(&t), json!({}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.post(
        &format!("/api/v0/sessions/{id}/messages"),
        Some(&t),
        json!({"content": "hello"}),
    )
    .await;
    app.post(
        &format!("/api/v0/sessions/{child}/close"),
        Some(&t),
        json!({}),
    )
    .await;
    let sealed = app.state().store.session_secrets(&id).await.unwrap();
    assert_eq!(sealed.len(), 1);
    let (name, sealed) = sealed[0].clone();
    assert_eq!(name, "API_KEY");
    assert_eq!(app.state().secrets.open(&name, &sealed).unwrap(), secret);
    assert!(
        app.state().secrets.open("OTHER_NAME", &sealed).is_err(),
        "a sealed value is bound to its name"
    );

    match b {
        Backend::Sqlite => {
            let db = app.stop_keep().await;
            let files = read_tree(db.dir.path());
            let names: Vec<String> = files
                .iter()
                .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            assert!(names.iter().any(|n| n == "raworc.db"), "{names:?}");
            for (path, bytes) in &files {
                assert!(
                    !contains(bytes, &secret),
                    "{} holds the plaintext secret",
                    path.display()
                );
            }
            assert!(
                files.iter().any(|(_, b)| contains(b, &visible)),
                "the session name is stored somewhere in {names:?}: the scan works"
            );
            assert!(
                files.iter().any(|(_, b)| contains(b, &sealed)),
                "the sealed value is stored"
            );
            db.drop_database().await;
        }
        Backend::Postgres | Backend::MySql => {
            let rows = all_rows(b, app.db_url()).await;
            let tables: std::collections::BTreeSet<&str> =
                rows.iter().map(|(t, _)| t.as_str()).collect();
            for t in [
                "sessions",
                "session_secrets",
                "messages",
                "audit",
                "operators",
            ] {
                assert!(tables.contains(t), "no rows read from {t}: {tables:?}");
            }
            for (table, row) in &rows {
                assert!(!row.contains(&secret), "{table} holds the plaintext: {row}");
            }
            assert!(
                rows.iter()
                    .any(|(t, r)| t == "sessions" && r.contains(&visible)),
                "the scan sees stored text"
            );
            let stored: Vec<&String> = rows
                .iter()
                .filter(|(t, _)| t == "session_secrets")
                .map(|(_, r)| r)
                .collect();
            assert_eq!(stored.len(), 2, "parent and remixed child: {stored:?}");
            assert!(stored.iter().any(|r| r.contains(&sealed)));
            // What the database holds opens with the server's key.
            let raw: String = match b {
                Backend::Postgres => {
                    let pool = sqlx::PgPool::connect(app.db_url()).await.unwrap();
                    let v = sqlx::query_scalar(
                        "SELECT sealed FROM session_secrets WHERE session_id = $1 AND name = $2",
                    )
                    .bind(&child)
                    .bind("API_KEY")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    pool.close().await;
                    v
                }
                _ => {
                    let pool = sqlx::MySqlPool::connect(app.db_url()).await.unwrap();
                    let v: Vec<u8> = sqlx::query_scalar(
                        "SELECT CAST(sealed AS BINARY) FROM session_secrets \
                         WHERE session_id = ? AND name = ?",
                    )
                    .bind(&child)
                    .bind("API_KEY")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    pool.close().await;
                    String::from_utf8(v).unwrap()
                }
            };
            assert_eq!(app.state().secrets.open("API_KEY", &raw).unwrap(), secret);
            app.stop().await;
        }
    }
}

/// Without a configured key the key file in the data dir is created once and
/// reused, so secrets stay readable across restarts.
async fn the_key_file_survives_a_restart(b: Backend) {
    let app = TestApp::spawn(b).await;
    let secret = canary("restart");
    let id = app
        .session(&app.admin_token, json!({"secrets": {"API_KEY": secret}}))
        .await;
    let key_file = app.data_dir.join("secret.key");
    assert!(key_file.exists(), "the key file is created on first start");
    let key = std::fs::read(&key_file).unwrap();
    let data_dir = app.data_dir.clone();
    let db: TestDb = app.stop_keep().await;

    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), data_dir.clone());
    config.database_url = Some(db.url.clone());
    config.runtime = raworc_server::config::RuntimeKind::None;
    let again = raworc_server::spawn(config).await.expect("restart");
    assert_eq!(std::fs::read(&key_file).unwrap(), key, "the same key file");
    let sealed = again.state.store.session_secrets(&id).await.unwrap();
    assert_eq!(
        again.state.secrets.open("API_KEY", &sealed[0].1).unwrap(),
        secret
    );
    again.shutdown().await.unwrap();

    // Without that file (a lost data dir), the value cannot be opened.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = SecretBox::load(elsewhere.path(), None).unwrap();
    assert!(other.open("API_KEY", &sealed[0].1).is_err());
    db.drop_database().await;
}

async fn a_configured_key_is_used(b: Backend) {
    let key_a = STANDARD.encode([7u8; 32]);
    let key_b = STANDARD.encode([9u8; 32]);
    let app = TestApp::spawn_with(b, |c| c.secret_key = Some(key_a.clone())).await;
    let secret = canary("configured");
    let id = app
        .session(&app.admin_token, json!({"secrets": {"API_KEY": secret}}))
        .await;
    let sealed = app.state().store.session_secrets(&id).await.unwrap()[0]
        .1
        .clone();
    assert!(
        !app.data_dir.join("secret.key").exists(),
        "no key file is made when a key is configured"
    );
    let dir = tempfile::tempdir().unwrap();
    // The configured key opens it: it is the key the server used.
    let with_a = SecretBox::load(dir.path(), Some(&key_a)).unwrap();
    assert_eq!(with_a.open("API_KEY", &sealed).unwrap(), secret);
    // A second server with another key cannot.
    let other = TestApp::spawn_with(b, |c| c.secret_key = Some(key_b.clone())).await;
    let err = other.state().secrets.open("API_KEY", &sealed).unwrap_err();
    assert!(err.to_string().contains("cannot be decrypted"), "{err}");
    // Nor can a server that uses a key file.
    let plain = TestApp::spawn(b).await;
    assert!(plain.state().secrets.open("API_KEY", &sealed).is_err());
    // A server with the same key can.
    let same = TestApp::spawn_with(b, |c| c.secret_key = Some(format!(" {key_a}\n"))).await;
    assert_eq!(
        same.state().secrets.open("API_KEY", &sealed).unwrap(),
        secret
    );
    for a in [other, plain, same] {
        a.stop().await;
    }
    app.stop().await;

    // Bad keys stop the server from starting.
    for bad in [
        "not base64!".to_string(),
        STANDARD.encode([1u8; 16]),
        String::new(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
        config.runtime = raworc_server::config::RuntimeKind::None;
        config.database_url = Some(format!(
            "sqlite://{}",
            dir.path().join("raworc.db").display()
        ));
        config.secret_key = Some(bad.clone());
        let err = match raworc_server::build_state(config).await {
            Ok(_) => panic!("started with secret key {bad:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("key") || err.contains("base64"),
            "{bad:?}: {err}"
        );
    }
}
