//! The warm pool: computers started ahead of need on fresh disks, painted,
//! then frozen (no CPU while they wait). A create that one can serve claims
//! it: the computer is renamed to the session, takes the session's host
//! name and limits, is thawed and handed its session (files, secrets,
//! setup) over its socket — the same last step as a cold start. The pool
//! refills in the background, one computer at a time, at a low CPU weight
//! so that running computers keep their share.
//!
//! Pooled computers do not count as running (they are not listed, nor
//! held against `--max-sessions`); a server that starts removes whatever
//! pooled computers an earlier run left (they never held a session), and
//! a clean stop removes its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{check_id, hostname_of, LocalRuntime, Network, START_GRACE};
use crate::{ComputerSpec, PoolStats, Ready, Runtime, RuntimeError};

/// Ids of pooled computers start with this.
pub const POOL_PREFIX: &str = "pool-";
/// CPU weight of a computer while it fills the pool (100 is everyone's).
const FILL_WEIGHT: u64 = 10;
const NORMAL_WEIGHT: u64 = 100;
/// Wait after a failed fill before the next try.
const FILL_BACKOFF: Duration = Duration::from_secs(5);
/// How long a pooled computer may take to paint.
const FILL_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `id` names a pooled computer.
pub fn is_pooled(id: &str) -> bool {
    id.starts_with(POOL_PREFIX)
}

#[derive(Default)]
pub(crate) struct Pool {
    /// Painted, frozen and unclaimed, oldest first.
    ready: Mutex<VecDeque<String>>,
    refill: Arc<Notify>,
    stopped: AtomicBool,
    claims: AtomicU64,
    misses: AtomicU64,
    /// Milliseconds the last fill took (start to painted and frozen).
    last_fill_ms: AtomicU64,
}

impl Pool {
    fn take(&self) -> Option<String> {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    fn len(&self) -> usize {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A new pooled computer's id.
fn new_pool_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{POOL_PREFIX}{:x}-{n}-{}", nanos, std::process::id())
}

/// Sets the host name in the UTS namespace of process `pid` (a computer's
/// PID 1), from a thread of its own that ends right after.
fn set_hostname(pid: u32, name: &str) -> Result<(), RuntimeError> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/uts"))
        .map_err(crate::io("opening the computer's host name namespace"))?;
    let name = name.to_owned();
    let set = std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: setns on a namespace fd this thread holds; only this
        // thread changes namespace, and it ends below.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUTS) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a valid buffer and its length.
        if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    });
    set.join()
        .map_err(|_| RuntimeError::Start("setting the host name failed".into()))?
        .map_err(crate::io("setting the computer's host name"))
}

