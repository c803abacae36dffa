//! Facts about this process that the engine reports (memory), read from
//! /proc so no dependency is needed.

/// Peak resident memory of this process (VmHWM).
pub fn peak_rss_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// The resident set now, for tracing where memory goes.
pub fn rss_now_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
}

/// Whether process `pid` of this host is alive: it exists and is not a
/// zombie (killed and not yet reaped by its parent).
pub fn process_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may
    // itself hold spaces or parentheses.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_is_alive_and_an_unused_pid_is_not() {
        assert!(super::process_alive(std::process::id() as i32));
        assert!(!super::process_alive(i32::MAX));
    }
}
