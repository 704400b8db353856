//! The cloud's read-only JSON API under `/api/v1`, for regional managers' tools and the
//! dashboard, described by a hand-written OpenAPI document (`GET /api/v1/openapi.json`).
//!
//! Every `/api/v1` route, the OpenAPI document included, needs `Authorization: Bearer TOKEN`:
//! a user's API token (`vigil-cloud user token`), which sees exactly what that user sees in the
//! dashboard, or the service token from `cloud.toml` (an admin's scope; compared in constant
//! time; an empty configured token refuses everyone). A document of a site out of the caller's
//! scope answers 404, as an unknown id does, and lists and counts leave such sites out. Every
//! read of patient data is written to the audit log first ([`crate::auth::Auth::audit`]).
//!
//! Errors are JSON, `{"error": "…"}`: 400 for a bad id or query, 401, 404 for an unknown id or
//! route, 405, 413 for a request body (nothing here takes one), 503 when too many reads are
//! queued, 500 with details only in the log.
//!
//! Reads run on blocking threads through [`CloudStore`]'s read methods (their own read-only
//! connections), at most [`MAX_CONCURRENT_READS`](super::MAX_CONCURRENT_READS) at a time, each with the caller's
//! [`Scope`](crate::auth::Scope). This module never writes patient data; the sync server does.

use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use vigil_shared::vitals::Channel;
use vigil_shared::wire::DocKind;

use super::error::ApiError;
use super::extract::{ClientIp, client_ip, path_id};
use super::state::{Shared, audit, read};
use crate::auth::Principal;
use crate::clock::now_us;
use crate::fleet::{self, ApplianceView};
use crate::sites::{SiteView, site_views};
use crate::store::{MAX_SESSION_PAGE, SessionFilter};

/// Largest request body the JSON API accepts. The API takes no bodies; a small limit refuses
/// uploads early instead of letting them stream into a handler that ignores them. (The
/// dashboard's forms have their own limit.)
pub const MAX_BODY_BYTES: usize = 1024;

/// Sessions per page when the query names no `limit`.
pub const DEFAULT_SESSION_PAGE: u32 = 100;

/// Longest `site`, `room` or `state` filter value, bytes: ids are short; anything longer is a
/// mistake or an attack.
const MAX_FILTER_BYTES: usize = 128;

/// The session states a filter may name.
const SESSION_STATES: [&str; 4] = ["planned", "in_progress", "completed", "aborted"];

/// The OpenAPI 3.0 description of this API.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Every route under `/api/v1`, all `GET`; the OpenAPI document lists exactly these.
pub const API_ROUTES: [&str; 9] = [
    "/sites",
    "/appliances",
    "/sessions",
    "/sessions/{id}",
    "/sessions/{id}/vitals",
    "/sessions/{id}/automerge",
    "/sessions/{id}/fhir",
    "/patients/{id}",
    "/openapi.json",
];

/// The `/api/v1` routes: every one needs a bearer token and takes no body.
pub(super) fn routes(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    let [
        sites_path,
        appliances_path,
        sessions_path,
        session_path,
        vitals_path,
        automerge_path,
        fhir_path,
        patient_path,
        openapi_path,
    ] = API_ROUTES;
    Router::new()
        .route(sites_path, get(sites))
        .route(appliances_path, get(appliances))
        .route(sessions_path, get(sessions))
        .route(session_path, get(session))
        .route(vitals_path, get(vitals))
        .route(automerge_path, get(automerge_bytes))
        .route(fhir_path, get(fhir))
        .route(patient_path, get(patient))
        .route(openapi_path, get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .layer(middleware::from_fn(refuse_bodies))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/v1/openapi.json")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this api is read-only: use GET",
    )
}

/// Refuses a declared body larger than [`MAX_BODY_BYTES`] before any handler runs.
async fn refuse_bodies(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// The bearer token of a request, if it sent one (scheme name case-insensitive, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn authenticate(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let presented = bearer(req.headers()).map(str::to_owned);
    let principal = match &presented {
        Some(token) => {
            let (token, shared) = (token.clone(), s.clone());
            match tokio::task::spawn_blocking(move || shared.auth.bearer(&token, now_us())).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => return ApiError::from(e).into_response(),
                Err(_) => return ApiError::internal().into_response(),
            }
        }
        None => None,
    };
    let (message, challenge) = match (presented, principal) {
        (Some(_), Some(p)) => {
            let ip = client_ip(&req, &s.state.http.trusted_proxies);
            req.extensions_mut().insert(p);
            req.extensions_mut().insert(ip);
            return next.run(req).await;
        }
        (Some(_), None) => (
            "the bearer token is unknown, expired or revoked; make a new one on your account page",
            "Bearer realm=\"vigil-cloud\", error=\"invalid_token\"",
        ),
        (None, _) => (
            "missing bearer token; send Authorization: Bearer <token>",
            "Bearer realm=\"vigil-cloud\"",
        ),
    };
    ApiError::unauthorized(message, challenge).into_response()
}

async fn sites(
    State(s): State<Arc<Shared>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Vec<SiteView>>, ApiError> {
    let appliances = read(&s, |store| store.appliances()).await?;
    let mut views = site_views(&s.state.sites, &appliances, now_us());
    views.retain(|v| p.allows(&v.id));
    Ok(Json(views))
}

/// Query of `GET /api/v1/appliances`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppliancesQuery {
    attention: Option<bool>,
}

