//! Times as the people at a site read them: each site has an IANA time zone
//! (`America/Chicago` for Austin, `America/New_York` for most of Florida), and every page
//! shows a moment in its site's zone with the zone's abbreviation (`CST`, `EDT`), and "today"
//! and "per day" mean the site's day, which is 23 or 25 hours long when daylight saving
//! starts or ends.
//!
//! Vigil stores microseconds since the Unix epoch (UTC) everywhere; this module only turns
//! them into local calendar values and back. Durations are differences of stored times, so a
//! session across a daylight-saving change has its real length whatever the clock on the wall
//! did. The zone database is compiled in, so an appliance without tzdata reads the same
//! rules as the cloud.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

/// The zone of a site whose configuration names none.
pub const DEFAULT_ZONE: &str = "UTC";

/// A site's time zone.
#[derive(Debug, Clone)]
pub struct SiteZone {
    name: String,
    tz: TimeZone,
}

impl PartialEq for SiteZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// A zone name that is not in the IANA database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?} (use an IANA name such as America/Chicago)")]
pub struct UnknownZone(pub String);

impl SiteZone {
    /// Coordinated Universal Time.
    pub fn utc() -> SiteZone {
        SiteZone {
            name: DEFAULT_ZONE.to_owned(),
            tz: TimeZone::UTC,
        }
    }

    /// The zone with IANA name `name`, e.g. `America/Chicago`.
    pub fn parse(name: &str) -> Result<SiteZone, UnknownZone> {
        let name = name.trim();
        // Names only: a POSIX rule string or an offset would be read without the site's
        // daylight-saving history.
        if name.is_empty() || name.len() > 64 || !name.bytes().all(is_zone_name_byte) {
            return Err(UnknownZone(name.to_owned()));
        }
        TimeZone::get(name)
            .map(|tz| SiteZone {
                name: name.to_owned(),
                tz,
            })
            .map_err(|_| UnknownZone(name.to_owned()))
    }

    /// The zone's configured name, or [`Self::utc`] when it has none or an unknown one (an
    /// unknown name from a newer cloud must not stop a page; pages then say `UTC`).
    pub fn parse_or_utc(name: Option<&str>) -> SiteZone {
        name.and_then(|n| SiteZone::parse(n).ok())
            .unwrap_or_else(SiteZone::utc)
    }

