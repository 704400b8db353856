//! ECG frames from Polar's PMD (Polar Measurement Data) service, measurement data
//! characteristic `FB005C82-02E7-F387-1CAD-8ACD2D8DF0C8`. There is no SIG profile for ECG.
//!
//! A frame is: measurement type u8 (low 6 bits; 0 = ECG), the sensor's time stamp of the last
//! sample as u64 nanoseconds since 2000-01-01T00:00:00 on the sensor's clock, a frame type u8
//! (bit 7 set = delta-compressed; low 7 bits = the frame type), then the samples. Only
//! uncompressed type-0 ECG frames (3-byte signed little-endian µV per sample, as the H10 sends
//! at 130 Hz) are decoded; other measurement types and frame types are
//! [`GattError::Unsupported`], not guessed at. The layout follows Polar's BLE SDK
//! (`PmdDataFrame.kt`, `EcgData.kt`, `PmdMeasurementType.kt` in polarofficial/polar-ble-sdk).
//! Starting and stopping the stream (the control point) is the collector's business.

use serde::Serialize;

use super::reader::Reader;
use super::{GattError, check_len};

/// Measurement type code of ECG.
pub const PMD_MEASUREMENT_ECG: u8 = 0;
/// Bits of the measurement type byte that hold the type (Polar's SDK masks the rest off).
pub const PMD_MEASUREMENT_TYPE_MASK: u8 = 0x3F;
/// Frame type byte bit 7: the samples are delta-compressed.
pub const PMD_FRAME_COMPRESSED: u8 = 0x80;
/// Frame type bits 0–6.
pub const PMD_FRAME_TYPE_MASK: u8 = 0x7F;
/// Frame type 0: raw samples.
pub const PMD_FRAME_TYPE_0: u8 = 0;
/// Bytes per sample in an uncompressed type-0 ECG frame.
pub const ECG_TYPE_0_SAMPLE_LEN: usize = 3;
/// Bytes before the first sample: measurement type, time stamp, frame type.
pub const PMD_HEADER_LEN: usize = 10;

/// A decoded type-0 ECG frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PolarEcgFrame {
    /// The sensor's time of the frame's last sample, nanoseconds since 2000-01-01 on the
    /// sensor's own clock (not the appliance's).
    pub sensor_timestamp_ns: u64,
    /// ECG lead voltage, microvolts, oldest first; never empty.
    pub samples_uv: Vec<i32>,
}

