//! Our tools side by side with Anthropic's reference tools (the
//! `computer-use-demo` of anthropics/claude-quickstarts,
//! `computer_use_demo/tools/`): one action script — editor, bash and
//! computer calls — played twice on fresh computers of the same image:
//!
//! 1. through our agent: a scripted model asks for each call as a
//!    `tool_use`, and what the agent answers (its `tool_result`) is read
//!    from the model's next request;
//! 2. through the reference: its `tools/` package is uploaded into the
//!    computer and a small driver (ours, below) runs each call with the
//!    reference's own `ToolCollection`, answering with the `ToolResult`'s
//!    fields, which are shaped into a `tool_result` as the reference's loop
//!    shapes them.
//!
//! Editor and bash results must be equal to the letter. For computer
//! actions the screen after each action must match, taken the same way on
//! both sides (our screenshot API, once the call has answered; the panel's
//! clock and a blinking caret aside), and so must the screenshot each side
//! hands the model; `cursor_position` texts must be equal. Deliberate
//! differences are accepted one by one (`DELIBERATE`), each with the
//! reason, and only where a step shows exactly that difference.
//!
//! The reference is not part of this repository and CI cannot fetch it, so
//! the test is ignored and runs only when `RAWORC_REFERENCE_TOOLS` names a
//! directory holding the reference's `tools/` package (a checkout's
//! `computer-use-demo/computer_use_demo/tools`):
//!
//! ```text
//! RAWORC_REFERENCE_TOOLS=<dir> RAWORC_REFERENCE_REPORT=<file.md> \
//!   cargo test -p raworc --test reference -- --ignored --nocapture
//! ```
//!
//! `RAWORC_REFERENCE_REPORT` receives a markdown table of every step;
//! `RAWORC_REFERENCE_SHOTS` (a directory), if set, receives the screenshots
//! of both runs. Needs root, like every test with computers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use raworc_testkit::computer::{await_some, Image};
use raworc_testkit::model::{ScriptedModel, Step};
use raworc_testkit::{Backend, StatusCode, TestApp};
use serde_json::{json, Value};

const RAWORC: &str = env!("CARGO_BIN_EXE_raworc");
const KEY: &str = "sk-ant-test-key-reference-7a3e";
const EDITOR: &str = "str_replace_based_edit_tool";

/// Where the reference's package, the driver and its mailbox go inside the
/// reference's computer (nothing in the script looks there).
const REF_ROOT: &str = "/tmp/reference-tools";
/// The title of the terminal the script opens, to wait for its window.
const XTERM_TITLE: &str = "reference-comparison";

/// Pixels whose channels differ by more than this count as different.
const PIXEL_TOLERANCE: u8 = 16;
/// Two screens show the same thing when no pixel differs but in an area
/// this small (width, height): a text caret that blinks (the browser's is
/// 1x17). One character of the terminal (6x13) is already too much.
const CARET: (u32, u32) = (3, 24);
/// The panel's clock, bottom right: its minute may turn between the runs.
const CLOCK: Area = (860, 736, 164, 32);
/// The area the pointer's image covers, from its hot spot (the arrow and
/// the text cursor both fit): x, y offsets and size.
const POINTER: (i64, i64, u32, u32) = (-8, -10, 24, 32);
/// At most this many pixels at the pointer may differ when both
/// screenshots show it: its semi-transparent edge (see `pointer-blend`).
/// A missing pointer differs in well over a hundred.
const POINTER_EDGE: usize = 40;
/// The terminal window the script opens (frame included).
const XTERM_WINDOW: Area = (100, 100, 486, 341);
/// Text typed into the terminal, then echoed into a file.
const ASCII_LINE: &str = "ASCII: The quick brown fox, 0123456789 -_=+[]{};:,./?~@#%^&*()";
/// Typed last: the reference's `xdotool type` loses some of these
/// characters (see [`DELIBERATE`]).
const NON_ASCII_LINE: &str = "non-ASCII: héllo wörld, ünïcödé ß € – ✓ ẞ";

/// The deliberate differences, by key; each accepted only where a step's
/// results show exactly it.
const DELIBERATE: &[(&str, &str)] = &[
    (
        "pointer-blend",
        "Both screenshots show the pointer, and agree on its opaque pixels; they differ on a \
         few of its semi-transparent edge pixels. X hands out the pointer's image with \
         premultiplied alpha, which is how ours blends it; the reference's `scrot -p` passes \
         it to imlib2, which blends it as straight alpha, so its edge comes out darker.",
    ),
    (
        "action-text",
        "The reference answers a mouse or keyboard action with xdotool's stdout, which is \
         empty, so its result is the screenshot alone; ours adds a short text saying what was \
         done (\"clicked at (600, 400)\"). Both return the screenshot.",
    ),
    (
        "click-modifier",
        "The reference reads a click's modifier keys from a `key` argument that the tool's \
         schema does not have, and refuses the schema's `text` (\"text is not accepted for \
         left_click\"); ours takes `text` as the schema says and holds the keys during the \
         click. The screen is the same here (a shift-click on an empty page where the pointer \
         already is).",
    ),
    (
        "xdotool-drops",
        "Not ours to fix: the reference types with `xdotool type` (3.20160805 in the image), \
         which binds each character that is not on the keyboard map to a spare key just \
         before pressing it, and some of them (a different few from run to run: ß, ö, the \
         en dash, ...) never reach the terminal; ours types every character. Accepted only \
         where the reference's text is ours with some non-ASCII characters missing, and its \
         screen differs only inside the terminal.",
    ),
];

