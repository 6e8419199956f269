//! The `local` runtime: each computer is a [`Sandbox`] on this machine,
//! running `raworc host` as its PID 1.
//!
//! On disk, per computer (`<computers>/<id>/`):
//! - `upper/`, `work/` — the persistent overlay layer (the computer's disk) and overlayfs' scratch;
//! - `root/` — where the overlay is mounted, inside the sandbox's mount namespace only;
//! - `run/` — bound at `/run/raworc` inside: the start configuration (nothing
//!   secret), the host's socket and the VNC socket (uid 1000, 0700: no other
//!   computer sees it);
//! - `host.log` — the host's output;
//! - `pid` — PID 1 of the running computer and its start time, so that a
//!   control plane restarted after a crash adopts the computer again
//!   ([`LocalRuntime::new`]) instead of leaking it.
//!
//! The raworc binary itself is bound read-only at `/run/bin/raworc`.
//! `/session/secrets` is a tmpfs of the computer's: the session's secrets go
//! to the host over its socket and from there to memory, never to a disk.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raworc_host::client::{HostClient, HostError};
use raworc_host::proto::{HostConfig, SessionConfig, CONFIG, RUN_DIR, VNC_SOCKET};
use raworc_sandbox::{Bind, Limits, Sandbox, SandboxSpec, Tmpfs};
use tokio::sync::watch;

mod pool;

pub use pool::{is_pooled, POOL_PREFIX};

use crate::disk::{remove_tree, Disks};
use crate::net::{resolv_conf, Egress, SLOT_FILE};
use crate::{
    check_id, io, ComputerSpec, ComputerState, Inherit, Network, Ready, Runtime, RuntimeError,
};

/// The computer's user (made by the image recipe).
const USER: u32 = 1000;
const HOST_BINARY_INSIDE: &str = "/run/bin/raworc";
/// Time to come up on top of the setup script's own limit.
const START_GRACE: Duration = Duration::from_secs(60);
/// Time the browser and the rest get to stop before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// A computer starts without its CPU cap, for at most this long: bringing
/// up a browser is the heaviest thing most computers do, and the cap would
/// make every start wait for it. The cap applies once the computer is up.
const START_BURST: Duration = Duration::from_secs(5);
/// The computer's tmpfs for the session's secrets, and its size.
const SECRETS_DIR: &str = "/session/secrets";
const SECRETS_SIZE: u64 = 4 << 20;
/// How long a computer that runs already gets to take its session.
const REJOIN_WAIT: Duration = Duration::from_secs(10);
/// File in a computer's directory naming its cgroup.
const CGROUP_FILE: &str = "cgroup";
/// How much of the host's log a start error quotes.
const LOG_TAIL: usize = 2048;

#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where computers' disks live (`<data-dir>/computers`).
    pub computers_dir: PathBuf,
    /// The image's rootfs (read-only lower layer).
    pub image: PathBuf,
    /// The raworc binary, bound into each computer to run `raworc host`.
    pub host_binary: PathBuf,
    /// Limits of computers whose spec sets none.
    pub limits: Limits,
    /// Lets processes in computers make user namespaces (refused by default).
    pub allow_user_namespaces: bool,
    /// Computers kept started, painted and frozen for creates to claim (0: none).
    pub warm_pool: usize,
    /// The display of pooled computers (a create asking another starts cold).
    pub pool_display: crate::DisplaySize,
}

impl LocalConfig {
    /// Default limits: room for many idle desktops on a small machine,
    /// enough for a busy browser.
    pub fn default_limits() -> Limits {
        Limits {
            memory_bytes: Some(2 << 30),
            pids: Some(2048),
            cpu_millicores: Some(1000),
        }
    }
}

/// A started computer: its sandbox and news of its end.
struct Running {
    sandbox: Arc<Sandbox>,
    exited: watch::Receiver<Option<i32>>,
    /// Its pid namespace (`pid:[…]`): whoever answers on its sockets must
    /// be in it.
    pid_namespace: Option<String>,
}

