//! The room screen's pages and form handlers: the room, patients (find, register), check-in
//! with screening and protocol, the running session, after-care and discharge, the course.
//!
//! Handlers parse forms, call `vigil_shared::clinical` for the rules and numbers, and send
//! the recorder its commands with `by` = the signed-in staff id. A refused action re-renders
//! its page with the reason; nothing is half-written because every command is one
//! transaction.

use std::collections::BTreeMap;

use axum::Extension;
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use vigil_shared::clinical::{
    self, Aldrete, Contraindication, InfusionLimits, InfusionOrder, PreInfusionChecklist,
};
use vigil_shared::doc::{
    CheckIn, DocKind, DoseAction, PatientDoc, PatientRecord, Protocol, Score, Screening,
    SessionDoc, SessionMeta, SessionState,
};
use vigil_shared::vitals::{Channel, Sample};
use vigil_web::chart::{LineChart, Series, TimeAxis, line_chart};
use vigil_web::{Esc, url_encode};

use super::{Section, Shared, Viewer, call, check_csrf, error_page, frame, read, site_room};
use crate::api::Command;
use crate::recorder::{
    NewPatient, NewSession, PatientUpdate, RecorderError, SessionEvent, StopSession,
};
use crate::store;

/// The badge as a string, while this module still builds pages with `format!`.
fn badge(class: &str, text: &str) -> String {
    vigil_web::layout::badge(class, text).into_string()
}

/// Patients read for a search; a room appliance holds its site's patients, a few thousand at
/// most. Past this the search says to narrow it.
pub const MAX_PATIENTS_SCANNED: usize = 5_000;

/// Sessions listed on the room page.
pub const RECENT_SESSIONS: usize = 20;

/// Side effects the screen offers (DESIGN.md's list).
pub const EFFECTS: [(&str, &str); 6] = [
    ("nausea", "Nausea"),
    ("dissociation", "Dissociation"),
    ("anxiety_panic", "Anxiety or panic"),
    ("hallucinations", "Hallucinations"),
    ("flashbacks", "Flashbacks"),
    ("vision_hearing", "Vision or hearing changes"),
];

type Failure = (StatusCode, String);

fn fail(viewer: &Viewer, (status, msg): Failure) -> Response {
    error_page(viewer, status, &msg)
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A session's parts the screen shows (no vitals: those are decoded only by the API).
pub(crate) struct SessionParts {
    pub(crate) meta: SessionMeta,
    pub(crate) notes: String,
    pub(crate) checkin: Option<CheckIn>,
}

pub(crate) fn load_session(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Option<SessionParts>, RecorderError> {
    match store::load_document(conn, id)? {
        Some((kind, doc)) if kind == DocKind::Session.as_str() => {
            let doc = SessionDoc::from_automerge(doc)?;
            Ok(Some(SessionParts {
                meta: doc.meta()?,
                notes: doc.notes()?,
                checkin: doc.checkin()?,
            }))
        }
        _ => Ok(None),
    }
}

fn load_patient(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Option<PatientRecord>, RecorderError> {
    match store::load_document(conn, id)? {
        Some((kind, doc)) if kind == DocKind::Patient.as_str() => {
            Ok(Some(PatientDoc::from_automerge(doc)?.record()?))
        }
        _ => Ok(None),
    }
}

/// Start times of a patient's infusions done (completed sessions): those the site's rooms
/// recorded in the patient's document, and this room's own completed sessions (which covers
/// sessions completed before the document kept the list). A started but aborted session is not
/// an infusion done.
fn infusions_done(conn: &rusqlite::Connection, id: &str) -> Result<Vec<i64>, RecorderError> {
    let mut done: BTreeMap<String, i64> = BTreeMap::new();
    if let Some((kind, doc)) = store::load_document(conn, id)?
        && kind == DocKind::Patient.as_str()
    {
        for d in PatientDoc::from_automerge(doc)?.infusions_done()? {
            done.insert(d.session_id, d.started_us);
        }
    }
    for r in store::sessions(conn)? {
        let state = serde_json::from_value::<SessionState>(serde_json::Value::String(r.state));
        if r.patient_id == id && state.is_ok_and(clinical::infusion_done) {
            done.insert(r.id, r.started_us.unwrap_or_default());
        }
    }
    Ok(done.into_values().collect())
}

fn all_patients(conn: &rusqlite::Connection) -> Result<Vec<PatientRecord>, RecorderError> {
    let ids = store::document_ids(conn, DocKind::Patient.as_str())?;
    let mut out = Vec::new();
    for id in ids.into_iter().take(MAX_PATIENTS_SCANNED) {
        if let Some(p) = load_patient(conn, &id)? {
            out.push(p);
        }
    }
    out.sort_by(|a, b| {
        (a.family_name.to_lowercase(), a.given_name.to_lowercase())
            .cmp(&(b.family_name.to_lowercase(), b.given_name.to_lowercase()))
    });
    Ok(out)
}

/// Staff ids to names, for showing who did what.
pub(crate) fn staff_names(conn: &rusqlite::Connection, site: &str) -> BTreeMap<String, String> {
    super::site_config(conn, site)
        .ok()
        .flatten()
        .map(|c| c.staff.into_iter().map(|m| (m.id, m.name)).collect())
        .unwrap_or_default()
}

pub(crate) fn who(names: &BTreeMap<String, String>, id: &str) -> String {
    names.get(id).cloned().unwrap_or_else(|| id.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// `YYYY-MM-DD`, the site's day of a time in µs.
pub(crate) fn date(v: &Viewer, us: i64) -> String {
    v.zone.day(us)
}

/// `HH:MM:SS CST`, the site's time of day of a time in µs, with the zone's abbreviation.
pub(crate) fn clock(v: &Viewer, us: i64) -> String {
    v.zone.clock(us)
}

fn patient_name(p: &PatientRecord) -> String {
    format!("{} {}", p.given_name, p.family_name)
}

fn state_badge(state: SessionState) -> String {
    match state {
        SessionState::Planned => badge("", "planned"),
        SessionState::InProgress => badge("ok", "in progress"),
        SessionState::Completed => badge("", "completed"),
        SessionState::Aborted => badge("bad", "aborted"),
    }
}

fn csrf_input(v: &Viewer) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        Esc(&v.csrf)
    )
}

fn checked(b: bool) -> &'static str {
    if b { " checked" } else { "" }
}

// ---------------------------------------------------------------------------------------------
// The room

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
        let rows = store::sessions(conn)?;
        let mut out = Vec::new();
        for r in rows.into_iter().take(RECENT_SESSIONS) {
            let name = load_patient(conn, &r.patient_id)?
                .map_or_else(|| r.patient_id.clone(), |p| patient_name(&p));
            out.push((r, name));
        }
        let site_name = super::site_config(conn, &site2)?.map(|c| c.name);
        Ok((out, site_name))
    })
    .await;
    let (recent, site_name) = match loaded {
        Ok(v) => v,
        Err(e) => return fail(&v, e),
    };
    let cloud = match sync {
        None => badge("", "no cloud configured"),
        Some(x) if x.connected => badge("ok", "cloud connected"),
        Some(x) => badge(
            "warn",
            &format!(
                "cloud unreachable · recording continues · {} documents waiting",
                x.docs_waiting
            ),
        ),
    };
    let mut body = format!(
        r#"<h1>Room {} · {}</h1><p id="cloud">{cloud}</p>"#,
        Esc(&room),
        Esc(site_name.as_deref().unwrap_or(&site))
    );
    match &active {
        Some(a) => body.push_str(&format!(
            r#"<p><a class="button primary big" id="current-session" href="/screen/sessions/{}">Open the session in progress (since {})</a></p>"#,
            Esc(&a.id),
            clock(&v, a.started_us)
        )),
        None => body.push_str(r#"<p class="muted" id="no-session">No session in progress.</p>"#),
    }
    body.push_str(
        r#"<h2>Check in a patient</h2><form class="filters" method="get" action="/screen/patients">
<label>Name or date of birth<input name="q" id="q" autofocus></label><button class="primary big" id="find" type="submit">Find</button>
<a class="button big" href="/screen/patients#register" id="new-patient">Register a new patient</a></form>"#,
    );
    body.push_str("<h2>Sessions in this room</h2><table id=\"sessions\"><thead><tr><th>Started</th><th>Patient</th><th>State</th><th></th></tr></thead><tbody>");
    for (r, name) in &recent {
        body.push_str(&format!(
            r#"<tr><td>{} {}</td><td>{}</td><td>{}</td><td><a href="/screen/sessions/{}">Open</a> · <a href="/screen/patients/{}/course">Course</a></td></tr>"#,
            r.started_us.map(|t| date(&v, t)).unwrap_or_default(),
            r.started_us.map(|t| clock(&v, t)).unwrap_or_default(),
            Esc(name),
            Esc(&r.state.replace('_', " ")),
            Esc(&r.id),
            Esc(&r.patient_id),
        ));
    }
    body.push_str("</tbody></table>");
    frame(&v, Section::Room, &format!("Room {room}"), &body)
}

