//! The agent end to end, on real computers: messages answered by the mock
//! agent and by a scripted model server that speaks Anthropic's wire
//! format, with the tools' effects checked inside the computer, events
//! listed and streamed, and the exactly-once promise across a `kill -9`.
//! Needs root.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use raworc_testkit::computer::await_some;
use raworc_testkit::model::{Fault, ScriptedModel, Step};
use raworc_testkit::{Backend, StatusCode, TestApp};
use serde_json::{json, Value};

const RAWORC: &str = env!("CARGO_BIN_EXE_raworc");
const KEY: &str = "sk-ant-test-key-4f1c2b9d7e";

/// A server with computers and the mock agent.
async fn mock_app() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
    })
    .await
}

/// A server with computers whose agent asks `model` (streamed or not).
async fn model_app(model: &ScriptedModel, stream: bool, retries: u32) -> TestApp {
    provider_app(model, Provider::Anthropic, stream, retries).await
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Provider {
    Anthropic,
    OpenAi,
}

/// A server with computers whose agent asks `model` through `provider`.
async fn provider_app(
    model: &ScriptedModel,
    provider: Provider,
    stream: bool,
    retries: u32,
) -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        match provider {
            Provider::Anthropic => model.serve_anthropic(c),
            Provider::OpenAi => model.serve_openai(c, "qwen2.5-vl"),
        }
        c.llm_stream = stream;
        c.llm_retries = retries;
    })
    .await
}

