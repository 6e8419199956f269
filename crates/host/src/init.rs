//! PID 1 duties. The host starts as PID 1 of the computer's pid namespace,
//! which adopts every orphan there. It forks: the child becomes the
//! supervisor, and PID 1 stays a tiny loop that reaps whatever dies and
//! exits with the supervisor (which ends the whole computer).

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Returns in the supervisor; never returns in PID 1. Call it before any
/// thread is started.
pub fn split_off_reaper() -> nix::Result<()> {
    if std::process::id() != 1 {
        return Ok(());
    }
    // SAFETY: called before any other thread exists; the child goes on to
    // run normal Rust code, the parent only waits and exits.
    match unsafe { fork() }? {
        ForkResult::Child => Ok(()),
        ForkResult::Parent { child } => reap_until(child),
    }
}

fn reap_until(supervisor: Pid) -> ! {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == supervisor => std::process::exit(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == supervisor => {
                std::process::exit(128 + signal as i32)
            }
            Err(nix::Error::ECHILD) => std::process::exit(0),
            _ => continue,
        }
    }
}
