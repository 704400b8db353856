//! The regional manager's dashboard: server-rendered HTML pages (no JavaScript at all), the
//! stylesheet compiled into the binary, sign-in with browser sessions, CSV and FHIR downloads.
//!
//! - `GET /login`, `POST /login`, `POST /logout`; every other page needs a live session
//!   (cookie `vigil_session`: HttpOnly, SameSite=Strict) and otherwise redirects to the
//!   sign-in page. Sessions end after [`IDLE_TIMEOUT_US`](crate::auth::IDLE_TIMEOUT_US)
//!   without a request.
//! - Every form carries a CSRF token: the session's own after sign-in, a per-browser cookie
//!   for the sign-in form itself. A POST without the right token is refused with 403. Form
//!   bodies are limited to [`MAX_FORM_BYTES`].
//! - Sign-in is rate limited per (name, client) with a growing delay and per name and per
//!   client with a ceiling ([`crate::auth`]); the client is the address
//!   [`client_ip`](super::extract) finds, behind a trusted proxy its `X-Forwarded-For`.
//! - After sign-in the browser goes to `next` only if it is a local path (`safe_next`).
//! - The account page lists the user's API tokens (label, made, expires, last used) with a
//!   revoke button each; a new token or a new password needs the current password again. A new
//!   password ends every session of the user and revokes every token.
//! - Every page and download of patient data is written to the audit log before it is sent,
//!   and shows only the sites in the viewer's scope; another site's session is a 404.
//! - Responses carry a strict Content-Security-Policy (no scripts, styles only from
//!   [`CSS_PATH`]), `nosniff`, `no-store` and `frame-ancestors 'none'`.
//!
//! Pages are in [`pages`] (overview, sessions, session, attention, fleet, audit, account) and [`reports`]
//! (advisories, utilisation, outcomes), a module each. All of them are maud markup, so every
//! piece of text is escaped; the only markup taken in whole is the charts' SVG, which
//! `vigil_web::chart` escapes itself. The frame, badges and charts come from `vigil_web`; this
//! module adds HTTP, sessions, scope, sign-in and the frame's account area.

// A refusal is the early return of a handler, answered at once: an error that is a whole
// `Response` is the simplest shape, and it is built only on that path.
#![allow(clippy::result_large_err)]

mod pages;
mod reports;

pub use pages::overview::overview_html;
pub use pages::session::{ECG_DEFAULT_SPAN_S, session_html};
pub use reports::advisories::{SiteAdvisories, advisory_report};
pub use reports::outcomes::{SiteOutcome, outcome_report};
pub use reports::utilisation::{RoomUse, utilisation_report};

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_web::layout::{self, CSS, CSS_PATH, NavLink, Page};
use vigil_web::{http, url_encode};

use super::error::PageError;
pub(crate) use super::extract::Viewer;
use super::extract::{ClientIp, CsrfForm, NoFields, client_ip};
use super::state::Shared;
use crate::auth::{BAD_LOGIN, Login, Role, random_token, same};
use crate::clock::now_us;
use pages::{account, attention, audit, fleet, overview, session, sessions};
use reports::{advisories, ledger, outcomes, utilisation};

/// Largest form body the dashboard reads: its forms carry a token, a name, a password or two
/// and a label (well under 2 KB); 16 KB leaves room and still refuses uploads at once.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// The session cookie.
pub const SESSION_COOKIE: &str = "vigil_session";

/// The cookie holding the sign-in form's CSRF token (before there is a session).
pub const LOGIN_CSRF_COOKIE: &str = "vigil_login_csrf";

/// The policy every dashboard response carries: nothing runs, styles come from our own
/// stylesheet, forms post only here, no framing.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// A store read for a page: failures are answered as HTML pages, not JSON.
pub(crate) async fn read<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&crate::store::CloudStore) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, PageError> {
    super::state::read(s, f).await.map_err(PageError::from)
}

