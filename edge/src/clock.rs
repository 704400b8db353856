//! The appliance's clock: the system clock, optionally sped up for simulation.
//!
//! A simulated room runs its clock `time_factor` times faster than the wall clock so a
//! 55-minute session takes a minute. The mapping is anchored in the database, so a restarted
//! appliance continues on the same timeline (time that passed while it was down passes, sped
//! up, on the simulated clock too) and recorded times never jump backwards.
//!
//! A clock can also be shifted by a fixed offset (`clock_offset_s` in `edge.toml`): the
//! appliance then behaves as if its system clock were that far off, for recording and for
//! checking the cloud's certificate, which is how tests show what a wrong clock does.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch on the system clock.
pub fn wall_now_us() -> i64 {
    // A system clock before 1970 is a broken clock; 0 is as good an answer as any and keeps
    // recording going (times are still monotone within the anchor's arithmetic).
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A linear map from wall time to appliance time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaledClock {
    /// Wall time at the anchor, µs.
    pub anchor_wall_us: i64,
    /// Appliance time at the anchor, µs.
    pub anchor_sim_us: i64,
    /// Speed-up (1 = real time).
    pub factor: f64,
    /// How far this appliance's system clock is off the real one, µs (tests of a wrong
    /// clock; 0 otherwise). Not stored: it applies to every reading of the system clock.
    pub offset_us: i64,
}

/// The largest clock offset accepted: a year either way covers every wrong clock worth
/// testing (a dead RTC battery resets to a fixed date, which is a different test).
pub const MAX_CLOCK_OFFSET_S: i64 = 366 * 86_400;

/// `1_700_000_000_000_000` as `2023-11-14 22:13:20 UTC`, for messages people read (a
/// certificate's validity against this appliance's clock).
pub fn format_utc(us: i64) -> String {
    vigil_shared::zone::SiteZone::utc().second(us)
}

impl ScaledClock {
    /// A clock that starts at wall time now.
    pub fn starting_at(wall_us: i64, factor: f64) -> ScaledClock {
        ScaledClock {
            anchor_wall_us: wall_us,
            anchor_sim_us: wall_us,
            factor,
            offset_us: 0,
        }
    }

    /// The same clock reading a system clock `offset_us` off the real one.
    pub fn with_offset(self, offset_us: i64) -> ScaledClock {
        ScaledClock { offset_us, ..self }
    }

    /// This appliance's system clock now (the real one plus the offset), µs.
    pub fn system_now_us(&self) -> i64 {
        wall_now_us().saturating_add(self.offset_us)
    }

    /// Appliance time for a given wall time.
    pub fn at(&self, wall_us: i64) -> i64 {
        let elapsed = (wall_us - self.anchor_wall_us) as f64 * self.factor;
        self.anchor_sim_us + elapsed as i64
    }

    /// Appliance time now.
    pub fn now_us(&self) -> i64 {
        self.at(self.system_now_us())
    }

    /// The same timeline continued at another speed from `wall_us` on.
    pub fn rescaled(&self, wall_us: i64, factor: f64) -> ScaledClock {
        ScaledClock {
            anchor_wall_us: wall_us,
            anchor_sim_us: self.at(wall_us),
            factor,
            offset_us: self.offset_us,
        }
    }

    /// Stored form: `wall_us,sim_us,factor`.
    pub fn encode(&self) -> String {
        format!(
            "{},{},{}",
            self.anchor_wall_us, self.anchor_sim_us, self.factor
        )
    }

    /// Parses [`ScaledClock::encode`].
    pub fn decode(s: &str) -> Option<ScaledClock> {
        let mut it = s.split(',');
        let anchor_wall_us = it.next()?.parse().ok()?;
        let anchor_sim_us = it.next()?.parse().ok()?;
        let factor: f64 = it.next()?.parse().ok()?;
        (factor.is_finite() && factor > 0.0 && it.next().is_none()).then_some(ScaledClock {
            anchor_wall_us,
            anchor_sim_us,
            factor,
            offset_us: 0,
        })
    }

    /// The clock to use after a restart: the stored one if the speed is unchanged, otherwise
    /// the stored timeline continued at the new speed; a fresh one if nothing was stored.
    /// Never earlier than the stored timeline, so times stay monotone across restarts.
    pub fn resume(stored: Option<ScaledClock>, wall_us: i64, factor: f64) -> ScaledClock {
        match stored {
            Some(c) if c.factor == factor => c,
            Some(c) => c.rescaled(wall_us, factor),
            None => ScaledClock::starting_at(wall_us, factor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_clock_runs_faster_and_resumes() {
        let c = ScaledClock::starting_at(1_000_000, 60.0);
        assert_eq!(c.at(1_000_000), 1_000_000);
        assert_eq!(c.at(2_000_000), 61_000_000);
        let stored = ScaledClock::decode(&c.encode()).unwrap();
        assert_eq!(stored, c);
        let same = ScaledClock::resume(Some(stored), 5_000_000, 60.0);
        assert_eq!(same.at(5_000_000), c.at(5_000_000));
        let slower = ScaledClock::resume(Some(stored), 5_000_000, 1.0);
        assert_eq!(slower.at(5_000_000), c.at(5_000_000));
        assert_eq!(slower.at(6_000_000), c.at(5_000_000) + 1_000_000);
        assert!(ScaledClock::decode("1,2").is_none());
        assert!(ScaledClock::decode("1,2,nan").is_none());
    }

    #[test]
    fn an_offset_shifts_every_reading_of_the_system_clock() {
        let day_us = 86_400 * 1_000_000;
        let c = ScaledClock::starting_at(wall_now_us() + day_us, 1.0).with_offset(day_us);
        let skew = c.system_now_us() - wall_now_us();
        assert!((day_us - 1_000_000..=day_us).contains(&skew), "{skew}");
        assert!(c.now_us() - c.system_now_us() <= 0);
        assert_eq!(
            c.rescaled(0, 2.0).offset_us,
            day_us,
            "kept across a rescale"
        );
    }

    #[test]
    fn times_are_formatted_as_utc() {
        let cases = [
            (0, "1970-01-01 00:00:00 UTC"),
            (1_700_000_000_000_000, "2023-11-14 22:13:20 UTC"),
            (951_782_400_000_000, "2000-02-29 00:00:00 UTC"),
            (-1_000_000, "1969-12-31 23:59:59 UTC"),
            (1_798_675_200_999_999, "2026-12-31 00:00:00 UTC"),
        ];
        for (us, expected) in cases {
            assert_eq!(format_utc(us), expected, "{us}");
        }
    }
}
