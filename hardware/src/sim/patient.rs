//! The virtual patient: turns a [`Profile`] and its heartbeats into the samples each simulated
//! monitor would have measured, for any time range, plus the scripted device events.
//!
//! Every sample is a function of (params, its own time): no state carries from one call to the
//! next except a cache of beat blocks, which is only a speed-up. That is what makes
//! [`VirtualPatient::samples_between`] split-invariant. Not here: polling, "what was already
//! handed out", or device announcements on connect (see `simulated`).

use vigil_shared::vitals::{Channel, Sample, SampleBatch};

use super::beats::{Beat, BeatCache};
use super::physiology::Profile;
use super::{DEVICES, HR_STRAP, OXIMETER, PatientParams, Scenario, SimError, US_PER_S};
use crate::source::{DeviceStatus, SourceEvent};

/// No sample exists this long after the origin. A session lasts an hour or two; the horizon
/// bounds what one call can allocate (12 h of 250 Hz ECG is about 11 million samples) and keeps
/// time-to-float conversions far from losing precision.
pub const SIM_HORIZON_US: i64 = 12 * 3_600 * US_PER_S;

/// Period of the 1 Hz channels (HR, SpO2, pulse rate).
const ONE_HZ_PERIOD_US: i64 = US_PER_S;

/// Period of the thermometer's readings (body temperature changes over minutes).
const TEMP_PERIOD_US: i64 = 10 * US_PER_S;

/// The first cuff reading comes this long after the origin (the cuff inflates once the patient
/// is settled), then every `nibp_interval_s`.
const NIBP_FIRST_READING_US: i64 = 30 * US_PER_S;

/// The strap reports the heart rate over this many beats (Polar-like smoothing).
const HR_AVERAGE_BEATS: usize = 4;

/// The oximeter averages its pulse rate over more beats than the strap.
const PULSE_AVERAGE_BEATS: usize = 8;

/// Pulse transit time: the oximeter sees each beat this long after the R peak.
const PULSE_TRANSIT_US: i64 = 200_000;

/// How much heart history a call generates before its range: enough for
/// [`PULSE_AVERAGE_BEATS`] RR intervals of at most 1.7 s (the 40 bpm floor, lengthened by
/// breathing and jitter) plus the transit time.
const BEAT_HISTORY_US: i64 = 20 * US_PER_S;

/// How far past its range a call generates beats: one RR interval at most, so the P wave of
/// the next beat is drawn.
const BEAT_LOOKAHEAD_US: i64 = 2 * US_PER_S;

// Noise bounds below: each noise is triangular or uniform within ± the bound.

/// ECG measurement noise, µV (triangular: standard deviation about 4 µV, a good strap's).
const ECG_NOISE_UV: f64 = 10.0;
/// SpO2 reading noise, percent.
const SPO2_NOISE_PCT: f64 = 0.4;
/// Pulse-rate reading noise, bpm.
const PULSE_NOISE_BPM: f64 = 0.8;
/// Systolic reading noise, mmHg (a cuff's beat-to-beat and measurement spread).
const SYS_NOISE_MMHG: f64 = 3.0;
/// Diastolic reading noise, mmHg.
const DIA_NOISE_MMHG: f64 = 2.0;
/// Thermometer noise, hundredths of a degree.
const TEMP_NOISE_C100: f64 = 2.0;

/// SpO2 never reads above this.
const MAX_SPO2_PCT: i32 = 100;

/// Sensor-off scenario: the oximeter's sensor comes off (15:00 after the origin).
const SENSOR_OFF_START_US: i64 = 900 * US_PER_S;
/// Sensor-off scenario: the sensor is back on (16:30).
const SENSOR_OFF_END_US: i64 = 990 * US_PER_S;
/// Disconnect scenario: the chest strap disconnects (25:00).
const DISCONNECT_START_US: i64 = 1_500 * US_PER_S;
/// Disconnect scenario: the strap reconnects (26:00).
const DISCONNECT_END_US: i64 = 1_560 * US_PER_S;

/// One ECG wave: a Gaussian bump `amp * r_uv * exp(-((dt - centre) / width)² / 2)` relative to
/// the R peak. P, Q, R and S keep their timing; T's centre and width scale with the QT interval.
struct EcgWave {
    centre_s: f64,
    width_s: f64,
    amp: f64,
    scales_with_qt: bool,
}

