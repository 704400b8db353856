//! After the infusion: the checkpoints, the CADSS after the session, the modified Aldrete (with
//! suggestions from the monitors for the two items they measure), the escort and the
//! discharge itself, which also ends a session still in progress.
//!
//! The page lists everything that stands between the patient and going home at once: what the
//! form is missing and what the discharge gate (`vigil_shared::clinical::discharge`) says, from
//! the observation time since the dose stop to the age of the last blood pressure. The
//! recorder applies the same gate again, whoever asks.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::clinical::discharge::{
    self, DischargeRules, Escort, NotYet, discharge_gate, dose_stopped_at,
};
use vigil_shared::clinical::{self, Aldrete, Instrument, ScorePhase};
use vigil_shared::doc::SessionState;
use vigil_shared::vitals::{Channel, Sample};
use vigil_web::url_encode;

use super::checkin::{field, number};
use super::monitoring::{Back, checkpoint_card, fresh, room_now};
use super::session::{instrument_label, record};
use super::view::{clock, state_badge, who};
use super::{
    CsrfForm, Failure, Section, SessionPage, Shared, Viewer, csrf_input, error_page, fail, frame,
    read, refusal, require_treating, session_or_404, site_room,
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
    escort_phone: Option<String>,
    escort_relationship: Option<String>,
    no_driving: Option<String>,
    cadss_override: Option<String>,
}

impl DischargeForm {
    fn cadss_override(&self) -> Option<&str> {
        self.cadss_override
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
    }

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
    rules: DischargeRules,
    now_us: i64,
    last: BTreeMap<Channel, Sample>,
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

fn after_page(v: &Viewer, page: &SessionPage, st: &AfterState<'_>) -> Markup {
    let (parts, names) = (&page.parts, &page.names);
    let m = &parts.meta;
    let reading = |channel| fresh(&st.last, channel, st.now_us).map(|x| i64::from(x.v[0]));
    let live = (reading(Channel::Nibp), reading(Channel::Spo2));
    let stopped = dose_stopped_at(&m.dose_events, m.started_us.unwrap_or(m.created_us));
    let observed_until = stopped.map(|t| t + i64::from(st.rules.min_observation_min) * 60_000_000);
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
    let escort = parts
        .care
        .disposition
        .as_ref()
        .filter(|d| d.code == "home")
        .map(|d| format!(" ({}, {})", d.escort_relationship, d.escort_phone));
    html! {
        h1 { "After the infusion · " (page.patient_name()) " " (state_badge(m.state)) }
        p {
            a href={ "/screen/sessions/" (m.id) } { "Back to the session" }
            " · "
            a href={ "/screen/sessions/" (m.id) "/form" } id="form-link" { "Monitoring form" }
        }
        p id="observation" {
            @match (stopped, observed_until) {
                (Some(stop), Some(until)) => {
                    "Dose stopped at " (clock(v, stop)) "; observe until " (clock(v, until))
                    " (the site's minimum, " (st.rules.min_observation_min) " min)."
                }
                _ => { "The infusion has not been stopped; record the dose stop first." }
            }
        }
        @if let Some(d) = &m.discharge {
            p.card.ok id="discharged" {
                "Discharged at " (clock(v, d.at_us)) " by " (who(names, &d.by)) ": modified Aldrete "
                (d.aldrete) ", escort " (d.escort) (escort.unwrap_or_default()) ", no driving for 24 hours acknowledged."
            }
            p {
                a.button.big href={ "/screen/patients/" (m.patient_id) "/course" } id="course-link" { "Course" }
                " "
                a.button.big href="/screen" { "Room" }
            }
        }
        (checkpoint_card(v, parts, names, (st.now_us, &st.last), Back::After))
        section.card {
            h2 { "CADSS after the session" }
            p.muted { "Discharge needs " (st.rules.max_cadss) " or less, or a clinician's reason below." }
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
                label { "Escort's phone" input name="escort_phone" id="escort-phone" inputmode="tel" value=(field(&f.escort_phone)); }
                label { "Relationship" input name="escort_relationship" id="escort-relationship" value=(field(&f.escort_relationship)); }
                label.check {
                    input type="checkbox" name="no_driving" id="no-driving" checked[f.no_driving.is_some()];
                    " No driving for 24 hours, acknowledged by the patient"
                }
                @if v.is_clinician() {
                    label {
                        "Clinician's reason to discharge with the CADSS over the site's limit"
                        input name="cadss_override" id="cadss-override" value=(field(&f.cadss_override));
                    }
                }
            }
            p.actions { button.primary.big name="action" value="discharge" id="discharge" { "Discharge" } }
        }
    }
}

