//! Raworc's computer-use agent. It runs in the control plane: the model is
//! called from here (its key never enters a computer), and each tool call
//! runs in the session's computer through the host channel.
//!
//! - [`provider`]: the models (Anthropic, OpenAI-compatible servers, the mock agent)
//! - [`tools`]: the computer, bash and editor tools, declared and run
//! - [`context`]: the conversation rebuilt from the store for each turn
//! - [`runner`]: the loop that answers each user message exactly once
//! - [`Agents`]: one worker per session with work, woken by the API

pub mod context;
pub mod provider;
mod redact;
pub mod runner;
pub mod shots;
pub mod tools;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use raworc_runtime::Runtime;
use raworc_store::Store;

pub use provider::{Delta, DeltaKind, Model, ModelError};
pub use shots::Shots;

/// How the agent works.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Model turns per user message before the agent stops.
    pub max_steps: u32,
    /// Screenshots kept in the model's context (older ones are dropped).
    pub keep_images: usize,
    /// The display size the computer tool is declared with.
    pub display_width: u16,
    pub display_height: u16,
    /// How long a message waits for its session's computer to come up.
    pub computer_wait: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            max_steps: 50,
            keep_images: 3,
            display_width: 1024,
            display_height: 768,
            computer_wait: Duration::from_secs(300),
        }
    }
}

/// What the agent needs of the rest of the control plane.
pub trait Hooks: Send + Sync {
    /// The operator should look at session `id` (after a resume or restore).
    fn wake_operator(&self, id: &str);
    /// Session `id` is in use (idle timeouts).
    fn touch(&self, id: &str);
    /// The session's secrets `(name, value)`, to keep them out of results.
    fn session_secrets<'a>(
        &'a self,
        id: &'a str,
    ) -> futures::future::BoxFuture<'a, Vec<(String, String)>>;
    /// Tokens a model call used (metrics).
    fn model_usage(&self, provider: &str, model: &str, usage: wire::Usage);
    /// A piece of session `id`'s model turn as it streams, before the turn
    /// is stored (live views; nothing keeps it). `after` is the `seq` of
    /// the session's latest event when the model call began: the piece
    /// belongs after that event, and before the turn's own events.
    fn delta(&self, id: &str, after: i64, delta: &provider::Delta) {
        let _ = (id, after, delta);
    }
}

pub(crate) struct SharedInner {
    pub store: Store,
    pub runtime: Option<Arc<dyn Runtime>>,
    pub model: Arc<dyn Model>,
    pub shots: Shots,
    pub config: AgentConfig,
    pub hooks: Arc<dyn Hooks>,
}

pub(crate) type Shared = Arc<SharedInner>;

/// A session's worker: whether it should look again when done, and how to
/// cancel its current message.
struct Worker {
    again: bool,
    cancel: Arc<runner::Cancel>,
    task: Option<tokio::task::AbortHandle>,
}

/// The agents of all sessions: at most one worker per session, started
/// when the session has unanswered messages.
#[derive(Clone)]
pub struct Agents {
    shared: Shared,
    workers: Arc<Mutex<HashMap<String, Worker>>>,
}

impl Agents {
    pub fn new(
        store: Store,
        runtime: Option<Arc<dyn Runtime>>,
        model: Arc<dyn Model>,
        shots: Shots,
        config: AgentConfig,
        hooks: Arc<dyn Hooks>,
    ) -> Agents {
        Agents {
            shared: Arc::new(SharedInner {
                store,
                runtime,
                model,
                shots,
                config,
                hooks,
            }),
            workers: Default::default(),
        }
    }

    /// `provider/model`, for logs and health reports.
    pub fn describe(&self) -> (&'static str, String) {
        (
            self.shared.model.provider(),
            self.shared.model.model().to_owned(),
        )
    }

    pub fn shots(&self) -> &Shots {
        &self.shared.shots
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Worker>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Session `id` may have new work: starts its worker, or tells the
    /// running one to look again when it is done.
    pub fn wake(&self, id: &str) {
        let mut workers = self.workers();
        if let Some(w) = workers.get_mut(id) {
            w.again = true;
            return;
        }
        let cancel = Arc::new(runner::Cancel::default());
        workers.insert(
            id.to_owned(),
            Worker {
                again: false,
                cancel: cancel.clone(),
                task: None,
            },
        );
        let this = self.clone();
        let owned = id.to_owned();
        // The worker removes itself under the same lock: it cannot be gone
        // before its handle is set.
        let task = tokio::spawn(async move { this.run_worker(owned, cancel).await });
        if let Some(w) = workers.get_mut(id) {
            w.task = Some(task.abort_handle());
        }
    }

    async fn run_worker(self, id: String, cancel: Arc<runner::Cancel>) {
        let mut failures = 0u32;
        loop {
            // A panic (a bug) must not leave the session's entry behind:
            // every later wake would then find a worker that is gone.
            let outcome = std::panic::AssertUnwindSafe(runner::work(&self.shared, &id, &cancel))
                .catch_unwind()
                .await;
            let failed = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("the agent's worker panicked".to_owned()),
            };
            if let Some(error) = failed {
                failures += 1;
                // Back off: a store that keeps failing is not hammered.
                let wait = Duration::from_secs(1 << failures.min(5));
                tracing::warn!(session = %id, %error, retry_in_s = wait.as_secs(), "the agent's work failed; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            failures = 0;
            let mut workers = self.workers();
            match workers.get_mut(&id) {
                Some(w) if w.again => w.again = false,
                _ => {
                    workers.remove(&id);
                    return;
                }
            }
        }
    }

    /// Asks session `id`'s agent to stop at its next step; false when it
    /// is not working.
    pub fn cancel(&self, id: &str) -> bool {
        match self.workers().get(id) {
            Some(w) => {
                w.cancel.set();
                true
            }
            None => false,
        }
    }

    /// Wakes every session with unanswered messages (at start-up), after
    /// lowering the `busy` flags a crash left up.
    pub async fn resume_all(&self) {
        if let Err(e) = self.shared.store.clear_busy().await {
            tracing::warn!(error = %e, "could not clear busy flags");
        }
        match self.shared.store.sessions_with_unanswered_messages().await {
            Ok(ids) => {
                for id in ids {
                    self.wake(&id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list unanswered messages"),
        }
    }

    /// Stops every worker where it is (at shutdown): what it had stored
    /// stands, and the next start goes on from there.
    pub fn stop(&self) {
        for (_, w) in self.workers().drain() {
            if let Some(task) = w.task {
                task.abort();
            }
        }
    }
}
