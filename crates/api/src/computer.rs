//! The direct computer API: commands, computer-tool actions, files and
//! screenshots on a session's running computer.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /sessions/{id}/exec`: a shell command, run as the computer's user in `/session`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecCommand {
    /// Run by `bash -lc`.
    pub command: String,
    /// Seconds before the command is killed (1–3600, default 60).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// What a command did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecOutput {
    /// 128 + signal if a signal ended it; 124 on timeout.
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The command ran out of time and was killed.
    #[serde(default)]
    pub timed_out: bool,
    /// The output was longer than the limit and was cut.
    #[serde(default)]
    pub truncated: bool,
}

/// The answer to a computer-tool action.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComputerOutput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Base64 PNG, for actions that return an image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// `GET /sessions/{id}/files?path=…`: the directory to list.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFiles {
    /// Absolute path of a directory inside the computer, e.g. `/session/data`.
    pub path: String,
}

/// What a directory entry is. A link is reported as one, never followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Link,
    /// Sockets, pipes, devices.
    Other,
}

/// One entry of a [`DirListing`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    pub kind: FileKind,
    /// Bytes; for a link, the link's own size.
    pub size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// A directory inside the computer, as its user sees it: directories first,
/// then by name; at most 10 000 entries (`truncated` when there are more).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DirListing {
    /// The directory listed (normalised: no trailing `/`).
    pub path: String,
    pub entries: Vec<FileEntry>,
    pub truncated: bool,
}
