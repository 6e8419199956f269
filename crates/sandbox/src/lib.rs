//! The local sandbox: one computer's process tree, isolated with Linux
//! namespaces on an overlay of the computer image.
//!
//! [`Sandbox::spawn`] clones a child into new mount, pid, net, uts and ipc
//! namespaces and puts it in its own cgroup (limits, freezing), whose
//! namespace it then enters. The child, PID 1 of its namespace:
//! mounts an overlay (the image read-only below, the session's persistent
//! upper layer above), `/proc`, `/dev` (a tmpfs with the usual devices bound
//! in), `/dev/shm`, `/dev/pts` and a read-only `/sys`; pivots into it; brings
//! loopback up (the only interface); sets the hostname; drops every
//! capability from the bounding set, switches to the unprivileged user,
//! sets `no_new_privs` and installs the system-call filter ([`seccomp`]);
//! then runs the given program.
//!
//! All mounts live in the sandbox's mount namespace, so they vanish with its
//! last process: killing PID 1 leaves nothing mounted on the host.
//!
//! Between `clone` and `exec` the child runs in a copy of a multi-threaded
//! process, where only async-signal-safe calls are allowed: everything it
//! needs (paths, arguments, environment) is prepared as C strings first, and
//! the child makes system calls only.

mod cgroup;
mod child;
mod seccomp;

pub use cgroup::{Cgroup, Limits};

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox spec: {0}")]
    Spec(String),
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the sandbox failed to start: {0}")]
    Start(String),
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error("the sandbox has already ended")]
    Ended,
}

/// What to run, and where.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The image's rootfs: the read-only lowest layer.
    pub image: PathBuf,
    /// Read-only layers between the image and the upper layer, topmost
    /// first (a remixed computer's inherited disk).
    pub layers: Vec<PathBuf>,
    /// The session's persistent upper layer and overlayfs work dir (same filesystem).
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Where the overlay is assembled (inside the sandbox's mount namespace only).
    pub root: PathBuf,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    /// Program (absolute path inside the sandbox) and its arguments.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: String,
    /// Name of the sandbox's cgroup (`raworc/<name>`) and its limits.
    pub cgroup: Option<(String, Limits)>,
    /// Host files and directories bound into the sandbox, under `/run`
    /// (a fresh tmpfs per start, so binds leave no trace on the disk).
    pub binds: Vec<Bind>,
    /// File (on the host) that receives the program's stdout and stderr,
    /// appended to; stdin is `/dev/null`. `None` keeps the caller's.
    pub log: Option<PathBuf>,
    /// Memory-only file systems mounted over directories of the root (for
    /// what must never reach the disk, such as secrets).
    pub tmpfs: Vec<Tmpfs>,
    /// Lets processes inside make new user namespaces (off: the system-call
    /// filter refuses them).
    pub allow_user_namespaces: bool,
}

/// A tmpfs inside the sandbox, owned by the sandbox's user.
#[derive(Debug, Clone)]
pub struct Tmpfs {
    /// Absolute path inside the sandbox; made if missing. Mounted after the
    /// root is entered, so a link there resolves inside the sandbox.
    pub target: String,
    pub mode: u32,
    pub size_bytes: u64,
}

/// A host path bound into the sandbox.
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute path inside the sandbox, below `/run/`.
    pub target: String,
    pub readonly: bool,
}

/// A running sandbox: PID 1 of its namespaces, seen from the host.
///
/// Dropping a sandbox that was not waited for kills it: nobody else would
/// reap its PID 1.
#[derive(Debug)]
pub struct Sandbox {
    pid: Pid,
    cgroup: Option<Cgroup>,
    reaped: std::sync::atomic::AtomicBool,
    /// For a sandbox adopted after a restart (not this process's child): a
    /// pidfd, which signals PID 1 without the risk of a reused pid and
    /// tells when it ends.
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.reaped.load(std::sync::atomic::Ordering::Acquire) {
            if let Err(e) = self.kill() {
                tracing::warn!(pid = self.pid.as_raw(), error = %e, "could not kill a dropped sandbox");
            }
        }
    }
}