/// A textbook lead-II PQRST: P 160 ms before R, a narrow QRS (about 90 ms), T about 260 ms
/// after R at 70 bpm. Amplitudes are fractions of the beat's R wave.
const ECG_WAVES: [EcgWave; 5] = [
    EcgWave {
        centre_s: -0.160,
        width_s: 0.022,
        amp: 0.11,
        scales_with_qt: false,
    },
    EcgWave {
        centre_s: -0.028,
        width_s: 0.009,
        amp: -0.10,
        scales_with_qt: false,
    },
    EcgWave {
        centre_s: 0.0,
        width_s: 0.010,
        amp: 1.0,
        scales_with_qt: false,
    },
    EcgWave {
        centre_s: 0.028,
        width_s: 0.010,
        amp: -0.20,
        scales_with_qt: false,
    },
    EcgWave {
        centre_s: 0.280,
        width_s: 0.048,
        amp: 0.25,
        scales_with_qt: true,
    },
];

/// Beyond this many widths a wave contributes less than 0.01 µV: skip the exponential.
const ECG_WAVE_CUTOFF_WIDTHS: f64 = 5.0;

/// The ECG is drawn from a beat only within this window around its R peak (all waves, with
/// their cutoffs and the QT scale of the slowest allowed rate, fit inside).
const ECG_BEAT_WINDOW_S: std::ops::Range<f64> = -0.3..0.9;

/// A device status change the scenario scripts, at a time relative to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScriptedEvent {
    at_us: i64,
    device: &'static str,
    status: DeviceStatus,
}

/// A simulated patient with its monitors. See the module documentation of [`crate::sim`].
#[derive(Debug, Clone)]
pub struct VirtualPatient {
    params: PatientParams,
    profile: Profile,
    cache: BeatCache,
    script: Vec<ScriptedEvent>,
}

impl VirtualPatient {
    /// A patient with these parameters, or why they cannot be simulated.
    pub fn new(params: PatientParams) -> Result<VirtualPatient, SimError> {
        params.validate()?;
        let script = match params.scenario {
            Scenario::SensorOff => vec![
                ScriptedEvent {
                    at_us: SENSOR_OFF_START_US,
                    device: OXIMETER,
                    status: DeviceStatus::SensorContact(false),
                },
                ScriptedEvent {
                    at_us: SENSOR_OFF_END_US,
                    device: OXIMETER,
                    status: DeviceStatus::SensorContact(true),
                },
            ],
            Scenario::Disconnect => vec![
                ScriptedEvent {
                    at_us: DISCONNECT_START_US,
                    device: HR_STRAP,
                    status: DeviceStatus::Disconnected,
                },
                ScriptedEvent {
                    at_us: DISCONNECT_END_US,
                    device: HR_STRAP,
                    status: DeviceStatus::Connected,
                },
            ],
            Scenario::Baseline | Scenario::Hypertension | Scenario::Desaturation => Vec::new(),
        };
        Ok(VirtualPatient {
            params,
            profile: Profile::new(params.seed, params.scenario),
            cache: BeatCache::default(),
            script,
        })
    }

    /// The parameters the patient was built from.
    pub fn params(&self) -> &PatientParams {
        &self.params
    }

    /// The channels the patient's monitors deliver.
    pub fn channels(&self) -> Vec<Channel> {
        Channel::ALL.to_vec()
    }

    /// Every sample with `from_us <= t_us < to_us`, one batch per channel that has any, in
    /// [`Channel::ALL`] order. Nothing comes before the origin or after [`SIM_HORIZON_US`].
    ///
    /// Split-invariant and history-free: concatenating the batches of consecutive ranges gives
    /// exactly the batches of their union, whatever was asked before.
    pub fn samples_between(&mut self, from_us: i64, to_us: i64) -> Vec<SampleBatch> {
        self.generate(from_us, to_us, &Channel::ALL)
    }

    /// The samples of one channel with `from_us <= t_us < to_us`, in time order.
    pub fn channel_between(&mut self, channel: Channel, from_us: i64, to_us: i64) -> Vec<Sample> {
        self.generate(from_us, to_us, &[channel])
            .pop()
            .map(|batch| batch.samples)
            .unwrap_or_default()
    }

    /// The scripted device status changes with `from_us <= at_us < to_us`, in time order.
    pub fn device_events_between(&self, from_us: i64, to_us: i64) -> Vec<SourceEvent> {
        let origin = self.params.origin_us;
        self.script
            .iter()
            .map(|event| (origin.saturating_add(event.at_us), event))
            .filter(|(at_us, _)| (from_us..to_us).contains(at_us))
            .map(|(at_us, event)| SourceEvent::Device {
                device: event.device.to_owned(),
                status: event.status,
                at_us,
            })
            .collect()
    }

