//! `raworc session`: talk to a session's agent from a terminal or a script.
//!
//! It creates a session (or restores, attaches to or remixes one), waits
//! until its computer runs, then posts each prompt as a user message and
//! shows the agent's steps live from the session's server-sent event stream
//! until the `complete` event that answers it. The stream is opened once,
//! before anything is asked of the session, and kept open (reconnecting with
//! `Last-Event-ID` when it breaks), so no event is missed or shown twice.
//!
//! The reply goes to stdout; steps, status and the prompt go to stderr, so
//! `raworc session -p '…' > reply.txt` keeps only the reply.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use raworc_api::{
    Cancelled, Count, CreateSession, Event, Message, RemixSession, Session, SessionState,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::auth;
use crate::http::{self, ApiError, Credentials};
use crate::Context;

/// How long a session may take to reach `running` before the CLI gives up.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// The server sends a keep-alive every 15 s; silence this long means the
/// connection is dead even if no error says so.
const STREAM_IDLE: Duration = Duration::from_secs(45);
/// How long a broken event stream is retried before the CLI gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(60);
/// Events listed per call when looking for a session's latest one.
const EVENT_PAGE: usize = 1000;
/// How often the spinner moves.
const SPIN_EVERY: Duration = Duration::from_millis(100);
/// Line width when stderr is not a terminal (lines are still cut, to one line).
const PIPE_WIDTH: usize = 160;

#[derive(clap::Args, Debug, Default)]
pub struct SessionArgs {
    /// Restore a closed (or errored) session, or attach to a running one
    #[arg(
        short = 'r',
        long = "restore",
        value_name = "ID",
        conflicts_with_all = ["remix", "secrets", "instructions", "instructions_file", "setup", "setup_file", "name"]
    )]
    pub restore: Option<String>,
    /// Remix a session: a new session with a copy of its computer
    #[arg(
        short = 'R',
        long = "remix",
        value_name = "ID",
        conflicts_with_all = ["secrets", "instructions", "instructions_file", "setup", "setup_file"]
    )]
    pub remix: Option<String>,
    /// With --remix: copy the parent's /session/data (default true)
    #[arg(short = 'd', long = "data", value_name = "BOOL", requires = "remix",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub data: Option<bool>,
    /// With --remix: copy the parent's /session/code, instructions and setup (default true)
    #[arg(short = 'c', long = "code", value_name = "BOOL", requires = "remix",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub code: Option<bool>,
    /// Secrets of a new session, a JSON object of name → value
    #[arg(short = 'S', long = "secrets", value_name = "JSON")]
    pub secrets: Option<String>,
    /// Instructions for the agent of a new session
    #[arg(short = 'i', long = "instructions", value_name = "TEXT")]
    pub instructions: Option<String>,
    /// Instructions from a file (also `-if PATH`); after --instructions if both are given
    #[arg(long = "instructions-file", value_name = "PATH")]
    pub instructions_file: Option<PathBuf>,
    /// A shell script run in a new session's computer before it is ready
    #[arg(short = 's', long = "setup", value_name = "TEXT")]
    pub setup: Option<String>,
    /// The setup script from a file (also `-sf PATH`); after --setup if both are given
    #[arg(long = "setup-file", value_name = "PATH")]
    pub setup_file: Option<PathBuf>,
    /// The first message; without a terminal on stdin, print its reply and exit
    #[arg(short = 'p', long = "prompt", value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Name of the new session (or of the remix)
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: Option<String>,
}

/// Two-letter short flags of `raworc session` and their long forms.
const TWO_LETTER_FLAGS: [(&str, &str); 2] =
    [("-if", "--instructions-file"), ("-sf", "--setup-file")];

/// Rewrites `raworc session`'s two-letter flags `-if` and `-sf` (seed 000's
/// spelling) to `--instructions-file` and `--setup-file` before clap parses
/// the command line: clap's short flags are one character, and it would read
/// `-if PATH` as `-i f` followed by a stray `PATH`. Only whole tokens in flag
/// position after the `session` subcommand are touched (`-if=PATH` too); the
/// value of another flag and anything after `--` are left alone.
pub fn expand_args<I>(args: I) -> Vec<OsString>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // The subcommand is the first word that is not a flag (the top level
    // has no options that take values).
    let Some(sub) = args
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
        .map(|i| i + 1)
    else {
        return args;
    };
    if args[sub] != "session" {
        return args;
    }
    let takes_value = value_flags();
    let mut i = sub + 1;
    while i < args.len() {
        let Some(token) = args[i].to_str().map(str::to_owned) else {
            i += 1;
            continue;
        };
        if token == "--" {
            break;
        }
        let (flag, value) = match token.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (token.as_str(), None),
        };
        let flag = match TWO_LETTER_FLAGS.iter().find(|(short, _)| *short == flag) {
            Some((_, long)) => {
                args[i] = match value {
                    Some(v) => format!("{long}={v}").into(),
                    None => (*long).into(),
                };
                *long
            }
            None => flag,
        };
        // A flag given as `--flag value` (not `--flag=value`): skip its value.
        if value.is_none() && takes_value.iter().any(|f| f == flag) {
            i += 1;
        }
        i += 1;
    }
    args
}

/// `-x` and `--long` spellings of `raworc session`'s flags that take a value.
fn value_flags() -> Vec<String> {
    use clap::Args as _;
    let cmd = SessionArgs::augment_args(clap::Command::new("session"));
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        if !arg.get_action().takes_values() {
            continue;
        }
        if let Some(c) = arg.get_short() {
            out.push(format!("-{c}"));
        }
        if let Some(l) = arg.get_long() {
            out.push(format!("--{l}"));
        }
    }
    out
}

