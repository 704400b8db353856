//! vigil-hardware: where vital signs come from.
//!
//! - [`source`]: the [`VitalsSource`] trait the appliance's recorder polls, and the events it
//!   yields. Sources take `now` from the caller; they own no clock.
//! - [`gatt`]: pure decoders for the GATT characteristics of bedside monitors (heart rate,
//!   blood pressure, pulse oximetry, temperature, Polar ECG) and their mapping to samples.
//! - [`sim`]: the deterministic physiology simulator ([`sim::VirtualPatient`]) and the
//!   [`sim::SimulatedSource`] that serves it.
//!
//! - [`gatt`]: pure decoders of the Bluetooth SIG health characteristics and Polar's PMD ECG
//!   frames; malformed bytes are an error value, never a panic.
//!
//! Not here yet: the BLE collector (btleplug), which will implement the same trait. This crate
//! is the only one that will talk to BlueZ.

pub mod ble;
pub mod gatt;
pub mod sim;
pub mod source;

pub use sim::{
    EcgRate, PatientParams, Scenario, SimError, SimulatedSource, VirtualPatient, session_seed,
};
pub use source::{DeviceStatus, SourceEvent, VitalsSource};
