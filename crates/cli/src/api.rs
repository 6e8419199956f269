//! `raworc api`: any REST call with the saved token, for scripts and for
//! endpoints that have no command of their own.

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context as _, Result};
use reqwest::Method;

use crate::config::{self, Config};
use crate::http::{self, Credentials, RawResponse, Request};
use crate::Context;

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Endpoint, e.g. `sessions`, `/sessions/ID/messages`, `version`, `/health`
    #[arg(value_name = "ENDPOINT")]
    pub endpoint: String,
    /// HTTP method
    #[arg(
        short = 'm',
        long = "method",
        default_value = "GET",
        value_name = "METHOD"
    )]
    pub method: String,
    /// JSON body (`@FILE` reads a file, `@-` stdin); POST/PUT/PATCH default to `{}`
    #[arg(short = 'b', long = "body", value_name = "JSON")]
    pub body: Option<String>,
    /// Extra header `Name: value` (repeatable)
    #[arg(short = 'H', long = "headers", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Pretty-print JSON answers (the default)
    #[arg(short = 'p', long = "pretty", overrides_with = "raw")]
    pub pretty: bool,
    /// Print JSON answers compactly on one line
    #[arg(long = "raw", overrides_with = "pretty")]
    pub raw: bool,
    /// Print the status line (`HTTP 201 Created`) first
    #[arg(short = 's', long = "status")]
    pub status: bool,
}

/// Reads `-b`: inline JSON, `@FILE` or `@-`; checks it is JSON.
pub fn read_body(raw: &str) -> Result<Vec<u8>> {
    let text = if let Some(source) = raw.strip_prefix('@') {
        if source == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the body from stdin")?;
            s
        } else {
            std::fs::read_to_string(source)
                .with_context(|| format!("cannot read the body from {source}"))?
        }
    } else {
        raw.to_string()
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("--body is not valid JSON: {e}"))?;
    serde_json::to_vec(&value).context("cannot encode the body")
}

/// The body to send: `-b` if given, `{}` for methods that carry one.
pub fn body_for(method: &Method, body: Option<&str>) -> Result<Option<Vec<u8>>> {
    match body {
        Some(raw) => read_body(raw).map(Some),
        None if matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {
            Ok(Some(b"{}".to_vec()))
        }
        None => Ok(None),
    }
}

/// How an answer body is shown: pretty or compact JSON, else the text.
/// `None` means the body is binary and should not go to a terminal.
pub fn render_body(body: &[u8], pretty: bool) -> Option<String> {
    if body.is_empty() {
        return Some(String::new());
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let text = if pretty {
            serde_json::to_string_pretty(&value)
        } else {
            serde_json::to_string(&value)
        };
        if let Ok(text) = text {
            return Some(text);
        }
    }
    std::str::from_utf8(body).ok().map(str::to_string)
}

/// `raworc api`.
pub async fn api(ctx: &Context, args: ApiArgs) -> Result<()> {
    let method = http::parse_method(&args.method)?;
    let path = http::api_path(&args.endpoint)?;
    let headers = http::parse_headers(&args.headers)?;
    let json = body_for(&method, args.body.as_deref())?;

    let cfg = Config::load(&ctx.home)?;
    let server = config::resolve_server(None, cfg.server.as_deref(), ctx.env_server.as_deref())?;
    let token = cfg.token();
    let credentials = if token.is_some() {
        Credentials::Bearer
    } else {
        Credentials::Anonymous
    };

    let resp = http::send(
        &http::client()?,
        &server,
        Request {
            method,
            path: &path,
            token,
            json,
            headers,
            timeout: http::API_TIMEOUT,
        },
    )
    .await?;
    print_response(&resp, args.status, !args.raw)?;
    match resp.error(credentials) {
        Some(err) => Err(err.into()),
        None => Ok(()),
    }
}

/// Prints the answer; a reader that went away (`| head`) is not an error.
fn print_response(resp: &RawResponse, status: bool, pretty: bool) -> Result<()> {
    match write_response(resp, status, pretty) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

fn write_response(resp: &RawResponse, status: bool, pretty: bool) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if status {
        writeln!(out, "HTTP {}", http::status_text(resp.status))?;
    }
    match render_body(&resp.body, pretty) {
        Some(text) if text.is_empty() => {}
        Some(text) => writeln!(out, "{}", text.trim_end_matches('\n'))?,
        None if !stdout.is_terminal() => out.write_all(&resp.body)?,
        None => eprintln!(
            "({} bytes of {}; redirect stdout to a file to save them)",
            resp.body.len(),
            resp.content_type.as_deref().unwrap_or("binary data")
        ),
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_must_be_json() {
        assert_eq!(read_body(r#"{ "a": 1 }"#).unwrap(), br#"{"a":1}"#.to_vec());
        let err = read_body("{a:1}").unwrap_err().to_string();
        assert!(err.starts_with("--body is not valid JSON"), "{err}");
        assert!(read_body("").is_err());
    }

    #[test]
    fn bodies_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.json");
        std::fs::write(&file, "[1, 2]").unwrap();
        let arg = format!("@{}", file.display());
        assert_eq!(read_body(&arg).unwrap(), b"[1,2]".to_vec());
        assert!(read_body(&format!("@{}", dir.path().join("none").display())).is_err());
    }

    #[test]
    fn post_without_body_sends_empty_object() {
        assert_eq!(body_for(&Method::POST, None).unwrap(), Some(b"{}".to_vec()));
        assert_eq!(body_for(&Method::GET, None).unwrap(), None);
        assert_eq!(body_for(&Method::DELETE, None).unwrap(), None);
        assert_eq!(
            body_for(&Method::GET, Some("[]")).unwrap(),
            Some(b"[]".to_vec())
        );
    }

    #[test]
    fn rendering() {
        assert_eq!(
            render_body(br#"{"a":1}"#, true).unwrap(),
            "{\n  \"a\": 1\n}"
        );
        assert_eq!(render_body(br#"{ "a" : 1 }"#, false).unwrap(), r#"{"a":1}"#);
        assert_eq!(render_body(b"ok\n", true).unwrap(), "ok\n");
        assert_eq!(render_body(b"", true).unwrap(), "");
        assert_eq!(render_body(&[0x89, b'P', b'N', b'G', 0xff], true), None);
    }
}
