//! Raworc's control plane: the HTTP API over the store, with authentication,
//! authorization, audit, metrics and OpenAPI. `raworc serve` runs [`serve`].

pub mod agent;
pub mod app;
pub mod audit;
pub mod auth;
mod bootstrap;
pub mod computers;
pub mod config;
pub mod crypto;
pub mod error;
pub mod extract;
mod keyfile;
pub mod metrics;
pub mod request_id;
pub mod rfb;
pub mod routes;
pub mod state;
pub mod validate;
pub mod web;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use raworc_store::{Store, StoreOptions};
use tokio::net::TcpListener;

pub use config::{raworc_home, ServerConfig};
pub use state::AppState;

use crate::auth::jwt::JwtKeys;
use crate::auth::principal::OperatorCache;
use crate::auth::ratelimit::RateLimiter;
use crate::crypto::SecretBox;
use crate::metrics::Metrics;

/// Opens the data dir and the store and prepares everything the router needs.
pub async fn build_state(config: ServerConfig) -> anyhow::Result<AppState> {
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting data dir {}", data_dir.display()))?;
    let keys = JwtKeys::load_or_create(&data_dir)?;
    let secrets = Arc::new(SecretBox::load(&data_dir, config.secret_key.as_deref())?);
    let url = config.database_url();
    let store = Store::connect(&url, StoreOptions::default())
        .await
        .with_context(|| {
            format!(
                "opening the {} database",
                raworc_store::Dialect::from_url(&url)
                    .map(|d| d.name())
                    .unwrap_or("?")
            )
        })?;
    bootstrap::ensure_admin(&store, config.bind, config.admin_password.as_deref()).await?;
    let dummy_hash = tokio::task::spawn_blocking(|| {
        auth::password::hash_blocking(&uuid::Uuid::new_v4().to_string())
    })
    .await??;
    let runtime = computers::runtime(&config).await?;
    let operator = runtime
        .clone()
        .map(|rt| Arc::new(computers::operator(&store, rt, secrets.clone(), &config)));
    let metrics = Metrics::new();
    let deltas = routes::events::delta_hub();
    // With no computers there is nothing for the agent to work on: messages are only stored.
    let agents = match &runtime {
        Some(_) => Some(agent::agents(
            &config,
            &store,
            runtime.clone(),
            operator.clone(),
            secrets.clone(),
            metrics.tokens.clone(),
            deltas.clone(),
        )?),
        None => None,
    };
    let minute = Duration::from_secs(60);
    Ok(AppState::new(state::Inner {
        store,
        keys,
        secrets,
        runtime,
        operator,
        agents,
        metrics,
        deltas,
        operators: OperatorCache::new(Duration::from_secs(5)),
        login_by_name: RateLimiter::new(config.login_limit_per_name, minute),
        login_by_addr: RateLimiter::new(config.login_limit_per_addr, minute),
        dummy_hash,
        started: Instant::now(),
        closing: tokio::sync::watch::channel(false).0,
        config,
    }))
}

/// A server accepting connections; dropping the handle does not stop it, [`Running::shutdown`] does.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, stops the operator
    /// and every computer (their disks stay; the next start brings running
    /// sessions back), flushes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        // Streams end first: the graceful stop waits for open connections.
        self.state.closing.send_replace(true);
        let _ = self.stop.send(());
        self.task.await??;
        if let Some(agents) = &self.state.agents {
            agents.stop();
        }
        if let Some(operator) = &self.state.operator {
            operator.stop().await;
        }
        if let Some(runtime) = &self.state.runtime {
            runtime.stop_all().await;
            computers::unmount_disk_image(&self.state.config);
        }
        self.state.store.close().await;
        Ok(())
    }
}

/// Binds `config.bind` (port 0 picks a free one) and serves in the background.
pub async fn spawn(config: ServerConfig) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    let state = build_state(config).await?;
    if let Some(agents) = &state.agents {
        // Messages a stop or a crash left unanswered.
        agents.resume_all().await;
    }
    let app = app::router(state.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await
    });
    Ok(Running {
        addr,
        state,
        stop,
        task,
    })
}

/// `raworc serve`: runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let data_dir = config.data_dir();
    let running = spawn(config).await?;
    tracing::info!(
        url = %format!("http://{}", running.addr),
        data_dir = %data_dir.display(),
        database = running.state.store.dialect().name(),
        "Raworc is listening"
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
