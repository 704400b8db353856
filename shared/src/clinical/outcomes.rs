//! Treatment outcomes by PHQ-9, defined once for the room screen, the dashboard and the
//! reports.
//!
//! - **Baseline**: the first PHQ-9 total at or before the first infusion.
//! - **End of induction**: the last PHQ-9 total taken from [`END_OF_INDUCTION_FROM_US`] to
//!   [`END_OF_INDUCTION_TO_US`] after the last infusion of the induction (the next-day to
//!   third-day visit). Not a maintenance score, and not a score from the infusion day itself,
//!   when dissociation and the acute effect colour the answers.
//! - **Response**: end of induction at most half the baseline. **Remission**: end of
//!   induction under [`REMISSION_BELOW`]. Both are counted only where the baseline is at least
//!   [`BASELINE_MIN`] (moderate depression): a patient who starts at 7 and ends at 3 was
//!   never depressed enough to remit.

use crate::zone::US_PER_DAY;

/// Baseline PHQ-9 needed for a patient to count towards response and remission.
pub const BASELINE_MIN: i64 = 10;

/// A PHQ-9 under this is remission.
pub const REMISSION_BELOW: i64 = 5;

/// The end-of-induction score is taken from this long after the last induction infusion
/// (12 h: the next morning counts, the evening of the infusion day does not).
pub const END_OF_INDUCTION_FROM_US: i64 = US_PER_DAY / 2;

/// … to this long after it (3 days, with half a day's slack for the visit's hour).
pub const END_OF_INDUCTION_TO_US: i64 = 3 * US_PER_DAY + US_PER_DAY / 2;

/// A patient's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The baseline total, if any.
    pub baseline: Option<i64>,
    /// The end-of-induction total, if the induction is complete and it was taken in time.
    pub end_of_induction: Option<i64>,
    /// Whether the patient counts towards response and remission: both totals, baseline at
    /// least [`BASELINE_MIN`].
    pub evaluable: bool,
    /// End of induction at most half the baseline (evaluable patients only).
    pub response: bool,
    /// End of induction under [`REMISSION_BELOW`] (evaluable patients only).
    pub remission: bool,
}

/// The outcome of a patient's course from their PHQ-9 totals (`(at_us, total)`, any order),
/// the start times of their completed infusions (any order) and the number of induction
/// infusions planned. The induction ends with the `planned`-th completed infusion; until then
/// there is no end-of-induction score.
pub fn phq9_outcome(scores: &[(i64, i64)], infusions_us: &[i64], planned: u64) -> Outcome {
    let mut infusions = infusions_us.to_vec();
    infusions.sort_unstable();
    let baseline = infusions.first().and_then(|&first| {
        scores
            .iter()
            .filter(|(at, _)| *at <= first)
            .min_by_key(|(at, _)| *at)
            .map(|&(_, total)| total)
    });
    let last_induction = usize::try_from(planned)
        .ok()
        .filter(|&n| n > 0)
        .and_then(|n| infusions.get(n - 1).copied());
    let end_of_induction = last_induction.and_then(|last| {
        scores
            .iter()
            .filter(|(at, _)| {
                (last + END_OF_INDUCTION_FROM_US..=last + END_OF_INDUCTION_TO_US).contains(at)
            })
            .max_by_key(|(at, _)| *at)
            .map(|&(_, total)| total)
    });
    let (evaluable, response, remission) = match (baseline, end_of_induction) {
        (Some(b), Some(e)) if b >= BASELINE_MIN => (true, 2 * e <= b, e < REMISSION_BELOW),
        _ => (false, false, false),
    };
    Outcome {
        baseline,
        end_of_induction,
        evaluable,
        response,
        remission,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = US_PER_DAY;
    const H: i64 = 3_600_000_000;

    /// Six infusions over two weeks: days 0, 2, 4, 7, 9, 11 at 10:00.
    fn induction() -> Vec<i64> {
        [0, 2, 4, 7, 9, 11].map(|d| d * D + 10 * H).to_vec()
    }

    #[test]
    fn worked_examples() {
        let i = induction();
        let last = i[5];
        let before = i[0] - H; // at check-in, before the first infusion
        // (what, scores, planned, baseline, end, evaluable, response, remission)
        type Case = (
            &'static str,
            Vec<(i64, i64)>,
            u64,
            Option<i64>,
            Option<i64>,
            bool,
            bool,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "response and remission",
                vec![(before, 20), (last + D, 4)],
                6,
                Some(20),
                Some(4),
                true,
                true,
                true,
            ),
            (
                "response, no remission",
                vec![(before, 20), (last + D, 10)],
                6,
                Some(20),
                Some(10),
                true,
                true,
                false,
            ),
            (
                "neither: 20 → 11",
                vec![(before, 20), (last + D, 11)],
                6,
                Some(20),
                Some(11),
                true,
                false,
                false,
            ),
            (
                "a baseline under 10 does not count, even at 3",
                vec![(before, 7), (last + D, 3)],
                6,
                Some(7),
                Some(3),
                false,
                false,
                false,
            ),
            (
                "baseline exactly 10 counts",
                vec![(before, 10), (last + D, 4)],
                6,
                Some(10),
                Some(4),
                true,
                true,
                true,
            ),
            (
                "the infusion-day score is not the end of induction",
                vec![(before, 20), (last + 2 * H, 2)],
                6,
                Some(20),
                None,
                false,
                false,
                false,
            ),
            (
                "a maintenance score a month later is not either",
                vec![(before, 20), (last + D, 12), (last + 30 * D, 3)],
                6,
                Some(20),
                Some(12),
                true,
                false,
                false,
            ),
            (
                "the last score in the window counts",
                vec![(before, 20), (last + D, 12), (last + 3 * D, 8)],
                6,
                Some(20),
                Some(8),
                true,
                true,
                false,
            ),
            (
                "induction not complete",
                vec![(before, 20), (last + D, 4)],
                8,
                Some(20),
                None,
                false,
                false,
                false,
            ),
            (
                "no score before the first infusion: no baseline",
                vec![(i[0] + 2 * H, 20), (last + D, 4)],
                6,
                None,
                Some(4),
                false,
                false,
                false,
            ),
            (
                "the first of two pre-infusion scores is the baseline",
                vec![(before - 7 * D, 22), (before, 18), (last + D, 11)],
                6,
                Some(22),
                Some(11),
                true,
                true,
                false,
            ),
        ];
        for (what, scores, planned, baseline, end, evaluable, response, remission) in cases {
            let got = phq9_outcome(&scores, &i, planned);
            assert_eq!(
                got,
                Outcome {
                    baseline,
                    end_of_induction: end,
                    evaluable,
                    response,
                    remission
                },
                "{what}"
            );
        }
    }

    #[test]
    fn no_infusions_no_outcome() {
        let got = phq9_outcome(&[(0, 20)], &[], 6);
        assert_eq!(got.baseline, None);
        assert!(!got.evaluable);
    }
}
