//! `<raworc_home>/config.json`: the saved server URL and login token.
//!
//! The file holds a bearer token, so it is written 0600 inside a 0700 dir,
//! atomically (temp file + rename) so a crash never leaves half a file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// The default server when nothing is saved and `RAWORC_SERVER` is unset.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9000";

/// What the CLI remembers between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Fields written by other versions, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The config file inside a raworc home dir.
pub fn config_path(home: &Path) -> PathBuf {
    home.join("config.json")
}

impl Config {
    /// Loads the config; a missing file is an empty config.
    pub fn load(home: &Path) -> Result<Config> {
        let path = config_path(home);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not valid JSON ({e}); fix it or delete it and log in again",
                path.display()
            )
        })
    }

    /// Writes the config atomically with mode 0600 (dir 0700).
    pub fn save(&self, home: &Path) -> Result<()> {
        create_private_dir(home)?;
        let path = config_path(home);
        let mut text = serde_json::to_string_pretty(self).context("cannot encode config")?;
        text.push('\n');
        write_private_atomic(&path, text.as_bytes())
    }

    /// The token, if one is saved and not blank.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.trim().is_empty())
    }
}

/// Deletes the config file; returns whether there was one.
pub fn remove(home: &Path) -> Result<bool> {
    let path = config_path(home);
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Picks the server: an explicit flag, else the saved one, else
/// `RAWORC_SERVER`, else [`DEFAULT_SERVER`]; normalised.
pub fn resolve_server(
    flag: Option<&str>,
    saved: Option<&str>,
    env_server: Option<&str>,
) -> Result<String> {
    let chosen = [flag, saved, env_server]
        .into_iter()
        .flatten()
        .find(|s| !s.trim().is_empty())
        .unwrap_or(DEFAULT_SERVER);
    normalize_server(chosen)
}

/// Turns `host:port` or `http://host:port/` into `http://host:port`.
pub fn normalize_server(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| anyhow::anyhow!("invalid server URL '{raw}': {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        anyhow::bail!("invalid server URL '{raw}': use http:// or https://");
    }
    if url.host_str().is_none_or(str::is_empty) {
        anyhow::bail!("invalid server URL '{raw}': no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        anyhow::bail!("invalid server URL '{raw}': no query or fragment allowed");
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Creates `dir` (and missing parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes `bytes` to `path` via a 0600 temp file in the same dir + rename.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = write_new_private(&tmp, bytes).and_then(|()| {
        fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_new_private(tmp: &Path, bytes: &[u8]) -> Result<()> {
    // A leftover from a crashed run of this pid: replace it.
    let _ = fs::remove_file(tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::load(&dir.path().join("nope")).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn save_and_load_round_trip_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home").join(".raworc");
        let cfg = Config {
            server: Some("http://127.0.0.1:9000".into()),
            token: Some("tok".into()),
            user: Some("admin".into()),
            extra: Default::default(),
        };
        cfg.save(&home).unwrap();
        assert_eq!(Config::load(&home).unwrap(), cfg);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&config_path(&home)), 0o600);
            assert_eq!(mode(&home), 0o700);
        }
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(&home)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["config.json".to_string()]);
    }

    #[test]
    fn save_replaces_a_world_readable_file_with_a_private_one() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        fs::write(config_path(home), "{}").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(config_path(home), fs::Permissions::from_mode(0o644)).unwrap();
        }
        Config {
            token: Some("t".into()),
            ..Default::default()
        }
        .save(home)
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(config_path(home))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn unknown_fields_survive_a_save() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            config_path(dir.path()),
            r#"{"server":"http://h:1","future":{"a":1}}"#,
        )
        .unwrap();
        let mut cfg = Config::load(dir.path()).unwrap();
        cfg.token = Some("t".into());
        cfg.save(dir.path()).unwrap();
        let raw: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(config_path(dir.path())).unwrap()).unwrap();
        assert_eq!(raw["future"]["a"], 1);
        assert_eq!(raw["token"], "t");
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(config_path(dir.path()), "{not json").unwrap();
        let err = Config::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn remove_reports_whether_there_was_a_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!remove(dir.path()).unwrap());
        Config::default().save(dir.path()).unwrap();
        assert!(remove(dir.path()).unwrap());
    }

    #[test]
    fn blank_token_counts_as_none() {
        let cfg = Config {
            token: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(cfg.token(), None);
    }

    #[test]
    fn server_resolution_order() {
        let r = |f, s, e| resolve_server(f, s, e).unwrap();
        assert_eq!(
            r(Some("http://a:1"), Some("http://b:2"), Some("http://c:3")),
            "http://a:1"
        );
        assert_eq!(
            r(None, Some("http://b:2"), Some("http://c:3")),
            "http://b:2"
        );
        assert_eq!(r(None, None, Some("http://c:3")), "http://c:3");
        assert_eq!(r(None, Some(""), None), DEFAULT_SERVER);
    }

    #[test]
    fn server_normalisation() {
        assert_eq!(
            normalize_server("localhost:9000").unwrap(),
            "http://localhost:9000"
        );
        assert_eq!(normalize_server("http://h:9000/").unwrap(), "http://h:9000");
        assert_eq!(
            normalize_server("https://h/base/").unwrap(),
            "https://h/base"
        );
        assert!(normalize_server("ftp://h").is_err());
        assert!(normalize_server("http://").is_err());
        assert!(normalize_server("http://h?x=1").is_err());
    }
}
