//! File transfer and directory listings inside the computer, with the
//! computer user's rights. Uploads land whole or not at all (written beside
//! the target, then renamed).

use std::collections::BinaryHeap;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::proto::{DirEntry, DirListing, EntryKind};

/// Most entries one listing answers with: bounds the answer, and the memory
/// that sorting it takes, whatever the directory holds.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    BadPath(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the upload was cut off: {0}")]
    Body(String),
}

impl FileError {
    fn io(path: &Path, source: std::io::Error) -> FileError {
        FileError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The I/O error kind, when there is one (for the HTTP status).
    pub fn kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            FileError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// `/{path}`, refusing `..`, empty paths and NUL bytes.
pub fn resolve(path: &str) -> Result<PathBuf, FileError> {
    if path.contains('\0') {
        return Err(FileError::BadPath("the path contains a NUL byte".into()));
    }
    let joined = Path::new("/").join(path.trim_start_matches('/'));
    if joined == Path::new("/") {
        return Err(FileError::BadPath("the path is empty".into()));
    }
    if joined.components().any(|c| c == Component::ParentDir) {
        return Err(FileError::BadPath("the path must not contain '..'".into()));
    }
    Ok(joined)
}

/// The directory to list at `/{path}`: [`resolve`]'s rules, except that the
/// root itself may be listed; normalised (no `.`, `//` or trailing `/`) so
/// that the listing names it the same way however it was asked for.
pub fn resolve_dir(path: &str) -> Result<PathBuf, FileError> {
    let joined = if path.trim_start_matches('/').is_empty() && !path.contains('\0') {
        PathBuf::from("/")
    } else {
        resolve(path)?
    };
    Ok(joined.components().collect())
}

/// Lists the directory at `path`: directories first, then by name (byte
/// order), the first `bound` of them, `truncated` when there were more.
/// Entries are read with `lstat`: a link is shown as a link, never
/// followed. An entry removed while the listing runs is left out.
pub async fn list(path: &Path, bound: usize) -> Result<DirListing, FileError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || list_blocking(&owned, bound))
        .await
        .map_err(|e| FileError::io(path, std::io::Error::other(e)))?
}

fn list_blocking(path: &Path, bound: usize) -> Result<DirListing, FileError> {
    let dir = std::fs::read_dir(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTDIR) => FileError::BadPath(format!("{} is not a directory", path.display())),
        _ => FileError::io(path, e),
    })?;
    // The `bound` first entries in listing order, the greatest on top: one
    // pass over a directory of any size, in memory for `bound` names only.
    // The kind comes from the directory itself (no `lstat` per entry yet).
    let mut kept: BinaryHeap<(bool, Vec<u8>)> = BinaryHeap::with_capacity(bound.min(1024));
    let mut truncated = false;
    for entry in dir {
        let entry = entry.map_err(|e| FileError::io(path, e))?;
        let is_dir = match entry.file_type() {
            Ok(t) => t.is_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FileError::io(&entry.path(), e)),
        };
        let key = (!is_dir, entry.file_name().into_vec());
        if kept.len() < bound {
            kept.push(key);
            continue;
        }
        truncated = true;
        if kept.peek().is_some_and(|greatest| key < *greatest) {
            kept.pop();
            kept.push(key);
        }
    }
    let mut entries = Vec::with_capacity(kept.len());
    for (_, name) in kept.into_sorted_vec() {
        let name = OsStr::from_bytes(&name);
        let full = path.join(name);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FileError::io(&full, e)),
        };
        let kind = meta.file_type();
        entries.push(DirEntry {
            name: name.to_string_lossy().into_owned(),
            kind: if kind.is_symlink() {
                EntryKind::Link
            } else if kind.is_dir() {
                EntryKind::Dir
            } else if kind.is_file() {
                EntryKind::File
            } else {
                EntryKind::Other
            },
            size: meta.len(),
            modified_ms: meta
                .mtime()
                .saturating_mul(1000)
                .saturating_add(meta.mtime_nsec() / 1_000_000),
        });
    }
    Ok(DirListing {
        path: path.display().to_string(),
        entries,
        truncated,
    })
}

/// Opens a file for download; directories are refused.
pub async fn open(path: &Path) -> Result<(tokio::fs::File, u64), FileError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| FileError::io(path, e))?;
    let meta = file.metadata().await.map_err(|e| FileError::io(path, e))?;
    if meta.is_dir() {
        return Err(FileError::BadPath(format!(
            "{} is a directory",
            path.display()
        )));
    }
    Ok((file, meta.len()))
}

