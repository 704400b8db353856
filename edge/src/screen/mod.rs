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
//! - Wrong PINs are counted per (name, client) with growing delays ([`throttle`]), so guesses
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

mod live;
mod pages;
pub mod throttle;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use vigil_shared::doc::{SiteConfig, StaffMember};
use vigil_web::http::Transport;
use vigil_web::layout::{self, CSS, CSS_PATH, NavLink, Page};
use vigil_web::{Esc, http};

use crate::access::{Principal, Role, same};
use crate::api::{ApiState, Command, Reply};
use crate::audit::Entry;
use crate::recorder::RecorderError;
use crate::store;

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
        .route("/screen", get(pages::home))
        .route("/screen/", get(pages::home))
        .route(
            "/screen/patients",
            get(pages::patients).post(pages::register),
        )
        .route(
            "/screen/patients/{id}/checkin",
            get(pages::checkin).post(pages::checkin_submit),
        )
        .route("/screen/patients/{id}/course", get(pages::course))
        .route("/screen/sessions/{id}", get(pages::session))
        .route("/screen/sessions/{id}/live", get(live::stream))
        .route("/screen/sessions/{id}/dose", post(pages::dose))
        .route("/screen/sessions/{id}/effect", post(pages::effect))
        .route("/screen/sessions/{id}/note", post(pages::note))
        .route("/screen/sessions/{id}/ack", post(pages::acknowledge))
        .route("/screen/sessions/{id}/after", get(pages::after))
        .route("/screen/sessions/{id}/score", post(pages::score))
        .route("/screen/sessions/{id}/discharge", post(pages::discharge))
        .route("/screen/logout", post(logout))
        .route("/screen/pins", get(pins_page).post(unlock_pins))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            require_sign_in,
        ));
    Router::new()
        .route("/", get(|| async { Redirect::to("/screen") }))
        .route("/screen/login", get(login_page).post(login))
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
        .layer(middleware::from_fn(security_headers))
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

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    for (name, value) in http::SECURITY_HEADERS {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static(http::DEFAULT_CACHE_CONTROL));
    res
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let values = headers.get_all(header::COOKIE).into_iter();
    http::cookie_value(values.filter_map(|v| v.to_str().ok()), name)
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
    let token = cookie(req.headers(), COOKIE).map(str::to_owned);
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

/// Refuses a form whose CSRF token is missing or wrong.
pub(crate) fn check_csrf(viewer: &Viewer, presented: Option<&str>) -> Result<(), Response> {
    match presented {
        Some(p) if same(p, &viewer.csrf) => Ok(()),
        _ => Err((
            StatusCode::FORBIDDEN,
            bare(
                "Refused",
                "<h1>Refused</h1><p class=\"error\">This form is missing its security token or \
                 the token is out of date. Go back, reload the page and try again.</p>",
            ),
        )
            .into_response()),
    }
}

/// A page without the signed-in frame.
fn bare(title: &str, body: &str) -> Html<String> {
    Html(layout::bare(title, assets(), maud::PreEscaped(body.to_owned())).into_string())
}

/// The screen's own stylesheet and script, in the head of every page.
fn assets() -> maud::Markup {
    maud::html! {
        link rel="stylesheet" href=(SCREEN_CSS_PATH);
        script src=(SCRIPT_PATH) defer {}
    }
}

/// Sections of the top bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Room,
    Patients,
}

/// A signed-in page in the shared frame.
pub(crate) fn frame(viewer: &Viewer, section: Section, title: &str, body: &str) -> Response {
    let nav = [
        ("/screen", "Room", Section::Room),
        ("/screen/patients", "Patients", Section::Patients),
    ];
    let links: Vec<NavLink<'_>> = nav
        .iter()
        .map(|(href, label, s)| NavLink {
            href,
            label,
            active: *s == section,
        })
        .collect();
    let account = format!(
        r#"<span id="whoami">{} · {}</span><form method="post" action="/screen/logout"><input type="hidden" name="csrf" value="{}"><button type="submit" id="logout">Sign out</button></form>"#,
        Esc(&viewer.name),
        Esc(viewer.role.label()),
        Esc(&viewer.csrf)
    );
    Html(
        layout::page(Page {
            title,
            nav: &links,
            account: maud::PreEscaped(account),
            head: assets(),
            body: maud::PreEscaped(body.to_owned()),
        })
        .into_string(),
    )
    .into_response()
}

