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
    /// Gets the pieces of text and thinking as a streamed answer brings
    /// them (nothing comes from answers that are not streamed).
    pub deltas: Option<DeltaSink<'a>>,
}

/// Where the pieces of a streamed turn go, as they come.
pub type DeltaSink<'a> = &'a (dyn Fn(Delta) + Send + Sync);

/// What a [`Delta`] is a piece of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaKind {
    Text,
    Thinking,
}

impl DeltaKind {
    /// `text` or `thinking`, as the events of a stored turn name them.
    pub fn as_str(self) -> &'static str {
        match self {
            DeltaKind::Text => "text",
            DeltaKind::Thinking => "thinking",
        }
    }
}

/// A piece of the model's turn while it streams: only a preview, the turn
/// the call returns is the truth (a retried call starts its pieces again,
/// with the next `attempt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub kind: DeltaKind,
    /// The index of its content block in the turn.
    pub index: u32,
    /// The attempt of the model call it came from, from 1.
    pub attempt: u32,
    /// The new text, never empty.
    pub text: String,
}

/// Where one attempt's pieces go: the request's sink, if it has one, and
/// the attempt number the pieces carry.
#[derive(Clone, Copy, Default)]
pub(crate) struct Pieces<'a> {
    sink: Option<DeltaSink<'a>>,
    attempt: u32,
}

impl<'a> Pieces<'a> {
    pub(crate) fn new(sink: Option<DeltaSink<'a>>, attempt: u32) -> Self {
        Pieces { sink, attempt }
    }

    /// Reports a non-empty piece of block `index`.
    pub(crate) fn report(&self, kind: DeltaKind, index: usize, text: &str) {
        if let Some(sink) = self.sink.filter(|_| !text.is_empty()) {
            sink(Delta {
                kind,
                index: index as u32,
                attempt: self.attempt,
                text: text.to_owned(),
            });
        }
    }
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
