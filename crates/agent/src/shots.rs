//! Screenshots the agent took, kept as files under the data dir
//! (`shots/<session>/<id>.png`): events and stored steps refer to them by
//! id, so lists stay small and the model's context reads back only the
//! ones it still shows.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Shots {
    dir: PathBuf,
}

/// Whether `id` is a screenshot id this store could have made (no path tricks).
pub fn valid_id(id: &str) -> bool {
    id.starts_with("shot-")
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Shots {
    pub fn new(dir: PathBuf) -> Shots {
        Shots { dir }
    }

    fn path(&self, session_id: &str, id: &str) -> Option<PathBuf> {
        let session_ok = !session_id.is_empty()
            && session_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        (session_ok && valid_id(id)).then(|| self.dir.join(session_id).join(format!("{id}.png")))
    }

    /// Stores a PNG and returns its id.
    pub async fn save(&self, session_id: &str, png: &[u8]) -> std::io::Result<String> {
        let id = format!("shot-{}", uuid::Uuid::now_v7().simple());
        let path = self
            .path(session_id, &id)
            .ok_or_else(|| std::io::Error::other("invalid session id"))?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&path, png).await?;
        Ok(id)
    }

    /// A stored PNG; `None` when there is no such screenshot.
    pub async fn load(&self, session_id: &str, id: &str) -> std::io::Result<Option<Vec<u8>>> {
        let Some(path) = self.path(session_id, id) else {
            return Ok(None);
        };
        match tokio::fs::read(path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a session's screenshots (when the session is deleted).
    pub async fn remove_session(&self, session_id: &str) {
        if self.path(session_id, "shot-x").is_some() {
            let _ = tokio::fs::remove_dir_all(self.dir.join(session_id)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_leave_the_directory() {
        assert!(valid_id("shot-0190aa"));
        for bad in ["../x", "shot-../../etc", "shot-A", "x", "shot-a/b"] {
            assert!(!valid_id(bad), "{bad}");
        }
        let shots = Shots::new(PathBuf::from("/data/shots"));
        assert!(shots.path("../s", "shot-1").is_none());
        assert!(shots.path("session-1", "shot-1").is_some());
    }
}
