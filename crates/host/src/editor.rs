//! The text editor tool (`str_replace_based_edit_tool`; `str_replace_editor`
//! in its older versions) with the semantics and texts of Anthropic's
//! reference tools: `view`, `create`, `str_replace`, `insert`, and
//! `undo_edit` for the versions that have it. Models are tuned on those
//! texts, so they are kept to the letter, quirks included: paths are
//! normalised as Python's `pathlib` does, files are read with universal
//! newlines, and an edit expands the tabs of the whole file.
//!
//! Files are read and written with the host's rights, which inside the
//! computer are the computer user's.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Mutex;

use crate::exec::{Environment, OUTPUT_LIMIT};
use crate::proto::{EditRequest, ToolOutput};

/// Lines shown before and after an edit.
const SNIPPET_LINES: usize = 4;
/// Characters shown of a file (or a listing) unless told otherwise.
pub const MAX_RESPONSE_LEN: usize = 16000;
/// Appended where a view is cut.
const TRUNCATED_MESSAGE: &str = "<response clipped><NOTE>To save on context only part of this file has been shown to you. You should retry this tool after you have searched inside the file with `grep -n` in order to find the line numbers of what you are looking for.</NOTE>";
/// Larger files are refused: the reference reads whole files, and the host
/// must not run out of memory over one.
const MAX_FILE: u64 = 64 << 20;
/// Bytes of old file contents kept for `undo_edit`, oldest dropped first.
const HISTORY_LIMIT: usize = 64 << 20;
/// How long a directory listing may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(120);

/// The request itself is unusable (not the model's input's content, which
/// the tool answers).
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the editor's input must be a JSON object")]
    NotAnObject,
}

/// What the tool says when it refuses: its `error` text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ToolError(String);

impl ToolError {
    fn new(message: impl Into<String>) -> ToolError {
        ToolError(message.into())
    }
}

/// The editor of one computer, with the history `undo_edit` goes back
/// through (kept only for the versions that can undo: nothing else reads
/// it). Calls take turns, as the reference's do.
#[derive(Default)]
pub struct Editor {
    history: Mutex<History>,
}

impl Editor {
    pub fn new() -> Editor {
        Editor::default()
    }

    /// Serves one call; `env` is given to the programs it runs (`find`).
    pub async fn run(&self, env: &Environment, req: &EditRequest) -> Result<ToolOutput, EditError> {
        let input = req.input.as_object().ok_or(EditError::NotAnObject)?;
        let mut history = self.history.lock().await;
        Ok(call(env, req, input, &mut history)
            .await
            .unwrap_or_else(|e| ToolOutput::error(e.0)))
    }
}

async fn call(
    env: &Environment,
    req: &EditRequest,
    input: &Map<String, Value>,
    history: &mut History,
) -> Result<ToolOutput, ToolError> {
    let command = match input.get("command") {
        None | Some(Value::Null) => return Err(ToolError::new("Parameter `command` is required")),
        Some(Value::String(c)) => c.clone(),
        Some(other) => other.to_string(),
    };
    let path = string_param(input, "path")?.ok_or_else(|| {
        ToolError::new(format!(
            "Parameter `path` is required for command: {command}"
        ))
    })?;
    let path = python_path(path);
    let kind = validate_path(&command, &path).await?;
    match command.as_str() {
        "view" => {
            let limit = req.max_characters.unwrap_or(MAX_RESPONSE_LEN);
            view(env, &path, kind, input.get("view_range"), limit).await
        }
        "create" => {
            let text = string_param(input, "file_text")?.ok_or_else(|| {
                ToolError::new("Parameter `file_text` is required for command: create")
            })?;
            write_text(&path, text).await?;
            if req.undo {
                history.push(&path, text.to_owned());
            }
            Ok(ToolOutput::output(format!(
                "File created successfully at: {path}"
            )))
        }
        "str_replace" => {
            let old = string_param(input, "old_str")?.ok_or_else(|| {
                ToolError::new("Parameter `old_str` is required for command: str_replace")
            })?;
            let new = string_param(input, "new_str")?;
            str_replace(&path, old, new, req.undo.then_some(history)).await
        }
        "insert" => {
            let line =
                match input.get("insert_line") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_i64().ok_or_else(|| {
                        ToolError::new("Parameter `insert_line` must be an integer")
                    })?),
                };
            let line = line.ok_or_else(|| {
                ToolError::new("Parameter `insert_line` is required for command: insert")
            })?;
            // text_editor_20250728 calls it `insert_text`, the versions
            // before `new_str`; either is taken.
            let text = match string_param(input, "insert_text")? {
                Some(text) => Some(text),
                None => string_param(input, "new_str")?,
            };
            let text = text.ok_or_else(|| {
                let name = if req.undo { "new_str" } else { "insert_text" };
                ToolError::new(format!(
                    "Parameter `{name}` is required for command: insert"
                ))
            })?;
            insert(&path, line, text, req.undo.then_some(history)).await
        }
        "undo_edit" if req.undo => undo_edit(&path, history).await,
        _ => {
            let mut allowed = String::from("view, create, str_replace, insert");
            if req.undo {
                allowed.push_str(", undo_edit");
            }
            Err(ToolError::new(format!(
                "Unrecognized command {command}. The allowed commands for the {} tool are: {allowed}",
                req.tool_name
            )))
        }
    }
}

