//! Check-in: the screening answers, the baseline, the scores before the session, the protocol
//! with its pump rate, the pre-infusion checklist and, where a contraindication is flagged, a
//! clinician's override. "Review" shows what the rules say; "Start session" starts it.
//!
//! The form comes back exactly as typed when anything is refused; the rules themselves are
//! `vigil_shared::clinical`'s, and the recorder checks them again whoever asks.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::care::{RiskScreenEntry, ScreeningEntry, latest_answers};
use vigil_shared::clinical::StaffRole;
use vigil_shared::clinical::risk::{CSSRS_QUESTIONS, PHQ9_ANSWERS, PHQ9_ITEMS, RiskLevel};
use vigil_shared::clinical::screening::{
    self, ANSWER_MAX_AGE_US, Answer, FlagOverride, ScreeningFlag, blocked_message, screening_gate,
};
use vigil_shared::clinical::{
    self, Indication, InfusionLimits, InfusionOrder, Instrument, PreInfusionChecklist, ScorePhase,
};
use vigil_shared::doc::{CheckIn, PatientRecord, Protocol, Score};
use vigil_web::layout::badge;
use vigil_web::url_encode;

use super::load::SessionParts;
use super::monitoring::room_now;
use super::view::patient_name;
use super::{
    CsrfForm, Section, Shared, Viewer, csrf_input, fail, frame, load, patient_or_404, read,
    refusal, require_treating, site_room,
};
use crate::recorder::{
    FlagOverrideInput, NewSession, OrderInput, PatientUpdate, RiskAssessmentInput, RiskScreenInput,
    ScreeningAnswerInput, SessionEvent,
};

/// What the check-in form holds; every field a string as typed, so a refused form comes back
/// exactly as it was.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct CheckInForm {
    action: Option<String>,
    bp_sys: Option<String>,
    bp_dia: Option<String>,
    hr: Option<String>,
    spo2: Option<String>,
    weight: Option<String>,
    gad7: Option<String>,
    dose: Option<String>,
    minutes: Option<String>,
    conc: Option<String>,
    prescriber: Option<String>,
    indication: Option<String>,
    c_escort: Option<String>,
    c_consent: Option<String>,
    c_npo: Option<String>,
    risk_decision: Option<String>,
    risk_note: Option<String>,
    /// The per-question fields: screening answers `f_<flag>` (`yes` or `no`) and a clinician's
    /// override reason `ovr_<flag>`; the PHQ-9 items `q1`-`q9` (0-3) and the C-SSRS answers
    /// `cs1`-`cs6` (present when "yes").
    #[serde(flatten)]
    risk: BTreeMap<String, String>,
}

/// Whether an earlier answer is still good for this check-in: at most 30 days old, and
/// pregnancy only if asked today.
fn still_current(e: &ScreeningEntry, now_us: i64, today_start_us: i64) -> bool {
    let pregnancy = e.flag == ScreeningFlag::Pregnancy.code();
    now_us - e.asked_us <= ANSWER_MAX_AGE_US && (!pregnancy || e.asked_us >= today_start_us)
}

impl CheckInForm {
    /// The form for this visit: the patient's answers still current (so a check-in within 30
    /// days asks only what is new, and pregnancy again), this visit's risk screen if taken.
    fn from_patient(
        v: &Viewer,
        screen: Option<&RiskScreenEntry>,
        answers: &[ScreeningEntry],
        now_us: i64,
    ) -> CheckInForm {
        let mut risk = BTreeMap::new();
        let today = v.zone.day_start(now_us);
        for a in latest_answers(answers) {
            if still_current(&a, now_us, today) {
                risk.insert(
                    format!("f_{}", a.flag),
                    if a.yes { "yes" } else { "no" }.into(),
                );
            }
        }
        if let Some(screen) = screen {
            for (i, v) in screen.phq9_items.iter().enumerate() {
                risk.insert(format!("q{}", i + 1), v.to_string());
            }
            for (i, yes) in screen.cssrs.iter().enumerate() {
                if *yes {
                    risk.insert(format!("cs{}", i + 1), "on".to_owned());
                }
            }
        }
        CheckInForm {
            dose: Some("0.5".into()),
            minutes: Some("40".into()),
            conc: Some("1".into()),
            prescriber: v.is_clinician().then(|| v.id.clone()),
            indication: Some(Indication::Depression.code().into()),
            risk,
            ..CheckInForm::default()
        }
    }

