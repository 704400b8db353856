//! Timed monitoring checkpoints, as Spravato's REMS monitoring sets the benchmark: blood
//! pressure and a sedation score before the infusion starts, at 40 ± 5 minutes, and before
//! discharge. [`checkpoints`] says for each whether it is done (and when), not yet due, due
//! now or overdue, so the room screen can prompt and the record shows each with its time.

vocabulary! {
    /// The sedation scale a checkpoint's score is on.
    "sedation scale" pub enum SedationScale {
        /// Modified Observer's Assessment of Alertness/Sedation: 5 (responds readily to name)
        /// down to 0 (no response to a painful stimulus).
        Moaas = "moaas", "MOAA/S";
        /// Richmond Agitation-Sedation Scale: +4 (combative) to −5 (unrousable), 0 alert and
        /// calm.
        Rass = "rass", "RASS";
    }
}

impl SedationScale {
    /// The values the scale takes.
    pub fn range(self) -> std::ops::RangeInclusive<i64> {
        match self {
            SedationScale::Moaas => 0..=5,
            SedationScale::Rass => -5..=4,
        }
    }

    /// Checks a value, naming the scale and its range when it is outside.
    pub fn check(self, value: i64) -> Result<(), String> {
        if self.range().contains(&value) {
            Ok(())
        } else {
            Err(format!(
                "{} {value} is outside {}..{}",
                self.label(),
                self.range().start(),
                self.range().end()
            ))
        }
    }
}

vocabulary! {
    /// When a checkpoint is taken.
    "checkpoint" pub enum Checkpoint {
        /// Before the infusion starts.
        BeforeStart = "before_start", "before start";
        /// 40 ± 5 minutes after the start.
        At40Min = "at_40_min", "at 40 min";
        /// Before discharge, after the dose stopped.
        BeforeDischarge = "before_discharge", "before discharge";
    }
}

/// The in-infusion checkpoint's time after the start, µs (40 min).
pub const MID_CHECKPOINT_US: i64 = 40 * 60 * 1_000_000;

/// How far either side of [`MID_CHECKPOINT_US`] it may be taken, µs (5 min).
pub const MID_CHECKPOINT_WINDOW_US: i64 = 5 * 60 * 1_000_000;

/// A recorded checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// Which.
    pub checkpoint: Checkpoint,
    /// When, µs.
    pub at_us: i64,
}

/// Where one checkpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointState {
    /// Recorded at this time.
    Done(i64),
    /// Not due yet; due from this time.
    NotYet(i64),
    /// Due now.
    Due,
    /// The window passed without it (the 40-minute checkpoint only); still to be taken.
    Overdue,
}

