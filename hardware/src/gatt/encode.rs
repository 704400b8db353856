//! The other direction: Vigil samples as the characteristic values a monitor sends. Used by the
//! simulated monitors (`vigil-edge devices simulate`), which must put on the air exactly what
//! a conforming device would, so that the collector's path from bytes to record is the real
//! one. Every encoder's output decodes (see [`super::decode`]) to the value it was given; the
//! tests check that for each.

use super::heart_rate::{
    HR_FLAG_CONTACT_DETECTED, HR_FLAG_CONTACT_SUPPORTED, HR_FLAG_RR_INTERVALS, HR_FLAG_VALUE_U16,
};
use super::medfloat::Medfloat;
use super::plx::{CONT_FLAG_DEVICE_SENSOR_STATUS, CONT_FLAG_MEASUREMENT_STATUS};
use super::polar_pmd::{PMD_FRAME_TYPE_0, PMD_MEASUREMENT_ECG};
use super::temperature::TEMP_FLAG_TYPE;
use super::{MAX_PAYLOAD_LEN, polar_pmd::PMD_HEADER_LEN};

/// Bytes of one 3-byte ECG sample.
const ECG_SAMPLE_LEN: usize = 3;

/// Most ECG samples in one PMD frame: what fits a 232-byte notification (the H10's MTU less
/// the ATT header), as the H10 sends them.
pub const MAX_ECG_SAMPLES_PER_FRAME: usize = 73;

/// Most RR intervals one Heart Rate Measurement carries here: a strap sending once a second
/// has at most three or four beats to report; nine fit the default 23-byte ATT MTU.
pub const MAX_RR_PER_VALUE: usize = 9;

/// The temperature type "body (general)" from the Temperature Type characteristic's table.
pub const TEMPERATURE_TYPE_BODY: u8 = 0x02;

/// Where a heart-rate strap's sensor stands, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact {
    /// The strap touches the skin.
    Detected,
    /// The strap supports contact detection and has lost the skin.
    Lost,
}

/// An integer as an SFLOAT with exponent 0, or NaN when it doesn't fit the 12-bit mantissa.
fn sfloat_int(v: i32) -> [u8; 2] {
    let m = Medfloat::Value {
        mantissa: v,
        exponent: 0,
    };
    m.to_sfloat_bits()
        .unwrap_or_else(|| Medfloat::NaN.to_sfloat_bits().unwrap_or(0x07FF))
        .to_le_bytes()
}

/// Heart Rate Measurement 0x2A37: `bpm` (8-bit when it fits), the contact state, and up to
/// [`MAX_RR_PER_VALUE`] RR intervals in 1/1024 s (the earliest dropped beyond that).
pub fn heart_rate(bpm: u16, contact: Contact, rr_1024th_s: &[u16]) -> Vec<u8> {
    let mut flags = HR_FLAG_CONTACT_SUPPORTED;
    if contact == Contact::Detected {
        flags |= HR_FLAG_CONTACT_DETECTED;
    }
    let wide = bpm > u16::from(u8::MAX);
    if wide {
        flags |= HR_FLAG_VALUE_U16;
    }
    let rr = &rr_1024th_s[rr_1024th_s.len().saturating_sub(MAX_RR_PER_VALUE)..];
    if !rr.is_empty() {
        flags |= HR_FLAG_RR_INTERVALS;
    }
    let mut out = vec![flags];
    if wide {
        out.extend_from_slice(&bpm.to_le_bytes());
    } else {
        out.push(bpm as u8);
    }
    for r in rr {
        out.extend_from_slice(&r.to_le_bytes());
    }
    out
}

/// PLX Continuous Measurement 0x2A5F: SpO2 (%) and pulse rate (bpm), NaN where there is no
/// reading, with a measurement status (0 = nothing to report) and the device-and-sensor
/// status (e.g. bit 11 "sensor unconnected to user" while the probe is off).
pub fn plx_continuous(spo2: Option<i32>, pulse: Option<i32>, device_sensor_status: u32) -> Vec<u8> {
    let value = |v: Option<i32>| match v {
        Some(v) => sfloat_int(v),
        None => Medfloat::NaN
            .to_sfloat_bits()
            .unwrap_or(0x07FF)
            .to_le_bytes(),
    };
    let mut out = vec![CONT_FLAG_MEASUREMENT_STATUS | CONT_FLAG_DEVICE_SENSOR_STATUS];
    out.extend_from_slice(&value(spo2));
    out.extend_from_slice(&value(pulse));
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&device_sensor_status.to_le_bytes()[..3]);
    out
}

