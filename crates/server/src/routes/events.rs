//! A session's events — listed, streamed as server-sent events and over a
//! WebSocket in seed 004's shape — its agent's screenshots, and cancelling
//! the agent.
//!
//! A stream subscribes to the store's announcements first, then reads the
//! table from the client's `after` (or `Last-Event-ID`), and reads it again
//! on each announcement of its session: every event reaches the client
//! once, in `seq` order, whether it was written before or after the client
//! connected.
//!
//! With `deltas=true` a stream also carries the model's text and thinking
//! as they stream ([`LiveDelta`], from the agent's hooks over an in-memory
//! broadcast): never stored, not numbered, dropped for a client that falls
//! behind. Each piece names the session's latest event when its model call
//! began (`after`), and goes out right after that event and before any
//! later one — however far behind the stream is. A model call's pieces are
//! all published before its turn is stored, so the pieces waiting when a
//! read finds new events are taken first: a turn's pieces reach the client
//! before its stored events, and after the events stored before its call.

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
use chrono::{DateTime, Utc};
use futures::{SinkExt, Stream, StreamExt};
use raworc_api::{
    timestamp_from_millis, Cancelled, ErrorBody, Event, EventDelta, EventQuery, EventStreamQuery,
};
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
/// Pieces of model turns (of every session) a stream may fall behind by
/// before it misses some.
const DELTA_BACKLOG: usize = 1024;

/// A piece of a session's model turn as it streams, and when it came.
#[derive(Debug, Clone)]
pub struct LiveDelta {
    pub delta: EventDelta,
    /// The session's latest event when the model call began: the piece
    /// goes out after it and before any later one.
    pub after: i64,
    pub at: DateTime<Utc>,
}

/// Where the agent's hooks publish [`LiveDelta`]s for the streams.
pub type DeltaHub = broadcast::Sender<Arc<LiveDelta>>;

pub fn delta_hub() -> DeltaHub {
    broadcast::channel(DELTA_BACKLOG).0
}

/// Sends `delta`, which belongs after event `after` of its session, to the
/// streams listening now (none is fine: pieces are only a preview).
pub fn publish_delta(hub: &DeltaHub, after: i64, delta: EventDelta) {
    let _ = hub.send(Arc::new(LiveDelta {
        delta,
        after,
        at: Utc::now(),
    }));
}

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

/// What a stream sends: a stored event, or a live piece of a model turn.
enum Item {
    Stored(EventRow),
    Delta(Arc<LiveDelta>),
}

/// Where a stream stands: what it has read and is about to send.
struct Cursor {
    store: Store,
    id: Arc<str>,
    /// The last event read.
    after: i64,
    /// The last event sent.
    sent: i64,
    news: broadcast::Receiver<Arc<str>>,
    ready: VecDeque<EventRow>,
    /// The table may hold events past `after`: read it before waiting.
    stale: bool,
    /// The last read found nothing new: the events a waiting piece comes
    /// after are not in the table, and it goes out as it is.
    dry: bool,
    /// Live pieces, for a stream that asked for them.
    deltas: Option<broadcast::Receiver<Arc<LiveDelta>>>,
    /// Pieces taken, in the order they were published.
    live: VecDeque<Arc<LiveDelta>>,
    /// The session was deleted: nothing more will come, and its viewers
    /// may no longer see it.
    ended: bool,
}

