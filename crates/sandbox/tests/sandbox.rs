//! Real sandboxes on the real computer image (built first when missing,
//! into `RAWORC_TEST_IMAGES_DIR`, default `/var/cache/raworc-test/images`).
//! Needs root, like the `local` runtime.

use std::path::Path;

use raworc_sandbox::{Bind, Cgroup, Limits, Sandbox, SandboxSpec};
use raworc_testkit::computer::image_rootfs;

fn spec(dir: &Path, script: &str) -> SandboxSpec {
    SandboxSpec {
        layers: Vec::new(),
        image: image_rootfs(),
        upper: dir.join("upper"),
        work: dir.join("work"),
        root: dir.join("root"),
        hostname: "computer-test".into(),
        uid: 1000,
        gid: 1000,
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
        cwd: "/home/computer".into(),
        cgroup: None,
        binds: Vec::new(),
        log: None,
        tmpfs: Vec::new(),
        allow_user_namespaces: false,
    }
}

/// A cgroup name no other test run uses.
fn unique_name(what: &str) -> String {
    format!("test-{what}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// Polls `cond` every few milliseconds until it holds, failing after `secs`.
#[track_caller]
fn await_true(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `keyctl`'s number on this architecture (one of the filtered calls).
fn libc_keyctl() -> i64 {
    if cfg!(target_arch = "aarch64") {
        219
    } else {
        250
    }
}

fn host_mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo")
}

#[test]
fn a_sandbox_is_isolated_unprivileged_and_writes_to_its_own_layer() {
    let dir = tempfile::tempdir().unwrap();
    // Something only the host has: this test's own directory.
    let host_only = dir.path().display().to_string();
    let script = format!(
        "{{ id -u; id -g; hostname; grep ^CapEff /proc/self/status; \
         grep ^CapBnd /proc/self/status; grep ^NoNewPrivs /proc/self/status; \
         ls /proc | grep -c '^[0-9]'; \
         tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,; echo; \
         test -e '{host_only}' && echo host-visible || echo host-hidden; \
         touch /etc/passwd 2>/dev/null && echo etc-writable || echo etc-readonly; \
         grep ^Seccomp: /proc/self/status; \
         python3 -c 'import ctypes; c = ctypes.CDLL(None, use_errno=True); \
         print(c.syscall({keyctl}, 0, 0, 0, 0, 0), ctypes.get_errno())'; \
         }} > /home/computer/report",
        keyctl = libc_keyctl(),
    );
    let spec = spec(dir.path(), &script);
    let sandbox = Sandbox::spawn(&spec).expect("spawn");
    assert_eq!(sandbox.wait().expect("wait"), 0);

    // The file landed in the session's upper layer, not in the image.
    let report = std::fs::read_to_string(spec.upper.join("home/computer/report"))
        .expect("the report in the upper layer");
    assert!(!spec.image.join("home/computer/report").exists());
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "1000", "uid: {report}");
    assert_eq!(lines[1], "1000", "gid: {report}");
    assert_eq!(lines[2], "computer-test", "hostname: {report}");
    assert_eq!(lines[3], "CapEff:\t0000000000000000", "{report}");
    assert_eq!(lines[4], "CapBnd:\t0000000000000000", "{report}");
    assert_eq!(lines[5], "NoNewPrivs:\t1", "{report}");
    let pids: u32 = lines[6].parse().expect("pid count");
    assert!(pids < 10, "the host's processes are visible: {pids}");
    assert_eq!(lines[7], "lo,", "interfaces: {report}");
    assert_eq!(lines[8], "host-hidden", "{report}");
    assert_eq!(lines[9], "etc-readonly", "{report}");
    assert_eq!(lines[10], "Seccomp:\t2", "no seccomp filter: {report}");
    // A denied call fails with EPERM (1) instead of reaching the kernel's keyrings.
    assert_eq!(lines[11], "-1 1", "keyctl was not filtered: {report}");
    // Nothing of the sandbox stays mounted on the host.
    assert!(!host_mounts().contains(&spec.root.display().to_string()));
}

#[test]
fn binds_appear_below_run_with_their_modes() {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("tool");
    std::fs::write(&tool, "read-only tool\n").unwrap();
    // Owned by the computer's user: only the read-only bind stops a write.
    std::os::unix::fs::chown(&tool, Some(1000), Some(1000)).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::os::unix::fs::chown(&shared, Some(1000), Some(1000)).unwrap();
    let mut spec = spec(
        dir.path(),
        "cat /run/raworc/bin/tool > /run/raworc/io/copy; \
         { echo more >> /run/raworc/bin/tool; } 2>/dev/null && echo tool-writable >> /run/raworc/io/copy; \
         stat -c %a /run >> /run/raworc/io/copy; echo to-the-log; echo err-too >&2",
    );
    spec.log = Some(dir.path().join("log"));
    spec.binds = vec![
        Bind {
            source: tool.clone(),
            target: "/run/raworc/bin/tool".into(),
            readonly: true,
        },
        Bind {
            source: shared.clone(),
            target: "/run/raworc/io".into(),
            readonly: false,
        },
    ];
    let sandbox = Sandbox::spawn(&spec).expect("spawn");
    assert_eq!(sandbox.wait().expect("wait"), 0);
    let copy = std::fs::read_to_string(shared.join("copy")).expect("written through the bind");
    assert_eq!(copy, "read-only tool\n755\n");
    let log = std::fs::read_to_string(dir.path().join("log")).expect("the log");
    assert_eq!(log, "to-the-log\nerr-too\n");
    assert_eq!(std::fs::read_to_string(&tool).unwrap(), "read-only tool\n");
    // /run is a tmpfs of the sandbox: nothing of it reached the session's disk.
    assert!(!spec.upper.join("run/raworc").exists());

    // Targets outside /run are refused before anything starts.
    spec.binds[0].target = "/etc/tool".into();
    let err = Sandbox::spawn(&spec).expect_err("a bind outside /run");
    assert!(err.to_string().contains("below /run"), "{err}");
}

/// Runs `script` in a sandbox made by `spec` and returns its report file.
fn report_of(dir: &Path, spec: &SandboxSpec) -> String {
    let sandbox = Sandbox::spawn(spec).expect("spawn");
    let code = sandbox.wait().expect("wait");
    let report =
        std::fs::read_to_string(spec.upper.join("home/computer/report")).unwrap_or_default();
    assert_eq!(code, 0, "the script failed: {report}");
    let _ = std::fs::remove_file(dir.join("upper/home/computer/report"));
    report
}

#[test]
fn new_user_namespaces_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    // `unshare -U`, a thread and a fork (clone3 → ENOSYS → clone without
    // CLONE_NEWUSER), and unshare(CLONE_NEWUSER) itself.
    let script = "{ unshare -U -r id -u 2>&1 | tail -n1; \
         python3 -c 'import os, threading; t = threading.Thread(target=lambda: None); t.start(); t.join(); pid = os.fork(); os._exit(0) if pid == 0 else print(\"fork\", os.waitpid(pid, 0)[1])'; \
         python3 -c 'import ctypes; c = ctypes.CDLL(None, use_errno=True); print(\"made\" if c.unshare(0x10000000) == 0 else ctypes.get_errno())'; \
         } > /home/computer/report";
    let mut spec = spec(dir.path(), script);
    let denied = report_of(dir.path(), &spec);
    let lines: Vec<&str> = denied.lines().collect();
    assert!(lines[0].contains("Operation not permitted"), "{denied}");
    assert_eq!(lines[1], "fork 0", "threads and forks still work: {denied}");
    assert_eq!(lines[2], "1", "EPERM for unshare(CLONE_NEWUSER): {denied}");

    spec.allow_user_namespaces = true;
    let allowed = report_of(dir.path(), &spec);
    let lines: Vec<&str> = allowed.lines().collect();
    assert_eq!(lines[0], "0", "root of a new user namespace: {allowed}");
    assert_eq!(lines[2], "made", "{allowed}");
}

