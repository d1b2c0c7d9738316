//! Runs rabbitmq-backup-core's backup or restore engine from a YAML config
//! (`mode: backup | restore`), for the benchmark's peer comparison.

use rabbitmq_backup_core::config::{Mode, config_from_yaml_str};
use rabbitmq_backup_core::{backup::BackupEngine, restore::RestoreEngine};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: rabbitmq-backup-peer-driver CONFIG.yaml"))?;
    let config = config_from_yaml_str(&std::fs::read_to_string(path)?)?;
    let (_stop, stop_rx) = tokio::sync::broadcast::channel(1);
    match config.mode {
        Mode::Backup => {
            BackupEngine::new(config).run(stop_rx).await?;
        }
        Mode::Restore => {
            RestoreEngine::new(config).run(stop_rx).await?;
        }
    }
    Ok(())
}
