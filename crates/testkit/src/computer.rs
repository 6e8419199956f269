//! The computer image for tests: built once per machine into
//! `RAWORC_TEST_IMAGES_DIR` (default `/var/cache/raworc-test/images`) and
//! found there by later runs. Building needs root, as the `local` runtime does.

use std::path::PathBuf;

use raworc_image::{BuildOptions, Images, Recipe};

pub fn images_dir() -> PathBuf {
    std::env::var_os("RAWORC_TEST_IMAGES_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/raworc-test/images"))
}

/// The built-in image's rootfs, built first when missing.
pub fn image_rootfs() -> PathBuf {
    let (image, _) = Images::new(images_dir())
        .ensure(&Recipe::builtin(), &BuildOptions::default(), &mut |p| {
            eprintln!("{p:?}")
        })
        .expect("the computer image (needs root)");
    image.rootfs()
}