    /// The IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn at(&self, us: i64) -> Option<ZonedDateTime> {
        Timestamp::from_microsecond(us)
            .ok()
            .map(|t| t.to_zoned_datetime(self.tz.clone()))
    }

    fn format(&self, us: i64, pattern: &str) -> String {
        self.at(us)
            .map_or_else(String::new, |z| z.strftime(pattern).to_string())
    }

    /// `2026-11-30 01:10 CST`; empty out of range.
    pub fn minute(&self, us: i64) -> String {
        self.format(us, "%Y-%m-%d %H:%M %Z")
    }

    /// `2026-11-30 01:10:05 CST`; empty out of range.
    pub fn second(&self, us: i64) -> String {
        self.format(us, "%Y-%m-%d %H:%M:%S %Z")
    }

    /// `01:10:05 CST`; empty out of range.
    pub fn clock(&self, us: i64) -> String {
        self.format(us, "%H:%M:%S %Z")
    }

    /// `01:10 CST`; empty out of range.
    pub fn hour_minute(&self, us: i64) -> String {
        self.format(us, "%H:%M %Z")
    }

    /// `2026-11-30`, the site's calendar day; empty out of range.
    pub fn day(&self, us: i64) -> String {
        self.format(us, "%Y-%m-%d")
    }

    /// ISO 8601 local time with its UTC offset, `2026-11-30T01:10:05-06:00` (for CSV beside
    /// the UTC column); empty out of range.
    pub fn iso_local(&self, us: i64) -> String {
        self.format(us, "%Y-%m-%dT%H:%M:%S%:z")
    }

    /// The site's calendar date holding `us`: `(year, month, day)`.
    pub fn civil_date(&self, us: i64) -> Option<(i32, u8, u8)> {
        let d = self.at(us)?.date();
        Some((
            i32::from(d.year()),
            d.month().cast_unsigned(),
            d.day().cast_unsigned(),
        ))
    }

    /// The site's weekday holding `us`: 1 Monday to 7 Sunday (0 out of range).
    pub fn weekday(&self, us: i64) -> i8 {
        self.at(us)
            .map_or(0, |t| t.weekday().to_monday_one_offset())
    }

    /// The start of the site's day holding `us` (local midnight, or the first moment of the
    /// day where midnight does not exist), µs.
    pub fn day_start(&self, us: i64) -> i64 {
        self.at(us)
            .and_then(|z| z.start_of_day().ok())
            .map_or_else(|| utc_midnight(us), |z| z.timestamp().as_microsecond())
    }

    /// The start of the site's next day after the one holding `us`, µs: 23, 24 or 25 hours
    /// after [`Self::day_start`].
    pub fn next_day_start(&self, us: i64) -> i64 {
        self.at(us)
            .and_then(|z| z.tomorrow().ok())
            .and_then(|z| z.start_of_day().ok())
            .map_or_else(
                || utc_midnight(us) + US_PER_DAY,
                |z| z.timestamp().as_microsecond(),
            )
    }

    /// The start of the site's day `YYYY-MM-DD`, µs; `None` if it is not a date.
    pub fn parse_day(&self, s: &str) -> Option<i64> {
        let date: Date = s.trim().parse().ok()?;
        let start = date
            .to_zoned_datetime(self.tz.clone())
            .ok()?
            .start_of_day()
            .ok()?;
        Some(start.timestamp().as_microsecond())
    }
}

/// One UTC day, µs.
pub const US_PER_DAY: i64 = 86_400_000_000;

fn utc_midnight(us: i64) -> i64 {
    us.div_euclid(US_PER_DAY) * US_PER_DAY
}

fn is_zone_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/_-+".contains(&b)
}

