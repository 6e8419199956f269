//! A session's events — listed, streamed as server-sent events and over a
//! WebSocket in seed 004's shape — its agent's screenshots, and cancelling
//! the agent.
//!
//! A stream subscribes to the store's announcements first, then reads the
//! table from the client's `after` (or `Last-Event-ID`), and reads it again
//! on each announcement of its session: every event reaches the client
//! once, in `seq` order, whether it was written before or after the client
//! connected.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{SinkExt, Stream, StreamExt};
use raworc_api::{timestamp_from_millis, Cancelled, ErrorBody, Event, EventQuery};
use raworc_store::{EventRow, Store};
use serde_json::json;
use tokio::sync::broadcast;

use crate::auth::principal::HeaderOrQueryPrincipal;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::routes::sessions::visible_session;
use crate::state::AppState;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

pub(crate) fn event_json(e: EventRow) -> Event {
    let at = timestamp_from_millis(e.created_at);
    Event {
        session_id: e.session_id,
        seq: e.seq,
        kind: e.kind,
        content: e.content,
        metadata: e.metadata,
        created_at: at,
        timestamp: at,
    }
}

/// Events in `seq` order; `after=<seq>` returns only newer ones.
#[utoipa::path(get, path = "/sessions/{id}/events", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path), EventQuery),
    responses((status = 200, body = [Event]), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    visible_session(&state, &principal, &id).await?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::unprocessable(format!(
            "limit: must be between 1 and {MAX_LIMIT}"
        )));
    }
    let rows = state
        .store
        .list_events(&id, q.after.unwrap_or(0).max(0), limit)
        .await?;
    Ok(Json(rows.into_iter().map(event_json).collect()))
}

/// Where a stream stands: what it has read and is about to send.
struct Cursor {
    store: Store,
    id: Arc<str>,
    after: i64,
    news: broadcast::Receiver<Arc<str>>,
    ready: VecDeque<EventRow>,
    /// The session was deleted: nothing more will come, and its viewers
    /// may no longer see it.
    ended: bool,
}