    /// How every device stands at `at_us` (scripted changes at exactly `at_us` applied), as
    /// events stamped `at_us`: what a source announces when it starts at `at_us`. Each device is
    /// `Connected` or `Disconnected`; an oximeter whose sensor is off also gets
    /// `SensorContact(false)`.
    pub fn device_announcements(&self, at_us: i64) -> Vec<SourceEvent> {
        let origin = self.params.origin_us;
        let mut out = Vec::new();
        for device in DEVICES {
            let mut connected = true;
            let mut contact = true;
            for event in self.script.iter().filter(|e| e.device == device) {
                if origin.saturating_add(event.at_us) > at_us {
                    continue;
                }
                match event.status {
                    DeviceStatus::Connected => connected = true,
                    DeviceStatus::Disconnected => connected = false,
                    DeviceStatus::SensorContact(on) => contact = on,
                }
            }
            let status = if connected {
                DeviceStatus::Connected
            } else {
                DeviceStatus::Disconnected
            };
            out.push(SourceEvent::Device {
                device: device.to_owned(),
                status,
                at_us,
            });
            if connected && !contact {
                out.push(SourceEvent::Device {
                    device: device.to_owned(),
                    status: DeviceStatus::SensorContact(false),
                    at_us,
                });
            }
        }
        out
    }

    /// The relative range [lo, hi) the absolute range maps to, clipped to the session.
    fn relative_range(&self, from_us: i64, to_us: i64) -> Option<(i64, i64)> {
        let origin = self.params.origin_us;
        let lo = from_us.saturating_sub(origin).max(0);
        let hi = to_us.saturating_sub(origin).min(SIM_HORIZON_US);
        (lo < hi).then_some((lo, hi))
    }

    /// The relative window [start, end) in which `device` delivers nothing.
    fn silent_window(&self, device: &str) -> Option<(i64, i64)> {
        match (self.params.scenario, device) {
            (Scenario::SensorOff, OXIMETER) => Some((SENSOR_OFF_START_US, SENSOR_OFF_END_US)),
            (Scenario::Disconnect, HR_STRAP) => Some((DISCONNECT_START_US, DISCONNECT_END_US)),
            _ => None,
        }
    }

    fn generate(&mut self, from_us: i64, to_us: i64, channels: &[Channel]) -> Vec<SampleBatch> {
        let Some((lo, hi)) = self.relative_range(from_us, to_us) else {
            return Vec::new();
        };
        let needs_beats = channels
            .iter()
            .any(|c| matches!(c, Channel::Hr | Channel::Rr | Channel::Pulse | Channel::Ecg));
        let beats = if needs_beats {
            self.cache
                .beats_between(&self.profile, lo - BEAT_HISTORY_US, hi + BEAT_LOOKAHEAD_US)
        } else {
            Vec::new()
        };
        let mut batches = Vec::with_capacity(channels.len());
        for &channel in channels {
            let window = self.silent_window(super::device_for(channel));
            let mut samples = match channel {
                Channel::Hr => self.hr(&beats, lo, hi),
                Channel::Rr => rr(&beats, lo, hi),
                Channel::Spo2 => self.spo2(lo, hi),
                Channel::Pulse => self.pulse(&beats, lo, hi),
                Channel::Nibp => self.nibp(lo, hi),
                Channel::Ecg => self.ecg(&beats, lo, hi, window),
                Channel::Temp => self.temp(lo, hi),
            };
            if let Some((start, end)) = window {
                samples.retain(|s| !(start..end).contains(&s.t_us));
            }
            if samples.is_empty() {
                continue;
            }
            let origin = self.params.origin_us;
            for sample in &mut samples {
                sample.t_us += origin;
            }
            debug_assert!(
                samples.windows(2).all(|w| w[0].t_us < w[1].t_us)
                    && samples.iter().all(|s| (from_us..to_us).contains(&s.t_us)),
                "{channel} samples out of order or out of [{from_us}, {to_us})"
            );
            batches.push(SampleBatch { channel, samples });
        }
        batches
    }

    fn hr(&self, beats: &[Beat], lo: i64, hi: i64) -> Vec<Sample> {
        periodic(lo, hi, 0, ONE_HZ_PERIOD_US)
            .map(|(_, t_us)| {
                let bpm = mean_rate_bpm(beats, t_us, HR_AVERAGE_BEATS)
                    .unwrap_or_else(|| self.profile.hr_bpm(seconds(t_us)));
                Sample::scalar(t_us, bpm.round() as i32)
            })
            .collect()
    }

