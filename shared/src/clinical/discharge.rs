//! The discharge gate: what must be true before a patient goes home after a ketamine
//! infusion, and the other ways a session ends (an EMS transfer, leaving against advice).
//!
//! Going home needs the infusion stopped, an observation time since the stop of at least the
//! site's minimum, a modified Aldrete of at least [`super::ALDRETE_DISCHARGE_MIN`] with its
//! item scores, a CADSS after the infusion at or under the site's limit (or a clinician's
//! override with a reason), and a blood-pressure reading of the last ten minutes that is under
//! 160/100 or within 20 % of the patient's baseline. [`discharge_gate`] lists everything that
//! is missing, so the screen can show all of it at once and the API can name it in its 409.

use super::{ALDRETE_DISCHARGE_MIN, Aldrete};
use crate::care::SessionCare;
use crate::doc::{CheckIn, DoseAction, DoseEvent, SessionMeta};

const MIN_US: i64 = 60 * 1_000_000;

/// A site's discharge rules. The defaults: 30 minutes' observation after the stop (the
/// usual floor in ketamine clinics' protocols; Spravato's REMS asks for two hours after a
/// nasal dose, which a site may choose), a CADSS of at most 4 (Vigil's default for "the
/// dissociation has resolved": a site's medical director sets their own), and a cuff reading
/// of the last 10 minutes under 160/100 or within 20 % of baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DischargeRules {
    /// Least time between the dose stop and discharge, minutes (1-120).
    pub min_observation_min: u32,
    /// Highest CADSS after the infusion that allows discharge without an override.
    pub max_cadss: i64,
    /// Systolic below which a reading is acceptable whatever the baseline, mmHg.
    pub bp_systolic_below: i64,
    /// Diastolic below which a reading is acceptable whatever the baseline, mmHg.
    pub bp_diastolic_below: i64,
    /// How far above baseline, in percent, a reading may be and still be acceptable.
    pub bp_within_pct_of_baseline: i64,
    /// Oldest blood-pressure reading that counts, minutes.
    pub bp_max_age_min: u32,
}

impl Default for DischargeRules {
    fn default() -> Self {
        DischargeRules {
            min_observation_min: 30,
            max_cadss: 4,
            bp_systolic_below: 160,
            bp_diastolic_below: 100,
            bp_within_pct_of_baseline: 20,
            bp_max_age_min: 10,
        }
    }
}

/// The longest observation a site may require, minutes.
pub const MAX_OBSERVATION_MIN: u32 = 120;

impl DischargeRules {
    /// Checks that the rules make sense; a site configuration that fails keeps the defaults.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_OBSERVATION_MIN).contains(&self.min_observation_min) {
            return Err(format!(
                "min_observation_min must be 1-{MAX_OBSERVATION_MIN} minutes"
            ));
        }
        if !(0..=92).contains(&self.max_cadss) {
            return Err("max_cadss must be 0-92".into());
        }
        if self.bp_systolic_below <= self.bp_diastolic_below || self.bp_diastolic_below <= 0 {
            return Err(
                "the blood-pressure limits must be positive, systolic over diastolic".into(),
            );
        }
        if !(0..=100).contains(&self.bp_within_pct_of_baseline) {
            return Err("bp_within_pct_of_baseline must be 0-100".into());
        }
        if !(1..=60).contains(&self.bp_max_age_min) {
            return Err("bp_max_age_min must be 1-60 minutes".into());
        }
        Ok(())
    }
}

/// A blood-pressure reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpReading {
    /// When, µs.
    pub at_us: i64,
    /// Systolic, mmHg.
    pub systolic: i64,
    /// Diastolic, mmHg.
    pub diastolic: i64,
}

/// What the gate looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DischargeFacts {
    /// Now, µs.
    pub now_us: i64,
    /// When the dose was stopped; `None` while the pump runs or is paused, or was never
    /// started (an infusion never started has nothing to recover from: pass `Some(created)`).
    pub dose_stopped_us: Option<i64>,
    /// The Aldrete items as scored for this discharge.
    pub aldrete: Option<Aldrete>,
    /// The CADSS total after the infusion, if taken.
    pub cadss_post: Option<i64>,
    /// A clinician overrode the CADSS limit with a reason.
    pub cadss_overridden: bool,
    /// The latest blood-pressure reading.
    pub latest_bp: Option<BpReading>,
    /// The baseline (pre-infusion) blood pressure, systolic and diastolic.
    pub baseline_bp: Option<(i64, i64)>,
}