pub struct LocalRuntime {
    config: LocalConfig,
    running: Mutex<HashMap<String, Running>>,
    /// Held while disks are laid out (a start's preparation, a fork), so a
    /// fork never moves an upper layer a starting computer is about to mount.
    disks_busy: tokio::sync::Mutex<()>,
    egress: Arc<Egress>,
    /// Computers frozen for a fork: they count as running meanwhile, so
    /// that nobody thaws them in the middle of it.
    forking: Mutex<std::collections::HashSet<String>>,
    pool: pool::Pool,
}

/// The host name of computer `id` (a host name has at most 63 bytes).
fn hostname_of(id: &str) -> String {
    id.chars().take(63).collect()
}

/// The cgroup of computer `id`.
fn cgroup_name(id: &str) -> String {
    format!("computer-{id}")
}

/// `pid start-time` as the pid file holds it.
fn parse_pid_file(text: &str) -> Option<(u32, u64)> {
    let mut parts = text.split_whitespace();
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((pid, start))
}

impl LocalRuntime {
    /// The runtime over `config.computers_dir`. Computers that still run
    /// from an earlier run of the control plane (one that crashed) are
    /// adopted; what is left of dead ones (pid files, cgroups) is cleared.
    pub fn new(config: LocalConfig) -> LocalRuntime {
        let runtime = LocalRuntime {
            config,
            running: Mutex::default(),
            disks_busy: tokio::sync::Mutex::new(()),
            egress: Arc::default(),
            forking: Mutex::default(),
            pool: pool::Pool::default(),
        };
        runtime.adopt_all();
        runtime
    }

