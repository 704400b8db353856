//! The dashboard's reports, each a page and a CSV: advisories and adverse events by site (per
//! 100 sessions, by kind and priority), room utilisation (sessions per room per day, chair
//! hours, turnover), and courses and outcomes (induction completion, PHQ-9 change, response
//! and remission rates).
//!
//! The arithmetic is in plain functions over store rows ([`advisory_report`],
//! [`utilisation_report`], [`outcome_report`]) with table tests; handlers only fetch rows in
//! the viewer's scope, audit, and render.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vigil_shared::zone::{SiteZone, US_PER_DAY};
use vigil_web::text::duration;
use vigil_web::{Esc, csv_row};

use super::{Section, Viewer, audit_view, csv_response, error_page, frame};
use crate::api::{ClientIp, Shared, now_us, read};
use crate::config::Zones;
use crate::store::{AdvisoryCount, OutcomeSite, SessionReportRow, SiteSessionCount};
use vigil_shared::clinical::Severity;
use vigil_shared::clinical::adverse::is_expected_effect;
use vigil_shared::clinical::outcomes::phq9_outcome;

/// Days a report covers when the form names none (the last 30, today included).
pub const DEFAULT_REPORT_DAYS: i64 = 30;

/// Most day columns the utilisation table draws; longer ranges show totals only.
pub const MAX_DAY_COLUMNS: i64 = 31;

/// A gap between two sessions in a room longer than this is not a turnover (the room was
/// closed: overnight, a weekend), µs.
pub const MAX_TURNOVER_US: i64 = 4 * 3600 * 1_000_000;

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

fn range_form(action: &str, from: &str, to: &str, csv: &str) -> String {
    format!(
        r#"<form class="filters" method="get" action="{action}"><label>From<input type="date" name="from" value="{}"></label><label>To<input type="date" name="to" value="{}"></label><button class="primary" type="submit">Apply</button> <a href="{csv}?from={}&amp;to={}" id="csv">Download CSV</a></form>"#,
        Esc(from),
        Esc(to),
        Esc(from),
        Esc(to)
    )
}

fn per100(n: u64, sessions: u64) -> String {
    if sessions == 0 {
        "—".into()
    } else {
        format!("{:.1}", n as f64 * 100.0 / sessions as f64)
    }
}

fn pct(n: u64, of: u64) -> String {
    if of == 0 {
        "—".into()
    } else {
        format!("{:.0} %", n as f64 * 100.0 / of as f64)
    }
}

// ------------------------------------------------------------------------------------------
// Advisories and adverse events

/// One site's advisories and side effects: the effects a ketamine infusion is expected to have
/// (mild or moderate dissociation, nausea …; `clinical::adverse::is_expected_effect`) apart from
/// adverse events (anything severe or unexpected).
#[derive(Debug, Clone, PartialEq)]
pub struct SiteAdvisories {
    /// Site.
    pub site: String,
    /// Sessions started in the range.
    pub sessions: u64,
    /// Advisories, all priorities.
    pub advisories: u64,
    /// High-priority advisories.
    pub high: u64,
    /// Expected effects recorded.
    pub expected_effects: u64,
    /// Adverse events: severe or unexpected effects.
    pub adverse_events: u64,
    /// The counts by kind and level.
    pub rows: Vec<AdvisoryCount>,
}

/// The report's category of an expected effect.
pub const EXPECTED_EFFECT: &str = "expected_effect";

/// The report's category of an adverse event.
pub const ADVERSE_EVENT: &str = "adverse_event";

