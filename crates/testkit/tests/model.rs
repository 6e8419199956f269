//! The scripted model server, driven with plain HTTP as a model client
//! would: both wire formats, streamed and not, every fault and every check.

use std::time::Duration;

use raworc_testkit::model::{Fault, ScriptedModel, Step, DEFAULT_KEY};
use serde_json::{json, Value};

const SECOND: Duration = Duration::from_secs(1);

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

/// A scripted turn with one block of each kind the agent sees.
fn rich_turn() -> Vec<Value> {
    vec![
        json!({"type": "thinking", "thinking": "The user wants the browser open.", "signature": "EqQBCkYI"}),
        text("Clicking the Firefox icon."),
        json!({"type": "tool_use", "name": "computer", "input": {"action": "left_click", "coordinate": [512, 740]}}),
    ]
}

/// A valid first request: one user message.
fn anthropic_body() -> Value {
    json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Open the browser."}],
    })
}

fn anthropic(model: &ScriptedModel, body: &Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{}/v1/messages", model.base_url()))
        .header("x-api-key", DEFAULT_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

fn openai(model: &ScriptedModel, body: &Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", model.base_url()))
        .bearer_auth(DEFAULT_KEY)
        .json(body)
}

async fn json_reply(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("whole body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (status, headers, body)
}

/// Reads a body until it ends or breaks: the bytes read and whether it broke.
async fn read_body(mut resp: reqwest::Response) -> (String, bool) {
    let mut bytes = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => return (String::from_utf8(bytes).expect("utf-8"), false),
            Err(_) => return (String::from_utf8(bytes).expect("utf-8"), true),
        }
    }
}

/// SSE events as (event name, data): blank-line separated, `event:` and
/// `data:` lines, as a client parses them.
fn sse_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            let mut name = String::new();
            let mut data = Vec::new();
            for line in event.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.trim_start());
                }
            }
            (name, data.join("\n"))
        })
        .collect()
}

fn parse(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"))
}

