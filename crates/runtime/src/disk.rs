//! Computers' disks as overlay layers, so that a remix costs the same
//! whatever the disk holds.
//!
//! A computer's root is the image, then zero or more read-only layers,
//! then its own writable `upper/`. Its layers are listed, topmost first, in
//! `<computer>/layers`; layers live in `<computers>/.layers/` and are
//! shared between computers.
//!
//! When disks live on btrfs (`--disk-image-size`), each computer's
//! directory is a subvolume, and a fork snapshots it read-only into a new
//! layer whose `upper/` the child sits on — running or not, at a cost that
//! follows the data not yet written back, not the disk's size. Elsewhere, a
//! stopped parent's upper directory is renamed into a new layer (O(1)) that
//! both it and the child then sit on, each with a fresh upper; a running
//! parent, which cannot give up its upper, is frozen and its upper copied
//! (`cp --reflink=auto`: cheap only where extents can be shared).
//! Directories the child must not inherit are hidden by opaque directories
//! in its upper layer. Layers nobody lists any more are removed.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{io, RuntimeError};

/// The file listing a computer's layers.
const LAYERS_FILE: &str = "layers";
/// Most layers under one computer (overlayfs allows 500; mount options
/// must fit in a page).
pub const MAX_LAYERS: usize = 32;

#[derive(Debug, Clone)]
pub(crate) struct Disks {
    pub computers: PathBuf,
    pub image: PathBuf,
}

impl Disks {
    fn store(&self) -> PathBuf {
        self.computers.join(".layers")
    }

    fn upper(&self, id: &str) -> PathBuf {
        self.computers.join(id).join("upper")
    }

