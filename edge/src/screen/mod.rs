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
//!   appliance keeps the signed-in list in memory (a restart signs everyone out). Every form
//!   carries the session's CSRF token, the sign-in form a per-browser one held in a cookie, as
//!   the cloud dashboard does; a POST without the right token is refused with 403.
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use vigil_shared::doc::{DocKind, SiteConfig, SiteConfigDoc, StaffMember};
use vigil_shared::ui::http::Transport;
use vigil_shared::ui::layout::{self, CSS, CSS_PATH, NavLink, Page};
use vigil_shared::ui::{Esc, http};

use crate::api::{ApiState, Command, Reply};
use crate::recorder::RecorderError;
use crate::store;

/// The session cookie of the room screen.
pub const COOKIE: &str = "vigil_room";

/// The cookie holding the sign-in form's CSRF token (before there is a session).
pub const LOGIN_CSRF_COOKIE: &str = "vigil_room_login_csrf";

/// Where the room screen lives.
pub const BASE: &str = "/screen";

/// A signed-in tablet is signed out after this long without a request: long enough for an
/// infusion watched without touching the screen, short enough that a tablet left in a room
/// overnight is not signed in the next morning.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// Signed-in browsers kept; the oldest is signed out past this. A room has a few tablets.
pub const MAX_SIGNED_IN: usize = 64;

/// Wrong PINs for one person before their name is locked for [`LOCKOUT`]. With four-digit
/// PINs, five tries in ten minutes make guessing take weeks.
pub const MAX_PIN_FAILURES: u32 = 5;

/// How long a name stays locked after [`MAX_PIN_FAILURES`] wrong PINs.
pub const LOCKOUT: Duration = Duration::from_secs(600);

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
    /// `nurse`, `clinician`, `front_desk`.
    pub(crate) role: String,
    /// The CSRF token of this sign-in.
    pub(crate) csrf: String,
}

impl Viewer {
    pub(crate) fn is_clinician(&self) -> bool {
        self.role == "clinician"
    }

