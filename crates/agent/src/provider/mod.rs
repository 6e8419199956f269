//! Model providers: the agent asks one [`Model`] for each turn.
//!
//! - [`anthropic`]: the Messages API with Anthropic's computer-use tools.
//! - [`openai`]: OpenAI-compatible chat completions (OpenAI, vLLM, Ollama,
//!   llama.cpp) with the same tools as functions.
//! - [`mock`]: no model at all; understands a few plain requests and drives
//!   the computer through the same tools, so that a demo without a key
//!   still shows real work.

pub mod anthropic;
pub mod mock;
pub mod openai;
mod retry;
mod sse;

use futures::future::BoxFuture;

pub use retry::RetryPolicy;

use crate::tools::ToolSet;
use crate::wire::{Block, StopReason, Turn, Usage};

/// What the model is asked: the system prompt, the conversation (images
/// inline) and the tools it may use.
pub struct ModelRequest<'a> {
    pub system: &'a str,
    pub turns: &'a [Turn],
    pub tools: &'a ToolSet,
}

/// The model's turn.
#[derive(Debug, Clone)]
pub struct ModelReply {
    pub content: Vec<Block>,
    pub stop_reason: StopReason,
    pub usage: Usage,
    /// The model that answered, as the API names it.
    pub model: String,
    /// Attempts it took (retries + 1).
    pub attempts: u32,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// The API refused the request; asking again would not help.
    #[error("the model API refused the request ({status} {kind}): {message}")]
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
    /// Every attempt failed with an error worth retrying.
    #[error("the model API failed {attempts} time(s); last: {last}")]
    Exhausted { attempts: u32, last: String },
}

/// A provider of model turns.
pub trait Model: Send + Sync {
    /// `anthropic`, `openai` or `mock`.
    fn provider(&self) -> &'static str;
    /// The model asked for.
    fn model(&self) -> &str;
    fn respond<'a>(
        &'a self,
        req: ModelRequest<'a>,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>>;
}

/// Most content blocks (or tool calls) one streamed turn may have: an index
/// past it is a broken answer, not a reason to allocate.
pub(crate) const MAX_BLOCKS: usize = 256;

/// The HTTP client of a provider: a short connect timeout (the request's
/// own timeout is per call).
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

/// A whole JSON answer; one cut short or not JSON is worth another try.
pub(crate) async fn json_body(
    response: reqwest::Response,
) -> Result<serde_json::Value, AttemptError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| AttemptError::transient("connection_error", e.to_string()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AttemptError::transient("malformed_response", format!("not JSON: {e}")))
}

/// One failed attempt: whether to try again and after how long at least.
#[derive(Debug)]
pub(crate) struct AttemptError {
    pub retry: bool,
    /// The server's `retry-after`, when it said.
    pub after: Option<std::time::Duration>,
    pub status: u16,
    pub kind: String,
    pub message: String,
}

impl AttemptError {
    pub(crate) fn transient(kind: &str, message: impl Into<String>) -> Self {
        AttemptError {
            retry: true,
            after: None,
            status: 0,
            kind: kind.to_owned(),
            message: message.into(),
        }
    }

    fn describe(&self) -> String {
        if self.status == 0 {
            format!("{}: {}", self.kind, self.message)
        } else {
            format!("{} {}: {}", self.status, self.kind, self.message)
        }
    }
}
