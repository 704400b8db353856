//! The session's care record: what the chair-side safety rules ([`crate::clinical`]) read and
//! write, beside the session's metadata. The prescriber's order, screening answers per flag and
//! their overrides, the suicide-risk screen and its assessment, the timed checkpoints, rate
//! overrides, adverse events, the Aldrete items and the disposition.
//!
//! Each part lives under its own root key of the session document, so documents written before
//! it existed load (an absent key is empty), and older readers, which hydrate only the keys they
//! know, ignore it. Lists are keyed by `id`, so entries appended concurrently (two tablets, or a
//! tablet and the API) merge; the lists are created with the session document. Vocabulary is stored as its code (a string) and parsed at the
//! boundary, so a newer writer's term does not make a document unreadable.

use automerge::{AutoCommit, ReadDoc};
use autosurgeon::{Hydrate, Reconcile, hydrate_prop, reconcile_prop};
use serde::{Deserialize, Serialize};

use crate::clinical::Indication;
use crate::clinical::order::PrescriberOrder;
use crate::clinical::risk::{
    Cssrs, Phq9Items, RiskAssessment, RiskBlock, RiskDecision, RiskLevel, risk_gate, risk_level,
};
use crate::clinical::screening::{Answer, ScreeningFlag};
use crate::doc::{DocError, SessionDoc};

/// The prescriber's order as stored.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct OrderEntry {
    /// Staff id of the prescriber.
    pub prescriber: String,
    /// Indication code (`clinical::Indication`).
    pub indication: String,
    /// mg/kg.
    pub dose_mg_per_kg: f64,
    /// Planned minutes.
    pub minutes: u64,
    /// Lowest bag concentration, mg/mL.
    pub concentration_min: f64,
    /// Highest bag concentration, mg/mL.
    pub concentration_max: f64,
    /// Lowest pump rate, mg/h.
    pub rate_min: f64,
    /// Highest pump rate, mg/h.
    pub rate_max: f64,
    /// When entered, µs.
    pub at_us: i64,
    /// Who entered it.
    pub by: String,
}

impl OrderEntry {
    /// The entry recording `order`, written at `at_us` by `by`.
    pub fn new(order: &PrescriberOrder, at_us: i64, by: &str) -> OrderEntry {
        OrderEntry {
            prescriber: order.prescriber.clone(),
            indication: order.indication.code().to_owned(),
            dose_mg_per_kg: order.dose_mg_per_kg,
            minutes: order.minutes,
            concentration_min: order.concentration_mg_per_ml.0,
            concentration_max: order.concentration_mg_per_ml.1,
            rate_min: order.rate_mg_per_h.0,
            rate_max: order.rate_mg_per_h.1,
            at_us,
            by: by.to_owned(),
        }
    }

    /// The order it records; an indication this version does not know reads as `other` (the
    /// ranges, which the rules check, are numbers).
    pub fn order(&self) -> PrescriberOrder {
        PrescriberOrder {
            prescriber: self.prescriber.clone(),
            indication: Indication::parse(&self.indication).unwrap_or(Indication::Other),
            dose_mg_per_kg: self.dose_mg_per_kg,
            minutes: self.minutes,
            concentration_mg_per_ml: (self.concentration_min, self.concentration_max),
            rate_mg_per_h: (self.rate_min, self.rate_max),
        }
    }
}

/// One screening answer of this visit.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct ScreeningEntry {
    /// Unique id.
    #[key]
    pub id: String,
    /// Flag code (`clinical::screening::ScreeningFlag`).
    pub flag: String,
    /// The answer.
    pub yes: bool,
    /// When asked, µs.
    pub asked_us: i64,
    /// Who asked.
    pub by: String,
}

impl ScreeningEntry {
    /// The answer as the screening gate reads it; `None` for a flag this version does not know.
    pub fn answer(&self) -> Option<Answer> {
        Some(Answer {
            flag: ScreeningFlag::parse(&self.flag).ok()?,
            yes: self.yes,
            asked_us: self.asked_us,
        })
    }
}