/// A string parameter of the input; `null` counts as absent.
fn string_param<'a>(
    input: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ToolError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ToolError::new(format!(
            "Parameter `{name}` must be a string"
        ))),
    }
}

/// What a path names, as far as the checks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Missing,
    Dir,
    File,
    /// It could not be looked at (e.g. no permission): reading or writing
    /// it will say why.
    Unknown,
}

async fn kind_of(path: &str) -> Kind {
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.is_dir() => Kind::Dir,
        Ok(_) => Kind::File,
        Err(e) => {
            let missing = matches!(
                e.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::NotADirectory
                    | std::io::ErrorKind::InvalidInput
            ) || matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EBADF));
            if missing {
                Kind::Missing
            } else {
                Kind::Unknown
            }
        }
    }
}

/// The reference's checks of a path against a command, in its order.
async fn validate_path(command: &str, path: &str) -> Result<Kind, ToolError> {
    if !path.starts_with('/') {
        // The reference suggests the very path it was given.
        return Err(ToolError::new(format!(
            "The path {path} is not an absolute path, it should start with `/`. Maybe you meant {path}?"
        )));
    }
    let kind = kind_of(path).await;
    if kind == Kind::Missing && command != "create" {
        return Err(ToolError::new(format!(
            "The path {path} does not exist. Please provide a valid path."
        )));
    }
    if matches!(kind, Kind::Dir | Kind::File) && command == "create" {
        return Err(ToolError::new(format!(
            "File already exists at: {path}. Cannot overwrite files using command `create`."
        )));
    }
    if kind == Kind::Dir && command != "view" {
        return Err(ToolError::new(format!(
            "The path {path} is a directory and only the `view` command can be used on directories"
        )));
    }
    Ok(kind)
}

async fn view(
    env: &Environment,
    path: &str,
    kind: Kind,
    view_range: Option<&Value>,
    limit: usize,
) -> Result<ToolOutput, ToolError> {
    let range_given = view_range.is_some_and(truthy);
    if kind == Kind::Dir {
        if range_given {
            return Err(ToolError::new(
                "The `view_range` parameter is not allowed when `path` points to a directory.",
            ));
        }
        let (stdout, stderr) = list_dir(env, path).await?;
        let stdout = maybe_truncate(&stdout, MAX_RESPONSE_LEN);
        let stderr = maybe_truncate(&stderr, MAX_RESPONSE_LEN);
        let output = if stderr.is_empty() {
            format!(
                "Here's the files and directories up to 2 levels deep in {path}, excluding hidden items:\n{stdout}\n"
            )
        } else {
            stdout
        };
        return Ok(ToolOutput {
            output: Some(output),
            error: Some(stderr),
            system: None,
        });
    }

    let content = read_text(path).await?;
    let (content, init_line) = match view_range.filter(|_| range_given) {
        None => (content, 1),
        Some(range) => {
            let (first, last) = two_integers(range).ok_or_else(|| {
                ToolError::new("Invalid `view_range`. It should be a list of two integers.")
            })?;
            let lines: Vec<&str> = content.split('\n').collect();
            let n = lines.len() as i64;
            let shown = format!("[{first}, {last}]");
            if first < 1 || first > n {
                return Err(ToolError::new(format!(
                    "Invalid `view_range`: {shown}. Its first element `{first}` should be within the range of lines of the file: [1, {n}]"
                )));
            }
            if last > n {
                return Err(ToolError::new(format!(
                    "Invalid `view_range`: {shown}. Its second element `{last}` should be smaller than the number of lines in the file: `{n}`"
                )));
            }
            if last != -1 && last < first {
                return Err(ToolError::new(format!(
                    "Invalid `view_range`: {shown}. Its second element `{last}` should be larger or equal than its first `{first}`"
                )));
            }
            let start = (first - 1) as usize;
            let end = if last == -1 {
                lines.len()
            } else {
                last as usize
            };
            (lines[start..end].join("\n"), first)
        }
    };
    Ok(ToolOutput::output(make_output(
        &content, path, init_line, limit,
    )))
}

/// `[a, b]` of two integers.
fn two_integers(range: &Value) -> Option<(i64, i64)> {
    match range.as_array()?.as_slice() {
        [a, b] => Some((a.as_i64()?, b.as_i64()?)),
        _ => None,
    }
}

/// Whether Python would count `value` as true.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

