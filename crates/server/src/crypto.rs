//! Secrets at rest: AES-256-GCM with a random nonce per value.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use crate::keyfile;

pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl SecretBox {
    /// The key comes from `RAWORC_SECRET_KEY` (base64 of 32 bytes) when given,
    /// else from `secret.key` in the data dir, created on first start.
    pub fn load(data_dir: &Path, from_env: Option<&str>) -> anyhow::Result<SecretBox> {
        let key = match from_env {
            Some(b64) => STANDARD
                .decode(b64.trim())
                .context("RAWORC_SECRET_KEY is not valid base64")?,
            None => keyfile::load_or_create(&data_dir.join("secret.key"), 32)?,
        };
        if key.len() != 32 {
            bail!("the secret key must be 32 bytes, found {}", key.len());
        }
        Ok(SecretBox {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        })
    }

    /// Encrypts `value`, bound to the secret's `name`; returns base64(nonce ‖ ciphertext).
    pub fn seal(&self, name: &str, value: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(STANDARD.encode(out))
    }

    pub fn open(&self, name: &str, sealed: &str) -> anyhow::Result<String> {
        let raw = STANDARD
            .decode(sealed)
            .context("sealed secret is not base64")?;
        if raw.len() < 12 {
            bail!("sealed secret too short");
        }
        let (nonce, ct) = raw.split_at(12);
        let pt = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("secret '{name}' cannot be decrypted with this key"))?;
        Ok(String::from_utf8(pt)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox::load(dir.path(), None).unwrap();
        let sealed = sb.seal("API_KEY", "sk-123").unwrap();
        assert!(!sealed.contains("sk-123"));
        assert_eq!(sb.open("API_KEY", &sealed).unwrap(), "sk-123");
        assert!(sb.open("OTHER", &sealed).is_err(), "bound to the name");
        // The same key file is reused on the next start.
        let again = SecretBox::load(dir.path(), None).unwrap();
        assert_eq!(again.open("API_KEY", &sealed).unwrap(), "sk-123");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
