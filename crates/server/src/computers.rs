//! Wiring of the computer side: the runtime chosen by `--runtime`, the
//! image it runs, and the operator that drives sessions' computers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use raworc_image::{BuildOptions, Images, Progress, Recipe};
use raworc_operator::{Operator, OperatorConfig, Secrets};
use raworc_runtime::local::{LocalConfig, LocalRuntime};
use raworc_runtime::{run_tool, Runtime};
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
            if config.disk_image_size > 0 {
                let (data_dir, size) = (config.data_dir(), config.disk_image_size);
                let mounted =
                    tokio::task::spawn_blocking(move || mount_disk_image(&data_dir, size)).await?;
                if let Err(e) = mounted {
                    tracing::warn!(
                        "computers' disks stay plain directories ({e:#}); \
                         a remix of a running session will copy its disk"
                    );
                }
            }
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
                allow_user_namespaces: config.allow_user_namespaces,
                warm_pool: config.warm_pool,
                pool_display: raworc_runtime::DisplaySize {
                    width: config.display_size.0,
                    height: config.display_size.1,
                },
            };
            let runtime =
                Arc::new(tokio::task::spawn_blocking(move || LocalRuntime::new(local)).await?);
            LocalRuntime::spawn_pool(&runtime);
            Ok(Some(runtime))
        }
    }
}

/// The sparse file holding computers' disks with `--disk-image-size`.
fn disk_image(data_dir: &Path) -> PathBuf {
    data_dir.join("disks.btrfs")
}

/// Mounts the btrfs disk image at `<data-dir>/computers` (made on first
/// use), unless it is mounted already (a restart after a crash).
fn mount_disk_image(data_dir: &Path, size_gib: u64) -> anyhow::Result<()> {
    let computers = data_dir.join("computers");
    if is_mount_point(&computers) {
        return Ok(());
    }
    std::fs::create_dir_all(&computers)
        .with_context(|| format!("creating {}", computers.display()))?;
    if std::fs::read_dir(&computers)?.next().is_some() {
        bail!(
            "{} already holds disks outside a disk image; move them away or start without --disk-image-size",
            computers.display()
        );
    }
    let image = disk_image(data_dir);
    if !image.exists() {
        let file = std::fs::File::create(&image)
            .with_context(|| format!("creating {}", image.display()))?;
        file.set_len(size_gib << 30)
            .with_context(|| format!("sizing {}", image.display()))?;
        run_tool("mkfs.btrfs", &["-q".as_ref(), image.as_os_str()])
            .context("making the disk image's file system (install btrfs-progs)")?;
    }
    run_tool(
        "mount",
        &[
            "-o".as_ref(),
            "loop".as_ref(),
            image.as_os_str(),
            computers.as_os_str(),
        ],
    )
    .context("mounting the disk image")?;
    tracing::info!(image = %image.display(), "computers' disks on a btrfs disk image");
    Ok(())
}

/// Unmounts the disk image (at shutdown, once every computer has stopped).
pub fn unmount_disk_image(config: &ServerConfig) {
    let computers = config.data_dir().join("computers");
    if config.disk_image_size == 0 || !is_mount_point(&computers) {
        return;
    }
    // Computers that have just ended may hold it for a moment.
    for _ in 0..50 {
        if run_tool("umount", &[computers.as_os_str()]).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Still busy: detach it now; the kernel lets go once nothing uses it.
    if let Err(e) = run_tool("umount", &["--lazy".as_ref(), computers.as_os_str()]) {
        tracing::warn!(error = %e, "could not unmount the disk image");
    } else {
        tracing::warn!("the disk image was busy at shutdown; detached it lazily");
    }
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    let wanted = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted)
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