/// Folds an Anthropic event stream into the message it describes, checking
/// the event order on the way.
fn reassemble_anthropic(events: &[(String, String)]) -> Value {
    let mut message = Value::Null;
    let mut partial_json: Vec<String> = Vec::new();
    let mut open: Option<usize> = None;
    for (name, data) in events {
        let data = parse(data);
        assert_eq!(data["type"], name.as_str(), "event name matches data.type");
        match name.as_str() {
            "message_start" => {
                assert!(message.is_null(), "one message_start");
                message = data["message"].clone();
                assert_eq!(message["content"], json!([]));
                assert!(message["stop_reason"].is_null());
                assert!(message["usage"]["input_tokens"].as_u64().unwrap() > 0);
            }
            "content_block_start" => {
                let index = data["index"].as_u64().unwrap() as usize;
                assert_eq!(open, None, "blocks do not overlap");
                assert_eq!(index, message["content"].as_array().unwrap().len());
                message["content"]
                    .as_array_mut()
                    .unwrap()
                    .push(data["content_block"].clone());
                partial_json.push(String::new());
                open = Some(index);
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(index));
                let block = &mut message["content"][index];
                let delta = &data["delta"];
                match delta["type"].as_str().unwrap() {
                    "text_delta" => {
                        let t = block["text"].as_str().unwrap().to_string();
                        block["text"] = json!(t + delta["text"].as_str().unwrap());
                    }
                    "thinking_delta" => {
                        let t = block["thinking"].as_str().unwrap().to_string();
                        block["thinking"] = json!(t + delta["thinking"].as_str().unwrap());
                    }
                    "signature_delta" => block["signature"] = delta["signature"].clone(),
                    "input_json_delta" => {
                        partial_json[index].push_str(delta["partial_json"].as_str().unwrap())
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let index = data["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(index));
                open = None;
                let block = &mut message["content"][index];
                if block["type"] == "tool_use" {
                    let json = &partial_json[index];
                    block["input"] = if json.is_empty() {
                        json!({})
                    } else {
                        parse(json)
                    };
                }
            }
            "message_delta" => {
                message["stop_reason"] = data["delta"]["stop_reason"].clone();
                message["usage"]["output_tokens"] = data["usage"]["output_tokens"].clone();
            }
            "message_stop" => assert_eq!(open, None),
            "ping" => {}
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(events.last().unwrap().0, "message_stop");
    message
}

#[tokio::test]
async fn anthropic_turn_as_one_message() {
    let model = ScriptedModel::start(vec![Step::reply(rich_turn(), "tool_use")]).await;
    let (status, headers, body) = json_reply(
        anthropic(&model, &anthropic_body()).header("anthropic-beta", "interleaved-thinking"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers["request-id"].to_str().unwrap().starts_with("req_"));
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-sonnet-4-6");
    assert_eq!(body["stop_reason"], "tool_use");
    assert!(body["stop_sequence"].is_null());
    assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(body["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let mut expected = rich_turn();
    expected[2]["id"] = json!("toolu_1");
    assert_eq!(body["content"], json!(expected));

    let requests = model.wait_requests(1, SECOND).await;
    assert_eq!(requests[0].path, "/v1/messages");
    assert_eq!(requests[0].step, Some(0));
    assert_eq!(requests[0].status, 200);
    assert_eq!(requests[0].header("X-Api-Key"), Some(DEFAULT_KEY));
    assert_eq!(
        requests[0].header("anthropic-beta"),
        Some("interleaved-thinking")
    );
    assert_eq!(requests[0].body, anthropic_body());
    assert_eq!(model.remaining(), 0);
    model.assert_no_violations();
}

#[tokio::test]
async fn anthropic_turn_streamed() {
    let mut turn = rich_turn();
    turn.push(json!({"type": "redacted_thinking", "data": "opaque"}));
    turn.push(json!({"type": "tool_use", "id": "toolu_given", "name": "bash", "input": {}}));
    let model = ScriptedModel::start(vec![Step::reply(turn.clone(), "tool_use")]).await;
    let mut body = anthropic_body();
    body["stream"] = json!(true);
    // The Python SDK's beta surface adds a query string.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages?beta=true", model.base_url()))
        .header("x-api-key", DEFAULT_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("request-id"));
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (text, broke) = read_body(resp).await;
    assert!(!broke);
    let events = sse_events(&text);

    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "message_start");
    assert!(names.contains(&"ping"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let deltas = |kind: &str| {
        events
            .iter()
            .filter(|(_, d)| parse(d)["delta"]["type"] == kind)
            .map(|(_, d)| parse(d)["delta"].clone())
            .collect::<Vec<_>>()
    };
    assert!(deltas("text_delta").len() >= 2, "text arrives in pieces");
    assert!(deltas("thinking_delta").len() >= 2);
    let json_pieces = deltas("input_json_delta");
    assert!(json_pieces.len() >= 3, "input arrives in pieces");
    assert_eq!(json_pieces[0]["partial_json"], "");
    // The signature comes last in its block, just before the stop.
    let signature_at = events
        .iter()
        .position(|(_, d)| parse(d)["delta"]["type"] == "signature_delta")
        .unwrap();
    assert_eq!(events[signature_at + 1].0, "content_block_stop");

    let message = reassemble_anthropic(&events);
    let mut expected = turn;
    expected[2]["id"] = json!("toolu_1");
    assert_eq!(message["content"], json!(expected));
    assert_eq!(message["stop_reason"], "tool_use");
    assert!(message["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let requests = model.requests();
    assert_eq!(requests[0].path, "/v1/messages");
    assert_eq!(requests[0].query.as_deref(), Some("beta=true"));
    model.assert_no_violations();
}

#[tokio::test]
async fn a_whole_conversation_passes_the_checks() {
    let model = ScriptedModel::start(vec![
        Step::tool_use("computer", json!({"action": "screenshot"})),
        Step::text("Done."),
    ])
    .await
    .with_key("sk-other");
    let tools = json!([
        {"type": "computer_20250124", "name": "computer", "display_width_px": 1280, "display_height_px": 800,
         "cache_control": {"type": "ephemeral"}},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"name": "note", "description": "Keeps a note.", "input_schema": {"type": "object", "properties": {}}},
    ]);
    let system = json!([{"type": "text", "text": "You drive a computer.", "cache_control": {"type": "ephemeral"}}]);
    let mut body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": system,
        "tools": tools,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Look.", "cache_control": {"type": "ephemeral"}}]}],
    });
    let send = |body: &Value| {
        reqwest::Client::new()
            .post(format!("{}/v1/messages", model.base_url()))
            .header("x-api-key", "sk-other")
            .header("anthropic-version", "2023-06-01")
            .header(
                "anthropic-beta",
                "prompt-caching-2024-07-31, computer-use-2025-01-24",
            )
            .json(body)
    };
    let (status, _, first) = json_reply(send(&body)).await;
    assert_eq!(status, 200, "{first}");
    let id = first["content"][0]["id"].as_str().unwrap().to_string();

    let messages = body["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": first["content"]}));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": id, "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
             "cache_control": {"type": "ephemeral"}},
        ]},
        {"type": "text", "text": "Go on."},
    ]}));
    let (status, _, second) = json_reply(send(&body)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["content"], json!([text("Done.")]));
    assert_eq!(second["stop_reason"], "end_turn");

    let requests = model.wait_requests(2, SECOND).await;
    assert_eq!(
        requests.iter().map(|r| r.step).collect::<Vec<_>>(),
        [Some(0), Some(1)]
    );
    model.assert_no_violations();
}

