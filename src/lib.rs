//! The root package's library: test-support code shared by the end-to-end tests, the benches
//! and the `vigil` launcher. Not part of any appliance or the cloud; nothing here ships.
//!
//! - [`ble_rig`]: a private D-Bus and a simulated BlueZ, for the Bluetooth tests and
//!   `vigil demo --ble`.
//! - [`relay`]: a fault-injecting UDP relay to put between appliances and the cloud.
//! - [`reliability`]: the rows the scenario tests report and the table made of them.

pub mod ble_rig;
pub mod relay;
pub mod reliability;
