use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /api/v0/version`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    pub version: String,
    pub api: String,
}

/// `GET /health`: the shape kept from the computer-use backend.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub service: String,
}

/// One dependency's health in `GET /health/detailed`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComponentHealth {
    /// `healthy`, `unhealthy` or `not_configured`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// `GET /health/detailed`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthDetailed {
    pub status: String,
    pub service: String,
    pub version: String,
    pub uptime_s: u64,
    pub database: ComponentHealth,
    pub runtime: ComponentHealth,
    pub image: ComponentHealth,
    /// The agent's model: `anthropic: MODEL`, or `mock` (no model key).
    pub agent: ComponentHealth,
}

/// `GET /sessions/workers/health`: running computers and the limit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkersHealth {
    pub status: String,
    /// `local`, or `none` when the server runs no computers.
    pub runtime: String,
    /// Computers running now (paused ones included).
    pub running: usize,
    pub max_sessions: usize,
    /// Computers that can still start.
    pub available: usize,
    /// The running computers the caller may see.
    pub computers: Vec<WorkerComputer>,
    /// The warm pool, when the server keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<WarmPool>,
}

/// Computers kept started, painted and frozen for creates to claim. They
/// do not count as running.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WarmPool {
    /// How many the pool keeps.
    pub target: usize,
    /// Waiting now.
    pub ready: usize,
    /// Creates served from the pool since the server started.
    pub claims: u64,
    /// Creates the pool could have served but found empty.
    pub misses: u64,
    /// Milliseconds the last refill of one computer took.
    pub last_fill_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerComputer {
    pub session_id: String,
    pub state: crate::SessionState,
    /// Memory the computer uses now (page cache included).
    pub memory_bytes: Option<u64>,
}
