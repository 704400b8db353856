//! Heart Rate Measurement (0x2A37, Heart Rate Service 0x180D): heart rate, sensor contact,
//! energy expended and RR intervals from a chest strap or ECG monitor.
//!
//! Layout (all little-endian): flags u8; heart rate u8 or u16 (flags bit 0); energy expended
//! u16 kJ if bit 3; then, if bit 4, RR intervals as u16 in 1/1024 s, as many as fit until the
//! end of the value. Bits 1–2 report sensor contact. This module decodes; it does not decide
//! what gets recorded (see [`super::to_samples`]).

use serde::Serialize;

use super::reader::Reader;
use super::{GattError, check_len};

/// Flags bit 0: the heart rate is a u16 (else a u8).
pub const HR_FLAG_VALUE_U16: u8 = 0x01;
/// Flags bit 1: sensor contact detected (meaningful only with bit 2).
pub const HR_FLAG_CONTACT_DETECTED: u8 = 0x02;
/// Flags bit 2: sensor contact feature supported.
pub const HR_FLAG_CONTACT_SUPPORTED: u8 = 0x04;
/// Flags bit 3: energy expended field present.
pub const HR_FLAG_ENERGY_EXPENDED: u8 = 0x08;
/// Flags bit 4: one or more RR intervals present.
pub const HR_FLAG_RR_INTERVALS: u8 = 0x10;
/// Flags bits 5–7: reserved for future use.
pub const HR_FLAGS_RESERVED: u8 = 0xE0;

/// Units of an RR interval per second (the SIG's resolution is 1/1024 s).
pub const RR_UNITS_PER_S: u32 = 1024;

/// What a monitor says about its contact with the skin (flags bits 1–2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorContact {
    /// The monitor does not report contact (bits 00 or 01).
    NotSupported,
    /// Contact is supported and the sensor is not touching the skin (bits 10): the values are
    /// not a measurement of the patient.
    NotDetected,
    /// Contact is supported and detected (bits 11).
    Detected,
}

impl SensorContact {
    fn from_flags(flags: u8) -> SensorContact {
        match (
            flags & HR_FLAG_CONTACT_SUPPORTED != 0,
            flags & HR_FLAG_CONTACT_DETECTED != 0,
        ) {
            (false, _) => SensorContact::NotSupported,
            (true, false) => SensorContact::NotDetected,
            (true, true) => SensorContact::Detected,
        }
    }
}

/// A decoded Heart Rate Measurement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct HeartRate {
    /// The flags byte as sent (reserved bits included, for diagnosis).
    pub flags: u8,
    /// Heart rate, beats per minute.
    pub heart_rate_bpm: u16,
    /// Sensor contact status.
    pub sensor_contact: SensorContact,
    /// Accumulated energy expended since the last reset, kilojoules (0xFFFF: at its maximum).
    pub energy_expended_kj: Option<u16>,
    /// RR intervals, oldest first, in units of 1/1024 s. Empty when bit 4 is clear; never
    /// empty when it is set.
    pub rr_intervals_1024th_s: Vec<u16>,
}

