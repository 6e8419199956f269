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
use super::sse::SseStream;
use super::{AttemptError, Model, ModelError, ModelReply, ModelRequest, RetryPolicy, MAX_BLOCKS};
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

    async fn attempt(&self, body: &Value, beta: &str) -> Result<ModelReply, AttemptError> {
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
            read_stream(response).await
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
    let content: Vec<Block> = serde_json::from_value(message["content"].clone())
        .map_err(|e| malformed(&format!("content: {e}")))?;
    let stop = message["stop_reason"]
        .as_str()
        .ok_or_else(|| malformed("no stop_reason"))?;
    Ok(ModelReply {
        content,
        stop_reason: StopReason::parse(stop),
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

impl Partial {
    fn finish(self) -> Result<Block, AttemptError> {
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
                    serde_json::from_str(&self.json).map_err(|e| {
                        AttemptError::transient(
                            "malformed_response",
                            format!("tool input is not JSON: {e}"),
                        )
                    })?
                };
                block["input"] = input;
                if let Some(obj) = block.as_object_mut() {
                    obj.remove("caller");
                }
            }
            _ => {}
        }
        serde_json::from_value(block).map_err(|e| {
            AttemptError::transient("malformed_response", format!("content block: {e}"))
        })
    }
}

/// Reads a streamed message: blocks assembled from their deltas; a stream
/// that ends before `message_stop` or carries an `error` event failed.
async fn read_stream(response: reqwest::Response) -> Result<ModelReply, AttemptError> {
    let mut events = SseStream::new(response, "message_stop");
    let mut blocks: Vec<Option<Partial>> = Vec::new();
    let mut done: Vec<(usize, Block)> = Vec::new();
    let mut usage = Usage::default();
    let mut model = String::new();
    let mut stop: Option<String> = None;
    let malformed = |what: String| AttemptError::transient("malformed_response", what);
    loop {
        let event = events.next().await?;
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
                model = m["model"].as_str().unwrap_or_default().to_owned();
                usage = serde_json::from_value(m["usage"].clone()).unwrap_or_default();
            }
            "content_block_start" => {
                if blocks.len() <= index {
                    blocks.resize_with(index + 1, || None);
                }
                blocks[index] = Some(Partial {
                    start: data["content_block"].clone(),
                    ..Partial::default()
                });
            }
            "content_block_delta" => {
                let partial = blocks
                    .get_mut(index)
                    .and_then(Option::as_mut)
                    .ok_or_else(|| malformed(format!("delta for unknown block {index}")))?;
                let d = &data["delta"];
                let piece = |f: &str| d[f].as_str().unwrap_or_default().to_owned();
                match d["type"].as_str() {
                    Some("text_delta") => partial.text.push_str(&piece("text")),
                    Some("thinking_delta") => partial.thinking.push_str(&piece("thinking")),
                    Some("signature_delta") => partial.signature = Some(piece("signature")),
                    Some("input_json_delta") => partial.json.push_str(&piece("partial_json")),
                    _ => {}
                }
            }
            "content_block_stop" => {
                let partial = blocks
                    .get_mut(index)
                    .and_then(Option::take)
                    .ok_or_else(|| malformed(format!("stop of unknown block {index}")))?;
                done.push((index, partial.finish()?));
            }
            "message_delta" => {
                if let Some(s) = data["delta"]["stop_reason"].as_str() {
                    stop = Some(s.to_owned());
                }
                let u = &data["usage"];
                if let Some(n) = u["output_tokens"].as_u64() {
                    usage.output_tokens = n;
                }
                if let Some(n) = u["input_tokens"].as_u64() {
                    usage.input_tokens = n;
                }
            }
            "message_stop" => break,
            "error" => {
                let kind = data["error"]["type"].as_str().unwrap_or("api_error");
                let message = data["error"]["message"].as_str().unwrap_or("stream error");
                return Err(AttemptError::transient(kind, message));
            }
            _ => {} // ping and events of other APIs
        }
    }
    done.sort_by_key(|(i, _)| *i);
    Ok(ModelReply {
        content: done.into_iter().map(|(_, b)| b).collect(),
        stop_reason: StopReason::parse(stop.as_deref().unwrap_or("end_turn")),
        usage,
        model,
        attempts: 1,
    })
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
            self.config.retry.turn(|| self.attempt(&body, beta)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