/// Decodes a PMD measurement data frame holding uncompressed ECG.
pub fn decode_polar_pmd(bytes: &[u8]) -> Result<PolarEcgFrame, GattError> {
    check_len(bytes)?;
    let mut r = Reader::new(bytes);
    let measurement_type = r.u8("measurement type")?;
    if measurement_type & PMD_MEASUREMENT_TYPE_MASK != PMD_MEASUREMENT_ECG {
        return Err(GattError::Unsupported {
            what: "polar pmd measurement type (only ecg, 0x00, is decoded)",
            value: measurement_type,
        });
    }
    let sensor_timestamp_ns = r.u64("time stamp")?;
    let frame_type = r.u8("frame type")?;
    if frame_type & PMD_FRAME_COMPRESSED != 0 {
        return Err(GattError::Unsupported {
            what: "polar pmd delta-compressed ecg frame type",
            value: frame_type,
        });
    }
    if frame_type & PMD_FRAME_TYPE_MASK != PMD_FRAME_TYPE_0 {
        return Err(GattError::Unsupported {
            what: "polar pmd ecg frame type (only type 0 is decoded)",
            value: frame_type,
        });
    }
    if !r.remaining().is_multiple_of(ECG_TYPE_0_SAMPLE_LEN) {
        return Err(GattError::Inconsistent {
            field: "ecg samples",
            offset: r.offset(),
            reason: "the bytes left are not a whole number of 3-byte samples",
        });
    }
    let mut samples_uv = Vec::with_capacity(r.remaining() / ECG_TYPE_0_SAMPLE_LEN);
    // A data frame with no samples is not something a sensor sends; treat it as cut short.
    samples_uv.push(r.i24("ecg sample")?);
    while r.remaining() > 0 {
        samples_uv.push(r.i24("ecg sample")?);
    }
    Ok(PolarEcgFrame {
        sensor_timestamp_ns,
        samples_uv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::tests::encode_polar_ecg;
    use proptest::prelude::*;

    fn check(bytes: &[u8], expected: Result<PolarEcgFrame, GattError>) {
        assert_eq!(decode_polar_pmd(bytes), expected, "payload {bytes:02x?}");
    }

    const HEADER: [u8; PMD_HEADER_LEN] =
        [0x00, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x00];

    fn with_header(samples: &[u8]) -> Vec<u8> {
        let mut v = HEADER.to_vec();
        v.extend_from_slice(samples);
        v
    }

    #[test]
    fn known_vectors() {
        check(
            &with_header(&[
                0x64, 0x00, 0x00, 0x9C, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x00, 0x80,
            ]),
            Ok(PolarEcgFrame {
                sensor_timestamp_ns: 0x0102_0304_0506_0708,
                samples_uv: vec![100, -100, 8_388_607, -8_388_608],
            }),
        );
        // Upper bits of the measurement type byte are ignored, as Polar's SDK does.
        let mut flagged = with_header(&[0x01, 0x00, 0x00]);
        if let Some(first) = flagged.first_mut() {
            *first = 0x40;
        }
        check(
            &flagged,
            Ok(PolarEcgFrame {
                sensor_timestamp_ns: 0x0102_0304_0506_0708,
                samples_uv: vec![1],
            }),
        );
    }

    #[test]
    fn other_measurements_and_frames_are_unsupported() {
        let mut acc = with_header(&[0; 6]);
        if let Some(first) = acc.first_mut() {
            *first = 0x02;
        }
        check(
            &acc,
            Err(GattError::Unsupported {
                what: "polar pmd measurement type (only ecg, 0x00, is decoded)",
                value: 0x02,
            }),
        );
        for (frame_type, what) in [
            (0x80, "polar pmd delta-compressed ecg frame type"),
            (0x81, "polar pmd delta-compressed ecg frame type"),
            (0x01, "polar pmd ecg frame type (only type 0 is decoded)"),
            (0x03, "polar pmd ecg frame type (only type 0 is decoded)"),
        ] {
            let mut frame = with_header(&[0; 6]);
            if let Some(b) = frame.get_mut(PMD_HEADER_LEN - 1) {
                *b = frame_type;
            }
            check(
                &frame,
                Err(GattError::Unsupported {
                    what,
                    value: frame_type,
                }),
            );
        }
    }

    #[test]
    fn malformed_frames() {
        check(
            &HEADER,
            Err(GattError::Truncated {
                field: "ecg sample",
                offset: 10,
                needed: 3,
                available: 0,
            }),
        );
        check(
            &with_header(&[0x01, 0x00, 0x00, 0x02]),
            Err(GattError::Inconsistent {
                field: "ecg samples",
                offset: 10,
                reason: "the bytes left are not a whole number of 3-byte samples",
            }),
        );
        check(
            &[0x00, 0x01, 0x02],
            Err(GattError::Truncated {
                field: "time stamp",
                offset: 1,
                needed: 8,
                available: 2,
            }),
        );
    }

    proptest! {
        #[test]
        fn round_trip(
            ts in any::<u64>(),
            samples in prop::collection::vec(-8_388_608_i32..=8_388_607, 1..=167),
        ) {
            let frame = PolarEcgFrame { sensor_timestamp_ns: ts, samples_uv: samples };
            prop_assert_eq!(decode_polar_pmd(&encode_polar_ecg(&frame)), Ok(frame));
        }
    }
}
