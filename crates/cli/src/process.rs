//! The background server process: pid file, liveness, signals, spawning it
//! detached, and reading the tail of its log.
//!
//! A pid file can outlive its process and the pid can be reused, so before
//! signalling we check that the pid is alive, not a zombie, and (on Linux)
//! really is a `serve` process.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::config;

/// `<data-dir>/raworc.pid`.
pub fn pid_path(data_dir: &Path) -> PathBuf {
    data_dir.join("raworc.pid")
}

/// `<data-dir>/raworc.log`.
pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("raworc.log")
}

/// Parses a pid file's content; pids 0 and 1 (and negatives) are never
/// ours and would signal whole groups or init, so they are rejected.
pub fn parse_pid(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok().filter(|pid| *pid > 1)
}

/// Reads the pid file; `None` if it is missing or unusable.
pub fn read_pid(data_dir: &Path) -> Result<Option<i32>> {
    let path = pid_path(data_dir);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(parse_pid(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes the pid file (0600, atomically).
pub fn write_pid(data_dir: &Path, pid: u32) -> Result<()> {
    config::write_private_atomic(&pid_path(data_dir), format!("{pid}\n").as_bytes())
}

/// Removes the pid file if present.
pub fn remove_pid(data_dir: &Path) -> Result<()> {
    let path = pid_path(data_dir);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Whether `pid` is a live (non-zombie) process.
pub fn is_alive(pid: i32) -> bool {
    if pid <= 1 {
        return false;
    }
    match signal::kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => !is_zombie(pid),
        Err(_) => false,
    }
}

/// A zombie has exited and only waits to be reaped (by us, in tests).
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

/// Whether `pid` looks like a Raworc server (`... serve ...`). Where
/// `/proc` is unavailable, trust the pid file.
pub fn is_server_process(pid: i32) -> bool {
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.split(|b| *b == 0).any(|arg| arg == b"serve"),
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// The pid of the running server of `data_dir`, if any; removes a stale pid file.
pub fn running_pid(data_dir: &Path) -> Result<Option<i32>> {
    match read_pid(data_dir)? {
        Some(pid) if is_alive(pid) && is_server_process(pid) => Ok(Some(pid)),
        Some(_) | None => {
            if pid_path(data_dir).exists() {
                remove_pid(data_dir)?;
            }
            Ok(None)
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Returns whether it had to kill.
pub async fn terminate(pid: i32, grace: Duration) -> Result<bool> {
    send(pid, Signal::SIGTERM)?;
    if wait_exit(pid, grace).await {
        return Ok(false);
    }
    send(pid, Signal::SIGKILL)?;
    if wait_exit(pid, Duration::from_secs(5)).await {
        return Ok(true);
    }
    anyhow::bail!("process {pid} did not exit even after SIGKILL")
}

fn send(pid: i32, sig: Signal) -> Result<()> {
    match signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(Errno::EPERM) => {
            anyhow::bail!("cannot stop process {pid}: permission denied (started by another user?)")
        }
        Err(e) => anyhow::bail!("cannot signal process {pid}: {e}"),
    }
}

/// Polls until `pid` is gone or `limit` passes; true if it is gone.
async fn wait_exit(pid: i32, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if !is_alive(pid) {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens the log for appending (0600) and marks where this start begins.
pub fn open_log(path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot open log {}", path.display()))?;
    writeln!(
        file,
        "--- raworc start at {} ---",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
    .with_context(|| format!("cannot write log {}", path.display()))?;
    Ok(file)
}

/// Spawns `exe args...` in its own session with stdin closed and
/// stdout/stderr appended to `log`, so it outlives this CLI and its terminal.
pub fn spawn_detached(exe: &Path, args: &[std::ffi::OsString], log: &File) -> Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            log.try_clone().context("cannot reuse log file")?,
        ))
        .stderr(Stdio::from(
            log.try_clone().context("cannot reuse log file")?,
        ));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of ours;
        // it is the only thing done between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

/// The last `n` lines of a file (reads at most its last 64 KiB).
pub fn tail(path: &Path, n: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX && file.seek(SeekFrom::Start(len - MAX)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse_safely() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid("0"), None);
        assert_eq!(parse_pid("1"), None);
        assert_eq!(parse_pid("-1"), None);
        assert_eq!(parse_pid("abc"), None);
        assert_eq!(parse_pid(""), None);
    }

    #[test]
    fn pid_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_pid(dir.path()).unwrap(), None);
        write_pid(dir.path(), 4242).unwrap();
        assert_eq!(read_pid(dir.path()).unwrap(), Some(4242));
        remove_pid(dir.path()).unwrap();
        remove_pid(dir.path()).unwrap();
        assert_eq!(read_pid(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_stale_pid_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        // Our own pid is alive but is not a `serve` process.
        write_pid(dir.path(), std::process::id()).unwrap();
        assert!(is_alive(std::process::id() as i32));
        assert_eq!(running_pid(dir.path()).unwrap(), None);
        assert!(!pid_path(dir.path()).exists());
    }

    #[test]
    fn tail_takes_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).unwrap();
        let t = tail(&path, 3);
        assert_eq!(t, "line 28\nline 29\nline 30");
        assert_eq!(tail(&dir.path().join("none"), 3), "");
    }

    #[tokio::test]
    async fn detached_child_is_terminated_and_seen_dead() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(&log_path(dir.path())).unwrap();
        let args = ["-c".into(), "echo hello; exec sleep 30".into()];
        let mut child = spawn_detached(Path::new("/bin/sh"), &args, &log).unwrap();
        let pid = child.id() as i32;
        assert!(is_alive(pid));
        // Its own session: the session id is its pid.
        let sid = nix::unistd::getsid(Some(Pid::from_raw(pid))).unwrap();
        assert_eq!(sid.as_raw(), pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !tail(&log_path(dir.path()), 5).contains("hello") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // As its parent we leave a zombie; is_alive must not wait for it.
        let killed = terminate(pid, Duration::from_secs(5)).await.unwrap();
        assert!(!killed);
        let _ = child.wait();
        let logged = fs::read_to_string(log_path(dir.path())).unwrap();
        assert!(logged.contains("--- raworc start at"));
        assert!(logged.contains("hello"));
    }
}
