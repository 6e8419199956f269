//! What the cloned child does before it becomes the sandbox's program.
//! Everything here runs between `clone` and `exec`: system calls only, on
//! C strings prepared by [`Plan::new`] in the parent.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use nix::mount::{mount, MsFlags};

use std::path::{Component, Path};

use crate::{cpath, cstring, Bind, SandboxError, SandboxSpec, Tmpfs};

/// Device nodes bound from the host into the sandbox's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// One bind, resolved: directories to create (outermost first), the target
/// (a directory or an empty file, like its source), and the flags.
struct BindPlan {
    parents: Vec<CString>,
    source: CString,
    target: CString,
    target_is_dir: bool,
    readonly: bool,
}

impl BindPlan {
    fn new(root: &Path, bind: &Bind) -> Result<BindPlan, SandboxError> {
        let inside = Path::new(&bind.target);
        let relative = inside
            .strip_prefix("/run")
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
            .filter(|r| r.components().all(|c| matches!(c, Component::Normal(_))))
            .ok_or_else(|| {
                SandboxError::Spec(format!(
                    "bind target {} is not a plain path below /run",
                    bind.target
                ))
            })?;
        let meta = std::fs::metadata(&bind.source).map_err(|source| SandboxError::Io {
            context: format!("bind source {}", bind.source.display()),
            source,
        })?;
        let mut parents = Vec::new();
        let mut dir = root.join("run");
        let components: Vec<_> = relative.components().collect();
        for c in &components[..components.len() - 1] {
            dir.push(c);
            parents.push(cpath("bind target", &dir)?);
        }
        Ok(BindPlan {
            parents,
            source: cpath("bind source", &bind.source)?,
            target: cpath("bind target", &root.join("run").join(relative))?,
            target_is_dir: meta.is_dir(),
            readonly: bind.readonly,
        })
    }
}

/// One tmpfs, resolved: directories to create inside (outermost first,
/// the target last) and its mount options.
struct TmpfsPlan {
    dirs: Vec<CString>,
    options: CString,
}

impl TmpfsPlan {
    fn new(tmpfs: &Tmpfs, uid: u32, gid: u32) -> Result<TmpfsPlan, SandboxError> {
        let target = Path::new(&tmpfs.target);
        let plain = target.is_absolute()
            && target.components().count() > 1
            && target
                .components()
                .skip(1)
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(SandboxError::Spec(format!(
                "tmpfs target {} is not a plain absolute path",
                tmpfs.target
            )));
        }
        let mut dirs = Vec::new();
        let mut dir = std::path::PathBuf::from("/");
        for c in target.components().skip(1) {
            dir.push(c);
            dirs.push(cpath("tmpfs target", &dir)?);
        }
        Ok(TmpfsPlan {
            dirs,
            options: cstring(
                "tmpfs options",
                format!(
                    "mode={:o},uid={uid},gid={gid},size={}",
                    tmpfs.mode, tmpfs.size_bytes
                ),
            )?,
        })
    }
}

pub(crate) struct Plan {
    root: CString,
    overlay_options: CString,
    proc_: CString,
    sys: CString,
    dev: CString,
    dev_shm: CString,
    dev_pts: CString,
    dev_ptmx: CString,
    devices: Vec<(CString, CString)>,
    run: CString,
    binds: Vec<BindPlan>,
    tmpfs: Vec<TmpfsPlan>,
    hostname: String,
    uid: u32,
    gid: u32,
    cwd: CString,
    program: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    env: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    seccomp: Vec<seccompiler::BpfProgram>,
}

