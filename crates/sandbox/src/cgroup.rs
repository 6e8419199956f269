//! Resource limits and freezing for one sandbox, on cgroup v2 or v1,
//! whichever the machine offers (chosen at run time).
//!
//! Groups are made below the cgroup this process is in, per hierarchy, so a
//! server that is itself limited (a service unit, a container) keeps its
//! sandboxes inside its own limits.

use std::path::{Path, PathBuf};

use crate::SandboxError;

/// Limits of one sandbox; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory, swap included where the kernel accounts it.
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// CPU time per second of wall time, in thousandths of a core (1000 = one core).
    pub cpu_millicores: Option<u64>,
}

const CPU_PERIOD_US: u64 = 100_000;

/// CFS quota per period for `millicores` (at least 1 ms, the kernel's minimum).
fn cpu_quota_us(millicores: u64) -> u64 {
    (millicores * CPU_PERIOD_US / 1000).max(1000)
}

#[derive(Debug)]
enum Layout {
    /// One directory in the unified hierarchy.
    V2(PathBuf),
    /// One directory per controller.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
        freezer: PathBuf,
    },
}

/// The cgroup(s) of one sandbox.
#[derive(Debug)]
pub struct Cgroup {
    layout: Layout,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Io { context, source }
}

fn write(path: &Path, value: &str) -> Result<(), SandboxError> {
    std::fs::write(path, value).map_err(io(format!("writing '{value}' to {}", path.display())))
}

fn read(path: &Path) -> Result<String, SandboxError> {
    std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))
}

/// This process's cgroup path in the hierarchy whose controllers include
/// `controller` (`""` for the unified hierarchy).
fn own_path(controller: &str) -> Result<String, SandboxError> {
    let text = read(Path::new("/proc/self/cgroup"))?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        if matches {
            return Ok(path.trim_start_matches('/').to_string());
        }
    }
    Err(SandboxError::Cgroup(format!(
        "this process is in no '{controller}' cgroup"
    )))
}

/// True when the unified hierarchy has the controllers sandboxes need.
fn v2_usable() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .map(|c| {
            let c: Vec<&str> = c.split_whitespace().collect();
            ["memory", "pids", "cpu"]
                .iter()
                .all(|need| c.contains(need))
        })
        .unwrap_or(false)
}

impl Cgroup {
    /// Which cgroup version sandboxes use on this machine.
    pub fn version() -> u8 {
        if v2_usable() {
            2
        } else {
            1
        }
    }

    /// Where the group(s) `raworc/<name>` are, made or not.
    fn locate(name: &str) -> Result<Layout, SandboxError> {
        if name.is_empty() || name.contains(['/', '.']) {
            return Err(SandboxError::Spec(format!("bad cgroup name '{name}'")));
        }
        if v2_usable() {
            let base = Path::new("/sys/fs/cgroup")
                .join(own_path("")?)
                .join("raworc");
            return Ok(Layout::V2(base.join(name)));
        }
        let group = |controller: &str| -> Result<PathBuf, SandboxError> {
            Ok(Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(own_path(controller)?)
                .join("raworc")
                .join(name))
        };
        Ok(Layout::V1 {
            memory: group("memory")?,
            pids: group("pids")?,
            cpu: group("cpu")?,
            freezer: group("freezer")?,
        })
    }

