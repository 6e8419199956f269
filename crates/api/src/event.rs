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

/// `POST /sessions/{id}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Cancelled {
    /// True when the agent was working and will stop at its next step.
    pub cancelled: bool,
}
