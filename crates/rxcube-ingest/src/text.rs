//! Parsing the text of one field (a CSV cell, or a string column in Parquet) into its contract
//! type. These run once per field of every record, so they parse bytes directly; each failure
//! returns the reason shown to the user.

use chrono::NaiveDate;

/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// Why an instant outside [`instant_range`] is refused.
pub const INSTANT_OUT_OF_RANGE: &str = "instant out of range (years 1678 to 2261)";

/// The instants the engine computes with, in microseconds since the epoch: its time functions
/// (the months of the partitions among them) work in nanoseconds, whose i64 spans 1677-09-21
/// to 2262-04-11, so an instant must lie in the whole years 1678 to 2261.
pub fn instant_range() -> std::ops::RangeInclusive<i64> {
    days_from_civil(1678, 1, 1) * DAY_MICROS..=days_from_civil(2262, 1, 1) * DAY_MICROS - 1
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 {
        return None;
    }
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// `YYYY-MM-DD` → (year, month, day), validated.
fn ymd(b: &[u8]) -> Option<(i64, u32, u32)> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = i64::from(digits(&b[0..4])?);
    let m = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    ((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)).then_some((y, m, d))
}

/// An ISO 8601 calendar date, as days since the Unix epoch.
pub fn parse_date(s: &str) -> Result<i32, &'static str> {
    let (y, m, d) = ymd(s.trim().as_bytes()).ok_or("not a valid date (expected YYYY-MM-DD)")?;
    i32::try_from(days_from_civil(y, m, d)).map_err(|_| "date out of range")
}

/// An RFC 3339 timestamp with a UTC offset (`Z` or `±HH:MM`), as microseconds since the epoch.
/// `T` or a space may separate date and time; fractional seconds down to microseconds.
pub fn parse_instant(s: &str) -> Result<i64, &'static str> {
    const BAD: &str = "not an RFC 3339 timestamp (expected e.g. 2024-03-10T08:15:00-08:00)";
    let b = s.trim().as_bytes();
    if b.len() < 19 {
        return Err(BAD);
    }
    let (y, mo, d) = ymd(&b[0..10]).ok_or(BAD)?;
    if !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(BAD);
    }
    let h = digits(&b[11..13]).ok_or(BAD)?;
    let mi = digits(&b[14..16]).ok_or(BAD)?;
    let sec = digits(&b[17..19]).ok_or(BAD)?;
    if h > 23 || mi > 59 || sec > 59 {
        return Err("time of day out of range");
    }
    let mut i = 19;
    let mut micros = 0i64;
    if i < b.len() && b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &b[start..i];
        if frac.is_empty() {
            return Err(BAD);
        }
        for (k, &c) in frac.iter().take(6).enumerate() {
            micros += i64::from(c - b'0') * 10i64.pow(5 - k as u32);
        }
        if frac[6.min(frac.len())..].iter().any(|&c| c != b'0') {
            return Err("timestamp is finer than microseconds");
        }
    }
    let offset_secs: i64 = match &b[i..] {
        [] => return Err("timestamp has no UTC offset (add Z or ±HH:MM)"),
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let oh = digits(&[*oh1, *oh2]).ok_or(BAD)?;
            let om = digits(&[*om1, *om2]).ok_or(BAD)?;
            if oh > 23 || om > 59 {
                return Err("UTC offset out of range");
            }
            let v = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' { -v } else { v }
        }
        _ => return Err(BAD),
    };
    let secs = i64::from(h * 3600 + mi * 60 + sec) - offset_secs;
    let v = days_from_civil(y, mo, d) * DAY_MICROS + secs * 1_000_000 + micros;
    if !instant_range().contains(&v) {
        return Err(INSTANT_OUT_OF_RANGE);
    }
    Ok(v)
}

