//! Named failure points for tests: `RABBITMQ_BACKUP_FAILPOINT=<name>=fail`
//! makes the tool fail at that point, `<name>=wait` makes it write
//! `<name>.reached` into `RABBITMQ_BACKUP_FAILPOINT_DIR` and hang there so a
//! test can kill it at an exact stage. Unset, a failpoint costs one lookup.
//!
//! `<name>=fail-on-node` makes a node-side step fail on the node itself
//! (see [`on_node`]).
//!
//! Points: `backup:after-stop-app`, `upload:after-first-chunk`,
//! `backup:before-manifest`, `restore:staged`, `restore:after-import`,
//! `restore:after-stop-app`, `restore:mid-swap`, `restore:after-swap`,
//! `restore:after-start`, `exclude:before-ack`, `exclude:after-batch`;
//! on the node: `ctl:stop-app` (the stop fails after the management
//! agent's handler was removed).

use std::sync::OnceLock;
use std::time::Duration;

fn configured() -> Option<&'static (String, String)> {
    static SPEC: OnceLock<Option<(String, String)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let spec = std::env::var("RABBITMQ_BACKUP_FAILPOINT").ok()?;
        let (name, action) = spec.rsplit_once('=')?;
        Some((name.to_string(), action.to_string()))
    })
    .as_ref()
}

/// Whether the node-side failpoint `name` is set (`<name>=fail-on-node`):
/// the caller then sends the node a step that fails there.
pub fn on_node(name: &str) -> bool {
    configured().is_some_and(|(point, action)| point == name && action == "fail-on-node")
}

/// Triggers the failpoint `name` if it is configured.
pub fn hit(name: &str) -> anyhow::Result<()> {
    let Some((point, action)) = configured() else {
        return Ok(());
    };
    if point != name {
        return Ok(());
    }
    match action.as_str() {
        "fail" => anyhow::bail!("failpoint {name} triggered"),
        "wait" => {
            if let Ok(dir) = std::env::var("RABBITMQ_BACKUP_FAILPOINT_DIR") {
                let _ = std::fs::write(
                    std::path::Path::new(&dir).join(format!("{name}.reached")),
                    b"",
                );
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        _ => Ok(()),
    }
}
