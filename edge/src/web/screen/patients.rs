//! Patients: find one by name or birth date, register a new one, and read a patient's course
//! (infusions done against the plan, the PHQ-9 before each infusion).

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use vigil_shared::clinical::{self, Instrument, ScorePhase};
use vigil_shared::doc::{PatientRecord, Score, Screening};
use vigil_web::chart::{LineChart, Series, TimeAxis, line_chart};
use vigil_web::url_encode;

use super::view::{date, patient_name};
use super::{
    CsrfForm, Section, Shared, Viewer, csrf_input, fail, frame, load, patient_or_404, read, refusal,
};
use crate::recorder::NewPatient;

/// Most patients a search lists.
pub const MAX_FOUND: usize = 100;

#[derive(Debug, Deserialize)]
pub(crate) struct SearchQuery {
    q: Option<String>,
}

/// Whether a patient matches what was typed: either order of the names, or the birth date.
fn matches(p: &PatientRecord, needle: &str) -> bool {
    needle.is_empty()
        || patient_name(p).to_lowercase().contains(needle)
        || format!("{} {}", p.family_name, p.given_name)
            .to_lowercase()
            .contains(needle)
        || p.birth_date.contains(needle)
}

/// `GET /screen/patients`.
pub(crate) async fn patients(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = q.ok().and_then(|q| q.0.q).unwrap_or_default();
    let all = match read(&s, load::all_patients).await {
        Ok(p) => p,
        Err(e) => return fail(&v, e),
    };
    let needle = q.trim().to_lowercase();
    let found: Vec<&PatientRecord> = all
        .iter()
        .filter(|p| matches(p, &needle))
        .take(MAX_FOUND)
        .collect();
    let body = html! {
        h1 { "Patients" }
        form.filters method="get" action="/screen/patients" {
            label { "Name or date of birth" input name="q" id="q" value=(q); }
            button.primary.big type="submit" id="find" { "Find" }
        }
        table id="patients" {
            thead { tr { th { "Name" } th { "Born" } th { "Course" } th {} } }
            tbody {
                @for p in &found {
                    tr.patient-row {
                        td { (patient_name(p)) }
                        td { (p.birth_date) }
                        td { (p.course.phase) " · " (clinical::planned_infusions(&p.course)) " planned" }
                        td {
                            a.button.primary id={ "checkin-" (p.id) } href={ "/screen/patients/" (p.id) "/checkin" } { "Check in" }
                            " "
                            a.button href={ "/screen/patients/" (p.id) "/course" } { "Course" }
                        }
                    }
                }
                @if found.is_empty() {
                    tr { td colspan="4" .muted id="none-found" { "No patient found." } }
                }
            }
        }
        (register_form(&v, None))
    };
    frame(&v, Section::Patients, "Patients", body)
}

fn register_form(v: &Viewer, error: Option<&str>) -> Markup {
    html! {
        h2 id="register" { "Register a new patient" }
        @if let Some(e) = error { p.error id="register-error" { (e) } }
        form.card.stack method="post" action="/screen/patients" {
            (csrf_input(v))
            label { "Given name" input name="given_name" id="given_name" required; }
            label { "Family name" input name="family_name" id="family_name" required; }
            label { "Date of birth" input name="birth_date" id="birth_date" placeholder="YYYY-MM-DD" required; }
            label {
                "Sex"
                select name="sex" id="sex" {
                    @for sex in ["female", "male", "other", "unknown"] {
                        option value=(sex) { (sex) }
                    }
                }
            }
            label { "Phone" input name="phone" id="phone" inputmode="tel"; }
            button.primary.big type="submit" id="register-submit" { "Register and check in" }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RegisterForm {
    given_name: Option<String>,
    family_name: Option<String>,
    birth_date: Option<String>,
    sex: Option<String>,
    phone: Option<String>,
}

/// `POST /screen/patients`: registers a patient and goes on to their check-in.
pub(crate) async fn register(
    State(s): State<Shared>,
    CsrfForm(v, f): CsrfForm<RegisterForm>,
) -> Response {
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
    match s.api.recorder.create_patient(input).await.map_err(refusal) {
        Ok(p) => {
            Redirect::to(&format!("/screen/patients/{}/checkin", url_encode(&p.id))).into_response()
        }
        Err((status, msg)) => (
            status,
            frame(
                &v,
                Section::Patients,
                "Register",
                register_form(&v, Some(&msg)),
            ),
        )
            .into_response(),
    }
}

/// The PHQ-9 scores before each infusion, oldest first.
fn phq9_before(p: &PatientRecord) -> Vec<&Score> {
    let mut phq9: Vec<&Score> = p
        .outcome_scores
        .iter()
        .filter(|x| x.instrument == Instrument::Phq9.code() && x.phase == ScorePhase::Pre.code())
        .collect();
    phq9.sort_by_key(|x| x.at_us);
    phq9
}

/// The PHQ-9 course as a chart, once there are two scores to join.
fn phq9_chart(phq9: &[&Score]) -> Option<Markup> {
    let (first, last) = (phq9.first()?.at_us, phq9.last()?.at_us);
    if phq9.len() < 2 {
        return None;
    }
    let range = Instrument::Phq9.range();
    let chart = LineChart {
        title: "PHQ-9",
        unit: "score",
        width: 720,
        height: 200,
        x_range: (first, last.max(first + 1)),
        origin_us: first,
        axis: TimeAxis::Minutes,
        y_range: Some((*range.start() as f64, *range.end() as f64)),
        series: vec![Series {
            label: "PHQ-9",
            color: "#175cd3",
            points: phq9.iter().map(|x| (x.at_us, x.value as f64)).collect(),
            max_gap_us: i64::MAX,
        }],
        bands: Vec::new(),
        markers: Vec::new(),
    };
    // The chart module builds its SVG with every text escaped.
    Some(PreEscaped(line_chart(&chart)))
}

/// `GET /screen/patients/{id}/course`.
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
    let done = match read(&s, move |conn| load::infusions_done(conn, &pid)).await {
        Ok(d) => d,
        Err(e) => return fail(&v, e),
    };
    let phq9 = phq9_before(&p);
    let status = clinical::course_status(&p.course, &done);
    let per_week = p
        .course
        .per_week
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("/");
    let body = html! {
        h1 { "Course · " (patient_name(&p)) }
        dl.facts id="course" {
            dt { "Plan" }
            dd {
                (clinical::planned_infusions(&p.course)) " infusions over " (p.course.weeks) " weeks (" (per_week) " a week), then every "
                (p.course.maintenance_interval_days) " days"
            }
            dt { "Done" } dd id="done" { (status.done) " of " (status.planned) }
            dt { "Phase" } dd id="phase" { (status.phase) }
            @if let Some(w) = status.week { dt { "Week" } dd { (w) } }
            dt { "Next due" }
            dd id="next-due" {
                @match status.next_due_us {
                    Some(t) => { "from " (date(&v, t)) },
                    None => "now (first infusion)",
                }
            }
        }
        h2 { "PHQ-9 before each infusion" }
        @if let Some(chart) = phq9_chart(&phq9) { (chart) }
        table id="phq9" {
            thead { tr { th { "Date" } th.num { "PHQ-9" } } }
            tbody {
                @for x in &phq9 {
                    tr.phq9-row { td { (date(&v, x.at_us)) } td.num { (x.value) } }
                }
            }
        }
        p {
            a.button.primary.big href={ "/screen/patients/" (p.id) "/checkin" } { "Check in for the next infusion" }
        }
    };
    frame(&v, Section::Patients, "Course", body)
}
