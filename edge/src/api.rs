//! The appliance's local JSON API under `/api/v1`, used by the demo, the tests and the room
//! screen.
//!
//! Writes go to the recorder thread as commands and are answered once durable; reads open
//! their own read-only database connection on a blocking thread. Errors are JSON
//! (`{"error": "…"}`) with the status that fits: 404 for an unknown patient or session, 409 for
//! a conflicting state, 413 for an oversized body, 422 for values out of range, 503 when the
//! recorder is busy, 507 when the disk is full. Internal details are logged, not returned.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use vigil_shared::vitals::Channel;

use crate::reads;
use crate::recorder::{
    NewPatient, NewSession, RecorderError, RecorderStatus, SessionEvent, StopSession,
};
use crate::store;

/// Largest request body accepted. The biggest legitimate body is a patient registration or a
/// note; 64 KiB leaves room for long notes and refuses anything that isn't a person typing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request for the recorder thread, answered on a one-shot channel.
#[derive(Debug)]
pub enum Command {
    /// Register a patient.
    CreatePatient(NewPatient, Reply<vigil_shared::doc::PatientRecord>),
    /// Change a patient's record.
    UpdatePatient(
        String,
        crate::recorder::PatientUpdate,
        Reply<vigil_shared::doc::PatientRecord>,
    ),
    /// Start a session.
    StartSession(NewSession, Reply<vigil_shared::doc::SessionMeta>),
    /// Start a session with the room screen's check-in record.
    StartChecked(
        NewSession,
        vigil_shared::doc::CheckIn,
        Reply<vigil_shared::doc::SessionMeta>,
    ),
    /// Record an event.
    AddEvent(String, SessionEvent, Reply<vigil_shared::doc::SessionMeta>),
    /// Stop a session.
    StopSession(String, StopSession, Reply<vigil_shared::doc::SessionMeta>),
    /// Commit and stop the recorder thread.
    Shutdown,
}

/// Where the recorder answers.
pub type Reply<T> = oneshot::Sender<Result<T, RecorderError>>;

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

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Commands to the recorder thread (bounded: a full queue answers 503).
    pub commands: std::sync::mpsc::SyncSender<Command>,
    /// The database, for reads.
    pub db_path: PathBuf,
    /// The latest status, refreshed by the recorder thread.
    pub status: Arc<Mutex<Status>>,
    /// The sync client's status, when a cloud is configured.
    pub sync: Option<Arc<Mutex<crate::sync::SyncStatus>>>,
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
    let api = Router::new()
        .route("/status", get(status))
        .route("/site", get(site))
        .route("/patients", post(create_patient))
        .route("/patients/{id}", get(patient).patch(update_patient))
        .route("/sessions", get(sessions).post(start_session))
        .route("/sessions/{id}", get(session))
        .route("/sessions/{id}/events", post(add_event))
        .route("/sessions/{id}/stop", post(stop_session))
        .route("/sessions/{id}/vitals", get(vitals));
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn call<T: Send + 'static>(
    state: &ApiState,
    make: impl FnOnce(Reply<T>) -> Command,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    state.commands.try_send(make(tx)).map_err(|e| match e {
        std::sync::mpsc::TrySendError::Full(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the recorder is busy; try again in a moment",
        ),
        std::sync::mpsc::TrySendError::Disconnected(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the recorder is shutting down",
        ),
    })?;
    let result = rx.await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the recorder stopped before answering",
        )
    })?;
    Ok(result?)
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
}

async fn status(State(state): State<ApiState>) -> Result<Json<StatusBody>, ApiError> {
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
    Ok(Json(StatusBody {
        status: snapshot,
        storage,
        sync,
    }))
}

async fn site(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let site = state
        .status
        .lock()
        .map(|s| s.site.clone())
        .unwrap_or_default();
    let what = format!("configuration of site {site} (not received from the cloud yet)");
    let view = read(&state, move |conn| reads::site_config(conn, &site), what).await?;
    Ok(Json(view))
}

