//! HTTP calls to a Raworc server, and turning failures into one-line,
//! actionable errors (unreachable server, expired token, missing role).
//!
//! Every function takes the server's base URL so tests can point it anywhere.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, Result};
use raworc_api::{
    AuthInfo, LoginRequest, LoginResponse, PrincipalType, TokenRequest, TokenResponse,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

/// How long to wait for a TCP connection before calling the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for one ordinary call (login, auth, token).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for `raworc api`, which may hit slow endpoints.
pub const API_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether and how a request carried credentials; decides the advice a 401 gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// No token was sent.
    Anonymous,
    /// The saved (or given) bearer token was sent.
    Bearer,
    /// A login with user and password.
    Login,
}

/// A non-2xx answer from the server, with the server's own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub credentials: Credentials,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = status_text(self.status);
        let msg = &self.message;
        match (self.status, self.credentials) {
            (StatusCode::UNAUTHORIZED, Credentials::Anonymous) => {
                write!(f, "not logged in: run 'raworc login -u admin -p admin'")
            }
            (StatusCode::UNAUTHORIZED, Credentials::Bearer) => write!(
                f,
                "{status}: {msg}; your token may have expired — run 'raworc login'"
            ),
            (StatusCode::FORBIDDEN, _) => write!(f, "{status}: {msg} (this needs an admin)"),
            _ => write!(f, "{status}: {msg}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// `201 Created`-style text for a status code.
pub fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The error a request gets when it never reached the server.
#[derive(Debug)]
pub struct Unreachable {
    pub base: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach Raworc at {}: is it running? try 'raworc start'",
            self.base
        )
    }
}

impl std::error::Error for Unreachable {}

/// Builds the shared HTTP client.
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("raworc-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .context("cannot set up the HTTP client")
}

/// Joins a base URL and an absolute path (`/api/v0/...`).
pub fn url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// Turns an API endpoint as typed by a user into a server path:
/// `sessions` → `/api/v0/sessions`; `/api/...`, `/health...` and
/// `/metrics` are left alone.
pub fn api_path(endpoint: &str) -> Result<String> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        anyhow::bail!("no endpoint given: try 'raworc api sessions'");
    }
    if endpoint.contains("://") {
        anyhow::bail!(
            "endpoint '{endpoint}' must be a path such as 'sessions'; \
             choose the server with 'raworc login -s URL' or RAWORC_SERVER"
        );
    }
    let path = if endpoint.starts_with('/') {
        endpoint.to_string()
    } else {
        format!("/{endpoint}")
    };
    let bare = path.split(['?', '#']).next().unwrap_or(&path);
    let keep = bare.starts_with("/api/")
        || bare == "/api"
        || bare == "/health"
        || bare.starts_with("/health/")
        || bare == "/metrics"
        || bare == "/metrics/";
    Ok(if keep { path } else { format!("/api/v0{path}") })
}

/// Parses `-H "Name: value"` arguments.
pub fn parse_headers<S: AsRef<str>>(raw: &[S]) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for h in raw {
        let (name, value) = parse_header(h.as_ref())?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue)> {
    let Some((name, value)) = raw.split_once(':') else {
        anyhow::bail!("invalid header '{raw}': expected 'Name: value'");
    };
    let name = name.trim();
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| anyhow::anyhow!("invalid header name '{name}' in '{raw}'"))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| anyhow::anyhow!("invalid value for header '{name}'"))?;
    Ok((name, value))
}

/// Parses an HTTP method name, case-insensitively.
pub fn parse_method(raw: &str) -> Result<Method> {
    let upper = raw.trim().to_ascii_uppercase();
    if upper.is_empty() {
        anyhow::bail!("empty HTTP method");
    }
    Method::from_bytes(upper.as_bytes()).map_err(|_| anyhow::anyhow!("invalid HTTP method '{raw}'"))
}

/// Maps a transport error to a one-line message.
pub fn transport_error(base: &str, err: reqwest::Error) -> anyhow::Error {
    if err.is_connect() {
        return Unreachable {
            base: base.to_string(),
        }
        .into();
    }
    if err.is_timeout() {
        return anyhow::anyhow!("Raworc at {base} did not answer in time");
    }
    anyhow::anyhow!("request to Raworc at {base} failed: {}", error_chain(&err))
}