/// One call of the script.
struct Call {
    /// The tool's name as the model calls it.
    tool: &'static str,
    input: Value,
    /// A deliberate difference this call shows (see [`DELIBERATE`]).
    accept: Option<&'static str>,
    /// A window (by title) the call opens, to wait for before the screen
    /// is compared.
    opens: Option<&'static str>,
}

impl Call {
    fn new(tool: &'static str, input: Value) -> Call {
        Call {
            tool,
            input,
            accept: None,
            opens: None,
        }
    }

    fn accepting(mut self, key: &'static str) -> Call {
        self.accept = Some(key);
        self
    }

    fn opening(mut self, title: &'static str) -> Call {
        self.opens = Some(title);
        self
    }
}

/// The action script, played the same on both sides.
fn script() -> Vec<Call> {
    let e = |input: Value| Call::new(EDITOR, input);
    let b = |command: &str| Call::new("bash", json!({ "command": command }));
    let c = |input: Value| Call::new("computer", input);
    vec![
        // --- Editor and bash. The editor cannot make directories.
        e(json!({"command": "create", "path": "/tmp/refcmp/notes.txt", "file_text": "x"})),
        b("mkdir -p /tmp/refcmp/sub/deeper/deepest /tmp/refcmp/.hidden && touch /tmp/refcmp/sub/visible.txt /tmp/refcmp/sub/deeper/deepest/too-deep.txt /tmp/refcmp/.hidden/secret.txt && echo prepared"),
        b("echo hello"),
        b("echo to-stdout; echo to-stderr >&2"),
        b("printf 'no trailing newline'"),
        b("printf 'two trailing newlines\\n\\n'"),
        b("cd /tmp/refcmp && export REFCMP_STATE=kept-across-calls"),
        b("pwd; echo \"$REFCMP_STATE\""),
        b("ls /tmp/refcmp/missing.txt"),
        b("(exit 3); echo \"exit status: $?\""),
        b("false"),
        e(json!({"command": "create", "path": "/tmp/refcmp/notes.txt",
                 "file_text": "alpha\nbeta\ngamma\nbeta\n\tindented with a tab\nlast line\n"})),
        e(json!({"command": "create", "path": "/tmp/refcmp/notes.txt", "file_text": "again"})),
        e(json!({"command": "view", "path": "/tmp/refcmp"})),
        e(json!({"command": "view", "path": "/tmp/refcmp", "view_range": [1, 2]})),
        e(json!({"command": "view", "path": "/tmp/refcmp/notes.txt"})),
        e(json!({"command": "view", "path": "/tmp/refcmp/notes.txt", "view_range": [2, 4]})),
        e(json!({"command": "view", "path": "/tmp/refcmp/notes.txt", "view_range": [3, -1]})),
        e(json!({"command": "view", "path": "/tmp/refcmp/notes.txt", "view_range": [0, 2]})),
        e(json!({"command": "view", "path": "/tmp/refcmp/notes.txt", "view_range": [2, 99]})),
        e(json!({"command": "view", "path": "/tmp/refcmp/notes.txt", "view_range": [4, 2]})),
        e(json!({"command": "view", "path": "/tmp//refcmp/./notes.txt", "view_range": [1, 1]})),
        e(json!({"command": "str_replace", "path": "/tmp/refcmp/notes.txt", "old_str": "delta", "new_str": "x"})),
        e(json!({"command": "str_replace", "path": "/tmp/refcmp/notes.txt", "old_str": "beta", "new_str": "x"})),
        e(json!({"command": "str_replace", "path": "/tmp/refcmp/notes.txt", "old_str": "", "new_str": "x"})),
        e(json!({"command": "str_replace", "path": "/tmp/refcmp/notes.txt", "old_str": "gamma", "new_str": "GAMMA\ngamma-two"})),
        e(json!({"command": "str_replace", "path": "/tmp/refcmp/notes.txt", "old_str": "alpha\n"})),
        e(json!({"command": "insert", "path": "/tmp/refcmp/notes.txt", "insert_line": 0, "insert_text": "inserted at the top"})),
        e(json!({"command": "insert", "path": "/tmp/refcmp/notes.txt", "insert_line": 99, "insert_text": "too far"})),
        e(json!({"command": "insert", "path": "/tmp/refcmp/notes.txt", "insert_line": 8, "insert_text": "appended\tat the end"})),
        e(json!({"command": "view", "path": "/tmp/refcmp/notes.txt"})),
        e(json!({"command": "view", "path": "refcmp/notes.txt"})),
        e(json!({"command": "view", "path": "/tmp/refcmp/missing.txt"})),
        e(json!({"command": "str_replace", "path": "/tmp/refcmp", "old_str": "a", "new_str": "b"})),
        e(json!({"command": "undo_edit", "path": "/tmp/refcmp/notes.txt"})),
        e(json!({"command": "create", "path": "/tmp/refcmp/notes.txt/child", "file_text": "x"})),
        b("mkdir -p /tmp/refcmp2/locked && chmod 000 /tmp/refcmp2/locked && printf '\\xff\\xfe bad utf-8' > /tmp/refcmp2/binary.dat && echo secret > /tmp/refcmp2/unreadable.txt && chmod 000 /tmp/refcmp2/unreadable.txt && echo prepared"),
        e(json!({"command": "view", "path": "/tmp/refcmp2"})),
        e(json!({"command": "view", "path": "/tmp/refcmp2/binary.dat"})),
        e(json!({"command": "view", "path": "/tmp/refcmp2/unreadable.txt"})),
        // The file's bytes after all the edits, tabs and line ends shown.
        b("cat -A /tmp/refcmp/notes.txt"),
        Call::new("bash", json!({"restart": true})),
        b("pwd; echo \"[$REFCMP_STATE]\""),
        // --- The computer: the browser first (an empty page, its address bar).
        c(json!({"action": "mouse_move", "coordinate": [600, 400]})),
        c(json!({"action": "left_click", "coordinate": [500, 62]})),
        c(json!({"action": "double_click", "coordinate": [190, 62]})),
        c(json!({"action": "right_click", "coordinate": [600, 400]})),
        c(json!({"action": "key", "text": "Escape"})),
        c(json!({"action": "left_click", "coordinate": [600, 400], "text": "shift"}))
            .accepting("click-modifier"),
        c(json!({"action": "cursor_position"})),
        // --- A terminal. The default prompt and title name the computer's
        // host, which differs between the two computers: the terminal's
        // shell skips its rc file and the title is fixed. Its output goes
        // nowhere: xterm warns on stderr (about a font) a moment after the
        // command has returned, and whether that lands in this call's error
        // or the next one's is a race on both sides (the reference looks
        // for the end of a command every 0.2 s, ours as it comes).
        b("(xterm -geometry 80x24+100+100 -T reference-comparison -e bash --norc >/dev/null 2>&1 &)")
            .opening(XTERM_TITLE),
        c(json!({"action": "left_click", "coordinate": [340, 270]})),
        // What is typed also goes to a file, compared as text at the end.
        c(json!({"action": "type", "text": format!("echo '{ASCII_LINE}' | tee /tmp/refcmp/typed.txt")})),
        c(json!({"action": "key", "text": "Return"})),
        c(json!({"action": "type", "text": "xyz"})),
        c(json!({"action": "key", "text": "BackSpace"})),
        c(json!({"action": "key", "text": "ctrl+a"})),
        c(json!({"action": "type", "text": "echo "})),
        c(json!({"action": "key", "text": "Return"})),
        c(json!({"action": "type", "text": "seq 1 40\n"})),
        c(json!({"action": "scroll", "coordinate": [340, 270], "scroll_direction": "up", "scroll_amount": 5})),
        c(json!({"action": "scroll", "coordinate": [340, 270], "scroll_direction": "down", "scroll_amount": 2})),
        c(json!({"action": "left_click_drag", "start_coordinate": [110, 140], "coordinate": [400, 200]})),
        c(json!({"action": "double_click", "coordinate": [106, 310]})),
        c(json!({"action": "cursor_position"})),
        c(json!({"action": "scroll", "coordinate": [340, 270], "scroll_direction": "down", "scroll_amount": 10})),
        // Last, as it may leave the two screens different: the reference's
        // `xdotool type` loses some of the characters that are not on the
        // keyboard map (see DELIBERATE).
        c(json!({"action": "type", "text": format!("echo '{NON_ASCII_LINE}' | tee -a /tmp/refcmp/typed.txt\n")}))
            .accepting("xdotool-drops"),
        b("cat /tmp/refcmp/typed.txt").accepting("xdotool-drops"),
    ]
}