fn pipe(what: &str) -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| SandboxError::Sys {
        context: format!("creating {what}"),
        source,
    })
}

fn cstring(what: &str, s: impl AsRef<[u8]>) -> Result<CString, SandboxError> {
    CString::new(s.as_ref()).map_err(|_| SandboxError::Spec(format!("{what} contains a NUL byte")))
}

fn cpath(what: &str, p: &Path) -> Result<CString, SandboxError> {
    cstring(what, p.as_os_str().as_bytes())
}

impl Sandbox {
    /// Starts `spec.argv` in a new sandbox. Returns once the child has
    /// either exec'd the program or failed (then with the step that failed).
    pub fn spawn(spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
        if spec.argv.is_empty() {
            return Err(SandboxError::Spec("no program to run".into()));
        }
        for dir in [&spec.upper, &spec.work, &spec.root] {
            std::fs::create_dir_all(dir).map_err(|source| SandboxError::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
        }
        let plan = child::Plan::new(spec)?;
        let log = spec
            .log
            .as_ref()
            .map(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| SandboxError::Io {
                        context: format!("opening the log {}", path.display()),
                        source,
                    })
            })
            .transpose()?;
        let stdio = match &log {
            Some(file) => {
                let null = std::fs::File::open("/dev/null").map_err(|source| SandboxError::Io {
                    context: "opening /dev/null".into(),
                    source,
                })?;
                Some((null, file.as_raw_fd()))
            }
            None => None,
        };
        let stdio_fds = stdio.as_ref().map(|(null, log)| (null.as_raw_fd(), *log));
        let cgroup = spec
            .cgroup
            .as_ref()
            .map(|(name, limits)| Cgroup::create(name, limits))
            .transpose()?;
        // The child waits on this pipe until it has been put in its cgroup.
        let (go_read, go_write) = pipe("the go pipe")?;
        // The child reports a failed step through this pipe; a successful
        // exec closes it (close-on-exec) without a word.
        let (read_end, write_end) = pipe("the start pipe")?;
        let mut stack = vec![0u8; 1 << 20];
        let flags = CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC;
        let report = write_end.as_raw_fd();
        let go = go_read.as_raw_fd();
        // The child's copies of the parent's ends, which it closes first: a
        // child holding the go pipe's write end would wait forever if the
        // parent died before sending the byte.
        let parent_ends = [go_write.as_raw_fd(), read_end.as_raw_fd()];
        // SAFETY: the child only runs `child::run`, which makes system calls
        // on data prepared above and then execs or exits.
        let pid = unsafe {
            nix::sched::clone(
                Box::new(|| child::run(&plan, parent_ends, go, report, stdio_fds)),
                &mut stack,
                flags,
                Some(Signal::SIGCHLD as i32),
            )
        }
        .map_err(|source| {
            if let Some(cg) = &cgroup {
                let _ = cg.remove();
            }
            SandboxError::Sys {
                context: "clone".into(),
                source,
            }
        })?;
        drop(write_end);
        drop(go_read);
        if let Some(cg) = &cgroup {
            if let Err(e) = cg.add(pid.as_raw() as u32) {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                let _ = cg.remove();
                return Err(e);
            }
        }
        let mut go_write = std::fs::File::from(go_write);
        // A child that already died (and closed its end) shows in the report below.
        let _ = std::io::Write::write_all(&mut go_write, b"g");
        drop(go_write);
        let mut message = Vec::new();
        let mut file = std::fs::File::from(read_end);
        std::io::Read::read_to_end(&mut file, &mut message).map_err(|source| SandboxError::Io {
            context: "reading the start pipe".into(),
            source,
        })?;
        let sandbox = Sandbox {
            pid,
            cgroup,
            reaped: false.into(),
            pidfd: None,
        };
        if !message.is_empty() {
            let _ = sandbox.wait();
            return Err(SandboxError::Start(
                String::from_utf8_lossy(&message).into_owned(),
            ));
        }
        Ok(sandbox)
    }

    /// Takes charge again of a sandbox started by an earlier run of this
    /// program, whose PID 1 is `pid` and started at `start_time` (clock
    /// ticks after boot, as [`process_start_time`] reads it): a reused pid
    /// is refused. Its exit code cannot be known (it is not our child);
    /// [`Sandbox::wait`] reports -1.
    pub fn adopt(
        pid: u32,
        start_time: u64,
        cgroup: Option<Cgroup>,
    ) -> Result<Sandbox, SandboxError> {
        let raw = i32::try_from(pid).map_err(|_| SandboxError::Ended)?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        if fd < 0 {
            return Err(SandboxError::Ended);
        }
        // SAFETY: the fd was just returned by the kernel and is owned by nobody else.
        let pidfd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        // Checked after the pidfd is open: it then names this very process.
        if process_start_time(pid) != Some(start_time) {
            return Err(SandboxError::Ended);
        }
        Ok(Sandbox {
            pid: Pid::from_raw(raw),
            cgroup,
            reaped: false.into(),
            pidfd: Some(pidfd),
        })
    }

    /// PID 1 of the sandbox, as the host sees it.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// The sandbox's cgroup, when it has one.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// Waits for PID 1 to end, then removes the cgroup; PID 1's exit code
    /// (128 + signal when killed).
    pub fn wait(&self) -> Result<i32, SandboxError> {
        let code = self.wait_pid1()?;
        if let Some(cg) = &self.cgroup {
            cg.remove_when_empty()?;
        }
        Ok(code)
    }

    fn wait_pid1(&self) -> Result<i32, SandboxError> {
        if let Some(pidfd) = &self.pidfd {
            wait_pidfd(pidfd)?;
            self.reaped
                .store(true, std::sync::atomic::Ordering::Release);
            return Ok(-1);
        }
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => {
                    self.reaped
                        .store(true, std::sync::atomic::Ordering::Release);
                    return Ok(code);
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    self.reaped
                        .store(true, std::sync::atomic::Ordering::Release);
                    return Ok(128 + sig as i32);
                }
                Ok(_) => continue,
                Err(nix::Error::EINTR) => continue,
                Err(source) => {
                    return Err(SandboxError::Sys {
                        context: "waiting for the sandbox".into(),
                        source,
                    })
                }
            }
        }
    }

    /// Sends SIGKILL to PID 1 (which takes every process of the sandbox with
    /// it), thawing a frozen sandbox first. Whoever waits on it reaps it.
    pub fn terminate(&self) -> Result<(), SandboxError> {
        if self.reaped.load(std::sync::atomic::Ordering::Acquire) {
            return Err(SandboxError::Ended);
        }
        // A frozen sandbox cannot die until thawed.
        if let Some(cg) = &self.cgroup {
            cg.thaw()?;
        }
        let sent = match &self.pidfd {
            // SAFETY: pidfd_send_signal(fd, sig, info = NULL, flags = 0).
            Some(fd) => nix::errno::Errno::result(unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            })
            .map(drop),
            None => nix::sys::signal::kill(self.pid, Signal::SIGKILL),
        };
        match sent {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(source) => Err(SandboxError::Sys {
                context: "killing the sandbox".into(),
                source,
            }),
        }
    }

    /// Kills every process of the sandbox and reaps PID 1.
    pub fn kill(&self) -> Result<i32, SandboxError> {
        self.terminate()?;
        self.wait()
    }
}

/// Waits until the process behind `pidfd` has ended.
fn wait_pidfd(pidfd: &std::os::fd::OwnedFd) -> Result<(), SandboxError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(source) => {
                return Err(SandboxError::Sys {
                    context: "waiting for an adopted sandbox".into(),
                    source,
                })
            }
        }
    }
}

/// When process `pid` started, in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`); with the pid, it names one process for good.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}
