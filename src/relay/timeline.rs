//! A fault timeline: which [`Faults`] the relay applies when, counted from the moment the
//! timeline starts, in a compact text form for the command line:
//!
//! ```text
//! 0s ok; 5s cut; 10s ok; 15s loss=20% jitter=200ms delay=50ms; 60s ok
//! 0s ok; 20s cut; 25s repeat            (a step `repeat` starts over at that time)
//! flap 5s 5s                             (up 5 s, then cut 5 s, repeating)
//! ```
//!
//! Each step names all the faults in force from then on (`ok` for none): a step does not
//! inherit from the one before. Faults: `cut`, `loss=P%`, `delay=T`, `jitter=T`, `dup=P%`
//! (or `duplicate=`), `reorder=P%`; times are a number and a unit (`ms`, `s`, `m`, `h`).
//!
//! Only parsing and the pure question "what is in force at time t" live here; the relay's
//! handle runs a timeline on a task.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::faults::{Faults, FaultsError, fmt_duration};

/// The most steps a timeline may have. A scripted scenario has tens; the cap keeps a pasted
/// mistake from becoming an unbounded allocation.
pub const MAX_TIMELINE_STEPS: usize = 1_024;

/// The latest time a step may be at. A week is far beyond any test or demo run, so a later
/// time is a typo (and keeps instant arithmetic far from overflow).
pub const MAX_STEP_TIME: Duration = Duration::from_secs(7 * 24 * 3_600);

/// The shortest period of a repeating timeline. The relay's task wakes once per step; a
/// shorter period would approach a busy loop and is finer than tokio's 1 ms timers anyway.
pub const MIN_REPEAT_PERIOD: Duration = Duration::from_millis(100);

/// Faults over time: steps at increasing times, optionally starting over after a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    steps: Vec<(Duration, Faults)>,
    repeat_after: Option<Duration>,
}

impl Timeline {
    /// A timeline from steps at strictly increasing times (from the start), each with valid
    /// faults, starting over after `repeat_after` if given (which must come after the last
    /// step and be at least [`MIN_REPEAT_PERIOD`]).
    pub fn new(
        steps: Vec<(Duration, Faults)>,
        repeat_after: Option<Duration>,
    ) -> Result<Timeline, TimelineError> {
        if steps.is_empty() {
            return Err(TimelineError::Empty);
        }
        if steps.len() > MAX_TIMELINE_STEPS {
            return Err(TimelineError::TooManySteps { n: steps.len() });
        }
        let mut previous: Option<Duration> = None;
        let times = steps.iter().map(|(at, _)| *at).chain(repeat_after);
        for at in times {
            let token = fmt_duration(at);
            if at > MAX_STEP_TIME {
                return Err(TimelineError::TooLate { token });
            }
            if previous.is_some_and(|p| at <= p) {
                return Err(TimelineError::NotIncreasing { token });
            }
            previous = Some(at);
        }
        for (at, faults) in &steps {
            faults.validate().map_err(|source| TimelineError::Faults {
                token: format!("{} {faults}", fmt_duration(*at)),
                source,
            })?;
        }
        if let Some(period) = repeat_after.filter(|p| *p < MIN_REPEAT_PERIOD) {
            return Err(TimelineError::RepeatTooSoon {
                token: fmt_duration(period),
            });
        }
        Ok(Timeline {
            steps,
            repeat_after,
        })
    }

    /// A flapping link: clean for `up`, cut for `down`, over and over, starting clean.
    pub fn flap(up: Duration, down: Duration) -> Result<Timeline, TimelineError> {
        let bad = || TimelineError::BadFlap {
            token: format!("flap {} {}", fmt_duration(up), fmt_duration(down)),
        };
        if up.is_zero() || down.is_zero() {
            return Err(bad());
        }
        let period = up.checked_add(down).ok_or_else(bad)?;
        Timeline::new(
            vec![(Duration::ZERO, Faults::OK), (up, Faults::CUT)],
            Some(period),
        )
    }

    /// The steps, at increasing times from the start.
    pub fn steps(&self) -> &[(Duration, Faults)] {
        &self.steps
    }

    /// When the timeline starts over, if it does.
    pub fn repeat_after(&self) -> Option<Duration> {
        self.repeat_after
    }

