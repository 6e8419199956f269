//! Computer benchmarks through the HTTP API, on the `local` runtime (needs
//! root and the image, which is built first when missing):
//!
//!     cargo bench -p raworc --bench computer [-- SECTION…]
//!
//! Sections: `lifecycle`, `screen`, `remix`, `memory`, `btrfs`, `pool`
//! (all when none is named).
//!
//! The real server runs in this process on a random port with SQLite; every
//! figure is what an API client sees, unless it says otherwise. Measured:
//! create → `running` (desktop painted: panel and browser chrome on screen;
//! with each start step's time from the computer's host log), close →
//! `closed`, restore → `running`, screenshots (blank and busy screen) and
//! clicks beside the reference `scrot` + ImageMagick and `xdotool` paths
//! run inside the same computer, remixes of 10 MB and 1 GB disks (stopped
//! and running parents; plain directories and a btrfs disk image), and the
//! memory of idle computers.

use std::path::Path;
use std::time::{Duration, Instant};

use raworc_runtime::Inherit;
use raworc_testkit::computer::await_some;
use raworc_testkit::{Backend, StatusCode, TestApp};
use serde_json::{json, Value};

const RAWORC: &str = env!("CARGO_BIN_EXE_raworc");
const STARTS: usize = 10;
/// Creates served by the warm pool.
const POOLED_CREATES: usize = 20;
const CALLS: usize = 200;
const REFERENCE_CALLS: usize = 30;
/// Idle computers started together to measure memory per computer.
const IDLE_FLEET: usize = 16;

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<52} n={:<4} p50 {:>8.2} ms   p90 {:>8.2} ms   min {:>8.2} ms   max {:>8.2} ms",
        samples.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
    );
}

/// A page full of colour and text, so that screenshots have work to do.
fn busy_page() -> String {
    let mut html = String::from("<html><body style='margin:0;font:12px sans-serif'><table>");
    for row in 0..60 {
        html.push_str("<tr>");
        for col in 0..16 {
            let hue = (row * 37 + col * 53) % 360;
            html.push_str(&format!(
                "<td style='background:hsl({hue},70%,60%)'>cell {row}:{col} ✓ lorem ipsum</td>"
            ));
        }
        html.push_str("</tr>");
    }
    html.push_str("</table></body></html>");
    html
}

/// `MemAvailable` of this machine, in bytes.
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb << 10)
        .unwrap_or(0)
}

fn main() {
    // `cargo test --all-targets` runs bench targets too; only `cargo bench`
    // (which passes `--bench`) measures.
    if !std::env::args().any(|a| a == "--bench") {
        println!("computer benchmarks: run with `cargo bench -p raworc --bench computer`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sections: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    runtime.block_on(run(Sections(sections)));
}

/// The sections asked for on the command line (all when none is).
struct Sections(Vec<String>);

impl Sections {
    fn wants(&self, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|s| s == name)
    }
}

/// The host's start milestones, in the order they happen.
const MILESTONES: [&str; 4] = [
    "display up",
    "browser window mapped",
    "desktop painted",
    "ready",
];

/// Milliseconds since the host's start at each milestone of its last start
/// (the newest entries of `host.log` win).
fn milestones(log: &Path) -> Vec<Option<u64>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut found = vec![None; MILESTONES.len()];
    for line in text.lines() {
        // Colour codes out, then `<message> ms=<n>`.
        let mut plain = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        for (i, name) in MILESTONES.iter().enumerate() {
            if plain.contains(&format!(" {name} ms=")) {
                found[i] = plain
                    .rsplit("ms=")
                    .next()
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok());
            }
        }
    }
    found
}

struct Bench {
    app: TestApp,
    token: String,
}

impl Bench {
    async fn create(&self, body: Value) -> String {
        let r = self
            .app
            .post("/api/v0/sessions", Some(&self.token), body)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["id"].as_str().expect("id").to_owned()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self.app.post(path, Some(&self.token), body).await;
        assert!(r.status.is_success(), "{path}: {:?}", r.body);
        r.body
    }