/// The texts of the tool results a request answers, and the images they
/// carry, in either wire format (OpenAI's tool messages take text only:
/// their screenshots follow in a user message).
fn answered(request: &raworc_testkit::model::Recorded, provider: Provider) -> (Vec<String>, usize) {
    let messages = request.body["messages"].as_array().unwrap();
    match provider {
        Provider::Anthropic => {
            let results: Vec<&Value> = messages.last().unwrap()["content"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["type"] == "tool_result")
                .collect();
            let mut images = 0;
            let texts = results
                .iter()
                .map(|r| match &r["content"] {
                    Value::String(s) => s.clone(),
                    blocks => {
                        let blocks = blocks.as_array().unwrap();
                        images += blocks.iter().filter(|b| b["type"] == "image").count();
                        blocks
                            .iter()
                            .filter_map(|b| b["text"].as_str())
                            .collect::<Vec<_>>()
                            .join("\n")
                    }
                })
                .collect();
            (texts, images)
        }
        Provider::OpenAi => {
            let last = messages
                .iter()
                .rposition(|m| m["role"] == "assistant")
                .unwrap();
            let tail = &messages[last + 1..];
            let images = tail
                .iter()
                .filter(|m| m["role"] == "user")
                .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
                .filter(|p| p["type"] == "image_url")
                .count();
            let texts = tail
                .iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| m["content"].as_str().unwrap().to_owned())
                .collect();
            (texts, images)
        }
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["type"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mock_agent_runs_a_command_on_the_computer_and_reports_every_step() {
    let app = mock_app().await;
    let token = app.admin_token.clone();
    let health = app.get("/health/detailed", None).await;
    assert_eq!(health.body["agent"]["status"], "mock", "{:?}", health.body);
    let id = app.running_session(json!({"name": "mock"})).await;

    let seq = app
        .post_message(
            &id,
            "run `echo made-by-the-agent > /session/data/agent.txt && cat /session/data/agent.txt`",
        )
        .await;
    let reply = app.reply_to(&id, seq, 120).await;
    assert!(
        reply["content"]
            .as_str()
            .unwrap()
            .contains("made-by-the-agent"),
        "{reply}"
    );
    assert_eq!(reply["metadata"]["provider"], "mock");
    assert!(
        reply["content"].as_str().unwrap().contains("mock agent"),
        "the reply says what answered it: {reply}"
    );
    assert_eq!(reply["metadata"]["steps"], 2);
    // The command really ran in the computer.
    assert_eq!(
        app.run(&token, &id, "cat /session/data/agent.txt")
            .await
            .trim(),
        "made-by-the-agent"
    );

    let seq = app.post_message(&id, "take a screenshot").await;
    app.reply_to(&id, seq, 120).await;
    let all = app.events(&id).await;
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let k = kinds(&all);
    for wanted in ["state", "tool_use", "tool_result", "complete"] {
        assert!(k.contains(&wanted), "{wanted} missing in {k:?}");
    }
    // The screenshot is served by URL, not inlined.
    let shot = all
        .iter()
        .rev()
        .find(|e| e["type"] == "tool_result")
        .expect("a tool result");
    let url = shot["metadata"]["image_url"]
        .as_str()
        .expect("an image url");
    let r = app
        .client
        .get(format!("{}{url}", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let png = r.bytes().await.unwrap();
    let image = raworc_testkit::computer::Image::decode(&png);
    assert!(image.shows_painted_desktop());
    // Busy went up, and comes down once the work is done.
    let busy = await_some("busy to come down", 30, || async {
        let busy: Vec<bool> = app
            .events(&id)
            .await
            .iter()
            .filter(|e| e["type"] == "state")
            .filter_map(|e| e["metadata"]["busy"].as_bool())
            .collect();
        (busy.last() == Some(&false)).then_some(busy)
    })
    .await;
    assert!(busy.contains(&true), "{busy:?}");
    // Deleting the session deletes its screenshots.
    assert!(app.data_dir.join("shots").join(&id).exists());
    let r = app
        .delete(&format!("/api/v0/sessions/{id}"), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!app.data_dir.join("shots").join(&id).exists());
    app.stop().await;
}

/// Reads server-sent events from `url` until `n` have arrived; returns
/// their `seq`s and the last id.
async fn read_sse(app: &TestApp, url: &str, last_id: Option<i64>, n: usize) -> Vec<i64> {
    let mut req = app
        .client
        .get(format!("{}{url}", app.base))
        .bearer_auth(&app.admin_token);
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(120), body.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                let v: Value = serde_json::from_str(data).unwrap();
                let id_line = event.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
                assert_eq!(id_line, v["seq"].to_string());
                seqs.push(v["seq"].as_i64().unwrap());
            }
        }
    }
    seqs.truncate(n);
    seqs
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_resume_without_gaps_or_repeats() {
    let app = mock_app().await;
    let token = app.admin_token.clone();
    let id = app.running_session(json!({})).await;
    let url = format!("/api/v0/sessions/{id}/events/stream");
    // A first client reads the first three events, then goes away.
    let first = read_sse(&app, &url, None, 3).await;
    assert_eq!(first, [1, 2, 3]);
    // Work happens while nobody listens.
    let seq = app.post_message(&id, "run `echo one`").await;
    app.reply_to(&id, seq, 120).await;
    // Every event of that work is written once the agent is idle.
    app.await_idle(&id).await;
    let total = app.events(&id).await.len();
    assert!(total > 5);
    // The reconnecting client gets exactly the rest, in order.
    let rest = read_sse(&app, &url, Some(3), total - 3).await;
    assert_eq!(rest, (4..=total as i64).collect::<Vec<_>>());
    // Live events reach a client already listening (WebSocket, seed 004's shape).
    let ws_url = format!(
        "ws://{}/ws/{id}/stream?after={total}&token={token}",
        app.addr
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let hello: Value = next_json(&mut ws).await;
    assert_eq!(hello["type"], "connected");
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"type": "ping"}).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    let seq = app.post_message(&id, "run `echo two`").await;
    let mut seen = Vec::new();
    loop {
        let u = next_json(&mut ws).await;
        assert_eq!(u["type"], "agent_update");
        seen.push(u["seq"].as_i64().unwrap());
        if u["update_type"] == "complete" {
            assert!(u["content"].as_str().unwrap().contains("two"));
            break;
        }
    }
    let expected: Vec<i64> = ((total as i64 + 1)..=*seen.last().unwrap()).collect();
    assert_eq!(seen, expected);
    app.reply_to(&id, seq, 120).await;
    // A WebSocket client that drops mid-task and comes back with `after`
    // gets the rest: together, every event once, in order.
    let last = *seen.last().unwrap();
    let seq = app.post_message(&id, "run `echo three`").await;
    let mut first = Vec::new();
    while first.len() < 2 {
        let u = next_json(&mut ws).await;
        first.push(u["seq"].as_i64().unwrap());
    }
    drop(ws);
    app.reply_to(&id, seq, 120).await;
    let after = *first.last().unwrap();
    let ws_url = format!(
        "ws://{}/ws/{id}/stream?after={after}&token={token}",
        app.addr
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "connected");
    let mut rest = Vec::new();
    loop {
        let u = next_json(&mut ws).await;
        rest.push(u["seq"].as_i64().unwrap());
        if u["update_type"] == "complete" {
            break;
        }
    }
    let together: Vec<i64> = first.into_iter().chain(rest).collect();
    let expected: Vec<i64> = ((last + 1)..=*together.last().unwrap()).collect();
    assert_eq!(together, expected);
    app.stop().await;
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("a message in time")
            .expect("the socket stays open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

use futures::SinkExt as _;

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

fn tool(name: &str, input: Value) -> Value {
    json!({"type": "tool_use", "name": name, "input": input})
}

/// The scripted model drives bash, the editor, a screenshot and a click;
/// each takes effect in the computer, and every request the model gets is
/// well-formed.
async fn scripted_work(provider: Provider, stream: bool) {
    let model = ScriptedModel::start(vec![
        Step::reply(
            vec![
                text("Let me set things up."),
                tool("bash", json!({"command": "cd /session/data && printf 'alpha\\nbeta\\n' > notes.txt && echo $((6*7))"})),
            ],
            "tool_use",
        ),
        Step::tool_use(
            "str_replace_based_edit_tool",
            json!({"command": "str_replace", "path": "/session/data/notes.txt", "old_str": "beta", "new_str": "gamma"}),
        ),
        Step::reply(
            vec![
                tool("computer", json!({"action": "screenshot"})),
                tool("computer", json!({"action": "left_click", "coordinate": [300, 400]})),
            ],
            "tool_use",
        ),
        Step::tool_use("computer", json!({"action": "cursor_position"})),
        Step::text("All done: notes edited."),
    ])
    .await
    .with_key(KEY);
    let app = provider_app(&model, provider, stream, 4).await;
    let token = app.admin_token.clone();
    let id = app
        .running_session(json!({"instructions": "Be brief and careful."}))
        .await;
    let seq = app.post_message(&id, "Make the notes and edit them.").await;
    let reply = app.reply_to(&id, seq, 120).await;
    assert_eq!(reply["content"], "All done: notes edited.");
    assert_eq!(reply["metadata"]["steps"], 5);
    assert!(
        reply["metadata"]["usage"]["output_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    assert_eq!(model.remaining(), 0);
    // Effects inside the computer.
    assert_eq!(
        app.run(&token, &id, "cat /session/data/notes.txt").await,
        "alpha\ngamma\n"
    );
    let requests = model.requests();
    assert_eq!(requests.len(), 5);
    let first = &requests[0];
    assert_eq!(first.body["stream"].as_bool().unwrap_or(false), stream);
    match provider {
        Provider::Anthropic => {
            assert_eq!(first.header("x-api-key"), Some(KEY));
            assert!(first
                .header("anthropic-beta")
                .unwrap()
                .contains("computer-use-2025-01-24"));
            let system = first.body["system"][0]["text"].as_str().unwrap();
            assert!(system.contains("Be brief and careful."));
            let tools: Vec<&str> = first.body["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["type"].as_str().unwrap())
                .collect();
            assert_eq!(
                tools,
                ["computer_20250124", "bash_20250124", "text_editor_20250728"]
            );
        }
        Provider::OpenAi => {
            assert_eq!(
                first.header("authorization"),
                Some(format!("Bearer {KEY}").as_str())
            );
            assert_eq!(first.body["model"], "qwen2.5-vl");
            let system = first.body["messages"][0]["content"].as_str().unwrap();
            assert!(system.contains("Be brief and careful."));
            let tools: Vec<&str> = first.body["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap())
                .collect();
            assert_eq!(tools, ["computer", "bash", "str_replace_based_edit_tool"]);
        }
    }
    // bash's output reached the model as the reference shapes it.
    assert_eq!(answered(&requests[1], provider), (vec!["42".to_owned()], 0));
    // The editor's answer, in the reference's words.
    let (edited, _) = answered(&requests[2], provider);
    assert!(edited[0].starts_with("The file /session/data/notes.txt has been edited."));
    // Screenshot and click each came back with an image; the click moved the pointer.
    let (texts, images) = answered(&requests[3], provider);
    assert_eq!((texts.len(), images), (2, 2), "{texts:?}");
    assert_eq!(answered(&requests[4], provider).0, ["X=300,Y=400"]);
    // The key never reached the computer: not in its processes' environments
    // or command lines, nor its files. (The pattern ends in a bracket
    // expression, so that the search's own command line does not match.)
    let (head, last) = KEY.split_at(KEY.len() - 1);
    let search =
        |places: &str| format!("grep -rls -- '{head}[{last}]' {places} 2>/dev/null | wc -l");
    let planted = app
        .run(
            &token,
            &id,
            &format!("echo {KEY} > /tmp/planted && {}", search("/tmp")),
        )
        .await;
    assert_eq!(planted.trim(), "1", "the search finds a planted copy");
    app.run(&token, &id, "rm /tmp/planted").await;
    let found = app
        .run(
            &token,
            &id,
            &search("/proc/[0-9]*/environ /proc/[0-9]*/cmdline /session /home /tmp"),
        )
        .await;
    assert_eq!(found.trim(), "0");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_model_works_the_computer_non_streaming() {
    scripted_work(Provider::Anthropic, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_model_works_the_computer_streaming() {
    scripted_work(Provider::Anthropic, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_openai_compatible_model_works_the_computer_non_streaming() {
    scripted_work(Provider::OpenAi, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_openai_compatible_model_works_the_computer_streaming() {
    scripted_work(Provider::OpenAi, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn model_faults_are_retried_or_reported_without_losing_the_message() {
    faults(Provider::Anthropic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_faults_are_retried_or_reported_without_losing_the_message() {
    faults(Provider::OpenAi).await;
}

async fn faults(provider: Provider) {
    let model = ScriptedModel::start(vec![
        Step::Fault(Fault::RateLimited { retry_after_s: 0.2 }),
        Step::Fault(Fault::Overloaded),
        Step::Fault(Fault::CutStream),
        Step::Fault(Fault::StreamError),
        Step::Fault(Fault::MalformedJson),
        Step::text("Recovered."),
        Step::Fault(Fault::Status {
            status: 401,
            error_type: "authentication_error".into(),
            message: "invalid x-api-key".into(),
        }),
    ])
    .await
    .with_key(KEY);
    let app = provider_app(&model, provider, true, 6).await;
    let token = app.admin_token.clone();
    let id = app.running_session(json!({})).await;
    // Five transient faults in a row, then an answer: all retried.
    let seq = app.post_message(&id, "hello").await;
    let reply = app.reply_to(&id, seq, 120).await;
    assert_eq!(reply["content"], "Recovered.");
    assert_eq!(
        reply["metadata"]["model_attempts"], 6,
        "five failures, then the answer"
    );
    // A refusal: reported as an error event and a reply, the message kept.
    let seq = app.post_message(&id, "again").await;
    let reply = app.reply_to(&id, seq, 120).await;
    let content = reply["content"].as_str().unwrap();
    assert!(
        content.contains("401") && content.contains("invalid x-api-key"),
        "{content}"
    );
    let all = app.events(&id).await;
    assert!(all.iter().any(|e| e["type"] == "error"));
    let msgs = app
        .get(&format!("/api/v0/sessions/{id}/messages"), Some(&token))
        .await;
    let users: Vec<&str> = msgs
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["hello", "again"]);
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_call_cut_at_max_tokens_is_not_run_streaming() {
    cut_at_max_tokens(Provider::Anthropic, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_call_cut_at_max_tokens_is_not_run_non_streaming() {
    cut_at_max_tokens(Provider::Anthropic, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_openai_tool_call_cut_at_max_tokens_is_not_run_streaming() {
    cut_at_max_tokens(Provider::OpenAi, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_openai_tool_call_cut_at_max_tokens_is_not_run_non_streaming() {
    cut_at_max_tokens(Provider::OpenAi, false).await;
}

/// A reply that hits max_tokens in the middle of its second tool call: the
/// first call runs, the cut one is answered as an error without running,
/// the model is asked once (no retry) and goes on.
async fn cut_at_max_tokens(provider: Provider, stream: bool) {
    let model = ScriptedModel::start(vec![
        Step::Fault(Fault::CutAtMaxTokens),
        Step::reply(
            vec![
                text("Two commands."),
                tool(
                    "bash",
                    json!({"command": "echo before > /session/data/before"}),
                ),
                tool("bash", json!({"command": "echo ran > /session/data/cut"})),
            ],
            "tool_use",
        ),
        Step::text("Understood."),
    ])
    .await
    .with_key(KEY);
    let app = provider_app(&model, provider, stream, 4).await;
    let token = app.admin_token.clone();
    let id = app.running_session(json!({})).await;
    let seq = app.post_message(&id, "Write the files.").await;
    let reply = app.reply_to(&id, seq, 120).await;
    assert_eq!(reply["content"], "Understood.");
    // One request per turn: the cut answer was taken, not retried.
    assert_eq!(reply["metadata"]["model_attempts"], 2);
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(model.remaining(), 0);
    model.assert_no_violations();
    // The complete call ran; the cut one did not.
    assert_eq!(
        app.run(&token, &id, "cat /session/data/before").await,
        "before\n"
    );
    assert_eq!(
        app.run(
            &token,
            &id,
            "test -e /session/data/cut && echo ran || echo not-run"
        )
        .await,
        "not-run\n"
    );
    // The model was told, as an error, why the call did not run.
    let (texts, _) = answered(&requests[1], provider);
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(!texts[0].contains("token limit"), "{texts:?}");
    assert!(texts[1].contains("token limit"), "{texts:?}");
    if provider == Provider::Anthropic {
        let messages = requests[1].body["messages"].as_array().unwrap();
        let results = &messages.last().unwrap()["content"];
        assert!(results[0].get("is_error").is_none(), "{results}");
        assert_eq!(results[1]["is_error"], true, "{results}");
    }
    // The events show it as a tool error, and no model error.
    let all = app.events(&id).await;
    let results: Vec<&Value> = all.iter().filter(|e| e["type"] == "tool_result").collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0]["metadata"]["is_error"], false);
    assert_eq!(results[1]["metadata"]["is_error"], true);
    assert!(
        results[1]["content"]
            .as_str()
            .unwrap()
            .contains("token limit"),
        "{}",
        results[1]
    );
    assert!(!all.iter().any(|e| e["type"] == "error"), "{all:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_mid_tool_each_message_has_one_reply_and_no_tool_ran_twice() {
    use raworc_testkit::process::ServerProcess;
    let model = ScriptedModel::start(vec![
        Step::tool_use(
            "bash",
            json!({"command": "echo start >> /session/data/runs; sleep 3; echo end >> /session/data/runs"}),
        ),
        Step::text("Picked up after the restart."),
    ])
    .await
    .with_key(KEY);
    let db = raworc_testkit::TestDb::new(Backend::Sqlite);
    let args = [
        raworc_testkit::computer::serve_args(),
        model.serve_anthropic_args(),
    ]
    .concat();
    let server = ServerProcess::start(Path::new(RAWORC), &db, &args);
    let app = server.app(&db).await;
    let token = app.admin_token.clone();
    let id = app.running_session(json!({})).await;
    let seq = app.post_message(&id, "Do the long thing.").await;
    // Kill the control plane while the tool runs in the computer.
    await_some("the tool to start", 60, || async {
        let out = app
            .run(&token, &id, "cat /session/data/runs 2>/dev/null || true")
            .await;
        out.contains("start").then_some(())
    })
    .await;
    server.kill();

    let server = ServerProcess::start(Path::new(RAWORC), &db, &args);
    let app = server.app(&db).await;
    let reply = app.reply_to(&id, seq, 120).await;
    assert_eq!(reply["content"], "Picked up after the restart.");
    // The tool was not run again: one start (the first run finishes on its own).
    let runs = await_some("the first run to end", 30, || async {
        let out = app.run(&token, &id, "cat /session/data/runs").await;
        out.contains("end").then_some(out)
    })
    .await;
    assert_eq!(runs, "start\nend\n");
    // The model was told that the call was interrupted.
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let last = requests[1].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let result = &last["content"][0];
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["is_error"], true);
    assert!(result["content"]
        .as_str()
        .unwrap()
        .contains("interrupted before it returned"));
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    // Exactly one reply to the message.
    let msgs = app
        .get(&format!("/api/v0/sessions/{id}/messages"), Some(&token))
        .await;
    let replies = msgs
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant" && m["metadata"]["reply_to"] == seq)
        .count();
    assert_eq!(replies, 1);
    // The busy flag the crash left up comes down once the work is done.
    app.await_idle(&id).await;
    app.delete(&format!("/api/v0/sessions/{id}"), Some(&token))
        .await;
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_the_agent_at_its_next_step() {
    let model = ScriptedModel::start(vec![
        Step::reply(
            vec![
                tool(
                    "bash",
                    json!({"command": "sleep 2; echo first > /session/data/c1"}),
                ),
                tool("bash", json!({"command": "echo second > /session/data/c2"})),
            ],
            "tool_use",
        ),
        Step::text("Ready again."),
    ])
    .await
    .with_key(KEY);
    let app = model_app(&model, true, 4).await;
    let token = app.admin_token.clone();
    let id = app.running_session(json!({})).await;
    let idle = app
        .post(
            &format!("/api/v0/sessions/{id}/cancel"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(idle.status, StatusCode::ACCEPTED);
    assert_eq!(idle.body["cancelled"], false, "nothing to cancel yet");
    let seq = app.post_message(&id, "Do two things.").await;
    await_some("the first tool to start", 60, || async {
        let all = app.events(&id).await;
        all.iter().any(|e| e["type"] == "tool_use").then_some(())
    })
    .await;
    let r = app
        .post(
            &format!("/api/v0/sessions/{id}/cancel"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.body["cancelled"], true);
    let reply = app.reply_to(&id, seq, 120).await;
    assert!(
        reply["content"].as_str().unwrap().contains("cancelled"),
        "{reply}"
    );
    // The running tool finished; the next one never ran; the model was not asked again.
    assert_eq!(
        app.run(&token, &id, "cat /session/data/c1").await,
        "first\n"
    );
    assert_eq!(
        app.run(
            &token,
            &id,
            "test -e /session/data/c2 && echo ran || echo skipped"
        )
        .await,
        "skipped\n"
    );
    assert_eq!(model.requests().len(), 1);
    app.await_idle(&id).await;
    // The next message goes on from a well-formed conversation.
    let seq = app.post_message(&id, "Are you there?").await;
    assert_eq!(app.reply_to(&id, seq, 120).await["content"], "Ready again.");
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    let results = &model.requests()[1].body["messages"][2]["content"];
    assert_eq!(results[1]["is_error"], true);
    assert!(results[1]["content"]
        .as_str()
        .unwrap()
        .contains("cancelled"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_told_of_a_smaller_screen_has_its_coordinates_scaled() {
    let model = ScriptedModel::start(vec![
        Step::reply(
            vec![
                tool(
                    "computer",
                    json!({"action": "left_click", "coordinate": [640, 400]}),
                ),
                tool("computer", json!({"action": "cursor_position"})),
                tool("computer", json!({"action": "screenshot"})),
            ],
            "tool_use",
        ),
        Step::text("Scaled."),
    ])
    .await
    .with_key(KEY);
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        c.display_size = (1920, 1200);
        model.serve_anthropic(c);
    })
    .await;
    let token = app.admin_token.clone();
    let id = app.running_session(json!({})).await;
    let seq = app.post_message(&id, "Click the middle.").await;
    assert_eq!(app.reply_to(&id, seq, 120).await["content"], "Scaled.");
    let requests = model.requests();
    // Told of WXGA, the size of the same shape that models do best at.
    let computer = &requests[0].body["tools"][0];
    assert_eq!(
        (
            computer["display_width_px"].as_u64(),
            computer["display_height_px"].as_u64()
        ),
        (Some(1280), Some(800))
    );
    let results = requests[1].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["content"]
        .clone();
    // The click landed in the middle of the real screen; the model sees its own coordinates.
    assert_eq!(results[1]["content"][0]["text"], "X=640,Y=400");
    let real = app
        .post(
            &format!("/api/v0/sessions/{id}/computer"),
            Some(&token),
            json!({"action": "cursor_position"}),
        )
        .await;
    assert_eq!(real.body["output"], "X=960,Y=600");
    // Screenshots come at the model's size.
    for r in [&results[0], &results[2]] {
        let image = r["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "image")
            .expect("an image");
        let png = base64::engine::general_purpose::STANDARD
            .decode(image["source"]["data"].as_str().unwrap())
            .unwrap();
        let decoded = raworc_testkit::computer::Image::decode(&png);
        assert_eq!((decoded.width, decoded.height), (1280, 800));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_computer_tools_screenshots_show_the_pointer() {
    let app = mock_app().await;
    let token = app.admin_token.clone();
    let id = app.running_session(json!({})).await;
    let act = |input: Value| {
        let app = &app;
        let token = &token;
        let id = &id;
        async move {
            let r = app
                .post(
                    &format!("/api/v0/sessions/{id}/computer"),
                    Some(token),
                    input,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            r.body
        }
    };
    act(json!({"action": "mouse_move", "coordinate": [600, 400]})).await;
    let tool_view = act(json!({"action": "screenshot"})).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(tool_view["image"].as_str().unwrap())
        .unwrap();
    let with_pointer = raworc_testkit::computer::Image::decode(&png);
    // The desktop as it is (the direct screenshot) has no pointer in it.
    let plain = app.screenshot(&token, &id).await;
    let near = |img: &raworc_testkit::computer::Image| img.region(596, 396, 24, 28);
    assert_ne!(near(&with_pointer), near(&plain), "the pointer is drawn in");
    // Away from it the two are the same picture.
    assert_eq!(
        with_pointer.region(100, 200, 300, 200),
        plain.region(100, 200, 300, 200)
    );
    app.stop().await;
}

/// A secret's value, long and odd enough to be found nowhere by chance.
const SECRET: &str = "sk-agent-9d41b7-never-in-events-c0ffee";

#[tokio::test(flavor = "multi_thread")]
async fn secrets_the_agent_prints_are_kept_out_of_replies_events_and_disk() {
    let app = mock_app().await;
    let token = app.admin_token.clone();
    let id = app
        .running_session(json!({"secrets": {"TOKEN": SECRET}}))
        .await;
    let seq = app
        .post_message(
            &id,
            "run `cat /session/secrets/TOKEN; echo; echo \"$TOKEN\"`",
        )
        .await;
    let reply = app.reply_to(&id, seq, 120).await;
    let content = reply["content"].as_str().unwrap();
    // The command saw the secret (twice), and the reply names it instead.
    assert_eq!(content.matches("[secret TOKEN]").count(), 2, "{content}");
    assert!(!content.contains(SECRET));
    let all = app.events(&id).await;
    assert!(!serde_json::to_string(&all).unwrap().contains(SECRET));
    let msgs = app
        .get(&format!("/api/v0/sessions/{id}/messages"), Some(&token))
        .await;
    assert!(!msgs.body.to_string().contains(SECRET));
    // Nor anywhere on disk: the database (events, the agent's steps), its
    // journal, the screenshots, the computers' disks.
    // (Stopped first, so that every write has reached its file; the files are kept.)
    let db = app.stop_keep().await;
    // The test's directory: the SQLite database and its journal, and the data dir.
    let root = db.dir.path().to_path_buf();
    assert!(root.join("raworc.db").exists());
    let holding = raworc_testkit::scan::files_holding(&root, SECRET.as_bytes());
    assert!(holding.is_empty(), "the secret is in {holding:?}");
    // The search finds a planted copy.
    std::fs::write(root.join("data").join("planted"), SECRET).unwrap();
    assert_eq!(
        raworc_testkit::scan::files_holding(&root, SECRET.as_bytes()).len(),
        1
    );
    drop(db);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_to_a_closed_session_restores_it_and_is_answered() {
    let app = mock_app().await;
    let token = app.admin_token.clone();
    let id = app.running_session(json!({})).await;
    app.close(&token, &id).await;
    let seq = app.post_message(&id, "run `echo back-again`").await;
    let reply = app.reply_to(&id, seq, 120).await;
    assert!(
        reply["content"].as_str().unwrap().contains("back-again"),
        "{reply}"
    );
    let s = app
        .get(&format!("/api/v0/sessions/{id}"), Some(&token))
        .await;
    assert_eq!(s.body["state"], "running");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mock_agent_opens_a_page_in_the_browser() {
    let app = mock_app().await;
    let token = app.admin_token.clone();
    let id = app.running_session(json!({})).await;
    app.run(
        &token,
        &id,
        "echo '<title>opened-by-the-mock</title><h1>hello</h1>' > /session/data/page.html",
    )
    .await;
    let seq = app
        .post_message(&id, "open file:///session/data/page.html")
        .await;
    let reply = app.reply_to(&id, seq, 120).await;
    assert_eq!(reply["metadata"]["steps"], 2, "{reply}");
    // The browser shows the page: its window is named after the page's title.
    await_some("the page in the browser", 30, || async {
        let out = app
            .run(
                &token,
                &id,
                "xdotool search --name opened-by-the-mock >/dev/null && echo shown || true",
            )
            .await;
        (out.trim() == "shown").then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn steps_are_bounded_and_usage_is_counted() {
    let looping: Vec<Step> = (0..3)
        .map(|_| Step::tool_use("bash", json!({"command": "true"})))
        .collect();
    let model = ScriptedModel::start(looping).await.with_key(KEY);
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        model.serve_anthropic(c);
        c.agent_max_steps = 2;
    })
    .await;
    let id = app.running_session(json!({})).await;
    let seq = app.post_message(&id, "Loop forever.").await;
    let reply = app.reply_to(&id, seq, 120).await;
    assert!(
        reply["content"]
            .as_str()
            .unwrap()
            .contains("Stopped after 2 steps"),
        "{reply}"
    );
    assert_eq!(reply["metadata"]["steps"], 2);
    assert_eq!(model.requests().len(), 2, "no third model call");
    // Token usage shows in the metrics.
    let metrics = app.text("/metrics").await;
    let calls = metrics
        .lines()
        .find(|l| {
            l.starts_with("raworc_agent_model_calls_total{") && l.contains("provider=\"anthropic\"")
        })
        .unwrap_or_else(|| panic!("no model calls in {metrics}"));
    assert!(calls.ends_with(" 2"), "{calls}");
    let output = metrics
        .lines()
        .find(|l| l.starts_with("raworc_agent_tokens_total{") && l.contains("kind=\"output\""))
        .expect("output tokens");
    let n: f64 = output.rsplit(' ').next().unwrap().parse().unwrap();
    let per_call = reply["metadata"]["usage"]["output_tokens"]
        .as_f64()
        .unwrap();
    assert!(n > 0.0 && n == per_call, "{output} vs {per_call}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_answer_is_said_and_does_not_break_the_conversation() {
    let model = ScriptedModel::start(vec![
        Step::tool_use("bash", json!({"command": "printf 'a\\0b'"})),
        // Models sometimes end a turn after tool results with no content.
        Step::reply(vec![], "end_turn"),
        Step::text("Still here."),
    ])
    .await
    .with_key(KEY);
    let app = model_app(&model, true, 4).await;
    let id = app.running_session(json!({})).await;
    let seq = app.post_message(&id, "Print a NUL.").await;
    let reply = app.reply_to(&id, seq, 120).await;
    assert_eq!(
        reply["content"],
        "(The model ended its turn without a reply.)"
    );
    // The output with its NUL was kept (as U+FFFD in text columns).
    let results: Vec<Value> = app
        .events(&id)
        .await
        .into_iter()
        .filter(|e| e["type"] == "tool_result")
        .collect();
    assert_eq!(results[0]["content"], "a\u{FFFD}b");
    let seq = app.post_message(&id, "Are you there?").await;
    assert_eq!(app.reply_to(&id, seq, 120).await["content"], "Still here.");
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    // No empty assistant turn was sent back.
    let last = &model.requests()[2].body["messages"];
    assert!(last
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["content"].as_array().is_none_or(|c| !c.is_empty())));
    app.stop().await;
}

/// One server-sent event as a client reads it.
#[derive(Debug)]
struct Sent {
    event: String,
    id: Option<String>,
    data: Value,
}

/// Opens a session's event stream at `query` (before the work it is to
/// see); its body.
async fn open_events(
    app: &TestApp,
    id: &str,
    query: &str,
) -> futures::stream::BoxStream<'static, Vec<u8>> {
    let resp = app
        .client
        .get(format!(
            "{}/api/v0/sessions/{id}/events/stream?{query}",
            app.base
        ))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes_stream().map(|c| c.unwrap().to_vec()).boxed()
}

/// Reads server-sent events until a `complete` event (included).
async fn sse_until_complete(mut body: futures::stream::BoxStream<'static, Vec<u8>>) -> Vec<Sent> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(120), body.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on");
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buf.drain(..end + 2).collect();
            let frame = String::from_utf8(frame).unwrap();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::to_owned)
            };
            // Keep-alives are comments without data.
            let Some(data) = field("data: ") else {
                continue;
            };
            let sent = Sent {
                event: field("event: ").unwrap_or_default(),
                id: field("id: "),
                data: serde_json::from_str(&data).unwrap(),
            };
            let done = sent.event == "complete";
            out.push(sent);
            if done {
                return out;
            }
        }
    }
}

/// `(kind, text)` of each block of the last attempt's pieces, in block
/// order, from `(kind, index, attempt, text)` pieces.
fn joined(pieces: &[(String, u64, u64, String)]) -> Vec<(String, String)> {
    let last = pieces.iter().map(|p| p.2).max().unwrap_or(0);
    let mut blocks: std::collections::BTreeMap<u64, (String, String)> = Default::default();
    for (kind, index, _, text) in pieces.iter().filter(|p| p.2 == last) {
        let block = blocks
            .entry(*index)
            .or_insert_with(|| (kind.clone(), String::new()));
        assert_eq!(&block.0, kind, "one kind per block");
        block.1.push_str(text);
    }
    blocks.into_values().collect()
}

/// The model's text (and, from Anthropic, thinking) reaches clients that
/// ask for it piece by piece while it streams: after a first attempt cut
/// by a stream error (its pieces labelled attempt 1), the pieces of the
/// second add up to the stored `thinking`/`text` events and arrive before
/// them, as `delta` events without an `id` (SSE) or `delta` updates
/// without a `seq` (WebSocket). A client that did not ask sees only the
/// stored events, the same ones.
async fn live_deltas(provider: Provider) {
    let thinking = "The user wants a short story; I will write one about a lighthouse keeper \
                    who counts the ships that pass.";
    let story = "Every night the keeper climbed the hundred steps, wound the clock of the \
                 lamp and wrote in her book the names of the ships that passed: the Aurora, \
                 the Plover, the Saint Brendan. In forty years not one of them ran aground.";
    let model = ScriptedModel::start(vec![
        Step::Fault(Fault::StreamError),
        Step::reply(
            vec![
                json!({"type": "thinking", "thinking": thinking}),
                text(story),
            ],
            "end_turn",
        ),
    ])
    .await
    .with_key(KEY);
    let app = provider_app(&model, provider, true, 4).await;
    let token = app.admin_token.clone();
    let id = app.running_session(json!({})).await;
    let after = app.events(&id).await.last().unwrap()["seq"]
        .as_i64()
        .unwrap();
    let live = open_events(&app, &id, &format!("after={after}&deltas=true")).await;
    let plain = open_events(&app, &id, &format!("after={after}")).await;
    let ws_url = format!(
        "ws://{}/ws/{id}/stream?after={after}&deltas=true&token={token}",
        app.addr
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "connected");

    let seq = app.post_message(&id, "Tell me a story.").await;
    let live = sse_until_complete(live).await;
    let plain = sse_until_complete(plain).await;
    let mut updates = Vec::new();
    loop {
        let u = next_json(&mut ws).await;
        let done = u["update_type"] == "complete";
        updates.push(u);
        if done {
            break;
        }
    }
    assert_eq!(app.reply_to(&id, seq, 120).await["content"], story);
    assert!(model.violations().is_empty(), "{:?}", model.violations());

    // What the turn stored: its thinking (Anthropic only) and its text.
    let expected: Vec<(String, String)> = match provider {
        Provider::Anthropic => vec![
            ("thinking".into(), thinking.into()),
            ("text".into(), story.into()),
        ],
        Provider::OpenAi => vec![("text".into(), story.into())],
    };
    let is_turn = |kind: &str| ["thinking", "text", "tool_use"].contains(&kind);

    // SSE with deltas: pieces without ids, all before the stored turn.
    let mut pieces = Vec::new();
    for (n, sent) in live.iter().enumerate() {
        if sent.event != "delta" {
            assert_eq!(
                sent.id.as_deref(),
                Some(sent.data["seq"].to_string().as_str())
            );
            continue;
        }
        assert_eq!(sent.id, None, "a delta has no id: {sent:?}");
        let d = &sent.data;
        assert_eq!(d["session_id"], id.as_str());
        assert!(!d["text"].as_str().unwrap().is_empty());
        assert!(
            live[..n].iter().all(|s| !is_turn(&s.event)),
            "a piece after the stored turn: {live:?}"
        );
        pieces.push((
            d["kind"].as_str().unwrap().to_owned(),
            d["index"].as_u64().unwrap(),
            d["attempt"].as_u64().unwrap(),
            d["text"].as_str().unwrap().to_owned(),
        ));
    }
    // The failed first attempt's piece, then the second attempt's.
    assert_eq!(
        pieces[0],
        ("text".to_owned(), 0, 1, "Let me".to_owned()),
        "{pieces:?}"
    );
    assert_eq!(pieces.last().unwrap().2, 2);
    let second = pieces.iter().filter(|p| p.2 == 2).count();
    assert!(second >= 6, "the turn came in pieces: {pieces:?}");
    assert_eq!(joined(&pieces), expected);
    let stored: Vec<&Sent> = live.iter().filter(|s| s.event != "delta").collect();
    let turn: Vec<(String, String)> = stored
        .iter()
        .filter(|s| s.event == "thinking" || s.event == "text")
        .map(|s| {
            (
                s.event.clone(),
                s.data["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(turn, expected, "the stored turn is what the pieces made");

    // SSE without deltas: no piece, the same stored events, each with its id.
    assert!(plain.iter().all(|s| s.event != "delta"), "{plain:?}");
    assert!(plain
        .iter()
        .all(|s| s.id.as_deref() == Some(s.data["seq"].to_string().as_str())));
    let plain_data: Vec<&Value> = plain.iter().map(|s| &s.data).collect();
    let stored_data: Vec<&Value> = stored.iter().map(|s| &s.data).collect();
    assert_eq!(plain_data, stored_data);
    let listed = app.events(&id).await;
    let listed: Vec<&Value> = listed
        .iter()
        .filter(|e| e["seq"].as_i64().unwrap() > after)
        .take(plain_data.len())
        .collect();
    assert_eq!(plain_data, listed, "the streams carry the stored events");

    // WebSocket with deltas: seed 004's shape, no seq, before the stored turn.
    let mut ws_pieces = Vec::new();
    for (n, u) in updates.iter().enumerate() {
        assert_eq!(u["type"], "agent_update");
        if u["update_type"] != "delta" {
            assert!(u["seq"].is_i64(), "{u}");
            continue;
        }
        assert!(u.get("seq").is_none(), "{u}");
        assert!(u["timestamp"].is_string(), "{u}");
        assert!(
            updates[..n]
                .iter()
                .all(|s| !is_turn(s["update_type"].as_str().unwrap())),
            "a piece after the stored turn: {updates:?}"
        );
        let m = &u["metadata"];
        ws_pieces.push((
            m["kind"].as_str().unwrap().to_owned(),
            m["index"].as_u64().unwrap(),
            m["attempt"].as_u64().unwrap(),
            u["content"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(joined(&ws_pieces), expected);
    let ws_seqs: Vec<i64> = updates.iter().filter_map(|u| u["seq"].as_i64()).collect();
    let sse_seqs: Vec<i64> = stored
        .iter()
        .map(|s| s.data["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(ws_seqs, sse_seqs);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_text_and_thinking_stream_live_to_clients_that_ask() {
    live_deltas(Provider::Anthropic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_text_streams_live_to_clients_that_ask() {
    live_deltas(Provider::OpenAi).await;
}