impl Cursor {
    /// Takes the session's pieces already published: any event read since
    /// was stored after them.
    fn take_waiting_deltas(&mut self) {
        let Some(rx) = &mut self.deltas else {
            return;
        };
        loop {
            match rx.try_recv() {
                Ok(d) if *d.delta.session_id == *self.id => self.live.push_back(d),
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    }

    /// Whether the first waiting piece goes out now: every event up to its
    /// `after` is sent, or the next event to send comes later, or there is
    /// nothing more to read.
    fn delta_due(&self) -> bool {
        let Some(d) = self.live.front() else {
            return false;
        };
        d.after <= self.sent
            || match self.ready.front() {
                Some(e) => e.seq > d.after,
                None => self.dry,
            }
    }
}

/// Waits for an announcement of session `id`; a lagging receiver is told
/// to read too. False when announcements have ended.
async fn news_of(news: &mut broadcast::Receiver<Arc<str>>, id: &str) -> bool {
    loop {
        match news.recv().await {
            Ok(s) if *s == *id => return true,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => return true,
            Err(broadcast::error::RecvError::Closed) => return false,
        }
    }
}

/// The next piece of session `id`'s model turns; never, without a receiver.
async fn delta_of(
    deltas: &mut Option<broadcast::Receiver<Arc<LiveDelta>>>,
    id: &str,
) -> Arc<LiveDelta> {
    let Some(rx) = deltas else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(d) if *d.delta.session_id == *id => return d,
            // Pieces missed by a stream that fell behind are skipped.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// The session's events after `after`, then each new one as it is written,
/// until the session's deletion; with `deltas`, the live pieces of its
/// model turns among them.
fn events_after(
    store: Store,
    id: &str,
    after: i64,
    deltas: Option<broadcast::Receiver<Arc<LiveDelta>>>,
) -> impl Stream<Item = Item> {
    let cursor = Cursor {
        news: store.subscribe_events(),
        store,
        id: Arc::from(id),
        after,
        sent: after,
        ready: VecDeque::new(),
        stale: true,
        dry: false,
        deltas,
        live: VecDeque::new(),
        ended: false,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if c.ended {
                return None;
            }
            if c.delta_due() {
                if let Some(d) = c.live.pop_front() {
                    return Some((Item::Delta(d), c));
                }
            }
            if let Some(e) = c.ready.pop_front() {
                c.sent = e.seq;
                c.ended = e.kind == raworc_store::event_kind::STATE && e.content == "deleted";
                return Some((Item::Stored(e), c));
            }
            // Read on news, and for a piece that comes after events not
            // read yet.
            if c.stale || !c.live.is_empty() {
                match c.store.list_events(&c.id, c.after, 500).await {
                    Ok(rows) if !rows.is_empty() => {
                        c.after = rows.last().map_or(c.after, |r| r.seq);
                        c.ready.extend(rows);
                        c.dry = false;
                        c.take_waiting_deltas();
                        continue;
                    }
                    Ok(_) => {
                        c.stale = false;
                        c.dry = true;
                        if !c.live.is_empty() {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(session = %c.id, error = %e, "event stream: reading events failed");
                        return None;
                    }
                }
            }
            // Wait for news of this session, or a piece of its model turn.
            let Cursor {
                news, deltas, id, ..
            } = &mut c;
            tokio::select! {
                more = news_of(news, id) => {
                    if !more {
                        return None;
                    }
                    c.stale = true;
                }
                d = delta_of(deltas, id) => {
                    c.live.push_back(d);
                    c.dry = false;
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

/// The live pieces for a stream whose query asked for them.
fn deltas_for(
    state: &AppState,
    q: &EventStreamQuery,
) -> Option<broadcast::Receiver<Arc<LiveDelta>>> {
    q.deltas.unwrap_or(false).then(|| state.deltas.subscribe())
}

/// The events as server-sent events (`id` = seq, `event` = type, `data` =
/// the event as JSON); reconnecting with `Last-Event-ID` or `?after=`
/// misses nothing. With `deltas=true`, also `delta` events (`data` = an
/// [`EventDelta`], no `id`): the model's text and thinking as it streams.
#[utoipa::path(get, path = "/sessions/{id}/events/stream", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path), EventStreamQuery),
    responses((status = 200, content_type = "text/event-stream",
            description = "the events, live: `id` = seq, `event` = type, `data` = an Event. With \
                `deltas=true` also `event: delta` lines without `id` whose `data` is an EventDelta \
                (`{session_id, kind, index, attempt, text}`): the model's text and thinking as it \
                streams, not stored, best effort; a turn's pieces come before its stored events, \
                which replace them"),
        (status = 404, body = ErrorBody)),
    )]
pub async fn stream(
    State(state): State<AppState>,
    HeaderOrQueryPrincipal(principal): HeaderOrQueryPrincipal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventStreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    visible_session(&state, &principal, &id).await?;
    let after = start_of(&headers, q.after)?;
    let deltas = deltas_for(&state, &q);
    let events = events_after(state.store.clone(), &id, after, deltas).map(|item| {
        let event = match item {
            Item::Stored(e) => {
                let id = e.seq.to_string();
                let kind = e.kind.clone();
                let data = serde_json::to_string(&event_json(e)).unwrap_or_default();
                SseEvent::default().id(id).event(kind).data(data)
            }
            Item::Delta(d) => {
                let data = serde_json::to_string(&d.delta).unwrap_or_default();
                SseEvent::default().event("delta").data(data)
            }
        };
        Ok::<_, Infallible>(event)
    });
    Ok(sse(events.take_until(state.stream_end(&principal))))
}

/// A live piece in seed 004's WebSocket shape (no `seq`: not stored).
fn delta_update(d: &LiveDelta) -> String {
    json!({
        "type": "agent_update",
        "update_type": "delta",
        "content": d.delta.text,
        "timestamp": d.at,
        "metadata": {
            "kind": d.delta.kind,
            "index": d.delta.index,
            "attempt": d.delta.attempt,
        },
    })
    .to_string()
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
/// resumes after an event seen before. `?deltas=true` adds the model's
/// text and thinking as it streams: `agent_update`s of `update_type`
/// `delta` without `seq` (metadata `kind`, `index`, `attempt`).
pub async fn websocket(
    State(state): State<AppState>,
    HeaderOrQueryPrincipal(principal): HeaderOrQueryPrincipal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventStreamQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    visible_session(&state, &principal, &id).await?;
    let after = q.after.unwrap_or(0).max(0);
    let store = state.store.clone();
    let end = state.stream_end(&principal);
    // Subscribed now, with the announcements' subscription soon after: no
    // piece published once the socket is open is missed.
    let deltas = deltas_for(&state, &q);
    Ok(ws.on_upgrade(move |socket| async move {
        tokio::select! {
            _ = relay_events(socket, store, id, after, deltas) => {},
            _ = end => {},
        }
    }))
}

async fn relay_events(
    socket: WebSocket,
    store: Store,
    id: String,
    after: i64,
    deltas: Option<broadcast::Receiver<Arc<LiveDelta>>>,
) {
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
    let mut events = Box::pin(events_after(store, &id, after, deltas));
    loop {
        tokio::select! {
            e = events.next() => match e {
                Some(item) => {
                    let text = match item {
                        Item::Stored(e) => agent_update(e),
                        Item::Delta(d) => delta_update(&d),
                    };
                    if tx.send(WsMessage::Text(text.into())).await.is_err() {
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
