//! The cloud's one HTTP listener: the read-only JSON API under `/api/v1` ([`api`]), the
//! regional manager's dashboard ([`dashboard`]) and `GET /metrics`.
//!
//! Layers, one way: handlers in [`api`] and [`dashboard`] stand on [`state`] (the shared state,
//! bounded store reads, audit), [`error`] (JSON errors for programs, HTML pages for people) and
//! [`extract`] (client address, viewer, CSRF-checked forms, admin); those stand on
//! `crate::auth` (policy) and `crate::store` (storage). Nothing outside this module imports it
//! but the binary that serves it (`app.rs`).
//!
//! Around every route but `/metrics`: the `Host` header must be a loopback name or address,
//! the address the request arrived on, or one of `[http] hosts` (DNS rebinding gets 421;
//! [`net`]). Every response carries `X-Content-Type-Options: nosniff` and, unless it set its
//! own, `Cache-Control: no-store`. `/metrics` carries counts only, never a site, room or
//! patient, and answers whatever name a scraper uses.

pub mod api;
pub mod dashboard;
mod error;
mod extract;
mod net;
mod state;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use error::{ApiError, PageError};
pub use net::{ClientConn, client_address, host_allowed};
pub use state::{ApiState, MAX_CONCURRENT_READS};

use state::Shared;

/// The API, the dashboard, `/metrics` and JSON fallbacks, on one router.
pub fn router(state: ApiState) -> Router {
    if state.token.is_empty() {
        tracing::warn!("the api token is empty: only users' own tokens will be accepted");
    }
    let shared = Arc::new(Shared::new(state));
    let api = api::routes(shared.clone());
    Router::new()
        .nest("/api/v1", api)
        .merge(dashboard::routes(shared.clone()))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            net::check_host,
        ))
        // Added after the Host check: scrapers reach it by whatever name their service
        // discovery uses, and it carries no patient data.
        .route("/metrics", get(metrics).fallback(api::method_not_allowed))
        .layer(middleware::from_fn(baseline_headers))
        .with_state(shared)
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    // The fleet's gauges come from the database; without it the sync counters still answer.
    let store = s.state.store.clone();
    let fleet = tokio::task::spawn_blocking(move || store.appliances())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|rows| {
            let now = crate::clock::now_us();
            crate::fleet::gauges(&crate::fleet::views(&rows, now), now)
        });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.state.metrics.render_with(fleet.as_ref()),
    )
}

/// `nosniff` on every response, and `no-store` on every one that did not choose its own
/// caching (only the stylesheet does): answers hold patient data.
async fn baseline_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}