    /// The answer given to a flag, if any.
    fn answer(&self, flag: ScreeningFlag) -> Option<bool> {
        match self
            .risk
            .get(&format!("f_{}", flag.code()))
            .map(String::as_str)
        {
            Some("yes") => Some(true),
            Some("no") => Some(false),
            _ => None,
        }
    }

    /// The screening questions answered on the form.
    fn screening(&self) -> Vec<ScreeningAnswerInput> {
        ScreeningFlag::ALL
            .iter()
            .filter_map(|&f| {
                self.answer(f).map(|yes| ScreeningAnswerInput {
                    flag: f.code().to_owned(),
                    yes,
                })
            })
            .collect()
    }

    /// A clinician's override reason for a flag, as typed.
    fn override_reason(&self, flag: ScreeningFlag) -> &str {
        self.risk
            .get(&format!("ovr_{}", flag.code()))
            .map_or("", |r| r.trim())
    }

    /// The overrides given, one per flag with a reason.
    fn flag_overrides(&self) -> Vec<FlagOverrideInput> {
        ScreeningFlag::ALL
            .iter()
            .filter(|&&f| !self.override_reason(f).is_empty())
            .map(|&f| FlagOverrideInput {
                flag: f.code().to_owned(),
                reason: self.override_reason(f).to_owned(),
            })
            .collect()
    }

    fn phq9_item(&self, i: usize) -> &str {
        self.risk.get(&format!("q{i}")).map_or("", String::as_str)
    }

    fn cssrs_answer(&self, i: usize) -> bool {
        self.risk.contains_key(&format!("cs{i}"))
    }

    /// The suicide-risk screen as answered, or the first PHQ-9 item left unanswered.
    fn risk_screen(&self) -> Result<RiskScreenInput, String> {
        let phq9_items = (1..=9)
            .map(|i| {
                self.phq9_item(i)
                    .parse::<i64>()
                    .ok()
                    .filter(|v| (0..=3).contains(v))
                    .ok_or_else(|| format!("PHQ-9 item {i} is not answered"))
            })
            .collect::<Result<Vec<i64>, String>>()?;
        Ok(RiskScreenInput {
            phq9_items,
            cssrs: (1..=6).map(|i| self.cssrs_answer(i)).collect(),
        })
    }

    fn checklist(&self) -> PreInfusionChecklist {
        PreInfusionChecklist {
            escort_arranged: self.c_escort.is_some(),
            consent: self.c_consent.is_some(),
            nothing_by_mouth: self.c_npo.is_some(),
        }
    }
}

