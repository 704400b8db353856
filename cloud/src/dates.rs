//! Times as people and FHIR read them. Vigil stores microseconds since the Unix epoch; pages
//! and exports show UTC (marked as such), because one regional page spans sites in several
//! time zones and a single clock keeps rows comparable.

use time::{Date, Month, OffsetDateTime};

const US_PER_DAY: i64 = 86_400_000_000;

fn at(us: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).ok()
}

/// `2026-11-30T07:10:05.250Z` (milliseconds), or an empty string out of range.
pub fn rfc3339(us: i64) -> String {
    at(us).map_or_else(String::new, |t| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    })
}

/// `2026-11-30 07:10` (UTC).
pub fn minute(us: i64) -> String {
    at(us).map_or_else(String::new, |t| {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    })
}

/// `07:10:05` (UTC).
pub fn clock(us: i64) -> String {
    at(us).map_or_else(String::new, |t| {
        format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
    })
}

/// `2026-11-30` (UTC).
pub fn day(us: i64) -> String {
    at(us).map_or_else(String::new, |t| {
        format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
    })
}

/// Midnight UTC of the day holding `us`.
pub fn midnight(us: i64) -> i64 {
    us.div_euclid(US_PER_DAY) * US_PER_DAY
}

/// One day, µs.
pub const DAY_US: i64 = US_PER_DAY;

/// Midnight UTC of a `YYYY-MM-DD` date, µs; `None` if it is not a date.
pub fn parse_day(s: &str) -> Option<i64> {
    let mut parts = s.trim().splitn(3, '-');
    let y: i32 = parts.next()?.parse().ok()?;
    let m: u8 = parts.next()?.parse().ok()?;
    let d: u8 = parts.next()?.parse().ok()?;
    let date = Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()?;
    let secs = date.midnight().assume_utc().unix_timestamp();
    secs.checked_mul(1_000_000)
}

/// A duration as `1 h 05 min` or `42 min`.
pub fn duration(us: i64) -> String {
    let min = us.max(0) / 60_000_000;
    if min >= 60 {
        format!("{} h {:02} min", min / 60, min % 60)
    } else {
        format!("{min} min")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let us = 1_796_022_605_250_000; // 2026-11-30T07:10:05.250Z
        assert_eq!(rfc3339(us), "2026-11-30T07:10:05.250Z");
        assert_eq!(minute(us), "2026-11-30 07:10");
        assert_eq!(day(us), "2026-11-30");
        assert_eq!(clock(us), "07:10:05");
        let m = parse_day("2026-11-30").unwrap();
        assert_eq!(m, midnight(us));
        assert_eq!(day(m + DAY_US), "2026-12-01");
        for bad in ["", "2026-13-01", "2026-02-30", "yesterday", "2026-11"] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
        assert_eq!(duration(65 * 60_000_000), "1 h 05 min");
        assert_eq!(duration(42 * 60_000_000), "42 min");
    }
}
