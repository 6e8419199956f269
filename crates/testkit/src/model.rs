//! A scripted model server: the stand-in for a real model in tests of an
//! agent loop. It listens on a loopback port and speaks the two wire formats
//! the agent uses — the Anthropic Messages API (`POST /v1/messages`) and
//! OpenAI-compatible chat completions (`POST /v1/chat/completions`) — with
//! real HTTP, real SSE framing and real error bodies, so the client code
//! under test is the one that runs in production.
//!
//! Each request is answered by the next [`Step`] of a script: an assistant
//! turn or a [`Fault`]. Before that, the request is checked against the
//! rules the real APIs enforce (headers, role order, `tool_use` ↔
//! `tool_result` pairing, beta headers of Anthropic-defined tools, cache
//! breakpoints). A broken rule is recorded as a violation and answered like
//! the real API would (400, or 401 for a wrong key) without using up a step,
//! so a loop bug shows up in the test that caused it rather than in a run
//! against the paid API.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

/// The key a [`ScriptedModel`] expects unless [`ScriptedModel::with_key`]
/// says otherwise.
pub const DEFAULT_KEY: &str = "test-model-key";

/// The only `anthropic-version` the real SDKs send.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// At most this many `cache_control` breakpoints per Anthropic request.
pub const MAX_CACHE_BREAKPOINTS: usize = 4;

/// One entry of the script.
#[derive(Debug, Clone)]
pub enum Step {
    /// One assistant turn: Anthropic content blocks as JSON (`{"type":"text","text":..}`,
    /// `{"type":"tool_use","name":..,"input":{..}}` — the server fills in `id` as `toolu_<n>`
    /// when missing, `{"type":"thinking","thinking":..,"signature":..}`) and a stop reason
    /// ("end_turn", "tool_use", "max_tokens", ...). Served streamed when the request has
    /// `"stream": true`, else as one JSON message; on the OpenAI route the same turn is
    /// translated (text → content, tool_use → tool_calls with id `call_<n>`, stop reasons →
    /// finish_reason "stop"/"tool_calls"/"length"; thinking dropped).
    Reply {
        content: Vec<Value>,
        stop_reason: String,
    },
    Fault(Fault),
}

impl Step {
    /// A turn of `content` blocks ending with `stop_reason`.
    pub fn reply(content: Vec<Value>, stop_reason: &str) -> Step {
        Step::Reply {
            content,
            stop_reason: stop_reason.to_string(),
        }
    }

    /// A final answer: one text block, `end_turn`.
    pub fn text(text: &str) -> Step {
        Step::reply(vec![json!({"type": "text", "text": text})], "end_turn")
    }

    /// One tool call (id filled in by the server), `tool_use`.
    pub fn tool_use(name: &str, input: Value) -> Step {
        Step::reply(
            vec![json!({"type": "tool_use", "name": name, "input": input})],
            "tool_use",
        )
    }

    /// Panics on a script a test got wrong, at the line that wrote it.
    #[track_caller]
    fn assert_well_formed(&self) {
        let Step::Reply { content, .. } = self else {
            return;
        };
        for block in content {
            let kind = block.get("type").and_then(Value::as_str);
            match kind {
                Some("text") => assert!(
                    block["text"].is_string(),
                    "scripted text block without a string `text`: {block}"
                ),
                Some("tool_use") => assert!(
                    block["name"].is_string() && block.get("input").is_none_or(Value::is_object),
                    "scripted tool_use block needs a string `name` and an object `input`: {block}"
                ),
                Some("thinking") => assert!(
                    block["thinking"].is_string(),
                    "scripted thinking block without a string `thinking`: {block}"
                ),
                Some(_) => {}
                None => panic!("scripted content block without a `type`: {block}"),
            }
        }
    }
}

/// A way for a model call to fail.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 `rate_limit_error` with `retry-after` (seconds) and `retry-after-ms`.
    RateLimited { retry_after_s: f64 },
    /// 529 `overloaded_error` (503 on the OpenAI route, which has no 529).
    Overloaded,
    /// 500 `api_error` (`server_error` on the OpenAI route).
    ServerError,
    /// Any status and error type, e.g. 400 `invalid_request_error`, 401 `authentication_error`.
    Status {
        status: u16,
        error_type: String,
        message: String,
    },
    /// A 200 stream that stops mid-way (connection closed after the first content block's deltas
    /// begin; for a non-streaming request: a truncated JSON body).
    CutStream,
    /// A 200 whose body is not valid JSON (for a stream: one `data:` line with broken JSON).
    MalformedJson,
    /// A 200 stream carrying `event: error` with overloaded_error mid-stream (for a
    /// non-streaming request: the 529 it would have been).
    StreamError,
    /// The next step (a [`Step::Reply`] with a `tool_use`; both steps are used by one request)
    /// as a reply that hit `max_tokens` in the middle of its last tool call: blocks after that
    /// call are dropped, the call's input stops half-way (streamed: its `input_json_delta`
    /// carries only the first half of the JSON, then the block stops; not streamed: `input` is
    /// `{}`) and the stop reason is `max_tokens` (OpenAI: the last call's `arguments` cut
    /// half-way, `finish_reason` "length"). On the Anthropic route a later `tool_result` for
    /// the cut call must be `is_error`: the call cannot have run.
    CutAtMaxTokens,
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub query: Option<String>,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The parsed body; a body that is not JSON is kept as a string.
    pub body: Value,
    pub at: Instant,
    /// Which script step answered (0-based over the whole script), `None`
    /// for a request rejected by a check or past the script's end.
    pub step: Option<usize>,
    /// The status answered.
    pub status: u16,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The server; it serves until dropped.
pub struct ScriptedModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

struct Shared {
    state: Mutex<ScriptState>,
    /// How many requests have been recorded, for [`ScriptedModel::wait_requests`].
    arrived: watch::Sender<usize>,
}

impl Shared {
    /// A panicking test must not turn every later request into a panic too.
    fn lock(&self) -> MutexGuard<'_, ScriptState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct ScriptState {
    key: String,
    script: VecDeque<Step>,
    played: usize,
    requests: Vec<Recorded>,
    violations: Vec<String>,
    next_message: u64,
    next_tool: u64,
    next_request: u64,
    /// Ids of the tool calls [`Fault::CutAtMaxTokens`] cut.
    cut_tools: HashSet<String>,
}