/// The latest answer to each flag, in the flags' order: what the start is checked against and
/// what the session keeps.
pub fn latest_answers(all: &[ScreeningEntry]) -> Vec<ScreeningEntry> {
    ScreeningFlag::ALL
        .iter()
        .filter_map(|f| {
            all.iter()
                .filter(|e| e.flag == f.code())
                .max_by_key(|e| e.asked_us)
                .cloned()
        })
        .collect()
}

/// A clinician's override of one flag, or of a rate outside the order.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct OverrideEntry {
    /// Unique id.
    #[key]
    pub id: String,
    /// What is overridden: a screening flag code, or `rate:<dose event id>`.
    pub subject: String,
    /// Why.
    pub reason: String,
    /// Who (staff id).
    pub by: String,
    /// When, µs.
    pub at_us: i64,
}

/// The suicide-risk screen before an infusion.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct RiskScreenEntry {
    /// Unique id.
    #[key]
    pub id: String,
    /// PHQ-9 answers, items 1-9, each 0-3 (empty when not taken this visit).
    pub phq9_items: Vec<i64>,
    /// C-SSRS screener answers, questions 1-6.
    pub cssrs: Vec<bool>,
    /// When, µs.
    pub at_us: i64,
    /// Who asked.
    pub by: String,
    /// The clinician's assessment, once made.
    pub assessment: Option<RiskAssessmentEntry>,
}

impl RiskScreenEntry {
    /// The PHQ-9 as answered, when all nine items are there and each is 0-3.
    pub fn phq9(&self) -> Option<Phq9Items> {
        let items: [i64; 9] = self.phq9_items.clone().try_into().ok()?;
        let items = items.map(|v| u8::try_from(v).unwrap_or(u8::MAX));
        let p = Phq9Items(items);
        p.check().ok().map(|()| p)
    }

    /// The C-SSRS screener's answers (a missing answer reads as no).
    pub fn cssrs(&self) -> Cssrs {
        let a = |i: usize| self.cssrs.get(i).copied().unwrap_or(false);
        Cssrs {
            wish_dead: a(0),
            thoughts: a(1),
            method: a(2),
            intent: a(3),
            plan: a(4),
            behaviour: a(5),
        }
    }

    /// The level the answers point to.
    pub fn level(&self) -> RiskLevel {
        risk_level(self.phq9().as_ref(), &self.cssrs())
    }

    /// The clinician's assessment as the gate reads it (recorded only from a clinician).
    pub fn assessment(&self) -> Option<RiskAssessment> {
        let a = self.assessment.as_ref()?;
        Some(RiskAssessment {
            at_us: a.at_us,
            by_clinician: true,
            decision: RiskDecision::parse(&a.decision)?,
            note: a.note.clone(),
        })
    }

    /// Whether the start may go ahead as far as this screen goes.
    pub fn gate(&self) -> Result<(), RiskBlock> {
        risk_gate(Some(self.at_us), self.level(), self.assessment().as_ref())
    }
}

/// A clinician's assessment of a positive risk screen.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct RiskAssessmentEntry {
    /// Decision code (`clinical::risk::RiskDecision`).
    pub decision: String,
    /// The clinician's note.
    pub note: String,
    /// Who (staff id).
    pub by: String,
    /// When, µs.
    pub at_us: i64,
}

/// A timed checkpoint.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct CheckpointEntry {
    /// Unique id.
    #[key]
    pub id: String,
    /// Checkpoint code (`clinical::checkpoints::Checkpoint`).
    pub checkpoint: String,
    /// When, µs.
    pub at_us: i64,
    /// Systolic, mmHg.
    pub systolic: i64,
    /// Diastolic, mmHg.
    pub diastolic: i64,
    /// Sedation scale code (`clinical::checkpoints::SedationScale`).
    pub sedation_scale: String,
    /// Sedation score on that scale.
    pub sedation: i64,
    /// Who.
    pub by: String,
}

/// A drug or measure given for an adverse event.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct InterventionEntry {
    /// Rescue code (`clinical::adverse::Rescue`).
    pub rescue: String,
    /// Dose as given.
    pub dose: String,
    /// Route.
    pub route: String,
    /// When, µs.
    pub at_us: i64,
}

