//! `raworc image build` with the real recipe: a complete desktop rootfs,
//! built once into a shared cache and found again without rebuilding.
//!
//! The images dir is `RAWORC_TEST_IMAGES_DIR` (default
//! `/var/cache/raworc-test/images`), kept between runs: the first run on a
//! machine downloads and builds the image (a few minutes), later runs find it.

use raworc_testkit::computer::images_dir;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

/// Runs `raworc image build`; its stdout.
fn build(dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_raworc"))
        .args(["image", "build", "--images-dir"])
        .arg(dir)
        .env_remove("RAWORC_IMAGES_DIR")
        .output()
        .expect("running raworc image build");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "raworc image build failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_image_has_the_desktop_stack_and_a_second_build_is_a_no_op() {
    let dir = images_dir();
    let first = build(&dir);
    let recipe = raworc_image::Recipe::builtin();
    let name = recipe.name();
    assert!(
        first.contains(&format!("built {name}"))
            || first.contains(&format!("{name} is up to date")),
        "{first}"
    );
    let image_dir = dir.join(&name);
    let manifest_before = std::fs::metadata(image_dir.join("manifest.json"))
        .expect("manifest")
        .mtime_nsec();

    let second = build(&dir);
    assert!(
        second.contains(&format!("{name} is up to date")),
        "{second}"
    );
    assert!(
        !second.contains("[1/4]"),
        "a second build must not run any step: {second}"
    );
    let manifest_after = std::fs::metadata(image_dir.join("manifest.json"))
        .expect("manifest")
        .mtime_nsec();
    assert_eq!(manifest_before, manifest_after, "the image was rebuilt");

    let image = raworc_image::Images::new(&dir)
        .find(&recipe)
        .expect("reading the image")
        .expect("the image exists");
    assert_eq!(image.manifest.digest, recipe.digest());
    let root = image.rootfs();
    for bin in [
        "usr/bin/Xvfb",
        "usr/bin/x11vnc",
        "usr/bin/openbox",
        "usr/bin/tint2",
        "usr/bin/chromium",
        "usr/bin/xterm",
        "usr/bin/pcmanfm",
        "usr/bin/python3",
        "usr/bin/curl",
    ] {
        assert!(root.join(bin).is_file(), "{bin} missing from the image");
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("computer:x:1000:1000:")),
        "no unprivileged user 'computer' (uid 1000)"
    );
    let secrets = std::fs::metadata(root.join("session/secrets")).expect("/session/secrets");
    assert_eq!(secrets.permissions().mode() & 0o777, 0o700);
    assert_eq!(secrets.uid(), 1000);
    let tmp = std::fs::metadata(root.join("tmp")).expect("/tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    // Build-time helpers and the host's settings are not left in the image.
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
    assert!(!root.join("tmp/raworc-setup.sh").exists());
    let resolv = std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap_or_default();
    assert!(
        resolv.trim().is_empty(),
        "host resolv.conf leaked: {resolv}"
    );
    // No scratch directory of this build is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("images dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!(".build-{name}-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
