//! Temperature Measurement (0x2A1C, Health Thermometer Service 0x1809).
//!
//! Layout (little-endian): flags u8; temperature as an IEEE-11073 FLOAT in °C, or °F if flags
//! bit 0; a time stamp (Date Time, 7 bytes) if bit 1; a temperature type u8 (the body site,
//! values of the Temperature Type characteristic 0x2A1D) if bit 2. This module decodes;
//! conversion to hundredths of a degree Celsius lives in [`super::samples`].

use serde::Serialize;

use super::date_time::DateTime;
use super::medfloat::Medfloat;
use super::reader::Reader;
use super::{GattError, check_len};

/// Flags bit 0: the value is in degrees Fahrenheit (else Celsius).
pub const TEMP_FLAG_FAHRENHEIT: u8 = 0x01;
/// Flags bit 1: time stamp present.
pub const TEMP_FLAG_TIMESTAMP: u8 = 0x02;
/// Flags bit 2: temperature type present.
pub const TEMP_FLAG_TYPE: u8 = 0x04;
/// Flags bits 3–7: reserved for future use.
pub const TEMP_FLAGS_RESERVED: u8 = 0xF8;

/// The unit of a temperature value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemperatureUnit {
    /// Degrees Celsius.
    Celsius,
    /// Degrees Fahrenheit.
    Fahrenheit,
}

/// Where on the body the temperature was taken (Temperature Type, 0x2A1D).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemperatureType {
    /// 1: armpit.
    Armpit,
    /// 2: body (general).
    Body,
    /// 3: ear (usually ear lobe).
    Ear,
    /// 4: finger.
    Finger,
    /// 5: gastro-intestinal tract.
    GastroIntestinalTract,
    /// 6: mouth.
    Mouth,
    /// 7: rectum.
    Rectum,
    /// 8: toe.
    Toe,
    /// 9: tympanum (ear drum).
    Tympanum,
    /// 0 or 10–255: reserved for future use, kept as sent.
    Reserved(u8),
}

impl TemperatureType {
    /// Maps the SIG's code to a body site.
    pub fn from_code(code: u8) -> TemperatureType {
        match code {
            1 => TemperatureType::Armpit,
            2 => TemperatureType::Body,
            3 => TemperatureType::Ear,
            4 => TemperatureType::Finger,
            5 => TemperatureType::GastroIntestinalTract,
            6 => TemperatureType::Mouth,
            7 => TemperatureType::Rectum,
            8 => TemperatureType::Toe,
            9 => TemperatureType::Tympanum,
            other => TemperatureType::Reserved(other),
        }
    }

    /// The SIG's code for this body site.
    pub fn code(self) -> u8 {
        match self {
            TemperatureType::Armpit => 1,
            TemperatureType::Body => 2,
            TemperatureType::Ear => 3,
            TemperatureType::Finger => 4,
            TemperatureType::GastroIntestinalTract => 5,
            TemperatureType::Mouth => 6,
            TemperatureType::Rectum => 7,
            TemperatureType::Toe => 8,
            TemperatureType::Tympanum => 9,
            TemperatureType::Reserved(code) => code,
        }
    }
}

/// A decoded Temperature Measurement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TemperatureMeasurement {
    /// The flags byte as sent.
    pub flags: u8,
    /// The unit of `value`.
    pub unit: TemperatureUnit,
    /// The temperature.
    pub value: Medfloat,
    /// The device's time stamp, if sent.
    pub timestamp: Option<DateTime>,
    /// The body site, if sent.
    pub temperature_type: Option<TemperatureType>,
}

