//! `GET /reports/advisories` and its CSV: advisories and side effects by site over a range of
//! days, per 100 sessions, with the side effects a ketamine infusion is expected to have kept
//! apart from adverse events.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use vigil_shared::clinical::Severity;
use vigil_shared::clinical::adverse::is_expected_effect;
use vigil_web::csv_row;

use super::{DayRange, RangeQuery, per_zone, per100, range_form};
use crate::clock::now_us;
use crate::store::{AdvisoryCount, SiteSessionCount};
use crate::web::dashboard::read;
use crate::web::dashboard::{
    Section, Viewer, audit_view, csv_response, empty_row, error_page, frame,
};
use crate::web::extract::ClientIp;
use crate::web::state::Shared;

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

/// The report over the range `q` names, in the viewer's scope; a bad range is an error page.
async fn advisory_data(
    s: &Arc<Shared>,
    viewer: &Viewer,
    q: &RangeQuery,
) -> Result<(Vec<SiteAdvisories>, DayRange), Response> {
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
    Ok((advisory_report(&data.0, &data.1), range))
}

/// `GET /reports/advisories`.
pub(crate) async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let (report, range) = match advisory_data(&s, &viewer, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "view advisory report", &range.text()).await {
        return r;
    }
    let body = html! {
        h1 { "Advisories and adverse events" }
        (range_form("/reports/advisories", &range, "/reports/advisories.csv"))
        (summary_table(&report))
        @for r in &report { (site_table(r)) }
    };
    frame(&viewer, Section::Advisories, "Advisories", body)
}

/// A row per site: its sessions, and its advisories and side effects per 100 sessions.
fn summary_table(report: &[SiteAdvisories]) -> Markup {
    html! {
        table id="advisory-summary" {
            thead {
                tr {
                    th { "Site" } th.num { "Sessions" } th.num { "Advisories / 100" }
                    th.num { "High / 100" } th.num { "Expected effects / 100" }
                    th.num { "Adverse events / 100" }
                }
            }
            tbody {
                @for r in report {
                    tr {
                        td { (r.site) }
                        td.num { (r.sessions) }
                        td.num { (per100(r.advisories, r.sessions)) }
                        td.num { (per100(r.high, r.sessions)) }
                        td.num { (per100(r.expected_effects, r.sessions)) }
                        td.num { (per100(r.adverse_events, r.sessions)) }
                    }
                }
            }
        }
    }
}

/// One site's counts by category, kind and level.
fn site_table(r: &SiteAdvisories) -> Markup {
    html! {
        h2 { (r.site) }
        table {
            thead {
                tr {
                    th { "Category" } th { "Kind" } th { "Priority or severity" }
                    th.num { "Count" } th.num { "Per 100 sessions" }
                }
            }
            tbody {
                @if r.rows.is_empty() { (empty_row(5, "None in this range.")) }
                @for c in &r.rows {
                    tr {
                        td { (c.category.replace('_', " ")) }
                        td { (c.kind) }
                        td { (c.level) }
                        td.num { (c.count) }
                        td.num { (per100(c.count, r.sessions)) }
                    }
                }
            }
        }
    }
}

/// `GET /reports/advisories.csv`.
pub(crate) async fn csv(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let (report, range) = match advisory_data(&s, &viewer, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let action = "export advisory report csv";
    if let Err(r) = audit_view(&s, &viewer, &ip, action, &range.text()).await {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
