//! The central station at `/station`: every room of the site on one screen at the nurses'
//! desk, from whichever appliance the desk's browser signs in to. One tile per room: its state
//! (free, checked in, infusing, recovering, or offline and since when), the patient's
//! initials, elapsed and planned time, the pump rate, HR, SpO2, BP with its time, temperature,
//! a moving ECG strip, and the advisories by IEC 60601-1-8 priority (high red and flashing,
//! medium yellow, low cyan; an optional tone for high ones). An advisory acknowledged here is
//! recorded in that room's session with the signed-in person's staff id: directly for this
//! room, through its appliance for another ([`crate::peer::Request::Acknowledge`]).
//!
//! The tiles come from [`crate::station::Station`], fed by this room's recorder and the site's
//! peers; nothing here needs the cloud, and a room whose appliance is down shows offline while
//! the others go on.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::stream::{self, Stream, StreamExt};
use maud::{Markup, html};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use vigil_web::layout::badge;

use super::view::{clock, who};
use super::{CsrfForm, Section, Shared, Viewer, csrf_input, error_page, frame, require_treating};
use crate::peer::Request;
use crate::recorder::SessionEvent;
use crate::station::{StationEvent, Tile};

/// Staff ids to names, from the site's configuration.
type Names = std::collections::BTreeMap<String, String>;

/// The site's staff names (empty when the appliance holds no site configuration yet).
async fn staff_names(s: &Shared) -> Names {
    let site = s.api.station.site.clone();
    super::read(s, move |conn| Ok(super::load::staff_names(conn, &site)))
        .await
        .unwrap_or_default()
}

/// Where the station lives.
pub const PATH: &str = "/station";

/// Longest a station stream lives before the browser reconnects (and the sign-in is checked
/// again on the way).
pub const MAX_STREAM: Duration = Duration::from_secs(600);

/// How often a quiet stream checks that its viewer is still signed in.
const WAKE: Duration = Duration::from_secs(1);

fn state_label(state: &str) -> &str {
    match state {
        "free" => "free",
        "checked_in" => "checked in",
        "infusing" => "infusing",
        "recovering" => "recovering",
        other => other,
    }
}

fn minutes(us: i64) -> i64 {
    us.max(0) / 60_000_000
}

