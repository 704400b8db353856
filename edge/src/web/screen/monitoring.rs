//! Timed monitoring, REMS-style: the three checkpoints (blood pressure and a sedation score
//! before the start, at 40 ± 5 minutes and before discharge) with a prompt when one is due,
//! and the printable monitoring form for the chart.
//!
//! The rules are `vigil_shared::clinical::checkpoints`'s; the recorder checks the values again.
//! The before-discharge blood pressure is the one the discharge gate reads, so the form is
//! filled from the room's cuff when it has a reading of the last ten minutes and the nurse
//! records what they confirm.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::clinical;
use vigil_shared::clinical::checkpoints::{
    Checkpoint, CheckpointRecord, CheckpointState, SedationScale, checkpoints,
};
use vigil_shared::clinical::discharge::dose_stopped_at;
use vigil_shared::doc::{DoseAction, DoseEvent, SessionMeta};
use vigil_shared::vitals::{Channel, Sample};
use vigil_web::layout::badge;
use vigil_web::url_encode;

use super::checkin::number;
use super::load::SessionParts;
use super::session::{dose_label, ending_label, instrument_label, record};
use super::view::{clock, date, state_badge, who};
use super::{
    CsrfForm, Section, Shared, Viewer, csrf_input, error_page, frame, require_treating,
    session_or_404,
};
use crate::recorder::SessionEvent;

/// The appliance's clock and the room's latest reading of each channel.
pub(crate) fn room_now(s: &Shared) -> (i64, BTreeMap<Channel, Sample>) {
    s.api
        .status
        .lock()
        .map(|st| (st.now_us, st.recorder.last.clone()))
        .unwrap_or_default()
}

/// The latest reading of `channel` if taken within [`clinical::ALDRETE_READING_MAX_AGE_US`]
/// (ten minutes) of `now_us`: an older reading says nothing about the patient now.
pub(crate) fn fresh(
    last: &BTreeMap<Channel, Sample>,
    channel: Channel,
    now_us: i64,
) -> Option<&Sample> {
    last.get(&channel)
        .filter(|x| now_us - x.t_us <= clinical::ALDRETE_READING_MAX_AGE_US)
}

/// When the pump first ran; `None` before the dose start.
fn infusion_started(events: &[DoseEvent]) -> Option<i64> {
    events
        .iter()
        .filter(|e| e.action == DoseAction::Start)
        .map(|e| e.at_us)
        .min()
}

/// Where each checkpoint of the session stands at `now_us`.
pub(crate) fn states(parts: &SessionParts, now_us: i64) -> [(Checkpoint, CheckpointState); 3] {
    let m = &parts.meta;
    let records: Vec<CheckpointRecord> = parts
        .care
        .checkpoints
        .iter()
        .filter_map(|c| {
            Some(CheckpointRecord {
                checkpoint: Checkpoint::parse(&c.checkpoint).ok()?,
                at_us: c.at_us,
            })
        })
        .collect();
    let started = infusion_started(&m.dose_events);
    let stopped = started.and_then(|_| dose_stopped_at(&m.dose_events, 0));
    checkpoints(&records, started, stopped, now_us)
}

fn state_text(v: &Viewer, state: CheckpointState) -> Markup {
    match state {
        CheckpointState::Done(at) => html! { (badge("ok", "done")) " " (clock(v, at)) },
        CheckpointState::Due => badge("warn", "due now"),
        CheckpointState::Overdue => badge("bad", "overdue"),
        CheckpointState::NotYet(i64::MAX) => html! { span.muted { "not yet" } },
        CheckpointState::NotYet(from) => html! { span.muted { "from " (clock(v, from)) } },
    }
}

/// Which page a checkpoint form goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Back {
    Session,
    After,
}

impl Back {
    fn code(self) -> &'static str {
        match self {
            Back::Session => "session",
            Back::After => "after",
        }
    }

    fn path(self, id: &str) -> String {
        let base = format!("/screen/sessions/{}", url_encode(id));
        match self {
            Back::Session => base,
            Back::After => format!("{base}/after"),
        }
    }
}

