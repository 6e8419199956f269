//! Operators: the accounts that log in.

use raworc_api::OperatorRole;

use crate::audit::{self, AuditRecord};
use crate::db::{self, Row};
use crate::{now_ms, Conn, Dialect, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct OperatorRow {
    pub name: String,
    pub pass_hash: String,
    pub role: OperatorRole,
    pub description: Option<String>,
    /// Random per account and per password: tokens carry it, so a password
    /// change or a re-created account invalidates every older token.
    pub token_gen: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewOperator {
    pub name: String,
    pub pass_hash: String,
    pub role: OperatorRole,
    pub description: Option<String>,
}

macro_rules! operator_columns {
    () => {
        "name, pass_hash, role, description, token_gen, created_at, updated_at, last_login_at"
    };
}

fn from_row(row: &Row) -> Result<OperatorRow> {
    let role: String = row.text("role")?;
    Ok(OperatorRow {
        name: row.text("name")?,
        pass_hash: row.text("pass_hash")?,
        role: OperatorRole::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("operator role '{role}'")))?,
        description: row.opt_text("description")?,
        token_gen: row.i64("token_gen")?,
        created_at: row.i64("created_at")?,
        updated_at: row.i64("updated_at")?,
        last_login_at: row.opt_i64("last_login_at")?,
    })
}

/// Refuses a change that would leave no admin.
async fn ensure_other_admin(conn: &mut Conn, dialect: Dialect, name: &str) -> Result<()> {
    let admins = db::query(&dialect.sql("SELECT COUNT(*) AS n FROM operators WHERE role = ?"))
        .bind(OperatorRole::Admin.as_str())
        .fetch_one(&mut *conn)
        .await?;
    if admins.i64("n")? <= 1 {
        return Err(StoreError::Conflict(format!(
            "operator '{name}' is the last admin; make another admin first"
        )));
    }
    Ok(())
}

fn new_token_gen() -> i64 {
    rand::random::<i64>() & i64::MAX
}

