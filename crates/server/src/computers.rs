//! Wiring of the computer side: the runtime chosen by `--runtime`, the
//! image it runs, and the operator that drives sessions' computers.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use raworc_image::{BuildOptions, Images, Progress, Recipe};
use raworc_operator::{Operator, OperatorConfig, Secrets};
use raworc_runtime::local::{LocalConfig, LocalRuntime};
use raworc_runtime::Runtime;
use raworc_store::Store;

use crate::config::{RuntimeKind, ServerConfig};
use crate::crypto::SecretBox;

impl Secrets for SecretBox {
    fn open(&self, name: &str, sealed: &str) -> Result<String, String> {
        SecretBox::open(self, name, sealed).map_err(|e| e.to_string())
    }
}

/// The runtime `config` asks for, ready to start computers (the image is
/// built first when missing, with progress in the log).
pub async fn runtime(config: &ServerConfig) -> anyhow::Result<Option<Arc<dyn Runtime>>> {
    match config.runtime {
        RuntimeKind::None => Ok(None),
        RuntimeKind::Local => {
            if !nix::unistd::geteuid().is_root() {
                bail!(
                    "the local runtime needs root (namespaces, mounts, cgroups); \
                     run the server as root, or pass --runtime none to serve without computers"
                );
            }
            let images = Images::new(config.images_dir());
            let image = tokio::task::spawn_blocking(move || {
                images.ensure(
                    &Recipe::builtin(),
                    &BuildOptions::default(),
                    &mut |p| match p {
                        Progress::Step { number, of, what } => {
                            tracing::info!("building the computer image: [{number}/{of}] {what}")
                        }
                        Progress::Done { name, seconds } => {
                            tracing::info!("built the computer image {name} in {seconds} s")
                        }
                    },
                )
            })
            .await?
            .context("preparing the computer image")?
            .0;
            let host_binary = match &config.host_binary {
                Some(path) => path.clone(),
                None => std::env::current_exe().context("locating the raworc binary")?,
            };
            let local = LocalConfig {
                computers_dir: config.data_dir().join("computers"),
                image: image.rootfs(),
                host_binary,
                limits: raworc_runtime::Limits {
                    memory_bytes: Some(config.computer_memory_mb << 20),
                    pids: Some(config.computer_pids),
                    cpu_millicores: Some(config.computer_millicores),
                },
            };
            let runtime = tokio::task::spawn_blocking(move || LocalRuntime::new(local)).await?;
            Ok(Some(Arc::new(runtime)))
        }
    }
}

/// The image's name, for health reports.
pub fn image_name(config: &ServerConfig) -> Option<(String, PathBuf)> {
    let recipe = Recipe::builtin();
    let images = Images::new(config.images_dir());
    images
        .find(&recipe)
        .ok()
        .flatten()
        .map(|image| (image.manifest.name, image.dir))
}

/// The operator over `runtime`.
pub fn operator(
    store: &Store,
    runtime: Arc<dyn Runtime>,
    secrets: Arc<SecretBox>,
    config: &ServerConfig,
) -> Operator {
    Operator::spawn(
        store.clone(),
        runtime,
        secrets,
        OperatorConfig {
            max_running: config.max_sessions,
            resync: std::time::Duration::from_millis(config.operator_resync_ms.max(50)),
            display: raworc_runtime::DisplaySize {
                width: config.display_size.0,
                height: config.display_size.1,
            },
            idle_pause: (config.idle_pause_s > 0)
                .then(|| std::time::Duration::from_secs(config.idle_pause_s)),
            idle_close: (config.idle_close_s > 0)
                .then(|| std::time::Duration::from_secs(config.idle_close_s)),
            ..OperatorConfig::default()
        },
    )
}