    /// Polls the session every 5 ms until it is in `state`.
    async fn reach(&self, id: &str, state: &str) {
        let path = format!("/api/v0/sessions/{id}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self.app.get(&path, Some(&self.token)).await;
            assert_ne!(r.body["state"], "errored", "{:?}", r.body);
            if r.body["state"] == state {
                return;
            }
            assert!(Instant::now() < deadline, "{id} never became {state}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn exec(&self, id: &str, command: &str) -> String {
        let out = self
            .post(
                &format!("/api/v0/sessions/{id}/exec"),
                json!({"command": command, "timeout_s": 600}),
            )
            .await;
        assert_eq!(out["exit_code"], 0, "{command}: {out}");
        out["stdout"].as_str().unwrap_or_default().to_owned()
    }

    /// Times `command` inside the computer `n` times (microsecond clock
    /// read inside, so the API's round trip is not counted).
    async fn reference(&self, id: &str, command: &str, n: usize) -> Vec<Duration> {
        let script = format!(
            "for i in $(seq {n}); do s=$(date +%s%N); {command} >/dev/null 2>&1 || exit 1; \
             e=$(date +%s%N); echo $(( (e - s) / 1000 )); done"
        );
        self.exec(id, &script)
            .await
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .map(Duration::from_micros)
            .collect()
    }

    /// One screenshot's PNG, if the API gave one.
    async fn screenshot(&self, id: &str) -> Option<Vec<u8>> {
        let url = format!("{}/api/v0/sessions/{id}/screenshot", self.app.base);
        let r = self
            .app
            .client
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        if r.status() != StatusCode::OK {
            return None;
        }
        r.bytes().await.ok().map(|b| b.to_vec())
    }

    async fn screenshots(&self, id: &str, n: usize) -> Vec<Duration> {
        let mut samples = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            self.screenshot(id).await.expect("screenshot");
            samples.push(t.elapsed());
        }
        samples
    }

    /// Five forks of `parent`'s disk, each removed after it is timed.
    async fn forks(&self, parent: &str, prefix: &str) -> Vec<Duration> {
        let runtime = self.app.state().runtime.clone().expect("runtime");
        let mut forks = Vec::new();
        for i in 0..5 {
            let child = format!("{prefix}-{i}");
            let inherit = Inherit {
                data: true,
                code: true,
            };
            let t = Instant::now();
            runtime.fork(parent, &child, inherit).await.expect("fork");
            forks.push(t.elapsed());
            runtime.remove(&child).await.expect("remove");
        }
        forks
    }

    fn memory(&self, id: &str) -> u64 {
        let rt = self.app.state().runtime.as_ref().expect("runtime");
        rt.memory_bytes(id).expect("memory")
    }
}

async fn run(sections: Sections) {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
    })
    .await;
    let token = app.admin_token.clone();
    let b = Bench { app, token };
    if sections.wants("lifecycle") {
        b.lifecycle().await;
    }
    if sections.wants("screen") {
        b.screen().await;
    }
    if sections.wants("remix") {
        b.remixes().await;
    }
    if sections.wants("memory") {
        b.idle_memory().await;
    }
    b.app.stop().await;

    if sections.wants("pool") {
        let app = TestApp::spawn_with(Backend::Sqlite, |c| {
            raworc_testkit::computer::enable(c, Path::new(RAWORC));
            c.warm_pool = 1;
        })
        .await;
        let token = app.admin_token.clone();
        let b = Bench { app, token };
        b.pooled_creates().await;
        b.app.stop().await;
    }

    if sections.wants("btrfs") {
        // The same running-parent remixes with disks on a btrfs image.
        let app = TestApp::spawn_with(Backend::Sqlite, |c| {
            raworc_testkit::computer::enable(c, Path::new(RAWORC));
            c.disk_image_size = 8;
        })
        .await;
        let token = app.admin_token.clone();
        let b = Bench { app, token };
        b.running_remixes("btrfs image").await;
        b.app.stop().await;
    }
}

impl Bench {
    /// Create, close and restore through the API, with the host's steps.
    async fn lifecycle(&self) {
        let b = self;
        let (mut creates, mut closes, mut restores) = (Vec::new(), Vec::new(), Vec::new());
        let mut steps: Vec<Vec<Duration>> = vec![Vec::new(); MILESTONES.len()];
        for _ in 0..STARTS {
            let t = Instant::now();
            let id = b.create(json!({})).await;
            b.reach(&id, "running").await;
            creates.push(t.elapsed());
            let log = b.app.data_dir.join("computers").join(&id).join("host.log");
            for (i, ms) in milestones(&log).into_iter().enumerate() {
                if let Some(ms) = ms {
                    steps[i].push(Duration::from_millis(ms));
                }
            }
            let t = Instant::now();
            b.post(&format!("/api/v0/sessions/{id}/close"), json!({}))
                .await;
            b.reach(&id, "closed").await;
            closes.push(t.elapsed());
            let t = Instant::now();
            b.post(&format!("/api/v0/sessions/{id}/restore"), json!({}))
                .await;
            b.reach(&id, "running").await;
            restores.push(t.elapsed());
            b.app
                .delete(&format!("/api/v0/sessions/{id}"), Some(&b.token))
                .await;
        }
        summary("create -> running (desktop painted)", creates);
        for (name, samples) in MILESTONES.iter().zip(steps) {
            if !samples.is_empty() {
                summary(&format!("  host start -> {name}"), samples);
            }
        }
        summary("close -> closed (browser closed gracefully)", closes);
        summary("restore -> running (kept disk, painted)", restores);
    }

