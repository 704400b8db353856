//! The room: which site and room this is, whether the cloud is reachable, the session in
//! progress, finding a patient to check in, and the room's recent sessions.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use maud::html;
use vigil_web::layout::badge;

use super::view::{clock, date, patient_name};
use super::{Section, Shared, Viewer, fail, frame, load, read, site_room};

/// Sessions listed on the room page.
pub const RECENT_SESSIONS: usize = 20;

/// Whether the cloud takes this appliance's data, in words for the room: connected, out of
/// reach (recording continues), or refusing it until IT acts (a revoked or expired
/// certificate, software too old), with the cloud's reason.
fn cloud_state(sync: Option<&crate::sync::SyncStatus>) -> maud::Markup {
    match sync {
        None => badge("", "no cloud configured"),
        Some(x) if x.connected => badge("ok", "cloud connected"),
        Some(x) => html! {
            (badge(
                if x.refused.is_some() { "bad" } else { "warn" },
                &format!(
                    "cloud unreachable · recording continues · {} documents waiting",
                    x.docs_waiting
                ),
            ))
            @if let Some(why) = &x.refused {
                br;
                span id="cloud-refused" {
                    "The cloud refuses this appliance; call IT: " (why)
                }
            }
        },
    }
}

/// `GET /screen`.
pub(crate) async fn home(State(s): State<Shared>, Extension(v): Extension<Viewer>) -> Response {
    let (site, room) = site_room(&s);
    let active = s
        .api
        .status
        .lock()
        .ok()
        .and_then(|st| st.recorder.session.clone());
    let sync = s
        .api
        .sync
        .as_ref()
        .and_then(|x| x.lock().ok().map(|x| x.clone()));
    let site2 = site.clone();
    let loaded = read(&s, move |conn| {
        let rows = crate::store::sessions(conn)?;
        let mut out = Vec::new();
        for r in rows.into_iter().take(RECENT_SESSIONS) {
            let name = load::patient(conn, &r.patient_id)?
                .map_or_else(|| r.patient_id.clone(), |p| patient_name(&p));
            out.push((r, name));
        }
        let site_name = super::site_config(conn, &site2)?.map(|c| c.name);
        let discrepancies = crate::reads::ledger(conn, &site2, 0)?
            .open_discrepancies
            .len();
        Ok((out, site_name, discrepancies))
    })
    .await;
    let (recent, site_name, discrepancies) = match loaded {
        Ok(v) => v,
        Err(e) => return fail(&v, e),
    };
    let cloud = cloud_state(sync.as_ref());
    let body = html! {
        h1 { "Room " (room) " · " (site_name.as_deref().unwrap_or(&site)) }
        p id="cloud" { (cloud) }
        @if discrepancies > 0 {
            p.error id="ledger-discrepancy" {
                (badge("high", "high")) " " (discrepancies)
                " count(s) of the safe disagree with the ledger: "
                a href="/screen/ledger" { "a clinician resolves them" }
            }
        }
        @match &active {
            Some(a) => p {
                a.button.primary.big id="current-session" href={ "/screen/sessions/" (a.id) } {
                    "Open the session in progress (since " (clock(&v, a.started_us)) ")"
                }
            },
            None => p.muted id="no-session" { "No session in progress." },
        }
        h2 { "Check in a patient" }
        form.filters method="get" action="/screen/patients" {
            label { "Name or date of birth" input name="q" id="q" autofocus; }
            button.primary.big id="find" type="submit" { "Find" }
            a.button.big href="/screen/patients#register" id="new-patient" { "Register a new patient" }
        }
        h2 { "Sessions in this room" }
        table id="sessions" {
            thead { tr { th { "Started" } th { "Patient" } th { "State" } th {} } }
            tbody {
                @for (r, name) in &recent {
                    tr {
                        td {
                            (r.started_us.map(|t| date(&v, t)).unwrap_or_default()) " "
                            (r.started_us.map(|t| clock(&v, t)).unwrap_or_default())
                        }
                        td { (name) }
                        td { (r.state.replace('_', " ")) }
                        td {
                            a href={ "/screen/sessions/" (r.id) } { "Open" } " · "
                            a href={ "/screen/patients/" (r.patient_id) "/course" } { "Course" }
                        }
                    }
                }
            }
        }
    };
    frame(&v, Section::Room, &format!("Room {room}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::SyncStatus;

    #[test]
    fn a_refusal_that_needs_it_is_shown_with_its_reason() {
        let offline = SyncStatus {
            docs_waiting: 3,
            ..SyncStatus::default()
        };
        let html = cloud_state(Some(&offline)).into_string();
        assert!(
            html.contains("recording continues · 3 documents waiting"),
            "{html}"
        );
        assert!(!html.contains("cloud-refused"), "{html}");
        let too_old = SyncStatus {
            refused: Some("this appliance is too old <b>; update vigil-edge".into()),
            ..offline
        };
        let html = cloud_state(Some(&too_old)).into_string();
        assert!(
            html.contains("call IT: this appliance is too old &lt;b&gt;; update vigil-edge"),
            "{html}"
        );
        let connected = SyncStatus {
            connected: true,
            ..SyncStatus::default()
        };
        assert!(
            cloud_state(Some(&connected))
                .into_string()
                .contains("cloud connected")
        );
        assert!(
            cloud_state(None)
                .into_string()
                .contains("no cloud configured")
        );
    }
}