async fn str_replace(
    path: &str,
    old: &str,
    new: Option<&str>,
    history: Option<&mut History>,
) -> Result<ToolOutput, ToolError> {
    let content = expand_tabs(&read_text(path).await?);
    let old = expand_tabs(old);
    let new = new.map(expand_tabs).unwrap_or_default();

    let occurrences = content.matches(old.as_str()).count();
    if occurrences == 0 {
        return Err(ToolError::new(format!(
            "No replacement was performed, old_str `{old}` did not appear verbatim in {path}."
        )));
    }
    if occurrences > 1 {
        let lines: Vec<String> = content
            .split('\n')
            .enumerate()
            .filter(|(_, line)| line.contains(old.as_str()))
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        return Err(ToolError::new(format!(
            "No replacement was performed. Multiple occurrences of old_str `{old}` in lines [{}]. Please ensure it is unique",
            lines.join(", ")
        )));
    }

    let new_content = content.replacen(old.as_str(), &new, 1);
    write_text(path, &new_content).await?;
    let before = content.find(old.as_str()).unwrap_or(0);
    if let Some(history) = history {
        history.push(path, content.clone());
    }

    let replacement_line = content[..before].matches('\n').count();
    let start = replacement_line.saturating_sub(SNIPPET_LINES);
    let end = replacement_line + SNIPPET_LINES + new.matches('\n').count();
    let lines: Vec<&str> = new_content.split('\n').collect();
    let snippet = lines[start.min(lines.len())..(end + 1).min(lines.len())].join("\n");

    Ok(ToolOutput::output(format!(
        "The file {path} has been edited. {}Review the changes and make sure they are as expected. Edit the file again if necessary.",
        make_output(
            &snippet,
            &format!("a snippet of {path}"),
            start as i64 + 1,
            MAX_RESPONSE_LEN
        )
    )))
}

async fn insert(
    path: &str,
    line: i64,
    text: &str,
    history: Option<&mut History>,
) -> Result<ToolOutput, ToolError> {
    let content = expand_tabs(&read_text(path).await?);
    let text = expand_tabs(text);
    let lines: Vec<&str> = content.split('\n').collect();
    let n = lines.len();
    if line < 0 || line > n as i64 {
        return Err(ToolError::new(format!(
            "Invalid `insert_line` parameter: {line}. It should be within the range of lines of the file: [0, {n}]"
        )));
    }
    let at = line as usize;
    let new_lines: Vec<&str> = text.split('\n').collect();
    let new_content = [&lines[..at], &new_lines[..], &lines[at..]]
        .concat()
        .join("\n");
    let snippet = [
        &lines[at.saturating_sub(SNIPPET_LINES)..at],
        &new_lines[..],
        &lines[at..(at + SNIPPET_LINES).min(n)],
    ]
    .concat()
    .join("\n");

    write_text(path, &new_content).await?;
    if let Some(history) = history {
        history.push(path, content.clone());
    }
    Ok(ToolOutput::output(format!(
        "The file {path} has been edited. {}Review the changes and make sure they are as expected (correct indentation, no duplicate lines, etc). Edit the file again if necessary.",
        make_output(
            &snippet,
            "a snippet of the edited file",
            (line - SNIPPET_LINES as i64 + 1).max(1),
            MAX_RESPONSE_LEN
        )
    )))
}

async fn undo_edit(path: &str, history: &mut History) -> Result<ToolOutput, ToolError> {
    let old = history
        .pop(path)
        .ok_or_else(|| ToolError::new(format!("No edit history found for {path}.")))?;
    write_text(path, &old).await?;
    Ok(ToolOutput::output(format!(
        "Last edit to {path} undone successfully. {}",
        make_output(&old, path, 1, MAX_RESPONSE_LEN)
    )))
}

/// `content` as `cat -n` shows it, numbered from `init_line`, after the
/// header the reference gives it; cut at `limit` characters (0: never).
fn make_output(content: &str, descriptor: &str, init_line: i64, limit: usize) -> String {
    let content = expand_tabs(&maybe_truncate(content, limit));
    let mut out = format!("Here's the result of running `cat -n` on {descriptor}:\n");
    for (i, line) in content.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{:6}\t{line}", i as i64 + init_line));
    }
    out.push('\n');
    out
}

/// The first `limit` characters of `content` and a notice, if it is
/// longer (a `limit` of 0 never cuts).
fn maybe_truncate(content: &str, limit: usize) -> String {
    if limit == 0 {
        return content.to_owned();
    }
    match content.char_indices().nth(limit) {
        Some((at, _)) => format!("{}{TRUNCATED_MESSAGE}", &content[..at]),
        None => content.to_owned(),
    }
}

/// Python's `str.expandtabs()`: tab stops every 8 characters, the column
/// counted in characters and reset by `\n` and `\r`.
fn expand_tabs(text: &str) -> String {
    if !text.contains('\t') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut column = 0usize;
    for c in text.chars() {
        match c {
            '\t' => {
                let spaces = 8 - column % 8;
                out.extend(std::iter::repeat_n(' ', spaces));
                column += spaces;
            }
            '\n' | '\r' => {
                out.push(c);
                column = 0;
            }
            _ => {
                out.push(c);
                column += 1;
            }
        }
    }
    out
}

