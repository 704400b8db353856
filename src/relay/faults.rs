//! What the relay does to one datagram: the [`Faults`] in force for a direction, and the pure
//! decision ([`decide`]) that turns those faults and a seeded [`SplitMix64`] into a [`Fate`]
//! (dropped, or delivered after some delay, maybe twice).
//!
//! No sockets and no clocks here: the relay in [`super`] receives, asks for a fate, and sends.
//! That split is what makes a run reproducible from its seed.

use std::fmt;
use std::time::Duration;

/// The longest base delay plus jitter a direction may have. A datagram held longer than this
/// is useless to QUIC (its idle timeout is 30 s) and only ties up the in-flight queue; a
/// partition is what `cut` is for.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// The extra hold of a reordered datagram, on top of its delay and jitter. Long enough that the
/// next packets of a connection sending even a few per 100 ms overtake it (QUIC declares a
/// packet lost once 3 later ones are acknowledged), short enough to stay well under QUIC's
/// idle timeout.
pub const REORDER_HOLD: Duration = Duration::from_millis(100);

/// The faults in force for one direction of the relay. `Faults::default()` is a clean link.
///
/// Percentages are 0–100. The order of decisions for each datagram: `cut` drops it; then it
/// is lost with `loss_pct`; a survivor is held `delay` plus a uniform `0..=jitter` (so jitter
/// reorders, as on a real path), plus [`REORDER_HOLD`] with `reorder_pct`, and is sent twice
/// with `duplicate_pct` (the copy with its own jitter).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// A partition: every datagram is dropped, including those already held for a delay.
    pub cut: bool,
    /// Chance that a datagram is dropped, in percent.
    pub loss_pct: f64,
    /// Fixed delay added to every datagram.
    pub delay: Duration,
    /// Upper bound of a uniform random delay added to every datagram.
    pub jitter: Duration,
    /// Chance that a datagram is delivered twice, in percent.
    pub duplicate_pct: f64,
    /// Chance that a datagram is held back by [`REORDER_HOLD`] so later ones overtake it, in
    /// percent.
    pub reorder_pct: f64,
}

impl Faults {
    /// A clean link.
    pub const OK: Faults = Faults {
        cut: false,
        loss_pct: 0.0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        duplicate_pct: 0.0,
        reorder_pct: 0.0,
    };

    /// A partition: nothing gets through.
    pub const CUT: Faults = Faults {
        cut: true,
        ..Faults::OK
    };

    /// Checks that the percentages are 0–100 and the delays within [`MAX_DELAY`].
    pub fn validate(&self) -> Result<(), FaultsError> {
        for (name, value) in [
            ("loss", self.loss_pct),
            ("duplicate", self.duplicate_pct),
            ("reorder", self.reorder_pct),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(FaultsError::BadPercent { name, value });
            }
        }
        match self.delay.checked_add(self.jitter) {
            Some(total) if total <= MAX_DELAY => Ok(()),
            _ => Err(FaultsError::DelayTooLong {
                delay: self.delay,
                jitter: self.jitter,
            }),
        }
    }
}

impl fmt::Display for Faults {
    /// The timeline's text form: `ok`, or the faults that are set, e.g. `loss=20% delay=50ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Faults::OK {
            return f.write_str("ok");
        }
        let mut parts = Vec::new();
        if self.cut {
            parts.push("cut".to_owned());
        }
        for (name, pct) in [
            ("loss", self.loss_pct),
            ("dup", self.duplicate_pct),
            ("reorder", self.reorder_pct),
        ] {
            if pct != 0.0 {
                parts.push(format!("{name}={pct}%"));
            }
        }
        for (name, d) in [("delay", self.delay), ("jitter", self.jitter)] {
            if !d.is_zero() {
                parts.push(format!("{name}={}", fmt_duration(d)));
            }
        }
        f.write_str(&parts.join(" "))
    }
}

/// A duration in the timeline's text form: whole seconds as `5s`, anything else in
/// milliseconds (`1500ms`, `0.5ms`).
pub(super) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_secs_f64() * 1_000.0)
    }
}

/// Faults that the relay refuses to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultsError {
    /// A percentage outside 0–100, or not a number.
    BadPercent {
        /// Which fault.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// Delay plus jitter over [`MAX_DELAY`].
    DelayTooLong {
        /// The delay given.
        delay: Duration,
        /// The jitter given.
        jitter: Duration,
    },
}

// Written by hand rather than with thiserror: the root package does not depend on it.
impl fmt::Display for FaultsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultsError::BadPercent { name, value } => {
                write!(f, "{name} must be a percentage from 0 to 100, not {value}")
            }
            FaultsError::DelayTooLong { delay, jitter } => write!(
                f,
                "delay {delay:?} plus jitter {jitter:?} is over the relay's limit of {MAX_DELAY:?}; \
                 use a cut for a partition"
            ),
        }
    }
}

impl std::error::Error for FaultsError {}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DropReason {
    /// The direction is cut.
    Cut,
    /// Random loss.
    Loss,
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Not delivered.
    Drop(DropReason),
    /// Delivered after `after` (zero: now), and a second time after `duplicate_after`.
    Deliver {
        after: Duration,
        duplicate_after: Option<Duration>,
        reordered: bool,
    },
}

/// Decides the fate of one datagram under `faults`, drawing randomness from `rng` only.
pub(super) fn decide(faults: &Faults, rng: &mut SplitMix64) -> Fate {
    if faults.cut {
        return Fate::Drop(DropReason::Cut);
    }
    if rng.chance(faults.loss_pct) {
        return Fate::Drop(DropReason::Loss);
    }
    let reordered = rng.chance(faults.reorder_pct);
    let hold = if reordered {
        REORDER_HOLD
    } else {
        Duration::ZERO
    };
    let after = faults.delay + rng.up_to(faults.jitter) + hold;
    let duplicate_after = rng
        .chance(faults.duplicate_pct)
        .then(|| faults.delay + rng.up_to(faults.jitter));
    Fate::Deliver {
        after,
        duplicate_after,
        reordered,
    }
}