/// Where each checkpoint stands at `now_us` for an infusion started at `started_us` (`None`
/// before the start) whose dose stopped at `stopped_us`. A record counts for the 40-minute
/// checkpoint only inside its window; a late one leaves it overdue, so the record shows it.
pub fn checkpoints(
    records: &[CheckpointRecord],
    started_us: Option<i64>,
    stopped_us: Option<i64>,
    now_us: i64,
) -> [(Checkpoint, CheckpointState); 3] {
    let done = |c: Checkpoint, window: Option<(i64, i64)>| {
        records
            .iter()
            .filter(|r| r.checkpoint == c)
            .filter(|r| window.is_none_or(|(from, to)| (from..=to).contains(&r.at_us)))
            .map(|r| r.at_us)
            .max()
    };
    let before = match done(Checkpoint::BeforeStart, None) {
        Some(at) => CheckpointState::Done(at),
        None => CheckpointState::Due,
    };
    let mid = match started_us {
        None => CheckpointState::NotYet(i64::MAX),
        Some(start) => {
            let from = start + MID_CHECKPOINT_US - MID_CHECKPOINT_WINDOW_US;
            let to = start + MID_CHECKPOINT_US + MID_CHECKPOINT_WINDOW_US;
            match done(Checkpoint::At40Min, Some((from, to))) {
                Some(at) => CheckpointState::Done(at),
                None if now_us < from => CheckpointState::NotYet(from),
                None if now_us <= to => CheckpointState::Due,
                None => CheckpointState::Overdue,
            }
        }
    };
    let discharge = match (stopped_us, done(Checkpoint::BeforeDischarge, None)) {
        (Some(stop), Some(at)) if at >= stop => CheckpointState::Done(at),
        (Some(_), _) => CheckpointState::Due,
        (None, _) => CheckpointState::NotYet(i64::MAX),
    };
    [
        (Checkpoint::BeforeStart, before),
        (Checkpoint::At40Min, mid),
        (Checkpoint::BeforeDischarge, discharge),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60 * 1_000_000;
    const START: i64 = 1_000 * M;

    fn rec(checkpoint: Checkpoint, at_us: i64) -> CheckpointRecord {
        CheckpointRecord { checkpoint, at_us }
    }

    #[test]
    fn worked_examples() {
        use Checkpoint::*;
        use CheckpointState::*;
        let pre = rec(BeforeStart, START - 5 * M);
        // (what, records, started, stopped, now, expected states)
        type Case = (
            &'static str,
            Vec<CheckpointRecord>,
            Option<i64>,
            Option<i64>,
            i64,
            [CheckpointState; 3],
        );
        let cases: Vec<Case> = vec![
            (
                "check-in",
                vec![],
                None,
                None,
                START - 10 * M,
                [Due, NotYet(i64::MAX), NotYet(i64::MAX)],
            ),
            (
                "20 min in",
                vec![pre],
                Some(START),
                None,
                START + 20 * M,
                [
                    Done(START - 5 * M),
                    NotYet(START + 35 * M),
                    NotYet(i64::MAX),
                ],
            ),
            (
                "37 min in: due",
                vec![pre],
                Some(START),
                None,
                START + 37 * M,
                [Done(START - 5 * M), Due, NotYet(i64::MAX)],
            ),
            (
                "taken at 41 min",
                vec![pre, rec(At40Min, START + 41 * M)],
                Some(START),
                None,
                START + 50 * M,
                [Done(START - 5 * M), Done(START + 41 * M), NotYet(i64::MAX)],
            ),
            (
                "46 min, none: overdue",
                vec![pre],
                Some(START),
                None,
                START + 46 * M,
                [Done(START - 5 * M), Overdue, NotYet(i64::MAX)],
            ),
            (
                "taken at 50 min is late: still overdue",
                vec![pre, rec(At40Min, START + 50 * M)],
                Some(START),
                None,
                START + 55 * M,
                [Done(START - 5 * M), Overdue, NotYet(i64::MAX)],
            ),
            (
                "dose stopped: the discharge checkpoint is due",
                vec![pre, rec(At40Min, START + 40 * M)],
                Some(START),
                Some(START + 42 * M),
                START + 60 * M,
                [Done(START - 5 * M), Done(START + 40 * M), Due],
            ),
            (
                "a discharge checkpoint from before the stop does not count",
                vec![
                    pre,
                    rec(At40Min, START + 40 * M),
                    rec(BeforeDischarge, START + 41 * M),
                ],
                Some(START),
                Some(START + 42 * M),
                START + 60 * M,
                [Done(START - 5 * M), Done(START + 40 * M), Due],
            ),
            (
                "all three",
                vec![
                    pre,
                    rec(At40Min, START + 40 * M),
                    rec(BeforeDischarge, START + 75 * M),
                ],
                Some(START),
                Some(START + 42 * M),
                START + 80 * M,
                [
                    Done(START - 5 * M),
                    Done(START + 40 * M),
                    Done(START + 75 * M),
                ],
            ),
        ];
        for (what, records, started, stopped, now, want) in cases {
            let got = checkpoints(&records, started, stopped, now).map(|(_, s)| s);
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn sedation_scales_have_their_ranges() {
        assert_eq!(SedationScale::Moaas.check(5), Ok(()));
        assert_eq!(
            SedationScale::Moaas.check(6),
            Err("MOAA/S 6 is outside 0..5".into())
        );
        assert_eq!(SedationScale::Rass.check(-5), Ok(()));
        assert_eq!(
            SedationScale::Rass.check(5),
            Err("RASS 5 is outside -5..4".into())
        );
    }
}