/// Groups counts by site; every site with sessions appears, with or without events; side
/// effects are split into expected effects and adverse events.
pub fn advisory_report(
    sessions: &[SiteSessionCount],
    counts: &[AdvisoryCount],
) -> Vec<SiteAdvisories> {
    let mut out: BTreeMap<&str, SiteAdvisories> = BTreeMap::new();
    let blank = |site: &str| SiteAdvisories {
        site: site.to_owned(),
        sessions: 0,
        advisories: 0,
        high: 0,
        expected_effects: 0,
        adverse_events: 0,
        rows: Vec::new(),
    };
    for s in sessions {
        out.entry(&s.site)
            .or_insert_with(|| blank(&s.site))
            .sessions = s.sessions;
    }
    for c in counts {
        let e = out.entry(&c.site).or_insert_with(|| blank(&c.site));
        if c.category == "advisory" {
            e.advisories += c.count;
            if c.level == "high" {
                e.high += c.count;
            }
            e.rows.push(c.clone());
        } else {
            let expected = Severity::parse(&c.level)
                .is_ok_and(|severity| is_expected_effect(&c.kind, severity));
            let category = if expected {
                e.expected_effects += c.count;
                EXPECTED_EFFECT
            } else {
                e.adverse_events += c.count;
                ADVERSE_EVENT
            };
            e.rows.push(AdvisoryCount {
                category: category.into(),
                ..c.clone()
            });
        }
    }
    out.into_values().collect()
}

async fn advisory_data(
    s: &Arc<Shared>,
    viewer: &Viewer,
    q: &RangeQuery,
) -> Result<(Vec<SiteAdvisories>, String, String), Response> {
    let zones = s.zones.clone();
    let range = DayRange::parse(q, now_us(), &zones)
        .map_err(|m| error_page(viewer, StatusCode::BAD_REQUEST, &m))?;
    let scope = viewer.who.scope().clone();
    let r = range.clone();
    let data = read(s, move |store| {
        let sessions = per_zone(
            &zones,
            &r,
            |c: &SiteSessionCount| &c.site,
            |from, to| store.site_session_counts(&scope, Some(from), Some(to)),
        )?;
        let counts = per_zone(
            &zones,
            &r,
            |c: &AdvisoryCount| &c.site,
            |from, to| store.advisory_counts(&scope, Some(from), Some(to)),
        )?;
        Ok((sessions, counts))
    })
    .await
    .map_err(IntoResponse::into_response)?;
    Ok((advisory_report(&data.0, &data.1), range.from, range.to))
}

/// `GET /reports/advisories`.
pub(crate) async fn advisories(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let (report, from, to) = match advisory_data(&s, &viewer, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(
        &s,
        &viewer,
        &ip,
        "view advisory report",
        &format!("{from}..{to}"),
    )
    .await
    {
        return r;
    }
    let mut body = format!(
        "<h1>Advisories and adverse events</h1>{}<table id=\"advisory-summary\"><thead><tr><th>Site</th><th class=\"num\">Sessions</th><th class=\"num\">Advisories / 100</th><th class=\"num\">High / 100</th><th class=\"num\">Expected effects / 100</th><th class=\"num\">Adverse events / 100</th></tr></thead><tbody>",
        range_form("/reports/advisories", &from, &to, "/reports/advisories.csv")
    );
    for r in &report {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            Esc(&r.site),
            r.sessions,
            per100(r.advisories, r.sessions),
            per100(r.high, r.sessions),
            per100(r.expected_effects, r.sessions),
            per100(r.adverse_events, r.sessions)
        );
    }
    body.push_str("</tbody></table>");
    for r in &report {
        let _ = write!(
            body,
            "<h2>{}</h2><table><thead><tr><th>Category</th><th>Kind</th><th>Priority or severity</th><th class=\"num\">Count</th><th class=\"num\">Per 100 sessions</th></tr></thead><tbody>",
            Esc(&r.site)
        );
        if r.rows.is_empty() {
            body.push_str("<tr><td colspan=\"5\" class=\"muted\">None in this range.</td></tr>");
        }
        for c in &r.rows {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                Esc(&c.category.replace('_', " ")),
                Esc(&c.kind),
                Esc(&c.level),
                c.count,
                per100(c.count, r.sessions)
            );
        }
        body.push_str("</tbody></table>");
    }
    frame(&viewer, Section::Advisories, "Advisories", &body)
}

