//! What the control plane and `raworc host` say to each other over the
//! computer's unix socket (HTTP/1.1, JSON bodies; file contents raw).
//!
//! Routes, all under `/v1`:
//! - `POST /session` [`SessionConfig`] — the session this computer serves (once)
//! - `GET  /desktop` — waits until the desktop is painted → [`DesktopReady`]
//! - `GET  /ready` — waits until the desktop is painted and setup has run → [`Ready`]
//! - `POST /exec` [`ExecRequest`] → [`ExecResult`]
//! - `GET|PUT /files/{path}` — a file's bytes at `/{path}` inside
//! - `GET  /dir/{path}` (`GET /dir` for `/`) — the directory `/{path}` → [`DirListing`]
//! - `GET  /screenshot` → `image/png`
//! - `POST /computer` (a computer-tool input) → [`ComputerResult`]
//! - `POST /bash` [`BashRequest`] → [`ToolOutput`] (the one persistent shell)
//! - `POST /edit` [`EditRequest`] → [`ToolOutput`] (the text editor tool)
//! - `POST /shutdown` — closes the browser gracefully, then ends the computer
//!
//! Errors are `{"error": "..."}` with a status that the control plane passes on.
//! The bash and editor tools answer 200 with a [`ToolOutput`] for whatever
//! the tool itself says, errors included; an error status there means the
//! request itself was wrong or the host could not serve it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// File name of the host's socket in the computer's run directory.
pub const SOCKET: &str = "host.sock";
/// File name of the VNC server's socket in the computer's run directory.
pub const VNC_SOCKET: &str = "vnc.sock";
/// File name of the start configuration in the run directory
/// ([`HostConfig`]: nothing secret; the session comes over the socket).
pub const CONFIG: &str = "config.json";
/// Where the run directory appears inside the computer.
pub const RUN_DIR: &str = "/run/raworc";

/// The display's size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplaySize {
    pub width: u16,
    pub height: u16,
}

impl Default for DisplaySize {
    fn default() -> Self {
        DisplaySize {
            width: 1024,
            height: 768,
        }
    }
}

/// How the host should bring the computer's desktop up: what any session
/// on it shares. Read from [`CONFIG`] at start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostConfig {
    #[serde(default)]
    pub display: DisplaySize,
    /// The browser may build its own sandbox from user namespaces (only
    /// where the computer allows them).
    #[serde(default)]
    pub browser_sandbox: bool,
}

/// The session a computer serves, given to the host over its socket
/// (`POST /v1/session`, once per computer): a cold start sends it at once,
/// a pooled computer gets it when claimed. It never touches a disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionConfig {
    /// Written to `/session/code/setup.sh` and run before the computer is ready.
    #[serde(default)]
    pub setup: Option<String>,
    /// Written to `/session/code/instructions.md`.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Written to `/session/secrets/NAME` (0600, a tmpfs) and given to
    /// setup and every command.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Seconds setup may take before it counts as failed.
    #[serde(default = "default_setup_timeout")]
    pub setup_timeout_s: u64,
}

fn default_setup_timeout() -> u64 {
    600
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            setup: None,
            instructions: None,
            secrets: BTreeMap::new(),
            setup_timeout_s: default_setup_timeout(),
        }
    }
}

/// The desktop is up and painted (`GET /v1/desktop`), session or not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DesktopReady {
    pub display: DisplaySize,
    /// Milliseconds from the host's start to the painted desktop.
    pub painted_ms: u64,
}

/// The computer is up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    pub display: DisplaySize,
    /// Setup's result, when the session has a setup script.
    pub setup: Option<SetupResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupResult {
    pub exit_code: i32,
    /// The end of its combined output (the whole of it is in `/session/code/setup.log`).
    pub output_tail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub command: String,
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// The command's exit code; 128 + signal if a signal ended it; 124 on timeout.
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub timed_out: bool,
    /// Set when the output was longer than the limit and cut.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The answer to a computer-tool action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputerResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Base64 PNG, for actions that return an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A call of the bash tool, as the model gives it (`command` or
/// `restart`), with how long the command may take.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BashRequest {
    #[serde(default)]
    pub command: Option<String>,
    /// Ends the shell (and everything it started) and starts a new one;
    /// `command` is then ignored.
    #[serde(default)]
    pub restart: bool,
    /// Seconds to wait for the command before the shell counts as stuck
    /// (120 unless given).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// A call of the text editor tool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EditRequest {
    /// The tool's name as the model knows it (`str_replace_based_edit_tool`,
    /// or `str_replace_editor` for the older versions): error texts name it.
    #[serde(default = "default_editor_name")]
    pub tool_name: String,
    /// Whether the tool's version has `undo_edit` (text_editor_20241022 and
    /// _20250124 do, _20250728 does not).
    #[serde(default)]
    pub undo: bool,
    /// The tool definition's `max_characters` (text_editor_20250728): how
    /// much of a file `view` shows; 16000 characters unless given.
    #[serde(default)]
    pub max_characters: Option<usize>,
    /// The model's input, unchanged (`command`, `path`, …).
    pub input: serde_json::Value,
}

fn default_editor_name() -> String {
    "str_replace_based_edit_tool".to_owned()
}

/// What the bash and editor tools answer, as Anthropic's reference tools
/// do (their `ToolResult` without the image). Empty strings are kept as
/// the reference keeps them (bash always gives both streams): read an
/// empty field as an absent one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// What the tool reports as an error: a `tool_result` with `is_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A note about the tool itself (e.g. that it was restarted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

impl ToolOutput {
    pub fn output(text: impl Into<String>) -> ToolOutput {
        ToolOutput {
            output: Some(text.into()),
            ..ToolOutput::default()
        }
    }

    pub fn error(text: impl Into<String>) -> ToolOutput {
        ToolOutput {
            error: Some(text.into()),
            ..ToolOutput::default()
        }
    }
}

/// What a directory entry is, as `lstat` sees it: a link is never followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Link,
    /// Sockets, pipes, devices.
    Other,
}

/// One entry of a [`DirListing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The file name (lossily UTF-8).
    pub name: String,
    pub kind: EntryKind,
    /// Bytes; for a link, the link's own size (its target's length).
    pub size: u64,
    /// Last modification, milliseconds since the epoch (the host has no
    /// calendar; the control plane turns it into RFC 3339).
    pub modified_ms: i64,
}

/// A directory's entries (`GET /v1/dir/{path}`): directories first, then
/// by name; at most a bound of them, with `truncated` set when more exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirListing {
    /// The directory listed, as an absolute path.
    pub path: String,
    pub entries: Vec<DirEntry>,
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_and_answers_read_and_write_as_documented() {
        let answer = ToolOutput {
            system: Some("tool has been restarted.".into()),
            ..ToolOutput::default()
        };
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            serde_json::json!({"system": "tool has been restarted."})
        );
        let bash: BashRequest = serde_json::from_str(r#"{"restart": true}"#).unwrap();
        assert!(bash.restart && bash.command.is_none() && bash.timeout_s.is_none());
        let edit: EditRequest =
            serde_json::from_str(r#"{"input": {"command": "view", "path": "/"}}"#).unwrap();
        assert_eq!(edit.tool_name, "str_replace_based_edit_tool");
        assert!(!edit.undo && edit.max_characters.is_none());
    }
}
