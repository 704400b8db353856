//! GATT decoders: characteristic values from bedside monitors, as bytes in, typed
//! measurements out. Pure functions; no Bluetooth, no clock, no I/O.
//!
//! - [`medfloat`]: IEEE-11073 SFLOAT/FLOAT with their special values as explicit states.
//! - [`heart_rate`]: Heart Rate Measurement 0x2A37.
//! - [`blood_pressure`]: Blood Pressure Measurement 0x2A35 and Intermediate Cuff Pressure 0x2A36.
//! - [`plx`]: PLX Spot-check 0x2A5E and Continuous 0x2A5F, status bits by name.
//! - [`temperature`]: Temperature Measurement 0x2A1C.
//! - [`polar_pmd`]: ECG frames from Polar's PMD data characteristic.
//! - [`samples`]: the decoded values as Vigil samples ([`to_samples`]).
//!
//! The BLE collector (btleplug) calls [`decode`] with the bytes of each notification; the
//! `vigil-edge decode` command does the same for a hex string.
//!
//! # Hostile input
//! Bytes from a monitor are untrusted. Every decoder returns a [`GattError`] for a value it
//! cannot read (which field, at which byte) and never panics; property tests feed every decoder
//! arbitrary bytes. Rules applied throughout:
//! - A value longer than [`MAX_PAYLOAD_LEN`] is refused before it is read.
//! - A field the flags declare but the value lacks is [`GattError::Truncated`]; a field that
//!   runs "to the end" (RR intervals, ECG samples) must hold at least one whole item.
//! - Reserved (RFU) flag bits are ignored, not refused. The SIG requires senders to clear them
//!   but receivers to ignore them so that old receivers keep working with newer senders; only
//!   the raw `flags` byte in each decoded value shows them. Refusing them would drop a whole
//!   monitor's data for a bit that changes nothing we read.
//! - Bytes left over after the last field are [`GattError::TrailingBytes`], unless a reserved
//!   flag bit is set: then they may be a field a later revision defines (fields are only ever
//!   appended), and everything before them was read correctly. Without such a bit, the sender
//!   and this decoder disagree about the layout and nothing in the value can be trusted.
//! - Reserved bits inside status fields, reserved SFLOAT/FLOAT patterns, and out-of-range date
//!   and time fields are kept as sent (raw fields, [`Medfloat::Reserved`]) rather than refused.

pub mod blood_pressure;
pub mod date_time;
pub mod encode;
pub mod heart_rate;
pub mod medfloat;
pub mod plx;
pub mod polar_pmd;
mod reader;
pub mod samples;
pub mod temperature;

#[cfg(test)]
pub(crate) mod tests;

use serde::Serialize;

pub use blood_pressure::{
    BloodPressure, BpMeasurementStatus, IntermediateCuffPressure, PressureUnit, PulseRateRange,
    decode_blood_pressure, decode_intermediate_cuff_pressure,
};
pub use date_time::DateTime;
pub use heart_rate::{HeartRate, SensorContact, decode_heart_rate};
pub use medfloat::Medfloat;
pub use plx::{
    PlxContinuous, PlxDeviceSensorStatus, PlxMeasurementStatus, PlxSpotCheck, Spo2Pr,
    decode_plx_continuous, decode_plx_spot_check,
};
pub use polar_pmd::{PolarEcgFrame, decode_polar_pmd};
pub use samples::to_samples;
pub use temperature::{
    TemperatureMeasurement, TemperatureType, TemperatureUnit, decode_temperature,
};

/// The longest value any decoder accepts: 512 bytes, the largest attribute value the Bluetooth
/// Core specification allows (Vol 3, Part F, 3.2.9). Anything longer did not come from a
/// conforming GATT server. It also bounds the RR intervals (≤ 255) and ECG samples (≤ 167) one
/// value can carry.
pub const MAX_PAYLOAD_LEN: usize = 512;

/// Polar's PMD measurement data characteristic (notify).
pub const POLAR_PMD_DATA_UUID: &str = "fb005c82-02e7-f387-1cad-8acd2d8df0c8";

