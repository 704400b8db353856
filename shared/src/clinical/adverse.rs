//! Adverse events, kept apart from the expected effects of a ketamine infusion.
//!
//! Mild or moderate dissociation, nausea, dizziness, blurred vision, headache and a transient
//! rise in blood pressure are what the infusion is expected to do: they are recorded as
//! observations and reported as expected effects. An adverse event is something else: an
//! unexpected or severe effect, with its onset and end, severity, seriousness, what was done
//! (rescue drugs with dose, route and time), the outcome, and a clinician's review. A serious
//! event (hospitalisation, life-threatening, death) must be reviewed within
//! [`SERIOUS_REVIEW_WITHIN_US`] and shows on the manager's overdue list until it is.

use super::{Severity, StaffRole};

vocabulary! {
    /// What makes an adverse event serious (the regulatory definition's outcomes).
    "seriousness" pub enum Seriousness {
        /// Led to or prolonged a hospital admission.
        Hospitalisation = "hospitalisation", "hospitalisation";
        /// Put the patient at immediate risk of death.
        LifeThreatening = "life_threatening", "life-threatening";
        /// Death.
        Death = "death", "death";
    }
}

vocabulary! {
    /// A drug or measure given in response.
    "rescue" pub enum Rescue {
        /// Anti-emetic.
        Ondansetron = "ondansetron", "ondansetron";
        /// For agitation or distressing dissociation.
        Midazolam = "midazolam", "midazolam";
        /// For hypertension.
        Labetalol = "labetalol", "labetalol";
        /// Supplemental oxygen.
        Oxygen = "oxygen", "oxygen";
        /// Anything else; the event's note says what.
        Other = "other", "other";
    }
}

vocabulary! {
    /// How an adverse event ended.
    "outcome" pub enum EventOutcome {
        /// Resolved without lasting effect.
        Resolved = "resolved", "resolved";
        /// Resolved with lasting effects.
        ResolvedWithSequelae = "resolved_with_sequelae", "resolved with sequelae";
        /// Still going on.
        Ongoing = "ongoing", "ongoing";
        /// Transferred for further care.
        Transferred = "transferred", "transferred";
        /// Death.
        Fatal = "fatal", "fatal";
    }
}

/// The effects a ketamine infusion is expected to have. Recorded as observations, reported as
/// expected effects, never as adverse events unless severe.
pub const EXPECTED_EFFECTS: &[&str] = &[
    "dissociation",
    "nausea",
    "dizziness",
    "blurred_vision",
    "headache",
    "elevated_bp",
    "drowsiness",
];

/// Whether an observation is an expected effect (listed and not severe) rather than an adverse
/// event. A severe expected effect, or any unlisted effect, is an adverse event.
pub fn is_expected_effect(effect: &str, severity: Severity) -> bool {
    severity != Severity::Severe && EXPECTED_EFFECTS.contains(&effect)
}

/// A serious event must be reviewed by a clinician within this long of its onset (24 h).
pub const SERIOUS_REVIEW_WITHIN_US: i64 = 24 * 3_600 * 1_000_000;

/// One thing given in response.
#[derive(Debug, Clone, PartialEq)]
pub struct Intervention {
    /// What.
    pub rescue: Rescue,
    /// Dose as given, e.g. "4 mg" or "2 L/min".
    pub dose: String,
    /// Route, e.g. "iv", "po", "nasal cannula".
    pub route: String,
    /// When, µs.
    pub at_us: i64,
}

/// An adverse event.
#[derive(Debug, Clone, PartialEq)]
pub struct AdverseEvent {
    /// What happened, in the clinician's words.
    pub event: String,
    /// Onset, µs.
    pub onset_us: i64,
    /// End, µs, when it ended.
    pub end_us: Option<i64>,
    /// How bad.
    pub severity: Severity,
    /// Why serious, if it is.
    pub seriousness: Option<Seriousness>,
    /// What was done.
    pub interventions: Vec<Intervention>,
    /// How it ended.
    pub outcome: EventOutcome,
    /// The reviewing clinician's sign-off: role and time.
    pub review: Option<(StaffRole, i64)>,
}

/// Why an adverse event record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventRefused {
    /// No description.
    #[error("say what happened")]
    NoDescription,
    /// Ends before it starts.
    #[error("the event ends before its onset")]
    EndsBeforeOnset,
    /// An intervention with no dose or route.
    #[error("{0}: give the dose and the route")]
    InterventionIncomplete(Rescue),
    /// A review by someone who is not a clinician.
    #[error("only a clinician may review an adverse event")]
    ReviewNotClinician,
    /// A death with an outcome that is not fatal, or the reverse.
    #[error("a death must have the outcome \"fatal\", and only a death")]
    DeathOutcome,
}

