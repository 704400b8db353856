//! The appliance's web layer on its one HTTP server: the JSON API under `/api/v1` and
//! `/metrics` ([`api`]), and the clinician's room screen under `/screen` ([`screen`]).
//!
//! Both stand on the same lower layers: credentials and the `Host` check
//! ([`crate::access`]), the audit log ([`crate::audit`]), wrong-PIN waits
//! ([`crate::throttle`]), reads of committed data ([`crate::reads`]) and the recorder's
//! handle ([`crate::recorder::Handle`]) for every write. Nothing outside this module imports
//! it but the code that starts the server (`app.rs`).

pub mod api;
pub mod screen;

use axum::Router;

pub use api::{ApiState, Security, Status};

/// The API and the room screen on one router, behind the `Host` check.
pub fn router(state: ApiState) -> Router {
    let security = state.security.clone();
    api::router(state.clone())
        .merge(screen::router(state))
        .layer(axum::middleware::from_fn_with_state(
            security,
            api::check_host,
        ))
}
