//! Authentication: login, token lifetime and revocation, token minting,
//! login limits, the last-admin rule, the bootstrap password rule and the
//! key files. Whatever touches the database runs on every database.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use raworc_api::PrincipalType;
use raworc_server::auth::jwt::{Claims, JwtKeys};
use raworc_server::ServerConfig;
use raworc_testkit::{backend_tests, Backend, Reply, StatusCode, TestApp};
use serde_json::{json, Value};

backend_tests!(
    login_response_shape,
    bad_credentials_look_the_same,
    expired_token_rejected,
    deleted_operator_tokens_revoked,
    password_change_revokes_tokens,
    whoami_shape,
    minted_user_token_sees_only_its_own,
    minted_operator_token_needs_an_operator,
    last_admin_cannot_go,
    keys_survive_a_restart,
);

const DAY: i64 = 24 * 3600;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Seconds since the epoch of an RFC 3339 `expires_at`.
fn epoch(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .timestamp()
}

fn assert_near(actual: i64, expected: i64, what: &str) {
    assert!(
        (actual - expected).abs() <= 60,
        "{what}: {actual} is not within a minute of {expected}"
    );
}

/// The server's own signing key, read from the data dir.
fn server_keys(app: &TestApp) -> JwtKeys {
    let text = std::fs::read_to_string(app.data_dir.join("jwt.key")).expect("jwt.key");
    JwtKeys::from_secret(&STANDARD.decode(text.trim()).expect("jwt.key is base64"))
}

/// A token for operator `name` signed with the server's key, with its
/// current token generation and the given expiry.
async fn forge(app: &TestApp, name: &str, exp: i64) -> String {
    let op = app
        .state()
        .store
        .get_operator(name)
        .await
        .unwrap()
        .expect("operator exists");
    let claims = Claims {
        sub: name.into(),
        typ: PrincipalType::Operator,
        role: op.role,
        r#gen: Some(op.token_gen),
        iat: now() - 2 * DAY,
        exp,
        jti: uuid::Uuid::new_v4().simple().to_string(),
    };
    server_keys(app).issue(&claims).unwrap()
}

async fn create_operator(app: &TestApp, name: &str, pass: &str, role: &str) {
    let r = app
        .post(
            "/api/v0/operators",
            Some(&app.admin_token),
            json!({"user": name, "pass": pass, "role": role}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "create {name}: {:?}", r.body);
}

async fn try_login(app: &TestApp, name: &str, pass: &str) -> raworc_testkit::Reply {
    app.post(
        &format!("/api/v0/operators/{name}/login"),
        None,
        json!({"pass": pass}),
    )
    .await
}

async fn status_of_auth(app: &TestApp, token: &str) -> StatusCode {
    app.get("/api/v0/auth", Some(token)).await.status
}

async fn login_response_shape(b: Backend) {
    let app = TestApp::spawn(b).await;
    let r = try_login(&app, "admin", "admin-password").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let keys: Vec<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, ["expires_at", "role", "token", "token_type", "user"]);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["user"], "admin");
    assert_eq!(r.body["role"], "admin");
    assert_near(epoch(&r.body["expires_at"]), now() + DAY, "expires_at");
    let token = r.body["token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT");
    assert_eq!(status_of_auth(&app, token).await, StatusCode::OK);

    create_operator(&app, "dana", "dana-password", "user").await;
    let r = try_login(&app, "dana", "dana-password").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["user"], "dana");
    assert_eq!(r.body["role"], "user");
    let op = app
        .state()
        .store
        .get_operator("dana")
        .await
        .unwrap()
        .unwrap();
    assert!(op.last_login_at.is_some(), "a login is noted");
    app.stop().await;
}

