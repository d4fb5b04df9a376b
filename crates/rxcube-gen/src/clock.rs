//! Store-local time: the four time zones of the chain, instants with the UTC offset a store
//! shows at that moment, conversion from local wall time (daylight-saving gaps and overlaps
//! included), pay periods, and the fast text form of dates and timestamps the CSV files use.

use chrono::{Datelike, NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

pub(crate) const SECS_PER_DAY: i64 = 86_400;
const SECS_PER_HOUR: i64 = 3_600;
/// `NaiveDate::num_days_from_ce` of 1970-01-01.
const UNIX_EPOCH_FROM_CE: i32 = 719_163;

/// The first day of the first pay period (domain.md): periods are 14 days from this Sunday.
pub(crate) const PAY_PERIOD_ANCHOR: NaiveDate = match NaiveDate::from_ymd_opt(2024, 1, 7) {
    Some(d) => d,
    None => panic!("2024-01-07 is a date"),
};
pub(crate) const PAY_PERIOD_DAYS: i64 = 14;

/// Days since 1970-01-01.
pub(crate) fn epoch_day(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce() - UNIX_EPOCH_FROM_CE)
}

/// Day of the week of an epoch day: Monday = 0 .. Sunday = 6.
pub(crate) fn weekday(epoch_day: i64) -> usize {
    // 1970-01-01 was a Thursday.
    (epoch_day + 3).rem_euclid(7) as usize
}

/// Day of the pay period (0..14) of an epoch day.
pub(crate) fn pay_period_day(epoch_day: i64) -> i64 {
    (epoch_day - self::epoch_day(PAY_PERIOD_ANCHOR)).rem_euclid(PAY_PERIOD_DAYS)
}

/// The time zones the chain's stores are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zone {
    LosAngeles = 0,
    Denver = 1,
    Phoenix = 2,
    Chicago = 3,
}

impl Zone {
    pub(crate) const ALL: [Zone; 4] =
        [Zone::LosAngeles, Zone::Denver, Zone::Phoenix, Zone::Chicago];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Zone::LosAngeles => "America/Los_Angeles",
            Zone::Denver => "America/Denver",
            Zone::Phoenix => "America/Phoenix",
            Zone::Chicago => "America/Chicago",
        }
    }

    fn tz(self) -> Tz {
        match self {
            Zone::LosAngeles => chrono_tz::America::Los_Angeles,
            Zone::Denver => chrono_tz::America::Denver,
            Zone::Phoenix => chrono_tz::America::Phoenix,
            Zone::Chicago => chrono_tz::America::Chicago,
        }
    }
}

/// An instant (seconds since the Unix epoch, UTC) with the UTC offset of the store's zone at
/// that instant (seconds east of UTC), so it can be written in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub utc: i64,
    pub offset: i32,
}

impl Stamp {
    pub(crate) fn micros(self) -> i64 {
        self.utc * 1_000_000
    }
}

/// The UTC offsets of one zone over the generated range, precomputed so that looking one up
/// is a short binary search instead of a tz-database walk per row.
pub(crate) struct ZoneClock {
    tz: Tz,
    from: i64,
    to: i64,
    /// (first UTC second, offset) in time order; the first entry starts at `i64::MIN`.
    changes: Vec<(i64, i32)>,
}

