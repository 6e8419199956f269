//! Test support: a fresh database of each kind per test, and the real server
//! spawned on a random loopback port against it.
//!
//! Which databases run is chosen by `RAWORC_TEST_DATABASES` (default
//! `sqlite,postgres,mysql`); server URLs by `RAWORC_TEST_POSTGRES_URL` and
//! `RAWORC_TEST_MYSQL_URL`. A listed database that cannot be reached fails
//! the test rather than skipping it.

pub mod agent;
pub mod computer;
pub mod model;
pub mod process;
pub mod scan;
pub mod web;

use std::net::SocketAddr;

use raworc_server::{Running, ServerConfig};
use raworc_store::Store;
use reqwest::Method;
use serde_json::Value;

pub use reqwest::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        }
    }

    /// Whether this run tests against this backend.
    pub fn enabled(self) -> bool {
        let list = std::env::var("RAWORC_TEST_DATABASES")
            .unwrap_or_else(|_| "sqlite,postgres,mysql".to_string());
        list.split(',').any(|b| b.trim() == self.name())
    }

    fn server_url(self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                std::env::var("RAWORC_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into()),
            ),
            Backend::MySql => Some(
                std::env::var("RAWORC_TEST_MYSQL_URL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into()),
            ),
        }
    }
}

/// A database that exists for one test and is dropped afterwards.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    dropped: bool,
}

impl TestDb {
    pub fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let name = format!(
            "raworc_t_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let url = match backend.server_url() {
            None => format!("sqlite://{}", dir.path().join("raworc.db").display()),
            Some(server) => format!("{}/{name}", server.trim_end_matches('/')),
        };
        TestDb {
            url,
            dir,
            dropped: false,
        }
    }

    pub async fn drop_database(mut self) {
        self.dropped = true;
        Store::drop_database(&self.url)
            .await
            .expect("dropping the test database");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped || self.url.starts_with("sqlite:") {
            return;
        }
        // The test failed before clean-up: drop on a thread of its own.
        let url = self.url.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(Store::drop_database(&url));
            }
        })
        .join();
    }
}

/// Server logs in test output, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A response: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub content_type: String,
}