    fn adopt_all(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.computers_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if check_id(&id).is_err() {
                continue;
            }
            match self.adopt(&id) {
                Ok(true) => tracing::info!(computer = %id, "adopted a running computer"),
                Ok(false) => {}
                Err(e) => tracing::warn!(computer = %id, error = %e, "could not adopt a computer"),
            }
        }
    }

    /// Adopts computer `id` if its PID 1 still runs; clears its leftovers
    /// otherwise. True when adopted.
    fn adopt(&self, id: &str) -> Result<bool, RuntimeError> {
        let pid_file = self.dir(id).join("pid");
        // A claimed pooled computer keeps the group it was made with.
        let group = std::fs::read_to_string(self.dir(id).join(CGROUP_FILE))
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| cgroup_name(id));
        let cgroup = raworc_sandbox::Cgroup::open(&group)?;
        let recorded = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| parse_pid_file(&t));
        let slot_file = self.dir(id).join(SLOT_FILE);
        if let Some((pid, start)) = recorded {
            // Its group as the process itself names it (this server may
            // run in another cgroup than the one that started it).
            let cgroup = match raworc_sandbox::Cgroup::of_process(pid) {
                Ok(Some(own)) => Some(own),
                _ => cgroup,
            };
            if let Ok(sandbox) = Sandbox::adopt(pid, start, cgroup) {
                let slot = std::fs::read_to_string(&slot_file).ok();
                if let Some(slot) = slot.and_then(|s| s.trim().parse().ok()) {
                    self.egress.reserve(slot);
                }
                self.watch(id, Arc::new(sandbox))?;
                return Ok(true);
            }
        }
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(&slot_file);
        if let Some(cg) = raworc_sandbox::Cgroup::open(&group)? {
            cg.destroy()?;
        }
        Ok(false)
    }

    /// Records `sandbox` as computer `id` and starts the thread that
    /// reaps it, notes its end and removes its pid file.
    fn watch(
        &self,
        id: &str,
        sandbox: Arc<Sandbox>,
    ) -> Result<watch::Receiver<Option<i32>>, RuntimeError> {
        let (tx, exited) = watch::channel(None);
        {
            let sandbox = sandbox.clone();
            let id = id.to_owned();
            let pid_file = self.dir(&id).join("pid");
            let slot_file = self.dir(&id).join(SLOT_FILE);
            let egress = self.egress.clone();
            std::thread::Builder::new()
                .name(format!("reap-{id}"))
                .spawn(move || {
                    let code = sandbox.wait().unwrap_or_else(|e| {
                        tracing::warn!(computer = %id, error = %e, "waiting for a computer failed");
                        -1
                    });
                    let _ = std::fs::remove_file(&pid_file);
                    // Its veth pair went with its network namespace.
                    let slot = std::fs::read_to_string(&slot_file).ok();
                    if let Some(slot) = slot.and_then(|s| s.trim().parse().ok()) {
                        egress.release(slot);
                    }
                    let _ = std::fs::remove_file(&slot_file);
                    let _ = tx.send(Some(code));
                })
                .map_err(io("starting the reaper thread"))?;
        }
        let pid_namespace = raworc_host::client::pid_namespace_of(sandbox.pid()).ok();
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.to_owned(),
                Running {
                    sandbox,
                    exited: exited.clone(),
                    pid_namespace,
                },
            );
        Ok(exited)
    }

    /// The host channel of computer `id`, checked against its pid namespace.
    fn client(&self, id: &str) -> HostClient {
        let namespace = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .and_then(|r| r.pid_namespace.clone());
        // Without a namespace to check against, nothing is trusted.
        let namespace = namespace.or_else(|| Some("unknown".into()));
        HostClient::new(&self.dir(id).join("run")).in_namespace(namespace)
    }

    fn disks(&self) -> Disks {
        Disks {
            computers: self.config.computers_dir.clone(),
            image: self.config.image.clone(),
        }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.config.computers_dir.join(id)
    }

    /// The running computer `id`: its sandbox and news of its end.
    fn entry(&self, id: &str) -> Option<(Arc<Sandbox>, watch::Receiver<Option<i32>>)> {
        let map = self.running.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .map(|r| (r.sandbox.clone(), r.exited.clone()))
            .filter(|(_, exited)| exited.borrow().is_none())
    }

    fn forget(&self, id: &str) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Prepares the disk and run directory, and writes the start configuration.
    fn prepare(&self, spec: &ComputerSpec) -> Result<PathBuf, RuntimeError> {
        let dir = self.dir(&spec.id);
        self.disks().make_disk(&spec.id)?;
        for sub in ["work", "root"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io(format!("creating {}", path.display())))?;
        }
        // What the computer could write (its upper layer, its run
        // directory) may hold links to anywhere on this machine: nothing in
        // there is followed. The computer does not run during this.
        if spec.network == Network::Egress {
            // The image's resolv.conf is empty: egress gets this machine's name servers.
            let etc = real_dir(&dir.join("upper").join("etc"), 0o755)?;
            let conf = etc.join("resolv.conf");
            remove_any(&conf)?;
            write_new(&conf, resolv_conf().as_bytes(), 0o644)?;
        }
        // Secrets live in a tmpfs mounted over /session/secrets; whatever an
        // older version kept on the disk there goes.
        let session = dir.join("upper").join("session");
        match std::fs::symlink_metadata(&session) {
            Ok(meta) if meta.is_dir() => remove_any(&session.join("secrets"))?,
            Ok(_) => remove_any(&session)?,
            Err(_) => {}
        }
        // A fresh run directory each start, owned by the computer's user.
        let run = dir.join("run");
        remove_any(&run)?;
        std::fs::create_dir(&run).map_err(io(format!("creating {}", run.display())))?;
        chown_user(&run)?;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))
            .map_err(io("protecting the run directory"))?;
        let config = HostConfig {
            display: spec.display,
            browser_sandbox: self.config.allow_user_namespaces,
        };
        let path = run.join(CONFIG);
        let bytes = serde_json::to_vec(&config).map_err(|e| RuntimeError::Start(e.to_string()))?;
        write_new(&path, &bytes, 0o600)?;
        chown_user(&path)?;
        Ok(dir)
    }

    /// The limits of computer `spec`: its own, else the defaults.
    fn limits(&self, spec: &ComputerSpec) -> Limits {
        let default = &self.config.limits;
        match &spec.limits {
            None => default.clone(),
            Some(own) => Limits {
                memory_bytes: own.memory_bytes.or(default.memory_bytes),
                pids: own.pids.or(default.pids),
                cpu_millicores: own.cpu_millicores.or(default.cpu_millicores),
            },
        }
    }

    fn sandbox_spec(&self, spec: &ComputerSpec, dir: &Path) -> Result<SandboxSpec, RuntimeError> {
        // CPU is capped once the computer is up (see START_BURST).
        let limits = Limits {
            cpu_millicores: None,
            ..self.limits(spec)
        };
        Ok(SandboxSpec {
            image: self.config.image.clone(),
            layers: self.disks().layer_paths(&spec.id)?,
            upper: dir.join("upper"),
            work: dir.join("work"),
            root: dir.join("root"),
            hostname: hostname_of(&spec.id),
            uid: USER,
            gid: USER,
            argv: vec![
                HOST_BINARY_INSIDE.into(),
                "host".into(),
                "--run-dir".into(),
                RUN_DIR.into(),
            ],
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("RUST_LOG".into(), "info,raworc_host::painted=debug".into()),
            ],
            cwd: "/".into(),
            cgroup: Some((cgroup_name(&spec.id), limits)),
            binds: vec![
                Bind {
                    source: self.config.host_binary.clone(),
                    target: HOST_BINARY_INSIDE.into(),
                    readonly: true,
                },
                Bind {
                    source: dir.join("run"),
                    target: RUN_DIR.into(),
                    readonly: false,
                },
            ],
            log: Some(dir.join("host.log")),
            tmpfs: vec![Tmpfs {
                target: SECRETS_DIR.into(),
                mode: 0o700,
                size_bytes: SECRETS_SIZE,
            }],
            allow_user_namespaces: self.config.allow_user_namespaces,
        })
    }

    /// Kills a computer (if it runs), waits until it is reaped, and forgets it.
    async fn kill(&self, id: &str) {
        if let Some((sandbox, exited)) = self.entry(id) {
            kill_and_reap(&sandbox, exited).await;
        }
        self.forget(id);
    }

    /// Ends a computer that failed to come up, and says why.
    async fn abandon(&self, id: &str, reason: String) -> RuntimeError {
        self.kill(id).await;
        RuntimeError::Start(reason)
    }
}

