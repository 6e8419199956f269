//! The router: every route, its middleware, and the OpenAPI document.

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::error_response;
use crate::routes::{audit, auth, computer, events, messages, operators, sessions, system, vnc};
use crate::state::AppState;
use crate::{audit as audit_log, metrics, request_id};

#[derive(OpenApi)]
#[openapi(
    info(title = "Raworc API", description = "Remote Agentic Work Orchestrator: sessions with dedicated computers."),
    modifiers(&BearerAuth),
    // Wildcard paths are routed by hand (below), so they are listed here.
    paths(computer::read_file, computer::write_file),
    // Sent in event streams (`deltas=true`), never as a body.
    components(schemas(raworc_api::EventDelta)),
    tags((name = "sessions"), (name = "computer"), (name = "messages"), (name = "events"), (name = "operators"), (name = "auth"), (name = "audit"), (name = "system"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(system::version))
        .routes(routes!(operators::list, operators::create))
        .routes(routes!(
            operators::get,
            operators::update,
            operators::delete
        ))
        .routes(routes!(operators::set_password))
        .routes(routes!(auth::login))
        .routes(routes!(auth::whoami))
        .routes(routes!(auth::mint_token))
        .routes(routes!(sessions::list, sessions::create))
        .routes(routes!(sessions::get, sessions::update, sessions::delete))
        .routes(routes!(sessions::set_state))
        .routes(routes!(sessions::close))
        .routes(routes!(sessions::restore))
        .routes(routes!(sessions::remix))
        .routes(routes!(computer::screenshot))
        .routes(routes!(computer::computer))
        .routes(routes!(computer::exec))
        .routes(routes!(computer::list_files))
        .routes(routes!(messages::list, messages::post, messages::clear))
        .routes(routes!(messages::count))
        .routes(routes!(events::sessions_stream))
        .routes(routes!(events::list))
        .routes(routes!(events::stream))
        .routes(routes!(events::screenshot))
        .routes(routes!(events::cancel))
        .routes(routes!(audit::list))
        .routes(routes!(system::health))
}

/// The whole application for `state`.
pub fn router(state: AppState) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v0", api_routes())
        .split_for_parts();
    let body_limit = state.config.body_limit;
    Router::new()
        .merge(api)
        .route(
            "/api/v0/sessions/{id}/files/{*path}",
            get(computer::read_file).put(computer::write_file),
        )
        .route("/vnc/{id}/info", get(vnc::info))
        .route("/vnc/{id}/stream", get(vnc::stream))
        .route("/ws/{id}/stream", get(events::websocket))
        .route("/sessions/workers/health", get(system::workers_health))
        .route("/health", get(system::health))
        .route("/health/", get(system::health))
        .route("/health/detailed", get(system::health_detailed))
        .route("/metrics", get(system::metrics))
        .merge(SwaggerUi::new("/docs").url("/api/v0/openapi.json", doc))
        .merge(crate::web::routes(
            &state
                .config
                .web_dir
                .clone()
                .unwrap_or_else(crate::web::default_dir),
        ))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            audit_log::middleware,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::middleware,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        .layer(middleware::from_fn(request_id::middleware))
        .layer(middleware::from_fn(json_errors))
        .layer(CatchPanicLayer::custom(|_| {
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the server log".into(),
            )
        }))
}

async fn not_found(req: Request) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// Rewrites any error response that is not already JSON (framework
/// rejections, 405s) into the API's `{"error", "status"}` shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut fixed = (
        status,
        Json(raworc_api::ErrorBody {
            error: message,
            status: status.as_u16(),
        }),
    )
        .into_response();
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}