impl LocalRuntime {
    /// The pool's figures, when it is on.
    pub(crate) fn pool_stats(&self) -> Option<PoolStats> {
        (self.config.warm_pool > 0).then(|| PoolStats {
            target: self.config.warm_pool,
            ready: self.pool.len(),
            claims: self.pool.claims.load(Ordering::Relaxed),
            misses: self.pool.misses.load(Ordering::Relaxed),
            last_fill_ms: match self.pool.last_fill_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(ms),
            },
        })
    }

    /// A pooled computer made into `spec`'s, when one can serve it: a new
    /// computer (no disk yet) on the pool's display without egress.
    /// `None` means a cold start (an empty pool counts as a miss).
    pub(crate) async fn claim(&self, spec: &ComputerSpec) -> Option<Ready> {
        let fits = self.config.warm_pool > 0
            && spec.network == Network::None
            && spec.display == self.config.pool_display
            && !self.dir(&spec.id).exists();
        if !fits {
            return None;
        }
        let Some(pooled) = self.pool.take() else {
            self.pool.misses.fetch_add(1, Ordering::Relaxed);
            self.pool.refill.notify_one();
            return None;
        };
        self.pool.refill.notify_one();
        match self.make_session(&pooled, spec).await {
            Ok(ready) => {
                self.pool.claims.fetch_add(1, Ordering::Relaxed);
                Some(ready)
            }
            Err(e) => {
                tracing::warn!(computer = %spec.id, error = %e, "a pooled computer could not be claimed; starting one cold");
                for id in [&pooled, &spec.id] {
                    if let Err(e) = self.remove(id).await {
                        tracing::warn!(computer = %id, error = %e, "removing a computer failed");
                    }
                }
                None
            }
        }
    }

    /// Renames pooled computer `pooled` to `spec.id`, gives it the
    /// session's host name and limits, thaws it and brings it up.
    async fn make_session(&self, pooled: &str, spec: &ComputerSpec) -> Result<Ready, RuntimeError> {
        check_id(&spec.id)?;
        {
            let _busy = self.disks_busy.lock().await;
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let entry = running
                .remove(pooled)
                .ok_or_else(|| RuntimeError::NotRunning(pooled.to_owned()))?;
            running.insert(spec.id.clone(), entry);
            drop(running);
            std::fs::rename(self.dir(pooled), self.dir(&spec.id))
                .map_err(crate::io("renaming a pooled computer's disk"))?;
        }
        let (sandbox, exited) = self
            .entry(&spec.id)
            .ok_or_else(|| RuntimeError::NotRunning(spec.id.clone()))?;
        set_hostname(sandbox.pid(), &hostname_of(&spec.id))?;
        let limits = self.limits(spec);
        let cgroup = sandbox
            .cgroup()
            .ok_or_else(|| RuntimeError::Start("the pooled computer has no cgroup".into()))?;
        cgroup.apply(&limits)?;
        cgroup.cpu_weight(NORMAL_WEIGHT)?;
        cgroup.limit_cpu(limits.cpu_millicores)?;
        cgroup.thaw()?;
        let dir = self.dir(&spec.id);
        self.bring_up(spec, &dir, exited, START_GRACE).await
    }

    /// Starts one pooled computer, waits until it is painted, freezes it
    /// and puts it in the pool.
    async fn fill_one(&self) -> Result<(), RuntimeError> {
        let began = Instant::now();
        let spec = ComputerSpec {
            id: new_pool_id(),
            display: self.config.pool_display,
            ..ComputerSpec::default()
        };
        let (_, exited) = self.launch(&spec).await?;
        if let Some((sandbox, _)) = self.entry(&spec.id) {
            if let Some(cg) = sandbox.cgroup() {
                cg.cpu_weight(FILL_WEIGHT)?;
            }
        }
        let client = self.client(&spec.id);
        let mut ended = exited.clone();
        let painted = tokio::select! {
            painted = client.desktop(FILL_TIMEOUT) => painted.map_err(|e| e.to_string()),
            _ = ended.wait_for(|e| e.is_some()) => Err("the computer ended".to_owned()),
        };
        let outcome = match painted {
            Ok(_) => {
                self.cap_cpu(&spec);
                self.pause(&spec.id).await
            }
            Err(reason) => Err(RuntimeError::Start(format!(
                "a pooled computer did not paint: {reason}"
            ))),
        };
        if outcome.is_err() || self.pool.stopped.load(Ordering::Acquire) {
            let _ = self.remove(&spec.id).await;
            return outcome;
        }
        let ms = began.elapsed().as_millis() as u64;
        self.pool.last_fill_ms.store(ms.max(1), Ordering::Relaxed);
        tracing::info!(computer = %spec.id, ms, "a computer joined the warm pool");
        self.pool
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(spec.id);
        Ok(())
    }

    /// Removes pooled computers: those of an earlier run (at start) or all
    /// of this run's (at shutdown).
    pub(crate) async fn remove_pooled(&self) {
        self.pool
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let ids: Vec<String> = match std::fs::read_dir(&self.config.computers_dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|id| is_pooled(id))
                .collect(),
            Err(_) => Vec::new(),
        };
        for id in ids {
            if let Err(e) = self.remove(&id).await {
                tracing::warn!(computer = %id, error = %e, "removing a pooled computer failed");
            }
        }
    }

    /// Stops filling the pool.
    pub(crate) fn stop_pool(&self) {
        self.pool.stopped.store(true, Ordering::Release);
        self.pool.refill.notify_one();
    }

    /// Keeps the warm pool of `runtime` filled until it stops or is dropped.
    pub fn spawn_pool(runtime: &Arc<LocalRuntime>) {
        if runtime.config.warm_pool == 0 {
            return;
        }
        let weak: Weak<LocalRuntime> = Arc::downgrade(runtime);
        let refill = runtime.pool.refill.clone();
        tokio::spawn(async move {
            if let Some(rt) = weak.upgrade() {
                rt.remove_pooled().await;
            }
            loop {
                let notified = refill.notified();
                {
                    let Some(rt) = weak.upgrade() else { return };
                    if rt.pool.stopped.load(Ordering::Acquire) {
                        return;
                    }
                    if rt.pool.len() < rt.config.warm_pool {
                        if let Err(e) = rt.fill_one().await {
                            tracing::warn!(error = %e, "filling the warm pool failed");
                            drop(rt);
                            tokio::time::sleep(FILL_BACKOFF).await;
                        }
                        continue;
                    }
                }
                notified.await;
            }
        });
    }
}
