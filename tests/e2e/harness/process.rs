//! Process helpers shared by the servers the harness starts.

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
