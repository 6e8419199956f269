//! Prometheus metrics: requests by route and status, latencies, sessions by state.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    model: String,
    kind: String,
}

/// Tokens the agent's model calls used, by provider, model and kind.
#[derive(Clone, Default)]
pub struct TokenCounters {
    tokens: Family<TokenLabels, Counter>,
    calls: Family<TokenLabels, Counter>,
}

impl TokenCounters {
    pub fn add(&self, provider: &str, model: &str, usage: raworc_agent::wire::Usage) {
        let label = |kind: &str| TokenLabels {
            provider: provider.to_owned(),
            model: model.to_owned(),
            kind: kind.to_owned(),
        };
        self.calls.get_or_create(&label("call")).inc();
        for (kind, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_creation", usage.cache_creation_input_tokens),
            ("cache_read", usage.cache_read_input_tokens),
        ] {
            self.tokens.get_or_create(&label(kind)).inc_by(n);
        }
    }
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    sessions: Family<StateLabels, Gauge>,
    pool: PoolGauges,
    pub tokens: TokenCounters,
}

/// The warm pool's figures, read from the runtime at each scrape.
#[derive(Default)]
struct PoolGauges {
    target: Gauge,
    ready: Gauge,
    claims: Gauge,
    misses: Gauge,
    last_fill_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms … ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("raworc");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let sessions = Family::<StateLabels, Gauge>::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests",
            latency.clone(),
        );
        registry.register("sessions", "Sessions by state", sessions.clone());
        let pool = PoolGauges::default();
        registry.register(
            "warm_pool_target",
            "Computers the warm pool keeps",
            pool.target.clone(),
        );
        registry.register(
            "warm_pool_ready",
            "Painted, frozen computers waiting in the warm pool",
            pool.ready.clone(),
        );
        registry.register(
            "warm_pool_claims",
            "Creates served from the warm pool",
            pool.claims.clone(),
        );
        registry.register(
            "warm_pool_misses",
            "Creates that found the warm pool empty",
            pool.misses.clone(),
        );
        registry.register(
            "warm_pool_last_fill_seconds",
            "Time the last refill of one pooled computer took",
            pool.last_fill_seconds.clone(),
        );
        let tokens = TokenCounters::default();
        registry.register(
            "agent_tokens",
            "Tokens used by the agent's model calls",
            tokens.tokens.clone(),
        );
        registry.register(
            "agent_model_calls",
            "Model calls the agent made",
            tokens.calls.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            sessions,
            pool,
            tokens,
        }
    }

    /// Renders the text exposition, refreshing the session gauges first.
    pub async fn render(&self, state: &AppState) -> String {
        match state.store.count_sessions_by_state().await {
            Ok(counts) => {
                for s in raworc_api::SessionState::ALL {
                    let n = counts
                        .iter()
                        .find(|(st, _)| *st == s)
                        .map_or(0, |(_, n)| *n);
                    self.sessions
                        .get_or_create(&StateLabels {
                            state: s.as_str().to_string(),
                        })
                        .set(n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not count sessions for metrics"),
        }
        let pool = state
            .runtime
            .as_ref()
            .and_then(|rt| rt.pool())
            .unwrap_or_default();
        self.pool.target.set(pool.target as i64);
        self.pool.ready.set(pool.ready as i64);
        self.pool.claims.set(pool.claims as i64);
        self.pool.misses.set(pool.misses as i64);
        self.pool
            .last_fill_seconds
            .set(pool.last_fill_ms.unwrap_or(0) as f64 / 1000.0);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(req).await;
    let m = &state.metrics;
    m.latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
