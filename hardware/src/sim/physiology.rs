//! The virtual patient's smooth physiology: per-patient constants drawn from the seed, and the
//! trends (heart rate, blood pressure, SpO2, temperature, ECG baseline) as pure functions of the
//! time since the origin, in seconds, including the ketamine effect and the scenario's events.
//!
//! Not here: anything per beat or per sample (see `beats` and `patient`), and any state. Every
//! function is a function of (profile, time), which is what makes the simulator split-invariant.

use super::Scenario;
use super::detmath::{self, SplitMix64, Stream};

/// The stream indices of [`Stream::new`]: one independent source of randomness per purpose, so
/// adding a purpose later does not shift the others.
pub(crate) mod stream {
    /// The per-patient constants ([`super::Profile`]).
    pub(crate) const PROFILE: u64 = 0;
    /// Where each beat block's first beat falls.
    pub(crate) const ANCHOR: u64 = 1;
    /// Beat-to-beat jitter and R-wave amplitude.
    pub(crate) const BEAT: u64 = 2;
    /// ECG measurement noise, one value per ECG sample index.
    pub(crate) const ECG_NOISE: u64 = 3;
    /// Oximeter noise (SpO2), one value per second.
    pub(crate) const SPO2_NOISE: u64 = 4;
    /// Oximeter noise (pulse rate), one value per second.
    pub(crate) const PULSE_NOISE: u64 = 5;
    /// Cuff noise, two values (systolic, diastolic) per reading.
    pub(crate) const NIBP_NOISE: u64 = 6;
    /// Thermometer noise, one value per reading.
    pub(crate) const TEMP_NOISE: u64 = 7;
}

/// Seconds from the origin to the start of the ketamine infusion (after baseline vitals).
const INFUSION_START_S: f64 = 300.0;
/// Seconds from the origin to the end of the infusion: a 40-minute infusion, the common protocol.
const INFUSION_END_S: f64 = 2_700.0;
/// Time constant of the haemodynamic response once the infusion starts.
const KETAMINE_ONSET_TAU_S: f64 = 480.0;
/// Time constant of the return to baseline after the infusion stops (redistribution).
const KETAMINE_OFFSET_TAU_S: f64 = 600.0;

/// Hypertension scenario: blood pressure starts to climb (24:00).
const HYPERTENSION_RISE_S: f64 = 1_440.0;
/// Hypertension scenario: the plateau starts (31:00).
const HYPERTENSION_PLATEAU_S: f64 = 1_860.0;
/// Hypertension scenario: the plateau ends (39:00).
const HYPERTENSION_FALL_S: f64 = 2_340.0;
/// Hypertension scenario: back to the ketamine baseline (49:00).
const HYPERTENSION_END_S: f64 = 2_940.0;
/// Hypertension scenario: where the plateau's amplitude is calibrated (35:00, mid-plateau).
const HYPERTENSION_CALIBRATION_S: f64 = 2_100.0;
/// Hypertension scenario: extra heart rate at the plateau (a modest sympathetic response).
const HYPERTENSION_HR_BPM: f64 = 8.0;

/// Desaturation scenario: the earliest start of the fall (19:00); the seed adds up to
/// [`DESATURATION_START_JITTER_S`].
const DESATURATION_START_S: f64 = 1_140.0;
/// Desaturation scenario: spread of the start between patients.
const DESATURATION_START_JITTER_S: f64 = 20.0;
/// Desaturation scenario: seconds from the start of the fall to the nadir.
const DESATURATION_FALL_S: f64 = 45.0;
/// Desaturation scenario: seconds from the end of the nadir back to baseline.
const DESATURATION_RECOVERY_S: f64 = 60.0;
/// Desaturation scenario: the rounded SpO2 is below 90 % when the trend is below this.
const DESATURATION_THRESHOLD_PCT: f64 = 89.5;
/// Desaturation scenario: heart-rate rise at the nadir (compensation).
const DESATURATION_HR_BPM: f64 = 6.0;

/// The heart rate the beat model never goes below (keeps RR intervals, and so the history the
/// sample generators look back over, bounded).
const MIN_HR_BPM: f64 = 40.0;
/// The heart rate the beat model never exceeds.
const MAX_HR_BPM: f64 = 150.0;

/// 2π.
const TAU: f64 = std::f64::consts::TAU;

/// A slow sinusoidal drift: `amp * sin(omega * t + phase)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wave {
    amp: f64,
    omega: f64,
    phase: f64,
}

impl Wave {
    /// A wave of amplitude `amp` with a random period in [period_lo_s, period_hi_s) and phase.
    fn draw(rng: &mut SplitMix64, amp: f64, period_lo_s: f64, period_hi_s: f64) -> Wave {
        let period_s = rng.range(period_lo_s, period_hi_s);
        let phase = rng.range(0.0, TAU);
        Wave {
            amp,
            omega: TAU / period_s,
            phase,
        }
    }

