//! Runtimes: where computers run. The operator drives every computer
//! through [`Runtime`]; `local` ([`local::LocalRuntime`]) runs each one as
//! a sandbox of Linux namespaces on this machine. Container and cluster
//! runtimes implement the same trait.

mod disk;
pub mod local;
mod net;

pub use disk::MAX_LAYERS;

use std::collections::BTreeMap;

use raworc_host::client::HostClient;
pub use raworc_host::proto::{DisplaySize, Ready};
pub use raworc_sandbox::Limits;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid computer id {0:?}")]
    BadId(String),
    #[error("computer {0} is not running")]
    NotRunning(String),
    #[error("computer {0} is already running")]
    AlreadyRunning(String),
    #[error("computer {0} has no disk")]
    NoDisk(String),
    /// The computer did not come up; the reason is meant for people.
    #[error("{0}")]
    Start(String),
    #[error(transparent)]
    Sandbox(#[from] raworc_sandbox::SandboxError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs a host tool (`ip`, `nsenter`, `btrfs`, `mount`…) to completion;
/// its stderr is the error when it fails.
pub fn run_tool<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Result<(), RuntimeError> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io(format!("running {program} (is it installed?)")))?;
    if !out.status.success() {
        let args: Vec<_> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        return Err(RuntimeError::Start(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}

/// What a computer starts with.
#[derive(Debug, Clone, Default)]
pub struct ComputerSpec {
    /// The session's id: names the disk, the cgroup and the host name.
    pub id: String,
    pub display: DisplaySize,
    pub setup: Option<String>,
    pub instructions: Option<String>,
    pub secrets: BTreeMap<String, String>,
    /// Limits set here win over the runtime's defaults, field by field.
    pub limits: Option<Limits>,
    pub network: Network,
}

/// What a computer may reach on the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// Loopback only.
    #[default]
    None,
    /// Outbound connections through NAT; not the host, other computers or
    /// private ranges.
    Egress,
}

/// What a remixed computer inherits from its parent's disk; the rest of
/// the disk is inherited whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inherit {
    /// `/session/data`.
    pub data: bool,
    /// `/session/code`.
    pub code: bool,
}

/// Where a computer stands, as its runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputerState {
    Running,
    Paused,
    /// Not running; its disk is kept.
    Stopped,
    /// No disk (never started, or removed).
    Absent,
}

/// The warm pool's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Computers the pool keeps.
    pub target: usize,
    /// Painted, frozen computers waiting now.
    pub ready: usize,
    /// Creates served from the pool, and creates it could have served but
    /// found it empty.
    pub claims: u64,
    pub misses: u64,
    /// How long the last refill of one computer took.
    pub last_fill_ms: Option<u64>,
}

#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// The warm pool's figures, for runtimes that keep one.
    fn pool(&self) -> Option<PoolStats> {
        None
    }
    /// Starts a computer from its kept disk (a new one the first time) and
    /// returns once it is up: desktop ready, setup done.
    async fn start(&self, spec: &ComputerSpec) -> Result<Ready, RuntimeError>;
    /// Stops a computer: the browser closes gracefully, every process ends,
    /// the disk stays.
    async fn stop(&self, id: &str) -> Result<(), RuntimeError>;
    /// Freezes every process of the computer.
    async fn pause(&self, id: &str) -> Result<(), RuntimeError>;
    async fn resume(&self, id: &str) -> Result<(), RuntimeError>;
    /// Gives the new computer `child` a disk that starts as `parent`'s does
    /// now (less what `inherit` leaves out), at a cost that does not grow
    /// with the disk's size. A parent without a disk gives an empty one; a
    /// child that has a disk already keeps it.
    async fn fork(&self, parent: &str, child: &str, inherit: Inherit) -> Result<(), RuntimeError>;
    /// Stops the computer if it runs and removes its disk.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    async fn state(&self, id: &str) -> Result<ComputerState, RuntimeError>;
    /// The tool-call channel to a running computer.
    fn host(&self, id: &str) -> Result<HostClient, RuntimeError>;
    /// A connection to a running computer's VNC server (RFB).
    async fn vnc(&self, id: &str) -> Result<tokio::net::UnixStream, RuntimeError>;
    /// Memory a running computer uses now (page cache included), in bytes.
    fn memory_bytes(&self, id: &str) -> Result<u64, RuntimeError>;
    /// Ids of the computers that run now (paused ones included).
    fn running(&self) -> Vec<String>;
    /// Ids of every computer with a disk, running or not: what the operator
    /// compares with the sessions to find leftovers.
    async fn list(&self) -> Result<Vec<String>, RuntimeError>;
    /// Stops every running computer (a clean shutdown of the control plane).
    async fn stop_all(&self) {
        for id in self.running() {
            if let Err(e) = self.stop(&id).await {
                tracing::warn!(computer = %id, error = %e, "stopping a computer failed");
            }
        }
    }
}

/// Ids name directories and cgroups: letters, digits, `-` and `_`.
pub fn check_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadId(id.to_owned()))
    }
}