/// Something that keeps a patient from going home yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotYet {
    /// The pump has not been stopped.
    #[error("the infusion has not been stopped")]
    DoseNotStopped,
    /// The observation time since the stop has not passed.
    #[error("observe {remaining_min} more min after the stop (site minimum {required_min} min)")]
    Observation {
        /// Minutes still to wait (rounded up).
        remaining_min: i64,
        /// The site's minimum.
        required_min: u32,
    },
    /// No Aldrete scored, or an item outside 0-2.
    #[error("score the modified Aldrete (every item 0-2)")]
    AldreteMissing,
    /// The Aldrete total is under the discharge minimum.
    #[error("modified Aldrete {total} is under {ALDRETE_DISCHARGE_MIN}")]
    AldreteLow {
        /// The total.
        total: u8,
    },
    /// No CADSS after the infusion.
    #[error("record the CADSS after the infusion")]
    CadssMissing,
    /// The CADSS is over the site's limit and no clinician overrode it.
    #[error(
        "CADSS {value} is over the site's limit of {limit}; a clinician may override with a reason"
    )]
    CadssHigh {
        /// The total.
        value: i64,
        /// The limit.
        limit: i64,
    },
    /// No blood-pressure reading at all.
    #[error("take a blood pressure before discharge")]
    BpMissing,
    /// The latest reading is too old.
    #[error("the last blood pressure is {age_min} min old; take one (at most {max_min} min old)")]
    BpStale {
        /// Its age, minutes.
        age_min: i64,
        /// The oldest allowed.
        max_min: u32,
    },
    /// The latest reading is too high for its baseline.
    #[error(
        "blood pressure {systolic}/{diastolic} is not under {limit_sys}/{limit_dia} nor within {pct} % of baseline"
    )]
    BpHigh {
        /// Systolic.
        systolic: i64,
        /// Diastolic.
        diastolic: i64,
        /// The absolute systolic limit.
        limit_sys: i64,
        /// The absolute diastolic limit.
        limit_dia: i64,
        /// The allowed rise over baseline, percent.
        pct: i64,
    },
}

/// Everything that keeps the patient from going home now; empty when discharge may be
/// recorded.
pub fn discharge_gate(rules: &DischargeRules, f: &DischargeFacts) -> Vec<NotYet> {
    let mut missing = Vec::new();
    match f.dose_stopped_us {
        None => missing.push(NotYet::DoseNotStopped),
        Some(stopped) => {
            let required = i64::from(rules.min_observation_min) * MIN_US;
            let waited = f.now_us - stopped;
            if waited < required {
                missing.push(NotYet::Observation {
                    remaining_min: (required - waited + MIN_US - 1) / MIN_US,
                    required_min: rules.min_observation_min,
                });
            }
        }
    }
    match f.aldrete.as_ref().and_then(Aldrete::total) {
        None => missing.push(NotYet::AldreteMissing),
        Some(total) if total < ALDRETE_DISCHARGE_MIN => missing.push(NotYet::AldreteLow { total }),
        Some(_) => {}
    }
    match f.cadss_post {
        None => missing.push(NotYet::CadssMissing),
        Some(v) if v > rules.max_cadss && !f.cadss_overridden => missing.push(NotYet::CadssHigh {
            value: v,
            limit: rules.max_cadss,
        }),
        Some(_) => {}
    }
    match f.latest_bp {
        None => missing.push(NotYet::BpMissing),
        Some(bp) => {
            let age_us = f.now_us - bp.at_us;
            if age_us > i64::from(rules.bp_max_age_min) * MIN_US {
                missing.push(NotYet::BpStale {
                    age_min: age_us / MIN_US,
                    max_min: rules.bp_max_age_min,
                });
            } else if !bp_acceptable(rules, bp, f.baseline_bp) {
                missing.push(NotYet::BpHigh {
                    systolic: bp.systolic,
                    diastolic: bp.diastolic,
                    limit_sys: rules.bp_systolic_below,
                    limit_dia: rules.bp_diastolic_below,
                    pct: rules.bp_within_pct_of_baseline,
                });
            }
        }
    }
    missing
}

