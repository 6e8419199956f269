//! Watching (and taking over) a computer's desktop: `GET /vnc/{id}/info`
//! and `WS /vnc/{id}/stream`, a byte-for-byte RFB-over-WebSocket relay to
//! the computer's VNC server that noVNC can use. Viewers are view-only
//! ([`crate::rfb::ViewOnly`]) unless they ask for control (`?control=true`).
//! The stream, which browsers open with `?token=` (a WebSocket cannot carry
//! headers from a page), closes when that token expires.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use futures::{SinkExt, StreamExt};
use raworc_api::SessionState;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::principal::HeaderOrQueryPrincipal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::rfb::ViewOnly;
use crate::routes::sessions::visible_session;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// Send keyboard and pointer input too (default: view only).
    #[serde(default)]
    control: bool,
}

#[derive(Debug, Serialize)]
pub struct VncInfo {
    session_id: String,
    state: SessionState,
    /// Whether the stream can be opened now (the session is running).
    available: bool,
    /// Where to open the WebSocket (add `?token=` and `&control=true`).
    websocket_path: String,
    protocol: &'static str,
    width: u16,
    height: u16,
    /// Viewers only watch unless they ask for control.
    view_only_default: bool,
}

/// How to connect to the computer's desktop.
pub async fn info(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<VncInfo>> {
    let session = visible_session(&state, &principal, &id).await?;
    let available = session.state == SessionState::Running
        && state
            .runtime
            .as_ref()
            .is_some_and(|rt| rt.host(&id).is_ok());
    let (width, height) = state.config.display_size;
    Ok(Json(VncInfo {
        websocket_path: format!("/vnc/{id}/stream"),
        session_id: id,
        state: session.state,
        available,
        protocol: "rfb",
        width,
        height,
        view_only_default: true,
    }))
}

/// The desktop as an RFB stream over a WebSocket (binary frames).
pub async fn stream(
    State(state): State<AppState>,
    HeaderOrQueryPrincipal(principal): HeaderOrQueryPrincipal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let session = visible_session(&state, &principal, &id).await?;
    if session.state != SessionState::Running {
        return Err(ApiError::conflict(format!(
            "session '{id}' is {}; its desktop can be watched only while it is running",
            session.state
        )));
    }
    let runtime = state.runtime.as_ref().ok_or_else(|| {
        ApiError::conflict("this server runs no computers (started with --runtime none)")
    })?;
    let vnc = runtime.vnc(&id).await.map_err(|e| match e {
        raworc_runtime::RuntimeError::NotRunning(_) => ApiError::conflict(format!(
            "the computer of session '{id}' is not running at the moment"
        )),
        other => ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            format!("the computer's desktop is unreachable: {other}"),
        ),
    })?;
    let control = query.control;
    state.touch(&id);
    tracing::info!(session = %id, viewer = %principal.name, control, "desktop stream opened");
    // The stream ends when the token that opened it would, or at shutdown.
    let end = state.stream_end(&principal);
    Ok(ws.protocols(["binary"]).on_upgrade(move |ws| async move {
        let relay = relay(ws, vnc, control, || state.touch(&id));
        let outcome = tokio::select! {
            r = relay => r,
            _ = end => Ok(()),
        };
        if let Err(e) = outcome {
            tracing::debug!(session = %id, error = %e, "desktop stream ended");
        }
    }))
}

/// Copies bytes both ways until either side closes; `used` is called for
/// each message from the viewer.
async fn relay(
    ws: WebSocket,
    vnc: tokio::net::UnixStream,
    control: bool,
    used: impl Fn(),
) -> anyhow::Result<()> {
    let (mut vnc_read, mut vnc_write) = vnc.into_split();
    let (mut ws_send, mut ws_recv) = ws.split();
    let to_viewer = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = vnc_read.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            ws_send
                .send(Message::Binary(buf[..n].to_vec().into()))
                .await?;
        }
        let _ = ws_send.send(Message::Close(None)).await;
        anyhow::Ok(())
    };
    let to_computer = async {
        let mut guard = (!control).then(ViewOnly::default);
        while let Some(message) = ws_recv.next().await {
            used();
            let bytes = match message? {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let bytes = match &mut guard {
                Some(g) => g.feed(&bytes)?.into(),
                None => bytes,
            };
            vnc_write.write_all(&bytes).await?;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = to_viewer => r,
        r = to_computer => r,
    }
}