/// Blood Pressure Measurement 0x2A35 in mmHg: systolic, diastolic, mean arterial pressure.
pub fn blood_pressure(systolic: i32, diastolic: i32, mean: i32) -> Vec<u8> {
    let mut out = vec![0u8];
    for v in [systolic, diastolic, mean] {
        out.extend_from_slice(&sfloat_int(v));
    }
    out
}

/// Intermediate Cuff Pressure 0x2A36 in mmHg: the cuff pressure while it inflates or
/// deflates; the diastolic and mean fields are unused and NaN, as the specification says.
pub fn intermediate_cuff_pressure(cuff_mmhg: i32) -> Vec<u8> {
    let nan = Medfloat::NaN
        .to_sfloat_bits()
        .unwrap_or(0x07FF)
        .to_le_bytes();
    let mut out = vec![0u8];
    out.extend_from_slice(&sfloat_int(cuff_mmhg));
    out.extend_from_slice(&nan);
    out.extend_from_slice(&nan);
    out
}

/// Temperature Measurement 0x2A1C in °C, given in hundredths, with the type "body".
pub fn temperature(centi_celsius: i32) -> Vec<u8> {
    let m = Medfloat::Value {
        mantissa: centi_celsius,
        exponent: -2,
    };
    let bits = m
        .to_float_bits()
        .unwrap_or_else(|| Medfloat::NaN.to_float_bits().unwrap_or(0x007F_FFFF));
    let mut out = vec![TEMP_FLAG_TYPE];
    out.extend_from_slice(&bits.to_le_bytes());
    out.push(TEMPERATURE_TYPE_BODY);
    out
}