/// A path as Python's `pathlib` prints it: repeated slashes and `.`
/// components gone, no trailing slash, `//` kept at the start only when
/// exactly two.
fn python_path(path: &str) -> String {
    let (root, rest) = if path.starts_with("//") && !path.starts_with("///") {
        ("//", &path[2..])
    } else if path.starts_with('/') {
        ("/", path.trim_start_matches('/'))
    } else {
        ("", path)
    };
    let parts: Vec<&str> = rest
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if root.is_empty() && parts.is_empty() {
        return ".".to_owned();
    }
    format!("{root}{}", parts.join("/"))
}

/// A file's text as Python's `read_text()` gives it: UTF-8, with `\r\n`
/// and `\r` read as `\n`.
async fn read_text(path: &str) -> Result<String, ToolError> {
    let fail = |why: String| ToolError::new(format!("Ran into {why} while trying to read {path}"));
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| fail(os_error_text(&e, path)))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| fail(os_error_text(&e, path)))?
        .len();
    if len > MAX_FILE {
        return Err(fail(format!("a file larger than {} MiB", MAX_FILE >> 20)));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| fail(os_error_text(&e, path)))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(fail(format!("a file larger than {} MiB", MAX_FILE >> 20)));
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return Err(fail(decode_error_text(e.utf8_error(), e.as_bytes()))),
    };
    Ok(if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text
    })
}

/// Writes `text` over `path` (creating the file, not its directory).
async fn write_text(path: &str, text: &str) -> Result<(), ToolError> {
    tokio::fs::write(path, text).await.map_err(|e| {
        ToolError::new(format!(
            "Ran into {} while trying to write to {path}",
            os_error_text(&e, path)
        ))
    })
}

/// An I/O error as Python prints an `OSError` about `path`:
/// `[Errno 2] No such file or directory: '/a/b'`.
fn os_error_text(e: &std::io::Error, path: &str) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let full = std::io::Error::from_raw_os_error(code).to_string();
            let description = full
                .strip_suffix(&format!(" (os error {code})"))
                .unwrap_or(&full);
            format!("[Errno {code}] {description}: {}", python_repr(path))
        }
        None if path.contains('\0') => "embedded null byte".to_owned(),
        None => e.to_string(),
    }
}

/// A string as Python's `repr` shows it.
fn python_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A UTF-8 decoding error as Python reports it.
fn decode_error_text(e: std::str::Utf8Error, bytes: &[u8]) -> String {
    let start = e.valid_up_to();
    let (end, reason) = match e.error_len() {
        None => (bytes.len(), "unexpected end of data"),
        Some(n) => {
            let lead = bytes[start];
            let reason = if (0x80..0xc2).contains(&lead) || lead > 0xf4 {
                "invalid start byte"
            } else {
                "invalid continuation byte"
            };
            (start + n, reason)
        }
    };
    if end - start == 1 {
        format!(
            "'utf-8' codec can't decode byte 0x{:02x} in position {start}: {reason}",
            bytes[start]
        )
    } else {
        format!(
            "'utf-8' codec can't decode bytes in position {start}-{}: {reason}",
            end - 1
        )
    }
}

/// The reference lists a directory with
/// `find {path} -maxdepth 2 -not -path '*/\.*'` through a shell; here
/// `find` gets the path as one argument, so any path works. Returns its
/// stdout and stderr.
async fn list_dir(env: &Environment, path: &str) -> Result<(String, String), ToolError> {
    let mut cmd = env.command("find");
    cmd.arg(path)
        .args(["-maxdepth", "2", "-not", "-path", r"*/\.*"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        ToolError::new(format!(
            "Ran into {} while trying to read {path}",
            os_error_text(&e, "find")
        ))
    })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let listed = async {
        let (out, err) = tokio::join!(read_capped(stdout), read_capped(stderr));
        let _ = child.wait().await;
        (out, err)
    };
    match tokio::time::timeout(LIST_TIMEOUT, listed).await {
        Ok((out, err)) => Ok((
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )),
        Err(_) => Err(ToolError::new(format!(
            r"Command 'find {path} -maxdepth 2 -not -path '*/\.*'' timed out after {}.0 seconds",
            LIST_TIMEOUT.as_secs()
        ))),
    }
}

/// All of `pipe`, keeping its first [`OUTPUT_LIMIT`] bytes (far more than
/// a view shows).
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Old contents per path, newest last, for `undo_edit`; bounded in bytes
/// by dropping the oldest entries first.
#[derive(Default)]
struct History {
    by_path: HashMap<String, Vec<String>>,
    /// Paths in the order their entries were added.
    order: VecDeque<String>,
    bytes: usize,
}

impl History {
    fn push(&mut self, path: &str, text: String) {
        self.bytes += text.len();
        self.by_path.entry(path.to_owned()).or_default().push(text);
        self.order.push_back(path.to_owned());
        while self.bytes > HISTORY_LIMIT {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(entries) = self.by_path.get_mut(&oldest) {
                if !entries.is_empty() {
                    let dropped = entries.remove(0);
                    self.bytes -= dropped.len();
                }
            }
        }
    }