/// An adverse event.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct AdverseEntry {
    /// Unique id.
    #[key]
    pub id: String,
    /// What happened.
    pub event: String,
    /// Onset, µs.
    pub onset_us: i64,
    /// End, µs.
    pub end_us: Option<i64>,
    /// Severity code (`clinical::Severity`).
    pub severity: String,
    /// Seriousness code (`clinical::adverse::Seriousness`), if serious.
    pub seriousness: Option<String>,
    /// What was done.
    pub interventions: Vec<InterventionEntry>,
    /// Outcome code (`clinical::adverse::EventOutcome`).
    pub outcome: String,
    /// Who recorded it.
    pub by: String,
    /// The reviewing clinician (staff id).
    pub reviewed_by: Option<String>,
    /// When reviewed, µs.
    pub reviewed_us: Option<i64>,
}

/// How the session ended.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct DispositionEntry {
    /// Disposition code (`home`, `ems_transfer`, `against_advice`).
    pub code: String,
    /// Escort's name (home only).
    pub escort_name: String,
    /// Escort's phone (home only).
    pub escort_phone: String,
    /// Escort's relationship (home only).
    pub escort_relationship: String,
    /// The modified Aldrete items (activity, respiration, circulation, consciousness,
    /// oxygen saturation), each 0-2; empty when the criteria did not apply.
    pub aldrete_items: Vec<i64>,
    /// What happened, in the clinician's words (required for a transfer or against advice).
    pub note: String,
    /// When, µs.
    pub at_us: i64,
    /// Who.
    pub by: String,
}

/// Everything in a session's care record. Absent parts are empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionCare {
    /// The prescriber's order.
    pub order: Option<OrderEntry>,
    /// This visit's screening answers.
    pub screening: Vec<ScreeningEntry>,
    /// Overrides of flags and of rates outside the order.
    pub overrides: Vec<OverrideEntry>,
    /// The suicide-risk screen.
    pub risk: Option<RiskScreenEntry>,
    /// Timed checkpoints.
    pub checkpoints: Vec<CheckpointEntry>,
    /// Adverse events.
    pub adverse_events: Vec<AdverseEntry>,
    /// How the session ended.
    pub disposition: Option<DispositionEntry>,
}

/// Why a session is on the clinicians' and managers' attention list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attention {
    /// What: one of [`ATTENTION_KINDS`]' codes.
    pub kind: String,
    /// When it happened, µs.
    pub at_us: i64,
    /// In the record's words.
    pub detail: String,
}

/// The attention list's kinds, with what the dashboard calls them.
pub const ATTENTION_KINDS: [(&str, &str); 4] = [
    ("suicide_risk", "Suicide-risk answer"),
    ("serious_event", "Serious adverse event awaiting review"),
    ("ems_transfer", "Transferred by EMS"),
    ("against_advice", "Left against medical advice"),
];

impl SessionCare {
    /// What of this session needs someone's attention: a high-risk suicide-risk answer
    /// (whatever the clinician decided) or a moderate one not yet assessed, a serious adverse
    /// event not yet reviewed, an EMS transfer, a patient who left against advice.
    pub fn attention(&self) -> Vec<Attention> {
        let mut out = Vec::new();
        if let Some(r) = &self.risk {
            let level = r.level();
            if crate::clinical::risk::needs_attention(level, r.assessment.is_some()) {
                let decided = r
                    .assessment
                    .as_ref()
                    .map_or("not yet assessed".to_owned(), |a| {
                        format!("assessed by {}: {}", a.by, a.decision)
                    });
                out.push(Attention {
                    kind: "suicide_risk".into(),
                    at_us: r.at_us,
                    detail: format!("{} risk; {decided}", level.code()),
                });
            }
        }
        for e in &self.adverse_events {
            if let (Some(seriousness), None) = (&e.seriousness, &e.reviewed_by) {
                out.push(Attention {
                    kind: "serious_event".into(),
                    at_us: e.onset_us,
                    detail: format!("{} ({seriousness})", e.event),
                });
            }
        }
        if let Some(d) = &self.disposition
            && (d.code == "ems_transfer" || d.code == "against_advice")
        {
            out.push(Attention {
                kind: d.code.clone(),
                at_us: d.at_us,
                detail: d.note.clone(),
            });
        }
        out
    }
}