/// An error page in the frame.
pub(crate) fn error_page(viewer: &Viewer, status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<h1>{}</h1><p class=\"error\" id=\"error\">{}</p><p><a href=\"/screen\">Back to the room</a></p>",
        Esc(title),
        Esc(message)
    );
    (status, frame(viewer, Section::Room, title, &body)).into_response()
}

/// Sends a command to the recorder and waits for the answer (as the JSON API does).
pub(crate) async fn call<T: Send + 'static>(
    s: &Shared,
    make: impl FnOnce(Reply<T>) -> Command,
) -> Result<T, (StatusCode, String)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.api.commands.try_send(make(tx)).map_err(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the recorder is busy; try again in a moment".to_owned(),
        )
    })?;
    let result = rx.await.map_err(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the recorder stopped before answering".to_owned(),
        )
    })?;
    result.map_err(|e| match &e {
        RecorderError::NotFound(_) => (StatusCode::NOT_FOUND, e.to_string()),
        RecorderError::Conflict(_) => (StatusCode::CONFLICT, e.to_string()),
        RecorderError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
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
    })
}

/// Runs a read on a blocking thread with a read-only connection.
pub(crate) async fn read<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, RecorderError> + Send + 'static,
) -> Result<T, (StatusCode, String)> {
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

/// Whether `pin` matches a staff member's argon2id hash; a malformed hash matches nothing.
fn pin_matches(pin: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(pin.as_bytes(), &h)
            .is_ok()
    })
}

fn login_form(staff: &[StaffMember], site_name: &str, csrf: &str, error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!(r#"<p class="error" id="login-error">{}</p>"#, Esc(e))
    });
    if staff.is_empty() {
        return format!(
            r#"<div class="login card"><h1>Room screen</h1>{error}<p class="error" id="no-staff">This room has not received its site's staff list from the cloud yet, so nobody can sign in here. Connect the appliance to the clinic network once; after that, sign-in works with or without the network. Recording and the appliance's API are not affected.</p></div>"#
        );
    }
    let mut options = String::from(r#"<option value="">Choose your name</option>"#);
    for m in staff {
        options.push_str(&format!(
            r#"<option value="{}">{} ({})</option>"#,
            Esc(&m.id),
            Esc(&m.name),
            Esc(&m.role.replace('_', " "))
        ));
    }
    format!(
        r#"<form class="login" method="post" action="/screen/login"><h1>Room screen · {site}</h1>{error}
<input type="hidden" name="csrf" value="{csrf}">
<label>Name<select name="staff" id="staff" required>{options}</select></label>
<label>PIN<input name="pin" id="pin" type="password" inputmode="numeric" autocomplete="off" required></label>
<button class="primary big" type="submit" id="signin">Sign in</button></form>"#,
        site = Esc(site_name),
        csrf = Esc(csrf),
    )
}

/// The sign-in form's CSRF token: the browser's own, from [`LOGIN_CSRF_COOKIE`], or a new one.
fn login_csrf(headers: &HeaderMap) -> String {
    cookie(headers, LOGIN_CSRF_COOKIE)
        .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(crate::access::random_token, str::to_owned)
}

async fn load_staff(s: &Shared) -> Result<(String, Vec<StaffMember>), (StatusCode, String)> {
    let (site, _) = site_room(s);
    let config = read(s, move |conn| site_config(conn, &site)).await?;
    Ok(config.map_or((String::new(), Vec::new()), |c| (c.name, c.staff)))
}