/// What the command was asked to do, checked and read before anything is
/// sent, so that bad input leaves nothing behind on the server.
#[derive(Debug)]
enum Target {
    New(Box<CreateSession>),
    Restore(String),
    Remix { parent: String, body: RemixSession },
}

#[derive(Debug)]
struct Plan {
    target: Target,
    prompt: Option<String>,
}

impl Plan {
    fn from_args(args: SessionArgs) -> Result<Plan> {
        let prompt = match args.prompt {
            Some(p) if p.trim().is_empty() => anyhow::bail!("--prompt is empty"),
            other => other,
        };
        let target = if let Some(id) = args.restore {
            Target::Restore(non_empty_id(&id, "--restore")?)
        } else if let Some(id) = args.remix {
            Target::Remix {
                parent: non_empty_id(&id, "--remix")?,
                body: RemixSession {
                    data: args.data.unwrap_or(true),
                    code: args.code.unwrap_or(true),
                    name: args.name,
                    prompt: None,
                },
            }
        } else {
            let secrets = args.secrets.as_deref().map(parse_secrets).transpose()?;
            let instructions = text_and_file(
                args.instructions,
                args.instructions_file.as_ref(),
                "instructions",
                "\n\n",
            )?;
            let setup = text_and_file(args.setup, args.setup_file.as_ref(), "setup", "\n")?;
            Target::New(Box::new(CreateSession {
                name: args.name,
                instructions,
                setup,
                secrets,
                ..Default::default()
            }))
        };
        Ok(Plan { target, prompt })
    }
}

fn non_empty_id(id: &str, flag: &str) -> Result<String> {
    let id = id.trim();
    if id.is_empty() {
        anyhow::bail!("{flag} needs a session id");
    }
    Ok(id.to_string())
}