/// Root keys of the care record's parts.
pub mod keys {
    /// [`super::SessionCare::order`].
    pub const ORDER: &str = "order";
    /// [`super::SessionCare::screening`].
    pub const SCREENING: &str = "screening_answers";
    /// [`super::SessionCare::overrides`].
    pub const OVERRIDES: &str = "overrides";
    /// [`super::SessionCare::risk`].
    pub const RISK: &str = "risk_screen";
    /// [`super::SessionCare::checkpoints`].
    pub const CHECKPOINTS: &str = "checkpoints";
    /// [`super::SessionCare::adverse_events`].
    pub const ADVERSE_EVENTS: &str = "adverse_events";
    /// [`super::SessionCare::disposition`].
    pub const DISPOSITION: &str = "disposition";
}

/// The care record's lists, created empty with the session document, so that the first
/// entries two tablets append concurrently land in one list instead of two lists competing for
/// the key. (A session written before the care record existed gets its lists with its first
/// entry; two first entries at the same moment there could leave one of them out.)
pub(crate) fn create_lists(doc: &mut AutoCommit) -> Result<(), DocError> {
    use automerge::{ObjType, transaction::Transactable};
    for key in [
        keys::SCREENING,
        keys::OVERRIDES,
        keys::CHECKPOINTS,
        keys::ADVERSE_EVENTS,
    ] {
        doc.put_object(automerge::ROOT, key, ObjType::List)?;
    }
    Ok(())
}

/// A part under `key`, or its default when absent.
fn part<T: Hydrate + Default>(doc: &AutoCommit, key: &str) -> Result<T, DocError> {
    if doc.get(automerge::ROOT, key)?.is_none() {
        return Ok(T::default());
    }
    Ok(hydrate_prop(doc, automerge::ROOT, key)?)
}

/// Reads the care record of any session document (no copy); validation calls this too.
pub fn read_care(doc: &AutoCommit) -> Result<SessionCare, DocError> {
    Ok(SessionCare {
        order: part(doc, keys::ORDER)?,
        screening: part(doc, keys::SCREENING)?,
        overrides: part(doc, keys::OVERRIDES)?,
        risk: part(doc, keys::RISK)?,
        checkpoints: part(doc, keys::CHECKPOINTS)?,
        adverse_events: part(doc, keys::ADVERSE_EVENTS)?,
        disposition: part(doc, keys::DISPOSITION)?,
    })
}

/// Writes `new` over `old` part by part: an unchanged part writes nothing, so a tablet that
/// adds a checkpoint does not touch the order another wrote.
fn write_care(doc: &mut AutoCommit, old: &SessionCare, new: &SessionCare) -> Result<(), DocError> {
    fn put<T: Reconcile + PartialEq>(
        doc: &mut AutoCommit,
        key: &str,
        old: &T,
        new: &T,
    ) -> Result<(), DocError> {
        if old != new {
            reconcile_prop(doc, automerge::ROOT, key, new)?;
        }
        Ok(())
    }
    put(doc, keys::ORDER, &old.order, &new.order)?;
    put(doc, keys::SCREENING, &old.screening, &new.screening)?;
    put(doc, keys::OVERRIDES, &old.overrides, &new.overrides)?;
    put(doc, keys::RISK, &old.risk, &new.risk)?;
    put(doc, keys::CHECKPOINTS, &old.checkpoints, &new.checkpoints)?;
    put(
        doc,
        keys::ADVERSE_EVENTS,
        &old.adverse_events,
        &new.adverse_events,
    )?;
    put(doc, keys::DISPOSITION, &old.disposition, &new.disposition)
}

impl SessionDoc {
    /// The session's care record.
    pub fn care(&self) -> Result<SessionCare, DocError> {
        read_care(self.automerge_ref())
    }

