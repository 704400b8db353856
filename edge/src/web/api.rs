//! The appliance's local JSON API under `/api/v1`, for integrations, the demo and the tests.
//!
//! Every route that reads or writes patient or session data needs a credential
//! ([`crate::access`]): a site or local API token, or a signed-in room screen's cookie. No
//! credential is 401, another site's token 403. Each such request is written to the audit log
//! ([`crate::audit`]) before it is served, and a write records `by` from the credential: a body
//! that names `by` itself is refused. `GET /api/v1/status` without a credential shows only what
//! holds no patient data; `GET /metrics` holds none.
//!
//! Writes go to the recorder thread as commands and are answered once durable; the recorder
//! enforces the clinical rules whoever asks. Reads open their own read-only database connection
//! on a blocking thread. Errors are JSON (`{"error": "…"}`) with the status that fits: 401/403
//! for credentials, 404 for an unknown patient or session, 409 for a conflicting state, 413 for
//! an oversized body, 422 for values out of range, 503 when the recorder is busy, 507 when the
//! disk is full. Internal details are logged, not returned.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vigil_shared::vitals::Channel;

use crate::access::{self, AllowedHosts, Principal, Refusal, Role, ScreenSessions};
use crate::audit::client_addr;
use crate::audit::{AuditLog, Entry};
use crate::reads;
use crate::recorder::{
    Handle, NewPatient, NewSession, RecorderError, RecorderStatus, SessionEvent, StopSession,
};
use crate::store;
use crate::throttle::PinThrottle;

/// Largest request body accepted. The biggest legitimate body is a patient registration or a
/// note; 64 KiB leaves room for long notes and refuses anything that isn't a person typing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the status endpoint shows besides the recorder's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Site.
    pub site: String,
    /// Room.
    pub room: String,
    /// The appliance clock now, µs.
    pub now_us: i64,
    /// Clock speed-up (1 = real time).
    pub time_factor: f64,
    /// The vitals source.
    pub source: String,
    /// The recorder.
    pub recorder: RecorderStatus,
}

/// What the appliance's HTTP server checks on every request: credentials, the audit log, the
/// `Host` header, the room screen's sign-ins and wrong PINs.
#[derive(Debug)]
pub struct Security {
    /// SHA-256 of the local token.
    pub local_sha256: String,
    /// Signed-in room-screen browsers.
    pub sessions: ScreenSessions,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// Names the server answers to.
    pub hosts: AllowedHosts,
    /// Wrong PINs at the room screen.
    pub pins: PinThrottle,
}

impl Security {
    /// Checks a staff member's PIN under the wrong-PIN waits: the attempt is reserved first
    /// (so parallel guesses wait their turn; `Err(wait)` when this name must wait on this
    /// client), verified against the argon2id hash on a blocking thread, then counted.
    pub async fn check_pin(
        self: &Arc<Self>,
        member: &vigil_shared::doc::StaffMember,
        pin: String,
        client: &str,
        now_us: i64,
    ) -> Result<bool, std::time::Duration> {
        let reservation = self
            .pins
            .reserve(&member.id, client, std::time::Instant::now())?;
        let hash = member.pin_hash.clone();
        let ok = pin.len() <= 64
            && tokio::task::spawn_blocking(move || crate::access::pin_matches(&pin, &hash))
                .await
                .unwrap_or(false);
        let security = self.clone();
        let settled = tokio::task::spawn_blocking(move || {
            let conn = security.audit.connection();
            security.pins.settle(
                reservation,
                ok,
                std::time::Instant::now(),
                now_us,
                Some(&conn),
            );
        })
        .await;
        if settled.is_err() {
            tracing::error!("settling a PIN attempt failed");
        }
        Ok(ok)
    }
}

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The recorder thread (its queue is bounded: a full queue answers 503).
    pub recorder: Handle,
    /// The database, for reads.
    pub db_path: PathBuf,
    /// The latest status, refreshed by the recorder thread.
    pub status: Arc<Mutex<Status>>,
    /// The sync client's status, when a cloud is configured.
    pub sync: Option<Arc<Mutex<crate::sync::SyncStatus>>>,
    /// Credentials, audit, hosts.
    pub security: Arc<Security>,
    /// The site's rooms, live, for the central station.
    pub station: Arc<crate::station::Station>,
    /// The site's peers, when peer networking is on.
    pub peers: Option<Arc<crate::peer::Peers>>,
}