/// `GET /reports/advisories.csv`.
pub(crate) async fn advisories_csv(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let (report, from, to) = match advisory_data(&s, &viewer, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(
        &s,
        &viewer,
        &ip,
        "export advisory report csv",
        &format!("{from}..{to}"),
    )
    .await
    {
        return r;
    }
    let mut out = csv_row(&[
        "site",
        "sessions",
        "category",
        "kind",
        "level",
        "count",
        "per_100_sessions",
    ]);
    for r in &report {
        for c in &r.rows {
            out.push_str(&csv_row(&[
                r.site.clone(),
                r.sessions.to_string(),
                c.category.clone(),
                c.kind.clone(),
                c.level.clone(),
                c.count.to_string(),
                per100(c.count, r.sessions),
            ]));
        }
    }
    csv_response("advisories.csv", out)
}

// ------------------------------------------------------------------------------------------
// Utilisation

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
pub(crate) async fn utilisation(
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
    let (from_text, to_text) = (range.from.clone(), range.to.clone());
    let day_list = range.days();
    if let Err(r) = audit_view(&s, &viewer, &ip, "view utilisation report", &range.text()).await {
        return r;
    }
    let days = day_list.len() as i64;
    let mut body = format!(
        "<h1>Utilisation</h1>{}<table id=\"utilisation\"><thead><tr><th>Site</th><th>Room</th><th class=\"num\">Sessions</th><th class=\"num\">Per day</th><th class=\"num\">Chair hours</th><th class=\"num\">Mean turnover</th></tr></thead><tbody>",
        range_form(
            "/reports/utilisation",
            &from_text,
            &to_text,
            "/reports/utilisation.csv"
        )
    );
    for r in &rooms {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.1}</td><td class=\"num\">{}</td></tr>",
            Esc(&r.site),
            Esc(&r.room),
            r.sessions,
            r.sessions as f64 / days.max(1) as f64,
            r.chair_us as f64 / 3.6e9,
            r.mean_turnover_us().map_or("—".into(), duration)
        );
    }
    if rooms.is_empty() {
        body.push_str("<tr><td colspan=\"6\" class=\"muted\">No sessions in this range.</td></tr>");
    }
    body.push_str("</tbody></table>");
    if days <= MAX_DAY_COLUMNS && !rooms.is_empty() {
        body.push_str(
            "<h2>Sessions per room per day</h2><table id=\"per-day\"><thead><tr><th>Room</th>",
        );
        for day in &day_list {
            let _ = write!(
                body,
                "<th class=\"num\">{}</th>",
                Esc(day.get(5..).unwrap_or(day))
            );
        }
        body.push_str("</tr></thead><tbody>");
        for r in &rooms {
            let _ = write!(body, "<tr><td>{} {}</td>", Esc(&r.site), Esc(&r.room));
            for day in &day_list {
                let n = r.per_day.get(day).copied().unwrap_or(0);
                let _ = write!(
                    body,
                    "<td class=\"num\">{}</td>",
                    if n == 0 {
                        String::from("·")
                    } else {
                        n.to_string()
                    }
                );
            }
            body.push_str("</tr>");
        }
        body.push_str("</tbody></table>");
    }
    frame(&viewer, Section::Utilisation, "Utilisation", &body)
}

/// `GET /reports/utilisation.csv`: one row per room and day.
pub(crate) async fn utilisation_csv(
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

// ------------------------------------------------------------------------------------------
// Courses and outcomes

/// One site's course completion and PHQ-9 outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteOutcome {
    /// Site.
    pub site: String,
    /// Patients with at least one session.
    pub patients: u64,
    /// Of them, patients who completed as many sessions as their induction plans.
    pub induction_completed: u64,
    /// Patients who count towards response and remission: a baseline PHQ-9 of at least 10
    /// and an end-of-induction score (`clinical::outcomes`).
    pub with_phq9: u64,
    /// Mean baseline PHQ-9 of those.
    pub mean_baseline: Option<f64>,
    /// Mean end-of-induction PHQ-9 of those.
    pub mean_latest: Option<f64>,
    /// End of induction at most half the baseline.
    pub responders: u64,
    /// End of induction below 5.
    pub remitters: u64,
}