async fn login_page(State(s): State<Shared>, via: Via, headers: HeaderMap) -> Response {
    let csrf = login_csrf(&headers);
    match load_staff(&s).await {
        Ok((name, staff)) => {
            let mut res = bare("Sign in", &login_form(&staff, &name, &csrf, None)).into_response();
            res.headers_mut().append(
                header::SET_COOKIE,
                set_named_cookie(&via, LOGIN_CSRF_COOKIE, &csrf, None),
            );
            res
        }
        Err((status, msg)) => (
            status,
            bare("Error", &format!("<p class=\"error\">{}</p>", Esc(&msg))),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    staff: Option<String>,
    pin: Option<String>,
    csrf: Option<String>,
}

/// The one message for a wrong PIN and an unknown name.
const BAD_PIN: &str = "wrong name or PIN";

async fn login(
    State(s): State<Shared>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    via: Via,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = login_csrf(&headers);
    let (site_name, staff) = match load_staff(&s).await {
        Ok(v) => v,
        Err((status, msg)) => {
            return (
                status,
                bare("Error", &format!("<p class=\"error\">{}</p>", Esc(&msg))),
            )
                .into_response();
        }
    };
    let refuse = |status: StatusCode, msg: &str| {
        (
            status,
            bare("Sign in", &login_form(&staff, &site_name, &csrf, Some(msg))),
        )
            .into_response()
    };
    let Ok(Form(form)) = form else {
        return refuse(StatusCode::BAD_REQUEST, "unreadable form");
    };
    // The form must come from a page this browser loaded (its cookie and field agree).
    let csrf_ok = matches!((cookie(&headers, LOGIN_CSRF_COOKIE), form.csrf.as_deref()),
        (Some(c), Some(f)) if same(c, f));
    if !csrf_ok {
        return refuse(
            StatusCode::FORBIDDEN,
            "this sign-in form is out of date; try again",
        );
    }
    let id = form.staff.unwrap_or_default();
    let pin = form.pin.unwrap_or_default();
    let client = peer.ip().to_string();
    // Only names on the staff list are counted, so made-up names can't grow the counts.
    let member = staff.iter().find(|m| m.id == id).cloned();
    let Some(member) = member else {
        return refuse(StatusCode::UNAUTHORIZED, BAD_PIN);
    };
    // The attempt is reserved before the PIN is checked: parallel guesses wait their turn.
    let security = s.api.security.clone();
    let reservation = match security.pins.reserve(&id, &client, Instant::now()) {
        Ok(r) => r,
        Err(wait) => {
            let msg = format!(
                "too many wrong PINs for this name from this device; wait {} s, sign in on \
                 another tablet, or ask a clinician to clear it",
                wait.as_secs().max(1)
            );
            return refuse(StatusCode::TOO_MANY_REQUESTS, &msg);
        }
    };
    let hash = member.pin_hash.clone();
    let ok = pin.len() <= 64
        && tokio::task::spawn_blocking(move || pin_matches(&pin, &hash))
            .await
            .unwrap_or(false);
    let role = Role::from_staff(&member.role);
    let now_us = s.api.status.lock().map(|st| st.now_us).unwrap_or_default();
    let settle_security = security.clone();
    let settled = tokio::task::spawn_blocking(move || {
        let conn = settle_security.audit.connection();
        settle_security
            .pins
            .settle(reservation, ok, Instant::now(), now_us, Some(&conn));
    })
    .await;
    if settled.is_err() {
        tracing::error!("settling a PIN attempt failed");
    }
    let action = if ok && role.is_some() {
        "screen sign-in"
    } else {
        "screen sign-in refused"
    };
    let entry = Entry {
        actor: id.clone(),
        action: action.into(),
        target: String::new(),
        client,
    };
    if let Err(e) = security.audit.record_async(entry).await {
        tracing::error!(error = %e, "cannot write the audit log; sign-in refused");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the appliance cannot write its audit log; tell IT",
        );
    }
    let (true, Some(role)) = (ok, role) else {
        tracing::warn!(staff = %id, "room screen sign-in refused");
        return refuse(StatusCode::UNAUTHORIZED, BAD_PIN);
    };
    let token = security.sessions.sign_in(Principal {
        id: member.id.clone(),
        name: member.name.clone(),
        role,
    });
    tracing::info!(staff = %member.id, "signed in at the room screen");
    let mut res = Redirect::to("/screen").into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&via, &token, None));
    res
}

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    pub(crate) csrf: Option<String>,
}