impl ApiState {
    /// This appliance's site, as its status says.
    pub fn site(&self) -> String {
        self.status
            .lock()
            .map(|s| s.site.clone())
            .unwrap_or_default()
    }

    /// The appliance's clock at the last status refresh, µs.
    pub fn now_us(&self) -> i64 {
        self.status.lock().map(|s| s.now_us).unwrap_or_default()
    }
}

/// An API error: a status and a message for the person or program that asked.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<RecorderError> for ApiError {
    fn from(e: RecorderError) -> ApiError {
        match &e {
            RecorderError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            RecorderError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            RecorderError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            RecorderError::Store(s) if s.is_full() => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "the appliance's disk is full; recording of the running session continues in memory, free space",
            ),
            RecorderError::Busy | RecorderError::Stopped => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            RecorderError::Store(_) | RecorderError::Doc(_) => {
                tracing::error!(error = %e, "request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the appliance log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// `Json` whose rejections are JSON errors too (413 for an oversized body, 400/415/422 else).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            status,
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        );
    }
    ApiError::new(status, rejection.body_text())
}

/// The API routes.
pub fn router(state: ApiState) -> Router {
    let guarded = Router::new()
        .route("/site", get(site))
        .route("/patients", post(create_patient))
        .route("/patients/{id}", get(patient).patch(update_patient))
        .route("/sessions", get(sessions).post(start_session))
        .route("/sessions/{id}", get(session))
        .route("/sessions/{id}/events", post(add_event))
        .route("/sessions/{id}/stop", post(stop_session))
        .route("/sessions/{id}/vitals", get(vitals))
        .route("/ledger", get(ledger))
        .route("/ledger/entries", post(ledger_entry))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard));
    let api = Router::new().route("/status", get(status)).merge(guarded);
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(no_store))
        .with_state(state)
}

/// Refuses a request whose `Host` header names something else than this appliance (DNS
/// rebinding: a web page a tablet opened, resolving its own name to the appliance). Layered
/// over the whole HTTP server, the room screen included.
pub async fn check_host(
    State(security): State<Arc<Security>>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if security.hosts.allows(host) {
        return next.run(req).await;
    }
    tracing::warn!(host = %host.escape_debug(), "request for another host refused");
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "this appliance does not answer to that host name; use its configured name or address \
         (edge.toml http_hosts)",
    )
    .into_response()
}

/// Patient data must not stay in a browser's or proxy's cache, nor be sniffed into another
/// type.
async fn no_store(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// Who is asking, from the `Authorization` header or the room screen's cookie.
pub async fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<Principal, Refusal> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(access::bearer)
            .ok_or(Refusal::Invalid)?
            .to_owned();
        let site = state.site();
        let now_us = state.now_us();
        let local = state.security.local_sha256.clone();
        // Site tokens come from the site configuration the cloud last sent.
        let tokens = if access::token_site(&token) == Some(site.as_str()) {
            let path = state.db_path.clone();
            let site = site.clone();
            tokio::task::spawn_blocking(move || site_tokens(&path, &site))
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        return access::check_token(&token, &local, &site, &tokens, now_us);
    }
    let cookies = headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok());
    match vigil_web::http::cookie_value(cookies, crate::web::screen::COOKIE) {
        Some(token) => state
            .security
            .sessions
            .touch(token)
            .map(|s| s.principal)
            .ok_or(Refusal::Invalid),
        None => Err(Refusal::Missing),
    }
}