/// The checkpoints card: each checkpoint's state with its latest record, and the form to
/// record one, set to the one due (its blood pressure filled from a fresh cuff reading).
pub(crate) fn checkpoint_card(
    v: &Viewer,
    parts: &SessionParts,
    names: &BTreeMap<String, String>,
    (now_us, last): (i64, &BTreeMap<Channel, Sample>),
    back: Back,
) -> Markup {
    let states = states(parts, now_us);
    let pending =
        |s: &CheckpointState| matches!(s, CheckpointState::Due | CheckpointState::Overdue);
    // After the stop the one to take is before discharge (a missed 40-minute checkpoint stays
    // overdue on the record); before it, the first one due.
    let stopped = states[2].1 != CheckpointState::NotYet(i64::MAX);
    let selected = states
        .iter()
        .find(|(_, s)| pending(s))
        .filter(|_| !stopped)
        .map_or(Checkpoint::BeforeDischarge, |(c, _)| *c);
    let cuff = fresh(last, Channel::Nibp, now_us);
    let cuff_value = |i: usize| cuff.and_then(|x| x.v.get(i)).map(ToString::to_string);
    let latest = |c: Checkpoint| {
        parts
            .care
            .checkpoints
            .iter()
            .filter(|e| e.checkpoint == c.code())
            .max_by_key(|e| e.at_us)
    };
    html! {
        section.card id="checkpoints" {
            h2 { "Checkpoints" }
            table {
                tbody {
                    @for (c, state) in &states {
                        tr id={ "cp-" (c.code()) } data-state=[pending(state).then_some("pending")] {
                            th { (capitalised(c.label())) }
                            td { (state_text(v, *state)) }
                            td {
                                @if let Some(e) = latest(*c) {
                                    (e.systolic) "/" (e.diastolic) " mmHg · " (scale_label(&e.sedation_scale)) " "
                                    (e.sedation) " · " (who(names, &e.by))
                                }
                            }
                        }
                    }
                }
            }
            form.buttons method="post" action={ "/screen/sessions/" (parts.meta.id) "/checkpoint" } {
                (csrf_input(v))
                input type="hidden" name="back" value=(back.code());
                label {
                    "Checkpoint"
                    select name="checkpoint" id="checkpoint" {
                        @for &c in Checkpoint::ALL {
                            option value=(c.code()) selected[c == selected] { (capitalised(c.label())) }
                        }
                    }
                }
                label { "Systolic" input name="systolic" id="cp-sys" inputmode="numeric" value=[cuff_value(0)]; }
                label { "Diastolic" input name="diastolic" id="cp-dia" inputmode="numeric" value=[cuff_value(1)]; }
                label {
                    "Sedation scale"
                    select name="scale" id="cp-scale" {
                        @for &s in SedationScale::ALL { option value=(s.code()) { (s.label()) } }
                    }
                }
                label { "Score" input name="sedation" id="cp-sedation" inputmode="numeric"; }
                button.big type="submit" id="record-checkpoint" { "Record checkpoint" }
            }
            @if cuff.is_some() {
                p.muted { "Blood pressure filled from the room's cuff (last 10 minutes); confirm or correct it." }
            }
        }
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

fn scale_label(code: &str) -> &str {
    SedationScale::parse(code).map_or(code, |s| s.label())
}

#[derive(Debug, Deserialize)]
pub(crate) struct CheckpointForm {
    checkpoint: Option<String>,
    systolic: Option<String>,
    diastolic: Option<String>,
    scale: Option<String>,
    sedation: Option<String>,
    back: Option<String>,
}

/// `POST /screen/sessions/{id}/checkpoint`.
pub(crate) async fn checkpoint(
    State(s): State<Shared>,
    Path(id): Path<String>,
    CsrfForm(v, f): CsrfForm<CheckpointForm>,
) -> Response {
    if let Err(r) = require_treating(&v) {
        return r;
    }
    let numbers = (|| {
        Ok::<_, String>((
            number::<i64>(&f.systolic, "systolic (mmHg)")?,
            number::<i64>(&f.diastolic, "diastolic (mmHg)")?,
            number::<i64>(&f.sedation, "sedation score")?,
        ))
    })();
    let (systolic, diastolic, sedation) = match numbers {
        Ok(x) => x,
        Err(e) => return error_page(&v, StatusCode::UNPROCESSABLE_ENTITY, &e),
    };
    let back = match f.back.as_deref() {
        Some("after") => Back::After,
        _ => Back::Session,
    };
    let event = SessionEvent::Checkpoint {
        checkpoint: f.checkpoint.unwrap_or_default(),
        systolic,
        diastolic,
        sedation_scale: f.scale.unwrap_or_default(),
        sedation,
        by: v.id.clone(),
    };
    let path = back.path(&id);
    record(&s, &v, id, event, &path).await
}

/// The planned dose in mg, from the protocol.
fn planned_mg(m: &SessionMeta) -> f64 {
    m.protocol.dose_mg_per_kg * m.protocol.weight_kg
}

/// `GET /screen/sessions/{id}/form`: the session's monitoring form for the chart, one page to
/// print (the screen's frame is hidden in print): the order, the check-in, every checkpoint,
/// dose and effect, the delivered dose, advisories, overrides and how the session ended.
pub(crate) async fn form(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let page = match session_or_404(&s, &v, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (now_us, _) = room_now(&s);
    let (parts, names) = (&page.parts, &page.names);
    let m = &parts.meta;
    let care = &parts.care;
    let delivered = clinical::delivered(&m.dose_events, m.ended_us.unwrap_or(now_us));
    let body = html! {
        div.no-print {
            a.button.big href={ "/screen/sessions/" (m.id) } { "Back to the session" }
            " "
            button.big.primary type="button" data-print="" id="print" { "Print" }
        }
        article.form id="monitoring-form" {
            h1 { "Ketamine infusion monitoring form" }
            dl.facts {
                dt { "Patient" }
                dd id="form-patient" {
                    (page.patient_name())
                    @if let Some(p) = &page.patient { " · born " (p.birth_date) }
                }
                dt { "Session" }
                dd { (m.id) " · " (m.site) " room " (m.room) " · " (state_badge(m.state)) }
                dt { "Date" }
                dd { (m.started_us.map(|t| date(&v, t)).unwrap_or_default()) }
                @if let Some(o) = &care.order {
                    dt { "Order" }
                    dd id="form-order" {
                        (o.dose_mg_per_kg) " mg/kg × " (m.protocol.weight_kg) " kg over " (o.minutes) " min · rate "
                        (o.rate_min) "–" (o.rate_max) " mg/h · " (o.concentration_min) "–" (o.concentration_max)
                        " mg/mL · " (o.indication) " · prescribed by " (who(names, &o.prescriber))
                    }
                }
                @if let Some(c) = &parts.checkin {
                    dt { "Check-in" }
                    dd {
                        "baseline " (c.baseline_systolic) "/" (c.baseline_diastolic) " mmHg"
                        @if let Some(hr) = c.baseline_hr { ", HR " (hr) }
                        @if let Some(spo2) = c.baseline_spo2 { ", SpO2 " (spo2) " %" }
                        " · pump " (c.rate_mg_per_h) " mg/h = " (c.rate_ml_per_h) " mL/h at "
                        (c.concentration_mg_per_ml) " mg/mL · by " (who(names, &c.by)) " at " (clock(&v, c.at_us))
                    }
                    @if !c.flags.is_empty() {
                        dt { "Flags" }
                        dd {
                            (c.flags.join(", ").replace('_', " "))
                            @if let (Some(reason), Some(by)) = (&c.override_reason, &c.override_by) {
                                " — overridden by " (who(names, by)) ": " (reason)
                            }
                        }
                    }
                }
                @if let Some(r) = &care.risk {
                    dt { "Risk screen" }
                    dd id="form-risk" {
                        "PHQ-9 " (r.phq9_items.iter().sum::<i64>()) ", item 9: " (r.phq9_items.get(8).copied().unwrap_or_default())
                        " · C-SSRS: "
                        @let yes: Vec<String> = r.cssrs.iter().enumerate().filter(|(_, y)| **y).map(|(i, _)| format!("Q{}", i + 1)).collect();
                        @if yes.is_empty() { "no" } @else { "yes to " (yes.join(", ")) }
                        " (" (r.level().code()) ") · by " (who(names, &r.by)) " at " (clock(&v, r.at_us))
                        @if let Some(a) = &r.assessment {
                            " · assessed by " (who(names, &a.by)) ": " (a.decision) ", " (a.note)
                        }
                    }
                }
                dt { "Delivered" }
                dd id="form-delivered" {
                    (format!("{:.1}", delivered.mg)) " mg in " (delivered.infused_us / 60_000_000)
                    " min of pump time (planned " (format!("{:.1}", planned_mg(m))) " mg over "
                    (m.protocol.planned_minutes) " min)"
                }
            }
            h2 { "Checkpoints" }
            table id="form-checkpoints" {
                thead { tr { th { "Checkpoint" } th { "Time" } th { "BP (mmHg)" } th { "Sedation" } th { "By" } } }
                tbody {
                    @for c in &care.checkpoints {
                        tr {
                            td { (Checkpoint::parse(&c.checkpoint).map_or(c.checkpoint.clone(), |x| capitalised(x.label()))) }
                            td { (clock(&v, c.at_us)) }
                            td { (c.systolic) "/" (c.diastolic) }
                            td { (scale_label(&c.sedation_scale)) " " (c.sedation) }
                            td { (who(names, &c.by)) }
                        }
                    }
                }
            }
            h2 { "Dose" }
            table id="form-doses" {
                thead { tr { th { "Time" } th { "Event" } th { "Rate (mg/h)" } th { "By" } } }
                tbody {
                    @for d in &m.dose_events {
                        tr {
                            td { (clock(&v, d.at_us)) }
                            td { (dose_label(d.action)) }
                            td { @if let Some(r) = d.rate_mg_per_h { (r) } }
                            td { (who(names, &d.by)) }
                        }
                    }
                }
            }
            @if !care.adverse_events.is_empty() {
                h2 { "Adverse events" }
                table id="form-adverse" {
                    thead { tr { th { "Onset" } th { "Event" } th { "Severity" } th { "Serious" } th { "Given" } th { "Outcome" } th { "Reviewed" } } }
                    tbody {
                        @for e in &care.adverse_events {
                            tr {
                                td { (clock(&v, e.onset_us)) }
                                td { (e.event) }
                                td { (e.severity) }
                                td { (e.seriousness.as_deref().unwrap_or("no").replace('_', " ")) }
                                td {
                                    @for i in &e.interventions {
                                        (i.rescue) " " (i.dose) " " (i.route) " at " (clock(&v, i.at_us)) " "
                                    }
                                }
                                td { (e.outcome.replace('_', " ")) }
                                td {
                                    @if let (Some(by), Some(at)) = (&e.reviewed_by, e.reviewed_us) {
                                        (who(names, by)) " at " (clock(&v, at))
                                    } @else { "not yet" }
                                }
                            }
                        }
                    }
                }
            }
            @if !care.overrides.is_empty() {
                h2 { "Overrides" }
                ul {
                    @for o in &care.overrides {
                        li { (clock(&v, o.at_us)) " " (o.subject) " — " (o.reason) " (" (who(names, &o.by)) ")" }
                    }
                }
            }
            h2 { "Effects and scores" }
            table id="form-effects" {
                thead { tr { th { "Time" } th { "What" } th { "Value" } th { "By" } } }
                tbody {
                    @for o in &m.observations {
                        tr { td { (clock(&v, o.at_us)) } td { (o.effect.replace('_', " ")) } td { (o.severity) } td { (who(names, &o.by)) } }
                    }
                    @for sc in &m.scores {
                        tr { td { (clock(&v, sc.at_us)) } td { (instrument_label(&sc.instrument)) " (" (sc.phase) ")" } td { (sc.value) } td { (who(names, &sc.by)) } }
                    }
                }
            }
            @if !m.advisories.is_empty() {
                h2 { "Advisories" }
                table id="form-advisories" {
                    thead { tr { th { "Raised" } th { "What" } th { "Acknowledged" } } }
                    tbody {
                        @for a in &m.advisories {
                            tr {
                                td { (clock(&v, a.raised_us)) }
                                td { (a.priority) " · " (a.kind.replace('_', " ")) ": " (a.detail) }
                                td {
                                    @if let (Some(at), Some(by)) = (a.acknowledged_us, &a.acknowledged_by) {
                                        (clock(&v, at)) " by " (who(names, by))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "End" }
            div id="form-end" {
                @match (&m.discharge, &care.disposition) {
                    (_, Some(d)) if d.code == "home" => {
                        p {
                            "Discharged home at " (clock(&v, d.at_us)) " by " (who(names, &d.by))
                            " · modified Aldrete " (d.aldrete_items.iter().sum::<i64>()) " ("
                            (d.aldrete_items.iter().map(ToString::to_string).collect::<Vec<_>>().join("/"))
                            ") · escort " (d.escort_name) ", " (d.escort_relationship) ", " (d.escort_phone)
                        }
                    }
                    (_, Some(d)) => {
                        p { (ending_label(&d.code)) " at " (clock(&v, d.at_us)) " by " (who(names, &d.by)) ": " (d.note) }
                    }
                    (Some(d), None) => {
                        p { "Discharged at " (clock(&v, d.at_us)) " by " (who(names, &d.by)) " · modified Aldrete " (d.aldrete) " · escort " (d.escort) }
                    }
                    (None, None) => { p.muted { "Not ended yet." } }
                }
            }
            @if !parts.notes.is_empty() {
                h2 { "Notes" }
                pre { (parts.notes) }
            }
            p.muted { "Printed " (date(&v, now_us)) " " (clock(&v, now_us)) " by " (v.name) " (" (v.role.label()) ")" }
        }
    };
    frame(&v, Section::Room, "Monitoring form", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reading_of_the_last_ten_minutes_is_fresh() {
        let minute = 60_000_000;
        let now = 100 * minute;
        let mut last = BTreeMap::new();
        last.insert(Channel::Nibp, Sample::scalar(now - 11 * minute, 150));
        assert!(fresh(&last, Channel::Nibp, now).is_none(), "11 minutes old");
        last.insert(Channel::Nibp, Sample::scalar(now - 10 * minute, 128));
        assert_eq!(fresh(&last, Channel::Nibp, now).map(|s| s.v[0]), Some(128));
        assert!(fresh(&last, Channel::Spo2, now).is_none(), "never read");
    }

    #[test]
    fn labels_read_as_people_say_them() {
        assert_eq!(capitalised(Checkpoint::At40Min.label()), "At 40 min");
        assert_eq!(scale_label("moaas"), "MOAA/S");
        assert_eq!(scale_label("new-scale"), "new-scale");
    }
}
