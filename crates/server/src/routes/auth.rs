//! Login, token introspection and token minting.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use raworc_api::{
    timestamp_from_millis, AuthInfo, LoginRequest, LoginResponse, OperatorRole, PrincipalType,
    TokenRequest, TokenResponse,
};

use crate::audit::AuditCtx;
use crate::auth::jwt::Claims;
use crate::auth::{password, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use crate::validate;

const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

fn issue(
    state: &AppState,
    name: &str,
    kind: PrincipalType,
    role: OperatorRole,
    r#gen: Option<i64>,
    ttl: Duration,
) -> ApiResult<(String, i64)> {
    let now = chrono::Utc::now().timestamp();
    let exp = now + ttl.as_secs() as i64;
    let claims = Claims {
        sub: name.to_string(),
        typ: kind,
        role,
        r#gen,
        iat: now,
        exp,
        jti: uuid::Uuid::new_v4().simple().to_string(),
    };
    let token = state
        .keys
        .issue(&claims)
        .map_err(|e| ApiError::internal(format!("could not sign a token: {e}")))?;
    Ok((token, exp))
}

fn too_many(retry: Duration) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many login attempts; retry in {} s",
            retry.as_secs().max(1)
        ),
    )
}

/// Exchanges an operator's password for a token.
#[utoipa::path(post, path = "/operators/{name}/login", tag = "auth",
    params(("name" = String, Path, description = "Operator name")),
    request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = raworc_api::ErrorBody),
        (status = 429, body = raworc_api::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    audit.set_principal(&name, PrincipalType::Operator.as_str());
    let addr = peer
        .map(|Extension(ConnectInfo(a))| a.ip().to_string())
        .unwrap_or_default();
    state
        .login_by_addr
        .check(&format!("addr:{addr}"))
        .map_err(too_many)?;
    state
        .login_by_name
        .check(&format!("name:{name}"))
        .map_err(too_many)?;
    let op = state.store.get_operator(&name).await?;
    let hash = op
        .as_ref()
        .map_or_else(|| state.dummy_hash.clone(), |o| o.pass_hash.clone());
    let verified = password::verify(body.pass, hash).await;
    let op = match op {
        Some(op) if verified => op,
        _ => return Err(ApiError::unauthorized("invalid operator name or password")),
    };
    let (token, exp) = issue(
        &state,
        &op.name,
        PrincipalType::Operator,
        op.role,
        Some(op.token_gen),
        state.token_ttl(),
    )?;
    audit
        .write(StatusCode::OK, |rec| {
            state.store.touch_login(op.name.clone(), rec)
        })
        .await?;
    Ok(Json(LoginResponse {
        token,
        token_type: "Bearer".into(),
        expires_at: timestamp_from_millis(exp * 1000),
        user: op.name,
        role: op.role,
    }))
}

/// Who the presented token belongs to.
#[utoipa::path(get, path = "/auth", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = AuthInfo), (status = 401, body = raworc_api::ErrorBody)))]
pub async fn whoami(principal: Principal) -> Json<AuthInfo> {
    Json(AuthInfo {
        user: principal.name,
        principal_type: principal.kind,
        role: principal.role,
        expires_at: timestamp_from_millis(principal.expires_at * 1000),
    })
}

/// Mints a token for a user principal or an existing operator (admins only).
#[utoipa::path(post, path = "/auth/token", tag = "auth", security(("bearer" = [])),
    request_body = TokenRequest,
    responses((status = 201, body = TokenResponse), (status = 403, body = raworc_api::ErrorBody),
        (status = 404, body = raworc_api::ErrorBody)))]
pub async fn mint_token(
    State(state): State<AppState>,
    Extension(audit): Extension<AuditCtx>,
    principal: Principal,
    ApiJson(body): ApiJson<TokenRequest>,
) -> ApiResult<(StatusCode, Json<TokenResponse>)> {
    principal.require_admin()?;
    validate::principal_name("principal", &body.principal)?;
    let ttl = match body.expires_in_s {
        None => state.token_ttl(),
        Some(0) => return Err(ApiError::unprocessable("expires_in_s: must be positive")),
        Some(s) => Duration::from_secs(s).min(MAX_TOKEN_LIFETIME),
    };
    let (role, r#gen) = match body.principal_type {
        PrincipalType::User => (OperatorRole::User, None),
        PrincipalType::Operator => {
            let op = state
                .store
                .get_operator(&body.principal)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!("operator '{}' not found", body.principal))
                })?;
            (op.role, Some(op.token_gen))
        }
    };
    let (token, exp) = issue(
        &state,
        &body.principal,
        body.principal_type,
        role,
        r#gen,
        ttl,
    )?;
    audit
        .write(StatusCode::CREATED, |rec| async {
            match rec {
                Some(r) => state.store.record_audit(r).await,
                None => Ok(()),
            }
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse {
            token,
            token_type: "Bearer".into(),
            expires_at: timestamp_from_millis(exp * 1000),
        }),
    ))
}