/// When the dose stopped, as the gate counts the observation from: the latest dose event's
/// time when it is a `stop`; `never_started_us` when no dose was ever started (an infusion
/// abandoned before the pump ran); `None` while the pump runs or is paused.
pub fn dose_stopped_at(events: &[DoseEvent], never_started_us: i64) -> Option<i64> {
    match events.iter().max_by_key(|e| e.at_us) {
        None => Some(never_started_us),
        Some(e) if e.action == DoseAction::Stop => Some(e.at_us),
        Some(_) => None,
    }
}

/// What the gate looks at, read from the session's record: the dose timeline, the latest CADSS
/// after the infusion, the latest blood pressure recorded at a checkpoint (the nurse records
/// the before-discharge one, so the chart shows which reading let the patient go) and the
/// check-in's baseline; the Aldrete as scored for this discharge and whether a clinician
/// overrode the CADSS limit.
pub fn facts(
    meta: &SessionMeta,
    care: &SessionCare,
    checkin: Option<&CheckIn>,
    aldrete: Option<Aldrete>,
    cadss_overridden: bool,
    now_us: i64,
) -> DischargeFacts {
    let cadss = super::Instrument::Cadss.code();
    let post = super::ScorePhase::Post.code();
    DischargeFacts {
        now_us,
        dose_stopped_us: dose_stopped_at(
            &meta.dose_events,
            meta.started_us.unwrap_or(meta.created_us),
        ),
        aldrete,
        cadss_post: meta
            .scores
            .iter()
            .filter(|s| s.instrument == cadss && s.phase == post)
            .max_by_key(|s| s.at_us)
            .map(|s| s.value),
        cadss_overridden,
        latest_bp: care
            .checkpoints
            .iter()
            .max_by_key(|c| c.at_us)
            .map(|c| BpReading {
                at_us: c.at_us,
                systolic: c.systolic,
                diastolic: c.diastolic,
            }),
        baseline_bp: checkin.map(|c| (c.baseline_systolic, c.baseline_diastolic)),
    }
}

/// Under the absolute limits, or no more than the allowed percentage above the baseline
/// (both numbers).
fn bp_acceptable(rules: &DischargeRules, bp: BpReading, baseline: Option<(i64, i64)>) -> bool {
    let under = bp.systolic < rules.bp_systolic_below && bp.diastolic < rules.bp_diastolic_below;
    let near_baseline = baseline.is_some_and(|(sys, dia)| {
        // Integer percent: 100·reading ≤ (100 + pct)·baseline.
        let limit = 100 + rules.bp_within_pct_of_baseline;
        sys > 0 && dia > 0 && bp.systolic * 100 <= limit * sys && bp.diastolic * 100 <= limit * dia
    });
    under || near_baseline
}

/// How a session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Home with an escort, after the discharge criteria.
    Home(Escort),
    /// Transferred by emergency medical services.
    EmsTransfer,
    /// The patient left against medical advice.
    AgainstAdvice,
}

/// Who takes the patient home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escort {
    /// Name.
    pub name: String,
    /// Telephone number.
    pub phone: String,
    /// Relationship to the patient, e.g. `spouse`.
    pub relationship: String,
}

impl Disposition {
    /// The stable name in documents.
    pub fn code(&self) -> &'static str {
        match self {
            Disposition::Home(_) => "home",
            Disposition::EmsTransfer => "ems_transfer",
            Disposition::AgainstAdvice => "against_advice",
        }
    }

    /// Whether the discharge criteria apply: an EMS transfer or a patient who walks out ends
    /// the session without them, and is flagged for the managers instead.
    pub fn needs_criteria(&self) -> bool {
        matches!(self, Disposition::Home(_))
    }

    /// Whether the dashboard's attention list shows it.
    pub fn needs_attention(&self) -> bool {
        !self.needs_criteria()
    }
}

