//! Anthropic's Messages API (`POST {base}/v1/messages`) with the
//! computer-use tools: streamed (SSE, blocks reassembled from their deltas)
//! or not, retried on 408/409/429/5xx/529, cut streams and broken bodies,
//! with prompt-cache breakpoints on the system prompt and the three most
//! recent user turns.

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::retry::{server_delay, should_retry};
use super::sse::{SseEvent, SseStream};
use super::{
    AttemptError, DeltaKind, Model, ModelError, ModelReply, ModelRequest, Pieces, RetryPolicy,
    MAX_BLOCKS,
};
use crate::wire::{Block, StopReason, Usage};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const API_VERSION: &str = "2023-06-01";

#[derive(Clone)]
pub struct AnthropicConfig {
    pub base_url: String,
    pub api_key: String,
    pub model: String,
    pub max_tokens: u32,
    pub stream: bool,
    pub retry: RetryPolicy,
    /// Longest time one attempt may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log.
        f.debug_struct("AnthropicConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

pub struct Anthropic {
    config: AnthropicConfig,
    http: reqwest::Client,
}

impl Anthropic {
    pub fn new(config: AnthropicConfig) -> Anthropic {
        let http = super::http_client();
        Anthropic { config, http }
    }

    /// The request body for `req`.
    pub fn body(&self, req: &ModelRequest<'_>) -> Value {
        let mut messages = serde_json::to_value(req.turns).unwrap_or_else(|_| json!([]));
        add_cache_breakpoints(&mut messages, 3);
        let mut body = json!({
            "model": self.config.model,
            "max_tokens": self.config.max_tokens,
            "system": [{
                "type": "text",
                "text": req.system,
                "cache_control": {"type": "ephemeral"},
            }],
            "messages": messages,
            "tools": req.tools.anthropic(),
        });
        if self.config.stream {
            body["stream"] = json!(true);
        }
        body
    }

    /// One attempt; a streamed answer's pieces go to `pieces`.
    async fn attempt(
        &self,
        body: &Value,
        beta: &str,
        pieces: Pieces<'_>,
    ) -> Result<ModelReply, AttemptError> {
        let url = format!("{}/v1/messages", self.config.base_url.trim_end_matches('/'));
        let response = self
            .http
            .post(url)
            .timeout(self.config.timeout)
            .header("x-api-key", &self.config.api_key)
            .header("anthropic-version", API_VERSION)
            .header("anthropic-beta", beta)
            .json(body)
            .send()
            .await
            .map_err(|e| AttemptError::transient("connection_error", e.to_string()))?;
        let status = response.status().as_u16();
        if status != 200 {
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            return Err(status_error(status, &headers, &text));
        }
        if self.config.stream {
            read_stream(response, Streamed::new(pieces)).await
        } else {
            let message = super::json_body(response).await?;
            parse_message(&message)
        }
    }
}

/// An error answer: retried or not as the status and `x-should-retry` say.
fn status_error(status: u16, headers: &HeaderMap, body: &str) -> AttemptError {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let kind = parsed["error"]["type"]
        .as_str()
        .unwrap_or("http_error")
        .to_owned();
    let message = parsed["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.chars().take(300).collect());
    AttemptError {
        retry: should_retry(headers, status),
        after: server_delay(headers),
        status,
        kind,
        message,
    }
}

/// A whole (non-streamed) message.
fn parse_message(message: &Value) -> Result<ModelReply, AttemptError> {
    let malformed = |what: &str| AttemptError::transient("malformed_response", what.to_owned());
    let stop = message["stop_reason"]
        .as_str()
        .ok_or_else(|| malformed("no stop_reason"))?;
    let stop_reason = StopReason::parse(stop);
    let mut raw = message["content"].clone();
    if stop_reason == StopReason::MaxTokens {
        // A tool call cut by the token limit may come without a usable
        // input; it is kept (as `{}`) so that it can be answered: the
        // runner does not run it.
        if let Some(last) = raw.as_array_mut().and_then(|c| c.last_mut()) {
            if last["type"] == "tool_use" && !last["input"].is_object() {
                last["input"] = json!({});
            }
        }
    }
    let content: Vec<Block> =
        serde_json::from_value(raw).map_err(|e| malformed(&format!("content: {e}")))?;
    Ok(ModelReply {
        content,
        stop_reason,
        usage: serde_json::from_value(message["usage"].clone()).unwrap_or_default(),
        model: message["model"].as_str().unwrap_or_default().to_owned(),
        attempts: 1,
    })
}

/// A block being streamed.
#[derive(Default)]
struct Partial {
    start: Value,
    text: String,
    thinking: String,
    signature: Option<String>,
    json: String,
}

/// A streamed block, finished; `unparsed` says why its tool input was not
/// JSON (then kept as `{}`): fine for the last block of a turn cut at its
/// token limit, a broken answer anywhere else — which only the stop
/// reason, sent after the block, tells.
struct Finished {
    block: Block,
    unparsed: Option<String>,
}

impl Partial {
    fn finish(self) -> Result<Finished, AttemptError> {
        let mut unparsed = None;
        let mut block = self.start;
        match block["type"].as_str() {
            Some("text") => block["text"] = json!(self.text),
            Some("thinking") => {
                block["thinking"] = json!(self.thinking);
                if let Some(sig) = self.signature {
                    block["signature"] = json!(sig);
                }
            }
            Some("tool_use" | "server_tool_use") => {
                let input = if self.json.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&self.json).unwrap_or_else(|e| {
                        unparsed = Some(format!("tool input is not JSON: {e}"));
                        json!({})
                    })
                };
                block["input"] = input;
                if let Some(obj) = block.as_object_mut() {
                    obj.remove("caller");
                }
            }
            _ => {}
        }
        let block = serde_json::from_value(block).map_err(|e| {
            AttemptError::transient("malformed_response", format!("content block: {e}"))
        })?;
        Ok(Finished { block, unparsed })
    }
}

/// Reads a streamed message into `message`: blocks assembled from their
/// deltas; a stream that ends before `message_stop` or carries an `error`
/// event failed.
async fn read_stream(
    response: reqwest::Response,
    mut message: Streamed<'_>,
) -> Result<ModelReply, AttemptError> {
    let mut events = SseStream::new(response, "message_stop");
    while !message.event(events.next().await?)? {}
    message.finish()
}

/// A streamed message as far as its events have come.
#[derive(Default)]
struct Streamed<'s> {
    blocks: Vec<Option<Partial>>,
    done: Vec<(usize, Finished)>,
    usage: Usage,
    model: String,
    stop: Option<String>,
    /// Where the pieces of text and thinking go as they come.
    pieces: Pieces<'s>,
}

