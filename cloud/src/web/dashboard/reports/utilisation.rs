//! `GET /reports/utilisation` and its CSV: each room's use over a range of days, sessions
//! per day, chair hours and the turnover between patients, each session's day taken in its
//! site's zone.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use vigil_web::csv_row;
use vigil_web::text::duration;

use super::{DayRange, RangeQuery, per_zone, range_form};
use crate::clock::now_us;
use crate::config::Zones;
use crate::store::SessionReportRow;
use crate::web::dashboard::read;
use crate::web::dashboard::{
    Section, Viewer, audit_view, csv_response, empty_row, error_page, frame,
};
use crate::web::extract::ClientIp;
use crate::web::state::Shared;

/// Most day columns the utilisation table draws; longer ranges show totals only.
pub const MAX_DAY_COLUMNS: i64 = 31;

/// A gap between two sessions in a room longer than this is not a turnover (the room was
/// closed: overnight, a weekend), µs.
pub const MAX_TURNOVER_US: i64 = 4 * 3600 * 1_000_000;

/// One room's use over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomUse {
    /// Site.
    pub site: String,
    /// Room.
    pub room: String,
    /// Sessions started.
    pub sessions: u64,
    /// Chair time: start to discharge (or to the end, or to now while in progress), µs.
    pub chair_us: i64,
    /// Gaps between one patient leaving the chair and the next session starting, µs.
    pub turnovers_us: Vec<i64>,
    /// Sessions started per day of the site's calendar (`YYYY-MM-DD`).
    pub per_day: BTreeMap<String, u64>,
}

impl RoomUse {
    /// Mean turnover, µs.
    pub fn mean_turnover_us(&self) -> Option<i64> {
        (!self.turnovers_us.is_empty())
            .then(|| self.turnovers_us.iter().sum::<i64>() / self.turnovers_us.len() as i64)
    }
}

/// Rooms' use from their sessions (rows ordered by site, room, start, as the store returns),
/// each session's day taken in its site's zone.
pub fn utilisation_report(rows: &[SessionReportRow], zones: &Zones, now_us: i64) -> Vec<RoomUse> {
    let mut rooms: BTreeMap<(&str, &str), RoomUse> = BTreeMap::new();
    let mut last_out: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    let mut sorted: Vec<&SessionReportRow> =
        rows.iter().filter(|r| r.started_us.is_some()).collect();
    sorted.sort_by_key(|r| (r.site.as_str(), r.room.as_str(), r.started_us));
    for r in sorted {
        let Some(start) = r.started_us else { continue };
        let key = (r.site.as_str(), r.room.as_str());
        let e = rooms.entry(key).or_insert_with(|| RoomUse {
            site: r.site.clone(),
            room: r.room.clone(),
            sessions: 0,
            chair_us: 0,
            turnovers_us: Vec::new(),
            per_day: BTreeMap::new(),
        });
        e.sessions += 1;
        *e.per_day.entry(zones.get(&r.site).day(start)).or_default() += 1;
        let out = r
            .discharge_us
            .or(r.ended_us)
            .unwrap_or(if r.state == "in_progress" {
                now_us
            } else {
                start
            });
        e.chair_us += (out - start).max(0);
        if let Some(prev) = last_out.get(&key) {
            let gap = start - prev;
            if (0..=MAX_TURNOVER_US).contains(&gap) {
                e.turnovers_us.push(gap);
            }
        }
        last_out.insert(key, out);
    }
    rooms.into_values().collect()
}

/// The report over the range `q` names, in the viewer's scope; a bad range is an error page.
async fn utilisation_data(
    s: &Arc<Shared>,
    viewer: &Viewer,
    q: &RangeQuery,
) -> Result<(Vec<RoomUse>, DayRange), Response> {
    let now = now_us();
    let zones = s.zones.clone();
    let range = DayRange::parse(q, now, &zones)
        .map_err(|m| error_page(viewer, StatusCode::BAD_REQUEST, &m))?;
    let scope = viewer.who.scope().clone();
    let (r, z) = (range.clone(), zones.clone());
    let rows = read(s, move |store| {
        per_zone(
            &z,
            &r,
            |row: &SessionReportRow| &row.site,
            |from, to| store.session_report_rows(&scope, Some(from), Some(to)),
        )
    })
    .await
    .map_err(IntoResponse::into_response)?;
    Ok((utilisation_report(&rows, &zones, now), range))
}

/// `GET /reports/utilisation`.
pub(crate) async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let (rooms, range) = match utilisation_data(&s, &viewer, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "view utilisation report", &range.text()).await {
        return r;
    }
    let days = range.days();
    let body = html! {
        h1 { "Utilisation" }
        (range_form("/reports/utilisation", &range, "/reports/utilisation.csv"))
        (room_table(&rooms, days.len()))
        @if days.len() as i64 <= MAX_DAY_COLUMNS && !rooms.is_empty() {
            h2 { "Sessions per room per day" }
            (day_table(&rooms, &days))
        }
    };
    frame(&viewer, Section::Utilisation, "Utilisation", body)
}