/// The dashboard's routes, merged with the API's into one router.
pub(crate) fn routes(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    let signed_in = Router::new()
        .route("/", get(overview::page))
        .route("/sessions", get(sessions::page))
        .route("/sessions.csv", get(sessions::csv))
        .route("/sessions/{id}", get(session::page))
        .route("/sessions/{id}/fhir", get(session::fhir))
        .route("/reports/advisories", get(advisories::page))
        .route("/reports/advisories.csv", get(advisories::csv))
        .route("/reports/utilisation", get(utilisation::page))
        .route("/reports/utilisation.csv", get(utilisation::csv))
        .route("/reports/outcomes", get(outcomes::page))
        .route("/reports/outcomes.csv", get(outcomes::csv))
        .route("/attention", get(attention::page))
        .route("/fleet", get(fleet::page))
        .route("/ledger", get(ledger::page))
        .route("/ledger.csv", get(ledger::csv))
        .route("/audit", get(audit::page))
        .route("/audit.csv", get(audit::csv))
        .route("/account", get(account::page))
        .route("/account/tokens", post(account::new_token))
        .route("/account/tokens/revoke", post(account::revoke_token))
        .route("/account/password", post(account::change_password))
        .route("/logout", post(logout))
        .layer(middleware::from_fn_with_state(shared, require_session));
    Router::new()
        .route("/login", get(login_page).post(login))
        .route(CSS_PATH, get(stylesheet))
        .merge(signed_in)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn_with_state(CSP, http::security_headers))
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

pub(crate) fn set_cookie(name: &str, value: &str, max_age_s: Option<i64>) -> HeaderValue {
    HeaderValue::from_str(&http::session_cookie(name, value, max_age_s))
        .unwrap_or(HeaderValue::from_static(""))
}

/// Longest `next` path kept; a longer one goes to `/`.
const MAX_NEXT_LEN: usize = 2048;

/// A path to return to after sign-in: a local absolute path, else `/`. It must start with a
/// single `/` and hold only visible ASCII without a backslash: browsers read `//host`, `/\host`
/// and paths with tabs or line breaks removed (`/\t/host`) as another site, and a header value
/// cannot carry controls or non-ASCII bytes.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.len() <= MAX_NEXT_LEN
                && n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n.into()
        }
        _ => "/".into(),
    }
}

