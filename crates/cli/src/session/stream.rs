//! The session's server-sent event stream: a parser of `text/event-stream`
//! and [`Events`], which keeps one stream open and reopens it after the
//! last event seen, so each event is shown once; asked for, it also keeps
//! the model's text as it streams ([`Events::live`]) for the spinner.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Result;
use raworc_api::{Event, EventDelta};
use reqwest::StatusCode;

use super::remote::Remote;
use crate::http::{self, ApiError, Credentials};

/// The server sends a keep-alive every 15 s; silence this long means the
/// connection is dead even if no error says so.
const STREAM_IDLE: Duration = Duration::from_secs(45);
/// How long a broken event stream is retried before the CLI gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// A server-sent event: its `event` and `data` fields.
#[derive(Debug, Clone, PartialEq)]
struct SseMessage {
    event: String,
    data: String,
}

/// An incremental parser of a `text/event-stream` body.
#[derive(Debug, Default)]
struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: Option<String>,
}

impl SseParser {
    /// Feeds a chunk; returns the events it completed.
    fn push(&mut self, chunk: &[u8]) -> Vec<SseMessage> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(n) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + n;
            let line = self.buf[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&self.buf[start..end]);
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(m) = self.line(&line) {
                out.push(m);
            }
        }
        self.buf.drain(..start);
        out
    }

    fn line(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = self.data.take()?;
            let event = if event.is_empty() {
                "message".to_string()
            } else {
                event
            };
            return Some(SseMessage { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }
}

/// The session's events, live: one stream kept open and, when it breaks,
/// opened again after the last event seen (`Last-Event-ID`), so that each
/// event is returned once, in `seq` order.
pub(super) struct Events {
    last_seq: i64,
    resp: Option<reqwest::Response>,
    parser: SseParser,
    ready: VecDeque<Event>,
    /// When data last arrived: `next` is dropped and called again at each
    /// spinner tick, so silence is measured from here, not per call.
    last_data: tokio::time::Instant,
    /// Reconnections since data last arrived, and since when.
    retries: u32,
    broken_since: Option<Instant>,
    /// Whether the stream carries the model's text as it streams.
    deltas: bool,
    live: Option<Live>,
}

/// The model's block being written, as the last pieces showed it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Live {
    pub thinking: bool,
    pub text: String,
    index: u32,
    attempt: u32,
}

impl Events {
    pub(super) fn after(seq: i64) -> Events {
        Events {
            last_seq: seq,
            resp: None,
            parser: SseParser::default(),
            ready: VecDeque::new(),
            last_data: tokio::time::Instant::now(),
            retries: 0,
            broken_since: None,
            deltas: false,
            live: None,
        }
    }

    /// Also follows the model's text as it streams (see [`Events::live`]).
    pub(super) fn with_deltas(mut self, on: bool) -> Events {
        self.deltas = on;
        self
    }

    /// The block the model is writing now, until its turn is stored.
    pub(super) fn live(&self) -> Option<&Live> {
        self.live.as_ref()
    }

    /// Takes one message of the stream: a stored event is queued (and ends
    /// the live text: its turn is whole); a piece extends the live text.
    fn absorb(&mut self, m: &SseMessage) {
        if m.event == "delta" {
            match serde_json::from_str::<EventDelta>(&m.data) {
                Ok(d) => self.extend_live(d),
                Err(e) => tracing::debug!(error = %e, "event stream: a piece that does not parse"),
            }
            return;
        }
        if let Some(e) = decode_event(m) {
            if e.kind != "state" && e.seq > self.last_seq {
                self.live = None;
            }
            self.ready.push_back(e);
        }
    }

    fn extend_live(&mut self, d: EventDelta) {
        let same = self
            .live
            .as_ref()
            .is_some_and(|l| l.index == d.index && l.attempt == d.attempt);
        if !same {
            // Another block, or the call tried again: its text starts over.
            self.live = Some(Live {
                thinking: d.kind == "thinking",
                text: String::new(),
                index: d.index,
                attempt: d.attempt,
            });
        }
        if let Some(live) = self.live.as_mut() {
            live.text.push_str(&d.text);
        }
    }

