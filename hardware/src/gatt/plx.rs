//! Pulse oximetry (Pulse Oximeter Service 0x1822): PLX Spot-check Measurement (0x2A5E) and PLX
//! Continuous Measurement (0x2A5F), with their Measurement Status and Device and Sensor Status
//! fields decoded bit by bit.
//!
//! Bit assignments are those of the Pulse Oximeter Service specification 1.0.1: flags tables
//! 3.3 (spot-check) and 3.7 (continuous), Measurement Status table 3.4 (bits 0–4 reserved),
//! Device and Sensor Status table 3.5 (bits 16–23 reserved). This module decodes; which
//! readings get recorded is decided in [`super::samples`].

use serde::Serialize;

use super::date_time::DateTime;
use super::medfloat::Medfloat;
use super::reader::Reader;
use super::{GattError, check_len};

/// Spot-check flags bit 0: time stamp present.
pub const SPOT_FLAG_TIMESTAMP: u8 = 0x01;
/// Spot-check flags bit 1: measurement status present.
pub const SPOT_FLAG_MEASUREMENT_STATUS: u8 = 0x02;
/// Spot-check flags bit 2: device and sensor status present.
pub const SPOT_FLAG_DEVICE_SENSOR_STATUS: u8 = 0x04;
/// Spot-check flags bit 3: pulse amplitude index present.
pub const SPOT_FLAG_PULSE_AMPLITUDE_INDEX: u8 = 0x08;
/// Spot-check flags bit 4: the device's clock is not set (its time stamp is not real time).
pub const SPOT_FLAG_CLOCK_NOT_SET: u8 = 0x10;
/// Spot-check flags bits 5–7: reserved for future use.
pub const SPOT_FLAGS_RESERVED: u8 = 0xE0;

/// Continuous flags bit 0: SpO2PR-Fast present.
pub const CONT_FLAG_FAST: u8 = 0x01;
/// Continuous flags bit 1: SpO2PR-Slow present.
pub const CONT_FLAG_SLOW: u8 = 0x02;
/// Continuous flags bit 2: measurement status present.
pub const CONT_FLAG_MEASUREMENT_STATUS: u8 = 0x04;
/// Continuous flags bit 3: device and sensor status present.
pub const CONT_FLAG_DEVICE_SENSOR_STATUS: u8 = 0x08;
/// Continuous flags bit 4: pulse amplitude index present.
pub const CONT_FLAG_PULSE_AMPLITUDE_INDEX: u8 = 0x10;
/// Continuous flags bits 5–7: reserved for future use.
pub const CONT_FLAGS_RESERVED: u8 = 0xE0;

/// One SpO2 / pulse rate pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Spo2Pr {
    /// Oxygen saturation, percent.
    pub spo2_percent: Medfloat,
    /// Pulse rate, beats per minute.
    pub pulse_rate_bpm: Medfloat,
}

/// The Measurement Status field (PLXS table 3.4). Bits 0–4 are reserved and only visible in
/// `raw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PlxMeasurementStatus {
    /// The field as sent.
    pub raw: u16,
    /// Bit 5.
    pub measurement_ongoing: bool,
    /// Bit 6.
    pub early_estimated_data: bool,
    /// Bit 7.
    pub validated_data: bool,
    /// Bit 8.
    pub fully_qualified_data: bool,
    /// Bit 9.
    pub data_from_measurement_storage: bool,
    /// Bit 10.
    pub data_for_demonstration: bool,
    /// Bit 11.
    pub data_for_testing: bool,
    /// Bit 12.
    pub calibration_ongoing: bool,
    /// Bit 13.
    pub measurement_unavailable: bool,
    /// Bit 14.
    pub questionable_measurement_detected: bool,
    /// Bit 15.
    pub invalid_measurement_detected: bool,
}

impl PlxMeasurementStatus {
    /// Splits a raw Measurement Status field into its bits.
    pub fn from_raw(raw: u16) -> PlxMeasurementStatus {
        let bit = |n: u16| raw & (1 << n) != 0;
        PlxMeasurementStatus {
            raw,
            measurement_ongoing: bit(5),
            early_estimated_data: bit(6),
            validated_data: bit(7),
            fully_qualified_data: bit(8),
            data_from_measurement_storage: bit(9),
            data_for_demonstration: bit(10),
            data_for_testing: bit(11),
            calibration_ongoing: bit(12),
            measurement_unavailable: bit(13),
            questionable_measurement_detected: bit(14),
            invalid_measurement_detected: bit(15),
        }
    }