impl Escort {
    /// Checks that every field is filled in.
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("escort's name", &self.name),
            ("escort's phone", &self.phone),
            ("escort's relationship", &self.relationship),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{field} is required"));
            }
        }
        if self.phone.chars().filter(char::is_ascii_digit).count() < 7 {
            return Err("escort's phone needs at least 7 digits".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000_000;

    #[test]
    fn the_observation_counts_from_the_last_stop() {
        let ev = |min: i64, action| DoseEvent {
            id: format!("d{min}"),
            at_us: T0 + min * MIN_US,
            action,
            rate_mg_per_h: None,
            by: "rn".into(),
        };
        use DoseAction::*;
        // (what, events, stopped at minute)
        let table: [(&str, Vec<DoseEvent>, Option<i64>); 5] = [
            ("never started: from the session's start", vec![], Some(-5)),
            ("running", vec![ev(0, Start)], None),
            (
                "paused is not stopped",
                vec![ev(0, Start), ev(10, Pause)],
                None,
            ),
            ("stopped", vec![ev(0, Start), ev(40, Stop)], Some(40)),
            (
                "restarted after a stop, then stopped again",
                vec![ev(0, Start), ev(20, Stop), ev(25, Resume), ev(45, Stop)],
                Some(45),
            ),
        ];
        for (what, events, expected) in table {
            assert_eq!(
                dose_stopped_at(&events, T0 - 5 * MIN_US),
                expected.map(|m| T0 + m * MIN_US),
                "{what}"
            );
        }
    }

    fn aldrete(total_ok: bool) -> Aldrete {
        Aldrete {
            activity: 2,
            respiration: 2,
            circulation: if total_ok { 2 } else { 1 },
            consciousness: if total_ok { 2 } else { 1 },
            oxygen_saturation: if total_ok { 1 } else { 0 },
        }
    }

    /// A patient ready to go: stopped 35 min ago, Aldrete 9, CADSS 2, a 130/85 reading 5 min
    /// ago against a 125/80 baseline.
    fn ready() -> DischargeFacts {
        DischargeFacts {
            now_us: T0 + 35 * MIN_US,
            dose_stopped_us: Some(T0),
            aldrete: Some(aldrete(true)),
            cadss_post: Some(2),
            cadss_overridden: false,
            latest_bp: Some(BpReading {
                at_us: T0 + 30 * MIN_US,
                systolic: 130,
                diastolic: 85,
            }),
            baseline_bp: Some((125, 80)),
        }
    }

    fn bp(at_min: i64, systolic: i64, diastolic: i64) -> Option<BpReading> {
        Some(BpReading {
            at_us: T0 + at_min * MIN_US,
            systolic,
            diastolic,
        })
    }

    #[test]
    fn worked_examples() {
        let rules = DischargeRules::default();
        let cases: Vec<(&str, DischargeFacts, Vec<NotYet>)> = vec![
            ("ready to go", ready(), vec![]),
            (
                "pump still running",
                DischargeFacts {
                    dose_stopped_us: None,
                    ..ready()
                },
                vec![NotYet::DoseNotStopped],
            ),
            (
                "stopped 12 min 30 s ago: 18 min to go (rounded up)",
                DischargeFacts {
                    now_us: T0 + 12 * MIN_US + 30_000_000,
                    latest_bp: bp(10, 130, 85),
                    ..ready()
                },
                vec![NotYet::Observation {
                    remaining_min: 18,
                    required_min: 30,
                }],
            ),
            (
                "exactly 30 min after the stop is enough",
                DischargeFacts {
                    now_us: T0 + 30 * MIN_US,
                    ..ready()
                },
                vec![],
            ),
            (
                "Aldrete 6",
                DischargeFacts {
                    aldrete: Some(aldrete(false)),
                    ..ready()
                },
                vec![NotYet::AldreteLow { total: 6 }],
            ),
            (
                "an Aldrete item of 3 is not a score",
                DischargeFacts {
                    aldrete: Some(Aldrete {
                        activity: 3,
                        ..aldrete(true)
                    }),
                    ..ready()
                },
                vec![NotYet::AldreteMissing],
            ),
            (
                "CADSS 12 over the limit of 4",
                DischargeFacts {
                    cadss_post: Some(12),
                    ..ready()
                },
                vec![NotYet::CadssHigh {
                    value: 12,
                    limit: 4,
                }],
            ),
            (
                "CADSS 12 with a clinician's override",
                DischargeFacts {
                    cadss_post: Some(12),
                    cadss_overridden: true,
                    ..ready()
                },
                vec![],
            ),
            (
                "no CADSS",
                DischargeFacts {
                    cadss_post: None,
                    ..ready()
                },
                vec![NotYet::CadssMissing],
            ),
            (
                "the last cuff reading is 25 min old",
                DischargeFacts {
                    latest_bp: bp(10, 130, 85),
                    ..ready()
                },
                vec![NotYet::BpStale {
                    age_min: 25,
                    max_min: 10,
                }],
            ),
            (
                "168/96 with a 150/90 baseline: within 20 %",
                DischargeFacts {
                    latest_bp: bp(30, 168, 96),
                    baseline_bp: Some((150, 90)),
                    ..ready()
                },
                vec![],
            ),
            (
                "168/96 with a 125/80 baseline: too high",
                DischargeFacts {
                    latest_bp: bp(30, 168, 96),
                    ..ready()
                },
                vec![NotYet::BpHigh {
                    systolic: 168,
                    diastolic: 96,
                    limit_sys: 160,
                    limit_dia: 100,
                    pct: 20,
                }],
            ),
            (
                "159/99 is under 160/100 whatever the baseline",
                DischargeFacts {
                    latest_bp: bp(30, 159, 99),
                    baseline_bp: None,
                    ..ready()
                },
                vec![],
            ),
            (
                "everything missing at once",
                DischargeFacts {
                    now_us: T0,
                    dose_stopped_us: None,
                    aldrete: None,
                    cadss_post: None,
                    cadss_overridden: false,
                    latest_bp: None,
                    baseline_bp: None,
                },
                vec![
                    NotYet::DoseNotStopped,
                    NotYet::AldreteMissing,
                    NotYet::CadssMissing,
                    NotYet::BpMissing,
                ],
            ),
        ];
        for (what, facts, expected) in cases {
            assert_eq!(discharge_gate(&rules, &facts), expected, "{what}");
        }
    }

    #[test]
    fn a_site_may_require_longer_observation() {
        let rules = DischargeRules {
            min_observation_min: 120,
            ..DischargeRules::default()
        };
        assert_eq!(
            discharge_gate(&rules, &ready()),
            vec![NotYet::Observation {
                remaining_min: 85,
                required_min: 120
            }]
        );
        assert!(rules.validate().is_ok());
        for bad in [0, 121] {
            let rules = DischargeRules {
                min_observation_min: bad,
                ..DischargeRules::default()
            };
            assert!(rules.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn reasons_read_as_sentences() {
        let cases = [
            (
                NotYet::Observation {
                    remaining_min: 18,
                    required_min: 30,
                },
                "observe 18 more min after the stop (site minimum 30 min)",
            ),
            (
                NotYet::BpStale {
                    age_min: 25,
                    max_min: 10,
                },
                "the last blood pressure is 25 min old; take one (at most 10 min old)",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn dispositions() {
        let escort = Escort {
            name: "Sam Lee".into(),
            phone: "512-555-0100".into(),
            relationship: "spouse".into(),
        };
        assert!(escort.check().is_ok());
        assert!(
            Escort {
                phone: "n/a".into(),
                ..escort.clone()
            }
            .check()
            .is_err()
        );
        assert!(
            Escort {
                name: " ".into(),
                ..escort.clone()
            }
            .check()
            .is_err()
        );
        let cases = [
            (Disposition::Home(escort), "home", true),
            (Disposition::EmsTransfer, "ems_transfer", false),
            (Disposition::AgainstAdvice, "against_advice", false),
        ];
        for (d, code, criteria) in cases {
            assert_eq!(d.code(), code);
            assert_eq!(d.needs_criteria(), criteria, "{code}");
            assert_eq!(d.needs_attention(), !criteria, "{code}");
        }
    }
}
