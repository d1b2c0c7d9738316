//! `check-repo`: the bucket's retention report, alone.

use crate::output::Output;
use crate::repo::Repository;
use crate::retention::check::{RepoCheck, Support, analyze};
use crate::settings::Settings;

/// Reads tag support and lifecycle rules and analyses them.
pub async fn inspect(repo: &Repository) -> anyhow::Result<RepoCheck> {
    let tagging = repo.tagging_support().await?;
    let rules = repo.storage().lifecycle().await?;
    let lifecycle = match (&rules, tagging) {
        (_, Support::NotApplicable) => Support::NotApplicable,
        (Some(_), _) => Support::Yes,
        (None, _) => Support::No,
    };
    let (rules, warnings) = analyze(rules.as_deref(), tagging, &repo.snapshots_prefix());
    Ok(RepoCheck {
        repository: repo.url().to_string(),
        tagging,
        lifecycle,
        rules,
        warnings,
    })
}

/// Runs `check-repo`.
pub async fn run(settings: &Settings, out: Output) -> anyhow::Result<RepoCheck> {
    let repo = super::open_repository(settings).await?;
    repo.storage().check().await?;
    let report = inspect(&repo).await?;
    out.result(&report, || {
        let mut s = format!("repository   {}\n", report.repository);
        let word = |x: Support| match x {
            Support::Yes => "supported",
            Support::No => "NOT supported by this server",
            Support::NotApplicable => "not applicable (local directory)",
        };
        s.push_str(&format!("object tags  {}\n", word(report.tagging)));
        s.push_str(&format!("lifecycle    {}\n", word(report.lifecycle)));
        for r in &report.rules {
            let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(
                "  rule {:?}: prefix {:?}{} expires after {}\n",
                r.id,
                r.prefix,
                if tags.is_empty() {
                    String::new()
                } else {
                    format!(" tags {}", tags.join(","))
                },
                r.expiration_days
                    .map_or("never".into(), |d| format!("{d} days"))
            ));
        }
        if report.warnings.is_empty() {
            s.push_str("no problems found\n");
        }
        for w in &report.warnings {
            s.push_str(&format!("WARNING: {w}\n"));
        }
        s
    })?;
    Ok(report)
}
