//! The clinician's room screen: server-rendered pages on the appliance's own HTTP server, for
//! the appliance's screen or a tablet beside the chair, working the same with the cloud
//! unreachable. One infusion from check-in to discharge: sign-in, check-in and screening,
//! protocol and pump rate, live vitals and the session's events, after-care and discharge,
//! the patient's course.
//!
//! - Sign-in with a per-person PIN against the staff list of the site configuration document
//!   the cloud last sent (stored in the appliance's database, so sign-in works offline). A room
//!   that never synced has no staff list: the sign-in page says so and nobody can sign in; the
//!   JSON API and recording are unaffected.
//! - A signed-in browser holds a random token in an HttpOnly, SameSite=Strict cookie (also
//!   `Secure` when the request came over TLS: [`Transport`] in the request's extensions); the
//!   appliance keeps the signed-in list in memory ([`crate::access`]; a restart signs everyone
//!   out). Every form carries the session's CSRF token, the sign-in form a per-browser one held
//!   in a cookie, as the cloud dashboard does; a POST without the right token is refused with 403.
//! - Wrong PINs are counted per (name, client) with growing delays ([`crate::throttle`]), so guesses
//!   from one client never lock the nurse out of the room's tablet; a clinician can clear them.
//! - Every signed-in request is written to the appliance's audit log before it is served.
//! - Every action goes through the recorder's commands with `by` = the signed-in staff id.
//! - Live vitals and the session's timeline arrive by server-sent events ([`live`]); the only
//!   script is [`SCRIPT`], served from this binary. Layout, escaping and charts come from
//!   `vigil_shared::ui`; calculations from `vigil_shared::clinical`.
//!
//! This module is HTTP and presentation only: it holds no clinical rule of its own and never
//! writes the database except through the recorder.

// A refusal is the early return of a handler, answered at once: an error that is a whole
// `Response` is the simplest shape, as in the cloud dashboard.
#![allow(clippy::result_large_err)]

mod adverse;
mod after;
mod checkin;
mod ledger;
mod live;
mod load;
mod monitoring;
mod patients;
mod room;
mod session;
mod signin;
mod station;
mod view;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use vigil_shared::doc::{PatientRecord, SiteConfig};
use vigil_web::http;
use vigil_web::http::Transport;
use vigil_web::layout::{self, CSS, CSS_PATH, NavLink, Page};

use crate::access::Role;
use crate::audit::Entry;
use crate::recorder::RecorderError;
use crate::store;
use crate::web::api::ApiState;

/// The session cookie of the room screen.
pub const COOKIE: &str = "vigil_room";

/// The cookie holding the sign-in form's CSRF token (before there is a session).
pub const LOGIN_CSRF_COOKIE: &str = "vigil_room_login_csrf";

/// Where the room screen lives.
pub const BASE: &str = "/screen";

/// Largest form accepted: a note is the longest thing a person types.
pub const MAX_FORM_BYTES: usize = 32 * 1024;

/// The room screen's script: live values and the timeline from server-sent events.
pub const SCRIPT: &str = include_str!("screen.js");

/// The room screen's additions to the shared stylesheet: large touch targets, the live panel.
pub const SCREEN_CSS: &str = include_str!("screen.css");

const SCRIPT_PATH: &str = "/screen/assets/screen.js";
const SCREEN_CSS_PATH: &str = "/screen/assets/screen.css";

/// Scripts and styles only from here, event streams only to here, forms only to here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A signed-in person.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// Staff id (what documents record as `by`).
    pub(crate) id: String,
    /// Display name.
    pub(crate) name: String,
    /// What they may do.
    pub(crate) role: Role,
    /// The CSRF token of this sign-in.
    pub(crate) csrf: String,
    /// The cookie token of this sign-in (a live stream ends when it is signed out).
    pub(crate) token: String,
    /// The site's time zone, from the site configuration (UTC until the cloud sends one):
    /// every time on the screen is shown in it.
    pub(crate) zone: vigil_shared::zone::SiteZone,
}

impl Viewer {
    pub(crate) fn is_clinician(&self) -> bool {
        self.role.is_clinician()
    }

    /// Whether this person may record the infusion itself (start, dose, side effects, scores,
    /// advisories, discharge): nurses and clinicians. The front desk registers patients and
    /// records screening answers (DESIGN.md's "who uses it").
    pub(crate) fn may_treat(&self) -> bool {
        self.role.may_treat()
    }
}