    /// The faults in force `t` after the start, or `None` before the first step.
    pub fn at(&self, t: Duration) -> Option<Faults> {
        let (position, wrapped) = match self.repeat_after {
            Some(period) if t >= period => {
                let nanos = t.as_nanos() % period.as_nanos();
                // Below `period`, which is at most MAX_STEP_TIME: fits in u64 nanoseconds.
                (
                    Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)),
                    true,
                )
            }
            _ => (t, false),
        };
        let current = self.steps.iter().rev().find(|(at, _)| *at <= position);
        match current {
            Some((_, faults)) => Some(*faults),
            // Before the first step of a later round, the last step of the round before holds.
            None if wrapped => self.steps.last().map(|(_, faults)| *faults),
            None => None,
        }
    }
}

impl fmt::Display for Timeline {
    /// The text form, which parses back to the same timeline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .steps
            .iter()
            .map(|(at, faults)| format!("{} {faults}", fmt_duration(*at)))
            .collect();
        if let Some(period) = self.repeat_after {
            parts.push(format!("{} repeat", fmt_duration(period)));
        }
        f.write_str(&parts.join("; "))
    }
}

impl FromStr for Timeline {
    type Err = TimelineError;

    fn from_str(text: &str) -> Result<Timeline, TimelineError> {
        let segments: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if segments.len() > MAX_TIMELINE_STEPS + 1 {
            return Err(TimelineError::TooManySteps { n: segments.len() });
        }
        if let Some(flap) = segments
            .iter()
            .find(|s| s.split_whitespace().next() == Some("flap"))
        {
            return parse_flap(flap, segments.len());
        }
        let mut steps = Vec::new();
        let mut repeat_after = None;
        // Step times as written, to name them in errors.
        let mut previous: Option<(Duration, &str)> = None;
        for segment in segments {
            let mut tokens = segment.split_whitespace();
            let Some(time_token) = tokens.next() else {
                continue;
            };
            let bad_time = || TimelineError::BadTime {
                token: time_token.to_owned(),
            };
            let at = parse_duration(time_token).ok_or_else(bad_time)?;
            if at > MAX_STEP_TIME {
                return Err(TimelineError::TooLate {
                    token: time_token.to_owned(),
                });
            }
            if let Some((_, repeat_token)) = previous.filter(|_| repeat_after.is_some()) {
                return Err(TimelineError::RepeatNotLast {
                    token: format!("{repeat_token} repeat"),
                });
            }
            if previous.is_some_and(|(p, _)| at <= p) {
                return Err(TimelineError::NotIncreasing {
                    token: time_token.to_owned(),
                });
            }
            previous = Some((at, time_token));
            let items: Vec<&str> = tokens.collect();
            match items.as_slice() {
                [] => {
                    return Err(TimelineError::NothingAt {
                        token: time_token.to_owned(),
                    });
                }
                ["repeat"] => repeat_after = Some(at),
                _ => steps.push((at, parse_faults(segment, &items)?)),
            }
        }
        Timeline::new(steps, repeat_after)
    }
}

/// `flap UP DOWN`, which must be the whole timeline.
fn parse_flap(segment: &str, n_segments: usize) -> Result<Timeline, TimelineError> {
    let bad = || TimelineError::BadFlap {
        token: segment.to_owned(),
    };
    let tokens: Vec<&str> = segment.split_whitespace().collect();
    let ["flap", up, down] = tokens.as_slice() else {
        return Err(bad());
    };
    if n_segments != 1 {
        return Err(bad());
    }
    let time = |token: &str| {
        parse_duration(token).ok_or_else(|| TimelineError::BadTime {
            token: token.to_owned(),
        })
    };
    Timeline::flap(time(up)?, time(down)?).map_err(|e| match e {
        TimelineError::BadFlap { .. } => bad(),
        other => other,
    })
}

