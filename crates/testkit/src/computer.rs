//! The computer image for tests: built once per machine into
//! `RAWORC_TEST_IMAGES_DIR` (default `/var/cache/raworc-test/images`) and
//! found there by later runs. Building needs root, as the `local` runtime does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Turns computers on for a test server: the `local` runtime, the test
/// image, `raworc` (the binary under test) as each computer's host, and
/// disks as plain directories.
pub fn enable(config: &mut raworc_server::ServerConfig, raworc_binary: &Path) {
    config.runtime = raworc_server::config::RuntimeKind::Local;
    config.images_dir = Some(images_dir());
    config.host_binary = Some(raworc_binary.to_path_buf());
    // Plain directories (the other disk store is tested where asked for).
    config.disk_image_size = 0;
}

/// Polls `check` until it returns `Some`, failing after `secs`.
pub async fn await_some<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A decoded RGB screenshot.
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Image {
    pub fn decode(png_bytes: &[u8]) -> Image {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
        let info = reader.next_frame(&mut buf).expect("a frame");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        Image {
            width: info.width,
            height: info.height,
            rgb: buf,
        }
    }

    /// The pixels of a rectangle, for comparisons.
    pub fn region(&self, x: u32, y: u32, w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for row in y..y + h {
            let start = ((row * self.width + x) * 3) as usize;
            out.extend_from_slice(&self.rgb[start..start + (w * 3) as usize]);
        }
        out
    }
}

/// Directories of computer `id`'s cgroups (one per hierarchy on v1).
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let out = std::process::Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "7", "-type", "d", "-name"])
        .arg(format!("computer-{id}"))
        .output()
        .expect("find");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// The first of computer `id`'s cgroup files called `name`, read.
pub fn cgroup_file(id: &str, name: &str) -> Option<String> {
    cgroup_dirs(id)
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
}
