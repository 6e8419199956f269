//! OpenAI-compatible chat completions (`POST {base}/v1/chat/completions`),
//! as OpenAI, vLLM, Ollama and llama.cpp's server speak them: the same
//! computer, bash and editor tools described as functions with explicit
//! JSON schemas, screenshots sent as image parts of a user message after
//! the tool messages (tool messages carry text only), streamed or not,
//! with the same retries as the Anthropic provider.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::retry::{server_delay, should_retry};
use super::sse::{SseEvent, SseStream};
use super::{
    AttemptError, DeltaKind, Model, ModelError, ModelReply, ModelRequest, Pieces, RetryPolicy,
    MAX_BLOCKS,
};
use crate::tools::{ToolSet, EDITOR};
use crate::wire::{
    Block, ImageSource, KnownBlock, Role, StopReason, ToolResultContent, Turn, Usage,
};

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com";

#[derive(Clone)]
pub struct OpenAiConfig {
    pub base_url: String,
    /// `None` for local servers that take no key.
    pub api_key: Option<String>,
    pub model: String,
    pub max_tokens: u32,
    pub stream: bool,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

pub struct OpenAi {
    config: OpenAiConfig,
    http: reqwest::Client,
}

/// The chat completions URL under `base` (with or without a trailing `/v1`).
fn endpoint(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/chat/completions")
    } else {
        format!("{base}/v1/chat/completions")
    }
}

/// The tools as functions with explicit schemas (local models do not know
/// Anthropic's built-in tools).
pub fn functions(tools: &ToolSet) -> Vec<Value> {
    let (w, h) = (tools.display_width, tools.display_height);
    let mut actions = vec![
        "key",
        "type",
        "mouse_move",
        "left_click",
        "left_click_drag",
        "right_click",
        "middle_click",
        "double_click",
        "triple_click",
        "left_mouse_down",
        "left_mouse_up",
        "scroll",
        "hold_key",
        "wait",
        "screenshot",
        "cursor_position",
    ];
    if tools.computer == crate::tools::ComputerTool::V20251124 {
        actions.push("zoom");
    }
    let point = |what: &str| {
        json!({"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2,
               "description": format!("{what}: [x, y] in pixels of the most recent screenshot, origin top-left")})
    };
    vec![
        json!({"type": "function", "function": {
            "name": "computer",
            "description": format!("Use the mouse and keyboard of a {w}x{h} Linux desktop and take screenshots. \
                Every action except screenshot and cursor_position returns a screenshot after the screen settles. \
                Keys use xdotool names (Return, ctrl+l, alt+Tab). Do not use PageUp/PageDown to scroll."),
            "parameters": {"type": "object", "properties": {
                "action": {"type": "string", "enum": actions},
                "coordinate": point("where to act"),
                "start_coordinate": point("where a drag starts"),
                "text": {"type": "string", "description": "text to type, key(s) to press, or modifiers to hold during a click or scroll"},
                "scroll_direction": {"type": "string", "enum": ["up", "down", "left", "right"]},
                "scroll_amount": {"type": "integer", "minimum": 1},
                "duration": {"type": "number", "minimum": 0, "maximum": 60, "description": "seconds, for wait and hold_key"},
                "region": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 4, "maxItems": 4,
                           "description": "zoom: [x0, y0, x1, y1]"}
            }, "required": ["action"]}
        }}),
        json!({"type": "function", "function": {
            "name": "bash",
            "description": "Run a command in a persistent bash shell on the computer (state is kept between calls). \
                Set restart to true to start a new shell.",
            "parameters": {"type": "object", "properties": {
                "command": {"type": "string"},
                "restart": {"type": "boolean"}
            }}
        }}),
        json!({"type": "function", "function": {
            "name": EDITOR,
            "description": "View, create and edit files on the computer. Paths are absolute. view shows a file with \
                line numbers (or a directory two levels deep); str_replace replaces one exact occurrence of old_str; \
                insert adds insert_text after line insert_line (0 = top).",
            "parameters": {"type": "object", "properties": {
                "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert"]},
                "path": {"type": "string"},
                "file_text": {"type": "string"},
                "old_str": {"type": "string"},
                "new_str": {"type": "string"},
                "insert_line": {"type": "integer", "minimum": 0},
                "insert_text": {"type": "string"},
                "view_range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
            }, "required": ["command", "path"]}
        }}),
    ]
}

