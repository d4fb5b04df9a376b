//! Local time and periods: the calendar arithmetic behind every cube cell.
//!
//! Events are instants (UTC); the cube buckets them in the pharmacy's local wall-clock time,
//! daylight saving included. A period is identified by the local wall-clock instant at which it
//! begins. These are plain functions; [`crate::udf`] exposes them to SQL.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike,
};
use chrono_tz::Tz;
use serde::Deserialize;

/// The time grains of the cube, finest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    Hour,
    Day,
    Week,
    PayPeriod,
    Month,
    Quarter,
    Year,
}

impl Grain {
    pub const ALL: [Grain; 7] = [
        Grain::Hour,
        Grain::Day,
        Grain::Week,
        Grain::PayPeriod,
        Grain::Month,
        Grain::Quarter,
        Grain::Year,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Hour => "hour",
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::PayPeriod => "pay_period",
            Grain::Month => "month",
            Grain::Quarter => "quarter",
            Grain::Year => "year",
        }
    }

    pub fn parse(s: &str) -> Option<Grain> {
        Grain::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// Whether every period of `coarser` is a whole number of periods of this grain, so a
    /// rollup at this grain answers `coarser` exactly. The lattice: hour → day → week, pay
    /// period, month → quarter → year (a week does not roll into a month, nor a pay period).
    pub fn rolls_into(self, coarser: Grain) -> bool {
        use Grain::*;
        match self {
            Hour => true,
            Day => coarser != Hour,
            Week | PayPeriod => coarser == self,
            Month => matches!(coarser, Month | Quarter | Year),
            Quarter => matches!(coarser, Quarter | Year),
            Year => coarser == Year,
        }
    }

    /// The longest a period of this grain can be, for turning period bounds into event bounds.
    pub fn max_length(self) -> Duration {
        match self {
            Grain::Hour => Duration::hours(1),
            Grain::Day => Duration::days(1),
            Grain::Week => Duration::days(7),
            Grain::PayPeriod => Duration::days(14),
            Grain::Month => Duration::days(31),
            Grain::Quarter => Duration::days(92),
            Grain::Year => Duration::days(366),
        }
    }
}

/// Days in a pay period.
pub const PAY_PERIOD_DAYS: i64 = 14;

/// The local wall-clock time of `instant` in `tz`.
pub fn local(instant: DateTime<chrono::Utc>, tz: Tz) -> NaiveDateTime {
    instant.with_timezone(&tz).naive_local()
}

/// The start of the period of `grain` that holds the local time `t`; pay periods run 14 days
/// from `anchor` (and before it, backwards).
pub fn period_start(grain: Grain, t: NaiveDateTime, anchor: NaiveDate) -> NaiveDateTime {
    let day = t.date();
    let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN);
    match grain {
        Grain::Hour => midnight(day) + Duration::hours(i64::from(t.hour())),
        Grain::Day => midnight(day),
        Grain::Week => {
            midnight(day - Duration::days(i64::from(day.weekday().num_days_from_monday())))
        }
        Grain::PayPeriod => {
            let offset = (day - anchor).num_days().div_euclid(PAY_PERIOD_DAYS);
            midnight(anchor + Duration::days(offset * PAY_PERIOD_DAYS))
        }
        Grain::Month => midnight(first_of(day.year(), day.month())),
        Grain::Quarter => midnight(first_of(day.year(), (day.month0() / 3) * 3 + 1)),
        Grain::Year => midnight(first_of(day.year(), 1)),
    }
}

/// The start of the period after the one starting at `start`.
pub fn period_end(grain: Grain, start: NaiveDateTime) -> NaiveDateTime {
    let day = start.date();
    let months = |n: u32| {
        let m0 = day.month0() + n;
        first_of(day.year() + (m0 / 12) as i32, m0 % 12 + 1).and_time(NaiveTime::MIN)
    };
    match grain {
        Grain::Hour => start + Duration::hours(1),
        Grain::Day => start + Duration::days(1),
        Grain::Week => start + Duration::days(7),
        Grain::PayPeriod => start + Duration::days(PAY_PERIOD_DAYS),
        Grain::Month => months(1),
        Grain::Quarter => months(3),
        Grain::Year => months(12),
    }
}

fn first_of(year: i32, month: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN)
}

