//! Bluetooth Low Energy: the collector that reads the room's monitors ([`collector`]) and the
//! simulated monitors that stand in for them in tests and demos ([`simulated`]).
//!
//! Both sides speak BlueZ over D-Bus: the collector through btleplug (central role), the
//! simulated monitors through bluer (peripheral role: a GATT application and an
//! advertisement). Neither knows whether the BlueZ behind the bus drives a radio or is a
//! simulation; that is the point.
//!
//! This module holds what both sides agree on: the services and characteristics of each kind
//! of monitor, Polar's PMD commands, and how a monitor in a room's configuration is named.
//! That part is pure; the collector and the simulated monitors are built with the `ble`
//! feature (the default), which links libdbus.

#[cfg(feature = "ble")]
pub mod collector;
#[cfg(feature = "ble")]
pub mod simulated;

use serde::Deserialize;
use uuid::Uuid;
use vigil_shared::vitals::Channel;

use crate::gatt::Characteristic;

/// A 16-bit SIG UUID in the Bluetooth base UUID.
pub const fn sig_uuid(short: u16) -> Uuid {
    Uuid::from_u128(0x0000_0000_0000_1000_8000_0080_5f9b_34fb | ((short as u128) << 96))
}

/// Heart Rate service.
pub const HEART_RATE_SERVICE: Uuid = sig_uuid(0x180D);
/// Blood Pressure service.
pub const BLOOD_PRESSURE_SERVICE: Uuid = sig_uuid(0x1810);
/// Pulse Oximeter service.
pub const PULSE_OXIMETER_SERVICE: Uuid = sig_uuid(0x1822);
/// Health Thermometer service.
pub const HEALTH_THERMOMETER_SERVICE: Uuid = sig_uuid(0x1809);
/// Polar Measurement Data service.
pub const POLAR_PMD_SERVICE: Uuid = Uuid::from_u128(0xfb005c80_02e7_f387_1cad_8acd2d8df0c8);
/// Polar PMD control point (write; responses by indication).
pub const POLAR_PMD_CONTROL: Uuid = Uuid::from_u128(0xfb005c81_02e7_f387_1cad_8acd2d8df0c8);
/// Polar PMD measurement data (notify).
pub const POLAR_PMD_DATA: Uuid = Uuid::from_u128(0xfb005c82_02e7_f387_1cad_8acd2d8df0c8);

/// PMD control point: start ECG at 130 Hz, 14-bit resolution.
pub const PMD_START_ECG: [u8; 10] = [0x02, 0x00, 0x00, 0x01, 0x82, 0x00, 0x01, 0x01, 0x0E, 0x00];
/// PMD control point: stop ECG.
pub const PMD_STOP_ECG: [u8; 2] = [0x03, 0x00];
/// PMD control point response to a start: response code 0xF0, op 0x02, type ECG, success.
pub const PMD_START_OK: [u8; 5] = [0xF0, 0x02, 0x00, 0x00, 0x00];

/// What a monitor measures: each is one GATT service and the channels it fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measures {
    /// Heart Rate service 0x180D: heart rate and RR intervals.
    HeartRate,
    /// Polar PMD service: ECG at 130 Hz.
    Ecg,
    /// Pulse Oximeter service 0x1822: SpO2 and pulse rate.
    PulseOximetry,
    /// Blood Pressure service 0x1810: cuff readings (indications).
    BloodPressure,
    /// Health Thermometer service 0x1809: body temperature (indications).
    Temperature,
}

impl Measures {
    /// Every kind, in a stable order.
    pub const ALL: [Measures; 5] = [
        Measures::HeartRate,
        Measures::Ecg,
        Measures::PulseOximetry,
        Measures::BloodPressure,
        Measures::Temperature,
    ];