    fn pulse(&self, beats: &[Beat], lo: i64, hi: i64) -> Vec<Sample> {
        periodic(lo, hi, 0, ONE_HZ_PERIOD_US)
            .map(|(k, t_us)| {
                let seen_us = t_us - PULSE_TRANSIT_US;
                let bpm = mean_rate_bpm(beats, seen_us, PULSE_AVERAGE_BEATS)
                    .unwrap_or_else(|| self.profile.hr_bpm(seconds(seen_us)));
                let noisy = bpm + PULSE_NOISE_BPM * self.profile.pulse_noise.triangular(k);
                Sample::scalar(t_us, noisy.round() as i32)
            })
            .collect()
    }

    fn spo2(&self, lo: i64, hi: i64) -> Vec<Sample> {
        periodic(lo, hi, 0, ONE_HZ_PERIOD_US)
            .map(|(k, t_us)| {
                let pct = self.profile.spo2_pct(seconds(t_us))
                    + SPO2_NOISE_PCT * self.profile.spo2_noise.symmetric(k);
                Sample::scalar(t_us, (pct.round() as i32).min(MAX_SPO2_PCT))
            })
            .collect()
    }

    fn nibp(&self, lo: i64, hi: i64) -> Vec<Sample> {
        let period_us = i64::from(self.params.nibp_interval_s) * US_PER_S;
        periodic(lo, hi, NIBP_FIRST_READING_US, period_us)
            .map(|(k, t_us)| {
                let (sys, dia) = self.profile.bp_mmhg(seconds(t_us));
                let noise = self.profile.nibp_noise;
                let sys = (sys + SYS_NOISE_MMHG * noise.triangular(2 * k)).round() as i32;
                let dia = (dia + DIA_NOISE_MMHG * noise.triangular(2 * k + 1)).round() as i32;
                // Mean arterial pressure: diastolic plus a third of the pulse pressure, rounded.
                let mean = (sys + 2 * dia + 1).div_euclid(3);
                Sample {
                    t_us,
                    v: [sys, dia, mean],
                }
            })
            .collect()
    }

    fn temp(&self, lo: i64, hi: i64) -> Vec<Sample> {
        periodic(lo, hi, 0, TEMP_PERIOD_US)
            .map(|(k, t_us)| {
                let c100 = self.profile.temp_c100(seconds(t_us))
                    + TEMP_NOISE_C100 * self.profile.temp_noise.symmetric(k);
                Sample::scalar(t_us, c100.round() as i32)
            })
            .collect()
    }

    /// ECG samples at t_k = floor(k * 1e6 / hz) for k >= 0, skipping the strap's silent window
    /// up front (the ECG is by far the biggest channel, so it is not generated to be dropped).
    fn ecg(&self, beats: &[Beat], lo: i64, hi: i64, silent: Option<(i64, i64)>) -> Vec<Sample> {
        let hz = i64::from(self.params.ecg_hz.hz());
        // The first k with floor(k * 1e6 / hz) >= t is ceil(t * hz / 1e6), for t >= 0.
        let first_k = |t_us: i64| (t_us * hz + US_PER_S - 1).div_euclid(US_PER_S);
        let (k_lo, k_hi) = (first_k(lo), first_k(hi));
        let mut out = Vec::with_capacity(usize::try_from(k_hi - k_lo).unwrap_or(0));
        // `prev` indexes the last beat at or before the sample; beats are sorted by time.
        let mut prev = beats
            .partition_point(|b| b.t_us <= k_lo * US_PER_S / hz)
            .saturating_sub(1);
        for k in k_lo..k_hi {
            let t_us = k * US_PER_S / hz;
            if silent.is_some_and(|(start, end)| (start..end).contains(&t_us)) {
                continue;
            }
            while prev + 1 < beats.len() && beats[prev + 1].t_us <= t_us {
                prev += 1;
            }
            let mut uv = self.profile.ecg_wander_uv(seconds(t_us))
                + ECG_NOISE_UV * self.profile.ecg_noise.triangular(k as u64);
            // The beat before (its QRS and T) and the beat after (its P wave).
            for beat in beats.iter().skip(prev).take(2) {
                uv += beat_uv(beat, seconds(t_us - beat.t_us));
            }
            out.push(Sample::scalar(t_us, uv.round() as i32));
        }
        out
    }
}

