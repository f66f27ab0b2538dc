//! The work guard: a small process forked when the first node of a process starts, which
//! ends a node's work when the node cannot (contract 12: work started by a node ends before
//! the store can expire that node's lease).
//!
//! The node tells the guard, over a pipe, its lease deadline on the monotonic clock (which
//! every process of the machine shares), the process groups of the commands it runs, and
//! how many in-process handlers (library closures, HTTP calls) are still alive. When a
//! deadline passes without being extended, the guard kills the node's process groups, and
//! the node itself if in-process work is still alive: the node is frozen (SIGSTOP, swapped
//! out) or a handler ignores its cancellation. When the node dies (the pipe closes), the
//! guard kills the groups it still has, grandchildren of a `sh -c` included, which the
//! kernel's parent-death signal does not reach.
//!
//! The guard runs after `fork()` in a process that had other threads: it allocates nothing
//! and calls only async-signal-safe functions (poll, read, kill, clock_gettime, _exit).

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicU32, AtomicUsize, Ordering},
        Mutex, OnceLock,
    },
    time::Duration,
};

use tokio::time::Instant;
use tracing::warn;

/// Nodes one process can guard (each node of the process has a slot).
const SLOTS: usize = 64;
/// Process groups the guard can hold at once.
const GROUPS: usize = 4096;
/// One message: slot (u32), kind (u32), value (i64), little-endian; atomic on a pipe.
const MESSAGE: usize = 16;

const DEADLINE: u32 = 1;
const ADD_GROUP: u32 = 2;
const REMOVE_GROUP: u32 = 3;
const IN_PROCESS: u32 = 4;

/// The process's guard, forked on first use.
pub(crate) struct WorkGuard {
    pipe: Mutex<OwnedFd>,
    next_slot: AtomicU32,
    /// The guard's fingerprint (see `identity`): once it is gone, so is every command group
    /// it held.
    fingerprint: String,
}

/// One node's side of the guard.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GuardSlot(u32);

tokio::task_local! {
    /// The guard slot of the node whose work runs in this task.
    static SLOT: GuardSlot;
}

/// Runs `work` as work of the node that holds `slot`: the command groups it starts and
/// the handler futures it keeps alive are that node's.
pub(crate) async fn in_slot<F: std::future::Future>(slot: Option<GuardSlot>, work: F) -> F::Output {
    match slot {
        Some(slot) => SLOT.scope(slot, work).await,
        None => work.await,
    }
}

/// While alive, the process group `pgid` is killed if its node's deadline passes.
pub(crate) struct GroupWatch(Option<(GuardSlot, i32)>);

impl GroupWatch {
    /// Watches `pgid` for the node whose work runs in the current task (if any).
    pub fn new(pgid: i32) -> GroupWatch {
        let Some(slot) = SLOT.try_with(|s| *s).ok() else {
            return GroupWatch(None);
        };
        let Some(guard) = WorkGuard::get() else {
            return GroupWatch(None);
        };
        guard.send(slot, ADD_GROUP, i64::from(pgid));
        GroupWatch(Some((slot, pgid)))
    }
}

impl Drop for GroupWatch {
    fn drop(&mut self) {
        if let (Some((slot, pgid)), Some(guard)) = (self.0, WorkGuard::get()) {
            guard.send(slot, REMOVE_GROUP, i64::from(pgid));
        }
    }
}

