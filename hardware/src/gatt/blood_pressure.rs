//! Blood Pressure Measurement (0x2A35) and Intermediate Cuff Pressure (0x2A36), Blood Pressure
//! Service 0x1810: one layout, two meanings.
//!
//! Layout (little-endian): flags u8; systolic, diastolic, mean arterial pressure as SFLOAT (in
//! mmHg, or kPa if flags bit 0); then in flag order a time stamp (bit 1, Date Time, 7 bytes),
//! pulse rate (bit 2, SFLOAT, beats per minute), user id (bit 3, u8) and measurement status
//! (bit 4, u16). In an Intermediate Cuff Pressure value the first SFLOAT is the current cuff
//! pressure while the cuff inflates or deflates, and the other two are unused (the SIG says
//! NaN). This module decodes; unit conversion for recording lives in [`super::samples`].

use serde::Serialize;

use super::date_time::DateTime;
use super::medfloat::Medfloat;
use super::reader::Reader;
use super::{GattError, check_len};

/// Flags bit 0: pressures are in kPa (else mmHg).
pub const BP_FLAG_UNIT_KPA: u8 = 0x01;
/// Flags bit 1: time stamp present.
pub const BP_FLAG_TIMESTAMP: u8 = 0x02;
/// Flags bit 2: pulse rate present.
pub const BP_FLAG_PULSE_RATE: u8 = 0x04;
/// Flags bit 3: user id present.
pub const BP_FLAG_USER_ID: u8 = 0x08;
/// Flags bit 4: measurement status present.
pub const BP_FLAG_STATUS: u8 = 0x10;
/// Flags bits 5–7: reserved for future use.
pub const BP_FLAGS_RESERVED: u8 = 0xE0;

/// User id meaning "unknown user".
pub const BP_USER_ID_UNKNOWN: u8 = 0xFF;

const STATUS_BODY_MOVEMENT: u16 = 1 << 0;
const STATUS_CUFF_TOO_LOOSE: u16 = 1 << 1;
const STATUS_IRREGULAR_PULSE: u16 = 1 << 2;
const STATUS_PULSE_RATE_RANGE_SHIFT: u16 = 3;
const STATUS_PULSE_RATE_RANGE_MASK: u16 = 0b11;
const STATUS_IMPROPER_POSITION: u16 = 1 << 5;

/// The unit of the pressures in a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PressureUnit {
    /// Millimetres of mercury.
    #[serde(rename = "mmHg")]
    Mmhg,
    /// Kilopascals.
    #[serde(rename = "kPa")]
    Kpa,
}

/// Whether the pulse rate was within the device's range (status bits 3–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PulseRateRange {
    /// Within range (0).
    WithinRange,
    /// Above the upper limit (1).
    ExceedsUpperLimit,
    /// Below the lower limit (2).
    BelowLowerLimit,
    /// Reserved for future use (3).
    Reserved,
}

/// The Blood Pressure Measurement Status field, bit by bit (bits 6–15 are reserved and only
/// visible in `raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BpMeasurementStatus {
    /// The field as sent.
    pub raw: u16,
    /// Bit 0: body movement during measurement.
    pub body_movement_detected: bool,
    /// Bit 1: cuff too loose.
    pub cuff_too_loose: bool,
    /// Bit 2: irregular pulse detected.
    pub irregular_pulse_detected: bool,
    /// Bits 3–4: pulse rate range.
    pub pulse_rate_range: PulseRateRange,
    /// Bit 5: improper measurement position.
    pub improper_measurement_position: bool,
}

impl BpMeasurementStatus {
    /// Splits a raw status field into its bits.
    pub fn from_raw(raw: u16) -> BpMeasurementStatus {
        let range = (raw >> STATUS_PULSE_RATE_RANGE_SHIFT) & STATUS_PULSE_RATE_RANGE_MASK;
        BpMeasurementStatus {
            raw,
            body_movement_detected: raw & STATUS_BODY_MOVEMENT != 0,
            cuff_too_loose: raw & STATUS_CUFF_TOO_LOOSE != 0,
            irregular_pulse_detected: raw & STATUS_IRREGULAR_PULSE != 0,
            pulse_rate_range: match range {
                0 => PulseRateRange::WithinRange,
                1 => PulseRateRange::ExceedsUpperLimit,
                2 => PulseRateRange::BelowLowerLimit,
                _ => PulseRateRange::Reserved,
            },
            improper_measurement_position: raw & STATUS_IMPROPER_POSITION != 0,
        }
    }
}

