//! The dashboard's reports, a module each, each a page and a CSV: advisories and adverse
//! events by site (per 100 sessions, by kind and priority), room utilisation (sessions per
//! room per day, chair hours, turnover), and courses and outcomes (induction completion, PHQ-9
//! change, response and remission rates).
//!
//! The arithmetic is in plain functions over store rows
//! ([`advisory_report`](advisories::advisory_report),
//! [`utilisation_report`](utilisation::utilisation_report),
//! [`outcome_report`](outcomes::outcome_report)) with table tests; handlers only fetch rows in
//! the viewer's scope, audit, and render. What the reports share is here: the date range and
//! its form, per-zone queries, rates.

pub(crate) mod advisories;
pub(crate) mod ledger;
pub(crate) mod outcomes;
pub(crate) mod utilisation;

use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::zone::{SiteZone, US_PER_DAY};

use crate::config::Zones;

/// Days a report covers when the form names none (the last 30, today included).
pub const DEFAULT_REPORT_DAYS: i64 = 30;

/// The date range of a report as typed.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

/// A report's range: site-local days, `from` to `to` inclusive. A region spanning two zones
/// counts each site's sessions by that site's own calendar day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRange {
    /// First day, `YYYY-MM-DD`.
    pub from: String,
    /// Last day, `YYYY-MM-DD`.
    pub to: String,
}

impl DayRange {
    /// The range as typed; by default the [`DEFAULT_REPORT_DAYS`] days up to today, where
    /// today is the latest of the sites' local dates (the most eastern site's day).
    fn parse(q: &RangeQuery, now: i64, zones: &Zones) -> Result<DayRange, String> {
        let utc = SiteZone::utc();
        let today = zones
            .groups()
            .iter()
            .map(|(z, _)| z.day(now))
            .max()
            .unwrap_or_else(|| utc.day(now));
        let pick = |v: &Option<String>, name: &str| -> Result<Option<String>, String> {
            match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                Some(d) => match utc.parse_day(d) {
                    Some(us) => Ok(Some(utc.day(us))),
                    None => Err(format!("{name}: {d:?} is not a date (YYYY-MM-DD)")),
                },
                None => Ok(None),
            }
        };
        let to = pick(&q.to, "to")?.unwrap_or(today);
        let from = match pick(&q.from, "from")? {
            Some(f) => f,
            None => {
                let to_us = utc.parse_day(&to).unwrap_or(now);
                utc.day(to_us - (DEFAULT_REPORT_DAYS - 1) * US_PER_DAY)
            }
        };
        if from > to {
            return Err("from is after to".into());
        }
        Ok(DayRange { from, to })
    }

    /// The instants `[from, to)` the range covers in `zone`: local midnight of the first day
    /// to local midnight after the last.
    pub fn window(&self, zone: &SiteZone) -> (i64, i64) {
        let from = zone.parse_day(&self.from).unwrap_or(0);
        let last = zone.parse_day(&self.to).unwrap_or(from);
        (from, zone.next_day_start(last))
    }

    /// The days of the range, in order.
    pub fn days(&self) -> Vec<String> {
        let utc = SiteZone::utc();
        let mut out = Vec::new();
        let mut d = utc.parse_day(&self.from).unwrap_or(0);
        while utc.day(d) <= self.to && out.len() <= MAX_REPORT_DAYS {
            out.push(utc.day(d));
            d += US_PER_DAY;
        }
        out
    }

    /// The range as the audit log records it.
    fn text(&self) -> String {
        format!("{}..{}", self.from, self.to)
    }
}

/// Most days a range lists (ten years); longer ranges are cut.
const MAX_REPORT_DAYS: usize = 3_660;

/// Runs `query` once per zone over that zone's window and keeps what concerns that zone's
/// sites (by `site_of`): each site's figures come from its own local days.
fn per_zone<T>(
    zones: &Zones,
    range: &DayRange,
    site_of: impl Fn(&T) -> &str,
    mut query: impl FnMut(i64, i64) -> Result<Vec<T>, crate::store::StoreError>,
) -> Result<Vec<T>, crate::store::StoreError> {
    let mut out = Vec::new();
    for (zone, sites) in zones.groups() {
        let (from, to) = range.window(&zone);
        out.extend(
            query(from, to)?
                .into_iter()
                .filter(|row| sites.contains(&site_of(row))),
        );
    }
    Ok(out)
}

/// The range form of the report at `action`, and the link to its CSV at `csv`.
fn range_form(action: &str, range: &DayRange, csv: &str) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            label { "From" input type="date" name="from" value=(range.from); }
            label { "To" input type="date" name="to" value=(range.to); }
            button.primary type="submit" { "Apply" }
            " "
            a href={ (csv) "?from=" (range.from) "&to=" (range.to) } id="csv" { "Download CSV" }
        }
    }
}

/// `n` per 100 sessions, to a tenth; a dash without sessions.
fn per100(n: u64, sessions: u64) -> String {
    if sessions == 0 {
        "—".into()
    } else {
        format!("{:.1}", n as f64 * 100.0 / sessions as f64)
    }
}

/// `n` as a whole percentage of `of`; a dash when `of` is 0.
fn pct(n: u64, of: u64) -> String {
    if of == 0 {
        "—".into()
    } else {
        format!("{:.0} %", n as f64 * 100.0 / of as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_ranges() {
        let utc = SiteZone::utc();
        let zones = Zones::default();
        let now = utc.parse_day("2026-11-30").unwrap() + 3_600_000_000;
        let r = DayRange::parse(&RangeQuery::default(), now, &zones).unwrap();
        assert_eq!(
            (r.from.as_str(), r.to.as_str()),
            ("2026-11-01", "2026-11-30")
        );
        assert_eq!(r.days().len() as i64, DEFAULT_REPORT_DAYS);
        let (from, to) = r.window(&utc);
        assert_eq!((to - from) / US_PER_DAY, DEFAULT_REPORT_DAYS);
        let bad = RangeQuery {
            from: Some("2026-12-01".into()),
            to: Some("2026-11-01".into()),
        };
        assert!(DayRange::parse(&bad, now, &zones).is_err());
        let junk = RangeQuery {
            from: Some("<script>".into()),
            to: None,
        };
        assert!(
            DayRange::parse(&junk, now, &zones)
                .unwrap_err()
                .contains("not a date")
        );
    }
}
