//! Reading the audit log (admins only).

use axum::extract::State;
use axum::Json;
use raworc_api::{timestamp_from_millis, AuditEntry, AuditQuery, ErrorBody, Page};
use raworc_store::AuditFilter;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;

fn parse_time(field: &str, v: &Option<String>) -> ApiResult<Option<i64>> {
    v.as_deref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| ApiError::bad_request(format!("{field}: not an RFC 3339 time: {e}")))
        })
        .transpose()
}

/// Audit entries, newest first; filter by principal, session and time.
#[utoipa::path(get, path = "/audit", tag = "audit", security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, body = [AuditEntry]), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    principal.require_admin()?;
    let page = Page {
        limit: q.limit,
        offset: q.offset,
    };
    let filter = AuditFilter {
        since_ms: parse_time("since", &q.since)?,
        until_ms: parse_time("until", &q.until)?,
        principal: q.principal,
        session_id: q.session_id,
        limit: page.limit(),
        offset: page.offset(),
    };
    let rows = state.store.list_audit(&filter).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: timestamp_from_millis(r.record.at),
                principal: r.record.principal,
                principal_type: r.record.principal_type,
                action: r.record.action,
                target: r.record.target,
                session_id: r.record.session_id,
                outcome: r.record.outcome,
                request_id: r.record.request_id,
            })
            .collect(),
    ))
}
