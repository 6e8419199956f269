//! What the control plane and `raworc host` say to each other over the
//! computer's unix socket (HTTP/1.1, JSON bodies; file contents raw).
//!
//! Routes, all under `/v1`:
//! - `POST /session` [`SessionConfig`] — the session this computer serves (once)
//! - `GET  /desktop` — waits until the desktop is painted → [`DesktopReady`]
//! - `GET  /ready` — waits until the desktop is painted and setup has run → [`Ready`]
//! - `POST /exec` [`ExecRequest`] → [`ExecResult`]
//! - `GET|PUT /files/{path}` — a file's bytes at `/{path}` inside
//! - `GET  /screenshot` → `image/png`
//! - `POST /computer` (a computer-tool input) → [`ComputerResult`]
//! - `POST /shutdown` — closes the browser gracefully, then ends the computer
//!
//! Errors are `{"error": "..."}` with a status that the control plane passes on.

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
