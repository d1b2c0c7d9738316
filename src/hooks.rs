//! `--before` / `--after` shell commands.

use std::os::fd::AsFd;
use std::process::Stdio;

/// Runs `command` with `sh -c`, its output sent to our standard error (our
/// standard output carries the result). A non-zero exit is an error naming
/// the flag and the command.
pub async fn run(flag: &str, command: &str, env: &[(&str, String)]) -> anyhow::Result<()> {
    tracing::info!("running the {flag} command: {command}");
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run the {flag} command `{command}`: {e}"))?;
    if !status.success() {
        anyhow::bail!("the {flag} command `{command}` failed ({status})");
    }
    Ok(())
}

/// Marks a failure after which `--after` must not run (it would start
/// consumers that must not see what the failure left, §6).
#[derive(Debug)]
pub struct SkipAfter;

impl std::fmt::Display for SkipAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("--after was not run")
    }
}

/// Runs `work` between the `--before` command (its failure stops
/// everything) and the `--after` command, which learns the outcome from
/// `RABBITMQ_BACKUP_STATUS` (not run after a failure marked [`SkipAfter`]).
/// The hooks see the snapshot, node and repository in
/// `RABBITMQ_BACKUP_SNAPSHOT_ID`, `_NODE` and `_REPO`. A failing `--after`
/// fails a successful run with "snapshot ID `done`, but …"; after a failed
/// run it is only logged, so the first error stays the one reported.
#[allow(clippy::too_many_arguments)]
pub async fn around<T>(
    before: Option<&str>,
    after: Option<&str>,
    id: &str,
    node: &str,
    repo: &str,
    done: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let mut env = vec![
        ("RABBITMQ_BACKUP_SNAPSHOT_ID", id.to_string()),
        ("RABBITMQ_BACKUP_NODE", node.to_string()),
        ("RABBITMQ_BACKUP_REPO", repo.to_string()),
    ];
    if let Some(cmd) = before {
        run("--before", cmd, &env).await?;
    }
    let result = work.await;
    let skip = result
        .as_ref()
        .is_err_and(|e| e.downcast_ref::<SkipAfter>().is_some());
    if let Some(cmd) = after.filter(|_| !skip) {
        let status = if result.is_ok() { "success" } else { "failure" };
        env.push(("RABBITMQ_BACKUP_STATUS", status.to_string()));
        if let Err(e) = run("--after", cmd, &env).await {
            if result.is_ok() {
                return Err(e.context(format!("snapshot {id} {done}, but")));
            }
            tracing::error!("{e:#}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_environment_and_reports_failure() {
        run("--before", "test \"$X\" = yes", &[("X", "yes".into())])
            .await
            .unwrap();
        let err = run("--before", "exit 3", &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("--before") && err.contains("exit 3"), "{err}");
    }
}
