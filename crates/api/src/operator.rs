use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use chrono::{DateTime, Utc};

/// What a principal may do: `admin` everything, `user` only its own sessions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OperatorRole {
    Admin,
    User,
}

impl OperatorRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Admin => "admin",
            OperatorRole::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(OperatorRole::Admin),
            "user" => Some(OperatorRole::User),
            _ => None,
        }
    }
}

/// An operator as the API shows it (never its password hash).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Operator {
    pub user: String,
    pub role: OperatorRole,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
}

/// `POST /operators`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOperator {
    pub user: String,
    pub pass: String,
    /// Default `admin`, as in the original product.
    #[serde(default)]
    pub role: Option<OperatorRole>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `PUT /operators/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOperator {
    #[serde(default)]
    pub role: Option<OperatorRole>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `PUT /operators/{name}/password`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    pub pass: String,
}
