//! The cloud's read-only JSON API under `/api/v1`, for regional managers' tools and the
//! dashboard, described by a hand-written OpenAPI document (`GET /api/v1/openapi.json`).
//!
//! Every `/api/v1` route, the OpenAPI document included, needs `Authorization: Bearer TOKEN`:
//! a user's API token (`vigil-cloud user token`), which sees exactly what that user sees in the
//! dashboard, or the service token from `cloud.toml` (an admin's scope; compared in constant
//! time; an empty configured token refuses everyone). A document of a site out of the caller's
//! scope answers 404, as an unknown id does, and lists and counts leave such sites out. Every
//! read of patient data is written to the audit log first ([`crate::auth::Auth::audit`]).
//! `GET /metrics` is open, for Prometheus scrapers: it carries counts only, never a site, room
//! or patient.
//!
//! [`router`] also mounts the dashboard ([`crate::dashboard`]), so one listener serves both.
//! Errors are JSON, `{"error": "…"}`: 400 for a bad id or query, 401, 404 for an unknown id or
//! route, 405, 413 for a request body (nothing here takes one), 421 for a `Host` this server
//! does not answer to, 503 when too many reads are queued, 500 with details only in the log.
//!
//! Around every route but `/metrics`: the `Host` header must be a loopback name or address,
//! the address the request arrived on, or one of `[http] hosts` (DNS rebinding gets 421). Every
//! response carries `X-Content-Type-Options: nosniff` and, unless it set its own,
//! `Cache-Control: no-store`. The client's address, for the audit log and sign-in limits, is
//! the TCP peer's, or, when the peer is one of `[http] trusted_proxies`, the right-most address
//! of `X-Forwarded-For` that is not a trusted proxy ([`client_address`]).
//!
//! Reads run on blocking threads through [`CloudStore`]'s read methods (their own read-only
//! connections), at most [`MAX_CONCURRENT_READS`] at a time, each with the caller's
//! [`Scope`](crate::auth::Scope). This module never writes patient data; the sync server does.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use vigil_shared::vitals::Channel;
use vigil_shared::wire::{DocKind, MAX_DOC_ID_BYTES};

use crate::auth::{Auth, Principal};
use crate::config::{HttpConfig, ProxyNet};
use crate::metrics::Metrics;
use crate::store::{ApplianceRow, CloudStore, MAX_SESSION_PAGE, SessionFilter, StoreError};

/// An appliance counts as online while it is connected and was seen within this window, µs.
/// The sync server records a sign of life at least every 30 s per connection (keep-alives are
/// well under QUIC's 30 s idle timeout); three missed beats mean the record is stale, e.g.
/// after the cloud itself crashed with connections open.
pub const ONLINE_WINDOW_US: i64 = 90_000_000;

/// Reads running at once. A vitals page of a long ECG session decodes tens of milliseconds
/// of chunks and holds a page of samples in memory; 16 keeps a burst of dashboards from
/// taking every core and tokio's whole blocking pool away from ingest.
pub const MAX_CONCURRENT_READS: usize = 16;

/// How long a read waits for a free slot before the API answers 503.
const READ_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request body the JSON API accepts. The API takes no bodies; a small limit refuses
/// uploads early instead of letting them stream into a handler that ignores them. (The
/// dashboard's forms have their own limit.)
pub const MAX_BODY_BYTES: usize = 1024;

/// Addresses of `X-Forwarded-For` looked at, from the right: a chain of proxies is a handful;
/// a longer list is padding meant to cost the server time.
const MAX_FORWARDED_HOPS: usize = 16;

/// Longest `Host` value quoted back in a refusal.
const MAX_QUOTED_HOST: usize = 100;

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
pub const API_ROUTES: [&str; 8] = [
    "/sites",
    "/sessions",
    "/sessions/{id}",
    "/sessions/{id}/vitals",
    "/sessions/{id}/automerge",
    "/sessions/{id}/fhir",
    "/patients/{id}",
    "/openapi.json",
];