impl Plan {
    pub(crate) fn new(spec: &SandboxSpec) -> Result<Plan, SandboxError> {
        let fixed = [
            ("image", &spec.image),
            ("upper", &spec.upper),
            ("work", &spec.work),
        ];
        for (what, p) in fixed
            .into_iter()
            .chain(spec.layers.iter().map(|l| ("layer", l)))
        {
            // overlayfs splits its options on commas and colons.
            if p.to_string_lossy().contains([',', ':']) {
                return Err(SandboxError::Spec(format!(
                    "the {what} path {} contains ',' or ':'",
                    p.display()
                )));
            }
        }
        let root = spec.root.clone();
        let devices = DEVICES
            .iter()
            .map(|d| {
                Ok((
                    cstring("device", format!("/dev/{d}"))?,
                    cpath("device", &root.join("dev").join(d))?,
                ))
            })
            .collect::<Result<Vec<_>, SandboxError>>()?;
        let argv: Vec<CString> = spec
            .argv
            .iter()
            .map(|a| cstring("argument", a))
            .collect::<Result<_, _>>()?;
        let env: Vec<CString> = spec
            .env
            .iter()
            .map(|(k, v)| cstring("environment", format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        let mut plan = Plan {
            overlay_options: cstring(
                "overlay options",
                format!(
                    "lowerdir={},upperdir={},workdir={}",
                    spec.layers
                        .iter()
                        .chain([&spec.image])
                        .map(|l| l.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":"),
                    spec.upper.display(),
                    spec.work.display()
                ),
            )?,
            proc_: cpath("root", &root.join("proc"))?,
            sys: cpath("root", &root.join("sys"))?,
            dev: cpath("root", &root.join("dev"))?,
            dev_shm: cpath("root", &root.join("dev/shm"))?,
            dev_pts: cpath("root", &root.join("dev/pts"))?,
            dev_ptmx: cpath("root", &root.join("dev/ptmx"))?,
            root: cpath("root", &root)?,
            devices,
            run: cpath("root", &root.join("run"))?,
            binds: spec
                .binds
                .iter()
                .map(|b| BindPlan::new(&root, b))
                .collect::<Result<_, _>>()?,
            tmpfs: spec
                .tmpfs
                .iter()
                .map(|t| TmpfsPlan::new(t, spec.uid, spec.gid))
                .collect::<Result<_, _>>()?,
            hostname: spec.hostname.clone(),
            uid: spec.uid,
            gid: spec.gid,
            cwd: cstring("cwd", &spec.cwd)?,
            program: argv[0].clone(),
            argv_ptrs: Vec::new(),
            env_ptrs: Vec::new(),
            argv,
            env,
            seccomp: crate::seccomp::programs(spec.allow_user_namespaces)?,
        };
        plan.argv_ptrs = plan.argv.iter().map(|a| a.as_ptr()).collect();
        plan.argv_ptrs.push(std::ptr::null());
        plan.env_ptrs = plan.env.iter().map(|a| a.as_ptr()).collect();
        plan.env_ptrs.push(std::ptr::null());
        Ok(plan)
    }
}

/// Reports the failed step and its errno to the parent, then exits.
fn fail(report: RawFd, step: &str, errno: i32) -> isize {
    let mut buf = [0u8; 128];
    let mut n = 0;
    for b in step.bytes().chain(*b": errno ") {
        if n < buf.len() {
            buf[n] = b;
            n += 1;
        }
    }
    let mut digits = [0u8; 12];
    let mut d = 0;
    let mut e = errno.unsigned_abs();
    loop {
        digits[d] = b'0' + (e % 10) as u8;
        d += 1;
        e /= 10;
        if e == 0 || d == digits.len() {
            break;
        }
    }
    while d > 0 && n < buf.len() {
        d -= 1;
        buf[n] = digits[d];
        n += 1;
    }
    // SAFETY: writing a stack buffer to a pipe and exiting are async-signal-safe.
    unsafe {
        libc::write(report, buf.as_ptr().cast(), n);
        libc::_exit(127)
    }
}

macro_rules! step {
    ($report:expr, $name:expr, $call:expr) => {
        if let Err(e) = $call {
            return fail($report, $name, e as i32);
        }
    };
}

fn mount_at(
    source: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: MsFlags,
    data: Option<&CStr>,
) -> nix::Result<()> {
    mount(Some(source), target, fstype, flags, data)
}

fn errno_of(ret: libc::c_int) -> nix::Result<()> {
    if ret < 0 {
        Err(nix::Error::last())
    } else {
        Ok(())
    }
}

/// Creates an empty file to bind a device onto.
fn touch(path: &CStr) -> nix::Result<()> {
    // SAFETY: plain system calls on a valid C string.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    errno_of(fd)?;
    // SAFETY: fd was just opened.
    unsafe { libc::close(fd) };
    Ok(())
}

fn mkdir(path: &CStr, mode: libc::mode_t) -> nix::Result<()> {
    // SAFETY: plain system call on a valid C string.
    let ret = unsafe { libc::mkdir(path.as_ptr(), mode) };
    if ret < 0 && nix::Error::last() != nix::Error::EEXIST {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Brings up `lo`, the only interface of the new network namespace.
fn loopback_up() -> nix::Result<()> {
    // SAFETY: socket/ioctl/close on a zeroed, correctly sized `ifreq`.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        errno_of(fd)?;
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let got = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if got < 0 {
            let e = nix::Error::last();
            libc::close(fd);
            return Err(e);
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let set = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        let e = nix::Error::last();
        libc::close(fd);
        if set < 0 {
            return Err(e);
        }
    }
    Ok(())
}

pub(crate) fn run(
    plan: &Plan,
    parent_ends: [RawFd; 2],
    go: RawFd,
    report: RawFd,
    stdio: Option<(RawFd, RawFd)>,
) -> isize {
    let none: Option<&CStr> = None;
    for fd in parent_ends {
        // SAFETY: closing this process's copy of a descriptor.
        unsafe { libc::close(fd) };
    }
    if let Some((null, log)) = stdio {
        for (from, to) in [(null, 0), (log, 1), (log, 2)] {
            // SAFETY: duplicating descriptors the parent opened for this child.
            step!(
                report,
                "redirect stdio",
                errno_of(unsafe { libc::dup2(from, to) })
            );
        }
    }
    // Wait until the parent has put this process in its cgroup, then make
    // that cgroup the root of the new cgroup namespace.
    let mut byte = 0u8;
    // SAFETY: reading one byte into a stack variable.
    if unsafe { libc::read(go, (&mut byte as *mut u8).cast(), 1) } != 1 {
        return fail(report, "wait for the parent", nix::Error::last() as i32);
    }
    step!(
        report,
        "enter a new cgroup namespace",
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
    );
    step!(
        report,
        "make mounts private",
        mount(
            none,
            c"/",
            none,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            none
        )
    );
    step!(
        report,
        "mount the overlay",
        mount_at(
            c"overlay",
            &plan.root,
            Some(c"overlay"),
            MsFlags::empty(),
            Some(&plan.overlay_options)
        )
    );
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    step!(report, "create /proc", mkdir(&plan.proc_, 0o555));
    step!(
        report,
        "mount /proc",
        mount_at(c"proc", &plan.proc_, Some(c"proc"), hardened, none)
    );
    step!(report, "create /sys", mkdir(&plan.sys, 0o555));
    step!(
        report,
        "mount /sys",
        mount_at(
            c"sysfs",
            &plan.sys,
            Some(c"sysfs"),
            hardened | MsFlags::MS_RDONLY,
            none
        )
    );
    step!(report, "create /dev", mkdir(&plan.dev, 0o755));
    step!(
        report,
        "mount /dev",
        mount_at(
            c"tmpfs",
            &plan.dev,
            Some(c"tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(c"mode=755,size=65536k")
        )
    );
    for (host, inside) in &plan.devices {
        step!(report, "create a device node", touch(inside));
        step!(
            report,
            "bind a device",
            mount_at(host, inside, none, MsFlags::MS_BIND, none)
        );
    }
    step!(report, "create /dev/shm", mkdir(&plan.dev_shm, 0o1777));
    step!(
        report,
        "mount /dev/shm",
        mount_at(
            c"shm",
            &plan.dev_shm,
            Some(c"tmpfs"),
            hardened,
            Some(c"mode=1777,size=268435456")
        )
    );
    step!(report, "create /dev/pts", mkdir(&plan.dev_pts, 0o755));
    step!(
        report,
        "mount /dev/pts",
        mount_at(
            c"devpts",
            &plan.dev_pts,
            Some(c"devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(c"newinstance,ptmxmode=0666,mode=0620")
        )
    );
    // SAFETY: plain system call on valid C strings.
    step!(
        report,
        "link /dev/ptmx",
        errno_of(unsafe { libc::symlink(c"pts/ptmx".as_ptr(), plan.dev_ptmx.as_ptr()) })
    );
    step!(report, "create /run", mkdir(&plan.run, 0o755));
    step!(
        report,
        "mount /run",
        mount_at(
            c"tmpfs",
            &plan.run,
            Some(c"tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(c"mode=755,size=65536k")
        )
    );
    for bind in &plan.binds {
        for dir in &bind.parents {
            step!(report, "create a bind's parent", mkdir(dir, 0o755));
        }
        if bind.target_is_dir {
            step!(report, "create a bind target", mkdir(&bind.target, 0o755));
        } else {
            step!(report, "create a bind target", touch(&bind.target));
        }
        step!(
            report,
            "bind into /run",
            mount_at(&bind.source, &bind.target, none, MsFlags::MS_BIND, none)
        );
        let mut flags =
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if bind.readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        step!(
            report,
            "restrict a bind",
            mount_at(c"none", &bind.target, none, flags, none)
        );
    }
    // Enter the new root; the old one is detached and gone from view.
    step!(
        report,
        "enter the root",
        nix::unistd::chdir(plan.root.as_c_str())
    );
    step!(report, "pivot_root", nix::unistd::pivot_root(c".", c"."));
    step!(
        report,
        "detach the old root",
        nix::mount::umount2(c".", nix::mount::MntFlags::MNT_DETACH)
    );
    step!(report, "chdir /", nix::unistd::chdir(c"/"));
    for tmpfs in &plan.tmpfs {
        for dir in &tmpfs.dirs {
            step!(report, "create a tmpfs target", mkdir(dir, 0o755));
        }
        if let Some(target) = tmpfs.dirs.last() {
            step!(
                report,
                "mount a tmpfs",
                mount_at(
                    c"tmpfs",
                    target,
                    Some(c"tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    Some(&tmpfs.options)
                )
            );
        }
    }
    step!(report, "bring up loopback", loopback_up());
    step!(
        report,
        "set the hostname",
        nix::unistd::sethostname(&plan.hostname)
    );
    // No capability can ever come back: empty the bounding set.
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    // Raw system calls, not libc's wrappers: those change the credentials of
    // every thread libc knows of, and in this copy of a multi-threaded
    // process it knows of threads that do not exist here, and waits for them.
    let gid = plan.gid as libc::c_long;
    let uid = plan.uid as libc::c_long;
    let groups = [plan.gid as libc::gid_t];
    // SAFETY: system calls with integer arguments and a valid one-element array.
    step!(
        report,
        "setgroups",
        errno_of(unsafe { libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()) } as libc::c_int)
    );
    // SAFETY: system call with integer arguments.
    step!(
        report,
        "setresgid",
        errno_of(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) } as libc::c_int)
    );
    // From root to another user: permitted and effective capabilities go.
    // SAFETY: system call with integer arguments.
    step!(
        report,
        "setresuid",
        errno_of(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) } as libc::c_int)
    );
    // SAFETY: prctl with integer arguments.
    step!(
        report,
        "clear ambient capabilities",
        errno_of(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
        })
    );
    // SAFETY: prctl with integer arguments.
    step!(
        report,
        "set no_new_privs",
        errno_of(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
    );
    step!(
        report,
        "chdir to the working dir",
        nix::unistd::chdir(plan.cwd.as_c_str())
    );
    // Last, so that the steps above are not filtered.
    for program in &plan.seccomp {
        let filter = libc::sock_fprog {
            len: program.len() as libc::c_ushort,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the kernel copies the program; `filter` points into the plan.
        step!(
            report,
            "install the seccomp filter",
            errno_of(unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &filter as *const libc::sock_fprog,
                )
            } as libc::c_int)
        );
    }
    // SAFETY: null-terminated arrays of pointers into C strings owned by the plan.
    unsafe {
        libc::execve(
            plan.program.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.env_ptrs.as_ptr(),
        )
    };
    fail(report, "exec the program", nix::Error::last() as i32)
}
