//! Building an image: debootstrap, packages, set-up script, manifest.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::{ImageError, Images, Manifest, Recipe};

/// Where packages come from.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub mirror: String,
}

impl Default for BuildOptions {
    /// `RAWORC_DEBIAN_MIRROR`, else Debian's own mirror network.
    fn default() -> Self {
        BuildOptions {
            mirror: std::env::var("RAWORC_DEBIAN_MIRROR")
                .ok()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "http://deb.debian.org/debian".into()),
        }
    }
}

/// Reported as a build goes; the tools' own output goes to this process's
/// stdout and stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Step {
        number: usize,
        of: usize,
        what: &'static str,
    },
    Done {
        name: String,
        seconds: u64,
    },
}

const STEPS: usize = 4;

/// Installs the packages inside a private mount namespace, so that the
/// `/proc` and `/dev` mounts the package scripts need vanish with it, even
/// when a step fails half-way.
const INSTALL: &str = r#"set -eu
root=$1; shift
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
chroot "$root" apt-get update
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y --no-install-recommends "$@"
"#;

const SETUP: &str = r#"set -eu
root=$1
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
chroot "$root" /bin/sh /tmp/raworc-setup.sh
"#;

pub(crate) fn build(
    images: &Images,
    recipe: &Recipe,
    options: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ImageError> {
    if std::fs::metadata("/proc/self")
        .map_err(ImageError::io("reading /proc/self"))?
        .uid()
        != 0
    {
        return Err(ImageError::NotRoot);
    }
    for (tool, package) in [
        ("debootstrap", "debootstrap"),
        ("chroot", "coreutils"),
        ("unshare", "util-linux"),
        ("mount", "mount"),
    ] {
        if !on_path(tool) {
            return Err(ImageError::MissingTool { tool, package });
        }
    }
    let started = Instant::now();
    let name = recipe.name();
    std::fs::create_dir_all(images.dir()).map_err(ImageError::io(format!(
        "creating {}",
        images.dir().display()
    )))?;
    remove_leftovers(images.dir(), &name)?;
    let scratch = images
        .dir()
        .join(format!(".build-{name}-{}", std::process::id()));
    let result = build_in(&scratch, recipe, options, progress);
    let result = result.and_then(|()| {
        let manifest = Manifest {
            name: name.clone(),
            digest: recipe.digest(),
            suite: recipe.suite.clone(),
            packages: recipe.packages.clone(),
            built_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            build_seconds: started.elapsed().as_secs(),
        };
        let text = serde_json::to_string_pretty(&manifest).map_err(|e| ImageError::Step {
            step: "manifest".into(),
            detail: e.to_string(),
        })?;
        std::fs::write(scratch.join("manifest.json"), text)
            .map_err(ImageError::io("writing the manifest"))?;
        let target = images.dir().join(&name);
        match std::fs::rename(&scratch, &target) {
            Ok(()) => Ok(()),
            // Another build of the same recipe finished first: keep that one.
            Err(_) if target.join("manifest.json").exists() => remove(&scratch),
            Err(e) => Err(ImageError::io(format!(
                "moving the image to {}",
                target.display()
            ))(e)),
        }
    });
    if result.is_err() {
        let _ = remove(&scratch);
    }
    result?;
    progress(Progress::Done {
        name,
        seconds: started.elapsed().as_secs(),
    });
    Ok(())
}

fn build_in(
    scratch: &Path,
    recipe: &Recipe,
    options: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ImageError> {
    let rootfs = scratch.join("rootfs");
    std::fs::create_dir_all(scratch)
        .map_err(ImageError::io(format!("creating {}", scratch.display())))?;
    let root = rootfs.to_string_lossy().into_owned();

    progress(Progress::Step {
        number: 1,
        of: STEPS,
        what: "debootstrap: minimal Debian base",
    });
    run(
        "debootstrap",
        Command::new("debootstrap").args([
            "--variant=minbase",
            &recipe.suite,
            &root,
            &options.mirror,
        ]),
    )?;

    progress(Progress::Step {
        number: 2,
        of: STEPS,
        what: "installing the desktop packages",
    });
    // No daemons start inside the chroot while packages install.
    write(
        &rootfs.join("usr/sbin/policy-rc.d"),
        "#!/bin/sh\nexit 101\n",
        0o755,
    )?;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    write(&rootfs.join("etc/resolv.conf"), &resolv, 0o644)?;
    run(
        "apt-get install",
        in_private_mounts(INSTALL).arg(&root).args(&recipe.packages),
    )?;

    progress(Progress::Step {
        number: 3,
        of: STEPS,
        what: "setting up the user, session directories and desktop",
    });
    write(&rootfs.join("tmp/raworc-setup.sh"), &recipe.setup, 0o755)?;
    run("setup.sh", in_private_mounts(SETUP).arg(&root))?;

    progress(Progress::Step {
        number: 4,
        of: STEPS,
        what: "cleaning up and writing the manifest",
    });
    for leftover in ["tmp/raworc-setup.sh", "usr/sbin/policy-rc.d"] {
        let path = rootfs.join(leftover);
        std::fs::remove_file(&path)
            .map_err(ImageError::io(format!("removing {}", path.display())))?;
    }
    // The host's resolver settings are not part of the image.
    write(&rootfs.join("etc/resolv.conf"), "", 0o644)?;
    Ok(())
}

/// `sh -c script` in a private mount namespace: its mounts die with it.
fn in_private_mounts(script: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ]);
    cmd
}

fn run(step: &str, cmd: &mut Command) -> Result<(), ImageError> {
    tracing::debug!(?cmd, "image build step");
    let status = cmd.status().map_err(|e| ImageError::Step {
        step: step.into(),
        detail: e.to_string(),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::Step {
            step: step.into(),
            detail: format!("exited with {status} (its output is above)"),
        })
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(ImageError::io(format!("writing {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(ImageError::io(
        format!("setting the mode of {}", path.display()),
    ))
}

fn remove(dir: &Path) -> Result<(), ImageError> {
    std::fs::remove_dir_all(dir).map_err(ImageError::io(format!("removing {}", dir.display())))
}

/// Scratch directories of earlier builds of this image that did not finish.
fn remove_leftovers(images: &Path, name: &str) -> Result<(), ImageError> {
    let prefix = format!(".build-{name}-");
    let entries = std::fs::read_dir(images)
        .map_err(ImageError::io(format!("listing {}", images.display())))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        // A build still running in another process keeps its directory.
        let alive = rest
            .parse::<u32>()
            .map(|pid| Path::new(&format!("/proc/{pid}")).exists())
            .unwrap_or(false);
        if !alive {
            remove(&entry.path())?;
        }
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false)
}