    /// Creates the sandbox's group(s) `raworc/<name>` and applies `limits`.
    pub fn create(name: &str, limits: &Limits) -> Result<Cgroup, SandboxError> {
        let layout = Self::locate(name)?;
        if let Layout::V2(dir) = &layout {
            // Controllers must be enabled on the way down.
            let base = dir.parent().unwrap_or(Path::new("/sys/fs/cgroup"));
            make_dir(base)?;
            let parent = base.parent().unwrap_or(Path::new("/sys/fs/cgroup"));
            write(&parent.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
            write(&base.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
        }
        let cgroup = Cgroup { layout };
        for dir in cgroup.dirs() {
            make_dir(dir)?;
        }
        cgroup.apply(limits)?;
        if limits.cpu_millicores.is_some() {
            cgroup.limit_cpu(limits.cpu_millicores)?;
        }
        Ok(cgroup)
    }

    /// The group `raworc/<name>` if it exists: a sandbox's group found
    /// again after the control plane restarted.
    pub fn open(name: &str) -> Result<Option<Cgroup>, SandboxError> {
        let cgroup = Cgroup {
            layout: Self::locate(name)?,
        };
        Ok(cgroup.dirs().iter().any(|d| d.is_dir()).then_some(cgroup))
    }

    /// The group process `pid` is in, if it is a sandbox's (`…/raworc/<name>`
    /// in every hierarchy sandboxes use): found from the process itself, so
    /// that a control plane restarted in another cgroup still finds it.
    pub fn of_process(pid: u32) -> Result<Option<Cgroup>, SandboxError> {
        let text = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
        let path_of = |controller: &str| -> Option<String> {
            text.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next(), parts.next()?, parts.next()?);
                let matches = if controller.is_empty() {
                    controllers.is_empty()
                } else {
                    controllers.split(',').any(|c| c == controller)
                };
                matches.then(|| path.trim_start_matches('/').to_string())
            })
        };
        let sandbox = |p: &str| {
            Path::new(p)
                .parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| n == "raworc")
        };
        let layout = if v2_usable() {
            match path_of("") {
                Some(p) if sandbox(&p) => Layout::V2(Path::new("/sys/fs/cgroup").join(p)),
                _ => return Ok(None),
            }
        } else {
            let mut dirs = Vec::new();
            for controller in ["memory", "pids", "cpu", "freezer"] {
                match path_of(controller) {
                    Some(p) if sandbox(&p) => {
                        dirs.push(Path::new("/sys/fs/cgroup").join(controller).join(p))
                    }
                    _ => return Ok(None),
                }
            }
            let [memory, pids, cpu, freezer] = <[PathBuf; 4]>::try_from(dirs)
                .map_err(|_| SandboxError::Cgroup("incomplete cgroup paths".into()))?;
            Layout::V1 {
                memory,
                pids,
                cpu,
                freezer,
            }
        };
        Ok(Some(Cgroup { layout }))
    }

    /// Kills every process left in the group and removes it: the clean-up
    /// of a sandbox nobody owns any more.
    pub fn destroy(&self) -> Result<(), SandboxError> {
        let _ = self.thaw();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            for pid in self.pids().unwrap_or_default() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            match self.remove() {
                Ok(()) => return Ok(()),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    }

    /// Sets memory and process limits (changeable while the group runs).
    pub fn apply(&self, limits: &Limits) -> Result<(), SandboxError> {
        match &self.layout {
            Layout::V2(dir) => {
                if let Some(m) = limits.memory_bytes {
                    write(&dir.join("memory.max"), &m.to_string())?;
                    if dir.join("memory.swap.max").exists() {
                        write(&dir.join("memory.swap.max"), "0")?;
                    }
                }
                if let Some(p) = limits.pids {
                    write(&dir.join("pids.max"), &p.to_string())?;
                }
            }
            Layout::V1 { memory, pids, .. } => {
                if let Some(m) = limits.memory_bytes {
                    write(&memory.join("memory.limit_in_bytes"), &m.to_string())?;
                    // With swap accounting, the same bound on memory + swap.
                    let memsw = memory.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &m.to_string())?;
                    }
                }
                if let Some(p) = limits.pids {
                    write(&pids.join("pids.max"), &p.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Sets the group's CPU bandwidth (`None`: unlimited). Changeable while
    /// it runs: computers start unbounded and are capped once up.
    pub fn limit_cpu(&self, millicores: Option<u64>) -> Result<(), SandboxError> {
        match &self.layout {
            Layout::V2(dir) => {
                let quota = millicores.map_or("max".to_string(), |c| cpu_quota_us(c).to_string());
                write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))
            }
            Layout::V1 { cpu, .. } => {
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                let quota = millicores.map_or("-1".to_string(), |c| cpu_quota_us(c).to_string());
                write(&cpu.join("cpu.cfs_quota_us"), &quota)
            }
        }
    }

    /// Sets the group's CPU weight against other groups when the CPU is
    /// contended (100 is the default; 1 to 10000).
    pub fn cpu_weight(&self, weight: u64) -> Result<(), SandboxError> {
        let weight = weight.clamp(1, 10_000);
        match &self.layout {
            Layout::V2(dir) => write(&dir.join("cpu.weight"), &weight.to_string()),
            // v1 shares: 1024 is the default.
            Layout::V1 { cpu, .. } => write(
                &cpu.join("cpu.shares"),
                &(weight * 1024 / 100).max(2).to_string(),
            ),
        }
    }

    /// Every directory of the group: one on v2, one per controller on v1.
    fn dirs(&self) -> Vec<&PathBuf> {
        match &self.layout {
            Layout::V2(dir) => vec![dir],
            Layout::V1 {
                memory,
                pids,
                cpu,
                freezer,
            } => vec![memory, pids, cpu, freezer],
        }
    }

    /// Moves process `pid` (and its future children) into the group(s).
    pub fn add(&self, pid: u32) -> Result<(), SandboxError> {
        let pid = pid.to_string();
        for dir in self.dirs() {
            write(&dir.join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    /// Processes in the group.
    pub fn pids(&self) -> Result<Vec<u32>, SandboxError> {
        let dir = match &self.layout {
            Layout::V2(dir) => dir,
            Layout::V1 { pids, .. } => pids,
        };
        Ok(read(&dir.join("cgroup.procs"))?
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Stops every process of the group where it is, until [`Cgroup::thaw`];
    /// returns once all of them are frozen.
    pub fn freeze(&self) -> Result<(), SandboxError> {
        self.set_frozen(true)?;
        // The kernel freezes asynchronously (FREEZING, then FROZEN). On v1 a
        // task caught mid-fork or in the kernel can leave the group in
        // FREEZING; asking again freezes the stragglers.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut asked = std::time::Instant::now();
        while !self.is_frozen()? {
            if std::time::Instant::now() >= deadline {
                return Err(SandboxError::Cgroup(
                    "the group did not freeze within 10 s".into(),
                ));
            }
            if asked.elapsed() >= std::time::Duration::from_millis(50) {
                self.set_frozen(true)?;
                asked = std::time::Instant::now();
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }

    pub fn thaw(&self) -> Result<(), SandboxError> {
        self.set_frozen(false)
    }

    /// True once every process of the group is frozen.
    pub fn is_frozen(&self) -> Result<bool, SandboxError> {
        match &self.layout {
            Layout::V2(dir) => Ok(read(&dir.join("cgroup.events"))?
                .lines()
                .any(|l| l.trim() == "frozen 1")),
            Layout::V1 { freezer, .. } => {
                Ok(read(&freezer.join("freezer.state"))?.trim() == "FROZEN")
            }
        }
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), SandboxError> {
        match &self.layout {
            Layout::V2(dir) => write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
            Layout::V1 { freezer, .. } => write(
                &freezer.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
        }
    }

    /// Memory the group uses now, in bytes.
    pub fn memory_bytes(&self) -> Result<u64, SandboxError> {
        let path = match &self.layout {
            Layout::V2(dir) => dir.join("memory.current"),
            Layout::V1 { memory, .. } => memory.join("memory.usage_in_bytes"),
        };
        read(&path)?
            .trim()
            .parse()
            .map_err(|_| SandboxError::Cgroup(format!("unreadable {}", path.display())))
    }

    /// Removes the group(s) once the kernel has let go of the sandbox's last
    /// processes (they leave the group a moment after PID 1 is reaped).
    pub(crate) fn remove_when_empty(&self) -> Result<(), SandboxError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match self.remove() {
                Ok(()) => return Ok(()),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        }
    }

    /// Removes the group(s); they must be empty (the sandbox has ended).
    pub fn remove(&self) -> Result<(), SandboxError> {
        for dir in self.dirs() {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("removing {}", dir.display()))(e)),
            }
        }
        Ok(())
    }
}

fn make_dir(dir: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))
}
