//! Random keys kept as files readable by the server's user only (0600).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

/// Reads the base64 key at `path`, or creates one of `len` random bytes.
pub fn load_or_create(path: &Path, len: usize) -> anyhow::Result<Vec<u8>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("restricting {}", path.display()))?;
                tracing::warn!(path = %path.display(), "key file was readable by others; now 0600");
            }
            STANDARD
                .decode(text.trim())
                .with_context(|| format!("{} is not valid base64", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; len];
            rand::rngs::OsRng.fill_bytes(&mut key);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.write_all(STANDARD.encode(&key).as_bytes())?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
