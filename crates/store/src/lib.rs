//! Raworc's store: operators, sessions, messages, events, the agent's
//! progress and the audit log.
//!
//! One schema runs on SQLite, PostgreSQL and MySQL/MariaDB. Reads go straight
//! to an sqlx (`Any` driver) connection pool; every write goes through a
//! single [`writer`] that commits queued writes together (group commit), so
//! many concurrent requests share one fsync. On SQLite the writer uses a
//! direct connection on a thread of its own ([`db`] runs a statement on
//! either engine).

mod agent;
mod audit;
mod cache;
mod checkpoint;
mod db;
mod dialect;
mod error;
mod events;
mod messages;
mod operators;
mod sessions;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::MigrateDatabase;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, ConnectOptions, Executor};

pub use agent::StepRow;
pub use audit::{AuditFilter, AuditRecord, AuditRow};
use db::Conn;
pub use dialect::Dialect;
pub use error::StoreError;
pub use events::{kind as event_kind, without_nul, EventRow, NewEvent};
pub use messages::{MessageRow, NewMessage};
pub use operators::{NewOperator, OperatorRow};
pub use sessions::{NewSession, Remix, SessionPatch, SessionRow, SessionTransition};
use writer::{Opener, Writer};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch: the store's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An `OFFSET` the databases accept: offsets past `i64::MAX` would wrap to a
/// negative number, which PostgreSQL and MariaDB refuse and SQLite reads as 0.
pub(crate) fn sql_offset(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// A new opaque id in the seed's style, e.g. `session-0190f1…`.
/// UUIDv7 keeps ids roughly time-ordered, which keeps b-tree inserts local.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// The file behind a SQLite URL. The writer opens it directly, so an
/// in-memory database (one per connection) cannot work.
fn sqlite_file(url: &str) -> Result<std::path::PathBuf> {
    let options = SqliteConnectOptions::from_str(url)?;
    let path = options.get_filename();
    if path.as_os_str().is_empty()
        || path.to_string_lossy().contains(":memory:")
        || path.to_string_lossy().starts_with("file:sqlx-in-memory")
    {
        return Err(StoreError::Unsupported(
            "an in-memory SQLite database (give a file)",
        ));
    }
    Ok(path.to_path_buf())
}

/// Tuning knobs of a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections used for reads.
    pub read_connections: u32,
    /// Most writes committed together in one transaction.
    pub max_batch: usize,
    /// SQLite `synchronous` level: `FULL` makes every commit durable against power loss.
    pub sqlite_synchronous: String,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            read_connections: 8,
            max_batch: 256,
            sqlite_synchronous: "FULL".into(),
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    writer: Writer,
    /// Session rows, when only this process writes the database.
    sessions: Option<std::sync::Arc<cache::SessionCache>>,
    /// Announces sessions with new events after their commit.
    events: events::EventHub,
}

static MIGRATE_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MIGRATE_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static MIGRATE_MYSQL: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

impl Store {
    /// Connects (creating the database if it does not exist) and runs migrations.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url)?;
        let url = dialect.normalize_url(url);
        if !Any::database_exists(&url).await.unwrap_or(false) {
            Any::create_database(&url).await?;
        }
        let sync = options.sqlite_synchronous.clone();
        let connect_options = AnyConnectOptions::from_str(&url)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let make_pool = |max: u32| {
            let sync = sync.clone();
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(move |conn, _meta| {
                    let sync = sync.clone();
                    Box::pin(async move {
                        if dialect == Dialect::Sqlite {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute(&*format!("PRAGMA synchronous = {sync}"))
                                .await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = make_pool(options.read_connections.max(1))
            .connect_with(connect_options.clone())
            .await?;
        let migrator = match dialect {
            Dialect::Sqlite => &MIGRATE_SQLITE,
            Dialect::Postgres => &MIGRATE_POSTGRES,
            Dialect::MySql => &MIGRATE_MYSQL,
        };
        migrator.run(&pool).await?;
        let opener = match dialect {
            Dialect::Sqlite => Opener::Sqlite {
                path: sqlite_file(&url)?,
                synchronous: sync,
            },
            _ => Opener::Sqlx(connect_options),
        };
        let writer = Writer::spawn(opener, options.max_batch.max(1)).await?;
        // A SQLite file belongs to one server; the other databases may be
        // shared by several, so their reads always go to the database.
        let sessions = (dialect == Dialect::Sqlite).then(Default::default);
        Ok(Store {
            pool,
            dialect,
            writer,
            sessions,
            events: Default::default(),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The hook run after a commit that changed session `id` or appended
    /// to its events: drops the cached row and announces the session to
    /// event subscribers.
    pub(crate) fn session_changed<T>(&self, id: String) -> Option<writer::OnCommit<T>> {
        let cache = self.sessions.clone();
        let hub = self.events.clone();
        Some(Box::new(move |_: &T| {
            if let Some(cache) = cache {
                cache.invalidate(&id);
            }
            hub.announce(&id);
        }))
    }

    /// Announces a session's news to event subscribers (for writes whose
    /// session is known only once they are done).
    pub(crate) fn announcer(&self) -> impl Fn(&str) + Send + 'static {
        let hub = self.events.clone();
        move |id| hub.announce(id)
    }

    /// Round trip to the database, for health checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Drops the database behind `url` (test clean-up).
    pub async fn drop_database(url: &str) -> Result<()> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url)?;
        let url = dialect.normalize_url(url);
        if Any::database_exists(&url).await? {
            Any::drop_database(&url).await?;
        }
        Ok(())
    }

    /// Waits for queued writes and closes all connections.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
        // sqlx 0.8's close() can miss a connection whose return to the pool
        // raced with it (it ends up idle in the closed pool and keeps its
        // session open); a second close() finds and closes it.
        self.pool.close().await;
    }
}
