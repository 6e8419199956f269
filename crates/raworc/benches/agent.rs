//! Agent benchmarks on real computers with a zero-latency scripted model
//! (needs root and the image):
//!
//!     cargo bench -p raworc --bench agent [-- SECTION…]
//!
//! Sections (all when none is named):
//! - `step`: the orchestration's own cost per agent step — a message
//!   accepted (`POST …/messages` answered) → the model asked → the tool run
//!   in the computer → its `tool_result` event received by a client on the
//!   event stream — for a bash step and a screenshot step.
//! - `settle`: an action followed by its screenshot, which waits until the
//!   screen has settled, beside the reference's fixed 2 s wait.
//! - `fleet`: 20 sessions' agents working at once, each with a bash step,
//!   a screenshot step and a reply; every message must be answered without
//!   an error.
//!
//! The server runs in this process on a random port with SQLite (every
//! commit durable: `synchronous = FULL`); the scripted model answers from
//! memory on loopback, so what is measured is Raworc's own work.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use raworc_testkit::model::{ScriptedModel, Step};
use raworc_testkit::{Backend, TestApp};
use serde_json::{json, Value};

const RAWORC: &str = env!("CARGO_BIN_EXE_raworc");
const KEY: &str = "bench-key";
const STEPS: usize = 40;
const SETTLES: usize = 10;
const FLEET: usize = 20;

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<58} n={:<4} p50 {:>8.2} ms   p90 {:>8.2} ms   min {:>8.2} ms   max {:>8.2} ms",
        samples.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
    );
}

fn main() {
    // `cargo test --all-targets` runs bench targets too; only `cargo bench` measures.
    if !std::env::args().any(|a| a == "--bench") {
        println!("agent benchmarks: run with `cargo bench -p raworc --bench agent`");
        return;
    }
    let sections: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |s: &str| sections.is_empty() || sections.iter().any(|x| x == s);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if wants("step") {
            steps().await;
        }
        if wants("settle") {
            settles().await;
        }
        if wants("fleet") {
            fleet().await;
        }
    });
}

async fn app(model: &ScriptedModel) -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        model.serve_anthropic(c);
        c.llm_stream = false;
        c.max_sessions = 64;
    })
    .await
}

/// A client of a session's event stream that notes when each event arrives.
struct Events {
    rx: tokio::sync::mpsc::UnboundedReceiver<(Value, Instant)>,
}

impl Events {
    async fn open(app: &TestApp, id: &str) -> Events {
        let resp = app
            .client
            .get(format!("{}/api/v0/sessions/{id}/events/stream", app.base))
            .bearer_auth(&app.admin_token)
            .send()
            .await
            .expect("the event stream");
        assert_eq!(resp.status(), 200);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                let at = Instant::now();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                        if let Ok(v) = serde_json::from_str::<Value>(data) {
                            let _ = tx.send((v, at));
                        }
                    }
                }
            }
        });
        Events { rx }
    }

    /// The next event of `kind`, and when it arrived.
    async fn next(&mut self, kind: &str) -> (Value, Instant) {
        loop {
            let (v, at) = tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
                .await
                .expect("an event in time")
                .expect("the stream goes on");
            if v["type"] == kind {
                return (v, at);
            }
        }
    }
}

/// Per-step overhead: accepted → tool run → `tool_result` streamed.
async fn steps() {
    let mut script = Vec::new();
    for _ in 0..STEPS {
        script.push(Step::tool_use("bash", json!({"command": "true"})));
        script.push(Step::text("done"));
    }
    for _ in 0..STEPS {
        script.push(Step::tool_use("computer", json!({"action": "screenshot"})));
        script.push(Step::text("done"));
    }
    let model = ScriptedModel::start(script).await.with_key(KEY);
    let app = app(&model).await;
    let id = app.running_session(json!({})).await;
    let mut events = Events::open(&app, &id).await;
    for (label, what) in [("bash", "bash step"), ("screenshot", "screenshot step")] {
        let mut accepted_to_result = Vec::new();
        let mut use_to_result = Vec::new();
        let mut whole = Vec::new();
        for _ in 0..STEPS {
            let start = Instant::now();
            app.post_message(&id, label).await;
            let accepted = Instant::now();
            let (_, used) = events.next("tool_use").await;
            let (_, result) = events.next("tool_result").await;
            let (_, complete) = events.next("complete").await;
            accepted_to_result.push(result - accepted);
            use_to_result.push(result - used);
            whole.push(complete - start);
            // The worker is idle again before the next message.
            events.next("state").await;
        }
        summary(
            &format!("{what}: accepted → tool_result streamed"),
            accepted_to_result,
        );
        summary(
            &format!("{what}: tool_use → tool_result streamed"),
            use_to_result,
        );
        summary(
            &format!("{what}: POST → complete streamed (2 model calls)"),
            whole,
        );
    }
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    app.stop().await;
}