    /// Whether the device itself says the numbers are not a reading of the patient: the
    /// measurement is unavailable or invalid, or the data is for demonstration or testing.
    /// Questionable, early or ongoing readings are still readings.
    pub fn disqualifies_reading(&self) -> bool {
        self.measurement_unavailable
            || self.invalid_measurement_detected
            || self.data_for_demonstration
            || self.data_for_testing
    }
}

/// The Device and Sensor Status field (PLXS table 3.5). Bits 16–23 are reserved and only
/// visible in `raw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PlxDeviceSensorStatus {
    /// The 24-bit field as sent.
    pub raw: u32,
    /// Bit 0.
    pub extended_display_update_ongoing: bool,
    /// Bit 1.
    pub equipment_malfunction_detected: bool,
    /// Bit 2.
    pub signal_processing_irregularity_detected: bool,
    /// Bit 3.
    pub inadequate_signal_detected: bool,
    /// Bit 4.
    pub poor_signal_detected: bool,
    /// Bit 5.
    pub low_perfusion_detected: bool,
    /// Bit 6.
    pub erratic_signal_detected: bool,
    /// Bit 7.
    pub nonpulsatile_signal_detected: bool,
    /// Bit 8.
    pub questionable_pulse_detected: bool,
    /// Bit 9.
    pub signal_analysis_ongoing: bool,
    /// Bit 10.
    pub sensor_interference_detected: bool,
    /// Bit 11.
    pub sensor_unconnected_to_user: bool,
    /// Bit 12.
    pub unknown_sensor_connected: bool,
    /// Bit 13.
    pub sensor_displaced: bool,
    /// Bit 14.
    pub sensor_malfunctioning: bool,
    /// Bit 15.
    pub sensor_disconnected: bool,
}

impl PlxDeviceSensorStatus {
    /// Whether the device says its sensor is not on the patient: unconnected to the user,
    /// displaced, or disconnected from the device.
    pub fn sensor_off_patient(&self) -> bool {
        self.sensor_unconnected_to_user || self.sensor_displaced || self.sensor_disconnected
    }

    /// Splits a raw Device and Sensor Status field into its bits.
    pub fn from_raw(raw: u32) -> PlxDeviceSensorStatus {
        let bit = |n: u32| raw & (1 << n) != 0;
        PlxDeviceSensorStatus {
            raw,
            extended_display_update_ongoing: bit(0),
            equipment_malfunction_detected: bit(1),
            signal_processing_irregularity_detected: bit(2),
            inadequate_signal_detected: bit(3),
            poor_signal_detected: bit(4),
            low_perfusion_detected: bit(5),
            erratic_signal_detected: bit(6),
            nonpulsatile_signal_detected: bit(7),
            questionable_pulse_detected: bit(8),
            signal_analysis_ongoing: bit(9),
            sensor_interference_detected: bit(10),
            sensor_unconnected_to_user: bit(11),
            unknown_sensor_connected: bit(12),
            sensor_displaced: bit(13),
            sensor_malfunctioning: bit(14),
            sensor_disconnected: bit(15),
        }
    }
}

/// A decoded PLX Spot-check Measurement: one reading per measurement session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PlxSpotCheck {
    /// The flags byte as sent.
    pub flags: u8,
    /// SpO2 and pulse rate.
    pub reading: Spo2Pr,
    /// The device's time stamp, if sent.
    pub timestamp: Option<DateTime>,
    /// Measurement status, if sent.
    pub measurement_status: Option<PlxMeasurementStatus>,
    /// Device and sensor status, if sent.
    pub device_sensor_status: Option<PlxDeviceSensorStatus>,
    /// Pulse amplitude index, percent, if sent.
    pub pulse_amplitude_index_percent: Option<Medfloat>,
    /// Flags bit 4: the device's clock was not set when it stamped the reading.
    pub device_clock_not_set: bool,
}

/// A decoded PLX Continuous Measurement, notified every 1–4 s.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PlxContinuous {
    /// The flags byte as sent.
    pub flags: u8,
    /// SpO2PR-Normal: the device's standard averaging.
    pub normal: Spo2Pr,
    /// SpO2PR-Fast (quick-responding averaging), if sent.
    pub fast: Option<Spo2Pr>,
    /// SpO2PR-Slow (motion-resistant averaging), if sent.
    pub slow: Option<Spo2Pr>,
    /// Measurement status, if sent.
    pub measurement_status: Option<PlxMeasurementStatus>,
    /// Device and sensor status, if sent.
    pub device_sensor_status: Option<PlxDeviceSensorStatus>,
    /// Pulse amplitude index, percent, if sent.
    pub pulse_amplitude_index_percent: Option<Medfloat>,
}

