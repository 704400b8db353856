//! After the infusion: the CADSS after the session, the modified Aldrete (with suggestions
//! from the monitors for the two items they measure), the discharge checklist and the
//! discharge itself, which also ends a session still in progress.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::clinical::{self, Aldrete, Instrument, ScorePhase};
use vigil_shared::doc::SessionState;
use vigil_shared::vitals::{Channel, Sample};
use vigil_web::url_encode;

use super::checkin::{field, number};
use super::session::{instrument_label, record};
use super::view::{clock, state_badge, who};
use super::{
    CsrfForm, Section, SessionPage, Shared, Viewer, csrf_input, error_page, fail, frame, refusal,
    require_treating, session_or_404,
};
use crate::recorder::{SessionEvent, StopSession};

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct DischargeForm {
    action: Option<String>,
    a_activity: Option<String>,
    a_respiration: Option<String>,
    a_circulation: Option<String>,
    a_consciousness: Option<String>,
    a_oxygen: Option<String>,
    escort: Option<String>,
    no_driving: Option<String>,
}

impl DischargeForm {
    fn aldrete(&self) -> Result<Aldrete, Vec<&'static str>> {
        let item = |v: &Option<String>| {
            v.as_deref()
                .and_then(|x| x.parse::<u8>().ok())
                .filter(|x| *x <= 2)
        };
        let fields = [
            (item(&self.a_activity), "Aldrete: activity"),
            (item(&self.a_respiration), "Aldrete: respiration"),
            (item(&self.a_circulation), "Aldrete: circulation"),
            (item(&self.a_consciousness), "Aldrete: consciousness"),
            (item(&self.a_oxygen), "Aldrete: oxygen saturation"),
        ];
        let missing: Vec<&'static str> = fields
            .iter()
            .filter(|(v, _)| v.is_none())
            .map(|(_, l)| *l)
            .collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        let g = |i: usize| fields[i].0.unwrap_or(0);
        Ok(Aldrete {
            activity: g(0),
            respiration: g(1),
            circulation: g(2),
            consciousness: g(3),
            oxygen_saturation: g(4),
        })
    }
}

struct AfterState<'a> {
    form: &'a DischargeForm,
    total: Option<u8>,
    missing: Vec<String>,
}

/// One Aldrete item: its three levels, best first, and a hint.
fn aldrete_item(
    name: &str,
    val: &Option<String>,
    label: &str,
    levels: [&str; 3],
    hint: &str,
) -> Markup {
    html! {
        label {
            (label)
            select name=(name) id=(name) {
                option value="" { "–" }
                @for (i, text) in levels.iter().enumerate().rev() {
                    option value=(i) selected[field(val) == i.to_string()] { (i) ": " (text) }
                }
            }
            small.muted { (hint) }
        }
    }
}

fn is_post_cadss(instrument: &str, phase: &str) -> bool {
    instrument == Instrument::Cadss.code() && phase == ScorePhase::Post.code()
}