impl<'s> Streamed<'s> {
    fn new(pieces: Pieces<'s>) -> Self {
        Streamed {
            pieces,
            ..Streamed::default()
        }
    }

    /// Takes one event; true once the message is complete.
    fn event(&mut self, event: SseEvent) -> Result<bool, AttemptError> {
        let malformed = |what: String| AttemptError::transient("malformed_response", what);
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| malformed(format!("stream event is not JSON: {e}")))?;
        let kind = data["type"]
            .as_str()
            .map(str::to_owned)
            .or(event.event)
            .unwrap_or_default();
        let index = data["index"].as_u64().unwrap_or(0);
        if index >= MAX_BLOCKS as u64 {
            return Err(malformed(format!(
                "content block index {index} is out of range"
            )));
        }
        let index = index as usize;
        match kind.as_str() {
            "message_start" => {
                let m = &data["message"];
                self.model = m["model"].as_str().unwrap_or_default().to_owned();
                self.usage = serde_json::from_value(m["usage"].clone()).unwrap_or_default();
            }
            "content_block_start" => {
                if self.blocks.len() <= index {
                    self.blocks.resize_with(index + 1, || None);
                }
                self.blocks[index] = Some(Partial {
                    start: data["content_block"].clone(),
                    ..Partial::default()
                });
            }
            "content_block_delta" => {
                let partial = self
                    .blocks
                    .get_mut(index)
                    .and_then(Option::as_mut)
                    .ok_or_else(|| malformed(format!("delta for unknown block {index}")))?;
                let d = &data["delta"];
                let piece = |f: &str| d[f].as_str().unwrap_or_default();
                match d["type"].as_str() {
                    Some("text_delta") => {
                        partial.text.push_str(piece("text"));
                        self.pieces.report(DeltaKind::Text, index, piece("text"));
                    }
                    Some("thinking_delta") => {
                        partial.thinking.push_str(piece("thinking"));
                        self.pieces
                            .report(DeltaKind::Thinking, index, piece("thinking"));
                    }
                    Some("signature_delta") => {
                        partial.signature = Some(piece("signature").to_owned())
                    }
                    Some("input_json_delta") => partial.json.push_str(piece("partial_json")),
                    _ => {}
                }
            }
            "content_block_stop" => {
                let partial = self
                    .blocks
                    .get_mut(index)
                    .and_then(Option::take)
                    .ok_or_else(|| malformed(format!("stop of unknown block {index}")))?;
                self.done.push((index, partial.finish()?));
            }
            "message_delta" => {
                if let Some(s) = data["delta"]["stop_reason"].as_str() {
                    self.stop = Some(s.to_owned());
                }
                let u = &data["usage"];
                if let Some(n) = u["output_tokens"].as_u64() {
                    self.usage.output_tokens = n;
                }
                if let Some(n) = u["input_tokens"].as_u64() {
                    self.usage.input_tokens = n;
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let kind = data["error"]["type"].as_str().unwrap_or("api_error");
                let message = data["error"]["message"].as_str().unwrap_or("stream error");
                return Err(AttemptError::transient(kind, message));
            }
            _ => {} // ping and events of other APIs
        }
        Ok(false)
    }

