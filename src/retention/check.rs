//! Does the bucket's retention match the tiers the tool writes? Reads the
//! lifecycle rules and whether the server keeps object tags, and says what
//! could expire a snapshot the tiers mean to keep.

use serde::Serialize;

use super::{TIER_TAG, Tier};
use crate::repo::lifecycle::Rule;

/// What the server supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Support {
    /// It works.
    Yes,
    /// The server says it is not implemented.
    No,
    /// A local directory: not applicable.
    NotApplicable,
}

/// The `check-repo` report (`--json` schema).
#[derive(Debug, Clone, Serialize)]
pub struct RepoCheck {
    /// Repository location.
    pub repository: String,
    /// Whether the server keeps object tags (tier tags, pins).
    pub tagging: Support,
    /// Whether the server has lifecycle management.
    pub lifecycle: Support,
    /// The rules that apply to snapshots.
    pub rules: Vec<Rule>,
    /// Problems: a snapshot the tiers keep could expire, or nothing expires.
    pub warnings: Vec<String>,
}

fn applies_to(rule: &Rule, snapshots_prefix: &str) -> bool {
    rule.enabled
        && (snapshots_prefix.starts_with(&rule.prefix) || rule.prefix.starts_with(snapshots_prefix))
}

fn tier_of(rule: &Rule) -> Option<Result<Tier, String>> {
    let (_, value) = rule.tags.iter().find(|(k, _)| k == TIER_TAG)?;
    Some(Tier::parse(value).ok_or_else(|| value.clone()))
}

