//! Version, health and metrics.

use std::time::Instant;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use raworc_api::{
    ComponentHealth, Health, HealthDetailed, VersionInfo, WarmPool, WorkerComputer, WorkersHealth,
    API_VERSION,
};

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::state::AppState;

const SERVICE: &str = "raworc";

/// Server version and API version.
#[utoipa::path(get, path = "/version", tag = "system",
    responses((status = 200, body = VersionInfo)))]
pub async fn version() -> Json<VersionInfo> {
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api: API_VERSION.to_string(),
    })
}

/// Liveness: answers as long as the process serves HTTP (also at `/health`).
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy".into(),
        service: SERVICE.into(),
    })
}

/// Health of the database, the runtime and the computer image.
pub async fn health_detailed(State(state): State<AppState>) -> impl IntoResponse {
    let started = Instant::now();
    let database = match state.store.ping().await {
        Ok(()) => ComponentHealth {
            status: "healthy".into(),
            detail: Some(state.store.dialect().name().into()),
            latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
        },
        Err(e) => ComponentHealth {
            status: "unhealthy".into(),
            detail: Some(e.to_string()),
            latency_ms: None,
        },
    };
    let not_configured = || ComponentHealth {
        status: "not_configured".into(),
        detail: Some("started with --runtime none: sessions get no computer".into()),
        latency_ms: None,
    };
    let (runtime, image) = match &state.runtime {
        None => (not_configured(), not_configured()),
        Some(rt) => {
            let runtime = ComponentHealth {
                status: "healthy".into(),
                detail: Some(format!(
                    "local: {} of at most {} computers running",
                    rt.running().len(),
                    state.config.max_sessions
                )),
                latency_ms: None,
            };
            let image = match crate::computers::image_name(&state.config) {
                Some((name, dir)) => ComponentHealth {
                    status: "healthy".into(),
                    detail: Some(format!("{name} in {}", dir.display())),
                    latency_ms: None,
                },
                None => ComponentHealth {
                    status: "unhealthy".into(),
                    detail: Some("the computer image is missing".into()),
                    latency_ms: None,
                },
            };
            (runtime, image)
        }
    };
    let agent = match &state.agents {
        None => ComponentHealth {
            status: "not_configured".into(),
            detail: Some("no computers, so no agent: messages are only stored".into()),
            latency_ms: None,
        },
        Some(agents) => match agents.describe() {
            ("mock", _) => ComponentHealth {
                status: "mock".into(),
                detail: Some(
                    "no model key is configured: the mock agent answers (run `CMD`, open URL, \
                     take a screenshot, type TEXT, click X Y)"
                        .into(),
                ),
                latency_ms: None,
            },
            (provider, model) => ComponentHealth {
                status: "healthy".into(),
                detail: Some(format!("{provider}: {model}")),
                latency_ms: None,
            },
        },
    };
    let healthy = database.status == "healthy" && image.status != "unhealthy";
    let body = HealthDetailed {
        status: if healthy { "healthy" } else { "unhealthy" }.into(),
        service: SERVICE.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: state.started.elapsed().as_secs(),
        database,
        runtime,
        image,
        agent,
    };
    let status = if healthy {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.metrics.render(&state).await;
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Running computers and the limit (seed 004's worker status). Admins see
/// every computer; others see their own.
pub async fn workers_health(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<WorkersHealth>> {
    let running = state
        .runtime
        .as_ref()
        .map(|rt| rt.running())
        .unwrap_or_default();
    let mut computers = Vec::new();
    for id in &running {
        if let Some(s) = state.store.get_session(id).await? {
            if principal.can_access(&s) {
                computers.push(WorkerComputer {
                    memory_bytes: state
                        .runtime
                        .as_ref()
                        .and_then(|rt| rt.memory_bytes(id).ok()),
                    session_id: s.id,
                    state: s.state,
                });
            }
        }
    }
    let max = state.config.max_sessions;
    Ok(Json(WorkersHealth {
        status: "healthy".into(),
        runtime: if state.runtime.is_some() {
            "local"
        } else {
            "none"
        }
        .into(),
        running: running.len(),
        max_sessions: max,
        available: max.saturating_sub(running.len()),
        computers,
        warm_pool: state
            .runtime
            .as_ref()
            .and_then(|rt| rt.pool())
            .map(|p| WarmPool {
                target: p.target,
                ready: p.ready,
                claims: p.claims,
                misses: p.misses,
                last_fill_ms: p.last_fill_ms,
            }),
    }))
}
