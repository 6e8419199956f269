//! The host's HTTP API on its unix socket (see [`crate::proto`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{watch, Notify};

use crate::bash::{self, Bash};
use crate::computer::{Action, ActionError, Computer, Space};
use crate::editor::Editor;
use crate::exec::{self, Environment};
use crate::files::{self, FileError};
use crate::proto::{
    BashRequest, DesktopReady, DirListing, DisplaySize, EditRequest, ErrorBody, ExecRequest, Ready,
    SessionConfig, ToolOutput,
};

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
    /// The bash tool's shell, one per computer.
    pub bash: Bash,
    /// The text editor tool, with its undo history.
    pub editor: Editor,
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
        .route("/v1/dir", get(list_root))
        .route("/v1/dir/{*path}", get(list_dir))
        .route("/v1/screenshot", get(screenshot))
        .route("/v1/computer", post(computer))
        .route("/v1/bash", post(bash_tool))
        .route("/v1/edit", post(edit_tool))
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

/// The environment of what the host starts now: the session's once known.
fn env_of(state: &HostState) -> &Environment {
    state.session_env.get().unwrap_or(&state.env)
}

/// A call's `timeout_s` (or `default`), from 1 s to [`exec::MAX_TIMEOUT`].
fn timeout_of(requested: Option<u64>, default: Duration) -> Result<Duration, Error> {
    let timeout = requested.map(Duration::from_secs).unwrap_or(default);
    if timeout.is_zero() || timeout > exec::MAX_TIMEOUT {
        return Err(Error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "timeout_s must be from 1 to {}",
                exec::MAX_TIMEOUT.as_secs()
            ),
        ));
    }
    Ok(timeout)
}

async fn exec_command(
    State(state): State<Shared>,
    Json(req): Json<ExecRequest>,
) -> Result<Json<crate::proto::ExecResult>, Error> {
    let timeout = timeout_of(req.timeout_s, exec::DEFAULT_TIMEOUT)?;
    exec::run(env_of(&state), &req.command, "/session", timeout)
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

/// The root's listing: a wildcard route needs at least one segment.
async fn list_root() -> Result<Json<DirListing>, Error> {
    listing("/").await
}

async fn list_dir(Path(path): Path<String>) -> Result<Json<DirListing>, Error> {
    listing(&path).await
}

async fn listing(path: &str) -> Result<Json<DirListing>, Error> {
    let path = files::resolve_dir(path)?;
    Ok(Json(files::list(&path, files::MAX_ENTRIES).await?))
}

/// `?settle_ms=N`: wait until the screen has settled (at most N ms) first.
#[derive(serde::Deserialize)]
struct ScreenshotQuery {
    settle_ms: Option<u64>,
    /// `WxH`: the model's coordinate space (see [`Space`]).
    space: Option<String>,
}

/// `?space=WxH`: the coordinate space of a model told of a screen no
/// larger than the real one.
#[derive(serde::Deserialize)]
struct SpaceQuery {
    space: Option<String>,
}

/// The model space `WxH` names on `computer`'s screen.
fn space_of(spec: Option<&str>, computer: &Computer) -> Result<Option<Space>, Error> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let screen = computer.size();
    let bad = || {
        Error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "space must be WIDTHxHEIGHT within the {}x{} screen",
                screen.width, screen.height
            ),
        )
    };
    let (w, h) = spec.split_once('x').ok_or_else(bad)?;
    let (width, height) = (
        w.parse::<u16>().map_err(|_| bad())?,
        h.parse::<u16>().map_err(|_| bad())?,
    );
    if width == 0 || height == 0 || width > screen.width || height > screen.height {
        return Err(bad());
    }
    let model = DisplaySize { width, height };
    Ok((model != screen).then_some(Space { model, screen }))
}

async fn screenshot(
    State(state): State<Shared>,
    Query(q): Query<ScreenshotQuery>,
) -> Result<Response, Error> {
    let computer = computer_of(&state)?;
    let space = space_of(q.space.as_deref(), computer)?;
    let failed =
        |e: crate::screen::ScreenError| Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let (png, waited) = match q.settle_ms {
        Some(ms) => computer
            .settled_screenshot(Duration::from_millis(ms.min(10_000)), space)
            .await
            .map_err(failed)?,
        None => (
            // The desktop as it is, unless asked as the computer tool sees it.
            match space {
                Some(_) => computer.screenshot_in(space).await.map_err(failed)?,
                None => computer.screenshot_png().await.map_err(failed)?,
            },
            Duration::ZERO,
        ),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/png".to_owned()),
            (
                header::HeaderName::from_static("x-settled-ms"),
                waited.as_millis().to_string(),
            ),
        ],
        png,
    )
        .into_response())
}

async fn computer(
    State(state): State<Shared>,
    Query(q): Query<SpaceQuery>,
    Json(input): Json<serde_json::Value>,
) -> Result<Json<crate::proto::ComputerResult>, Error> {
    let computer = computer_of(&state)?;
    let space = space_of(q.space.as_deref(), computer)?;
    let action = match space {
        Some(space) => Action::parse_in(&input, space)?,
        None => Action::parse(&input, computer.size())?,
    };
    Ok(Json(computer.run_in(action, space).await?))
}