/// The site's API tokens from its stored configuration; none when it is missing or unreadable
/// (which is logged): an unreadable list accepts no site token.
fn site_tokens(db_path: &std::path::Path, site: &str) -> Vec<vigil_shared::doc::SiteApiToken> {
    let read = || -> Result<Vec<_>, RecorderError> {
        let conn = store::open_reader(db_path)?;
        match reads::site_config_doc(&conn, site)? {
            Some(doc) => Ok(doc.api_tokens()?),
            None => Ok(Vec::new()),
        }
    };
    read().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read the site's API tokens; refusing site tokens");
        Vec::new()
    })
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        let status = match r {
            Refusal::OtherSite(_) => StatusCode::FORBIDDEN,
            Refusal::Missing | Refusal::Invalid => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, r.to_string())
    }
}

/// Every guarded route: a credential, then an audit entry made durable, then the handler.
async fn guard(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let principal = match authenticate(&state, req.headers()).await {
        Ok(p) => p,
        Err(refusal) => {
            tracing::warn!(client = %client_addr(&req), reason = %refusal, path = %req.uri().path(), "api request refused");
            let mut res = ApiError::from(refusal).into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vigil-edge\""),
            );
            return res;
        }
    };
    let entry = Entry::for_request("api", &principal.id, &req);
    if let Err(e) = state.security.audit.record_async(entry).await {
        tracing::error!(error = %e, "cannot write the audit log; request refused");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the appliance cannot write its audit log, so it serves no patient data; see its log",
        )
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// A JSON body written by the principal: a body that says `by` itself is refused, and `by` is
/// set from the credential.
#[derive(Debug)]
pub struct Authored<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Authored<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Some(principal) = req.extensions().get::<Principal>().cloned() else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                Refusal::Missing.to_string(),
            ));
        };
        let ApiJson(mut value) = ApiJson::<serde_json::Value>::from_request(req, state).await?;
        let Some(object) = value.as_object_mut() else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the body must be a JSON object",
            ));
        };
        if object.contains_key("by") {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "`by` comes from your credential; remove it from the body",
            ));
        }
        object.insert("by".into(), principal.id.into());
        serde_json::from_value(value)
            .map(Authored)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
    }
}

/// Refuses an infusion action by someone who may not record one (the front desk).
fn require_treating(principal: &Principal) -> Result<(), ApiError> {
    if principal.role.may_treat() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "the front desk registers patients and records screening answers; a nurse or clinician \
         records the infusion",
    ))
}

async fn read<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&rusqlite::Connection) -> Result<Option<T>, RecorderError> + Send + 'static,
    what: String,
) -> Result<T, ApiError> {
    let path = state.db_path.clone();
    let result = tokio::task::spawn_blocking(move || {
        let conn = store::open_reader(&path)?;
        f(&conn)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "read task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the appliance log",
        )
    })??;
    result.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found")))
}

#[derive(Serialize)]
struct StatusBody {
    #[serde(flatten)]
    status: Status,
    storage: store::StorageUse,
    sync: Option<crate::sync::SyncStatus>,
    /// The site's peers (rooms connected, refusals), with a credential only.
    peers: Option<crate::peer::PeerStatus>,
}

/// What `/status` shows without a credential: health, version and sync, no patient data.
#[derive(Serialize)]
struct PublicStatus {
    site: String,
    room: String,
    version: &'static str,
    now_us: i64,
    source: String,
    recording: bool,
    samples_committed: u64,
    disk_full: bool,
    storage: store::StorageUse,
    sync: Option<crate::sync::SyncStatus>,
}

async fn status(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let snapshot = state.status.lock().map(|s| s.clone()).unwrap_or_default();
    let path = state.db_path.clone();
    let storage = read(
        &state,
        move |conn| Ok(Some(store::storage_use(conn, &path)?)),
        "storage".into(),
    )
    .await?;
    let sync = state
        .sync
        .as_ref()
        .and_then(|s| s.lock().ok().map(|s| s.clone()));
    // A credential shows the running session; without one, only the appliance's health.
    if authenticate(&state, &headers).await.is_err() {
        return Ok(Json(PublicStatus {
            site: snapshot.site,
            room: snapshot.room,
            version: env!("CARGO_PKG_VERSION"),
            now_us: snapshot.now_us,
            source: snapshot.source,
            recording: snapshot.recorder.session.is_some(),
            samples_committed: snapshot.recorder.samples_committed,
            disk_full: snapshot.recorder.disk_full,
            storage,
            sync,
        })
        .into_response());
    }
    Ok(Json(StatusBody {
        status: snapshot,
        storage,
        sync,
        peers: state.peers.as_ref().map(|p| p.status()),
    })
    .into_response())
}