/// A `303 See Other` to a local path; `/` if the path cannot be a header value (never, for
/// what [`safe_next`] returns), so that no redirect can fail.
pub(crate) fn see_other(path: &str) -> Response {
    let location = HeaderValue::from_str(path).unwrap_or(HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

async fn require_session(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let found = match http::cookie(req.headers(), SESSION_COOKIE).map(str::to_owned) {
        Some(c) => {
            let shared = s.clone();
            match tokio::task::spawn_blocking(move || shared.auth.session(&c, now_us())).await {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => return PageError::from(e).into_response(),
                Err(_) => return PageError::internal().into_response(),
            }
        }
        None => None,
    };
    let Some((who, csrf)) = found else {
        let target = req
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        return see_other(&format!("/login?next={}", url_encode(&target)));
    };
    let ip = client_ip(&req, &s.state.http.trusted_proxies);
    req.extensions_mut().insert(Viewer { who, csrf });
    req.extensions_mut().insert(ip);
    next.run(req).await
}

/// A page without the signed-in frame (sign-in, errors before sign-in).
fn bare_page(title: &str, body: Markup) -> Markup {
    layout::bare(title, Markup::default(), body)
}

/// The hidden input that carries a form's CSRF token.
pub(crate) fn csrf_input(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A table row saying the table is empty, across `columns` columns.
pub(crate) fn empty_row(columns: u32, text: &str) -> Markup {
    html! { tr { td colspan=(columns) class="muted" { (text) } } }
}

/// Sections of the top bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Overview,
    Sessions,
    Advisories,
    Utilisation,
    Outcomes,
    Attention,
    Fleet,
    Ledger,
    Audit,
    Account,
}

/// A signed-in page in the shared frame.
pub(crate) fn frame(viewer: &Viewer, section: Section, title: &str, body: Markup) -> Response {
    let mut nav = vec![
        ("/", "Overview", Section::Overview),
        ("/sessions", "Sessions", Section::Sessions),
        ("/reports/advisories", "Advisories", Section::Advisories),
        ("/reports/utilisation", "Utilisation", Section::Utilisation),
        ("/reports/outcomes", "Outcomes", Section::Outcomes),
        ("/attention", "Attention", Section::Attention),
    ];
    if viewer.who.manages_sites() {
        nav.push(("/fleet", "Fleet", Section::Fleet));
        nav.push(("/ledger", "Ledger", Section::Ledger));
    }
    if viewer.who.role == Role::Admin {
        nav.push(("/audit", "Audit log", Section::Audit));
    }
    let links: Vec<NavLink<'_>> = nav
        .iter()
        .map(|(href, label, s)| NavLink {
            href,
            label,
            active: *s == section,
        })
        .collect();
    let account = html! {
        a href="/account" class="muted" id="whoami" {
            (viewer.who.username) " · " (viewer.who.describe())
        }
        form method="post" action="/logout" {
            (csrf_input(&viewer.csrf))
            button type="submit" id="logout" { "Sign out" }
        }
    };
    layout::page(Page {
        title,
        nav: &links,
        account,
        head: Markup::default(),
        body,
    })
    .into_response()
}

/// An error page in the frame.
pub(crate) fn error_page(viewer: &Viewer, status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        h1 { (title) }
        p.error { (message) }
    };
    (status, frame(viewer, Section::Overview, title, body)).into_response()
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// The sign-in page, with why the last attempt failed if it did.
fn sign_in_page(csrf: &str, next: &str, error: Option<&str>) -> Markup {
    bare_page(
        "Sign in",
        html! {
            form class="login" method="post" action="/login" {
                h1 { "Sign in to Vigil" }
                @if let Some(error) = error {
                    p class="error" id="login-error" { (error) }
                }
                (csrf_input(csrf))
                input type="hidden" name="next" value=(next);
                label {
                    "User name"
                    input name="username" id="username" autocomplete="username" required;
                }
                label {
                    "Password"
                    input name="password" id="password" type="password"
                        autocomplete="current-password" required;
                }
                button class="primary" type="submit" id="signin" { "Sign in" }
            }
        },
    )
}

async fn login_page(
    headers: HeaderMap,
    q: Result<axum::extract::Query<LoginQuery>, QueryRejection>,
) -> Response {
    let next = safe_next(q.as_ref().ok().and_then(|q| q.next.as_deref()));
    // Reuse the browser's sign-in token if it has one, so two open tabs both work.
    let csrf = http::cookie(&headers, LOGIN_CSRF_COOKIE)
        .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(random_token, str::to_owned);
    let mut res = sign_in_page(&csrf, &next, None).into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, &csrf, None),
    );
    res
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    username: Option<String>,
    password: Option<String>,
    csrf: Option<String>,
    next: Option<String>,
}

async fn login(State(s): State<Arc<Shared>>, headers: HeaderMap, req: Request) -> Response {
    let ip = client_ip(&req, &s.state.http.trusted_proxies);
    let Ok(Form(form)) = Form::<LoginForm>::from_request(req, &()).await else {
        let body = html! { p.error { "Unreadable form." } };
        return (StatusCode::BAD_REQUEST, bare_page("Sign in", body)).into_response();
    };
    let expected = http::cookie(&headers, LOGIN_CSRF_COOKIE);
    let csrf_ok = matches!((expected, form.csrf.as_deref()),
        (Some(e), Some(p)) if same(e.as_bytes(), p.as_bytes()));
    if !csrf_ok {
        return http::CsrfRefused.into_response();
    }
    let csrf = expected.unwrap_or_default().to_owned();
    let next = safe_next(form.next.as_deref());
    let username = form.username.unwrap_or_default().trim().to_owned();
    let password = form.password.unwrap_or_default();
    let (shared, ip_text, user) = (s.clone(), ip.0.clone(), username.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        shared.auth.login(&user, &password, &ip_text, now_us())
    })
    .await;
    match outcome {
        Ok(Ok(Login::Ok { cookie, .. })) => {
            tracing::info!(user = %username, ip = %ip.0, "signed in");
            let mut res = see_other(&next);
            res.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &cookie, None),
            );
            res
        }
        Ok(Ok(Login::Refused)) => {
            tracing::warn!(user = %username, ip = %ip.0, "sign-in refused");
            (
                StatusCode::UNAUTHORIZED,
                sign_in_page(&csrf, &next, Some(BAD_LOGIN)),
            )
                .into_response()
        }
        Ok(Ok(Login::Limited { retry_after_s })) => {
            tracing::warn!(user = %username, ip = %ip.0, "sign-in rate limited");
            let message = wait_message(retry_after_s);
            limited(sign_in_page(&csrf, &next, Some(&message)), retry_after_s)
        }
        Ok(Err(e)) => PageError::from(e).into_response(),
        Err(_) => PageError::internal().into_response(),
    }
}