/// Decodes a Heart Rate Measurement value.
pub fn decode_heart_rate(bytes: &[u8]) -> Result<HeartRate, GattError> {
    check_len(bytes)?;
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    let heart_rate_bpm = if flags & HR_FLAG_VALUE_U16 != 0 {
        r.u16("heart rate")?
    } else {
        u16::from(r.u8("heart rate")?)
    };
    let energy_expended_kj = if flags & HR_FLAG_ENERGY_EXPENDED != 0 {
        Some(r.u16("energy expended")?)
    } else {
        None
    };
    let mut rr_intervals_1024th_s = Vec::new();
    if flags & HR_FLAG_RR_INTERVALS != 0 {
        // The intervals run to the end of the value, so an odd byte count cannot be a short
        // read of a known length: the sender and the flags disagree.
        if !r.remaining().is_multiple_of(2) {
            return Err(GattError::Inconsistent {
                field: "rr intervals",
                offset: r.offset(),
                reason: "an odd number of bytes is left for 16-bit intervals",
            });
        }
        // The flag says the field is present, so it holds at least one interval.
        rr_intervals_1024th_s.push(r.u16("rr interval")?);
        while r.remaining() > 0 {
            rr_intervals_1024th_s.push(r.u16("rr interval")?);
        }
    }
    r.finish(flags & HR_FLAGS_RESERVED)?;
    Ok(HeartRate {
        flags,
        heart_rate_bpm,
        sensor_contact: SensorContact::from_flags(flags),
        energy_expended_kj,
        rr_intervals_1024th_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::tests::encode_heart_rate;
    use proptest::prelude::*;

    fn check(bytes: &[u8], expected: Result<HeartRate, GattError>) {
        assert_eq!(decode_heart_rate(bytes), expected, "payload {bytes:02x?}");
    }

    fn hr(flags: u8, bpm: u16, energy: Option<u16>, rr: &[u16]) -> HeartRate {
        HeartRate {
            flags,
            heart_rate_bpm: bpm,
            sensor_contact: SensorContact::from_flags(flags),
            energy_expended_kj: energy,
            rr_intervals_1024th_s: rr.to_vec(),
        }
    }

    #[test]
    fn known_vectors() {
        // The example from the brief: u8 72 bpm, contact detected, RR 0x0410 = 1040/1024 s.
        check(&[0x16, 0x48, 0x10, 0x04], Ok(hr(0x16, 72, None, &[0x0410])));
        check(&[0x00, 0x3C], Ok(hr(0x00, 60, None, &[])));
        check(&[0x01, 0x2C, 0x01], Ok(hr(0x01, 300, None, &[])));
        check(
            &[0x1F, 0x50, 0x00, 0x34, 0x12, 0x00, 0x03, 0x20, 0x03],
            Ok(hr(0x1F, 80, Some(0x1234), &[768, 800])),
        );
        check(
            &[0x0C, 0x5A, 0xFF, 0xFF],
            Ok(hr(0x0C, 90, Some(0xFFFF), &[])),
        );
    }

    #[test]
    fn sensor_contact_from_bits_1_and_2() {
        for (flags, expected) in [
            (0x00, SensorContact::NotSupported),
            (0x02, SensorContact::NotSupported),
            (0x04, SensorContact::NotDetected),
            (0x06, SensorContact::Detected),
        ] {
            assert_eq!(
                decode_heart_rate(&[flags, 70]).map(|h| h.sensor_contact),
                Ok(expected),
                "flags {flags:#04x}"
            );
        }
    }

    #[test]
    fn malformed_values() {
        check(
            &[],
            Err(GattError::Truncated {
                field: "flags",
                offset: 0,
                needed: 1,
                available: 0,
            }),
        );
        check(
            &[0x01, 0x48],
            Err(GattError::Truncated {
                field: "heart rate",
                offset: 1,
                needed: 2,
                available: 1,
            }),
        );
        check(
            &[0x08, 0x48, 0x01],
            Err(GattError::Truncated {
                field: "energy expended",
                offset: 2,
                needed: 2,
                available: 1,
            }),
        );
        check(
            &[0x10, 0x48],
            Err(GattError::Truncated {
                field: "rr interval",
                offset: 2,
                needed: 2,
                available: 0,
            }),
        );
        check(
            &[0x10, 0x48, 0x00, 0x04, 0x01],
            Err(GattError::Inconsistent {
                field: "rr intervals",
                offset: 2,
                reason: "an odd number of bytes is left for 16-bit intervals",
            }),
        );
        check(
            &[0x00, 0x48, 0x00],
            Err(GattError::TrailingBytes { offset: 2, len: 1 }),
        );
    }

    #[test]
    fn reserved_flag_bits_are_ignored_and_excuse_trailing_bytes() {
        check(&[0x80, 0x48], Ok(hr(0x80, 72, None, &[])));
        check(&[0x20, 0x48, 0xAA, 0xBB], Ok(hr(0x20, 72, None, &[])));
    }

    /// Every one of the 32 combinations of the defined flag bits, with payloads built from the
    /// SIG layout and decoded back field by field.
    #[test]
    fn every_flag_combination() {
        for flags in 0_u8..32 {
            let bpm: u16 = if flags & HR_FLAG_VALUE_U16 != 0 {
                0x0134
            } else {
                0x9B
            };
            let energy = (flags & HR_FLAG_ENERGY_EXPENDED != 0).then_some(0x0A0B);
            let rr: &[u16] = if flags & HR_FLAG_RR_INTERVALS != 0 {
                &[0x0300, 0x0321, 0x0402]
            } else {
                &[]
            };
            let expected = hr(flags, bpm, energy, rr);
            let mut bytes = vec![flags];
            if flags & HR_FLAG_VALUE_U16 != 0 {
                bytes.extend(bpm.to_le_bytes());
            } else {
                bytes.push(0x9B);
            }
            if let Some(e) = energy {
                bytes.extend(e.to_le_bytes());
            }
            for interval in rr {
                bytes.extend(interval.to_le_bytes());
            }
            assert_eq!(encode_heart_rate(&expected), bytes, "flags {flags:#04x}");
            check(&bytes, Ok(expected));
        }
    }

    fn arb_heart_rate() -> impl Strategy<Value = HeartRate> {
        (
            0_u8..32,
            any::<u16>(),
            any::<u16>(),
            prop::collection::vec(any::<u16>(), 1..64),
        )
            .prop_map(|(flags, bpm, energy, rr)| {
                let bpm = if flags & HR_FLAG_VALUE_U16 != 0 {
                    bpm
                } else {
                    bpm & 0xFF
                };
                hr(
                    flags,
                    bpm,
                    (flags & HR_FLAG_ENERGY_EXPENDED != 0).then_some(energy),
                    if flags & HR_FLAG_RR_INTERVALS != 0 {
                        &rr
                    } else {
                        &[]
                    },
                )
            })
    }

    proptest! {
        #[test]
        fn round_trip(value in arb_heart_rate()) {
            prop_assert_eq!(decode_heart_rate(&encode_heart_rate(&value)), Ok(value));
        }
    }
}
