//! Process helpers shared by the servers the harness starts.

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range.
///
/// A port from `bind(0)` is an ephemeral one: while a node is between
/// `stop_app` and `start_app` its listeners are closed, and any outgoing
/// connection of another test may take the port as its source, so the
/// listener cannot come back (seen in CI: 3.8's management on `start_app`).
/// Ports below the range are never handed out for outgoing connections, and a
/// cursor shared by the process never gives the same one twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let (low, high) = listening_range();
    let span = u32::from(high - low);
    // Start where another test process (cargo runs binaries one by one,
    // but a developer may run two) is unlikely to be.
    let _ = CURSOR.compare_exchange(
        0,
        std::process::id() % span + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let step = CURSOR.fetch_add(1, Ordering::Relaxed);
        let port = low + (step % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {low} and {high}");
}

/// Ports the harness hands out: from 10000 to just below the kernel's
/// ephemeral range (`ip_local_port_range`, 32768 by default).
fn listening_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    assert!(
        ephemeral_low > 12000,
        "the ephemeral port range starts at {ephemeral_low}: the harness needs ports 10000-12000 outside it"
    );
    (10000, ephemeral_low)
}

/// Where scripts/install-deps puts its virtualenvs
/// (`${XDG_CACHE_HOME:-~/.cache}/rabbitmq-backup`).
pub fn tool_cache() -> std::path::PathBuf {
    std::env::var("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
        })
        .join("rabbitmq-backup")
}

/// For `pre_exec`: the child is killed when the thread that spawned it
/// dies, so a crashed test run leaves no server behind.
pub fn set_parent_death_signal() -> std::io::Result<()> {
    // A raw prctl(PR_SET_PDEATHSIG) system call: no allocation, fit for pre_exec.
    Ok(rustix::process::set_parent_process_death_signal(Some(
        rustix::process::Signal::KILL,
    ))?)
}