async fn site(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let site = state.site();
    let what = format!("configuration of site {site} (not received from the cloud yet)");
    let view = read(&state, move |conn| reads::site_config(conn, &site), what).await?;
    Ok(Json(view))
}

async fn create_patient(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    ApiJson(mut input): ApiJson<NewPatient>,
) -> Result<impl IntoResponse, ApiError> {
    input.screening.by = Some(principal.id);
    let record = state.recorder.create_patient(input).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

async fn patient(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let what = format!("patient {id}");
    let record = read(&state, move |conn| reads::patient(conn, &id), what).await?;
    Ok(Json(record))
}

async fn update_patient(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    ApiJson(mut update): ApiJson<crate::recorder::PatientUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(screening) = &mut update.screening {
        screening.by = Some(principal.id);
    }
    let record = state.recorder.update_patient(id, update).await?;
    Ok(Json(record))
}

async fn sessions(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    #[derive(Serialize)]
    struct Row {
        id: String,
        patient_id: String,
        state: String,
        started_us: Option<i64>,
        ended_us: Option<i64>,
    }
    let rows = read(
        &state,
        |conn| reads::sessions(conn).map(Some),
        "sessions".into(),
    )
    .await?;
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|r| Row {
            id: r.id,
            patient_id: r.patient_id,
            state: r.state,
            started_us: r.started_us,
            ended_us: r.ended_us,
        })
        .collect();
    Ok(Json(rows))
}

async fn start_session(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Authored(input): Authored<NewSession>,
) -> Result<impl IntoResponse, ApiError> {
    require_treating(&principal)?;
    let meta = state.recorder.start_session(input, None).await?;
    Ok((StatusCode::CREATED, Json(meta)))
}

async fn session(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let what = format!("session {id}");
    let view = read(&state, move |conn| reads::session_view(conn, &id), what).await?;
    Ok(Json(view))
}

async fn add_event(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Authored(event): Authored<SessionEvent>,
) -> Result<impl IntoResponse, ApiError> {
    require_treating(&principal)?;
    let meta = state.recorder.add_event(id, event).await?;
    Ok((StatusCode::CREATED, Json(meta)))
}

async fn stop_session(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Authored(input): Authored<StopSession>,
) -> Result<impl IntoResponse, ApiError> {
    require_treating(&principal)?;
    let meta = state.recorder.stop_session(id, input).await?;
    Ok(Json(meta))
}

/// `POST /api/v1/ledger/entries`: what the entry records (`type` and its fields), by the
/// credential's staff member, with the witness's staff id and PIN where the ledger wants one.
#[derive(Debug, Deserialize)]
struct LedgerRequest {
    by: String,
    #[serde(default)]
    witness: Option<String>,
    #[serde(default)]
    witness_pin: Option<String>,
    #[serde(flatten)]
    entry: crate::recorder::LedgerInput,
}

/// The site's ledger as this room holds it: lots with their balances, open discrepancies,
/// the loss reports due, the next biennial inventory, and every entry.
async fn ledger(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let site = state.site();
    let now_us = state.now_us();
    let view = read(
        &state,
        move |conn| crate::reads::ledger(conn, &site, now_us).map(Some),
        "ledger".into(),
    )
    .await?;
    Ok(Json(view))
}