fn image_part(source: &ImageSource) -> Option<Value> {
    match source {
        ImageSource::Base64 { media_type, data } => Some(json!({
            "type": "image_url",
            "image_url": {"url": format!("data:{media_type};base64,{data}")}
        })),
        ImageSource::Shot { .. } => None,
    }
}

/// The conversation as chat messages.
pub fn messages(system: &str, turns: &[Turn]) -> Vec<Value> {
    let mut out = vec![json!({"role": "system", "content": system})];
    for turn in turns {
        match turn.role {
            Role::Assistant => {
                let text = turn.text();
                let calls: Vec<Value> = turn
                    .tool_uses()
                    .map(|(id, name, input)| {
                        json!({"id": id, "type": "function",
                               "function": {"name": name, "arguments": input.to_string()}})
                    })
                    .collect();
                let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if !calls.is_empty() {
                    m["tool_calls"] = json!(calls);
                }
                out.push(m);
            }
            Role::User => {
                let mut parts = Vec::new();
                let mut images = Vec::new();
                for block in &turn.content {
                    match block.known() {
                        Some(KnownBlock::ToolResult {
                            tool_use_id,
                            content,
                            ..
                        }) => {
                            let text = crate::runner::result_text(content);
                            if let ToolResultContent::Blocks(inner) = content {
                                for b in inner {
                                    if let Some(KnownBlock::Image { source }) = b.known() {
                                        images.extend(image_part(source));
                                    }
                                }
                            }
                            out.push(json!({"role": "tool", "tool_call_id": tool_use_id,
                                            "content": if text.is_empty() { "(no output)".to_owned() } else { text }}));
                        }
                        Some(KnownBlock::Text { text }) => {
                            parts.push(json!({"type": "text", "text": text}))
                        }
                        Some(KnownBlock::Image { source }) => parts.extend(image_part(source)),
                        _ => {}
                    }
                }
                if !images.is_empty() {
                    // Tool messages carry text only: the screenshots follow as a user message.
                    let mut content = vec![
                        json!({"type": "text", "text": "The screenshot(s) the tool calls returned:"}),
                    ];
                    content.extend(images);
                    out.push(json!({"role": "user", "content": content}));
                }
                if !parts.is_empty() {
                    out.push(json!({"role": "user", "content": parts}));
                }
            }
        }
    }
    out
}

fn finish_reason(reason: &str) -> StopReason {
    match reason {
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "length" => StopReason::MaxTokens,
        "stop" => StopReason::EndTurn,
        other => StopReason::Other(other.to_owned()),
    }
}

/// Why the model stopped: as the server says, else by whether it asked for tools.
fn stop_of(finish: Option<&str>, content: &[Block]) -> StopReason {
    match finish {
        Some(r) => finish_reason(r),
        None if content.iter().any(|b| b.as_tool_use().is_some()) => StopReason::ToolUse,
        None => StopReason::EndTurn,
    }
}

/// A tool call's arguments: a JSON string per the spec; some servers send an object.
fn arguments(v: &Value) -> Result<Value, AttemptError> {
    match v {
        Value::String(s) if s.trim().is_empty() => Ok(json!({})),
        Value::String(s) => serde_json::from_str(s).map_err(|e| {
            AttemptError::transient(
                "malformed_response",
                format!("tool arguments are not JSON: {e}"),
            )
        }),
        Value::Object(_) => Ok(v.clone()),
        _ => Ok(json!({})),
    }
}

/// The arguments of a call, the `last` of its turn: those of the last call
/// of a turn cut at its token limit ("length") may be incomplete, and are
/// kept as `{}` so that the call can be answered (the runner does not run
/// it); anywhere else arguments that are not JSON are a broken answer.
fn call_arguments(v: &Value, last: bool, finish: Option<&str>) -> Result<Value, AttemptError> {
    match arguments(v) {
        Err(_) if last && finish == Some("length") => Ok(json!({})),
        parsed => parsed,
    }
}