/// Decodes a Temperature Measurement value.
pub fn decode_temperature(bytes: &[u8]) -> Result<TemperatureMeasurement, GattError> {
    check_len(bytes)?;
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    let value = r.float("temperature")?;
    let timestamp = if flags & TEMP_FLAG_TIMESTAMP != 0 {
        Some(r.date_time("time stamp")?)
    } else {
        None
    };
    let temperature_type = if flags & TEMP_FLAG_TYPE != 0 {
        Some(TemperatureType::from_code(r.u8("temperature type")?))
    } else {
        None
    };
    r.finish(flags & TEMP_FLAGS_RESERVED)?;
    Ok(TemperatureMeasurement {
        flags,
        unit: if flags & TEMP_FLAG_FAHRENHEIT != 0 {
            TemperatureUnit::Fahrenheit
        } else {
            TemperatureUnit::Celsius
        },
        value,
        timestamp,
        temperature_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::tests::{arb_date_time, arb_float, encode_temperature};
    use proptest::prelude::*;

    fn check(bytes: &[u8], expected: Result<TemperatureMeasurement, GattError>) {
        assert_eq!(decode_temperature(bytes), expected, "payload {bytes:02x?}");
    }

    fn v(mantissa: i32, exponent: i8) -> Medfloat {
        Medfloat::Value { mantissa, exponent }
    }

    const STAMP: DateTime = DateTime {
        year: 2025,
        month: 1,
        day: 2,
        hours: 3,
        minutes: 4,
        seconds: 5,
    };

    #[test]
    fn known_vectors() {
        // 36.4 °C.
        check(
            &[0x00, 0x6C, 0x01, 0x00, 0xFF],
            Ok(TemperatureMeasurement {
                flags: 0x00,
                unit: TemperatureUnit::Celsius,
                value: v(364, -1),
                timestamp: None,
                temperature_type: None,
            }),
        );
        // 98.6 °F, stamped, in the mouth.
        check(
            &[
                0x07, 0xDA, 0x03, 0x00, 0xFF, 0xE9, 0x07, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
            ],
            Ok(TemperatureMeasurement {
                flags: 0x07,
                unit: TemperatureUnit::Fahrenheit,
                value: v(986, -1),
                timestamp: Some(STAMP),
                temperature_type: Some(TemperatureType::Mouth),
            }),
        );
        // FLOAT NaN: the thermometer has no reading.
        check(
            &[0x00, 0xFF, 0xFF, 0x7F, 0x00],
            Ok(TemperatureMeasurement {
                flags: 0x00,
                unit: TemperatureUnit::Celsius,
                value: Medfloat::NaN,
                timestamp: None,
                temperature_type: None,
            }),
        );
        check(
            &[0x04, 0x6C, 0x01, 0x00, 0xFF],
            Err(GattError::Truncated {
                field: "temperature type",
                offset: 5,
                needed: 1,
                available: 0,
            }),
        );
        check(
            &[0x00, 0x6C, 0x01, 0x00],
            Err(GattError::Truncated {
                field: "temperature",
                offset: 1,
                needed: 4,
                available: 3,
            }),
        );
    }

    #[test]
    fn temperature_types() {
        for (code, expected) in [
            (0, TemperatureType::Reserved(0)),
            (1, TemperatureType::Armpit),
            (2, TemperatureType::Body),
            (3, TemperatureType::Ear),
            (4, TemperatureType::Finger),
            (5, TemperatureType::GastroIntestinalTract),
            (6, TemperatureType::Mouth),
            (7, TemperatureType::Rectum),
            (8, TemperatureType::Toe),
            (9, TemperatureType::Tympanum),
            (10, TemperatureType::Reserved(10)),
            (255, TemperatureType::Reserved(255)),
        ] {
            assert_eq!(TemperatureType::from_code(code), expected);
            assert_eq!(expected.code(), code);
        }
    }

    /// Units × time stamp × type: all 8 combinations, built from the layout by hand.
    #[test]
    fn every_flag_combination() {
        for flags in 0_u8..8 {
            let mut bytes = vec![flags, 0x6C, 0x01, 0x00, 0xFF];
            let timestamp = (flags & TEMP_FLAG_TIMESTAMP != 0).then(|| {
                bytes.extend(STAMP.to_bytes());
                STAMP
            });
            let temperature_type = (flags & TEMP_FLAG_TYPE != 0).then(|| {
                bytes.push(0x09);
                TemperatureType::Tympanum
            });
            let expected = TemperatureMeasurement {
                flags,
                unit: if flags & TEMP_FLAG_FAHRENHEIT != 0 {
                    TemperatureUnit::Fahrenheit
                } else {
                    TemperatureUnit::Celsius
                },
                value: v(364, -1),
                timestamp,
                temperature_type,
            };
            assert_eq!(encode_temperature(&expected), bytes, "flags {flags:#04x}");
            check(&bytes, Ok(expected));
        }
    }

    fn arb_temperature() -> impl Strategy<Value = TemperatureMeasurement> {
        (0_u8..8, arb_float(), arb_date_time(), any::<u8>()).prop_map(
            |(flags, value, stamp, code)| TemperatureMeasurement {
                flags,
                unit: if flags & TEMP_FLAG_FAHRENHEIT != 0 {
                    TemperatureUnit::Fahrenheit
                } else {
                    TemperatureUnit::Celsius
                },
                value,
                timestamp: (flags & TEMP_FLAG_TIMESTAMP != 0).then_some(stamp),
                temperature_type: (flags & TEMP_FLAG_TYPE != 0)
                    .then(|| TemperatureType::from_code(code)),
            },
        )
    }

    proptest! {
        #[test]
        fn round_trip(value in arb_temperature()) {
            prop_assert_eq!(decode_temperature(&encode_temperature(&value)), Ok(value));
        }
    }
}
