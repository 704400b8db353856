//! The running session: the protocol and pump, the room monitors' live values, the
//! advisories by priority, and the buttons a nurse presses (dose start, rate change, pause,
//! resume, stop; a side effect and its severity; a note; acknowledging an advisory).
//!
//! The advisories and the timeline are rendered here for the page and again for the event
//! stream ([`changing`]), so another tablet's edit appears without a reload.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::advisory::Priority;
use vigil_shared::care::OrderEntry;
use vigil_shared::clinical::{self, Indication, Instrument, Severity};
use vigil_shared::doc::{DoseAction, SessionState};
use vigil_web::layout::badge;
use vigil_web::url_encode;

use super::checkin::optional_number;
use super::load::SessionParts;
use super::monitoring::{Back, checkpoint_card, room_now};
use super::view::{clock, date, state_badge, who};
use super::{
    CsrfForm, Section, Shared, Viewer, csrf_input, error_page, fail, frame, refusal,
    require_treating, session_or_404,
};
use crate::recorder::{SessionEvent, StopSession};

/// Side effects the screen offers (DESIGN.md's list).
pub const EFFECTS: [(&str, &str); 6] = [
    ("nausea", "Nausea"),
    ("dissociation", "Dissociation"),
    ("anxiety_panic", "Anxiety or panic"),
    ("hallucinations", "Hallucinations"),
    ("flashbacks", "Flashbacks"),
    ("vision_hearing", "Vision or hearing changes"),
];

/// The order advisories are shown in (IEC 60601-1-8: high, medium, low); a priority this
/// version doesn't know comes last.
fn priority_rank(p: &str) -> usize {
    Priority::from_name(p).map_or(usize::MAX, |p| p as usize)
}

/// An instrument's name as people read it (the code when it's one this version doesn't know).
pub(crate) fn instrument_label(code: &str) -> String {
    Instrument::parse(code).map_or_else(|_| code.to_owned(), |i| i.label().to_owned())
}

pub(crate) fn dose_label(a: DoseAction) -> &'static str {
    match a {
        DoseAction::Start => "start",
        DoseAction::RateChange => "rate change",
        DoseAction::Pause => "pause",
        DoseAction::Resume => "resume",
        DoseAction::Stop => "stop",
    }
}

/// The badge class for a side effect's severity.
fn severity_class(severity: &str) -> &'static str {
    match Severity::parse(severity) {
        Ok(Severity::Severe) => "high",
        Ok(Severity::Moderate) => "medium",
        _ => "low",
    }
}

fn advisories(parts: &SessionParts, v: &Viewer, names: &BTreeMap<String, String>) -> Markup {
    let m = &parts.meta;
    let mut advisories: Vec<_> = m.advisories.iter().collect();
    advisories.sort_by_key(|a| {
        (
            a.cleared_us.is_some(),
            priority_rank(&a.priority),
            -a.raised_us,
        )
    });
    html! {
        section.card {
            h2 { "Advisories" }
            ul.advisories id="advisories" {
                @for a in &advisories {
                    @let state = match (a.cleared_us, &a.acknowledged_by) {
                        (Some(_), Some(by)) => format!("cleared · acknowledged by {}", who(names, by)),
                        (Some(_), None) => "cleared".to_owned(),
                        (None, Some(by)) => format!("acknowledged by {}", who(names, by)),
                        (None, None) => String::new(),
                    };
                    li class={ "advisory " (a.priority) } data-priority=(a.priority) {
                        (badge(&a.priority, &a.priority)) " " (clock(v, a.raised_us)) " "
                        b { (a.kind.replace('_', " ")) } " " (a.detail) " "
                        span.muted { (state) } " "
                        // A cleared advisory can still be acknowledged: the record shows
                        // someone saw it.
                        @if a.acknowledged_us.is_none() {
                            form.inline method="post" action={ "/screen/sessions/" (m.id) "/ack" } {
                                (csrf_input(v))
                                input type="hidden" name="advisory_id" value=(a.id);
                                button.big type="submit" id={ "ack-" (a.id) } { "Acknowledge" }
                            }
                        }
                    }
                }
                @if advisories.is_empty() { li.muted { "None." } }
            }
        }
    }
}