/// One room's tile. Everything in it is escaped by maud.
pub(crate) fn tile(v: &Viewer, room: &str, t: &Tile, own: bool, names: &Names) -> Markup {
    let live = t.live.as_ref();
    let state = live.map_or("free", |l| l.state.as_str());
    let class = if t.online {
        format!("room-tile state-{state}")
    } else {
        "room-tile offline".to_owned()
    };
    let opt = |x: Option<i32>| x.map_or_else(|| "–".to_owned(), |x| x.to_string());
    html! {
        section class=(class) id={ "tile-" (room) } data-room=(room) data-online=(t.online) {
            header {
                h2 { "Room " (room) @if own { " (this room)" } }
                @if t.online {
                    (badge(state, state_label(state)))
                } @else {
                    span.badge.bad.offline-since { "offline since " (clock(v, t.since_us)) }
                }
            }
            @if let Some(l) = live {
                p.who {
                    @if let Some(i) = &l.initials { b { (i) } " · " }
                    @if let (Some(start), Some(planned)) = (l.started_us, l.planned_minutes) {
                        span.elapsed { (minutes(l.at_us - start)) " of " (planned) " min" }
                    } @else if let Some(planned) = l.planned_minutes {
                        span.elapsed { (planned) " min planned" }
                    }
                    @if let Some(rate) = l.rate_mg_per_h { " · " span.rate { (format!("{rate:.1}")) " mg/h" } }
                }
                div.numerics {
                    div { span { "HR" } b.hr { (opt(l.hr)) } }
                    div { span { "SpO₂" } b.spo2 { (opt(l.spo2)) } }
                    div {
                        span { "BP" }
                        @if let Some((sys, dia, at)) = l.bp {
                            b.bp { (sys) "/" (dia) } small { (clock(v, at)) }
                        } @else { b.bp { "–" } }
                    }
                    div {
                        span { "Temp" }
                        b.temp { (l.temp_centi_c.map_or_else(|| "–".to_owned(), |c| format!("{:.1}", f64::from(c) / 100.0))) }
                    }
                }
            }
            canvas.ecg id={ "ecg-" (room) } width="480" height="80" {}
            @if let Some(l) = live {
                ul.station-advisories {
                    @for a in &l.advisories {
                        li class={ "adv adv-" (a.priority) @if a.acknowledged_by.is_some() { " acked" } }
                            data-advisory=(a.id) {
                            b { (a.priority) } " " (a.detail) " · " (clock(v, a.raised_us))
                            @if let Some(by) = &a.acknowledged_by {
                                " · acknowledged by " (who(names, by))
                            } @else if v.may_treat() && t.online {
                                @if let Some(session) = &l.session_id {
                                    form.inline method="post" action={ (PATH) "/rooms/" (room) "/ack" } {
                                        (csrf_input(v))
                                        input type="hidden" name="session_id" value=(session);
                                        input type="hidden" name="advisory_id" value=(a.id);
                                        button type="submit" class="ack" { "Acknowledge" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /station`.
pub(crate) async fn page(State(s): State<Shared>, Extension(v): Extension<Viewer>) -> Response {
    let station = &s.api.station;
    let tiles = station.tiles();
    let names = staff_names(&s).await;
    let body = html! {
        h1 { "Central station · " (station.site) }
        p.muted {
            "Every room of the site, live from its appliance over the site's network; a room "
            "whose appliance cannot be reached shows offline. "
            button type="button" id="tone" data-on="false" { "Sound for high-priority advisories: off" }
        }
        div.station id="station" data-src={ (PATH) "/live" } {
            @for (room, t) in &tiles {
                (tile(&v, room, t, *room == station.room, &names))
            }
        }
    };
    frame(&v, Section::Station, "Central station", body)
}

/// A tile's new HTML, for the page's script: `{"room":…,"html":…}`.
fn tile_event(v: &Viewer, s: &Shared, room: &str, names: &Names) -> Option<Event> {
    let station = &s.api.station;
    let tiles = station.tiles();
    let t = tiles.get(room)?;
    let html = tile(v, room, t, room == station.room, names).into_string();
    let data = serde_json::json!({ "room": room, "html": html });
    Some(Event::default().event("tile").data(data.to_string()))
}

fn ecg_event(room: &str, samples: &[(i64, i32)]) -> Event {
    let data = serde_json::json!({ "room": room, "s": samples });
    Event::default().event("ecg").data(data.to_string())
}

struct Live {
    s: Shared,
    viewer: Viewer,
    events: tokio::sync::broadcast::Receiver<StationEvent>,
    names: Names,
    started: std::time::Instant,
    /// Send every tile (and its strip) before anything else: at the start, and after falling
    /// behind.
    resend: bool,
}

async fn step(mut l: Live) -> Option<(Vec<Event>, Live)> {
    if l.started.elapsed() > MAX_STREAM || !l.s.api.security.sessions.is_signed_in(&l.viewer.token)
    {
        return None;
    }
    if l.resend {
        l.resend = false;
        let tiles = l.s.api.station.tiles();
        let mut out: Vec<Event> = tiles
            .keys()
            .filter_map(|room| tile_event(&l.viewer, &l.s, room, &l.names))
            .collect();
        for (room, t) in &tiles {
            let samples: Vec<(i64, i32)> = t.ecg.iter().copied().collect();
            if !samples.is_empty() {
                out.push(ecg_event(room, &samples));
            }
        }
        return Some((out, l));
    }
    let event = match tokio::time::timeout(WAKE, l.events.recv()).await {
        Err(_) => return Some((Vec::new(), l)),
        Ok(Err(RecvError::Lagged(_))) => {
            l.resend = true;
            return Some((Vec::new(), l));
        }
        Ok(Err(RecvError::Closed)) => return None,
        Ok(Ok(e)) => e,
    };
    let out = match event {
        StationEvent::Room(room) => tile_event(&l.viewer, &l.s, &room, &l.names)
            .into_iter()
            .collect(),
        StationEvent::Ecg(room, samples) => vec![ecg_event(&room, &samples)],
    };
    Some((out, l))
}

/// `GET /station/live`: the station's event stream.
pub(crate) async fn stream(
    State(s): State<Shared>,
    Extension(viewer): Extension<Viewer>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = s.api.station.subscribe();
    let names = staff_names(&s).await;
    let start = Live {
        s,
        viewer,
        events,
        names,
        started: std::time::Instant::now(),
        resend: true,
    };
    let events = stream::unfold(start, step)
        .flat_map(stream::iter)
        .map(Ok::<_, Infallible>);
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize)]
pub(crate) struct AckForm {
    session_id: String,
    advisory_id: String,
}

/// `POST /station/rooms/{room}/ack`: acknowledges an advisory of a room's session, in that
/// room's session, as the signed-in person.
pub(crate) async fn acknowledge(
    State(s): State<Shared>,
    Path(room): Path<String>,
    CsrfForm(v, f): CsrfForm<AckForm>,
) -> Response {
    if let Err(r) = require_treating(&v) {
        return r;
    }
    let station = &s.api.station;
    if room == station.room {
        let event = SessionEvent::Acknowledge {
            advisory_id: f.advisory_id,
            by: v.id.clone(),
        };
        let ours = s
            .api
            .status
            .lock()
            .ok()
            .and_then(|st| st.recorder.session.as_ref().map(|a| a.id == f.session_id))
            .unwrap_or(false);
        if !ours {
            return error_page(
                &v,
                StatusCode::CONFLICT,
                "that session is no longer in progress in this room",
            );
        }
        if let Err(e) = s.api.recorder.add_event(f.session_id, event).await {
            return super::fail(&v, super::refusal(e));
        }
        return Redirect::to(PATH).into_response();
    }
    let Some(peers) = &s.api.peers else {
        return error_page(
            &v,
            StatusCode::SERVICE_UNAVAILABLE,
            "this appliance has no peers configured; acknowledge on that room's screen",
        );
    };
    let request = Request::Acknowledge {
        session_id: f.session_id,
        advisory_id: f.advisory_id,
        by: v.id.clone(),
    };
    match peers.request(&room, &request).await {
        Ok(()) => Redirect::to(PATH).into_response(),
        Err(e @ crate::peer::PeerError::Refused { .. }) => {
            error_page(&v, StatusCode::CONFLICT, &e.to_string())
        }
        Err(e) => error_page(
            &v,
            StatusCode::BAD_GATEWAY,
            &format!("{e}; acknowledge on that room's screen"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;
    use crate::station::{LiveAdvisory, LiveFrame, RoomLive, Station};

    fn viewer(role: Role) -> Viewer {
        Viewer {
            id: "n1".into(),
            name: "Nurse".into(),
            role,
            csrf: "tok".into(),
            token: "t".into(),
            zone: vigil_shared::zone::SiteZone::utc(),
        }
    }

    #[test]
    fn a_tile_shows_the_room_and_escapes_what_it_shows() {
        let station = Station::new("austin", "1", 0);
        let live = RoomLive {
            state: "infusing".into(),
            at_us: 20 * 60_000_000,
            initials: Some("<b>".into()),
            started_us: Some(0),
            planned_minutes: Some(40),
            rate_mg_per_h: Some(35.0),
            hr: Some(72),
            spo2: Some(91),
            bp: Some((128, 82, 60_000_000)),
            advisories: vec![LiveAdvisory {
                id: "a1".into(),
                priority: "high".into(),
                detail: "SpO2 <script> 88".into(),
                raised_us: 0,
                acknowledged_by: None,
            }],
            session_id: Some("s1".into()),
            ..RoomLive::default()
        };
        station.heard("2", LiveFrame::Room(live), 0);
        // Room 2's tile as a nurse sees it now.
        let nurse_sees = |station: &Station, names: &Names| {
            tile(
                &viewer(Role::Nurse),
                "2",
                &station.tiles()["2"],
                false,
                names,
            )
            .into_string()
        };
        let t = &station.tiles()["2"];
        let names = Names::new();
        let html = nurse_sees(&station, &names);
        assert!(html.contains("20 of 40 min"), "{html}");
        assert!(html.contains("35.0"), "{html}");
        assert!(
            html.contains("&lt;script&gt;") && !html.contains("<script>"),
            "{html}"
        );
        assert!(html.contains("adv adv-high"), "{html}");
        assert!(html.contains("/station/rooms/2/ack"), "{html}");
        // The front desk sees the advisory but has no button.
        let html = tile(&viewer(Role::FrontDesk), "2", t, false, &names).into_string();
        assert!(!html.contains("/ack"), "{html}");
        // Acknowledged: by name, and no button.
        let mut acked = t.live.clone().unwrap();
        acked.advisories[0].acknowledged_by = Some("n1".into());
        station.heard("2", LiveFrame::Room(acked), 0);
        let names = Names::from([("n1".to_owned(), "Ana <Ruiz>".to_owned())]);
        let html = nurse_sees(&station, &names);
        assert!(html.contains("acknowledged by Ana &lt;Ruiz&gt;"), "{html}");
        assert!(
            html.contains("adv adv-high acked") && !html.contains("/ack"),
            "{html}"
        );
        station.lost("2", 5 * 60_000_000);
        let html = nurse_sees(&station, &names);
        assert!(html.contains("offline since 00:05"), "{html}");
        assert!(!html.contains("/ack"), "{html}");
    }
}