async fn ledger_entry(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Authored(req): Authored<LedgerRequest>,
) -> Result<impl IntoResponse, ApiError> {
    use crate::recorder::LedgerInput;
    // The front desk receives stock and counts it; everything that touches a patient's dose
    // is a nurse's or clinician's, and resolving a discrepancy a clinician's.
    match &req.entry {
        LedgerInput::Receipt { .. } | LedgerInput::Count { .. } => {}
        LedgerInput::Resolution { .. } if !principal.role.is_clinician() => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a clinician resolves a count's discrepancy",
            ));
        }
        _ => require_treating(&principal)?,
    }
    let witness = match (&req.witness, &req.witness_pin) {
        (Some(w), Some(pin)) if !w.trim().is_empty() => {
            Some(verify_witness(&state, &principal, w, pin, &peer.ip().to_string()).await?)
        }
        (Some(_), None) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the witness confirms with their PIN (witness_pin)",
            ));
        }
        _ => None,
    };
    let entry = state
        .recorder
        .ledger_append(req.entry, req.by, witness)
        .await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

/// The API's witness check: the site's staff list as this room holds it, then
/// [`check_witness`].
async fn verify_witness(
    state: &ApiState,
    principal: &Principal,
    witness: &str,
    pin: &str,
    client: &str,
) -> Result<String, ApiError> {
    let site = state.site();
    let config = read(
        state,
        move |conn| crate::web::screen::site_config(conn, &site).map(Some),
        "site configuration".into(),
    )
    .await?;
    let staff = config.map(|c| c.staff).unwrap_or_default();
    let now_us = state.now_us();
    check_witness(
        &state.security,
        staff,
        &principal.id,
        witness,
        pin,
        client,
        now_us,
    )
    .await
    .map_err(|(status, message)| ApiError::new(status, message))
}

/// Checks a ledger entry's witness: on the site's staff list, licensed (a nurse or
/// clinician), not the person recording (`by`), and their PIN right, under the same
/// wrong-PIN waits as the room screen's sign-in. The witness's staff id, or the status and
/// message to refuse with. The API and the room screen both ask this.
pub(crate) async fn check_witness(
    security: &Arc<Security>,
    staff: Vec<vigil_shared::doc::StaffMember>,
    by: &str,
    witness: &str,
    pin: &str,
    client: &str,
    now_us: i64,
) -> Result<String, (StatusCode, String)> {
    if witness == by {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "a second licensed staff member must witness this, not the person recording it".into(),
        ));
    }
    let refused = || {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "the witness's name or PIN is wrong, or they are not a nurse or clinician".to_owned(),
        )
    };
    let member = staff
        .into_iter()
        .find(|m| m.id == witness)
        .ok_or_else(refused)?;
    if !Role::from_staff(&member.role).is_some_and(Role::may_treat) {
        return Err(refused());
    }
    match security
        .check_pin(&member, pin.to_owned(), client, now_us)
        .await
    {
        Ok(true) => Ok(member.id),
        Ok(false) => Err(refused()),
        Err(wait) => Err((
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many wrong PINs for this witness from here; wait {} s",
                wait.as_secs().max(1)
            ),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VitalsQuery {
    channel: String,
    from: Option<i64>,
    to: Option<i64>,
}

async fn vitals(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<VitalsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let channel = Channel::from_name(&q.channel).ok_or_else(|| {
        let names: Vec<&str> = Channel::ALL.iter().map(|c| c.name()).collect();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown channel {:?}; one of {}",
                q.channel,
                names.join(", ")
            ),
        )
    })?;
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f > t
    {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "from is after to"));
    }
    let what = format!("session {id}");
    let page = read(
        &state,
        move |conn| reads::vitals(conn, &id, channel, q.from, q.to),
        what,
    )
    .await?;
    Ok(Json(page))
}

