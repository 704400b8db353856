//! The dashboard's pages about rooms and sessions: the overview (regions → sites → rooms),
//! the session list with filters, paging and CSV, one session with its charts, and the
//! admin's audit log and each user's account page.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::Form;
use axum::extract::rejection::PathRejection;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vigil_shared::clinical::ALDRETE_DISCHARGE_MIN;
use vigil_shared::doc::{DoseAction, SessionMeta};
use vigil_shared::vitals::Channel;
use vigil_shared::zone::{SiteZone, rfc3339_utc};
use vigil_web::chart::{Band, LineChart, Marker, Series, TimeAxis, line_chart};
use vigil_web::text::duration;
use vigil_web::{Esc, csv_row, url_encode};

use super::{
    Section, Viewer, audit_view, check_csrf, csv_response, error_page, frame, limited, wait_message,
};
use crate::api::{ClientIp, Shared, check_id, read, site_views};
use crate::auth::{
    AuthError, DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, MAX_TOKEN_LABEL, MIN_PASSWORD_LEN, Reauth, Role,
    ScopeSites,
};
use crate::config::Zones;
use crate::store::{ApiTokenRow, MAX_SESSION_PAGE, SessionChart, SessionFilter, SessionRow};

/// The badge as a string, while this module still builds pages with `format!`.
fn badge(class: &str, text: &str) -> String {
    vigil_web::layout::badge(class, text).into_string()
}

/// Sessions per page of the list.
pub const LIST_PAGE: u32 = 25;

/// Most rows of a CSV export of the session list: a region's quarter. Past this, narrow the
/// filter.
pub const MAX_CSV_ROWS: u32 = 50_000;

/// The ECG strip's default width, seconds.
pub const ECG_DEFAULT_SPAN_S: u32 = 10;

/// Widths the ECG strip zooms between, seconds; at most
/// [`MAX_ECG_WINDOW_SAMPLES`](crate::store::MAX_ECG_WINDOW_SAMPLES) samples.
pub const ECG_SPANS_S: [u32; 5] = [2, 5, 10, 30, 60];

/// Colours of the charts (Okabe–Ito, readable by colour-blind viewers).
const RED: &str = "#d55e00";
const BLUE: &str = "#0072b2";
const GREEN: &str = "#009e73";
const PURPLE: &str = "#cc79a7";
const INK: &str = "#1d2939";

fn priority_color(p: &str) -> &'static str {
    match p {
        "high" => "#b42318",
        "medium" => "#dc6803",
        _ => "#175cd3",
    }
}

fn opt_minute(zone: &SiteZone, us: Option<i64>) -> String {
    us.map_or_else(|| "—".to_owned(), |us| zone.minute(us))
}

// ------------------------------------------------------------------------------------------
// Overview