/// RR intervals: one sample per beat in [lo, hi), valued the time since the previous beat.
fn rr(beats: &[Beat], lo: i64, hi: i64) -> Vec<Sample> {
    beats
        .windows(2)
        .filter(|pair| (lo..hi).contains(&pair[1].t_us))
        .map(|pair| {
            let rr_us = pair[1].t_us - pair[0].t_us;
            Sample::scalar(pair[1].t_us, ((rr_us + 500) / 1_000) as i32)
        })
        .collect()
}

/// A beat's contribution to the ECG `dt_s` seconds after its R peak (negative: before).
fn beat_uv(beat: &Beat, dt_s: f64) -> f64 {
    if !ECG_BEAT_WINDOW_S.contains(&dt_s) {
        return 0.0;
    }
    let mut uv = 0.0;
    for wave in &ECG_WAVES {
        let (centre_s, width_s) = if wave.scales_with_qt {
            (wave.centre_s * beat.qt_scale, wave.width_s * beat.qt_scale)
        } else {
            (wave.centre_s, wave.width_s)
        };
        let z = (dt_s - centre_s) / width_s;
        if z.abs() < ECG_WAVE_CUTOFF_WIDTHS {
            uv += wave.amp * beat.r_uv * super::detmath::exp(-0.5 * z * z);
        }
    }
    uv
}

/// The mean rate over the last `n` RR intervals ending at or before `t_us`, bpm; `None` if the
/// beats do not reach back that far (never, given [`BEAT_HISTORY_US`]).
fn mean_rate_bpm(beats: &[Beat], t_us: i64, n: usize) -> Option<f64> {
    let last = beats.partition_point(|b| b.t_us <= t_us).checked_sub(1)?;
    let first = last.checked_sub(n)?;
    let span_us = beats[last].t_us - beats[first].t_us;
    debug_assert!(span_us > 0, "beats are strictly increasing");
    Some(60.0 * US_PER_S as f64 * n as f64 / span_us as f64)
}

/// (index, relative time) of the samples at `offset + k * period` (k >= 0) within [lo, hi).
fn periodic(lo: i64, hi: i64, offset_us: i64, period_us: i64) -> impl Iterator<Item = (u64, i64)> {
    let ceil_div = |n: i64| {
        if n <= 0 {
            0
        } else {
            (n + period_us - 1) / period_us
        }
    };
    let (k_lo, k_hi) = (ceil_div(lo - offset_us), ceil_div(hi - offset_us));
    (k_lo..k_hi).map(move |k| (k as u64, offset_us + k * period_us))
}

/// Relative microseconds as seconds (exact below 2^53 µs, about 285 years).
fn seconds(t_us: i64) -> f64 {
    t_us as f64 / US_PER_S as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_indices_cover_half_open_ranges() {
        let check = |lo, hi, offset, period, want: &[i64]| {
            let got: Vec<i64> = periodic(lo, hi, offset, period).map(|(_, t)| t).collect();
            assert_eq!(got, want, "[{lo}, {hi}) offset {offset} period {period}");
        };
        check(0, 3, 0, 1, &[0, 1, 2]);
        check(1, 3, 0, 1, &[1, 2]);
        check(0, 0, 0, 1, &[]);
        check(0, 100, 30, 50, &[30, 80]);
        check(31, 81, 30, 50, &[80]);
        check(0, 30, 30, 50, &[]);
        check(0, 31, 30, 50, &[30]);
    }

    #[test]
    fn nibp_interval_is_validated() {
        for (interval_s, ok) in [
            (29, false),
            (30, true),
            (180, true),
            (3_600, true),
            (3_601, false),
        ] {
            let params = PatientParams {
                nibp_interval_s: interval_s,
                ..PatientParams::new(1, Scenario::Baseline, 0)
            };
            assert_eq!(
                VirtualPatient::new(params).is_ok(),
                ok,
                "interval {interval_s} s"
            );
        }
    }

    #[test]
    fn the_horizon_and_the_origin_bound_the_samples() {
        let origin = 1_000 * US_PER_S;
        let mut patient =
            VirtualPatient::new(PatientParams::new(1, Scenario::Baseline, origin)).expect("valid");
        assert!(patient.samples_between(0, origin).is_empty());
        assert!(
            patient
                .samples_between(origin + SIM_HORIZON_US, i64::MAX)
                .is_empty()
        );
        assert!(patient.samples_between(i64::MIN, i64::MIN + 5).is_empty());
        let tail = patient.channel_between(
            Channel::Hr,
            origin + SIM_HORIZON_US - 2 * US_PER_S,
            i64::MAX,
        );
        assert_eq!(tail.len(), 2);
    }
}
