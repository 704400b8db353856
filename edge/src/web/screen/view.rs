//! How the room screen shows values: times in the site's zone, names, the session's state.
//! Everything returns text or [`Markup`], so escaping stays maud's.

use std::collections::BTreeMap;

use maud::Markup;
use vigil_shared::doc::{PatientRecord, SessionState};
use vigil_web::layout::badge;

use super::Viewer;

/// A staff member's name, or the id when the staff list doesn't know it.
pub(crate) fn who(names: &BTreeMap<String, String>, id: &str) -> String {
    names.get(id).cloned().unwrap_or_else(|| id.to_owned())
}

/// `YYYY-MM-DD`, the site's day of a time in µs.
pub(crate) fn date(v: &Viewer, us: i64) -> String {
    v.zone.day(us)
}

/// `HH:MM:SS CST`, the site's time of day of a time in µs, with the zone's abbreviation.
pub(crate) fn clock(v: &Viewer, us: i64) -> String {
    v.zone.clock(us)
}

pub(crate) fn patient_name(p: &PatientRecord) -> String {
    format!("{} {}", p.given_name, p.family_name)
}

pub(crate) fn state_badge(state: SessionState) -> Markup {
    match state {
        SessionState::Planned => badge("", "planned"),
        SessionState::InProgress => badge("ok", "in progress"),
        SessionState::Completed => badge("", "completed"),
        SessionState::Aborted => badge("bad", "aborted"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer_in(zone: &str) -> Viewer {
        Viewer {
            id: "rn-ana".into(),
            name: "Ana".into(),
            role: crate::access::Role::Nurse,
            csrf: String::new(),
            token: String::new(),
            zone: vigil_shared::zone::SiteZone::parse(zone).unwrap(),
        }
    }

    #[test]
    fn times_are_the_sites_own() {
        let utc = viewer_in("UTC");
        let chicago = viewer_in("America/Chicago");
        let cases = [
            (&utc, 0, "1970-01-01", "00:00:00 UTC"),
            (&utc, 951_782_400_000_000, "2000-02-29", "00:00:00 UTC"),
            (
                &chicago,
                1_790_000_000_000_000,
                "2026-09-21",
                "09:13:20 CDT",
            ),
            // After midnight UTC, still the evening before in Austin.
            (
                &chicago,
                1_796_000_000_000_000,
                "2026-11-29",
                "18:53:20 CST",
            ),
            // The November change: 06:30 UTC is 01:30 CDT, 07:10 UTC is 01:10 CST.
            (
                &chicago,
                1_793_514_600_000_000,
                "2026-11-01",
                "01:30:00 CDT",
            ),
            (
                &chicago,
                1_793_517_000_000_000,
                "2026-11-01",
                "01:10:00 CST",
            ),
        ];
        for (v, us, d, c) in cases {
            assert_eq!(
                (date(v, us), clock(v, us)),
                (d.to_owned(), c.to_owned()),
                "{us}"
            );
        }
    }
}