/// Analyses `rules` (None: no lifecycle support) for objects under
/// `snapshots_prefix` (`<prefix>snapshots/`).
pub fn analyze(
    rules: Option<&[Rule]>,
    tagging: Support,
    snapshots_prefix: &str,
) -> (Vec<Rule>, Vec<String>) {
    let mut warnings = Vec::new();
    let Some(rules) = rules else {
        return (Vec::new(), warnings);
    };
    if tagging == Support::No {
        warnings.push(format!(
            "the server does not support object tags: snapshots cannot carry their tier ({TIER_TAG}=daily/weekly/monthly) and pins, so tag-filtered lifecycle rules cannot keep monthly or pinned snapshots longer; use `rabbitmq-backup prune` for tiered retention"
        ));
    }
    let relevant: Vec<Rule> = rules
        .iter()
        .filter(|r| applies_to(r, snapshots_prefix))
        .cloned()
        .collect();
    let expiring: Vec<&Rule> = relevant
        .iter()
        .filter(|r| r.expiration_days.is_some())
        .collect();
    if expiring.is_empty() {
        warnings.push(format!(
            "no lifecycle rule expires objects under {snapshots_prefix}: snapshots are kept forever unless `rabbitmq-backup prune` runs"
        ));
    }
    let mut tier_days: Vec<(Tier, i32)> = Vec::new();
    for rule in &expiring {
        let days = rule.expiration_days.unwrap_or_default();
        let name = if rule.id.is_empty() {
            "(unnamed)".to_string()
        } else {
            format!("{:?}", rule.id)
        };
        match tier_of(rule) {
            None if rule.tags.is_empty() => {
                let dropped = rule.id.contains("tier") || rule.id.contains("daily") || rule.id.contains("weekly") || rule.id.contains("monthly");
                let hint = if dropped && tagging == Support::No {
                    " — its name suggests a tier rule whose tag filter the server dropped (Garage does this silently)"
                } else {
                    ""
                };
                warnings.push(format!(
                    "lifecycle rule {name} expires EVERY snapshot under {} after {days} days, whatever its tier, pinned ones included{hint}",
                    if rule.prefix.is_empty() { "the whole bucket".to_string() } else { rule.prefix.clone() }
                ));
            }
            None => {}
            Some(Err(value)) => warnings.push(format!(
                "lifecycle rule {name} filters on {TIER_TAG}={value}, a tier the tool never writes (daily, weekly, monthly)"
            )),
            Some(Ok(Tier::Keep)) => warnings.push(format!(
                "lifecycle rule {name} expires pinned snapshots ({TIER_TAG}=keep) after {days} days"
            )),
            Some(Ok(tier)) => tier_days.push((tier, days)),
        }
    }
    tier_days.sort();
    for pair in tier_days.windows(2) {
        let ((lower, lower_days), (higher, higher_days)) = (pair[0], pair[1]);
        if lower < higher && higher_days < lower_days {
            warnings.push(format!(
                "{} snapshots expire after {higher_days} days, sooner than {} snapshots ({lower_days} days): the rarer tier should live longer",
                higher.as_str(),
                lower.as_str()
            ));
        }
    }
    for (tier, days) in &tier_days {
        for rule in expiring.iter().filter(|r| r.tags.is_empty()) {
            let max_age = rule.expiration_days.unwrap_or_default();
            if max_age < *days {
                warnings.push(format!(
                    "{} snapshots are meant to live {days} days, but rule {:?} expires every snapshot after {max_age}",
                    tier.as_str(),
                    rule.id
                ));
            }
        }
    }
    (relevant, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, prefix: &str, tier: Option<&str>, days: i32) -> Rule {
        Rule {
            id: id.into(),
            enabled: true,
            prefix: prefix.into(),
            tags: tier
                .map(|t| vec![(TIER_TAG.to_string(), t.to_string())])
                .unwrap_or_default(),
            expiration_days: Some(days),
            ..Default::default()
        }
    }

    fn good() -> Vec<Rule> {
        vec![
            rule("tier-daily", "prod/snapshots/", Some("daily"), 7),
            rule("tier-weekly", "prod/snapshots/", Some("weekly"), 35),
            rule("tier-monthly", "prod/snapshots/", Some("monthly"), 365),
            rule("max-age", "prod/snapshots/", None, 400),
        ]
    }

    #[test]
    fn matching_rules_only_warn_about_the_prefix_wide_maximum() {
        let (relevant, warnings) = analyze(Some(&good()), Support::Yes, "prod/snapshots/");
        assert_eq!(relevant.len(), 4);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("\"max-age\"") && warnings[0].contains("pinned"));
    }

    #[test]
    fn a_dropped_tag_filter_is_named() {
        // What Garage returns after accepting the tier rules above.
        let dropped = vec![rule("tier-daily", "prod/snapshots/", None, 7)];
        let (_, warnings) = analyze(Some(&dropped), Support::No, "prod/snapshots/");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("does not support object tags")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("EVERY snapshot")
                && w.contains("7 days")
                && w.contains("dropped")),
            "{warnings:?}"
        );
    }

    #[test]
    fn conflicts_are_reported() {
        let cases: Vec<(Vec<Rule>, &str)> = vec![
            (vec![], "no lifecycle rule"),
            (
                vec![rule("k", "prod/snapshots/", Some("keep"), 30)],
                "pinned",
            ),
            (
                vec![rule("x", "prod/snapshots/", Some("hourly"), 3)],
                "never writes",
            ),
            (
                vec![
                    rule("d", "prod/snapshots/", Some("daily"), 30),
                    rule("m", "prod/snapshots/", Some("monthly"), 10),
                ],
                "rarer tier",
            ),
            (
                vec![
                    rule("m", "prod/snapshots/", Some("monthly"), 365),
                    rule("all", "", None, 90),
                ],
                "monthly snapshots are meant to live 365 days",
            ),
        ];
        for (rules, expected) in cases {
            let (_, warnings) = analyze(Some(&rules), Support::Yes, "prod/snapshots/");
            assert!(
                warnings.iter().any(|w| w.contains(expected)),
                "{expected}: {warnings:?}"
            );
        }
    }

    #[test]
    fn rules_for_other_prefixes_and_disabled_rules_are_ignored() {
        let mut disabled = rule("off", "prod/snapshots/", None, 1);
        disabled.enabled = false;
        let rules = vec![rule("logs", "logs/", None, 1), disabled];
        let (relevant, warnings) = analyze(Some(&rules), Support::Yes, "prod/snapshots/");
        assert!(relevant.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("no lifecycle rule"));
    }

    #[test]
    fn local_directories_have_nothing_to_check() {
        let (relevant, warnings) = analyze(None, Support::NotApplicable, "snapshots/");
        assert!(relevant.is_empty() && warnings.is_empty());
    }
}