#[test]
fn tmpfs_mounts_are_memory_only_and_owned_by_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(
        dir.path(),
        "{ stat -f -c %T /session/secrets; stat -c '%a %u' /session/secrets; \
         echo kept-in-memory > /session/secrets/KEY && echo written; } > /home/computer/report",
    );
    spec.tmpfs = vec![raworc_sandbox::Tmpfs {
        target: "/session/secrets".into(),
        mode: 0o700,
        size_bytes: 1 << 20,
    }];
    let report = report_of(dir.path(), &spec);
    assert_eq!(report, "tmpfs\n700 1000\nwritten\n");
    // The file lived in memory: nothing of it in the session's layer.
    assert!(!spec.upper.join("session/secrets/KEY").exists());

    spec.tmpfs[0].target = "/session/../etc".into();
    let err = Sandbox::spawn(&spec).expect_err("a target with ..");
    assert!(err.to_string().contains("plain absolute path"), "{err}");
}

#[test]
fn killing_a_sandbox_ends_all_its_processes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        "sleep 1000 & sleep 1000 & echo started > /home/computer/started; wait",
    );
    let sandbox = Sandbox::spawn(&spec).expect("spawn");
    let started = spec.upper.join("home/computer/started");
    // The children exist once the marker is written.
    await_true("the sandbox to start", 10, || started.exists());
    let children: Vec<u32> = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        sandbox.pid(),
        sandbox.pid()
    ))
    .expect("children of PID 1")
    .split_whitespace()
    .filter_map(|p| p.parse().ok())
    .collect();
    assert_eq!(children.len(), 2, "{children:?}");
    assert_eq!(sandbox.kill().expect("kill"), 128 + 9);
    for pid in children {
        // Killed with PID 1; reaped by the kernel as the namespace dies.
        await_true(&format!("process {pid} to end"), 5, || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
    }
    assert!(!host_mounts().contains(&spec.root.display().to_string()));
}

