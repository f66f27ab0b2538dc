//! Recognising one's own crashed predecessor (contract 10).
//!
//! A registration records `boot-id:pid-namespace:pid:start-time` of the process that made
//! it. A node restarting on the same host finds the id still alive in the store; if that
//! process no longer exists (same boot and pid namespace, no process with that pid and start
//! time), the registration is its own crashed predecessor's and is replaced at once.
//! Otherwise it is a second node. The pid namespace tells apart containers that share a
//! host name and boot (`--net=host`), where pids mean nothing across containers.

/// This process's fingerprint, `boot-id:pid-namespace:pid:start-time` (`unknown` parts off
/// Linux).
pub fn process_fingerprint() -> String {
    fingerprint_of(std::process::id())
}

/// The fingerprint of process `pid` of this host (the work guard's, for one).
pub(crate) fn fingerprint_of(pid: u32) -> String {
    format!(
        "{}:{}:{pid}:{}",
        boot_id(),
        pid_namespace(),
        start_time(pid).unwrap_or_default()
    )
}

/// The pid a fingerprint names (`?` if it names none).
pub fn fingerprint_pid(fingerprint: &str) -> &str {
    fingerprint.split(':').nth(2).unwrap_or("?")
}

/// The inode of this process's pid namespace, e.g. `4026531836`.
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|p| {
            p.to_str()
                .and_then(|s| s.strip_prefix("pid:["))
                .map(|s| s.trim_end_matches(']').to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The host name, for operators and predecessor checks.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_string())
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Field 22 of `/proc/PID/stat`: start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<String> {
    stat_fields(pid)?.into_iter().nth(19)
}

/// The fields of `/proc/PID/stat` from the third (the state) on.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether `existing` is this very process's registration from before it re-executed itself
/// as incarnation `reexec_of` (a restart command): that incarnation, this host, this process
/// (an exec keeps the pid and start time). Another node with the same id inside this
/// process is not that case: it is refused like any live duplicate.
pub fn is_own_before_reexec(existing: &crate::store::NodeRecord, reexec_of: Option<i64>) -> bool {
    reexec_of == Some(existing.incarnation)
        && existing.host == host_name()
        && existing.process == process_fingerprint()
}

/// Whether the registration `(host, fingerprint)` certainly belongs to a process of this host
/// that no longer runs. Unknown cases answer `false`: the node is then refused, never doubled.
pub fn is_dead_predecessor(host: &str, fingerprint: &str) -> bool {
    if host != host_name() {
        return false;
    }
    let mut parts = fingerprint.splitn(4, ':');
    let (Some(boot), Some(namespace), Some(pid), Some(start)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let my_boot = boot_id();
    if my_boot == "unknown" || start.is_empty() {
        return false;
    }
    if boot != my_boot {
        return true; // the host rebooted since: that process is gone
    }
    if namespace != pid_namespace() || namespace == "unknown" {
        return false; // another container: its pids mean nothing here
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    let Some(fields) = stat_fields(pid) else {
        return true; // no such process
    };
    // The pid was reused by another process, or it exited and waits to be reaped.
    fields.get(19).is_none_or(|current| current != start)
        || fields
            .first()
            .is_some_and(|state| state == "Z" || state == "X")
}

/// Whether a registration of this host is proven to run nothing any more: its process is
/// gone, and so is its work guard, which exits only after killing the command groups it
/// held. Without a guard (or on another host) nothing is proven.
pub fn runs_nothing(host: &str, process: &str, guard: Option<&str>) -> bool {
    guard
        .is_some_and(|guard| is_dead_predecessor(host, process) && is_dead_predecessor(host, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_names_its_pid() {
        let mine = process_fingerprint();
        assert_eq!(fingerprint_pid(&mine), std::process::id().to_string());
        assert_eq!(fingerprint_pid("garbage"), "?");
    }

    #[test]
    fn a_running_process_is_not_a_dead_predecessor() {
        assert!(!is_dead_predecessor(&host_name(), &process_fingerprint()));
    }

    #[test]
    fn an_exited_process_is_a_dead_predecessor() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = start_time(pid);
        let mut child = child;
        child.wait().unwrap();
        let fingerprint = format!(
            "{}:{}:{pid}:{}",
            boot_id(),
            pid_namespace(),
            start.unwrap_or_else(|| "1".into())
        );
        assert!(is_dead_predecessor(&host_name(), &fingerprint));
    }

    #[test]
    fn an_unreaped_child_is_gone_and_a_live_one_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fingerprint = fingerprint_of(child.id());
        assert!(!is_dead_predecessor(&host_name(), &fingerprint), "running");
        assert!(!runs_nothing(
            &host_name(),
            &fingerprint,
            Some(&process_fingerprint())
        ));
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let exited =
            |pid| stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s == "Z" || s == "X"));
        let zombie = poll_for(|| exited(child.id()));
        assert!(zombie, "killed, not yet reaped");
        assert!(
            is_dead_predecessor(&host_name(), &fingerprint),
            "a zombie runs nothing"
        );
        assert!(runs_nothing(&host_name(), &fingerprint, Some(&fingerprint)));
        assert!(
            !runs_nothing(&host_name(), &fingerprint, None),
            "no guard, no proof"
        );
        child.wait().unwrap();
    }

    /// Polls `check` for up to 10 s.
    fn poll_for(mut check: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if check() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn other_hosts_and_garbage_are_never_presumed_dead() {
        assert!(!is_dead_predecessor("another-host", &process_fingerprint()));
        assert!(!is_dead_predecessor(&host_name(), "garbage"));
        let other_container = format!("{}:1:1:1", boot_id());
        assert!(
            !is_dead_predecessor(&host_name(), &other_container),
            "another pid namespace's pid 1"
        );
    }
}