async fn create_patient(
    State(state): State<ApiState>,
    ApiJson(input): ApiJson<NewPatient>,
) -> Result<impl IntoResponse, ApiError> {
    let record = call(&state, |r| Command::CreatePatient(input, r)).await?;
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
    Path(id): Path<String>,
    ApiJson(update): ApiJson<crate::recorder::PatientUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    let record = call(&state, |r| Command::UpdatePatient(id, update, r)).await?;
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
    ApiJson(input): ApiJson<NewSession>,
) -> Result<impl IntoResponse, ApiError> {
    let meta = call(&state, |r| Command::StartSession(input, r)).await?;
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
    Path(id): Path<String>,
    ApiJson(event): ApiJson<SessionEvent>,
) -> Result<impl IntoResponse, ApiError> {
    let meta = call(&state, |r| Command::AddEvent(id, event, r)).await?;
    Ok((StatusCode::CREATED, Json(meta)))
}

async fn stop_session(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<StopSession>,
) -> Result<impl IntoResponse, ApiError> {
    let meta = call(&state, |r| Command::StopSession(id, input, r)).await?;
    Ok(Json(meta))
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
    use std::fmt::Write as _;
    let status = state.status.lock().map(|s| s.clone()).unwrap_or_default();
    let sync = state
        .sync
        .as_ref()
        .and_then(|s| s.lock().ok().map(|s| s.clone()));
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP vigil_edge_{name} {help}\n# TYPE vigil_edge_{name} {kind}\nvigil_edge_{name} {value}"
        );
    };
    metric(
        "samples_committed_total",
        "counter",
        "Samples made durable since start.",
        status.recorder.samples_committed as f64,
    );
    metric(
        "disk_full",
        "gauge",
        "1 when the last commit failed for lack of space.",
        f64::from(u8::from(status.recorder.disk_full)),
    );
    metric(
        "session_active",
        "gauge",
        "1 while a session is recorded.",
        f64::from(u8::from(status.recorder.session.is_some())),
    );
    if let Some(s) = sync {
        metric(
            "cloud_connected",
            "gauge",
            "1 while connected to the cloud.",
            f64::from(u8::from(s.connected)),
        );
        metric(
            "sync_documents_waiting",
            "gauge",
            "Documents with changes the cloud has not confirmed.",
            s.docs_waiting as f64,
        );
        metric(
            "sync_bytes_waiting",
            "gauge",
            "Approximate bytes of documents waiting.",
            s.bytes_waiting as f64,
        );
        metric(
            "sync_frames_sent_total",
            "counter",
            "Sync frames sent.",
            s.frames_sent as f64,
        );
        metric(
            "sync_frames_received_total",
            "counter",
            "Sync frames received.",
            s.frames_received as f64,
        );
        metric(
            "sync_bytes_sent_total",
            "counter",
            "Sync bytes sent.",
            s.bytes_sent as f64,
        );
        metric(
            "sync_bytes_received_total",
            "counter",
            "Sync bytes received.",
            s.bytes_received as f64,
        );
        metric(
            "sync_rejects_total",
            "counter",
            "Exchanges the cloud rejected.",
            s.rejects as f64,
        );
        let lag_s = match s.last_sync_us {
            Some(t) => (status.now_us - t).max(0) as f64 / 1e6,
            None => -1.0,
        };
        metric(
            "sync_lag_seconds",
            "gauge",
            "Seconds since the last completed exchange (-1: never).",
            lag_s,
        );
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::COMMAND_QUEUE;
    use crate::recorder::StopSession;

    #[tokio::test]
    async fn a_full_command_queue_answers_503_at_once() {
        // A stuck recorder: nobody takes commands off the queue.
        let (commands, _stuck) = std::sync::mpsc::sync_channel(COMMAND_QUEUE);
        let state = ApiState {
            commands,
            db_path: PathBuf::new(),
            status: Arc::default(),
            sync: None,
        };
        for _ in 0..COMMAND_QUEUE {
            state.commands.try_send(Command::Shutdown).unwrap();
        }
        let stop = |r| {
            Command::StopSession(
                "s".into(),
                StopSession {
                    by: "n".into(),
                    aborted: false,
                },
                r,
            )
        };
        let err = call(&state, stop).await.unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.message, "the recorder is busy; try again in a moment");
    }
}