/// The outcomes by site.
pub fn outcome_report(inputs: &[OutcomeSite]) -> Vec<SiteOutcome> {
    inputs
        .iter()
        .map(|site| {
            let mut o = SiteOutcome {
                site: site.site.clone(),
                patients: site.patients.len() as u64,
                induction_completed: 0,
                with_phq9: 0,
                mean_baseline: None,
                mean_latest: None,
                responders: 0,
                remitters: 0,
            };
            let (mut sum_first, mut sum_last) = (0_i64, 0_i64);
            for p in &site.patients {
                if p.planned > 0 && p.done_us.len() as u64 >= p.planned {
                    o.induction_completed += 1;
                }
                let outcome = phq9_outcome(&p.phq9, &p.done_us, p.planned);
                if let (true, Some(first), Some(last)) = (
                    outcome.evaluable,
                    outcome.baseline,
                    outcome.end_of_induction,
                ) {
                    o.with_phq9 += 1;
                    sum_first += first;
                    sum_last += last;
                    o.responders += u64::from(outcome.response);
                    o.remitters += u64::from(outcome.remission);
                }
            }
            if o.with_phq9 > 0 {
                o.mean_baseline = Some(sum_first as f64 / o.with_phq9 as f64);
                o.mean_latest = Some(sum_last as f64 / o.with_phq9 as f64);
            }
            o
        })
        .collect()
}

async fn outcome_data(s: &Arc<Shared>, viewer: &Viewer) -> Result<Vec<SiteOutcome>, Response> {
    let scope = viewer.who.scope().clone();
    let inputs = read(s, move |store| store.outcome_inputs(&scope))
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(outcome_report(&inputs))
}

fn mean(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.1}"))
}

/// `GET /reports/outcomes`.
pub(crate) async fn outcomes(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
) -> Response {
    let report = match outcome_data(&s, &viewer).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "view outcomes report", "all courses").await {
        return r;
    }
    let mut body = String::from(
        "<h1>Courses and outcomes</h1><p class=\"muted\">Every patient with a session at the site. Induction completed: as many completed sessions as the course plans (6 when the patient record has not arrived). PHQ-9 from the baseline (the first total before the first infusion) to the end of induction (the last total 12 hours to 3½ days after the induction's last infusion; not a maintenance score), from the course record (the outcome scores in the patient record, or else the totals recorded in sessions). Only patients whose baseline is 10 or more count: response is an end-of-induction score at most half the baseline, remission one below 5. <a href=\"/reports/outcomes.csv\" id=\"csv\">Download CSV</a></p><table id=\"outcomes\"><thead><tr><th>Site</th><th class=\"num\">Patients</th><th class=\"num\">Induction completed</th><th class=\"num\">Evaluable (baseline ≥ 10)</th><th class=\"num\">PHQ-9 baseline → end of induction</th><th class=\"num\">Response</th><th class=\"num\">Remission</th></tr></thead><tbody>",
    );
    for o in &report {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{} ({})</td><td class=\"num\">{}</td><td class=\"num\">{} → {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            Esc(&o.site),
            o.patients,
            o.induction_completed,
            pct(o.induction_completed, o.patients),
            o.with_phq9,
            mean(o.mean_baseline),
            mean(o.mean_latest),
            pct(o.responders, o.with_phq9),
            pct(o.remitters, o.with_phq9)
        );
    }
    if report.is_empty() {
        body.push_str("<tr><td colspan=\"7\" class=\"muted\">No courses yet.</td></tr>");
    }
    body.push_str("</tbody></table>");
    frame(&viewer, Section::Outcomes, "Outcomes", &body)
}