/// Runs a tool call in a task of its own: a client that goes away must not
/// cut a call off halfway (the shell would be left mid-command, an edit
/// without its undo entry).
async fn detached<T: Send + 'static>(
    call: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(call).await.map_err(|e| {
        Error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the tool call failed: {e}"),
        )
    })?
}

async fn bash_tool(
    State(state): State<Shared>,
    Json(req): Json<BashRequest>,
) -> Result<Json<ToolOutput>, Error> {
    let timeout = timeout_of(req.timeout_s, bash::DEFAULT_TIMEOUT)?;
    detached(async move {
        state
            .bash
            .run(env_of(&state), &req, timeout)
            .await
            .map(Json)
            .map_err(|e| Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await
}

async fn edit_tool(
    State(state): State<Shared>,
    Json(req): Json<EditRequest>,
) -> Result<Json<ToolOutput>, Error> {
    detached(async move {
        state
            .editor
            .run(env_of(&state), &req)
            .await
            .map(Json)
            .map_err(|e| Error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
    })
    .await
}

async fn shutdown(State(state): State<Shared>) -> StatusCode {
    state.shutdown.notify_one();
    StatusCode::ACCEPTED
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{HostClient, HostError};
    use serde_json::json;

    /// A host with no display, serving its socket in `dir`.
    fn serve(dir: &std::path::Path) {
        let state = Arc::new(HostState {
            env: Environment::base(":0"),
            session_env: OnceLock::new(),
            session: watch::channel(None).0,
            ready: watch::channel(None).1,
            painted: watch::channel(None).1,
            computer: OnceLock::new(),
            bash: Bash::new(dir),
            editor: Editor::new(),
            shutdown: Arc::new(Notify::new()),
        });
        let listener = tokio::net::UnixListener::bind(dir.join(crate::proto::SOCKET)).unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
    }

    #[tokio::test]
    async fn directories_are_listed_over_the_socket_with_file_errors_kept() {
        let dir = tempfile::Builder::new().prefix("host").tempdir().unwrap();
        serve(dir.path());
        let client = HostClient::new(dir.path());
        let data = dir.path().join("a b");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("f.txt"), "abc").unwrap();
        let path = data.display().to_string();

        let listing = client.list_dir(&format!("{path}/")).await.unwrap();
        assert_eq!(listing.path, path);
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(
            (
                listing.entries[0].name.as_str(),
                listing.entries[0].kind,
                listing.entries[0].size
            ),
            ("f.txt", crate::proto::EntryKind::File, 3)
        );
        let root = client.list_dir("/").await.unwrap();
        assert_eq!(root.path, "/");
        assert!(root.entries.iter().any(|e| e.name == "tmp"));
        let status = |r: Result<DirListing, HostError>| match r {
            Err(HostError::Status { status, .. }) => status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(client.list_dir(&format!("{path}/f.txt")).await), 400);
        assert_eq!(status(client.list_dir(&format!("{path}/gone")).await), 404);
    }

    #[tokio::test]
    async fn the_bash_and_editor_tools_answer_over_the_socket() {
        let dir = tempfile::Builder::new().prefix("host").tempdir().unwrap();
        serve(dir.path());
        let client = HostClient::new(dir.path());

        let run = |command: &str| BashRequest {
            command: Some(command.to_owned()),
            ..BashRequest::default()
        };
        client.bash(&run("cd /tmp; X=1")).await.unwrap();
        assert_eq!(
            client
                .bash(&run("echo $PWD $X; echo no >&2"))
                .await
                .unwrap(),
            ToolOutput {
                output: Some("/tmp 1".into()),
                error: Some("no".into()),
                system: None,
            }
        );
        assert_eq!(
            client.bash(&BashRequest::default()).await.unwrap(),
            ToolOutput::error("no command provided.")
        );
        let zero = BashRequest {
            timeout_s: Some(0),
            ..run("true")
        };
        assert!(matches!(
            client.bash(&zero).await,
            Err(HostError::Status { status: 422, .. })
        ));

        let path = dir.path().join("f.txt").display().to_string();
        let edit = |input: serde_json::Value| EditRequest {
            tool_name: "str_replace_based_edit_tool".into(),
            undo: false,
            max_characters: None,
            input,
        };
        let created = client
            .edit(&edit(
                json!({"command": "create", "path": path, "file_text": "a\n"}),
            ))
            .await
            .unwrap();
        assert_eq!(
            created,
            ToolOutput::output(format!("File created successfully at: {path}"))
        );
        let again = client
            .edit(&edit(
                json!({"command": "create", "path": path, "file_text": "a\n"}),
            ))
            .await
            .unwrap();
        assert_eq!(
            again,
            ToolOutput::error(format!(
                "File already exists at: {path}. Cannot overwrite files using command `create`."
            ))
        );
        assert!(matches!(
            client.edit(&edit(json!("view"))).await,
            Err(HostError::Status { status: 422, .. })
        ));
    }
}