    /// The wave's value at `t_s`.
    fn at(&self, t_s: f64) -> f64 {
        self.amp * detmath::sin(self.omega * t_s + self.phase)
    }
}

/// A trapezoid 0 → 1 → 0 in time: the desaturation's shape.
#[derive(Debug, Clone, Copy)]
struct Trapezoid {
    start_s: f64,
    fall_s: f64,
    plateau_s: f64,
    recovery_s: f64,
}

impl Trapezoid {
    fn at(&self, t_s: f64) -> f64 {
        let x = t_s - self.start_s;
        if x <= 0.0 {
            0.0
        } else if x < self.fall_s {
            x / self.fall_s
        } else if x < self.fall_s + self.plateau_s {
            1.0
        } else if x < self.fall_s + self.plateau_s + self.recovery_s {
            1.0 - (x - self.fall_s - self.plateau_s) / self.recovery_s
        } else {
            0.0
        }
    }
}

/// One patient's constants and trends. Built once from the seed; read-only afterwards.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    scenario: Scenario,
    hr_base_bpm: f64,
    hr_waves: [Wave; 3],
    hr_ketamine_bpm: f64,
    /// Breathing, as the fractional RR modulation of respiratory sinus arrhythmia.
    respiration: Wave,
    sys_base_mmhg: f64,
    dia_base_mmhg: f64,
    bp_wave: Wave,
    sys_ketamine_mmhg: f64,
    dia_ketamine_mmhg: f64,
    sys_hypertension_mmhg: f64,
    dia_hypertension_mmhg: f64,
    spo2_base_pct: f64,
    spo2_wave: Wave,
    desaturation: Trapezoid,
    desaturation_depth_pct: f64,
    temp_base_c100: f64,
    temp_wave: Wave,
    /// The patient's mean R-wave amplitude.
    pub(crate) r_peak_uv: f64,
    /// ECG baseline wander from breathing (same frequency as `respiration`, in µV).
    ecg_wander_resp: Wave,
    /// ECG baseline drift from electrode movement.
    ecg_wander_slow: Wave,
    /// Randomness: beat-block anchors.
    pub(crate) anchor: Stream,
    /// Randomness: per-beat jitter.
    pub(crate) beat: Stream,
    /// Randomness: ECG noise.
    pub(crate) ecg_noise: Stream,
    /// Randomness: SpO2 noise.
    pub(crate) spo2_noise: Stream,
    /// Randomness: pulse-rate noise.
    pub(crate) pulse_noise: Stream,
    /// Randomness: cuff noise.
    pub(crate) nibp_noise: Stream,
    /// Randomness: thermometer noise.
    pub(crate) temp_noise: Stream,
}