/// A site as configured; defined with the configuration, named here for the API's users.
pub use crate::config::SiteInfo;

/// What the API handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Storage (reads only).
    pub store: Arc<CloudStore>,
    /// The bearer token every `/api/v1` request must present.
    pub token: String,
    /// Sites from the configuration.
    pub sites: Vec<SiteInfo>,
    /// Counters rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Accepted host names and trusted proxies (`[http]` of `cloud.toml`).
    pub http: HttpConfig,
}

/// The state plus what the router derives from it once; shared with the dashboard.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: ApiState,
    /// Users, sessions, tokens, scope and the audit log.
    pub(crate) auth: Auth,
    /// Each configured site's time zone, parsed once.
    pub(crate) zones: crate::config::Zones,
    reads: Arc<Semaphore>,
}

/// The two ends of the TCP connection a request came on: serve the router with
/// `into_make_service_with_connect_info::<ClientConn>()` so that the `Host` check knows the
/// address the request arrived at. (`SocketAddr` connection info works too, without it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConn {
    /// The peer: the client, or a proxy.
    pub peer: SocketAddr,
    /// This server's end, when the socket could tell.
    pub local: Option<SocketAddr>,
}

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for ClientConn {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientConn {
            peer: *stream.remote_addr(),
            local: stream.io().local_addr().ok(),
        }
    }
}

/// The connection's ends as far as the server was told.
fn connection(req: &Request) -> (Option<IpAddr>, Option<IpAddr>) {
    let ext = req.extensions();
    if let Some(ConnectInfo(c)) = ext.get::<ConnectInfo<ClientConn>>() {
        return (Some(c.peer.ip()), c.local.map(|l| l.ip()));
    }
    let peer = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    (peer, None)
}

/// The client's address as the audit log records it.
#[derive(Debug, Clone)]
pub(crate) struct ClientIp(pub(crate) String);

/// The client's address of a request ([`client_address`] over its connection and headers).
pub(crate) fn client_ip(req: &Request, trusted: &[ProxyNet]) -> ClientIp {
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    ClientIp(client_address(connection(req).0, forwarded, trusted))
}

/// An address as written in `X-Forwarded-For`: bare, `v4:port` or `[v6]:port`.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    entry.split_once(':')?.0.parse().ok()
}

/// The client's address: the TCP peer's (`unknown` without one), unless the peer is a trusted
/// proxy; then the right-most `X-Forwarded-For` address that is not a trusted proxy (each
/// proxy appends the address it saw, so addresses left of the first untrusted one are the
/// client's own claims). If every address is a trusted proxy, the left-most; if an entry is
/// unreadable, the trusted hop that wrote it.
pub fn client_address<'a>(
    peer: Option<IpAddr>,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &[ProxyNet],
) -> String {
    let Some(peer) = peer else {
        return "unknown".to_owned();
    };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer.to_string();
    }
    let entries: Vec<&str> = forwarded
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev().take(MAX_FORWARDED_HOPS) {
        let Some(ip) = forwarded_ip(entry) else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client.to_string()
}

