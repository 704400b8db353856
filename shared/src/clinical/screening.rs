//! Pre-infusion screening, per flag and per visit: the full list of conditions that block a
//! ketamine infusion until a clinician decides, each answer stamped with the check-in that
//! asked it, and the interacting medications found in the patient's list.
//!
//! [`screening_gate`] is the start's gate: every flag answered, no answer older than
//! [`ANSWER_MAX_AGE_US`], the pregnancy question asked today (the site's day), and every "yes"
//! overridden by a clinician with a reason of its own. One override reason no longer covers
//! every flag.

use super::StaffRole;

vocabulary! {
    /// A screening question whose "yes" blocks the start until a clinician overrides it.
    "screening flag" pub enum ScreeningFlag {
        /// Blood pressure above 140/90 and not controlled (a high baseline reading flags it too).
        UncontrolledHypertension = "uncontrolled_hypertension", "Uncontrolled hypertension";
        /// Cardiovascular disease.
        CardiovascularDisease = "cardiovascular_disease", "Cardiovascular disease";
        /// History of psychosis.
        PsychosisHistory = "psychosis_history", "History of psychosis";
        /// Pregnant (asked at every visit).
        Pregnancy = "pregnancy", "Pregnancy";
        /// Current substance use.
        SubstanceUse = "substance_use", "Current substance use";
        /// A previous reaction to ketamine.
        KetamineHypersensitivity = "ketamine_hypersensitivity", "Hypersensitivity to ketamine";
        /// Aneurysmal vascular disease, arteriovenous malformation or intracerebral haemorrhage.
        VascularMalformation = "aneurysm_avm_haemorrhage", "Aneurysm, AVM or past intracerebral haemorrhage";
        /// Raised intracranial or intraocular pressure.
        RaisedPressure = "raised_intracranial_or_intraocular_pressure", "Raised intracranial or intraocular pressure";
        /// Hyperthyroidism not controlled.
        UncontrolledHyperthyroidism = "uncontrolled_hyperthyroidism", "Uncontrolled hyperthyroidism";
        /// Current mania or hypomania.
        CurrentMania = "current_mania", "Current mania";
        /// Misuse of ketamine or hallucinogens, now or before.
        MisuseHistory = "ketamine_or_hallucinogen_misuse", "Ketamine or hallucinogen misuse";
        /// Severe liver disease.
        SevereLiverDisease = "severe_liver_disease", "Severe liver disease";
        /// Breastfeeding.
        Breastfeeding = "breastfeeding", "Breastfeeding";
        /// Takes a medication that interacts (see [`interactions`]).
        InteractingMedication = "interacting_medication", "Interacting medication";
    }
}

/// Answers older than this (30 days) are asked again before an infusion.
pub const ANSWER_MAX_AGE_US: i64 = 30 * crate::zone::US_PER_DAY;

/// One answer, stamped with the check-in that asked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The question.
    pub flag: ScreeningFlag,
    /// Yes.
    pub yes: bool,
    /// When asked, µs.
    pub asked_us: i64,
}

/// A clinician's override of one flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagOverride {
    /// The flag.
    pub flag: ScreeningFlag,
    /// Why the infusion may go ahead.
    pub reason: String,
    /// Role of whoever recorded it.
    pub by_role: StaffRole,
}

/// What stops the start, one line per flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScreeningBlock {
    /// Never asked.
    #[error("{}: not asked", .0.label())]
    Unanswered(ScreeningFlag),
    /// Asked more than 30 days ago.
    #[error("{}: answer is more than 30 days old; ask again", .0.label())]
    Stale(ScreeningFlag),
    /// Pregnancy not asked today.
    #[error("Pregnancy: not asked today; ask at every visit")]
    PregnancyNotToday,
    /// A "yes" without a clinician's override.
    #[error("{}: a clinician must override with a reason", .0.label())]
    Positive(ScreeningFlag),
    /// An override by someone who is not a clinician.
    #[error("{}: only a clinician may override", .0.label())]
    OverrideNotClinician(ScreeningFlag),
}

