//! Column decoding that works the same on every database.
//!
//! Through the `Any` driver MySQL reports TEXT columns as BLOB, so text is
//! read as a string where the driver allows it and as UTF-8 bytes otherwise.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Result, StoreError};

pub(crate) fn text(row: &AnyRow, col: &str) -> Result<String> {
    opt_text(row, col)?.ok_or_else(|| StoreError::Corrupt(format!("column {col} is NULL")))
}

pub(crate) fn opt_text(row: &AnyRow, col: &str) -> Result<Option<String>> {
    match row.try_get::<Option<String>, _>(col) {
        Ok(v) => Ok(v),
        Err(sqlx::Error::ColumnDecode { .. }) => {
            let bytes: Option<Vec<u8>> = row.try_get(col)?;
            bytes
                .map(|b| {
                    String::from_utf8(b)
                        .map_err(|_| StoreError::Corrupt(format!("column {col} is not UTF-8")))
                })
                .transpose()
        }
        Err(e) => Err(e.into()),
    }
}
