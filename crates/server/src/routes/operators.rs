//! Operator accounts (admins only, except reading and re-keying oneself).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use raworc_api::{
    CreateOperator, ErrorBody, Operator, OperatorRole, Page, SetPassword, UpdateOperator,
};
use raworc_store::NewOperator;

use crate::audit::AuditCtx;
use crate::auth::{password, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::operator_json;
use crate::state::AppState;
use crate::validate;

fn may_touch(principal: &Principal, name: &str) -> ApiResult<()> {
    if principal.is_admin()
        || (principal.kind == raworc_api::PrincipalType::Operator && principal.name == name)
    {
        Ok(())
    } else {
        Err(ApiError::forbidden("this action needs the admin role"))
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("operator '{name}' not found"))
}

/// Lists operators.
#[utoipa::path(get, path = "/operators", tag = "operators", security(("bearer" = [])),
    params(Page), responses((status = 200, body = [Operator]), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Json<Vec<Operator>>> {
    principal.require_admin()?;
    let rows = state
        .store
        .list_operators(page.limit(), page.offset())
        .await?;
    Ok(Json(rows.into_iter().map(operator_json).collect()))
}

/// Creates an operator (role `admin` unless `user` is asked for).
#[utoipa::path(post, path = "/operators", tag = "operators", security(("bearer" = [])),
    request_body = CreateOperator,
    responses((status = 201, body = Operator), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateOperator>,
) -> ApiResult<(StatusCode, Json<Operator>)> {
    principal.require_admin()?;
    validate::principal_name("user", &body.user)?;
    validate::new_password(&body.pass)?;
    validate::text("description", &body.description, 4096)?;
    let pass_hash = password::hash(body.pass).await?;
    let new = NewOperator {
        name: body.user,
        pass_hash,
        role: body.role.unwrap_or(OperatorRole::Admin),
        description: body.description,
    };
    let row = audit
        .write(StatusCode::CREATED, |rec| {
            state.store.create_operator(new, rec)
        })
        .await?;
    state.operators.invalidate(&row.name);
    Ok((StatusCode::CREATED, Json(operator_json(row))))
}

/// One operator (admins, or the operator itself).
#[utoipa::path(get, path = "/operators/{name}", tag = "operators", security(("bearer" = [])),
    params(("name" = String, Path)), responses((status = 200, body = Operator), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Operator>> {
    may_touch(&principal, &name)?;
    let row = state
        .store
        .get_operator(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(operator_json(row)))
}

/// Changes an operator's role or description.
#[utoipa::path(put, path = "/operators/{name}", tag = "operators", security(("bearer" = [])),
    params(("name" = String, Path)), request_body = UpdateOperator,
    responses((status = 200, body = Operator), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateOperator>,
) -> ApiResult<Json<Operator>> {
    principal.require_admin()?;
    validate::text("description", &body.description, 4096)?;
    let row = audit
        .write(StatusCode::OK, |rec| {
            state
                .store
                .update_operator(name.clone(), body.role, body.description, rec)
        })
        .await?;
    state.operators.invalidate(&name);
    Ok(Json(operator_json(row)))
}

/// Deletes an operator; its tokens stop working at once.
#[utoipa::path(delete, path = "/operators/{name}", tag = "operators", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = Operator), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Operator>> {
    principal.require_admin()?;
    let row = state
        .store
        .get_operator(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    audit
        .write(StatusCode::OK, |rec| {
            state.store.delete_operator(name.clone(), rec)
        })
        .await?;
    state.operators.invalidate(&name);
    Ok(Json(operator_json(row)))
}

/// Sets a new password (admins, or the operator itself); older tokens stop working.
#[utoipa::path(put, path = "/operators/{name}/password", tag = "operators", security(("bearer" = [])),
    params(("name" = String, Path)), request_body = SetPassword,
    responses((status = 200, body = Operator), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_password(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SetPassword>,
) -> ApiResult<Json<Operator>> {
    may_touch(&principal, &name)?;
    validate::new_password(&body.pass)?;
    if state.store.get_operator(&name).await?.is_none() {
        return Err(not_found(&name));
    }
    let hash = password::hash(body.pass).await?;
    audit
        .write(StatusCode::OK, |rec| {
            state.store.set_operator_password(name.clone(), hash, rec)
        })
        .await?;
    state.operators.invalidate(&name);
    let row = state
        .store
        .get_operator(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(operator_json(row)))
}
