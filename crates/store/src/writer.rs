//! The single writer: queued writes are committed together.
//!
//! Each write is a closure run on the writer's connection inside a shared
//! transaction (its own savepoint when several share a batch, so that one
//! failing write rolls back alone). Callers get their result only after the
//! batch has committed, so an acknowledged write is durable.
//!
//! On PostgreSQL and MySQL the writer is a tokio task on an sqlx connection.
//! On SQLite it is a thread of its own on a direct connection, where each
//! statement is a function call rather than a hand-off to another thread.

use std::path::PathBuf;

use futures::future::BoxFuture;
use sqlx::any::AnyConnectOptions;
use sqlx::ConnectOptions;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::Checkpointer;
use crate::db::Conn;
use crate::{Result, StoreError};

trait Job: Send {
    /// Runs the write; true when it succeeded and should be kept.
    fn run<'a>(&'a mut self, conn: &'a mut Conn) -> BoxFuture<'a, bool>;
    /// Delivers the outcome once the batch's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

/// Runs on the writer after a successful commit, before the caller hears
/// of it; unlike the caller it cannot be cancelled half-way.
pub(crate) type OnCommit<T> = Box<dyn FnOnce(&T) + Send>;

struct TypedJob<T, F> {
    f: Option<F>,
    out: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
    on_commit: Option<OnCommit<T>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T>> + Send + 'static,
{
    fn run<'a>(&'a mut self, conn: &'a mut Conn) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(f) = self.f.take() else {
                return false;
            };
            let out = f(conn).await;
            let ok = out.is_ok();
            self.out = Some(out);
            ok
        })
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let out = match (self.out, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => {
                if let Some(hook) = self.on_commit {
                    hook(&v);
                }
                Ok(v)
            }
            (Some(Ok(_)), Err(e)) | (None, Err(e)) => Err(StoreError::Commit(e)),
            (None, Ok(())) => Err(StoreError::Commit("write was not run".into())),
        };
        // The caller may have gone away (request cancelled); the write stands.
        let _ = self.reply.send(out);
    }
}

enum Msg {
    Job(Box<dyn Job>),
    /// Finish what was queued before, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// How the writer (re)opens its connection.
pub(crate) enum Opener {
    Sqlx(AnyConnectOptions),
    Sqlite { path: PathBuf, synchronous: String },
}

impl Opener {
    async fn open(&self) -> Result<Conn> {
        match self {
            Opener::Sqlx(options) => Ok(Conn::Sqlx(options.connect().await?)),
            Opener::Sqlite { path, synchronous } => {
                // Savepoints, where a write opens one, copy pages to a
                // sub-journal: in memory (`temp_store`), not a temporary file.
                // Checkpoints run on their own thread (see `checkpoint`).
                let conn = rusqlite::Connection::open(path)?;
                conn.execute_batch(&format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                     PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0; \
                     PRAGMA journal_size_limit = 67108864;"
                ))?;
                conn.set_prepared_statement_cache_capacity(64);
                Ok(Conn::Sqlite(conn))
            }
        }
    }

    fn checkpointer(&self) -> Result<Option<Checkpointer>> {
        match self {
            Opener::Sqlite { path, .. } => Checkpointer::start(path).map(Some),
            Opener::Sqlx(_) => Ok(None),
        }
    }

    fn begin(&self) -> &'static str {
        match self {
            // Take the write lock up front rather than on the first change.
            Opener::Sqlite { .. } => "BEGIN IMMEDIATE",
            Opener::Sqlx(_) => "BEGIN",
        }
    }
}