/// Writes `body` to `path` (creating parent directories); returns its size.
pub async fn write<S, E>(path: &Path, mut body: S) -> Result<u64, FileError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let parent = path
        .parent()
        .ok_or_else(|| FileError::BadPath("no parent directory".into()))?;
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| FileError::io(parent, e))?;
    if tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir()) {
        return Err(FileError::BadPath(format!(
            "{} is a directory",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = parent.join(format!(".{name}.upload-{}", std::process::id()));
    let result = async {
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| FileError::io(&partial, e))?;
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| FileError::Body(e.to_string()))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| FileError::io(&partial, e))?;
            size += chunk.len() as u64;
        }
        file.sync_all()
            .await
            .map_err(|e| FileError::io(&partial, e))?;
        tokio::fs::rename(&partial, path)
            .await
            .map_err(|e| FileError::io(path, e))?;
        Ok(size)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_absolute_and_never_climb() {
        assert_eq!(resolve("tmp/x").unwrap(), PathBuf::from("/tmp/x"));
        assert_eq!(resolve("/tmp/x").unwrap(), PathBuf::from("/tmp/x"));
        assert!(resolve("").is_err());
        assert!(resolve("/").is_err());
        assert!(resolve("tmp/../etc/shadow").is_err());
        assert!(resolve("a\0b").is_err());
    }

    #[test]
    fn a_directory_to_list_may_be_the_root_and_is_normalised() {
        assert_eq!(resolve_dir("/").unwrap(), PathBuf::from("/"));
        assert_eq!(resolve_dir("").unwrap(), PathBuf::from("/"));
        assert_eq!(
            resolve_dir("/session//./data/").unwrap().to_str(),
            Some("/session/data")
        );
        assert!(resolve_dir("/session/../etc").is_err());
        assert!(resolve_dir("/\0").is_err());
    }

    fn names(listing: &DirListing) -> Vec<(&str, EntryKind)> {
        listing
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind))
            .collect()
    }

    #[tokio::test]
    async fn a_listing_puts_directories_first_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("b.txt"), "12345").unwrap();
        std::fs::write(root.join("a.txt"), "1").unwrap();
        std::fs::create_dir(root.join("zdir")).unwrap();
        std::fs::create_dir(root.join("Cdir")).unwrap();
        std::os::unix::fs::symlink("zdir", root.join("link")).unwrap();
        std::os::unix::fs::symlink("/nowhere/at/all", root.join("dangling")).unwrap();

        let listing = list(root, MAX_ENTRIES).await.unwrap();
        assert_eq!(
            names(&listing),
            [
                ("Cdir", EntryKind::Dir),
                ("zdir", EntryKind::Dir),
                ("a.txt", EntryKind::File),
                ("b.txt", EntryKind::File),
                ("dangling", EntryKind::Link),
                ("link", EntryKind::Link),
            ]
        );
        assert!(!listing.truncated);
        assert_eq!(listing.path, root.display().to_string());
        let size = |name: &str| {
            listing
                .entries
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.size)
        };
        assert_eq!(size("b.txt"), Some(5));
        // A link's size is its own: the length of what it points to.
        assert_eq!(size("dangling"), Some("/nowhere/at/all".len() as u64));
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        for e in &listing.entries {
            assert!((now_ms - e.modified_ms).abs() < 600_000, "{e:?}");
        }
    }

    #[tokio::test]
    async fn a_listing_keeps_the_first_entries_in_order_up_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["e", "a", "d", "c", "b"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        std::fs::create_dir(dir.path().join("z")).unwrap();
        let listing = list(dir.path(), 3).await.unwrap();
        assert_eq!(
            names(&listing),
            [
                ("z", EntryKind::Dir),
                ("a", EntryKind::File),
                ("b", EntryKind::File)
            ]
        );
        assert!(listing.truncated);
        let exact = list(dir.path(), 6).await.unwrap();
        assert_eq!(exact.entries.len(), 6);
        assert!(!exact.truncated);
        let none = list(dir.path(), 0).await.unwrap();
        assert!(none.entries.is_empty() && none.truncated);
    }

    #[tokio::test]
    async fn a_listing_of_a_file_or_of_nothing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let err = list(&file, MAX_ENTRIES).await.unwrap_err();
        assert!(matches!(err, FileError::BadPath(_)), "{err:?}");
        assert!(err.to_string().ends_with("is not a directory"), "{err}");
        let err = list(&dir.path().join("missing"), MAX_ENTRIES)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Some(std::io::ErrorKind::NotFound), "{err:?}");
    }

    #[tokio::test]
    async fn an_upload_lands_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/file.txt");
        let chunks: Vec<Result<bytes::Bytes, String>> =
            vec![Ok("hello ".into()), Ok("world".into())];
        let n = write(&target, futures::stream::iter(chunks)).await.unwrap();
        assert_eq!(n, 11);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "hello world");

        let broken: Vec<Result<bytes::Bytes, String>> =
            vec![Ok("partial".into()), Err("connection reset".into())];
        let err = write(&target, futures::stream::iter(broken))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cut off"), "{err}");
        // The old content stays, and no partial file is left beside it.
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "hello world");
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }
}