pub(crate) fn field(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// A required number from a form field, with the field's label in the error.
pub(crate) fn number<T: std::str::FromStr>(v: &Option<String>, label: &str) -> Result<T, String> {
    let text = field(v).trim();
    if text.is_empty() {
        return Err(format!("{label} is required"));
    }
    text.parse()
        .map_err(|_| format!("{label}: {text:?} is not a number"))
}

pub(crate) fn optional_number<T: std::str::FromStr>(
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
    risk: RiskScreenInput,
    gad7: i64,
    order: InfusionOrder,
}

/// A score typed before the session: a whole number in the instrument's range.
fn score_in_range(errors: &mut Vec<String>, instrument: Instrument, value: Option<f64>) {
    let range = instrument.range();
    if let Some(x) = value
        && !(x.fract() == 0.0 && range.contains(&(x as i64)))
    {
        errors.push(format!(
            "{} is a whole number from {} to {}",
            instrument.label(),
            range.start(),
            range.end()
        ));
    }
}

fn parse_checkin(f: &CheckInForm) -> Result<Parsed, Vec<String>> {
    let mut errors = Vec::new();
    let mut take = |r: Result<f64, String>| r.map_err(|e| errors.push(e)).ok();
    let sys = take(number(&f.bp_sys, "baseline systolic (mmHg)"));
    let dia = take(number(&f.bp_dia, "baseline diastolic (mmHg)"));
    let weight = take(number(&f.weight, "weight (kg)"));
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
    let risk = f.risk_screen().map_err(|e| errors.push(e)).ok();
    score_in_range(&mut errors, Instrument::Gad7, gad7);
    if let (Some(s), Some(d)) = (sys, dia)
        && let Err(e) = clinical::check_bp(s as i64, d as i64)
    {
        errors.push(format!("baseline {e}"));
    }
    if let Some(m) = minutes
        && !(m.fract() == 0.0 && m > 0.0)
    {
        errors.push("duration is a whole number of minutes".into());
    }
    match (sys, dia, weight, risk, gad7, dose, minutes, conc) {
        (Some(s), Some(d), Some(w), Some(risk), Some(g), Some(dose), Some(m), Some(c))
            if errors.is_empty() =>
        {
            Ok(Parsed {
                bp: (s as i64, d as i64),
                hr,
                spo2,
                risk,
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
    flags: Vec<ScreeningFlag>,
    plan: Option<clinical::PumpPlan>,
    blocked: Option<String>,
    risk: Option<RiskLevel>,
}

/// What the rules say of the form as it stands: errors, flags, the pump plan, the risk level
/// and what would block the start, given the patient's earlier screening answers (`known`).
fn review(
    f: &CheckInForm,
    viewer: &Viewer,
    limits: InfusionLimits,
    known: &[ScreeningEntry],
    now_us: i64,
) -> (Review, Option<Parsed>) {
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
    r.risk = f.risk_screen().ok().map(|x| {
        let screen = RiskScreenEntry {
            id: String::new(),
            phq9_items: x.phq9_items,
            cssrs: x.cssrs,
            at_us: 0,
            by: String::new(),
            assessment: None,
        };
        screen.level()
    });
    let high_bp = parsed
        .as_ref()
        .is_some_and(|p| clinical::high_baseline_bp(p.bp.0, p.bp.1));
    r.flags = ScreeningFlag::ALL
        .iter()
        .copied()
        .filter(|&fl| {
            f.answer(fl) == Some(true) || (fl == ScreeningFlag::UncontrolledHypertension && high_bp)
        })
        .collect();
    if let Some(p) = &parsed {
        match clinical::pump_plan(&p.order, &r.limits) {
            Ok(plan) => r.plan = Some(plan),
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    // The checklist first; then the recorder's own screening gate over what the form says,
    // as asked now, on top of the patient's earlier answers (the recorder checks it again).
    let missing = f.checklist().missing();
    let today = viewer.zone.day_start(now_us);
    let mut answers: Vec<Answer> = latest_answers(known)
        .iter()
        .filter_map(ScreeningEntry::answer)
        .collect();
    answers.extend(ScreeningFlag::ALL.iter().filter_map(|&flag| {
        f.answer(flag).map(|yes| Answer {
            flag,
            yes,
            asked_us: now_us,
        })
    }));
    let by_role = if viewer.is_clinician() {
        StaffRole::Clinician
    } else {
        StaffRole::Nurse
    };
    let overrides: Vec<FlagOverride> = ScreeningFlag::ALL
        .iter()
        .map(|&flag| FlagOverride {
            flag,
            reason: f.override_reason(flag).to_owned(),
            by_role,
        })
        .collect();
    if !missing.is_empty() {
        r.blocked = Some(format!(
            "start blocked: the checklist misses {}",
            missing.join(", ")
        ));
    } else if let Err(blocks) = screening_gate(&answers, &overrides, high_bp, now_us, today) {
        r.blocked = Some(blocked_message(&blocks));
    }
    (r, parsed)
}

fn checkbox(name: &str, val: &Option<String>, label: &str) -> Markup {
    html! {
        label.check { input type="checkbox" name=(name) id=(name) checked[val.is_some()]; " " (label) }
    }
}

fn text_input(name: &str, val: &Option<String>, label: &str, mode: &str) -> Markup {
    html! {
        label { (label) input name=(name) id=(name) value=(field(val)) inputmode=(mode); }
    }
}

fn review_panel(r: &Review) -> Markup {
    html! {
        section.card id="review" {
            h2 { "Review" }
            @if !r.errors.is_empty() {
                ul.error id="errors" { @for e in &r.errors { li { (e) } } }
            }
            @if r.flags.is_empty() {
                p id="flags" { "No contraindication flagged." }
            } @else {
                ul.flags id="flags" {
                    @for fl in &r.flags {
                        li.flag data-flag=(fl.code()) { (badge("high", "contraindication")) " " (fl.label()) }
                    }
                }
            }
            @if let Some(level) = r.risk {
                p id="risk-level" {
                    @if level == RiskLevel::None {
                        "Suicide-risk screen: no positive answer."
                    } @else {
                        (badge("high", "suicide risk")) " " (level.code())
                        ": a clinician assesses before the start and records a decision."
                    }
                }
            }
            @if let Some(plan) = &r.plan {
                dl.facts id="plan" {
                    dt { "Total dose" } dd id="total-mg" { (plan.total_mg) " mg" }
                    dt { "Volume" } dd { (plan.volume_ml) " mL" }
                    dt { "Pump rate" }
                    dd { b id="rate-mg-h" { (plan.rate_mg_per_h) " mg/h" } " = " b id="rate-ml-h" { (plan.rate_ml_per_h) " mL/h" } }
                    dt { "Site limits" }
                    dd {
                        "within (≤ " (r.limits.max_dose_mg_per_kg) " mg/kg, ≤ " (r.limits.max_total_mg)
                        " mg, ≤ " (r.limits.max_rate_mg_per_h) " mg/h)"
                    }
                }
            }
            @if let Some(b) = &r.blocked { p.error id="blocked" { (b) } }
        }
    }
}

/// Every screening question, yes or no (answers of the last 30 days filled in, pregnancy
/// asked at every visit); for a clinician, a reason per flag to start despite a "yes"; the
/// patient's medications with the interacting ones marked.
fn screening_card(v: &Viewer, p: &PatientRecord, f: &CheckInForm) -> Markup {
    let interacting = screening::interactions(&p.medications);
    html! {
        section.card id="screening" {
            h2 { "Screening" }
            p.muted {
                "Ask every question; an answer of the last 30 days is filled in, pregnancy is asked at every visit. "
                @if v.is_clinician() {
                    "For a \"yes\", your reason for starting anyway."
                } @else {
                    "A \"yes\" needs a clinician's reason before the start: a clinician signs in to give it."
                }
            }
            table {
                tbody {
                    @for &fl in ScreeningFlag::ALL {
                        @let code = fl.code();
                        @let name = format!("f_{code}");
                        tr id={ "q-" (code) } {
                            th { (fl.label()) }
                            td {
                                label.check {
                                    input type="radio" name=(name) value="yes" id={ (name) "_yes" } checked[f.answer(fl) == Some(true)];
                                    " yes"
                                }
                            }
                            td {
                                label.check {
                                    input type="radio" name=(name) value="no" id={ (name) "_no" } checked[f.answer(fl) == Some(false)];
                                    " no"
                                }
                            }
                            @if v.is_clinician() {
                                td {
                                    input name={ "ovr_" (code) } id={ "ovr_" (code) } placeholder="reason, if yes"
                                        value=(f.override_reason(fl));
                                }
                            }
                        }
                    }
                }
            }
            p id="medications" {
                "Medications: "
                @if p.medications.is_empty() { "none recorded" }
                @for (i, m) in p.medications.iter().enumerate() {
                    @if i > 0 { ", " }
                    (m)
                    @if let Some((class, _)) = interacting.iter().find(|(_, name)| *name == m.as_str()) {
                        " " (badge("warn", &format!("interacts: {}", class.label())))
                    }
                }
            }
        }
    }
}

/// The PHQ-9 item by item and the C-SSRS screener; for a clinician, the assessment of a
/// positive screen.
fn risk_card(v: &Viewer, f: &CheckInForm) -> Markup {
    html! {
        section.card id="risk" {
            h2 { "PHQ-9 and suicide-risk screen" }
            p.muted { "Over the last two weeks, how often bothered by:" }
            div.row {
                @for (i, item) in PHQ9_ITEMS.iter().enumerate() {
                    @let name = format!("q{}", i + 1);
                    label {
                        (i + 1) ". " (item)
                        select name=(name) id=(name) {
                            option value="" { "–" }
                            @for (v, answer) in PHQ9_ANSWERS.iter().enumerate() {
                                option value=(v) selected[f.phq9_item(i + 1) == v.to_string()] { (v) ": " (answer) }
                            }
                        }
                    }
                }
            }
            p.muted { "C-SSRS screener, since the last visit:" }
            @for (i, q) in CSSRS_QUESTIONS.iter().enumerate() {
                @let name = format!("cs{}", i + 1);
                label.check {
                    input type="checkbox" name=(name) id=(name) checked[f.cssrs_answer(i + 1)];
                    " " (q)
                }
            }
            @if v.is_clinician() {
                h3 { "Clinician's assessment of a positive screen" }
                div.row {
                    label {
                        "Decision"
                        select name="risk_decision" id="risk_decision" {
                            option value="" { "–" }
                            @for (code, label) in RISK_DECISIONS {
                                option value=(code) selected[f.risk_decision.as_deref() == Some(code)] { (label) }
                            }
                        }
                    }
                    label { "Assessment" textarea name="risk_note" id="risk_note" rows="2" { (field(&f.risk_note)) } }
                }
            }
        }
    }
}

/// A clinician's decisions after assessing a positive screen, as the form offers them.
const RISK_DECISIONS: [(&str, &str); 3] = [
    ("proceed", "Safe to proceed today"),
    ("defer", "Defer today's infusion"),
    ("refer", "Refer for urgent care"),
];

/// What the check-in page shows besides the form: who may prescribe, and the patient's last
/// infusion in this room.
struct Context {
    clinicians: Vec<(String, String)>,
    last: Option<SessionParts>,
    /// The patient's screening answers so far.
    answers: Vec<ScreeningEntry>,
}

/// Reads the page's [`Context`].
async fn context(s: &Shared, patient_id: &str) -> Result<Context, super::Failure> {
    let (site, _) = site_room(s);
    let pid = patient_id.to_owned();
    read(s, move |conn| {
        Ok(Context {
            clinicians: load::clinicians(conn, &site),
            last: load::last_infusion(conn, &pid)?,
            answers: load::screening_answers(conn, &pid)?,
        })
    })
    .await
}

/// The last infusion, as the nurse checks it before this one: the dose delivered, the highest
/// rate, the effects and advisories, the scores after, how it ended.
fn last_infusion_card(v: &Viewer, last: &SessionParts) -> Markup {
    let m = &last.meta;
    let delivered = clinical::delivered(&m.dose_events, m.ended_us.unwrap_or(m.created_us));
    let top_rate = m
        .dose_events
        .iter()
        .filter_map(|d| d.rate_mg_per_h)
        .fold(0.0_f64, f64::max);
    let post = |i: Instrument| {
        m.scores
            .iter()
            .filter(|s| s.instrument == i.code() && s.phase == ScorePhase::Post.code())
            .max_by_key(|s| s.at_us)
            .map(|s| s.value)
    };
    html! {
        section.card id="last-infusion" {
            h2 { "Last infusion in this room" }
            dl.facts {
                dt { "When" }
                dd { (m.started_us.map(|t| format!("{} {}", v.zone.day(t), v.zone.clock(t))).unwrap_or_default()) }
                dt { "Dose" }
                dd {
                    (format!("{:.1}", delivered.mg)) " mg delivered of "
                    (format!("{:.1}", m.protocol.dose_mg_per_kg * m.protocol.weight_kg)) " mg planned ("
                    (m.protocol.dose_mg_per_kg) " mg/kg), highest rate " (top_rate) " mg/h"
                }
                dt { "Effects" }
                dd {
                    @if m.observations.is_empty() { "none recorded" }
                    @for (i, o) in m.observations.iter().enumerate() {
                        @if i > 0 { ", " }
                        (o.effect.replace('_', " ")) " (" (o.severity) ")"
                    }
                    @if !last.care.adverse_events.is_empty() {
                        " · " (badge("bad", "adverse event")) " "
                        (last.care.adverse_events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>().join(", "))
                    }
                }
                dt { "Advisories" }
                dd {
                    @if m.advisories.is_empty() { "none" }
                    @for (i, a) in m.advisories.iter().enumerate() {
                        @if i > 0 { ", " }
                        (a.kind.replace('_', " ")) " (" (a.priority) ")"
                    }
                }
                dt { "After" }
                dd {
                    "CADSS " (post(Instrument::Cadss).map_or("–".to_owned(), |x| x.to_string()))
                    " · modified Aldrete " (post(Instrument::Aldrete).map_or("–".to_owned(), |x| x.to_string()))
                }
            }
        }
    }
}

fn checkin_page(
    v: &Viewer,
    p: &PatientRecord,
    f: &CheckInForm,
    ctx: &Context,
    r: Option<&Review>,
) -> Markup {
    let clinicians = &ctx.clinicians;
    html! {
        h1 { "Check-in · " (patient_name(p)) }
        p.muted {
            "Born " (p.birth_date) " · course: " (p.course.phase) ", " (clinical::planned_infusions(&p.course))
            " infusions planned · " a href={ "/screen/patients/" (p.id) "/course" } { "course" }
        }
        @if let Some(r) = r { (review_panel(r)) }
        @if let Some(last) = &ctx.last { (last_infusion_card(v, last)) }
        form.checkin method="post" action={ "/screen/patients/" (p.id) "/checkin" } {
            (csrf_input(v))
            (screening_card(v, p, f))
            section.card.row {
                h2 { "Baseline" }
                (text_input("bp_sys", &f.bp_sys, "Systolic (mmHg)", "numeric"))
                (text_input("bp_dia", &f.bp_dia, "Diastolic (mmHg)", "numeric"))
                (text_input("hr", &f.hr, "Heart rate (/min)", "numeric"))
                (text_input("spo2", &f.spo2, "SpO2 (%)", "numeric"))
                (text_input("weight", &f.weight, "Weight (kg)", "decimal"))
            }
            (risk_card(v, f))
            section.card.row {
                h2 { "Scores before the session" }
                (text_input("gad7", &f.gad7, &Instrument::Gad7.label_with_range(), "numeric"))
            }
            section.card.row {
                h2 { "Protocol: ketamine IV" }
                (text_input("dose", &f.dose, "Dose (mg/kg)", "decimal"))
                (text_input("minutes", &f.minutes, "Duration (min)", "numeric"))
                (text_input("conc", &f.conc, "Concentration (mg/mL)", "decimal"))
                label {
                    "Prescriber"
                    select name="prescriber" id="prescriber" {
                        option value="" { "—" }
                        @for (id, name) in clinicians {
                            option value=(id) selected[f.prescriber.as_deref() == Some(id.as_str())] { (name) }
                        }
                    }
                }
                label {
                    "Indication"
                    select name="indication" id="indication" {
                        @for &i in Indication::ALL {
                            option value=(i.code()) selected[f.indication.as_deref() == Some(i.code())] { (i.label()) }
                        }
                    }
                }
            }
            section.card {
                h2 { "Pre-infusion checklist" }
                (checkbox("c_escort", &f.c_escort, "Escort home arranged"))
                (checkbox("c_consent", &f.c_consent, "Consent signed"))
                (checkbox("c_npo", &f.c_npo, "Nothing by mouth"))
            }
            p.actions {
                button.big type="submit" name="action" value="review" id="review-btn" { "Review" }
                " "
                button.primary.big type="submit" name="action" value="start" id="start" { "Start session" }
            }
        }
    }
}

/// `GET /screen/patients/{id}/checkin`: the form, filled from the patient's last answers.
pub(crate) async fn checkin(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let p = match patient_or_404(&s, &v, &id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (now_us, _) = room_now(&s);
    let pid = id.clone();
    let screen = read(&s, move |conn| {
        load::current_risk_screen(conn, &pid, now_us)
    });
    let (screen, ctx) = match tokio::try_join!(screen, context(&s, &id)) {
        Ok(x) => x,
        Err(e) => return fail(&v, e),
    };
    let f = CheckInForm::from_patient(&v, screen.as_ref(), &ctx.answers, now_us);
    frame(
        &v,
        Section::Patients,
        "Check-in",
        checkin_page(&v, &p, &f, &ctx, None),
    )
}

/// `POST /screen/patients/{id}/checkin`: "Review" shows what the rules say; "Start session"
/// starts the session, records the scores before it and the PHQ-9 in the patient's course.
pub(crate) async fn checkin_submit(
    State(s): State<Shared>,
    Path(id): Path<String>,
    CsrfForm(v, f): CsrfForm<CheckInForm>,
) -> Response {
    let p = match patient_or_404(&s, &v, &id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (site, _) = site_room(&s);
    let limits = read(&s, move |conn| {
        Ok(crate::reads::infusion_limits(conn, &site))
    });
    let (limits, ctx) = match tokio::try_join!(limits, context(&s, &id)) {
        Ok(x) => x,
        Err(e) => return fail(&v, e),
    };
    let (now_us, _) = room_now(&s);
    let (r, parsed) = review(&f, &v, limits, &ctx.answers, now_us);
    let again = |status: StatusCode, r: &Review| {
        (
            status,
            frame(
                &v,
                Section::Patients,
                "Check-in",
                checkin_page(&v, &p, &f, &ctx, Some(r)),
            ),
        )
            .into_response()
    };
    let recorder = &s.api.recorder;
    // The screening answers go to the patient's record whatever happens next (a blocked
    // start included), so the clinician asked to override sees what was answered. An answer
    // filled in from an earlier check-in and left as it was keeps its time.
    let today = v.zone.day_start(now_us);
    let known = latest_answers(&ctx.answers);
    let asked: Vec<ScreeningAnswerInput> = f
        .screening()
        .into_iter()
        .filter(|a| {
            !known
                .iter()
                .any(|k| k.flag == a.flag && k.yes == a.yes && still_current(k, now_us, today))
        })
        .collect();
    if !asked.is_empty()
        && let Err(e) = recorder
            .record_screening(id.clone(), asked, v.id.clone())
            .await
    {
        return fail(&v, refusal(e));
    }
    // So are the risk answers, with the patient, for the clinician asked to assess them.
    if let Ok(screen) = f.risk_screen()
        && let Err(e) = recorder
            .record_risk_screen(id.clone(), screen, v.id.clone())
            .await
    {
        return fail(&v, refusal(e));
    }
    if f.action.as_deref() != Some("start") {
        return again(StatusCode::OK, &r);
    }
    if let Err(r) = require_treating(&v) {
        return r;
    }
    // A clinician's assessment given with the start is recorded before it.
    if let Some(decision) = f.risk_decision.as_deref().filter(|d| !d.is_empty()) {
        let assessment = RiskAssessmentInput {
            decision: decision.to_owned(),
            note: field(&f.risk_note).trim().to_owned(),
            by: v.id.clone(),
        };
        if let Err(e) = recorder.assess_risk(id.clone(), assessment).await {
            let (status, msg) = refusal(e);
            let r = Review {
                blocked: Some(msg),
                ..r
            };
            return again(status, &r);
        }
    }
    let (Some(parsed), Some(plan), true) = (parsed, r.plan, r.errors.is_empty()) else {
        return again(StatusCode::UNPROCESSABLE_ENTITY, &r);
    };
    if r.blocked.is_some() {
        tracing::info!(patient = %id, staff = %v.id, "start blocked at check-in");
        return again(StatusCode::CONFLICT, &r);
    }
    let checkin = CheckIn {
        // Set by the recorder when it writes the record.
        at_us: 0,
        by: v.id.clone(),
        baseline_systolic: parsed.bp.0,
        baseline_diastolic: parsed.bp.1,
        baseline_hr: parsed.hr,
        baseline_spo2: parsed.spo2,
        // The flags and their overrides are the recorder's to write, from the answers it
        // checked.
        flags: Vec::new(),
        override_reason: None,
        override_by: None,
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
        order: Some(OrderInput {
            prescriber: field(&f.prescriber).to_owned(),
            indication: field(&f.indication).to_owned(),
            rate_min_mg_per_h: None,
            rate_max_mg_per_h: None,
        }),
        risk_screen: Some(parsed.risk.clone()),
        screening: Vec::new(),
        flag_overrides: f.flag_overrides(),
    };
    let meta = match recorder.start_session(new, Some(checkin)).await {
        Ok(m) => m,
        Err(e) => {
            let (status, msg) = refusal(e);
            let r = Review {
                blocked: Some(msg),
                ..r
            };
            return again(status, &r);
        }
    };
    let pre = ScorePhase::Pre.code();
    for (instrument, value) in [
        (Instrument::Phq9, parsed.risk.phq9_items.iter().sum()),
        (Instrument::Gad7, parsed.gad7),
    ] {
        let event = SessionEvent::Score {
            instrument: instrument.code().into(),
            phase: pre.into(),
            value,
            by: v.id.clone(),
        };
        if let Err(e) = recorder.add_event(meta.id.clone(), event).await {
            return fail(&v, refusal(e));
        }
    }
    // The course record: one pre-session PHQ-9 per infusion, in the patient's document so
    // every room of the site sees the course.
    let update = PatientUpdate {
        add_outcome_scores: vec![Score {
            id: format!("{}:phq9:pre", meta.id),
            at_us: meta.started_us.unwrap_or(meta.created_us),
            instrument: Instrument::Phq9.code().into(),
            phase: pre.into(),
            value: parsed.risk.phq9_items.iter().sum(),
            by: v.id.clone(),
        }],
        ..PatientUpdate::default()
    };
    if let Err(e) = recorder.update_patient(id, update).await {
        return fail(&v, refusal(e));
    }
    Redirect::to(&format!("/screen/sessions/{}", url_encode(&meta.id))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PHQ-9 answers `items` and C-SSRS "yes" to the questions numbered in `yes`.
    fn answers(items: [i64; 9], yes: &[usize]) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = (1..=9)
            .map(|i| (format!("q{i}"), items[i - 1].to_string()))
            .collect();
        for i in yes {
            m.insert(format!("cs{i}"), "on".into());
        }
        m
    }

    #[test]
    fn a_checkin_form_parses_or_names_what_is_wrong() {
        let good = CheckInForm {
            bp_sys: Some("128".into()),
            bp_dia: Some("82".into()),
            weight: Some("70".into()),
            risk: answers([2, 2, 2, 2, 2, 2, 2, 2, 2], &[1]),
            gad7: Some("12".into()),
            dose: Some("0.5".into()),
            minutes: Some("40".into()),
            conc: Some("0.5".into()),
            ..CheckInForm::default()
        };
        let p = parse_checkin(&good).unwrap();
        assert_eq!((p.bp, p.order.minutes), ((128, 82), 40));
        assert_eq!(p.risk.phq9_items.iter().sum::<i64>(), 18);
        assert_eq!(p.risk.cssrs, [true, false, false, false, false, false]);
        let mut missing_item = answers([2; 9], &[]);
        missing_item.insert("q9".into(), "4".into());
        let bad = CheckInForm {
            risk: missing_item,
            gad7: Some("2.5".into()),
            weight: Some("seventy".into()),
            bp_sys: None,
            ..good
        };
        let errors = parse_checkin(&bad).err().unwrap().join("; ");
        for part in [
            "PHQ-9 item 9 is not answered",
            "GAD-7 is a whole number from 0 to 21",
            "weight (kg): \"seventy\"",
            "systolic (mmHg) is required",
        ] {
            assert!(errors.contains(part), "{errors}");
        }
    }
}