async fn logout(
    State(s): State<Shared>,
    via: Via,
    axum::Extension(viewer): axum::Extension<Viewer>,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(r) = check_csrf(&viewer, form.as_ref().ok().and_then(|f| f.csrf.as_deref())) {
        return r;
    }
    s.api.security.sessions.sign_out(&viewer.token);
    let mut res = Redirect::to("/screen/login").into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&via, "", Some(0)));
    res
}

/// `GET /screen/pins`: names with wrong PINs, and from which device; a clinician clears them.
async fn pins_page(
    State(s): State<Shared>,
    axum::Extension(viewer): axum::Extension<Viewer>,
) -> Response {
    let locked = s.api.security.pins.locked();
    let mut rows = String::new();
    for (staff, client, failures) in &locked {
        let button = if viewer.is_clinician() {
            format!(
                r#"<form method="post" action="/screen/pins"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="staff" value="{}"><button type="submit" class="unlock">Clear</button></form>"#,
                Esc(&viewer.csrf),
                Esc(staff)
            )
        } else {
            String::new()
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{failures}</td><td>{button}</td></tr>",
            Esc(staff),
            Esc(client)
        ));
    }
    let body = if locked.is_empty() {
        "<h1>Wrong PINs</h1><p id=\"no-locks\">Nobody is waiting after wrong PINs.</p>".to_owned()
    } else {
        format!(
            "<h1>Wrong PINs</h1><p>Each device waits longer after each wrong PIN for a name; \
             other devices are not affected. A clinician can clear a name once they know the \
             person.</p><table id=\"locks\"><tr><th>Name</th><th>Device</th><th>Wrong PINs</th><th></th></tr>{rows}</table>"
        )
    };
    frame(&viewer, Section::Room, "Wrong PINs", &body)
}

#[derive(Debug, Deserialize)]
struct UnlockForm {
    csrf: Option<String>,
    staff: Option<String>,
}

/// `POST /screen/pins`: a clinician clears a name's wrong-PIN counts.
async fn unlock_pins(
    State(s): State<Shared>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    form: Result<Form<UnlockForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error_page(&viewer, StatusCode::BAD_REQUEST, "unreadable form");
    };
    if let Err(r) = check_csrf(&viewer, form.csrf.as_deref()) {
        return r;
    }
    if !viewer.is_clinician() {
        return error_page(
            &viewer,
            StatusCode::FORBIDDEN,
            "only a clinician may clear another person's wrong PINs",
        );
    }
    let staff = form.staff.unwrap_or_default();
    let security = s.api.security.clone();
    let who = staff.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let conn = security.audit.connection();
        security.pins.unlock(&who, Some(&conn));
    })
    .await;
    tracing::info!(staff = %staff, by = %viewer.id, "wrong PINs cleared at the room screen");
    Redirect::to("/screen/pins").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_verify_against_argon2_hashes_only() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let hash = argon2::Argon2::default()
            .hash_password(b"2468", &salt)
            .unwrap()
            .to_string();
        assert!(pin_matches("2468", &hash));
        assert!(!pin_matches("2469", &hash));
        assert!(!pin_matches("2468", "2468"), "a clear PIN is not a hash");
        assert!(!pin_matches("", ""));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; vigil_room=abc"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "vigil"), None);
    }
}
