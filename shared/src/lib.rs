//! vigil-shared: Vigil's domain model, document schema, vitals chunk codec, advisory rules and
//! (later) the sync wire protocol.
//!
//! This crate does no I/O: no files, no sockets, no clocks, no tokio. Functions and state
//! machines here take `now` and bytes and return values, bytes and deadlines; the appliance
//! (`vigil-edge`) and the aggregator (`vigil-cloud`) own the I/O around them.

pub mod advisory;
pub mod audit;
pub mod care;
pub mod chunk;
pub mod clinical;
pub mod doc;
#[cfg(any(test, feature = "test-support"))]
pub mod fixtures;
pub mod fleet;
pub mod ids;
pub mod ledger;
pub mod log_doc;
pub mod sync;
pub mod vitals;
pub mod wire;
pub mod zone;
