//! The single writer: queued writes are committed together.
//!
//! Each write is a closure run on the writer's connection inside a shared
//! transaction (its own savepoint when several share a batch, so that one
//! failing write rolls back alone). Callers get their result only after the
//! batch has committed, so an acknowledged write is durable.

use futures::future::BoxFuture;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

/// The connection a write runs on.
pub type Conn = AnyConnection;

trait Job: Send {
    /// Runs the write; true when it succeeded and should be kept.
    fn run<'a>(&'a mut self, conn: &'a mut Conn) -> BoxFuture<'a, bool>;
    /// Delivers the outcome once the batch's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

/// Runs on the writer task after a successful commit, before the caller hears
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

/// Sends writes to the writer task.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Box<dyn Job>>,
    pool: AnyPool,
}

impl Writer {
    pub(crate) fn spawn(pool: AnyPool, max_batch: usize) -> Writer {
        let (tx, rx) = mpsc::channel(max_batch * 16);
        tokio::spawn(run(pool.clone(), rx, max_batch));
        Writer { tx, pool }
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
            .send(Box::new(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

async fn run(pool: AnyPool, mut rx: mpsc::Receiver<Box<dyn Job>>, max_batch: usize) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let jobs = std::mem::take(&mut batch);
        let size = jobs.len();
        let started = std::time::Instant::now();
        commit_batch(&pool, jobs).await;
        tracing::trace!(
            size,
            elapsed_us = started.elapsed().as_micros() as u64,
            "write batch"
        );
    }
}

async fn commit_batch(pool: &AnyPool, mut jobs: Vec<Box<dyn Job>>) {
    let outcome = run_batch(pool, &mut jobs).await;
    if let Err(e) = &outcome {
        tracing::error!(error = %e, jobs = jobs.len(), "write batch failed");
    }
    for job in jobs {
        job.finish(outcome.clone());
    }
}

async fn run_batch(pool: &AnyPool, jobs: &mut [Box<dyn Job>]) -> Result<(), String> {
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    if let [job] = jobs {
        // A lone write needs no savepoint: its failure rolls back the whole transaction.
        if !job.run(&mut tx).await {
            tx.rollback().await.map_err(|e| e.to_string())?;
            return Ok(());
        }
    } else {
        for job in jobs.iter_mut() {
            let mut savepoint = tx.begin().await.map_err(|e| e.to_string())?;
            if job.run(&mut savepoint).await {
                savepoint.commit().await.map_err(|e| e.to_string())?;
            } else {
                savepoint.rollback().await.map_err(|e| e.to_string())?;
            }
        }
    }
    tx.commit().await.map_err(|e| e.to_string())
}