/// The faults of one step, from its items after the time.
fn parse_faults(segment: &str, items: &[&str]) -> Result<Faults, TimelineError> {
    let mut faults = Faults::OK;
    let mut seen: Vec<&str> = Vec::new();
    for item in items {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (*item, None),
        };
        let key = if key == "duplicate" { "dup" } else { key };
        if seen.contains(&key) {
            return Err(TimelineError::Repeated {
                token: (*item).to_owned(),
            });
        }
        seen.push(key);
        let percent = |v: Option<&str>| {
            v.and_then(parse_percent)
                .ok_or_else(|| TimelineError::BadPercent {
                    token: (*item).to_owned(),
                })
        };
        let time = |v: Option<&str>| {
            v.and_then(parse_duration)
                .ok_or_else(|| TimelineError::BadTime {
                    token: (*item).to_owned(),
                })
        };
        match (key, value) {
            ("ok", None) if items.len() == 1 => {}
            ("ok", None) => {
                return Err(TimelineError::OkWithOthers {
                    token: segment.to_owned(),
                });
            }
            ("cut", None) => faults.cut = true,
            ("loss", v) => faults.loss_pct = percent(v)?,
            ("dup", v) => faults.duplicate_pct = percent(v)?,
            ("reorder", v) => faults.reorder_pct = percent(v)?,
            ("delay", v) => faults.delay = time(v)?,
            ("jitter", v) => faults.jitter = time(v)?,
            _ => {
                return Err(TimelineError::UnknownFault {
                    token: (*item).to_owned(),
                });
            }
        }
    }
    faults.validate().map_err(|source| TimelineError::Faults {
        token: segment.to_owned(),
        source,
    })?;
    Ok(faults)
}

/// `500ms`, `5s`, `1.5s`, `2m`, `1h`, or a bare `0`.
fn parse_duration(token: &str) -> Option<Duration> {
    if token == "0" {
        return Some(Duration::ZERO);
    }
    let split = token.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = token.split_at(split);
    let value: f64 = number.parse().ok()?;
    // Dividing by 1000 (rather than multiplying by 0.001) is exact for whole milliseconds, so
    // `1500ms` is exactly 1.5 s and a timeline's text form parses back to the same durations.
    let seconds = match unit {
        "ms" => value / 1_000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3_600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// `20%` or `20`: a number from 0 to 100.
fn parse_percent(text: &str) -> Option<f64> {
    let number = text.strip_suffix('%').unwrap_or(text);
    let value: f64 = number.parse().ok()?;
    (0.0..=100.0).contains(&value).then_some(value)
}

/// A timeline that can't be parsed or built; every message names the offending token.
#[derive(Debug, Clone, PartialEq)]
pub enum TimelineError {
    /// No steps at all.
    Empty,
    /// More than [`MAX_TIMELINE_STEPS`] steps.
    TooManySteps {
        /// How many were given.
        n: usize,
    },
    /// A time (or a delay) that is not a number with a unit.
    BadTime {
        /// The token as written.
        token: String,
    },
    /// A step time beyond [`MAX_STEP_TIME`].
    TooLate {
        /// The time.
        token: String,
    },
    /// A step at or before the previous step.
    NotIncreasing {
        /// The time.
        token: String,
    },
    /// A time with no faults after it.
    NothingAt {
        /// The time.
        token: String,
    },
    /// A word that is not a fault.
    UnknownFault {
        /// The word as written.
        token: String,
    },
    /// A percentage that is not a number from 0 to 100.
    BadPercent {
        /// The item as written.
        token: String,
    },
    /// The same fault twice in one step.
    Repeated {
        /// The second occurrence.
        token: String,
    },
    /// `ok` together with faults.
    OkWithOthers {
        /// The step.
        token: String,
    },
    /// A step after `repeat`.
    RepeatNotLast {
        /// The repeat step.
        token: String,
    },
    /// A repeat period under [`MIN_REPEAT_PERIOD`].
    RepeatTooSoon {
        /// The period.
        token: String,
    },
    /// A `flap` that is not `flap UP DOWN` with two non-zero times, alone.
    BadFlap {
        /// The flap step as written.
        token: String,
    },
    /// Faults the relay refuses.
    Faults {
        /// The step.
        token: String,
        /// Why.
        source: FaultsError,
    },
}

// Written by hand rather than with thiserror: the root package does not depend on it.
impl fmt::Display for TimelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimelineError::Empty => f.write_str(
                "empty timeline: write steps like `0s ok; 5s cut; 10s ok`, or `flap 5s 5s`",
            ),
            TimelineError::TooManySteps { n } => write!(
                f,
                "timeline has {n} steps, more than the limit of {MAX_TIMELINE_STEPS}"
            ),
            TimelineError::BadTime { token } => write!(
                f,
                "`{token}` is not a time: write a number and a unit, like 500ms, 5s or 2m"
            ),
            TimelineError::TooLate { token } => write!(
                f,
                "step time `{token}` is later than the limit of {}",
                fmt_duration(MAX_STEP_TIME)
            ),
            TimelineError::NotIncreasing { token } => write!(
                f,
                "step time `{token}` is not after the step before it; list steps in time order"
            ),
            TimelineError::NothingAt { token } => write!(
                f,
                "step at `{token}` has no faults: add `ok`, `cut` or faults like `loss=20%`"
            ),
            TimelineError::UnknownFault { token } => write!(
                f,
                "unknown fault `{token}`: expected ok, cut, loss=P%, delay=T, jitter=T, \
                 dup=P%, reorder=P% or repeat"
            ),
            TimelineError::BadPercent { token } => {
                write!(
                    f,
                    "`{token}` needs a percentage from 0 to 100, like loss=20%"
                )
            }
            TimelineError::Repeated { token } => {
                write!(f, "`{token}` repeats a fault already given in its step")
            }
            TimelineError::OkWithOthers { token } => write!(
                f,
                "`ok` means no faults, so it cannot be combined with others in `{token}`"
            ),
            TimelineError::RepeatNotLast { token } => {
                write!(f, "`{token}` must be the last step of the timeline")
            }
            TimelineError::RepeatTooSoon { token } => write!(
                f,
                "repeat period `{token}` is shorter than the minimum of {}",
                fmt_duration(MIN_REPEAT_PERIOD)
            ),
            TimelineError::BadFlap { token } => write!(
                f,
                "`{token}`: write `flap UP DOWN` with two non-zero times, like `flap 5s 5s`, \
                 as the whole timeline"
            ),
            TimelineError::Faults { token, source } => write!(f, "step `{token}`: {source}"),
        }
    }
}