/// The driver run inside the reference's computer: it imports the
/// reference's package, and answers each call it finds in its mailbox
/// (`req-N.json`) with the `ToolResult`'s fields (`res-N.json`), running
/// it through the reference's own `ToolCollection` (which turns a
/// `ToolError` into an error result, as in the reference's loop).
const DRIVER: &str = r#"
import asyncio, json, os, sys, traceback

root = sys.argv[1]
mailbox = os.path.join(root, "io")
sys.path.insert(0, root)
try:
    import anthropic.types.beta  # noqa: F401
except ImportError:
    # The package imports only type names from the SDK.
    sys.path.append(os.path.join(root, "stubs"))

from tools import BashTool20250124, ComputerTool20250124, EditTool20250728, ToolCollection


async def main():
    collection = ToolCollection(ComputerTool20250124(), EditTool20250728(), BashTool20250124())
    n = 0
    while True:
        try:
            with open(os.path.join(mailbox, f"req-{n}.json")) as f:
                call = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            await asyncio.sleep(0.05)
            continue
        try:
            r = await collection.run(name=call["name"], tool_input=call["input"])
            answer = {"output": r.output, "error": r.error, "system": r.system,
                      "image": r.base64_image}
        except Exception as e:
            answer = {"exception": "".join(traceback.format_exception(e))}
        tmp = os.path.join(mailbox, f".res-{n}.json")
        with open(tmp, "w") as f:
            json.dump(answer, f)
        os.rename(tmp, os.path.join(mailbox, f"res-{n}.json"))
        n += 1


