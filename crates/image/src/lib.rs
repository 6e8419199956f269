//! The computer image: a Debian rootfs with the desktop stack.
//!
//! The recipe (a package list and a set-up script, in `recipe/`) is compiled
//! into the binary. An image is named by the digest of its recipe, so a build
//! with an unchanged recipe finds its image and does nothing, and a changed
//! recipe makes a new image beside the old one (sessions on the old one keep
//! their lower layer). A build happens in a scratch directory and is renamed
//! into place only when complete: an image directory is always whole.

mod builder;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use builder::{BuildOptions, Progress};

/// Bumped when the build steps themselves change in a way that alters images.
const BUILDER_VERSION: &str = "1";

/// What went wrong while finding or building an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("building an image needs root (debootstrap and chroot); run as root")]
    NotRoot,
    #[error("{tool} is not installed; install it with: apt-get install {package}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{step} failed: {detail}")]
    Step { step: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image manifest {path}: {detail}")]
    Manifest { path: PathBuf, detail: String },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }
}

/// How to make the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// Debian release.
    pub suite: String,
    /// Packages installed on top of the minimal base.
    pub packages: Vec<String>,
    /// Shell script run inside the new rootfs after the packages.
    pub setup: String,
}

impl Recipe {
    /// The recipe shipped with this version of Raworc.
    pub fn builtin() -> Recipe {
        Recipe {
            suite: "bookworm".into(),
            packages: parse_packages(include_str!("../recipe/packages.txt")),
            setup: include_str!("../recipe/setup.sh").into(),
        }
    }

    /// Hex SHA-256 over everything that decides the image's contents.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            BUILDER_VERSION,
            &self.suite,
            &self.packages.join("\n"),
            &self.setup,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    }

    /// The image's name: `computer-` and the first 16 hex digits of the digest.
    pub fn name(&self) -> String {
        format!("computer-{}", &self.digest()[..16])
    }
}

/// Package names, one per line, without comments or blank lines.
fn parse_packages(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Written beside the rootfs once a build is complete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub digest: String,
    pub suite: String,
    pub packages: Vec<String>,
    /// Seconds since the Unix epoch.
    pub built_at: u64,
    pub build_seconds: u64,
}

/// A complete image on disk.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Image {
    /// The read-only lower layer of every computer made from this image.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

/// A directory of images (by default `<data-dir>/images`).
#[derive(Debug, Clone)]
pub struct Images {
    dir: PathBuf,
}

impl Images {
    pub fn new(dir: impl Into<PathBuf>) -> Images {
        Images { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The built image of `recipe`, if there is one.
    pub fn find(&self, recipe: &Recipe) -> Result<Option<Image>, ImageError> {
        let dir = self.dir.join(recipe.name());
        let path = dir.join("manifest.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io(format!("reading {}", path.display()))(e)),
        };
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| ImageError::Manifest {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        if manifest.digest != recipe.digest() {
            return Err(ImageError::Manifest {
                path,
                detail: format!("digest {} does not match the recipe", manifest.digest),
            });
        }
        Ok(Some(Image { dir, manifest }))
    }

    /// The image of `recipe`, built first when missing. Builds in this
    /// process take turns, so threads that all need the image build it once.
    pub fn ensure(
        &self,
        recipe: &Recipe,
        options: &BuildOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Image, bool), ImageError> {
        if let Some(image) = self.find(recipe)? {
            return Ok((image, false));
        }
        static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(image) = self.find(recipe)? {
            return Ok((image, false));
        }
        builder::build(self, recipe, options, progress)?;
        let image = self.find(recipe)?.ok_or_else(|| ImageError::Step {
            step: "build".into(),
            detail: "the image is missing after a successful build".into(),
        })?;
        Ok((image, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_skip_comments_and_blanks() {
        let p = parse_packages("# head\n\nxvfb\n  chromium  # browser\n#x\n");
        assert_eq!(p, vec!["xvfb", "chromium"]);
    }

    #[test]
    fn the_digest_follows_every_part_of_the_recipe() {
        let base = Recipe::builtin();
        assert!(base.packages.iter().any(|p| p == "chromium"));
        assert_eq!(base.digest(), Recipe::builtin().digest());
        assert_eq!(base.digest().len(), 64);
        let mut more = base.clone();
        more.packages.push("htop".into());
        let mut setup = base.clone();
        setup.setup.push_str("\ntrue\n");
        let mut suite = base.clone();
        suite.suite = "trixie".into();
        let digests = [&base, &more, &setup, &suite].map(Recipe::digest);
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(base.name().starts_with("computer-"));
    }

    #[test]
    fn a_missing_image_is_not_found_and_a_foreign_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::new(dir.path());
        let recipe = Recipe::builtin();
        assert!(images.find(&recipe).unwrap().is_none());
        let image_dir = dir.path().join(recipe.name());
        std::fs::create_dir_all(&image_dir).unwrap();
        let manifest = Manifest {
            name: recipe.name(),
            digest: "0".repeat(64),
            suite: recipe.suite.clone(),
            packages: vec![],
            built_at: 0,
            build_seconds: 0,
        };
        std::fs::write(
            image_dir.join("manifest.json"),
            serde_json::to_string(&manifest).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            images.find(&recipe),
            Err(ImageError::Manifest { .. })
        ));
    }
}
