//! The control plane's side of the host socket: one HTTP/1.1 request per
//! connection (a unix connect costs microseconds), JSON in and out.
//!
//! The socket lives in a directory the computer can write to, so the
//! computer could replace it with a link to any socket of the host. The
//! control plane (root) therefore checks, after connecting, that the
//! listening process is in the computer's pid namespace
//! ([`connect_checked`]), and reads answers only up to a bound.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::proto::{
    BashRequest, ComputerResult, DesktopReady, DirListing, DisplaySize, EditRequest, ErrorBody,
    ExecRequest, ExecResult, Ready, SessionConfig, ToolOutput, SOCKET,
};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The host answered with an error; its status and message.
    #[error("{message}")]
    Status { status: u16, message: String },
    /// The socket could not be reached or the exchange broke off.
    #[error("the computer's host is unreachable: {0}")]
    Unreachable(String),
    #[error("the computer's host did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected answer from the computer's host: {0}")]
    Protocol(String),
}

/// Largest JSON answer read from a host (command output is cut well below).
const MAX_JSON: usize = 16 << 20;
/// Largest screenshot read from a host.
const MAX_IMAGE: usize = 64 << 20;

/// The pid namespace of process `pid` as `/proc/<pid>/ns/pid` names it
/// (e.g. `pid:[4026532345]`).
pub fn pid_namespace_of(pid: u32) -> std::io::Result<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).map(|l| l.to_string_lossy().into_owned())
}

/// Connects to the unix socket at `path` and, when `pid_namespace` is given
/// (as `/proc/<pid>/ns/pid` reads, e.g. `pid:[4026532345]`), makes sure the
/// process listening on it lives in that namespace.
pub async fn connect_checked(
    path: &Path,
    pid_namespace: Option<&str>,
) -> std::io::Result<tokio::net::UnixStream> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    if let Some(expected) = pid_namespace {
        let denied = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
        let pid = stream
            .peer_cred()?
            .pid()
            .ok_or_else(|| denied("the socket's owner is unknown".into()))?;
        let theirs = pid_namespace_of(pid as u32)?;
        if theirs != expected {
            return Err(denied(format!(
                "{} is not served from inside the computer",
                path.display()
            )));
        }
    }
    Ok(stream)
}

/// `space=WxH` after `sep`, or nothing.
fn space_param(space: Option<DisplaySize>, sep: char) -> String {
    space
        .map(|s| format!("{sep}space={}x{}", s.width, s.height))
        .unwrap_or_default()
}

/// Talks to one computer's host.
#[derive(Debug, Clone)]
pub struct HostClient {
    socket: PathBuf,
    pid_namespace: Option<String>,
}

impl HostClient {
    /// The client for the host whose run directory is `run_dir`.
    pub fn new(run_dir: &Path) -> HostClient {
        HostClient {
            socket: run_dir.join(SOCKET),
            pid_namespace: None,
        }
    }

    /// Talks only to a host listening from inside pid namespace `ns` (see
    /// [`connect_checked`]).
    pub fn in_namespace(mut self, ns: Option<String>) -> HostClient {
        self.pid_namespace = ns;
        self
    }

