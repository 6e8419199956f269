//! Sessions: create, read, change, and drive through their lifecycle.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use raworc_api::{
    CreateSession, ErrorBody, Page, RemixSession, Session, SessionFilter, SessionState,
    SetSessionState, UpdateSession,
};
use raworc_store::{NewSession, Remix, SessionPatch, SessionRow, SessionTransition};

use crate::audit::AuditCtx;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use crate::routes::session_json;
use crate::state::AppState;
use crate::validate::{self, MAX_TEXT};

/// The session `id` if `principal` may see it. Other people's sessions are
/// reported as missing, so that their ids cannot be probed.
pub(crate) async fn visible_session(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<SessionRow> {
    match state.store.get_session(id).await? {
        Some(s) if s.state != SessionState::Deleted && principal.can_access(&s) => Ok(s),
        _ => Err(ApiError::not_found(format!("session '{id}' not found"))),
    }
}

/// Sessions that hold, or are about to hold, a running computer.
const OCCUPYING: [SessionState; 4] = [
    SessionState::Created,
    SessionState::Starting,
    SessionState::Running,
    SessionState::Paused,
];

/// 429 when starting one more computer would pass `--max-sessions`.
async fn ensure_capacity(state: &AppState) -> ApiResult<()> {
    if state.runtime.is_none() {
        return Ok(());
    }
    let max = state.config.max_sessions;
    let occupied: i64 = state
        .store
        .count_sessions_by_state()
        .await?
        .into_iter()
        .filter(|(s, _)| OCCUPYING.contains(s))
        .map(|(_, n)| n)
        .sum();
    if occupied >= max as i64 {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this server runs at most {max} computers and all are taken; \
                 close or delete a session first"
            ),
        ));
    }
    Ok(())
}

/// Sessions visible to the caller, newest first.
#[utoipa::path(get, path = "/sessions", tag = "sessions", security(("bearer" = [])),
    params(SessionFilter), responses((status = 200, body = [Session]), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(filter): ApiQuery<SessionFilter>,
) -> ApiResult<Json<Vec<Session>>> {
    let wanted = filter
        .state
        .as_deref()
        .map(|s| {
            SessionState::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("state: unknown session state '{s}'")))
        })
        .transpose()?;
    let page = Page {
        limit: filter.limit,
        offset: filter.offset,
    };
    let owner = (!principal.is_admin()).then(|| (principal.name.as_str(), principal.kind.as_str()));
    let rows = state
        .store
        .list_sessions(owner, wanted, page.limit(), page.offset())
        .await?;
    Ok(Json(rows.into_iter().map(session_json).collect()))
}

/// Creates a session; a `prompt` becomes its first user message.
#[utoipa::path(post, path = "/sessions", tag = "sessions", security(("bearer" = [])),
    request_body = CreateSession,
    responses((status = 201, body = Session), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    OptionalJson(body): OptionalJson<CreateSession>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    validate::session_name(&body.name)?;
    validate::text("instructions", &body.instructions, MAX_TEXT)?;
    validate::text("setup", &body.setup, MAX_TEXT)?;
    if let Some(p) = &body.prompt {
        validate::content("prompt", p)?;
    }
    let metadata = validate::metadata(&body.metadata)?;
    let limits = body.limits.unwrap_or_default();
    validate::limits(&limits, &state.config)?;
    ensure_capacity(&state).await?;
    let secrets = body.secrets.unwrap_or_default();
    validate::secrets(&secrets)?;
    let mut sealed = Vec::with_capacity(secrets.len());
    for (name, value) in &secrets {
        let s = state
            .secrets
            .seal(name, value)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        sealed.push((name.clone(), s));
    }
    let new = NewSession {
        owner: principal.name.clone(),
        owner_type: principal.kind.as_str().to_string(),
        name: body.name,
        instructions: body.instructions,
        setup: body.setup,
        metadata,
        sealed_secrets: sealed,
        prompt: body.prompt,
        network: body.network.unwrap_or_default(),
        limits,
    };
    let (row, first) = audit
        .write(StatusCode::CREATED, |rec| {
            state.store.create_session(new, rec)
        })
        .await?;
    state.wake(&row.id);
    if first.is_some() {
        state.wake_agent(&row.id);
    }
    Ok((StatusCode::CREATED, Json(session_json(row))))
}

/// One session.
#[utoipa::path(get, path = "/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Session), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Session>> {
    Ok(Json(session_json(
        visible_session(&state, &principal, &id).await?,
    )))
}

