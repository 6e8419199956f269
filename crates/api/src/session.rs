use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use chrono::{DateTime, Utc};

/// Lifecycle states of a session (SPEC §4).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Created,
    Starting,
    Running,
    Paused,
    Closing,
    Closed,
    Errored,
    Deleted,
}

impl SessionState {
    pub const ALL: [SessionState; 8] = [
        SessionState::Created,
        SessionState::Starting,
        SessionState::Running,
        SessionState::Paused,
        SessionState::Closing,
        SessionState::Closed,
        SessionState::Errored,
        SessionState::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Created => "created",
            SessionState::Starting => "starting",
            SessionState::Running => "running",
            SessionState::Paused => "paused",
            SessionState::Closing => "closing",
            SessionState::Closed => "closed",
            SessionState::Errored => "errored",
            SessionState::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session as the API shows it. Secret values never appear, only their names.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub name: Option<String>,
    pub state: SessionState,
    /// True while the agent works on a message.
    pub busy: bool,
    pub owner: String,
    pub instructions: Option<String>,
    pub setup: Option<String>,
    /// Names of the session's secrets; the values are write-only.
    pub secrets: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub parent_id: Option<String>,
    /// What the computer may reach: `none` (default) or `egress`.
    pub network: SessionNetwork,
    /// Resources asked for; absent fields take the server's.
    pub limits: SessionLimits,
    /// Why the session is `errored`, when it is.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a session's computer may reach on the network.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SessionNetwork {
    /// Loopback only: nothing outside the computer.
    #[default]
    None,
    /// Outbound connections to the internet through NAT; never to the
    /// control plane, other computers or private networks.
    Egress,
}

impl SessionNetwork {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionNetwork::None => "none",
            SessionNetwork::Egress => "egress",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(SessionNetwork::None),
            "egress" => Some(SessionNetwork::Egress),
            _ => None,
        }
    }
}

/// Resources of a session's computer; fields left out take the server's
/// values, which are also the most a session may ask for.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SessionLimits {
    /// Memory (and swap) in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// CPU in thousandths of a core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millicores: Option<u64>,
}

/// `POST /sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    #[serde(default)]
    pub name: Option<String>,
    /// Joins the agent's system prompt; written to `/session/code/instructions.md`.
    #[serde(default)]
    pub instructions: Option<String>,
    /// A shell script run inside the computer before the session is `running`.
    #[serde(default)]
    pub setup: Option<String>,
    /// Name → value; encrypted at rest, never returned.
    #[serde(default)]
    pub secrets: Option<BTreeMap<String, String>>,
    /// Becomes the session's first user message.
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// `none` (default: loopback only) or `egress` (outbound internet).
    #[serde(default)]
    pub network: Option<SessionNetwork>,
    /// Resources of the computer, up to the server's.
    #[serde(default)]
    pub limits: Option<SessionLimits>,
}

/// `PUT /sessions/{id}`: fields left out stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSession {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub setup: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// `PUT /sessions/{id}/state`: `paused` or `running`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSessionState {
    pub state: String,
}

/// `POST /sessions/{id}/remix`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemixSession {
    /// Copy `/session/data` (default true).
    #[serde(default = "yes")]
    pub data: bool,
    /// Copy `/session/code`, instructions and setup (default true).
    #[serde(default = "yes")]
    pub code: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
}

impl Default for RemixSession {
    fn default() -> Self {
        RemixSession {
            data: true,
            code: true,
            name: None,
            prompt: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// Filters of `GET /sessions`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionFilter {
    /// Only sessions in this state (`deleted` lists deleted ones).
    pub state: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}
