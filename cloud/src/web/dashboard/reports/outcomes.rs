//! `GET /reports/outcomes` and its CSV: every course of treatment by site, whether its
//! induction was completed, and the PHQ-9 from baseline to the end of induction with the
//! response and remission rates (`clinical::outcomes` decides who counts).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use vigil_shared::clinical::outcomes::phq9_outcome;
use vigil_web::csv_row;

use super::pct;
use crate::store::OutcomeSite;
use crate::web::dashboard::read;
use crate::web::dashboard::{Section, Viewer, audit_view, csv_response, empty_row, frame};
use crate::web::extract::ClientIp;
use crate::web::state::Shared;

/// One site's course completion and PHQ-9 outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteOutcome {
    /// Site.
    pub site: String,
    /// Patients with at least one session.
    pub patients: u64,
    /// Of them, patients who completed as many sessions as their induction plans.
    pub induction_completed: u64,
    /// Patients who count towards response and remission: a baseline PHQ-9 of at least 10
    /// and an end-of-induction score (`clinical::outcomes`).
    pub with_phq9: u64,
    /// Mean baseline PHQ-9 of those.
    pub mean_baseline: Option<f64>,
    /// Mean end-of-induction PHQ-9 of those.
    pub mean_latest: Option<f64>,
    /// End of induction at most half the baseline.
    pub responders: u64,
    /// End of induction below 5.
    pub remitters: u64,
}

/// The outcomes by site.
pub fn outcome_report(inputs: &[OutcomeSite]) -> Vec<SiteOutcome> {
    inputs
        .iter()
        .map(|site| {
            let mut o = SiteOutcome {
                site: site.site.clone(),
                patients: site.patients.len() as u64,
                induction_completed: 0,
                with_phq9: 0,
                mean_baseline: None,
                mean_latest: None,
                responders: 0,
                remitters: 0,
            };
            let (mut sum_first, mut sum_last) = (0_i64, 0_i64);
            for p in &site.patients {
                if p.planned > 0 && p.done_us.len() as u64 >= p.planned {
                    o.induction_completed += 1;
                }
                let outcome = phq9_outcome(&p.phq9, &p.done_us, p.planned);
                if let (true, Some(first), Some(last)) = (
                    outcome.evaluable,
                    outcome.baseline,
                    outcome.end_of_induction,
                ) {
                    o.with_phq9 += 1;
                    sum_first += first;
                    sum_last += last;
                    o.responders += u64::from(outcome.response);
                    o.remitters += u64::from(outcome.remission);
                }
            }
            if o.with_phq9 > 0 {
                o.mean_baseline = Some(sum_first as f64 / o.with_phq9 as f64);
                o.mean_latest = Some(sum_last as f64 / o.with_phq9 as f64);
            }
            o
        })
        .collect()
}

/// Every course in the viewer's scope, by site.
async fn outcome_data(s: &Arc<Shared>, viewer: &Viewer) -> Result<Vec<SiteOutcome>, Response> {
    let scope = viewer.who.scope().clone();
    let inputs = read(s, move |store| store.outcome_inputs(&scope))
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(outcome_report(&inputs))
}

/// A mean to a tenth; a dash for none.
fn mean(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.1}"))
}

/// `GET /reports/outcomes`.
pub(crate) async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
) -> Response {
    let report = match outcome_data(&s, &viewer).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "view outcomes report", "all courses").await {
        return r;
    }
    let body = html! {
        h1 { "Courses and outcomes" }
        p.muted {
            "Every patient with a session at the site. Induction completed: as many completed \
             sessions as the course plans (6 when the patient record has not arrived). PHQ-9 \
             from the baseline (the first total before the first infusion) to the end of \
             induction (the last total 12 hours to 3½ days after the induction's last infusion; \
             not a maintenance score), from the course record (the outcome scores in the \
             patient record, or else the totals recorded in sessions). Only patients whose \
             baseline is 10 or more count: response is an end-of-induction score at most half \
             the baseline, remission one below 5. "
            a href="/reports/outcomes.csv" id="csv" { "Download CSV" }
        }
        (outcome_table(&report))
    };
    frame(&viewer, Section::Outcomes, "Outcomes", body)
}

