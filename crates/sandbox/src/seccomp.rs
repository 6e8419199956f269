//! The system-call filter every sandboxed process runs under.
//!
//! A deny list, answered with `EPERM`: calls a desktop, a browser and the
//! tools people run never need, and that widen the kernel's attack surface
//! (module loading, kexec, BPF, perf events, keyrings, userfaultfd, handle
//! based opens, clock and swap changes, reboot). Mount, unshare and chroot
//! stay allowed: Chromium builds its own sandbox from user namespaces, and
//! without capabilities on the host they reach nothing outside the computer.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use crate::SandboxError;

const DENIED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_adjtimex,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_init_module,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_perf_event_open,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_userfaultfd,
    libc::SYS_vhangup,
];

/// The compiled filter for this machine's architecture.
pub(crate) fn program() -> Result<BpfProgram, SandboxError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| SandboxError::Spec(format!("seccomp: {e}")))?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        DENIED.iter().map(|nr| (*nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| SandboxError::Spec(format!("seccomp: {e}")))?;
    BpfProgram::try_from(filter).map_err(|e| SandboxError::Spec(format!("seccomp: {e}")))
}
