//! vigil-cloud: Vigil's cloud aggregator as a library, so tests and the demo launcher can drive
//! it without the CLI.
//!
//! For now this is the private CA ([`pki`]); the sync server, storage and API come later.

pub mod pki;