fn usage_of(v: &Value) -> Usage {
    Usage {
        input_tokens: v["prompt_tokens"].as_u64().unwrap_or(0),
        output_tokens: v["completion_tokens"].as_u64().unwrap_or(0),
        ..Usage::default()
    }
}

/// A tool call; one the server sent without an id gets a fresh one (the
/// id must pair the call with its result across turns).
fn call_block(id: Option<&str>, name: &str, input: Value) -> Block {
    Block::Known(KnownBlock::ToolUse {
        id: id
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("call_raworc_{}", uuid::Uuid::new_v4().simple())),
        name: name.to_owned(),
        input,
    })
}

/// A whole (non-streamed) completion.
fn parse_completion(v: &Value) -> Result<ModelReply, AttemptError> {
    let choice = &v["choices"][0];
    let message = &choice["message"];
    if !message.is_object() {
        return Err(AttemptError::transient(
            "malformed_response",
            "no choices[0].message",
        ));
    }
    let mut content = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(Block::text(text));
    }
    let finish = choice["finish_reason"].as_str();
    let calls = message["tool_calls"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for (n, call) in calls.iter().enumerate() {
        let name = call["function"]["name"].as_str().unwrap_or_default();
        let input = call_arguments(&call["function"]["arguments"], n + 1 == calls.len(), finish)?;
        content.push(call_block(call["id"].as_str(), name, input));
    }
    Ok(ModelReply {
        stop_reason: stop_of(finish, &content),
        content,
        usage: usage_of(&v["usage"]),
        model: v["model"].as_str().unwrap_or_default().to_owned(),
        attempts: 1,
    })
}

#[derive(Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Reads a streamed completion; its text's pieces go to `pieces` as they
/// come.
async fn read_stream(
    response: reqwest::Response,
    pieces: Pieces<'_>,
) -> Result<ModelReply, AttemptError> {
    let mut events = SseStream::new(response, "[DONE]");
    let mut completion = Streamed::new(pieces);
    while !completion.event(events.next().await?)? {}
    completion.finish()
}

/// A streamed completion as far as its chunks have come.
#[derive(Default)]
struct Streamed<'s> {
    text: String,
    calls: Vec<PartialCall>,
    finish: Option<String>,
    usage: Usage,
    model: String,
    /// Where the pieces of text go as they come (as block 0: the text is
    /// the turn's first block).
    pieces: Pieces<'s>,
}

impl<'s> Streamed<'s> {
    fn new(pieces: Pieces<'s>) -> Self {
        Streamed {
            pieces,
            ..Streamed::default()
        }
    }