// ---------------------------------------------------------------------------------------------
// Patients

#[derive(Debug, Deserialize)]
pub(crate) struct SearchQuery {
    q: Option<String>,
}

pub(crate) async fn patients(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = q.ok().and_then(|q| q.0.q).unwrap_or_default();
    let all = match read(&s, all_patients).await {
        Ok(p) => p,
        Err(e) => return fail(&v, e),
    };
    let needle = q.trim().to_lowercase();
    let found: Vec<&PatientRecord> = all
        .iter()
        .filter(|p| {
            needle.is_empty()
                || patient_name(p).to_lowercase().contains(&needle)
                || format!("{} {}", p.family_name, p.given_name)
                    .to_lowercase()
                    .contains(&needle)
                || p.birth_date.contains(&needle)
        })
        .take(100)
        .collect();
    let mut body = format!(
        r#"<h1>Patients</h1><form class="filters" method="get" action="/screen/patients"><label>Name or date of birth<input name="q" id="q" value="{}"></label><button class="primary big" type="submit" id="find">Find</button></form>"#,
        Esc(&q)
    );
    body.push_str(r#"<table id="patients"><thead><tr><th>Name</th><th>Born</th><th>Course</th><th></th></tr></thead><tbody>"#);
    for p in &found {
        body.push_str(&format!(
            r#"<tr class="patient-row"><td>{}</td><td>{}</td><td>{} · {} planned</td><td><a class="button primary" id="checkin-{id}" href="/screen/patients/{id}/checkin">Check in</a> <a class="button" href="/screen/patients/{id}/course">Course</a></td></tr>"#,
            Esc(&patient_name(p)),
            Esc(&p.birth_date),
            Esc(&p.course.phase),
            p.course.infusions_planned,
            id = Esc(&p.id),
        ));
    }
    if found.is_empty() {
        body.push_str(
            r#"<tr><td colspan="4" class="muted" id="none-found">No patient found.</td></tr>"#,
        );
    }
    body.push_str("</tbody></table>");
    body.push_str(&register_form(&v, None));
    frame(&v, Section::Patients, "Patients", &body)
}

fn register_form(v: &Viewer, error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!(r#"<p class="error" id="register-error">{}</p>"#, Esc(e))
    });
    format!(
        r#"<h2 id="register">Register a new patient</h2>{error}<form class="card stack" method="post" action="/screen/patients">{csrf}
<label>Given name<input name="given_name" id="given_name" required></label>
<label>Family name<input name="family_name" id="family_name" required></label>
<label>Date of birth<input name="birth_date" id="birth_date" placeholder="YYYY-MM-DD" required></label>
<label>Sex<select name="sex" id="sex"><option value="female">female</option><option value="male">male</option><option value="other">other</option><option value="unknown">unknown</option></select></label>
<label>Phone<input name="phone" id="phone" inputmode="tel"></label>
<button class="primary big" type="submit" id="register-submit">Register and check in</button></form>"#,
        csrf = csrf_input(v)
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct RegisterForm {
    csrf: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    birth_date: Option<String>,
    sex: Option<String>,
    phone: Option<String>,
}

pub(crate) async fn register(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    form: Result<Form<RegisterForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return error_page(&v, StatusCode::BAD_REQUEST, "unreadable form");
    };
    if let Err(r) = check_csrf(&v, f.csrf.as_deref()) {
        return r;
    }
    let input = NewPatient {
        given_name: f.given_name.unwrap_or_default().trim().to_owned(),
        family_name: f.family_name.unwrap_or_default().trim().to_owned(),
        birth_date: f.birth_date.unwrap_or_default().trim().to_owned(),
        sex: f.sex.unwrap_or_default(),
        phone: f.phone.filter(|p| !p.trim().is_empty()),
        screening: Screening {
            by: Some(v.id.clone()),
            ..Screening::default()
        },
        medications: Vec::new(),
        course: Default::default(),
    };
    match call(&s, |r| Command::CreatePatient(input, r)).await {
        Ok(p) => {
            Redirect::to(&format!("/screen/patients/{}/checkin", url_encode(&p.id))).into_response()
        }
        Err((status, msg)) => (
            status,
            frame(
                &v,
                Section::Patients,
                "Register",
                &register_form(&v, Some(&msg)),
            ),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Check-in and protocol

/// What the check-in form holds; every field a string as typed, so a refused form comes back
/// exactly as it was.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct CheckInForm {
    csrf: Option<String>,
    action: Option<String>,
    s_htn: Option<String>,
    s_cvd: Option<String>,
    s_psych: Option<String>,
    s_preg: Option<String>,
    s_subst: Option<String>,
    bp_sys: Option<String>,
    bp_dia: Option<String>,
    hr: Option<String>,
    spo2: Option<String>,
    weight: Option<String>,
    phq9: Option<String>,
    gad7: Option<String>,
    dose: Option<String>,
    minutes: Option<String>,
    conc: Option<String>,
    c_escort: Option<String>,
    c_consent: Option<String>,
    c_npo: Option<String>,
    override_reason: Option<String>,
}

impl CheckInForm {
    fn from_patient(p: &PatientRecord) -> CheckInForm {
        let on = |b: bool| b.then(|| "on".to_owned());
        CheckInForm {
            s_htn: on(p.screening.uncontrolled_hypertension),
            s_cvd: on(p.screening.cardiovascular_disease),
            s_psych: on(p.screening.psychosis_history),
            s_preg: on(p.screening.pregnancy),
            s_subst: on(p.screening.substance_use),
            dose: Some("0.5".into()),
            minutes: Some("40".into()),
            conc: Some("1".into()),
            ..CheckInForm::default()
        }
    }

    fn screening(&self, by: &str) -> Screening {
        Screening {
            uncontrolled_hypertension: self.s_htn.is_some(),
            cardiovascular_disease: self.s_cvd.is_some(),
            psychosis_history: self.s_psych.is_some(),
            pregnancy: self.s_preg.is_some(),
            substance_use: self.s_subst.is_some(),
            answered_us: None,
            by: Some(by.to_owned()),
        }
    }

    fn checklist(&self) -> PreInfusionChecklist {
        PreInfusionChecklist {
            escort_arranged: self.c_escort.is_some(),
            consent: self.c_consent.is_some(),
            nothing_by_mouth: self.c_npo.is_some(),
        }
    }
}

fn field(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// A required number from a form field, with the field's label in the error.
fn number<T: std::str::FromStr>(v: &Option<String>, label: &str) -> Result<T, String> {
    let text = field(v).trim();
    if text.is_empty() {
        return Err(format!("{label} is required"));
    }
    text.parse()
        .map_err(|_| format!("{label}: {text:?} is not a number"))
}

fn optional_number<T: std::str::FromStr>(
    v: &Option<String>,
    label: &str,
) -> Result<Option<T>, String> {
    if field(v).trim().is_empty() {
        Ok(None)
    } else {
        number(v, label).map(Some)
    }
}

/// The parsed check-in: everything the start needs, or the list of what is wrong.
struct Parsed {
    bp: (i64, i64),
    hr: Option<i64>,
    spo2: Option<i64>,
    phq9: i64,
    gad7: i64,
    order: InfusionOrder,
}

fn parse_checkin(f: &CheckInForm) -> Result<Parsed, Vec<String>> {
    let mut errors = Vec::new();
    let mut take = |r: Result<f64, String>| r.map_err(|e| errors.push(e)).ok();
    let sys = take(number(&f.bp_sys, "baseline systolic (mmHg)"));
    let dia = take(number(&f.bp_dia, "baseline diastolic (mmHg)"));
    let weight = take(number(&f.weight, "weight (kg)"));
    let phq9 = take(number(&f.phq9, "PHQ-9"));
    let gad7 = take(number(&f.gad7, "GAD-7"));
    let dose = take(number(&f.dose, "dose (mg/kg)"));
    let minutes = take(number(&f.minutes, "duration (min)"));
    let conc = take(number(&f.conc, "concentration (mg/mL)"));
    let hr = optional_number::<i64>(&f.hr, "baseline heart rate")
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let spo2 = optional_number::<i64>(&f.spo2, "baseline SpO2")
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let whole = |x: f64| x.fract() == 0.0;
    if let Some(p) = phq9
        && !(whole(p) && (0.0..=27.0).contains(&p))
    {
        errors.push("PHQ-9 is a whole number from 0 to 27".into());
    }
    if let Some(g) = gad7
        && !(whole(g) && (0.0..=21.0).contains(&g))
    {
        errors.push("GAD-7 is a whole number from 0 to 21".into());
    }
    if let (Some(s), Some(d)) = (sys, dia)
        && !((50.0..=300.0).contains(&s) && (20.0..=200.0).contains(&d) && d < s)
    {
        errors.push("baseline blood pressure is out of range; measure again".into());
    }
    if let Some(m) = minutes
        && !(whole(m) && m > 0.0)
    {
        errors.push("duration is a whole number of minutes".into());
    }
    match (sys, dia, weight, phq9, gad7, dose, minutes, conc) {
        (Some(s), Some(d), Some(w), Some(p), Some(g), Some(dose), Some(m), Some(c))
            if errors.is_empty() =>
        {
            Ok(Parsed {
                bp: (s as i64, d as i64),
                hr,
                spo2,
                phq9: p as i64,
                gad7: g as i64,
                order: InfusionOrder {
                    dose_mg_per_kg: dose,
                    weight_kg: w,
                    minutes: m as u64,
                    concentration_mg_per_ml: c,
                },
            })
        }
        _ => Err(errors),
    }
}

/// What the review panel says.
#[derive(Default)]
struct Review {
    limits: InfusionLimits,
    errors: Vec<String>,
    flags: Vec<Contraindication>,
    plan: Option<clinical::PumpPlan>,
    blocked: Option<String>,
}

fn review(f: &CheckInForm, viewer: &Viewer, limits: InfusionLimits) -> (Review, Option<Parsed>) {
    let mut r = Review {
        limits,
        ..Review::default()
    };
    let parsed = match parse_checkin(f) {
        Ok(p) => Some(p),
        Err(e) => {
            r.errors = e;
            None
        }
    };
    let bp = parsed.as_ref().map(|p| p.bp);
    r.flags = clinical::contraindications(&f.screening(&viewer.id), bp);
    if let Some(p) = &parsed {
        match clinical::pump_plan(&p.order, &r.limits) {
            Ok(plan) => r.plan = Some(plan),
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    let reason = f.override_reason.as_deref();
    if let Err(e) = clinical::may_start(&r.flags, &f.checklist(), reason, viewer.is_clinician()) {
        r.blocked = Some(e.to_string());
    }
    (r, parsed)
}

fn checkin_page(v: &Viewer, p: &PatientRecord, f: &CheckInForm, r: Option<&Review>) -> String {
    let cb = |name: &str, val: &Option<String>, label: &str| {
        format!(
            r#"<label class="check"><input type="checkbox" name="{name}" id="{name}"{}> {}</label>"#,
            checked(val.is_some()),
            Esc(label)
        )
    };
    let input = |name: &str, val: &Option<String>, label: &str, mode: &str| {
        format!(
            r#"<label>{}<input name="{name}" id="{name}" value="{}" inputmode="{mode}"></label>"#,
            Esc(label),
            Esc(field(val))
        )
    };
    let mut panel = String::new();
    if let Some(r) = r {
        panel.push_str(r#"<section class="card" id="review"><h2>Review</h2>"#);
        if !r.errors.is_empty() {
            panel.push_str(r#"<ul class="error" id="errors">"#);
            for e in &r.errors {
                panel.push_str(&format!("<li>{}</li>", Esc(e)));
            }
            panel.push_str("</ul>");
        }
        if r.flags.is_empty() {
            panel.push_str(r#"<p id="flags">No contraindication flagged.</p>"#);
        } else {
            panel.push_str(r#"<ul id="flags" class="flags">"#);
            for fl in &r.flags {
                panel.push_str(&format!(
                    r#"<li class="flag" data-flag="{}">{} {}</li>"#,
                    fl.name(),
                    badge("high", "contraindication"),
                    Esc(fl.label())
                ));
            }
            panel.push_str("</ul>");
        }
        if let Some(plan) = &r.plan {
            panel.push_str(&format!(
                r#"<dl class="facts" id="plan"><dt>Total dose</dt><dd id="total-mg">{} mg</dd><dt>Volume</dt><dd>{} mL</dd><dt>Pump rate</dt><dd><b id="rate-mg-h">{} mg/h</b> = <b id="rate-ml-h">{} mL/h</b></dd><dt>Site limits</dt><dd>within (≤ {} mg/kg, ≤ {} mg, ≤ {} mg/h)</dd></dl>"#,
                plan.total_mg,
                plan.volume_ml,
                plan.rate_mg_per_h,
                plan.rate_ml_per_h,
                r.limits.max_dose_mg_per_kg,
                r.limits.max_total_mg,
                r.limits.max_rate_mg_per_h,
            ));
        }
        if let Some(b) = &r.blocked {
            panel.push_str(&format!(r#"<p class="error" id="blocked">{}</p>"#, Esc(b)));
        }
        panel.push_str("</section>");
    }
    let override_note = if v.is_clinician() {
        "Only if a contraindication is flagged: your reason for starting anyway."
    } else {
        "Only a clinician may override a contraindication: a clinician signs in to do it."
    };
    format!(
        r#"<h1>Check-in · {name}</h1><p class="muted">Born {born} · course: {phase}, {planned} infusions planned · <a href="/screen/patients/{id}/course">course</a></p>
{panel}
<form method="post" action="/screen/patients/{id}/checkin" class="checkin">{csrf}
<section class="card"><h2>Screening</h2>{htn}{cvd}{psych}{preg}{subst}</section>
<section class="card row"><h2>Baseline</h2>{sys}{dia}{hr}{spo2}{weight}</section>
<section class="card row"><h2>Scores before the session</h2>{phq9}{gad7}</section>
<section class="card row"><h2>Protocol: ketamine IV</h2>{dose}{minutes}{conc}</section>
<section class="card"><h2>Pre-infusion checklist</h2>{escort}{consent}{npo}</section>
<section class="card"><h2>Override</h2><label>{override_note}<textarea name="override_reason" id="override_reason" rows="2">{reason}</textarea></label></section>
<p class="actions"><button class="big" type="submit" name="action" value="review" id="review-btn">Review</button>
<button class="primary big" type="submit" name="action" value="start" id="start">Start session</button></p></form>"#,
        name = Esc(&patient_name(p)),
        born = Esc(&p.birth_date),
        phase = Esc(&p.course.phase),
        planned = p.course.infusions_planned,
        id = Esc(&p.id),
        csrf = csrf_input(v),
        htn = cb(
            "s_htn",
            &f.s_htn,
            "Uncontrolled hypertension (baseline above 140/90 flags it too)"
        ),
        cvd = cb("s_cvd", &f.s_cvd, "Cardiovascular disease"),
        psych = cb("s_psych", &f.s_psych, "History of psychosis"),
        preg = cb("s_preg", &f.s_preg, "Pregnancy"),
        subst = cb("s_subst", &f.s_subst, "Current substance use"),
        sys = input("bp_sys", &f.bp_sys, "Systolic (mmHg)", "numeric"),
        dia = input("bp_dia", &f.bp_dia, "Diastolic (mmHg)", "numeric"),
        hr = input("hr", &f.hr, "Heart rate (/min)", "numeric"),
        spo2 = input("spo2", &f.spo2, "SpO2 (%)", "numeric"),
        weight = input("weight", &f.weight, "Weight (kg)", "decimal"),
        phq9 = input(
            "phq9",
            &f.phq9,
            &clinical::Instrument::Phq9.label_with_range(),
            "numeric"
        ),
        gad7 = input(
            "gad7",
            &f.gad7,
            &clinical::Instrument::Gad7.label_with_range(),
            "numeric"
        ),
        dose = input("dose", &f.dose, "Dose (mg/kg)", "decimal"),
        minutes = input("minutes", &f.minutes, "Duration (min)", "numeric"),
        conc = input("conc", &f.conc, "Concentration (mg/mL)", "decimal"),
        escort = cb("c_escort", &f.c_escort, "Escort home arranged"),
        consent = cb("c_consent", &f.c_consent, "Consent signed"),
        npo = cb("c_npo", &f.c_npo, "Nothing by mouth"),
        override_note = Esc(override_note),
        reason = Esc(field(&f.override_reason)),
    )
}

async fn patient_or_404(s: &Shared, v: &Viewer, id: &str) -> Result<PatientRecord, Response> {
    let pid = id.to_owned();
    match read(s, move |conn| load_patient(conn, &pid)).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(error_page(
            v,
            StatusCode::NOT_FOUND,
            &format!("patient {id} not found"),
        )),
        Err(e) => Err(fail(v, e)),
    }
}

pub(crate) async fn checkin(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let p = match patient_or_404(&s, &v, &id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let f = CheckInForm::from_patient(&p);
    frame(
        &v,
        Section::Patients,
        "Check-in",
        &checkin_page(&v, &p, &f, None),
    )
}

pub(crate) async fn checkin_submit(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    form: Result<Form<CheckInForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return error_page(&v, StatusCode::BAD_REQUEST, "unreadable form");
    };
    if let Err(r) = check_csrf(&v, f.csrf.as_deref()) {
        return r;
    }
    let p = match patient_or_404(&s, &v, &id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (site, _) = site_room(&s);
    let limits = match read(&s, move |conn| {
        Ok(crate::reads::infusion_limits(conn, &site))
    })
    .await
    {
        Ok(l) => l,
        Err(e) => return fail(&v, e),
    };
    let (r, parsed) = review(&f, &v, limits);
    let again = |status: StatusCode, r: &Review| {
        (
            status,
            frame(
                &v,
                Section::Patients,
                "Check-in",
                &checkin_page(&v, &p, &f, Some(r)),
            ),
        )
            .into_response()
    };
    // The screening answers go to the patient's record whatever happens next (a blocked
    // start included), so the clinician asked to override sees what was answered.
    let answers = f.screening(&v.id);
    let known = &p.screening;
    let changed = (
        answers.uncontrolled_hypertension,
        answers.cardiovascular_disease,
        answers.psychosis_history,
        answers.pregnancy,
        answers.substance_use,
    ) != (
        known.uncontrolled_hypertension,
        known.cardiovascular_disease,
        known.psychosis_history,
        known.pregnancy,
        known.substance_use,
    );
    if changed || known.answered_us.is_none() {
        let update = PatientUpdate {
            screening: Some(answers),
            ..PatientUpdate::default()
        };
        let pid = id.clone();
        if let Err(e) = call(&s, |reply| Command::UpdatePatient(pid, update, reply)).await {
            return fail(&v, e);
        }
    }
    if f.action.as_deref() != Some("start") {
        return again(StatusCode::OK, &r);
    }
    if let Err(r) = super::require_treating(&v) {
        return r;
    }
    let (Some(parsed), Some(plan), true) = (parsed, r.plan, r.errors.is_empty()) else {
        return again(StatusCode::UNPROCESSABLE_ENTITY, &r);
    };
    if r.blocked.is_some() {
        tracing::info!(patient = %id, staff = %v.id, "start blocked at check-in");
        return again(StatusCode::CONFLICT, &r);
    }
    let reason = f
        .override_reason
        .as_deref()
        .map(str::trim)
        .filter(|x| !x.is_empty() && !r.flags.is_empty());
    let checkin = CheckIn {
        // Set by the recorder when it writes the record.
        at_us: 0,
        by: v.id.clone(),
        baseline_systolic: parsed.bp.0,
        baseline_diastolic: parsed.bp.1,
        baseline_hr: parsed.hr,
        baseline_spo2: parsed.spo2,
        flags: r.flags.iter().map(|x| x.name().to_owned()).collect(),
        override_reason: reason.map(str::to_owned),
        override_by: reason.map(|_| v.id.clone()),
        concentration_mg_per_ml: parsed.order.concentration_mg_per_ml,
        total_mg: plan.total_mg,
        rate_mg_per_h: plan.rate_mg_per_h,
        rate_ml_per_h: plan.rate_ml_per_h,
        escort_arranged: true,
        consent: true,
        nothing_by_mouth: true,
    };
    let new = NewSession {
        patient_id: id.clone(),
        protocol: Protocol {
            drug: "ketamine".into(),
            route: "iv".into(),
            dose_mg_per_kg: parsed.order.dose_mg_per_kg,
            weight_kg: parsed.order.weight_kg,
            planned_minutes: parsed.order.minutes,
        },
        by: v.id.clone(),
        scenario: None,
    };
    let meta = match call(&s, |reply| Command::StartChecked(new, checkin, reply)).await {
        Ok(m) => m,
        Err((status, msg)) => {
            let r = Review {
                blocked: Some(msg),
                ..r
            };
            return again(status, &r);
        }
    };
    for (instrument, value) in [("phq9", parsed.phq9), ("gad7", parsed.gad7)] {
        let event = SessionEvent::Score {
            instrument: instrument.into(),
            phase: "pre".into(),
            value,
            by: v.id.clone(),
        };
        let sid = meta.id.clone();
        if let Err(e) = call(&s, |reply| Command::AddEvent(sid, event, reply)).await {
            return fail(&v, e);
        }
    }
    // The course record: one pre-session PHQ-9 per infusion, in the patient's document so
    // every room of the site sees the course.
    let update = PatientUpdate {
        add_outcome_scores: vec![Score {
            id: format!("{}:phq9:pre", meta.id),
            at_us: meta.started_us.unwrap_or(meta.created_us),
            instrument: "phq9".into(),
            phase: "pre".into(),
            value: parsed.phq9,
            by: v.id.clone(),
        }],
        ..PatientUpdate::default()
    };
    if let Err(e) = call(&s, |reply| Command::UpdatePatient(id, update, reply)).await {
        return fail(&v, e);
    }
    Redirect::to(&format!("/screen/sessions/{}", url_encode(&meta.id))).into_response()
}

// ---------------------------------------------------------------------------------------------
// The session

/// The priority order advisories are shown in (IEC 60601-1-8: high, medium, low).
fn priority_rank(p: &str) -> u8 {
    match p {
        "high" => 0,
        "medium" => 1,
        "low" => 2,
        _ => 3,
    }
}

/// The parts of the session page that change as people act, sent again over the event
/// stream whenever the document changes: the advisories (shown at the top, by priority) and
/// the timeline (dose events, side effects, scores, notes).
pub(crate) fn changing_html(
    parts: &SessionParts,
    v: &Viewer,
    names: &BTreeMap<String, String>,
) -> (String, String) {
    let m = &parts.meta;
    let sid = Esc(&m.id);
    let mut out = String::new();
    let mut advisories: Vec<_> = m.advisories.iter().collect();
    advisories.sort_by_key(|a| {
        (
            a.cleared_us.is_some(),
            priority_rank(&a.priority),
            -a.raised_us,
        )
    });
    out.push_str(
        r#"<section class="card"><h2>Advisories</h2><ul class="advisories" id="advisories">"#,
    );
    for a in &advisories {
        let state = match (a.cleared_us, &a.acknowledged_by) {
            (Some(_), Some(by)) => format!("cleared · acknowledged by {}", who(names, by)),
            (Some(_), None) => "cleared".to_owned(),
            (None, Some(by)) => format!("acknowledged by {}", who(names, by)),
            (None, None) => String::new(),
        };
        // A cleared advisory can still be acknowledged: the record shows someone saw it.
        let ack = if a.acknowledged_us.is_none() {
            format!(
                r#"<form method="post" action="/screen/sessions/{sid}/ack" class="inline">{}<input type="hidden" name="advisory_id" value="{}"><button class="big" type="submit" id="ack-{}">Acknowledge</button></form>"#,
                csrf_input(v),
                Esc(&a.id),
                Esc(&a.id)
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            r#"<li class="advisory {prio}" data-priority="{prio}">{} {} <b>{}</b> {} <span class="muted">{}</span> {ack}</li>"#,
            badge(&a.priority, &a.priority),
            clock(v, a.raised_us),
            Esc(&a.kind.replace('_', " ")),
            Esc(&a.detail),
            Esc(&state),
            prio = Esc(&a.priority),
        ));
    }
    if advisories.is_empty() {
        out.push_str(r#"<li class="muted">None.</li>"#);
    }
    out.push_str("</ul></section>");
    let advisories_html = std::mem::take(&mut out);

    out.push_str(r#"<section class="card"><h2>Dose</h2><table id="dose-events"><tbody>"#);
    for d in &m.dose_events {
        out.push_str(&format!(
            r#"<tr class="dose-event"><td>{}</td><td>{}</td><td>{}</td><td class="muted">{}</td></tr>"#,
            clock(v, d.at_us),
            dose_label(d.action),
            d.rate_mg_per_h.map_or(String::new(), |r| format!("{r} mg/h")),
            Esc(&who(names, &d.by)),
        ));
    }
    out.push_str("</tbody></table></section>");

    out.push_str(r#"<section class="card"><h2>Side effects</h2><table id="effects"><tbody>"#);
    for o in &m.observations {
        let label = EFFECTS
            .iter()
            .find(|(k, _)| *k == o.effect)
            .map_or(o.effect.as_str(), |(_, l)| l);
        out.push_str(&format!(
            r#"<tr class="effect"><td>{}</td><td>{}</td><td>{}</td><td class="muted">{}</td></tr>"#,
            clock(v, o.at_us),
            Esc(label),
            badge(
                match o.severity.as_str() {
                    "severe" => "high",
                    "moderate" => "medium",
                    _ => "low",
                },
                &o.severity
            ),
            Esc(&who(names, &o.by)),
        ));
    }
    out.push_str("</tbody></table></section>");

    out.push_str(r#"<section class="card"><h2>Scores</h2><table id="scores"><tbody>"#);
    for sc in &m.scores {
        out.push_str(&format!(
            r#"<tr class="score"><td>{}</td><td>{} {}</td><td>{}</td><td class="muted">{}</td></tr>"#,
            clock(v, sc.at_us),
            Esc(&instrument_label(&sc.instrument)),
            Esc(&sc.phase),
            sc.value,
            Esc(&who(names, &sc.by)),
        ));
    }
    out.push_str("</tbody></table></section>");
    out.push_str(&format!(
        r#"<section class="card"><h2>Notes</h2><pre id="notes">{}</pre></section>"#,
        Esc(&parts.notes)
    ));
    (advisories_html, out)
}

fn instrument_label(i: &str) -> String {
    match i {
        "phq9" => "PHQ-9".into(),
        "gad7" => "GAD-7".into(),
        "cadss" => "CADSS".into(),
        "aldrete" => "Modified Aldrete".into(),
        other => other.into(),
    }
}

fn dose_label(a: DoseAction) -> &'static str {
    match a {
        DoseAction::Start => "start",
        DoseAction::RateChange => "rate change",
        DoseAction::Pause => "pause",
        DoseAction::Resume => "resume",
        DoseAction::Stop => "stop",
    }
}

async fn session_or_404(
    s: &Shared,
    v: &Viewer,
    id: &str,
) -> Result<
    (
        SessionParts,
        Option<PatientRecord>,
        BTreeMap<String, String>,
    ),
    Response,
> {
    let (site, _) = site_room(s);
    let sid = id.to_owned();
    let loaded = read(s, move |conn| {
        let Some(parts) = load_session(conn, &sid)? else {
            return Ok(None);
        };
        let patient = load_patient(conn, &parts.meta.patient_id)?;
        Ok(Some((parts, patient, staff_names(conn, &site))))
    })
    .await;
    match loaded {
        Ok(Some(x)) => Ok(x),
        Ok(None) => Err(error_page(
            v,
            StatusCode::NOT_FOUND,
            &format!("session {id} not found"),
        )),
        Err(e) => Err(fail(v, e)),
    }
}

pub(crate) async fn session(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let (parts, patient, names) = match session_or_404(&s, &v, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let m = &parts.meta;
    let sid = Esc(&m.id);
    let name = patient
        .as_ref()
        .map_or_else(|| m.patient_id.clone(), patient_name);
    let plan = parts.checkin.as_ref().map_or(String::new(), |c| {
        let mut t = format!(
            r#"<dt>Pump</dt><dd id="pump">{} mg/h = {} mL/h at {} mg/mL · total {} mg</dd><dt>Baseline</dt><dd>{}/{} mmHg</dd>"#,
            c.rate_mg_per_h, c.rate_ml_per_h, c.concentration_mg_per_ml, c.total_mg,
            c.baseline_systolic, c.baseline_diastolic
        );
        if let (Some(reason), Some(by)) = (&c.override_reason, &c.override_by) {
            t.push_str(&format!(
                r#"<dt>Override</dt><dd id="override">{} — {} ({})</dd>"#,
                Esc(&c.flags.join(", ").replace('_', " ")),
                Esc(reason),
                Esc(&who(&names, by))
            ));
        }
        t
    });
    let mut body = format!(
        r#"<h1>{} {}</h1><dl class="facts"><dt>Protocol</dt><dd>{} {} · {} mg/kg · {} kg · {} min</dd>{plan}<dt>Started</dt><dd>{} {} by {}</dd></dl>"#,
        Esc(&name),
        state_badge(m.state),
        Esc(&m.protocol.drug),
        Esc(&m.protocol.route.to_uppercase()),
        m.protocol.dose_mg_per_kg,
        m.protocol.weight_kg,
        m.protocol.planned_minutes,
        m.started_us.map(|t| date(&v, t)).unwrap_or_default(),
        m.started_us.map(|t| clock(&v, t)).unwrap_or_default(),
        Esc(&m.dose_events.first().map_or_else(
            || parts
                .checkin
                .as_ref()
                .map_or(String::new(), |c| who(&names, &c.by)),
            |d| who(&names, &d.by)
        )),
    );
    let (advisories_html, timeline) = changing_html(&parts, &v, &names);
    let live = m.state == SessionState::InProgress;
    body.push_str(&format!(
        r#"<section id="live" class="live" data-src="/screen/sessions/{sid}/live"><div class="tile"><span>HR</span><b id="v-hr">–</b><small>/min</small></div><div class="tile"><span>SpO2</span><b id="v-spo2">–</b><small>%</small></div><div class="tile"><span>BP</span><b id="v-nibp">–</b><small>mmHg</small></div><div class="tile"><span>Pulse</span><b id="v-pulse">–</b><small>/min</small></div><div class="tile"><span>Temp</span><b id="v-temp">–</b><small>°C</small></div><p class="muted">Room monitors · <span id="v-age">connecting…</span></p></section>"#
    ));
    body.push_str(&format!(
        r#"<div id="advisories-box">{advisories_html}</div>"#
    ));
    if live {
        let rate = parts
            .checkin
            .as_ref()
            .map_or(String::new(), |c| c.rate_mg_per_h.to_string());
        let csrf = csrf_input(&v);
        body.push_str(&format!(
            r#"<section class="card"><h2>Dose</h2><form method="post" action="/screen/sessions/{sid}/dose" class="buttons">{csrf}
<label>Rate (mg/h)<input name="rate" id="rate" value="{rate}" inputmode="decimal"></label>
<button class="primary big" name="action" value="start" id="dose-start">Start</button>
<button class="big" name="action" value="rate_change" id="dose-rate">Change rate</button>
<button class="big" name="action" value="pause" id="dose-pause">Pause</button>
<button class="big" name="action" value="resume" id="dose-resume">Resume</button>
<button class="big danger" name="action" value="stop" id="dose-stop">Stop</button></form></section>"#
        ));
        let mut options = String::new();
        for (k, l) in EFFECTS {
            options.push_str(&format!(r#"<option value="{k}">{l}</option>"#));
        }
        body.push_str(&format!(
            r#"<section class="card"><h2>Side effect</h2><form method="post" action="/screen/sessions/{sid}/effect" class="buttons">{csrf}
<label>Effect<select name="effect" id="effect">{options}</select></label>
<button class="big" name="severity" value="mild" id="sev-mild">Mild</button>
<button class="big" name="severity" value="moderate" id="sev-moderate">Moderate</button>
<button class="big danger" name="severity" value="severe" id="sev-severe">Severe</button></form></section>"#
        ));
    }
    body.push_str(&format!(
        r#"<section class="card"><h2>Note</h2><form method="post" action="/screen/sessions/{sid}/note" class="buttons">{}
<textarea name="text" id="note" rows="2" required></textarea><button class="big" type="submit" id="save-note">Add note</button></form></section>"#,
        csrf_input(&v)
    ));
    body.push_str(&format!(
        r#"<div id="timeline">{}</div><p><a class="button primary big" id="after-link" href="/screen/sessions/{sid}/after">After the infusion: scores, Aldrete, discharge</a> <a class="button big" href="/screen/patients/{}/course">Course</a></p>"#,
        timeline,
        Esc(&m.patient_id)
    ));
    frame(&v, Section::Room, &name, &body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct DoseForm {
    csrf: Option<String>,
    action: Option<String>,
    rate: Option<String>,
}

/// Records an event and goes back to the page the form came from, or shows why not.
async fn record(s: &Shared, v: &Viewer, id: String, event: SessionEvent, back: &str) -> Response {
    match call(s, |reply| Command::AddEvent(id, event, reply)).await {
        Ok(_) => Redirect::to(back).into_response(),
        Err(e) => fail(v, e),
    }
}

pub(crate) async fn dose(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    form: Result<Form<DoseForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return error_page(&v, StatusCode::BAD_REQUEST, "unreadable form");
    };
    if let Err(r) = check_csrf(&v, f.csrf.as_deref()) {
        return r;
    }
    if let Err(r) = super::require_treating(&v) {
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
    let back = format!("/screen/sessions/{}", url_encode(&id));
    let event = SessionEvent::Dose {
        action,
        rate_mg_per_h: rate,
        by: v.id.clone(),
    };
    record(&s, &v, id, event, &back).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct EffectForm {
    csrf: Option<String>,
    effect: Option<String>,
    severity: Option<String>,
}

pub(crate) async fn effect(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    form: Result<Form<EffectForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return error_page(&v, StatusCode::BAD_REQUEST, "unreadable form");
    };
    if let Err(r) = check_csrf(&v, f.csrf.as_deref()) {
        return r;
    }
    if let Err(r) = super::require_treating(&v) {
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
    let back = format!("/screen/sessions/{}", url_encode(&id));
    let event = SessionEvent::Observation {
        effect,
        severity: f.severity.unwrap_or_default(),
        by: v.id.clone(),
    };
    record(&s, &v, id, event, &back).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct NoteForm {
    csrf: Option<String>,
    text: Option<String>,
}

pub(crate) async fn note(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    form: Result<Form<NoteForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return error_page(&v, StatusCode::BAD_REQUEST, "unreadable form");
    };
    if let Err(r) = check_csrf(&v, f.csrf.as_deref()) {
        return r;
    }
    let back = format!("/screen/sessions/{}", url_encode(&id));
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
    csrf: Option<String>,
    advisory_id: Option<String>,
}

pub(crate) async fn acknowledge(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    form: Result<Form<AckForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return error_page(&v, StatusCode::BAD_REQUEST, "unreadable form");
    };
    if let Err(r) = check_csrf(&v, f.csrf.as_deref()) {
        return r;
    }
    if let Err(r) = super::require_treating(&v) {
        return r;
    }
    let back = format!("/screen/sessions/{}", url_encode(&id));
    let event = SessionEvent::Acknowledge {
        advisory_id: f.advisory_id.unwrap_or_default(),
        by: v.id.clone(),
    };
    record(&s, &v, id, event, &back).await
}

// ---------------------------------------------------------------------------------------------
// After the infusion

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct DischargeForm {
    csrf: Option<String>,
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

fn after_page(
    v: &Viewer,
    parts: &SessionParts,
    name: &str,
    names: &BTreeMap<String, String>,
    live: (Option<i64>, Option<i64>),
    st: &AfterState<'_>,
) -> String {
    let m = &parts.meta;
    let sid = Esc(&m.id);
    let csrf = csrf_input(v);
    let cadss = m
        .scores
        .iter()
        .rev()
        .find(|x| x.instrument == "cadss" && x.phase == "post");
    let mut body = format!(
        r#"<h1>After the infusion · {} {}</h1><p><a href="/screen/sessions/{sid}">Back to the session</a></p>"#,
        Esc(name),
        state_badge(m.state)
    );
    if let Some(d) = &m.discharge {
        body.push_str(&format!(
            r#"<p class="card ok" id="discharged">Discharged at {} by {}: modified Aldrete {}, escort {}, no driving for 24 hours acknowledged.</p><p><a class="button big" href="/screen/patients/{}/course" id="course-link">Course</a> <a class="button big" href="/screen">Room</a></p>"#,
            clock(v, d.at_us),
            Esc(&who(names, &d.by)),
            d.aldrete,
            Esc(&d.escort),
            Esc(&m.patient_id)
        ));
    }
    body.push_str(&format!(
        r#"<section class="card"><h2>CADSS after the session</h2><p id="cadss-value">{}</p><form method="post" action="/screen/sessions/{sid}/score" class="buttons">{csrf}<input type="hidden" name="instrument" value="cadss"><label>{cadss_label}<input name="value" id="cadss" inputmode="numeric"></label><button class="big" type="submit" id="save-cadss">Save CADSS</button></form></section>"#,
        cadss.map_or("Not recorded yet.".to_owned(), |c| format!("Recorded: {} ({})", c.value, Esc(&who(names, &c.by)))),
        cadss_label = Esc(&clinical::Instrument::Cadss.label_with_range()),
    ));
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
    let select = |name: &str, val: &Option<String>, label: &str, options: [&str; 3], hint: &str| {
        let mut o = String::from(r#"<option value="">–</option>"#);
        for (i, text) in options.iter().enumerate().rev() {
            let sel = if field(val) == i.to_string() {
                " selected"
            } else {
                ""
            };
            o.push_str(&format!(
                r#"<option value="{i}"{sel}>{i}: {}</option>"#,
                Esc(text)
            ));
        }
        format!(
            r#"<label>{}<select name="{name}" id="{name}">{o}</select><small class="muted">{}</small></label>"#,
            Esc(label),
            Esc(hint)
        )
    };
    let missing = if st.missing.is_empty() {
        String::new()
    } else {
        let mut m = String::from(
            r#"<div class="error"><p>Discharge cannot complete; missing:</p><ul id="missing">"#,
        );
        for x in &st.missing {
            m.push_str(&format!("<li>{}</li>", Esc(x)));
        }
        m.push_str("</ul></div>");
        m
    };
    let total = st.total.map_or("–".to_owned(), |t| t.to_string());
    body.push_str(&format!(
        r#"<form method="post" action="/screen/sessions/{sid}/discharge" class="discharge">{csrf}{missing}
<section class="card"><h2>Modified Aldrete</h2><div class="row">{act}{resp}{circ}{cons}{o2}</div>
<p>Total: <b id="aldrete-total">{total}</b> / 10 · discharge needs {min} or more <button class="big" name="action" value="calc" id="calc">Calculate</button></p></section>
<section class="card"><h2>Discharge checklist</h2><label>Escort's name<input name="escort" id="escort" value="{escort}"></label>
<label class="check"><input type="checkbox" name="no_driving" id="no-driving"{nd}> No driving for 24 hours, acknowledged by the patient</label></section>
<p class="actions"><button class="primary big" name="action" value="discharge" id="discharge">Discharge</button></p></form>"#,
        act = select("a_activity", &f.a_activity, "Activity", ["none", "two limbs", "four limbs"], ""),
        resp = select("a_respiration", &f.a_respiration, "Respiration", ["apnoeic", "dyspnoea or shallow", "breathes deeply, coughs"], ""),
        circ = select("a_circulation", &f.a_circulation, "Circulation (BP vs baseline)", ["≥ 50 % off", "20-49 % off", "within 20 %"], &suggest_circ),
        cons = select("a_consciousness", &f.a_consciousness, "Consciousness", ["not responding", "rousable on calling", "fully awake"], ""),
        o2 = select("a_oxygen", &f.a_oxygen, "Oxygen saturation", ["< 90 % with O2", "needs O2 for > 90 %", "> 92 % on room air"], &suggest_o2),
        min = clinical::ALDRETE_DISCHARGE_MIN,
        escort = Esc(field(&f.escort)),
        nd = checked(f.no_driving.is_some()),
    ));
    body
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

pub(crate) async fn after(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let (parts, patient, names) = match session_or_404(&s, &v, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let name = patient
        .as_ref()
        .map_or_else(|| parts.meta.patient_id.clone(), patient_name);
    let form = DischargeForm {
        escort: None,
        ..DischargeForm::default()
    };
    let st = AfterState {
        form: &form,
        total: None,
        missing: Vec::new(),
    };
    let body = after_page(&v, &parts, &name, &names, live_bp_spo2(&s), &st);
    frame(&v, Section::Room, "After the infusion", &body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ScoreForm {
    csrf: Option<String>,
    instrument: Option<String>,
    value: Option<String>,
}

pub(crate) async fn score(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    form: Result<Form<ScoreForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return error_page(&v, StatusCode::BAD_REQUEST, "unreadable form");
    };
    if let Err(r) = check_csrf(&v, f.csrf.as_deref()) {
        return r;
    }
    if let Err(r) = super::require_treating(&v) {
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
        phase: "post".into(),
        value,
        by: v.id.clone(),
    };
    record(&s, &v, id, event, &back).await
}

pub(crate) async fn discharge(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    form: Result<Form<DischargeForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return error_page(&v, StatusCode::BAD_REQUEST, "unreadable form");
    };
    if let Err(r) = check_csrf(&v, f.csrf.as_deref()) {
        return r;
    }
    if let Err(r) = super::require_treating(&v) {
        return r;
    }
    let (parts, patient, names) = match session_or_404(&s, &v, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let name = patient
        .as_ref()
        .map_or_else(|| parts.meta.patient_id.clone(), patient_name);
    let aldrete = f.aldrete();
    let total = aldrete.as_ref().ok().and_then(Aldrete::total);
    let mut missing: Vec<String> = Vec::new();
    match &aldrete {
        Err(items) => missing.extend(items.iter().map(|x| (*x).to_owned())),
        Ok(a) if !a.allows_discharge() => missing.push(format!(
            "modified Aldrete of {} or more (now {})",
            clinical::ALDRETE_DISCHARGE_MIN,
            total.unwrap_or(0)
        )),
        Ok(_) => {}
    }
    if !parts
        .meta
        .scores
        .iter()
        .any(|x| x.instrument == "cadss" && x.phase == "post")
    {
        missing.push("CADSS after the session".into());
    }
    if field(&f.escort).trim().is_empty() {
        missing.push("escort's name".into());
    }
    if f.no_driving.is_none() {
        missing.push("no driving for 24 hours acknowledged".into());
    }
    if parts.meta.discharge.is_some() {
        missing.push("nothing: the patient is already discharged".into());
    }
    let calc_only = f.action.as_deref() == Some("calc");
    if calc_only || !missing.is_empty() {
        let st = AfterState {
            form: &f,
            total,
            missing: if calc_only { Vec::new() } else { missing },
        };
        let status = if calc_only {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let body = after_page(&v, &parts, &name, &names, live_bp_spo2(&s), &st);
        return (
            status,
            frame(&v, Section::Room, "After the infusion", &body),
        )
            .into_response();
    }
    let total = i64::from(total.unwrap_or(0));
    let events = [
        SessionEvent::Score {
            instrument: "aldrete".into(),
            phase: "post".into(),
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
    for event in events {
        let sid = id.clone();
        if let Err(e) = call(&s, |reply| Command::AddEvent(sid, event, reply)).await {
            return fail(&v, e);
        }
    }
    if parts.meta.state == SessionState::InProgress {
        let stop = StopSession {
            by: v.id.clone(),
            aborted: false,
            disposition: None,
            note: String::new(),
        };
        let sid = id.clone();
        if let Err(e) = call(&s, |reply| Command::StopSession(sid, stop, reply)).await {
            return fail(&v, e);
        }
    }
    Redirect::to(&format!("/screen/sessions/{}/after", url_encode(&id))).into_response()
}

// ---------------------------------------------------------------------------------------------
// The course

pub(crate) async fn course(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let p = match patient_or_404(&s, &v, &id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let pid = id.clone();
    let done = match read(&s, move |conn| infusions_done(conn, &pid)).await {
        Ok(d) => d,
        Err(e) => return fail(&v, e),
    };
    let mut phq9: Vec<&Score> = p
        .outcome_scores
        .iter()
        .filter(|x| x.instrument == "phq9" && x.phase == "pre")
        .collect();
    phq9.sort_by_key(|x| x.at_us);
    let status = clinical::course_status(&p.course, &done);
    let per_week = p
        .course
        .per_week
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("/");
    let mut body = format!(
        r#"<h1>Course · {}</h1><dl class="facts" id="course"><dt>Plan</dt><dd>{} infusions over {} weeks ({per_week} a week)</dd><dt>Done</dt><dd id="done">{} of {}</dd><dt>Phase</dt><dd id="phase">{}</dd>{}<dt>Next due</dt><dd id="next-due">{}</dd></dl>"#,
        Esc(&patient_name(&p)),
        p.course.infusions_planned,
        p.course.weeks,
        status.done,
        status.planned,
        status.phase,
        status
            .week
            .map_or(String::new(), |w| format!("<dt>Week</dt><dd>{w}</dd>")),
        status
            .next_due_us
            .map_or("now (first infusion)".to_owned(), |t| format!(
                "from {}",
                date(&v, t)
            )),
    );
    body.push_str("<h2>PHQ-9 before each infusion</h2>");
    if phq9.len() >= 2 {
        let (first, last) = (phq9[0].at_us, phq9[phq9.len() - 1].at_us);
        let chart = LineChart {
            title: "PHQ-9",
            unit: "score",
            width: 720,
            height: 200,
            x_range: (first, last.max(first + 1)),
            origin_us: first,
            axis: TimeAxis::Minutes,
            y_range: Some((0.0, 27.0)),
            series: vec![Series {
                label: "PHQ-9",
                color: "#175cd3",
                points: phq9.iter().map(|x| (x.at_us, x.value as f64)).collect(),
                max_gap_us: i64::MAX,
            }],
            bands: Vec::new(),
            markers: Vec::new(),
        };
        body.push_str(&line_chart(&chart));
    }
    body.push_str(r#"<table id="phq9"><thead><tr><th>Date</th><th class="num">PHQ-9</th></tr></thead><tbody>"#);
    for x in &phq9 {
        body.push_str(&format!(
            r#"<tr class="phq9-row"><td>{}</td><td class="num">{}</td></tr>"#,
            date(&v, x.at_us),
            x.value
        ));
    }
    body.push_str("</tbody></table>");
    body.push_str(&format!(
        r#"<p><a class="button primary big" href="/screen/patients/{}/checkin">Check in for the next infusion</a></p>"#,
        Esc(&p.id)
    ));
    frame(&v, Section::Patients, "Course", &body)
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

    fn viewer_in(zone: &str) -> Viewer {
        Viewer {
            id: "rn-ana".into(),
            name: "Ana".into(),
            role: crate::access::Role::Nurse,
            csrf: String::new(),
            token: String::new(),
            zone: vigil_shared::zone::SiteZone::parse(zone).unwrap(),
        }
    }

    #[test]
    fn times_are_the_sites_own() {
        let utc = viewer_in("UTC");
        let chicago = viewer_in("America/Chicago");
        let cases = [
            (&utc, 0, "1970-01-01", "00:00:00 UTC"),
            (&utc, 951_782_400_000_000, "2000-02-29", "00:00:00 UTC"),
            (
                &chicago,
                1_790_000_000_000_000,
                "2026-09-21",
                "09:13:20 CDT",
            ),
            // After midnight UTC, still the evening before in Austin.
            (
                &chicago,
                1_796_000_000_000_000,
                "2026-11-29",
                "18:53:20 CST",
            ),
            // The November change: 06:30 UTC is 01:30 CDT, 07:10 UTC is 01:10 CST.
            (
                &chicago,
                1_793_514_600_000_000,
                "2026-11-01",
                "01:30:00 CDT",
            ),
            (
                &chicago,
                1_793_517_000_000_000,
                "2026-11-01",
                "01:10:00 CST",
            ),
        ];
        for (v, us, d, c) in cases {
            assert_eq!(
                (date(v, us), clock(v, us)),
                (d.to_owned(), c.to_owned()),
                "{us}"
            );
        }
    }

    #[test]
    fn a_checkin_form_parses_or_names_what_is_wrong() {
        let good = CheckInForm {
            bp_sys: Some("128".into()),
            bp_dia: Some("82".into()),
            weight: Some("70".into()),
            phq9: Some("18".into()),
            gad7: Some("12".into()),
            dose: Some("0.5".into()),
            minutes: Some("40".into()),
            conc: Some("0.5".into()),
            ..CheckInForm::default()
        };
        let p = parse_checkin(&good).unwrap();
        assert_eq!((p.bp, p.phq9, p.order.minutes), ((128, 82), 18, 40));
        let bad = CheckInForm {
            phq9: Some("30".into()),
            weight: Some("seventy".into()),
            bp_sys: None,
            ..good
        };
        let errors = parse_checkin(&bad).err().unwrap().join("; ");
        for part in [
            "PHQ-9 is a whole number",
            "weight (kg): \"seventy\"",
            "systolic (mmHg) is required",
        ] {
            assert!(errors.contains(part), "{errors}");
        }
    }
}