/// An action and its settled screenshot, beside the reference's fixed wait.
async fn settles() {
    let actions = [
        (
            "left_click on the empty desktop",
            json!({"action": "left_click", "coordinate": [512, 500]}),
        ),
        (
            "key ctrl+l (focus the address bar)",
            json!({"action": "key", "text": "ctrl+l"}),
        ),
        (
            "type 20 characters into the address bar",
            json!({"action": "type", "text": "settled screenshots!"}),
        ),
        (
            "mouse_move",
            json!({"action": "mouse_move", "coordinate": [200, 300]}),
        ),
    ];
    let mut script = Vec::new();
    for _ in 0..SETTLES {
        for (_, input) in &actions {
            script.push(Step::tool_use("computer", input.clone()));
            script.push(Step::text("done"));
        }
    }
    let model = ScriptedModel::start(script).await.with_key(KEY);
    let app = app(&model).await;
    let id = app.running_session(json!({})).await;
    let mut events = Events::open(&app, &id).await;
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); actions.len()];
    for _ in 0..SETTLES {
        for (i, _) in actions.iter().enumerate() {
            app.post_message(&id, "act").await;
            let (_, used) = events.next("tool_use").await;
            let (_, result) = events.next("tool_result").await;
            events.next("complete").await;
            events.next("state").await;
            samples[i].push(result - used);
        }
    }
    for ((name, _), s) in actions.iter().zip(samples) {
        summary(&format!("{name} + settled screenshot"), s);
    }
    println!(
        "{:<58} the reference waits a fixed 2000 ms before each such screenshot",
        ""
    );
    app.stop().await;
}

/// 20 sessions' agents at once.
async fn fleet() {
    let mut script = Vec::new();
    for _ in 0..FLEET {
        script.push(Step::tool_use(
            "bash",
            json!({"command": "echo working; sleep 0.2"}),
        ));
        script.push(Step::tool_use("computer", json!({"action": "screenshot"})));
        script.push(Step::text("done"));
    }
    let model = ScriptedModel::start(script).await.with_key(KEY);
    let app = app(&model).await;
    let token = app.admin_token.clone();
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..FLEET {
        ids.push(app.session(&token, json!({})).await);
    }
    for id in &ids {
        app.await_state(&token, id, "running").await;
    }
    println!(
        "{FLEET} computers created and running in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let mut seqs = Vec::new();
    for id in &ids {
        seqs.push(app.post_message(id, "work").await);
    }
    let mut durations = Vec::new();
    let mut errors = 0;
    for (id, seq) in ids.iter().zip(&seqs) {
        let reply = app.reply_to(id, *seq, 300).await;
        durations.push(Duration::from_millis(
            reply["metadata"]["duration_ms"].as_u64().unwrap_or(0),
        ));
        errors += app
            .events(id)
            .await
            .iter()
            .filter(|e| e["type"] == "error")
            .count();
    }
    let wall = start.elapsed();
    summary(
        &format!("{FLEET} agents at once: message → reply (agent's own duration)"),
        durations,
    );
    println!(
        "{FLEET} agents at once: all answered in {:.2} s wall; error events: {errors}; model protocol violations: {}",
        wall.as_secs_f64(),
        model.violations().len()
    );
    assert_eq!(errors, 0);
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    app.stop().await;
}