impl WorkGuard {
    /// The process's guard, forked on first call; `None` if it could not be started (the
    /// node runs without it, with a warning).
    pub fn get() -> Option<&'static WorkGuard> {
        static GUARD: OnceLock<Option<WorkGuard>> = OnceLock::new();
        GUARD
            .get_or_init(|| match spawn() {
                Ok(guard) => Some(guard),
                Err(e) => {
                    warn!(error = %e, "cannot start the work guard: a frozen node's commands may outlive its lease");
                    None
                }
            })
            .as_ref()
    }

    /// The guard process's fingerprint, registered with each node of this process.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A slot for one node of this process.
    pub fn slot(&self) -> GuardSlot {
        GuardSlot(self.next_slot.fetch_add(1, Ordering::Relaxed) % SLOTS as u32)
    }

    fn send(&self, slot: GuardSlot, kind: u32, value: i64) {
        let pipe = self.pipe.lock().unwrap();
        Self::write(&pipe, slot, kind, value);
    }

    /// One message on the pipe, whose lock the caller holds.
    fn write(pipe: &OwnedFd, slot: GuardSlot, kind: u32, value: i64) {
        let mut message = [0u8; MESSAGE];
        message[..4].copy_from_slice(&slot.0.to_le_bytes());
        message[4..8].copy_from_slice(&kind.to_le_bytes());
        message[8..].copy_from_slice(&value.to_le_bytes());
        // SAFETY: a write of a local buffer to a pipe we own; non-blocking.
        let written = unsafe { libc::write(pipe.as_raw_fd(), message.as_ptr().cast(), MESSAGE) };
        if written != MESSAGE as isize {
            warn!(
                error = %std::io::Error::last_os_error(),
                "the work guard did not take a message"
            );
        }
    }
}

impl GuardSlot {
    /// The node's work must end by `deadline` (its lease's local deadline plus part of the
    /// margin, still before the store can expire it); `None`: no deadline (not working).
    pub fn set_deadline(self, deadline: Option<Instant>) {
        let Some(guard) = WorkGuard::get() else {
            return;
        };
        let value = match deadline {
            Some(at) => {
                let now = Instant::now();
                let ahead = at.saturating_duration_since(now);
                // A deadline already passed: now (a value of 0 would mean "none").
                monotonic_ns()
                    .saturating_add(ahead.as_nanos() as i64)
                    .max(1)
            }
            None => 0,
        };
        guard.send(self, DEADLINE, value);
    }

    /// Counts an in-process handler of this node started (`started`) or ended, and tells
    /// the guard the new count. Counted and sent under the pipe's lock: two threads' counts
    /// reach the guard in the order they were made (a stale count sent last would have the
    /// guard see work alive that ended, or none where some runs).
    pub fn count_in_process(slot: Option<Self>, count: &AtomicUsize, started: bool) {
        let update = || {
            if started {
                count.fetch_add(1, Ordering::SeqCst) + 1
            } else {
                count.fetch_sub(1, Ordering::SeqCst) - 1
            }
        };
        match (slot, WorkGuard::get()) {
            (Some(slot), Some(guard)) => {
                let pipe = guard.pipe.lock().unwrap();
                let now = update();
                WorkGuard::write(&pipe, slot, IN_PROCESS, now as i64);
            }
            _ => {
                update();
            }
        }
    }
}

