//! Computer benchmarks on the `local` runtime (needs root and the image,
//! which is built first when missing):
//!
//!     cargo bench -p raworc --bench computer
//!
//! Measures start → ready (display up, browser window mapped), stop, a
//! restart from the kept disk, screenshots of a busy screen and clicks
//! through the host's socket, and the memory of an idle computer.

use std::time::{Duration, Instant};

use raworc_host::client::HostClient;
use raworc_runtime::local::{LocalConfig, LocalRuntime};
use raworc_runtime::{ComputerSpec, Runtime};
use serde_json::json;

const STARTS: usize = 5;
const CALLS: usize = 200;

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<40} n={:<4} p50 {:>8.2} ms   p90 {:>8.2} ms   min {:>8.2} ms   max {:>8.2} ms",
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

async fn settle(host: &HostClient) {
    let mut last = host.screenshot().await.expect("screenshot");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = host.screenshot().await.expect("screenshot");
        if now == last || Instant::now() > deadline {
            return;
        }
        last = now;
    }
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
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = LocalRuntime::new(LocalConfig {
        computers_dir: dir.path().join("computers"),
        image: raworc_testkit::computer::image_rootfs(),
        host_binary: env!("CARGO_BIN_EXE_raworc").into(),
        limits: LocalConfig::default_limits(),
    });

    // Start → ready and stop, each on a new disk; then restarts of one disk.
    let (mut starts, mut stops, mut restarts) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..STARTS {
        let spec = ComputerSpec {
            id: format!("bench-{i}"),
            ..ComputerSpec::default()
        };
        let t = Instant::now();
        rt.start(&spec).await.expect("start");
        starts.push(t.elapsed());
        let t = Instant::now();
        rt.stop(&spec.id).await.expect("stop");
        stops.push(t.elapsed());
        if i == 0 {
            for _ in 0..STARTS {
                let t = Instant::now();
                rt.start(&spec).await.expect("restart");
                restarts.push(t.elapsed());
                rt.stop(&spec.id).await.expect("stop");
            }
        }
    }
    summary("start -> ready (new disk)", starts);
    summary("restart -> ready (kept disk)", restarts);
    summary("stop (browser closed gracefully)", stops);

    let spec = ComputerSpec {
        id: "bench-tools".into(),
        ..ComputerSpec::default()
    };
    rt.start(&spec).await.expect("start");
    let host = rt.host(&spec.id).expect("host");

    // Idle memory: the whole computer's cgroup after it has settled.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = rt.memory_bytes(&spec.id).expect("memory");
    println!(
        "{:<40} {:.0} MiB (cgroup memory usage, page cache included)",
        "idle computer memory",
        idle as f64 / (1 << 20) as f64
    );
    println!(
        "{:<40} {}",
        "idle computers per 24 GiB (by that figure)",
        (24u64 << 30) / idle.max(1)
    );

    host.write_file("/tmp/busy.html", busy_page().into())
        .await
        .expect("upload");
    host.exec(&raworc_host::proto::ExecRequest {
        command: "chromium file:///tmp/busy.html >/dev/null 2>&1 &".into(),
        timeout_s: Some(10),
    })
    .await
    .expect("open the page");
    settle(&host).await;

    let mut shots = Vec::new();
    for _ in 0..CALLS {
        let t = Instant::now();
        let png = host.screenshot().await.expect("screenshot");
        shots.push(t.elapsed());
        assert!(png.len() > 10_000, "a busy screen compresses less");
    }
    summary("screenshot, busy screen (host socket)", shots);

    let mut clicks = Vec::new();
    for i in 0..CALLS {
        let input = json!({"action": "left_click", "coordinate": [900 + (i % 50) as u32, 700]});
        let t = Instant::now();
        host.computer(&input).await.expect("click");
        clicks.push(t.elapsed());
    }
    summary("left_click with move (host socket)", clicks);

    rt.stop(&spec.id).await.expect("stop");
    rt.stop_all().await;
}
