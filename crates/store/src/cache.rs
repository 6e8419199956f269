//! A read cache of session rows, for stores whose database no other process
//! writes (SQLite). Every write that changes a session invalidates or updates
//! its entry from the writer after the commit; a read that raced with such a write
//! does not put its older row back (the epoch check).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::SessionRow;

const CAPACITY: usize = 10_000;

#[derive(Default)]
pub(crate) struct SessionCache {
    rows: RwLock<HashMap<String, SessionRow>>,
    epoch: AtomicU64,
}

impl SessionCache {
    pub(crate) fn get(&self, id: &str) -> Option<SessionRow> {
        self.rows.read().ok()?.get(id).cloned()
    }

    /// The epoch to pass to [`SessionCache::fill`] for a read that starts now.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Keeps `row`, read from the database, unless a write came in since `epoch`.
    pub(crate) fn fill(&self, epoch: u64, row: &SessionRow) {
        if let Ok(mut rows) = self.rows.write() {
            if self.epoch.load(Ordering::Acquire) != epoch {
                return;
            }
            if rows.len() >= CAPACITY {
                rows.clear();
            }
            rows.insert(row.id.clone(), row.clone());
        }
    }

    /// Applies a committed change to the cached row of `id`, if there is one.
    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut SessionRow)) {
        if let Ok(mut rows) = self.rows.write() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            if let Some(row) = rows.get_mut(id) {
                change(row);
            }
        }
    }

    pub(crate) fn invalidate(&self, id: &str) {
        if let Ok(mut rows) = self.rows.write() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            rows.remove(id);
        }
    }
}