/// The site's discharge rules and the room's clock and readings, for the page and its gate.
async fn after_state<'a>(s: &Shared, form: &'a DischargeForm) -> Result<AfterState<'a>, Failure> {
    let (site, _) = site_room(s);
    let rules = read(s, move |conn| {
        Ok(crate::reads::discharge_rules(conn, &site))
    })
    .await?;
    let (now_us, last) = room_now(s);
    Ok(AfterState {
        form,
        total: None,
        missing: Vec::new(),
        rules,
        now_us,
        last,
    })
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
    let st = match after_state(&s, &form).await {
        Ok(st) => st,
        Err(e) => return fail(&v, e),
    };
    frame(
        &v,
        Section::Room,
        "After the infusion",
        after_page(&v, &page, &st),
    )
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

/// Everything that still stands between the patient and going home: what the form lacks,
/// then what the discharge gate says (the gate's own "score the Aldrete" is left out while the
/// form names the items missing).
fn missing_for_discharge(
    v: &Viewer,
    f: &DischargeForm,
    page: &SessionPage,
    st: &AfterState<'_>,
    aldrete: &Result<Aldrete, Vec<&'static str>>,
) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    if let Err(items) = aldrete {
        missing.extend(items.iter().map(|x| (*x).to_owned()));
    }
    let escort = Escort {
        name: field(&f.escort).trim().to_owned(),
        phone: field(&f.escort_phone).trim().to_owned(),
        relationship: field(&f.escort_relationship).trim().to_owned(),
    };
    if let Err(e) = escort.check() {
        missing.push(e);
    }
    if f.no_driving.is_none() {
        missing.push("no driving for 24 hours acknowledged".into());
    }
    if f.cadss_override().is_some() && !v.is_clinician() {
        missing.push("only a clinician may override the CADSS limit".into());
    }
    let parts = &page.parts;
    if parts.meta.discharge.is_some() || parts.care.disposition.is_some() {
        missing.push("nothing: the session has already ended".into());
    }
    let facts = discharge::facts(
        &parts.meta,
        &parts.care,
        parts.checkin.as_ref(),
        aldrete.as_ref().ok().copied(),
        f.cadss_override().is_some(),
        st.now_us,
    );
    missing.extend(
        discharge_gate(&st.rules, &facts)
            .into_iter()
            .filter(|x| !(aldrete.is_err() && *x == NotYet::AldreteMissing))
            .map(|x| x.to_string()),
    );
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
    let mut st = match after_state(&s, &f).await {
        Ok(st) => st,
        Err(e) => return fail(&v, e),
    };
    st.total = aldrete.as_ref().ok().and_then(Aldrete::total);
    let mut missing = missing_for_discharge(&v, &f, &page, &st, &aldrete);
    missing.extend(super::ledger::unreconciled(&s, &id).await);
    let calc_only = f.action.as_deref() == Some("calc");
    let items = match aldrete {
        Ok(a) if !calc_only && missing.is_empty() => a.items(),
        _ => {
            let status = if calc_only {
                StatusCode::OK
            } else {
                // What is missing is a conflict with the patient's state (as the API's 409),
                // not a malformed form.
                StatusCode::CONFLICT
            };
            if !calc_only {
                st.missing = missing;
            }
            let body = after_page(&v, &page, &st);
            return (status, frame(&v, Section::Room, "After the infusion", body)).into_response();
        }
    };
    let events = [
        SessionEvent::Discharge {
            aldrete_items: items.to_vec(),
            escort: field(&f.escort).trim().to_owned(),
            escort_phone: field(&f.escort_phone).trim().to_owned(),
            escort_relationship: field(&f.escort_relationship).trim().to_owned(),
            no_driving_ack: true,
            cadss_override_reason: f.cadss_override().map(str::to_owned),
            by: v.id.clone(),
        },
        SessionEvent::Score {
            instrument: Instrument::Aldrete.code().into(),
            phase: ScorePhase::Post.code().into(),
            value: items.iter().sum(),
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