/// Refuses an infusion action by someone who may not record one.
pub(crate) fn require_treating(viewer: &Viewer) -> Result<(), Response> {
    if viewer.may_treat() {
        return Ok(());
    }
    Err(error_page(
        viewer,
        StatusCode::FORBIDDEN,
        "the front desk registers patients and records screening answers; a nurse or clinician \
         signs in to record the infusion",
    ))
}

/// What the screen's handlers share.
#[derive(Debug)]
pub(crate) struct Screen {
    pub(crate) api: ApiState,
}

pub(crate) type Shared = Arc<Screen>;

/// The room screen's routes, merged into the appliance's HTTP server.
pub fn router(api: ApiState) -> Router {
    let shared = Arc::new(Screen { api });
    let signed_in = Router::new()
        .route("/screen", get(room::home))
        .route("/screen/", get(room::home))
        .route(
            "/screen/patients",
            get(patients::patients).post(patients::register),
        )
        .route(
            "/screen/patients/{id}/checkin",
            get(checkin::checkin).post(checkin::checkin_submit),
        )
        .route("/screen/patients/{id}/course", get(patients::course))
        .route("/screen/sessions/{id}", get(session::session))
        .route("/screen/sessions/{id}/live", get(live::stream))
        .route("/screen/sessions/{id}/dose", post(session::dose))
        .route("/screen/sessions/{id}/ledger", post(ledger::session_entry))
        .route("/screen/ledger", get(ledger::safe).post(ledger::safe_entry))
        .route("/screen/sessions/{id}/effect", post(session::effect))
        .route("/screen/sessions/{id}/note", post(session::note))
        .route("/screen/sessions/{id}/ack", post(session::acknowledge))
        .route("/screen/sessions/{id}/end", post(session::end))
        .route("/screen/sessions/{id}/after", get(after::after))
        .route("/screen/sessions/{id}/score", post(after::score))
        .route("/screen/sessions/{id}/discharge", post(after::discharge))
        .route(
            "/screen/sessions/{id}/checkpoint",
            post(monitoring::checkpoint),
        )
        .route("/screen/sessions/{id}/form", get(monitoring::form))
        .route("/screen/sessions/{id}/adverse", post(adverse::record_event))
        .route(
            "/screen/sessions/{id}/adverse/{event}/review",
            post(adverse::review),
        )
        .route(station::PATH, get(station::page))
        .route("/station/live", get(station::stream))
        .route("/station/rooms/{room}/ack", post(station::acknowledge))
        .route("/screen/logout", post(signin::logout))
        .route(
            "/screen/pins",
            get(signin::pins_page).post(signin::unlock_pins),
        )
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            require_sign_in,
        ));
    Router::new()
        .route("/", get(|| async { Redirect::to("/screen") }))
        .route("/screen/login", get(signin::login_page).post(signin::login))
        .route(CSS_PATH, get(|| asset("text/css; charset=utf-8", CSS)))
        .route(
            SCREEN_CSS_PATH,
            get(|| asset("text/css; charset=utf-8", SCREEN_CSS)),
        )
        .route(
            SCRIPT_PATH,
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .merge(signed_in)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn_with_state(CSP, http::security_headers))
        .with_state(shared)
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// How the request reached the appliance: the HTTP server puts it in every request's
/// extensions; a router served some other way (none today) counts as plain HTTP.
type Via = Option<axum::Extension<Transport>>;

fn transport(via: &Via) -> Transport {
    via.as_ref().map_or(Transport::Plain, |t| t.0)
}

fn set_cookie(via: &Via, value: &str, max_age_s: Option<i64>) -> HeaderValue {
    set_named_cookie(via, COOKIE, value, max_age_s)
}

fn set_named_cookie(via: &Via, name: &str, value: &str, max_age_s: Option<i64>) -> HeaderValue {
    HeaderValue::from_str(&http::session_cookie_over(
        transport(via),
        name,
        value,
        max_age_s,
    ))
    .unwrap_or(HeaderValue::from_static(""))
}