/// Sends writes to the writer.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    pub(crate) async fn spawn(opener: Opener, max_batch: usize) -> Result<Writer> {
        let conn = opener.open().await?;
        let checkpoints = opener.checkpointer()?;
        let on_own_thread = matches!(opener, Opener::Sqlite { .. });
        let (tx, rx) = mpsc::channel(max_batch * 16);
        let writer = run(opener, conn, checkpoints, rx, max_batch);
        if on_own_thread {
            std::thread::Builder::new()
                .name("raworc-writer".into())
                .spawn(move || futures::executor::block_on(writer))
                .map_err(|e| StoreError::Commit(format!("cannot start the writer: {e}")))?;
        } else {
            tokio::spawn(writer);
        }
        Ok(Writer { tx })
    }

    /// Runs `f` in the next batch and returns its result after the commit.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.write_then(f, None).await
    }

    /// As [`Writer::write`], running `on_commit` once the write is durable.
    pub(crate) async fn write_then<T, F>(&self, f: F, on_commit: Option<OnCommit<T>>) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = TypedJob {
            f: Some(f),
            out: None,
            reply,
            on_commit,
        };
        self.tx
            .send(Msg::Job(Box::new(job)))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits what is queued, then closes the writer's connection.
    pub(crate) async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    opener: Opener,
    conn: Conn,
    mut checkpoints: Option<Checkpointer>,
    mut rx: mpsc::Receiver<Msg>,
    max_batch: usize,
) {
    // `None` after a failure of the connection itself: reopened on the next batch.
    let mut conn = Some(conn);
    let mut msgs = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut msgs, max_batch).await > 0 {
        let mut jobs = Vec::with_capacity(msgs.len());
        let mut close = None;
        for msg in msgs.drain(..) {
            match msg {
                Msg::Job(job) => jobs.push(job),
                Msg::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
        }
        if !jobs.is_empty() {
            let started = std::time::Instant::now();
            let size = jobs.len();
            commit_batch(&opener, &mut conn, jobs).await;
            if let Some(c) = &mut checkpoints {
                c.committed();
            }
            tracing::trace!(
                size,
                elapsed_us = started.elapsed().as_micros() as u64,
                "write batch"
            );
        }
        if let Some(done) = close {
            if let Some(Conn::Sqlx(c)) = conn.take() {
                let _ = sqlx::Connection::close(c).await;
            }
            let _ = done.send(());
            return;
        }
    }
}

async fn commit_batch(opener: &Opener, conn: &mut Option<Conn>, mut jobs: Vec<Box<dyn Job>>) {
    let outcome = match conn {
        Some(c) => run_batch(opener, c, &mut jobs).await,
        None => match opener.open().await {
            Ok(c) => run_batch(opener, conn.insert(c), &mut jobs).await,
            Err(e) => Err(e.to_string()),
        },
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %e, jobs = jobs.len(), "write batch failed");
        // Leave no transaction open (SQLite may have rolled it back itself);
        // a connection that cannot even roll back is replaced.
        if let Some(c) = conn {
            if c.may_be_in_transaction() && c.run("ROLLBACK").await.is_err() {
                *conn = None;
            }
        }
    }
    for job in jobs {
        job.finish(outcome.clone());
    }
}

async fn run_batch(
    opener: &Opener,
    conn: &mut Conn,
    jobs: &mut [Box<dyn Job>],
) -> Result<(), String> {
    let control = |e: StoreError| e.to_string();
    conn.run(opener.begin()).await.map_err(control)?;
    if let [job] = jobs {
        // A lone write needs no savepoint: its failure rolls back the whole transaction.
        if !job.run(conn).await {
            return conn.run("ROLLBACK").await.map_err(control);
        }
    } else if let Conn::Sqlite(_) = conn {
        for job in jobs.iter_mut() {
            let before = sqlite_changes(conn);
            if !job.run(conn).await {
                undo_free_failure(conn, before)?;
            }
        }
    } else {
        for job in jobs.iter_mut() {
            conn.run("SAVEPOINT w").await.map_err(control)?;
            if !job.run(conn).await {
                conn.run("ROLLBACK TO SAVEPOINT w").await.map_err(control)?;
            }
            conn.run("RELEASE SAVEPOINT w").await.map_err(control)?;
        }
    }
    conn.run("COMMIT").await.map_err(control)
}

/// Rows changed so far on a SQLite connection (0 elsewhere).
fn sqlite_changes(conn: &Conn) -> u64 {
    match conn {
        Conn::Sqlite(c) => c.total_changes(),
        Conn::Sqlx(_) => 0,
    }
}