/// A decimal with at most `scale` decimals, scaled to an integer (e.g. `12.5` → 1250 at scale 2).
pub fn parse_decimal(s: &str, scale: u32) -> Result<i128, &'static str> {
    const BAD: &str = "not a decimal number";
    let t = s.trim();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
        || int.len() > 30
    {
        return Err(BAD);
    }
    // Zeros past the scale change nothing: 1.500 is exactly 1.50.
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale as usize {
        return Err(if scale == 2 {
            "more than 2 decimals"
        } else {
            "too many decimals"
        });
    }
    let mut v: i128 = 0;
    for c in int.bytes().chain(frac.bytes()) {
        v = v * 10 + i128::from(c - b'0');
    }
    v *= 10i128.pow(scale - frac.len() as u32);
    Ok(if neg { -v } else { v })
}

pub fn parse_i64(s: &str) -> Result<i64, &'static str> {
    s.trim().parse::<i64>().map_err(|_| "not an integer")
}

pub fn parse_i32(s: &str) -> Result<i32, &'static str> {
    let v = parse_i64(s)?;
    i32::try_from(v).map_err(|_| "integer out of range")
}

pub fn parse_f64(s: &str) -> Result<f64, &'static str> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err("not a finite number"),
    }
}

/// The date `days` after the epoch, for messages.
pub fn format_date(days: i32) -> String {
    NaiveDate::from_num_days_from_ce_opt(days + 719_163)
        .map(|d| d.to_string())
        .unwrap_or_else(|| days.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    #[test]
    fn instants_agree_with_chrono_on_offsets_fractions_and_leap_days() {
        for s in [
            "2024-03-10T01:59:59-08:00",
            "2024-03-10T03:00:00-07:00",
            "2024-11-03T01:30:00-07:00",
            "2024-11-03T01:30:00-08:00",
            "2024-02-29T23:59:59.123456+05:30",
            "1999-12-31T23:59:59Z",
            "2024-01-01 00:00:00.5+00:00",
            "2100-12-31T00:00:00-23:59",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
        ] {
            let expected = DateTime::parse_from_rfc3339(s)
                .expect("valid")
                .timestamp_micros();
            assert_eq!(parse_instant(s), Ok(expected), "{s}");
        }
    }

    #[test]
    fn bad_instants_say_why() {
        assert_eq!(
            parse_instant("2024-03-10T08:15:00"),
            Err("timestamp has no UTC offset (add Z or ±HH:MM)")
        );
        assert_eq!(
            parse_instant("2024-02-30T08:15:00Z").map(|_| ()),
            Err(parse_instant("x").unwrap_err())
        );
        assert_eq!(
            parse_instant("2024-01-01T24:00:00Z"),
            Err("time of day out of range")
        );
        assert_eq!(
            parse_instant("2024-01-01T10:00:00.1234567Z"),
            Err("timestamp is finer than microseconds")
        );
        assert_eq!(
            parse_instant("2024-01-01T10:00:00+25:00"),
            Err("UTC offset out of range")
        );
        assert!(parse_instant("yesterday").is_err());
    }

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("2024-01-07"), Ok(19_729));
        assert_eq!(parse_date("1969-12-31"), Ok(-1));
        assert_eq!(format_date(19_729), "2024-01-07");
        assert!(parse_date("2023-02-29").is_err());
        assert!(parse_date("2024-1-7").is_err());
    }

    #[test]
    fn decimals_are_exact_and_reject_extra_precision() {
        assert_eq!(parse_decimal("12.5", 2), Ok(1250));
        assert_eq!(parse_decimal("-0.07", 2), Ok(-7));
        assert_eq!(parse_decimal("3", 2), Ok(300));
        assert_eq!(parse_decimal(".25", 2), Ok(25));
        assert_eq!(parse_decimal("1.500", 2), Ok(150));
        assert_eq!(parse_decimal("1.005", 2), Err("more than 2 decimals"));
        assert_eq!(parse_decimal("1,000.00", 2), Err("not a decimal number"));
        assert_eq!(parse_decimal("-", 2), Err("not a decimal number"));
    }

    #[test]
    fn integers_and_floats() {
        assert_eq!(parse_i32(" 42 "), Ok(42));
        assert_eq!(parse_i32("3000000000"), Err("integer out of range"));
        assert_eq!(parse_i64("4.0"), Err("not an integer"));
        assert_eq!(parse_f64("85.5"), Ok(85.5));
        assert_eq!(parse_f64("NaN"), Err("not a finite number"));
    }
}
