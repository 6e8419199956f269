//! The host's HTTP API on its unix socket (see [`crate::proto`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{watch, Notify};

use crate::computer::{Action, ActionError, Computer};
use crate::exec::{self, Environment};
use crate::files::{self, FileError};
use crate::proto::{DesktopReady, ErrorBody, ExecRequest, Ready, SessionConfig};

/// Where bring-up stands: not yet, done, or failed with a reason.
pub type Readiness = Option<Result<Ready, String>>;
/// Where the desktop stands, session or not.
pub type Painted = Option<Result<DesktopReady, String>>;

pub struct HostState {
    /// The environment of programs started before the session is known.
    pub env: Environment,
    /// With the session's secrets, once it is known.
    pub session_env: OnceLock<Environment>,
    /// The session this computer serves: set once.
    pub session: watch::Sender<Option<SessionConfig>>,
    pub ready: watch::Receiver<Readiness>,
    pub painted: watch::Receiver<Painted>,
    pub computer: OnceLock<Computer>,
    pub shutdown: Arc<Notify>,
}

pub struct Error(StatusCode, String);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<FileError> for Error {
    fn from(e: FileError) -> Error {
        use std::io::ErrorKind;
        let status = match (&e, e.kind()) {
            (FileError::BadPath(_), _) => StatusCode::BAD_REQUEST,
            (_, Some(ErrorKind::NotFound)) => StatusCode::NOT_FOUND,
            (_, Some(ErrorKind::PermissionDenied)) => StatusCode::FORBIDDEN,
            (_, Some(ErrorKind::NotADirectory | ErrorKind::IsADirectory)) => {
                StatusCode::BAD_REQUEST
            }
            (FileError::Body(_), _) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Error(status, e.to_string())
    }
}

impl From<ActionError> for Error {
    fn from(e: ActionError) -> Error {
        let status = match e {
            ActionError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ActionError::OutOfRange(_) => StatusCode::BAD_REQUEST,
            ActionError::Screen(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Error(status, e.to_string())
    }
}

type Shared = Arc<HostState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/session", post(assign_session))
        .route("/v1/desktop", get(desktop))
        .route("/v1/ready", get(ready))
        .route("/v1/exec", post(exec_command))
        .route("/v1/files/{*path}", get(download).put(upload))
        .route("/v1/screenshot", get(screenshot))
        .route("/v1/computer", post(computer))
        .route("/v1/shutdown", post(shutdown))
        .with_state(state)
}

/// How long one waiting call waits before it answers "still starting".
const WAIT: Duration = Duration::from_secs(60);

/// Waits up to [`WAIT`] for `rx` to hold an outcome, and answers with it.
async fn outcome_of<T: Clone>(
    mut rx: watch::Receiver<Option<Result<T, String>>>,
) -> Result<Json<T>, Error> {
    let waited = tokio::time::timeout(WAIT, rx.wait_for(|r| r.is_some())).await;
    let current = match waited {
        Ok(Ok(r)) => r.clone(),
        Ok(Err(_)) => Some(Err("the host is shutting down".to_owned())),
        Err(_) => None,
    };
    match current {
        Some(Ok(value)) => Ok(Json(value)),
        Some(Err(reason)) => Err(Error(StatusCode::INTERNAL_SERVER_ERROR, reason)),
        None => Err(Error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the computer is still starting".into(),
        )),
    }
}

/// Gives the computer its session; a computer serves one session only.
async fn assign_session(
    State(state): State<Shared>,
    Json(session): Json<SessionConfig>,
) -> Result<Json<serde_json::Value>, Error> {
    let mut session = Some(session);
    let taken = state.session.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = session.take();
        true
    });
    if taken {
        Ok(Json(serde_json::json!({ "assigned": true })))
    } else {
        Err(Error(
            StatusCode::CONFLICT,
            "this computer serves a session already".into(),
        ))
    }
}

/// Waits until the desktop is painted, session or not.
async fn desktop(State(state): State<Shared>) -> Result<Json<DesktopReady>, Error> {
    outcome_of(state.painted.clone()).await
}

/// Waits until bring-up has finished: desktop painted, setup run.
async fn ready(State(state): State<Shared>) -> Result<Json<Ready>, Error> {
    outcome_of(state.ready.clone()).await
}

fn computer_of(state: &HostState) -> Result<&Computer, Error> {
    state.computer.get().ok_or_else(|| {
        Error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the display is not up yet".into(),
        )
    })
}

async fn exec_command(
    State(state): State<Shared>,
    Json(req): Json<ExecRequest>,
) -> Result<Json<crate::proto::ExecResult>, Error> {
    let timeout = req
        .timeout_s
        .map(Duration::from_secs)
        .unwrap_or(exec::DEFAULT_TIMEOUT);
    if timeout.is_zero() || timeout > exec::MAX_TIMEOUT {
        return Err(Error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "timeout_s must be from 1 to {}",
                exec::MAX_TIMEOUT.as_secs()
            ),
        ));
    }
    let env = state.session_env.get().unwrap_or(&state.env);
    exec::run(env, &req.command, "/session", timeout)
        .await
        .map(Json)
        .map_err(|e| Error(StatusCode::INTERNAL_SERVER_ERROR, format!("exec: {e}")))
}

async fn download(Path(path): Path<String>) -> Result<Response, Error> {
    let path = files::resolve(&path)?;
    let (file, len) = files::open(&path).await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

async fn upload(Path(path): Path<String>, body: Body) -> Result<StatusCode, Error> {
    let path = files::resolve(&path)?;
    files::write(&path, body.into_data_stream()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn screenshot(State(state): State<Shared>) -> Result<Response, Error> {
    let png = computer_of(&state)?
        .screenshot_png()
        .await
        .map_err(|e| Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

async fn computer(
    State(state): State<Shared>,
    Json(input): Json<serde_json::Value>,
) -> Result<Json<crate::proto::ComputerResult>, Error> {
    let computer = computer_of(&state)?;
    let action = Action::parse(&input, computer.size())?;
    Ok(Json(computer.run(action).await?))
}

async fn shutdown(State(state): State<Shared>) -> StatusCode {
    state.shutdown.notify_one();
    StatusCode::ACCEPTED
}
