use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response: a human message and the HTTP status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
    pub status: u16,
}