impl Store {
    pub async fn get_operator(&self, name: &str) -> Result<Option<OperatorRow>> {
        let sql = self
            .dialect
            .sql(concat!(
                "SELECT ",
                operator_columns!(),
                " FROM operators WHERE name = ?"
            ))
            .into_owned();
        let row = db::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn list_operators(&self, limit: u32, offset: u64) -> Result<Vec<OperatorRow>> {
        let sql = self
            .dialect
            .sql(concat!(
                "SELECT ",
                operator_columns!(),
                " FROM operators ORDER BY name LIMIT ? OFFSET ?"
            ))
            .into_owned();
        let rows = db::query(&sql)
            .bind(i64::from(limit))
            .bind(crate::sql_offset(offset))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn count_operators(&self) -> Result<i64> {
        let row = db::query("SELECT COUNT(*) AS n FROM operators")
            .fetch_one(&self.pool)
            .await?;
        row.i64("n")
    }

    /// Creates an operator; `Conflict` when the name is taken.
    pub async fn create_operator(
        &self,
        op: NewOperator,
        audit: Option<AuditRecord>,
    ) -> Result<OperatorRow> {
        let dialect = self.dialect;
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let exists = db::query(&dialect.sql("SELECT 1 FROM operators WHERE name = ?"))
                        .bind(&op.name)
                        .fetch_optional(&mut *conn)
                        .await?;
                    if exists.is_some() {
                        return Err(StoreError::Conflict(format!(
                            "operator '{}' already exists",
                            op.name
                        )));
                    }
                    let now = now_ms();
                    let row = OperatorRow {
                        name: op.name,
                        pass_hash: op.pass_hash,
                        role: op.role,
                        description: op.description,
                        token_gen: new_token_gen(),
                        created_at: now,
                        updated_at: now,
                        last_login_at: None,
                    };
                    db::query(&dialect.sql(concat!(
                        "INSERT INTO operators (",
                        operator_columns!(),
                        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    )))
                    .bind(&row.name)
                    .bind(&row.pass_hash)
                    .bind(row.role.as_str())
                    .bind(&row.description)
                    .bind(row.token_gen)
                    .bind(row.created_at)
                    .bind(row.updated_at)
                    .bind(row.last_login_at)
                    .execute(&mut *conn)
                    .await?;
                    audit::insert_if(conn, dialect, &audit).await?;
                    Ok(row)
                })
            })
            .await
    }

    /// Changes role and/or description.
    pub async fn update_operator(
        &self,
        name: String,
        role: Option<OperatorRole>,
        description: Option<String>,
        audit: Option<AuditRecord>,
    ) -> Result<OperatorRow> {
        let dialect = self.dialect;
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let sql = dialect.sql(concat!("SELECT ", operator_columns!(), " FROM operators WHERE name = ?"));
                    let row = db::query(&sql)
                        .bind(&name)
                        .fetch_optional(&mut *conn)
                        .await?
                        .ok_or_else(|| StoreError::not_found("operator", &name))?;
                    let mut op = from_row(&row)?;
                    if op.role == OperatorRole::Admin && role == Some(OperatorRole::User) {
                        ensure_other_admin(conn, dialect, &name).await?;
                    }
                    if let Some(role) = role {
                        op.role = role;
                    }
                    if let Some(d) = description {
                        op.description = Some(d);
                    }
                    op.updated_at = now_ms();
                    db::query(&dialect.sql(
                        "UPDATE operators SET role = ?, description = ?, updated_at = ? WHERE name = ?",
                    ))
                    .bind(op.role.as_str())
                    .bind(&op.description)
                    .bind(op.updated_at)
                    .bind(&name)
                    .execute(&mut *conn)
                    .await?;
                    audit::insert_if(conn, dialect, &audit).await?;
                    Ok(op)
                })
            })
            .await
    }

    /// Sets a new password hash and a new token generation (old tokens die).
    pub async fn set_operator_password(
        &self,
        name: String,
        pass_hash: String,
        audit: Option<AuditRecord>,
    ) -> Result<()> {
        let dialect = self.dialect;
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let done = db::query(&dialect.sql(
                        "UPDATE operators SET pass_hash = ?, token_gen = ?, updated_at = ? WHERE name = ?",
                    ))
                    .bind(&pass_hash)
                    .bind(new_token_gen())
                    .bind(now_ms())
                    .bind(&name)
                    .execute(&mut *conn)
                    .await?;
                    if done == 0 {
                        return Err(StoreError::not_found("operator", &name));
                    }
                    audit::insert_if(conn, dialect, &audit).await?;
                    Ok(())
                })
            })
            .await
    }

    /// Deletes an operator; refuses to remove the last admin.
    pub async fn delete_operator(&self, name: String, audit: Option<AuditRecord>) -> Result<()> {
        let dialect = self.dialect;
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let row = db::query(&dialect.sql("SELECT role FROM operators WHERE name = ?"))
                        .bind(&name)
                        .fetch_optional(&mut *conn)
                        .await?
                        .ok_or_else(|| StoreError::not_found("operator", &name))?;
                    let role = row.text("role")?;
                    if role == OperatorRole::Admin.as_str() {
                        ensure_other_admin(conn, dialect, &name).await?;
                    }
                    db::query(&dialect.sql("DELETE FROM operators WHERE name = ?"))
                        .bind(&name)
                        .execute(&mut *conn)
                        .await?;
                    audit::insert_if(conn, dialect, &audit).await?;
                    Ok(())
                })
            })
            .await
    }

    /// Notes a successful login.
    pub async fn touch_login(&self, name: String, audit: Option<AuditRecord>) -> Result<()> {
        let dialect = self.dialect;
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    db::query(
                        &dialect.sql("UPDATE operators SET last_login_at = ? WHERE name = ?"),
                    )
                    .bind(now_ms())
                    .bind(&name)
                    .execute(&mut *conn)
                    .await?;
                    audit::insert_if(conn, dialect, &audit).await?;
                    Ok(())
                })
            })
            .await
    }
}
