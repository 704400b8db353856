//! The root package's library: test-support code shared by the end-to-end tests, the benches
//! and the `vigil` launcher. Not part of any appliance or the cloud; nothing here ships.
//!
//! - [`relay`]: a fault-injecting UDP relay to put between appliances and the cloud.
//! - [`reliability`]: the rows the scenario tests report and the table made of them.

pub mod relay;
pub mod reliability;