/// `a: b: c` from an error and its sources, on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The message of an error body: the `error` field of the server's JSON, or
/// the text itself (first line, shortened), or the reason phrase.
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(msg) = value.get("error").and_then(|m| m.as_str()) {
            if !msg.trim().is_empty() {
                return one_line(msg);
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = one_line(text.trim());
    if !text.is_empty() {
        return text;
    }
    status
        .canonical_reason()
        .unwrap_or("no message")
        .to_ascii_lowercase()
}

fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    if line.chars().count() > 300 {
        let short: String = line.chars().take(300).collect();
        format!("{short}…")
    } else {
        line.to_string()
    }
}

/// A raw response: status, content type and body bytes.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The [`ApiError`] for this response, if it is not a success.
    pub fn error(&self, credentials: Credentials) -> Option<ApiError> {
        (!self.status.is_success()).then(|| ApiError {
            status: self.status,
            message: error_message(self.status, &self.body),
            credentials,
        })
    }
}

/// One request, as `raworc api` and the typed helpers build it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: Method,
    /// An absolute path such as `/api/v0/sessions`.
    pub path: &'a str,
    pub token: Option<&'a str>,
    /// A JSON body, sent with `content-type: application/json`.
    pub json: Option<Vec<u8>>,
    pub headers: HeaderMap,
    pub timeout: Duration,
}

