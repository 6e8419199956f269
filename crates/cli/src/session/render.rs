//! How steps and status look on stderr: [`Ui`] (colours, the spinner, lines
//! cut to the terminal's width), text defused of control characters, and
//! tool calls and results told in one line.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use raworc_api::Event;
use serde_json::Value;

/// Line width when stderr is not a terminal (lines are still cut, to one line).
const PIPE_WIDTH: usize = 160;

/// How a line of step output looks.
#[derive(Debug, Clone, Copy)]
pub(super) enum Style {
    Plain,
    Dim,
    Red,
    Green,
    Cyan,
    Yellow,
}

/// Step and status output on stderr: colours and a spinner only on a
/// terminal, every step on one line cut to the terminal's width.
pub(super) struct Ui {
    pub(super) tty: bool,
    color: bool,
    spinner_shown: bool,
    frame: usize,
    last_status: String,
}

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

impl Ui {
    pub(super) fn new() -> Ui {
        let tty = std::io::stderr().is_terminal();
        let color = tty
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var("TERM").map_or(true, |t| t != "dumb");
        Ui {
            tty,
            color,
            spinner_shown: false,
            frame: 0,
            last_status: String::new(),
        }
    }

    fn width(&self) -> usize {
        if self.tty {
            term_width().unwrap_or(80)
        } else {
            PIPE_WIDTH
        }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        let code = match style {
            Style::Plain => return text.to_string(),
            Style::Dim => "2",
            Style::Red => "31",
            Style::Green => "32",
            Style::Cyan => "36",
            Style::Yellow => "33",
        };
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Takes the spinner off the screen.
    pub(super) fn clear(&mut self) {
        if self.spinner_shown {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.spinner_shown = false;
        }
    }

    /// Prints `text` (any number of lines), control characters defused.
    pub(super) fn say(&mut self, style: Style, text: &str) {
        self.clear();
        let text = printable(text);
        let _ = writeln!(std::io::stderr(), "{}", self.paint(style, &text));
    }

    /// Prints `marker text` on one line, cut to the width.
    pub(super) fn step(&mut self, marker: &str, style: Style, text: &str) {
        let width = self.width().saturating_sub(marker.chars().count() + 1);
        let line = one_line(text, width.max(10));
        let marker = self.paint(style, marker);
        self.clear();
        let _ = writeln!(std::io::stderr(), "{marker} {line}");
    }

    /// A status that lasts: the spinner's text on a terminal, else printed
    /// once when it changes.
    pub(super) fn status(&mut self, text: &str) {
        if !self.tty && self.last_status != text {
            self.say(Style::Dim, text);
        }
        self.last_status = text.to_string();
    }

    /// A status for the spinner only: too common to print on its own line.
    pub(super) fn quiet_status(&mut self, text: &str) {
        self.last_status = text.to_string();
    }

    /// Moves the spinner on (terminals only).
    pub(super) fn spin(&mut self, since: Instant) {
        if !self.tty {
            return;
        }
        self.frame = (self.frame + 1) % FRAMES.len();
        let secs = since.elapsed().as_secs();
        let text = format!("{} {secs}s", self.last_status);
        let text = one_line(&text, self.width().saturating_sub(3).max(10));
        let frame = self.paint(Style::Cyan, &FRAMES[self.frame].to_string());
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{frame} {}", self.paint(Style::Dim, &text));
        let _ = err.flush();
        self.spinner_shown = true;
    }

    pub(super) fn prompt(&mut self) {
        self.clear();
        let mut err = std::io::stderr();
        let _ = write!(err, "{} ", self.paint(Style::Cyan, ">"));
        let _ = err.flush();
    }
}

/// An error ends the command with a message on stderr: the spinner must
/// not be left in front of it.
impl Drop for Ui {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The terminal's width in columns, from stderr.
fn term_width() -> Option<usize> {
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes one `winsize` into the struct passed,
    // which lives across the call; fd 2 is a descriptor (an invalid one
    // just makes the call fail).
    let rc = unsafe { nix::libc::ioctl(2, nix::libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 {
        return Some(ws.ws_col as usize);
    }
    std::env::var("COLUMNS").ok()?.trim().parse().ok()
}

/// `text` without the control characters a terminal would act on (escape
/// sequences in a command's output, say): what the agent and the computer
/// write is shown, never obeyed. Line breaks and tabs stay.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .filter(|&c| c != '\r')
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// `text` on one line (line breaks shown as `↵`), at most `width` characters.
fn one_line(text: &str, width: usize) -> String {
    let flat = printable(text)
        .trim()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join(" ↵ ");
    if flat.chars().count() <= width {
        return flat;
    }
    let mut cut: String = flat.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `bash: ls -la`, `computer: left_click [300, 400]`: what a `tool_use`
/// event asks, from its `name` and `input`.
pub(super) fn describe_tool_use(metadata: &Value, content: &str) -> String {
    let Some(name) = metadata.get("name").and_then(Value::as_str) else {
        return content.to_string();
    };
    let input = metadata.get("input").cloned().unwrap_or(Value::Null);
    let detail = match name {
        "bash" => match input.get("command").and_then(Value::as_str) {
            Some(cmd) => cmd.to_string(),
            None if input.get("restart").and_then(Value::as_bool) == Some(true) => {
                "(restart the shell)".to_string()
            }
            None => compact(&input),
        },
        "computer" => describe_computer(&input),
        "str_replace_based_edit_tool" => {
            let command = input.get("command").and_then(Value::as_str).unwrap_or("?");
            let path = input.get("path").and_then(Value::as_str).unwrap_or("");
            format!("{command} {path}").trim_end().to_string()
        }
        _ => compact(&input),
    };
    let name = if name == "str_replace_based_edit_tool" {
        "editor"
    } else {
        name
    };
    format!("{name}: {detail}")
}

/// `left_click [300, 400]`, `type "hello"`, `key ctrl+l`, `scroll down 3 [10, 20]`.
fn describe_computer(input: &Value) -> String {
    let Some(action) = input.get("action").and_then(Value::as_str) else {
        return compact(input);
    };
    let mut parts = vec![action.to_string()];
    let typed = matches!(action, "type");
    for key in [
        "start_coordinate",
        "coordinate",
        "scroll_direction",
        "scroll_amount",
        "text",
        "duration",
        "region",
    ] {
        let Some(v) = input.get(key) else { continue };
        parts.push(match v {
            Value::String(s) if key == "text" && typed => format!("{s:?}"),
            Value::String(s) => s.clone(),
            Value::Array(items) => format!(
                "[{}]",
                items.iter().map(compact).collect::<Vec<_>>().join(", ")
            ),
            other => compact(other),
        });
    }
    parts.join(" ")
}

fn compact(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A `tool_result` as `(failed, first line …)`.
pub(super) fn describe_tool_result(event: &Event) -> (bool, String) {
    let failed = event.metadata.get("is_error").and_then(Value::as_bool) == Some(true);
    let mut lines = event.content.lines().filter(|l| !l.trim().is_empty());
    let text = match lines.next() {
        Some(first) => {
            let more = lines.count();
            if more > 0 {
                format!("{} (+{more} lines)", first.trim_end())
            } else {
                first.trim_end().to_string()
            }
        }
        None if event.metadata.get("image_url").is_some() => "(screenshot)".to_string(),
        None => "(no output)".to_string(),
    };
    (failed, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, content: &str, metadata: Value) -> Event {
        serde_json::from_value(json!({
            "session_id": "s1", "seq": 1, "type": kind, "content": content,
            "metadata": metadata,
            "created_at": "2026-01-01T00:00:00Z", "timestamp": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn tool_calls_read_as_one_line() {
        let d = |m: Value| describe_tool_use(&m, "raw");
        assert_eq!(
            d(json!({"name": "bash", "input": {"command": "ls -la"}})),
            "bash: ls -la"
        );
        assert_eq!(
            d(json!({"name": "bash", "input": {"restart": true}})),
            "bash: (restart the shell)"
        );
        assert_eq!(
            d(
                json!({"name": "computer", "input": {"action": "left_click", "coordinate": [300, 400]}})
            ),
            "computer: left_click [300, 400]"
        );
        assert_eq!(
            d(json!({"name": "computer", "input": {"action": "type", "text": "hi\n"}})),
            r#"computer: type "hi\n""#
        );
        assert_eq!(
            d(json!({"name": "computer", "input": {"action": "key", "text": "ctrl+l"}})),
            "computer: key ctrl+l"
        );
        assert_eq!(
            d(
                json!({"name": "computer", "input": {"action": "scroll", "coordinate": [1, 2],
                "scroll_direction": "down", "scroll_amount": 3}})
            ),
            "computer: scroll [1, 2] down 3"
        );
        assert_eq!(
            d(json!({"name": "computer", "input": {"action": "screenshot"}})),
            "computer: screenshot"
        );
        assert_eq!(
            d(json!({"name": "str_replace_based_edit_tool",
                "input": {"command": "view", "path": "/session/code/a.py"}})),
            "editor: view /session/code/a.py"
        );
        assert_eq!(
            d(json!({"name": "other", "input": {"x": 1}})),
            r#"other: {"x":1}"#
        );
        assert_eq!(d(json!({})), "raw");
    }

    #[test]
    fn tool_results_read_as_one_line() {
        let r = |content, metadata| describe_tool_result(&event("tool_result", content, metadata));
        assert_eq!(
            r("from-cli\n", json!({"is_error": false})),
            (false, "from-cli".into())
        );
        assert_eq!(r("a\n\nb\nc", json!({})), (false, "a (+2 lines)".into()));
        assert_eq!(
            r("no such file", json!({"is_error": true})),
            (true, "no such file".into())
        );
        assert_eq!(
            r("", json!({"image_url": "/x"})),
            (false, "(screenshot)".into())
        );
        assert_eq!(r("", json!({})), (false, "(no output)".into()));
    }

    #[test]
    fn lines_are_cut_to_the_width() {
        assert_eq!(one_line("short", 10), "short");
        assert_eq!(one_line("0123456789abc", 10), "012345678…");
        assert_eq!(one_line("a\nb  \n", 10), "a ↵ b");
        assert_eq!(one_line("ééééé", 4), "ééé…");
        assert_eq!(
            one_line("\x1b[31mred\x1b[0m\r\n", 20),
            "\u{FFFD}[31mred\u{FFFD}[0m"
        );
        assert_eq!(printable("a\tb\r\nc\x07"), "a\tb\nc\u{FFFD}");
    }
}