async fn bad_credentials_look_the_same(b: Backend) {
    let app = TestApp::spawn(b).await;
    let wrong = try_login(&app, "admin", "not-the-password").await;
    let unknown = try_login(&app, "nobody", "admin-password").await;
    for r in [&wrong, &unknown] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
        assert_eq!(r.body["status"], 401);
        assert!(r.body.get("token").is_none());
    }
    assert_eq!(wrong.error(), "invalid operator name or password");
    assert_eq!(
        wrong.body, unknown.body,
        "a wrong password and an unknown name must not be told apart"
    );
    // A malformed body is not a credential check at all.
    let r = app
        .post(
            "/api/v0/operators/admin/login",
            None,
            json!({"password": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    app.stop().await;
}

async fn expired_token_rejected(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.operator("erin", "user").await;
    // Identical tokens but for the expiry: the fresh one works, the old one not.
    let fresh = forge(&app, "erin", now() + 600).await;
    assert_eq!(status_of_auth(&app, &fresh).await, StatusCode::OK);
    let expired = forge(&app, "erin", now() - 1).await;
    let r = app.get("/api/v0/sessions", Some(&expired)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert!(r.error().contains("expired"), "{}", r.error());
    // Also for an admin.
    let expired = forge(&app, "admin", now() - 3600).await;
    let r = app.get("/api/v0/operators", Some(&expired)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn deleted_operator_tokens_revoked(b: Backend) {
    let app = TestApp::spawn(b).await;
    let token = app.operator("frank", "user").await;
    let minted = mint_operator(&app, "frank").await;
    assert_eq!(status_of_auth(&app, &token).await, StatusCode::OK);
    assert_eq!(status_of_auth(&app, &minted).await, StatusCode::OK);

    let r = app
        .delete("/api/v0/operators/frank", Some(&app.admin_token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["user"], "frank");
    for t in [&token, &minted] {
        let r = app.get("/api/v0/auth", Some(t)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
        assert!(r.error().contains("revoked"), "{}", r.error());
    }
    assert_eq!(
        try_login(&app, "frank", "frank-password").await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = app
        .delete("/api/v0/operators/frank", Some(&app.admin_token))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // Same name, same password, even a different role: old tokens stay dead.
    create_operator(&app, "frank", "frank-password", "admin").await;
    for t in [&token, &minted] {
        assert_eq!(
            status_of_auth(&app, t).await,
            StatusCode::UNAUTHORIZED,
            "a re-created operator must not revive old tokens"
        );
        assert_eq!(
            app.get("/api/v0/operators", Some(t)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let new = app.login("frank", "frank-password").await;
    let r = app.get("/api/v0/auth", Some(&new)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["role"], "admin");
    app.stop().await;
}

async fn password_change_revokes_tokens(b: Backend) {
    let app = TestApp::spawn(b).await;
    let old = app.operator("gina", "user").await;
    let minted = mint_operator(&app, "gina").await;

    // The operator changes its own password.
    let r = app
        .put(
            "/api/v0/operators/gina/password",
            Some(&old),
            json!({"pass": "gina-new-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["user"], "gina");
    assert!(!r.body.to_string().contains("gina-new-password"));
    for t in [&old, &minted] {
        let r = app.get("/api/v0/auth", Some(t)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
        assert!(r.error().contains("password changed"), "{}", r.error());
    }
    assert_eq!(
        try_login(&app, "gina", "gina-password").await.status,
        StatusCode::UNAUTHORIZED,
        "the old password no longer works"
    );
    let new = app.login("gina", "gina-new-password").await;
    assert_eq!(status_of_auth(&app, &new).await, StatusCode::OK);

    // An admin resetting it revokes the same way; too short a password is refused.
    let r = app
        .put(
            "/api/v0/operators/gina/password",
            Some(&app.admin_token),
            json!({"pass": "short"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status_of_auth(&app, &new).await,
        StatusCode::OK,
        "a refused change revokes nothing"
    );
    let r = app
        .put(
            "/api/v0/operators/gina/password",
            Some(&app.admin_token),
            json!({"pass": "gina-third-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(status_of_auth(&app, &new).await, StatusCode::UNAUTHORIZED);
    app.login("gina", "gina-third-password").await;
    let r = app
        .put(
            "/api/v0/operators/nobody/password",
            Some(&app.admin_token),
            json!({"pass": "whatever-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn whoami_shape(b: Backend) {
    let app = TestApp::spawn(b).await;
    let r = app.get("/api/v0/auth", Some(&app.admin_token)).await;
    assert_eq!(r.status, StatusCode::OK);
    let mut keys: Vec<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expires_at", "role", "type", "user"]);
    assert_eq!(r.body["user"], "admin");
    assert_eq!(r.body["type"], "Operator");
    assert_eq!(r.body["role"], "admin");
    assert_near(epoch(&r.body["expires_at"]), now() + DAY, "expires_at");

    let user = app.operator("hank", "user").await;
    let r = app.get("/api/v0/auth", Some(&user)).await;
    assert_eq!(r.body["user"], "hank");
    assert_eq!(r.body["type"], "Operator");
    assert_eq!(r.body["role"], "user");

    let minted = mint(
        &app,
        json!({"principal": "ivy", "principal_type": "User", "expires_in_s": 600}),
    )
    .await;
    let r = app.get("/api/v0/auth", minted.body["token"].as_str()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["user"], "ivy");
    assert_eq!(r.body["type"], "User");
    assert_eq!(r.body["role"], "user");
    assert_eq!(r.body["expires_at"], minted.body["expires_at"]);
    assert_near(
        epoch(&r.body["expires_at"]),
        now() + 600,
        "minted expires_at",
    );

    // The role is read from the operator, not from the token: a demotion
    // takes effect on tokens already issued.
    let r = app
        .put(
            "/api/v0/operators/hank",
            Some(&app.admin_token),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.get("/api/v0/auth", Some(&user)).await.body["role"],
        "admin"
    );
    assert_eq!(
        app.get("/api/v0/operators", Some(&user)).await.status,
        StatusCode::OK
    );
    app.put(
        "/api/v0/operators/hank",
        Some(&app.admin_token),
        json!({"role": "user"}),
    )
    .await;
    assert_eq!(
        app.get("/api/v0/operators", Some(&user)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/api/v0/auth", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

/// `POST /auth/token` as the admin.
async fn mint(app: &TestApp, body: Value) -> Reply {
    app.post("/api/v0/auth/token", Some(&app.admin_token), body)
        .await
}

/// Mints an operator token for `name` (which must exist).
async fn mint_operator(app: &TestApp, name: &str) -> String {
    let r = mint(
        app,
        json!({"principal": name, "principal_type": "Operator"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["token"].as_str().unwrap().to_string()
}

async fn mint_user(app: &TestApp, name: &str) -> String {
    let r = mint(app, json!({"principal": name, "principal_type": "User"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let mut keys: Vec<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expires_at", "token", "token_type"]);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_near(
        epoch(&r.body["expires_at"]),
        now() + DAY,
        "default lifetime",
    );
    r.body["token"].as_str().unwrap().to_string()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

async fn minted_user_token_sees_only_its_own(b: Backend) {
    let app = TestApp::spawn(b).await;
    // An operator with the same name as the user principal: a different principal.
    let op_jack = app.operator("jack", "user").await;
    let jack = mint_user(&app, "jack").await;
    let kim = mint_user(&app, "kim").await;

    let admins = app.session(&app.admin_token, json!({})).await;
    let operators = app.session(&op_jack, json!({})).await;
    let kims = app.session(&kim, json!({})).await;
    let r = app
        .post("/api/v0/sessions", Some(&jack), json!({"name": "mine"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["owner"], "jack");
    let mine = r.body["id"].as_str().unwrap().to_string();

    let list = app.get("/api/v0/sessions", Some(&jack)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(ids(&list.body), vec![mine.clone()], "only its own session");
    let list = app.get("/api/v0/sessions", Some(&op_jack)).await;
    assert_eq!(
        ids(&list.body),
        vec![operators.clone()],
        "operator jack is someone else"
    );
    let all = app.get("/api/v0/sessions", Some(&app.admin_token)).await;
    assert_eq!(ids(&all.body).len(), 4, "admins see everyone's");

    for other in [&admins, &operators, &kims] {
        let r = app
            .get(&format!("/api/v0/sessions/{other}"), Some(&jack))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{other}: {:?}", r.body);
    }
    assert_eq!(
        app.get(&format!("/api/v0/sessions/{mine}"), Some(&jack))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/api/v0/sessions/{mine}"), Some(&op_jack))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // No operator powers, not even over the operator that shares its name.
    for path in [
        "/api/v0/operators",
        "/api/v0/operators/jack",
        "/api/v0/audit",
    ] {
        let r = app.get(path, Some(&jack)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {:?}", r.body);
    }
    let r = app
        .put(
            "/api/v0/operators/jack/password",
            Some(&jack),
            json!({"pass": "hijacked-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post(
            "/api/v0/auth/token",
            Some(&jack),
            json!({"principal": "jack", "principal_type": "User"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Lifetimes: positive, and at most about a year.
    let r = mint(
        &app,
        json!({"principal": "jack", "principal_type": "User", "expires_in_s": 0}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = mint(
        &app,
        json!({"principal": "jack", "principal_type": "User", "expires_in_s": 10 * 365 * DAY}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_near(
        epoch(&r.body["expires_at"]),
        now() + 366 * DAY,
        "capped lifetime",
    );
    let r = mint(
        &app,
        json!({"principal": "no spaces", "principal_type": "User"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

async fn minted_operator_token_needs_an_operator(b: Backend) {
    let app = TestApp::spawn(b).await;
    let r = mint(
        &app,
        json!({"principal": "ghost", "principal_type": "Operator"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    assert!(r.error().contains("ghost"), "{}", r.error());

    create_operator(&app, "lena", "lena-password", "user").await;
    let token = mint_operator(&app, "lena").await;
    let token = token.as_str();
    let who = app.get("/api/v0/auth", Some(token)).await;
    assert_eq!(who.body["user"], "lena");
    assert_eq!(who.body["type"], "Operator");
    assert_eq!(who.body["role"], "user");
    // It is lena: it may read itself, and what it creates is lena's.
    assert_eq!(
        app.get("/api/v0/operators/lena", Some(token)).await.status,
        StatusCode::OK
    );
    let id = app.session(token, json!({})).await;
    let login = app.login("lena", "lena-password").await;
    assert_eq!(
        app.get(&format!("/api/v0/sessions/{id}"), Some(&login))
            .await
            .status,
        StatusCode::OK
    );
    app.stop().await;
}

async fn last_admin_cannot_go(b: Backend) {
    let app = TestApp::spawn(b).await;
    let admin = app.admin_token.clone();
    let r = app.delete("/api/v0/operators/admin", Some(&admin)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = app
        .put(
            "/api/v0/operators/admin",
            Some(&admin),
            json!({"role": "user"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let me = app.get("/api/v0/auth", Some(&admin)).await;
    assert_eq!(me.body["role"], "admin", "still an admin");
    // Users do not count as admins.
    app.operator("mia", "user").await;
    let r = app.delete("/api/v0/operators/admin", Some(&admin)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // With a second admin, the first may go; then the second is the last.
    let second = app.operator("nora", "admin").await;
    let r = app
        .put(
            "/api/v0/operators/admin",
            Some(&admin),
            json!({"role": "user"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["role"], "user");
    assert_eq!(
        app.get("/api/v0/operators", Some(&admin)).await.status,
        StatusCode::FORBIDDEN,
        "the demotion applies to the old token"
    );
    let r = app.delete("/api/v0/operators/nora", Some(&second)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .put(
            "/api/v0/operators/nora",
            Some(&second),
            json!({"role": "user"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app.delete("/api/v0/operators/admin", Some(&second)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let ops = app.get("/api/v0/operators", Some(&second)).await;
    let admins: Vec<&str> = ops
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["role"] == "admin")
        .map(|o| o["user"].as_str().unwrap())
        .collect();
    assert_eq!(admins, ["nora"]);

    // Two admins removing each other at once: one of them must remain.
    let r = app
        .post(
            "/api/v0/operators",
            Some(&second),
            json!({"user": "olaf", "pass": "olaf-password", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let third = app.login("olaf", "olaf-password").await;
    let (a, b2) = tokio::join!(
        app.delete("/api/v0/operators/olaf", Some(&second)),
        app.delete("/api/v0/operators/nora", Some(&third)),
    );
    let ok = [a.status, b2.status]
        .iter()
        .filter(|s| **s == StatusCode::OK)
        .count();
    assert_eq!(
        ok, 1,
        "exactly one deletion succeeds: {:?} / {:?}",
        a.body, b2.body
    );
    let left = app.state().store.list_operators(100, 0).await.unwrap();
    let admins = left
        .iter()
        .filter(|o| o.role == raworc_api::OperatorRole::Admin)
        .count();
    assert_eq!(admins, 1);
    app.stop().await;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

async fn keys_survive_a_restart(b: Backend) {
    let app = TestApp::spawn(b).await;
    let dir = app.data_dir.clone();
    let jwt_key = dir.join("jwt.key");
    let secret_key = dir.join("secret.key");
    assert_eq!(mode(&jwt_key), 0o600, "jwt.key");
    assert_eq!(mode(&secret_key), 0o600, "secret.key");
    assert_eq!(mode(&dir), 0o700, "data dir");
    assert_eq!(
        STANDARD
            .decode(std::fs::read_to_string(&jwt_key).unwrap().trim())
            .unwrap()
            .len(),
        64
    );
    assert_eq!(
        STANDARD
            .decode(std::fs::read_to_string(&secret_key).unwrap().trim())
            .unwrap()
            .len(),
        32
    );
    let jwt_before = std::fs::read(&jwt_key).unwrap();
    let secret_before = std::fs::read(&secret_key).unwrap();

    let token = app.operator("olga", "user").await;
    let id = app
        .session(&token, json!({"secrets": {"API_KEY": "sk-olga"}}))
        .await;
    // A key file someone made readable is tightened again on start.
    std::fs::set_permissions(&jwt_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let db = app.stop_keep().await;

    let app = TestApp::respawn(b, db).await;
    assert_eq!(app.data_dir, dir);
    assert_eq!(
        std::fs::read(&jwt_key).unwrap(),
        jwt_before,
        "jwt.key reused"
    );
    assert_eq!(
        std::fs::read(&secret_key).unwrap(),
        secret_before,
        "secret.key reused"
    );
    assert_eq!(mode(&jwt_key), 0o600, "jwt.key tightened");
    let r = app.get("/api/v0/auth", Some(&token)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a token from before the restart: {:?}",
        r.body
    );
    assert_eq!(r.body["user"], "olga");
    assert_eq!(
        app.get(&format!("/api/v0/sessions/{id}"), Some(&token))
            .await
            .status,
        StatusCode::OK
    );
    let sealed = app.state().store.session_secrets(&id).await.unwrap();
    assert_eq!(sealed.len(), 1);
    assert_eq!(
        app.state().secrets.open("API_KEY", &sealed[0].1).unwrap(),
        "sk-olga",
        "secrets sealed before the restart still open"
    );
    app.stop().await;
}

// ---- Not about the database: SQLite only. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_rate_limit_per_name() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.login_limit_per_name = 3).await;
    // Created without logging in, so that no attempt is spent yet.
    create_operator(&app, "pete", "pete-password", "user").await;
    let statuses = [
        try_login(&app, "pete", "wrong-password").await.status,
        try_login(&app, "pete", "wrong-password").await.status,
        try_login(&app, "pete", "pete-password").await.status,
    ];
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::OK
        ]
    );
    let r = try_login(&app, "pete", "pete-password").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    assert_eq!(r.body["status"], 429);
    assert!(
        r.error().contains("too many login attempts"),
        "{}",
        r.error()
    );
    assert!(r.body.get("token").is_none());
    // Other names are counted apart (admin has used one attempt at start-up).
    assert_eq!(
        try_login(&app, "admin", "admin-password").await.status,
        StatusCode::OK
    );
    // Unknown names are limited too, so that probing them is slow as well.
    for _ in 0..3 {
        assert_eq!(
            try_login(&app, "ghost", "whatever").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        try_login(&app, "ghost", "whatever").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_rate_limit_per_address() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.login_limit_per_addr = 3).await;
    // The admin login at start-up was the first from this address.
    assert_eq!(
        try_login(&app, "a1", "x-password").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        try_login(&app, "a2", "x-password").await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = try_login(&app, "admin", "admin-password").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_tokens_rejected() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let user = app.operator("quinn", "user").await;
    let parts: Vec<&str> = user.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload["sub"], "quinn");

    // Claims changed after signing.
    payload["sub"] = json!("admin");
    let body = URL_SAFE_NO_PAD.encode(payload.to_string());
    let swapped = format!("{}.{body}.{}", parts[0], parts[2]);
    // Unsigned ("alg": "none").
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{body}.");
    // The signature left off.
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    for (what, token) in [
        ("tampered", swapped),
        ("alg none", unsigned),
        ("no signature", stripped),
    ] {
        let r = app.get("/api/v0/operators", Some(&token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {:?}", r.body);
    }
    // Not a bearer token at all.
    let r = app
        .client
        .get(format!("{}/api/v0/auth", app.base))
        .header("authorization", format!("Basic {user}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_of_auth(&app, &user).await,
        StatusCode::OK,
        "the original still works"
    );
    app.stop().await;
}

fn public_config(dir: &Path, admin_password: Option<&str>) -> ServerConfig {
    let mut c = ServerConfig::new("0.0.0.0:0".parse().unwrap(), dir.join("data"));
    c.database_url = Some(format!("sqlite://{}", dir.join("raworc.db").display()));
    c.admin_password = admin_password.map(str::to_string);
    c.runtime = raworc_server::config::RuntimeKind::None;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_bind_needs_a_real_admin_password() {
    raworc_testkit::init_logging();
    // No password given: `admin`/`admin` would be reachable from anywhere.
    let dir = tempfile::tempdir().unwrap();
    let err = match raworc_server::spawn(public_config(dir.path(), None)).await {
        Ok(_) => panic!("started on 0.0.0.0 with the default admin password"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("default password"), "{err}");
    // Naming the default password explicitly is no better.
    let dir = tempfile::tempdir().unwrap();
    let err = raworc_server::spawn(public_config(dir.path(), Some("admin")))
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .expect("refused");
    assert!(err.contains("default password"), "{err}");

    // With a password it starts, and that password is admin's.
    let dir = tempfile::tempdir().unwrap();
    let running = raworc_server::spawn(public_config(dir.path(), Some("a-real-password")))
        .await
        .expect("starts with an admin password");
    assert!(running.addr.ip().is_unspecified());
    let client = reqwest::Client::new();
    let r = client
        .post(format!(
            "http://127.0.0.1:{}/api/v0/operators/admin/login",
            running.addr.port()
        ))
        .json(&json!({"pass": "a-real-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_admin_password_ok_on_loopback_until_changed() {
    raworc_testkit::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let mut loopback = public_config(dir.path(), None);
    loopback.bind = "127.0.0.1:0".parse().unwrap();
    let running = raworc_server::spawn(loopback.clone())
        .await
        .expect("loopback is fine");
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    let login = |pass: &'static str| {
        client
            .post(format!("{base}/api/v0/operators/admin/login"))
            .json(&json!({ "pass": pass }))
            .send()
    };
    let r = login("admin").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    running.shutdown().await.unwrap();

    // The same installation, now on every address: refused while the password is the default.
    let err = raworc_server::spawn(public_config(dir.path(), None))
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .expect("refused");
    assert!(err.contains("default password"), "{err}");
    // RAWORC_ADMIN_PASSWORD only applies on first start; it does not help now.
    assert!(
        raworc_server::spawn(public_config(dir.path(), Some("a-real-password")))
            .await
            .is_err()
    );

    let running = raworc_server::spawn(loopback).await.unwrap();
    let r = client
        .put(format!(
            "http://{}/api/v0/operators/admin/password",
            running.addr
        ))
        .bearer_auth(&token)
        .json(&json!({"pass": "a-real-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    running.shutdown().await.unwrap();
    let running = raworc_server::spawn(public_config(dir.path(), None))
        .await
        .expect("starts once the password is changed");
    running.shutdown().await.unwrap();
}
