//! `GET /fleet`, for admins and regional managers (their region's sites): every appliance with
//! its software and protocol, certificate, clock, disk, monitors and sync state, and why it
//! needs attention; `?attention=1` shows only those that do. The same rows as
//! `GET /api/v1/appliances` ([`crate::fleet`]).

use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_web::layout::badge;

use crate::clock::now_us;
use crate::fleet::{ApplianceView, views};
use crate::web::dashboard::{Section, audit_view, empty_row, frame, read};
use crate::web::extract::{ClientIp, RequireManager};
use crate::web::state::Shared;

/// Query of the fleet page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FleetQuery {
    attention: Option<String>,
}

/// `GET /fleet`.
pub(crate) async fn page(
    State(s): State<Arc<Shared>>,
    RequireManager(viewer): RequireManager,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<FleetQuery>, QueryRejection>,
) -> Response {
    let only_attention = q
        .ok()
        .and_then(|Query(q)| q.attention)
        .is_some_and(|v| v == "1" || v == "true");
    let rows = match read(&s, |store| store.appliances()).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let target = if only_attention { "attention" } else { "all" };
    if let Err(r) = audit_view(&s, &viewer, &ip, "view fleet", target).await {
        return r;
    }
    let now = now_us();
    let mut all = views(&rows, now);
    all.retain(|v| viewer.who.allows(&v.site));
    let flagged = all.iter().filter(|v| !v.attention.is_empty()).count();
    if only_attention {
        all.retain(|v| !v.attention.is_empty());
    }
    let body = html! {
        h1 { "Fleet" }
        p.muted {
            (all.len()) " appliances shown; " (flagged) " need attention. "
            @if only_attention {
                a href="/fleet" id="fleet-all" { "Show every appliance" }
            } @else {
                a href="/fleet?attention=1" id="fleet-attention" { "Show only those needing attention" }
            }
        }
        (table(&s, &all, now))
    };
    frame(&viewer, Section::Fleet, "Fleet", body)
}

fn table(s: &Shared, rows: &[ApplianceView], now: i64) -> Markup {
    html! {
        table id="fleet" {
            thead {
                tr {
                    th { "Site" } th { "Room" } th { "State" } th { "Software" } th { "Protocol" }
                    th { "Certificate until" } th { "Clock" } th { "Disk" } th { "Monitors" }
                    th { "Last sync (site time)" } th { "Backlog" } th { "Up" }
                    th { "Last restart" } th { "Needs attention" }
                }
            }
            tbody {
                @if rows.is_empty() { (empty_row(14, "No appliance has connected yet.")) }
                @for a in rows {
                    @let zone = s.zones.get(&a.site);
                    tr data-site=(a.site) data-room=(a.room) data-attention=(!a.attention.is_empty()) {
                        td { (a.site) }
                        td { (a.room) }
                        td {
                            @if a.online { (badge("ok", "online")) } @else {
                                (badge("bad", "offline")) " since " (zone.minute(a.last_seen_us))
                            }
                        }
                        td { (a.software) }
                        td { (a.protocol) }
                        td { (a.cert_not_after_us.map_or_else(|| "—".to_owned(), |us| zone.day(us))) }
                        td { (a.clock_skew_s.map_or_else(|| "—".to_owned(), |s| format!("{s:+.1} s"))) }
                        td {
                            (a.disk_used_percent.map_or_else(|| "—".to_owned(), |p| format!("{p:.0} %")))
                            @if let Some(r) = a.retention.as_ref().filter(|r| r.as_str() != "ok") {
                                br; span.muted { (r) }
                            }
                        }
                        td {
                            @if a.monitors.is_empty() { "—" }
                            @for m in &a.monitors { (m.name) ": " (m.state) br; }
                        }
                        td { (a.last_sync_us.map_or_else(|| "—".to_owned(), |us| zone.minute(us))) }
                        td { (a.backlog_docs) " docs" }
                        td { (a.uptime_s.map_or_else(|| "—".to_owned(), uptime)) }
                        td { (a.last_restart.as_deref().unwrap_or("—")) }
                        td.attention {
                            @if a.attention.is_empty() { (badge("ok", "fine")) }
                            @for why in &a.attention { (badge("bad", why)) " " }
                        }
                    }
                }
            }
        }
        @if rows.iter().any(|a| now - a.last_seen_us > vigil_shared::fleet::OFFLINE_AFTER_US) {
            p.muted { "An appliance offline keeps recording; it syncs when its network is back." }
        }
    }
}

/// Seconds as days, hours or minutes.
fn uptime(s: u64) -> String {
    match s {
        0..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}
