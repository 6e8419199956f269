//! The web page: `GET /` and its files under `/ui/`, served from the web
//! directory (`--web-dir`; by default the `web/` folder of the source tree
//! this binary was built from), with noVNC from that folder's npm packages
//! at `/ui/novnc/`. Plain ES modules: nothing to build but `npm ci`.

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};

use crate::error::error_response;
use crate::state::AppState;

/// The `web/` folder of the source tree (the default web directory).
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

/// The page's routes over `dir`.
pub fn routes(dir: &Path) -> Router<AppState> {
    let public = dir.join("public");
    if !public.join("index.html").is_file() {
        let missing = format!(
            "the web page's files are not at {} (set --web-dir to the repository's web/ folder)",
            public.display()
        );
        return Router::new().route(
            "/",
            axum::routing::get(move || async move { missing_page(missing) }),
        );
    }
    let novnc = dir.join("node_modules/@novnc/novnc");
    Router::new()
        .route_service("/", ServeFile::new(public.join("index.html")))
        .nest_service("/ui/novnc", ServeDir::new(novnc))
        .nest_service("/ui", ServeDir::new(public))
}

fn missing_page(why: String) -> Response {
    error_response(StatusCode::NOT_FOUND, why).into_response()
}