async fn appliances(
    State(s): State<Arc<Shared>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<AppliancesQuery>, QueryRejection>,
) -> Result<Json<Vec<ApplianceView>>, ApiError> {
    let only_attention = query(q)?.attention.unwrap_or(false);
    if !p.manages_sites() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the fleet is for admins and regional managers",
        ));
    }
    let rows = read(&s, |store| store.appliances()).await?;
    let mut views = fleet::views(&rows, now_us());
    views.retain(|v| p.allows(&v.site) && (!only_attention || !v.attention.is_empty()));
    audit(
        &s,
        &p,
        &ip,
        "api appliances",
        if only_attention { "attention" } else { "all" },
    )
    .await?;
    Ok(Json(views))
}

/// Query of `GET /api/v1/sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsQuery {
    site: Option<String>,
    room: Option<String>,
    state: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    has_advisory: Option<bool>,
    patient: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

fn session_filter(q: SessionsQuery) -> Result<SessionFilter, ApiError> {
    for (name, value) in [
        ("site", &q.site),
        ("room", &q.room),
        ("state", &q.state),
        ("patient", &q.patient),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.len() > MAX_FILTER_BYTES)
        {
            return Err(ApiError::bad_request(format!(
                "{name} must be 1 to {MAX_FILTER_BYTES} bytes long"
            )));
        }
    }
    if let Some(state) = &q.state
        && !SESSION_STATES.contains(&state.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "unknown state {state:?}; one of {}",
            SESSION_STATES.join(", ")
        )));
    }
    let limit = q.limit.unwrap_or(DEFAULT_SESSION_PAGE);
    if !(1..=MAX_SESSION_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_SESSION_PAGE}"
        )));
    }
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from > to
    {
        return Err(ApiError::bad_request("from is after to"));
    }
    Ok(SessionFilter {
        site: q.site,
        room: q.room,
        state: q.state,
        from_us: q.from,
        to_us: q.to,
        has_advisory: q.has_advisory,
        patient_id: q.patient,
        limit,
        offset: q.offset.unwrap_or(0),
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn sessions(
    State(s): State<Arc<Shared>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<SessionsQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = session_filter(query(q)?)?;
    let target = format!("{filter:?}");
    let scope = p.scope().clone();
    let page = read(&s, move |store| store.sessions(&scope, &filter)).await?;
    audit(&s, &p, &ip, "api list sessions", &target).await?;
    Ok(Json(page))
}

async fn session(
    State(s): State<Arc<Shared>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    path: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = path_id(path)?;
    let (scope, key) = (p.scope().clone(), id.clone());
    let summary = read(&s, move |store| store.session_summary(&scope, &key))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("session {id} not found")))?;
    audit(&s, &p, &ip, "api session", &id).await?;
    Ok(Json(summary))
}

/// Query of `GET /api/v1/sessions/{id}/vitals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VitalsQuery {
    channel: String,
    from: Option<i64>,
    to: Option<i64>,
}

async fn vitals(
    State(s): State<Arc<Shared>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<VitalsQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = path_id(path)?;
    let q = query(q)?;
    let channel = Channel::from_name(&q.channel).ok_or_else(|| {
        let names: Vec<&str> = Channel::ALL.iter().map(|c| c.name()).collect();
        ApiError::bad_request(format!(
            "unknown channel {:?}; one of {}",
            q.channel,
            names.join(", ")
        ))
    })?;
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from > to
    {
        return Err(ApiError::bad_request("from is after to"));
    }
    let (scope, key) = (p.scope().clone(), id.clone());
    let page = read(&s, move |store| {
        store.vitals(&scope, &key, channel, q.from, q.to)
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("session {id} not found")))?;
    audit(&s, &p, &ip, "api vitals", &format!("{id} {channel}")).await?;
    Ok(Json(page))
}

async fn automerge_bytes(
    State(s): State<Arc<Shared>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let (scope, key) = (p.scope().clone(), id.clone());
    let bytes = read(&s, move |store| {
        store.document_bytes(&scope, &key, DocKind::Session)
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("session {id} not found")))?;
    audit(&s, &p, &ip, "api session document", &id).await?;
    // `check_id` allows only characters that are safe inside a quoted header value.
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{id}.automerge\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// The FHIR R4 Bundle of a session, for the API and the dashboard's download link.
pub(crate) async fn fhir_bundle(
    s: &Arc<Shared>,
    p: &Principal,
    ip: &ClientIp,
    id: &str,
) -> Result<Response, ApiError> {
    let (scope, key) = (p.scope().clone(), id.to_owned());
    let chart = read(s, move |store| {
        store.session_chart(&scope, &key, Some(0), Some(0))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("session {id} not found")))?;
    audit(s, p, ip, "fhir export", id).await?;
    let body = crate::fhir::session_bundle(&chart);
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{id}.fhir.json\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/fhir+json"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body.to_string(),
    )
        .into_response())
}

async fn fhir(
    State(s): State<Arc<Shared>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    fhir_bundle(&s, &p, &ip, &id).await
}

async fn patient(
    State(s): State<Arc<Shared>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    path: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = path_id(path)?;
    let (scope, key) = (p.scope().clone(), id.clone());
    let record = read(&s, move |store| store.patient(&scope, &key))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("patient {id} not found")))?;
    audit(&s, &p, &ip, "api patient", &id).await?;
    Ok(Json(record))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

#[cfg(test)]
mod tests;