impl LocalRuntime {
    /// Lays out the disk and spawns computer `spec` (no session yet);
    /// returns its directory and news of its end.
    async fn launch(
        &self,
        spec: &ComputerSpec,
    ) -> Result<(PathBuf, watch::Receiver<Option<i32>>), RuntimeError> {
        let disks_busy = self.disks_busy.lock().await;
        let dir = self.prepare(spec)?;
        let sandbox_spec = self.sandbox_spec(spec, &dir)?;
        let sandbox = Arc::new(blocking(move || Ok(Sandbox::spawn(&sandbox_spec)?)).await?);
        if let Some(start) = raworc_sandbox::process_start_time(sandbox.pid()) {
            let record = format!("{} {start}\n", sandbox.pid());
            if let Err(e) = std::fs::write(dir.join("pid"), record) {
                tracing::warn!(computer = %spec.id, error = %e, "could not write the pid file");
            }
        }
        // The group keeps the name it was made with, also when a pooled
        // computer becomes a session's: a restart finds it by this file.
        let _ = std::fs::write(dir.join(CGROUP_FILE), cgroup_name(&spec.id));
        let pid = sandbox.pid();
        let cap = self.limits(spec).cpu_millicores;
        {
            let sandbox = sandbox.clone();
            tokio::spawn(async move {
                tokio::time::sleep(START_BURST).await;
                if let Some(cg) = sandbox.cgroup() {
                    // A computer that has ended has no group left to cap.
                    let _ = cg.limit_cpu(cap);
                }
            });
        }
        let exited = self.watch(&spec.id, sandbox)?;
        drop(disks_busy);
        if spec.network == Network::Egress {
            let (egress, run_dir) = (self.egress.clone(), dir.clone());
            if let Err(e) = blocking(move || egress.attach(pid, &run_dir)).await {
                return Err(self
                    .abandon(&spec.id, format!("the computer's network: {e}"))
                    .await);
            }
        }
        Ok((dir, exited))
    }

