//! `GET /audit` and `GET /audit.csv`, for admins: the audit log, newest first, a page at a
//! time, each entry's time in its site's zone (UTC for the cloud's own entries).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::zone::rfc3339_utc;
use vigil_web::csv_row;

use crate::config::Zones;
use crate::store::AuditRow;
use crate::web::dashboard::read;
use crate::web::dashboard::{Section, csv_response, frame};
use crate::web::extract::RequireAdmin;
use crate::web::state::Shared;

/// Query of the audit page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    page: Option<u32>,
}

/// Audit entries per page.
const AUDIT_PAGE: u32 = 100;

/// `GET /audit` (admins).
pub(crate) async fn page(
    State(s): State<Arc<Shared>>,
    RequireAdmin(viewer): RequireAdmin,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let page = q.ok().and_then(|Query(q)| q.page).unwrap_or(1).max(1);
    let offset = (page - 1).saturating_mul(AUDIT_PAGE);
    let (total, rows) = match read(&s, move |store| store.audit_log(AUDIT_PAGE, offset)).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let body = html! {
        h1 { "Audit log" }
        p.muted {
            (total) " entries, newest first. "
            a href="/audit.csv" id="audit-csv" { "Download CSV" }
        }
        (audit_table(&rows, &s.zones))
        div.pager {
            @if page > 1 {
                a href={ "/audit?page=" (page - 1) } { "← Newer" }
            }
            @if u64::from(offset + AUDIT_PAGE) < total {
                a href={ "/audit?page=" (page + 1) } { "Older →" }
            }
        }
    };
    frame(&viewer, Section::Audit, "Audit log", body)
}

/// One page of entries.
fn audit_table(rows: &[AuditRow], zones: &Zones) -> Markup {
    html! {
        table id="audit" {
            thead {
                tr {
                    th { "When (site time; UTC for the cloud's own)" } th { "Recorded by" }
                    th { "Site" } th { "Room" } th { "Who" } th { "What" } th { "Target" }
                    th { "From" }
                }
            }
            tbody {
                @for r in rows {
                    tr {
                        td { (zones.get(&r.site).second(r.at_us)) }
                        td { (r.source.as_str()) }
                        td { (r.site) } td { (r.room) } td { (r.username) } td { (r.action) }
                        td { (r.target) } td { (r.ip) }
                    }
                }
            }
        }
    }
}

/// `GET /audit.csv` (admins): the newest [`MAX_AUDIT_PAGE`](crate::store::MAX_AUDIT_PAGE)
/// entries per request, `?page=` for older ones.
pub(crate) async fn csv(
    State(s): State<Arc<Shared>>,
    RequireAdmin(_): RequireAdmin,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
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
