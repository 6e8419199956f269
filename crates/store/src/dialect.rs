use std::borrow::Cow;

use crate::StoreError;

/// The SQL database behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    /// Picks the dialect from a database URL's scheme.
    pub fn from_url(url: &str) -> Result<Dialect, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Dialect::Sqlite),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            "mysql" | "mariadb" => Ok(Dialect::MySql),
            _ => Err(StoreError::UnsupportedUrl(scheme.to_string())),
        }
    }

    /// `mariadb://` is accepted as a synonym of `mysql://`; SQLite files are created on demand.
    pub fn normalize_url(self, url: &str) -> String {
        match self {
            Dialect::MySql => match url.strip_prefix("mariadb:") {
                Some(rest) => format!("mysql:{rest}"),
                None => url.to_string(),
            },
            Dialect::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }

    /// Queries are written with `?` placeholders; PostgreSQL wants `$1, $2, …`.
    pub fn sql(self, query: &str) -> Cow<'_, str> {
        if self != Dialect::Postgres || !query.contains('?') {
            return Cow::Borrowed(query);
        }
        let mut out = String::with_capacity(query.len() + 16);
        let mut n = 0;
        for c in query.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered() {
        assert_eq!(
            Dialect::Postgres.sql("SELECT a FROM t WHERE b = ? AND c = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = $2"
        );
        assert_eq!(Dialect::MySql.sql("x = ?"), "x = ?");
    }

    #[test]
    fn urls_pick_dialects() {
        assert_eq!(
            Dialect::from_url("sqlite:///tmp/x.db").ok(),
            Some(Dialect::Sqlite)
        );
        assert_eq!(
            Dialect::from_url("postgresql://h/db").ok(),
            Some(Dialect::Postgres)
        );
        assert_eq!(
            Dialect::from_url("mariadb://h/db").ok(),
            Some(Dialect::MySql)
        );
        assert!(Dialect::from_url("redis://h").is_err());
        assert_eq!(
            Dialect::MySql.normalize_url("mariadb://root@h/db"),
            "mysql://root@h/db"
        );
        assert_eq!(
            Dialect::Sqlite.normalize_url("sqlite:///tmp/x.db"),
            "sqlite:///tmp/x.db?mode=rwc"
        );
    }
}
