//! The system-call filter every sandboxed process runs under.
//!
//! A deny list, answered with `EPERM`: calls a desktop, a browser and the
//! tools people run never need, and that widen the kernel's attack surface
//! (module loading, kexec, BPF, perf events, keyrings, userfaultfd, handle
//! based opens, clock and swap changes, reboot).
//!
//! New user namespaces are denied too unless the spec allows them: inside
//! one, an unprivileged process is root again for netfilter, mounts and
//! much else of the kernel, where most container escapes of recent years
//! began. `clone` and `unshare` are filtered on their `CLONE_NEWUSER` bit;
//! `clone3` passes its flags in memory a filter cannot read, so it answers
//! `ENOSYS` and the C library falls back to `clone` (as common container
//! runtimes do).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

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

fn spec_error(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Spec(format!("seccomp: {e}"))
}

/// `syscall`'s first argument (the flags of `clone` and `unshare`) has
/// `CLONE_NEWUSER` set.
fn new_user_namespace() -> Result<SeccompRule, SandboxError> {
    let bit = libc::CLONE_NEWUSER as u64;
    let asks = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(bit), bit)
        .map_err(spec_error)?;
    SeccompRule::new(vec![asks]).map_err(spec_error)
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    answer: i32,
    arch: TargetArch,
) -> Result<BpfProgram, SandboxError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(answer as u32),
        arch,
    )
    .map_err(spec_error)?;
    BpfProgram::try_from(filter).map_err(spec_error)
}

/// The compiled filters for this machine's architecture, to be installed
/// one after the other (the kernel applies the strictest answer).
pub(crate) fn programs(allow_user_namespaces: bool) -> Result<Vec<BpfProgram>, SandboxError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(spec_error)?;
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|nr| (*nr, Vec::new())).collect();
    let mut programs = Vec::new();
    if !allow_user_namespaces {
        denied.insert(libc::SYS_unshare, vec![new_user_namespace()?]);
        denied.insert(libc::SYS_clone, vec![new_user_namespace()?]);
        let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
        programs.push(compile(clone3, libc::ENOSYS, arch)?);
    }
    programs.insert(0, compile(denied, libc::EPERM, arch)?);
    Ok(programs)
}