/// `-S`: a JSON object of secret name → value. Errors say where, never
/// what: serde's messages can quote the value, and that may be a secret.
fn parse_secrets(raw: &str) -> Result<BTreeMap<String, String>> {
    serde_json::from_str(raw).map_err(|e| {
        let why = match e.classify() {
            serde_json::error::Category::Data => "a value that is not a string, or not an object",
            _ => "not valid JSON",
        };
        anyhow::anyhow!(
            "--secrets must be a JSON object of name → value, e.g. '{{\"API_KEY\":\"value\"}}' \
             ({why} at line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

/// `-i TEXT` and `-if PATH` (or `-s`/`-sf`): either, or both joined.
fn text_and_file(
    text: Option<String>,
    file: Option<&PathBuf>,
    what: &str,
    joiner: &str,
) -> Result<Option<String>> {
    let from_file = file
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the {what} file {}", path.display()))
        })
        .transpose()?;
    Ok(match (text, from_file) {
        (Some(t), Some(f)) => Some(format!("{}{joiner}{f}", t.trim_end_matches('\n'))),
        (t, f) => t.or(f),
    })
}

/// The session's API, with the saved server and token.
struct Remote {
    http: reqwest::Client,
    base: String,
    token: String,
    /// The session's path, `/api/v0/sessions/{id}`, once there is one.
    path: String,
}

impl Remote {
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T> {
        http::call(
            &self.http,
            &self.base,
            method,
            path,
            Some(&self.token),
            body,
            Credentials::Bearer,
        )
        .await
    }

    fn at(&mut self, id: &str) {
        self.path = format!("/api/v0/sessions/{}", http::encode_segment(id));
    }

    async fn session(&self) -> Result<Session> {
        self.call(Method::GET, &self.path, None).await
    }

    async fn post<T: DeserializeOwned>(&self, sub: &str, body: Value) -> Result<T> {
        let path = format!("{}{sub}", self.path);
        self.call(Method::POST, &path, Some(&body)).await
    }

    /// The seq of the session's latest event (0 if none), so that a stream
    /// opened after it shows only what happens from now on.
    async fn latest_event(&self) -> Result<i64> {
        let mut after = 0;
        loop {
            let path = format!("{}/events?after={after}&limit={EVENT_PAGE}", self.path);
            let page: Vec<Event> = self.call(Method::GET, &path, None).await?;
            if let Some(last) = page.last() {
                after = last.seq;
            }
            if page.len() < EVENT_PAGE {
                return Ok(after);
            }
        }
    }
}

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
struct Events {
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
}

impl Events {
    fn after(seq: i64) -> Events {
        Events {
            last_seq: seq,
            resp: None,
            parser: SseParser::default(),
            ready: VecDeque::new(),
            last_data: tokio::time::Instant::now(),
            retries: 0,
            broken_since: None,
        }
    }

    /// Opens the stream after `last_seq`.
    async fn connect(&mut self, remote: &Remote) -> Result<()> {
        let url = http::url(&remote.base, &format!("{}/events/stream", remote.path));
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
    async fn next(&mut self, remote: &Remote) -> Result<Event> {
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
                        if let Some(e) = decode_event(&m) {
                            self.ready.push_back(e);
                        }
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

/// What to do about a session that is not `running` yet.
#[derive(Debug, PartialEq, Eq)]
enum Move {
    Ready,
    Wait(&'static str),
    Restore,
    Resume,
}

/// The changes already asked for, each asked at most once.
#[derive(Debug, Default)]
struct Asked {
    restore: bool,
    resume: bool,
}

/// The next step towards a running session, from its current row.
/// `may_restore_errored`: the user asked to restore this session (`-r`),
/// so an errored one is started again rather than reported.
fn next_move(s: &Session, asked: &mut Asked, may_restore_errored: bool) -> Result<Move> {
    let id = &s.id;
    Ok(match s.state {
        SessionState::Running => Move::Ready,
        SessionState::Created | SessionState::Starting => Move::Wait("starting the computer…"),
        SessionState::Closing => Move::Wait("waiting for the computer to stop…"),
        SessionState::Paused if !asked.resume => {
            asked.resume = true;
            Move::Resume
        }
        SessionState::Closed if !asked.restore => {
            asked.restore = true;
            Move::Restore
        }
        SessionState::Errored if may_restore_errored && !asked.restore => {
            asked.restore = true;
            Move::Restore
        }
        SessionState::Errored => anyhow::bail!(
            "session {id} failed: {}",
            s.error.as_deref().unwrap_or("no reason given")
        ),
        SessionState::Deleted => anyhow::bail!("session {id} was deleted"),
        SessionState::Paused | SessionState::Closed => {
            anyhow::bail!("session {id} was {} while starting", s.state)
        }
    })
}

/// How a line of step output looks.
#[derive(Debug, Clone, Copy)]
enum Style {
    Plain,
    Dim,
    Red,
    Green,
    Cyan,
    Yellow,
}

/// Step and status output on stderr: colours and a spinner only on a
/// terminal, every step on one line cut to the terminal's width.
struct Ui {
    tty: bool,
    color: bool,
    spinner_shown: bool,
    frame: usize,
    last_status: String,
}

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

impl Ui {
    fn new() -> Ui {
        let tty = std::io::stderr().is_terminal();
        let color = tty
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var("TERM").map_or(true, |t| t != "dumb");
        Ui {
            tty,
            color,
            spinner_shown: false,
            frame: 0,
            last_status: String::new(),
        }
    }

    fn width(&self) -> usize {
        if self.tty {
            term_width().unwrap_or(80)
        } else {
            PIPE_WIDTH
        }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        let code = match style {
            Style::Plain => return text.to_string(),
            Style::Dim => "2",
            Style::Red => "31",
            Style::Green => "32",
            Style::Cyan => "36",
            Style::Yellow => "33",
        };
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Takes the spinner off the screen.
    fn clear(&mut self) {
        if self.spinner_shown {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.spinner_shown = false;
        }
    }

    /// Prints `text` (any number of lines), control characters defused.
    fn say(&mut self, style: Style, text: &str) {
        self.clear();
        let text = printable(text);
        let _ = writeln!(std::io::stderr(), "{}", self.paint(style, &text));
    }

    /// Prints `marker text` on one line, cut to the width.
    fn step(&mut self, marker: &str, style: Style, text: &str) {
        let width = self.width().saturating_sub(marker.chars().count() + 1);
        let line = one_line(text, width.max(10));
        let marker = self.paint(style, marker);
        self.clear();
        let _ = writeln!(std::io::stderr(), "{marker} {line}");
    }

    /// A status that lasts: the spinner's text on a terminal, else printed
    /// once when it changes.
    fn status(&mut self, text: &str) {
        if !self.tty && self.last_status != text {
            self.say(Style::Dim, text);
        }
        self.last_status = text.to_string();
    }

    /// A status for the spinner only: too common to print on its own line.
    fn quiet_status(&mut self, text: &str) {
        self.last_status = text.to_string();
    }

    /// Moves the spinner on (terminals only).
    fn spin(&mut self, since: Instant) {
        if !self.tty {
            return;
        }
        self.frame = (self.frame + 1) % FRAMES.len();
        let secs = since.elapsed().as_secs();
        let text = format!("{} {secs}s", self.last_status);
        let text = one_line(&text, self.width().saturating_sub(3).max(10));
        let frame = self.paint(Style::Cyan, &FRAMES[self.frame].to_string());
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{frame} {}", self.paint(Style::Dim, &text));
        let _ = err.flush();
        self.spinner_shown = true;
    }

    fn prompt(&mut self) {
        self.clear();
        let mut err = std::io::stderr();
        let _ = write!(err, "{} ", self.paint(Style::Cyan, ">"));
        let _ = err.flush();
    }
}

/// An error ends the command with a message on stderr: the spinner must
/// not be left in front of it.
impl Drop for Ui {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The terminal's width in columns, from stderr.
fn term_width() -> Option<usize> {
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes one `winsize` into the struct passed,
    // which lives across the call; fd 2 is a descriptor (an invalid one
    // just makes the call fail).
    let rc = unsafe { nix::libc::ioctl(2, nix::libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 {
        return Some(ws.ws_col as usize);
    }
    std::env::var("COLUMNS").ok()?.trim().parse().ok()
}

/// `text` without the control characters a terminal would act on (escape
/// sequences in a command's output, say): what the agent and the computer
/// write is shown, never obeyed. Line breaks and tabs stay.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|&c| c != '\r')
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// `text` on one line (line breaks shown as `↵`), at most `width` characters.
fn one_line(text: &str, width: usize) -> String {
    let flat = printable(text)
        .trim()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join(" ↵ ");
    if flat.chars().count() <= width {
        return flat;
    }
    let mut cut: String = flat.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `bash: ls -la`, `computer: left_click [300, 400]`: what a `tool_use`
/// event asks, from its `name` and `input`.
fn describe_tool_use(metadata: &Value, content: &str) -> String {
    let Some(name) = metadata.get("name").and_then(Value::as_str) else {
        return content.to_string();
    };
    let input = metadata.get("input").cloned().unwrap_or(Value::Null);
    let detail = match name {
        "bash" => match input.get("command").and_then(Value::as_str) {
            Some(cmd) => cmd.to_string(),
            None if input.get("restart").and_then(Value::as_bool) == Some(true) => {
                "(restart the shell)".to_string()
            }
            None => compact(&input),
        },
        "computer" => describe_computer(&input),
        "str_replace_based_edit_tool" => {
            let command = input.get("command").and_then(Value::as_str).unwrap_or("?");
            let path = input.get("path").and_then(Value::as_str).unwrap_or("");
            format!("{command} {path}").trim_end().to_string()
        }
        _ => compact(&input),
    };
    let name = if name == "str_replace_based_edit_tool" {
        "editor"
    } else {
        name
    };
    format!("{name}: {detail}")
}

/// `left_click [300, 400]`, `type "hello"`, `key ctrl+l`, `scroll down 3 [10, 20]`.
fn describe_computer(input: &Value) -> String {
    let Some(action) = input.get("action").and_then(Value::as_str) else {
        return compact(input);
    };
    let mut parts = vec![action.to_string()];
    let typed = matches!(action, "type");
    for key in [
        "start_coordinate",
        "coordinate",
        "scroll_direction",
        "scroll_amount",
        "text",
        "duration",
        "region",
    ] {
        let Some(v) = input.get(key) else { continue };
        parts.push(match v {
            Value::String(s) if key == "text" && typed => format!("{s:?}"),
            Value::String(s) => s.clone(),
            Value::Array(items) => format!(
                "[{}]",
                items.iter().map(compact).collect::<Vec<_>>().join(", ")
            ),
            other => compact(other),
        });
    }
    parts.join(" ")
}

fn compact(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A `tool_result` as `(failed, first line …)`.
fn describe_tool_result(event: &Event) -> (bool, String) {
    let failed = event.metadata.get("is_error").and_then(Value::as_bool) == Some(true);
    let mut lines = event.content.lines().filter(|l| !l.trim().is_empty());
    let text = match lines.next() {
        Some(first) => {
            let more = lines.count();
            if more > 0 {
                format!("{} (+{more} lines)", first.trim_end())
            } else {
                first.trim_end().to_string()
            }
        }
        None if event.metadata.get("image_url").is_some() => "(screenshot)".to_string(),
        None => "(no output)".to_string(),
    };
    (failed, text)
}

/// Leaving by Ctrl-C rather than by `/quit` or the end of input.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Go,
    Leave,
}

/// One run of `raworc session`, once its session exists.
struct Shell {
    remote: Remote,
    events: Events,
    ui: Ui,
    sigint: Signal,
    id: String,
    /// The session's state as last seen.
    state: String,
}

impl Shell {
    /// Waits until the session is `running`, restoring or resuming it
    /// when it is closed or paused.
    async fn until_running(&mut self, may_restore_errored: bool) -> Result<Flow> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut asked = Asked::default();
        let mut tick = spinner_clock();
        loop {
            let s = self.remote.session().await?;
            self.state = s.state.as_str().to_string();
            match next_move(&s, &mut asked, may_restore_errored)? {
                Move::Ready => {
                    self.ui.clear();
                    return Ok(Flow::Go);
                }
                Move::Restore => {
                    self.ui.status("restoring the computer…");
                    let _: Session = self
                        .remote
                        .post("/restore", json!({}))
                        .await
                        .with_context(|| format!("cannot restore session {}", self.id))?;
                    continue;
                }
                Move::Resume => {
                    self.ui.status("resuming the computer…");
                    let path = format!("{}/state", self.remote.path);
                    let body = json!({"state": "running"});
                    let _: Session = self
                        .remote
                        .call(Method::PUT, &path, Some(&body))
                        .await
                        .with_context(|| format!("cannot resume session {}", self.id))?;
                    continue;
                }
                Move::Wait(what) => self.ui.status(what),
            }
            // Until the session's state changes.
            loop {
                tokio::select! {
                    _ = self.sigint.recv() => {
                        self.ui.clear();
                        return Ok(Flow::Leave);
                    }
                    e = self.events.next(&self.remote) => {
                        if e?.kind == "state" {
                            break;
                        }
                    }
                    _ = tick.tick(), if self.ui.tty => self.ui.spin(started),
                    _ = tokio::time::sleep_until(deadline) => {
                        self.ui.clear();
                        anyhow::bail!(
                            "session {} did not start within {} minutes (it is {})",
                            self.id,
                            START_TIMEOUT.as_secs() / 60,
                            self.state
                        );
                    }
                }
            }
        }
    }

    /// Posts `content` as a user message and shows the agent's steps until
    /// its reply, which is printed to stdout. Ctrl-C cancels the agent's
    /// work; a second one leaves.
    async fn ask(&mut self, content: &str) -> Result<Flow> {
        let message: Message = self
            .remote
            .post("/messages", json!({ "content": content }))
            .await
            .context("cannot send the message")?;
        let started = Instant::now();
        let mut tick = spinner_clock();
        let mut cancelling = false;
        // The latest `text`, held back in case it is the reply itself.
        let mut pending: Option<String> = None;
        self.set_working_status();
        loop {
            tokio::select! {
                _ = self.sigint.recv() => {
                    if cancelling {
                        self.ui.clear();
                        return Ok(Flow::Leave);
                    }
                    cancelling = true;
                    self.ui.say(Style::Yellow, "cancelling… (Ctrl-C again to leave)");
                    self.ui.quiet_status("cancelling…");
                    let cancel: Result<Cancelled> = self.remote.post("/cancel", json!({})).await;
                    if let Err(e) = cancel {
                        self.ui.say(Style::Red, &format!("cannot cancel: {e:#}"));
                    }
                }
                e = self.events.next(&self.remote) => {
                    let event = e?;
                    if let Some(reply) = self.show(event, message.seq, &mut pending).await? {
                        self.ui.clear();
                        print_reply(&reply)?;
                        return Ok(Flow::Go);
                    }
                }
                _ = tick.tick(), if self.ui.tty => self.ui.spin(started),
            }
        }
    }

    fn set_working_status(&mut self) {
        if self.state == SessionState::Running.as_str() {
            self.ui.quiet_status("working…");
        } else {
            let status = format!("waiting for the computer (the session is {})…", self.state);
            self.ui.status(&status);
        }
    }

    /// Shows one event; returns the reply when it is the `complete` event
    /// that answers message `seq`.
    async fn show(
        &mut self,
        event: Event,
        seq: i64,
        pending: &mut Option<String>,
    ) -> Result<Option<String>> {
        let flush = |ui: &mut Ui, pending: &mut Option<String>| {
            if let Some(text) = pending.take() {
                ui.say(Style::Dim, text.trim_end());
            }
        };
        match event.kind.as_str() {
            "text" => {
                flush(&mut self.ui, pending);
                *pending = Some(event.content);
            }
            "thinking" => {
                flush(&mut self.ui, pending);
                let text = format!("thinking: {}", event.content.trim());
                self.ui.say(Style::Dim, &text);
            }
            "tool_use" => {
                flush(&mut self.ui, pending);
                let line = describe_tool_use(&event.metadata, &event.content);
                self.ui.step("→", Style::Cyan, &line);
            }
            "tool_result" => {
                flush(&mut self.ui, pending);
                let (failed, line) = describe_tool_result(&event);
                if failed {
                    self.ui.step("✗", Style::Red, &line);
                } else {
                    self.ui.step("✓", Style::Green, &line);
                }
            }
            "error" => {
                flush(&mut self.ui, pending);
                let text = format!("error: {}", event.content.trim());
                self.ui.say(Style::Red, &text);
            }
            "complete" => {
                let answers = event.metadata.get("reply_to").and_then(Value::as_i64) == Some(seq);
                if !answers {
                    flush(&mut self.ui, pending);
                    self.ui
                        .say(Style::Dim, "(the agent answered an earlier message)");
                    return Ok(None);
                }
                // The model's last text is usually the reply: show it once.
                if let Some(text) = pending.take() {
                    if text.trim() != event.content.trim() {
                        self.ui.say(Style::Dim, text.trim_end());
                    }
                }
                return Ok(Some(event.content));
            }
            "state" => self.state_changed(&event.content).await?,
            _ => {}
        }
        Ok(None)
    }

    /// Follows the session's state while the agent works: a failed or
    /// deleted session ends the command; other changes are shown.
    async fn state_changed(&mut self, state: &str) -> Result<()> {
        match SessionState::parse(state) {
            Some(SessionState::Errored) => {
                // The event may be old news: the row says what holds now.
                let s = self.remote.session().await?;
                if s.state == SessionState::Errored {
                    self.ui.clear();
                    anyhow::bail!(
                        "session {} failed: {}",
                        self.id,
                        s.error.as_deref().unwrap_or("no reason given")
                    );
                }
            }
            Some(SessionState::Deleted) => {
                self.ui.clear();
                anyhow::bail!("session {} was deleted", self.id);
            }
            _ => {}
        }
        if state != self.state {
            self.state = state.to_string();
            self.ui
                .say(Style::Dim, &format!("· the session is {state}"));
            self.set_working_status();
        }
        Ok(())
    }

    /// `/status`: the session's id, state, whether the agent works, and
    /// how many messages it has.
    async fn status(&mut self) -> Result<()> {
        let s = self.remote.session().await?;
        let count: Count = self
            .remote
            .call(
                Method::GET,
                &format!("{}/messages/count", self.remote.path),
                None,
            )
            .await?;
        self.state = s.state.as_str().to_string();
        let mut text = format!("id:       {}\n", s.id);
        if let Some(name) = &s.name {
            text.push_str(&format!("name:     {name}\n"));
        }
        text.push_str(&format!(
            "state:    {}\nbusy:     {}\nmessages: {}\n",
            s.state, s.busy, count.count
        ));
        if let Some(error) = &s.error {
            text.push_str(&format!("error:    {error}\n"));
        }
        self.ui.clear();
        print_out(&text)
    }

    /// Reads prompts from stdin until `/quit`, the end of input or Ctrl-C.
    async fn prompt_loop(&mut self, interactive: bool) -> Result<Flow> {
        let mut lines = stdin_lines();
        loop {
            if interactive {
                self.ui.prompt();
            }
            let line = tokio::select! {
                _ = self.sigint.recv() => {
                    if interactive {
                        let _ = writeln!(std::io::stderr());
                    }
                    return Ok(Flow::Leave);
                }
                line = lines.recv() => line,
            };
            let Some(line) = line else {
                if interactive {
                    let _ = writeln!(std::io::stderr());
                }
                return Ok(Flow::Go);
            };
            let line = line.context("cannot read stdin")?;
            match line.trim() {
                "" => {}
                "/quit" | "/exit" => return Ok(Flow::Go),
                "/status" => self.status().await?,
                "/help" => self.ui.say(Style::Plain, HELP),
                text => {
                    if self.ask(text).await? == Flow::Leave {
                        return Ok(Flow::Leave);
                    }
                }
            }
        }
    }
}

const HELP: &str = "Type a message for the agent. Commands: /status (the session's state), \
/quit (or Ctrl-D) to leave; Ctrl-C stops the agent's work, twice leaves.";

fn spinner_clock() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(SPIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// Lines of stdin, read on a thread of their own: a read of the terminal
/// cannot be cancelled, and Ctrl-C must still be noticed at the prompt.
fn stdin_lines() -> mpsc::UnboundedReceiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        loop {
            let mut buf = Vec::new();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if tx.send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// The reply, whole, on stdout.
fn print_reply(text: &str) -> Result<()> {
    let mut text = text.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    print_out(&text)
}

/// Writes to stdout (defused for a terminal, as it is for a pipe); a
/// reader that went away (`| head`) is not an error.
fn print_out(text: &str) -> Result<()> {
    let stdout = std::io::stdout();
    let text = if stdout.is_terminal() {
        printable(text)
    } else {
        text.to_string()
    };
    let mut out = stdout.lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// `raworc session`.
pub async fn session(ctx: &Context, args: SessionArgs) -> Result<()> {
    let plan = Plan::from_args(args)?;
    let (server, _cfg, token) = auth::logged_in(ctx)?;
    let interactive = std::io::stdin().is_terminal();
    let sigint = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let mut remote = Remote {
        http: http::client()?,
        base: server,
        token,
        path: String::new(),
    };
    let mut ui = Ui::new();

    let (session, after, may_restore_errored) = match plan.target {
        Target::New(body) => {
            let mut body = serde_json::to_value(&*body).context("cannot encode the session")?;
            if let Value::Object(fields) = &mut body {
                // Only what was given: the server's defaults for the rest.
                fields.retain(|_, v| !v.is_null());
            }
            let s: Session = remote
                .call(Method::POST, "/api/v0/sessions", Some(&body))
                .await
                .context("cannot create the session")?;
            ui.say(Style::Dim, &format!("Created session {}", s.id));
            (s, 0, false)
        }
        Target::Restore(id) => {
            remote.at(&id);
            let s = remote.session().await?;
            let after = remote.latest_event().await?;
            if !interactive || s.state != SessionState::Running {
                ui.say(Style::Dim, &format!("Session {} is {}", s.id, s.state));
            }
            (s, after, true)
        }
        Target::Remix { parent, body } => {
            remote.at(&parent);
            let body = serde_json::to_value(&body).context("cannot encode the remix")?;
            let s: Session = remote
                .post("/remix", body)
                .await
                .with_context(|| format!("cannot remix session {parent}"))?;
            ui.say(
                Style::Dim,
                &format!("Remixed session {parent} into session {}", s.id),
            );
            (s, 0, false)
        }
    };
    remote.at(&session.id);
    let mut shell = Shell {
        remote,
        events: Events::after(after),
        ui,
        sigint,
        id: session.id.clone(),
        state: session.state.as_str().to_string(),
    };
    // The stream opens before the session's state is read, so no change
    // between the two is missed.
    shell.events.connect(&shell.remote).await?;

    let mut flow = shell.until_running(may_restore_errored).await?;
    if flow == Flow::Go {
        if interactive {
            let text = format!("Session {} is running.\n{HELP}", shell.id);
            shell.ui.say(Style::Dim, &text);
        }
        if let Some(prompt) = &plan.prompt {
            flow = shell.ask(prompt).await?;
        }
        // A script's one prompt is answered; anything else reads stdin.
        let only_prompt = plan.prompt.is_some() && !interactive;
        if flow == Flow::Go && !only_prompt {
            flow = shell.prompt_loop(interactive).await?;
        }
    }
    if interactive {
        let text = format!(
            "Left session {id} (still {state}); come back with: raworc session -r {id}",
            id = shell.id,
            state = shell.state
        );
        shell.ui.say(Style::Dim, &text);
        return Ok(());
    }
    match flow {
        Flow::Go => Ok(()),
        Flow::Leave => anyhow::bail!("interrupted; session {} goes on", shell.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Session(SessionArgs),
        Api {
            #[arg(short = 'b')]
            body: Option<String>,
            rest: Vec<String>,
        },
    }

    fn expand(args: &[&str]) -> Vec<String> {
        expand_args(args.iter().copied())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    fn parse(args: &[&str]) -> Result<SessionArgs, clap::Error> {
        let mut argv = vec!["raworc", "session"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(expand_args(argv))?.command {
            Sub::Session(a) => Ok(a),
            Sub::Api { .. } => unreachable!(),
        }
    }

    #[test]
    fn two_letter_flags_are_spelled_out() {
        assert_eq!(
            expand(&["raworc", "session", "-if", "a.md", "-sf", "s.sh"]),
            [
                "raworc",
                "session",
                "--instructions-file",
                "a.md",
                "--setup-file",
                "s.sh"
            ]
        );
        assert_eq!(
            expand(&["raworc", "session", "-if=a.md"]),
            ["raworc", "session", "--instructions-file=a.md"]
        );
        // A value that looks like the flag stays a value.
        assert_eq!(
            expand(&["raworc", "session", "-p", "-if", "-n", "-sf"]),
            ["raworc", "session", "-p", "-if", "-n", "-sf"]
        );
        assert_eq!(
            expand(&["raworc", "session", "--prompt", "-sf", "-sf", "x"]),
            ["raworc", "session", "--prompt", "-sf", "--setup-file", "x"]
        );
        // Not after `--`, and not for other commands.
        assert_eq!(
            expand(&["raworc", "session", "--", "-if"]),
            ["raworc", "session", "--", "-if"]
        );
        assert_eq!(
            expand(&["raworc", "api", "-if", "x"]),
            ["raworc", "api", "-if", "x"]
        );
        assert_eq!(expand(&["raworc"]), ["raworc"]);
        assert_eq!(expand(&["raworc", "--help"]), ["raworc", "--help"]);
    }

    #[test]
    fn every_flag_of_the_seed_parses() {
        let a = parse(&[
            "-S",
            r#"{"K":"v"}"#,
            "-i",
            "be brief",
            "-if",
            "i.md",
            "-s",
            "echo hi",
            "-sf",
            "s.sh",
            "-p",
            "hello",
            "-n",
            "demo",
        ])
        .unwrap();
        assert_eq!(a.secrets.as_deref(), Some(r#"{"K":"v"}"#));
        assert_eq!(a.instructions.as_deref(), Some("be brief"));
        assert_eq!(a.instructions_file, Some(PathBuf::from("i.md")));
        assert_eq!(a.setup.as_deref(), Some("echo hi"));
        assert_eq!(a.setup_file, Some(PathBuf::from("s.sh")));
        assert_eq!(a.prompt.as_deref(), Some("hello"));
        assert_eq!(a.name.as_deref(), Some("demo"));

        let a = parse(&["-R", "abc", "-d", "false", "-c", "no"]).unwrap();
        assert_eq!(a.remix.as_deref(), Some("abc"));
        assert_eq!((a.data, a.code), (Some(false), Some(false)));
        let a = parse(&["--remix", "abc", "--data", "true"]).unwrap();
        assert_eq!((a.data, a.code), (Some(true), None));
        let a = parse(&["-r", "abc", "-p", "go on"]).unwrap();
        assert_eq!(a.restore.as_deref(), Some("abc"));
    }

    #[test]
    fn flags_that_do_not_go_together_are_refused() {
        for bad in [
            &["-d", "false"][..],
            &["-c", "true"],
            &["-r", "a", "-R", "b"],
            &["-r", "a", "-S", "{}"],
            &["-R", "a", "-i", "x"],
            &["-R", "a", "-sf", "x"],
            &["-r", "a", "-n", "x"],
            &["-R", "a", "-d", "maybe"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn a_new_session_takes_its_settings_from_flags_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let instructions = dir.path().join("i.md");
        let setup = dir.path().join("s.sh");
        std::fs::write(&instructions, "from the file\n").unwrap();
        std::fs::write(&setup, "echo file\n").unwrap();
        let plan = Plan::from_args(SessionArgs {
            secrets: Some(r#"{"TOKEN":"abc","B":"c"}"#.into()),
            instructions: Some("inline\n".into()),
            instructions_file: Some(instructions.clone()),
            setup: Some("echo inline".into()),
            setup_file: Some(setup),
            name: Some("demo".into()),
            prompt: Some("hi".into()),
            ..Default::default()
        })
        .unwrap();
        let Target::New(body) = plan.target else {
            panic!("a new session: {plan:?}")
        };
        assert_eq!(body.name.as_deref(), Some("demo"));
        assert_eq!(
            body.instructions.as_deref(),
            Some("inline\n\nfrom the file\n")
        );
        assert_eq!(body.setup.as_deref(), Some("echo inline\necho file\n"));
        let secrets = body.secrets.unwrap();
        assert_eq!(secrets["TOKEN"], "abc");
        assert_eq!(secrets.len(), 2);
        assert_eq!(body.prompt, None, "the prompt is sent as a message");
        assert_eq!(plan.prompt.as_deref(), Some("hi"));

        let only_file = Plan::from_args(SessionArgs {
            instructions_file: Some(instructions),
            ..Default::default()
        })
        .unwrap();
        let Target::New(body) = only_file.target else {
            panic!()
        };
        assert_eq!(body.instructions.as_deref(), Some("from the file\n"));
        assert_eq!(body.setup, None);
        assert_eq!(body.secrets, None);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let err = |args: SessionArgs| format!("{:#}", Plan::from_args(args).unwrap_err());
        for raw in ["{not json", r#"["a"]"#, r#"{"A":1}"#, "", r#""hunter2""#] {
            let e = err(SessionArgs {
                secrets: Some(raw.into()),
                ..Default::default()
            });
            assert!(e.starts_with("--secrets must be a JSON object"), "{e}");
            assert!(!e.contains("hunter2"), "no value is quoted: {e}");
        }
        let e = err(SessionArgs {
            setup_file: Some("/nonexistent/setup.sh".into()),
            ..Default::default()
        });
        assert!(
            e.starts_with("cannot read the setup file /nonexistent/setup.sh"),
            "{e}"
        );
        let e = err(SessionArgs {
            prompt: Some("  ".into()),
            ..Default::default()
        });
        assert_eq!(e, "--prompt is empty");
        let e = err(SessionArgs {
            restore: Some(" ".into()),
            ..Default::default()
        });
        assert_eq!(e, "--restore needs a session id");
    }

    #[test]
    fn remixes_copy_everything_unless_told() {
        let plan = Plan::from_args(SessionArgs {
            remix: Some("p1".into()),
            data: Some(false),
            name: Some("child".into()),
            ..Default::default()
        })
        .unwrap();
        let Target::Remix { parent, body } = plan.target else {
            panic!()
        };
        assert_eq!(parent, "p1");
        assert!(!body.data);
        assert!(body.code);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"data": false, "code": true, "name": "child", "prompt": null})
        );
    }

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

    fn session(state: SessionState) -> Session {
        serde_json::from_value(json!({
            "id": "s1", "name": null, "state": state, "busy": false, "owner": "admin",
            "instructions": null, "setup": null, "secrets": [], "metadata": {},
            "parent_id": null, "network": "none", "limits": {},
            "error": if state == SessionState::Errored { json!("setup failed") } else { Value::Null },
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn sessions_are_brought_to_running() {
        use SessionState::*;
        let mv = |state, asked: &mut Asked, restore| next_move(&session(state), asked, restore);
        let fresh = &mut Asked::default();
        assert_eq!(mv(Running, fresh, false).unwrap(), Move::Ready);
        assert!(matches!(mv(Created, fresh, false).unwrap(), Move::Wait(_)));
        assert!(matches!(mv(Starting, fresh, false).unwrap(), Move::Wait(_)));
        assert!(matches!(mv(Closing, fresh, false).unwrap(), Move::Wait(_)));

        let asked = &mut Asked::default();
        assert_eq!(mv(Closed, asked, false).unwrap(), Move::Restore);
        let e = mv(Closed, asked, false).unwrap_err().to_string();
        assert_eq!(e, "session s1 was closed while starting");
        let asked = &mut Asked::default();
        assert_eq!(mv(Paused, asked, false).unwrap(), Move::Resume);
        assert!(mv(Paused, asked, false).is_err());

        // Errored: restored when the user asked for a restore, once.
        let asked = &mut Asked::default();
        assert_eq!(mv(Errored, asked, true).unwrap(), Move::Restore);
        let e = mv(Errored, asked, true).unwrap_err().to_string();
        assert_eq!(e, "session s1 failed: setup failed");
        let e = mv(Errored, &mut Asked::default(), false).unwrap_err();
        assert_eq!(e.to_string(), "session s1 failed: setup failed");
        let e = mv(Deleted, &mut Asked::default(), true).unwrap_err();
        assert_eq!(e.to_string(), "session s1 was deleted");
    }

    fn event(kind: &str, content: &str, metadata: Value) -> Event {
        serde_json::from_value(json!({
            "session_id": "s1", "seq": 1, "type": kind, "content": content,
            "metadata": metadata,
            "created_at": "2026-01-01T00:00:00Z", "timestamp": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn tool_calls_read_as_one_line() {
        let d = |m: Value| describe_tool_use(&m, "raw");
        assert_eq!(
            d(json!({"name": "bash", "input": {"command": "ls -la"}})),
            "bash: ls -la"
        );
        assert_eq!(
            d(json!({"name": "bash", "input": {"restart": true}})),
            "bash: (restart the shell)"
        );
        assert_eq!(
            d(
                json!({"name": "computer", "input": {"action": "left_click", "coordinate": [300, 400]}})
            ),
            "computer: left_click [300, 400]"
        );
        assert_eq!(
            d(json!({"name": "computer", "input": {"action": "type", "text": "hi\n"}})),
            r#"computer: type "hi\n""#
        );
        assert_eq!(
            d(json!({"name": "computer", "input": {"action": "key", "text": "ctrl+l"}})),
            "computer: key ctrl+l"
        );
        assert_eq!(
            d(
                json!({"name": "computer", "input": {"action": "scroll", "coordinate": [1, 2],
                "scroll_direction": "down", "scroll_amount": 3}})
            ),
            "computer: scroll [1, 2] down 3"
        );
        assert_eq!(
            d(json!({"name": "computer", "input": {"action": "screenshot"}})),
            "computer: screenshot"
        );
        assert_eq!(
            d(json!({"name": "str_replace_based_edit_tool",
                "input": {"command": "view", "path": "/session/code/a.py"}})),
            "editor: view /session/code/a.py"
        );
        assert_eq!(
            d(json!({"name": "other", "input": {"x": 1}})),
            r#"other: {"x":1}"#
        );
        assert_eq!(d(json!({})), "raw");
    }

    #[test]
    fn tool_results_read_as_one_line() {
        let r = |content, metadata| describe_tool_result(&event("tool_result", content, metadata));
        assert_eq!(
            r("from-cli\n", json!({"is_error": false})),
            (false, "from-cli".into())
        );
        assert_eq!(r("a\n\nb\nc", json!({})), (false, "a (+2 lines)".into()));
        assert_eq!(
            r("no such file", json!({"is_error": true})),
            (true, "no such file".into())
        );
        assert_eq!(
            r("", json!({"image_url": "/x"})),
            (false, "(screenshot)".into())
        );
        assert_eq!(r("", json!({})), (false, "(no output)".into()));
    }

    #[test]
    fn lines_are_cut_to_the_width() {
        assert_eq!(one_line("short", 10), "short");
        assert_eq!(one_line("0123456789abc", 10), "012345678…");
        assert_eq!(one_line("a\nb  \n", 10), "a ↵ b");
        assert_eq!(one_line("ééééé", 4), "ééé…");
        assert_eq!(
            one_line("\x1b[31mred\x1b[0m\r\n", 20),
            "\u{FFFD}[31mred\u{FFFD}[0m"
        );
        assert_eq!(printable("a\tb\r\nc\x07"), "a\tb\nc\u{FFFD}");
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

    fn sse(seq: i64, kind: &str) -> String {
        let data = serde_json::to_string(&event(kind, &format!("e{seq}"), json!({})))
            .unwrap()
            .replace("\"seq\":1", &format!("\"seq\":{seq}"));
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