impl Reply {
    /// The `error` message of an error body.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

/// The real server on a random port with a fresh database.
pub struct TestApp {
    pub backend: Backend,
    pub base: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub data_dir: std::path::PathBuf,
    running: Option<Running>,
    db: Option<TestDb>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns with a configuration adjusted by `tweak`.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut ServerConfig)) -> TestApp {
        Self::start(backend, TestDb::new(backend), tweak).await
    }

    /// Starts a server again on the database and data dir kept by
    /// [`TestApp::stop_keep`]: a restart of the same installation.
    pub async fn respawn(backend: Backend, db: TestDb) -> TestApp {
        Self::start(backend, db, |_| {}).await
    }

    /// [`TestApp::respawn`] with a configuration adjusted by `tweak`.
    pub async fn respawn_with(
        backend: Backend,
        db: TestDb,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestApp {
        Self::start(backend, db, tweak).await
    }

    async fn start(backend: Backend, db: TestDb, tweak: impl FnOnce(&mut ServerConfig)) -> TestApp {
        init_logging();
        let data_dir = db.dir.path().join("data");
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().expect("loopback address"),
            data_dir.clone(),
        );
        config.database_url = Some(db.url.clone());
        config.admin_password = Some("admin-password".into());
        // Computers only where a test asks for them (they need root and the image).
        config.runtime = raworc_server::config::RuntimeKind::None;
        tweak(&mut config);
        let running = raworc_server::spawn(config)
            .await
            .unwrap_or_else(|e| panic!("starting the server on {}: {e:#}", backend.name()));
        let addr = running.addr;
        let mut app = TestApp {
            backend,
            base: format!("http://{addr}"),
            addr,
            client: reqwest::Client::new(),
            admin_token: String::new(),
            data_dir,
            running: Some(running),
            db: Some(db),
        };
        app.admin_token = app.login("admin", "admin-password").await;
        app
    }

    /// A client of a server running elsewhere (another process) whose data
    /// dir is `data_dir`, logged in as admin. Stopping it stops nothing.
    pub async fn attach(addr: SocketAddr, data_dir: std::path::PathBuf) -> TestApp {
        let mut app = TestApp {
            backend: Backend::Sqlite,
            base: format!("http://{addr}"),
            addr,
            client: reqwest::Client::new(),
            admin_token: String::new(),
            data_dir,
            running: None,
            db: None,
        };
        app.admin_token = app.login("admin", "admin-password").await;
        app
    }

    pub fn state(&self) -> &raworc_server::AppState {
        &self.running.as_ref().expect("server running").state
    }

    pub fn db_url(&self) -> &str {
        &self.db.as_ref().expect("database").url
    }

    /// Logs in and returns the token; panics unless the login succeeds.
    pub async fn login(&self, name: &str, pass: &str) -> String {
        let r = self
            .call(
                Method::POST,
                &format!("/api/v0/operators/{name}/login"),
                None,
                Some(serde_json::json!({ "pass": pass })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "login {name}: {:?}", r.body);
        r.body["token"].as_str().expect("token").to_string()
    }

    /// Creates an operator with `role` (as admin) and returns its token.
    pub async fn operator(&self, name: &str, role: &str) -> String {
        let pass = format!("{name}-password");
        let r = self
            .call(
                Method::POST,
                "/api/v0/operators",
                Some(&self.admin_token),
                Some(serde_json::json!({ "user": name, "pass": pass, "role": role })),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "create operator {name}: {:?}",
            r.body
        );
        self.login(name, &pass).await
    }

    /// Creates a session owned by `token`'s principal and returns its id.
    pub async fn session(&self, token: &str, body: Value) -> String {
        let r = self
            .call(Method::POST, "/api/v0/sessions", Some(token), Some(body))
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "create session: {:?}",
            r.body
        );
        r.body["id"].as_str().expect("id").to_string()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    /// Sends raw bytes with a content type, for malformed-input tests.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    /// Sends a request built by hand (any headers or body) and reads the reply.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        Self::reply(req.send().await.expect("request sent")).await
    }

    async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        // A stream of server-sent events does not end: only its start is read.
        let body = if content_type.starts_with("text/event-stream") {
            Value::Null
        } else {
            let bytes = resp.bytes().await.expect("response body");
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Reply {
            status,
            headers,
            body,
            content_type,
        }
    }

    /// The body of an unauthenticated `GET path` as text (metrics, pages).
    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent")
            .text()
            .await
            .expect("response body")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Shuts the server down and drops the database.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("server shut down cleanly");
        }
        if let Some(db) = self.db.take() {
            db.drop_database().await;
        }
    }

    /// Shuts the server down but keeps the database and data dir, for restart tests.
    pub async fn stop_keep(mut self) -> TestDb {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("server shut down cleanly");
        }
        self.db.take().expect("database")
    }
}

impl Drop for TestApp {
    /// A test that failed before [`TestApp::stop`] would leave its
    /// computers running after the test process ends: stop them here.
    fn drop(&mut self) {
        let Some(state) = self.running.as_ref().map(|r| r.state.clone()) else {
            return;
        };
        let Some(runtime) = state.runtime.clone() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(runtime.stop_all());
            }
            raworc_server::computers::unmount_disk_image(&state.config);
        })
        .join();
    }
}

/// Runs `async fn $name(backend: Backend)` once per enabled backend, as
/// `$name::sqlite`, `$name::postgres` and `$name::mysql`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::Backend;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if Backend::Sqlite.enabled() { super::$name(Backend::Sqlite).await }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if Backend::Postgres.enabled() { super::$name(Backend::Postgres).await }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mysql() {
                    if Backend::MySql.enabled() { super::$name(Backend::MySql).await }
                }
            }
        )*
    };
}