fn timeline(parts: &SessionParts, v: &Viewer, names: &BTreeMap<String, String>) -> Markup {
    let m = &parts.meta;
    html! {
        section.card {
            h2 { "Dose" }
            table id="dose-events" { tbody {
                @for d in &m.dose_events {
                    tr.dose-event {
                        td { (clock(v, d.at_us)) }
                        td { (dose_label(d.action)) }
                        td { @if let Some(r) = d.rate_mg_per_h { (r) " mg/h" } }
                        td.muted { (who(names, &d.by)) }
                    }
                }
            } }
        }
        section.card {
            h2 { "Side effects" }
            table id="effects" { tbody {
                @for o in &m.observations {
                    @let label = EFFECTS.iter().find(|(k, _)| *k == o.effect).map_or(o.effect.as_str(), |(_, l)| l);
                    tr.effect {
                        td { (clock(v, o.at_us)) }
                        td { (label) }
                        td { (badge(severity_class(&o.severity), &o.severity)) }
                        td.muted { (who(names, &o.by)) }
                    }
                }
            } }
        }
        section.card {
            h2 { "Scores" }
            table id="scores" { tbody {
                @for sc in &m.scores {
                    tr.score {
                        td { (clock(v, sc.at_us)) }
                        td { (instrument_label(&sc.instrument)) " " (sc.phase) }
                        td { (sc.value) }
                        td.muted { (who(names, &sc.by)) }
                    }
                }
            } }
        }
        section.card {
            h2 { "Notes" }
            pre id="notes" { (parts.notes) }
        }
    }
}

/// The parts of the session page that change as people act, sent again over the event
/// stream whenever the document changes: the advisories (shown at the top, by priority) and
/// the timeline (dose events, side effects, scores, notes).
pub(crate) fn changing(
    parts: &SessionParts,
    v: &Viewer,
    names: &BTreeMap<String, String>,
) -> (Markup, Markup) {
    (advisories(parts, v, names), timeline(parts, v, names))
}