#[tokio::test]
async fn http_faults_carry_the_error_bodies_clients_expect() {
    let model = ScriptedModel::start(vec![
        Step::Fault(Fault::RateLimited { retry_after_s: 1.5 }),
        Step::Fault(Fault::Overloaded),
        Step::Fault(Fault::ServerError),
        Step::Fault(Fault::Status {
            status: 401,
            error_type: "authentication_error".into(),
            message: "invalid x-api-key".into(),
        }),
    ])
    .await;
    let expected = [
        (429, "rate_limit_error"),
        (529, "overloaded_error"),
        (500, "api_error"),
        (401, "authentication_error"),
    ];
    for (i, (status, kind)) in expected.into_iter().enumerate() {
        let (got, headers, body) = json_reply(anthropic(&model, &anthropic_body())).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], kind);
        assert!(body["error"]["message"].is_string());
        assert_eq!(body["request_id"], headers["request-id"].to_str().unwrap());
        if status == 429 {
            assert_eq!(headers["retry-after"], "1.5");
            assert_eq!(headers["retry-after-ms"], "1500");
        }
        assert_eq!(model.remaining(), 3 - i, "each fault uses its step");
    }
    model.assert_no_violations();
}

#[tokio::test]
async fn cut_stream_breaks_the_connection() {
    let model = ScriptedModel::start(vec![
        Step::Fault(Fault::CutStream),
        Step::Fault(Fault::CutStream),
    ])
    .await;
    let mut body = anthropic_body();
    body["stream"] = json!(true);
    let resp = anthropic(&model, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (text, broke) = read_body(resp).await;
    assert!(broke, "the stream ends without its end: {text}");
    let events = sse_events(&text);
    assert!(events.iter().any(|(n, _)| n == "content_block_delta"));
    assert!(!events.iter().any(|(n, _)| n == "message_stop"));

    let resp = anthropic(&model, &anthropic_body()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (text, broke) = read_body(resp).await;
    assert!(broke);
    assert!(text.starts_with("{\"") && text.len() > 20, "{text}");
    assert!(serde_json::from_str::<Value>(&text).is_err());
    model.assert_no_violations();
}

#[tokio::test]
async fn malformed_json_is_served_with_a_200() {
    let model = ScriptedModel::start(vec![
        Step::Fault(Fault::MalformedJson),
        Step::Fault(Fault::MalformedJson),
    ])
    .await;
    let resp = anthropic(&model, &anthropic_body()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (text, broke) = read_body(resp).await;
    assert!(!broke);
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let mut body = anthropic_body();
    body["stream"] = json!(true);
    let resp = anthropic(&model, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (text, broke) = read_body(resp).await;
    assert!(!broke);
    let broken: Vec<_> = sse_events(&text)
        .into_iter()
        .filter(|(_, d)| serde_json::from_str::<Value>(d).is_err())
        .collect();
    assert_eq!(broken.len(), 1, "one broken data line in {text}");
}

#[tokio::test]
async fn stream_error_arrives_after_a_200() {
    let model = ScriptedModel::start(vec![
        Step::Fault(Fault::StreamError),
        Step::Fault(Fault::StreamError),
    ])
    .await;
    let mut body = anthropic_body();
    body["stream"] = json!(true);
    let resp = anthropic(&model, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (text, broke) = read_body(resp).await;
    assert!(!broke);
    let events = sse_events(&text);
    assert_eq!(events[0].0, "message_start");
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(parse(data)["error"]["type"], "overloaded_error");

    // Without a stream the same fault is the 529 it would have been.
    let (status, _, body) = json_reply(anthropic(&model, &anthropic_body())).await;
    assert_eq!(status, 529);
    assert_eq!(body["error"]["type"], "overloaded_error");
}

/// Two bash calls and a text block the cut drops.
fn two_commands() -> Step {
    Step::reply(
        vec![
            text("Two commands."),
            json!({"type": "tool_use", "name": "bash", "input": {"command": "ls"}}),
            json!({"type": "tool_use", "name": "bash", "input": {"command": "echo ran > /session/data/cut"}}),
            text("never sent"),
        ],
        "tool_use",
    )
}

const CUT_INPUT: &str = r#"{"command":"echo ran > /session/data/cut"}"#;

/// A strict prefix of the cut call's input: not JSON.
fn assert_cut(json: &str) {
    assert!(
        !json.is_empty() && json.len() < CUT_INPUT.len() && CUT_INPUT.starts_with(json),
        "{json}"
    );
    assert!(serde_json::from_str::<Value>(json).is_err(), "{json}");
}

#[tokio::test]
async fn cut_at_max_tokens_stops_the_last_tool_call_half_way() {
    let cut = || Step::Fault(Fault::CutAtMaxTokens);
    let model = ScriptedModel::start(vec![
        cut(),
        two_commands(),
        cut(),
        two_commands(),
        cut(),
        two_commands(),
        cut(),
        two_commands(),
        Step::text("ok"),
    ])
    .await;

    // Streamed: the last call's input stops half-way, its block stops, max_tokens.
    let mut body = anthropic_body();
    body["stream"] = json!(true);
    let resp = anthropic(&model, &body).send().await.unwrap();
    let (text, broke) = read_body(resp).await;
    assert!(!broke);
    let events = sse_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let starts: Vec<Value> = events
        .iter()
        .map(|(_, d)| parse(d))
        .filter(|d| d["type"] == "content_block_start")
        .map(|d| d["content_block"].clone())
        .collect();
    assert_eq!(starts.len(), 3, "the blocks after the cut call are dropped");
    assert_eq!(starts[2]["id"], "toolu_2");
    let input_of = |index: u64| {
        events
            .iter()
            .map(|(_, d)| parse(d))
            .filter(|d| d["index"] == index && d["delta"]["type"] == "input_json_delta")
            .map(|d| d["delta"]["partial_json"].as_str().unwrap().to_string())
            .collect::<String>()
    };
    assert_eq!(parse(&input_of(1)), json!({"command": "ls"}));
    assert_cut(&input_of(2));
    let delta = parse(&events[events.len() - 2].1);
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");

    // Not streamed: the cut call has an empty input.
    let (status, _, body) = json_reply(anthropic(&model, &anthropic_body())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stop_reason"], "max_tokens");
    let content = body["content"].as_array().unwrap();
    assert_eq!(content.len(), 3);
    assert_eq!(content[1]["input"], json!({"command": "ls"}));
    assert_eq!(content[2]["input"], json!({}));
    assert_eq!(content[2]["id"], "toolu_4");

    // OpenAI, one completion: the last call's arguments stop half-way, "length".
    let (status, _, body) = json_reply(openai(&model, &openai_body(false))).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "length");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["arguments"], r#"{"command":"ls"}"#);
    assert_cut(calls[1]["function"]["arguments"].as_str().unwrap());

    // OpenAI, streamed: the same.
    let resp = openai(&model, &openai_body(true)).send().await.unwrap();
    let (text, broke) = read_body(resp).await;
    assert!(!broke);
    let chunks: Vec<Value> = sse_events(&text)
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| parse(d))
        .collect();
    let arguments: String = chunks
        .iter()
        .flat_map(|c| {
            c["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c["index"] == 1)
        .map(|c| {
            c["function"]["arguments"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_cut(&arguments);
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "length"));

    // Each cut used its step and the next.
    let steps: Vec<_> = model.requests().iter().map(|r| r.step).collect();
    assert_eq!(steps, [Some(0), Some(2), Some(4), Some(6)]);
    assert_eq!(model.remaining(), 1);
    model.assert_no_violations();

    // A result for a cut call that is not an error: the call cannot have run.
    let conversation = |is_error: bool| {
        json!({
            "model": "m",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_3", "name": "bash", "input": {"command": "ls"}},
                    {"type": "tool_use", "id": "toolu_4", "name": "bash", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_3", "content": "x"},
                    {"type": "tool_result", "tool_use_id": "toolu_4", "content": "cut", "is_error": is_error},
                ]},
            ],
        })
    };
    let (status, _, body) = json_reply(anthropic(&model, &conversation(false))).await;
    assert_eq!(status, 400, "{body}");
    let violations = model.violations();
    assert_eq!(violations.len(), 1);
    assert!(violations[0].contains("toolu_4"), "{violations:?}");
    let (status, _, body) = json_reply(anthropic(&model, &conversation(true))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "ok");
}

#[tokio::test]
#[should_panic(expected = "Fault::CutAtMaxTokens must be followed")]
async fn cut_at_max_tokens_needs_a_tool_call_to_cut() {
    ScriptedModel::start(vec![Step::Fault(Fault::CutAtMaxTokens), Step::text("none")]).await;
}

#[tokio::test]
async fn an_exhausted_script_is_a_500_and_a_violation() {
    let model = ScriptedModel::start(vec![Step::text("only one")]).await;
    let (status, _, _) = json_reply(anthropic(&model, &anthropic_body())).await;
    assert_eq!(status, 200);
    let (status, _, body) = json_reply(anthropic(&model, &anthropic_body())).await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["type"], "api_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exhausted"));
    let violations = model.violations();
    assert_eq!(violations.len(), 1);
    assert!(violations[0].contains("exhausted"), "{violations:?}");
    assert_eq!(model.requests()[1].step, None);

    // A step pushed while running is played next.
    model.push(Step::text("another"));
    let (status, _, body) = json_reply(anthropic(&model, &anthropic_body())).await;
    assert_eq!(status, 200);
    assert_eq!(body["content"][0]["text"], "another");
    assert_eq!(model.requests()[2].step, Some(1));
}

/// A request with one thing wrong, what the violation must mention, and the
/// status it is answered with.
struct Case {
    name: &'static str,
    request: reqwest::RequestBuilder,
    mentions: &'static str,
    status: u16,
}

/// A conversation whose assistant turn called `toolu_a`.
fn after_tool_use(user_content: Value) -> Value {
    json!({
        "model": "m",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [
                text("Looking."),
                {"type": "tool_use", "id": "toolu_a", "name": "computer", "input": {"action": "screenshot"}},
            ]},
            {"role": "user", "content": user_content},
        ],
    })
}

fn with_tools(tools: Value) -> Value {
    let mut body = anthropic_body();
    body["tools"] = tools;
    body
}

fn anthropic_cases(model: &ScriptedModel) -> Vec<Case> {
    let url = format!("{}/v1/messages", model.base_url());
    let bare = || reqwest::Client::new().post(&url);
    let send = |body: Value| anthropic(model, &body);
    let computer = |kind: &str| json!([{"type": kind, "name": "computer", "display_width_px": 1024, "display_height_px": 768}]);
    let result = |id: &str| json!({"type": "tool_result", "tool_use_id": id, "content": "ok"});
    let mut five_breakpoints = with_tools(json!([
        {"name": "a", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
        {"name": "b", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
    ]));
    five_breakpoints["system"] =
        json!([{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]);
    five_breakpoints["messages"] = json!([{"role": "user", "content": [
        {"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}},
    ]}]);
    let mut no_model = anthropic_body();
    no_model.as_object_mut().unwrap().remove("model");
    let mut no_max_tokens = anthropic_body();
    no_max_tokens.as_object_mut().unwrap().remove("max_tokens");
    let mut no_messages = anthropic_body();
    no_messages["messages"] = json!([]);
    let mut assistant_first = anthropic_body();
    assistant_first["messages"] = json!([{"role": "assistant", "content": "hi"}]);
    let mut user_twice = anthropic_body();
    user_twice["messages"] = json!([
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
    ]);
    let mut orphan_result = anthropic_body();
    orphan_result["messages"] = json!([{"role": "user", "content": [result("toolu_x")]}]);
    let mut ends_with_tool_use = after_tool_use(json!("x"));
    ends_with_tool_use["messages"].as_array_mut().unwrap().pop();

    vec![
        Case {
            name: "no x-api-key",
            request: bare()
                .header("anthropic-version", "2023-06-01")
                .json(&anthropic_body()),
            mentions: "x-api-key",
            status: 401,
        },
        Case {
            name: "wrong x-api-key",
            request: bare()
                .header("x-api-key", "sk-wrong")
                .header("anthropic-version", "2023-06-01")
                .json(&anthropic_body()),
            mentions: "x-api-key",
            status: 401,
        },
        Case {
            name: "no anthropic-version",
            request: bare()
                .header("x-api-key", DEFAULT_KEY)
                .json(&anthropic_body()),
            mentions: "anthropic-version",
            status: 400,
        },
        Case {
            name: "wrong anthropic-version",
            request: bare()
                .header("x-api-key", DEFAULT_KEY)
                .header("anthropic-version", "2024-01-01")
                .json(&anthropic_body()),
            mentions: "anthropic-version",
            status: 400,
        },
        Case {
            name: "no model",
            request: send(no_model),
            mentions: "model",
            status: 400,
        },
        Case {
            name: "no max_tokens",
            request: send(no_max_tokens),
            mentions: "max_tokens",
            status: 400,
        },
        Case {
            name: "no messages",
            request: send(no_messages),
            mentions: "messages",
            status: 400,
        },
        Case {
            name: "assistant first",
            request: send(assistant_first),
            mentions: "first message",
            status: 400,
        },
        Case {
            name: "roles do not alternate",
            request: send(user_twice),
            mentions: "alternate",
            status: 400,
        },
        Case {
            name: "tool_use not answered",
            request: send(after_tool_use(json!([text("what now?")]))),
            mentions: "toolu_a",
            status: 400,
        },
        Case {
            name: "tool_use answered by a string",
            request: send(after_tool_use(json!("what now?"))),
            mentions: "without `tool_result`",
            status: 400,
        },
        Case {
            name: "conversation ends on a tool_use",
            request: send(ends_with_tool_use),
            mentions: "without `tool_result`",
            status: 400,
        },
        Case {
            name: "tool_result after text",
            request: send(after_tool_use(json!([text("here"), result("toolu_a")]))),
            mentions: "before any other content",
            status: 400,
        },
        Case {
            name: "tool_result for another id",
            request: send(after_tool_use(json!([result("toolu_a"), result("toolu_b")]))),
            mentions: "toolu_b",
            status: 400,
        },
        Case {
            name: "tool_result with no tool_use",
            request: send(orphan_result),
            mentions: "toolu_x",
            status: 400,
        },
        Case {
            name: "computer_20250124 without its beta",
            request: send(with_tools(computer("computer_20250124"))),
            mentions: "computer-use-2025-01-24",
            status: 400,
        },
        Case {
            name: "computer_20251124 with the older beta",
            request: send(with_tools(computer("computer_20251124")))
                .header("anthropic-beta", "computer-use-2025-01-24"),
            mentions: "computer-use-2025-11-24",
            status: 400,
        },
        Case {
            name: "computer tool without a display size",
            request: send(with_tools(json!([{"type": "computer_20251124", "name": "computer", "display_width_px": 1024}])))
                .header("anthropic-beta", "computer-use-2025-11-24"),
            mentions: "display_height_px",
            status: 400,
        },
        Case {
            name: "five cache breakpoints",
            request: send(five_breakpoints),
            mentions: "cache_control",
            status: 400,
        },
    ]
}

fn openai_cases(model: &ScriptedModel) -> Vec<Case> {
    let called = |rest: Value| {
        let mut messages = vec![
            json!({"role": "system", "content": "You drive a computer."}),
            json!({"role": "user", "content": "go"}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "computer", "arguments": "{\"action\":\"screenshot\"}"}},
            ]}),
        ];
        messages.extend(rest.as_array().unwrap().iter().cloned());
        json!({"model": "m", "messages": messages})
    };
    let mut bad_arguments = called(json!([
        {"role": "tool", "tool_call_id": "call_a", "content": "ok"},
    ]));
    bad_arguments["messages"][2]["tool_calls"][0]["function"]["arguments"] = json!("{\"action\": ");
    vec![
        Case {
            name: "wrong bearer",
            request: reqwest::Client::new()
                .post(format!("{}/v1/chat/completions", model.base_url()))
                .bearer_auth("sk-wrong")
                .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})),
            mentions: "API key",
            status: 401,
        },
        Case {
            name: "tool call not answered",
            request: openai(model, &called(json!([{"role": "user", "content": "and?"}]))),
            mentions: "call_a",
            status: 400,
        },
        Case {
            name: "tool message for another id",
            request: openai(
                model,
                &called(json!([{"role": "tool", "tool_call_id": "call_b", "content": "ok"}])),
            ),
            mentions: "call_b",
            status: 400,
        },
        Case {
            name: "arguments not JSON",
            request: openai(model, &bad_arguments),
            mentions: "arguments",
            status: 400,
        },
    ]
}