impl Profile {
    /// Draws a patient. The draws happen in the same order whatever the scenario, so one seed
    /// is the same patient in every scenario, identical until the scenario's event begins.
    pub(crate) fn new(seed: u64, scenario: Scenario) -> Profile {
        let mut rng = SplitMix64::new(Stream::new(seed, stream::PROFILE).at(0));
        let hr_base_bpm = rng.range(64.0, 78.0);
        let hr_waves = [
            Wave::draw(&mut rng, 1.5, 60.0, 140.0),
            Wave::draw(&mut rng, 2.0, 200.0, 420.0),
            Wave::draw(&mut rng, 2.5, 600.0, 1_500.0),
        ];
        let hr_ketamine_bpm = rng.range(4.0, 8.0);
        let breaths_per_min = rng.range(12.0, 16.0);
        let respiration = Wave {
            amp: rng.range(0.025, 0.045),
            omega: TAU * breaths_per_min / 60.0,
            phase: rng.range(0.0, TAU),
        };
        let sys_base_mmhg = rng.range(112.0, 126.0);
        let dia_base_mmhg = rng.range(68.0, 80.0);
        let bp_wave = Wave::draw(&mut rng, 2.0, 400.0, 1_200.0);
        let sys_ketamine_mmhg = rng.range(8.0, 14.0);
        let dia_ketamine_mmhg = rng.range(5.0, 8.0);
        let sys_peak_mmhg = rng.range(188.0, 193.0);
        let dia_peak_mmhg = rng.range(106.0, 110.0);
        let spo2_base_pct = rng.range(97.0, 98.5);
        let spo2_wave = Wave::draw(&mut rng, 0.5, 300.0, 900.0);
        let desaturation_start_s =
            DESATURATION_START_S + rng.range(0.0, DESATURATION_START_JITTER_S);
        let nadir_pct = rng.range(85.0, 87.5);
        let below_90_s = rng.range(60.0, 90.0);
        let temp_base_c100 = rng.range(3_665.0, 3_695.0);
        let temp_wave = Wave::draw(&mut rng, 8.0, 1_200.0, 2_400.0);
        let r_peak_uv = rng.range(1_050.0, 1_400.0);
        let ecg_wander_resp = Wave {
            amp: rng.range(20.0, 40.0),
            omega: respiration.omega,
            phase: rng.range(0.0, TAU),
        };
        let ecg_wander_slow = Wave::draw(&mut rng, 20.0, 20.0, 40.0);

        // Calibrate the hypertensive plateau so that the peak lands at the drawn pressure
        // whatever this patient's baseline and ketamine response.
        let ketamine_at_peak = ketamine_effect(HYPERTENSION_CALIBRATION_S);
        let (sys_hypertension_mmhg, dia_hypertension_mmhg) = match scenario {
            Scenario::Hypertension => (
                sys_peak_mmhg - sys_base_mmhg - sys_ketamine_mmhg * ketamine_at_peak,
                dia_peak_mmhg - dia_base_mmhg - dia_ketamine_mmhg * ketamine_at_peak,
            ),
            _ => (0.0, 0.0),
        };

        // Size the nadir's plateau so that the trend stays below 89.5 % (a rounded reading
        // below 90 %) for the drawn duration: the plateau plus the parts of both ramps below it.
        let depth_pct = spo2_base_pct - nadir_pct;
        let ramp_fraction_below = (DESATURATION_THRESHOLD_PCT - nadir_pct) / depth_pct;
        let plateau_s = (below_90_s
            - (DESATURATION_FALL_S + DESATURATION_RECOVERY_S) * ramp_fraction_below)
            .max(0.0);
        let desaturation = Trapezoid {
            start_s: desaturation_start_s,
            fall_s: DESATURATION_FALL_S,
            plateau_s,
            recovery_s: DESATURATION_RECOVERY_S,
        };
        let desaturation_depth_pct = match scenario {
            Scenario::Desaturation => depth_pct,
            _ => 0.0,
        };

        Profile {
            scenario,
            hr_base_bpm,
            hr_waves,
            hr_ketamine_bpm,
            respiration,
            sys_base_mmhg,
            dia_base_mmhg,
            bp_wave,
            sys_ketamine_mmhg,
            dia_ketamine_mmhg,
            sys_hypertension_mmhg,
            dia_hypertension_mmhg,
            spo2_base_pct,
            spo2_wave,
            desaturation,
            desaturation_depth_pct,
            temp_base_c100,
            temp_wave,
            r_peak_uv,
            ecg_wander_resp,
            ecg_wander_slow,
            anchor: Stream::new(seed, stream::ANCHOR),
            beat: Stream::new(seed, stream::BEAT),
            ecg_noise: Stream::new(seed, stream::ECG_NOISE),
            spo2_noise: Stream::new(seed, stream::SPO2_NOISE),
            pulse_noise: Stream::new(seed, stream::PULSE_NOISE),
            nibp_noise: Stream::new(seed, stream::NIBP_NOISE),
            temp_noise: Stream::new(seed, stream::TEMP_NOISE),
        }
    }

    /// The hypertensive episode's shape, 0 outside the scenario.
    fn hypertension(&self, t_s: f64) -> f64 {
        if self.scenario != Scenario::Hypertension {
            return 0.0;
        }
        hypertension_shape(t_s)
    }

    /// The desaturation's shape, 0 outside the scenario.
    fn desaturation(&self, t_s: f64) -> f64 {
        if self.scenario != Scenario::Desaturation {
            return 0.0;
        }
        self.desaturation.at(t_s)
    }

    /// The heart rate's trend (no breathing, no jitter), beats per minute.
    pub(crate) fn hr_bpm(&self, t_s: f64) -> f64 {
        let drift: f64 = self.hr_waves.iter().map(|w| w.at(t_s)).sum();
        let hr = self.hr_base_bpm
            + drift
            + self.hr_ketamine_bpm * ketamine_effect(t_s)
            + HYPERTENSION_HR_BPM * self.hypertension(t_s)
            + DESATURATION_HR_BPM * self.desaturation(t_s);
        hr.clamp(MIN_HR_BPM, MAX_HR_BPM)
    }

    /// The expected RR interval at `t_s` including respiratory sinus arrhythmia (inspiration
    /// shortens it), seconds.
    pub(crate) fn rr_s(&self, t_s: f64) -> f64 {
        60.0 / self.hr_bpm(t_s) * (1.0 - self.respiration.at(t_s))
    }

    /// The breathing phase's sine at `t_s`, in [-1, 1] (modulates the R amplitude).
    pub(crate) fn breathing(&self, t_s: f64) -> f64 {
        self.respiration.at(t_s) / self.respiration.amp
    }