/// `GET /`: every region the viewer may see, its sites, their rooms.
pub(crate) async fn overview(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let now = crate::api::now_us();
    let scope = viewer.who.scope().clone();
    let zones = s.zones.clone();
    let data = read(&s, move |store| {
        // "Today" is each site's own day: one query per zone, from its local midnight.
        let mut activity = Vec::new();
        for (zone, sites) in zones.groups() {
            let rows = store.room_activity(&scope, zone.day_start(now))?;
            activity.extend(
                rows.into_iter()
                    .filter(|a| sites.contains(&a.site.as_str())),
            );
        }
        Ok((store.appliances()?, activity))
    })
    .await;
    let (appliances, activity) = match data {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let body = overview_html(&s.state.sites, &appliances, &activity, &viewer.who, now);
    frame(&viewer, Section::Overview, "Overview", &body)
}

/// The overview's content for `who`: configured sites merged with the appliance registry and
/// today's activity, grouped by region. Separate from the handler so the bench can time it.
pub fn overview_html(
    sites: &[crate::api::SiteInfo],
    appliances: &[crate::store::ApplianceRow],
    activity: &[crate::store::RoomActivity],
    who: &crate::auth::Principal,
    now_us: i64,
) -> String {
    let zones = Zones::of(sites);
    let mut views = site_views(sites, appliances, now_us);
    views.retain(|v| who.allows(&v.id));
    let counts: BTreeMap<(&str, &str), (u64, u64)> = activity
        .iter()
        .map(|a| {
            (
                (a.site.as_str(), a.room.as_str()),
                (a.sessions_today, a.in_progress),
            )
        })
        .collect();
    let mut regions: BTreeMap<&str, Vec<&crate::api::SiteView>> = BTreeMap::new();
    for v in &views {
        regions.entry(v.region.as_str()).or_default().push(v);
    }
    let (mut rooms_total, mut online_total, mut today_total, mut running_total) = (0, 0, 0, 0);
    let mut out = String::with_capacity(4096 + views.len() * 2048);
    for (region, sites) in &regions {
        let region_name = if region.is_empty() {
            "(no region)"
        } else {
            region
        };
        let _ = write!(
            out,
            r#"<section class="region"><h2>Region {}</h2><div class="cards">"#,
            Esc(region_name)
        );
        for site in sites {
            let _ = write!(
                out,
                r#"<div class="card site" id="site-{id}"><h3>{name} <span class="muted">{id}</span></h3><table><thead><tr><th>Room</th><th>Appliance</th><th>Last sync (UTC)</th><th class="num">Backlog</th><th class="num">Today</th><th class="num">Now</th></tr></thead><tbody>"#,
                id = Esc(&site.id),
                name = Esc(&site.name)
            );
            for room in &site.rooms {
                let (today, running) = counts
                    .get(&(site.id.as_str(), room.id.as_str()))
                    .copied()
                    .unwrap_or((0, 0));
                rooms_total += 1;
                online_total += u64::from(room.online);
                today_total += today;
                running_total += running;
                let status = if room.online {
                    badge("ok", "online")
                } else if room.last_seen_us.is_none() {
                    badge("", "never seen")
                } else {
                    badge("bad", "offline")
                };
                let backlog = if room.backlog_docs == 0 {
                    "0".to_owned()
                } else {
                    format!(
                        "{} docs, {} KB",
                        room.backlog_docs,
                        room.backlog_bytes.div_ceil(1024)
                    )
                };
                let _ = write!(
                    out,
                    r#"<tr class="room"><td><a href="/sessions?site={su}&amp;room={ru}">{room}</a></td><td>{status}</td><td>{sync}</td><td class="num">{backlog}</td><td class="num">{today}</td><td class="num">{running}</td></tr>"#,
                    su = url_encode(&site.id),
                    ru = url_encode(&room.id),
                    room = Esc(&room.id),
                    sync = opt_minute(&zones.get(&site.id), room.last_sync_us),
                );
            }
            out.push_str("</tbody></table></div>");
        }
        out.push_str("</div></section>");
    }
    // The time now in each zone the viewer's sites are in: "today" is each site's own day.
    let mut clocks: Vec<String> = Vec::new();
    for v in &views {
        let clock = zones.get(&v.id).minute(now_us);
        if !clocks.contains(&clock) {
            clocks.push(clock);
        }
    }
    if clocks.is_empty() {
        clocks.push(SiteZone::utc().minute(now_us));
    }
    let head = format!(
        r#"<h1>Overview</h1><p class="muted">{} sites · {rooms_total} rooms · {online_total} appliances online · {today_total} sessions today (each site's day) · {running_total} in progress · as of {}</p>"#,
        views.len(),
        Esc(&clocks.join(" / "))
    );
    head + &out
}

// ------------------------------------------------------------------------------------------
// Session list

/// The list's filters as the form sends them (every field optional, empty means unset).
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct ListQuery {
    site: Option<String>,
    room: Option<String>,
    state: Option<String>,
    from: Option<String>,
    to: Option<String>,
    advisory: Option<String>,
    patient: Option<String>,
    page: Option<u32>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl ListQuery {
    /// The zone the form's dates are days of: the chosen site's; with no site chosen, the
    /// zone every site of `zones` shares, or UTC when they span several (the page says so).
    fn date_zone(&self, zones: &Zones) -> SiteZone {
        if let Some(site) = nonempty(&self.site) {
            return zones.get(&site);
        }
        match zones.groups().as_slice() {
            [(zone, _)] => zone.clone(),
            _ => SiteZone::utc(),
        }
    }

    /// The store filter, or a message for the person who typed it; dates are days of `zone`.
    fn filter(&self, zone: &SiteZone) -> Result<SessionFilter, String> {
        let from_us = match nonempty(&self.from) {
            Some(d) => Some(
                zone.parse_day(&d)
                    .ok_or_else(|| format!("from: {d:?} is not a date (YYYY-MM-DD)"))?,
            ),
            None => None,
        };
        let to_us = match nonempty(&self.to) {
            // The end date is inclusive on the form: up to the midnight after it.
            Some(d) => Some(
                zone.parse_day(&d)
                    .map(|day| zone.next_day_start(day))
                    .ok_or_else(|| format!("to: {d:?} is not a date (YYYY-MM-DD)"))?,
            ),
            None => None,
        };
        let state = nonempty(&self.state);
        if let Some(st) = &state
            && !["planned", "in_progress", "completed", "aborted"].contains(&st.as_str())
        {
            return Err(format!("state: unknown state {st:?}"));
        }
        let has_advisory = match nonempty(&self.advisory).as_deref() {
            None => None,
            Some("yes") => Some(true),
            Some("no") => Some(false),
            Some(other) => return Err(format!("advisory: {other:?} is not yes or no")),
        };
        let page = self.page.unwrap_or(1).max(1);
        Ok(SessionFilter {
            site: nonempty(&self.site),
            room: nonempty(&self.room),
            state,
            from_us,
            to_us,
            has_advisory,
            patient_id: nonempty(&self.patient),
            limit: LIST_PAGE,
            offset: (page - 1).saturating_mul(LIST_PAGE),
        })
    }

    /// The query string of these filters, without the page.
    fn query_string(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("site", &self.site),
            ("room", &self.room),
            ("state", &self.state),
            ("from", &self.from),
            ("to", &self.to),
            ("advisory", &self.advisory),
            ("patient", &self.patient),
        ] {
            if let Some(v) = nonempty(v) {
                parts.push(format!("{k}={}", url_encode(&v)));
            }
        }
        parts.join("&")
    }
}

/// The zones of the sites `viewer` may see.
fn visible_zones(s: &Shared, viewer: &Viewer) -> Zones {
    s.zones.only(|site| viewer.who.allows(site))
}

/// A state's stable name, as the document and the API spell it.
fn state_name(state: vigil_shared::doc::SessionState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn state_badge(state: &str) -> String {
    let class = match state {
        "in_progress" => "low",
        "completed" => "ok",
        "aborted" => "bad",
        _ => "",
    };
    badge(class, &state.replace('_', " "))
}

fn session_rows_html(rows: &[SessionRow], zones: &Zones) -> String {
    let mut out = String::new();
    for r in rows {
        let zone = zones.get(&r.site);
        let duration = match (r.started_us, r.ended_us) {
            (Some(s), Some(e)) => duration(e - s),
            _ => "—".into(),
        };
        let advisories = match &r.max_advisory_priority {
            Some(p) => format!("{} {}", r.n_advisories, badge(p, p)),
            None => "0".into(),
        };
        let _ = write!(
            out,
            r#"<tr class="session-row"><td><a href="/sessions/{idu}">{started}</a></td><td>{site}</td><td>{room}</td><td>{patient}</td><td>{state}</td><td>{duration}</td><td>{advisories}</td><td class="num">{obs}</td><td>{discharge}</td></tr>"#,
            idu = url_encode(&r.id),
            started = opt_minute(&zone, r.started_us.or(Some(r.created_us))),
            site = Esc(&r.site),
            room = Esc(&r.room),
            patient = Esc(&r.patient_id),
            state = state_badge(&r.state),
            obs = r.n_observations,
            discharge = opt_minute(&zone, r.discharge_us),
        );
    }
    out
}

fn select(name: &str, current: Option<&str>, options: &[(String, String)]) -> String {
    let mut out = format!(
        r#"<select name="{0}" id="f-{0}"><option value="">any</option>"#,
        Esc(name)
    );
    for (value, label) in options {
        let sel = if current == Some(value.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<option value="{}"{sel}>{}</option>"#,
            Esc(value),
            Esc(label)
        );
    }
    out.push_str("</select>");
    out
}

/// `GET /sessions`.
pub(crate) async fn sessions(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let zones = visible_zones(&s, &viewer);
    let zone_note = nonempty(&q.site).is_none() && zones.groups().len() > 1;
    let filter = match q.filter(&q.date_zone(&zones)) {
        Ok(f) => f,
        Err(message) => return error_page(&viewer, StatusCode::BAD_REQUEST, &message),
    };
    let target = q.query_string();
    let (f, scope) = (filter.clone(), viewer.who.scope().clone());
    let page = match read(&s, move |store| store.sessions(&scope, &f)).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "view sessions", &target).await {
        return r;
    }
    let sites: Vec<(String, String)> = s
        .state
        .sites
        .iter()
        .filter(|site| viewer.who.allows(&site.id))
        .map(|site| (site.id.clone(), site.name.clone()))
        .collect();
    let states: Vec<(String, String)> = ["planned", "in_progress", "completed", "aborted"]
        .iter()
        .map(|st| ((*st).to_owned(), st.replace('_', " ")))
        .collect();
    let yes_no = vec![
        ("yes".to_owned(), "with advisory".to_owned()),
        ("no".to_owned(), "without".to_owned()),
    ];
    let pages = page.total.div_ceil(u64::from(LIST_PAGE)).max(1);
    let current = u64::from(filter.offset / LIST_PAGE + 1);
    let qs = q.query_string();
    let link = |n: u64| {
        if qs.is_empty() {
            format!("/sessions?page={n}")
        } else {
            format!("/sessions?{qs}&amp;page={n}", qs = qs.replace('&', "&amp;"))
        }
    };
    let prev = if current > 1 {
        format!(r#"<a href="{}" id="prev">← Newer</a>"#, link(current - 1))
    } else {
        String::new()
    };
    let next = if current < pages {
        format!(r#"<a href="{}" id="next">Older →</a>"#, link(current + 1))
    } else {
        String::new()
    };
    let csv_href = if qs.is_empty() {
        "/sessions.csv".to_owned()
    } else {
        format!("/sessions.csv?{}", qs.replace('&', "&amp;"))
    };
    let body = format!(
        r#"<h1>Sessions</h1>
<form class="filters" method="get" action="/sessions">
<label>Site{site}</label><label>Room<input name="room" id="f-room" size="6" value="{room}"></label>
<label>From<input type="date" name="from" id="f-from" value="{from}"></label><label>To<input type="date" name="to" id="f-to" value="{to}"></label>
<label>State{state}</label><label>Advisory{adv}</label><label>Patient<input name="patient" id="f-patient" size="12" value="{patient}"></label>
<button class="primary" type="submit" id="apply">Apply</button> <a href="/sessions">Clear</a> <a href="{csv_href}" id="csv">Download CSV</a></form>
{zone_note}<p class="muted" id="total">{total} sessions · page {current} of {pages}</p>
<table id="sessions"><thead><tr><th>Started (site time)</th><th>Site</th><th>Room</th><th>Patient</th><th>State</th><th>Duration</th><th>Advisories</th><th class="num">Side effects</th><th>Discharged</th></tr></thead><tbody>{rows}</tbody></table>
<div class="pager">{prev}<span>Page {current} of {pages}</span>{next}</div>"#,
        site = select("site", nonempty(&q.site).as_deref(), &sites),
        room = Esc(&nonempty(&q.room).unwrap_or_default()),
        from = Esc(&nonempty(&q.from).unwrap_or_default()),
        to = Esc(&nonempty(&q.to).unwrap_or_default()),
        state = select("state", nonempty(&q.state).as_deref(), &states),
        adv = select("advisory", nonempty(&q.advisory).as_deref(), &yes_no),
        patient = Esc(&nonempty(&q.patient).unwrap_or_default()),
        total = page.total,
        rows = session_rows_html(&page.sessions, &zones),
        zone_note = if zone_note {
            r#"<p class="muted" id="zone-note">These sites are in several time zones: From and To are UTC days. Choose a site to filter by its own days.</p>"#
        } else {
            ""
        },
    );
    frame(&viewer, Section::Sessions, "Sessions", &body)
}

/// `GET /sessions.csv`: every session the filters match (up to [`MAX_CSV_ROWS`]).
pub(crate) async fn sessions_csv(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let zones = visible_zones(&s, &viewer);
    let mut filter = match q.filter(&q.date_zone(&zones)) {
        Ok(f) => f,
        Err(message) => return error_page(&viewer, StatusCode::BAD_REQUEST, &message),
    };
    filter.offset = 0;
    filter.limit = MAX_SESSION_PAGE;
    let scope = viewer.who.scope().clone();
    let rows = read(&s, move |store| {
        let mut all = Vec::new();
        loop {
            let page = store.sessions(&scope, &filter)?;
            let n = page.sessions.len() as u32;
            all.extend(page.sessions);
            if n < filter.limit || all.len() as u32 >= MAX_CSV_ROWS {
                return Ok(all);
            }
            filter.offset += n;
        }
    })
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "export sessions csv", &q.query_string()).await {
        return r;
    }
    let mut out = csv_row(&[
        "id",
        "site",
        "room",
        "patient_id",
        "state",
        "drug",
        "route",
        "dose_mg_per_kg",
        "weight_kg",
        "planned_minutes",
        "started_utc",
        "ended_utc",
        "n_advisories",
        "max_advisory_priority",
        "n_side_effects",
        "discharged_utc",
        "discharge_aldrete",
        "time_zone",
        "started_local",
        "ended_local",
        "discharged_local",
    ]);
    let t = |us: Option<i64>| us.map(rfc3339_utc).unwrap_or_default();
    for r in rows.iter().take(MAX_CSV_ROWS as usize) {
        let zone = zones.get(&r.site);
        let local = |us: Option<i64>| us.map(|us| zone.iso_local(us)).unwrap_or_default();
        out.push_str(&csv_row(&[
            r.id.clone(),
            r.site.clone(),
            r.room.clone(),
            r.patient_id.clone(),
            r.state.clone(),
            r.drug.clone(),
            r.route.clone(),
            r.dose_mg_per_kg.to_string(),
            r.weight_kg.to_string(),
            r.planned_minutes.to_string(),
            t(r.started_us),
            t(r.ended_us),
            r.n_advisories.to_string(),
            r.max_advisory_priority.clone().unwrap_or_default(),
            r.n_observations.to_string(),
            t(r.discharge_us),
            r.discharge_aldrete
                .map(|a| a.to_string())
                .unwrap_or_default(),
            zone.name().to_owned(),
            local(r.started_us),
            local(r.ended_us),
            local(r.discharge_us),
        ]));
    }
    csv_response("sessions.csv", out)
}

// ------------------------------------------------------------------------------------------
// One session

/// Query of `GET /sessions/{id}`: the ECG window.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SessionQuery {
    /// Start of the ECG strip, seconds after the ECG's first sample.
    ecg_from: Option<u32>,
    /// Width of the strip, seconds (one of [`ECG_SPANS_S`]).
    ecg_span: Option<u32>,
}

/// The ECG window a query asks for: `(offset_s, span_s)`.
fn ecg_window(q: &SessionQuery) -> (u32, u32) {
    let span = q
        .ecg_span
        .filter(|s| ECG_SPANS_S.contains(s))
        .unwrap_or(ECG_DEFAULT_SPAN_S);
    (q.ecg_from.unwrap_or(0), span)
}

/// Periods the pump was running, from the dose timeline.
fn infusion_bands(m: &SessionMeta, end_us: i64) -> Vec<Band> {
    let mut events = m.dose_events.clone();
    events.sort_by_key(|e| e.at_us);
    let mut out = Vec::new();
    let mut running_since: Option<(i64, Option<f64>)> = None;
    for e in &events {
        match e.action {
            DoseAction::Start | DoseAction::Resume => {
                running_since.get_or_insert((e.at_us, e.rate_mg_per_h));
            }
            DoseAction::RateChange => {}
            DoseAction::Pause | DoseAction::Stop => {
                if let Some((from, rate)) = running_since.take() {
                    out.push(band(&m.protocol.drug, from, e.at_us, rate));
                }
            }
        }
    }
    if let Some((from, rate)) = running_since {
        out.push(band(&m.protocol.drug, from, end_us, rate));
    }
    out
}

fn band(drug: &str, from: i64, to: i64, rate: Option<f64>) -> Band {
    Band {
        from_us: from,
        to_us: to,
        label: match rate {
            Some(r) => format!("{drug} infusion, {r:.1} mg/h"),
            None => format!("{drug} infusion"),
        },
        color: GREEN,
    }
}

fn points(chart: &SessionChart, channel: Channel, dim: usize, divisor: f64) -> Vec<(i64, f64)> {
    chart
        .vitals
        .iter()
        .find(|p| p.channel == channel)
        .map(|p| {
            p.samples
                .iter()
                .filter_map(|s| Some((*s.first()?, *s.get(dim + 1)? as f64 / divisor)))
                .collect()
        })
        .unwrap_or_default()
}

/// The session page's content: facts, charts with the infusion shaded and advisories marked,
/// the ECG strip `ecg_span_s` wide from `ecg_from_s` after its first sample with zoom links,
/// and the tables. Separate from the handler so the bench can time it.
/// Times are the site's local times (`zone`), with the zone's abbreviation.
pub fn session_html(
    chart: &SessionChart,
    zone: &SiteZone,
    ecg_from_s: u32,
    ecg_span_s: u32,
) -> String {
    let m = &chart.meta;
    let id = m.id.as_str();
    let idu = url_encode(id);
    let start = m.started_us.unwrap_or(m.created_us);
    let last_sample = chart
        .vitals
        .iter()
        .filter(|p| p.channel != Channel::Ecg)
        .filter_map(|p| p.samples.last().and_then(|s| s.first().copied()))
        .max();
    let end = m
        .ended_us
        .or(last_sample)
        .unwrap_or(start + 60_000_000)
        .max(start + 60_000_000);
    let bands = infusion_bands(m, end);
    let markers: Vec<Marker> = m
        .advisories
        .iter()
        .map(|a| Marker {
            t_us: a.raised_us,
            label: format!(
                "{} ({}) at {}: {}",
                a.kind,
                a.priority,
                zone.clock(a.raised_us),
                a.detail
            ),
            color: priority_color(&a.priority),
        })
        .collect();
    let chart_of = |title: &'static str,
                    unit: &'static str,
                    series: Vec<Series<'static>>,
                    y: Option<(f64, f64)>| {
        line_chart(&LineChart {
            title,
            unit,
            width: 1200,
            height: 230,
            x_range: (start, end),
            origin_us: start,
            axis: TimeAxis::Minutes,
            y_range: y,
            series,
            markers: markers.clone(),
            bands: bands.clone(),
        })
    };
    let one_hz_gap = 5_000_000;
    let hr_chart = chart_of(
        "Heart rate and pulse",
        "/min",
        vec![
            Series {
                label: "HR",
                color: RED,
                points: points(chart, Channel::Hr, 0, 1.0),
                max_gap_us: one_hz_gap,
            },
            Series {
                label: "Pulse",
                color: PURPLE,
                points: points(chart, Channel::Pulse, 0, 1.0),
                max_gap_us: one_hz_gap,
            },
        ],
        None,
    );
    let spo2_chart = chart_of(
        "SpO2",
        "%",
        vec![Series {
            label: "SpO2",
            color: BLUE,
            points: points(chart, Channel::Spo2, 0, 1.0),
            max_gap_us: one_hz_gap,
        }],
        Some((80.0, 100.5)),
    );
    let bp_gap = 16 * 60_000_000;
    let bp_chart = chart_of(
        "Blood pressure",
        "mm[Hg]",
        vec![
            Series {
                label: "Systolic",
                color: RED,
                points: points(chart, Channel::Nibp, 0, 1.0),
                max_gap_us: bp_gap,
            },
            Series {
                label: "Diastolic",
                color: BLUE,
                points: points(chart, Channel::Nibp, 1, 1.0),
                max_gap_us: bp_gap,
            },
            Series {
                label: "Mean",
                color: INK,
                points: points(chart, Channel::Nibp, 2, 1.0),
                max_gap_us: bp_gap,
            },
        ],
        None,
    );

    // The ECG strip and its zoom links.
    let ecg = match chart.ecg_span {
        Some((first, last)) => {
            let from = first + i64::from(ecg_from_s) * 1_000_000;
            let to = from + i64::from(ecg_span_s) * 1_000_000;
            let strip = line_chart(&LineChart {
                title: "ECG",
                unit: "µV",
                width: 1200,
                height: 260,
                x_range: (from, to),
                origin_us: first,
                axis: TimeAxis::Seconds,
                y_range: None,
                series: vec![Series {
                    label: "ECG",
                    color: INK,
                    points: points(chart, Channel::Ecg, 0, 1.0),
                    max_gap_us: 100_000,
                }],
                markers: markers.clone(),
                bands: Vec::new(),
            });
            let total_s = u32::try_from((last - first) / 1_000_000).unwrap_or(u32::MAX);
            let link = |from_s: u32, span: u32, text: &str, html_id: &str| {
                format!(
                    r#"<a href="/sessions/{idu}?ecg_from={from_s}&amp;ecg_span={span}#ecg" id="{html_id}">{}</a>"#,
                    Esc(text)
                )
            };
            let mut nav = String::new();
            if ecg_from_s > 0 {
                nav.push_str(&link(
                    ecg_from_s.saturating_sub(ecg_span_s),
                    ecg_span_s,
                    "← earlier",
                    "ecg-prev",
                ));
            }
            for span in ECG_SPANS_S {
                if span == ecg_span_s {
                    let _ = write!(nav, " <strong>{span} s</strong>");
                } else {
                    nav.push(' ');
                    nav.push_str(&link(
                        ecg_from_s,
                        span,
                        &format!("{span} s"),
                        &format!("ecg-zoom-{span}"),
                    ));
                }
            }
            if ecg_from_s.saturating_add(ecg_span_s) < total_s {
                nav.push(' ');
                nav.push_str(&link(
                    ecg_from_s + ecg_span_s,
                    ecg_span_s,
                    "later →",
                    "ecg-next",
                ));
            }
            let jump: String = (0..=total_s / 600)
                .map(|k| {
                    link(
                        k * 600,
                        ecg_span_s,
                        &format!("{} min", k * 10),
                        &format!("ecg-at-{}", k * 10),
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            format!(
                r#"<h2 id="ecg">ECG strip</h2><p class="muted">{} s to {} s of {} s recorded · zoom: {nav}</p><p class="muted">jump to: {jump}</p>{strip}"#,
                ecg_from_s,
                ecg_from_s + ecg_span_s,
                total_s
            )
        }
        None => {
            r#"<h2 id="ecg">ECG strip</h2><p class="muted">No ECG was recorded.</p>"#.to_owned()
        }
    };

    let mut timeline = String::new();
    let mut doses = m.dose_events.clone();
    doses.sort_by_key(|d| d.at_us);
    for d in &doses {
        let _ = write!(
            timeline,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            zone.clock(d.at_us),
            duration(d.at_us - start),
            Esc(&format!("{:?}", d.action).to_lowercase()),
            d.rate_mg_per_h
                .map_or("—".into(), |r| format!("{r:.1} mg/h")),
            Esc(&d.by)
        );
    }
    let mut advisories = String::new();
    for a in &m.advisories {
        let ack = match (a.acknowledged_us, &a.acknowledged_by) {
            (Some(t), by) => format!(
                "{} by {} ({} after)",
                zone.clock(t),
                Esc(by.as_deref().unwrap_or("?")),
                duration(t - a.raised_us)
            ),
            (None, _) => badge("warn", "not acknowledged"),
        };
        let _ = write!(
            advisories,
            "<tr class=\"advisory\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{ack}</td><td>{}</td></tr>",
            zone.clock(a.raised_us),
            Esc(&a.kind),
            badge(&a.priority, &a.priority),
            Esc(&a.subject),
            Esc(&a.detail),
            a.cleared_us.map_or("—".into(), |t| zone.clock(t)),
        );
    }
    let mut effects = String::new();
    for o in &m.observations {
        let _ = write!(
            effects,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            zone.clock(o.at_us),
            Esc(&o.effect),
            Esc(&o.severity),
            Esc(&o.by)
        );
    }
    let mut scores = String::new();
    for sc in &m.scores {
        let _ = write!(
            scores,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            zone.clock(sc.at_us),
            Esc(&sc.instrument),
            Esc(&sc.phase),
            sc.value,
            Esc(&sc.by)
        );
    }
    let discharge = match &m.discharge {
        Some(d) => format!(
            "<dl class=\"facts\"><dt>Discharged</dt><dd>{}</dd><dt>Modified Aldrete</dt><dd>{}{}</dd><dt>Escort</dt><dd>{}</dd><dt>No driving 24 h</dt><dd>{}</dd><dt>By</dt><dd>{}</dd></dl>",
            zone.minute(d.at_us),
            d.aldrete,
            if d.aldrete >= i64::from(ALDRETE_DISCHARGE_MIN) {
                String::new()
            } else {
                format!(" (below {ALDRETE_DISCHARGE_MIN})")
            },
            Esc(&d.escort),
            if d.no_driving_ack {
                "acknowledged"
            } else {
                "not acknowledged"
            },
            Esc(&d.by)
        ),
        None => "<p class=\"muted\">Not discharged yet.</p>".into(),
    };
    let empty = |rows: &str, cols: usize, what: &str| {
        if rows.is_empty() {
            format!("<tr><td colspan=\"{cols}\" class=\"muted\">{what}</td></tr>")
        } else {
            rows.to_owned()
        }
    };
    let p = &m.protocol;
    format!(
        r#"<h1>Session {id_text}</h1>
<div class="card"><dl class="facts">
<dt>Site, room</dt><dd>{site} · room {room}</dd><dt>Patient</dt><dd>{patient}</dd><dt>State</dt><dd>{state}</dd>
<dt>Protocol</dt><dd>{drug} {route}, {dose} mg/kg × {weight} kg = {total:.1} mg over {planned} min</dd>
<dt>Started</dt><dd>{started}</dd><dt>Ended</dt><dd>{ended}</dd>
</dl><p><a href="/sessions/{idu}/fhir" id="fhir">Download FHIR bundle</a></p></div>
<h2>Vitals</h2><p class="muted">Shaded: infusion running. Dashed lines: advisories (hover for detail).</p>
<div id="charts">{hr_chart}{spo2_chart}{bp_chart}</div>
{ecg}
<h2>Dose timeline</h2><table><thead><tr><th>Time</th><th class="num">Since start</th><th>Action</th><th class="num">Rate</th><th>By</th></tr></thead><tbody>{timeline}</tbody></table>
<h2>Advisories</h2><table id="advisories"><thead><tr><th>Raised</th><th>Kind</th><th>Priority</th><th>Subject</th><th>Detail</th><th>Acknowledged</th><th>Cleared</th></tr></thead><tbody>{advisories}</tbody></table>
<h2>Side effects</h2><table><thead><tr><th>Time</th><th>Effect</th><th>Severity</th><th>By</th></tr></thead><tbody>{effects}</tbody></table>
<h2>Scores</h2><table><thead><tr><th>Time</th><th>Instrument</th><th>Phase</th><th class="num">Value</th><th>By</th></tr></thead><tbody>{scores}</tbody></table>
<h2>Discharge</h2>{discharge}
<h2>Notes</h2><pre>{notes}</pre>"#,
        id_text = Esc(id),
        site = Esc(&chart.site),
        room = Esc(&m.room),
        patient = Esc(&m.patient_id),
        state = state_badge(&state_name(m.state)),
        drug = Esc(&p.drug),
        route = Esc(&p.route),
        dose = p.dose_mg_per_kg,
        weight = p.weight_kg,
        total = p.dose_mg_per_kg * p.weight_kg,
        planned = p.planned_minutes,
        started = zone.minute(start),
        ended = m.ended_us.map_or("—".into(), |e| format!(
            "{} ({})",
            zone.minute(e),
            duration(e - start)
        )),
        timeline = empty(&timeline, 5, "No dose events."),
        advisories = empty(&advisories, 7, "No advisories."),
        effects = empty(&effects, 4, "No side effects recorded."),
        scores = empty(&scores, 5, "No scores recorded."),
        notes = Esc(&chart.notes),
    )
}

/// `GET /sessions/{id}`.
pub(crate) async fn session(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<SessionQuery>, QueryRejection>,
) -> Response {
    let Ok(Path(id)) = path else {
        return error_page(&viewer, StatusCode::BAD_REQUEST, "bad session id");
    };
    if check_id(&id).is_err() {
        return error_page(&viewer, StatusCode::NOT_FOUND, "no such session");
    }
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let (from_s, span_s) = ecg_window(&q);
    let (scope, key) = (viewer.who.scope().clone(), id.clone());
    let found = read(&s, move |store| {
        // The window is relative to the ECG's first sample, which the store knows.
        let Some(first) = store.ecg_first_us(&scope, &key)? else {
            return store.session_chart(&scope, &key, None, None);
        };
        let from = first + i64::from(from_s) * 1_000_000;
        let to = from + i64::from(span_s) * 1_000_000;
        store.session_chart(&scope, &key, Some(from), Some(to))
    })
    .await;
    let chart = match found {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error_page(
                &viewer,
                StatusCode::NOT_FOUND,
                &format!("session {id} not found"),
            );
        }
        Err(e) => return e.into_response(),
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "view session", &id).await {
        return r;
    }
    let zone = s.zones.get(&chart.site);
    let body = session_html(&chart, &zone, from_s, span_s);
    frame(&viewer, Section::Sessions, &format!("Session {id}"), &body)
}

/// `GET /sessions/{id}/fhir`.
pub(crate) async fn session_fhir(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = path else {
        return error_page(&viewer, StatusCode::BAD_REQUEST, "bad session id");
    };
    if check_id(&id).is_err() {
        return error_page(&viewer, StatusCode::NOT_FOUND, "no such session");
    }
    match crate::api::fhir_bundle(&s, &viewer.who, &ip, &id).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

// ------------------------------------------------------------------------------------------
// Audit log and account

/// Query of the audit page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    page: Option<u32>,
}

/// Audit entries per page.
const AUDIT_PAGE: u32 = 100;

/// `GET /audit` (admins).
pub(crate) async fn audit(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    if viewer.who.role != Role::Admin {
        return error_page(
            &viewer,
            StatusCode::FORBIDDEN,
            "the audit log is for admins",
        );
    }
    let page = q.ok().and_then(|Query(q)| q.page).unwrap_or(1).max(1);
    let offset = (page - 1).saturating_mul(AUDIT_PAGE);
    let (total, rows) = match read(&s, move |store| store.audit_log(AUDIT_PAGE, offset)).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let mut body = format!(
        r#"<h1>Audit log</h1><p class="muted">{total} entries, newest first. <a href="/audit.csv" id="audit-csv">Download CSV</a></p><table id="audit"><thead><tr><th>When (site time; UTC for the cloud's own)</th><th>Recorded by</th><th>Site</th><th>Room</th><th>Who</th><th>What</th><th>Target</th><th>From</th></tr></thead><tbody>"#
    );
    let zones = &s.zones;
    for r in &rows {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            zones.get(&r.site).second(r.at_us),
            r.source.as_str(),
            Esc(&r.site),
            Esc(&r.room),
            Esc(&r.username),
            Esc(&r.action),
            Esc(&r.target),
            Esc(&r.ip)
        );
    }
    body.push_str("</tbody></table><div class=\"pager\">");
    if page > 1 {
        let _ = write!(body, r#"<a href="/audit?page={}">← Newer</a>"#, page - 1);
    }
    if u64::from(offset + AUDIT_PAGE) < total {
        let _ = write!(body, r#"<a href="/audit?page={}">Older →</a>"#, page + 1);
    }
    body.push_str("</div>");
    frame(&viewer, Section::Audit, "Audit log", &body)
}

/// `GET /audit.csv` (admins): the newest [`MAX_AUDIT_PAGE`](crate::store::MAX_AUDIT_PAGE)
/// entries per request, `?page=` for older ones.
pub(crate) async fn audit_csv(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    if viewer.who.role != Role::Admin {
        return error_page(
            &viewer,
            StatusCode::FORBIDDEN,
            "the audit log is for admins",
        );
    }
    let page = q.ok().and_then(|Query(q)| q.page).unwrap_or(1).max(1);
    let size = crate::store::MAX_AUDIT_PAGE;
    let offset = (page - 1).saturating_mul(size);
    let rows = match read(&s, move |store| store.audit_log(size, offset)).await {
        Ok((_, r)) => r,
        Err(e) => return e.into_response(),
    };
    let mut out = csv_row(&[
        "at_utc", "at_local", "source", "site", "room", "user", "action", "target", "ip",
    ]);
    let zones = &s.zones;
    for r in rows {
        out.push_str(&csv_row(&[
            rfc3339_utc(r.at_us),
            zones.get(&r.site).iso_local(r.at_us),
            r.source.as_str().to_owned(),
            r.site,
            r.room,
            r.username,
            r.action,
            r.target,
            r.ip,
        ]));
    }
    csv_response("audit.csv", out)
}

/// What the account page says above its forms after an action.
enum Notice<'a> {
    /// A token was just made: shown once.
    NewToken(&'a str),
    /// An action was refused: why, and what to do.
    Error(&'a str),
}

fn account_html(
    viewer: &Viewer,
    tokens: &[ApiTokenRow],
    now_us: i64,
    notice: Option<Notice<'_>>,
) -> String {
    let scope = match viewer.who.scope().sites() {
        ScopeSites::All => "every site".to_owned(),
        ScopeSites::Only(s) if s.is_empty() => {
            "no site (the region has no configured site)".to_owned()
        }
        ScopeSites::Only(s) => s.iter().cloned().collect::<Vec<_>>().join(", "),
    };
    let notice = match notice {
        Some(Notice::NewToken(t)) => format!(
            r#"<p class="card">Your new API token (shown once; keep it secret): <code id="new-token">{}</code><br>Use it as <code>Authorization: Bearer TOKEN</code> on <code>/api/v1</code>; it sees what you see here.</p>"#,
            Esc(t)
        ),
        Some(Notice::Error(m)) => format!(r#"<p class="error" id="account-error">{}</p>"#, Esc(m)),
        None => String::new(),
    };
    let csrf = Esc(&viewer.csrf);
    let mut rows = String::new();
    for t in tokens {
        let expires = if now_us >= t.expires_us {
            format!("{} (expired)", SiteZone::utc().minute(t.expires_us))
        } else {
            SiteZone::utc().minute(t.expires_us)
        };
        let _ = write!(
            rows,
            r#"<tr class="token" id="token-{id}"><td>{label}</td><td>{created}</td><td>{expires}</td><td>{used}</td><td><form method="post" action="/account/tokens/revoke"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="id" value="{id}"><button type="submit" id="revoke-{id}">Revoke</button></form></td></tr>"#,
            id = t.id,
            label = Esc(&t.label),
            created = SiteZone::utc().minute(t.created_us),
            expires = Esc(&expires),
            used = t
                .last_used_us
                .map_or_else(|| "never".to_owned(), |t| SiteZone::utc().minute(t)),
        );
    }
    if rows.is_empty() {
        rows.push_str(r#"<tr><td colspan="5" class="muted">No API tokens.</td></tr>"#);
    }
    format!(
        r#"<h1>Account</h1><div class="card"><dl class="facts"><dt>User</dt><dd>{user}</dd><dt>Role</dt><dd>{role}</dd><dt>Sites</dt><dd>{scope}</dd></dl></div>{notice}
<h2>API tokens</h2><p class="muted">Times in UTC. A token stops working when it expires, when you revoke it and when your password changes.</p>
<table id="tokens"><thead><tr><th>Label</th><th>Made</th><th>Expires</th><th>Last used</th><th></th></tr></thead><tbody>{rows}</tbody></table>
<form method="post" action="/account/tokens" class="filters"><input type="hidden" name="csrf" value="{csrf}"><label>Token label<input name="label" id="token-label" value="dashboard" maxlength="{max_label}"></label><label>Valid for (days)<input name="days" id="token-days" type="number" min="1" max="{max_days}" value="{default_days}"></label><label>Your password<input name="password" id="token-password" type="password" autocomplete="current-password" required></label><button class="primary" type="submit" id="new-token-button">Create an API token</button></form>
<h2>Password</h2><p class="muted">A new password signs you out everywhere and revokes all your API tokens.</p>
<form method="post" action="/account/password" class="filters"><input type="hidden" name="csrf" value="{csrf}"><label>Current password<input name="current" id="current-password" type="password" autocomplete="current-password" required></label><label>New password<input name="new" id="new-password" type="password" autocomplete="new-password" minlength="{min_len}" required></label><label>New password again<input name="repeat" id="repeat-password" type="password" autocomplete="new-password" minlength="{min_len}" required></label><button type="submit" id="change-password">Change password</button></form>"#,
        user = Esc(&viewer.who.username),
        role = Esc(&viewer.who.describe()),
        scope = Esc(&scope),
        max_label = MAX_TOKEN_LABEL,
        max_days = MAX_TOKEN_DAYS,
        default_days = DEFAULT_TOKEN_DAYS,
        min_len = MIN_PASSWORD_LEN,
    )
}

/// The account page with `notice`, answered with `status`. The token list is read afresh.
async fn account_page(
    s: &Arc<Shared>,
    viewer: &Viewer,
    status: StatusCode,
    notice: Option<Notice<'_>>,
) -> Response {
    let (shared, who) = (s.clone(), viewer.who.clone());
    let tokens = match tokio::task::spawn_blocking(move || shared.auth.tokens(&who)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return crate::api::ApiError::from(e).into_response(),
        Err(_) => return crate::api::ApiError::internal().into_response(),
    };
    let body = account_html(viewer, &tokens, crate::api::now_us(), notice);
    (status, frame(viewer, Section::Account, "Account", &body)).into_response()
}

/// `GET /account`.
pub(crate) async fn account(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    account_page(&s, &viewer, StatusCode::OK, None).await
}

/// Runs an action of `auth` on a blocking thread; a failed task is a 500.
async fn blocking<T: Send + 'static>(
    s: &Arc<Shared>,
    f: impl FnOnce(&crate::auth::Auth) -> T + Send + 'static,
) -> Result<T, Response> {
    let shared = s.clone();
    tokio::task::spawn_blocking(move || f(&shared.auth))
        .await
        .map_err(|_| crate::api::ApiError::internal().into_response())
}

/// The answer to an action that needed the password again and was not done, or the error.
async fn not_done<T>(
    s: &Arc<Shared>,
    viewer: &Viewer,
    outcome: Result<Reauth<T>, AuthError>,
) -> Result<T, Response> {
    match outcome {
        Ok(Reauth::Done(v)) => Ok(v),
        Ok(Reauth::Refused) => Err(account_page(
            s,
            viewer,
            StatusCode::FORBIDDEN,
            Some(Notice::Error(
                "wrong password: nothing was changed; type your current password again",
            )),
        )
        .await),
        Ok(Reauth::Limited { retry_after_s }) => {
            let message = wait_message(retry_after_s);
            let page = account_page(
                s,
                viewer,
                StatusCode::TOO_MANY_REQUESTS,
                Some(Notice::Error(&message)),
            )
            .await;
            Err(limited(page, retry_after_s))
        }
        Err(AuthError::Invalid(message)) => Err(account_page(
            s,
            viewer,
            StatusCode::BAD_REQUEST,
            Some(Notice::Error(&message)),
        )
        .await),
        Err(AuthError::Store(e)) => Err(crate::api::ApiError::from(e).into_response()),
        Err(AuthError::Hash(e)) => {
            tracing::error!(error = %e, "cannot hash a password");
            Err(crate::api::ApiError::internal().into_response())
        }
    }
}

/// The token form.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    csrf: Option<String>,
    label: Option<String>,
    days: Option<String>,
    password: Option<String>,
}

/// `POST /account/tokens`: issues an API token for the signed-in user, who types their
/// password again (a session left open on a shared screen must not yield a lasting
/// credential).
pub(crate) async fn new_token(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(_) => TokenForm {
            csrf: None,
            label: None,
            days: None,
            password: None,
        },
    };
    if let Err(r) = check_csrf(&viewer, f.csrf.as_deref()) {
        return r;
    }
    let days = match f.days.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        None => DEFAULT_TOKEN_DAYS,
        Some(d) => match d.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let message =
                    format!("valid for: {d:?} is not a number of days (1 to {MAX_TOKEN_DAYS})");
                return account_page(
                    &s,
                    &viewer,
                    StatusCode::BAD_REQUEST,
                    Some(Notice::Error(&message)),
                )
                .await;
            }
        },
    };
    let label = f.label.unwrap_or_default();
    let password = f.password.unwrap_or_default();
    let (who, client) = (viewer.who.clone(), ip.0.clone());
    let minted = match blocking(&s, move |auth| {
        auth.mint_token(&who, &password, &label, days, &client, crate::api::now_us())
    })
    .await
    {
        Ok(m) => m,
        Err(r) => return r,
    };
    let token = match not_done(&s, &viewer, minted).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "make api token", &format!("{days} days")).await {
        return r;
    }
    account_page(&s, &viewer, StatusCode::OK, Some(Notice::NewToken(&token))).await
}