/// A row per site: patients, completed inductions, the evaluable, PHQ-9 means and rates.
fn outcome_table(report: &[SiteOutcome]) -> Markup {
    html! {
        table id="outcomes" {
            thead {
                tr {
                    th { "Site" } th.num { "Patients" } th.num { "Induction completed" }
                    th.num { "Evaluable (baseline ≥ 10)" }
                    th.num { "PHQ-9 baseline → end of induction" } th.num { "Response" }
                    th.num { "Remission" }
                }
            }
            tbody {
                @for o in report {
                    tr {
                        td { (o.site) }
                        td.num { (o.patients) }
                        td.num {
                            (o.induction_completed)
                            " (" (pct(o.induction_completed, o.patients)) ")"
                        }
                        td.num { (o.with_phq9) }
                        td.num { (mean(o.mean_baseline)) " → " (mean(o.mean_latest)) }
                        td.num { (pct(o.responders, o.with_phq9)) }
                        td.num { (pct(o.remitters, o.with_phq9)) }
                    }
                }
                @if report.is_empty() { (empty_row(7, "No courses yet.")) }
            }
        }
    }
}

/// `GET /reports/outcomes.csv`.
pub(crate) async fn csv(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
) -> Response {
    let report = match outcome_data(&s, &viewer).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "export outcomes csv", "all courses").await {
        return r;
    }
    let mut out = csv_row(&[
        "site",
        "patients",
        "induction_completed",
        "evaluable",
        "mean_phq9_baseline",
        "mean_phq9_end_of_induction",
        "responders",
        "remitters",
    ]);
    for o in &report {
        out.push_str(&csv_row(&[
            o.site.clone(),
            o.patients.to_string(),
            o.induction_completed.to_string(),
            o.with_phq9.to_string(),
            o.mean_baseline.map_or(String::new(), |v| format!("{v:.2}")),
            o.mean_latest.map_or(String::new(), |v| format!("{v:.2}")),
            o.responders.to_string(),
            o.remitters.to_string(),
        ]));
    }
    csv_response("outcomes.csv", out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_response_and_remission() {
        use crate::store::PatientOutcomeInput;
        const D: i64 = 86_400_000_000;
        // Six infusions on days 1-6; the baseline the day before, the end of induction the
        // day after the last.
        let done: Vec<i64> = (1..=6).map(|d| d * D).collect();
        let patient = |id: &str, planned: u64, n_done: usize, baseline: i64, end: Option<i64>| {
            let mut phq9 = vec![(0, baseline)];
            phq9.extend(end.map(|e| (7 * D, e)));
            PatientOutcomeInput {
                patient: id.into(),
                planned,
                done_us: done[..n_done].to_vec(),
                phq9,
            }
        };
        let inputs = [OutcomeSite {
            site: "austin".into(),
            patients: vec![
                patient("p1", 6, 6, 20, Some(9)), // response (9 ≤ 10), no remission
                patient("p2", 6, 6, 14, Some(4)), // response and remission
                patient("p3", 6, 6, 18, None),    // no end-of-induction score
                patient("p4", 6, 6, 10, Some(8)), // neither
                patient("p5", 6, 6, 7, Some(2)),  // baseline under 10: not counted
                patient("p6", 6, 3, 20, Some(3)), // induction not complete
            ],
        }];
        let o = &outcome_report(&inputs)[0];
        assert_eq!((o.patients, o.induction_completed, o.with_phq9), (6, 5, 3));
        assert_eq!((o.responders, o.remitters), (2, 1));
        assert_eq!(o.mean_baseline, Some((20.0 + 14.0 + 10.0) / 3.0));
        assert_eq!(o.mean_latest, Some((9.0 + 4.0 + 8.0) / 3.0));
    }
}
