//! The agent's only `unsafe`: blocking SIGTERM and SIGINT and taking them synchronously with
//! `sigwait`, so no signal handler ever runs.
//!
//! [`block`] must run on the main thread before any other thread starts, so every thread inherits
//! the mask and the signals stay pending until [`Blocked::wait`] takes them. A blocked signal is
//! queued even for PID 1 of a pid namespace (the kernel only drops unhandled signals to PID 1 when
//! they are not blocked). A child would inherit the mask across `exec`, so
//! [`unblock_in_child`] clears it in the bootstrap before it starts.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The signals `strata-init` handles.
const HANDLED: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// Proof that [`HANDLED`] is blocked on the calling thread (and on the threads it starts).
pub(crate) struct Blocked {
    set: libc::sigset_t,
}

/// Blocks SIGTERM and SIGINT on the calling thread.
pub(crate) fn block() -> io::Result<Blocked> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigemptyset` initializes the set behind a valid pointer to a `sigset_t`.
    if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `sigemptyset` succeeded, so the set is initialized.
    let mut set = unsafe { set.assume_init() };
    for sig in HANDLED {
        // SAFETY: `set` is an initialized `sigset_t` and `sig` a valid signal number.
        if unsafe { libc::sigaddset(&mut set, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: `set` is initialized; a null old-set pointer is allowed. Only the two handled
    // signals are added to the mask, none that the C library relies on internally.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(Blocked { set })
}

impl Blocked {
    /// Waits for one of the handled signals and returns its number.
    pub(crate) fn wait(&self) -> io::Result<i32> {
        let mut sig: libc::c_int = 0;
        // SAFETY: `self.set` is an initialized `sigset_t` and `sig` a valid out-pointer.
        let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(sig)
    }
}

/// Makes `command`'s child start with an empty signal mask, whatever the parent blocks.
pub(crate) fn unblock_in_child(command: &mut Command) {
    // SAFETY: the closure runs in the child between `fork` and `exec`. It allocates nothing and
    // calls only `sigemptyset` and `pthread_sigmask`, which are async-signal-safe, on a set that
    // lives on its own stack.
    unsafe {
        command.pre_exec(|| {
            let mut set = MaybeUninit::<libc::sigset_t>::uninit();
            if libc::sigemptyset(set.as_mut_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let rc = libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(())
        })
    };
}