impl std::error::Error for TimelineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TimelineError::Faults { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn check(text: &str, steps: &[(Duration, Faults)], repeat_after: Option<Duration>) {
        let timeline: Timeline = text
            .parse()
            .unwrap_or_else(|e| panic!("`{text}` rejected: {e}"));
        assert_eq!(timeline.steps(), steps, "{text}");
        assert_eq!(timeline.repeat_after(), repeat_after, "{text}");
        // The text form parses back to the same timeline.
        let again: Timeline = timeline.to_string().parse().expect("round trip");
        assert_eq!(again, timeline, "{text} -> {timeline}");
    }

    #[test]
    fn accepts_the_documented_forms() {
        let lossy = Faults {
            loss_pct: 20.0,
            jitter: ms(200),
            delay: ms(50),
            ..Faults::OK
        };
        check(
            "0s ok; 5s cut; 10s ok; 15s loss=20% jitter=200ms delay=50ms; 60s ok",
            &[
                (s(0), Faults::OK),
                (s(5), Faults::CUT),
                (s(10), Faults::OK),
                (s(15), lossy),
                (s(60), Faults::OK),
            ],
            None,
        );
        check(
            "flap 5s 5s",
            &[(s(0), Faults::OK), (s(5), Faults::CUT)],
            Some(s(10)),
        );
        check(
            "flap 500ms 2s",
            &[(s(0), Faults::OK), (ms(500), Faults::CUT)],
            Some(ms(2_500)),
        );
        check(
            "0 ok; 20s cut; 25s repeat",
            &[(s(0), Faults::OK), (s(20), Faults::CUT)],
            Some(s(25)),
        );
        check(
            "  1.5s dup=10 reorder=5%  ;  2m duplicate=100% cut ; ",
            &[
                (
                    ms(1_500),
                    Faults {
                        duplicate_pct: 10.0,
                        reorder_pct: 5.0,
                        ..Faults::OK
                    },
                ),
                (
                    s(120),
                    Faults {
                        cut: true,
                        duplicate_pct: 100.0,
                        ..Faults::OK
                    },
                ),
            ],
            None,
        );
        check(
            "250ms delay=0.5ms; 1h ok",
            &[
                (
                    ms(250),
                    Faults {
                        delay: Duration::from_micros(500),
                        ..Faults::OK
                    },
                ),
                (s(3_600), Faults::OK),
            ],
            None,
        );
    }

