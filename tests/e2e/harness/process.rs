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
    let Some((low, high)) = listening_range(ephemeral_range()) else {
        // No room outside the ephemeral range: the kernel's pick, racy as above.
        return std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    };
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

/// The kernel's ephemeral ports (`ip_local_port_range`; Linux's default if unreadable).
fn ephemeral_range() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let mut bounds = range
        .iter()
        .flat_map(|s| s.split_whitespace())
        .filter_map(|n| n.parse::<u16>().ok());
    match (bounds.next(), bounds.next()) {
        (Some(low), Some(high)) if low <= high => (low, high),
        _ => (32768, 60999),
    }
}

/// Ports the harness hands out, `[low, high)`: below the ephemeral range
/// from 10000, or above it, whichever has room for 2000; `None` if neither.
fn listening_range((ephemeral_low, ephemeral_high): (u16, u16)) -> Option<(u16, u16)> {
    if ephemeral_low >= 12000 {
        Some((10000, ephemeral_low))
    } else if ephemeral_high <= 63000 {
        Some((ephemeral_high + 1, 65535))
    } else {
        None
    }
}

#[test]
fn listening_ports_stay_out_of_the_ephemeral_range() {
    assert_eq!(listening_range((32768, 60999)), Some((10000, 32768)));
    assert_eq!(listening_range((1024, 60999)), Some((61000, 65535)));
    assert_eq!(listening_range((1024, 65535)), None);
    let port = free_port();
    let (low, high) = ephemeral_range();
    assert!(listening_range((low, high)).is_none() || !(low..=high).contains(&port));
    assert_ne!(free_port(), free_port(), "a port is handed out once");
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