    /// Whether this person may record the infusion itself (start, dose, side effects, scores,
    /// advisories, discharge): nurses and clinicians. The front desk registers patients and
    /// records screening answers (DESIGN.md's "who uses it").
    pub(crate) fn may_treat(&self) -> bool {
        self.role == "nurse" || self.role == "clinician"
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

#[derive(Debug)]
struct SignedIn {
    viewer: Viewer,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    since: Option<Instant>,
}

/// What the screen's handlers share.
#[derive(Debug)]
pub(crate) struct Screen {
    pub(crate) api: ApiState,
    signed_in: Mutex<HashMap<String, SignedIn>>,
    failures: Mutex<HashMap<String, Failures>>,
}

pub(crate) type Shared = Arc<Screen>;

/// The room screen's routes, merged into the appliance's HTTP server.
pub fn router(api: ApiState) -> Router {
    let shared = Arc::new(Screen {
        api,
        signed_in: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
    });
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
        .layer(middleware::from_fn_with_state(
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

/// 32 random bytes as hex.
pub(crate) fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    // aws-lc-rs's system random fails only if the OS has no entropy source at all; a token of
    // zeros would be guessable, so that case must stop the request instead.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        panic!("the operating system's random source failed");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison.
fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
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
        let mut map = s.signed_in.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, v| now.duration_since(v.last_seen) < IDLE_TIMEOUT);
        map.get_mut(&t).map(|v| {
            v.last_seen = now;
            v.viewer.clone()
        })
    });
    match viewer {
        Some(v) => {
            req.extensions_mut().insert(v);
            next.run(req).await
        }
        None => Redirect::to("/screen/login").into_response(),
    }
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
    Html(with_assets(layout::render(&Page {
        title,
        nav: &[],
        account: "",
        body,
    })))
}

/// Adds the screen's stylesheet and script to a page of the shared layout.
fn with_assets(html: String) -> String {
    html.replacen(
        "</head>",
        &format!(
            r#"<link rel="stylesheet" href="{SCREEN_CSS_PATH}"><script src="{SCRIPT_PATH}" defer></script></head>"#
        ),
        1,
    )
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
        Esc(&viewer.role.replace('_', " ")),
        Esc(&viewer.csrf)
    );
    Html(with_assets(layout::render(&Page {
        title,
        nav: &links,
        account: &account,
        body,
    })))
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

/// The site configuration as the cloud last sent it, with the staff list; `None` before the
/// first sync.
pub(crate) fn site_config(
    conn: &rusqlite::Connection,
    site: &str,
) -> Result<Option<SiteConfig>, RecorderError> {
    match store::load_document(conn, site)? {
        Some((kind, mut doc)) if kind == DocKind::SiteConfig.as_str() => {
            Ok(Some(SiteConfigDoc::load(&doc.save())?.config()?))
        }
        _ => Ok(None),
    }
}

/// The site's infusion limits from its configuration, or the defaults when it sets none (or
/// sets ones that don't make sense, which is logged).
pub(crate) fn infusion_limits(
    conn: &rusqlite::Connection,
    site: &str,
) -> vigil_shared::clinical::InfusionLimits {
    let stored = match store::load_document(conn, site) {
        Ok(Some((kind, mut doc))) if kind == DocKind::SiteConfig.as_str() => {
            SiteConfigDoc::load(&doc.save()).and_then(|d| d.infusion_limits())
        }
        _ => Ok(None),
    };
    match stored {
        Ok(Some(l)) if l.validate().is_ok() => l,
        Ok(None) => Default::default(),
        Ok(Some(_)) | Err(_) => {
            tracing::warn!(%site, "the site's infusion limits are unreadable or out of range; using the defaults");
            Default::default()
        }
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
        .map_or_else(random_token, str::to_owned)
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
    // The lock is per name: a wrong PIN for one person does not lock out the others.
    {
        let mut failures = s.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut empty = Failures::default();
        let f = failures.get_mut(&id).unwrap_or(&mut empty);
        if let Some(since) = f.since
            && since.elapsed() >= LOCKOUT
        {
            *f = Failures::default();
        }
        if f.count >= MAX_PIN_FAILURES {
            let msg = format!(
                "too many wrong PINs for this name; wait {} minutes or ask a colleague to sign in",
                LOCKOUT.as_secs() / 60
            );
            return refuse(StatusCode::TOO_MANY_REQUESTS, &msg);
        }
    }
    let member = staff.iter().find(|m| m.id == id).cloned();
    let hash = member
        .as_ref()
        .map(|m| m.pin_hash.clone())
        .unwrap_or_default();
    let ok = pin.len() <= 64
        && tokio::task::spawn_blocking(move || pin_matches(&pin, &hash))
            .await
            .unwrap_or(false);
    let Some(member) = member.filter(|_| ok) else {
        // Only names on the staff list are counted, so made-up names can't grow the map.
        if staff.iter().any(|m| m.id == id) {
            let mut failures = s.failures.lock().unwrap_or_else(|e| e.into_inner());
            let f = failures.entry(id.clone()).or_default();
            f.count += 1;
            f.since.get_or_insert_with(Instant::now);
        }
        tracing::warn!(staff = %id, "room screen sign-in refused");
        return refuse(StatusCode::UNAUTHORIZED, BAD_PIN);
    };
    s.failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    let token = random_token();
    {
        let mut map = s.signed_in.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SIGNED_IN
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, v)| v.last_seen)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            token.clone(),
            SignedIn {
                viewer: Viewer {
                    id: member.id.clone(),
                    name: member.name.clone(),
                    role: member.role.clone(),
                    csrf: random_token(),
                },
                last_seen: Instant::now(),
            },
        );
    }
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
    headers: HeaderMap,
    axum::Extension(viewer): axum::Extension<Viewer>,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(r) = check_csrf(&viewer, form.as_ref().ok().and_then(|f| f.csrf.as_deref())) {
        return r;
    }
    if let Some(t) = cookie(&headers, COOKIE) {
        s.signed_in
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(t);
    }
    let mut res = Redirect::to("/screen/login").into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&via, "", Some(0)));
    res
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