    /// Takes one event; true at `[DONE]`.
    fn event(&mut self, event: SseEvent) -> Result<bool, AttemptError> {
        if event.data.trim() == "[DONE]" {
            return Ok(true);
        }
        let chunk: Value = serde_json::from_str(&event.data).map_err(|e| {
            AttemptError::transient(
                "malformed_response",
                format!("stream chunk is not JSON: {e}"),
            )
        })?;
        if let Some(err) = chunk.get("error") {
            let kind = err["type"].as_str().unwrap_or("server_error");
            let message = err["message"].as_str().unwrap_or("stream error");
            return Err(AttemptError::transient(kind, message));
        }
        if let Some(m) = chunk["model"].as_str() {
            self.model = m.to_owned();
        }
        if chunk["usage"].is_object() {
            self.usage = usage_of(&chunk["usage"]);
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return Ok(false);
        };
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str() {
            self.text.push_str(t);
            self.pieces.report(DeltaKind::Text, 0, t);
        }
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = tc["index"].as_u64().unwrap_or(self.calls.len() as u64);
            if index >= MAX_BLOCKS as u64 {
                return Err(AttemptError::transient(
                    "malformed_response",
                    format!("tool call index {index} is out of range"),
                ));
            }
            let index = index as usize;
            if self.calls.len() <= index {
                self.calls.resize_with(index + 1, PartialCall::default);
            }
            let call = &mut self.calls[index];
            if let Some(id) = tc["id"].as_str() {
                call.id = Some(id.to_owned());
            }
            if let Some(name) = tc["function"]["name"].as_str() {
                call.name.push_str(name);
            }
            match &tc["function"]["arguments"] {
                Value::String(piece) => call.arguments.push_str(piece),
                Value::Object(_) => call.arguments = tc["function"]["arguments"].to_string(),
                _ => {}
            }
        }
        if let Some(r) = choice["finish_reason"].as_str() {
            self.finish = Some(r.to_owned());
        }
        Ok(false)
    }

    /// The completion: its text, then its tool calls.
    fn finish(self) -> Result<ModelReply, AttemptError> {
        let mut content = Vec::new();
        if !self.text.is_empty() {
            content.push(Block::text(self.text));
        }
        let count = self.calls.len();
        for (n, call) in self.calls.into_iter().enumerate() {
            let input = call_arguments(
                &Value::String(call.arguments),
                n + 1 == count,
                self.finish.as_deref(),
            )?;
            content.push(call_block(call.id.as_deref(), &call.name, input));
        }
        Ok(ModelReply {
            stop_reason: stop_of(self.finish.as_deref(), &content),
            content,
            usage: self.usage,
            model: self.model,
            attempts: 1,
        })
    }
}

impl OpenAi {
    pub fn new(config: OpenAiConfig) -> OpenAi {
        let http = super::http_client();
        OpenAi { config, http }
    }

    pub fn body(&self, req: &ModelRequest<'_>) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "messages": messages(req.system, req.turns),
            "tools": functions(req.tools),
            "tool_choice": "auto",
            "max_tokens": self.config.max_tokens,
        });
        if self.config.stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    /// One attempt; a streamed answer's pieces go to `pieces`.
    async fn attempt(&self, body: &Value, pieces: Pieces<'_>) -> Result<ModelReply, AttemptError> {
        let mut request = self
            .http
            .post(endpoint(&self.config.base_url))
            .timeout(self.config.timeout)
            .json(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| AttemptError::transient("connection_error", e.to_string()))?;
        let status = response.status().as_u16();
        if status != 200 {
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let err = &parsed["error"];
            let kind = err["type"]
                .as_str()
                .or_else(|| err["code"].as_str())
                .unwrap_or("http_error")
                .to_owned();
            let message = err["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| text.chars().take(300).collect());
            return Err(AttemptError {
                retry: should_retry(&headers, status),
                after: server_delay(&headers),
                status,
                kind,
                message,
            });
        }
        if self.config.stream {
            read_stream(response, pieces).await
        } else {
            let v = super::json_body(response).await?;
            parse_completion(&v)
        }
    }
}