/// Why a characteristic value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GattError {
    /// The value is longer than any GATT attribute value can be.
    #[error("value is {len} bytes, longer than the {max}-byte limit of an attribute value")]
    TooLong {
        /// The value's length.
        len: usize,
        /// [`MAX_PAYLOAD_LEN`].
        max: usize,
    },
    /// The value ends before a field its flags declare.
    #[error("{field} at byte {offset} needs {needed} bytes but only {available} are left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// The field's size.
        needed: usize,
        /// How many bytes were left.
        available: usize,
    },
    /// The flags and the bytes disagree in a way no truncation explains (e.g. an odd number of
    /// bytes for 16-bit RR intervals).
    #[error("{field} at byte {offset}: {reason}")]
    Inconsistent {
        /// The field concerned.
        field: &'static str,
        /// Where it starts.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Bytes follow the last field the flags declare, and no reserved flag bit explains them.
    #[error("{len} byte(s) left over at byte {offset}, after the last field the flags declare")]
    TrailingBytes {
        /// Where the unexpected bytes start.
        offset: usize,
        /// How many there are.
        len: usize,
    },
    /// A well-formed value of a kind this decoder does not handle (e.g. compressed Polar
    /// frames).
    #[error("unsupported {what}: {value:#04x}")]
    Unsupported {
        /// What is unsupported.
        what: &'static str,
        /// The byte that says so.
        value: u8,
    },
}

/// Refuses values longer than [`MAX_PAYLOAD_LEN`]; every decoder calls it first.
pub(crate) fn check_len(bytes: &[u8]) -> Result<(), GattError> {
    if bytes.len() > MAX_PAYLOAD_LEN {
        Err(GattError::TooLong {
            len: bytes.len(),
            max: MAX_PAYLOAD_LEN,
        })
    } else {
        Ok(())
    }
}

/// A characteristic Vigil knows how to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Characteristic {
    /// Heart Rate Measurement, 0x2A37.
    HeartRate,
    /// Blood Pressure Measurement, 0x2A35.
    BloodPressure,
    /// Intermediate Cuff Pressure, 0x2A36.
    IntermediateCuffPressure,
    /// PLX Spot-check Measurement, 0x2A5E.
    PlxSpotCheck,
    /// PLX Continuous Measurement, 0x2A5F.
    PlxContinuous,
    /// Temperature Measurement, 0x2A1C.
    Temperature,
    /// Polar PMD measurement data, `FB005C82-02E7-F387-1CAD-8ACD2D8DF0C8`.
    PolarPmdData,
}

impl Characteristic {
    /// Every characteristic, in a stable order.
    pub const ALL: [Characteristic; 7] = [
        Characteristic::HeartRate,
        Characteristic::BloodPressure,
        Characteristic::IntermediateCuffPressure,
        Characteristic::PlxSpotCheck,
        Characteristic::PlxContinuous,
        Characteristic::Temperature,
        Characteristic::PolarPmdData,
    ];

    /// The SIG's 16-bit UUID, or `None` for vendor characteristics.
    pub fn uuid16(self) -> Option<u16> {
        match self {
            Characteristic::HeartRate => Some(0x2A37),
            Characteristic::BloodPressure => Some(0x2A35),
            Characteristic::IntermediateCuffPressure => Some(0x2A36),
            Characteristic::PlxSpotCheck => Some(0x2A5E),
            Characteristic::PlxContinuous => Some(0x2A5F),
            Characteristic::Temperature => Some(0x2A1C),
            Characteristic::PolarPmdData => None,
        }
    }

