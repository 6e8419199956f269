use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use chrono::{DateTime, Utc};

use crate::OperatorRole;

/// Who a token speaks for: an operator (a login) or a plain user principal.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
pub enum PrincipalType {
    User,
    Operator,
}

impl PrincipalType {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalType::User => "User",
            PrincipalType::Operator => "Operator",
        }
    }
}

/// `POST /operators/{name}/login`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub pass: String,
}

/// A freshly issued token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    pub user: String,
    pub role: OperatorRole,
}

/// `GET /auth`: who the presented token belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthInfo {
    pub user: String,
    #[serde(rename = "type")]
    pub principal_type: PrincipalType,
    pub role: OperatorRole,
    pub expires_at: DateTime<Utc>,
}

/// `POST /auth/token` (admins only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub principal: String,
    pub principal_type: PrincipalType,
    /// Lifetime in seconds (default: the server's token lifetime; at most 1 year).
    #[serde(default)]
    pub expires_in_s: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
}
