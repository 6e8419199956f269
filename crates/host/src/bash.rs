//! The bash tool: one shell per computer that keeps its state (working
//! directory, variables, background jobs) from call to call, with the
//! semantics and texts of Anthropic's reference tools.
//!
//! Each command is written to the shell's stdin followed by
//! `; echo '<<exit>>'`; what comes on stdout before that sentinel is the
//! command's output, and what came on stderr meanwhile its error. A command
//! that does not finish in time leaves the shell stuck: every later call
//! says so until the tool is restarted. The reference keeps all output;
//! here each stream is cut at [`OUTPUT_LIMIT`] bytes per call (and says so)
//! so that a runaway command cannot exhaust the host's memory.

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::exec::{Environment, OUTPUT_LIMIT};
use crate::proto::{BashRequest, ToolOutput};

/// How long a command may run before the shell counts as stuck.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Written after each command; its arrival on stdout ends the command.
const SENTINEL: &[u8] = b"<<exit>>";
/// Appended to a stream cut at [`OUTPUT_LIMIT`].
const CUT_NOTE: &str = "\n<response clipped: more than 1 MiB of output; the rest was dropped>";
/// How long a restart waits for the old shell to be gone.
const STOP_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BashError {
    #[error("cannot start bash: {0}")]
    Start(#[source] std::io::Error),
}

/// The computer's shell, started on first use. Calls take turns.
pub struct Bash {
    cwd: PathBuf,
    session: Mutex<Option<Session>>,
}

impl Bash {
    /// A tool whose shell will start in `cwd`.
    pub fn new(cwd: impl Into<PathBuf>) -> Bash {
        Bash {
            cwd: cwd.into(),
            session: Mutex::new(None),
        }
    }

    /// Serves one call. A shell started for it gets `env`; `timeout` bounds
    /// the command. Whatever the tool has to say, errors included, is in the
    /// answer; only a shell that cannot be started is an `Err`.
    pub async fn run(
        &self,
        env: &Environment,
        req: &BashRequest,
        timeout: Duration,
    ) -> Result<ToolOutput, BashError> {
        let mut guard = self.session.lock().await;
        if req.restart {
            if let Some(old) = guard.take() {
                old.stop().await;
            }
            *guard = Some(Session::start(env, &self.cwd)?);
            tracing::info!("bash tool restarted");
            return Ok(ToolOutput {
                system: Some("tool has been restarted.".to_owned()),
                ..ToolOutput::default()
            });
        }
        let session = match guard.take() {
            Some(session) => session,
            None => Session::start(env, &self.cwd)?,
        };
        let session = guard.insert(session);
        match &req.command {
            Some(command) => Ok(session.run(command, timeout).await),
            None => Ok(ToolOutput::error("no command provided.")),
        }
    }
}

/// One running shell.
struct Session {
    child: Child,
    /// The shell's process group (it leads a session of its own): what a
    /// restart kills, background jobs included.
    pgid: Option<i32>,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// `None` once the shell's stderr has closed.
    stderr: Option<ChildStderr>,
    /// Set once a command ran out of time (how long it was given): the
    /// shell is stuck until the tool is restarted.
    timed_out: Option<Duration>,
}

/// What the shell started ends with it.
impl Drop for Session {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// How waiting for a command ended.
enum Outcome {
    Sentinel,
    /// The shell's stdout closed: it exited, or the command closed it.
    Closed,
    TimedOut,
}

impl Session {
    fn start(env: &Environment, cwd: &std::path::Path) -> Result<Session, BashError> {
        let mut cmd = env.command("/bin/bash");
        cmd.current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: only setsid (async-signal-safe) runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(BashError::Start)?;
        let pgid = child.id().map(|pid| pid as i32);
        let (Some(stdin), Some(stdout), stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(BashError::Start(std::io::Error::other(
                "the shell's pipes are missing",
            )));
        };
        tracing::debug!(pid = pgid, "bash tool started");
        Ok(Session {
            child,
            pgid,
            stdin,
            stdout,
            stderr,
            timed_out: None,
        })
    }

    /// Kills the shell's whole process group and reaps the shell.
    async fn stop(mut self) {
        self.kill_group();
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(STOP_WAIT, self.child.wait()).await;
    }

    fn kill_group(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// The shell's exit code if it has exited.
    fn exit_code(&mut self) -> Option<i32> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(return_code(status)),
            _ => None,
        }
    }

    async fn run(&mut self, command: &str, timeout: Duration) -> ToolOutput {
        if let Some(rc) = self.exit_code() {
            return exited(rc, String::new(), String::new());
        }
        if let Some(given) = self.timed_out {
            return ToolOutput::error(timed_out_text(given));
        }
        let deadline = Instant::now() + timeout;
        let line = format!("{command}; echo '<<exit>>'\n");
        let mut out = Captured::default();
        let mut err = Captured::default();
        let mut out_buf = vec![0u8; 64 * 1024];
        let mut err_buf = vec![0u8; 64 * 1024];
        let outcome = {
            let Session {
                stdin,
                stdout,
                stderr,
                ..
            } = &mut *self;
            // The command is written while its output is read: a long
            // command must not wait for room in stdin while the shell waits
            // for room in stdout.
            let write = async {
                stdin.write_all(line.as_bytes()).await?;
                stdin.flush().await
            };
            tokio::pin!(write);
            let mut written = false;
            loop {
                tokio::select! {
                    r = &mut write, if !written => {
                        written = true;
                        if let Err(e) = r {
                            // The shell is gone; its stdout closing says so next.
                            tracing::debug!(error = %e, "writing to the bash tool's shell");
                        }
                    }
                    r = stdout.read(&mut out_buf) => match r {
                        Ok(0) | Err(_) => break Outcome::Closed,
                        Ok(n) => if out.push_until_sentinel(&out_buf[..n]) {
                            break Outcome::Sentinel;
                        },
                    },
                    r = read_some(stderr, &mut err_buf), if stderr.is_some() => match r {
                        Some(n) => err.push(&err_buf[..n]),
                        None => *stderr = None,
                    },
                    _ = tokio::time::sleep_until(deadline) => break Outcome::TimedOut,
                }
            }
        };
        match outcome {
            Outcome::Sentinel => {
                drain_pending(&mut self.stderr, &mut err, &mut err_buf, deadline).await;
                ToolOutput {
                    output: Some(out.text()),
                    error: Some(err.text()),
                    system: None,
                }
            }
            Outcome::Closed => {
                // Without its stdout the shell is of no more use: wait for
                // it to end, within the command's time.
                match tokio::time::timeout_at(deadline, self.child.wait()).await {
                    Ok(Ok(status)) => {
                        drain_pending(&mut self.stderr, &mut err, &mut err_buf, deadline).await;
                        exited(return_code(status), out.text(), err.text())
                    }
                    _ => self.time_out(timeout),
                }
            }
            Outcome::TimedOut => self.time_out(timeout),
        }
    }

    fn time_out(&mut self, timeout: Duration) -> ToolOutput {
        tracing::info!(?timeout, "a bash tool command timed out");
        self.timed_out = Some(timeout);
        ToolOutput::error(timed_out_text(timeout))
    }
}

/// The exit code as the reference reports it: 128 + the signal that ended
/// the shell, if one did (its shell runs under `sh -c`, which says so).
fn return_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The answer once the shell has exited; what it said before it ended
/// comes along.
fn exited(rc: i32, output: String, stderr: String) -> ToolOutput {
    let message = format!("bash has exited with returncode {rc}");
    ToolOutput {
        output: (!output.is_empty()).then_some(output),
        error: Some(if stderr.is_empty() {
            message
        } else {
            format!("{stderr}\n{message}")
        }),
        system: Some("tool must be restarted".to_owned()),
    }
}

fn timed_out_text(timeout: Duration) -> String {
    format!(
        "timed out: bash has not returned in {} seconds and must be restarted",
        python_seconds(timeout)
    )
}

/// Seconds as Python prints a float: `120.0`, `0.5`.
fn python_seconds(d: Duration) -> String {
    let text = d.as_secs_f64().to_string();
    if text.contains(['.', 'e', 'i', 'N']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// Reads once from `pipe`: the bytes read, or `None` at its end.
async fn read_some(pipe: &mut Option<ChildStderr>, buf: &mut [u8]) -> Option<usize> {
    match pipe.as_mut()?.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// Reads what is already waiting in `pipe`. A command's stderr is in the
/// pipe before the sentinel it is followed by reaches stdout, so once the
/// sentinel is seen this takes all of it, without waiting on a guess.
async fn drain_pending(
    pipe: &mut Option<ChildStderr>,
    into: &mut Captured,
    buf: &mut [u8],
    deadline: Instant,
) {
    // Bytes are waiting, so a read returns at once; the bound only guards
    // against surprises.
    let bound = deadline.min(Instant::now() + Duration::from_secs(1));
    while let Some(p) = pipe.as_ref() {
        if pending_bytes(p) == 0 {
            break;
        }
        match tokio::time::timeout_at(bound, read_some(pipe, buf)).await {
            Ok(Some(n)) => into.push(&buf[..n]),
            Ok(None) => *pipe = None,
            Err(_) => break,
        }
    }
}

/// How many bytes can be read from `pipe` without waiting.
fn pending_bytes(pipe: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD stores one c_int through the pointer, which points
    // to a live local for the whole call.
    let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 {
        0
    } else {
        n.max(0) as usize
    }
}

/// One stream's output in one call: its first [`OUTPUT_LIMIT`] bytes, and
/// the last few bytes seen, to spot the sentinel past the limit.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    /// Bytes of the stream so far (up to the sentinel, once it is seen).
    seen: usize,
    /// The stream's last `SENTINEL.len() - 1` bytes.
    tail: Vec<u8>,
}

impl Captured {
    fn push(&mut self, chunk: &[u8]) {
        let room = OUTPUT_LIMIT.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.seen += chunk.len();
    }

    /// Adds `chunk`; true once the sentinel has come, with what came before
    /// it kept (up to the limit) and the rest dropped, as the reference
    /// clears its buffer.
    fn push_until_sentinel(&mut self, chunk: &[u8]) -> bool {
        let mut window = std::mem::take(&mut self.tail);
        let window_start = self.seen - window.len();
        window.extend_from_slice(chunk);
        let found = window
            .windows(SENTINEL.len())
            .position(|w| w == SENTINEL)
            .map(|p| window_start + p);
        self.push(chunk);
        match found {
            Some(end) => {
                self.seen = end;
                self.kept.truncate(end);
                true
            }
            None => {
                let keep = window.len().min(SENTINEL.len() - 1);
                self.tail = window.split_off(window.len() - keep);
                false
            }
        }
    }

    /// The text, one trailing newline stripped, with a note if it was cut.
    fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if text.ends_with('\n') {
            text.pop();
        }
        if self.seen > self.kept.len() {
            text.push_str(CUT_NOTE);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Environment::base(":0")
    }

    fn command(c: &str) -> BashRequest {
        BashRequest {
            command: Some(c.to_owned()),
            ..BashRequest::default()
        }
    }

    fn restart() -> BashRequest {
        BashRequest {
            restart: true,
            ..BashRequest::default()
        }
    }

    async fn call(bash: &Bash, c: &str) -> ToolOutput {
        bash.run(&env(), &command(c), DEFAULT_TIMEOUT)
            .await
            .unwrap()
    }

    fn out(output: &str, error: &str) -> ToolOutput {
        ToolOutput {
            output: Some(output.to_owned()),
            error: Some(error.to_owned()),
            system: None,
        }
    }

    /// Processes of group `pgid` that are alive (not zombies waiting for
    /// whoever adopted them to reap them).
    fn live_in_group(pgid: i32) -> usize {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return 0;
        };
        procs
            .flatten()
            .filter_map(|p| std::fs::read_to_string(p.path().join("stat")).ok())
            .filter(|stat| {
                // After the command's name: state, parent, group.
                let fields: Vec<&str> = stat
                    .rsplit_once(") ")
                    .map(|(_, rest)| rest.split(' ').collect())
                    .unwrap_or_default();
                fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
            })
            .count()
    }

    /// Waits up to 5 s for `gone` to hold.
    async fn assert_gone(gone: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone() {
            assert!(Instant::now() < deadline, "processes survived a restart");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn output_and_errors_come_back_without_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let bash = Bash::new(dir.path());
        assert_eq!(
            call(&bash, "echo hi; echo oops >&2").await,
            out("hi", "oops")
        );
        assert_eq!(call(&bash, "printf 'a\\n\\n'").await, out("a\n", ""));
        assert_eq!(call(&bash, "true").await, out("", ""));
        assert_eq!(call(&bash, "bash -c 'exit 1'").await, out("", ""));
        let missing = call(&bash, "no_such_command_here").await;
        assert_eq!(missing.output.as_deref(), Some(""));
        assert!(
            missing
                .error
                .as_deref()
                .unwrap()
                .contains("command not found"),
            "{missing:?}"
        );
        // The shell starts in its directory.
        assert_eq!(
            call(&bash, "pwd").await,
            out(&dir.path().display().to_string(), "")
        );
    }

    #[tokio::test]
    async fn the_shell_keeps_its_state_between_calls() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let bash = Bash::new(dir.path());
        assert_eq!(
            call(&bash, "cd sub && export GREETING=hello").await,
            out("", "")
        );
        let expected = format!("{}/sub hello", dir.path().display());
        assert_eq!(call(&bash, "echo $PWD $GREETING").await, out(&expected, ""));
        // What a background job prints between calls comes with the next.
        // (A bare `cmd &` would end the shell: `&;` is a syntax error.)
        call(&bash, "( (sleep 0.2; echo late) & )").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(call(&bash, "echo now").await, out("late\nnow", ""));
    }

    #[tokio::test]
    async fn a_call_without_a_command_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bash = Bash::new(dir.path());
        let answer = bash
            .run(&env(), &BashRequest::default(), DEFAULT_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(answer, ToolOutput::error("no command provided."));
    }

    #[tokio::test]
    async fn a_stuck_shell_says_so_until_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let bash = Bash::new(dir.path());
        let stuck = "timed out: bash has not returned in 1.0 seconds and must be restarted";
        let short = Duration::from_secs(1);
        let answer = bash.run(&env(), &command("sleep 30"), short).await.unwrap();
        assert_eq!(answer, ToolOutput::error(stuck));
        let answer = bash.run(&env(), &command("echo hi"), DEFAULT_TIMEOUT).await;
        assert_eq!(answer.unwrap(), ToolOutput::error(stuck));

        let pid = {
            let guard = bash.session.lock().await;
            guard.as_ref().and_then(|s| s.pgid).unwrap()
        };
        assert!(live_in_group(pid) >= 2, "the shell and its sleep");
        let answer = bash.run(&env(), &restart(), DEFAULT_TIMEOUT).await.unwrap();
        assert_eq!(answer.system.as_deref(), Some("tool has been restarted."));
        assert_eq!((answer.output, answer.error), (None, None));
        // The old shell's group is gone, the sleep with it.
        assert_gone(|| live_in_group(pid) == 0).await;
        assert_eq!(
            call(&bash, "echo 'after restart'").await,
            out("after restart", "")
        );
    }

    #[tokio::test]
    async fn restart_ends_background_jobs_and_works_before_any_command() {
        let dir = tempfile::tempdir().unwrap();
        let bash = Bash::new(dir.path());
        let answer = bash.run(&env(), &restart(), DEFAULT_TIMEOUT).await.unwrap();
        assert_eq!(answer.system.as_deref(), Some("tool has been restarted."));
        let started = call(&bash, "sleep 30 & echo $!").await;
        let pid: i32 = started.output.unwrap().parse().unwrap();
        bash.run(&env(), &restart(), DEFAULT_TIMEOUT).await.unwrap();
        assert_gone(|| {
            // Killed, then reaped by whoever adopted it.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
        })
        .await;
    }

    #[tokio::test]
    async fn an_exited_shell_must_be_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let bash = Bash::new(dir.path());
        let answer = call(&bash, "echo bye; exit 3").await;
        assert_eq!(
            answer,
            ToolOutput {
                output: Some("bye".into()),
                error: Some("bash has exited with returncode 3".into()),
                system: Some("tool must be restarted".into()),
            }
        );
        let again = ToolOutput {
            output: None,
            error: Some("bash has exited with returncode 3".into()),
            system: Some("tool must be restarted".into()),
        };
        assert_eq!(call(&bash, "echo hi").await, again);
        bash.run(&env(), &restart(), DEFAULT_TIMEOUT).await.unwrap();
        assert_eq!(call(&bash, "echo hi").await, out("hi", ""));
    }

    #[tokio::test]
    async fn large_output_is_cut_and_the_shell_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let bash = Bash::new(dir.path());
        let big = call(
            &bash,
            "head -c 3000000 /dev/zero | tr '\\0' a; head -c 200000 /dev/zero | tr '\\0' b >&2",
        )
        .await;
        let output = big.output.unwrap();
        assert!(output.starts_with(&"a".repeat(OUTPUT_LIMIT)));
        assert_eq!(&output[OUTPUT_LIMIT..], CUT_NOTE);
        assert_eq!(big.error.unwrap(), "b".repeat(200_000));
        assert_eq!(call(&bash, "echo next").await, out("next", ""));
    }

    #[tokio::test]
    async fn concurrent_calls_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let bash = std::sync::Arc::new(Bash::new(dir.path()));
        let calls = (0..4).map(|i| {
            let bash = bash.clone();
            tokio::spawn(async move { call(&bash, &format!("sleep 0.05; echo {i}")).await })
        });
        for (i, answer) in futures::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(answer.unwrap(), out(&i.to_string(), ""));
        }
    }

    #[test]
    fn the_sentinel_is_found_across_chunks_and_past_the_limit() {
        let mut c = Captured::default();
        assert!(!c.push_until_sentinel(b"hello\n<<ex"));
        assert!(c.push_until_sentinel(b"it>>\nrest"));
        assert_eq!(c.text(), "hello");

        let mut c = Captured::default();
        assert!(!c.push_until_sentinel(&vec![b'x'; OUTPUT_LIMIT + 5]));
        assert!(!c.push_until_sentinel(b"<<exi"));
        assert!(c.push_until_sentinel(b"t>>\n"));
        assert_eq!(c.kept.len(), OUTPUT_LIMIT);
        assert!(c.text().ends_with(CUT_NOTE));
    }

    #[test]
    fn seconds_print_as_python_floats() {
        assert_eq!(python_seconds(Duration::from_secs(120)), "120.0");
        assert_eq!(python_seconds(Duration::from_millis(100)), "0.1");
        assert_eq!(python_seconds(Duration::from_millis(1500)), "1.5");
    }
}