/// Changes name, instructions, setup or metadata.
#[utoipa::path(put, path = "/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = UpdateSession,
    responses((status = 200, body = Session), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateSession>,
) -> ApiResult<Json<Session>> {
    visible_session(&state, &principal, &id).await?;
    validate::session_name(&body.name)?;
    validate::text("instructions", &body.instructions, MAX_TEXT)?;
    validate::text("setup", &body.setup, MAX_TEXT)?;
    let patch = SessionPatch {
        name: body.name,
        instructions: body.instructions,
        setup: body.setup,
        metadata: body
            .metadata
            .as_ref()
            .map(|_| validate::metadata(&body.metadata))
            .transpose()?,
    };
    let row = audit
        .write(StatusCode::OK, |rec| {
            state.store.update_session(id, patch, rec)
        })
        .await?;
    Ok(Json(session_json(row)))
}

async fn transition(
    state: &AppState,
    audit: &AuditCtx,
    principal: &Principal,
    id: String,
    change: SessionTransition,
) -> ApiResult<Json<Session>> {
    visible_session(state, principal, &id).await?;
    if change == SessionTransition::Restore {
        ensure_capacity(state).await?;
    }
    let row = audit
        .write(StatusCode::OK, |rec| {
            state.store.transition_session(id, change, rec)
        })
        .await?;
    state.wake(&row.id);
    Ok(Json(session_json(row)))
}

/// Deletes a session: its computer and disk go, the row stays as `deleted` for audit.
#[utoipa::path(delete, path = "/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Session), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Session>> {
    let deleted = transition(
        &state,
        &audit,
        &principal,
        id.clone(),
        SessionTransition::Delete,
    )
    .await?;
    if let Some(agents) = &state.agents {
        // Its agent stops at the next step; its screenshots go with it.
        agents.cancel(&id);
        agents.shots().remove_session(&id).await;
    }
    Ok(deleted)
}

/// Pauses (`paused`) or resumes (`running`) a session.
#[utoipa::path(put, path = "/sessions/{id}/state", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = SetSessionState,
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_state(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SetSessionState>,
) -> ApiResult<Json<Session>> {
    let change = match SessionState::parse(&body.state) {
        Some(SessionState::Paused) => SessionTransition::Pause,
        Some(SessionState::Running) => SessionTransition::Resume,
        Some(other) => {
            return Err(ApiError::conflict(format!(
                "state '{other}' cannot be set directly; only 'paused' and 'running' (use close, restore or delete)"
            )))
        }
        None => {
            return Err(ApiError::bad_request(format!(
                "state: unknown session state '{}'",
                body.state
            )))
        }
    };
    transition(&state, &audit, &principal, id, change).await
}

/// Closes a session: processes stop, the disk is kept.
#[utoipa::path(post, path = "/sessions/{id}/close", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Session), (status = 409, body = ErrorBody)))]
pub async fn close(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Session>> {
    transition(&state, &audit, &principal, id, SessionTransition::Close).await
}

/// Starts a closed or errored session again from its kept disk.
#[utoipa::path(post, path = "/sessions/{id}/restore", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Session), (status = 409, body = ErrorBody)))]
pub async fn restore(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Session>> {
    transition(&state, &audit, &principal, id, SessionTransition::Restore).await
}

/// Forks a session into a new one owned by the caller.
#[utoipa::path(post, path = "/sessions/{id}/remix", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RemixSession,
    responses((status = 201, body = Session), (status = 404, body = ErrorBody)))]
pub async fn remix(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<RemixSession>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    let parent = visible_session(&state, &principal, &id).await?;
    validate::session_name(&body.name)?;
    if let Some(p) = &body.prompt {
        validate::content("prompt", p)?;
    }
    ensure_capacity(&state).await?;
    let mut metadata = parent.metadata.clone();
    if let Some(obj) = metadata.as_object_mut() {
        obj.insert(
            "remix".into(),
            serde_json::json!({"parent": parent.id, "data": body.data, "code": body.code}),
        );
    }
    let remix = Remix {
        parent_id: id,
        owner: principal.name.clone(),
        owner_type: principal.kind.as_str().to_string(),
        code: body.code,
        name: body.name,
        prompt: body.prompt,
        metadata,
    };
    let (row, first) = audit
        .write(StatusCode::CREATED, |rec| {
            state.store.remix_session(remix, rec)
        })
        .await?;
    state.wake(&row.id);
    if first.is_some() {
        state.wake_agent(&row.id);
    }
    Ok((StatusCode::CREATED, Json(session_json(row))))
}