/// `2026-11-30T07:10:05.250Z`: UTC with milliseconds, for exports and FHIR; empty out of
/// range.
pub fn rfc3339_utc(us: i64) -> String {
    Timestamp::from_microsecond(us).map_or_else(
        |_| String::new(),
        |t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

/// The UTC calendar date holding `us`: `(year, month, day)`.
pub fn utc_date(us: i64) -> Option<(i32, u8, u8)> {
    SiteZone::utc().civil_date(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN_US: i64 = 60_000_000;
    const HOUR_US: i64 = 60 * MIN_US;

    fn us(rfc3339: &str) -> i64 {
        rfc3339
            .parse::<Timestamp>()
            .expect("test timestamp")
            .as_microsecond()
    }

    fn chicago() -> SiteZone {
        SiteZone::parse("America/Chicago").expect("zone")
    }

    #[test]
    fn names_are_iana_zones_only() {
        for good in [
            "America/Chicago",
            "America/New_York",
            "UTC",
            "Europe/London",
        ] {
            assert_eq!(SiteZone::parse(good).expect(good).name(), good);
        }
        for bad in [
            "",
            "Mars/Olympus",
            "CST6CDT,M3.2.0,M11.1.0",
            "-06:00",
            "../../etc/passwd",
            "America/Chicago\n",
        ] {
            let trimmed = bad.trim();
            if trimmed == "America/Chicago" {
                // Surrounding white space is forgiven; the name itself is checked.
                assert!(SiteZone::parse(bad).is_ok());
                continue;
            }
            assert_eq!(
                SiteZone::parse(bad),
                Err(UnknownZone(trimmed.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(SiteZone::parse_or_utc(Some("Nowhere/Else")).name(), "UTC");
        assert_eq!(SiteZone::parse_or_utc(None).name(), "UTC");
    }

    #[test]
    fn moments_read_in_the_sites_zone_with_its_abbreviation() {
        let t = us("2026-11-30T07:10:05.250Z");
        let cases = [
            (
                "America/Chicago",
                "2026-11-30 01:10 CST",
                "01:10:05 CST",
                "2026-11-30",
            ),
            (
                "America/New_York",
                "2026-11-30 02:10 EST",
                "02:10:05 EST",
                "2026-11-30",
            ),
            ("UTC", "2026-11-30 07:10 UTC", "07:10:05 UTC", "2026-11-30"),
            (
                "Pacific/Honolulu",
                "2026-11-29 21:10 HST",
                "21:10:05 HST",
                "2026-11-29",
            ),
        ];
        for (zone, minute, clock, day) in cases {
            let z = SiteZone::parse(zone).expect(zone);
            assert_eq!(z.minute(t), minute, "{zone}");
            assert_eq!(z.clock(t), clock, "{zone}");
            assert_eq!(z.day(t), day, "{zone}");
        }
        assert_eq!(chicago().iso_local(t), "2026-11-30T01:10:05-06:00");
        assert_eq!(rfc3339_utc(t), "2026-11-30T07:10:05.250Z");
        // Summer: daylight time.
        let july = us("2026-07-01T17:00:00Z");
        assert_eq!(chicago().minute(july), "2026-07-01 12:00 CDT");
    }

    #[test]
    fn the_sites_day_turns_over_at_local_midnight_not_utc() {
        // 6 pm in Austin on 30 November is already 1 December in UTC.
        let evening = us("2026-12-01T00:30:00Z");
        let z = chicago();
        assert_eq!(z.day(evening), "2026-11-30");
        assert_eq!(utc_date(evening), Some((2026, 12, 1)));
        assert_eq!(z.day_start(evening), us("2026-11-30T06:00:00Z"));
        assert_eq!(z.next_day_start(evening), us("2026-12-01T06:00:00Z"));
        assert_eq!(z.parse_day("2026-11-30"), Some(us("2026-11-30T06:00:00Z")));
        assert_eq!(z.parse_day("2026-02-30"), None);
        assert_eq!(z.parse_day("yesterday"), None);
    }

    #[test]
    fn daylight_saving_days_are_25_and_23_hours_long() {
        let z = chicago();
        // Sunday 1 November 2026: clocks go back at 2:00 CDT.
        let fall = z.parse_day("2026-11-01").expect("day");
        assert_eq!(z.next_day_start(fall) - fall, 25 * HOUR_US);
        // Sunday 8 March 2026: clocks go forward at 2:00 CST.
        let spring = z.parse_day("2026-03-08").expect("day");
        assert_eq!(z.next_day_start(spring) - spring, 23 * HOUR_US);
        // An ordinary day.
        let day = z.parse_day("2026-11-02").expect("day");
        assert_eq!(z.next_day_start(day) - day, 24 * HOUR_US);
    }

    #[test]
    fn a_session_across_the_november_change_keeps_its_real_length() {
        // Started 01:30 CDT, stopped 01:10 CST: the wall clock went back 20 minutes, the
        // infusion lasted 40.
        let z = chicago();
        let start = us("2026-11-01T06:30:00Z");
        let stop = us("2026-11-01T07:10:00Z");
        assert_eq!(z.hour_minute(start), "01:30 CDT");
        assert_eq!(z.hour_minute(stop), "01:10 CST");
        assert_eq!(stop - start, 40 * MIN_US);
        assert_eq!(z.day_start(start), z.day_start(stop));
    }

    #[test]
    fn out_of_range_moments_read_as_nothing() {
        let z = chicago();
        assert_eq!(z.minute(i64::MAX), "");
        assert_eq!(rfc3339_utc(i64::MIN), "");
        assert_eq!(z.civil_date(i64::MAX), None);
        // Day boundaries stay ordered even where the calendar ends.
        assert!(z.next_day_start(i64::MAX / 2) > z.day_start(i64::MAX / 2));
    }
}