/// The host name or address of a `Host` value, without its port, lower-cased and without a
/// trailing dot; `None` if it is not one.
fn host_name(value: &str) -> Option<String> {
    let value = value.trim();
    let name = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        v6
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return None,
            None => value,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Whether this server answers to `host` (a `Host` header's value): a loopback name or
/// address, the address the request arrived on, or a configured name. Anything else is a
/// name an attacker pointed at this address (DNS rebinding) or a misrouted request.
pub fn host_allowed(host: &str, configured: &[String], local: Option<IpAddr>) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    if name == "localhost" || configured.contains(&name) {
        return true;
    }
    let unmapped = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match name.parse::<IpAddr>() {
        Ok(ip) => {
            let ip = unmapped(ip);
            ip.is_loopback() || local.is_some_and(|l| unmapped(l) == ip)
        }
        Err(_) => false,
    }
}

/// Refuses a request whose `Host` (or absolute URI) names a host this server does not answer
/// to, before anything else runs.
async fn check_host(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let local = connection(&req).1;
    let hosts = &s.state.http.hosts;
    let header = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned());
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    let named: Vec<String> = header.into_iter().chain(authority).collect();
    if named.is_empty() {
        return ApiError::bad_request("the request has no Host header").into_response();
    }
    if let Some(bad) = named.iter().find(|h| !host_allowed(h, hosts, local)) {
        let quoted: String = bad.chars().take(MAX_QUOTED_HOST).collect();
        tracing::warn!(host = %quoted, "refused a request for another host");
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer to host {quoted:?}; open it by one of its own \
                 names (an administrator lists them under [http] hosts in cloud.toml)"
            ),
        )
        .into_response();
    }
    next.run(req).await
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

/// An API error: a status and a message for the person or program that asked.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// The `WWW-Authenticate` challenge of a 401.
    challenge: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            challenge: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the cloud's log",
        )
    }

    pub(crate) fn busy() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cloud is busy answering other reads; retry in a few seconds",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "api read failed");
        ApiError::internal()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        let mut response = (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// The API's routes, the dashboard, `/metrics` and JSON fallbacks.
pub fn router(state: ApiState) -> Router {
    if state.token.is_empty() {
        tracing::warn!("the api token is empty: only users' own tokens will be accepted");
    }
    let auth = Auth::new(state.store.clone(), state.sites.clone(), &state.token);
    let zones = crate::config::Zones::of(&state.sites);
    let shared = Arc::new(Shared {
        state,
        auth,
        zones,
        reads: Arc::new(Semaphore::new(MAX_CONCURRENT_READS)),
    });
    let [
        sites_path,
        sessions_path,
        session_path,
        vitals_path,
        automerge_path,
        fhir_path,
        patient_path,
        openapi_path,
    ] = API_ROUTES;
    let api = Router::new()
        .route(sites_path, get(sites))
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
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    Router::new()
        .nest("/api/v1", api)
        .merge(crate::dashboard::routes(shared.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), check_host))
        // Added after the Host check: scrapers reach it by whatever name their service
        // discovery uses, and it carries no patient data.
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .layer(middleware::from_fn(baseline_headers))
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
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
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
        challenge: Some(challenge),
    }
    .into_response()
}

/// Runs a store read on a blocking thread, at most [`MAX_CONCURRENT_READS`] at a time.
pub(crate) async fn read<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&CloudStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = tokio::time::timeout(READ_QUEUE_TIMEOUT, s.reads.clone().acquire_owned())
        .await
        .map_err(|_| ApiError::busy())?
        .map_err(|_| ApiError::busy())?;
    let store = s.state.store.clone();
    tokio::task::spawn_blocking(move || {
        // The permit is held until the read is done, even if the client has gone.
        let _permit = permit;
        f(&store)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "api read task failed");
        ApiError::internal()
    })?
    .map_err(ApiError::from)
}

/// Checks a document id from the path: 1 to [`MAX_DOC_ID_BYTES`] bytes of letters, digits
/// and `- _ . : @`, no `..`. Ids are only ever SQL parameters, never paths; the check keeps
/// junk out of logs, error messages and headers.
pub(crate) fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_DOC_ID_BYTES {
        return Err(ApiError::bad_request(format!(
            "an id is 1 to {MAX_DOC_ID_BYTES} bytes long"
        )));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b);
    if !id.bytes().all(allowed) || id.contains("..") {
        return Err(ApiError::bad_request(
            "an id is made of letters, digits and - _ . : @ (and never ..)",
        ));
    }
    Ok(())
}

pub(crate) fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_id(&id)?;
    Ok(id)
}

