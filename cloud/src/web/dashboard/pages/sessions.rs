//! `GET /sessions` and `GET /sessions.csv`: the session list with its filters (site, room,
//! state, dates in the sites' own days, advisories, patient), paging, and the same list as a
//! CSV download. One session's page is [`super::session`].

use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::zone::{SiteZone, rfc3339_utc};
use vigil_web::layout::badge;
use vigil_web::text::duration;
use vigil_web::{csv_row, url_encode};

use super::{opt_minute, state_badge};
use crate::config::Zones;
use crate::store::{MAX_SESSION_PAGE, SessionFilter, SessionPage, SessionRow};
use crate::web::dashboard::read;
use crate::web::dashboard::{Section, Viewer, audit_view, csv_response, error_page, frame};
use crate::web::extract::ClientIp;
use crate::web::state::Shared;

/// Sessions per page of the list.
pub const LIST_PAGE: u32 = 25;

/// Most rows of a CSV export of the session list: a region's quarter. Past this, narrow the
/// filter.
pub const MAX_CSV_ROWS: u32 = 50_000;

/// The states a session can be in, as the document spells them.
const STATES: [&str; 4] = ["planned", "in_progress", "completed", "aborted"];

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
            && !STATES.contains(&st.as_str())
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

/// `GET /sessions`.
pub(crate) async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let zones = visible_zones(&s, &viewer);
    let filter = match q.filter(&q.date_zone(&zones)) {
        Ok(f) => f,
        Err(message) => return error_page(&viewer, StatusCode::BAD_REQUEST, &message),
    };
    let (f, scope) = (filter.clone(), viewer.who.scope().clone());
    let page = match read(&s, move |store| store.sessions(&scope, &f)).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "view sessions", &q.query_string()).await {
        return r;
    }
    let sites: Vec<(String, String)> = s
        .state
        .sites
        .iter()
        .filter(|site| viewer.who.allows(&site.id))
        .map(|site| (site.id.clone(), site.name.clone()))
        .collect();
    let current = u64::from(filter.offset / LIST_PAGE + 1);
    let body = html! {
        h1 { "Sessions" }
        (filter_form(&q, &sites))
        @if nonempty(&q.site).is_none() && zones.groups().len() > 1 {
            p.muted id="zone-note" {
                "These sites are in several time zones: From and To are UTC days. Choose a \
                 site to filter by its own days."
            }
        }
        (session_table(&page, current, &q.query_string(), &zones))
    };
    frame(&viewer, Section::Sessions, "Sessions", body)
}

/// The filters, filled in as they were sent, and the link to the CSV of the same filters.
fn filter_form(q: &ListQuery, sites: &[(String, String)]) -> Markup {
    let states: Vec<(String, String)> = STATES
        .iter()
        .map(|st| ((*st).to_owned(), st.replace('_', " ")))
        .collect();
    let yes_no = [
        ("yes".to_owned(), "with advisory".to_owned()),
        ("no".to_owned(), "without".to_owned()),
    ];
    let value = |v: &Option<String>| nonempty(v).unwrap_or_default();
    let qs = q.query_string();
    let csv_href = if qs.is_empty() {
        "/sessions.csv".to_owned()
    } else {
        format!("/sessions.csv?{qs}")
    };
    html! {
        form.filters method="get" action="/sessions" {
            label { "Site" (select("site", nonempty(&q.site).as_deref(), sites)) }
            label { "Room" input name="room" id="f-room" size="6" value=(value(&q.room)); }
            label { "From" input type="date" name="from" id="f-from" value=(value(&q.from)); }
            label { "To" input type="date" name="to" id="f-to" value=(value(&q.to)); }
            label { "State" (select("state", nonempty(&q.state).as_deref(), &states)) }
            label { "Advisory" (select("advisory", nonempty(&q.advisory).as_deref(), &yes_no)) }
            label {
                "Patient"
                input name="patient" id="f-patient" size="12" value=(value(&q.patient));
            }
            button.primary type="submit" id="apply" { "Apply" }
            " " a href="/sessions" { "Clear" }
            " " a href=(csv_href) id="csv" { "Download CSV" }
        }
    }
}

/// A drop-down of `options` (value, label) with "any" first and `current` chosen.
fn select(name: &str, current: Option<&str>, options: &[(String, String)]) -> Markup {
    html! {
        select name=(name) id={ "f-" (name) } {
            option value="" { "any" }
            @for (value, label) in options {
                option value=(value) selected[current == Some(value.as_str())] { (label) }
            }
        }
    }
}

/// One page of the list, `current` of however many, with links to the pages either side;
/// `qs` is the filters' query string.
fn session_table(page: &SessionPage, current: u64, qs: &str, zones: &Zones) -> Markup {
    let pages = page.total.div_ceil(u64::from(LIST_PAGE)).max(1);
    let link = |n: u64| {
        if qs.is_empty() {
            format!("/sessions?page={n}")
        } else {
            format!("/sessions?{qs}&page={n}")
        }
    };
    html! {
        p.muted id="total" { (page.total) " sessions · page " (current) " of " (pages) }
        table id="sessions" {
            thead {
                tr {
                    th { "Started (site time)" } th { "Site" } th { "Room" } th { "Patient" }
                    th { "State" } th { "Duration" } th { "Advisories" }
                    th.num { "Side effects" } th { "Discharged" }
                }
            }
            tbody {
                @for r in &page.sessions {
                    (session_row(r, &zones.get(&r.site)))
                }
            }
        }
        div.pager {
            @if current > 1 {
                a href=(link(current - 1)) id="prev" { "← Newer" }
            }
            span { "Page " (current) " of " (pages) }
            @if current < pages {
                a href=(link(current + 1)) id="next" { "Older →" }
            }
        }
    }
}

/// One session of the list, linking to its page.
fn session_row(r: &SessionRow, zone: &SiteZone) -> Markup {
    html! {
        tr.session-row {
            td {
                a href={ "/sessions/" (url_encode(&r.id)) } {
                    (opt_minute(zone, r.started_us.or(Some(r.created_us))))
                }
            }
            td { (r.site) }
            td { (r.room) }
            td { (r.patient_id) }
            td { (state_badge(&r.state)) }
            td {
                @match (r.started_us, r.ended_us) {
                    (Some(s), Some(e)) => (duration(e - s)),
                    _ => "—",
                }
            }
            td {
                @match &r.max_advisory_priority {
                    Some(p) => { (r.n_advisories) " " (badge(p, p)) }
                    None => "0",
                }
            }
            td.num { (r.n_observations) }
            td { (opt_minute(zone, r.discharge_us)) }
        }
    }
}

/// `GET /sessions.csv`: every session the filters match (up to [`MAX_CSV_ROWS`]).
pub(crate) async fn csv(
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