async fn assert_each_case_is_a_violation(model: &ScriptedModel, cases: Vec<Case>, openai: bool) {
    for (i, case) in cases.into_iter().enumerate() {
        let (status, _, body) = json_reply(case.request).await;
        assert_eq!(status, case.status, "{}: {body}", case.name);
        let message = if openai {
            assert_eq!(
                body["error"]["type"], "invalid_request_error",
                "{}",
                case.name
            );
            assert!(body["error"].get("param").is_some() && body["error"].get("code").is_some());
            body["error"]["message"].as_str().unwrap().to_string()
        } else {
            assert_eq!(body["type"], "error", "{}", case.name);
            let expected = if case.status == 401 {
                "authentication_error"
            } else {
                "invalid_request_error"
            };
            assert_eq!(body["error"]["type"], expected, "{}", case.name);
            body["error"]["message"].as_str().unwrap().to_string()
        };
        assert!(
            message.contains(case.mentions),
            "{}: {message:?} should mention {:?}",
            case.name,
            case.mentions
        );
        let violations = model.violations();
        assert_eq!(violations.len(), i + 1, "{}: {violations:?}", case.name);
        assert!(violations[i].ends_with(&message), "{}", case.name);
        assert_eq!(model.remaining(), 1, "{}: no step used", case.name);
        assert_eq!(model.requests()[i].step, None);
    }
}