    /// Systolic and diastolic trends, mmHg.
    pub(crate) fn bp_mmhg(&self, t_s: f64) -> (f64, f64) {
        let wave = self.bp_wave.at(t_s);
        let ketamine = ketamine_effect(t_s);
        let hypertension = self.hypertension(t_s);
        let sys = self.sys_base_mmhg
            + wave
            + self.sys_ketamine_mmhg * ketamine
            + self.sys_hypertension_mmhg * hypertension;
        let dia = self.dia_base_mmhg
            + 0.6 * wave
            + self.dia_ketamine_mmhg * ketamine
            + self.dia_hypertension_mmhg * hypertension;
        (sys, dia)
    }

    /// The SpO2 trend, percent.
    pub(crate) fn spo2_pct(&self, t_s: f64) -> f64 {
        self.spo2_base_pct + self.spo2_wave.at(t_s)
            - self.desaturation_depth_pct * self.desaturation(t_s)
    }

    /// The temperature trend, hundredths of a degree Celsius (a slight ketamine rise included).
    pub(crate) fn temp_c100(&self, t_s: f64) -> f64 {
        self.temp_base_c100 + self.temp_wave.at(t_s) + 4.0 * ketamine_effect(t_s)
    }

    /// The ECG baseline (breathing and electrode drift), µV.
    pub(crate) fn ecg_wander_uv(&self, t_s: f64) -> f64 {
        self.ecg_wander_resp.at(t_s) + self.ecg_wander_slow.at(t_s)
    }
}

/// The ketamine infusion's haemodynamic effect, 0 (none) to 1 (steady state): first-order
/// onset during the infusion, first-order offset after it, continuous at both ends.
pub(crate) fn ketamine_effect(t_s: f64) -> f64 {
    if t_s <= INFUSION_START_S {
        0.0
    } else if t_s <= INFUSION_END_S {
        1.0 - detmath::exp(-(t_s - INFUSION_START_S) / KETAMINE_ONSET_TAU_S)
    } else {
        let at_end =
            1.0 - detmath::exp(-(INFUSION_END_S - INFUSION_START_S) / KETAMINE_ONSET_TAU_S);
        at_end * detmath::exp(-(t_s - INFUSION_END_S) / KETAMINE_OFFSET_TAU_S)
    }
}

/// The hypertensive episode: smooth rise, plateau, smooth fall; 0 to 1.
fn hypertension_shape(t_s: f64) -> f64 {
    if !(HYPERTENSION_RISE_S..HYPERTENSION_END_S).contains(&t_s) {
        0.0
    } else if t_s < HYPERTENSION_PLATEAU_S {
        detmath::smoothstep(
            (t_s - HYPERTENSION_RISE_S) / (HYPERTENSION_PLATEAU_S - HYPERTENSION_RISE_S),
        )
    } else if t_s < HYPERTENSION_FALL_S {
        1.0
    } else {
        1.0 - detmath::smoothstep(
            (t_s - HYPERTENSION_FALL_S) / (HYPERTENSION_END_S - HYPERTENSION_FALL_S),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ketamine_effect_is_continuous_and_bounded() {
        let mut previous = ketamine_effect(0.0);
        let mut t = 0.0;
        while t < 5_000.0 {
            let now = ketamine_effect(t);
            assert!((0.0..=1.0).contains(&now));
            assert!((now - previous).abs() < 0.01, "jump at {t} s");
            previous = now;
            t += 1.0;
        }
    }

    #[test]
    fn shapes_at_landmarks() {
        let check = |t_s: f64, want: f64| {
            assert!(
                (hypertension_shape(t_s) - want).abs() < 1e-9,
                "hypertension at {t_s} s"
            );
        };
        for (t_s, want) in [
            (0.0, 0.0),
            (HYPERTENSION_RISE_S, 0.0),
            (HYPERTENSION_PLATEAU_S, 1.0),
            (HYPERTENSION_CALIBRATION_S, 1.0),
            (HYPERTENSION_END_S, 0.0),
        ] {
            check(t_s, want);
        }
    }

    #[test]
    fn desaturation_trend_stays_below_90_for_the_drawn_time() {
        for seed in 0..50 {
            let profile = Profile::new(seed, Scenario::Desaturation);
            let below_s = (0..3_000)
                .filter(|&t| {
                    let t_s = f64::from(t) * 0.1 + 1_100.0;
                    profile.spo2_pct(t_s) - profile.spo2_wave.at(t_s) < DESATURATION_THRESHOLD_PCT
                })
                .count() as f64
                * 0.1;
            assert!(
                (59.0..=91.0).contains(&below_s),
                "seed {seed}: {below_s} s below 90 %"
            );
        }
    }
}