/// Sebastiano Vigna's splitmix64: a tiny, fast, well-mixed generator, plenty for choosing
/// which datagrams to drop, and reproducible from a 64-bit seed without a new dependency.
#[derive(Debug, Clone)]
pub(super) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(super) fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// True with probability `pct` percent. Draws nothing when `pct` is 0, so a clean link
    /// does not advance the sequence.
    pub(super) fn chance(&mut self, pct: f64) -> bool {
        pct > 0.0 && self.unit() * 100.0 < pct
    }

    /// Uniform in `0..=max`, at nanosecond resolution.
    pub(super) fn up_to(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        // Delays are validated to at most MAX_DELAY, far below u64::MAX nanoseconds; saturate
        // anyway rather than trust the caller.
        let n = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        // Multiply-high maps the 64-bit draw onto 0..=n without modulo bias worth naming.
        let nanos = (u128::from(self.next_u64()) * (u128::from(n) + 1)) >> 64;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // The first outputs for seed 0 of Vigna's splitmix64.c.
        let mut rng = SplitMix64::new(0);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                0xE220_A839_7B1D_CDAF,
                0x6E78_9E6A_A1B9_65F4,
                0x06C4_5D18_8009_454F
            ]
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_fates() {
        let faults = Faults {
            loss_pct: 30.0,
            jitter: Duration::from_millis(40),
            duplicate_pct: 10.0,
            reorder_pct: 10.0,
            ..Faults::OK
        };
        let run = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..200)
                .map(|_| decide(&faults, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn chance_and_up_to_stay_in_range() {
        // (pct, draws, lowest and highest count of hits accepted)
        let table = [
            (0.0, 10_000, 0, 0),
            (100.0, 10_000, 10_000, 10_000),
            (50.0, 10_000, 4_700, 5_300),
            (1.0, 10_000, 50, 150),
        ];
        for (pct, draws, lo, hi) in table {
            let mut rng = SplitMix64::new(7);
            let hits = (0..draws).filter(|_| rng.chance(pct)).count();
            assert!((lo..=hi).contains(&hits), "{pct}%: {hits} of {draws}");
        }
        let mut rng = SplitMix64::new(7);
        let max = Duration::from_millis(5);
        let draws: Vec<_> = (0..10_000).map(|_| rng.up_to(max)).collect();
        assert!(draws.iter().all(|d| *d <= max));
        assert!(draws.iter().any(|d| *d < Duration::from_millis(1)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(4)));
        assert_eq!(rng.up_to(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn decide_follows_the_faults() {
        let ms = Duration::from_millis;
        let deliver = |after, duplicate_after, reordered| Fate::Deliver {
            after,
            duplicate_after,
            reordered,
        };
        // (faults, the fate of every one of 100 datagrams)
        let table = [
            (Faults::OK, deliver(Duration::ZERO, None, false)),
            (Faults::CUT, Fate::Drop(DropReason::Cut)),
            (
                Faults {
                    cut: true,
                    delay: ms(10),
                    ..Faults::OK
                },
                Fate::Drop(DropReason::Cut),
            ),
            (
                Faults {
                    loss_pct: 100.0,
                    ..Faults::OK
                },
                Fate::Drop(DropReason::Loss),
            ),
            (
                Faults {
                    delay: ms(200),
                    ..Faults::OK
                },
                deliver(ms(200), None, false),
            ),
            (
                Faults {
                    delay: ms(20),
                    duplicate_pct: 100.0,
                    ..Faults::OK
                },
                deliver(ms(20), Some(ms(20)), false),
            ),
            (
                Faults {
                    reorder_pct: 100.0,
                    ..Faults::OK
                },
                deliver(REORDER_HOLD, None, true),
            ),
        ];
        for (faults, expected) in table {
            let mut rng = SplitMix64::new(1);
            for _ in 0..100 {
                assert_eq!(decide(&faults, &mut rng), expected, "{faults}");
            }
        }
    }

    #[test]
    fn validate_rejects_out_of_range_faults() {
        let bad = [
            Faults {
                loss_pct: -1.0,
                ..Faults::OK
            },
            Faults {
                loss_pct: f64::NAN,
                ..Faults::OK
            },
            Faults {
                duplicate_pct: 100.5,
                ..Faults::OK
            },
            Faults {
                reorder_pct: f64::INFINITY,
                ..Faults::OK
            },
            Faults {
                delay: MAX_DELAY,
                jitter: Duration::from_millis(1),
                ..Faults::OK
            },
            Faults {
                delay: Duration::MAX,
                jitter: Duration::MAX,
                ..Faults::OK
            },
        ];
        for faults in bad {
            assert!(faults.validate().is_err(), "{faults:?} accepted");
        }
        assert_eq!(Faults::OK.validate(), Ok(()));
        assert_eq!(Faults::CUT.validate(), Ok(()));
    }

    #[test]
    fn faults_display_in_the_timeline_form() {
        let table = [
            (Faults::OK, "ok"),
            (Faults::CUT, "cut"),
            (
                Faults {
                    loss_pct: 20.0,
                    delay: Duration::from_millis(50),
                    jitter: Duration::from_millis(200),
                    ..Faults::OK
                },
                "loss=20% delay=50ms jitter=200ms",
            ),
        ];
        for (faults, text) in table {
            assert_eq!(faults.to_string(), text);
        }
    }
}
