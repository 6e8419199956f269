//! A session's messages.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use raworc_api::{
    Count, CreateMessage, Deleted, ErrorBody, Message, MessageQuery, MessageRole, Page,
};
use raworc_store::NewMessage;

use crate::audit::AuditCtx;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::message_json;
use crate::routes::sessions::visible_session;
use crate::state::AppState;
use crate::validate;

/// Messages in order; `after=<seq>` returns only newer ones.
#[utoipa::path(get, path = "/sessions/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path), MessageQuery),
    responses((status = 200, body = [Message]), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<MessageQuery>,
) -> ApiResult<Json<Vec<Message>>> {
    visible_session(&state, &principal, &id).await?;
    let page = Page {
        limit: q.limit,
        offset: q.offset,
    };
    let rows = state
        .store
        .list_messages(&id, q.after, page.limit(), page.offset())
        .await?;
    Ok(Json(rows.into_iter().map(message_json).collect()))
}

/// Posts a message; to a closed session it also restores the session.
#[utoipa::path(post, path = "/sessions/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = CreateMessage,
    responses((status = 201, body = Message), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn post(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateMessage>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    visible_session(&state, &principal, &id).await?;
    validate::content("content", &body.content)?;
    let role = body.role.unwrap_or(MessageRole::User);
    if role != MessageRole::User && !principal.is_admin() {
        return Err(ApiError::forbidden(format!(
            "only admins may post '{}' messages",
            role.as_str()
        )));
    }
    let message = NewMessage {
        role,
        content: body.content,
        metadata: validate::metadata(&body.metadata)?,
    };
    let row = audit
        .write(StatusCode::CREATED, |rec| {
            state.store.post_message(id.clone(), message, rec)
        })
        .await?;
    if row.role == MessageRole::User {
        state.wake_agent(&id);
    }
    // A message to a closed session restored it.
    state.wake(&id);
    Ok((StatusCode::CREATED, Json(message_json(row))))
}

/// Number of messages.
#[utoipa::path(get, path = "/sessions/{id}/messages/count", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Count), (status = 404, body = ErrorBody)))]
pub async fn count(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Count>> {
    visible_session(&state, &principal, &id).await?;
    Ok(Json(Count {
        count: state.store.count_messages(&id).await?,
    }))
}

/// Deletes all messages of a session; `seq` keeps counting.
#[utoipa::path(delete, path = "/sessions/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Deleted), (status = 404, body = ErrorBody)))]
pub async fn clear(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    visible_session(&state, &principal, &id).await?;
    let deleted = audit
        .write(StatusCode::OK, |rec| state.store.clear_messages(id, rec))
        .await?;
    Ok(Json(Deleted { deleted }))
}
