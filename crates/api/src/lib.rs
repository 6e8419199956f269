//! Wire types of Raworc's HTTP API (`/api/v0`).
//!
//! Everything a client sends or receives is defined here, once, so that the
//! server, the CLI and the OpenAPI document cannot drift apart.

pub mod audit;
pub mod auth;
pub mod computer;
pub mod error;
pub mod event;
pub mod message;
pub mod operator;
pub mod session;
pub mod system;

pub use audit::*;
pub use auth::*;
pub use computer::*;
pub use error::*;
pub use event::*;
pub use message::*;
pub use operator::*;
pub use session::*;
pub use system::*;

/// The API version served under `/api/v0`.
pub const API_VERSION: &str = "v0";

/// Timestamps on the wire: RFC 3339, UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Converts the store's millisecond clock to a wire timestamp.
pub fn timestamp_from_millis(ms: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// `limit`/`offset` paging accepted by every list endpoint.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Maximum number of items (1–1000, default 100).
    pub limit: Option<u32>,
    /// Number of items to skip (default 0).
    pub offset: Option<u64>,
}

impl Page {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    /// The limit to apply, clamped to `1..=MAX_LIMIT`.
    pub fn limit(&self) -> u32 {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT)
    }

    pub fn offset(&self) -> u64 {
        self.offset.unwrap_or(0)
    }
}