impl Model for OpenAi {
    fn provider(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    fn respond<'a>(
        &'a self,
        req: ModelRequest<'a>,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        Box::pin(async move {
            let body = self.body(&req);
            let deltas = req.deltas;
            self.config
                .retry
                .turn(|n| self.attempt(&body, Pieces::new(deltas, n)))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_takes_bases_with_or_without_v1() {
        assert_eq!(endpoint("http://h:1"), "http://h:1/v1/chat/completions");
        assert_eq!(
            endpoint("http://h:11434/v1/"),
            "http://h:11434/v1/chat/completions"
        );
    }

    #[test]
    fn tool_results_become_tool_messages_and_images_a_user_message() {
        let turns = vec![
            Turn::user(vec![Block::text("look")]),
            Turn::assistant(vec![
                Block::text("ok"),
                Block::Known(KnownBlock::ToolUse {
                    id: "call_1".into(),
                    name: "computer".into(),
                    input: json!({"action": "screenshot"}),
                }),
            ]),
            Turn::user(vec![Block::Known(KnownBlock::ToolResult {
                tool_use_id: "call_1".into(),
                content: ToolResultContent::Blocks(vec![Block::Known(KnownBlock::Image {
                    source: ImageSource::Base64 {
                        media_type: "image/png".into(),
                        data: "AAAA".into(),
                    },
                })]),
                is_error: false,
            })]),
        ];
        let m = messages("sys", &turns);
        assert_eq!(m[0]["role"], "system");
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            "{\"action\":\"screenshot\"}"
        );
        assert_eq!(m[3]["role"], "tool");
        assert_eq!(m[3]["tool_call_id"], "call_1");
        assert_eq!(m[4]["role"], "user");
        assert_eq!(
            m[4]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
    }

    #[test]
    fn completions_parse_with_arguments_as_strings_or_objects() {
        let reply = parse_completion(&json!({
            "model": "m",
            "choices": [{"message": {"content": null, "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}},
                {"type": "function", "function": {"name": "bash", "arguments": {"command": "pwd"}}}
            ]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7}
        }))
        .unwrap();
        assert_eq!(reply.stop_reason, StopReason::ToolUse);
        assert_eq!(reply.content[0].as_tool_use().unwrap().2["command"], "ls");
        assert!(reply.content[1]
            .as_tool_use()
            .unwrap()
            .0
            .starts_with("call_raworc_"));
        assert_eq!(reply.content[1].as_tool_use().unwrap().2["command"], "pwd");
        assert_eq!(reply.usage.output_tokens, 7);
    }

    #[test]
    fn streamed_text_is_reported_piece_by_piece() {
        let seen = std::sync::Mutex::new(Vec::new());
        let sink = |d: crate::provider::Delta| {
            seen.lock()
                .unwrap()
                .push((d.kind, d.index, d.attempt, d.text))
        };
        let mut completion = Streamed::new(Pieces::new(Some(&sink), 1));
        let chunks = [
            json!({"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}),
            json!({"model":"m","choices":[{"index":0,"delta":{"content":"Two "}}]}),
            json!({"model":"m","choices":[{"index":0,"delta":{"content":"things."}}]}),
            json!({"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"bash","arguments":"{\"command\":\"ls\"}"}}]}}]}),
            json!({"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
            json!({"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}),
        ];
        for chunk in chunks {
            let event = SseEvent {
                event: None,
                data: chunk.to_string(),
            };
            assert!(!completion.event(event).unwrap());
        }
        let done = SseEvent {
            event: None,
            data: "[DONE]".into(),
        };
        assert!(completion.event(done).unwrap());
        let reply = completion.finish().unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (DeltaKind::Text, 0, 1, "Two ".to_owned()),
                (DeltaKind::Text, 0, 1, "things.".to_owned()),
            ]
        );
        assert_eq!(reply.content[0], Block::text("Two things."));
        assert_eq!(reply.content[1].as_tool_use().unwrap().2["command"], "ls");
        assert_eq!(reply.stop_reason, StopReason::ToolUse);
        assert_eq!(reply.usage.output_tokens, 7);
    }

    /// A completion whose second call's arguments stop half-way.
    fn cut_completion(finish: &str) -> Value {
        json!({
            "model": "m",
            "choices": [{"message": {"content": "Two things.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"echo ra"}}
            ]}, "finish_reason": finish}]
        })
    }

    #[test]
    fn arguments_cut_at_the_length_limit_are_kept_empty() {
        let reply = parse_completion(&cut_completion("length")).unwrap();
        assert_eq!(reply.stop_reason, StopReason::MaxTokens);
        assert_eq!(reply.content[1].as_tool_use().unwrap().2["command"], "ls");
        assert_eq!(
            reply.content[2].as_tool_use(),
            Some(("call_2", "bash", &json!({})))
        );
        let err = parse_completion(&cut_completion("tool_calls")).unwrap_err();
        assert!(err.retry);
        assert_eq!(err.kind, "malformed_response");
        // Only the last call can have been cut.
        let mut v = cut_completion("length");
        let calls = v["choices"][0]["message"]["tool_calls"]
            .as_array_mut()
            .unwrap();
        calls.swap(0, 1);
        assert!(parse_completion(&v).is_err());
    }
}