impl ZoneClock {
    /// Offsets of `zone` between the UTC seconds `from` and `to`; outside, lookups fall back to
    /// the tz database.
    pub(crate) fn new(zone: Zone, from: i64, to: i64) -> Self {
        let tz = zone.tz();
        let mut current = exact_offset(tz, from);
        let mut changes = vec![(i64::MIN, current)];
        let mut t = from;
        while t < to {
            let next = (t + SECS_PER_DAY).min(to);
            let offset = exact_offset(tz, next);
            if offset != current {
                // Zones change at most once a day: find the first second of the new offset.
                let (mut lo, mut hi) = (t, next);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if exact_offset(tz, mid) == current {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                changes.push((hi, offset));
                current = offset;
            }
            t = next;
        }
        ZoneClock {
            tz,
            from,
            to,
            changes,
        }
    }

    /// The offset (seconds east of UTC) at the UTC instant `utc`.
    pub(crate) fn offset_at(&self, utc: i64) -> i32 {
        if utc < self.from || utc > self.to {
            return exact_offset(self.tz, utc);
        }
        let after = self.changes.partition_point(|&(at, _)| at <= utc);
        self.changes
            .get(after.saturating_sub(1))
            .map_or(0, |&(_, offset)| offset)
    }

    pub(crate) fn stamp(&self, utc: i64) -> Stamp {
        Stamp {
            utc,
            offset: self.offset_at(utc),
        }
    }

    /// The earliest instant showing local wall time `local` (seconds since the epoch, read as
    /// local time), or `None` when the wall time is skipped by a daylight-saving gap.
    pub(crate) fn local_to_utc(&self, local: i64) -> Option<i64> {
        let before = self.offset_at(local - SECS_PER_DAY);
        let after = self.offset_at(local + SECS_PER_DAY);
        [before, after]
            .into_iter()
            .map(|offset| local - i64::from(offset))
            .filter(|&utc| i64::from(self.offset_at(utc)) == local - utc)
            .min()
    }

    /// The instant local day `epoch_day` begins (its midnight, or the first wall time after a
    /// gap at midnight).
    pub(crate) fn day_start(&self, epoch_day: i64) -> i64 {
        let midnight = epoch_day * SECS_PER_DAY;
        (0..=2)
            .find_map(|h| self.local_to_utc(midnight + h * SECS_PER_HOUR))
            .unwrap_or(midnight - i64::from(self.offset_at(midnight)))
    }
}

fn exact_offset(tz: Tz, utc: i64) -> i32 {
    chrono::DateTime::from_timestamp(utc, 0).map_or(0, |t| {
        tz.offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc()
    })
}

/// Calendar date of an epoch day (proleptic Gregorian; Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The two ASCII digits of 0..100, for formatting two digits at a time.
pub(crate) const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

fn put_2(out: &mut [u8], v: u32) {
    let i = (v % 100) as usize * 2;
    out[0] = DIGIT_PAIRS[i];
    out[1] = DIGIT_PAIRS[i + 1];
}

/// `YYYY-MM-DD` of an epoch day.
fn date_text(epoch_day: i64) -> [u8; 10] {
    let (y, m, d) = civil_from_days(epoch_day);
    let mut out = *b"0000-00-00";
    put_2(&mut out[0..2], (y / 100) as u32);
    put_2(&mut out[2..4], (y % 100) as u32);
    put_2(&mut out[5..7], m);
    put_2(&mut out[8..10], d);
    out
}

/// Writes dates and timestamps as text. Events cluster on a few days, so the text of recent
/// days is kept (a calendar computation per row would dominate CSV output).
pub(crate) struct TimeText {
    days: [(i64, [u8; 10]); 8],
}

impl Default for TimeText {
    fn default() -> Self {
        TimeText {
            days: [(i64::MIN, [0; 10]); 8],
        }
    }
}

impl TimeText {
    fn day(&mut self, epoch_day: i64) -> [u8; 10] {
        let slot = &mut self.days[(epoch_day & 7) as usize];
        if slot.0 != epoch_day {
            *slot = (epoch_day, date_text(epoch_day));
        }
        slot.1
    }

    /// Appends an epoch day as `YYYY-MM-DD`.
    pub(crate) fn date(&mut self, buf: &mut Vec<u8>, epoch_day: i64) {
        buf.extend_from_slice(&self.day(epoch_day));
    }

    /// Appends a stamp as RFC 3339 in its local time, e.g. `2024-03-10T01:59:00-08:00`.
    pub(crate) fn stamp(&mut self, buf: &mut Vec<u8>, stamp: Stamp) {
        let local = stamp.utc + i64::from(stamp.offset);
        let mut out = *b"0000-00-00T00:00:00+00:00";
        out[..10].copy_from_slice(&self.day(local.div_euclid(SECS_PER_DAY)));
        let secs = local.rem_euclid(SECS_PER_DAY) as u32;
        put_2(&mut out[11..13], secs / 3_600);
        put_2(&mut out[14..16], secs / 60 % 60);
        put_2(&mut out[17..19], secs % 60);
        if stamp.offset < 0 {
            out[19] = b'-';
        }
        let offset_minutes = stamp.offset.unsigned_abs() / 60;
        put_2(&mut out[20..22], offset_minutes / 60);
        put_2(&mut out[23..25], offset_minutes % 60);
        buf.extend_from_slice(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, NaiveDateTime};

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp())
            .unwrap_or(i64::MIN)
    }