/// Whether screening lets the infusion start: every flag answered within 30 days, pregnancy
/// answered since `today_start_us` (the site's local midnight), a high baseline reading counted
/// as hypertension, and every "yes" overridden by a clinician with a non-blank reason.
/// The latest answer to a flag counts. Returns every block at once, in the flags' order, so the
/// screen lists all that is missing.
pub fn screening_gate(
    answers: &[Answer],
    overrides: &[FlagOverride],
    high_baseline_bp: bool,
    now_us: i64,
    today_start_us: i64,
) -> Result<(), Vec<ScreeningBlock>> {
    let mut blocks = Vec::new();
    for &flag in ScreeningFlag::ALL {
        let latest = answers
            .iter()
            .filter(|a| a.flag == flag)
            .max_by_key(|a| a.asked_us);
        let yes = match latest {
            None => {
                blocks.push(ScreeningBlock::Unanswered(flag));
                continue;
            }
            Some(a) if flag == ScreeningFlag::Pregnancy && a.asked_us < today_start_us => {
                blocks.push(ScreeningBlock::PregnancyNotToday);
                continue;
            }
            Some(a) if now_us - a.asked_us > ANSWER_MAX_AGE_US => {
                blocks.push(ScreeningBlock::Stale(flag));
                continue;
            }
            Some(a) => a.yes,
        };
        let yes = yes || (flag == ScreeningFlag::UncontrolledHypertension && high_baseline_bp);
        if !yes {
            continue;
        }
        let valid = overrides
            .iter()
            .filter(|o| o.flag == flag && !o.reason.trim().is_empty());
        let mut any = false;
        let mut by_clinician = false;
        for o in valid {
            any = true;
            by_clinician |= o.by_role == StaffRole::Clinician;
        }
        match (any, by_clinician) {
            (_, true) => {}
            (true, false) => blocks.push(ScreeningBlock::OverrideNotClinician(flag)),
            (false, _) => blocks.push(ScreeningBlock::Positive(flag)),
        }
    }
    if blocks.is_empty() {
        Ok(())
    } else {
        Err(blocks)
    }
}

/// What the start's refusal says: every block, in the flags' order.
pub fn blocked_message(blocks: &[ScreeningBlock]) -> String {
    let list: Vec<String> = blocks.iter().map(ToString::to_string).collect();
    format!("start blocked by screening: {}", list.join("; "))
}

vocabulary! {
    /// A class of medication that interacts with ketamine.
    "interaction" pub enum Interaction {
        /// Blunt ketamine's antidepressant effect.
        Benzodiazepine = "benzodiazepine", "Benzodiazepine";
        /// May blunt ketamine's effect (glutamate release).
        Lamotrigine = "lamotrigine", "Lamotrigine";
        /// Hypertensive crisis risk.
        Maoi = "maoi", "MAO inhibitor";
        /// Raises blood pressure and heart rate further.
        Stimulant = "stimulant", "Stimulant";
    }
}

/// Generic names (lower case) of each interacting class. A list, not a formulary: a medication
/// not in it still shows on the check-in screen for the clinician to read.
const INTERACTING: &[(&str, Interaction)] = &[
    ("alprazolam", Interaction::Benzodiazepine),
    ("chlordiazepoxide", Interaction::Benzodiazepine),
    ("clobazam", Interaction::Benzodiazepine),
    ("clonazepam", Interaction::Benzodiazepine),
    ("diazepam", Interaction::Benzodiazepine),
    ("lorazepam", Interaction::Benzodiazepine),
    ("midazolam", Interaction::Benzodiazepine),
    ("oxazepam", Interaction::Benzodiazepine),
    ("temazepam", Interaction::Benzodiazepine),
    ("lamotrigine", Interaction::Lamotrigine),
    ("isocarboxazid", Interaction::Maoi),
    ("moclobemide", Interaction::Maoi),
    ("phenelzine", Interaction::Maoi),
    ("selegiline", Interaction::Maoi),
    ("tranylcypromine", Interaction::Maoi),
    ("amphetamine", Interaction::Stimulant),
    ("armodafinil", Interaction::Stimulant),
    ("dexmethylphenidate", Interaction::Stimulant),
    ("dextroamphetamine", Interaction::Stimulant),
    ("lisdexamfetamine", Interaction::Stimulant),
    ("methylphenidate", Interaction::Stimulant),
    ("modafinil", Interaction::Stimulant),
];

