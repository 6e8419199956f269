//! Version, health and metrics.

use std::time::Instant;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use raworc_api::{ComponentHealth, Health, HealthDetailed, VersionInfo, API_VERSION};

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

/// Liveness: answers as long as the process serves HTTP.
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
    let not_yet = || ComponentHealth {
        status: "not_configured".into(),
        detail: Some("sessions stay 'created' until a computer runtime is configured".into()),
        latency_ms: None,
    };
    let healthy = database.status == "healthy";
    let body = HealthDetailed {
        status: if healthy { "healthy" } else { "unhealthy" }.into(),
        service: SERVICE.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: state.started.elapsed().as_secs(),
        database,
        runtime: not_yet(),
        image: not_yet(),
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