/// How a shift from `start` to `end` spreads over the local hours of `tz`: each local hour it
/// touches, with the share of the shift's minutes worked in it. Shares sum to 1. A shift of no
/// length falls wholly in its starting hour. A local hour that occurs twice (the autumn
/// daylight-saving change) gathers both.
pub fn shift_hours(
    start: DateTime<chrono::Utc>,
    end: DateTime<chrono::Utc>,
    tz: Tz,
) -> Vec<(NaiveDateTime, f64)> {
    let hour_of =
        |t: DateTime<chrono::Utc>| period_start(Grain::Hour, local(t, tz), NaiveDate::MIN);
    let total = (end - start).num_microseconds().unwrap_or(0);
    if total <= 0 {
        return vec![(hour_of(start), 1.0)];
    }
    // Every real UTC offset is a whole number of quarter hours, so local hours change only at
    // UTC quarter-hour boundaries: walk those.
    let quarter = Duration::minutes(15);
    let mut out: Vec<(NaiveDateTime, f64)> = Vec::new();
    let mut t = start;
    while t < end {
        let secs = t.timestamp();
        let next_quarter = chrono::Utc
            .timestamp_opt(secs - secs.rem_euclid(900), 0)
            .single()
            .map_or(end, |q| q + quarter);
        let seg_end = next_quarter.min(end);
        let share = (seg_end - t).num_microseconds().unwrap_or(0) as f64 / total as f64;
        let hour = hour_of(t);
        match out.iter_mut().find(|(h, _)| *h == hour) {
            Some((_, s)) => *s += share,
            None => out.push((hour, share)),
        }
        t = seg_end;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_grain_lattice() {
        use Grain::*;
        let rolls: Vec<(Grain, Vec<Grain>)> = Grain::ALL
            .into_iter()
            .map(|g| {
                (
                    g,
                    Grain::ALL
                        .into_iter()
                        .filter(|c| g.rolls_into(*c))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            rolls,
            vec![
                (Hour, Grain::ALL.to_vec()),
                (Day, vec![Day, Week, PayPeriod, Month, Quarter, Year]),
                (Week, vec![Week]),
                (PayPeriod, vec![PayPeriod]),
                (Month, vec![Month, Quarter, Year]),
                (Quarter, vec![Quarter, Year]),
                (Year, vec![Year]),
            ]
        );
    }

    use super::*;

    fn ts(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("timestamp")
    }
    fn utc(s: &str) -> DateTime<chrono::Utc> {
        DateTime::parse_from_rfc3339(s).expect("instant").to_utc()
    }
    const ANCHOR: NaiveDate = match NaiveDate::from_ymd_opt(2024, 1, 7) {
        Some(d) => d,
        None => NaiveDate::MIN,
    };

    #[test]
    fn periods_start_where_the_calendar_says() {
        let t = ts("2024-03-13 17:45:10"); // a Wednesday
        let expect = [
            (Grain::Hour, "2024-03-13 17:00:00"),
            (Grain::Day, "2024-03-13 00:00:00"),
            (Grain::Week, "2024-03-11 00:00:00"),
            // 2024-01-07 + 4 * 14 days = 2024-03-03; the next starts 2024-03-17.
            (Grain::PayPeriod, "2024-03-03 00:00:00"),
            (Grain::Month, "2024-03-01 00:00:00"),
            (Grain::Quarter, "2024-01-01 00:00:00"),
            (Grain::Year, "2024-01-01 00:00:00"),
        ];
        for (g, want) in expect {
            assert_eq!(period_start(g, t, ANCHOR), ts(want), "{g:?}");
        }
        // Before the anchor, pay periods run backwards: 2023-12-24 .. 2024-01-06.
        assert_eq!(
            period_start(Grain::PayPeriod, ts("2024-01-06 23:59:59"), ANCHOR),
            ts("2023-12-24 00:00:00")
        );
        assert_eq!(
            period_end(Grain::Quarter, ts("2024-10-01 00:00:00")),
            ts("2025-01-01 00:00:00")
        );
        assert_eq!(
            period_end(Grain::Month, ts("2024-12-01 00:00:00")),
            ts("2025-01-01 00:00:00")
        );
        assert_eq!(
            period_end(Grain::PayPeriod, ts("2024-03-03 00:00:00")),
            ts("2024-03-17 00:00:00")
        );
    }

    #[test]
    fn local_time_follows_daylight_saving() {
        let la: Tz = "America/Los_Angeles".parse().expect("tz");
        // PST (-8) before 2024-03-10 10:00 UTC, PDT (-7) after.
        assert_eq!(
            local(utc("2024-03-10T09:59:00Z"), la),
            ts("2024-03-10 01:59:00")
        );
        assert_eq!(
            local(utc("2024-03-10T10:00:00Z"), la),
            ts("2024-03-10 03:00:00")
        );
    }

    #[test]
    fn a_shift_spreads_by_minutes_over_local_hours() {
        let la: Tz = "America/Los_Angeles".parse().expect("tz");
        // 22:30 to 01:15 local (PST): 30 + 60 + 60 + 15 = 165 minutes over midnight.
        let got = shift_hours(utc("2024-03-01T06:30:00Z"), utc("2024-03-01T09:15:00Z"), la);
        let want = [
            (ts("2024-02-29 22:00:00"), 30.0 / 165.0),
            (ts("2024-02-29 23:00:00"), 60.0 / 165.0),
            (ts("2024-03-01 00:00:00"), 60.0 / 165.0),
            (ts("2024-03-01 01:00:00"), 15.0 / 165.0),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((h, s), (wh, ws)) in got.iter().zip(want) {
            assert_eq!(*h, wh);
            assert!((s - ws).abs() < 1e-12, "{h}: {s} vs {ws}");
        }
        // Over the spring-forward gap 01:00 -> 03:00: 60 real minutes, two local hours.
        let got = shift_hours(utc("2024-03-10T09:30:00Z"), utc("2024-03-10T10:30:00Z"), la);
        assert_eq!(
            got,
            vec![
                (ts("2024-03-10 01:00:00"), 0.5),
                (ts("2024-03-10 03:00:00"), 0.5)
            ]
        );
        // India is UTC+5:30: local hours change at UTC half hours.
        let kolkata: Tz = "Asia/Kolkata".parse().expect("tz");
        let got = shift_hours(
            utc("2024-03-01T03:00:00Z"),
            utc("2024-03-01T04:00:00Z"),
            kolkata,
        );
        assert_eq!(
            got,
            vec![
                (ts("2024-03-01 08:00:00"), 0.5),
                (ts("2024-03-01 09:00:00"), 0.5)
            ]
        );
        // A shift of no length sits in its hour.
        let t = utc("2024-03-01T06:30:00Z");
        assert_eq!(
            shift_hours(t, t, la),
            vec![(ts("2024-02-29 22:00:00"), 1.0)]
        );
    }
}
