//! Prometheus textfile-collector output (`--metrics-file`): what the last
//! backup did, for alerting on a missed or failing nightly run.

use std::fmt::Write as _;
use std::path::Path;

use crate::commands::backup::BackupReport;

/// Escapes a label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The last success timestamp recorded in an earlier file, if any.
fn previous_success(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with("rabbitmq_backup_last_success_timestamp_seconds"))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Renders the metrics of one backup run (`report` is None when it failed).
pub fn render(
    node: &str,
    report: Option<&BackupReport>,
    now: f64,
    duration: f64,
    previous_success: Option<f64>,
) -> String {
    let n = label(node);
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let node_label = format!("node=\"{n}\"");
    let last_success = if report.is_some() {
        Some(now)
    } else {
        previous_success
    };
    metric(
        "rabbitmq_backup_last_run_timestamp_seconds",
        "When the last backup run ended.",
        "gauge",
        &[(node_label.clone(), now)],
    );
    metric(
        "rabbitmq_backup_last_run_success",
        "1 if the last backup run succeeded, 0 if it failed.",
        "gauge",
        &[(node_label.clone(), if report.is_some() { 1.0 } else { 0.0 })],
    );
    if let Some(t) = last_success {
        metric(
            "rabbitmq_backup_last_success_timestamp_seconds",
            "When the last successful backup ended.",
            "gauge",
            &[(node_label.clone(), t)],
        );
    }
    metric(
        "rabbitmq_backup_duration_seconds",
        "Wall time of the last backup run.",
        "gauge",
        &[(node_label.clone(), duration)],
    );
    let Some(r) = report else { return out };
    let with_id = format!("{node_label},snapshot=\"{}\"", label(&r.id));
    for (name, help, value) in [
        (
            "rabbitmq_backup_pause_seconds",
            "How long the broker was stopped for the capture.",
            r.pause_ms as f64 / 1000.0,
        ),
        (
            "rabbitmq_backup_archived_bytes",
            "Bytes of files archived by the last backup.",
            r.file_bytes as f64,
        ),
        (
            "rabbitmq_backup_stored_bytes",
            "Bytes stored in the repository by the last backup.",
            r.stored_bytes as f64,
        ),
        (
            "rabbitmq_backup_messages",
            "Messages in all queues at the last backup.",
            r.messages as f64,
        ),
        (
            "rabbitmq_backup_covered_messages",
            "Messages the last snapshot holds.",
            r.covered_messages as f64,
        ),
    ] {
        metric(name, help, "gauge", &[(with_id.clone(), value)]);
    }
    let uncovered: Vec<(String, f64)> = r
        .uncovered_queues
        .iter()
        .map(|q| {
            (
                format!(
                    "{node_label},vhost=\"{}\",queue=\"{}\",type=\"{}\"",
                    label(&q.vhost),
                    label(&q.name),
                    label(q.queue_type.as_str())
                ),
                q.messages as f64,
            )
        })
        .collect();
    metric(
        "rabbitmq_backup_uncovered_messages",
        "Messages of queues the snapshot does not hold (quorum queues, streams), per queue.",
        "gauge",
        &uncovered,
    );
    out
}

/// Writes the metrics file atomically (the collector never reads half a file).
pub fn write(
    path: &Path,
    node: &str,
    report: Option<&BackupReport>,
    duration: f64,
) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64().floor());
    let text = render(node, report, now, duration, previous_success(path));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| anyhow::anyhow!("cannot write the metrics file {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("cannot write the metrics file {}: {e}", path.display()))?;
    // Readable by the node exporter, which usually runs as another user.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_the_last_success_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.prom");
        std::fs::write(
            &path,
            "rabbitmq_backup_last_success_timestamp_seconds{node=\"a\"} 1700000000\n",
        )
        .unwrap();
        write(&path, "a", None, 1.5).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("rabbitmq_backup_last_run_success{node=\"a\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("rabbitmq_backup_last_success_timestamp_seconds{node=\"a\"} 1700000000"),
            "{text}"
        );
        assert!(
            text.contains("rabbitmq_backup_duration_seconds{node=\"a\"} 1.5"),
            "{text}"
        );
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