/// Decodes a PLX Spot-check Measurement value.
pub fn decode_plx_spot_check(bytes: &[u8]) -> Result<PlxSpotCheck, GattError> {
    check_len(bytes)?;
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    let reading = read_pair(&mut r, "spo2", "pulse rate")?;
    let timestamp = if flags & SPOT_FLAG_TIMESTAMP != 0 {
        Some(r.date_time("time stamp")?)
    } else {
        None
    };
    let measurement_status = if flags & SPOT_FLAG_MEASUREMENT_STATUS != 0 {
        Some(read_measurement_status(&mut r)?)
    } else {
        None
    };
    let device_sensor_status = if flags & SPOT_FLAG_DEVICE_SENSOR_STATUS != 0 {
        Some(read_device_sensor_status(&mut r)?)
    } else {
        None
    };
    let pulse_amplitude_index_percent = if flags & SPOT_FLAG_PULSE_AMPLITUDE_INDEX != 0 {
        Some(r.sfloat("pulse amplitude index")?)
    } else {
        None
    };
    r.finish(flags & SPOT_FLAGS_RESERVED)?;
    Ok(PlxSpotCheck {
        flags,
        reading,
        timestamp,
        measurement_status,
        device_sensor_status,
        pulse_amplitude_index_percent,
        device_clock_not_set: flags & SPOT_FLAG_CLOCK_NOT_SET != 0,
    })
}

/// Decodes a PLX Continuous Measurement value.
pub fn decode_plx_continuous(bytes: &[u8]) -> Result<PlxContinuous, GattError> {
    check_len(bytes)?;
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    let normal = read_pair(&mut r, "spo2 (normal)", "pulse rate (normal)")?;
    let fast = if flags & CONT_FLAG_FAST != 0 {
        Some(read_pair(&mut r, "spo2 (fast)", "pulse rate (fast)")?)
    } else {
        None
    };
    let slow = if flags & CONT_FLAG_SLOW != 0 {
        Some(read_pair(&mut r, "spo2 (slow)", "pulse rate (slow)")?)
    } else {
        None
    };
    let measurement_status = if flags & CONT_FLAG_MEASUREMENT_STATUS != 0 {
        Some(read_measurement_status(&mut r)?)
    } else {
        None
    };
    let device_sensor_status = if flags & CONT_FLAG_DEVICE_SENSOR_STATUS != 0 {
        Some(read_device_sensor_status(&mut r)?)
    } else {
        None
    };
    let pulse_amplitude_index_percent = if flags & CONT_FLAG_PULSE_AMPLITUDE_INDEX != 0 {
        Some(r.sfloat("pulse amplitude index")?)
    } else {
        None
    };
    r.finish(flags & CONT_FLAGS_RESERVED)?;
    Ok(PlxContinuous {
        flags,
        normal,
        fast,
        slow,
        measurement_status,
        device_sensor_status,
        pulse_amplitude_index_percent,
    })
}

fn read_pair(
    r: &mut Reader<'_>,
    spo2_field: &'static str,
    pr_field: &'static str,
) -> Result<Spo2Pr, GattError> {
    Ok(Spo2Pr {
        spo2_percent: r.sfloat(spo2_field)?,
        pulse_rate_bpm: r.sfloat(pr_field)?,
    })
}

fn read_measurement_status(r: &mut Reader<'_>) -> Result<PlxMeasurementStatus, GattError> {
    Ok(PlxMeasurementStatus::from_raw(r.u16("measurement status")?))
}