    /// The service a monitor of this kind exposes.
    pub fn service(self) -> Uuid {
        match self {
            Measures::HeartRate => HEART_RATE_SERVICE,
            Measures::Ecg => POLAR_PMD_SERVICE,
            Measures::PulseOximetry => PULSE_OXIMETER_SERVICE,
            Measures::BloodPressure => BLOOD_PRESSURE_SERVICE,
            Measures::Temperature => HEALTH_THERMOMETER_SERVICE,
        }
    }

    /// The characteristics that carry this kind's measurements; a monitor must offer at least
    /// one of them, or the connection counts as failed.
    pub fn data_characteristics(self) -> &'static [Characteristic] {
        match self {
            Measures::HeartRate => &[Characteristic::HeartRate],
            Measures::Ecg => &[Characteristic::PolarPmdData],
            Measures::PulseOximetry => {
                &[Characteristic::PlxContinuous, Characteristic::PlxSpotCheck]
            }
            Measures::BloodPressure => &[Characteristic::BloodPressure],
            Measures::Temperature => &[Characteristic::Temperature],
        }
    }

    /// Characteristics subscribed to when present but not required (the cuff's pressure
    /// while it inflates).
    pub fn optional_characteristics(self) -> &'static [Characteristic] {
        match self {
            Measures::BloodPressure => &[Characteristic::IntermediateCuffPressure],
            _ => &[],
        }
    }

    /// The channels this kind fills.
    pub fn channels(self) -> &'static [Channel] {
        match self {
            Measures::HeartRate => &[Channel::Hr, Channel::Rr],
            Measures::Ecg => &[Channel::Ecg],
            Measures::PulseOximetry => &[Channel::Spo2, Channel::Pulse],
            Measures::BloodPressure => &[Channel::Nibp],
            Measures::Temperature => &[Channel::Temp],
        }
    }

    /// How long a healthy monitor of this kind may stay silent: twice its usual gap, or more.
    /// Cuffs and thermometers speak once per reading (every few minutes), the others several
    /// times a second.
    pub fn default_silence_s(self) -> u32 {
        match self {
            Measures::HeartRate | Measures::Ecg | Measures::PulseOximetry => 15,
            Measures::BloodPressure | Measures::Temperature => 900,
        }
    }

    /// A service UUID's kind, if it is one Vigil reads.
    pub fn from_service(uuid: &Uuid) -> Option<Measures> {
        Measures::ALL.into_iter().find(|m| m.service() == *uuid)
    }

    /// A human name for listings.
    pub fn label(self) -> &'static str {
        match self {
            Measures::HeartRate => "heart rate",
            Measures::Ecg => "ECG (Polar PMD)",
            Measures::PulseOximetry => "pulse oximetry",
            Measures::BloodPressure => "blood pressure",
            Measures::Temperature => "temperature",
        }
    }
}

/// Microseconds since the Unix epoch on the system clock (the simulated monitors' time base;
/// the collector stamps values with the appliance's clock instead).
pub fn wall_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The characteristic a UUID names, if Vigil decodes it.
pub fn characteristic_for(uuid: &Uuid) -> Option<Characteristic> {
    Characteristic::from_uuid_str(&uuid.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_uuids_expand_in_the_base_uuid() {
        assert_eq!(
            HEART_RATE_SERVICE.to_string(),
            "0000180d-0000-1000-8000-00805f9b34fb"
        );
        assert_eq!(
            characteristic_for(&sig_uuid(0x2A37)),
            Some(Characteristic::HeartRate)
        );
        assert_eq!(
            characteristic_for(&POLAR_PMD_DATA),
            Some(Characteristic::PolarPmdData)
        );
        assert_eq!(characteristic_for(&sig_uuid(0x2A00)), None);
    }

    #[test]
    fn every_kind_names_its_data_and_channels() {
        for m in Measures::ALL {
            assert_eq!(Measures::from_service(&m.service()), Some(m));
            assert!(!m.data_characteristics().is_empty());
            assert!(!m.channels().is_empty());
            for c in m.data_characteristics() {
                assert!(characteristic_for(&Uuid::parse_str(c.uuid()).unwrap()).is_some());
            }
        }
    }
}