/// The revoke form.
#[derive(Debug, Deserialize)]
pub(crate) struct RevokeForm {
    csrf: Option<String>,
    id: Option<i64>,
}

/// `POST /account/tokens/revoke`: revokes one of the signed-in user's tokens, then shows the
/// account page again.
pub(crate) async fn revoke_token(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Response {
    let (csrf, id) = match form {
        Ok(Form(f)) => (f.csrf, f.id),
        Err(_) => (None, None),
    };
    if let Err(r) = check_csrf(&viewer, csrf.as_deref()) {
        return r;
    }
    let Some(id) = id else {
        return error_page(
            &viewer,
            StatusCode::BAD_REQUEST,
            "which token? the form named none",
        );
    };
    let who = viewer.who.clone();
    let revoked = match blocking(&s, move |auth| auth.revoke_token(&who, id)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return crate::api::ApiError::from(e).into_response(),
        Err(r) => return r,
    };
    if !revoked {
        return error_page(
            &viewer,
            StatusCode::NOT_FOUND,
            "you have no such token (already revoked?); reload the account page",
        );
    }
    if let Err(r) = audit_view(&s, &viewer, &ip, "revoke api token", &id.to_string()).await {
        return r;
    }
    super::see_other("/account")
}

/// The password form.
#[derive(Debug, Deserialize)]
pub(crate) struct PasswordForm {
    csrf: Option<String>,
    current: Option<String>,
    new: Option<String>,
    repeat: Option<String>,
}

/// `POST /account/password`: changes the signed-in user's password once they typed the
/// current one. Every session of theirs ends (this one too) and every API token is revoked;
/// the browser goes to the sign-in page.
pub(crate) async fn change_password(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    form: Result<Form<PasswordForm>, FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(_) => PasswordForm {
            csrf: None,
            current: None,
            new: None,
            repeat: None,
        },
    };
    if let Err(r) = check_csrf(&viewer, f.csrf.as_deref()) {
        return r;
    }
    let (current, new) = (f.current.unwrap_or_default(), f.new.unwrap_or_default());
    if f.repeat.as_deref() != Some(new.as_str()) {
        return account_page(
            &s,
            &viewer,
            StatusCode::BAD_REQUEST,
            Some(Notice::Error(
                "the new password and its repetition differ: nothing was changed",
            )),
        )
        .await;
    }
    let (who, client) = (viewer.who.clone(), ip.0.clone());
    let changed = match blocking(&s, move |auth| {
        auth.change_password(&who, &current, &new, &client, crate::api::now_us())
    })
    .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = not_done(&s, &viewer, changed).await {
        return r;
    }
    if let Err(r) = audit_view(&s, &viewer, &ip, "change password", "").await {
        return r;
    }
    let mut res = super::see_other("/login");
    res.headers_mut().append(
        axum::http::header::SET_COOKIE,
        super::set_cookie(super::SESSION_COOKIE, "", Some(0)),
    );
    res
}
