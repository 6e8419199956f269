//! The audit log: one row per mutating call.

use crate::db::{self, Row};
use crate::{Conn, Dialect, Result, Store};

/// An audit entry to append (inside the same transaction as the change it records).
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at: i64,
    pub principal: String,
    pub principal_type: Option<String>,
    pub action: String,
    pub target: String,
    pub session_id: Option<String>,
    pub outcome: u16,
    pub request_id: String,
}

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: i64,
    pub record: AuditRecord,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub principal: Option<String>,
    pub session_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: u32,
    pub offset: u64,
}

/// Appends `record` on a writer connection.
pub(crate) async fn insert(conn: &mut Conn, dialect: Dialect, record: &AuditRecord) -> Result<()> {
    db::query(&dialect.sql(
        "INSERT INTO audit (at, principal, principal_type, action, target, session_id, outcome, request_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ))
    .bind(record.at)
    .bind(&record.principal)
    .bind(&record.principal_type)
    .bind(&record.action)
    .bind(&record.target)
    .bind(&record.session_id)
    .bind(i64::from(record.outcome))
    .bind(&record.request_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends `record` when the caller brought one (writes made by the system itself carry none).
pub(crate) async fn insert_if(
    conn: &mut Conn,
    dialect: Dialect,
    record: &Option<AuditRecord>,
) -> Result<()> {
    match record {
        Some(r) => insert(conn, dialect, r).await,
        None => Ok(()),
    }
}

fn from_row(row: &Row) -> Result<AuditRow> {
    Ok(AuditRow {
        id: row.i64("id")?,
        record: AuditRecord {
            at: row.i64("at")?,
            principal: row.text("principal")?,
            principal_type: row.opt_text("principal_type")?,
            action: row.text("action")?,
            target: row.text("target")?,
            session_id: row.opt_text("session_id")?,
            outcome: u16::try_from(row.i64("outcome")?).unwrap_or(0),
            request_id: row.text("request_id")?,
        },
    })
}

impl Store {
    /// Records an outcome that no other write recorded (failures, rejections).
    pub async fn record_audit(&self, record: AuditRecord) -> Result<()> {
        let dialect = self.dialect;
        self.writer
            .write(move |conn| Box::pin(async move { insert(conn, dialect, &record).await }))
            .await
    }

    /// Newest entries first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
        let mut sql = String::from(
            "SELECT id, at, principal, principal_type, action, target, session_id, outcome, request_id \
             FROM audit WHERE 1 = 1",
        );
        if filter.principal.is_some() {
            sql.push_str(" AND principal = ?");
        }
        if filter.session_id.is_some() {
            sql.push_str(" AND session_id = ?");
        }
        if filter.since_ms.is_some() {
            sql.push_str(" AND at >= ?");
        }
        if filter.until_ms.is_some() {
            sql.push_str(" AND at < ?");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ? OFFSET ?");
        let sql = self.dialect.sql(&sql);
        let mut query = db::query(&sql);
        if let Some(p) = &filter.principal {
            query = query.bind(p);
        }
        if let Some(s) = &filter.session_id {
            query = query.bind(s);
        }
        if let Some(t) = filter.since_ms {
            query = query.bind(t);
        }
        if let Some(t) = filter.until_ms {
            query = query.bind(t);
        }
        let rows = query
            .bind(i64::from(filter.limit))
            .bind(crate::sql_offset(filter.offset))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }
}