    /// The pid namespace this client insists on.
    pub fn namespace(&self) -> Option<&str> {
        self.pid_namespace.as_deref()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, HostError> {
        let stream = connect_checked(&self.socket, self.pid_namespace.as_deref())
            .await
            .map_err(|e| HostError::Unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| HostError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "computer")
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| HostError::Protocol(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| HostError::Unreachable(e.to_string()))
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
        timeout: Duration,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), HostError> {
        let exchange = async {
            let response = self.send(method, path, content_type, body).await?;
            let status = response.status();
            let body = read_limited(response.into_body(), limit).await?;
            Ok((status, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| HostError::Timeout(timeout))?
    }

    /// Sends a request; a non-2xx answer becomes [`HostError::Status`].
    async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
        timeout: Duration,
        limit: usize,
    ) -> Result<Bytes, HostError> {
        let (status, body) = self
            .request(method, path, content_type, body, timeout, limit)
            .await?;
        if status.is_success() {
            return Ok(body);
        }
        Err(status_error(status, &body))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, HostError> {
        let body = serde_json::to_vec(body).map_err(|e| HostError::Protocol(e.to_string()))?;
        let answer = self
            .call(
                method,
                path,
                "application/json",
                body.into(),
                timeout,
                MAX_JSON,
            )
            .await?;
        serde_json::from_slice(&answer).map_err(|e| HostError::Protocol(e.to_string()))
    }

    /// Asks `path` until the host has an answer there: a socket that is not
    /// there yet, or a host that says "still starting" (it answers so after
    /// a minute of waiting), counts as not yet.
    async fn wait_for<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &(impl Serialize + Sync),
        timeout: Duration,
    ) -> Result<T, HostError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(HostError::Timeout(timeout));
            }
            match self.json::<T>(method.clone(), path, body, left).await {
                Err(HostError::Status { status: 503, .. }) => continue,
                Err(HostError::Unreachable(_)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                other => return other,
            }
        }
    }

    /// Gives the computer the session it serves (waiting for its socket to
    /// open). The host takes one session in its life.
    pub async fn assign(
        &self,
        session: &SessionConfig,
        timeout: Duration,
    ) -> Result<(), HostError> {
        self.wait_for::<serde::de::IgnoredAny>(Method::POST, "/v1/session", session, timeout)
            .await
            .map(|_| ())
    }

    /// Waits until the desktop is painted, whether the computer has its
    /// session yet or not.
    pub async fn desktop(&self, timeout: Duration) -> Result<DesktopReady, HostError> {
        self.wait_for(Method::GET, "/v1/desktop", &(), timeout)
            .await
    }

    /// Waits until the computer is up (or its bring-up failed): its desktop
    /// painted and its session's setup run.
    pub async fn ready(&self, timeout: Duration) -> Result<Ready, HostError> {
        self.wait_for(Method::GET, "/v1/ready", &(), timeout).await
    }

    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecResult, HostError> {
        // The host enforces the command's own timeout; allow for the answer.
        let timeout = Duration::from_secs(req.timeout_s.unwrap_or(60) + 10);
        self.json(Method::POST, "/v1/exec", req, timeout).await
    }

    pub async fn screenshot(&self) -> Result<Bytes, HostError> {
        self.call(
            Method::GET,
            "/v1/screenshot",
            "application/json",
            Bytes::new(),
            Duration::from_secs(10),
            MAX_IMAGE,
        )
        .await
    }

    /// A screenshot taken once the screen has settled after an action (no
    /// change for a moment), waiting at most `cap`.
    /// With `space`, the screenshot is scaled to the model's coordinate space.
    pub async fn screenshot_settled(
        &self,
        cap: Duration,
        space: Option<DisplaySize>,
    ) -> Result<Bytes, HostError> {
        self.call(
            Method::GET,
            &format!(
                "/v1/screenshot?settle_ms={}{}",
                cap.as_millis(),
                space_param(space, '&')
            ),
            "application/json",
            Bytes::new(),
            cap + Duration::from_secs(10),
            MAX_IMAGE,
        )
        .await
    }

    /// Runs one computer-tool action (the model's input, unchanged).
    pub async fn computer(&self, input: &serde_json::Value) -> Result<ComputerResult, HostError> {
        self.computer_in(input, None).await
    }

    /// Runs one action whose coordinates are in `space`, the model's
    /// coordinate space, when it is smaller than the screen (scaled up to
    /// the screen; screenshots and the pointer's position scaled down).
    pub async fn computer_in(
        &self,
        input: &serde_json::Value,
        space: Option<DisplaySize>,
    ) -> Result<ComputerResult, HostError> {
        // `wait` and `hold_key` may take up to 100 s.
        self.json(
            Method::POST,
            &format!("/v1/computer{}", space_param(space, '?')),
            input,
            Duration::from_secs(120),
        )
        .await
    }