/// A decoded Blood Pressure Measurement: one completed cuff cycle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct BloodPressure {
    /// The flags byte as sent.
    pub flags: u8,
    /// The unit of the three pressures.
    pub unit: PressureUnit,
    /// Systolic pressure.
    pub systolic: Medfloat,
    /// Diastolic pressure.
    pub diastolic: Medfloat,
    /// Mean arterial pressure.
    pub mean_arterial: Medfloat,
    /// The device's time stamp, if sent.
    pub timestamp: Option<DateTime>,
    /// Pulse rate, beats per minute, if sent.
    pub pulse_rate_bpm: Option<Medfloat>,
    /// User id (0xFF: unknown user), if sent.
    pub user_id: Option<u8>,
    /// Measurement status, if sent.
    pub status: Option<BpMeasurementStatus>,
}

/// A decoded Intermediate Cuff Pressure: the cuff's pressure during a cycle, not a blood
/// pressure. The diastolic and mean arterial fields of the value are unused and ignored
/// whatever they hold (the SIG says NaN; some cuffs send zeros).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct IntermediateCuffPressure {
    /// The flags byte as sent.
    pub flags: u8,
    /// The unit of the cuff pressure.
    pub unit: PressureUnit,
    /// Current cuff pressure (sent in the systolic field).
    pub cuff_pressure: Medfloat,
    /// The device's time stamp, if sent.
    pub timestamp: Option<DateTime>,
    /// Pulse rate, beats per minute, if sent.
    pub pulse_rate_bpm: Option<Medfloat>,
    /// User id, if sent.
    pub user_id: Option<u8>,
    /// Measurement status, if sent.
    pub status: Option<BpMeasurementStatus>,
}

/// Decodes a Blood Pressure Measurement value.
pub fn decode_blood_pressure(bytes: &[u8]) -> Result<BloodPressure, GattError> {
    check_len(bytes)?;
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    let systolic = r.sfloat("systolic")?;
    let diastolic = r.sfloat("diastolic")?;
    let mean_arterial = r.sfloat("mean arterial pressure")?;
    let tail = read_tail(&mut r, flags)?;
    Ok(BloodPressure {
        flags,
        unit: tail.unit,
        systolic,
        diastolic,
        mean_arterial,
        timestamp: tail.timestamp,
        pulse_rate_bpm: tail.pulse_rate_bpm,
        user_id: tail.user_id,
        status: tail.status,
    })
}

/// Decodes an Intermediate Cuff Pressure value.
pub fn decode_intermediate_cuff_pressure(
    bytes: &[u8],
) -> Result<IntermediateCuffPressure, GattError> {
    check_len(bytes)?;
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    let cuff_pressure = r.sfloat("cuff pressure")?;
    // Unused in this characteristic but still part of the layout.
    r.sfloat("diastolic (unused)")?;
    r.sfloat("mean arterial pressure (unused)")?;
    let tail = read_tail(&mut r, flags)?;
    Ok(IntermediateCuffPressure {
        flags,
        unit: tail.unit,
        cuff_pressure,
        timestamp: tail.timestamp,
        pulse_rate_bpm: tail.pulse_rate_bpm,
        user_id: tail.user_id,
        status: tail.status,
    })
}

/// The optional fields both characteristics share, in flag order.
struct Tail {
    unit: PressureUnit,
    timestamp: Option<DateTime>,
    pulse_rate_bpm: Option<Medfloat>,
    user_id: Option<u8>,
    status: Option<BpMeasurementStatus>,
}