    /// Screenshots and clicks, ours and the reference paths.
    async fn screen(&self) {
        let b = self;
        let id = b.create(json!({})).await;
        b.reach(&id, "running").await;
        summary(
            "screenshot via API, blank screen",
            b.screenshots(&id, CALLS).await,
        );
        summary(
            "reference: scrot + convert -resize, blank screen",
            b.reference(
                &id,
                "scrot -o /tmp/s.png && convert /tmp/s.png -resize 1024x768 /tmp/r.png",
                REFERENCE_CALLS,
            )
            .await,
        );
        let page = format!("/api/v0/sessions/{id}/files/tmp/busy.html");
        let r = b
            .app
            .client
            .put(format!("{}{page}", b.app.base))
            .bearer_auth(&b.token)
            .body(busy_page())
            .send()
            .await
            .expect("upload");
        assert!(r.status().is_success());
        b.exec(&id, "(chromium file:///tmp/busy.html >/dev/null 2>&1 &)")
            .await;
        await_some("the busy page on screen", 60, || async {
            // The page is up once screenshots are big and stable.
            let one = b.screenshot(&id).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let two = b.screenshot(&id).await?;
            (one.len() > 100_000 && one == two).then_some(())
        })
        .await;
        summary(
            "screenshot via API, busy screen",
            b.screenshots(&id, CALLS).await,
        );
        summary(
            "reference: scrot + convert -resize, busy screen",
            b.reference(
                &id,
                "scrot -o /tmp/s.png && convert /tmp/s.png -resize 1024x768 /tmp/r.png",
                REFERENCE_CALLS,
            )
            .await,
        );
        let mut clicks = Vec::new();
        for i in 0..CALLS {
            let input = json!({"action": "left_click", "coordinate": [900 + (i % 50) as u32, 700]});
            let t = Instant::now();
            b.post(&format!("/api/v0/sessions/{id}/computer"), input)
                .await;
            clicks.push(t.elapsed());
        }
        summary("left_click with move via API", clicks);
        summary(
            "reference: xdotool mousemove --sync + click",
            b.reference(
                &id,
                "xdotool mousemove --sync $((900 + i % 50)) 700 click 1",
                REFERENCE_CALLS,
            )
            .await,
        );
        b.app
            .delete(&format!("/api/v0/sessions/{id}"), Some(&b.token))
            .await;
    }

    /// Remix: the disk's size must not matter.
    async fn remixes(&self) {
        let b = self;
        for (label, mb) in [("10 MB", 10), ("1 GB", 1024)] {
            let parent = b.create(json!({})).await;
            b.reach(&parent, "running").await;
            b.exec(
                &parent,
                &format!("head -c {}M /dev/urandom > /session/data/blob", mb),
            )
            .await;
            b.post(&format!("/api/v0/sessions/{parent}/close"), json!({}))
                .await;
            b.reach(&parent, "closed").await;
            // The disk operation alone, then the whole remix as a client sees it.
            let forks = b.forks(&parent, &format!("bench-fork-{mb}")).await;
            summary(&format!("fork of a closed {label} disk (runtime)"), forks);
            let t = Instant::now();
            let r = b
                .post(&format!("/api/v0/sessions/{parent}/remix"), json!({}))
                .await;
            let child = r["id"].as_str().expect("id").to_owned();
            b.reach(&child, "running").await;
            summary(
                &format!("remix of a closed {label} session -> running"),
                vec![t.elapsed()],
            );
            let size = b.exec(&child, "stat -c %s /session/data/blob").await;
            assert_eq!(size.trim(), (mb << 20).to_string());
            for id in [&child, &parent] {
                b.app
                    .delete(&format!("/api/v0/sessions/{id}"), Some(&b.token))
                    .await;
            }
        }

        b.running_remixes("plain directories").await;
    }