    /// Changes the care record with `f` and writes what changed; on an error nothing is
    /// written.
    pub fn update_care<R>(&mut self, f: impl FnOnce(&mut SessionCare) -> R) -> Result<R, DocError> {
        let old = self.care()?;
        let mut new = old.clone();
        let out = f(&mut new);
        let doc = self.automerge();
        if let Err(e) = write_care(doc, &old, &new) {
            doc.rollback();
            return Err(e);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{DocKind, validate_document};
    use crate::fixtures::session_meta;

    fn checkpoint(id: &str, at_us: i64) -> CheckpointEntry {
        CheckpointEntry {
            id: id.into(),
            checkpoint: "at_40_min".into(),
            at_us,
            systolic: 142,
            diastolic: 88,
            sedation_scale: "moaas".into(),
            sedation: 4,
            by: "rn-lee".into(),
        }
    }

    fn care() -> SessionCare {
        SessionCare {
            order: Some(OrderEntry {
                prescriber: "dr-kim".into(),
                indication: "depression".into(),
                dose_mg_per_kg: 0.5,
                minutes: 40,
                concentration_min: 0.1,
                concentration_max: 2.0,
                rate_min: 39.4,
                rate_max: 65.6,
                at_us: 1,
                by: "dr-kim".into(),
            }),
            screening: vec![ScreeningEntry {
                id: "s1".into(),
                flag: "pregnancy".into(),
                yes: false,
                asked_us: 2,
                by: "fd-ray".into(),
            }],
            overrides: vec![OverrideEntry {
                id: "o1".into(),
                subject: "cardiovascular_disease".into(),
                reason: "cardiology cleared".into(),
                by: "dr-kim".into(),
                at_us: 3,
            }],
            risk: Some(RiskScreenEntry {
                id: "r1".into(),
                phq9_items: vec![2, 2, 1, 1, 0, 1, 1, 0, 1],
                cssrs: vec![true, false, false, false, false, false],
                at_us: 4,
                by: "rn-lee".into(),
                assessment: Some(RiskAssessmentEntry {
                    decision: "proceed".into(),
                    note: "passive ideation, safety plan in place".into(),
                    by: "dr-kim".into(),
                    at_us: 5,
                }),
            }),
            checkpoints: vec![checkpoint("c1", 6)],
            adverse_events: vec![AdverseEntry {
                id: "a1".into(),
                event: "vomiting".into(),
                onset_us: 7,
                end_us: Some(8),
                severity: "moderate".into(),
                seriousness: None,
                interventions: vec![InterventionEntry {
                    rescue: "ondansetron".into(),
                    dose: "4 mg".into(),
                    route: "iv".into(),
                    at_us: 7,
                }],
                outcome: "resolved".into(),
                by: "rn-lee".into(),
                reviewed_by: None,
                reviewed_us: None,
            }],
            disposition: Some(DispositionEntry {
                code: "home".into(),
                escort_name: "Pat Doe".into(),
                escort_phone: "+1 512 555 0100".into(),
                escort_relationship: "spouse".into(),
                aldrete_items: vec![2, 2, 2, 2, 2],
                note: String::new(),
                at_us: 9,
                by: "rn-lee".into(),
            }),
        }
    }

    #[test]
    fn a_risk_screen_reads_its_level_and_its_assessment() {
        // Item 9 answered 1 and a wish to be dead: low, assessed by the clinician: proceed.
        let mut s = care().risk.unwrap();
        assert_eq!(s.level(), RiskLevel::Low);
        assert_eq!(s.gate(), Ok(()));
        s.assessment = None;
        assert_eq!(s.gate(), Err(RiskBlock::NeedsAssessment { level: "low" }));
        s.cssrs[3] = true;
        assert_eq!(s.level(), RiskLevel::High, "intent");
        s.cssrs = vec![false; 6];
        s.phq9_items[8] = 0;
        assert_eq!((s.level(), s.gate()), (RiskLevel::None, Ok(())));
        s.phq9_items.pop();
        assert_eq!(s.phq9(), None, "eight items are not a PHQ-9");
        s.phq9_items = vec![4; 9];
        assert_eq!(s.phq9(), None, "an item over 3");
    }

    #[test]
    fn the_attention_list_takes_high_risk_serious_events_and_unplanned_endings() {
        let kinds = |c: &SessionCare| -> Vec<String> {
            c.attention().into_iter().map(|a| a.kind).collect()
        };
        // A low-risk answer assessed, a moderate event, home with an escort: nothing.
        let mut c = care();
        assert!(c.attention().is_empty());
        // A plan (C-SSRS 5) stays on the list after the assessment; managers follow it up.
        let risk = c.risk.as_mut().unwrap();
        risk.cssrs[4] = true;
        assert_eq!(kinds(&c), ["suicide_risk"]);
        assert!(
            c.attention()[0]
                .detail
                .starts_with("high risk; assessed by dr-kim")
        );
        // Method only (moderate): on the list until assessed.
        let risk = c.risk.as_mut().unwrap();
        risk.cssrs = vec![true, true, true, false, false, false];
        assert!(c.attention().is_empty(), "moderate and assessed");
        c.risk.as_mut().unwrap().assessment = None;
        assert_eq!(kinds(&c), ["suicide_risk"]);
        c.risk = None;
        // A serious event until its review; an EMS transfer.
        c.adverse_events[0].seriousness = Some("hospitalisation".into());
        c.disposition.as_mut().unwrap().code = "ems_transfer".into();
        assert_eq!(kinds(&c), ["serious_event", "ems_transfer"]);
        c.adverse_events[0].reviewed_by = Some("dr-kim".into());
        c.disposition.as_mut().unwrap().code = "against_advice".into();
        assert_eq!(kinds(&c), ["against_advice"]);
    }

    #[test]
    fn a_document_without_a_care_record_reads_empty() {
        let doc = SessionDoc::create(&session_meta("s", "austin", "1", 0)).unwrap();
        assert_eq!(doc.care().unwrap(), SessionCare::default());
    }

    #[test]
    fn the_care_record_round_trips_and_validates() {
        let mut doc = SessionDoc::create(&session_meta("s", "austin", "1", 0)).unwrap();
        doc.update_care(|c| *c = care()).unwrap();
        let bytes = doc.automerge().save();
        let loaded = SessionDoc::load(&bytes).unwrap();
        assert_eq!(loaded.care().unwrap(), care());
        validate_document(&AutoCommit::load(&bytes).unwrap(), DocKind::Session).unwrap();
    }

    #[test]
    fn checkpoints_from_two_tablets_merge() {
        let mut a = SessionDoc::create(&session_meta("s", "austin", "1", 0)).unwrap();
        let mut b = SessionDoc::load(&a.automerge().save()).unwrap();
        a.update_care(|c| c.checkpoints.push(checkpoint("c1", 10)))
            .unwrap();
        b.update_care(|c| c.checkpoints.push(checkpoint("c2", 11)))
            .unwrap();
        a.automerge().merge(b.automerge()).unwrap();
        let mut ids: Vec<String> = a
            .care()
            .unwrap()
            .checkpoints
            .into_iter()
            .map(|c| c.id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["c1", "c2"]);
    }

    #[test]
    fn an_unchanged_part_writes_nothing() {
        let mut doc = SessionDoc::create(&session_meta("s", "austin", "1", 0)).unwrap();
        doc.update_care(|c| *c = care()).unwrap();
        let before = doc.automerge().get_heads();
        doc.update_care(|_| ()).unwrap();
        assert_eq!(doc.automerge().get_heads(), before);
    }

    #[test]
    fn a_malformed_part_is_an_error_and_fails_validation() {
        let mut doc = SessionDoc::create(&session_meta("s", "austin", "1", 0)).unwrap();
        use automerge::transaction::Transactable;
        doc.automerge()
            .put(automerge::ROOT, keys::CHECKPOINTS, "not a list")
            .unwrap();
        assert!(doc.care().is_err());
        let bytes = doc.automerge().save();
        assert!(validate_document(&AutoCommit::load(&bytes).unwrap(), DocKind::Session).is_err());
    }
}