/// The machine's monotonic clock in nanoseconds (shared by every process).
fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn spawn() -> std::io::Result<WorkGuard> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (read, write) = (fds[0], fds[1]);
    let node = unsafe { libc::getpid() };
    // SAFETY: the child runs only `guard_main`, which is async-signal-safe.
    match unsafe { libc::fork() } {
        -1 => {
            let e = std::io::Error::last_os_error();
            unsafe {
                libc::close(read);
                libc::close(write);
            }
            Err(e)
        }
        0 => unsafe { guard_main(read, write, node) },
        child => {
            unsafe {
                libc::close(read);
                // The node never waits on the guard's pipe.
                let flags = libc::fcntl(write, libc::F_GETFL);
                libc::fcntl(write, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
            Ok(WorkGuard {
                // SAFETY: `write` is ours and open.
                pipe: Mutex::new(unsafe { OwnedFd::from_raw_fd(write) }),
                next_slot: AtomicU32::new(0),
                fingerprint: super::identity::fingerprint_of(child as u32),
            })
        }
    }
}

/// Part of the margin the node's own cancellation has before the guard acts.
pub(crate) fn guard_deadline(lease_deadline: Instant, margin: Duration) -> Instant {
    lease_deadline + margin / 2
}

/// The guard's loop, in the forked child. Allocates nothing; async-signal-safe calls only.
unsafe fn guard_main(read: i32, write: i32, node: i32) -> ! {
    libc::close(write);
    // Out of the node's session and process group: a terminal's Ctrl-C or a signal to the
    // node's group does not end the guard; only the pipe's end does.
    libc::setsid();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        libc::signal(signal, libc::SIG_IGN);
    }
    // Keep only the pipe (as fd 3) and the standard streams.
    libc::dup2(read, 3);
    if read != 3 {
        libc::close(read);
    }
    libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
    let name = b"rota-guard\0";
    libc::prctl(libc::PR_SET_NAME, name.as_ptr());

    let mut deadlines = [0i64; SLOTS];
    let mut in_process = [0i64; SLOTS];
    let mut groups = [(0u32, 0i32); GROUPS];
    let mut count = 0usize;
    let mut buf = [0u8; MESSAGE * 64];
    let mut filled = 0usize;
    // How long to wait for a message: 0 while catching up, then until the next deadline.
    let mut timeout = 0;
    loop {
        let mut poll = libc::pollfd {
            fd: 3,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut poll, 1, timeout) > 0 {
            let n = libc::read(3, buf.as_mut_ptr().add(filled).cast(), buf.len() - filled);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                // The node is gone: so is all of its work.
                for &(_, pgid) in &groups[..count] {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                libc::_exit(0);
            }
            if n > 0 {
                filled += n as usize;
                let whole = filled / MESSAGE * MESSAGE;
                let mut at = 0;
                while at < whole {
                    let m = &buf[at..at + MESSAGE];
                    let slot = u32::from_le_bytes([m[0], m[1], m[2], m[3]]) as usize % SLOTS;
                    let kind = u32::from_le_bytes([m[4], m[5], m[6], m[7]]);
                    let value =
                        i64::from_le_bytes([m[8], m[9], m[10], m[11], m[12], m[13], m[14], m[15]]);
                    match kind {
                        DEADLINE => deadlines[slot] = value,
                        IN_PROCESS => in_process[slot] = value,
                        ADD_GROUP if count < GROUPS => {
                            groups[count] = (slot as u32, value as i32);
                            count += 1;
                        }
                        REMOVE_GROUP => {
                            if let Some(i) = groups[..count]
                                .iter()
                                .position(|g| g.0 as usize == slot && g.1 == value as i32)
                            {
                                count -= 1;
                                groups[i] = groups[count];
                            }
                        }
                        _ => {}
                    }
                    at += MESSAGE;
                }
                // Keep a partial message for the next read.
                let rest = filled - whole;
                let mut i = 0;
                while i < rest {
                    buf[i] = buf[whole + i];
                    i += 1;
                }
                filled = rest;
            }
            // Read everything sent before acting on a deadline: a renewal that came while
            // this process waited for a CPU still counts.
            timeout = 0;
            continue;
        }
        // Nothing more to read: act on passed deadlines.
        let now = monotonic_ns();
        for slot in 0..SLOTS {
            let deadline = deadlines[slot];
            if deadline == 0 || now < deadline {
                continue;
            }
            let mut i = 0;
            while i < count {
                if groups[i].0 as usize == slot {
                    libc::kill(-groups[i].1, libc::SIGKILL);
                    count -= 1;
                    groups[i] = groups[count];
                } else {
                    i += 1;
                }
            }
            if in_process[slot] > 0 {
                // In-process work outlives the lease: the node must end itself. Said on
                // the node's standard error, its log, so that the death has a cause.
                let line = b"{\"level\":\"ERROR\",\"message\":\"work guard: the node's lease deadline passed while its in-process work was alive: killing the node\",\"target\":\"rota::node::guard\"}\n";
                libc::write(2, line.as_ptr().cast(), line.len());
                libc::kill(node, libc::SIGKILL);
            }
            deadlines[slot] = 0;
        }
        timeout = -1;
        for &deadline in &deadlines {
            if deadline != 0 {
                let ms = ((deadline - now) / 1_000_000 + 1).clamp(0, 60_000) as i32;
                timeout = if timeout < 0 { ms } else { timeout.min(ms) };
            }
        }
    }
}