/// Sends a request and reads the whole answer, whatever its status.
pub async fn send(http: &reqwest::Client, base: &str, req: Request<'_>) -> Result<RawResponse> {
    let mut builder = http
        .request(req.method, url(base, req.path))
        .timeout(req.timeout);
    if let Some(token) = req.token {
        builder = builder.bearer_auth(token);
    }
    if let Some(body) = req.json {
        if !req.headers.contains_key(reqwest::header::CONTENT_TYPE) {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        builder = builder.body(body);
    }
    builder = builder.headers(req.headers);
    let resp = builder.send().await.map_err(|e| transport_error(base, e))?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .bytes()
        .await
        .map_err(|e| transport_error(base, e))?
        .to_vec();
    Ok(RawResponse {
        status,
        content_type,
        body,
    })
}

/// Sends a JSON request and decodes a JSON success, or fails with [`ApiError`].
pub(crate) async fn call<T: DeserializeOwned>(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&impl serde::Serialize>,
    credentials: Credentials,
) -> Result<T> {
    let json = body
        .map(serde_json::to_vec)
        .transpose()
        .context("cannot encode the request")?;
    let resp = send(
        http,
        base,
        Request {
            method,
            path,
            token,
            json,
            headers: HeaderMap::new(),
            timeout: CALL_TIMEOUT,
        },
    )
    .await?;
    if let Some(err) = resp.error(credentials) {
        return Err(err.into());
    }
    serde_json::from_slice(&resp.body).map_err(|e| {
        anyhow::anyhow!(
            "unexpected answer from {}{path}: {e}; is this a Raworc server of the same version?",
            base.trim_end_matches('/')
        )
    })
}

/// Path segment escaping for names put into URLs.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `POST /api/v0/operators/{user}/login`.
pub async fn login(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    pass: &str,
) -> Result<LoginResponse> {
    let path = format!("/api/v0/operators/{}/login", encode_segment(user));
    let body = LoginRequest {
        pass: pass.to_string(),
    };
    call(
        http,
        base,
        Method::POST,
        &path,
        None,
        Some(&body),
        Credentials::Login,
    )
    .await
}

/// `GET /api/v0/auth`: who `token` belongs to.
pub async fn auth_info(http: &reqwest::Client, base: &str, token: &str) -> Result<AuthInfo> {
    call(
        http,
        base,
        Method::GET,
        "/api/v0/auth",
        Some(token),
        None::<&()>,
        Credentials::Bearer,
    )
    .await
}

/// `POST /api/v0/auth/token`: mint a token for a principal.
pub async fn mint_token(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    principal: &str,
    principal_type: PrincipalType,
    expires_in_s: Option<u64>,
) -> Result<TokenResponse> {
    let body = TokenRequest {
        principal: principal.to_string(),
        principal_type,
        expires_in_s,
    };
    call(
        http,
        base,
        Method::POST,
        "/api/v0/auth/token",
        Some(token),
        Some(&body),
        Credentials::Bearer,
    )
    .await
}

/// `GET /health` answers 200: the server is up. Never errors.
pub async fn is_healthy(http: &reqwest::Client, base: &str) -> bool {
    match http
        .get(url(base, "/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(resp) => resp.status() == StatusCode::OK,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_api_prefix() {
        let p = |e| api_path(e).unwrap();
        assert_eq!(p("sessions"), "/api/v0/sessions");
        assert_eq!(p("/sessions/x/messages"), "/api/v0/sessions/x/messages");
        assert_eq!(p("version"), "/api/v0/version");
        assert_eq!(p(" sessions?limit=2 "), "/api/v0/sessions?limit=2");
        assert_eq!(p("/api/v0/auth"), "/api/v0/auth");
        assert_eq!(p("api/v0/auth"), "/api/v0/auth");
        assert_eq!(p("/health"), "/health");
        assert_eq!(p("health/detailed"), "/health/detailed");
        assert_eq!(p("/health?x=1"), "/health?x=1");
        assert_eq!(p("/metrics"), "/metrics");
        // Only whole segments count.
        assert_eq!(p("/healthz"), "/api/v0/healthz");
        assert_eq!(p("/metricsx"), "/api/v0/metricsx");
        assert_eq!(p("apiary"), "/api/v0/apiary");
    }

    #[test]
    fn endpoint_errors() {
        assert!(api_path("").is_err());
        assert!(api_path("http://evil/x").is_err());
    }

    #[test]
    fn headers_parse() {
        let h = parse_headers(&["X-One: 1", "x-two:two words ", "X-One: again"]).unwrap();
        let ones: Vec<_> = h.get_all("x-one").iter().collect();
        assert_eq!(ones, vec!["1", "again"]);
        assert_eq!(h.get("x-two").unwrap(), "two words");
        assert!(parse_headers(&["no colon"]).is_err());
        assert!(parse_headers(&["bad name: v"]).is_err());
        assert!(parse_headers(&[": v"]).is_err());
        assert!(parse_headers(&["X: a\nb"]).is_err());
        assert!(parse_headers::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn methods_parse() {
        assert_eq!(parse_method("post").unwrap(), Method::POST);
        assert_eq!(parse_method("DELETE").unwrap(), Method::DELETE);
        assert!(parse_method("").is_err());
        assert!(parse_method("GE T").is_err());
    }

    #[test]
    fn error_messages_come_from_the_error_field() {
        let s = StatusCode::NOT_FOUND;
        assert_eq!(
            error_message(s, br#"{"error":"session 'x' not found","status":404}"#),
            "session 'x' not found"
        );
        assert_eq!(error_message(s, b"plain text\nmore"), "plain text");
        assert_eq!(error_message(s, b""), "not found");
    }

    #[test]
    fn api_errors_read_as_one_actionable_line() {
        let e = |status, credentials| {
            ApiError {
                status,
                message: "nope".into(),
                credentials,
            }
            .to_string()
        };
        assert_eq!(
            e(StatusCode::UNAUTHORIZED, Credentials::Bearer),
            "401 Unauthorized: nope; your token may have expired — run 'raworc login'"
        );
        assert_eq!(
            e(StatusCode::UNAUTHORIZED, Credentials::Anonymous),
            "not logged in: run 'raworc login -u admin -p admin'"
        );
        assert_eq!(
            e(StatusCode::UNAUTHORIZED, Credentials::Login),
            "401 Unauthorized: nope"
        );
        assert_eq!(
            e(StatusCode::FORBIDDEN, Credentials::Bearer),
            "403 Forbidden: nope (this needs an admin)"
        );
        assert_eq!(
            e(StatusCode::NOT_FOUND, Credentials::Bearer),
            "404 Not Found: nope"
        );
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(encode_segment("admin"), "admin");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    #[tokio::test]
    async fn unreachable_server_is_one_clear_line() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let err = auth_info(&client().unwrap(), &base, "t").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot reach Raworc at {base}: is it running? try 'raworc start'")
        );
        assert!(!is_healthy(&client().unwrap(), &base).await);
    }
}