impl AdverseEvent {
    /// Whether the event is serious.
    pub fn is_serious(&self) -> bool {
        self.seriousness.is_some()
    }

    /// Checks the record is complete and consistent.
    pub fn validate(&self) -> Result<(), EventRefused> {
        if self.event.trim().is_empty() {
            return Err(EventRefused::NoDescription);
        }
        if self.end_us.is_some_and(|end| end < self.onset_us) {
            return Err(EventRefused::EndsBeforeOnset);
        }
        if let Some(i) = self
            .interventions
            .iter()
            .find(|i| i.dose.trim().is_empty() || i.route.trim().is_empty())
        {
            return Err(EventRefused::InterventionIncomplete(i.rescue));
        }
        if self
            .review
            .is_some_and(|(role, _)| role != StaffRole::Clinician)
        {
            return Err(EventRefused::ReviewNotClinician);
        }
        let death = self.seriousness == Some(Seriousness::Death);
        if death != (self.outcome == EventOutcome::Fatal) {
            return Err(EventRefused::DeathOutcome);
        }
        Ok(())
    }

    /// Whether a serious event's review is overdue at `now_us` (24 h after onset, unreviewed).
    pub fn review_overdue(&self, now_us: i64) -> bool {
        self.is_serious()
            && self.review.is_none()
            && now_us > self.onset_us + SERIOUS_REVIEW_WITHIN_US
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600 * 1_000_000;

    fn event() -> AdverseEvent {
        AdverseEvent {
            event: "vasovagal syncope on standing".into(),
            onset_us: 100 * H,
            end_us: Some(100 * H + H / 4),
            severity: Severity::Moderate,
            seriousness: None,
            interventions: vec![Intervention {
                rescue: Rescue::Oxygen,
                dose: "2 L/min".into(),
                route: "nasal cannula".into(),
                at_us: 100 * H,
            }],
            outcome: EventOutcome::Resolved,
            review: None,
        }
    }

    #[test]
    fn expected_effects_are_not_adverse_events() {
        let table = [
            ("dissociation", Severity::Mild, true),
            ("dissociation", Severity::Moderate, true),
            ("dissociation", Severity::Severe, false),
            ("nausea", Severity::Mild, true),
            ("vomiting", Severity::Mild, false),
            ("laryngospasm", Severity::Moderate, false),
        ];
        for (effect, severity, expected) in table {
            assert_eq!(
                is_expected_effect(effect, severity),
                expected,
                "{effect} {severity}"
            );
        }
    }

    #[test]
    fn records_are_checked() {
        assert_eq!(event().validate(), Ok(()));
        let with = |f: &dyn Fn(&mut AdverseEvent)| {
            let mut e = event();
            f(&mut e);
            e.validate()
        };
        assert_eq!(
            with(&|e| e.event = " ".into()),
            Err(EventRefused::NoDescription)
        );
        assert_eq!(
            with(&|e| e.end_us = Some(99 * H)),
            Err(EventRefused::EndsBeforeOnset)
        );
        assert_eq!(
            with(&|e| e.interventions[0].route.clear()),
            Err(EventRefused::InterventionIncomplete(Rescue::Oxygen))
        );
        assert_eq!(
            with(&|e| e.review = Some((StaffRole::Nurse, 101 * H))),
            Err(EventRefused::ReviewNotClinician)
        );
        assert_eq!(
            with(&|e| e.seriousness = Some(Seriousness::Death)),
            Err(EventRefused::DeathOutcome)
        );
        assert_eq!(
            with(&|e| e.outcome = EventOutcome::Fatal),
            Err(EventRefused::DeathOutcome)
        );
    }

    #[test]
    fn serious_events_need_review_within_a_day() {
        let mut e = event();
        assert!(!e.review_overdue(200 * H), "not serious: never overdue");
        e.seriousness = Some(Seriousness::Hospitalisation);
        e.outcome = EventOutcome::Transferred;
        assert!(!e.review_overdue(100 * H + 24 * H), "exactly 24 h: not yet");
        assert!(e.review_overdue(100 * H + 24 * H + 1));
        e.review = Some((StaffRole::Clinician, 110 * H));
        assert!(!e.review_overdue(200 * H));
    }
}