asyncio.run(main())
"#;

/// Stands in for the SDK's `anthropic.types.beta`, of which the package
/// imports only type names.
const SDK_STUB: &str = "def __getattr__(name):\n    return dict\n";

/// A tool result as the model gets it.
#[derive(Debug, Clone, Default)]
struct Outcome {
    is_error: bool,
    /// The error, or the output's text ("" when there is none).
    text: String,
    /// The screenshot it carries (PNG).
    image: Option<Vec<u8>>,
    /// The reference raised something other than a `ToolError`.
    exception: Option<String>,
}

/// One step's results on both sides.
struct Played {
    outcome: Outcome,
    /// The screen once the call answered (computer actions and windows).
    screen: Option<Vec<u8>>,
}

fn b64(data: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64 image")
}

/// Our agent's answer to the last tool call, from the request it sent.
fn our_outcome(request: &Value) -> Outcome {
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .expect("a last message");
    let result = last["content"]
        .as_array()
        .and_then(|c| c.iter().find(|b| b["type"] == "tool_result"))
        .unwrap_or_else(|| panic!("no tool_result in {last}"));
    let is_error = result["is_error"].as_bool().unwrap_or(false);
    match &result["content"] {
        Value::String(s) => Outcome {
            is_error,
            text: s.clone(),
            ..Outcome::default()
        },
        blocks => {
            let blocks = blocks.as_array().cloned().unwrap_or_default();
            let text = blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let image = blocks
                .iter()
                .find(|b| b["type"] == "image")
                .and_then(|b| b["source"]["data"].as_str())
                .map(b64);
            Outcome {
                is_error,
                text,
                image,
                exception: None,
            }
        }
    }
}

/// The reference's `ToolResult` shaped into a `tool_result` as its loop
/// does (`_make_api_tool_result`): an error becomes the whole content, the
/// `system` note prefixed to whichever text is shown.
fn reference_outcome(answer: &Value) -> Outcome {
    if let Some(e) = answer["exception"].as_str() {
        return Outcome {
            is_error: true,
            text: String::new(),
            image: None,
            exception: Some(e.to_owned()),
        };
    }
    let field = |name: &str| answer[name].as_str().filter(|s| !s.is_empty());
    let with_system = |text: &str| match field("system") {
        Some(system) => format!("<system>{system}</system>\n{text}"),
        None => text.to_owned(),
    };
    if let Some(error) = field("error") {
        return Outcome {
            is_error: true,
            text: with_system(error),
            ..Outcome::default()
        };
    }
    Outcome {
        is_error: false,
        text: field("output").map(with_system).unwrap_or_default(),
        image: field("image").map(b64),
        exception: None,
    }
}

async fn screenshot_png(app: &TestApp, id: &str) -> Vec<u8> {
    let r = app
        .client
        .get(format!("{}/api/v0/sessions/{id}/screenshot", app.base))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("screenshot request");
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes().await.expect("screenshot").to_vec()
}

