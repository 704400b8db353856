//! Adverse events on the room screen, apart from the expected effects (the side-effect buttons):
//! what happened, when, how bad, whether serious, what was given, how it ended; and a
//! clinician's review, due within 24 hours for a serious one. The rules are
//! `vigil_shared::clinical::adverse`'s; the recorder checks them whoever asks.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::care::AdverseEntry;
use vigil_shared::clinical::Severity;
use vigil_shared::clinical::adverse::{EventOutcome, Rescue, Seriousness};
use vigil_web::layout::badge;
use vigil_web::url_encode;

use super::checkin::{field, optional_number};
use super::monitoring::room_now;
use super::session::record;
use super::view::{clock, who};
use super::{CsrfForm, Shared, Viewer, csrf_input, error_page, require_treating};
use crate::recorder::{InterventionInput, SessionEvent};

fn label<T: Copy>(
    parse: impl Fn(&str) -> Result<T, vigil_shared::clinical::UnknownTerm>,
    show: impl Fn(T) -> &'static str,
    code: &str,
) -> String {
    parse(code).map_or_else(|_| code.to_owned(), |t| show(t).to_owned())
}

/// One recorded event, with the review button for a clinician while it is unreviewed.
fn event_row(v: &Viewer, sid: &str, e: &AdverseEntry, names: &BTreeMap<String, String>) -> Markup {
    html! {
        li.adverse data-id=(e.id) {
            b { (e.event) }
            " · " (label(Severity::parse, Severity::label, &e.severity))
            @if let Some(s) = &e.seriousness {
                " " (badge("bad", &format!("serious: {}", label(Seriousness::parse, Seriousness::label, s))))
            }
            " · onset " (clock(v, e.onset_us))
            @if let Some(end) = e.end_us { ", ended " (clock(v, end)) }
            " · " (label(EventOutcome::parse, EventOutcome::label, &e.outcome))
            @for i in &e.interventions {
                " · " (label(Rescue::parse, Rescue::label, &i.rescue)) " " (i.dose) " " (i.route) " at " (clock(v, i.at_us))
            }
            " · recorded by " (who(names, &e.by))
            @match (&e.reviewed_by, e.reviewed_us) {
                (Some(by), Some(at)) => { " · reviewed by " (who(names, by)) " at " (clock(v, at)) }
                _ => {
                    " " (badge("warn", "awaiting a clinician's review"))
                    @if v.is_clinician() {
                        form.inline method="post" action={ "/screen/sessions/" (sid) "/adverse/" (e.id) "/review" } {
                            (csrf_input(v))
                            button type="submit" class="review" { "Reviewed" }
                        }
                    }
                }
            }
        }
    }
}

/// The adverse-events card: the events recorded so far and the form for a new one.
pub(crate) fn card(
    v: &Viewer,
    sid: &str,
    events: &[AdverseEntry],
    names: &BTreeMap<String, String>,
) -> Markup {
    html! {
        section.card id="adverse" {
            h2 { "Adverse event" }
            p.muted {
                "For what is unexpected or severe; expected effects (mild or moderate dissociation, \
                 nausea …) go under Side effect."
            }
            @if !events.is_empty() {
                ul.advisories id="adverse-events" { @for e in events { (event_row(v, sid, e, names)) } }
            }
            form.buttons method="post" action={ "/screen/sessions/" (sid) "/adverse" } {
                (csrf_input(v))
                label { "What happened" input name="event" id="ae-event" required; }
                label { "Onset (minutes ago)" input name="onset_min_ago" id="ae-onset" inputmode="numeric" value="0"; }
                label { "Ended (minutes ago; blank if ongoing)" input name="ended_min_ago" id="ae-ended" inputmode="numeric"; }
                label {
                    "Severity"
                    select name="severity" id="ae-severity" {
                        @for &s in Severity::ALL { option value=(s.code()) { (s.label()) } }
                    }
                }
                label {
                    "Serious?"
                    select name="seriousness" id="ae-seriousness" {
                        option value="" { "not serious" }
                        @for &s in Seriousness::ALL { option value=(s.code()) { (s.label()) } }
                    }
                }
                label {
                    "Given"
                    select name="rescue" id="ae-rescue" {
                        option value="" { "nothing" }
                        @for &r in Rescue::ALL { option value=(r.code()) { (r.label()) } }
                    }
                }
                label { "Dose" input name="dose" id="ae-dose" placeholder="4 mg"; }
                label { "Route" input name="route" id="ae-route" placeholder="iv"; }
                label {
                    "Outcome"
                    select name="outcome" id="ae-outcome" {
                        @for &o in EventOutcome::ALL { option value=(o.code()) { (o.label()) } }
                    }
                }
                button.big.danger type="submit" id="record-adverse" { "Record adverse event" }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AdverseForm {
    event: Option<String>,
    onset_min_ago: Option<String>,
    ended_min_ago: Option<String>,
    severity: Option<String>,
    seriousness: Option<String>,
    rescue: Option<String>,
    dose: Option<String>,
    route: Option<String>,
    outcome: Option<String>,
}

fn session_path(id: &str) -> String {
    format!("/screen/sessions/{}", url_encode(id))
}

/// `POST /screen/sessions/{id}/adverse`.
pub(crate) async fn record_event(
    State(s): State<Shared>,
    Path(id): Path<String>,
    CsrfForm(v, f): CsrfForm<AdverseForm>,
) -> Response {
    if let Err(r) = require_treating(&v) {
        return r;
    }
    let times = optional_number::<u32>(&f.onset_min_ago, "onset (minutes ago)").and_then(|onset| {
        optional_number::<u32>(&f.ended_min_ago, "ended (minutes ago)").map(|end| (onset, end))
    });
    let (onset, ended) = match times {
        Ok(t) => t,
        Err(e) => return error_page(&v, StatusCode::UNPROCESSABLE_ENTITY, &e),
    };
    let (now_us, _) = room_now(&s);
    let ago = |minutes: u32| now_us - i64::from(minutes) * 60_000_000;
    let onset_us = ago(onset.unwrap_or(0));
    let interventions = match f.rescue.as_deref().filter(|r| !r.is_empty()) {
        Some(rescue) => vec![InterventionInput {
            rescue: rescue.to_owned(),
            dose: field(&f.dose).trim().to_owned(),
            route: field(&f.route).trim().to_owned(),
            at_us: None,
        }],
        None => Vec::new(),
    };
    let event = SessionEvent::AdverseEvent {
        event: field(&f.event).trim().to_owned(),
        onset_us: Some(onset_us),
        end_us: ended.map(ago),
        severity: f.severity.unwrap_or_default(),
        seriousness: f.seriousness.filter(|x| !x.is_empty()),
        interventions,
        outcome: f.outcome.unwrap_or_default(),
        by: v.id.clone(),
    };
    let back = session_path(&id);
    record(&s, &v, id, event, &back).await
}

/// `POST /screen/sessions/{id}/adverse/{event}/review` (clinicians).
pub(crate) async fn review(
    State(s): State<Shared>,
    Path((id, event_id)): Path<(String, String)>,
    CsrfForm(v, _): CsrfForm<super::NoFields>,
) -> Response {
    if !v.is_clinician() {
        return error_page(
            &v,
            StatusCode::FORBIDDEN,
            "only a clinician may review an adverse event",
        );
    }
    let back = session_path(&id);
    let event = SessionEvent::ReviewAdverse {
        event_id,
        by: v.id.clone(),
    };
    record(&s, &v, id, event, &back).await
}