#[test]
fn a_failed_start_says_which_step_failed() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), "true");
    spec.argv = vec!["/no/such/program".into()];
    let err = Sandbox::spawn(&spec).expect_err("must fail");
    let text = err.to_string();
    assert!(text.contains("exec the program"), "{text}");
    assert!(text.contains("errno 2"), "{text}");
}

#[test]
fn limits_contain_a_memory_hog_and_a_fork_bomb() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(
        dir.path(),
        "python3 -c 'b = bytearray(512 * 1024 * 1024); print(len(b))' > /dev/null 2>&1; \
         echo $? > /home/computer/hog; \
         cat /proc/self/cgroup > /home/computer/cgroup; \
         echo ready > /home/computer/ready; \
         ( while :; do sleep 600 & done ) 2>/dev/null; exec sleep 600",
    );
    spec.cgroup = Some((
        unique_name("limits"),
        Limits {
            memory_bytes: Some(96 * 1024 * 1024),
            pids: Some(32),
            cpu_millicores: Some(500),
        },
    ));
    let sandbox = Sandbox::spawn(&spec).expect("spawn");
    let ready = spec.upper.join("home/computer/ready");
    await_true("the memory hog to end", 60, || ready.exists());
    let read = |f: &str| std::fs::read_to_string(spec.upper.join("home/computer").join(f)).unwrap();
    // The hog was killed by the memory limit (SIGKILL: 128 + 9).
    assert_eq!(read("hog").trim(), "137", "the memory hog was not stopped");
    // The group is the root of the sandbox's cgroup namespace.
    for line in read("cgroup").lines() {
        assert!(line.ends_with(":/"), "cgroup path visible inside: {line}");
    }
    // The fork bomb fills the group up to its limit and no further.
    let cg = sandbox.cgroup().expect("cgroup");
    await_true("the fork bomb to reach the limit", 30, || {
        cg.pids().map(|p| p.len() >= 28).unwrap_or(false)
    });
    for _ in 0..20 {
        let n = cg.pids().unwrap().len();
        assert!(n <= 32, "{n} processes despite pids.max = 32");
    }
    assert!(cg.memory_bytes().unwrap() > 0);
    assert_eq!(sandbox.kill().expect("kill"), 128 + 9);
    // The group is gone with the sandbox.
    assert!(cg.pids().is_err(), "the cgroup outlived its sandbox");
}

#[test]
fn a_frozen_sandbox_makes_no_progress_until_thawed() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(
        dir.path(),
        "while :; do date +%s%N > /home/computer/tick.new; mv /home/computer/tick.new /home/computer/tick; sleep 0.01; done",
    );
    spec.cgroup = Some((unique_name("freeze"), Limits::default()));
    let sandbox = Sandbox::spawn(&spec).expect("spawn");
    let tick = spec.upper.join("home/computer/tick");
    let read = || std::fs::read_to_string(&tick).unwrap_or_default();
    await_true("the first tick", 10, || !read().is_empty());
    let cg = sandbox.cgroup().expect("cgroup");
    cg.freeze().unwrap();
    await_true("the freeze", 5, || cg.is_frozen().unwrap());
    let frozen_at = read();
    // An observation window, not a wait for a condition: nothing may change in it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(read(), frozen_at, "the sandbox ran while frozen");
    cg.thaw().unwrap();
    await_true("a tick after thawing", 10, || read() != frozen_at);
    assert_eq!(sandbox.kill().expect("kill"), 128 + 9);
}

#[test]
fn this_machine_has_a_usable_cgroup_version() {
    assert!(matches!(Cgroup::version(), 1 | 2));
}