/// Waits for a window titled `title` to be shown, and a moment more for it
/// to be painted.
async fn await_window(app: &TestApp, id: &str, title: &str) {
    let token = app.admin_token.clone();
    await_some(&format!("the window {title}"), 60, || async {
        let out = app
            .exec_ok(
                &token,
                id,
                &format!("xdotool search --onlyvisible --name '^{title}$'"),
                30,
            )
            .await;
        (out["exit_code"] == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The screen after a call, when the call acts on the screen.
async fn screen_after(app: &TestApp, id: &str, call: &Call) -> Option<Vec<u8>> {
    if let Some(title) = call.opens {
        await_window(app, id, title).await;
    } else if call.tool != "computer" {
        return None;
    }
    Some(screenshot_png(app, id).await)
}

/// A session whose computer runs.
/// The script through our agent: one user message per call, which the
/// scripted model answers with the call, then (once it has the result)
/// with a word.
async fn play_ours(app: &TestApp, model: &ScriptedModel, script: &[Call]) -> Vec<Played> {
    let id = app.running_session(json!({})).await;
    let mut played = Vec::new();
    for (i, call) in script.iter().enumerate() {
        let seq = app.post_message(&id, &format!("step {i}")).await;
        app.reply_to(&id, seq, 300).await;
        let screen = screen_after(app, &id, call).await;
        let requests = model.requests();
        assert_eq!(requests.len(), 2 * i + 2, "step {i}: model requests");
        played.push(Played {
            outcome: our_outcome(&requests[2 * i + 1].body),
            screen,
        });
    }
    model.assert_no_violations();
    app.close(&app.admin_token, &id).await;
    played
}

async fn put_file(app: &TestApp, id: &str, path: &str, bytes: Vec<u8>) {
    let r = app
        .client
        .put(format!(
            "{}/api/v0/sessions/{id}/files/{}",
            app.base,
            path.trim_start_matches('/')
        ))
        .bearer_auth(&app.admin_token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "upload {path}");
}

/// The `.py` files of the reference's package, relative to it.
fn package_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if path.file_name() != Some("__pycache__".as_ref()) {
                    todo.push(path);
                }
            } else if path.extension() == Some("py".as_ref()) {
                files.push(path.strip_prefix(dir).expect("inside").to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// The script through the reference's tools, on a fresh computer.
async fn play_reference(app: &TestApp, tools: &Path, script: &[Call]) -> Vec<Played> {
    let id = app.running_session(json!({})).await;
    let files = package_files(tools);
    assert!(
        files.iter().any(|f| f == Path::new("computer.py")),
        "{} holds no reference tools package",
        tools.display()
    );
    for file in &files {
        let bytes = std::fs::read(tools.join(file)).expect("a reference file");
        let to = format!("{REF_ROOT}/tools/{}", file.display());
        put_file(app, &id, &to, bytes).await;
    }
    let stubs = format!("{REF_ROOT}/stubs/anthropic");
    for (path, text) in [
        (format!("{stubs}/__init__.py"), ""),
        (format!("{stubs}/types/__init__.py"), ""),
        (format!("{stubs}/types/beta.py"), SDK_STUB),
        (format!("{REF_ROOT}/driver.py"), DRIVER),
    ] {
        put_file(app, &id, &path, text.as_bytes().to_vec()).await;
    }
    // In /session, where our shell starts too; with the environment the
    // reference's tools read.
    let start = format!(
        "mkdir -p {REF_ROOT}/io && cd /session && DISPLAY=:1 WIDTH=1024 HEIGHT=768 DISPLAY_NUM=1 \
         setsid python3 {REF_ROOT}/driver.py {REF_ROOT} </dev/null >{REF_ROOT}/driver.log 2>&1 &"
    );
    app.exec_ok(&app.admin_token, &id, &start, 30).await;

    let mut played = Vec::new();
    for (i, call) in script.iter().enumerate() {
        let request = json!({"name": call.tool, "input": call.input});
        put_file(
            app,
            &id,
            &format!("{REF_ROOT}/io/req-{i}.json"),
            request.to_string().into_bytes(),
        )
        .await;
        let url = format!(
            "{}/api/v0/sessions/{id}/files/{}/io/res-{i}.json",
            app.base,
            REF_ROOT.trim_start_matches('/')
        );
        let deadline = Instant::now() + Duration::from_secs(300);
        let answer: Value = loop {
            let r = app
                .client
                .get(&url)
                .bearer_auth(&app.admin_token)
                .send()
                .await
                .expect("result request");
            if r.status() == StatusCode::OK {
                break serde_json::from_slice(&r.bytes().await.expect("result"))
                    .expect("a JSON result");
            }
            if Instant::now() > deadline {
                let log = app
                    .exec_ok(
                        &app.admin_token,
                        &id,
                        &format!("cat {REF_ROOT}/driver.log"),
                        30,
                    )
                    .await;
                panic!("the reference did not answer step {i}; its log: {log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let screen = screen_after(app, &id, call).await;
        played.push(Played {
            outcome: reference_outcome(&answer),
            screen,
        });
    }
    app.close(&app.admin_token, &id).await;
    played
}

/// A rectangle: x, y, width, height.
type Area = (u32, u32, u32, u32);

fn inside(area: Area, x: u32, y: u32) -> bool {
    let (ax, ay, w, h) = area;
    (ax..ax + w).contains(&x) && (ay..ay + h).contains(&y)
}

/// Where the pointer's image lies when its hot spot is at `at`.
fn pointer_area(at: (u32, u32)) -> Area {
    let (dx, dy, w, h) = POINTER;
    let x = (at.0 as i64 + dx).max(0) as u32;
    let y = (at.1 as i64 + dy).max(0) as u32;
    (x, y, w, h)
}

/// How two screens differ.
struct ScreenDiff {
    differing: usize,
    compared: usize,
    /// Smallest rectangle holding the differing pixels.
    bbox: Option<Area>,
}

impl ScreenDiff {
    /// Nothing differs but (at most) a blinking caret.
    fn same(&self) -> bool {
        self.bbox
            .is_none_or(|(_, _, w, h)| w <= CARET.0 && h <= CARET.1)
    }

    /// Whatever differs lies inside `area`.
    fn within(&self, area: Area) -> bool {
        self.bbox
            .is_none_or(|(x, y, w, h)| inside(area, x, y) && inside(area, x + w - 1, y + h - 1))
    }

    fn describe(&self) -> String {
        let mut s = format!("{} of {} pixels differ", self.differing, self.compared);
        if let Some((x, y, w, h)) = self.bbox {
            s.push_str(&format!(", within {w}x{h} at ({x}, {y})"));
        }
        s
    }
}

/// The pixels of `a` and `b` that differ, among those `compared` takes.
fn screen_diff(a: &Image, b: &Image, compared: impl Fn(u32, u32) -> bool) -> ScreenDiff {
    assert_eq!((a.width, a.height), (b.width, b.height), "screen sizes");
    let mut diff = ScreenDiff {
        differing: 0,
        compared: 0,
        bbox: None,
    };
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for y in 0..a.height {
        for x in 0..a.width {
            if !compared(x, y) {
                continue;
            }
            diff.compared += 1;
            let at = ((y * a.width + x) * 3) as usize;
            if (0..3).any(|c| a.rgb[at + c].abs_diff(b.rgb[at + c]) > PIXEL_TOLERANCE) {
                diff.differing += 1;
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    if diff.differing > 0 {
        diff.bbox = Some((x0, y0, x1 - x0 + 1, y1 - y0 + 1));
    }
    diff
}

/// Whether `reference` is `ours` with some non-ASCII characters left out.
fn lost_non_ascii(reference: &str, ours: &str) -> bool {
    let mut kept = reference.chars().peekable();
    for c in ours.chars() {
        if kept.peek() == Some(&c) {
            kept.next();
        } else if c.is_ascii() {
            return false;
        }
    }
    kept.next().is_none() && reference != ours
}

/// What comparing one step found.
#[derive(Default)]
struct Comparison {
    /// Deliberate differences the step shows.
    deliberate: Vec<&'static str>,
    /// Differences nothing explains.
    problems: Vec<String>,
    /// How the screens compared.
    notes: Vec<String>,
    /// The screenshot our agent sent the model lacks the pointer the
    /// reference's shows (and differs in nothing else).
    pointer_missing: bool,
}

/// Compares one step's results; `pointer` is where the script has left
/// the pointer.
fn compare(call: &Call, reference: &Played, ours: &Played, pointer: (u32, u32)) -> Comparison {
    let (r, o) = (&reference.outcome, &ours.outcome);
    let mut cmp = Comparison::default();
    if let Some(e) = &r.exception {
        cmp.problems.push(format!("the reference raised: {e}"));
        return cmp;
    }
    let accepts = |key: &str| call.accept == Some(key);
    let action = call.input["action"].as_str().unwrap_or("");
    let acts = call.tool == "computer" && action != "cursor_position";

    // The results, as the model gets them.
    if r.is_error != o.is_error || r.text != o.text {
        if acts && !r.is_error && !o.is_error && r.text.is_empty() && !o.text.is_empty() {
            cmp.deliberate.push("action-text");
        } else if accepts("click-modifier")
            && r.is_error
            && r.text == format!("text is not accepted for {action}")
            && !o.is_error
        {
            cmp.deliberate.push("click-modifier");
        } else if accepts("xdotool-drops")
            && !r.is_error
            && !o.is_error
            && o.text == format!("{ASCII_LINE}\n{NON_ASCII_LINE}")
            && lost_non_ascii(&r.text, &o.text)
        {
            cmp.deliberate.push("xdotool-drops");
        } else {
            cmp.problems.push(format!(
                "the results differ:\n  reference: is_error={} {:?}\n  ours:      is_error={} {:?}",
                r.is_error, r.text, o.is_error, o.text
            ));
        }
    }
    // Each answers an action (that it carried out) with a screenshot, and
    // nothing else with one.
    for (side, out) in [("reference", r), ("ours", o)] {
        let wanted = acts && !out.is_error;
        if out.image.is_some() != wanted {
            let what = if wanted { "no" } else { "an unexpected" };
            cmp.problems.push(format!("{side}: {what} screenshot"));
        }
    }
    // Where a difference on the screen may be accepted.
    let allowed = accepts("xdotool-drops").then_some(XTERM_WINDOW);
    let judge = |what: &str, d: &ScreenDiff, cmp: &mut Comparison| {
        cmp.notes.push(format!("{what}: {}", d.describe()));
        if d.same() {
            return;
        }
        match allowed {
            Some(area) if d.within(area) => {
                if !cmp.deliberate.contains(&"xdotool-drops") {
                    cmp.deliberate.push("xdotool-drops");
                }
            }
            _ => cmp
                .problems
                .push(format!("{what} differs: {}", d.describe())),
        }
    };
    // The screen once the call has answered, taken the same way.
    if let (Some(a), Some(b)) = (&reference.screen, &ours.screen) {
        let (a, b) = (Image::decode(a), Image::decode(b));
        let d = screen_diff(&a, &b, |x, y| !inside(CLOCK, x, y));
        judge("screen", &d, &mut cmp);
    }
    // The screenshot each side gave the model: the reference's shows the
    // pointer (`scrot -p`), so that area is looked at on its own.
    if let (Some(a), Some(b)) = (&r.image, &o.image) {
        let (a, b) = (Image::decode(a), Image::decode(b));
        let area = pointer_area(pointer);
        let rest = screen_diff(&a, &b, |x, y| !inside(CLOCK, x, y) && !inside(area, x, y));
        judge("model's screenshot", &rest, &mut cmp);
        let at_pointer = screen_diff(&a, &b, |x, y| inside(area, x, y));
        if at_pointer.differing > 0
            && at_pointer.differing <= POINTER_EDGE
            && allowed.is_none_or(|w| !at_pointer.within(w))
        {
            cmp.deliberate.push("pointer-blend");
            cmp.notes.push(format!(
                "model's screenshot at the pointer ({}, {}): {}",
                pointer.0,
                pointer.1,
                at_pointer.describe()
            ));
        } else if at_pointer.differing > 0 && allowed.is_none_or(|w| !at_pointer.within(w)) {
            cmp.pointer_missing = true;
            cmp.notes.push(format!(
                "model's screenshot at the pointer ({}, {}): {}",
                pointer.0,
                pointer.1,
                at_pointer.describe()
            ));
        }
    }
    cmp
}

/// Where each step leaves the pointer (it starts in the screen's middle).
fn pointer_positions(script: &[Call]) -> Vec<(u32, u32)> {
    let mut at = (512, 384);
    script
        .iter()
        .map(|call| {
            if call.tool == "computer" {
                if let Some([x, y]) = call.input["coordinate"]
                    .as_array()
                    .map(|c| [c[0].as_u64().unwrap_or(0), c[1].as_u64().unwrap_or(0)])
                {
                    at = (x as u32, y as u32);
                }
            }
            at
        })
        .collect()
}

/// `raw` in a table cell as code, safe in markdown.
fn code(raw: &str) -> String {
    let mut out = String::from("<code>");
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("&#124;"),
            '`' => out.push_str("&#96;"),
            '*' => out.push_str("&#42;"),
            '_' => out.push_str("&#95;"),
            '\\' => out.push_str("&#92;"),
            c => out.push(c),
        }
    }
    out.push_str("</code>");
    out
}

/// A text in a table cell, exactly: as a JSON string (escapes shown).
fn cell(text: &str) -> String {
    code(&serde_json::to_string(text).expect("a string"))
}

fn describe(out: &Outcome) -> String {
    if let Some(e) = &out.exception {
        return format!("exception: {}", cell(e));
    }
    let mut parts = Vec::new();
    if out.is_error {
        parts.push(format!("error: {}", cell(&out.text)));
    } else if !out.text.is_empty() {
        parts.push(cell(&out.text));
    }
    if out.image.is_some() {
        parts.push("screenshot".to_owned());
    }
    if parts.is_empty() {
        parts.push("(empty)".to_owned());
    }
    parts.join(" + ")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the reference tools: set RAWORC_REFERENCE_TOOLS (see the file's doc)"]
async fn our_tools_behave_like_the_reference_tools() {
    let Some(tools) = std::env::var_os("RAWORC_REFERENCE_TOOLS").filter(|v| !v.is_empty()) else {
        eprintln!("RAWORC_REFERENCE_TOOLS is not set: nothing to compare with, skipped");
        return;
    };
    let tools = PathBuf::from(tools);
    let script = script();
    let steps: Vec<Step> = script
        .iter()
        .flat_map(|call| {
            [
                Step::tool_use(call.tool, call.input.clone()),
                Step::text("done"),
            ]
        })
        .collect();
    let model = ScriptedModel::start(steps).await.with_key(KEY);
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        model.serve_anthropic(c);
    })
    .await;

    let ours = play_ours(&app, &model, &script).await;
    let reference = play_reference(&app, &tools, &script).await;

    if let Some(dir) = std::env::var_os("RAWORC_REFERENCE_SHOTS").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("the shots directory");
        for (i, (r, o)) in reference.iter().zip(&ours).enumerate() {
            for (side, played) in [("reference", r), ("ours", o)] {
                if let Some(png) = &played.screen {
                    std::fs::write(dir.join(format!("{i:02}-screen-{side}.png")), png).unwrap();
                }
                if let Some(png) = &played.outcome.image {
                    std::fs::write(dir.join(format!("{i:02}-model-{side}.png")), png).unwrap();
                }
            }
        }
    }

    let mut report = String::from(
        "| step | tool | input | reference result | ours | equal? |\n|---|---|---|---|---|---|\n",
    );
    let mut different = Vec::new();
    let mut used = Vec::new();
    let mut pointer_missing = Vec::new();
    for (i, (call, pointer)) in script.iter().zip(pointer_positions(&script)).enumerate() {
        let cmp = compare(call, &reference[i], &ours[i], pointer);
        let mut equal = if !cmp.problems.is_empty() {
            let why = cmp.problems.join("; ");
            different.push(format!("step {i} ({} {}): {why}", call.tool, call.input));
            format!("**NO**: {}", cell(&why))
        } else if cmp.deliberate.is_empty() {
            "yes".to_owned()
        } else {
            let keys: Vec<String> = cmp.deliberate.iter().map(|k| format!("*{k}*")).collect();
            format!("yes, but for deliberate difference {}", keys.join(", "))
        };
        for key in &cmp.deliberate {
            if !used.contains(key) {
                used.push(*key);
            }
        }
        if cmp.pointer_missing {
            pointer_missing.push(i);
            equal.push_str(" (the model's screenshots differ at the pointer)");
        }
        for note in &cmp.notes {
            equal.push_str(&format!("<br>{note}"));
        }
        report.push_str(&format!(
            "| {i} | {} | {} | {} | {} | {equal} |\n",
            call.tool,
            code(&call.input.to_string()),
            describe(&reference[i].outcome),
            describe(&ours[i].outcome),
        ));
    }
    if !pointer_missing.is_empty() {
        different.push(format!(
            "steps {pointer_missing:?}: the screenshot our agent gives the model differs from \
             the reference's where the pointer is, and only there, by more than its edge: \
             the reference's shows the pointer (it takes it with `scrot -p`), ours does not"
        ));
    }
    if !used.is_empty() {
        report.push_str("\nDeliberate differences:\n\n");
        for (key, why) in DELIBERATE.iter().filter(|(k, _)| used.contains(k)) {
            report.push_str(&format!("- *{key}*: {why}\n"));
        }
    }
    if !different.is_empty() {
        report.push_str("\nDifferences nothing above explains:\n\n");
        for d in &different {
            report.push_str(&format!("- {}\n", d.replace('\n', " ")));
        }
    }
    println!("{report}");
    if let Some(path) = std::env::var_os("RAWORC_REFERENCE_REPORT").filter(|v| !v.is_empty()) {
        std::fs::write(&path, &report).expect("writing the report");
    }
    app.stop().await;
    assert!(
        different.is_empty(),
        "{} difference(s) from the reference over {} steps:\n{}",
        different.len(),
        script.len(),
        different.join("\n")
    );
}

/// The comparison's own rules, without computers (these run in CI).
#[test]
fn results_are_shaped_and_losses_recognised_as_the_comparison_needs() {
    assert!(lost_non_ascii("a wrld ", "a wörld ß"));
    assert!(!lost_non_ascii("a wörld ß", "a wörld ß"), "nothing lost");
    assert!(
        !lost_non_ascii("a wörd", "a wörld"),
        "an ASCII character lost"
    );
    assert!(!lost_non_ascii("a wörldx", "a wörld"), "one too many");
    let shaped = reference_outcome(&json!({"output": "out", "error": "err", "system": "note"}));
    assert!(shaped.is_error);
    assert_eq!(shaped.text, "<system>note</system>\nerr");
    let shaped = reference_outcome(&json!({"output": "", "error": "", "image": null}));
    assert!(!shaped.is_error && shaped.text.is_empty() && shaped.image.is_none());
    let d = ScreenDiff {
        differing: 17,
        compared: 100,
        bbox: Some((247, 55, 1, 17)),
    };
    assert!(d.same(), "a caret");
    let d = ScreenDiff {
        differing: 40,
        compared: 100,
        bbox: Some((391, 148, 6, 13)),
    };
    assert!(!d.same(), "a character");
    assert!(d.within(XTERM_WINDOW) && !d.within(CLOCK));
}
