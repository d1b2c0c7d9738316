//! Retention tiers (§7): which tier a new snapshot gets, by calendar.

pub mod check;
pub mod policy;

use time::OffsetDateTime;

use crate::repo::snapshot_id;

/// The tag key that carries a snapshot's tier.
pub const TIER_TAG: &str = "tier";

/// A retention tier, stored as the object tag `tier=<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Every other snapshot.
    Daily,
    /// The first snapshot of an ISO week.
    Weekly,
    /// The first snapshot of a calendar month (UTC).
    Monthly,
    /// Pinned: kept forever.
    Keep,
}

impl Tier {
    /// The tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Daily => "daily",
            Tier::Weekly => "weekly",
            Tier::Monthly => "monthly",
            Tier::Keep => "keep",
        }
    }

    /// The object tags that carry this tier.
    pub fn tags(self) -> crate::repo::storage::Tags {
        vec![(TIER_TAG.to_string(), self.as_str().to_string())]
    }

    /// Parses a tag value.
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "daily" => Some(Tier::Daily),
            "weekly" => Some(Tier::Weekly),
            "monthly" => Some(Tier::Monthly),
            "keep" => Some(Tier::Keep),
            _ => None,
        }
    }
}

/// The ISO week of `t`, as (ISO year, week): the weekly tier's bucket.
pub fn week_of(t: OffsetDateTime) -> (i32, u8) {
    let (year, week, _) = t.to_iso_week_date();
    (year, week)
}

/// The calendar month of `t`: the monthly tier's bucket.
pub fn month_of(t: OffsetDateTime) -> (i32, time::Month) {
    (t.year(), t.month())
}

/// The tier of a snapshot taken at `at`, given the ids of the node's earlier
/// snapshots: monthly if it is the month's first, weekly if the ISO week's
/// first, daily otherwise.
pub fn tier_for(at: OffsetDateTime, earlier_ids: &[String]) -> Tier {
    let times: Vec<OffsetDateTime> = earlier_ids
        .iter()
        .filter_map(|id| snapshot_id::timestamp(id))
        .filter(|t| *t < at)
        .collect();
    let same_month = |t: &OffsetDateTime| month_of(*t) == month_of(at);
    let same_week = |t: &OffsetDateTime| week_of(*t) == week_of(at);
    if !times.iter().any(same_month) {
        Tier::Monthly
    } else if !times.iter().any(same_week) {
        Tier::Weekly
    } else {
        Tier::Daily
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_simulated_month_of_daily_snapshots() {
        // November 2026: the 1st is a Sunday; ISO weeks start on Mondays
        // (2, 9, 16, 23, 30).
        let mut ids: Vec<String> = Vec::new();
        let mut tiers = Vec::new();
        let start = datetime!(2026-11-01 02:00 UTC);
        for day in 0..30 {
            let at = start + time::Duration::days(day);
            tiers.push((at.day(), tier_for(at, &ids)));
            ids.push(snapshot_id::new_id(at));
        }
        let of = |d: u8| tiers.iter().find(|(day, _)| *day == d).unwrap().1;
        assert_eq!(of(1), Tier::Monthly);
        for monday in [2, 9, 16, 23, 30] {
            assert_eq!(of(monday), Tier::Weekly, "Nov {monday}");
        }
        let dailies = tiers.iter().filter(|(_, t)| *t == Tier::Daily).count();
        assert_eq!(dailies, 30 - 1 - 5);
        // December's first snapshot is monthly again.
        assert_eq!(
            tier_for(datetime!(2026-12-01 02:00 UTC), &ids),
            Tier::Monthly
        );
    }

    #[test]
    fn hourly_snapshots_keep_the_first_of_the_day_weekly_or_daily() {
        let mut ids = vec![snapshot_id::new_id(datetime!(2026-11-10 00:00 UTC))];
        let next = datetime!(2026-11-10 01:00 UTC);
        assert_eq!(tier_for(next, &ids), Tier::Daily);
        ids.push(snapshot_id::new_id(next));
        assert_eq!(
            tier_for(datetime!(2026-11-16 00:30 UTC), &ids),
            Tier::Weekly
        );
    }

    #[test]
    fn tags_round_trip() {
        for t in [Tier::Daily, Tier::Weekly, Tier::Monthly, Tier::Keep] {
            assert_eq!(Tier::parse(t.as_str()), Some(t));
        }
    }
}