fn read_tail(r: &mut Reader<'_>, flags: u8) -> Result<Tail, GattError> {
    let unit = if flags & BP_FLAG_UNIT_KPA != 0 {
        PressureUnit::Kpa
    } else {
        PressureUnit::Mmhg
    };
    let timestamp = if flags & BP_FLAG_TIMESTAMP != 0 {
        Some(r.date_time("time stamp")?)
    } else {
        None
    };
    let pulse_rate_bpm = if flags & BP_FLAG_PULSE_RATE != 0 {
        Some(r.sfloat("pulse rate")?)
    } else {
        None
    };
    let user_id = if flags & BP_FLAG_USER_ID != 0 {
        Some(r.u8("user id")?)
    } else {
        None
    };
    let status = if flags & BP_FLAG_STATUS != 0 {
        Some(BpMeasurementStatus::from_raw(r.u16("measurement status")?))
    } else {
        None
    };
    r.finish(flags & BP_FLAGS_RESERVED)?;
    Ok(Tail {
        unit,
        timestamp,
        pulse_rate_bpm,
        user_id,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::tests::{
        arb_date_time, arb_sfloat, encode_blood_pressure, encode_intermediate_cuff_pressure,
    };
    use proptest::prelude::*;

    fn check(bytes: &[u8], expected: Result<BloodPressure, GattError>) {
        assert_eq!(
            decode_blood_pressure(bytes),
            expected,
            "payload {bytes:02x?}"
        );
    }

    fn check_icp(bytes: &[u8], expected: Result<IntermediateCuffPressure, GattError>) {
        assert_eq!(
            decode_intermediate_cuff_pressure(bytes),
            expected,
            "payload {bytes:02x?}"
        );
    }

    fn v(mantissa: i32, exponent: i8) -> Medfloat {
        Medfloat::Value { mantissa, exponent }
    }

    const STAMP: DateTime = DateTime {
        year: 2025,
        month: 3,
        day: 14,
        hours: 9,
        minutes: 26,
        seconds: 53,
    };

    #[test]
    fn known_vectors() {
        // 120/80 (93) mmHg, nothing else.
        check(
            &[0x00, 0x78, 0x00, 0x50, 0x00, 0x5D, 0x00],
            Ok(BloodPressure {
                flags: 0x00,
                unit: PressureUnit::Mmhg,
                systolic: v(120, 0),
                diastolic: v(80, 0),
                mean_arterial: v(93, 0),
                timestamp: None,
                pulse_rate_bpm: None,
                user_id: None,
                status: None,
            }),
        );
        // 16.0/10.7 (12.4) kPa with every optional field; 2025-03-14 09:26:53, pulse 64,
        // user 1, status: irregular pulse + rate above range.
        check(
            &[
                0x1F, 0xA0, 0xF0, 0x6B, 0xF0, 0x7C, 0xF0, 0xE9, 0x07, 0x03, 0x0E, 0x09, 0x1A, 0x35,
                0x40, 0x00, 0x01, 0x0C, 0x00,
            ],
            Ok(BloodPressure {
                flags: 0x1F,
                unit: PressureUnit::Kpa,
                systolic: v(160, -1),
                diastolic: v(107, -1),
                mean_arterial: v(124, -1),
                timestamp: Some(STAMP),
                pulse_rate_bpm: Some(v(64, 0)),
                user_id: Some(1),
                status: Some(BpMeasurementStatus {
                    raw: 0x000C,
                    body_movement_detected: false,
                    cuff_too_loose: false,
                    irregular_pulse_detected: true,
                    pulse_rate_range: PulseRateRange::ExceedsUpperLimit,
                    improper_measurement_position: false,
                }),
            }),
        );
        // Special values stay special.
        check(
            &[0x00, 0xFF, 0x07, 0x00, 0x08, 0x02, 0x08],
            Ok(BloodPressure {
                flags: 0x00,
                unit: PressureUnit::Mmhg,
                systolic: Medfloat::NaN,
                diastolic: Medfloat::NRes,
                mean_arterial: Medfloat::NegInf,
                timestamp: None,
                pulse_rate_bpm: None,
                user_id: None,
                status: None,
            }),
        );
    }

    #[test]
    fn intermediate_cuff_pressure_keeps_only_the_first_value() {
        check_icp(
            &[0x04, 0x8C, 0x00, 0xFF, 0x07, 0xFF, 0x07, 0x48, 0x00],
            Ok(IntermediateCuffPressure {
                flags: 0x04,
                unit: PressureUnit::Mmhg,
                cuff_pressure: v(140, 0),
                timestamp: None,
                pulse_rate_bpm: Some(v(72, 0)),
                user_id: None,
                status: None,
            }),
        );
        // Zeros instead of NaN in the unused fields are tolerated.
        check_icp(
            &[0x00, 0x8C, 0x00, 0x00, 0x00, 0x00, 0x00],
            Ok(IntermediateCuffPressure {
                flags: 0x00,
                unit: PressureUnit::Mmhg,
                cuff_pressure: v(140, 0),
                timestamp: None,
                pulse_rate_bpm: None,
                user_id: None,
                status: None,
            }),
        );
        check_icp(
            &[0x00, 0x8C, 0x00, 0xFF, 0x07],
            Err(GattError::Truncated {
                field: "mean arterial pressure (unused)",
                offset: 5,
                needed: 2,
                available: 0,
            }),
        );
    }

    #[test]
    fn status_bits() {
        use PulseRateRange::{
            BelowLowerLimit as Below, ExceedsUpperLimit as Above, Reserved as Rfu,
            WithinRange as In,
        };
        for (raw, expected_set, expected_range) in [
            (0x0000, "", In),
            (0x0001, "movement", In),
            (0x0002, "loose", In),
            (0x0004, "irregular", In),
            (0x0008, "", Above),
            (0x0010, "", Below),
            (0x0018, "", Rfu),
            (0x0020, "position", In),
            (0xFFC0, "", In),
            (0xFFFF, "movement loose irregular position", Rfu),
        ] {
            let s = BpMeasurementStatus::from_raw(raw);
            let set: Vec<&str> = [
                ("movement", s.body_movement_detected),
                ("loose", s.cuff_too_loose),
                ("irregular", s.irregular_pulse_detected),
                ("position", s.improper_measurement_position),
            ]
            .into_iter()
            .filter_map(|(name, on)| on.then_some(name))
            .collect();
            assert_eq!(set.join(" "), expected_set, "status {raw:#06x}");
            assert_eq!(s.pulse_rate_range, expected_range, "status {raw:#06x}");
            assert_eq!(s.raw, raw);
        }
    }

    #[test]
    fn malformed_values() {
        check(
            &[0x02, 0x78, 0x00, 0x50, 0x00, 0x5D, 0x00, 0xE9, 0x07, 0x03],
            Err(GattError::Truncated {
                field: "time stamp",
                offset: 7,
                needed: 7,
                available: 3,
            }),
        );
        check(
            &[0x10, 0x78, 0x00, 0x50, 0x00, 0x5D, 0x00, 0x01],
            Err(GattError::Truncated {
                field: "measurement status",
                offset: 7,
                needed: 2,
                available: 1,
            }),
        );
        check(
            &[0x00, 0x78, 0x00, 0x50, 0x00, 0x5D, 0x00, 0x01],
            Err(GattError::TrailingBytes { offset: 7, len: 1 }),
        );
    }

    /// Units × time stamp × pulse rate × user id × status: all 32 combinations, built from
    /// the SIG layout by hand and decoded back, for both characteristics.
    #[test]
    fn every_flag_combination() {
        for flags in 0_u8..32 {
            let mut bytes = vec![flags, 0x78, 0x00, 0x50, 0x00, 0x5D, 0x00];
            let timestamp = (flags & BP_FLAG_TIMESTAMP != 0).then(|| {
                bytes.extend(STAMP.to_bytes());
                STAMP
            });
            let pulse_rate_bpm = (flags & BP_FLAG_PULSE_RATE != 0).then(|| {
                bytes.extend([0x3C, 0x00]);
                v(60, 0)
            });
            let user_id = (flags & BP_FLAG_USER_ID != 0).then(|| {
                bytes.push(0x02);
                2
            });
            let status = (flags & BP_FLAG_STATUS != 0).then(|| {
                bytes.extend([0x21, 0x00]);
                BpMeasurementStatus::from_raw(0x0021)
            });
            let unit = if flags & BP_FLAG_UNIT_KPA != 0 {
                PressureUnit::Kpa
            } else {
                PressureUnit::Mmhg
            };
            let expected = BloodPressure {
                flags,
                unit,
                systolic: v(120, 0),
                diastolic: v(80, 0),
                mean_arterial: v(93, 0),
                timestamp,
                pulse_rate_bpm,
                user_id,
                status,
            };
            assert_eq!(
                encode_blood_pressure(&expected),
                bytes,
                "flags {flags:#04x}"
            );
            check(&bytes, Ok(expected));
            check_icp(
                &bytes,
                Ok(IntermediateCuffPressure {
                    flags,
                    unit,
                    cuff_pressure: v(120, 0),
                    timestamp,
                    pulse_rate_bpm,
                    user_id,
                    status,
                }),
            );
        }
    }

    fn arb_blood_pressure() -> impl Strategy<Value = BloodPressure> {
        (
            0_u8..32,
            [arb_sfloat(), arb_sfloat(), arb_sfloat(), arb_sfloat()],
            arb_date_time(),
            any::<u8>(),
            any::<u16>(),
        )
            .prop_map(|(flags, [sys, dia, map, pulse], stamp, user, status)| {
                BloodPressure {
                    flags,
                    unit: if flags & BP_FLAG_UNIT_KPA != 0 {
                        PressureUnit::Kpa
                    } else {
                        PressureUnit::Mmhg
                    },
                    systolic: sys,
                    diastolic: dia,
                    mean_arterial: map,
                    timestamp: (flags & BP_FLAG_TIMESTAMP != 0).then_some(stamp),
                    pulse_rate_bpm: (flags & BP_FLAG_PULSE_RATE != 0).then_some(pulse),
                    user_id: (flags & BP_FLAG_USER_ID != 0).then_some(user),
                    status: (flags & BP_FLAG_STATUS != 0)
                        .then(|| BpMeasurementStatus::from_raw(status)),
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip(value in arb_blood_pressure()) {
            prop_assert_eq!(decode_blood_pressure(&encode_blood_pressure(&value)), Ok(value));
        }

        #[test]
        fn intermediate_round_trip(value in arb_blood_pressure()) {
            let icp = IntermediateCuffPressure {
                flags: value.flags,
                unit: value.unit,
                cuff_pressure: value.systolic,
                timestamp: value.timestamp,
                pulse_rate_bpm: value.pulse_rate_bpm,
                user_id: value.user_id,
                status: value.status,
            };
            let bytes = encode_intermediate_cuff_pressure(&icp);
            prop_assert_eq!(decode_intermediate_cuff_pressure(&bytes), Ok(icp));
        }
    }
}
