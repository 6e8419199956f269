//! WAL checkpoints for SQLite, off the writer's thread.
//!
//! SQLite normally checkpoints inside the commit that crosses the WAL's size
//! threshold, which stalls that commit, and every write queued behind it, for
//! tens of milliseconds. The writer turns that off and instead nudges this
//! thread, which copies the WAL back into the database on a connection of its
//! own while writes go on (a `PASSIVE` checkpoint takes no write lock).

use std::path::Path;
use std::sync::mpsc;

use crate::Result;

/// Batches committed between two nudges.
const BATCHES_PER_CHECKPOINT: u32 = 16;

pub(crate) struct Checkpointer {
    nudge: mpsc::SyncSender<()>,
    batches: u32,
}

impl Checkpointer {
    /// Starts the thread; it ends when the checkpointer is dropped.
    pub(crate) fn start(path: &Path) -> Result<Checkpointer> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let (nudge, nudged) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("raworc-checkpoint".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                    });
                    match done {
                        Ok((wal, copied)) => tracing::trace!(wal, copied, "checkpoint"),
                        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                    }
                }
            })
            .map_err(|e| crate::StoreError::Commit(format!("cannot start checkpoints: {e}")))?;
        Ok(Checkpointer { nudge, batches: 0 })
    }

    /// Counts a committed batch and asks for a checkpoint every so often.
    pub(crate) fn committed(&mut self) {
        self.batches += 1;
        if self.batches >= BATCHES_PER_CHECKPOINT {
            self.batches = 0;
            // Full: a checkpoint is already due, which covers this one.
            let _ = self.nudge.try_send(());
        }
    }
}
