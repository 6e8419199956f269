//! Audit: every mutating call leaves one record.
//!
//! The middleware puts an [`AuditCtx`] into each mutating request. A handler
//! whose change succeeds writes the record in the same transaction as the
//! change (so a change and its record stand or fall together); for anything
//! else (rejections, failures) the middleware writes it after the response.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use raworc_store::{now_ms, AuditRecord, StoreError};

use crate::request_id::RequestId;
use crate::state::AppState;

#[derive(Clone)]
pub struct AuditCtx(Arc<Inner>);

struct Inner {
    request_id: String,
    action: String,
    target: String,
    session_id: Option<String>,
    principal: Mutex<Option<(String, String)>>,
    recorded: AtomicBool,
}

impl AuditCtx {
    pub fn set_principal(&self, name: &str, kind: &str) {
        if let Ok(mut p) = self.0.principal.lock() {
            *p = Some((clip(name, MAX_PRINCIPAL), kind.to_string()));
        }
    }

    /// The record of this call with the given outcome.
    pub fn record(&self, outcome: StatusCode) -> AuditRecord {
        let principal = self.0.principal.lock().ok().and_then(|p| p.clone());
        let (principal, principal_type) = match principal {
            Some((n, t)) => (n, Some(t)),
            None => ("anonymous".to_string(), None),
        };
        AuditRecord {
            at: now_ms(),
            principal,
            principal_type,
            action: self.0.action.clone(),
            target: self.0.target.clone(),
            session_id: self.0.session_id.clone(),
            outcome: outcome.as_u16(),
            request_id: self.0.request_id.clone(),
        }
    }

    /// Runs a store write that carries this call's record; on success the
    /// middleware knows the record is written.
    pub async fn write<T, F, Fut>(&self, outcome: StatusCode, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Option<AuditRecord>) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let result = f(Some(self.record(outcome))).await;
        if result.is_ok() {
            self.0.recorded.store(true, Ordering::Release);
        }
        result
    }
}

// Column sizes of the audit table: a longer value would make the database
// refuse the record. Login names come from the path and can be any length.
const MAX_PRINCIPAL: usize = 128;
const MAX_ACTION: usize = 255;
const MAX_SESSION_ID: usize = 64;
/// `target` is TEXT (64 KiB on MariaDB); a path longer than this is cut.
const MAX_TARGET: usize = 8192;

/// The first `max` characters of `s`.
fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Session id of `/api/v0/sessions/{id}/…` paths.
fn session_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/v0/sessions/")?;
    let id = rest.split('/').next()?;
    // Longer ids name no session (and do not fit the column).
    (!id.is_empty() && id.chars().count() <= MAX_SESSION_ID).then(|| id.to_string())
}

pub async fn middleware(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !is_mutating(req.method()) {
        return next.run(req).await;
    }
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let path = req.uri().path().to_string();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let ctx = AuditCtx(Arc::new(Inner {
        request_id,
        action: clip(&format!("{} {}", req.method(), template), MAX_ACTION),
        session_id: session_of(&path),
        target: clip(&path, MAX_TARGET),
        principal: Mutex::new(None),
        recorded: AtomicBool::new(false),
    }));
    req.extensions_mut().insert(ctx.clone());
    let response = next.run(req).await;
    if !ctx.0.recorded.load(Ordering::Acquire) {
        let record = ctx.record(response.status());
        if let Err(e) = state.store.record_audit(record).await {
            tracing::error!(error = %e, "could not write an audit record");
        }
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_ids_come_from_session_paths() {
        assert_eq!(
            super::session_of("/api/v0/sessions/s-1/close").as_deref(),
            Some("s-1")
        );
        assert_eq!(
            super::session_of("/api/v0/sessions/s-1").as_deref(),
            Some("s-1")
        );
        assert_eq!(super::session_of("/api/v0/sessions"), None);
        assert_eq!(super::session_of("/api/v0/operators/x"), None);
    }
}