/// A severity as its button reads: `Mild`, `Moderate`, `Severe`.
fn severity_button(s: Severity) -> String {
    let label = s.label();
    let mut chars = label.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// How a session ends without a discharge home, as the screen offers them (the recorder checks
/// the code again).
pub const ENDINGS: [(&str, &str); 2] = [
    ("ems_transfer", "Transferred by EMS"),
    ("against_advice", "Left against medical advice"),
];

pub(crate) fn ending_label(code: &str) -> &str {
    ENDINGS
        .iter()
        .find(|(k, _)| *k == code)
        .map_or(code, |(_, l)| l)
}

/// Ending the session without a discharge home: what happened is required.
fn end_form(v: &Viewer, sid: &str) -> Markup {
    html! {
        section.card id="end" {
            h2 { "End without discharge" }
            p.muted {
                "When the patient is transferred by EMS or leaves against advice: the session ends \
                 now, without the discharge criteria, and is flagged for the clinicians."
            }
            form.stack method="post" action={ "/screen/sessions/" (sid) "/end" } {
                (csrf_input(v))
                label {
                    "How the patient left"
                    select name="disposition" id="disposition" {
                        @for (code, label) in ENDINGS { option value=(code) { (label) } }
                    }
                }
                label { "What happened" textarea name="note" id="end-note" rows="2" required {} }
                button.big.danger type="submit" id="end-session" { "End the session" }
            }
        }
    }
}

fn indication_label(code: &str) -> &str {
    Indication::parse(code).map_or(code, |i| i.label())
}

/// The buttons of a running infusion: the pump and side effects. A rate outside the order's
/// range needs a clinician's reason; the recorder refuses it otherwise.
fn controls(v: &Viewer, sid: &str, rate: String, order: Option<&OrderEntry>) -> Markup {
    html! {
        section.card {
            h2 { "Dose" }
            @if let Some(o) = order {
                p.muted id="order-range" { "Order: " (o.rate_min) "–" (o.rate_max) " mg/h" }
            }
            form.buttons method="post" action={ "/screen/sessions/" (sid) "/dose" } {
                (csrf_input(v))
                label { "Rate (mg/h)" input name="rate" id="rate" value=(rate) inputmode="decimal"; }
                @if v.is_clinician() {
                    label {
                        "Reason, for a rate outside the order"
                        input name="override_reason" id="rate-override" autocomplete="off";
                    }
                }
                button.primary.big name="action" value="start" id="dose-start" { "Start" }
                button.big name="action" value="rate_change" id="dose-rate" { "Change rate" }
                button.big name="action" value="pause" id="dose-pause" { "Pause" }
                button.big name="action" value="resume" id="dose-resume" { "Resume" }
                button.big.danger name="action" value="stop" id="dose-stop" { "Stop" }
            }
        }
        section.card {
            h2 { "Side effect" }
            form.buttons method="post" action={ "/screen/sessions/" (sid) "/effect" } {
                (csrf_input(v))
                label {
                    "Effect"
                    select name="effect" id="effect" {
                        @for (k, l) in EFFECTS { option value=(k) { (l) } }
                    }
                }
                @for &s in Severity::ALL {
                    button.big.danger[s == Severity::Severe] name="severity" value=(s.code()) id={ "sev-" (s.code()) } {
                        (severity_button(s))
                    }
                }
            }
        }
    }
}

const LIVE_TILES: [(&str, &str, &str); 5] = [
    ("HR", "v-hr", "/min"),
    ("SpO2", "v-spo2", "%"),
    ("BP", "v-nibp", "mmHg"),
    ("Pulse", "v-pulse", "/min"),
    ("Temp", "v-temp", "°C"),
];

/// `GET /screen/sessions/{id}`.
pub(crate) async fn session(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let page = match session_or_404(&s, &v, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (parts, names) = (&page.parts, &page.names);
    let m = &parts.meta;
    let name = page.patient_name();
    let started_by = m.dose_events.first().map_or_else(
        || {
            parts
                .checkin
                .as_ref()
                .map_or(String::new(), |c| who(names, &c.by))
        },
        |d| who(names, &d.by),
    );
    let (advisories, timeline) = changing(parts, &v, names);
    let (now_us, last) = room_now(&s);
    let delivered = clinical::delivered(&m.dose_events, m.ended_us.unwrap_or(now_us));
    let stopped = m.dose_events.iter().any(|d| d.action == DoseAction::Stop)
        || m.state != SessionState::InProgress;
    let ledger = super::ledger::session_card(&s, &v, &m.id, stopped).await;
    let body = html! {
        h1 { (name) " " (state_badge(m.state)) }
        dl.facts {
            dt { "Protocol" }
            dd {
                (m.protocol.drug) " " (m.protocol.route.to_uppercase()) " · " (m.protocol.dose_mg_per_kg)
                " mg/kg · " (m.protocol.weight_kg) " kg · " (m.protocol.planned_minutes) " min"
            }
            @if let Some(c) = &parts.checkin {
                dt { "Pump" }
                dd id="pump" {
                    (c.rate_mg_per_h) " mg/h = " (c.rate_ml_per_h) " mL/h at " (c.concentration_mg_per_ml)
                    " mg/mL · total " (c.total_mg) " mg"
                }
                dt { "Baseline" } dd { (c.baseline_systolic) "/" (c.baseline_diastolic) " mmHg" }
                @if let (Some(reason), Some(by)) = (&c.override_reason, &c.override_by) {
                    dt { "Override" }
                    dd id="override" { (c.flags.join(", ").replace('_', " ")) " — " (reason) " (" (who(names, by)) ")" }
                }
            }
            @if let Some(o) = &parts.care.order {
                dt { "Order" }
                dd id="order" {
                    (indication_label(&o.indication)) " · " (o.rate_min) "–" (o.rate_max) " mg/h · "
                    (o.concentration_min) "–" (o.concentration_max) " mg/mL · prescribed by " (who(names, &o.prescriber))
                }
            }
            @if !parts.care.overrides.is_empty() {
                dt { "Overrides" }
                dd id="overrides" {
                    @for o in &parts.care.overrides {
                        div { (o.subject) " — " (o.reason) " (" (who(names, &o.by)) ", " (clock(&v, o.at_us)) ")" }
                    }
                }
            }
            @if let Some(d) = &parts.care.disposition {
                dt { "Ended" }
                dd id="ending" {
                    (ending_label(&d.code)) " at " (clock(&v, d.at_us)) " by " (who(names, &d.by)) ": " (d.note)
                }
            }
            dt { "Delivered" }
            dd id="delivered" {
                (format!("{:.1}", delivered.mg)) " mg in " (delivered.infused_us / 60_000_000) " min of pump time"
            }
            dt { "Started" }
            dd {
                (m.started_us.map(|t| date(&v, t)).unwrap_or_default()) " "
                (m.started_us.map(|t| clock(&v, t)).unwrap_or_default()) " by " (started_by)
            }
        }
        section.live id="live" data-src={ "/screen/sessions/" (m.id) "/live" } {
            @for (label, id, unit) in LIVE_TILES {
                div.tile { span { (label) } b id=(id) { "–" } small { (unit) } }
            }
            p.muted { "Room monitors · " span id="v-age" { "connecting…" } }
        }
        div id="advisories-box" { (advisories) }
        (checkpoint_card(&v, parts, names, (now_us, &last), Back::Session))
        (ledger)
        (super::adverse::card(&v, &m.id, &parts.care.adverse_events, names))
        @if m.state == SessionState::InProgress {
            (controls(
                &v,
                &m.id,
                parts.checkin.as_ref().map_or(String::new(), |c| c.rate_mg_per_h.to_string()),
                parts.care.order.as_ref(),
            ))
        }
        @if m.state == SessionState::InProgress { (end_form(&v, &m.id)) }
        section.card {
            h2 { "Note" }
            form.buttons method="post" action={ "/screen/sessions/" (m.id) "/note" } {
                (csrf_input(&v))
                textarea name="text" id="note" rows="2" required {}
                button.big type="submit" id="save-note" { "Add note" }
            }
        }
        div id="timeline" { (timeline) }
        p {
            a.button.primary.big id="after-link" href={ "/screen/sessions/" (m.id) "/after" } { "After the infusion: scores, Aldrete, discharge" }
            " "
            a.button.big href={ "/screen/patients/" (m.patient_id) "/course" } { "Course" }
            " "
            a.button.big href={ "/screen/sessions/" (m.id) "/form" } id="form-link" { "Monitoring form" }
        }
    };
    frame(&v, Section::Room, &name, body)
}

/// Records an event and goes back to the page the form came from, or shows why not.
pub(crate) async fn record(
    s: &Shared,
    v: &Viewer,
    id: String,
    event: SessionEvent,
    back: &str,
) -> Response {
    match s.api.recorder.add_event(id, event).await {
        Ok(_) => Redirect::to(back).into_response(),
        Err(e) => fail(v, refusal(e)),
    }
}

fn session_path(id: &str) -> String {
    format!("/screen/sessions/{}", url_encode(id))
}

#[derive(Debug, Deserialize)]
pub(crate) struct DoseForm {
    action: Option<String>,
    rate: Option<String>,
    override_reason: Option<String>,
}

/// `POST /screen/sessions/{id}/dose`.
pub(crate) async fn dose(
    State(s): State<Shared>,
    Path(id): Path<String>,
    CsrfForm(v, f): CsrfForm<DoseForm>,
) -> Response {
    if let Err(r) = require_treating(&v) {
        return r;
    }
    let action = match f.action.as_deref() {
        Some("start") => DoseAction::Start,
        Some("rate_change") => DoseAction::RateChange,
        Some("pause") => DoseAction::Pause,
        Some("resume") => DoseAction::Resume,
        Some("stop") => DoseAction::Stop,
        _ => return error_page(&v, StatusCode::BAD_REQUEST, "unknown dose action"),
    };
    let rate = match action {
        DoseAction::Pause | DoseAction::Stop => Some(0.0),
        _ => match optional_number::<f64>(&f.rate, "rate (mg/h)") {
            Ok(r) => r,
            Err(e) => return error_page(&v, StatusCode::UNPROCESSABLE_ENTITY, &e),
        },
    };
    if action == DoseAction::RateChange && rate.is_none() {
        return error_page(
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            "a rate change needs the new rate",
        );
    }
    let back = session_path(&id);
    let event = SessionEvent::Dose {
        action,
        rate_mg_per_h: rate,
        override_reason: f.override_reason.filter(|r| !r.trim().is_empty()),
        by: v.id.clone(),
    };
    record(&s, &v, id, event, &back).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct EffectForm {
    effect: Option<String>,
    severity: Option<String>,
}

/// `POST /screen/sessions/{id}/effect`.
pub(crate) async fn effect(
    State(s): State<Shared>,
    Path(id): Path<String>,
    CsrfForm(v, f): CsrfForm<EffectForm>,
) -> Response {
    if let Err(r) = require_treating(&v) {
        return r;
    }
    let effect = f.effect.unwrap_or_default();
    if !EFFECTS.iter().any(|(k, _)| *k == effect) {
        return error_page(
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            "choose a side effect from the list",
        );
    }
    let back = session_path(&id);
    let event = SessionEvent::Observation {
        effect,
        severity: f.severity.unwrap_or_default(),
        by: v.id.clone(),
    };
    record(&s, &v, id, event, &back).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct NoteForm {
    text: Option<String>,
}

/// `POST /screen/sessions/{id}/note`.
pub(crate) async fn note(
    State(s): State<Shared>,
    Path(id): Path<String>,
    CsrfForm(v, f): CsrfForm<NoteForm>,
) -> Response {
    let back = session_path(&id);
    // One note per line in the shared Text, so a newline typed in the form does not forge a
    // `[someone]` prefix on the next line.
    let text = f.text.unwrap_or_default().replace(['\r', '\n'], " ");
    let event = SessionEvent::Note {
        text: text.trim().to_owned(),
        by: v.id.clone(),
    };
    record(&s, &v, id, event, &back).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct AckForm {
    advisory_id: Option<String>,
}

/// `POST /screen/sessions/{id}/ack`.
pub(crate) async fn acknowledge(
    State(s): State<Shared>,
    Path(id): Path<String>,
    CsrfForm(v, f): CsrfForm<AckForm>,
) -> Response {
    if let Err(r) = require_treating(&v) {
        return r;
    }
    let back = session_path(&id);
    let event = SessionEvent::Acknowledge {
        advisory_id: f.advisory_id.unwrap_or_default(),
        by: v.id.clone(),
    };
    record(&s, &v, id, event, &back).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct EndForm {
    disposition: Option<String>,
    note: Option<String>,
}

/// `POST /screen/sessions/{id}/end`: ends the session without a discharge home (an EMS
/// transfer, a patient leaving against advice), with what happened.
pub(crate) async fn end(
    State(s): State<Shared>,
    Path(id): Path<String>,
    CsrfForm(v, f): CsrfForm<EndForm>,
) -> Response {
    if let Err(r) = require_treating(&v) {
        return r;
    }
    let stop = StopSession {
        by: v.id.clone(),
        aborted: true,
        disposition: f.disposition,
        note: f
            .note
            .unwrap_or_default()
            .replace(['\r', '\n'], " ")
            .trim()
            .to_owned(),
    };
    match s.api.recorder.stop_session(id.clone(), stop).await {
        Ok(_) => {
            tracing::info!(session = %id, staff = %v.id, "session ended without discharge at the room screen");
            Redirect::to(&session_path(&id)).into_response()
        }
        Err(e) => fail(&v, refusal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_and_labels_read_as_people_say_them() {
        let buttons: Vec<String> = Severity::ALL.iter().map(|&s| severity_button(s)).collect();
        assert_eq!(buttons, ["Mild", "Moderate", "Severe"]);
        assert_eq!(instrument_label("cadss"), "CADSS");
        assert_eq!(
            instrument_label("madrs"),
            "madrs",
            "an unknown code shows as itself"
        );
        assert_eq!(ending_label("ems_transfer"), "Transferred by EMS");
        let mut ranks: Vec<usize> = ["low", "high", "odd", "medium"]
            .iter()
            .map(|p| priority_rank(p))
            .collect();
        ranks.sort();
        assert_eq!(
            ranks,
            [
                priority_rank("high"),
                priority_rank("medium"),
                priority_rank("low"),
                usize::MAX
            ]
        );
    }
}