    #[test]
    fn rejects_bad_input_naming_the_token() {
        // (input, a piece of the message that names the offending token)
        let table = [
            ("", "empty timeline"),
            (" ; ; ", "empty timeline"),
            ("5x cut", "`5x`"),
            ("s cut", "`s`"),
            ("1.2.3s cut", "`1.2.3s`"),
            ("-5s cut", "`-5s`"),
            ("5s", "`5s` has no faults"),
            ("0s ok; 5s partition", "`partition`"),
            ("0s loss=200%", "`loss=200%`"),
            ("0s loss=abc", "`loss=abc`"),
            ("0s loss", "`loss`"),
            ("0s dup=-1%", "`dup=-1%`"),
            ("0s delay=fast", "`delay=fast`"),
            ("0s jitter=", "`jitter=`"),
            ("0s cut=yes", "`cut=yes`"),
            ("0s loss=1% loss=2%", "`loss=2%`"),
            ("0s ok cut", "`0s ok cut`"),
            ("10s cut; 5s ok", "`5s`"),
            ("5s cut; 5s ok", "`5s`"),
            ("0s ok; 5s cut; 4s repeat", "`4s`"),
            ("0s ok; 5s repeat; 6s cut", "`5s repeat`"),
            ("0s ok; 50ms repeat", "`50ms`"),
            ("0s delay=31s", "`0s delay=31s`"),
            ("0s delay=20s jitter=20s", "`0s delay=20s jitter=20s`"),
            ("1000h cut", "`1000h`"),
            ("flap 5s", "`flap 5s`"),
            ("flap 5s 5s 5s", "`flap 5s 5s 5s`"),
            ("flap 0s 5s", "`flap 0s 5s`"),
            ("flap 5s soon", "`soon`"),
            ("0s ok; flap 5s 5s", "`flap 5s 5s`"),
        ];
        for (text, needle) in table {
            match text.parse::<Timeline>() {
                Ok(t) => panic!("`{text}` accepted as {t:?}"),
                Err(e) => assert!(
                    e.to_string().contains(needle),
                    "`{text}`: message `{e}` does not contain {needle}"
                ),
            }
        }
        let too_many: String = (0..=MAX_TIMELINE_STEPS)
            .map(|i| format!("{i}s ok;"))
            .collect();
        assert!(matches!(
            too_many.parse::<Timeline>(),
            Err(TimelineError::TooManySteps { .. })
        ));
    }

    #[test]
    fn at_answers_what_is_in_force() {
        let once: Timeline = "1s cut; 3s loss=10%".parse().expect("valid");
        let flap = Timeline::flap(s(5), s(2)).expect("valid");
        let late_start: Timeline = "1s cut; 2s ok; 4s repeat".parse().expect("valid");
        let loss = Faults {
            loss_pct: 10.0,
            ..Faults::OK
        };
        // (timeline, time, expected)
        let table = [
            (&once, ms(0), None),
            (&once, ms(999), None),
            (&once, s(1), Some(Faults::CUT)),
            (&once, s(3), Some(loss)),
            (&once, s(1_000), Some(loss)),
            (&flap, s(0), Some(Faults::OK)),
            (&flap, ms(4_999), Some(Faults::OK)),
            (&flap, s(5), Some(Faults::CUT)),
            (&flap, s(7), Some(Faults::OK)),
            (&flap, s(13), Some(Faults::CUT)),
            (&flap, s(7 * 1_000 + 6), Some(Faults::CUT)),
            (&late_start, ms(500), None),
            (&late_start, ms(4_500), Some(Faults::OK)),
            (&late_start, ms(5_500), Some(Faults::CUT)),
        ];
        for (timeline, t, expected) in table {
            assert_eq!(timeline.at(t), expected, "{timeline} at {t:?}");
        }
    }

    #[test]
    fn new_checks_programmatic_timelines() {
        let bad = [
            Timeline::new(vec![], None),
            Timeline::new(vec![(s(1), Faults::OK), (s(1), Faults::CUT)], None),
            Timeline::new(vec![(s(1), Faults::OK)], Some(s(1))),
            Timeline::new(
                vec![(
                    s(0),
                    Faults {
                        loss_pct: 101.0,
                        ..Faults::OK
                    },
                )],
                None,
            ),
            Timeline::flap(Duration::ZERO, s(1)),
            Timeline::flap(s(1), Duration::ZERO),
            Timeline::flap(Duration::MAX, s(1)),
            Timeline::flap(ms(10), ms(10)),
        ];
        for result in bad {
            assert!(result.is_err(), "{result:?}");
        }
    }
}