#[tokio::test]
async fn each_anthropic_check_rejects_its_violation() {
    let model = ScriptedModel::start(vec![Step::text("never played")]).await;
    let cases = anthropic_cases(&model);
    assert_each_case_is_a_violation(&model, cases, false).await;
    // The step is still there for a good request.
    let (status, _, _) = json_reply(anthropic(&model, &anthropic_body())).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn each_openai_check_rejects_its_violation() {
    let model = ScriptedModel::start(vec![Step::text("never played")]).await;
    let cases = openai_cases(&model);
    assert_each_case_is_a_violation(&model, cases, true).await;
}

#[tokio::test]
async fn garbage_is_answered_not_crashed_on() {
    let model = ScriptedModel::start(vec![Step::text("still here")]).await;
    let raw = |path: &str, body: &'static str| {
        reqwest::Client::new()
            .post(format!("{}{path}", model.base_url()))
            .header("x-api-key", DEFAULT_KEY)
            .header("anthropic-version", "2023-06-01")
            .bearer_auth(DEFAULT_KEY)
            .header("content-type", "application/json")
            .body(body)
    };
    let garbage = [
        "not json",
        "[1, 2]",
        "{\"model\": 5, \"max_tokens\": \"x\", \"messages\": 7}",
        "{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [7, null]}",
        "{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [{\"role\": \"user\", \"content\": [1]}]}",
        "{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": {}}",
        "{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": [{\"name\": \"t\", \"type\": 3}]}",
    ];
    for path in ["/v1/messages", "/v1/chat/completions"] {
        for body in garbage {
            let resp = raw(path, body).send().await.unwrap();
            assert_eq!(resp.status(), 400, "{path} {body}");
        }
    }
    let anthropic_garbage = [
        "{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"system\": [5]}",
        "{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": [{\"type\": \"tool_use\", \"id\": 1}]}]}",
    ];
    for body in anthropic_garbage {
        let resp = raw("/v1/messages", body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
    }
    let openai_garbage = [
        "{\"model\": \"m\", \"messages\": [{\"role\": \"assistant\", \"tool_calls\": 5}]}",
        "{\"model\": \"m\", \"messages\": [{\"role\": \"assistant\", \"tool_calls\": [5]}]}",
        "{\"model\": \"m\", \"messages\": [{\"role\": \"tool\"}]}",
    ];
    for body in openai_garbage {
        let resp = raw("/v1/chat/completions", body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
    }
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/models", model.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        model.violations().len(),
        2 * garbage.len() + anthropic_garbage.len() + openai_garbage.len() + 1
    );
    assert_eq!(model.requests()[0].body, json!("not json"));

    let (status, _, body) = json_reply(anthropic(&model, &anthropic_body())).await;
    assert_eq!(status, 200, "{body}");
}

fn openai_body(stream: bool) -> Value {
    json!({
        "model": "qwen2.5-vl",
        "messages": [
            {"role": "system", "content": "You drive a computer."},
            {"role": "user", "content": "Open the browser."},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "computer", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_0", "content": "screenshot attached"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        ],
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

fn two_calls() -> Step {
    Step::reply(
        vec![
            json!({"type": "thinking", "thinking": "hidden", "signature": "s"}),
            text("Clicking twice."),
            json!({"type": "tool_use", "name": "computer", "input": {"action": "left_click", "coordinate": [1, 2]}}),
            json!({"type": "tool_use", "name": "computer", "input": {"action": "type", "text": "héllo"}}),
        ],
        "tool_use",
    )
}

#[tokio::test]
async fn openai_turn_as_one_completion() {
    let model = ScriptedModel::start(vec![
        two_calls(),
        Step::reply(vec![text("cut")], "max_tokens"),
    ])
    .await;
    let (status, headers, body) = json_reply(openai(&model, &openai_body(false))).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "qwen2.5-vl");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Clicking twice.");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "call_1");
    assert_eq!(calls[1]["id"], "call_2");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[1]["function"]["name"], "computer");
    let arguments: Value =
        serde_json::from_str(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"action": "type", "text": "héllo"}));
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    let (_, _, body) = json_reply(openai(&model, &openai_body(false))).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
    model.assert_no_violations();
}

#[tokio::test]
async fn openai_turn_streamed() {
    let model = ScriptedModel::start(vec![two_calls()]).await;
    let resp = openai(&model, &openai_body(true)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (text, broke) = read_body(resp).await;
    assert!(!broke);
    let events = sse_events(&text);
    assert!(
        events.iter().all(|(name, _)| name.is_empty()),
        "data lines only"
    );
    assert_eq!(events.last().unwrap().1, "[DONE]");

    let mut content = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    for (_, data) in &events[..events.len() - 1] {
        let chunk = parse(data);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(u) = chunk.get("usage") {
            assert_eq!(chunk["choices"], json!([]));
            usage = u.clone();
            continue;
        }
        let choice = &chunk["choices"][0];
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
        let delta = &choice["delta"];
        content.push_str(delta["content"].as_str().unwrap_or(""));
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                // The first fragment of a call names it.
                calls.push((
                    call["id"].as_str().unwrap().to_string(),
                    call["function"]["name"].as_str().unwrap().to_string(),
                    String::new(),
                ));
            }
            calls[index]
                .2
                .push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(content, "Clicking twice.");
    assert_eq!(finish, "tool_calls");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, "call_1");
    assert_eq!(calls[0].1, "computer");
    assert_eq!(
        parse(&calls[0].2),
        json!({"action": "left_click", "coordinate": [1, 2]})
    );
    assert_eq!(
        parse(&calls[1].2),
        json!({"action": "type", "text": "héllo"})
    );
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);
    model.assert_no_violations();
}

#[tokio::test]
async fn openai_faults() {
    let model = ScriptedModel::start(vec![
        Step::Fault(Fault::RateLimited { retry_after_s: 2.0 }),
        Step::Fault(Fault::StreamError),
        Step::Fault(Fault::CutStream),
        Step::Fault(Fault::MalformedJson),
    ])
    .await;
    let (status, headers, body) = json_reply(openai(&model, &openai_body(false))).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["retry-after-ms"], "2000");
    for field in ["message", "type", "param", "code"] {
        assert!(body["error"].get(field).is_some(), "{field} in {body}");
    }

    let resp = openai(&model, &openai_body(true)).send().await.unwrap();
    let (text, _) = read_body(resp).await;
    let events = sse_events(&text);
    assert!(parse(&events.last().unwrap().1)["error"]["message"].is_string());

    let resp = openai(&model, &openai_body(true)).send().await.unwrap();
    let (text, broke) = read_body(resp).await;
    assert!(broke);
    assert!(!text.contains("[DONE]"));

    let resp = openai(&model, &openai_body(false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (text, _) = read_body(resp).await;
    assert!(serde_json::from_str::<Value>(&text).is_err());
    model.assert_no_violations();
}

#[tokio::test]
async fn wait_requests_wakes_on_arrival() {
    let model = ScriptedModel::start(vec![Step::text("hi")]).await;
    let url = format!("{}/v1/messages", model.base_url());
    let client = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("x-api-key", DEFAULT_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&anthropic_body())
            .send()
            .await
            .unwrap()
            .status()
    });
    let requests = model.wait_requests(1, Duration::from_secs(10)).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(client.await.unwrap(), 200);
}

#[tokio::test]
#[should_panic(expected = "0 of 1 model requests arrived")]
async fn wait_requests_times_out_loudly() {
    let model = ScriptedModel::start(vec![]).await;
    model.wait_requests(1, Duration::from_millis(50)).await;
}
