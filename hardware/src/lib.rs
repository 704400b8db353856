//! vigil-hardware: where vital signs come from.
//!
//! - [`source`]: the [`VitalsSource`] trait the appliance's recorder polls, and the events it
//!   yields. Sources take `now` from the caller; they own no clock.
//! - [`sim`]: the deterministic physiology simulator ([`sim::VirtualPatient`]) and the
//!   [`sim::SimulatedSource`] that serves it.
//!
//! Not here yet: the GATT decoders and the BLE collector (btleplug), which will implement the
//! same trait. This crate is the only one that will talk to BlueZ.

pub mod sim;
pub mod source;

pub use sim::{
    EcgRate, PatientParams, Scenario, SimError, SimulatedSource, VirtualPatient, session_seed,
};
pub use source::{DeviceStatus, SourceEvent, VitalsSource};
