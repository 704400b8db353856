//! vigil-hardware: where vital signs come from.
//!
//! - [`source`]: the [`VitalsSource`] trait the appliance's recorder polls, and the events it
//!   yields. Sources take `now` from the caller; they own no clock.
//! - [`gatt`]: pure decoders for the GATT characteristics of bedside monitors (heart rate,
//!   blood pressure, pulse oximetry, temperature, Polar ECG) and their mapping to samples.
//! - [`sim`]: the deterministic physiology simulator ([`sim::VirtualPatient`]) and the
//!   [`sim::SimulatedSource`] that serves it.
//!
//! - [`ble`]: the services and characteristics each kind of monitor offers; with the `ble`
//!   feature (the default), the collector that reads the room's monitors through BlueZ
//!   (btleplug) and implements [`VitalsSource`], and the simulated monitors (bluer) that stand
//!   in for them in tests and demos.
//!
//! Built with `--no-default-features`, the crate is the pure part only (decoders, encoders,
//! simulator) and links no libdbus; CI checks that. This crate is the only one that talks to
//! BlueZ.

pub mod ble;
pub mod gatt;
pub mod sim;
pub mod source;

pub use sim::{
    EcgRate, PatientParams, Scenario, SimError, SimulatedSource, VirtualPatient, session_seed,
};
pub use source::{DeviceStatus, SourceEvent, VitalsSource};