async fn require_sign_in(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    let token = http::cookie(req.headers(), COOKIE).map(str::to_owned);
    let viewer = token.and_then(|t| {
        s.api.security.sessions.touch(&t).map(|v| Viewer {
            id: v.principal.id,
            name: v.principal.name,
            role: v.principal.role,
            csrf: v.csrf,
            token: t,
            zone: vigil_shared::zone::SiteZone::utc(),
        })
    });
    let Some(mut viewer) = viewer else {
        return Redirect::to("/screen/login").into_response();
    };
    viewer.zone = site_zone(&s).await;
    let entry = Entry::for_request("screen", &viewer.id, &req);
    if let Err(e) = s.api.security.audit.record_async(entry).await {
        tracing::error!(error = %e, "cannot write the audit log; room screen request refused");
        return error_page(
            &viewer,
            StatusCode::SERVICE_UNAVAILABLE,
            "the appliance cannot write its audit log, so it shows no patient data; tell IT",
        );
    }
    req.extensions_mut().insert(viewer);
    next.run(req).await
}

/// A form posted by the signed-in person, read and checked before its handler runs: an
/// unreadable form is answered 400 and a missing or wrong CSRF token 403, each as a page. The
/// handler gets the viewer and the form's other fields.
pub(crate) struct CsrfForm<T>(pub(crate) Viewer, pub(crate) T);

/// Every form's CSRF field, beside the form's own fields.
#[derive(Deserialize)]
struct WithCsrf<T> {
    csrf: Option<String>,
    #[serde(flatten)]
    form: T,
}

/// A form with no fields but its CSRF token (sign-out).
#[derive(Debug, Deserialize)]
pub(crate) struct NoFields {}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        // Routes with forms sit behind `require_sign_in`, which puts the viewer here.
        let Some(viewer) = req.extensions().get::<Viewer>().cloned() else {
            return Err(Redirect::to("/screen/login").into_response());
        };
        let Ok(Form(f)) = Form::<WithCsrf<T>>::from_request(req, state).await else {
            return Err(error_page(
                &viewer,
                StatusCode::BAD_REQUEST,
                "unreadable form",
            ));
        };
        http::check_csrf(&viewer.csrf, f.csrf.as_deref()).map_err(IntoResponse::into_response)?;
        Ok(CsrfForm(viewer, f.form))
    }
}

/// The hidden field carrying the viewer's CSRF token, in every form.
pub(crate) fn csrf_input(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.csrf); }
}

/// A page without the signed-in frame.
fn bare(title: &str, body: Markup) -> Html<String> {
    Html(layout::bare(title, assets(), body).into_string())
}

/// The screen's own stylesheet and script, in the head of every page.
fn assets() -> Markup {
    html! {
        link rel="stylesheet" href=(SCREEN_CSS_PATH);
        script src=(SCRIPT_PATH) defer {}
    }
}

/// Sections of the top bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Room,
    Patients,
    Safe,
    Station,
}

/// A signed-in page in the shared frame.
pub(crate) fn frame(viewer: &Viewer, section: Section, title: &str, body: Markup) -> Response {
    let nav = [
        ("/screen", "Room", Section::Room),
        ("/screen/patients", "Patients", Section::Patients),
        ("/screen/ledger", "Safe", Section::Safe),
        ("/station", "Station", Section::Station),
    ];
    let links: Vec<NavLink<'_>> = nav
        .iter()
        .map(|(href, label, s)| NavLink {
            href,
            label,
            active: *s == section,
        })
        .collect();
    let account = html! {
        span id="whoami" { (viewer.name) " · " (viewer.role.label()) }
        form method="post" action="/screen/logout" {
            (csrf_input(viewer))
            button type="submit" id="logout" { "Sign out" }
        }
    };
    Html(
        layout::page(Page {
            title,
            nav: &links,
            account,
            head: assets(),
            body,
        })
        .into_string(),
    )
    .into_response()
}

/// An error page in the frame.
pub(crate) fn error_page(viewer: &Viewer, status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        h1 { (title) }
        p.error id="error" { (message) }
        p { a href="/screen" { "Back to the room" } }
    };
    (status, frame(viewer, Section::Room, title, body)).into_response()
}

/// A status and a message for a person: what a page shows when something fails.
pub(crate) type Failure = (StatusCode, String);