    /// The message; a tool input that is not JSON is only accepted in the
    /// last block of a turn stopped by its token limit.
    fn finish(self) -> Result<ModelReply, AttemptError> {
        let mut done = self.done;
        // A block the stream never stopped is kept as far as it came (a
        // tool call cut at the token limit must still be answered).
        for (index, partial) in self.blocks.into_iter().enumerate() {
            if let Some(partial) = partial {
                done.push((index, partial.finish()?));
            }
        }
        done.sort_by_key(|(i, _)| *i);
        let stop_reason = StopReason::parse(self.stop.as_deref().unwrap_or("end_turn"));
        let last = done.len().saturating_sub(1);
        for (n, (_, finished)) in done.iter().enumerate() {
            if let Some(why) = &finished.unparsed {
                if n != last || stop_reason != StopReason::MaxTokens {
                    return Err(AttemptError::transient("malformed_response", why.clone()));
                }
            }
        }
        Ok(ModelReply {
            content: done.into_iter().map(|(_, f)| f.block).collect(),
            stop_reason,
            usage: self.usage,
            model: self.model,
            attempts: 1,
        })
    }
}

/// Marks the last block of the `n` most recent user turns as a cache
/// breakpoint (with the system prompt's, four in all: the API's limit).
pub(crate) fn add_cache_breakpoints(messages: &mut Value, n: usize) {
    let Some(list) = messages.as_array_mut() else {
        return;
    };
    let mut marked = 0;
    for m in list.iter_mut().rev() {
        if m["role"] != "user" || marked == n {
            continue;
        }
        if let Some(last) = m["content"].as_array_mut().and_then(|c| c.last_mut()) {
            last["cache_control"] = json!({"type": "ephemeral"});
            marked += 1;
        }
    }
}

impl Model for Anthropic {
    fn provider(&self) -> &'static str {
        "anthropic"
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
            let beta = req.tools.beta();
            let deltas = req.deltas;
            self.config
                .retry
                .turn(|n| self.attempt(&body, beta, Pieces::new(deltas, n)))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Delta;