    fn pop(&mut self, path: &str) -> Option<String> {
        let text = self.by_path.get_mut(path)?.pop()?;
        self.bytes -= text.len();
        if let Some(i) = self.order.iter().rposition(|p| p == path) {
            self.order.remove(i);
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A directory to edit in, and the editor of one tool version.
    struct Fixture {
        dir: tempfile::TempDir,
        editor: Editor,
        undo: bool,
        tool_name: &'static str,
        max_characters: Option<usize>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                // Not a hidden directory: a listing leaves those out.
                dir: tempfile::Builder::new().prefix("editor").tempdir().unwrap(),
                editor: Editor::new(),
                undo: false,
                tool_name: "str_replace_based_edit_tool",
                max_characters: None,
            }
        }

        /// The older tool versions, with `undo_edit`.
        fn old() -> Fixture {
            Fixture {
                undo: true,
                tool_name: "str_replace_editor",
                ..Fixture::new()
            }
        }

        fn d(&self) -> String {
            self.dir.path().display().to_string()
        }

        fn file(&self, name: &str, content: &str) -> String {
            let path = self.dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path.display().to_string()
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.path().join(name)).unwrap()
        }

        /// Runs `input` (`$D` standing for the directory), with the
        /// directory written back as `$D` in the answer.
        async fn call(&self, input: Value) -> ToolOutput {
            let d = self.d();
            let input: Value = serde_json::from_str(&input.to_string().replace("$D", &d)).unwrap();
            let req = EditRequest {
                tool_name: self.tool_name.to_owned(),
                undo: self.undo,
                max_characters: self.max_characters,
                input,
            };
            let out = self
                .editor
                .run(&Environment::base(":0"), &req)
                .await
                .unwrap();
            let back = |s: Option<String>| s.map(|s| s.replace(&d, "$D"));
            ToolOutput {
                output: back(out.output),
                error: back(out.error),
                system: back(out.system),
            }
        }

        async fn output(&self, input: Value) -> String {
            let out = self.call(input).await;
            assert_eq!(out.error, None, "{out:?}");
            out.output.unwrap()
        }

