//! Events: each step of a session's agent and each change of its state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One event. `type` is `thinking`, `text`, `tool_use`, `tool_result`,
/// `error`, `complete` or `state`; `seq` orders a session's events.
/// A `tool_result` that shows a screenshot names it in
/// `metadata.image_url` rather than carrying it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub session_id: String,
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// Same instant as `created_at`.
    pub timestamp: DateTime<Utc>,
}

/// Paging of `GET /sessions/{id}/events`.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events with `seq` greater than this.
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Where `GET /sessions/{id}/events/stream` (and the WebSocket
/// `/ws/{id}/stream`) starts, and whether it carries live pieces.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventStreamQuery {
    /// Only events with `seq` greater than this (`Last-Event-ID` wins).
    pub after: Option<i64>,
    /// `true`: also the model's text and thinking as they stream — `delta`
    /// events ([`EventDelta`]) with no `id`, not stored, best effort; the
    /// stored `text`/`thinking` events that follow replace them.
    pub deltas: Option<bool>,
}

/// A piece of the model's text or thinking while it streams (the `delta`
/// event of a stream opened with `deltas=true`). Not stored and not
/// numbered: the turn's stored `text`/`thinking` events, which follow, are
/// the truth. The pieces of one `(kind, index, attempt)`, joined, are the
/// block's text so far; a higher `attempt` means the model call was tried
/// again, and its text starts over.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventDelta {
    pub session_id: String,
    /// `text` or `thinking`.
    pub kind: String,
    /// The content block's index in the model's turn.
    pub index: u32,
    /// The attempt of the model call, from 1.
    pub attempt: u32,
    /// The new piece.
    pub text: String,
}

/// `POST /sessions/{id}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Cancelled {
    /// True when the agent was working and will stop at its next step.
    pub cancelled: bool,
}
