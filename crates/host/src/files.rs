//! File transfer inside the computer, with the computer user's rights.
//! Uploads land whole or not at all (written beside the target, then renamed).

use std::path::{Component, Path, PathBuf};

use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

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
