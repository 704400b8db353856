//! Decoded measurements as Vigil samples: channel, integer value in the channel's unit (see
//! [`Channel::unit`]), and a time on the appliance's clock.
//!
//! This is where a value from a monitor becomes (or does not become) part of the record, so
//! the rules are conservative: a special value (NaN, NRes, ±INF, reserved) yields no sample;
//! neither does a heart rate from a strap that reports it has lost skin contact, nor an
//! oximeter reading its own status calls unavailable, invalid, demonstration or test data.
//! Unit conversions are exact integer arithmetic, rounded half away from zero, so every
//! machine records the same integers.
//!
//! Times come from the caller's `received_at_us` (the appliance's clock at reception), never
//! from the device: monitor clocks are often unset, drift, and carry no time zone. Values that
//! describe the past within one notification (RR intervals, ECG samples) are back-dated from
//! that time. This module does no I/O and reads no clock.

use vigil_shared::vitals::{Channel, Sample};

use super::Measurement;
use super::blood_pressure::{BloodPressure, PressureUnit};
use super::heart_rate::{HeartRate, RR_UNITS_PER_S, SensorContact};
use super::medfloat::Medfloat;
use super::plx::{PlxMeasurementStatus, Spo2Pr};
use super::polar_pmd::PolarEcgFrame;
use super::temperature::{TemperatureMeasurement, TemperatureUnit};

/// Microseconds per second.
const US_PER_S: i64 = 1_000_000;
/// Milliseconds per second.
const MS_PER_S: i64 = 1_000;

/// The ECG sample rate Vigil starts Polar streams at (the H10's only ECG rate; the start
/// command in BLE-TEST-RIG.md asks for 130 Hz). PMD frames do not carry the rate, so ECG
/// samples are back-dated with it.
pub const POLAR_ECG_SAMPLE_RATE_HZ: i64 = 130;

/// mmHg per kPa, as the integer ratio 750062 / 100000 (7.50062).
const MMHG_PER_KPA_NUM: i128 = 750_062;
const MMHG_PER_KPA_DEN: i128 = 100_000;

/// °F → °C on hundredths: C = (F − 32) × 5 / 9, i.e. (F·100 − 3200) × 5 / 9 in hundredths.
const FAHRENHEIT_TO_CELSIUS_MUL: i128 = 5;
const FAHRENHEIT_TO_CELSIUS_ADD: i128 = -3_200 * 5;
const FAHRENHEIT_TO_CELSIUS_DIV: i128 = 9;

/// Hundredths: the exponent of the temperature channel's unit (centi-°C).
const CENTI: i8 = -2;

/// The samples a measurement contributes to the record, in time order per channel.
///
/// - Heart rate → [`Channel::Hr`] (bpm) at `received_at_us`; RR intervals → [`Channel::Rr`]
///   (ms, from 1/1024 s, rounded), the last one ending at `received_at_us` and each earlier one
///   back-dated by the intervals after it. Nothing when the strap reports no skin contact.
/// - Blood pressure → one [`Channel::Nibp`] sample (systolic, diastolic, mean; mmHg, kPa
///   converted) when all three are numbers. Its pulse rate is not recorded: the pulse channel
///   holds the oximeter's. Intermediate cuff pressure is never recorded.
/// - PLX spot-check and continuous (the normal pair only) → [`Channel::Spo2`] (%) and
///   [`Channel::Pulse`] (bpm).
/// - Temperature → [`Channel::Temp`] in hundredths of a °C (°F converted).
/// - Polar ECG → [`Channel::Ecg`] (µV), the last sample at `received_at_us`, earlier ones
///   spaced by [`POLAR_ECG_SAMPLE_RATE_HZ`].
pub fn to_samples(m: &Measurement, received_at_us: i64) -> Vec<(Channel, Sample)> {
    match m {
        Measurement::HeartRate(hr) => heart_rate_samples(hr, received_at_us),
        Measurement::BloodPressure(bp) => blood_pressure_sample(bp, received_at_us)
            .map(|s| vec![(Channel::Nibp, s)])
            .unwrap_or_default(),
        Measurement::IntermediateCuffPressure(_) => Vec::new(),
        Measurement::PlxSpotCheck(p) => {
            plx_samples(&p.reading, p.measurement_status.as_ref(), received_at_us)
        }
        Measurement::PlxContinuous(p) => {
            plx_samples(&p.normal, p.measurement_status.as_ref(), received_at_us)
        }
        Measurement::Temperature(t) => temperature_sample(t, received_at_us)
            .map(|s| vec![(Channel::Temp, s)])
            .unwrap_or_default(),
        Measurement::PolarEcg(frame) => ecg_samples(frame, received_at_us),
    }
}

