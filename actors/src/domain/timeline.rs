//! The buckets of a series over a range (SPEC §8): UTC hours, and days, ISO weeks (from
//! Monday) and calendar months in a time zone, so a day in `Asia/Kolkata` starts at 18:30 UTC
//! and a day across a daylight-saving change lasts 23 or 25 hours.

use chrono::{DateTime, Datelike, Duration, DurationRound, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// The size of a series' buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Week,
    Month,
}

impl Granularity {
    pub const NAMES: &'static str = "hour, day, week, month";

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The bucket size for a range when none is asked for: hours up to two days, days up to
    /// 90, weeks beyond.
    pub fn for_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        let span = to - from;
        if span <= Duration::days(2) {
            Self::Hour
        } else if span <= Duration::days(90) {
            Self::Day
        } else {
            Self::Week
        }
    }

    /// The most buckets `[from, to)` can be cut into (the shortest bucket of each size, plus
    /// the two partial ones at the edges), computed without cutting it.
    pub fn max_points(self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let shortest = match self {
            Self::Hour => Duration::hours(1),
            Self::Day => Duration::hours(23),
            Self::Week => Duration::days(7) - Duration::hours(1),
            Self::Month => Duration::days(28) - Duration::hours(1),
        };
        (to - from).num_seconds().max(0) / shortest.num_seconds() + 2
    }
}

/// A time zone by its IANA name (`UTC`, `Europe/Paris`).
pub fn parse_tz(name: &str) -> Option<Tz> {
    name.parse().ok()
}

/// The buckets of `[from, to)`: `starts[i]` is bucket `i`'s aligned start (the first one may
/// be before `from`), and bucket `i` counts what happened in `[bounds[i], bounds[i + 1])`,
/// where `bounds` is `from`, the later starts, then `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub starts: Vec<DateTime<Utc>>,
    pub bounds: Vec<DateTime<Utc>>,
}

impl Timeline {
    /// Cuts `[from, to)` (`from < to`) into buckets of `granularity` in `tz` (hours are always
    /// UTC hours).
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>, granularity: Granularity, tz: Tz) -> Self {
        let mut start = align(from, granularity, tz);
        let mut starts = vec![start];
        let mut bounds = vec![from];
        loop {
            let next = step(start, granularity, tz);
            if next >= to || next <= start {
                break;
            }
            starts.push(next);
            bounds.push(next);
            start = next;
        }
        bounds.push(to);
        Self { starts, bounds }
    }

    /// One bucket: the whole range.
    pub fn whole(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            starts: vec![from],
            bounds: vec![from, to],
        }
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

/// The start of the bucket holding `t`.
fn align(t: DateTime<Utc>, granularity: Granularity, tz: Tz) -> DateTime<Utc> {
    let date = t.with_timezone(&tz).date_naive();
    match granularity {
        Granularity::Hour => t.duration_trunc(Duration::hours(1)).unwrap_or(t),
        Granularity::Day => midnight(date, tz),
        Granularity::Week => midnight(
            date - Duration::days(i64::from(date.weekday().num_days_from_monday())),
            tz,
        ),
        Granularity::Month => midnight(date.with_day(1).unwrap_or(date), tz),
    }
}

/// The start of the bucket after the one that starts at `start`.
fn step(start: DateTime<Utc>, granularity: Granularity, tz: Tz) -> DateTime<Utc> {
    let date = start.with_timezone(&tz).date_naive();
    let next = match granularity {
        Granularity::Hour => return start + Duration::hours(1),
        Granularity::Day => date.succ_opt(),
        Granularity::Week => date.checked_add_signed(Duration::days(7)),
        Granularity::Month => date.checked_add_months(Months::new(1)),
    };
    next.map_or(DateTime::<Utc>::MAX_UTC, |d| midnight(d, tz))
}