    /// Opens the stream after `last_seq`.
    pub(super) async fn connect(&mut self, remote: &Remote) -> Result<()> {
        let query = if self.deltas { "?deltas=true" } else { "" };
        let url = http::url(
            &remote.base,
            &format!("{}/events/stream{query}", remote.path),
        );
        let request = remote
            .http
            .get(url)
            .bearer_auth(&remote.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header("Last-Event-ID", self.last_seq.to_string())
            .send();
        // Only the answer's head is bounded: the body is the live stream.
        let resp = tokio::time::timeout(STREAM_IDLE, request)
            .await
            .map_err(|_| anyhow::anyhow!("Raworc at {} did not answer in time", remote.base))?
            .map_err(|e| http::transport_error(&remote.base, e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(ApiError {
                status,
                message: http::error_message(status, &body),
                credentials: Credentials::Bearer,
            }
            .into());
        }
        self.parser = SseParser::default();
        self.resp = Some(resp);
        self.last_data = tokio::time::Instant::now();
        Ok(())
    }

    /// The next event. Cancel-safe: dropped while waiting, it loses nothing.
    pub(super) async fn next(&mut self, remote: &Remote) -> Result<Event> {
        loop {
            while let Some(e) = self.ready.pop_front() {
                if e.seq > self.last_seq {
                    self.last_seq = e.seq;
                    return Ok(e);
                }
            }
            let Some(resp) = self.resp.as_mut() else {
                self.reconnect(remote).await?;
                continue;
            };
            let silent_until = self.last_data + STREAM_IDLE;
            match tokio::time::timeout_at(silent_until, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    self.last_data = tokio::time::Instant::now();
                    self.retries = 0;
                    self.broken_since = None;
                    for m in self.parser.push(&chunk) {
                        self.absorb(&m);
                    }
                }
                Ok(Ok(None)) => self.broke("the server closed it"),
                Ok(Err(e)) => self.broke(e),
                Err(_) => self.broke("nothing arrived, not even a keep-alive"),
            }
        }
    }

    fn broke(&mut self, why: impl std::fmt::Display) {
        tracing::debug!(after = self.last_seq, %why, "event stream broke; reconnecting");
        self.resp = None;
        self.broken_since.get_or_insert_with(Instant::now);
    }

    /// Opens the stream again, retrying what may pass (the server being
    /// restarted, a dropped connection) for up to [`RECONNECT_FOR`].
    async fn reconnect(&mut self, remote: &Remote) -> Result<()> {
        let since = *self.broken_since.get_or_insert_with(Instant::now);
        loop {
            if self.retries > 0 {
                let backoff = Duration::from_millis(250 << self.retries.min(4));
                tokio::time::sleep(backoff).await;
            }
            self.retries += 1;
            match self.connect(remote).await {
                Ok(()) => return Ok(()),
                Err(e) if retryable(&e) && since.elapsed() < RECONNECT_FOR => {
                    tracing::debug!(error = %format!("{e:#}"), "event stream: reconnecting failed");
                }
                Err(e) => return Err(e.context("lost the session's event stream")),
            }
        }
    }
}

/// Whether a failed (re)connection may work if tried again.
fn retryable(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<ApiError>() {
        Some(api) => api.status.is_server_error() || api.status == StatusCode::TOO_MANY_REQUESTS,
        None => true,
    }
}

fn decode_event(m: &SseMessage) -> Option<Event> {
    match serde_json::from_str::<Event>(&m.data) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(event = %m.event, error = %e, "event stream: skipping an event that does not parse");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::sync::mpsc;

    #[test]
    fn sse_is_parsed_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b":keep-alive\n\nid: 1\nevent: st").is_empty());
        let got = p.push(b"ate\ndata: {\"a\":\r\ndata: 1}\r\n\r\nid: 2\ndata: x\n");
        assert_eq!(
            got,
            [SseMessage {
                event: "state".into(),
                data: "{\"a\":\n1}".into()
            }]
        );
        let got = p.push(b"\n");
        assert_eq!(
            got,
            [SseMessage {
                event: "message".into(),
                data: "x".into()
            }]
        );
        // A multi-byte character split between chunks survives.
        let bytes = "data: é\n\n".as_bytes();
        assert!(p.push(&bytes[..7]).is_empty());
        assert_eq!(p.push(&bytes[7..])[0].data, "é");
    }

    /// A server whose event streams are given as raw bodies, one per
    /// connection, and which records each request's `Last-Event-ID`.
    async fn sse_server(bodies: Vec<String>) -> (String, mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for body in bodies {
                let (sock, _) = listener.accept().await.unwrap();
                let mut sock = BufReader::new(sock);
                let mut last = String::new();
                loop {
                    let mut line = String::new();
                    sock.read_line(&mut line).await.unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("last-event-id:") {
                        last = v.trim().to_string();
                    }
                }
                tx.send(last).unwrap();
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                let sock = sock.get_mut();
                sock.write_all(head.as_bytes()).await.unwrap();
                sock.write_all(body.as_bytes()).await.unwrap();
                sock.shutdown().await.unwrap();
            }
        });
        (base, rx)
    }

    /// Event `seq` of session `s1`, framed as the server sends it.
    fn sse(seq: i64, kind: &str) -> String {
        let event: Event = serde_json::from_value(json!({
            "session_id": "s1", "seq": seq, "type": kind, "content": format!("e{seq}"),
            "metadata": {},
            "created_at": "2026-01-01T00:00:00Z", "timestamp": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        let data = serde_json::to_string(&event).unwrap();
        format!("id: {seq}\nevent: {kind}\ndata: {data}\n\n")
    }

    #[tokio::test]
    async fn a_broken_stream_resumes_after_the_last_event_without_repeats() {
        let first = format!("{}{}", sse(3, "state"), sse(4, "text"));
        // The second connection repeats event 4 and cuts event 6 in half.
        let second = format!(
            "{}{}{}",
            sse(4, "text"),
            sse(5, "tool_use"),
            &sse(6, "text")[..20]
        );
        let third = sse(6, "complete");
        let (base, mut ids) = sse_server(vec![first, second, third]).await;
        let remote = Remote {
            http: http::client().unwrap(),
            base,
            token: "t".into(),
            path: "/api/v0/sessions/s1".into(),
        };
        let mut events = Events::after(2);
        events.connect(&remote).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            let e = events.next(&remote).await.unwrap();
            got.push((e.seq, e.kind));
        }
        assert_eq!(
            got,
            [
                (3, "state".to_string()),
                (4, "text".to_string()),
                (5, "tool_use".to_string()),
                (6, "complete".to_string())
            ]
        );
        let mut sent = Vec::new();
        while let Ok(id) = ids.try_recv() {
            sent.push(id);
        }
        assert_eq!(sent, ["2", "4", "5"]);
    }

    #[test]
    fn live_text_follows_the_pieces_until_its_turn_is_stored() {
        let piece = |kind: &str, index: u32, attempt: u32, text: &str| {
            SseMessage {
            event: "delta".into(),
            data: json!({"session_id": "s1", "kind": kind, "index": index, "attempt": attempt, "text": text})
                .to_string(),
        }
        };
        let stored = |seq: i64, kind: &str| {
            let frame = sse(seq, kind);
            SseParser::default().push(frame.as_bytes()).remove(0)
        };
        let mut events = Events::after(2).with_deltas(true);
        events.absorb(&piece("thinking", 0, 1, "Let me "));
        events.absorb(&piece("thinking", 0, 1, "look."));
        let live = events.live().unwrap();
        assert!(live.thinking);
        assert_eq!(live.text, "Let me look.");
        // The next block starts its own text; a retried call starts over.
        events.absorb(&piece("text", 1, 1, "Hel"));
        assert_eq!(events.live().unwrap().text, "Hel");
        assert!(!events.live().unwrap().thinking);
        events.absorb(&piece("text", 1, 2, "Hello"));
        assert_eq!(events.live().unwrap().text, "Hello");
        // A state change does not end it; the stored turn does.
        events.absorb(&stored(3, "state"));
        assert!(events.live().is_some());
        events.absorb(&stored(4, "text"));
        assert!(events.live().is_none());
        assert_eq!(events.ready.len(), 2);
        // A piece that does not parse is skipped.
        events.absorb(&SseMessage {
            event: "delta".into(),
            data: "{".into(),
        });
        assert!(events.live().is_none());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_one_clear_line() {
        let remote = Remote {
            http: http::client().unwrap(),
            base: {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                format!("http://127.0.0.1:{port}")
            },
            token: "t".into(),
            path: "/api/v0/sessions/s1".into(),
        };
        let err = Events::after(0).connect(&remote).await.unwrap_err();
        assert!(err.to_string().starts_with("cannot reach Raworc"), "{err}");
    }
}