/// Polar PMD ECG frames, uncompressed type 0: `samples_uv` (oldest first) split into frames
/// of at most [`MAX_ECG_SAMPLES_PER_FRAME`]; `last_sample_ns` is the sensor's time of the last
/// sample (ns since 2000-01-01) and `period_ns` the sample spacing, so each frame carries its
/// own last sample's time. Values beyond 24 bits are clamped.
pub fn polar_ecg_frames(samples_uv: &[i32], last_sample_ns: u64, period_ns: u64) -> Vec<Vec<u8>> {
    const MAX_24: i32 = (1 << 23) - 1;
    const MIN_24: i32 = -(1 << 23);
    let n = samples_uv.len();
    let mut frames = Vec::with_capacity(n.div_ceil(MAX_ECG_SAMPLES_PER_FRAME));
    let mut start = 0;
    while start < n {
        let end = (start + MAX_ECG_SAMPLES_PER_FRAME).min(n);
        let later = (n - end) as u64;
        let stamp = last_sample_ns.saturating_sub(later.saturating_mul(period_ns));
        let mut f = Vec::with_capacity(PMD_HEADER_LEN + (end - start) * ECG_SAMPLE_LEN);
        f.push(PMD_MEASUREMENT_ECG);
        f.extend_from_slice(&stamp.to_le_bytes());
        f.push(PMD_FRAME_TYPE_0);
        for &uv in &samples_uv[start..end] {
            f.extend_from_slice(&uv.clamp(MIN_24, MAX_24).to_le_bytes()[..ECG_SAMPLE_LEN]);
        }
        debug_assert!(f.len() <= MAX_PAYLOAD_LEN);
        frames.push(f);
        start = end;
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::{Characteristic, Measurement, decode, to_samples};
    use proptest::prelude::*;
    use vigil_shared::vitals::Channel;

    const T: i64 = 1_800_000_000_000_000;

    fn samples(c: Characteristic, bytes: &[u8]) -> Vec<(Channel, i64, i32)> {
        let m = decode(c, bytes).unwrap_or_else(|e| panic!("{c}: {e}"));
        to_samples(&m, T)
            .into_iter()
            .map(|(ch, s)| (ch, s.t_us, s.v[0]))
            .collect()
    }

    #[test]
    fn heart_rate_round_trips_with_contact_and_rr() {
        let got = samples(
            Characteristic::HeartRate,
            &heart_rate(72, Contact::Detected, &[1024, 512]),
        );
        assert_eq!(
            got,
            vec![
                (Channel::Hr, T, 72),
                (Channel::Rr, T - 500_000, 1000),
                (Channel::Rr, T, 500)
            ]
        );
        // A lost contact is reported and records nothing.
        let lost = heart_rate(72, Contact::Lost, &[]);
        let Ok(Measurement::HeartRate(hr)) = decode(Characteristic::HeartRate, &lost) else {
            panic!("decodes");
        };
        assert_eq!(
            hr.sensor_contact,
            crate::gatt::SensorContact::NotDetected,
            "{hr:?}"
        );
        assert!(samples(Characteristic::HeartRate, &lost).is_empty());
        // 16-bit values and the RR cap.
        let wide = heart_rate(300, Contact::Detected, &[700; 12]);
        let got = samples(Characteristic::HeartRate, &wide);
        assert_eq!(got[0], (Channel::Hr, T, 300));
        assert_eq!(got.len(), 1 + MAX_RR_PER_VALUE);
    }

    #[test]
    fn plx_round_trips_and_carries_sensor_status() {
        let got = samples(
            Characteristic::PlxContinuous,
            &plx_continuous(Some(97), Some(64), 0),
        );
        assert_eq!(got, vec![(Channel::Spo2, T, 97), (Channel::Pulse, T, 64)]);
        let off = plx_continuous(None, None, 1 << 11);
        assert!(samples(Characteristic::PlxContinuous, &off).is_empty());
        let Ok(Measurement::PlxContinuous(p)) = decode(Characteristic::PlxContinuous, &off) else {
            panic!("decodes");
        };
        assert!(
            p.device_sensor_status
                .is_some_and(|s| s.sensor_unconnected_to_user)
        );
    }

    #[test]
    fn blood_pressure_and_cuff_pressure_round_trip() {
        let m = decode(Characteristic::BloodPressure, &blood_pressure(128, 82, 97));
        let Ok(m) = m else { panic!("{m:?}") };
        let got: Vec<_> = to_samples(&m, T)
            .into_iter()
            .map(|(c, s)| (c, s.v))
            .collect();
        assert_eq!(got, vec![(Channel::Nibp, [128, 82, 97])]);
        let icp = decode(
            Characteristic::IntermediateCuffPressure,
            &intermediate_cuff_pressure(150),
        );
        let Ok(Measurement::IntermediateCuffPressure(icp)) = icp else {
            panic!("{icp:?}")
        };
        assert_eq!(icp.cuff_pressure.to_scaled(0), Some(150));
        assert!(
            samples(
                Characteristic::IntermediateCuffPressure,
                &intermediate_cuff_pressure(150)
            )
            .is_empty(),
            "cuff pressure is never recorded"
        );
    }

    #[test]
    fn temperature_round_trips_in_hundredths() {
        let got = samples(Characteristic::Temperature, &temperature(3687));
        assert_eq!(got, vec![(Channel::Temp, T, 3687)]);
    }

    #[test]
    fn ecg_frames_split_and_round_trip() {
        let uv: Vec<i32> = (0..200).map(|i| (i * 37 % 2000) - 1000).collect();
        let frames = polar_ecg_frames(&uv, 10_000_000_000, 7_692_308);
        assert_eq!(frames.len(), 3);
        let mut back = Vec::new();
        for f in &frames {
            assert!(f.len() <= 232, "fits one notification");
            let Ok(Measurement::PolarEcg(frame)) = decode(Characteristic::PolarPmdData, f) else {
                panic!("decodes");
            };
            back.extend(frame.samples_uv);
        }
        assert_eq!(back, uv);
    }

    proptest! {
        #[test]
        fn any_plausible_vitals_round_trip(
            bpm in 20u16..400, spo2 in 50i32..=100, pulse in 20i32..300,
            sys in 60i32..260, dia in 30i32..160, temp in 3000i32..4300,
        ) {
            let hr = samples(Characteristic::HeartRate, &heart_rate(bpm, Contact::Detected, &[]));
            prop_assert_eq!(hr, vec![(Channel::Hr, T, i32::from(bpm))]);
            let plx = samples(Characteristic::PlxContinuous, &plx_continuous(Some(spo2), Some(pulse), 0));
            prop_assert_eq!(plx, vec![(Channel::Spo2, T, spo2), (Channel::Pulse, T, pulse)]);
            let bp = samples(Characteristic::BloodPressure, &blood_pressure(sys, dia, (sys + 2 * dia) / 3));
            prop_assert_eq!(bp, vec![(Channel::Nibp, T, sys)]);
            let t = samples(Characteristic::Temperature, &temperature(temp));
            prop_assert_eq!(t, vec![(Channel::Temp, T, temp)]);
        }
    }
}