/// When `date` begins in `tz`: its midnight, or, where a daylight-saving change skips
/// midnight, the first local time that exists.
fn midnight(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let day = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    (0..=24 * 4)
        .find_map(|quarter| {
            tz.from_local_datetime(&(day + Duration::minutes(15 * quarter)))
                .earliest()
        })
        .map_or_else(|| Utc.from_utc_datetime(&day), |t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn hours_are_utc_hours_with_partial_edges() {
        let tl = Timeline::new(
            t("2026-03-01T10:20:00Z"),
            t("2026-03-01T13:00:00Z"),
            Granularity::Hour,
            chrono_tz::Asia::Kolkata,
        );
        assert_eq!(
            tl.starts,
            vec![
                t("2026-03-01T10:00:00Z"),
                t("2026-03-01T11:00:00Z"),
                t("2026-03-01T12:00:00Z")
            ]
        );
        assert_eq!(tl.bounds.first(), Some(&t("2026-03-01T10:20:00Z")));
        assert_eq!(tl.bounds.last(), Some(&t("2026-03-01T13:00:00Z")));
        assert_eq!(tl.bounds.len(), tl.starts.len() + 1);
    }

    #[test]
    fn days_start_at_local_midnight() {
        let tl = Timeline::new(
            t("2026-03-01T00:00:00Z"),
            t("2026-03-03T00:00:00Z"),
            Granularity::Day,
            chrono_tz::Asia::Kolkata,
        );
        assert_eq!(
            tl.starts,
            vec![
                t("2026-02-28T18:30:00Z"),
                t("2026-03-01T18:30:00Z"),
                t("2026-03-02T18:30:00Z")
            ]
        );
    }

    #[test]
    fn a_day_across_a_dst_change_lasts_23_hours() {
        // Paris moved to summer time at 02:00 on 2026-03-29.
        let tl = Timeline::new(
            t("2026-03-28T12:00:00Z"),
            t("2026-03-31T00:00:00Z"),
            Granularity::Day,
            chrono_tz::Europe::Paris,
        );
        let lengths: Vec<i64> = tl
            .starts
            .windows(2)
            .map(|w| (w[1] - w[0]).num_hours())
            .collect();
        assert_eq!(tl.starts[1], t("2026-03-28T23:00:00Z"));
        assert_eq!(lengths, vec![24, 23, 24]);
    }

    #[test]
    fn midnight_skipped_by_dst_is_the_first_local_time() {
        // Santiago moved clocks from 00:00 to 01:00 on 2026-09-06.
        let start = midnight(
            NaiveDate::from_ymd_opt(2026, 9, 6).unwrap(),
            chrono_tz::America::Santiago,
        );
        assert_eq!(start, t("2026-09-06T04:00:00Z"));
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let w = Timeline::new(
            t("2026-12-02T00:00:00Z"), // a Wednesday
            t("2026-12-20T00:00:00Z"),
            Granularity::Week,
            chrono_tz::UTC,
        );
        assert_eq!(w.starts[0], t("2026-11-30T00:00:00Z"));
        assert_eq!(w.starts.len(), 3);
        let m = Timeline::new(
            t("2026-01-15T00:00:00Z"),
            t("2026-04-01T00:00:00Z"),
            Granularity::Month,
            chrono_tz::America::New_York,
        );
        assert_eq!(
            m.starts,
            vec![
                t("2026-01-01T05:00:00Z"),
                t("2026-02-01T05:00:00Z"),
                t("2026-03-01T05:00:00Z"),
            ]
        );
        assert_eq!(m.bounds[3], t("2026-04-01T00:00:00Z"));
    }

    #[test]
    fn max_points_bounds_the_real_count() {
        let (from, to) = (t("2026-01-01T00:30:00Z"), t("2026-12-31T23:00:00Z"));
        for g in [
            Granularity::Hour,
            Granularity::Day,
            Granularity::Week,
            Granularity::Month,
        ] {
            for tz in [
                chrono_tz::UTC,
                chrono_tz::Europe::Paris,
                chrono_tz::Pacific::Chatham,
            ] {
                let n = Timeline::new(from, to, g, tz).len() as i64;
                assert!(n <= g.max_points(from, to), "{g:?} {tz}: {n}");
                assert!(n >= g.max_points(from, to) * 9 / 10 - 2, "{g:?} {tz}: {n}");
            }
        }
    }

    #[test]
    fn default_granularity_follows_the_span() {
        let to = t("2026-06-01T00:00:00Z");
        assert_eq!(
            Granularity::for_range(to - Duration::hours(24), to),
            Granularity::Hour
        );
        assert_eq!(
            Granularity::for_range(to - Duration::days(30), to),
            Granularity::Day
        );
        assert_eq!(
            Granularity::for_range(to - Duration::days(365), to),
            Granularity::Week
        );
    }
}