/// The interacting medications in a patient's list: each entry that names a listed generic
/// (case-insensitive, as a whole word: "Lorazepam 1 mg at night" matches, "clonazepamine"
/// does not), with its class.
pub fn interactions(medications: &[String]) -> Vec<(Interaction, &str)> {
    let mut out = Vec::new();
    for med in medications {
        let lower = med.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(&(_, class)) = INTERACTING.iter().find(|(name, _)| words.contains(name)) {
            out.push((class, med.as_str()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::US_PER_DAY;

    const NOW: i64 = 1_000 * US_PER_DAY + 10 * 3_600_000_000; // 10:00 on day 1000
    const TODAY: i64 = 1_000 * US_PER_DAY;

    fn all_no(at: i64) -> Vec<Answer> {
        ScreeningFlag::ALL
            .iter()
            .map(|&flag| Answer {
                flag,
                yes: false,
                asked_us: at,
            })
            .collect()
    }

    fn set(answers: &mut [Answer], flag: ScreeningFlag, yes: bool, at: i64) {
        let a = answers.iter_mut().find(|a| a.flag == flag).unwrap();
        a.yes = yes;
        a.asked_us = at;
    }

    fn ov(flag: ScreeningFlag, reason: &str, by_role: StaffRole) -> FlagOverride {
        FlagOverride {
            flag,
            reason: reason.into(),
            by_role,
        }
    }

    #[test]
    fn everything_answered_no_today_passes() {
        assert_eq!(
            screening_gate(&all_no(NOW - 600_000_000), &[], false, NOW, TODAY),
            Ok(())
        );
    }

    #[test]
    fn worked_examples() {
        use ScreeningBlock::*;
        use ScreeningFlag::*;
        let c = StaffRole::Clinician;
        let n = StaffRole::Nurse;
        let fresh = NOW - 3_600_000_000;
        let yesterday = TODAY - 3_600_000_000;
        let old = NOW - 31 * US_PER_DAY;
        type Case = (
            &'static str,
            Vec<(ScreeningFlag, bool, i64)>,
            Vec<FlagOverride>,
            bool,
            Vec<ScreeningBlock>,
        );
        let cases: Vec<Case> = vec![
            (
                "answers from last week still hold, pregnancy asked today",
                vec![],
                vec![],
                false,
                vec![],
            ),
            (
                "pregnancy asked yesterday",
                vec![(Pregnancy, false, yesterday)],
                vec![],
                false,
                vec![PregnancyNotToday],
            ),
            (
                "a 31-day-old answer",
                vec![(CurrentMania, false, old)],
                vec![],
                false,
                vec![Stale(CurrentMania)],
            ),
            (
                "a yes without override",
                vec![(Breastfeeding, true, fresh)],
                vec![],
                false,
                vec![Positive(Breastfeeding)],
            ),
            (
                "a yes overridden by a clinician",
                vec![(CardiovascularDisease, true, fresh)],
                vec![ov(
                    CardiovascularDisease,
                    "cardiology cleared 2026-11-20",
                    c,
                )],
                false,
                vec![],
            ),
            (
                "one flag's override does not cover another",
                vec![
                    (CardiovascularDisease, true, fresh),
                    (MisuseHistory, true, fresh),
                ],
                vec![ov(CardiovascularDisease, "cardiology cleared", c)],
                false,
                vec![Positive(MisuseHistory)],
            ),
            (
                "a nurse's override",
                vec![(SubstanceUse, true, fresh)],
                vec![ov(SubstanceUse, "says stopped", n)],
                false,
                vec![OverrideNotClinician(SubstanceUse)],
            ),
            (
                "a blank reason",
                vec![(SubstanceUse, true, fresh)],
                vec![ov(SubstanceUse, "  ", c)],
                false,
                vec![Positive(SubstanceUse)],
            ),
            (
                "a high baseline reading",
                vec![],
                vec![],
                true,
                vec![Positive(UncontrolledHypertension)],
            ),
            (
                "the latest answer counts",
                vec![(KetamineHypersensitivity, false, fresh)],
                vec![],
                false,
                vec![],
            ),
        ];
        for (what, changes, overrides, high_bp, want) in cases {
            let mut answers = all_no(NOW - 7 * US_PER_DAY);
            set(&mut answers, Pregnancy, false, fresh);
            for (flag, yes, at) in changes {
                set(&mut answers, flag, yes, at);
            }
            if what == "the latest answer counts" {
                // An older "yes" stays in the record beside the newer "no".
                answers.push(Answer {
                    flag: KetamineHypersensitivity,
                    yes: true,
                    asked_us: old,
                });
            }
            let got = screening_gate(&answers, &overrides, high_bp, NOW, TODAY);
            let want = if want.is_empty() { Ok(()) } else { Err(want) };
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_first_visit_lists_every_question() {
        let blocks = screening_gate(&[], &[], false, NOW, TODAY).unwrap_err();
        assert_eq!(blocks.len(), ScreeningFlag::ALL.len());
        assert_eq!(
            blocks[0].to_string(),
            "Uncontrolled hypertension: not asked"
        );
    }

    #[test]
    fn the_first_five_flags_keep_their_stored_names() {
        // The codes check-in records and patients' screening stored before the full list.
        for code in [
            "uncontrolled_hypertension",
            "cardiovascular_disease",
            "psychosis_history",
            "pregnancy",
            "substance_use",
        ] {
            assert_eq!(ScreeningFlag::parse(code).map(|f| f.code()), Ok(code));
        }
    }

    #[test]
    fn interacting_medications_are_found_by_whole_word() {
        let meds: Vec<String> = [
            "Lorazepam 1 mg at night",
            "sertraline 100 mg",
            "LAMOTRIGINE 200mg",
            "phenelzine",
            "Adderall (amphetamine)",
            "clonazepamine", // not a word in the list
        ]
        .map(String::from)
        .to_vec();
        let found: Vec<(Interaction, &str)> = interactions(&meds);
        assert_eq!(
            found,
            vec![
                (Interaction::Benzodiazepine, "Lorazepam 1 mg at night"),
                (Interaction::Lamotrigine, "LAMOTRIGINE 200mg"),
                (Interaction::Maoi, "phenelzine"),
                (Interaction::Stimulant, "Adderall (amphetamine)"),
            ]
        );
    }
}