    /// One call of the bash tool (the computer's one persistent shell).
    /// Calls take turns on the host; a command that runs out of time is an
    /// answer (its `error`), not a [`HostError`].
    pub async fn bash(&self, req: &BashRequest) -> Result<ToolOutput, HostError> {
        let tool = req
            .timeout_s
            .map(Duration::from_secs)
            .unwrap_or(crate::bash::DEFAULT_TIMEOUT);
        // The host bounds the command; allow for the answer.
        let timeout = tool + Duration::from_secs(10);
        self.json(Method::POST, "/v1/bash", req, timeout).await
    }

    /// One call of the text editor tool.
    pub async fn edit(&self, req: &EditRequest) -> Result<ToolOutput, HostError> {
        // Listing a directory may take the host up to 120 s.
        self.json(Method::POST, "/v1/edit", req, Duration::from_secs(130))
            .await
    }

    /// A whole file, up to 64 MiB (larger ones: [`HostClient::read_file_stream`]).
    pub async fn read_file(&self, path: &str) -> Result<Bytes, HostError> {
        let body = self.read_file_stream(path).await?;
        read_limited(body, MAX_IMAGE).await
    }

    /// A file as the host streams it: the body is read by the caller, as
    /// fast as it forwards it, whatever the file's size.
    pub async fn read_file_stream(&self, path: &str) -> Result<hyper::body::Incoming, HostError> {
        let timeout = Duration::from_secs(120);
        let response = tokio::time::timeout(
            timeout,
            self.send(
                Method::GET,
                &files_uri(path),
                "application/octet-stream",
                Bytes::new(),
            ),
        )
        .await
        .map_err(|_| HostError::Timeout(timeout))??;
        let status = response.status();
        if status.is_success() {
            return Ok(response.into_body());
        }
        let body = read_limited(response.into_body(), MAX_JSON).await?;
        Err(status_error(status, &body))
    }

    pub async fn write_file(&self, path: &str, content: Bytes) -> Result<(), HostError> {
        self.call(
            Method::PUT,
            &files_uri(path),
            "application/octet-stream",
            content,
            Duration::from_secs(120),
            MAX_JSON,
        )
        .await
        .map(|_| ())
    }

    /// The directory at `path` inside the computer (its first
    /// [`crate::files::MAX_ENTRIES`] entries, so the answer stays well
    /// below the bound on JSON answers).
    pub async fn list_dir(&self, path: &str) -> Result<DirListing, HostError> {
        self.json(
            Method::GET,
            &segments_uri("/v1/dir", path),
            &(),
            Duration::from_secs(60),
        )
        .await
    }

    /// Asks the host to close the browser and end the computer.
    pub async fn shutdown(&self) -> Result<(), HostError> {
        self.call(
            Method::POST,
            "/v1/shutdown",
            "application/json",
            Bytes::new(),
            Duration::from_secs(5),
            MAX_JSON,
        )
        .await
        .map(|_| ())
    }
}

/// A body, refused past `limit` bytes.
async fn read_limited(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, HostError> {
    http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| HostError::Protocol(format!("reading the host's answer: {e}")))
}

/// The error a non-2xx answer stands for.
fn status_error(status: StatusCode, body: &[u8]) -> HostError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    HostError::Status {
        status: status.as_u16(),
        message,
    }
}

/// Bytes left as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `/v1/files/<path>` with each segment percent-encoded.
fn files_uri(path: &str) -> String {
    segments_uri("/v1/files", path)
}

/// `<prefix>/<path>` with each segment percent-encoded (`<prefix>` alone
/// for the root).
fn segments_uri(prefix: &str, path: &str) -> String {
    let mut uri = String::from(prefix);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        uri.push('/');
        uri.extend(percent_encoding::utf8_percent_encode(segment, SEGMENT));
    }
    uri
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_paths_are_percent_encoded_per_segment() {
        assert_eq!(
            super::files_uri("/tmp/a b/ü?.txt"),
            "/v1/files/tmp/a%20b/%C3%BC%3F.txt"
        );
        assert_eq!(super::segments_uri("/v1/dir", "/"), "/v1/dir");
        assert_eq!(
            super::segments_uri("/v1/dir", "/session/data/"),
            "/v1/dir/session/data"
        );
    }
}