    fn text(stamp: Stamp) -> String {
        let mut buf = Vec::new();
        TimeText::default().stamp(&mut buf, stamp);
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn around_2024() -> (i64, i64) {
        (utc("2023-12-01T00:00:00Z"), utc("2025-01-31T00:00:00Z"))
    }

    #[test]
    fn civil_dates_match_chrono() {
        for z in [
            -800_000, -1, 0, 1, 10_957, 19_782, 19_783, 47_846, 2_932_896,
        ] {
            let (y, m, d) = civil_from_days(z);
            let expected = NaiveDate::from_num_days_from_ce_opt(z as i32 + UNIX_EPOCH_FROM_CE);
            assert_eq!(NaiveDate::from_ymd_opt(y as i32, m, d), expected, "{z}");
        }
    }

    #[test]
    fn weekdays_and_pay_periods() {
        let anchor = epoch_day(PAY_PERIOD_ANCHOR);
        assert_eq!(weekday(anchor), 6, "2024-01-07 is a Sunday");
        assert_eq!(pay_period_day(anchor + 10), 10);
        assert_eq!(pay_period_day(anchor - 1), 13);
    }

    #[test]
    fn offsets_follow_daylight_saving() {
        let (from, to) = around_2024();
        let la = ZoneClock::new(Zone::LosAngeles, from, to);
        let phx = ZoneClock::new(Zone::Phoenix, from, to);
        let before = utc("2024-03-10T09:59:59Z");
        let after = utc("2024-03-10T10:00:00Z");
        assert_eq!(la.offset_at(before), -8 * 3600);
        assert_eq!(la.offset_at(after), -7 * 3600);
        assert_eq!(phx.offset_at(after), -7 * 3600);
        assert_eq!(text(la.stamp(before)), "2024-03-10T01:59:59-08:00");
        assert_eq!(text(la.stamp(after)), "2024-03-10T03:00:00-07:00");
        // Outside the precomputed range the tz database answers.
        assert_eq!(la.offset_at(utc("2030-07-01T00:00:00Z")), -7 * 3600);
    }

    #[test]
    fn wall_times_map_to_their_earliest_instant_and_gaps_to_none() {
        let (from, to) = around_2024();
        let la = ZoneClock::new(Zone::LosAngeles, from, to);
        let local = |s: &str| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
                .map(|t| t.and_utc().timestamp())
                .unwrap_or(i64::MIN)
        };
        assert_eq!(la.local_to_utc(local("2024-03-10T02:30:00")), None);
        assert_eq!(
            la.local_to_utc(local("2024-03-10T03:30:00")),
            Some(utc("2024-03-10T03:30:00-07:00"))
        );
        assert_eq!(
            la.local_to_utc(local("2024-11-03T01:30:00")),
            Some(utc("2024-11-03T01:30:00-07:00"))
        );
        let nov3 = epoch_day(NaiveDate::from_ymd_opt(2024, 11, 3).unwrap_or_default());
        assert_eq!(la.day_start(nov3 + 1) - la.day_start(nov3), 25 * 3600);
    }

    #[test]
    fn dates_are_written_right_from_the_cache_and_without() {
        let mut text = TimeText::default();
        let mut buf = Vec::new();
        for day in [0, 8, 19_729, 19_737, 19_729, -1, 47_846] {
            buf.clear();
            text.date(&mut buf, day);
            let expected = NaiveDate::from_num_days_from_ce_opt(day as i32 + UNIX_EPOCH_FROM_CE)
                .map(|d| d.to_string());
            assert_eq!(Some(String::from_utf8_lossy(&buf).into_owned()), expected);
        }
    }

    #[test]
    fn positive_and_zero_offsets_are_written_with_a_sign() {
        assert_eq!(
            text(Stamp {
                utc: 0,
                offset: 5 * 3600 + 1800
            }),
            "1970-01-01T05:30:00+05:30"
        );
        assert_eq!(
            text(Stamp { utc: 0, offset: 0 }),
            "1970-01-01T00:00:00+00:00"
        );
    }
}