        async fn error(&self, input: Value) -> String {
            let out = self.call(input).await;
            assert_eq!(out.output, None, "{out:?}");
            out.error.unwrap()
        }
    }

    fn twenty_lines() -> String {
        (1..=20).map(|i| format!("line {i}\n")).collect()
    }

    #[tokio::test]
    async fn paths_are_checked_as_the_reference_checks_them() {
        let f = Fixture::new();
        f.file("f.txt", "x");
        assert_eq!(
            f.error(json!({"command": "view", "path": "foo/./bar/"})).await,
            "The path foo/bar is not an absolute path, it should start with `/`. Maybe you meant foo/bar?"
        );
        assert_eq!(
            f.error(json!({"command": "view", "path": "$D/nope"})).await,
            "The path $D/nope does not exist. Please provide a valid path."
        );
        assert_eq!(
            f.error(json!({"command": "create", "path": "$D//./f.txt/", "file_text": "y"}))
                .await,
            "File already exists at: $D/f.txt. Cannot overwrite files using command `create`."
        );
        for input in [
            json!({"command": "str_replace", "path": "$D", "old_str": "a"}),
            json!({"command": "insert", "path": "$D", "insert_line": 0, "insert_text": "x"}),
            json!({"command": "bogus", "path": "$D"}),
        ] {
            assert_eq!(
                f.error(input).await,
                "The path $D is a directory and only the `view` command can be used on directories"
            );
        }
        assert_eq!(
            f.error(json!({"command": "view"})).await,
            "Parameter `path` is required for command: view"
        );
        assert_eq!(
            f.error(json!({"path": "$D"})).await,
            "Parameter `command` is required"
        );
        assert_eq!(f.read("f.txt"), "x");
    }

    #[tokio::test]
    async fn a_directory_is_listed_two_levels_deep_without_hidden_items() {
        let f = Fixture::new();
        for dir in ["a/b/c", ".hidden"] {
            std::fs::create_dir_all(f.dir.path().join(dir)).unwrap();
        }
        for file in ["a/x", "a/b/y", "a/b/c/z", ".hidden/q", "a/.h"] {
            f.file(file, "");
        }
        let out = f.call(json!({"command": "view", "path": "$D"})).await;
        assert_eq!(out.error.as_deref(), Some(""));
        let output = out.output.unwrap();
        let header =
            "Here's the files and directories up to 2 levels deep in $D, excluding hidden items:\n";
        let listing = output
            .strip_prefix(header)
            .unwrap()
            .strip_suffix("\n")
            .unwrap();
        let mut entries: Vec<&str> = listing.lines().collect();
        entries.sort();
        assert_eq!(entries, ["$D", "$D/a", "$D/a/b", "$D/a/x"]);
        assert!(listing.ends_with('\n'));
        assert_eq!(
            f.error(json!({"command": "view", "path": "$D", "view_range": [1, 2]}))
                .await,
            "The `view_range` parameter is not allowed when `path` points to a directory."
        );
    }

    #[tokio::test]
    async fn a_file_is_shown_numbered_with_tabs_expanded_and_newlines_universal() {
        let f = Fixture::new();
        f.file("f.txt", "one\n\ttab\nx\ty\tz\n\nlast");
        f.file("crlf.txt", "a\r\nb\rc\r\n");
        f.file("empty.txt", "");
        assert_eq!(
            f.output(json!({"command": "view", "path": "$D/f.txt"})).await,
            "Here's the result of running `cat -n` on $D/f.txt:\n     1\tone\n     2\t        tab\n     3\tx       y       z\n     4\t\n     5\tlast\n"
        );
        assert_eq!(
            f.output(json!({"command": "view", "path": "$D/crlf.txt"})).await,
            "Here's the result of running `cat -n` on $D/crlf.txt:\n     1\ta\n     2\tb\n     3\tc\n     4\t\n"
        );
        assert_eq!(
            f.output(json!({"command": "view", "path": "$D/empty.txt"}))
                .await,
            "Here's the result of running `cat -n` on $D/empty.txt:\n     1\t\n"
        );
    }

    #[tokio::test]
    async fn view_ranges_are_checked_with_the_reference_texts() {
        let f = Fixture::new();
        f.file("f.txt", &twenty_lines());
        let view =
            |range: Value| json!({"command": "view", "path": "$D/f.txt", "view_range": range});
        assert_eq!(
            f.output(view(json!([2, 3]))).await,
            "Here's the result of running `cat -n` on $D/f.txt:\n     2\tline 2\n     3\tline 3\n"
        );
        assert_eq!(
            f.output(view(json!([19, -1]))).await,
            "Here's the result of running `cat -n` on $D/f.txt:\n    19\tline 19\n    20\tline 20\n    21\t\n"
        );
        // An empty range is no range.
        assert!(f
            .output(view(json!([])))
            .await
            .contains("    20\tline 20\n"));
        let cases = [
            (json!([0, 3]), "Invalid `view_range`: [0, 3]. Its first element `0` should be within the range of lines of the file: [1, 21]"),
            (json!([22, 23]), "Invalid `view_range`: [22, 23]. Its first element `22` should be within the range of lines of the file: [1, 21]"),
            (json!([2, 22]), "Invalid `view_range`: [2, 22]. Its second element `22` should be smaller than the number of lines in the file: `21`"),
            (json!([5, 3]), "Invalid `view_range`: [5, 3]. Its second element `3` should be larger or equal than its first `5`"),
            (json!([5, -3]), "Invalid `view_range`: [5, -3]. Its second element `-3` should be larger or equal than its first `5`"),
        ];
        for (range, text) in cases {
            assert_eq!(f.error(view(range)).await, text);
        }
        for range in [json!([5]), json!([1, 2, 3]), json!([1.0, 2]), json!("1,2")] {
            assert_eq!(
                f.error(view(range)).await,
                "Invalid `view_range`. It should be a list of two integers."
            );
        }
    }

    #[tokio::test]
    async fn long_views_are_cut_with_the_reference_notice() {
        let mut f = Fixture::new();
        let content: String = (0..300)
            .map(|i| format!("{i:05} {}\n", "x".repeat(93)))
            .collect();
        f.file("f.txt", &content);
        let out = f
            .output(json!({"command": "view", "path": "$D/f.txt"}))
            .await;
        assert_eq!(out.chars().count(), 17419);
        assert!(out.ends_with(&format!("\n   161\t{TRUNCATED_MESSAGE}\n")));
        // The tool definition's max_characters sets the cut.
        f.max_characters = Some(250);
        let out = f
            .output(json!({"command": "view", "path": "$D/f.txt"}))
            .await;
        assert!(
            out.ends_with(&format!(
                "\n     3\t00002 {}{TRUNCATED_MESSAGE}\n",
                "x".repeat(44)
            )),
            "{out}"
        );
    }

    #[tokio::test]
    async fn create_writes_new_files_only_where_the_directory_is() {
        let f = Fixture::new();
        assert_eq!(
            f.output(
                json!({"command": "create", "path": "$D/f.txt", "file_text": "hello\n\tworld\n"})
            )
            .await,
            "File created successfully at: $D/f.txt"
        );
        // Created as given: tabs are expanded only by edits.
        assert_eq!(f.read("f.txt"), "hello\n\tworld\n");
        assert_eq!(
            f.error(json!({"command": "create", "path": "$D/no/dir/f.txt", "file_text": "x"}))
                .await,
            "Ran into [Errno 2] No such file or directory: '$D/no/dir/f.txt' while trying to write to $D/no/dir/f.txt"
        );
        assert_eq!(
            f.error(json!({"command": "create", "path": "$D/it's/x", "file_text": "x"}))
                .await,
            "Ran into [Errno 2] No such file or directory: \"$D/it's/x\" while trying to write to $D/it's/x"
        );
        assert_eq!(
            f.error(json!({"command": "create", "path": "$D/g.txt"}))
                .await,
            "Parameter `file_text` is required for command: create"
        );
    }

    #[tokio::test]
    async fn str_replace_replaces_one_occurrence_and_shows_the_snippet() {
        let f = Fixture::new();
        f.file("f.txt", &twenty_lines());
        let replace = |old: &str, new: Option<&str>| json!({"command": "str_replace", "path": "$D/f.txt", "old_str": old, "new_str": new});
        assert_eq!(
            f.output(replace("line 10\n", Some("ten\nTEN\n"))).await,
            "The file $D/f.txt has been edited. Here's the result of running `cat -n` on a snippet of $D/f.txt:\n     6\tline 6\n     7\tline 7\n     8\tline 8\n     9\tline 9\n    10\tten\n    11\tTEN\n    12\tline 11\n    13\tline 12\n    14\tline 13\n    15\tline 14\n    16\tline 15\nReview the changes and make sure they are as expected. Edit the file again if necessary."
        );
        assert_eq!(
            f.error(replace("line 1", Some("x"))).await,
            "No replacement was performed. Multiple occurrences of old_str `line 1` in lines [1, 12, 13, 14, 15, 16, 17, 18, 19, 20]. Please ensure it is unique"
        );
        assert_eq!(
            f.error(replace("nothing", Some("x"))).await,
            "No replacement was performed, old_str `nothing` did not appear verbatim in $D/f.txt."
        );
        // No new_str: the text is deleted.
        assert_eq!(
            f.output(replace("line 2\nline 3", None)).await,
            "The file $D/f.txt has been edited. Here's the result of running `cat -n` on a snippet of $D/f.txt:\n     1\tline 1\n     2\t\n     3\tline 4\n     4\tline 5\n     5\tline 6\n     6\tline 7\nReview the changes and make sure they are as expected. Edit the file again if necessary."
        );
        assert!(f.read("f.txt").starts_with("line 1\n\nline 4\n"));
        assert_eq!(
            f.error(json!({"command": "str_replace", "path": "$D/f.txt", "new_str": "x"}))
                .await,
            "Parameter `old_str` is required for command: str_replace"
        );

        f.file("m.txt", "a\nb\na\nb\n");
        let multi = |old: &str| json!({"command": "str_replace", "path": "$D/m.txt", "old_str": old, "new_str": "x"});
        assert_eq!(
            f.error(multi("a\nb")).await,
            "No replacement was performed. Multiple occurrences of old_str `a\nb` in lines []. Please ensure it is unique"
        );
        assert_eq!(
            f.error(multi("")).await,
            "No replacement was performed. Multiple occurrences of old_str `` in lines [1, 2, 3, 4, 5]. Please ensure it is unique"
        );
    }

    #[tokio::test]
    async fn an_edit_expands_the_tabs_of_the_whole_file() {
        let f = Fixture::new();
        f.file("f.txt", "x\ta\n\tb\n");
        assert_eq!(
            f.output(json!({"command": "str_replace", "path": "$D/f.txt", "old_str": "\tb", "new_str": "\tc\td"}))
                .await,
            "The file $D/f.txt has been edited. Here's the result of running `cat -n` on a snippet of $D/f.txt:\n     1\tx       a\n     2\t        c       d\n     3\t\nReview the changes and make sure they are as expected. Edit the file again if necessary."
        );
        assert_eq!(f.read("f.txt"), "x       a\n        c       d\n");
    }

    #[tokio::test]
    async fn insert_puts_text_after_the_line_given() {
        let f = Fixture::new();
        f.file("f.txt", &twenty_lines());
        let insert = |line: i64, text: &str| json!({"command": "insert", "path": "$D/f.txt", "insert_line": line, "insert_text": text});
        let tail = "Review the changes and make sure they are as expected (correct indentation, no duplicate lines, etc). Edit the file again if necessary.";
        assert_eq!(
            f.output(insert(0, "top")).await,
            format!("The file $D/f.txt has been edited. Here's the result of running `cat -n` on a snippet of the edited file:\n     1\ttop\n     2\tline 1\n     3\tline 2\n     4\tline 3\n     5\tline 4\n{tail}")
        );
        assert_eq!(
            f.output(insert(10, "after ten\n\tmore")).await,
            format!("The file $D/f.txt has been edited. Here's the result of running `cat -n` on a snippet of the edited file:\n     7\tline 6\n     8\tline 7\n     9\tline 8\n    10\tline 9\n    11\tafter ten\n    12\t        more\n    13\tline 10\n    14\tline 11\n    15\tline 12\n    16\tline 13\n{tail}")
        );
        assert_eq!(
            f.output(insert(23, "end")).await,
            format!("The file $D/f.txt has been edited. Here's the result of running `cat -n` on a snippet of the edited file:\n    20\tline 17\n    21\tline 18\n    22\tline 19\n    23\tline 20\n    24\tend\n    25\t\n{tail}")
        );
        for line in [30, -1] {
            assert_eq!(
                f.error(insert(line, "x")).await,
                format!("Invalid `insert_line` parameter: {line}. It should be within the range of lines of the file: [0, 25]")
            );
        }
        assert_eq!(
            f.error(json!({"command": "insert", "path": "$D/f.txt", "insert_text": "x"}))
                .await,
            "Parameter `insert_line` is required for command: insert"
        );
        assert_eq!(
            f.error(json!({"command": "insert", "path": "$D/f.txt", "insert_line": 2}))
                .await,
            "Parameter `insert_text` is required for command: insert"
        );
        // The older parameter name is taken too.
        f.output(
            json!({"command": "insert", "path": "$D/f.txt", "insert_line": 1, "new_str": "second"}),
        )
        .await;
        assert!(f.read("f.txt").starts_with("top\nsecond\nline 1\n"));
    }

    #[tokio::test]
    async fn undo_exists_only_where_the_version_has_it() {
        let f = Fixture::new();
        f.file("f.txt", "a\nb\nc");
        let unrecognized = "Unrecognized command undo_edit. The allowed commands for the str_replace_based_edit_tool tool are: view, create, str_replace, insert";
        assert_eq!(
            f.error(json!({"command": "undo_edit", "path": "$D/f.txt"}))
                .await,
            unrecognized
        );

        let f = Fixture::old();
        f.file("f.txt", "a\nb\nc");
        let undo = json!({"command": "undo_edit", "path": "$D/f.txt"});
        assert_eq!(
            f.error(undo.clone()).await,
            "No edit history found for $D/f.txt."
        );
        f.output(
            json!({"command": "str_replace", "path": "$D/f.txt", "old_str": "b", "new_str": "B"}),
        )
        .await;
        f.output(
            json!({"command": "insert", "path": "$D/f.txt", "insert_line": 1, "new_str": "new"}),
        )
        .await;
        assert_eq!(
            f.error(json!({"command": "insert", "path": "$D/f.txt", "insert_line": 1}))
                .await,
            "Parameter `new_str` is required for command: insert"
        );
        assert_eq!(
            f.output(undo.clone()).await,
            "Last edit to $D/f.txt undone successfully. Here's the result of running `cat -n` on $D/f.txt:\n     1\ta\n     2\tB\n     3\tc\n"
        );
        f.output(undo.clone()).await;
        assert_eq!(f.read("f.txt"), "a\nb\nc");
        assert_eq!(f.error(undo).await, "No edit history found for $D/f.txt.");
        assert_eq!(
            f.error(json!({"command": "bogus", "path": "$D/f.txt"})).await,
            "Unrecognized command bogus. The allowed commands for the str_replace_editor tool are: view, create, str_replace, insert, undo_edit"
        );
    }

    #[tokio::test]
    async fn unreadable_text_is_reported_as_python_reports_it() {
        let f = Fixture::new();
        std::fs::write(f.dir.path().join("a"), b"\xffabc").unwrap();
        std::fs::write(f.dir.path().join("b"), b"ab\xe2\x82").unwrap();
        std::fs::write(f.dir.path().join("c"), b"a\xf0\x9f\x28z").unwrap();
        let cases = [
            (
                "a",
                "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
            ),
            (
                "b",
                "'utf-8' codec can't decode bytes in position 2-3: unexpected end of data",
            ),
            (
                "c",
                "'utf-8' codec can't decode bytes in position 1-2: invalid continuation byte",
            ),
        ];
        for (name, why) in cases {
            assert_eq!(
                f.error(json!({"command": "view", "path": format!("$D/{name}")}))
                    .await,
                format!("Ran into {why} while trying to read $D/{name}")
            );
        }
    }

    #[test]
    fn python_helpers_match_python() {
        assert_eq!(python_path("/a//b/./c/"), "/a/b/c");
        assert_eq!(python_path("//a"), "//a");
        assert_eq!(python_path("///a"), "/a");
        assert_eq!(python_path(""), ".");
        assert_eq!(python_path("./x/.."), "x/..");
        assert_eq!(
            expand_tabs("a\tb\r\tc\n\t"),
            "a       b\r        c\n        "
        );
        assert_eq!(expand_tabs("é\tx"), "é       x");
        assert_eq!(python_repr("it's"), "\"it's\"");
        assert_eq!(python_repr("a\"b'"), "'a\"b\\''");
        assert_eq!(python_repr("t\tn\n\x01"), "'t\\tn\\n\\x01'");
        assert_eq!(
            maybe_truncate("abcdé", 4),
            format!("abcd{TRUNCATED_MESSAGE}")
        );
        assert_eq!(maybe_truncate("abcd", 4), "abcd");
        assert_eq!(maybe_truncate("abcd", 0), "abcd");
    }

    #[test]
    fn history_drops_the_oldest_entries_past_its_bound() {
        let mut h = History::default();
        h.push("/a", "x".repeat(HISTORY_LIMIT / 2));
        h.push("/b", "y".repeat(HISTORY_LIMIT / 2));
        h.push("/a", "z".into());
        assert_eq!(h.pop("/a").as_deref(), Some("z"));
        assert_eq!(h.pop("/a"), None);
        assert_eq!(h.pop("/b").map(|s| s.len()), Some(HISTORY_LIMIT / 2));
        assert_eq!(h.bytes, 0);
    }
}
