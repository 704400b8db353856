//! `GET /`: the overview. Every region the viewer may see, its sites and their rooms, each
//! room with its appliance's state, sync backlog and today's sessions (each site's own day).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use vigil_shared::zone::SiteZone;
use vigil_web::layout::badge;
use vigil_web::url_encode;

use super::opt_minute;
use crate::auth::Principal;
use crate::config::SiteInfo;
use crate::config::Zones;
use crate::sites::RoomView;
use crate::sites::SiteView;
use crate::sites::site_views;
use crate::store::{ApplianceRow, RoomActivity};
use crate::web::dashboard::read;
use crate::web::dashboard::{Section, Viewer, frame};
use crate::web::state::Shared;

/// `GET /`: every region the viewer may see, its sites, their rooms.
pub(crate) async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let now = crate::clock::now_us();
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
    let body = overview_body(&s.state.sites, &appliances, &activity, &viewer.who, now);
    frame(&viewer, Section::Overview, "Overview", body)
}

/// [`overview_body`] as HTML text, for the bench, which times it and counts its bytes.
pub fn overview_html(
    sites: &[SiteInfo],
    appliances: &[ApplianceRow],
    activity: &[RoomActivity],
    who: &Principal,
    now_us: i64,
) -> String {
    overview_body(sites, appliances, activity, who, now_us).into_string()
}

/// Sessions started today and sessions in progress, by (site, room).
type Counts<'a> = BTreeMap<(&'a str, &'a str), (u64, u64)>;

/// The overview's content for `who`: configured sites merged with the appliance registry and
/// today's activity, grouped by region.
fn overview_body(
    sites: &[SiteInfo],
    appliances: &[ApplianceRow],
    activity: &[RoomActivity],
    who: &Principal,
    now_us: i64,
) -> Markup {
    let zones = Zones::of(sites);
    let mut views = site_views(sites, appliances, now_us);
    views.retain(|v| who.allows(&v.id));
    let counts: Counts<'_> = activity
        .iter()
        .map(|a| {
            let key = (a.site.as_str(), a.room.as_str());
            (key, (a.sessions_today, a.in_progress))
        })
        .collect();
    let mut regions: BTreeMap<&str, Vec<&SiteView>> = BTreeMap::new();
    for v in &views {
        regions.entry(v.region.as_str()).or_default().push(v);
    }
    html! {
        h1 { "Overview" }
        (totals(&views, &counts, &zones, now_us))
        @for (region, sites) in &regions {
            section.region {
                h2 { "Region " (if region.is_empty() { "(no region)" } else { region }) }
                div.cards {
                    @for site in sites {
                        (site_card(site, &zones.get(&site.id), &counts))
                    }
                }
            }
        }
    }
}

/// Today's and the running sessions of one room.
fn room_counts(counts: &Counts<'_>, site: &SiteView, room: &RoomView) -> (u64, u64) {
    counts
        .get(&(site.id.as_str(), room.id.as_str()))
        .copied()
        .unwrap_or((0, 0))
}

/// The line under the title: sites, rooms, appliances online, sessions, and the time now in
/// each zone the viewer's sites are in ("today" is each site's own day).
fn totals(views: &[SiteView], counts: &Counts<'_>, zones: &Zones, now_us: i64) -> Markup {
    let rooms: Vec<(&SiteView, &RoomView)> = views
        .iter()
        .flat_map(|v| v.rooms.iter().map(move |r| (v, r)))
        .collect();
    let online = rooms.iter().filter(|(_, r)| r.online).count();
    let (today, running) = rooms
        .iter()
        .map(|(v, r)| room_counts(counts, v, r))
        .fold((0, 0), |(t, n), (today, running)| (t + today, n + running));
    let mut clocks: Vec<String> = Vec::new();
    for v in views {
        let clock = zones.get(&v.id).minute(now_us);
        if !clocks.contains(&clock) {
            clocks.push(clock);
        }
    }
    if clocks.is_empty() {
        clocks.push(SiteZone::utc().minute(now_us));
    }
    html! {
        p.muted {
            (views.len()) " sites · " (rooms.len()) " rooms · " (online) " appliances online · "
            (today) " sessions today (each site's day) · " (running) " in progress · as of "
            (clocks.join(" / "))
        }
    }
}

/// One site: a card with a row per room.
fn site_card(site: &SiteView, zone: &SiteZone, counts: &Counts<'_>) -> Markup {
    html! {
        div.card.site id={ "site-" (site.id) } {
            h3 { (site.name) " " span.muted { (site.id) } }
            table {
                thead {
                    tr {
                        th { "Room" } th { "Appliance" } th { "Last sync (site time)" }
                        th.num { "Backlog" } th.num { "Today" } th.num { "Now" }
                    }
                }
                tbody {
                    @for room in &site.rooms {
                        (room_row(site, room, zone, room_counts(counts, site, room)))
                    }
                }
            }
        }
    }
}

/// One room: its appliance's state, last sync, backlog, and today's sessions.
fn room_row(site: &SiteView, room: &RoomView, zone: &SiteZone, counts: (u64, u64)) -> Markup {
    let (today, running) = counts;
    let status = if room.online {
        badge("ok", "online")
    } else if room.last_seen_us.is_none() {
        badge("", "never seen")
    } else {
        badge("bad", "offline")
    };
    html! {
        tr.room {
            td {
                a href={
                    "/sessions?site=" (url_encode(&site.id)) "&room=" (url_encode(&room.id))
                } { (room.id) }
            }
            td { (status) }
            td { (opt_minute(zone, room.last_sync_us)) }
            td.num {
                @if room.backlog_docs == 0 {
                    "0"
                } @else {
                    (room.backlog_docs) " docs, " (room.backlog_bytes.div_ceil(1024)) " KB"
                }
            }
            td.num { (today) }
            td.num { (running) }
        }
    }
}
