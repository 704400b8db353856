//! vigil-edge: the room appliance. It records every session durably into Automerge documents
//! on its own SQLite file and serves a local JSON API.
//!
//! - [`config`]: the `edge.toml` file, checked strictly.
//! - [`store`]: the SQLite layout (documents, staged chunks, session index).
//! - [`recorder`]: samples and people's actions in, durable documents out; synchronous.
//! - [`reads`]: what the API shows, read from committed data.
//! - [`web`]: the HTTP routes under `/api/v1` and the clinician's room screen (server-rendered
//!   pages under `/screen`).
//! - [`access`], [`audit`], [`throttle`]: credentials, the audit log, wrong-PIN waits.
//! - [`http_server`]: the accept loop serving both, HTTPS off loopback (rustls), with limits.
//! - [`sync`]: the QUIC sync client (mutual TLS, backoff, persisted sync state).
//! - [`app`]: everything started together, and stopped cleanly.
//!
//! Not here: vital-sign sources (`vigil-hardware`), the document schema and codecs
//! (`vigil-shared`).

pub mod access;
pub mod app;
pub mod audit;
pub mod clock;
pub mod config;
pub mod enrol;
pub mod http_server;
pub mod peer;
pub mod reads;
pub mod recorder;
pub mod station;
pub mod store;
pub mod sync;
pub mod throttle;
pub mod web;

/// Sets up logging to stderr: readable lines by default, JSON lines with `json`. The level
/// comes from `RUST_LOG` (default `info`). Standard output is kept for `name: value` lines.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests, the demo) is harmless; keep the first.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
