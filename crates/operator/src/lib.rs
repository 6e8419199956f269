//! The operator: a reconciler that drives each session's computer towards
//! the state its session row asks for.
//!
//! The API changes session rows (create, pause, close, restore, delete) and
//! wakes the operator with the session's id; a periodic sweep catches
//! anything a wake missed (a restart, a computer that died on its own). For
//! each session one step at a time runs ([`reconcile::step`]); a wake that
//! arrives while a step runs makes the session go round once more after it,
//! so steps never race each other and no change is lost.

mod idle;
mod reconcile;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use raworc_api::SessionState;
use raworc_runtime::{DisplaySize, Runtime};
use raworc_store::Store;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

/// Opens sealed session secrets for the computer that needs them in clear.
pub trait Secrets: Send + Sync {
    fn open(&self, name: &str, sealed: &str) -> Result<String, String>;
}

#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// How often every live session is looked at even without a wake.
    pub resync: Duration,
    /// Computers that may run at once; more starts wait for room, then fail.
    pub max_running: usize,
    /// Computers brought up at the same time (each start is CPU-heavy).
    pub concurrent_starts: usize,
    /// How long a start waits for room before the session is `errored`.
    pub room_wait: Duration,
    pub display: DisplaySize,
    /// A running session unused this long is paused (`None`: never).
    pub idle_pause: Option<Duration>,
    /// A running or paused session unused this long is closed (`None`: never).
    pub idle_close: Option<Duration>,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            resync: Duration::from_secs(10),
            max_running: 64,
            concurrent_starts: 2,
            room_wait: Duration::from_secs(30),
            display: DisplaySize::default(),
            idle_pause: None,
            idle_close: None,
        }
    }
}

/// What every step shares.
pub(crate) struct Shared {
    pub store: Store,
    pub runtime: Arc<dyn Runtime>,
    pub secrets: Arc<dyn Secrets>,
    pub config: OperatorConfig,
    /// Bounds concurrent starts.
    pub starts: Semaphore,
    /// Sessions holding a place among the running computers while they start.
    pub reserved: Mutex<HashSet<String>>,
    /// Told after every step: a computer may have stopped and left room.
    pub stepped: Notify,
    pub activity: idle::Activity,
}

impl Shared {
    /// Takes a place for `id` among the running computers if there is one.
    pub(crate) fn reserve(&self, id: &str) -> bool {
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken: HashSet<String> = self.runtime.running().into_iter().collect();
        if taken.contains(id) || reserved.contains(id) {
            return true;
        }
        taken.extend(reserved.iter().cloned());
        if taken.len() >= self.config.max_running {
            return false;
        }
        reserved.insert(id.to_owned());
        true
    }

    pub(crate) fn release(&self, id: &str) {
        self.reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.stepped.notify_waiters();
    }
}

/// The running operator. Dropping it does not stop it; [`Operator::stop`] does.
pub struct Operator {
    wakes: mpsc::UnboundedSender<String>,
    stop: watch::Sender<bool>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    shared: Arc<Shared>,
}

/// Session states whose computer may need work.
const LIVE: [SessionState; 5] = [
    SessionState::Created,
    SessionState::Starting,
    SessionState::Running,
    SessionState::Paused,
    SessionState::Closing,
];

impl Operator {
    /// Starts the operator; its first sweep looks at every session and
    /// every computer the runtime knows.
    pub fn spawn(
        store: Store,
        runtime: Arc<dyn Runtime>,
        secrets: Arc<dyn Secrets>,
        config: OperatorConfig,
    ) -> Operator {
        let shared = Arc::new(Shared {
            starts: Semaphore::new(config.concurrent_starts.max(1)),
            store,
            runtime,
            secrets,
            config,
            reserved: Mutex::default(),
            stepped: Notify::new(),
            activity: idle::Activity::new(),
        });
        let (wakes, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(shared.clone(), rx, stopped));
        Operator {
            wakes,
            stop,
            task: tokio::sync::Mutex::new(Some(task)),
            shared,
        }
    }

    /// Asks for session `id` to be looked at now.
    pub fn wake(&self, id: &str) {
        let _ = self.wakes.send(id.to_owned());
    }

    /// Notes that someone used session `id`'s computer (idle timeouts).
    pub fn touch(&self, id: &str) {
        self.shared.activity.touch(id);
    }

    /// Computers running now, and the most allowed.
    pub fn running(&self) -> (Vec<String>, usize) {
        (
            self.shared.runtime.running(),
            self.shared.config.max_running,
        )
    }

    /// Stops the loop; steps in flight are abandoned where they stand (the
    /// next operator picks their sessions up from the database).
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// One step at a time per session; a session woken during its step goes
/// round once more after it.
struct Steps {
    shared: Arc<Shared>,
    active: HashSet<String>,
    again: HashSet<String>,
    tasks: JoinSet<String>,
}

impl Steps {
    fn schedule(&mut self, id: String) {
        if self.active.contains(&id) {
            self.again.insert(id);
            return;
        }
        self.active.insert(id.clone());
        let shared = self.shared.clone();
        self.tasks.spawn(async move {
            let span = tracing::info_span!("reconcile", session = %id);
            let step = reconcile::step(&shared, &id).instrument(span);
            match std::panic::AssertUnwindSafe(step).catch_unwind().await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(
                    session = %id, error = %e,
                    "reconcile step failed; retrying at the next sweep"
                ),
                Err(_) => tracing::error!(session = %id, "reconcile step panicked"),
            }
            shared.stepped.notify_waiters();
            id
        });
    }

    fn finished(&mut self, id: String) {
        self.active.remove(&id);
        if self.again.remove(&id) {
            self.schedule(id);
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    mut wakes: mpsc::UnboundedReceiver<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(shared.config.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    let mut steps = Steps {
        shared: shared.clone(),
        active: HashSet::new(),
        again: HashSet::new(),
        tasks: JoinSet::new(),
    };
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(id) = wakes.recv() => steps.schedule(id),
            _ = tick.tick() => match sweep(&shared, first).await {
                Ok(ids) => {
                    first = false;
                    ids.into_iter().for_each(|id| steps.schedule(id));
                }
                Err(e) => tracing::warn!(error = %e, "operator sweep failed"),
            },
            Some(done) = steps.tasks.join_next(), if !steps.tasks.is_empty() => {
                if let Ok(id) = done {
                    steps.finished(id);
                }
            }
        }
    }
    steps.tasks.abort_all();
    while steps.tasks.join_next().await.is_some() {}
}

/// Sessions to look at: every live one (idle ones paused or closed first),
/// every running computer, and on the first sweep every computer with a
/// disk (a deleted session's leftovers).
async fn sweep(shared: &Shared, everything: bool) -> Result<Vec<String>, String> {
    let live = shared
        .store
        .sessions_in_states(&LIVE)
        .await
        .map_err(|e| e.to_string())?;
    // Idle sessions change state here; their steps below follow it.
    idle::enforce(shared, &live).await;
    let mut ids: Vec<String> = live.into_iter().map(|s| s.id).collect();
    ids.extend(shared.runtime.running());
    if everything {
        ids.extend(shared.runtime.list().await.map_err(|e| e.to_string())?);
    }
    let mut seen = HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    Ok(ids)
}