/// A row per room: sessions, sessions per day of the range's `days`, chair hours, turnover.
fn room_table(rooms: &[RoomUse], days: usize) -> Markup {
    html! {
        table id="utilisation" {
            thead {
                tr {
                    th { "Site" } th { "Room" } th.num { "Sessions" } th.num { "Per day" }
                    th.num { "Chair hours" } th.num { "Mean turnover" }
                }
            }
            tbody {
                @for r in rooms {
                    tr {
                        td { (r.site) }
                        td { (r.room) }
                        td.num { (r.sessions) }
                        td.num { (format_args!("{:.1}", r.sessions as f64 / days.max(1) as f64)) }
                        td.num { (format_args!("{:.1}", r.chair_us as f64 / 3.6e9)) }
                        td.num { (r.mean_turnover_us().map_or("—".into(), duration)) }
                    }
                }
                @if rooms.is_empty() { (empty_row(6, "No sessions in this range.")) }
            }
        }
    }
}

/// Sessions each room started on each of `days` (a dot for none).
fn day_table(rooms: &[RoomUse], days: &[String]) -> Markup {
    html! {
        table id="per-day" {
            thead {
                tr {
                    th { "Room" }
                    @for day in days { th.num { (day.get(5..).unwrap_or(day)) } }
                }
            }
            tbody {
                @for r in rooms {
                    tr {
                        td { (r.site) " " (r.room) }
                        @for day in days {
                            td.num {
                                @match r.per_day.get(day) {
                                    Some(n) if *n > 0 => (n),
                                    _ => "·",
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /reports/utilisation.csv`: one row per room and day.
pub(crate) async fn csv(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let (rooms, range) = match utilisation_data(&s, &viewer, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "export utilisation csv", &range.text()).await {
        return r;
    }
    let mut out = csv_row(&[
        "site",
        "room",
        "sessions",
        "chair_hours",
        "mean_turnover_min",
        "day",
        "sessions_that_day",
    ]);
    for r in &rooms {
        for (day, n) in &r.per_day {
            out.push_str(&csv_row(&[
                r.site.clone(),
                r.room.clone(),
                r.sessions.to_string(),
                format!("{:.2}", r.chair_us as f64 / 3.6e9),
                r.mean_turnover_us()
                    .map_or(String::new(), |t| format!("{:.1}", t as f64 / 6e7)),
                day.clone(),
                n.to_string(),
            ]));
        }
    }
    csv_response("utilisation.csv", out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_shared::zone::SiteZone;

    fn row(
        site: &str,
        room: &str,
        start_min: i64,
        out_min: Option<i64>,
        state: &str,
    ) -> SessionReportRow {
        let m = 60_000_000;
        SessionReportRow {
            id: format!("{site}-{room}-{start_min}"),
            site: site.into(),
            room: room.into(),
            patient_id: "p".into(),
            state: state.into(),
            started_us: Some(start_min * m),
            ended_us: out_min.map(|o| o * m),
            discharge_us: None,
        }
    }

    #[test]
    fn utilisation_counts_chair_time_and_turnover() {
        let rows = [
            row("a", "1", 0, Some(60), "completed"),
            row("a", "1", 75, Some(135), "completed"), // 15 min turnover
            row("a", "1", 24 * 60, Some(24 * 60 + 30), "completed"), // next day: not a turnover
            row("a", "2", 10, None, "in_progress"),
        ];
        let r = utilisation_report(&rows, &Zones::default(), 40 * 60_000_000);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].sessions, 3);
        assert_eq!(r[0].chair_us, (60 + 60 + 30) * 60_000_000);
        assert_eq!(r[0].turnovers_us, vec![15 * 60_000_000]);
        assert_eq!(
            r[0].per_day.values().copied().collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(
            r[1].chair_us,
            30 * 60_000_000,
            "in progress counts until now"
        );
        assert_eq!(r[1].mean_turnover_us(), None);
    }

    #[test]
    fn each_site_counts_its_own_days() {
        use crate::config::SiteInfo;
        let site = |id: &str, tz: &str| SiteInfo {
            id: id.into(),
            name: id.into(),
            region: "r".into(),
            rooms: vec!["1".into()],
            tz: Some(tz.into()),
        };
        let zones = Zones::of(&[
            site("austin", "America/Chicago"),
            site("florida", "America/New_York"),
        ]);
        let chicago = SiteZone::parse("America/Chicago").unwrap();
        let new_york = SiteZone::parse("America/New_York").unwrap();
        let range = DayRange {
            from: "2026-11-30".into(),
            to: "2026-11-30".into(),
        };
        // The day is 06:00-06:00 UTC in Austin and 05:00-05:00 UTC in Florida.
        assert_eq!(
            range.window(&chicago).0,
            chicago.parse_day("2026-11-30").unwrap()
        );
        assert_eq!(
            range.window(&chicago).0 - range.window(&new_york).0,
            3_600_000_000
        );
        // 2026-12-01 05:30 UTC is still 2026-11-30 in Austin, already 2026-12-01 in Florida.
        let t =
            SiteZone::utc().parse_day("2026-12-01").unwrap() + 5 * 3_600_000_000 + 1_800_000_000;
        let row = |site: &str| SessionReportRow {
            id: format!("s-{site}"),
            site: site.into(),
            room: "1".into(),
            patient_id: "p".into(),
            state: "completed".into(),
            started_us: Some(t),
            ended_us: Some(t + 2_400_000_000),
            discharge_us: None,
        };
        let rooms = utilisation_report(&[row("austin"), row("florida")], &zones, t);
        let days: Vec<(&str, Vec<&String>)> = rooms
            .iter()
            .map(|r| (r.site.as_str(), r.per_day.keys().collect()))
            .collect();
        assert_eq!(
            days,
            vec![
                ("austin", vec![&"2026-11-30".to_string()]),
                ("florida", vec![&"2026-12-01".to_string()])
            ]
        );
    }
}
