//! How the server's threads share the cores: the async runtime that runs the network work, and
//! the scheduling policy of its threads against the model threads.
//!
//! The model thread and its libtorch (OpenMP) team do the work that bounds throughput; the
//! runtime's threads do short bursts of network work. Under the default policy, a runtime
//! thread woken by a reply preempts a model thread in the middle of its bookkeeping or of a
//! parallel region, and the model thread's OpenMP partner spins at the next barrier meanwhile
//! (README, "Service benchmark", has the measurements). Linux's `SCHED_BATCH` threads never
//! preempt on wake-up (they wait for a free core or the end of the running thread's slice, a
//! few ms at most), and otherwise get their fair share of CPU time.

use std::io;

use serde::{Deserialize, Serialize};

/// The scheduling policy of the async runtime's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoThreadPolicy {
    /// `SCHED_BATCH` (Linux): network threads do not preempt the model threads on wake-up.
    #[default]
    Batch,
    /// The default policy (`SCHED_OTHER`) for every thread.
    Normal,
}

/// The multi-threaded runtime `diffgap serve` runs on, its threads under `policy`.
pub fn runtime(policy: IoThreadPolicy) -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = set_current(policy) {
                tracing::warn!("cannot set the scheduling policy of a runtime thread: {e}");
            }
        })
        .build()
}

/// Sets the calling thread's policy. A thread inherits its creator's policy, so a model
/// thread started from a runtime thread (a reload) resets itself to [`IoThreadPolicy::Normal`].
#[cfg(target_os = "linux")]
pub fn set_current(policy: IoThreadPolicy) -> io::Result<()> {
    let policy = match policy {
        IoThreadPolicy::Batch => libc::SCHED_BATCH,
        IoThreadPolicy::Normal => libc::SCHED_OTHER,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `pthread_self` is always valid for the calling thread and `param` outlives the
    // call; both policies are non-real-time, which needs no privilege.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Elsewhere every thread keeps the default policy.
#[cfg(not(target_os = "linux"))]
pub fn set_current(_policy: IoThreadPolicy) -> io::Result<()> {
    Ok(())
}

/// Lowers the calling thread's CPU priority by `increment` nice levels (at most to 19); returns
/// its new nice value. Linux keeps a nice value per thread (`who` 0 is the calling thread), and
/// raising it needs no privilege.
#[cfg(target_os = "linux")]
pub fn lower_current_priority(increment: i32) -> io::Result<i32> {
    // SAFETY: `errno` is the calling thread's; getpriority may legitimately return -1, so
    // errno tells its failures apart.
    let current = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let err = io::Error::last_os_error();
    if current == -1 && err.raw_os_error().is_some_and(|e| e != 0) {
        return Err(err);
    }
    let nice = current.saturating_add(increment.max(0)).min(19);
    // SAFETY: plain syscall on the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(nice)
}

/// Elsewhere the thread keeps its priority.
#[cfg(not(target_os = "linux"))]
pub fn lower_current_priority(_increment: i32) -> io::Result<i32> {
    Ok(0)
}

/// Pins the calling thread, and the threads it starts from now on, to the CPUs `cpus` (e.g. a
/// benchmark's in-process engine onto the cores its server runs on, away from the client's).
#[cfg(target_os = "linux")]
pub fn pin_current(cpus: &[usize]) -> io::Result<()> {
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpus.is_empty() || cpus.iter().any(|&c| c >= max) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPUs {cpus:?}: need at least one, each below {max}"),
        ));
    }
    // SAFETY: `cpu_set_t` is a plain bit array, all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` is below the set's size in bits (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs the calling thread may run on.
#[cfg(target_os = "linux")]
pub fn current_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: as in `pin_current`; `sched_getaffinity` fills `set`, of the size passed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: every index is below the set's size in bits.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

#[cfg(not(target_os = "linux"))]
pub fn pin_current(_cpus: &[usize]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "pinning threads to CPUs needs Linux",
    ))
}

/// The calling thread's policy (`None` for a policy this module does not set).
#[cfg(target_os = "linux")]
pub fn current() -> io::Result<Option<IoThreadPolicy>> {
    let mut policy = 0;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: both out-pointers are valid for the duration of the call.
    let rc = unsafe { libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(match policy {
        libc::SCHED_BATCH => Some(IoThreadPolicy::Batch),
        libc::SCHED_OTHER => Some(IoThreadPolicy::Normal),
        _ => None,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn runtime_threads_take_the_policy_and_model_threads_reset_it() {
        let rt = runtime(IoThreadPolicy::Batch).expect("runtime");
        let (io, spawned) = rt.block_on(async {
            tokio::spawn(async {
                let io = current().expect("policy");
                // As a reload starts a model thread from a runtime thread.
                let spawned = std::thread::spawn(|| {
                    let inherited = current().expect("policy");
                    set_current(IoThreadPolicy::Normal).expect("reset");
                    (inherited, current().expect("policy"))
                })
                .join()
                .expect("thread");
                (io, spawned)
            })
            .await
            .expect("task")
        });
        assert_eq!(io, Some(IoThreadPolicy::Batch));
        assert_eq!(spawned.0, Some(IoThreadPolicy::Batch), "inherited");
        assert_eq!(spawned.1, Some(IoThreadPolicy::Normal), "reset");
    }

    #[test]
    fn a_pinned_thread_runs_on_its_cpus_and_its_children_inherit_them() {
        let first = current_cpus().expect("CPUs")[0];
        let (own, child) = std::thread::spawn(move || {
            pin_current(&[first]).expect("pin to one CPU");
            assert_eq!(current_cpus().expect("CPUs"), [first]);
            let child =
                std::thread::spawn(|| std::thread::available_parallelism().map(usize::from))
                    .join()
                    .expect("child");
            (std::thread::available_parallelism().map(usize::from), child)
        })
        .join()
        .expect("thread");
        assert_eq!(own.expect("own CPUs"), 1);
        assert_eq!(child.expect("child CPUs"), 1);
        assert!(pin_current(&[]).is_err(), "no CPU");
        assert!(pin_current(&[1 << 20]).is_err(), "out of range");
    }

    #[test]
    fn a_lowered_priority_is_the_calling_threads_alone() {
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let lowered = std::thread::spawn(|| {
            let nice = lower_current_priority(5).expect("lower");
            (nice, unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
        })
        .join()
        .expect("thread");
        assert_eq!(lowered.0, (before + 5).min(19));
        assert_eq!(lowered.1, lowered.0);
        assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, before);
    }

    #[test]
    fn normal_runtime_keeps_the_default_policy() {
        let rt = runtime(IoThreadPolicy::Normal).expect("runtime");
        let io = rt.block_on(async { tokio::spawn(async { current() }).await.expect("task") });
        assert_eq!(io.expect("policy"), Some(IoThreadPolicy::Normal));
    }
}