    /// The full 128-bit UUID, lowercase, as btleplug prints it.
    pub fn uuid(self) -> &'static str {
        match self {
            Characteristic::HeartRate => "00002a37-0000-1000-8000-00805f9b34fb",
            Characteristic::BloodPressure => "00002a35-0000-1000-8000-00805f9b34fb",
            Characteristic::IntermediateCuffPressure => "00002a36-0000-1000-8000-00805f9b34fb",
            Characteristic::PlxSpotCheck => "00002a5e-0000-1000-8000-00805f9b34fb",
            Characteristic::PlxContinuous => "00002a5f-0000-1000-8000-00805f9b34fb",
            Characteristic::Temperature => "00002a1c-0000-1000-8000-00805f9b34fb",
            Characteristic::PolarPmdData => POLAR_PMD_DATA_UUID,
        }
    }

    /// A stable snake_case name (`heart_rate`, `plx_continuous`, …).
    pub fn name(self) -> &'static str {
        match self {
            Characteristic::HeartRate => "heart_rate",
            Characteristic::BloodPressure => "blood_pressure",
            Characteristic::IntermediateCuffPressure => "intermediate_cuff_pressure",
            Characteristic::PlxSpotCheck => "plx_spot_check",
            Characteristic::PlxContinuous => "plx_continuous",
            Characteristic::Temperature => "temperature",
            Characteristic::PolarPmdData => "polar_pmd_data",
        }
    }

    /// Parses a UUID in any usual spelling: `2a37`, `0x2A37`, or the full 128-bit form
    /// `00002a37-0000-1000-8000-00805f9b34fb` (any case, surrounding space ignored).
    pub fn from_uuid_str(s: &str) -> Option<Characteristic> {
        let s = s.trim().to_ascii_lowercase();
        let short = s.strip_prefix("0x").unwrap_or(&s);
        if short.len() == 4 {
            let value = u16::from_str_radix(short, 16).ok()?;
            return Characteristic::ALL
                .into_iter()
                .find(|c| c.uuid16() == Some(value));
        }
        Characteristic::ALL.into_iter().find(|c| c.uuid() == s)
    }

    /// Parses a name as [`Characteristic::name`] gives it.
    pub fn from_name(s: &str) -> Option<Characteristic> {
        let s = s.trim();
        Characteristic::ALL.into_iter().find(|c| c.name() == s)
    }

    /// A UUID (see [`Characteristic::from_uuid_str`]) or a name.
    pub fn parse(s: &str) -> Option<Characteristic> {
        Characteristic::from_uuid_str(s).or_else(|| Characteristic::from_name(s))
    }
}

impl std::fmt::Display for Characteristic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.uuid16() {
            Some(short) => write!(f, "{} (0x{short:04X})", self.name()),
            None => write!(f, "{} ({})", self.name(), POLAR_PMD_DATA_UUID),
        }
    }
}

/// A decoded value of any supported characteristic. Serialized with a `characteristic` tag
/// holding [`Characteristic::name`] (the Polar one is tagged `polar_ecg`: it is ECG data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "characteristic", rename_all = "snake_case")]
pub enum Measurement {
    /// From 0x2A37.
    HeartRate(HeartRate),
    /// From 0x2A35.
    BloodPressure(BloodPressure),
    /// From 0x2A36.
    IntermediateCuffPressure(IntermediateCuffPressure),
    /// From 0x2A5E.
    PlxSpotCheck(PlxSpotCheck),
    /// From 0x2A5F.
    PlxContinuous(PlxContinuous),
    /// From 0x2A1C.
    Temperature(TemperatureMeasurement),
    /// From Polar's PMD data characteristic.
    PolarEcg(PolarEcgFrame),
}

impl Measurement {
    /// The characteristic this measurement was decoded from.
    pub fn characteristic(&self) -> Characteristic {
        match self {
            Measurement::HeartRate(_) => Characteristic::HeartRate,
            Measurement::BloodPressure(_) => Characteristic::BloodPressure,
            Measurement::IntermediateCuffPressure(_) => Characteristic::IntermediateCuffPressure,
            Measurement::PlxSpotCheck(_) => Characteristic::PlxSpotCheck,
            Measurement::PlxContinuous(_) => Characteristic::PlxContinuous,
            Measurement::Temperature(_) => Characteristic::Temperature,
            Measurement::PolarEcg(_) => Characteristic::PolarPmdData,
        }
    }
}

/// Decodes a value of characteristic `c`.
pub fn decode(c: Characteristic, bytes: &[u8]) -> Result<Measurement, GattError> {
    Ok(match c {
        Characteristic::HeartRate => Measurement::HeartRate(decode_heart_rate(bytes)?),
        Characteristic::BloodPressure => Measurement::BloodPressure(decode_blood_pressure(bytes)?),
        Characteristic::IntermediateCuffPressure => {
            Measurement::IntermediateCuffPressure(decode_intermediate_cuff_pressure(bytes)?)
        }
        Characteristic::PlxSpotCheck => Measurement::PlxSpotCheck(decode_plx_spot_check(bytes)?),
        Characteristic::PlxContinuous => Measurement::PlxContinuous(decode_plx_continuous(bytes)?),
        Characteristic::Temperature => Measurement::Temperature(decode_temperature(bytes)?),
        Characteristic::PolarPmdData => Measurement::PolarEcg(decode_polar_pmd(bytes)?),
    })
}
