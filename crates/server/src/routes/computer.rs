//! The direct computer API: screenshots, computer-tool actions, commands
//! and files on a session's running computer, through its host.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use raworc_api::{
    ComputerOutput, DirListing, ErrorBody, ExecCommand, ExecOutput, FileEntry, FileKind, ListFiles,
    SessionState,
};
use raworc_host::client::{HostClient, HostError};
use raworc_host::proto::{EntryKind, ExecRequest};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::sessions::visible_session;
use crate::state::AppState;
use crate::validate;

/// Longest command time the API accepts, in seconds.
const MAX_EXEC_TIMEOUT_S: u64 = 3600;

/// The host of session `id`'s computer, if the caller may use it and it runs.
async fn host(state: &AppState, principal: &Principal, id: &str) -> ApiResult<HostClient> {
    let session = visible_session(state, principal, id).await?;
    if session.state != SessionState::Running {
        return Err(ApiError::conflict(format!(
            "session '{id}' is {}; its computer can be used only while it is running",
            session.state
        )));
    }
    state.touch(id);
    let runtime = state.runtime.as_ref().ok_or_else(|| {
        ApiError::conflict("this server runs no computers (started with --runtime none)")
    })?;
    runtime.host(id).map_err(|_| {
        ApiError::conflict(format!(
            "the computer of session '{id}' is not running at the moment; try again shortly"
        ))
    })
}

/// The host's refusals (bad coordinates, unknown action, missing file) keep
/// their status; its failures become 502, its silence 504.
fn host_error(e: HostError) -> ApiError {
    match e {
        HostError::Status { status, message } if (400..500).contains(&status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            ApiError::new(status, message)
        }
        HostError::Status { message, .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the computer failed: {message}"),
        ),
        HostError::Timeout(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
        HostError::Unreachable(_) | HostError::Protocol(_) => {
            ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}

/// The computer's screen as a PNG at the display's size.
#[utoipa::path(get, path = "/sessions/{id}/screenshot", tag = "computer", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, content_type = "image/png", description = "the screen"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn screenshot(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let host = host(&state, &principal, &id).await?;
    let png = host.screenshot().await.map_err(host_error)?;
    Ok(([(CONTENT_TYPE, "image/png")], png).into_response())
}

/// Runs one action of the computer-use tool; the body is exactly the tool's
/// input (`{"action": "left_click", "coordinate": [x, y]}`, …).
#[utoipa::path(post, path = "/sessions/{id}/computer", tag = "computer", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = Object,
    responses((status = 200, body = ComputerOutput), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn computer(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<serde_json::Value>,
) -> ApiResult<Json<ComputerOutput>> {
    let host = host(&state, &principal, &id).await?;
    let result = host.computer(&input).await.map_err(host_error)?;
    Ok(Json(ComputerOutput {
        output: result.output,
        image: result.image,
    }))
}

/// Runs a shell command as the computer's user, in `/session`.
#[utoipa::path(post, path = "/sessions/{id}/exec", tag = "computer", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = ExecCommand,
    responses((status = 200, body = ExecOutput), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn exec(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ExecCommand>,
) -> ApiResult<Json<ExecOutput>> {
    if body.command.trim().is_empty() {
        return Err(ApiError::unprocessable("command: must not be empty"));
    }
    validate::content("command", &body.command)?;
    if let Some(t) = body.timeout_s {
        if !(1..=MAX_EXEC_TIMEOUT_S).contains(&t) {
            return Err(ApiError::unprocessable(format!(
                "timeout_s: must be between 1 and {MAX_EXEC_TIMEOUT_S}"
            )));
        }
    }
    let host = host(&state, &principal, &id).await?;
    let result = host
        .exec(&ExecRequest {
            command: body.command,
            timeout_s: body.timeout_s,
        })
        .await
        .map_err(host_error)?;
    Ok(Json(ExecOutput {
        exit_code: result.exit_code,
        stdout: result.stdout,
        stderr: result.stderr,
        timed_out: result.timed_out,
        truncated: result.truncated,
    }))
}

/// Downloads the file at `/{path}` inside the computer.
#[utoipa::path(get, path = "/api/v0/sessions/{id}/files/{path}", tag = "computer", security(("bearer" = [])),
    params(("id" = String, Path), ("path" = String, Path, description = "path inside the computer, without the leading '/'")),
    responses((status = 200, content_type = "application/octet-stream", description = "the file's bytes"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn read_file(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, path)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let host = host(&state, &principal, &id).await?;
    // Streamed as the computer sends it: no file is held whole in memory.
    let body = host
        .read_file_stream(&format!("/{path}"))
        .await
        .map_err(host_error)?;
    Ok((
        [(CONTENT_TYPE, "application/octet-stream")],
        axum::body::Body::new(body),
    )
        .into_response())
}

/// Uploads the body as the file at `/{path}` inside the computer (parent
/// directories are made; the file belongs to the computer's user).
#[utoipa::path(put, path = "/api/v0/sessions/{id}/files/{path}", tag = "computer", security(("bearer" = [])),
    params(("id" = String, Path), ("path" = String, Path, description = "path inside the computer, without the leading '/'")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204, description = "written"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn write_file(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, path)): ApiPath<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let host = host(&state, &principal, &id).await?;
    host.write_file(&format!("/{path}"), body)
        .await
        .map_err(host_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The directory a listing asks for, normalised: an absolute path under the
/// host's rules for file paths (no `..`, no NUL), refused here so that the
/// error names the parameter.
fn listed_dir(path: &str) -> ApiResult<String> {
    if !path.starts_with('/') {
        return Err(ApiError::bad_request(
            "path: must be an absolute path inside the computer (starting with '/')",
        ));
    }
    raworc_host::files::resolve_dir(path)
        .map(|p| p.display().to_string())
        .map_err(|e| ApiError::bad_request(format!("path: {e}")))
}

/// Lists the directory `path` inside the computer, read by the computer's
/// user: directories first, then by name; at most 10 000 entries.
#[utoipa::path(get, path = "/sessions/{id}/files", tag = "computer", security(("bearer" = [])),
    params(("id" = String, Path), ListFiles),
    responses((status = 200, body = DirListing),
        (status = 400, body = ErrorBody, description = "a bad path, or not a directory"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn list_files(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListFiles>,
) -> ApiResult<Json<DirListing>> {
    let path = listed_dir(&query.path)?;
    let host = host(&state, &principal, &id).await?;
    let listing = host.list_dir(&path).await.map_err(host_error)?;
    Ok(Json(DirListing {
        path: listing.path,
        entries: listing
            .entries
            .into_iter()
            .map(|e| FileEntry {
                name: e.name,
                kind: match e.kind {
                    EntryKind::File => FileKind::File,
                    EntryKind::Dir => FileKind::Dir,
                    EntryKind::Link => FileKind::Link,
                    EntryKind::Other => FileKind::Other,
                },
                size: e.size,
                modified: raworc_api::timestamp_from_millis(e.modified_ms),
            })
            .collect(),
        truncated: listing.truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::listed_dir;

    #[test]
    fn a_listed_directory_is_absolute_and_never_climbs() {
        assert_eq!(listed_dir("/session/data/").unwrap(), "/session/data");
        assert_eq!(listed_dir("/").unwrap(), "/");
        for bad in ["", "session/data", "../x", "/session/../etc", "/a\0b"] {
            let e = listed_dir(bad).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{bad:?}");
            assert!(e.message.starts_with("path: "), "{bad:?}: {}", e.message);
        }
    }
}
