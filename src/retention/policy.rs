//! The keep-last/daily/weekly/monthly policy that `prune` applies to one
//! node's snapshots (for local repositories and buckets without lifecycle).

use std::collections::BTreeSet;

use serde::Serialize;
use time::OffsetDateTime;

use crate::error::usage;

/// How many snapshots to keep in each category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// The N newest.
    pub last: usize,
    /// The newest of each of the last N days that have snapshots.
    pub daily: usize,
    /// The newest of each of the last N ISO weeks that have snapshots.
    pub weekly: usize,
    /// The newest of each of the last N months that have snapshots.
    pub monthly: usize,
}

impl Policy {
    /// A policy; at least one category must keep something.
    pub fn new(last: usize, daily: usize, weekly: usize, monthly: usize) -> anyhow::Result<Policy> {
        let policy = Policy {
            last,
            daily,
            weekly,
            monthly,
        };
        if policy == Policy::default() {
            return Err(usage(
                "give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly",
            ));
        }
        Ok(policy)
    }
}

/// One snapshot as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Snapshot id.
    pub id: String,
    /// Creation time.
    pub time: OffsetDateTime,
    /// Pinned snapshots are always kept.
    pub pinned: bool,
}

/// The verdict for one snapshot (`prune --json` schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Snapshot id.
    pub id: String,
    /// Kept or deleted.
    pub keep: bool,
    /// Why it is kept (`last`, `daily`, `weekly`, `monthly`, `pinned`, `newest`).
    pub reasons: Vec<&'static str>,
}

/// Applies `policy` to one node's snapshots; returns verdicts newest first.
/// The newest snapshot and pinned ones are always kept.
pub fn decide(candidates: &[Candidate], policy: &Policy) -> Vec<Verdict> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let mut days = BTreeSet::new();
    let mut weeks = BTreeSet::new();
    let mut months = BTreeSet::new();
    sorted
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut reasons = Vec::new();
            if i == 0 {
                reasons.push("newest");
            }
            if c.pinned {
                reasons.push("pinned");
            }
            if i < policy.last {
                reasons.push("last");
            }
            // A bucket's first (newest) snapshot represents it, while the
            // category still has room.
            let day = c.time.date();
            if days.len() < policy.daily && days.insert(day) {
                reasons.push("daily");
            }
            if weeks.len() < policy.weekly && weeks.insert(super::week_of(c.time)) {
                reasons.push("weekly");
            }
            if months.len() < policy.monthly && months.insert(super::month_of(c.time)) {
                reasons.push("monthly");
            }
            Verdict {
                id: c.id.clone(),
                keep: !reasons.is_empty(),
                reasons,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn candidate(t: OffsetDateTime) -> Candidate {
        Candidate {
            id: crate::repo::snapshot_id::new_id(t),
            time: t,
            pinned: false,
        }
    }

    /// Daily snapshots at 02:00 from `start` for `days` days.
    fn daily(start: OffsetDateTime, days: i64) -> Vec<Candidate> {
        (0..days)
            .map(|d| candidate(start + time::Duration::days(d)))
            .collect()
    }

    fn kept_days(verdicts: &[Verdict], candidates: &[Candidate]) -> Vec<String> {
        verdicts
            .iter()
            .filter(|v| v.keep)
            .map(|v| {
                let c = candidates.iter().find(|c| c.id == v.id).unwrap();
                format!("{}-{:02}", c.time.month() as u8, c.time.day())
            })
            .collect()
    }

    #[test]
    fn table_of_policies() {
        // Mon 2026-10-05 .. Sat 2026-11-21, one snapshot a day.
        let snaps = daily(datetime!(2026-10-05 02:00 UTC), 48);
        let cases: Vec<(Policy, Vec<&str>)> = vec![
            (
                Policy {
                    last: 3,
                    ..Default::default()
                },
                vec!["11-21", "11-20", "11-19"],
            ),
            (
                Policy {
                    daily: 2,
                    ..Default::default()
                },
                vec!["11-21", "11-20"],
            ),
            // ISO weeks start on Monday: the newest of this week, then of the
            // previous weeks (Sundays).
            (
                Policy {
                    weekly: 3,
                    ..Default::default()
                },
                vec!["11-21", "11-15", "11-08"],
            ),
            (
                Policy {
                    monthly: 2,
                    ..Default::default()
                },
                vec!["11-21", "10-31"],
            ),
            (
                Policy {
                    last: 1,
                    daily: 3,
                    weekly: 2,
                    monthly: 2,
                },
                vec!["11-21", "11-20", "11-19", "11-15", "10-31"],
            ),
        ];
        for (policy, expected) in cases {
            let verdicts = decide(&snaps, &policy);
            assert_eq!(kept_days(&verdicts, &snaps), expected, "{policy:?}");
        }
    }

    #[test]
    fn the_newest_and_pinned_snapshots_are_always_kept() {
        let mut snaps = daily(datetime!(2026-11-01 02:00 UTC), 10);
        snaps[2].pinned = true;
        // A policy that would keep only a month-old snapshot still keeps the newest.
        let verdicts = decide(
            &snaps,
            &Policy {
                monthly: 1,
                ..Default::default()
            },
        );
        let kept: Vec<_> = verdicts.iter().filter(|v| v.keep).collect();
        assert_eq!(kept.len(), 2);
        assert!(kept[0].reasons.contains(&"newest"));
        assert_eq!(kept[1].id, snaps[2].id);
        assert_eq!(kept[1].reasons, vec!["pinned"]);
    }

    #[test]
    fn several_snapshots_a_day_keep_the_newest_of_each_day() {
        let mut snaps = Vec::new();
        for day in 0..3 {
            for hour in [1, 9, 17] {
                snaps.push(candidate(
                    datetime!(2026-11-10 00:00 UTC)
                        + time::Duration::days(day)
                        + time::Duration::hours(hour),
                ));
            }
        }
        let verdicts = decide(
            &snaps,
            &Policy {
                daily: 3,
                ..Default::default()
            },
        );
        let kept: Vec<_> = verdicts
            .iter()
            .filter(|v| v.keep)
            .map(|v| v.id.clone())
            .collect();
        let expected: Vec<_> = [8, 5, 2].iter().map(|&i| snaps[i].id.clone()).collect();
        assert_eq!(kept, expected);
    }

    #[test]
    fn an_empty_policy_is_a_usage_error() {
        let err = Policy::new(0, 0, 0, 0).unwrap_err();
        assert_eq!(crate::error::kind_of(&err), crate::error::Kind::Usage);
    }
}