/// What a refused or failed recorder command shows (as the JSON API answers it).
pub(crate) fn refusal(e: RecorderError) -> Failure {
    match &e {
        RecorderError::NotFound(_) => (StatusCode::NOT_FOUND, e.to_string()),
        RecorderError::Conflict(_) => (StatusCode::CONFLICT, e.to_string()),
        RecorderError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        RecorderError::Busy | RecorderError::Stopped => {
            (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        RecorderError::Store(st) if st.is_full() => (
            StatusCode::INSUFFICIENT_STORAGE,
            "the appliance's disk is full; free space".to_owned(),
        ),
        RecorderError::Store(_) | RecorderError::Doc(_) => {
            tracing::error!(error = %e, "room screen request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the appliance log".to_owned(),
            )
        }
    }
}

/// The error page for a failure.
pub(crate) fn fail(viewer: &Viewer, (status, msg): Failure) -> Response {
    error_page(viewer, status, &msg)
}

/// Runs a read on a blocking thread with a read-only connection.
pub(crate) async fn read<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, RecorderError> + Send + 'static,
) -> Result<T, Failure> {
    let path = s.api.db_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        let conn = store::open_reader(&path)?;
        f(&conn)
    })
    .await;
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "room screen read failed");
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the appliance log".to_owned(),
            ))
        }
        Err(_) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the appliance log".to_owned(),
        )),
    }
}

/// A patient's record, or the 404 page.
pub(crate) async fn patient_or_404(
    s: &Shared,
    v: &Viewer,
    id: &str,
) -> Result<PatientRecord, Response> {
    let pid = id.to_owned();
    match read(s, move |conn| load::patient(conn, &pid)).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(error_page(
            v,
            StatusCode::NOT_FOUND,
            &format!("patient {id} not found"),
        )),
        Err(e) => Err(fail(v, e)),
    }
}

/// What a session's pages show: the session, its patient and the staff names.
pub(crate) struct SessionPage {
    pub(crate) parts: load::SessionParts,
    pub(crate) patient: Option<PatientRecord>,
    pub(crate) names: BTreeMap<String, String>,
}

impl SessionPage {
    /// The patient's name, or their id when the record isn't on this appliance.
    pub(crate) fn patient_name(&self) -> String {
        self.patient
            .as_ref()
            .map_or_else(|| self.parts.meta.patient_id.clone(), view::patient_name)
    }
}

/// A session with its patient and the staff names, or the 404 page.
pub(crate) async fn session_or_404(
    s: &Shared,
    v: &Viewer,
    id: &str,
) -> Result<SessionPage, Response> {
    let (site, _) = site_room(s);
    let sid = id.to_owned();
    let loaded = read(s, move |conn| {
        let Some(parts) = load::session(conn, &sid)? else {
            return Ok(None);
        };
        let patient = load::patient(conn, &parts.meta.patient_id)?;
        let names = load::staff_names(conn, &site);
        Ok(Some(SessionPage {
            parts,
            patient,
            names,
        }))
    })
    .await;
    match loaded {
        Ok(Some(x)) => Ok(x),
        Ok(None) => Err(error_page(
            v,
            StatusCode::NOT_FOUND,
            &format!("session {id} not found"),
        )),
        Err(e) => Err(fail(v, e)),
    }
}

/// The site and room this appliance serves.
pub(crate) fn site_room(s: &Shared) -> (String, String) {
    s.api
        .status
        .lock()
        .map(|st| (st.site.clone(), st.room.clone()))
        .unwrap_or_default()
}

/// The site's time zone as the cloud last sent it in the site configuration; UTC before the
/// first sync or when the document can't be read (times then say UTC, nothing stops).
pub(crate) async fn site_zone(s: &Shared) -> vigil_shared::zone::SiteZone {
    let (site, _) = site_room(s);
    read(s, move |conn| {
        Ok(crate::reads::site_config_doc(conn, &site)?.map(|d| d.zone()))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(vigil_shared::zone::SiteZone::utc)
}

/// The site configuration as the cloud last sent it, with the staff list; `None` before the
/// first sync.
pub(crate) fn site_config(
    conn: &rusqlite::Connection,
    site: &str,
) -> Result<Option<SiteConfig>, RecorderError> {
    match crate::reads::site_config_doc(conn, site)? {
        Some(doc) => Ok(Some(doc.config()?)),
        None => Ok(None),
    }
}
