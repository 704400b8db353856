//! vigil-cloud: Vigil's cloud aggregator as a library, so tests and the demo launcher can drive
//! it without the CLI.
//!
//! - [`pki`]: the private CA (appliance and server certificates, revocation).
//! - [`config`]: the `cloud.toml` file.
//! - [`tls`]: mutual TLS for the QUIC endpoint.
//! - [`sync`]: the sync server (scope checks, validation, durable-before-advertised).
//! - [`store`]: documents and projections in SQLite or PostgreSQL, behind one interface.
//! - [`web`]: the one HTTP listener: the read-only JSON API and the regional manager's
//!   dashboard; [`metrics`]: Prometheus counters; [`sites`]: sites merged with the registry.
//! - [`auth`]: users, roles and scope, sign-in, API tokens, the audit log.
//! - [`fhir`]: FHIR R4 export.
//! - [`app`]: all of it started and stopped together.
//! - `pg_cluster` (tests and benches, feature `test-support`): a private PostgreSQL cluster.

pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod fhir;
pub mod fleet;
pub mod metrics;
#[cfg(any(test, feature = "test-support"))]
pub mod pg_cluster;
pub mod pki;
pub mod sites;
pub mod staff;
pub mod store;
pub mod sync;
pub mod tls;
pub mod web;

/// Sets up logging to stderr: readable by default, JSON lines with `json`; level from
/// `RUST_LOG` (default `info`). Standard output is kept for `name: value` lines.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