/// What a person is told when the limiter refused an attempt.
pub(crate) fn wait_message(retry_after_s: u64) -> String {
    let wait = if retry_after_s < 120 {
        format!("{retry_after_s} seconds")
    } else {
        format!("{} minutes", retry_after_s.div_ceil(60))
    };
    format!("too many failed sign-ins; wait {wait} and try again")
}

/// A 429 with its `Retry-After`.
pub(crate) fn limited(body: impl IntoResponse, retry_after_s: u64) -> Response {
    let mut res = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    res
}

use axum::extract::FromRequest as _;

async fn logout(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    CsrfForm(_, NoFields {}): CsrfForm<NoFields>,
) -> Response {
    if let Some(c) = http::cookie(&headers, SESSION_COOKIE).map(str::to_owned) {
        let shared = s.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || shared.auth.logout(&c)).await {
            return PageError::from(e).into_response();
        }
    }
    let mut res = see_other("/login");
    res.headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0)));
    res
}

/// A CSV download.
pub(crate) fn csv_response(filename: &str, body: String) -> Response {
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

/// Audits a page view; on failure the page is not shown.
pub(crate) async fn audit_view(
    s: &Arc<Shared>,
    viewer: &Viewer,
    ip: &ClientIp,
    action: &str,
    target: &str,
) -> Result<(), Response> {
    super::state::audit(s, &viewer.who, ip, action, target)
        .await
        .map_err(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_paths_stay_local() {
        let long = format!("/{}", "a".repeat(MAX_NEXT_LEN));
        let cases = [
            (None, "/"),
            (Some(""), "/"),
            (Some("/"), "/"),
            (Some("/sessions?site=austin"), "/sessions?site=austin"),
            (
                Some("/sessions/s-1?ecg_from=20&ecg_span=5#ecg"),
                "/sessions/s-1?ecg_from=20&ecg_span=5#ecg",
            ),
            (Some("/reports/outcomes%0A"), "/reports/outcomes%0A"),
            (Some("//evil.example/"), "/"),
            (Some("///evil.example/"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("evil.example"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/sessions\\..\\x"), "/"),
            (Some("/\t/evil.example/"), "/"),
            (Some("/\n/x"), "/"),
            (Some("/\r\nSet-Cookie: a=b"), "/"),
            (Some("/ /evil.example"), "/"),
            (Some("/\u{0}"), "/"),
            (Some("/\u{7f}"), "/"),
            (Some("/caf\u{e9}"), "/"),
            (Some("/\u{2215}\u{2215}evil.example"), "/"),
            (Some(long.as_str()), "/"),
        ];
        for (input, expected) in cases {
            let next = safe_next(input);
            assert_eq!(next, expected, "{input:?}");
            // Whatever was asked, the redirect is built and goes where it should.
            let res = see_other(&next);
            assert_eq!(res.status(), StatusCode::SEE_OTHER);
            assert_eq!(res.headers()[header::LOCATION], expected, "{input:?}");
        }
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; vigil_session=abc"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(http::cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(http::cookie(&h, "b"), Some("2"));
        assert_eq!(http::cookie(&h, "vigil"), None);
    }
}