    /// The layers of computer `id`, topmost first.
    pub fn layers(&self, id: &str) -> Result<Vec<String>, RuntimeError> {
        let path = self.computers.join(id).join(LAYERS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(format!("reading {}", path.display()))(e)),
        }
    }

    /// Paths of the layers of computer `id`, topmost first.
    pub fn layer_paths(&self, id: &str) -> Result<Vec<PathBuf>, RuntimeError> {
        Ok(self
            .layers(id)?
            .iter()
            .map(|l| self.store().join(l))
            .collect())
    }

    /// Makes computer `id`'s directory and upper layer if missing. On btrfs
    /// the directory is a subvolume (overlayfs needs the upper layer and its
    /// work directory in one subvolume), which a remix snapshots whole.
    pub fn make_disk(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.computers.join(id);
        if !dir.exists() {
            std::fs::create_dir_all(&self.computers)
                .map_err(io(format!("creating {}", self.computers.display())))?;
            if is_btrfs(&self.computers) {
                btrfs(&["subvolume", "create", &dir.to_string_lossy()])?;
            } else {
                std::fs::create_dir(&dir).map_err(io(format!("creating {}", dir.display())))?;
            }
        }
        let upper = self.upper(id);
        match std::fs::create_dir(&upper) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io(format!("creating {}", upper.display()))(e)),
        }
    }

    /// Whether computer `id`'s disk can be snapshotted (btrfs).
    pub fn snapshots(&self, id: &str) -> bool {
        is_subvolume(&self.computers.join(id))
    }

    fn write_layers(&self, id: &str, layers: &[String]) -> Result<(), RuntimeError> {
        let path = self.computers.join(id).join(LAYERS_FILE);
        let tmp = path.with_extension("new");
        let mut text = layers.join("\n");
        text.push('\n');
        std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("writing {}", path.display())))
    }

    fn new_layer(&self, id: &str) -> Result<(String, PathBuf), RuntimeError> {
        let store = self.store();
        std::fs::create_dir_all(&store).map_err(io(format!("creating {}", store.display())))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("{id}-{nanos:x}");
        let path = store.join(&name);
        Ok((name, path))
    }

    /// Turns the upper layer of the stopped computer `id` into a shared
    /// read-only layer under a fresh upper; its layers afterwards.
    pub fn rotate(&self, id: &str) -> Result<Vec<String>, RuntimeError> {
        let mut layers = self.layers(id)?;
        let upper = self.upper(id);
        let empty = match std::fs::read_dir(&upper) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(io(format!("reading {}", upper.display()))(e)),
        };
        if empty {
            return Ok(layers);
        }
        self.check_depth(layers.len())?;
        let (name, path) = self.new_layer(id)?;
        std::fs::rename(&upper, &path).map_err(io(format!("moving {}", upper.display())))?;
        layers.insert(0, name);
        self.write_layers(id, &layers)?;
        self.make_disk(id)?;
        Ok(layers)
    }

    /// A snapshot (btrfs) or copy of the upper layer of computer `id`
    /// (frozen by the caller if it runs) as a new layer on top of its
    /// layers; the layers a child takes. A layer entry names a directory of
    /// the layer store, and for snapshots the upper layer inside it.
    pub fn snapshot(&self, id: &str) -> Result<Vec<String>, RuntimeError> {
        let mut layers = self.layers(id)?;
        self.check_depth(layers.len())?;
        let (name, path) = self.new_layer(id)?;
        let upper = self.upper(id);
        if self.snapshots(id) {
            btrfs(&[
                "subvolume",
                "snapshot",
                "-r",
                &self.computers.join(id).to_string_lossy(),
                &path.to_string_lossy(),
            ])?;
            layers.insert(0, format!("{name}/upper"));
            return Ok(layers);
        }
        let out = std::process::Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&upper)
            .arg(&path)
            .output()
            .map_err(io("running cp"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&path);
            return Err(RuntimeError::Start(format!(
                "copying the parent's disk failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        layers.insert(0, name);
        Ok(layers)
    }

    fn check_depth(&self, depth: usize) -> Result<(), RuntimeError> {
        if depth >= MAX_LAYERS {
            return Err(RuntimeError::Start(format!(
                "the disk already has {depth} layers, the most a remix may stack"
            )));
        }
        Ok(())
    }

    /// Makes the disk of a new computer `id` on `layers`, with the image
    /// directories in `hide` (relative, e.g. `session/data`) empty.
    pub fn create(&self, id: &str, layers: &[String], hide: &[&str]) -> Result<(), RuntimeError> {
        let upper = self.upper(id);
        self.make_disk(id)?;
        self.write_layers(id, layers)?;
        for dir in hide {
            let mut rel = PathBuf::new();
            for part in Path::new(dir).components() {
                rel.push(part);
                let target = upper.join(&rel);
                if !target.exists() {
                    std::fs::create_dir(&target)
                        .map_err(io(format!("creating {}", target.display())))?;
                }
                // The upper directory's owner and mode win over the lower
                // ones': keep the image's.
                let like = self.image.join(&rel);
                if let Ok(meta) = std::fs::metadata(&like) {
                    std::os::unix::fs::chown(&target, Some(meta.uid()), Some(meta.gid()))
                        .map_err(io(format!("chown {}", target.display())))?;
                    std::fs::set_permissions(
                        &target,
                        std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                    )
                    .map_err(io(format!("chmod {}", target.display())))?;
                }
            }
            set_opaque(&upper.join(dir))?;
        }
        Ok(())
    }

    /// Removes layers that no computer lists.
    pub fn collect_garbage(&self) -> Result<(), RuntimeError> {
        let store = self.store();
        let Ok(entries) = std::fs::read_dir(&store) else {
            return Ok(());
        };
        let mut used = std::collections::HashSet::new();
        if let Ok(computers) = std::fs::read_dir(&self.computers) {
            for c in computers.flatten() {
                if let Some(id) = c.file_name().to_str() {
                    if !id.starts_with('.') {
                        for layer in self.layers(id)? {
                            used.insert(layer.split('/').next().unwrap_or_default().to_owned());
                        }
                    }
                }
            }
        }
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !used.contains(&name) {
                remove_tree(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// btrfs' `statfs` magic.
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;

/// Whether `path` is on btrfs.
pub(crate) fn is_btrfs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut stat) };
    rc == 0 && stat.f_type as i64 == BTRFS_SUPER_MAGIC
}

/// Whether `path` is the root of a btrfs subvolume (always inode 256).
fn is_subvolume(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    is_btrfs(path) && std::fs::metadata(path).is_ok_and(|m| m.ino() == 256)
}

fn btrfs(args: &[&str]) -> Result<(), RuntimeError> {
    crate::run_tool("btrfs", args)
}

/// Removes a layer or a disk: subvolumes (snapshots are read-only)
/// through btrfs, everything else as a tree (a writable subvolume inside
/// goes with it once empty).
pub(crate) fn remove_tree(path: &Path) -> Result<(), RuntimeError> {
    if is_subvolume(path) {
        return btrfs(&["subvolume", "delete", &path.to_string_lossy()]);
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", path.display()))(e)),
    }
}

/// Marks `dir` (in an upper layer) opaque: nothing below it shows through.
fn set_opaque(dir: &Path) -> Result<(), RuntimeError> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| RuntimeError::Start(format!("bad path {}", dir.display())))?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: both strings are NUL-terminated; the value is one byte long.
    let rc = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        return Err(io(format!("marking {} opaque", dir.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
