//! Commands run for the control plane: `bash -c`, as the computer's user, in
//! `/session`, with the session's secrets in the environment; output capped,
//! the whole process group killed on timeout.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::proto::ExecResult;

/// Output kept per stream; the rest is read and dropped.
pub const OUTPUT_LIMIT: usize = 1 << 20;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The environment every program started by the host gets.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub vars: Vec<(String, String)>,
}

impl Environment {
    pub fn base(display: &str) -> Environment {
        let vars = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HOME", "/home/computer"),
            ("USER", "computer"),
            ("LOGNAME", "computer"),
            ("SHELL", "/bin/bash"),
            ("LANG", "C.UTF-8"),
            ("TERM", "xterm-256color"),
            ("XDG_RUNTIME_DIR", "/tmp/runtime-computer"),
            ("DISPLAY", display),
        ];
        Environment {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn with(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Environment {
        self.vars.extend(vars);
        self
    }

    /// A command with exactly this environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear().envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// Output read so far from one stream.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

type Shared = std::sync::Arc<std::sync::Mutex<Captured>>;

/// Reads all of `r` into `into`, keeping the first `limit` bytes.
async fn read_capped(mut r: impl AsyncRead + Unpin, limit: usize, into: Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut c = into.lock().unwrap_or_else(|p| p.into_inner());
                let room = limit.saturating_sub(c.bytes.len());
                c.bytes.extend_from_slice(&buf[..n.min(room)]);
                c.truncated |= n > room;
            }
        }
    }
}

/// Starts reading one stream in the background.
fn capture(
    r: Option<impl AsyncRead + Unpin + Send + 'static>,
) -> (Shared, tokio::task::JoinHandle<()>) {
    let shared = Shared::default();
    let into = shared.clone();
    let task = tokio::spawn(async move {
        if let Some(r) = r {
            read_capped(r, OUTPUT_LIMIT, into).await;
        }
    });
    (shared, task)
}

/// Waits for `child`, started in a process group of its own; out of time,
/// the whole group (the command and everything it started) is killed.
/// Returns the exit code (128 + signal when a signal ended it; 124 on
/// timeout) and whether time ran out.
pub async fn wait_bounded(child: &mut Child, timeout: Duration) -> std::io::Result<(i32, bool)> {
    let pgid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            let status = status?;
            Ok((
                status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                false,
            ))
        }
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            child.wait().await?;
            Ok((124, true))
        }
    }
}

/// Runs `command` with `bash -c` in `cwd`.
pub async fn run(
    env: &Environment,
    command: &str,
    cwd: &str,
    timeout: Duration,
) -> std::io::Result<ExecResult> {
    let mut cmd = env.command("/bin/bash");
    cmd.arg("-c")
        .arg(command)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let (out, out_task) = capture(child.stdout.take());
    let (err, err_task) = capture(child.stderr.take());
    let (exit_code, timed_out) = wait_bounded(&mut child, timeout).await?;
    // A job the command left running in the background may hold the pipes
    // open; it keeps running, but its output is not waited for.
    let (stdout, out_cut) = collect(out, out_task).await;
    let (stderr, err_cut) = collect(err, err_task).await;
    Ok(ExecResult {
        exit_code,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        timed_out,
        truncated: out_cut || err_cut,
    })
}

/// How long output of background jobs is awaited after the command ended.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

async fn collect(shared: Shared, reader: tokio::task::JoinHandle<()>) -> (Vec<u8>, bool) {
    let abort = reader.abort_handle();
    if tokio::time::timeout(DRAIN_GRACE, reader).await.is_err() {
        abort.abort();
    }
    let mut c = shared.lock().unwrap_or_else(|p| p.into_inner());
    (std::mem::take(&mut c.bytes), c.truncated)
}