/// The session's events after `after`, then each new one as it is written,
/// until the session's deletion.
fn events_after(store: Store, id: &str, after: i64) -> impl Stream<Item = EventRow> {
    let cursor = Cursor {
        news: store.subscribe_events(),
        store,
        id: Arc::from(id),
        after,
        ready: VecDeque::new(),
        ended: false,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if c.ended {
                return None;
            }
            if let Some(e) = c.ready.pop_front() {
                c.ended = e.kind == raworc_store::event_kind::STATE && e.content == "deleted";
                return Some((e, c));
            }
            match c.store.list_events(&c.id, c.after, 500).await {
                Ok(rows) if !rows.is_empty() => {
                    c.after = rows.last().map_or(c.after, |r| r.seq);
                    c.ready.extend(rows);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(session = %c.id, error = %e, "event stream: reading events failed");
                    return None;
                }
            }
            // Wait for news of this session; a lagging receiver reads again.
            loop {
                match c.news.recv().await {
                    Ok(s) if s == c.id => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
}

/// Where a stream starts: `Last-Event-ID` (a reconnecting `EventSource`),
/// else `after`, else the beginning.
fn start_of(headers: &HeaderMap, after: Option<i64>) -> ApiResult<i64> {
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID: must be an event's seq")),
        None => Ok(after.unwrap_or(0).max(0)),
    }
}

/// Server-sent events with keep-alives (a client that left is noticed).
fn sse(events: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The events as server-sent events (`id` = seq, `event` = type, `data` =
/// the event as JSON); reconnecting with `Last-Event-ID` or `?after=`
/// misses nothing.
#[utoipa::path(get, path = "/sessions/{id}/events/stream", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path), EventQuery),
    responses((status = 200, content_type = "text/event-stream", description = "the events, live"),
        (status = 404, body = ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    HeaderOrQueryPrincipal(principal): HeaderOrQueryPrincipal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    visible_session(&state, &principal, &id).await?;
    let after = start_of(&headers, q.after)?;
    let events = events_after(state.store.clone(), &id, after).map(|e| {
        let id = e.seq.to_string();
        let kind = e.kind.clone();
        let data = serde_json::to_string(&event_json(e)).unwrap_or_default();
        Ok::<_, Infallible>(SseEvent::default().id(id).event(kind).data(data))
    });
    Ok(sse(events.take_until(state.stream_end(&principal))))
}

/// An event in seed 004's WebSocket shape.
fn agent_update(e: EventRow) -> String {
    let at = timestamp_from_millis(e.created_at);
    let mut metadata = e.metadata;
    if let Some(m) = metadata.as_object_mut() {
        m.insert("seq".into(), json!(e.seq));
    }
    json!({
        "type": "agent_update",
        "update_type": e.kind,
        "content": e.content,
        "timestamp": at,
        "metadata": metadata,
        "seq": e.seq,
    })
    .to_string()
}

/// The events over a WebSocket (seed 004): a `connected` greeting, then
/// `agent_update`s; `{"type":"ping"}` is answered with `pong`. `?after=`
/// resumes after an event seen before.
pub async fn websocket(
    State(state): State<AppState>,
    HeaderOrQueryPrincipal(principal): HeaderOrQueryPrincipal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    visible_session(&state, &principal, &id).await?;
    let after = q.after.unwrap_or(0).max(0);
    let store = state.store.clone();
    let end = state.stream_end(&principal);
    Ok(ws.on_upgrade(move |socket| async move {
        tokio::select! {
            _ = relay_events(socket, store, id, after) => {},
            _ = end => {},
        }
    }))
}

async fn relay_events(socket: WebSocket, store: Store, id: String, after: i64) {
    let (mut tx, mut rx) = socket.split();
    let hello = json!({
        "type": "connected",
        "session_id": id,
        "timestamp": chrono::Utc::now(),
    });
    if tx
        .send(WsMessage::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut events = Box::pin(events_after(store, &id, after));
    loop {
        tokio::select! {
            e = events.next() => match e {
                Some(e) => {
                    if tx.send(WsMessage::Text(agent_update(e).into())).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            m = rx.next() => match m {
                Some(Ok(WsMessage::Text(t))) => {
                    let ping = serde_json::from_str::<serde_json::Value>(&t)
                        .is_ok_and(|v| v["type"] == "ping");
                    if ping {
                        let pong = json!({"type": "pong", "timestamp": chrono::Utc::now()});
                        if tx.send(WsMessage::Text(pong.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// A screenshot the agent took, as a PNG (events name them in `image_url`);
/// the token may come as `?token=`, for pages that show it as an image.
#[utoipa::path(get, path = "/sessions/{id}/screenshots/{shot}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path), ("shot" = String, Path)),
    responses((status = 200, content_type = "image/png", description = "the screenshot"),
        (status = 404, body = ErrorBody)))]
pub async fn screenshot(
    State(state): State<AppState>,
    // Pages show them as images, which cannot carry a header: `?token=` too.
    HeaderOrQueryPrincipal(principal): HeaderOrQueryPrincipal,
    ApiPath((id, shot)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    visible_session(&state, &principal, &id).await?;
    let missing = || ApiError::not_found(format!("screenshot '{shot}' not found"));
    let agents = state.agents.as_ref().ok_or_else(missing)?;
    if !raworc_agent::shots::valid_id(&shot) {
        return Err(missing());
    }
    let png = agents
        .shots()
        .load(&id, &shot)
        .await
        .map_err(|e| ApiError::internal(format!("reading the screenshot: {e}")))?
        .ok_or_else(missing)?;
    Ok(([(CONTENT_TYPE, "image/png")], png).into_response())
}

/// Stops the session's agent at its next step; its reply says it stopped.
#[utoipa::path(post, path = "/sessions/{id}/cancel", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 202, body = Cancelled), (status = 404, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<Cancelled>)> {
    visible_session(&state, &principal, &id).await?;
    // The audit middleware records the call.
    let cancelled = state.agents.as_ref().is_some_and(|a| a.cancel(&id));
    Ok((StatusCode::ACCEPTED, Json(Cancelled { cancelled })))
}

/// What happens to the caller's sessions, as server-sent events: a
/// `session` event with the session (state, `busy`, name, …) each time one
/// of them changes — created, started, paused, busy, deleted — and a
/// `resync` event when changes may have been missed (read the list again).
#[utoipa::path(get, path = "/sessions/stream", tag = "events", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "the caller's sessions' changes, live"),
        (status = 401, body = ErrorBody)))]
pub async fn sessions_stream(
    State(state): State<AppState>,
    HeaderOrQueryPrincipal(principal): HeaderOrQueryPrincipal,
) -> ApiResult<Response> {
    let end = state.stream_end(&principal);
    let store = state.store.clone();
    let news = store.subscribe_events();
    let changes = futures::stream::unfold(
        (news, store, principal),
        |(mut news, store, principal)| async move {
            loop {
                match news.recv().await {
                    Ok(id) => match store.get_session(&id).await {
                        Ok(Some(s)) if principal.can_access(&s) => {
                            let data = serde_json::to_string(&crate::routes::session_json(s))
                                .unwrap_or_default();
                            let event = SseEvent::default().event("session").data(data);
                            return Some((Ok::<_, Infallible>(event), (news, store, principal)));
                        }
                        _ => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let event = SseEvent::default().event("resync").data("{}");
                        return Some((Ok(event), (news, store, principal)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(sse(changes.take_until(end)))
}
