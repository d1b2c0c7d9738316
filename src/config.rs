//! The optional TOML configuration file: the same settings as the flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::LogFormat;
use crate::error::usage;
use crate::repo::s3::Addressing;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_PATH: &str = "/etc/rabbitmq-backup.toml";

/// Top-level settings in the file; names match the long flags.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--repo`.
    pub repo: Option<String>,
    /// `--management-url`.
    pub management_url: Option<String>,
    /// `--username`.
    pub username: Option<String>,
    /// `--password` (prefer `password_file`).
    pub password: Option<String>,
    /// `--password-file`.
    pub password_file: Option<PathBuf>,
    /// `--amqp-url`.
    pub amqp_url: Option<String>,
    /// `--node`.
    pub node: Option<String>,
    /// `--rabbitmqctl`.
    pub rabbitmqctl: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--encrypt-to` (a list of `age1…` recipients).
    pub encrypt_to: Option<Vec<String>>,
    /// `--identity` (an age identity file).
    pub identity: Option<PathBuf>,
    /// `--s3-addressing`.
    pub s3_addressing: Option<Addressing>,
    /// `--retries`.
    pub retries: Option<u32>,
    /// `--s3-timeout`.
    pub s3_timeout: Option<u64>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--metrics-file`.
    pub metrics_file: Option<PathBuf>,
    /// Defaults for `backup`.
    #[serde(default)]
    pub backup: BackupConfig,
    /// Defaults for `restore`.
    #[serde(default)]
    pub restore: RestoreConfig,
}

/// `[backup]` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// `--live`.
    pub live: Option<bool>,
    /// `--allow-consumers`.
    pub allow_consumers: Option<bool>,
    /// `--skip-quorum`.
    pub skip_quorum: Option<bool>,
    /// `--skip-streams`.
    pub skip_streams: Option<bool>,
    /// `--before`.
    pub before: Option<String>,
    /// `--after`.
    pub after: Option<String>,
    /// `--chunk-size` (MiB).
    pub chunk_size: Option<u64>,
    /// `--compression-level`.
    pub compression_level: Option<i32>,
    /// `--upload-concurrency`.
    pub upload_concurrency: Option<usize>,
    /// `--threads`.
    pub threads: Option<u32>,
}

/// `[restore]` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// `--before`.
    pub before: Option<String>,
    /// `--after`.
    pub after: Option<String>,
    /// `--download-concurrency`.
    pub download_concurrency: Option<usize>,
    /// `--keep-old`.
    pub keep_old: Option<bool>,
}

/// Loads `explicit` (an error if unreadable) or the default file if present.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<FileConfig> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_PATH).is_file() => PathBuf::from(DEFAULT_PATH),
        None => return Ok(FileConfig::default()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        usage(format!(
            "cannot read the configuration file {}: {e}",
            path.display()
        ))
    })?;
    let config = parse(&text)
        .map_err(|e| usage(format!("in the configuration file {}: {e}", path.display())))?;
    Ok(config)
}

/// Parses configuration text.
pub fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
    toml::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_section() {
        let config = parse(
            r#"
repo = "s3://backups/prod"
username = "backup"
password_file = "/etc/rabbitmq-backup/password"
s3_addressing = "path"
log_format = "json"
encrypt_to = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
identity = "/root/restore-key.txt"
[backup]
before = "systemctl stop consumers"
chunk_size = 16
[restore]
download_concurrency = 8
"#,
        )
        .unwrap();
        assert_eq!(config.repo.as_deref(), Some("s3://backups/prod"));
        assert_eq!(config.s3_addressing, Some(Addressing::Path));
        assert_eq!(config.log_format, Some(LogFormat::Json));
        assert_eq!(config.backup.chunk_size, Some(16));
        assert_eq!(config.restore.download_concurrency, Some(8));
        assert_eq!(config.encrypt_to.map(|r| r.len()), Some(1));
        assert_eq!(
            config.identity,
            Some(PathBuf::from("/root/restore-key.txt"))
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("repository = \"x\"").unwrap_err().to_string();
        assert!(err.contains("repository"), "{err}");
    }
}
