//! The authenticated caller, extracted from `Authorization: Bearer …`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use raworc_api::{OperatorRole, PrincipalType};
use raworc_store::{SessionRow, Store};

use crate::audit::AuditCtx;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub kind: PrincipalType,
    pub role: OperatorRole,
    /// Token expiry, seconds since the epoch.
    pub expires_at: i64,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == OperatorRole::Admin
    }

    /// Admins see every session; others only their own.
    pub fn can_access(&self, s: &SessionRow) -> bool {
        self.is_admin() || (s.owner == self.name && s.owner_type == self.kind.as_str())
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this action needs the admin role"))
        }
    }
}

/// Operators' current role and token generation, cached briefly so that a
/// request does not cost a database read for authentication. Changes made
/// through this server invalidate the entry at once.
pub struct OperatorCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Instant, OperatorRole, i64)>>,
    /// Bumped by every invalidation, so that a lookup that read the database
    /// before a change cannot put the old values back afterwards.
    epoch: AtomicU64,
}

impl OperatorCache {
    pub fn new(ttl: Duration) -> Self {
        OperatorCache {
            ttl,
            entries: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        }
    }

    pub fn invalidate(&self, name: &str) {
        if let Ok(mut e) = self.entries.write() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            e.remove(name);
        }
    }

    /// Role and token generation of a live operator, or `None` if it does not exist.
    async fn lookup(
        &self,
        store: &Store,
        name: &str,
    ) -> Result<Option<(OperatorRole, i64)>, ApiError> {
        if let Ok(e) = self.entries.read() {
            if let Some((at, role, r#gen)) = e.get(name) {
                if at.elapsed() < self.ttl {
                    return Ok(Some((*role, *r#gen)));
                }
            }
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let Some(op) = store.get_operator(name).await? else {
            return Ok(None);
        };
        if let Ok(mut e) = self.entries.write() {
            if self.epoch.load(Ordering::Acquire) != epoch {
                // Changed while we read: use what we read once, keep nothing.
                return Ok(Some((op.role, op.token_gen)));
            }
            if e.len() > 10_000 {
                e.clear();
            }
            e.insert(name.to_string(), (Instant::now(), op.role, op.token_gen));
        }
        Ok(Some((op.role, op.token_gen)))
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("authentication required: send 'Authorization: Bearer <token>'")
        })?;
        let principal = Principal::from_token(state, token).await?;
        if let Some(audit) = parts.extensions.get::<AuditCtx>() {
            audit.set_principal(&principal.name, principal.kind.as_str());
        }
        Ok(principal)
    }
}

/// The caller of a route browsers open directly (WebSockets cannot send
/// headers from a page): `Authorization: Bearer …`, else `?token=…`.
pub struct HeaderOrQueryPrincipal(pub Principal);

impl FromRequestParts<AppState> for HeaderOrQueryPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if bearer(parts).is_some() {
            return Principal::from_request_parts(parts, state)
                .await
                .map(HeaderOrQueryPrincipal);
        }
        let token = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "authentication required: send 'Authorization: Bearer <token>' or ?token=<token>",
                )
            })?;
        Principal::from_token(state, token)
            .await
            .map(HeaderOrQueryPrincipal)
    }
}

impl Principal {
    /// The principal a token names, if it is valid and not revoked.
    pub async fn from_token(state: &AppState, token: &str) -> Result<Principal, ApiError> {
        let claims = state.keys.verify(token).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => {
                    ApiError::unauthorized("token expired; log in again")
                }
                _ => ApiError::unauthorized("invalid token"),
            }
        })?;
        let role = match claims.typ {
            PrincipalType::Operator => {
                let (role, r#gen) = state
                    .operators
                    .lookup(&state.store, &claims.sub)
                    .await?
                    .ok_or_else(|| {
                        ApiError::unauthorized("token revoked: operator no longer exists")
                    })?;
                if claims.r#gen != Some(r#gen) {
                    return Err(ApiError::unauthorized(
                        "token revoked: the operator's password changed; log in again",
                    ));
                }
                role
            }
            PrincipalType::User => OperatorRole::User,
        };
        Ok(Principal {
            name: claims.sub,
            kind: claims.typ,
            role,
            expires_at: claims.exp,
        })
    }
}
