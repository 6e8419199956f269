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
    // Cold starts (the warm pool is tested where asked for).
    config.warm_pool = 0;
}

/// The flags that turn computers on for `raworc serve` run as a child
/// process, as [`enable`] does for an in-process server.
pub fn serve_args() -> Vec<String> {
    vec![
        "--images-dir".into(),
        images_dir().to_string_lossy().into_owned(),
        "--warm-pool".into(),
        "0".into(),
    ]
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

    /// Distinct colours in a rectangle (icons and text show many; an
    /// unpainted window or an empty panel one or two).
    pub fn colours(&self, x: u32, y: u32, w: u32, h: u32) -> usize {
        let region = self.region(x, y, w, h);
        let set: std::collections::HashSet<&[u8]> = region.chunks_exact(3).collect();
        set.len()
    }

    /// Whether this is a painted desktop as a person would see it: the
    /// browser's tab strip and toolbar at the top, the panel (launchers,
    /// task list, clock) along the bottom.
    pub fn shows_painted_desktop(&self) -> bool {
        let chrome = self.colours(0, 0, self.width, 80);
        let panel = self.colours(0, self.height - 24, self.width, 24);
        chrome >= 12 && panel >= 12
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

/// The calls tests make on sessions' computers, through the API.
impl crate::TestApp {
    /// Runs `command` in session `id`'s computer; the answer as it came.
    pub async fn exec(&self, token: &str, id: &str, command: &str, timeout_s: u64) -> crate::Reply {
        self.post(
            &format!("/api/v0/sessions/{id}/exec"),
            Some(token),
            serde_json::json!({ "command": command, "timeout_s": timeout_s }),
        )
        .await
    }

    /// Runs `command`, which must be accepted (whatever its exit code), and
    /// returns the result (`exit_code`, `stdout`, `stderr`).
    pub async fn exec_ok(
        &self,
        token: &str,
        id: &str,
        command: &str,
        timeout_s: u64,
    ) -> serde_json::Value {
        let r = self.exec(token, id, command, timeout_s).await;
        assert_eq!(r.status, crate::StatusCode::OK, "{command}: {:?}", r.body);
        r.body
    }

    /// Runs `command`, which must exit 0, and returns its stdout.
    pub async fn run(&self, token: &str, id: &str, command: &str) -> String {
        let out = self.exec_ok(token, id, command, 60).await;
        assert_eq!(out["exit_code"], 0, "{command}: {out}");
        out["stdout"].as_str().unwrap_or_default().to_owned()
    }

    /// Creates a session as admin from `body` and waits until it runs; its id.
    pub async fn running_session(&self, body: serde_json::Value) -> String {
        let id = self.session(&self.admin_token, body).await;
        self.await_state(&self.admin_token, &id, "running").await;
        id
    }

    /// Waits for session `id` to reach `state` and returns it; fails at
    /// once if it errors instead.
    pub async fn await_state(&self, token: &str, id: &str, state: &str) -> serde_json::Value {
        await_some(&format!("session {id} to be {state}"), 120, || async {
            let r = self
                .get(&format!("/api/v0/sessions/{id}"), Some(token))
                .await;
            assert_eq!(r.status, crate::StatusCode::OK, "{:?}", r.body);
            if state != "errored" {
                assert_ne!(r.body["state"], "errored", "{:?}", r.body);
            }
            (r.body["state"] == state).then_some(r.body)
        })
        .await
    }

    /// A screenshot of session `id`'s display.
    pub async fn screenshot(&self, token: &str, id: &str) -> Image {
        let r = self
            .client
            .get(format!("{}/api/v0/sessions/{id}/screenshot", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("screenshot request");
        assert_eq!(r.status(), crate::StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "image/png");
        Image::decode(&r.bytes().await.expect("screenshot body"))
    }
}

/// Lifecycle calls tests make on sessions, through the API.
impl crate::TestApp {
    /// Closes session `id` and waits until its computer has stopped.
    pub async fn close(&self, token: &str, id: &str) {
        let r = self
            .post(
                &format!("/api/v0/sessions/{id}/close"),
                Some(token),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(r.status, crate::StatusCode::OK, "close: {:?}", r.body);
        self.await_state(token, id, "closed").await;
    }

    /// Asks for session `id` to be restored (without waiting for it).
    pub async fn request_restore(&self, token: &str, id: &str) {
        let r = self
            .post(
                &format!("/api/v0/sessions/{id}/restore"),
                Some(token),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(r.status, crate::StatusCode::OK, "restore: {:?}", r.body);
    }

    /// Restores session `id` and waits until it runs.
    pub async fn restore(&self, token: &str, id: &str) {
        self.request_restore(token, id).await;
        self.await_state(token, id, "running").await;
    }

    /// Remixes session `id` with `body` (`{data, code}`) and returns the
    /// new session's id.
    pub async fn remix(&self, token: &str, id: &str, body: serde_json::Value) -> String {
        let r = self
            .post(&format!("/api/v0/sessions/{id}/remix"), Some(token), body)
            .await;
        assert_eq!(r.status, crate::StatusCode::CREATED, "remix: {:?}", r.body);
        r.body["id"].as_str().expect("the remix's id").to_owned()
    }
}