fn after_page(
    v: &Viewer,
    page: &SessionPage,
    live: (Option<i64>, Option<i64>),
    st: &AfterState<'_>,
) -> Markup {
    let (parts, names) = (&page.parts, &page.names);
    let m = &parts.meta;
    let cadss = m
        .scores
        .iter()
        .rev()
        .find(|x| is_post_cadss(&x.instrument, &x.phase));
    // Suggestions from the monitors for the two items they can measure.
    let baseline = parts.checkin.as_ref().map(|c| c.baseline_systolic);
    let suggest_circ = match (baseline, live.0) {
        (Some(b), Some(now)) => format!(
            "Suggested {} (baseline systolic {b}, now {now})",
            clinical::aldrete_circulation(b, now)
        ),
        _ => "No blood pressure reading in the last 10 minutes to compare; take one".into(),
    };
    let suggest_o2 = match live.1 {
        Some(spo2) => format!(
            "Suggested {} if on room air (SpO2 {spo2} %)",
            clinical::aldrete_oxygen(spo2, false)
        ),
        None => "No SpO2 reading in the last 10 minutes".into(),
    };
    let f = st.form;
    html! {
        h1 { "After the infusion · " (page.patient_name()) " " (state_badge(m.state)) }
        p { a href={ "/screen/sessions/" (m.id) } { "Back to the session" } }
        @if let Some(d) = &m.discharge {
            p.card.ok id="discharged" {
                "Discharged at " (clock(v, d.at_us)) " by " (who(names, &d.by)) ": modified Aldrete "
                (d.aldrete) ", escort " (d.escort) ", no driving for 24 hours acknowledged."
            }
            p {
                a.button.big href={ "/screen/patients/" (m.patient_id) "/course" } id="course-link" { "Course" }
                " "
                a.button.big href="/screen" { "Room" }
            }
        }
        section.card {
            h2 { "CADSS after the session" }
            p id="cadss-value" {
                @match cadss {
                    Some(c) => { "Recorded: " (c.value) " (" (who(names, &c.by)) ")" },
                    None => "Not recorded yet.",
                }
            }
            form.buttons method="post" action={ "/screen/sessions/" (m.id) "/score" } {
                (csrf_input(v))
                input type="hidden" name="instrument" value=(Instrument::Cadss.code());
                label { (Instrument::Cadss.label_with_range()) input name="value" id="cadss" inputmode="numeric"; }
                button.big type="submit" id="save-cadss" { "Save CADSS" }
            }
        }
        form.discharge method="post" action={ "/screen/sessions/" (m.id) "/discharge" } {
            (csrf_input(v))
            @if !st.missing.is_empty() {
                div.error {
                    p { "Discharge cannot complete; missing:" }
                    ul id="missing" { @for x in &st.missing { li { (x) } } }
                }
            }
            section.card {
                h2 { "Modified Aldrete" }
                div.row {
                    (aldrete_item("a_activity", &f.a_activity, "Activity", ["none", "two limbs", "four limbs"], ""))
                    (aldrete_item("a_respiration", &f.a_respiration, "Respiration", ["apnoeic", "dyspnoea or shallow", "breathes deeply, coughs"], ""))
                    (aldrete_item("a_circulation", &f.a_circulation, "Circulation (BP vs baseline)", ["≥ 50 % off", "20-49 % off", "within 20 %"], &suggest_circ))
                    (aldrete_item("a_consciousness", &f.a_consciousness, "Consciousness", ["not responding", "rousable on calling", "fully awake"], ""))
                    (aldrete_item("a_oxygen", &f.a_oxygen, "Oxygen saturation", ["< 90 % with O2", "needs O2 for > 90 %", "> 92 % on room air"], &suggest_o2))
                }
                p {
                    "Total: " b id="aldrete-total" { (st.total.map_or("–".to_owned(), |t| t.to_string())) }
                    " / 10 · discharge needs " (clinical::ALDRETE_DISCHARGE_MIN) " or more "
                    button.big name="action" value="calc" id="calc" { "Calculate" }
                }
            }
            section.card {
                h2 { "Discharge checklist" }
                label { "Escort's name" input name="escort" id="escort" value=(field(&f.escort)); }
                label.check {
                    input type="checkbox" name="no_driving" id="no-driving" checked[f.no_driving.is_some()];
                    " No driving for 24 hours, acknowledged by the patient"
                }
            }
            p.actions { button.primary.big name="action" value="discharge" id="discharge" { "Discharge" } }
        }
    }
}

/// The latest systolic pressure and SpO2, each only if measured within
/// [`clinical::ALDRETE_READING_MAX_AGE_US`] of the appliance's clock.
fn live_bp_spo2(s: &Shared) -> (Option<i64>, Option<i64>) {
    s.api
        .status
        .lock()
        .map(|st| fresh_bp_spo2(&st.recorder.last, st.now_us))
        .unwrap_or_default()
}

fn fresh_bp_spo2(last: &BTreeMap<Channel, Sample>, now_us: i64) -> (Option<i64>, Option<i64>) {
    let fresh = |channel| {
        last.get(&channel)
            .filter(|x| now_us - x.t_us <= clinical::ALDRETE_READING_MAX_AGE_US)
            .map(|x| i64::from(x.v[0]))
    };
    (fresh(Channel::Nibp), fresh(Channel::Spo2))
}