    /// Memory of idle computers: their cgroups' count, and what the machine
    /// as a whole has less of.
    async fn idle_memory(&self) {
        let b = self;
        let available_before = mem_available();
        let mut fleet = Vec::new();
        for _ in 0..IDLE_FLEET {
            fleet.push(b.create(json!({})).await);
        }
        for id in &fleet {
            b.reach(id, "running").await;
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        let memory: Vec<u64> = fleet.iter().map(|id| b.memory(id)).collect();
        let mean = memory.iter().sum::<u64>() / memory.len() as u64;
        let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
        println!(
        "{:<52} n={:<4} mean {:.0} MiB, min {:.0} MiB, max {:.0} MiB (cgroup usage, page cache included)",
        "idle computer memory",
        memory.len(),
        mib(mean),
        mib(*memory.iter().min().unwrap_or(&0)),
        mib(*memory.iter().max().unwrap_or(&0)),
    );
        println!(
            "{:<52} {}",
            "idle computers per 24 GiB (by that mean)",
            (24u64 << 30) / mean.max(1)
        );
        let spent = available_before.saturating_sub(mem_available()) / fleet.len() as u64;
        println!(
            "{:<52} {:.0} MiB per computer (MemAvailable before and after {} idle computers)",
            "machine memory per idle computer",
            mib(spent),
            fleet.len()
        );
        println!(
            "{:<52} {}",
            "idle computers per 24 GiB (by the machine's figure)",
            (24u64 << 30) / spent.max(1)
        );
        for id in &fleet {
            b.app
                .delete(&format!("/api/v0/sessions/{id}"), Some(&b.token))
                .await;
        }
    }

    /// The warm pool's figures from the workers' health.
    async fn pool_figures(&self) -> Value {
        let r = self
            .app
            .get("/sessions/workers/health", Some(&self.token))
            .await;
        r.body["warm_pool"].clone()
    }

    /// Creates claimed from a warm pool of one, refilled between creates;
    /// the refill's time and a frozen pooled computer's memory.
    async fn pooled_creates(&self) {
        let (mut creates, mut fills, mut memory) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..POOLED_CREATES {
            await_some("the warm pool to fill", 120, || async {
                (self.pool_figures().await["ready"] == 1).then_some(())
            })
            .await;
            let fill = self.pool_figures().await["last_fill_ms"].as_u64();
            fills.extend(fill.map(Duration::from_millis));
            let pooled = std::fs::read_dir(self.app.data_dir.join("computers"))
                .expect("computers")
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .find(|n| n.starts_with("pool-"));
            if let Some(id) = pooled {
                memory.push(self.memory(&id));
            }
            let t = Instant::now();
            let id = self.create(json!({})).await;
            self.reach(&id, "running").await;
            creates.push(t.elapsed());
            self.app
                .delete(&format!("/api/v0/sessions/{id}"), Some(&self.token))
                .await;
        }
        let claims = self.pool_figures().await["claims"].as_u64().unwrap_or(0);
        assert_eq!(claims as usize, POOLED_CREATES, "every create was a claim");
        creates.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let p99 = creates[((creates.len() - 1) as f64 * 0.99).round() as usize];
        summary("pooled create -> running (painted)", creates.clone());
        println!("{:<52} {:.2} ms", "pooled create -> running p99", ms(p99));
        summary("warm pool refill of one computer (start to frozen)", fills);
        let mean = memory.iter().sum::<u64>() / memory.len().max(1) as u64;
        println!(
            "{:<52} n={:<4} mean {:.0} MiB (cgroup usage, page cache included)",
            "frozen pooled computer memory",
            memory.len(),
            mean as f64 / (1u64 << 20) as f64
        );
    }

    /// Forks of a *running* parent with 10 MB and 1 GB on its disk (written
    /// back first, so that the figure is the fork's own cost).
    async fn running_remixes(&self, store: &str) {
        for (label, mb) in [("10 MB", 10), ("1 GB", 1024)] {
            let parent = self.create(json!({})).await;
            self.reach(&parent, "running").await;
            self.exec(
                &parent,
                &format!("head -c {mb}M /dev/urandom > /session/data/blob; sync"),
            )
            .await;
            let forks = self.forks(&parent, &format!("bench-live-{mb}")).await;
            summary(&format!("fork of a running {label} disk ({store})"), forks);
            self.app
                .delete(&format!("/api/v0/sessions/{parent}"), Some(&self.token))
                .await;
        }
    }
}
