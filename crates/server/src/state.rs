//! Shared state of the running server.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raworc_operator::Operator;
use raworc_runtime::Runtime;
use raworc_store::Store;

use crate::auth::jwt::JwtKeys;
use crate::auth::principal::OperatorCache;
use crate::auth::ratelimit::RateLimiter;
use crate::config::ServerConfig;
use crate::crypto::SecretBox;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub config: ServerConfig,
    pub keys: JwtKeys,
    pub secrets: Arc<SecretBox>,
    /// Where computers run; `None` with `--runtime none`.
    pub runtime: Option<Arc<dyn Runtime>>,
    /// Drives sessions' computers; present with a runtime.
    pub operator: Option<Arc<Operator>>,
    /// The agents that answer sessions' messages; present with a runtime.
    pub agents: Option<raworc_agent::Agents>,
    pub metrics: Metrics,
    /// The model's text and thinking as it streams, for the event streams
    /// that asked for them (nothing stores these).
    pub deltas: crate::routes::events::DeltaHub,
    pub operators: OperatorCache,
    pub login_by_name: RateLimiter,
    pub login_by_addr: RateLimiter,
    /// Verified against when a login names an unknown operator, so that
    /// unknown and known names take the same time.
    pub dummy_hash: String,
    pub started: Instant,
    /// Set when the server begins to shut down: long-lived streams (events,
    /// desktop) end then, so that a graceful stop does not wait on them.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }

    /// Tells the operator that session `id` changed.
    pub fn wake(&self, id: &str) {
        if let Some(operator) = &self.operator {
            operator.wake(id);
        }
    }

    /// Tells session `id`'s agent that a message may wait for it.
    pub fn wake_agent(&self, id: &str) {
        if let Some(agents) = &self.agents {
            agents.wake(id);
        }
    }

    /// Notes that session `id`'s computer was used (idle timeouts).
    pub fn touch(&self, id: &str) {
        if let Some(operator) = &self.operator {
            operator.touch(id);
        }
    }

    /// Resolves once the server begins to shut down.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }

    /// Resolves when a stream opened by `principal` must end: when its
    /// token expires, or when the server begins to shut down.
    pub fn stream_end(
        &self,
        principal: &crate::auth::Principal,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let now = chrono::Utc::now().timestamp();
        let left = Duration::from_secs((principal.expires_at - now).max(0) as u64);
        let closed = self.closed();
        async move {
            tokio::select! {
                _ = tokio::time::sleep(left) => {},
                _ = closed => {},
            }
        }
    }

    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.config.token_ttl_s)
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