    /// A computer asked to start that runs already: one adopted after a
    /// crash in the middle of its start (a pooled one perhaps in the middle
    /// of its claim). Thawed, given its session unless it has one, and
    /// waited for.
    async fn rejoin(&self, spec: &ComputerSpec) -> Result<Ready, RuntimeError> {
        self.resume(&spec.id).await?;
        let (_, exited) = self
            .entry(&spec.id)
            .ok_or_else(|| RuntimeError::NotRunning(spec.id.clone()))?;
        self.bring_up(spec, &self.dir(&spec.id), exited, REJOIN_WAIT)
            .await
    }

    /// Caps computer `spec`'s CPU at its limit (it starts without the cap).
    fn cap_cpu(&self, spec: &ComputerSpec) {
        if let Some((sandbox, _)) = self.entry(&spec.id) {
            if let Some(cg) = sandbox.cgroup() {
                let _ = cg.limit_cpu(self.limits(spec).cpu_millicores);
            }
        }
    }

    /// Gives a running computer its session (waiting up to `assign_wait`
    /// for its socket; one that has its session already keeps it) and
    /// waits until it is ready: desktop painted, setup run. Its CPU is
    /// capped then; a computer that does not come up is ended.
    async fn bring_up(
        &self,
        spec: &ComputerSpec,
        dir: &Path,
        exited: watch::Receiver<Option<i32>>,
        assign_wait: Duration,
    ) -> Result<Ready, RuntimeError> {
        let client = self.client(&spec.id);
        let session = session_config(spec);
        let timeout = Duration::from_secs(session.setup_timeout_s) + START_GRACE;
        let mut ended = exited.clone();
        let up = async {
            match client.assign(&session, assign_wait).await {
                Ok(()) | Err(HostError::Status { status: 409, .. }) => {}
                Err(e) => return Err(e),
            }
            client.ready(timeout).await
        };
        let outcome = tokio::select! {
            ready = up => ready.map_err(|e| e.to_string()),
            _ = ended.wait_for(|e| e.is_some()) => Err(String::new()),
        };
        let reason = match outcome {
            Ok(ready) => {
                self.cap_cpu(spec);
                return Ok(ready);
            }
            Err(reason) => reason,
        };
        // When the computer itself ended, its log says more than the socket.
        let code = tokio::time::timeout(Duration::from_secs(1), ended.wait_for(|e| e.is_some()))
            .await
            .ok()
            .and_then(|c| c.ok().and_then(|c| *c));
        let reason = match code {
            Some(code) => format!(
                "the computer ended while starting (exit {code}): {}",
                log_tail(&dir.join("host.log"))
            ),
            None => reason,
        };
        Err(self.abandon(&spec.id, reason).await)
    }
}

/// What the host of computer `spec` is told of its session.
fn session_config(spec: &ComputerSpec) -> SessionConfig {
    SessionConfig {
        setup: spec.setup.clone(),
        instructions: spec.instructions.clone(),
        secrets: spec.secrets.clone(),
        ..SessionConfig::default()
    }
}

/// SIGKILLs the sandbox and waits until its reaper has seen it end.
async fn kill_and_reap(sandbox: &Sandbox, mut exited: watch::Receiver<Option<i32>>) {
    let _ = sandbox.terminate();
    let _ = exited.wait_for(|e| e.is_some()).await;
}

fn chown_user(path: &Path) -> Result<(), RuntimeError> {
    std::os::unix::fs::chown(path, Some(USER), Some(USER)).map_err(io(format!(
        "handing {} to the computer's user",
        path.display()
    )))
}

/// Writes a new file at `path` (which must not exist), never through a link.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), RuntimeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    file.write_all(bytes)
        .map_err(io(format!("writing {}", path.display())))
}

