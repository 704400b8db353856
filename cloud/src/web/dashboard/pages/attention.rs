//! `GET /attention`: what a clinician or manager must follow up, newest first, for the sites
//! the viewer may see: suicide-risk answers (high risk whatever was decided, moderate until
//! assessed), serious adverse events awaiting review (overdue after 24 hours), EMS transfers
//! and patients who left against advice. Built from the sessions' care records
//! (`vigil_shared::care::SessionCare::attention`).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use vigil_shared::care::ATTENTION_KINDS;
use vigil_shared::clinical::adverse::SERIOUS_REVIEW_WITHIN_US;
use vigil_web::layout::badge;
use vigil_web::url_encode;

use crate::clock::now_us;
use crate::store::MAX_ATTENTION;
use crate::web::dashboard::{Section, Viewer, audit_view, empty_row, frame, read};
use crate::web::extract::ClientIp;
use crate::web::state::Shared;

fn kind_label(kind: &str) -> &str {
    ATTENTION_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(kind, |(_, label)| label)
}

/// `GET /attention`.
pub(crate) async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
) -> Response {
    let scope = viewer.who.scope().clone();
    let rows = match read(&s, move |store| store.attention(&scope)).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "view attention list", "").await {
        return r;
    }
    let now = now_us();
    let body = html! {
        h1 { "Attention" }
        p.muted {
            "Suicide-risk answers, serious adverse events awaiting a clinician's review (due within 24 hours), "
            "EMS transfers and patients who left against advice, newest first (at most " (MAX_ATTENTION) ")."
        }
        table id="attention" {
            thead { tr { th { "When (site time)" } th { "Site" } th { "Room" } th { "What" } th { "Detail" } th { "Session" } } }
            tbody {
                @if rows.is_empty() { (empty_row(6, "Nothing needs attention.")) }
                @for r in &rows {
                    tr data-kind=(r.kind) {
                        td { (s.zones.get(&r.site).minute(r.at_us)) }
                        td { (r.site) }
                        td { (r.room) }
                        td {
                            (kind_label(&r.kind))
                            @if r.kind == "serious_event" && now > r.at_us + SERIOUS_REVIEW_WITHIN_US {
                                " " (badge("bad", "review overdue"))
                            }
                        }
                        td { (r.detail) }
                        td { a href={ "/sessions/" (url_encode(&r.session_id)) } { "open" } }
                    }
                }
            }
        }
    };
    frame(&viewer, Section::Attention, "Attention", body)
}