impl ScriptState {
    fn next_id(counter: &mut u64, prefix: &str) -> String {
        *counter += 1;
        format!("{prefix}{counter}")
    }
}

impl ScriptedModel {
    /// Starts the server on `127.0.0.1:0` with `steps` as its script.
    pub async fn start(steps: Vec<Step>) -> ScriptedModel {
        for step in &steps {
            step.assert_well_formed();
        }
        for pair in steps.windows(2) {
            if matches!(pair[0], Step::Fault(Fault::CutAtMaxTokens)) {
                assert!(
                    cuttable(&pair[1]),
                    "Fault::CutAtMaxTokens must be followed by a Step::Reply with a tool_use, not {:?}",
                    pair[1]
                );
            }
        }
        if let Some(Step::Fault(Fault::CutAtMaxTokens)) = steps.last() {
            panic!("Fault::CutAtMaxTokens must be followed by a Step::Reply with a tool_use");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the scripted model's port");
        let addr = listener.local_addr().expect("the scripted model's address");
        let shared = Arc::new(Shared {
            state: Mutex::new(ScriptState {
                key: DEFAULT_KEY.to_string(),
                script: steps.into(),
                played: 0,
                requests: Vec::new(),
                violations: Vec::new(),
                next_message: 0,
                next_tool: 0,
                next_request: 0,
                cut_tools: HashSet::new(),
            }),
            arrived: watch::channel(0).0,
        });
        // Screenshots make requests large: no body limit.
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .await;
        });
        ScriptedModel {
            addr,
            shared,
            shutdown: Some(shutdown),
        }
    }

    /// What the server expects in `x-api-key` (Anthropic) and
    /// `Authorization: Bearer` (OpenAI); [`DEFAULT_KEY`] otherwise.
    pub fn with_key(self, key: &str) -> Self {
        self.shared.lock().key = key.to_string();
        self
    }

    pub fn key(&self) -> String {
        self.shared.lock().key.clone()
    }

    /// Points a server's agent at this model through Anthropic's API, with
    /// the key this model expects.
    pub fn serve_anthropic(&self, c: &mut raworc_server::ServerConfig) {
        c.llm = Some(raworc_server::config::LlmKind::Anthropic);
        c.anthropic_base_url = self.base_url();
        c.anthropic_api_key = Some(raworc_server::config::ApiKey(self.key()));
    }

    /// The flags of `raworc serve` (a [`crate::process::ServerProcess`])
    /// that point its agent at this model through Anthropic's API.
    pub fn serve_anthropic_args(&self) -> Vec<String> {
        vec![
            "--llm".into(),
            "anthropic".into(),
            "--anthropic-base-url".into(),
            self.base_url(),
            "--anthropic-api-key".into(),
            self.key(),
        ]
    }

    /// Points a server's agent at this model through the OpenAI-compatible
    /// API (as model `model`), with the key this model expects.
    pub fn serve_openai(&self, c: &mut raworc_server::ServerConfig, model: &str) {
        c.llm = Some(raworc_server::config::LlmKind::Openai);
        c.model = model.to_owned();
        c.openai_base_url = self.base_url();
        c.openai_api_key = Some(raworc_server::config::ApiKey(self.key()));
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash or `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Appends `step` to the script while the server runs.
    #[track_caller]
    pub fn push(&self, step: Step) {
        step.assert_well_formed();
        self.shared.lock().script.push_back(step);
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The protocol violations seen, in order, each prefixed with the route.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// Panics listing the violations, if there were any.
    #[track_caller]
    pub fn assert_no_violations(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "the scripted model saw protocol violations:\n{}",
            violations.join("\n")
        );
    }

    /// Steps not played yet.
    pub fn remaining(&self) -> usize {
        self.shared.lock().script.len()
    }

    /// Waits until `n` requests have arrived and returns all received so
    /// far; panics after `timeout`, naming what did arrive. (A plain fn
    /// returning a future, so that the panic names the waiting test's line.)
    #[track_caller]
    pub fn wait_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Vec<Recorded>> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let mut arrived = self.shared.arrived.subscribe();
            let waited = tokio::time::timeout(timeout, arrived.wait_for(|count| *count >= n))
                .await
                .is_ok();
            let requests = self.requests();
            if !waited {
                let seen: Vec<_> = requests
                    .iter()
                    .map(|r| format!("{} {} → {}", r.method, r.path, r.status))
                    .collect();
                panic!(
                    "{caller}: {} of {n} model requests arrived within {timeout:?}: {seen:?}; violations: {:?}",
                    requests.len(),
                    self.violations()
                );
            }
            requests
        }
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------------------
// Request handling

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Anthropic,
    OpenAi,
}

/// Why a request was refused: an HTTP status and an error type/message,
/// rendered in the route's error format.
struct Rejection {
    status: u16,
    error_type: String,
    message: String,
}

impl Rejection {
    fn invalid(message: impl Into<String>) -> Rejection {
        Rejection {
            status: 400,
            error_type: "invalid_request_error".into(),
            message: message.into(),
        }
    }
}

/// A response worked out under the lock and sent after it.
struct Output {
    status: u16,
    headers: Vec<(&'static str, String)>,
    content_type: &'static str,
    chunks: Vec<Bytes>,
    /// Close the connection after the chunks instead of ending the body.
    cut: bool,
}

impl Output {
    fn json(status: u16, body: &Value) -> Output {
        Output {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            chunks: vec![Bytes::from(body.to_string())],
            cut: false,
        }
    }

    fn sse(events: Vec<String>) -> Output {
        Output {
            status: 200,
            headers: vec![("cache-control", "no-cache".into())],
            content_type: "text/event-stream; charset=utf-8",
            chunks: events.into_iter().map(Bytes::from).collect(),
            cut: false,
        }
    }

    fn cut(mut self) -> Output {
        self.cut = true;
        self
    }

    fn into_response(self) -> Response {
        let body = if self.chunks.len() == 1 && !self.cut {
            Body::from(self.chunks.into_iter().next().unwrap_or_default())
        } else {
            use futures::StreamExt;
            let chunks = futures::stream::iter(self.chunks).map(Ok::<_, std::io::Error>);
            if self.cut {
                // An error from the body makes the server drop the connection
                // without the chunked encoding's end: a stream cut mid-way.
                // It is held back one poll so that what came before is
                // flushed to the client first.
                let cut = futures::stream::once(async {
                    tokio::task::yield_now().await;
                    Err(std::io::Error::other("scripted cut"))
                });
                Body::from_stream(chunks.chain(cut))
            } else {
                Body::from_stream(chunks)
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let api = match (&method, path.as_str()) {
        (&Method::POST, "/v1/messages") => Some(Api::Anthropic),
        (&Method::POST, "/v1/chat/completions") => Some(Api::OpenAi),
        _ => None,
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mut state = shared.lock();
    let request_id = ScriptState::next_id(&mut state.next_request, "req_");
    let route = format!("{method} {path}");
    let (output, step) = answer(
        &mut state,
        api,
        &route,
        &headers,
        parsed.as_ref(),
        body.len(),
    );
    let output = add_request_id(output, api, &request_id);
    state.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().map(str::to_string),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned())),
        at: Instant::now(),
        step,
        status: output.status,
    });
    let count = state.requests.len();
    drop(state);
    shared.arrived.send_replace(count);
    output.into_response()
}

/// The id goes in a header, and in an Anthropic error body as the real API does.
fn add_request_id(mut output: Output, api: Option<Api>, id: &str) -> Output {
    if api == Some(Api::OpenAi) {
        output.headers.push(("x-request-id", id.to_string()));
        return output;
    }
    output.headers.push(("request-id", id.to_string()));
    if output.status >= 400 && output.chunks.len() == 1 {
        if let Ok(mut body) = serde_json::from_slice::<Value>(&output.chunks[0]) {
            if block_type(&body) == Some("error") {
                body["request_id"] = json!(id);
                output.chunks = vec![Bytes::from(body.to_string())];
            }
        }
    }
    output
}

/// Checks the request, then plays the next step. Returns the response and
/// the step's index.
fn answer(
    state: &mut ScriptState,
    api: Option<Api>,
    route: &str,
    headers: &HeaderMap,
    body: Option<&Value>,
    body_len: usize,
) -> (Output, Option<usize>) {
    let Some(api) = api else {
        let message =
            "not a model route: only POST /v1/messages and POST /v1/chat/completions are served";
        state.violations.push(format!("{route}: {message}"));
        let rejection = Rejection {
            status: 404,
            error_type: "not_found_error".into(),
            message: message.into(),
        };
        return (error_output(Api::Anthropic, &rejection), None);
    };
    let checked = match body {
        Some(body) if body.is_object() => match api {
            Api::Anthropic => check_anthropic(headers, body, &state.key)
                .and_then(|()| check_cut_results(body, &state.cut_tools)),
            Api::OpenAi => check_openai(headers, body, &state.key),
        },
        Some(_) => Err(Rejection::invalid("the body must be a JSON object")),
        None => Err(Rejection::invalid("the body is not valid JSON")),
    };
    if let Err(rejection) = checked {
        state
            .violations
            .push(format!("{route}: {}", rejection.message));
        return (error_output(api, &rejection), None);
    }
    let body = body.unwrap_or(&Value::Null);
    let Some(step) = state.script.pop_front() else {
        let message = format!(
            "the scripted model's script is exhausted: request {} found no step left after {} played",
            state.requests.len() + 1,
            state.played
        );
        state.violations.push(format!("{route}: {message}"));
        let rejection = Rejection {
            status: 500,
            error_type: "api_error".into(),
            message,
        };
        return (error_output(api, &rejection), None);
    };
    let index = state.played;
    state.played += 1;
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("scripted-model")
        .to_string();
    let turn = Turn {
        model,
        stream,
        input_tokens: (body_len as u64 / 4).max(1),
        include_usage: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true),
    };
    let output = match step {
        Step::Reply {
            content,
            stop_reason,
        } => match api {
            Api::Anthropic => anthropic_reply(state, &turn, &content, &stop_reason),
            Api::OpenAi => openai_reply(state, &turn, &content, &stop_reason),
        },
        Step::Fault(fault) => match api {
            Api::Anthropic => anthropic_fault(state, &turn, &fault),
            Api::OpenAi => openai_fault(state, &turn, &fault),
        },
    };
    (output, Some(index))
}

/// What a played step needs to know about its request.
struct Turn {
    model: String,
    stream: bool,
    input_tokens: u64,
    include_usage: bool,
}

fn error_output(api: Api, rejection: &Rejection) -> Output {
    match api {
        Api::Anthropic => Output::json(
            rejection.status,
            &json!({
                "type": "error",
                "error": {"type": rejection.error_type, "message": rejection.message},
            }),
        ),
        Api::OpenAi => {
            let code = match (rejection.status, rejection.error_type.as_str()) {
                (401, _) => json!("invalid_api_key"),
                (429, _) => json!("rate_limit_exceeded"),
                _ => Value::Null,
            };
            Output::json(
                rejection.status,
                &json!({"error": {
                    "message": rejection.message,
                    "type": rejection.error_type,
                    "param": null,
                    "code": code,
                }}),
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Checks

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn non_empty_str(value: Option<&Value>) -> bool {
    value.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

fn positive_int(value: Option<&Value>) -> bool {
    value.and_then(Value::as_u64).is_some_and(|n| n >= 1)
}

fn block_type(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

/// A message's content as blocks; string content is one text block.
fn blocks(message: &Value) -> &[Value] {
    message
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn check_anthropic(headers: &HeaderMap, body: &Value, key: &str) -> Result<(), Rejection> {
    let unauthorized = |message: &str| Rejection {
        status: 401,
        error_type: "authentication_error".into(),
        message: message.into(),
    };
    match header(headers, "x-api-key") {
        None => return Err(unauthorized("x-api-key header is required")),
        Some(k) if k != key => return Err(unauthorized("invalid x-api-key")),
        Some(_) => {}
    }
    match header(headers, "anthropic-version") {
        None => return Err(Rejection::invalid("anthropic-version: header is required")),
        Some(v) if v != ANTHROPIC_VERSION => {
            return Err(Rejection::invalid(format!(
                "anthropic-version: {v:?} is not a valid version (expected {ANTHROPIC_VERSION})"
            )))
        }
        Some(_) => {}
    }
    if !non_empty_str(body.get("model")) {
        return Err(Rejection::invalid("model: Field required"));
    }
    match body.get("max_tokens") {
        None => return Err(Rejection::invalid("max_tokens: Field required")),
        Some(v) if !positive_int(Some(v)) => {
            return Err(Rejection::invalid("max_tokens: must be a positive integer"))
        }
        Some(_) => {}
    }
    if body.get("stream").is_some_and(|s| !s.is_boolean()) {
        return Err(Rejection::invalid("stream: must be a boolean"));
    }
    if let Some(system) = body.get("system") {
        let ok = system.is_string()
            || system.as_array().is_some_and(|blocks| {
                blocks
                    .iter()
                    .all(|b| block_type(b) == Some("text") && b["text"].is_string())
            });
        if !ok {
            return Err(Rejection::invalid(
                "system: must be a string or a list of text blocks",
            ));
        }
    }
    check_anthropic_messages(body)?;
    check_anthropic_tools(headers, body)?;
    let breakpoints = count_cache_breakpoints(body);
    if breakpoints > MAX_CACHE_BREAKPOINTS {
        return Err(Rejection::invalid(format!(
            "A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {breakpoints}."
        )));
    }
    Ok(())
}

fn check_anthropic_messages(body: &Value) -> Result<(), Rejection> {
    let messages = match body.get("messages") {
        None => return Err(Rejection::invalid("messages: Field required")),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(Rejection::invalid(
                "messages: at least one message is required",
            ))
        }
        Some(Value::Array(m)) => m,
        Some(_) => return Err(Rejection::invalid("messages: must be a list")),
    };
    let mut seen_tool_ids = HashSet::new();
    // tool_use ids of the previous assistant message, owed a tool_result.
    let mut pending: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        match role {
            Some("user" | "assistant") => {}
            _ => {
                return Err(Rejection::invalid(format!(
                    "messages.{i}.role: must be \"user\" or \"assistant\""
                )))
            }
        }
        if role != Some(expected) {
            return Err(Rejection::invalid(if i == 0 {
                "messages: first message must use the \"user\" role".to_string()
            } else {
                format!(
                    "messages.{i}: roles must alternate between \"user\" and \"assistant\", but found multiple \"{}\" roles in a row",
                    role.unwrap_or_default()
                )
            }));
        }
        match message.get("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) => {
                if let Some(j) = blocks.iter().position(|b| block_type(b).is_none()) {
                    return Err(Rejection::invalid(format!(
                        "messages.{i}.content.{j}: a content block must be an object with a `type`"
                    )));
                }
            }
            _ => {
                return Err(Rejection::invalid(format!(
                    "messages.{i}.content: must be a string or a list of content blocks"
                )))
            }
        }
        if role == Some("user") {
            let mut answered = HashSet::new();
            let mut other_before = false;
            for (j, block) in blocks(message).iter().enumerate() {
                if block_type(block) != Some("tool_result") {
                    other_before = true;
                    continue;
                }
                if other_before {
                    return Err(Rejection::invalid(format!(
                        "messages.{i}.content.{j}: tool_result blocks must come before any other content in a user message"
                    )));
                }
                let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
                    return Err(Rejection::invalid(format!(
                        "messages.{i}.content.{j}.tool_use_id: Field required"
                    )));
                };
                if !pending.iter().any(|p| p == id) {
                    return Err(Rejection::invalid(format!(
                        "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                    )));
                }
                if !answered.insert(id.to_string()) {
                    return Err(Rejection::invalid(format!(
                        "messages.{i}.content.{j}: more than one tool_result for tool_use id {id}"
                    )));
                }
            }
            let missing: Vec<&str> = pending
                .iter()
                .filter(|id| !answered.contains(*id))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(Rejection::invalid(format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                    missing.join(", ")
                )));
            }
            pending.clear();
        } else {
            for (j, block) in blocks(message).iter().enumerate() {
                match block_type(block) {
                    Some("tool_use") => {
                        let Some(id) = block.get("id").and_then(Value::as_str) else {
                            return Err(Rejection::invalid(format!(
                                "messages.{i}.content.{j}.id: Field required"
                            )));
                        };
                        if !block.get("name").is_some_and(Value::is_string)
                            || !block.get("input").is_some_and(Value::is_object)
                        {
                            return Err(Rejection::invalid(format!(
                                "messages.{i}.content.{j}: a tool_use block needs a string `name` and an object `input`"
                            )));
                        }
                        if !seen_tool_ids.insert(id.to_string()) {
                            return Err(Rejection::invalid(format!(
                                "messages.{i}.content.{j}: `tool_use` ids must be unique: {id}"
                            )));
                        }
                        pending.push(id.to_string());
                    }
                    Some("tool_result") => {
                        return Err(Rejection::invalid(format!(
                            "messages.{i}.content.{j}: tool_result blocks belong in user messages"
                        )))
                    }
                    _ => {}
                }
            }
        }
    }
    if !pending.is_empty() {
        return Err(Rejection::invalid(format!(
            "messages.{}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
            messages.len() - 1,
            pending.join(", ")
        )));
    }
    Ok(())
}

/// A tool call [`Fault::CutAtMaxTokens`] cut cannot have run: its result
/// must say so with `is_error` (the real API does not check this; a loop
/// that runs or ignores a cut call is the bug this catches).
fn check_cut_results(body: &Value, cut: &HashSet<String>) -> Result<(), Rejection> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for (i, message) in messages.iter().enumerate() {
        for (j, block) in blocks(message).iter().enumerate() {
            if block_type(block) != Some("tool_result") {
                continue;
            }
            let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
                continue;
            };
            if cut.contains(id) && block.get("is_error") != Some(&Value::Bool(true)) {
                return Err(Rejection::invalid(format!(
                    "messages.{i}.content.{j}: the tool_use {id} was cut at max_tokens (scripted) and cannot have run, but its tool_result is not is_error"
                )));
            }
        }
    }
    Ok(())
}

/// Anthropic-defined tools this server knows: type, required name, beta
/// header needed (if any), whether it is a computer (display size needed).
const DEFINED_TOOLS: &[(&str, &str, Option<&str>, bool)] = &[
    (
        "computer_20241022",
        "computer",
        Some("computer-use-2024-10-22"),
        true,
    ),
    (
        "computer_20250124",
        "computer",
        Some("computer-use-2025-01-24"),
        true,
    ),
    (
        "computer_20251124",
        "computer",
        Some("computer-use-2025-11-24"),
        true,
    ),
    (
        "bash_20241022",
        "bash",
        Some("computer-use-2024-10-22"),
        false,
    ),
    ("bash_20250124", "bash", None, false),
    (
        "text_editor_20241022",
        "str_replace_editor",
        Some("computer-use-2024-10-22"),
        false,
    ),
    ("text_editor_20250124", "str_replace_editor", None, false),
    (
        "text_editor_20250429",
        "str_replace_based_edit_tool",
        None,
        false,
    ),
    (
        "text_editor_20250728",
        "str_replace_based_edit_tool",
        None,
        false,
    ),
];

fn check_anthropic_tools(headers: &HeaderMap, body: &Value) -> Result<(), Rejection> {
    let Some(tools) = body.get("tools") else {
        return Ok(());
    };
    let Some(tools) = tools.as_array() else {
        return Err(Rejection::invalid("tools: must be a list"));
    };
    let betas: HashSet<&str> = headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    let mut names = HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            return Err(Rejection::invalid(format!(
                "tools.{i}.name: Field required"
            )));
        };
        if !names.insert(name) {
            return Err(Rejection::invalid(format!(
                "tools: Tool names must be unique: {name}"
            )));
        }
        let kind = match tool.get("type") {
            None => None,
            Some(Value::String(kind)) => Some(kind.as_str()),
            Some(_) => {
                return Err(Rejection::invalid(format!(
                    "tools.{i}.type: must be a string"
                )))
            }
        };
        let kind = match kind {
            None | Some("custom") => {
                if !tool.get("input_schema").is_some_and(Value::is_object) {
                    return Err(Rejection::invalid(format!(
                        "tools.{i}.custom.input_schema: Field required"
                    )));
                }
                continue;
            }
            Some(kind) => kind,
        };
        let Some(&(_, required_name, beta, computer)) =
            DEFINED_TOOLS.iter().find(|(t, ..)| *t == kind)
        else {
            if ["computer_", "bash_", "text_editor_"]
                .iter()
                .any(|p| kind.starts_with(p))
            {
                return Err(Rejection::invalid(format!(
                    "tools.{i}.type: unknown tool type {kind:?}"
                )));
            }
            // Other server tools (web search and the like) are not checked.
            continue;
        };
        if name != required_name {
            return Err(Rejection::invalid(format!(
                "tools.{i}.name: a {kind} tool must be named {required_name:?}, not {name:?}"
            )));
        }
        if let Some(beta) = beta {
            if !betas.contains(beta) {
                return Err(Rejection::invalid(format!(
                    "tools.{i}: the {kind} tool requires the anthropic-beta header to contain {beta:?} (got {:?})",
                    header(headers, "anthropic-beta").unwrap_or("")
                )));
            }
        }
        if computer {
            for field in ["display_width_px", "display_height_px"] {
                if !positive_int(tool.get(field)) {
                    return Err(Rejection::invalid(format!(
                        "tools.{i}.{kind}.{field}: Field required (a positive integer)"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Breakpoints on tools, system blocks, message content blocks and the
/// blocks inside tool results.
fn count_cache_breakpoints(body: &Value) -> usize {
    let marked = |v: &Value| v.get("cache_control").is_some_and(|c| !c.is_null());
    let count = |list: Option<&Value>| {
        list.and_then(Value::as_array)
            .map(|items| items.iter().filter(|v| marked(v)).count())
            .unwrap_or(0)
    };
    let mut n = count(body.get("tools")) + count(body.get("system"));
    for message in body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        n += count(message.get("content"));
        for block in blocks(message) {
            if block_type(block) == Some("tool_result") {
                n += count(block.get("content"));
            }
        }
    }
    n
}

fn check_openai(headers: &HeaderMap, body: &Value, key: &str) -> Result<(), Rejection> {
    let expected = format!("Bearer {key}");
    if header(headers, "authorization") != Some(expected.as_str()) {
        return Err(Rejection {
            status: 401,
            error_type: "invalid_request_error".into(),
            message: "Incorrect API key provided (expected Authorization: Bearer <key>)".into(),
        });
    }
    if !non_empty_str(body.get("model")) {
        return Err(Rejection::invalid("model: Field required"));
    }
    if body.get("stream").is_some_and(|s| !s.is_boolean()) {
        return Err(Rejection::invalid("stream: must be a boolean"));
    }
    let messages = match body.get("messages").and_then(Value::as_array) {
        Some(m) if !m.is_empty() => m,
        _ => return Err(Rejection::invalid("messages: must be a non-empty list")),
    };
    if let Some(tools) = body.get("tools") {
        let ok = tools.as_array().is_some_and(|tools| {
            tools.iter().all(|t| {
                t.get("type").and_then(Value::as_str) == Some("function")
                    && t.pointer("/function/name").is_some_and(Value::is_string)
            })
        });
        if !ok {
            return Err(Rejection::invalid(
                "tools: must be a list of {\"type\": \"function\", \"function\": {\"name\", ...}}",
            ));
        }
    }
    let owed = |pending: &[String]| {
        Rejection::invalid(format!(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
            pending.join(", ")
        ))
    };
    // tool_call ids of the last assistant message not answered yet.
    let mut pending: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        let content_ok = match message.get("content") {
            None | Some(Value::Null | Value::String(_)) => true,
            Some(Value::Array(parts)) => parts.iter().all(|p| block_type(p).is_some()),
            Some(_) => false,
        };
        if !content_ok {
            return Err(Rejection::invalid(format!(
                "messages[{i}].content: must be a string or a list of typed parts"
            )));
        }
        match role {
            Some("tool") => {
                let Some(id) = message.get("tool_call_id").and_then(Value::as_str) else {
                    return Err(Rejection::invalid(format!(
                        "messages[{i}].tool_call_id: Field required"
                    )));
                };
                let Some(at) = pending.iter().position(|p| p == id) else {
                    return Err(Rejection::invalid(format!(
                        "messages[{i}]: messages with role 'tool' must be a response to a preceding message with 'tool_calls' (no pending tool_call_id {id:?})"
                    )));
                };
                pending.remove(at);
                continue;
            }
            Some("system" | "developer" | "user" | "assistant") => {}
            _ => {
                return Err(Rejection::invalid(format!(
                    "messages[{i}].role: must be one of system, developer, user, assistant, tool"
                )))
            }
        }
        if !pending.is_empty() {
            return Err(owed(&pending));
        }
        let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) else {
            continue;
        };
        let Some(calls) = calls.as_array().filter(|_| role == Some("assistant")) else {
            return Err(Rejection::invalid(format!(
                "messages[{i}].tool_calls: only an assistant message carries a list of tool_calls"
            )));
        };
        for (j, call) in calls.iter().enumerate() {
            let Some(id) = call.get("id").and_then(Value::as_str) else {
                return Err(Rejection::invalid(format!(
                    "messages[{i}].tool_calls[{j}].id: Field required"
                )));
            };
            if call.get("type").and_then(Value::as_str) != Some("function") {
                return Err(Rejection::invalid(format!(
                    "messages[{i}].tool_calls[{j}].type: must be \"function\""
                )));
            }
            if !call.pointer("/function/name").is_some_and(Value::is_string) {
                return Err(Rejection::invalid(format!(
                    "messages[{i}].tool_calls[{j}].function.name: Field required"
                )));
            }
            let Some(arguments) = call.pointer("/function/arguments").and_then(Value::as_str)
            else {
                return Err(Rejection::invalid(format!(
                    "messages[{i}].tool_calls[{j}].function.arguments: must be a string"
                )));
            };
            if let Err(e) = serde_json::from_str::<Value>(arguments) {
                return Err(Rejection::invalid(format!(
                    "messages[{i}].tool_calls[{j}].function.arguments: not valid JSON ({e})"
                )));
            }
            pending.push(id.to_string());
        }
    }
    if !pending.is_empty() {
        return Err(owed(&pending));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Anthropic answers

/// Splits `s` into at most `parts` non-empty pieces on char boundaries
/// (one empty piece for an empty string).
fn split(s: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let parts = parts.clamp(1, chars.len().max(1));
    let mut pieces = Vec::with_capacity(parts);
    for p in 0..parts {
        let from = chars.len() * p / parts;
        let to = chars.len() * (p + 1) / parts;
        pieces.push(chars[from..to].iter().collect());
    }
    pieces
}

/// How many pieces a streamed text comes in: at least `least`, and one
/// more per 16 characters of a longer text (up to 64), as a real model's
/// tokens trickle in.
fn pieces(s: &str, least: usize) -> usize {
    (s.chars().count() / 16).clamp(least, 64)
}

fn sse(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// The scripted content with what the real API always sends filled in.
fn fill_content(state: &mut ScriptState, content: &[Value]) -> Vec<Value> {
    content
        .iter()
        .map(|block| {
            let mut block = block.clone();
            match block_type(&block) {
                Some("tool_use") => {
                    if !block.get("id").is_some_and(Value::is_string) {
                        block["id"] = json!(ScriptState::next_id(&mut state.next_tool, "toolu_"));
                    }
                    if block.get("input").is_none() {
                        block["input"] = json!({});
                    }
                }
                Some("thinking") if !block.get("signature").is_some_and(Value::is_string) => {
                    block["signature"] = json!("c2NyaXB0ZWQtc2lnbmF0dXJl");
                }
                _ => {}
            }
            block
        })
        .collect()
}

fn output_tokens(content: &[Value]) -> u64 {
    (Value::from(content.to_vec()).to_string().len() as u64 / 4).max(1)
}

fn anthropic_reply(
    state: &mut ScriptState,
    turn: &Turn,
    content: &[Value],
    stop_reason: &str,
) -> Output {
    let content = fill_content(state, content);
    anthropic_message(state, turn, content, stop_reason, false)
}

/// `content` (filled in) as one message or as a stream; with `cut`, its
/// last block (a tool_use) stops half-way through its input, as a reply
/// that hit `max_tokens` there does.
fn anthropic_message(
    state: &mut ScriptState,
    turn: &Turn,
    mut content: Vec<Value>,
    stop_reason: &str,
    cut: bool,
) -> Output {
    let id = ScriptState::next_id(&mut state.next_message, "msg_");
    let output_tokens = output_tokens(&content);
    if !turn.stream {
        if let Some(last) = content.last_mut().filter(|_| cut) {
            last["input"] = json!({});
        }
        return Output::json(
            200,
            &json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": turn.model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": turn.input_tokens,
                    "output_tokens": output_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "service_tier": "standard",
                },
            }),
        );
    }
    let mut events = vec![message_start(&id, turn)];
    for (index, block) in content.iter().enumerate() {
        if cut && index + 1 == content.len() {
            events.extend(cut_tool_events(index, block));
        } else {
            events.extend(block_events(index, block));
        }
    }
    // After the first block's start, as the real API tends to.
    events.insert(if content.is_empty() { 1 } else { 2 }, ping());
    events.push(sse(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens},
        }),
    ));
    events.push(sse("message_stop", &json!({"type": "message_stop"})));
    Output::sse(events)
}

fn message_start(id: &str, turn: &Turn) -> String {
    sse(
        "message_start",
        &json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": turn.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": turn.input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1,
                    "service_tier": "standard",
                },
            },
        }),
    )
}

fn ping() -> String {
    sse("ping", &json!({"type": "ping"}))
}

fn block_start(index: usize, block: Value) -> String {
    sse(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index, "content_block": block}),
    )
}

fn block_delta(index: usize, delta: Value) -> String {
    sse(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn block_stop(index: usize) -> String {
    sse(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    )
}

fn text_deltas(index: usize, text: &str) -> Vec<String> {
    split(text, pieces(text, 3))
        .into_iter()
        .map(|piece| block_delta(index, json!({"type": "text_delta", "text": piece})))
        .collect()
}

/// start, deltas and stop of one content block.
fn block_events(index: usize, block: &Value) -> Vec<String> {
    let str_field = |name: &str| block.get(name).and_then(Value::as_str).unwrap_or("");
    let mut events = Vec::new();
    match block_type(block) {
        Some("text") => {
            events.push(block_start(index, json!({"type": "text", "text": ""})));
            events.extend(text_deltas(index, str_field("text")));
        }
        Some("tool_use") => {
            events.push(block_start(
                index,
                json!({
                    "type": "tool_use",
                    "id": str_field("id"),
                    "name": str_field("name"),
                    "input": {},
                }),
            ));
            let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
            let pieces = std::iter::once(String::new()).chain(split(&input.to_string(), 3));
            for piece in pieces {
                events.push(block_delta(
                    index,
                    json!({"type": "input_json_delta", "partial_json": piece}),
                ));
            }
        }
        Some("thinking") => {
            events.push(block_start(
                index,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
            ));
            let thinking = str_field("thinking");
            for piece in split(thinking, pieces(thinking, 2)) {
                events.push(block_delta(
                    index,
                    json!({"type": "thinking_delta", "thinking": piece}),
                ));
            }
            events.push(block_delta(
                index,
                json!({"type": "signature_delta", "signature": str_field("signature")}),
            ));
        }
        // redacted_thinking and anything else arrive whole in the start.
        _ => events.push(block_start(index, block.clone())),
    }
    events.push(block_stop(index));
    events
}

/// The first half of `s` (at least one char): a strict prefix of a JSON
/// object's text, so never JSON itself.
fn first_half(s: &str) -> String {
    let chars = s.chars().count();
    s.chars().take((chars / 2).max(1)).collect()
}

/// start, the first half of the input's JSON, and stop of a tool_use block
/// cut at `max_tokens`.
fn cut_tool_events(index: usize, block: &Value) -> Vec<String> {
    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
    vec![
        block_start(
            index,
            json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
        ),
        block_delta(
            index,
            json!({"type": "input_json_delta", "partial_json": ""}),
        ),
        block_delta(
            index,
            json!({"type": "input_json_delta", "partial_json": first_half(&input.to_string())}),
        ),
        block_stop(index),
    ]
}

/// Whether `step` can follow [`Fault::CutAtMaxTokens`]: a turn with a tool call to cut.
fn cuttable(step: &Step) -> bool {
    match step {
        Step::Reply { content, .. } => content.iter().any(|b| block_type(b) == Some("tool_use")),
        Step::Fault(_) => false,
    }
}

/// The turn [`Fault::CutAtMaxTokens`] cuts: the next step (used up too),
/// up to its last tool call. A script without one is a violation, answered
/// with a 500.
fn cut_turn(state: &mut ScriptState, api: Api) -> Result<Vec<Value>, Output> {
    match state.script.pop_front() {
        Some(Step::Reply { mut content, .. })
            if content.iter().any(|b| block_type(b) == Some("tool_use")) =>
        {
            state.played += 1;
            let last = content
                .iter()
                .rposition(|b| block_type(b) == Some("tool_use"))
                .unwrap_or(0);
            content.truncate(last + 1);
            Ok(content)
        }
        other => {
            if let Some(step) = other {
                state.script.push_front(step);
            }
            let route = match api {
                Api::Anthropic => "POST /v1/messages",
                Api::OpenAi => "POST /v1/chat/completions",
            };
            let message = "Fault::CutAtMaxTokens needs a next step with a tool_use to cut";
            state.violations.push(format!("{route}: {message}"));
            Err(error_output(
                api,
                &Rejection {
                    status: 500,
                    error_type: "api_error".into(),
                    message: message.into(),
                },
            ))
        }
    }
}

fn anthropic_fault(state: &mut ScriptState, turn: &Turn, fault: &Fault) -> Output {
    let error = |status: u16, error_type: &str, message: &str| {
        error_output(
            Api::Anthropic,
            &Rejection {
                status,
                error_type: error_type.into(),
                message: message.into(),
            },
        )
    };
    match fault {
        Fault::RateLimited { retry_after_s } => {
            let mut output = error(429, "rate_limit_error", "rate limited (scripted)");
            output.headers.extend(retry_headers(*retry_after_s));
            output
        }
        Fault::Overloaded => error(529, "overloaded_error", "Overloaded"),
        Fault::ServerError => error(500, "api_error", "Internal server error (scripted)"),
        Fault::Status {
            status,
            error_type,
            message,
        } => error(*status, error_type, message),
        Fault::CutAtMaxTokens => match cut_turn(state, Api::Anthropic) {
            Ok(content) => {
                let content = fill_content(state, &content);
                if let Some(id) = content.last().and_then(|b| b["id"].as_str()) {
                    state.cut_tools.insert(id.to_string());
                }
                anthropic_message(state, turn, content, "max_tokens", true)
            }
            Err(output) => output,
        },
        Fault::StreamError if !turn.stream => error(529, "overloaded_error", "Overloaded"),
        Fault::StreamError => {
            let id = ScriptState::next_id(&mut state.next_message, "msg_");
            let events = vec![
                message_start(&id, turn),
                block_start(0, json!({"type": "text", "text": ""})),
                ping(),
                block_delta(0, json!({"type": "text_delta", "text": "Let me"})),
                sse(
                    "error",
                    &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                ),
            ];
            Output::sse(events)
        }
        Fault::CutStream => {
            let id = ScriptState::next_id(&mut state.next_message, "msg_");
            if !turn.stream {
                let body = json!({
                    "id": id, "type": "message", "role": "assistant", "model": turn.model,
                    "content": [{"type": "text", "text": "This answer never arrives whole."}],
                    "stop_reason": "end_turn", "stop_sequence": null,
                    "usage": {"input_tokens": turn.input_tokens, "output_tokens": 9},
                });
                return truncated(body);
            }
            let events = vec![
                message_start(&id, turn),
                block_start(0, json!({"type": "text", "text": ""})),
                ping(),
                block_delta(0, json!({"type": "text_delta", "text": "I will start by"})),
            ];
            Output::sse(events).cut()
        }
        Fault::MalformedJson => {
            let id = ScriptState::next_id(&mut state.next_message, "msg_");
            if !turn.stream {
                let mut output = Output::json(200, &Value::Null);
                output.chunks = vec![Bytes::from(format!(
                    "{{\"id\": \"{id}\", \"type\": \"message\", \"content\": [{{\"type\": \"text\" \"text\": }}]"
                ))];
                return output;
            }
            // A lenient parser that skips the broken line sees an empty,
            // finished message: the rest of the stream is valid.
            Output::sse(vec![
                message_start(&id, turn),
                "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\n\n".to_string(),
                sse(
                    "message_delta",
                    &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 1}}),
                ),
                sse("message_stop", &json!({"type": "message_stop"})),
            ])
        }
    }
}

fn retry_headers(retry_after_s: f64) -> Vec<(&'static str, String)> {
    vec![
        ("retry-after", format!("{retry_after_s}")),
        (
            "retry-after-ms",
            format!("{}", (retry_after_s * 1000.0).round().max(0.0) as u64),
        ),
    ]
}

/// A 200 JSON body cut half-way by a dropped connection.
fn truncated(body: Value) -> Output {
    let text = body.to_string().into_bytes();
    let half = text.len() / 2;
    let mut output = Output::json(200, &Value::Null);
    output.chunks = vec![Bytes::copy_from_slice(&text[..half])];
    output.cut()
}

// ---------------------------------------------------------------------------
// OpenAI answers

struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The scripted turn as chat-completion text and tool calls.
fn openai_turn(state: &mut ScriptState, content: &[Value]) -> (Option<String>, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in content {
        match block_type(block) {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") => calls.push(ToolCall {
                id: match block.get("id").and_then(Value::as_str) {
                    Some(id) => id.to_string(),
                    None => ScriptState::next_id(&mut state.next_tool, "call_"),
                },
                name: block["name"].as_str().unwrap_or("").to_string(),
                arguments: block
                    .get("input")
                    .cloned()
                    .unwrap_or_else(|| json!({}))
                    .to_string(),
            }),
            _ => {}
        }
    }
    ((!text.is_empty()).then_some(text), calls)
}

fn chunk(id: &str, turn: &Turn, created: u64, delta: Value, finish: Option<&str>) -> String {
    let data = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": turn.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    format!("data: {data}\n\n")
}

const DONE: &str = "data: [DONE]\n\n";

fn openai_reply(
    state: &mut ScriptState,
    turn: &Turn,
    content: &[Value],
    stop_reason: &str,
) -> Output {
    let (text, calls) = openai_turn(state, content);
    let id = ScriptState::next_id(&mut state.next_message, "chatcmpl-");
    let reply = OpenAiTurn {
        text,
        calls,
        finish: finish_reason(stop_reason),
        completion_tokens: output_tokens(content),
    };
    openai_output(turn, &id, unix_now(), reply)
}

/// What one chat completion says.
struct OpenAiTurn {
    text: Option<String>,
    calls: Vec<ToolCall>,
    finish: &'static str,
    completion_tokens: u64,
}

/// A turn as one completion (`id`) or as a stream of chunks.
fn openai_output(turn: &Turn, id: &str, created: u64, reply: OpenAiTurn) -> Output {
    let OpenAiTurn {
        text,
        calls,
        finish,
        completion_tokens,
    } = reply;
    let usage = json!({
        "prompt_tokens": turn.input_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": turn.input_tokens + completion_tokens,
    });
    if !turn.stream {
        let mut message = json!({"role": "assistant", "content": text, "refusal": null});
        if !calls.is_empty() {
            message["tool_calls"] = calls
                .iter()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    })
                })
                .collect();
        }
        return Output::json(
            200,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": turn.model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                "usage": usage,
            }),
        );
    }
    let mut events = vec![chunk(
        id,
        turn,
        created,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    if let Some(text) = text {
        for piece in split(&text, pieces(&text, 3)) {
            events.push(chunk(id, turn, created, json!({"content": piece}), None));
        }
    }
    for (index, call) in calls.iter().enumerate() {
        events.push(chunk(
            id,
            turn,
            created,
            json!({"tool_calls": [{
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }]}),
            None,
        ));
        for piece in split(&call.arguments, 3) {
            events.push(chunk(
                id,
                turn,
                created,
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    events.push(chunk(id, turn, created, json!({}), Some(finish)));
    if turn.include_usage {
        let data = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": turn.model,
            "choices": [],
            "usage": usage,
        });
        events.push(format!("data: {data}\n\n"));
    }
    events.push(DONE.to_string());
    Output::sse(events)
}

fn openai_fault(state: &mut ScriptState, turn: &Turn, fault: &Fault) -> Output {
    let error = |status: u16, error_type: &str, message: &str| {
        error_output(
            Api::OpenAi,
            &Rejection {
                status,
                error_type: error_type.into(),
                message: message.into(),
            },
        )
    };
    let overloaded = || error(503, "server_error", "The server is overloaded (scripted)");
    let id = ScriptState::next_id(&mut state.next_message, "chatcmpl-");
    let created = unix_now();
    match fault {
        Fault::RateLimited { retry_after_s } => {
            let mut output = error(429, "requests", "Rate limit reached (scripted)");
            output.headers.extend(retry_headers(*retry_after_s));
            output
        }
        Fault::Overloaded => overloaded(),
        Fault::ServerError => error(500, "server_error", "Internal server error (scripted)"),
        Fault::Status {
            status,
            error_type,
            message,
        } => error(*status, error_type, message),
        Fault::StreamError if !turn.stream => overloaded(),
        Fault::StreamError => Output::sse(vec![
            chunk(&id, turn, created, json!({"role": "assistant", "content": ""}), None),
            chunk(&id, turn, created, json!({"content": "Let me"}), None),
            format!(
                "data: {}\n\n",
                json!({"error": {"message": "The server is overloaded (scripted)", "type": "server_error", "param": null, "code": null}})
            ),
        ]),
        Fault::CutStream if !turn.stream => truncated(json!({
            "id": id, "object": "chat.completion", "created": created, "model": turn.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "This answer never arrives whole."}, "finish_reason": "stop"}],
        })),
        Fault::CutStream => Output::sse(vec![
            chunk(&id, turn, created, json!({"role": "assistant", "content": ""}), None),
            chunk(&id, turn, created, json!({"content": "I will start by"}), None),
        ])
        .cut(),
        Fault::MalformedJson if !turn.stream => {
            let mut output = Output::json(200, &Value::Null);
            output.chunks = vec![Bytes::from(format!(
                "{{\"id\": \"{id}\", \"object\": \"chat.completion\", \"choices\": [{{\"index\": 0 \"message\": }}]"
            ))];
            output
        }
        Fault::MalformedJson => Output::sse(vec![
            chunk(&id, turn, created, json!({"role": "assistant", "content": ""}), None),
            format!("data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":\n\n"),
            chunk(&id, turn, created, json!({}), Some("stop")),
            DONE.to_string(),
        ]),
        Fault::CutAtMaxTokens => match cut_turn(state, Api::OpenAi) {
            Ok(content) => {
                let (text, mut calls) = openai_turn(state, &content);
                if let Some(last) = calls.last_mut() {
                    last.arguments = first_half(&last.arguments);
                    state.cut_tools.insert(last.id.clone());
                }
                let reply = OpenAiTurn {
                    text,
                    calls,
                    finish: "length",
                    completion_tokens: output_tokens(&content),
                };
                openai_output(turn, &id, created, reply)
            }
            Err(output) => output,
        },
    }
}