/// Prometheus text format: recording and sync counters of this appliance.
async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let status = state.status.lock().map(|s| s.clone()).unwrap_or_default();
    let sync = state
        .sync
        .as_ref()
        .and_then(|s| s.lock().ok().map(|s| s.clone()));
    let flag = |b: bool| f64::from(u8::from(b));
    let mut m = vigil_web::metrics::Exposition::new("vigil_edge_");
    m.counter(
        "samples_committed_total",
        "Samples made durable since start.",
        status.recorder.samples_committed,
    );
    m.gauge(
        "disk_full",
        "1 when the last commit failed for lack of space.",
        flag(status.recorder.disk_full),
    );
    m.gauge(
        "session_active",
        "1 while a session is recorded.",
        flag(status.recorder.session.is_some()),
    );
    if let Some(s) = sync {
        m.gauge(
            "cloud_connected",
            "1 while connected to the cloud.",
            flag(s.connected),
        );
        m.gauge(
            "sync_documents_waiting",
            "Documents with changes the cloud has not confirmed.",
            s.docs_waiting as f64,
        );
        m.gauge(
            "sync_bytes_waiting",
            "Approximate bytes of documents waiting.",
            s.bytes_waiting as f64,
        );
        m.counter("sync_frames_sent_total", "Sync frames sent.", s.frames_sent);
        m.counter(
            "sync_frames_received_total",
            "Sync frames received.",
            s.frames_received,
        );
        m.counter("sync_bytes_sent_total", "Sync bytes sent.", s.bytes_sent);
        m.counter(
            "sync_bytes_received_total",
            "Sync bytes received.",
            s.bytes_received,
        );
        m.counter(
            "sync_rejects_total",
            "Exchanges the cloud rejected.",
            s.rejects,
        );
        let lag_s = match s.last_sync_us {
            Some(t) => (status.now_us - t).max(0) as f64 / 1e6,
            None => -1.0,
        };
        m.gauge(
            "sync_lag_seconds",
            "Seconds since the last completed exchange (-1: never).",
            lag_s,
        );
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        m.finish(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::COMMAND_QUEUE;
    use crate::recorder::{Command, StopSession};

    /// An API state over `recorder` with an audit log in `dir`, as `Appliance::start` builds it.
    fn state(
        dir: &std::path::Path,
        recorder: Handle,
        sync: Option<Arc<Mutex<crate::sync::SyncStatus>>>,
    ) -> ApiState {
        let clock = crate::clock::ScaledClock::starting_at(0, 1.0);
        let security = Security {
            local_sha256: String::new(),
            sessions: ScreenSessions::default(),
            audit: Arc::new(AuditLog::open(&dir.join("a.db"), clock).unwrap()),
            hosts: AllowedHosts::new("127.0.0.1:0".parse().unwrap(), &[]),
            pins: PinThrottle::default(),
        };
        ApiState {
            recorder,
            db_path: PathBuf::new(),
            status: Arc::default(),
            sync,
            security: Arc::new(security),
            station: crate::station::Station::new("austin", "1", 0),
            peers: None,
        }
    }

    #[tokio::test]
    async fn a_full_command_queue_answers_503_at_once() {
        let dir = tempfile::tempdir().unwrap();
        // A stuck recorder: nobody takes commands off the queue.
        let (commands, _stuck) = std::sync::mpsc::sync_channel(COMMAND_QUEUE);
        let state = state(dir.path(), Handle::new(commands), None);
        for _ in 0..COMMAND_QUEUE {
            assert!(state.recorder.try_send(Command::Shutdown));
        }
        let stop = StopSession {
            by: "n".into(),
            aborted: false,
            disposition: None,
            note: String::new(),
        };
        let err = ApiError::from(
            state
                .recorder
                .stop_session("s".into(), stop)
                .await
                .unwrap_err(),
        );
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.message, "the recorder is busy; try again in a moment");
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_with_the_sync_state() {
        let dir = tempfile::tempdir().unwrap();
        let (commands, _rx) = std::sync::mpsc::sync_channel(COMMAND_QUEUE);
        let sync = crate::sync::SyncStatus {
            connected: true,
            docs_waiting: 3,
            rejects: 2,
            ..Default::default()
        };
        let state = state(
            dir.path(),
            Handle::new(commands),
            Some(Arc::new(Mutex::new(sync))),
        );
        let response = metrics(State(state)).await.into_response();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        for line in [
            "# TYPE vigil_edge_samples_committed_total counter",
            "vigil_edge_samples_committed_total 0",
            "vigil_edge_cloud_connected 1",
            "vigil_edge_sync_documents_waiting 3",
            "# TYPE vigil_edge_sync_rejects_total counter",
            "vigil_edge_sync_rejects_total 2",
            "vigil_edge_sync_lag_seconds -1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