fn heart_rate_samples(hr: &HeartRate, received_at_us: i64) -> Vec<(Channel, Sample)> {
    if hr.sensor_contact == SensorContact::NotDetected {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(1 + hr.rr_intervals_1024th_s.len());
    out.push((
        Channel::Hr,
        Sample::scalar(received_at_us, i32::from(hr.heart_rate_bpm)),
    ));
    let units = i64::from(RR_UNITS_PER_S);
    // Units of 1/1024 s between each beat and the last one, newest first.
    let mut after_units: i64 = 0;
    let mut rr: Vec<(Channel, Sample)> = Vec::with_capacity(hr.rr_intervals_1024th_s.len());
    for &interval in hr.rr_intervals_1024th_s.iter().rev() {
        let back_us = round_div_nonneg(after_units * US_PER_S, units);
        let ms = round_div_nonneg(i64::from(interval) * MS_PER_S, units);
        if let Ok(ms) = i32::try_from(ms) {
            rr.push((
                Channel::Rr,
                Sample::scalar(received_at_us.saturating_sub(back_us), ms),
            ));
        }
        after_units += i64::from(interval);
    }
    rr.reverse();
    out.extend(rr);
    out
}

fn blood_pressure_sample(bp: &BloodPressure, received_at_us: i64) -> Option<Sample> {
    let mmhg = |p: &Medfloat| -> Option<i32> {
        let v = match bp.unit {
            PressureUnit::Mmhg => p.to_scaled(0)?,
            PressureUnit::Kpa => p.scaled_linear(0, MMHG_PER_KPA_NUM, 0, MMHG_PER_KPA_DEN)?,
        };
        i32::try_from(v).ok()
    };
    Some(Sample {
        t_us: received_at_us,
        v: [
            mmhg(&bp.systolic)?,
            mmhg(&bp.diastolic)?,
            mmhg(&bp.mean_arterial)?,
        ],
    })
}

fn plx_samples(
    reading: &Spo2Pr,
    status: Option<&PlxMeasurementStatus>,
    received_at_us: i64,
) -> Vec<(Channel, Sample)> {
    if status.is_some_and(PlxMeasurementStatus::disqualifies_reading) {
        return Vec::new();
    }
    [
        (Channel::Spo2, &reading.spo2_percent),
        (Channel::Pulse, &reading.pulse_rate_bpm),
    ]
    .into_iter()
    .filter_map(|(channel, value)| {
        let v = i32::try_from(value.to_scaled(0)?).ok()?;
        Some((channel, Sample::scalar(received_at_us, v)))
    })
    .collect()
}

fn temperature_sample(t: &TemperatureMeasurement, received_at_us: i64) -> Option<Sample> {
    let centi_c = match t.unit {
        TemperatureUnit::Celsius => t.value.to_scaled(CENTI)?,
        TemperatureUnit::Fahrenheit => t.value.scaled_linear(
            CENTI,
            FAHRENHEIT_TO_CELSIUS_MUL,
            FAHRENHEIT_TO_CELSIUS_ADD,
            FAHRENHEIT_TO_CELSIUS_DIV,
        )?,
    };
    Some(Sample::scalar(received_at_us, i32::try_from(centi_c).ok()?))
}

fn ecg_samples(frame: &PolarEcgFrame, received_at_us: i64) -> Vec<(Channel, Sample)> {
    let n = frame.samples_uv.len();
    frame
        .samples_uv
        .iter()
        .enumerate()
        .map(|(i, &uv)| {
            // `n - 1 - i` samples come after this one; n is at most a few hundred.
            let later = i64::try_from(n - 1 - i).unwrap_or(i64::MAX);
            let back_us =
                round_div_nonneg(later.saturating_mul(US_PER_S), POLAR_ECG_SAMPLE_RATE_HZ);
            (
                Channel::Ecg,
                Sample::scalar(received_at_us.saturating_sub(back_us), uv),
            )
        })
        .collect()
}

/// `num / den` rounded half up, for non-negative `num` and positive `den`.
fn round_div_nonneg(num: i64, den: i64) -> i64 {
    (num + den / 2) / den
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::{Characteristic, decode};

    const T: i64 = 1_735_718_400_000_000;

    fn check(c: Characteristic, hex: &str, expected: &[(Channel, i64, [i32; 3])]) {
        let digits: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes: Vec<u8> = (0..digits.len())
            .step_by(2)
            .filter_map(|i| digits.get(i..i + 2))
            .filter_map(|b| u8::from_str_radix(b, 16).ok())
            .collect();
        let m = decode(c, &bytes).unwrap_or_else(|e| panic!("{hex}: {e}"));
        let got: Vec<(Channel, i64, [i32; 3])> = to_samples(&m, T)
            .into_iter()
            .map(|(ch, s)| (ch, s.t_us - T, s.v))
            .collect();
        assert_eq!(got, expected, "{c} {hex}");
    }

    use Channel::{Ecg, Hr, Nibp, Pulse, Rr, Spo2, Temp};

    #[test]
    fn heart_rate() {
        // 72 bpm, no RR.
        check(Characteristic::HeartRate, "0048", &[(Hr, 0, [72, 0, 0])]);
        // Contact detected, one RR of 1024/1024 s.
        check(
            Characteristic::HeartRate,
            "16 48 0004",
            &[(Hr, 0, [72, 0, 0]), (Rr, 0, [1000, 0, 0])],
        );
        // RR 1024 (1000 ms) then 512 (500 ms): the last ends now, the first 500 ms earlier.
        check(
            Characteristic::HeartRate,
            "164800040002",
            &[
                (Hr, 0, [72, 0, 0]),
                (Rr, -500_000, [1000, 0, 0]),
                (Rr, 0, [500, 0, 0]),
            ],
        );
        // 800/1024 s = 781.25 ms → 781; 0x0321 = 801 → 782.2 → 782; back-dating rounds to µs.
        check(
            Characteristic::HeartRate,
            "10480003 2103",
            &[
                (Hr, 0, [72, 0, 0]),
                (Rr, -782_227, [750, 0, 0]),
                (Rr, 0, [782, 0, 0]),
            ],
        );
        // Contact supported but not detected: nothing.
        check(Characteristic::HeartRate, "14480004", &[]);
    }

    #[test]
    fn blood_pressure() {
        check(
            Characteristic::BloodPressure,
            "0078005000 5D00",
            &[(Nibp, 0, [120, 80, 93])],
        );
        // 16.0/10.7/12.4 kPa → 120.0099, 80.2566, 93.0077 mmHg.
        check(
            Characteristic::BloodPressure,
            "01A0F06BF07CF0",
            &[(Nibp, 0, [120, 80, 93])],
        );
        // 2 kPa = 15.00124 mmHg → 15.
        check(
            Characteristic::BloodPressure,
            "01020002000200",
            &[(Nibp, 0, [15, 15, 15])],
        );
        // A NaN mean arterial pressure: no sample.
        check(Characteristic::BloodPressure, "0078005000FF07", &[]);
        // Cuff pressure is never a blood pressure.
        check(
            Characteristic::IntermediateCuffPressure,
            "008C00FF07FF07",
            &[],
        );
    }

    #[test]
    fn oximetry() {
        // 97.5 % rounds to 98; PR 64.
        check(
            Characteristic::PlxSpotCheck,
            "00CFF34000",
            &[(Spo2, 0, [98, 0, 0]), (Pulse, 0, [64, 0, 0])],
        );
        // NaN PR: SpO2 only.
        check(
            Characteristic::PlxContinuous,
            "006100FF07",
            &[(Spo2, 0, [97, 0, 0])],
        );
        // Fast and slow pairs are not recorded.
        check(
            Characteristic::PlxContinuous,
            "03620048005F0041006100 3E00",
            &[(Spo2, 0, [98, 0, 0]), (Pulse, 0, [72, 0, 0])],
        );
        // Status "questionable" (bit 14) is still recorded; "invalid" (bit 15) and "for
        // testing" (bit 11) are not.
        check(
            Characteristic::PlxContinuous,
            "04620048000040",
            &[(Spo2, 0, [98, 0, 0]), (Pulse, 0, [72, 0, 0])],
        );
        check(Characteristic::PlxContinuous, "04620048000080", &[]);
        check(Characteristic::PlxSpotCheck, "02620048000008", &[]);
    }

    #[test]
    fn temperature() {
        // 36.4 °C → 3640.
        check(
            Characteristic::Temperature,
            "006C0100FF",
            &[(Temp, 0, [3640, 0, 0])],
        );
        // 98.6 °F → 37 °C exactly.
        check(
            Characteristic::Temperature,
            "01DA0300FF",
            &[(Temp, 0, [3700, 0, 0])],
        );
        // 100 °F → 37.777… → 3778.
        check(
            Characteristic::Temperature,
            "0164000000",
            &[(Temp, 0, [3778, 0, 0])],
        );
        // 36.45 °C at 10^-3 resolution: 36.451 → 3645.
        check(
            Characteristic::Temperature,
            "00638E00FD",
            &[(Temp, 0, [3645, 0, 0])],
        );
        // +INF: nothing.
        check(Characteristic::Temperature, "00FEFF7F00", &[]);
    }

    #[test]
    fn ecg() {
        // Three samples at 130 Hz: 15385 µs and 7692 µs (rounded) before the last.
        check(
            Characteristic::PolarPmdData,
            "00 0000000000000000 00 640000 9CFFFF 010000",
            &[
                (Ecg, -15_385, [100, 0, 0]),
                (Ecg, -7_692, [-100, 0, 0]),
                (Ecg, 0, [1, 0, 0]),
            ],
        );
    }
}