/// `GET /screen/sessions/{id}/after`.
pub(crate) async fn after(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let page = match session_or_404(&s, &v, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let form = DischargeForm::default();
    let st = AfterState {
        form: &form,
        total: None,
        missing: Vec::new(),
    };
    let body = after_page(&v, &page, live_bp_spo2(&s), &st);
    frame(&v, Section::Room, "After the infusion", body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ScoreForm {
    instrument: Option<String>,
    value: Option<String>,
}

/// `POST /screen/sessions/{id}/score`: a score after the session.
pub(crate) async fn score(
    State(s): State<Shared>,
    Path(id): Path<String>,
    CsrfForm(v, f): CsrfForm<ScoreForm>,
) -> Response {
    if let Err(r) = require_treating(&v) {
        return r;
    }
    let instrument = f.instrument.unwrap_or_default();
    let value: i64 = match number(&f.value, &instrument_label(&instrument)) {
        Ok(x) => x,
        Err(e) => return error_page(&v, StatusCode::UNPROCESSABLE_ENTITY, &e),
    };
    let back = format!("/screen/sessions/{}/after", url_encode(&id));
    let event = SessionEvent::Score {
        instrument,
        phase: ScorePhase::Post.code().into(),
        value,
        by: v.id.clone(),
    };
    record(&s, &v, id, event, &back).await
}

/// What still stands between the patient and going home.
fn missing_for_discharge(
    f: &DischargeForm,
    page: &SessionPage,
    aldrete: &Result<Aldrete, Vec<&'static str>>,
) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    match aldrete {
        Err(items) => missing.extend(items.iter().map(|x| (*x).to_owned())),
        Ok(a) if !a.allows_discharge() => missing.push(format!(
            "modified Aldrete of {} or more (now {})",
            clinical::ALDRETE_DISCHARGE_MIN,
            a.total().unwrap_or(0)
        )),
        Ok(_) => {}
    }
    let meta = &page.parts.meta;
    if !meta
        .scores
        .iter()
        .any(|x| is_post_cadss(&x.instrument, &x.phase))
    {
        missing.push("CADSS after the session".into());
    }
    if field(&f.escort).trim().is_empty() {
        missing.push("escort's name".into());
    }
    if f.no_driving.is_none() {
        missing.push("no driving for 24 hours acknowledged".into());
    }
    if meta.discharge.is_some() {
        missing.push("nothing: the patient is already discharged".into());
    }
    missing
}

/// `POST /screen/sessions/{id}/discharge`: "Calculate" totals the Aldrete; "Discharge"
/// records it and the discharge, and ends the session if it is still in progress.
pub(crate) async fn discharge(
    State(s): State<Shared>,
    Path(id): Path<String>,
    CsrfForm(v, f): CsrfForm<DischargeForm>,
) -> Response {
    if let Err(r) = require_treating(&v) {
        return r;
    }
    let page = match session_or_404(&s, &v, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let aldrete = f.aldrete();
    let total = aldrete.as_ref().ok().and_then(Aldrete::total);
    let missing = missing_for_discharge(&f, &page, &aldrete);
    let calc_only = f.action.as_deref() == Some("calc");
    if calc_only || !missing.is_empty() {
        let status = if calc_only {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let st = AfterState {
            form: &f,
            total,
            missing: if calc_only { Vec::new() } else { missing },
        };
        let body = after_page(&v, &page, live_bp_spo2(&s), &st);
        return (status, frame(&v, Section::Room, "After the infusion", body)).into_response();
    }
    let total = i64::from(total.unwrap_or(0));
    let events = [
        SessionEvent::Score {
            instrument: Instrument::Aldrete.code().into(),
            phase: ScorePhase::Post.code().into(),
            value: total,
            by: v.id.clone(),
        },
        SessionEvent::Discharge {
            aldrete: total,
            escort: field(&f.escort).trim().to_owned(),
            no_driving_ack: true,
            by: v.id.clone(),
        },
    ];
    let recorder = &s.api.recorder;
    for event in events {
        if let Err(e) = recorder.add_event(id.clone(), event).await {
            return fail(&v, refusal(e));
        }
    }
    if page.parts.meta.state == SessionState::InProgress {
        let stop = StopSession {
            by: v.id.clone(),
            aborted: false,
            disposition: None,
            note: String::new(),
        };
        if let Err(e) = recorder.stop_session(id.clone(), stop).await {
            return fail(&v, refusal(e));
        }
    }
    Redirect::to(&format!("/screen/sessions/{}/after", url_encode(&id))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aldrete_suggestions_use_only_recent_readings() {
        let minute = 60_000_000;
        let now = 100 * minute;
        let mut last = BTreeMap::new();
        last.insert(Channel::Nibp, Sample::scalar(now - 11 * minute, 150));
        last.insert(Channel::Spo2, Sample::scalar(now - minute, 97));
        assert_eq!(
            fresh_bp_spo2(&last, now),
            (None, Some(97)),
            "an 11-minute-old cuff"
        );
        last.insert(Channel::Nibp, Sample::scalar(now - 10 * minute, 128));
        assert_eq!(fresh_bp_spo2(&last, now), (Some(128), Some(97)));
        assert_eq!(fresh_bp_spo2(&BTreeMap::new(), now), (None, None));
    }
}
