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
