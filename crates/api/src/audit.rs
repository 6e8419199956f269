use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use chrono::{DateTime, Utc};

/// One recorded mutating call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Principal name, or `anonymous`.
    pub principal: String,
    pub principal_type: Option<String>,
    /// `METHOD /route/{template}`.
    pub action: String,
    /// The concrete path that was called.
    pub target: String,
    pub session_id: Option<String>,
    /// HTTP status of the outcome.
    pub outcome: u16,
    pub request_id: String,
}

/// Filters of `GET /audit`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub principal: Option<String>,
    pub session_id: Option<String>,
    /// RFC 3339; entries at or after.
    pub since: Option<String>,
    /// RFC 3339; entries before.
    pub until: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}