/// Removes whatever is at `path` (file, link or tree), following nothing.
fn remove_any(path: &Path) -> Result<(), RuntimeError> {
    let result = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    result.map_err(io(format!("removing {}", path.display())))
}

/// `path` as a real directory (a link or file there is replaced).
fn real_dir(path: &Path, mode: u32) -> Result<PathBuf, RuntimeError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(path.to_path_buf()),
        Ok(_) => remove_any(path)?,
        Err(_) => {}
    }
    std::fs::create_dir(path).map_err(io(format!("creating {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("protecting {}", path.display())))?;
    Ok(path.to_path_buf())
}

/// The end of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(LOG_TAIL);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Start(format!("a worker thread failed: {e}")))?
}

#[async_trait::async_trait]
impl Runtime for LocalRuntime {
    async fn start(&self, spec: &ComputerSpec) -> Result<Ready, RuntimeError> {
        check_id(&spec.id)?;
        if self.entry(&spec.id).is_some() {
            return self.rejoin(spec).await;
        }
        if let Some(ready) = self.claim(spec).await {
            return Ok(ready);
        }
        let (dir, exited) = self.launch(spec).await?;
        self.bring_up(spec, &dir, exited, START_GRACE).await
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        check_id(id)?;
        let Some((sandbox, mut exited)) = self.entry(id) else {
            self.forget(id);
            return Ok(());
        };
        // A frozen computer cannot close its browser.
        if let Some(cg) = sandbox.cgroup() {
            cg.thaw()?;
        }
        let client = self.client(id);
        if let Err(e) = client.shutdown().await {
            tracing::warn!(computer = %id, error = %e, "graceful stop refused; killing");
        }
        if tokio::time::timeout(STOP_GRACE, exited.wait_for(|e| e.is_some()))
            .await
            .is_err()
        {
            tracing::warn!(computer = %id, "did not stop in time; killing");
            kill_and_reap(&sandbox, exited).await;
        }
        self.forget(id);
        Ok(())
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let (sandbox, _) = self
            .entry(id)
            .ok_or_else(|| RuntimeError::NotRunning(id.to_owned()))?;
        // Freezing waits for every process to stop: not on an async worker.
        blocking(move || match sandbox.cgroup() {
            Some(cg) => Ok(cg.freeze()?),
            None => Err(RuntimeError::Start(
                "the computer has no cgroup to freeze".into(),
            )),
        })
        .await
    }

    async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        let (sandbox, _) = self
            .entry(id)
            .ok_or_else(|| RuntimeError::NotRunning(id.to_owned()))?;
        if let Some(cg) = sandbox.cgroup() {
            cg.thaw()?;
        }
        Ok(())
    }

    async fn fork(&self, parent: &str, child: &str, inherit: Inherit) -> Result<(), RuntimeError> {
        check_id(parent)?;
        check_id(child)?;
        let _busy = self.disks_busy.lock().await;
        if self.dir(child).join("upper").is_dir() {
            // Forked already (two steps may race to do it): nothing to do.
            return Ok(());
        }
        let disks = self.disks();
        let running = self.entry(parent);
        let layers = if !self.dir(parent).join("upper").is_dir() {
            Vec::new()
        } else if running.is_some() || disks.snapshots(parent) {
            // A running parent keeps its upper layer: snapshot or copy it,
            // frozen so that it is of one moment. On btrfs a stopped one
            // is snapshotted too (its own layers stay as they are).
            let sandbox = running.map(|(sandbox, _)| sandbox);
            let cgroup = sandbox.as_ref().and_then(|s| s.cgroup());
            let was_frozen = match cgroup {
                Some(cg) => cg.is_frozen()?,
                None => false,
            };
            self.forking
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(parent.to_owned());
            let (d, id, frozen) = (disks.clone(), parent.to_owned(), sandbox.clone());
            let copied = blocking(move || {
                let cgroup = frozen.as_ref().and_then(|s| s.cgroup());
                if let (Some(cg), false) = (cgroup, was_frozen) {
                    cg.freeze()?;
                }
                let copied = d.snapshot(&id);
                if let (Some(cg), false) = (cgroup, was_frozen) {
                    cg.thaw()?;
                }
                copied
            })
            .await;
            self.forking
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(parent);
            copied?
        } else {
            let (d, id) = (disks.clone(), parent.to_owned());
            blocking(move || d.rotate(&id)).await?
        };
        let mut hide = Vec::new();
        if !inherit.data {
            hide.push("session/data");
        }
        if !inherit.code {
            hide.push("session/code");
        }
        let child = child.to_owned();
        blocking(move || disks.create(&child, &layers, &hide)).await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        check_id(id)?;
        self.kill(id).await;
        let _busy = self.disks_busy.lock().await;
        let dir = self.dir(id);
        let disks = self.disks();
        blocking(move || {
            remove_tree(&dir)?;
            disks.collect_garbage()
        })
        .await
    }

    async fn state(&self, id: &str) -> Result<ComputerState, RuntimeError> {
        check_id(id)?;
        if let Some((sandbox, _)) = self.entry(id) {
            let forking = self
                .forking
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(id);
            if forking {
                return Ok(ComputerState::Running);
            }
            let frozen = match sandbox.cgroup() {
                Some(cg) => cg.is_frozen()?,
                None => false,
            };
            return Ok(if frozen {
                ComputerState::Paused
            } else {
                ComputerState::Running
            });
        }
        Ok(if self.dir(id).join("upper").is_dir() {
            ComputerState::Stopped
        } else {
            ComputerState::Absent
        })
    }

    fn host(&self, id: &str) -> Result<HostClient, RuntimeError> {
        check_id(id)?;
        self.entry(id)
            .ok_or_else(|| RuntimeError::NotRunning(id.to_owned()))?;
        Ok(self.client(id))
    }

    async fn vnc(&self, id: &str) -> Result<tokio::net::UnixStream, RuntimeError> {
        check_id(id)?;
        self.entry(id)
            .ok_or_else(|| RuntimeError::NotRunning(id.to_owned()))?;
        let namespace = self.client(id).namespace().map(str::to_owned);
        let socket = self.dir(id).join("run").join(VNC_SOCKET);
        raworc_host::client::connect_checked(&socket, namespace.as_deref())
            .await
            .map_err(io("connecting to the computer's VNC server"))
    }

    fn memory_bytes(&self, id: &str) -> Result<u64, RuntimeError> {
        let (sandbox, _) = self
            .entry(id)
            .ok_or_else(|| RuntimeError::NotRunning(id.to_owned()))?;
        match sandbox.cgroup() {
            Some(cg) => Ok(cg.memory_bytes()?),
            None => Ok(0),
        }
    }

    fn pool(&self) -> Option<crate::PoolStats> {
        self.pool_stats()
    }

    async fn stop_all(&self) {
        self.stop_pool();
        self.remove_pooled().await;
        for id in self.running() {
            if let Err(e) = self.stop(&id).await {
                tracing::warn!(computer = %id, error = %e, "stopping a computer failed");
            }
        }
    }

    fn running(&self) -> Vec<String> {
        let map = self.running.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(id, _)| !is_pooled(id))
            .filter(|(_, r)| r.exited.borrow().is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    async fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let dir = self.config.computers_dir.clone();
        blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io(format!("listing {}", dir.display()))(e)),
            };
            let mut ids = Vec::new();
            for entry in entries {
                let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
                if let Some(id) = entry.file_name().to_str() {
                    if check_id(id).is_ok() && !is_pooled(id) && entry.path().is_dir() {
                        ids.push(id.to_owned());
                    }
                }
            }
            ids.sort();
            Ok(ids)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pid_files_parse_strictly() {
        assert_eq!(super::parse_pid_file("123 456\n"), Some((123, 456)));
        for bad in ["", "123", "x 1", "1 2 3", "-1 2"] {
            assert_eq!(super::parse_pid_file(bad), None, "{bad:?}");
        }
    }
}