    #[test]
    fn breakpoints_go_on_the_three_latest_user_turns() {
        let mut m = json!([
            {"role":"user","content":[{"type":"text","text":"1"}]},
            {"role":"assistant","content":[{"type":"text","text":"a"}]},
            {"role":"user","content":[{"type":"text","text":"2"}]},
            {"role":"assistant","content":[{"type":"text","text":"b"}]},
            {"role":"user","content":[{"type":"text","text":"3"}]},
            {"role":"assistant","content":[{"type":"text","text":"c"}]},
            {"role":"user","content":[{"type":"text","text":"4"},{"type":"text","text":"5"}]}
        ]);
        add_cache_breakpoints(&mut m, 3);
        let marked: Vec<bool> = m
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                t["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b.get("cache_control").is_some())
            })
            .collect();
        assert_eq!(marked, [false, false, true, false, true, false, true]);
        assert!(m[6]["content"][0].get("cache_control").is_none());
    }

    #[test]
    fn a_message_parses_and_a_broken_one_is_retried() {
        let reply = parse_message(&json!({
            "id":"msg_1","type":"message","role":"assistant","model":"m",
            "content":[{"type":"tool_use","id":"toolu_1","name":"bash","input":{"command":"ls"}}],
            "stop_reason":"tool_use","usage":{"input_tokens":3,"output_tokens":4}
        }))
        .unwrap();
        assert_eq!(reply.stop_reason, StopReason::ToolUse);
        assert_eq!(reply.usage.output_tokens, 4);
        let err = parse_message(&json!({"content": 5})).unwrap_err();
        assert!(err.retry);
    }

    /// A streamed turn: a text block, then a bash call whose input stops
    /// after `json`, then the stop reason.
    fn streamed(json: &str, stop: &str) -> Result<ModelReply, AttemptError> {
        let events = [
            json!({"type":"message_start","message":{"model":"m","usage":{"input_tokens":5}}}),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Writing."}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"bash","input":{}}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":json}}),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"message_delta","delta":{"stop_reason":stop},"usage":{"output_tokens":9}}),
            json!({"type":"message_stop"}),
        ];
        let mut message = Streamed::default();
        for data in events {
            let event = SseEvent {
                event: None,
                data: data.to_string(),
            };
            if message.event(event)? {
                break;
            }
        }
        message.finish()
    }

    #[test]
    fn a_tool_input_cut_at_max_tokens_is_kept_empty() {
        let reply = streamed(r#"{"command": "echo ran > /ses"#, "max_tokens").unwrap();
        assert_eq!(reply.stop_reason, StopReason::MaxTokens);
        assert_eq!(reply.content.len(), 2);
        assert_eq!(
            reply.content[1].as_tool_use(),
            Some(("toolu_1", "bash", &json!({})))
        );
        assert_eq!(reply.usage.output_tokens, 9);
    }

    #[test]
    fn a_tool_input_cut_without_max_tokens_is_a_broken_answer() {
        for stop in ["end_turn", "tool_use"] {
            let err = streamed(r#"{"command": "echo ran > /ses"#, stop).unwrap_err();
            assert!(err.retry, "{stop}");
            assert_eq!(err.kind, "malformed_response");
            assert!(err.message.contains("not JSON"), "{}", err.message);
        }
        // A whole input is taken as it is, whatever the stop reason.
        let reply = streamed(r#"{"command": "ls"}"#, "max_tokens").unwrap();
        assert_eq!(reply.content[1].as_tool_use().unwrap().2["command"], "ls");
    }

    #[test]
    fn only_the_last_block_may_be_cut() {
        let mut message = Streamed::default();
        let events = [
            json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"bash","input":{}}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"comm"}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":"after"}}),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"message_delta","delta":{"stop_reason":"max_tokens"}}),
        ];
        for data in events {
            let event = SseEvent {
                event: None,
                data: data.to_string(),
            };
            assert!(!message.event(event).unwrap());
        }
        assert_eq!(message.finish().unwrap_err().kind, "malformed_response");
    }

    #[test]
    fn text_and_thinking_are_reported_piece_by_piece() {
        let seen = std::sync::Mutex::new(Vec::new());
        let sink = |d: Delta| seen.lock().unwrap().push(d);
        let mut message = Streamed::new(Pieces::new(Some(&sink), 2));
        let events = [
            json!({"type":"message_start","message":{"model":"m","usage":{"input_tokens":5}}}),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm, "}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"a plan."}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":""}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":", world."}}),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"bash","input":{}}}),
            json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"command\":\"ls\"}"}}),
            json!({"type":"content_block_stop","index":2}),
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}),
        ];
        for data in events {
            let event = SseEvent {
                event: None,
                data: data.to_string(),
            };
            assert!(!message.event(event).unwrap());
        }
        let reply = message.finish().unwrap();
        let piece = |kind, index, text: &str| Delta {
            kind,
            index,
            attempt: 2,
            text: text.to_owned(),
        };
        // Empty pieces and tool inputs are not reported.
        assert_eq!(
            *seen.lock().unwrap(),
            [
                piece(DeltaKind::Thinking, 0, "Hmm, "),
                piece(DeltaKind::Thinking, 0, "a plan."),
                piece(DeltaKind::Text, 1, "Hello"),
                piece(DeltaKind::Text, 1, ", world."),
            ]
        );
        // The pieces add up to the blocks of the turn.
        assert_eq!(
            serde_json::to_value(&reply.content[..2]).unwrap(),
            json!([
                {"type":"thinking","thinking":"Hmm, a plan.","signature":"sig"},
                {"type":"text","text":"Hello, world."}
            ])
        );
    }

    #[test]
    fn a_whole_message_cut_at_max_tokens_keeps_its_tool_call() {
        let reply = parse_message(&json!({
            "model":"m",
            "content":[{"type":"text","text":"Writing."},{"type":"tool_use","id":"toolu_1","name":"bash"}],
            "stop_reason":"max_tokens","usage":{"input_tokens":3,"output_tokens":4}
        }))
        .unwrap();
        assert_eq!(reply.stop_reason, StopReason::MaxTokens);
        assert_eq!(
            reply.content[1].as_tool_use(),
            Some(("toolu_1", "bash", &json!({})))
        );
    }
}