/// `GET /reports/outcomes.csv`.
pub(crate) async fn outcomes_csv(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
) -> Response {
    let report = match outcome_data(&s, &viewer).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "export outcomes csv", "all courses").await {
        return r;
    }
    let mut out = csv_row(&[
        "site",
        "patients",
        "induction_completed",
        "evaluable",
        "mean_phq9_baseline",
        "mean_phq9_end_of_induction",
        "responders",
        "remitters",
    ]);
    for o in &report {
        out.push_str(&csv_row(&[
            o.site.clone(),
            o.patients.to_string(),
            o.induction_completed.to_string(),
            o.with_phq9.to_string(),
            o.mean_baseline.map_or(String::new(), |v| format!("{v:.2}")),
            o.mean_latest.map_or(String::new(), |v| format!("{v:.2}")),
            o.responders.to_string(),
            o.remitters.to_string(),
        ]));
    }
    csv_response("outcomes.csv", out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn outcomes_response_and_remission() {
        use crate::store::PatientOutcomeInput;
        const D: i64 = 86_400_000_000;
        // Six infusions on days 1-6; the baseline the day before, the end of induction the
        // day after the last.
        let done: Vec<i64> = (1..=6).map(|d| d * D).collect();
        let patient = |id: &str, planned: u64, n_done: usize, baseline: i64, end: Option<i64>| {
            let mut phq9 = vec![(0, baseline)];
            phq9.extend(end.map(|e| (7 * D, e)));
            PatientOutcomeInput {
                patient: id.into(),
                planned,
                done_us: done[..n_done].to_vec(),
                phq9,
            }
        };
        let inputs = [OutcomeSite {
            site: "austin".into(),
            patients: vec![
                patient("p1", 6, 6, 20, Some(9)), // response (9 ≤ 10), no remission
                patient("p2", 6, 6, 14, Some(4)), // response and remission
                patient("p3", 6, 6, 18, None),    // no end-of-induction score
                patient("p4", 6, 6, 10, Some(8)), // neither
                patient("p5", 6, 6, 7, Some(2)),  // baseline under 10: not counted
                patient("p6", 6, 3, 20, Some(3)), // induction not complete
            ],
        }];
        let o = &outcome_report(&inputs)[0];
        assert_eq!((o.patients, o.induction_completed, o.with_phq9), (6, 5, 3));
        assert_eq!((o.responders, o.remitters), (2, 1));
        assert_eq!(o.mean_baseline, Some((20.0 + 14.0 + 10.0) / 3.0));
        assert_eq!(o.mean_latest, Some((9.0 + 4.0 + 8.0) / 3.0));
    }

    #[test]
    fn advisories_per_site() {
        let sessions = [
            SiteSessionCount {
                site: "austin".into(),
                sessions: 50,
            },
            SiteSessionCount {
                site: "florida".into(),
                sessions: 10,
            },
        ];
        let c = |site: &str, category: &str, kind: &str, level: &str, count| AdvisoryCount {
            site: site.into(),
            category: category.into(),
            kind: kind.into(),
            level: level.into(),
            count,
        };
        let counts = [
            c("austin", "advisory", "bp_high", "high", 5),
            c("austin", "advisory", "no_data", "low", 3),
            c("austin", "side_effect", "dissociation", "severe", 1), // severe: adverse
            c("austin", "side_effect", "nausea", "mild", 9),         // expected
            c("austin", "side_effect", "laryngospasm", "mild", 2),   // unexpected: adverse
        ];
        let r = advisory_report(&sessions, &counts);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (
                r[0].advisories,
                r[0].high,
                r[0].expected_effects,
                r[0].adverse_events
            ),
            (8, 5, 9, 3)
        );
        let categories: Vec<&str> = r[0].rows.iter().map(|c| c.category.as_str()).collect();
        assert_eq!(
            categories,
            [
                "advisory",
                "advisory",
                ADVERSE_EVENT,
                EXPECTED_EFFECT,
                ADVERSE_EVENT
            ]
        );
        assert_eq!(per100(r[0].advisories, r[0].sessions), "16.0");
        assert_eq!(r[1].rows.len(), 0);
        assert_eq!(per100(1, 0), "—");
    }

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