fn read_device_sensor_status(r: &mut Reader<'_>) -> Result<PlxDeviceSensorStatus, GattError> {
    Ok(PlxDeviceSensorStatus::from_raw(
        r.u24("device and sensor status")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::tests::{
        arb_date_time, arb_sfloat, encode_plx_continuous, encode_plx_spot_check,
    };
    use proptest::prelude::*;

    fn check_spot(bytes: &[u8], expected: Result<PlxSpotCheck, GattError>) {
        assert_eq!(
            decode_plx_spot_check(bytes),
            expected,
            "payload {bytes:02x?}"
        );
    }

    fn check_cont(bytes: &[u8], expected: Result<PlxContinuous, GattError>) {
        assert_eq!(
            decode_plx_continuous(bytes),
            expected,
            "payload {bytes:02x?}"
        );
    }

    fn v(mantissa: i32, exponent: i8) -> Medfloat {
        Medfloat::Value { mantissa, exponent }
    }

    fn pair(spo2: Medfloat, pr: Medfloat) -> Spo2Pr {
        Spo2Pr {
            spo2_percent: spo2,
            pulse_rate_bpm: pr,
        }
    }

    const STAMP: DateTime = DateTime {
        year: 2024,
        month: 12,
        day: 31,
        hours: 23,
        minutes: 59,
        seconds: 58,
    };

    /// Each named measurement-status bit at its SIG position, one at a time.
    #[test]
    fn measurement_status_bits() {
        type Get = fn(&PlxMeasurementStatus) -> bool;
        let table: [(u16, Get); 11] = [
            (5, |s| s.measurement_ongoing),
            (6, |s| s.early_estimated_data),
            (7, |s| s.validated_data),
            (8, |s| s.fully_qualified_data),
            (9, |s| s.data_from_measurement_storage),
            (10, |s| s.data_for_demonstration),
            (11, |s| s.data_for_testing),
            (12, |s| s.calibration_ongoing),
            (13, |s| s.measurement_unavailable),
            (14, |s| s.questionable_measurement_detected),
            (15, |s| s.invalid_measurement_detected),
        ];
        for (bit, get) in table {
            let status = PlxMeasurementStatus::from_raw(1 << bit);
            let set: Vec<u16> = table
                .iter()
                .filter(|(_, g)| g(&status))
                .map(|(b, _)| *b)
                .collect();
            assert_eq!(set, vec![bit], "bit {bit}");
            assert!(get(&status));
        }
        // Reserved bits 0-4 set nothing and disqualify nothing.
        let reserved = PlxMeasurementStatus::from_raw(0x001F);
        assert!(table.iter().all(|(_, g)| !g(&reserved)));
        assert_eq!(reserved.raw, 0x001F);
        let disqualifying: Vec<u16> = (0..16)
            .filter(|b| PlxMeasurementStatus::from_raw(1 << b).disqualifies_reading())
            .collect();
        assert_eq!(disqualifying, vec![10, 11, 13, 15]);
    }

    /// Each named device-and-sensor-status bit at its SIG position, one at a time.
    #[test]
    fn device_sensor_status_bits() {
        type Get = fn(&PlxDeviceSensorStatus) -> bool;
        let table: [(u32, Get); 16] = [
            (0, |s| s.extended_display_update_ongoing),
            (1, |s| s.equipment_malfunction_detected),
            (2, |s| s.signal_processing_irregularity_detected),
            (3, |s| s.inadequate_signal_detected),
            (4, |s| s.poor_signal_detected),
            (5, |s| s.low_perfusion_detected),
            (6, |s| s.erratic_signal_detected),
            (7, |s| s.nonpulsatile_signal_detected),
            (8, |s| s.questionable_pulse_detected),
            (9, |s| s.signal_analysis_ongoing),
            (10, |s| s.sensor_interference_detected),
            (11, |s| s.sensor_unconnected_to_user),
            (12, |s| s.unknown_sensor_connected),
            (13, |s| s.sensor_displaced),
            (14, |s| s.sensor_malfunctioning),
            (15, |s| s.sensor_disconnected),
        ];
        for (bit, get) in table {
            let status = PlxDeviceSensorStatus::from_raw(1 << bit);
            let set: Vec<u32> = table
                .iter()
                .filter(|(_, g)| g(&status))
                .map(|(b, _)| *b)
                .collect();
            assert_eq!(set, vec![bit], "bit {bit}");
            assert!(get(&status));
        }
        let reserved = PlxDeviceSensorStatus::from_raw(0x00FF_0000);
        assert!(table.iter().all(|(_, g)| !g(&reserved)));
        assert_eq!(reserved.raw, 0x00FF_0000);
    }

    #[test]
    fn spot_check_known_vectors() {
        // SpO2 97 %, PR 64 bpm, nothing else.
        check_spot(
            &[0x00, 0x61, 0x00, 0x40, 0x00],
            Ok(PlxSpotCheck {
                flags: 0x00,
                reading: pair(v(97, 0), v(64, 0)),
                timestamp: None,
                measurement_status: None,
                device_sensor_status: None,
                pulse_amplitude_index_percent: None,
                device_clock_not_set: false,
            }),
        );
        // Everything: 97.5 %, NaN PR, stamp, status "fully qualified", sensor "low perfusion"
        // + reserved bit 16, PAI 2.5 %, clock not set.
        check_spot(
            &[
                0x1F, 0xCF, 0xF3, 0xFF, 0x07, 0xE8, 0x07, 0x0C, 0x1F, 0x17, 0x3B, 0x3A, 0x00, 0x01,
                0x20, 0x00, 0x01, 0x19, 0xF0,
            ],
            Ok(PlxSpotCheck {
                flags: 0x1F,
                reading: pair(v(975, -1), Medfloat::NaN),
                timestamp: Some(STAMP),
                measurement_status: Some(PlxMeasurementStatus::from_raw(0x0100)),
                device_sensor_status: Some(PlxDeviceSensorStatus::from_raw(0x01_0020)),
                pulse_amplitude_index_percent: Some(v(25, -1)),
                device_clock_not_set: true,
            }),
        );
    }

    #[test]
    fn continuous_known_vectors() {
        // Normal 98/72, fast 97/75, slow 98/70, status 0x0080, sensor 0x008000 (disconnected),
        // PAI 1.2 %.
        check_cont(
            &[
                0x1F, 0x62, 0x00, 0x48, 0x00, 0x61, 0x00, 0x4B, 0x00, 0x62, 0x00, 0x46, 0x00, 0x80,
                0x00, 0x00, 0x80, 0x00, 0x0C, 0xF0,
            ],
            Ok(PlxContinuous {
                flags: 0x1F,
                normal: pair(v(98, 0), v(72, 0)),
                fast: Some(pair(v(97, 0), v(75, 0))),
                slow: Some(pair(v(98, 0), v(70, 0))),
                measurement_status: Some(PlxMeasurementStatus::from_raw(0x0080)),
                device_sensor_status: Some(PlxDeviceSensorStatus::from_raw(0x00_8000)),
                pulse_amplitude_index_percent: Some(v(12, -1)),
            }),
        );
        check_cont(
            &[0x01, 0x62, 0x00, 0x48, 0x00, 0x61],
            Err(GattError::Truncated {
                field: "spo2 (fast)",
                offset: 5,
                needed: 2,
                available: 1,
            }),
        );
        check_cont(
            &[0x08, 0x62, 0x00, 0x48, 0x00, 0x00, 0x80],
            Err(GattError::Truncated {
                field: "device and sensor status",
                offset: 5,
                needed: 3,
                available: 2,
            }),
        );
    }

    /// All 32 combinations of the defined spot-check flags, built by hand from the layout.
    #[test]
    fn spot_check_every_flag_combination() {
        for flags in 0_u8..32 {
            let mut bytes = vec![flags, 0x60, 0x00, 0x3F, 0x00];
            let timestamp = (flags & SPOT_FLAG_TIMESTAMP != 0).then(|| {
                bytes.extend(STAMP.to_bytes());
                STAMP
            });
            let measurement_status = (flags & SPOT_FLAG_MEASUREMENT_STATUS != 0).then(|| {
                bytes.extend([0x20, 0x01]);
                PlxMeasurementStatus::from_raw(0x0120)
            });
            let device_sensor_status = (flags & SPOT_FLAG_DEVICE_SENSOR_STATUS != 0).then(|| {
                bytes.extend([0x02, 0x08, 0x00]);
                PlxDeviceSensorStatus::from_raw(0x0802)
            });
            let pai = (flags & SPOT_FLAG_PULSE_AMPLITUDE_INDEX != 0).then(|| {
                bytes.extend([0x0C, 0xF0]);
                v(12, -1)
            });
            let expected = PlxSpotCheck {
                flags,
                reading: pair(v(96, 0), v(63, 0)),
                timestamp,
                measurement_status,
                device_sensor_status,
                pulse_amplitude_index_percent: pai,
                device_clock_not_set: flags & SPOT_FLAG_CLOCK_NOT_SET != 0,
            };
            assert_eq!(
                encode_plx_spot_check(&expected),
                bytes,
                "flags {flags:#04x}"
            );
            check_spot(&bytes, Ok(expected));
        }
    }

    /// All 32 combinations of the defined continuous flags, built by hand from the layout.
    #[test]
    fn continuous_every_flag_combination() {
        for flags in 0_u8..32 {
            let mut bytes = vec![flags, 0x60, 0x00, 0x3F, 0x00];
            let fast = (flags & CONT_FLAG_FAST != 0).then(|| {
                bytes.extend([0x5F, 0x00, 0x41, 0x00]);
                pair(v(95, 0), v(65, 0))
            });
            let slow = (flags & CONT_FLAG_SLOW != 0).then(|| {
                bytes.extend([0x61, 0x00, 0x3E, 0x00]);
                pair(v(97, 0), v(62, 0))
            });
            let measurement_status = (flags & CONT_FLAG_MEASUREMENT_STATUS != 0).then(|| {
                bytes.extend([0x40, 0x00]);
                PlxMeasurementStatus::from_raw(0x0040)
            });
            let device_sensor_status = (flags & CONT_FLAG_DEVICE_SENSOR_STATUS != 0).then(|| {
                bytes.extend([0x10, 0x20, 0x00]);
                PlxDeviceSensorStatus::from_raw(0x2010)
            });
            let pai = (flags & CONT_FLAG_PULSE_AMPLITUDE_INDEX != 0).then(|| {
                bytes.extend([0xFF, 0x07]);
                Medfloat::NaN
            });
            let expected = PlxContinuous {
                flags,
                normal: pair(v(96, 0), v(63, 0)),
                fast,
                slow,
                measurement_status,
                device_sensor_status,
                pulse_amplitude_index_percent: pai,
            };
            assert_eq!(
                encode_plx_continuous(&expected),
                bytes,
                "flags {flags:#04x}"
            );
            check_cont(&bytes, Ok(expected));
        }
    }

    fn arb_pair() -> impl Strategy<Value = Spo2Pr> {
        (arb_sfloat(), arb_sfloat()).prop_map(|(s, p)| pair(s, p))
    }

    fn arb_spot_check() -> impl Strategy<Value = PlxSpotCheck> {
        (
            0_u8..32,
            arb_pair(),
            arb_date_time(),
            any::<u16>(),
            0_u32..1 << 24,
            arb_sfloat(),
        )
            .prop_map(|(flags, reading, stamp, ms, ds, pai)| PlxSpotCheck {
                flags,
                reading,
                timestamp: (flags & SPOT_FLAG_TIMESTAMP != 0).then_some(stamp),
                measurement_status: (flags & SPOT_FLAG_MEASUREMENT_STATUS != 0)
                    .then(|| PlxMeasurementStatus::from_raw(ms)),
                device_sensor_status: (flags & SPOT_FLAG_DEVICE_SENSOR_STATUS != 0)
                    .then(|| PlxDeviceSensorStatus::from_raw(ds)),
                pulse_amplitude_index_percent: (flags & SPOT_FLAG_PULSE_AMPLITUDE_INDEX != 0)
                    .then_some(pai),
                device_clock_not_set: flags & SPOT_FLAG_CLOCK_NOT_SET != 0,
            })
    }

    fn arb_continuous() -> impl Strategy<Value = PlxContinuous> {
        (
            0_u8..32,
            [arb_pair(), arb_pair(), arb_pair()],
            any::<u16>(),
            0_u32..1 << 24,
            arb_sfloat(),
        )
            .prop_map(|(flags, [normal, fast, slow], ms, ds, pai)| PlxContinuous {
                flags,
                normal,
                fast: (flags & CONT_FLAG_FAST != 0).then_some(fast),
                slow: (flags & CONT_FLAG_SLOW != 0).then_some(slow),
                measurement_status: (flags & CONT_FLAG_MEASUREMENT_STATUS != 0)
                    .then(|| PlxMeasurementStatus::from_raw(ms)),
                device_sensor_status: (flags & CONT_FLAG_DEVICE_SENSOR_STATUS != 0)
                    .then(|| PlxDeviceSensorStatus::from_raw(ds)),
                pulse_amplitude_index_percent: (flags & CONT_FLAG_PULSE_AMPLITUDE_INDEX != 0)
                    .then_some(pai),
            })
    }

    proptest! {
        #[test]
        fn spot_check_round_trip(value in arb_spot_check()) {
            prop_assert_eq!(decode_plx_spot_check(&encode_plx_spot_check(&value)), Ok(value));
        }

        #[test]
        fn continuous_round_trip(value in arb_continuous()) {
            prop_assert_eq!(decode_plx_continuous(&encode_plx_continuous(&value)), Ok(value));
        }
    }
}