/// SQLite batches run without a savepoint per write: a savepoint copies every
/// page a write touches, which was a large part of a write's cost. Writes do
/// their checks before their first change, and a failing statement undoes
/// itself, so a failed write normally leaves nothing behind. One that did
/// change rows before failing cannot be undone alone: the whole batch is
/// rolled back and every write in it fails, so nothing half-done is kept and
/// nothing acknowledged is lost.
fn undo_free_failure(conn: &Conn, before: u64) -> Result<(), String> {
    match conn {
        Conn::Sqlite(c) if c.is_autocommit() => {
            Err("SQLite rolled back the transaction after an error".into())
        }
        Conn::Sqlite(c) if c.total_changes() != before => {
            Err("a write failed after changing rows; its batch was rolled back".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::str::FromStr;

    use futures::future::join_all;

    use super::*;
    use crate::db;

    /// Both engines, each on a fresh SQLite file whose table already holds `taken`.
    fn engines() -> Vec<(tempfile::TempDir, Opener)> {
        sqlx::any::install_default_drivers();
        let mut out = Vec::new();
        for direct in [true, false] {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("w.db");
            let conn = rusqlite::Connection::open(&path).expect("create test database");
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (k TEXT PRIMARY KEY); \
                 INSERT INTO t VALUES ('taken');",
            )
            .expect("create test table");
            let opener = if direct {
                Opener::Sqlite {
                    path,
                    synchronous: "FULL".into(),
                }
            } else {
                let url = format!("sqlite://{}", path.display());
                Opener::Sqlx(AnyConnectOptions::from_str(&url).expect("test url"))
            };
            out.push((dir, opener));
        }
        out
    }

    /// What a test write does.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Act {
        Insert,
        /// Fails before changing anything.
        Refuse,
        /// Fails in its statement (the key exists).
        Duplicate,
        /// Changes a row, then fails.
        InsertThenFail,
    }

    async fn write(writer: &Writer, key: String, act: Act) -> Result<()> {
        writer
            .write(move |conn| {
                Box::pin(async move {
                    if act == Act::Refuse {
                        return Err(StoreError::Conflict("refused".into()));
                    }
                    let key = if act == Act::Duplicate {
                        "taken".to_string()
                    } else {
                        key
                    };
                    db::query("INSERT INTO t (k) VALUES (?)")
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                    if act == Act::InsertThenFail {
                        return Err(StoreError::Conflict("failed after a change".into()));
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn keys(writer: &Writer) -> BTreeSet<String> {
        let rows = writer
            .write(|conn| {
                Box::pin(async move { db::query("SELECT k FROM t").fetch_all(conn).await })
            })
            .await
            .expect("read keys");
        rows.iter().map(|r| r.text("k").expect("key")).collect()
    }

    /// Runs `acts` concurrently (so that they share batches) and returns each outcome.
    async fn run_all(writer: &Writer, acts: &[Act]) -> Vec<(String, Act, bool)> {
        let outcomes = join_all(acts.iter().enumerate().map(|(i, act)| {
            let key = format!("k{i}");
            async move { (key.clone(), *act, write(writer, key, *act).await.is_ok()) }
        }))
        .await;
        outcomes
    }

    #[tokio::test]
    async fn failed_writes_leave_nothing_and_do_not_sink_their_batch() {
        let acts: Vec<Act> = (0..300)
            .map(|i| match i % 10 {
                8 => Act::Refuse,
                9 => Act::Duplicate,
                _ => Act::Insert,
            })
            .collect();
        for (_dir, opener) in engines() {
            let writer = Writer::spawn(opener, 64).await.expect("writer");
            let outcomes = run_all(&writer, &acts).await;
            let mut expected: BTreeSet<String> = ["taken".to_string()].into();
            for (key, act, ok) in &outcomes {
                assert_eq!(*ok, *act == Act::Insert, "{key}: {act:?}");
                if *ok {
                    expected.insert(key.clone());
                }
            }
            assert_eq!(keys(&writer).await, expected);
            writer.close().await;
        }
    }

    #[tokio::test]
    async fn a_write_failing_after_a_change_keeps_none_of_it() {
        let acts: Vec<Act> = (0..200)
            .map(|i| {
                if i % 25 == 7 {
                    Act::InsertThenFail
                } else {
                    Act::Insert
                }
            })
            .collect();
        for (_dir, opener) in engines() {
            let writer = Writer::spawn(opener, 64).await.expect("writer");
            let outcomes = run_all(&writer, &acts).await;
            let stored = keys(&writer).await;
            for (key, act, ok) in &outcomes {
                if *act == Act::InsertThenFail {
                    assert!(!ok, "{key} must fail");
                }
                // Acknowledged writes are kept, failed ones leave nothing.
                assert_eq!(stored.contains(key), *ok, "{key}: {act:?}");
            }
            writer.close().await;
        }
    }

    #[tokio::test]
    async fn writes_after_close_are_refused() {
        for (_dir, opener) in engines() {
            let writer = Writer::spawn(opener, 8).await.expect("writer");
            write(&writer, "before".into(), Act::Insert)
                .await
                .expect("write before close");
            writer.close().await;
            let after = write(&writer, "after".into(), Act::Insert).await;
            assert!(matches!(after, Err(StoreError::Closed)), "{after:?}");
        }
    }
}
