//! The control plane's side of the host socket: one HTTP/1.1 request per
//! connection (a unix connect costs microseconds), JSON in and out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::proto::{ComputerResult, ErrorBody, ExecRequest, ExecResult, Ready, SOCKET};

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

/// Talks to one computer's host.
#[derive(Debug, Clone)]
pub struct HostClient {
    socket: PathBuf,
}

impl HostClient {
    /// The client for the host whose run directory is `run_dir`.
    pub fn new(run_dir: &Path) -> HostClient {
        HostClient {
            socket: run_dir.join(SOCKET),
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), HostError> {
        let exchange = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
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
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| HostError::Unreachable(e.to_string()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| HostError::Unreachable(e.to_string()))?
                .to_bytes();
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
    ) -> Result<Bytes, HostError> {
        let (status, body) = self
            .request(method, path, content_type, body, timeout)
            .await?;
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(HostError::Status {
            status: status.as_u16(),
            message,
        })
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
            .call(method, path, "application/json", body.into(), timeout)
            .await?;
        serde_json::from_slice(&answer).map_err(|e| HostError::Protocol(e.to_string()))
    }

    /// Waits until the computer is up (or its bring-up failed). A socket
    /// that is not there yet counts as "still starting".
    pub async fn ready(&self, timeout: Duration) -> Result<Ready, HostError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(HostError::Timeout(timeout));
            }
            match self
                .json::<Ready>(Method::GET, "/v1/ready", &(), left)
                .await
            {
                // Still starting (the host answers after a minute of waiting).
                Err(HostError::Status { status: 503, .. }) => continue,
                // The host has not opened its socket yet.
                Err(HostError::Unreachable(_)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                other => return other,
            }
        }
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
        )
        .await
    }

    /// Runs one computer-tool action (the model's input, unchanged).
    pub async fn computer(&self, input: &serde_json::Value) -> Result<ComputerResult, HostError> {
        // `wait` and `hold_key` may take up to 100 s.
        self.json(
            Method::POST,
            "/v1/computer",
            input,
            Duration::from_secs(120),
        )
        .await
    }

    pub async fn read_file(&self, path: &str) -> Result<Bytes, HostError> {
        self.call(
            Method::GET,
            &files_uri(path),
            "application/octet-stream",
            Bytes::new(),
            Duration::from_secs(120),
        )
        .await
    }

    pub async fn write_file(&self, path: &str, content: Bytes) -> Result<(), HostError> {
        self.call(
            Method::PUT,
            &files_uri(path),
            "application/octet-stream",
            content,
            Duration::from_secs(120),
        )
        .await
        .map(|_| ())
    }

    /// Asks the host to close the browser and end the computer.
    pub async fn shutdown(&self) -> Result<(), HostError> {
        self.call(
            Method::POST,
            "/v1/shutdown",
            "application/json",
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await
        .map(|_| ())
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
    let mut uri = String::from("/v1/files");
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
    }
}
