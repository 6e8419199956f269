//! One way to run a statement on either engine the store uses.
//!
//! Reads go through sqlx's pool on every database, and so do writes on
//! PostgreSQL and MySQL. SQLite writes run on a direct connection on the
//! writer's own thread: sqlx's SQLite driver hands every statement to a
//! worker thread and back, and those hand-offs, not SQLite, were most of the
//! cost of a write. Store code builds a [`Query`] once and runs it on either.

use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, Value as SqliteValue, ValueRef};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Row as _};

use crate::{Result, StoreError};

/// A statement's parameter. NULLs keep their column's type: PostgreSQL
/// refuses a text NULL for an integer column.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_string()))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(Some(v.clone()))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}

impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Self {
        Value::Text(v.clone())
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Int(Some(v)) => ValueRef::Integer(*v),
            Value::Text(Some(v)) => ValueRef::Text(v.as_bytes()),
            Value::Int(None) | Value::Text(None) => ValueRef::Null,
        }))
    }
}

/// A statement with `?` placeholders (already in the connection's dialect) and its parameters.
pub(crate) struct Query<'q> {
    sql: &'q str,
    args: Vec<Value>,
}

pub(crate) fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        args: Vec::new(),
    }
}

/// Where a statement runs: the read pool or the writer's connection.
pub(crate) enum On<'c> {
    Pool(&'c AnyPool),
    Conn(&'c mut Conn),
}

impl<'c> From<&'c AnyPool> for On<'c> {
    fn from(pool: &'c AnyPool) -> Self {
        On::Pool(pool)
    }
}

impl<'c> From<&'c mut Conn> for On<'c> {
    fn from(conn: &'c mut Conn) -> Self {
        On::Conn(conn)
    }
}

impl<'q> Query<'q> {
    pub(crate) fn bind(mut self, v: impl Into<Value>) -> Self {
        self.args.push(v.into());
        self
    }

    fn sqlx(&self) -> sqlx::query::Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(self.sql);
        for arg in &self.args {
            q = match arg {
                Value::Int(v) => q.bind(*v),
                Value::Text(v) => q.bind(v.as_deref()),
            };
        }
        q
    }

    /// Runs the statement; the number of rows it changed.
    pub(crate) async fn execute<'c>(self, on: impl Into<On<'c>>) -> Result<u64> {
        match on.into() {
            On::Pool(pool) => Ok(self.sqlx().execute(pool).await?.rows_affected()),
            On::Conn(Conn::Sqlx(conn)) => Ok(self.sqlx().execute(conn).await?.rows_affected()),
            On::Conn(Conn::Sqlite(conn)) => {
                let mut stmt = conn.prepare_cached(self.sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(&self.args))? as u64)
            }
        }
    }

    pub(crate) async fn fetch_all<'c>(self, on: impl Into<On<'c>>) -> Result<Vec<Row>> {
        match on.into() {
            On::Pool(pool) => Ok(wrap(self.sqlx().fetch_all(pool).await?)),
            On::Conn(Conn::Sqlx(conn)) => Ok(wrap(self.sqlx().fetch_all(conn).await?)),
            On::Conn(Conn::Sqlite(conn)) => {
                let mut stmt = conn.prepare_cached(self.sql)?;
                let columns: Arc<[String]> =
                    stmt.column_names().into_iter().map(String::from).collect();
                let mut rows = stmt.query(rusqlite::params_from_iter(&self.args))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let values = (0..columns.len())
                        .map(|i| row.get::<_, SqliteValue>(i))
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    out.push(Row::Sqlite {
                        columns: columns.clone(),
                        values,
                    });
                }
                Ok(out)
            }
        }
    }

    pub(crate) async fn fetch_optional<'c>(self, on: impl Into<On<'c>>) -> Result<Option<Row>> {
        Ok(self.fetch_all(on).await?.into_iter().next())
    }

    pub(crate) async fn fetch_one<'c>(self, on: impl Into<On<'c>>) -> Result<Row> {
        self.fetch_optional(on)
            .await?
            .ok_or_else(|| StoreError::Corrupt("query returned no row".into()))
    }
}

fn wrap(rows: Vec<AnyRow>) -> Vec<Row> {
    rows.into_iter().map(Row::Any).collect()
}

/// A connection the writer owns.
pub enum Conn {
    Sqlx(AnyConnection),
    Sqlite(rusqlite::Connection),
}

impl Conn {
    /// False only when the connection is known to have no open transaction
    /// (SQLite reports it; over sqlx it is not known).
    pub(crate) fn may_be_in_transaction(&self) -> bool {
        match self {
            Conn::Sqlite(conn) => !conn.is_autocommit(),
            Conn::Sqlx(_) => true,
        }
    }

    /// Runs a statement without parameters or results (transaction control).
    pub(crate) async fn run(&mut self, sql: &str) -> Result<()> {
        match self {
            // A plain string goes over the simple protocol: MySQL cannot
            // prepare some of these statements.
            Conn::Sqlx(conn) => {
                sqlx::Executor::execute(&mut *conn, sql).await?;
            }
            Conn::Sqlite(conn) => {
                conn.prepare_cached(sql)?.raw_execute()?;
            }
        }
        Ok(())
    }
}

/// A result row from either engine.
pub(crate) enum Row {
    Any(AnyRow),
    Sqlite {
        columns: Arc<[String]>,
        values: Vec<SqliteValue>,
    },
}

impl Row {
    fn sqlite_value(columns: &[String], values: &[SqliteValue], col: &str) -> Result<SqliteValue> {
        columns
            .iter()
            .position(|c| c == col)
            .and_then(|i| values.get(i).cloned())
            .ok_or_else(|| StoreError::Corrupt(format!("no column {col}")))
    }

    pub(crate) fn opt_i64(&self, col: &str) -> Result<Option<i64>> {
        match self {
            Row::Any(row) => Ok(row.try_get(col)?),
            Row::Sqlite { columns, values } => match Self::sqlite_value(columns, values, col)? {
                SqliteValue::Null => Ok(None),
                SqliteValue::Integer(v) => Ok(Some(v)),
                other => Err(StoreError::Corrupt(format!(
                    "column {col} is {:?}, not an integer",
                    other.data_type()
                ))),
            },
        }
    }

    pub(crate) fn i64(&self, col: &str) -> Result<i64> {
        self.opt_i64(col)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {col} is NULL")))
    }

    pub(crate) fn text(&self, col: &str) -> Result<String> {
        self.opt_text(col)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {col} is NULL")))
    }

    /// Text, also where the driver reports it as bytes: through the `Any`
    /// driver MySQL gives TEXT columns as BLOB.
    pub(crate) fn opt_text(&self, col: &str) -> Result<Option<String>> {
        let bytes = match self {
            Row::Any(row) => match row.try_get::<Option<String>, _>(col) {
                Ok(v) => return Ok(v),
                Err(sqlx::Error::ColumnDecode { .. }) => row.try_get::<Option<Vec<u8>>, _>(col)?,
                Err(e) => return Err(e.into()),
            },
            Row::Sqlite { columns, values } => match Self::sqlite_value(columns, values, col)? {
                SqliteValue::Null => None,
                SqliteValue::Text(v) => return Ok(Some(v)),
                SqliteValue::Blob(v) => Some(v),
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "column {col} is {:?}, not text",
                        other.data_type()
                    )))
                }
            },
        };
        bytes
            .map(|b| {
                String::from_utf8(b)
                    .map_err(|_| StoreError::Corrupt(format!("column {col} is not UTF-8")))
            })
            .transpose()
    }
}