pub(crate) use crate::clock::now_us;

/// A room of a site in `GET /api/v1/sites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomView {
    /// Room id.
    pub id: String,
    /// Whether `cloud.toml` lists the room (an appliance may report from an unlisted one).
    pub configured: bool,
    /// Connected and seen within [`ONLINE_WINDOW_US`].
    pub online: bool,
    /// The connection flag as last recorded.
    pub connected: bool,
    /// The appliance's software, once it connected.
    pub software: Option<String>,
    /// Last sign of life, µs.
    pub last_seen_us: Option<i64>,
    /// Last completed sync round, µs.
    pub last_sync_us: Option<i64>,
    /// Documents the appliance still had to send.
    pub backlog_docs: u64,
    /// Bytes the appliance still had to send.
    pub backlog_bytes: u64,
}

/// A site in `GET /api/v1/sites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteView {
    /// Site id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Whether `cloud.toml` lists the site.
    pub configured: bool,
    /// Rooms: the configured ones in order, then any other room an appliance reported from.
    pub rooms: Vec<RoomView>,
}

fn room_view(id: &str, configured: bool, row: Option<&ApplianceRow>, now_us: i64) -> RoomView {
    RoomView {
        id: id.to_owned(),
        configured,
        online: row.is_some_and(|r| {
            r.connected && now_us.saturating_sub(r.last_seen_us) <= ONLINE_WINDOW_US
        }),
        connected: row.is_some_and(|r| r.connected),
        software: row.map(|r| r.software.clone()).filter(|s| !s.is_empty()),
        last_seen_us: row.map(|r| r.last_seen_us),
        last_sync_us: row.and_then(|r| r.last_sync_us),
        backlog_docs: row.map_or(0, |r| r.backlog_docs),
        backlog_bytes: row.map_or(0, |r| r.backlog_bytes),
    }
}

/// Merges the configured sites with the appliance registry.
pub fn site_views(config: &[SiteInfo], appliances: &[ApplianceRow], now_us: i64) -> Vec<SiteView> {
    let find =
        |site: &str, room: &str| appliances.iter().find(|a| a.site == site && a.room == room);
    let mut out: Vec<SiteView> = config
        .iter()
        .map(|site| {
            let mut rooms: Vec<RoomView> = site
                .rooms
                .iter()
                .map(|room| room_view(room, true, find(&site.id, room), now_us))
                .collect();
            rooms.extend(
                appliances
                    .iter()
                    .filter(|a| a.site == site.id && !site.rooms.contains(&a.room))
                    .map(|a| room_view(&a.room, false, Some(a), now_us)),
            );
            SiteView {
                id: site.id.clone(),
                name: site.name.clone(),
                region: site.region.clone(),
                configured: true,
                rooms,
            }
        })
        .collect();
    for a in appliances {
        if config.iter().any(|s| s.id == a.site) {
            continue;
        }
        let room = room_view(&a.room, false, Some(a), now_us);
        match out.iter_mut().find(|s| s.id == a.site) {
            Some(site) => site.rooms.push(room),
            None => out.push(SiteView {
                id: a.site.clone(),
                name: a.site.clone(),
                region: String::new(),
                configured: false,
                rooms: vec![room],
            }),
        }
    }
    out
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

/// Writes an audit entry on a blocking thread; the read it records is answered only if this
/// succeeds.
pub(crate) async fn audit(
    s: &Arc<Shared>,
    p: &Principal,
    ip: &ClientIp,
    action: &str,
    target: &str,
) -> Result<(), ApiError> {
    let (shared, p, ip) = (s.clone(), p.clone(), ip.0.clone());
    let (action, target) = (action.to_owned(), target.to_owned());
    tokio::task::spawn_blocking(move || shared.auth.audit(&p, &action, &target, &ip, now_us()))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
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

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.state.metrics.render(),
    )
}

#[cfg(test)]
mod tests;
