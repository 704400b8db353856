//! `GET /account` and its forms: the signed-in user's name, role and sites, their API tokens
//! (made, expiring, last used; revoke each), a form for a new token and one for a new
//! password, both asking for the current password again. Times in UTC: tokens belong to a
//! person, not to a site.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::zone::SiteZone;

use crate::auth::{
    Auth, AuthError, DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, MAX_TOKEN_LABEL, MIN_PASSWORD_LEN, Reauth,
    ScopeSites,
};
use crate::clock::now_us;
use crate::store::ApiTokenRow;
use crate::web::dashboard::{
    SESSION_COOKIE, Section, Viewer, audit_view, csrf_input, empty_row, error_page, frame, limited,
    see_other, set_cookie, wait_message,
};
use crate::web::error::PageError;
use crate::web::extract::{ClientIp, CsrfForm};
use crate::web::state::Shared;

/// What the account page says above its forms after an action.
enum Notice<'a> {
    /// A token was just made: shown once.
    NewToken(&'a str),
    /// An action was refused: why, and what to do.
    Error(&'a str),
}

/// The page's content: who, their tokens, the forms; `notice` above them.
fn account_body(
    viewer: &Viewer,
    tokens: &[ApiTokenRow],
    now_us: i64,
    notice: Option<Notice<'_>>,
) -> Markup {
    let scope = match viewer.who.scope().sites() {
        ScopeSites::All => "every site".to_owned(),
        ScopeSites::Only(s) if s.is_empty() => {
            "no site (the region has no configured site)".to_owned()
        }
        ScopeSites::Only(s) => s.iter().cloned().collect::<Vec<_>>().join(", "),
    };
    html! {
        h1 { "Account" }
        div.card {
            dl.facts {
                dt { "User" } dd { (viewer.who.username) }
                dt { "Role" } dd { (viewer.who.describe()) }
                dt { "Sites" } dd { (scope) }
            }
        }
        @match notice {
            Some(Notice::NewToken(t)) => p.card {
                "Your new API token (shown once; keep it secret): " code id="new-token" { (t) }
                br;
                "Use it as " code { "Authorization: Bearer TOKEN" } " on " code { "/api/v1" }
                "; it sees what you see here."
            },
            Some(Notice::Error(m)) => p.error id="account-error" { (m) },
            None => {}
        }
        h2 { "API tokens" }
        p.muted {
            "Times in UTC. A token stops working when it expires, when you revoke it and when \
             your password changes."
        }
        table id="tokens" {
            thead { tr { th { "Label" } th { "Made" } th { "Expires" } th { "Last used" } th {} } }
            tbody {
                @for t in tokens { (token_row(t, &viewer.csrf, now_us)) }
                @if tokens.is_empty() { (empty_row(5, "No API tokens.")) }
            }
        }
        (token_form(&viewer.csrf))
        h2 { "Password" }
        p.muted { "A new password signs you out everywhere and revokes all your API tokens." }
        (password_form(&viewer.csrf))
    }
}

/// One token, with the form that revokes it.
fn token_row(t: &ApiTokenRow, csrf: &str, now_us: i64) -> Markup {
    let utc = SiteZone::utc();
    html! {
        tr.token id={ "token-" (t.id) } {
            td { (t.label) }
            td { (utc.minute(t.created_us)) }
            td {
                (utc.minute(t.expires_us))
                @if now_us >= t.expires_us { " (expired)" }
            }
            td { (t.last_used_us.map_or_else(|| "never".to_owned(), |t| utc.minute(t))) }
            td {
                form method="post" action="/account/tokens/revoke" {
                    (csrf_input(csrf))
                    input type="hidden" name="id" value=(t.id);
                    button type="submit" id={ "revoke-" (t.id) } { "Revoke" }
                }
            }
        }
    }
}

/// The form for a new API token.
fn token_form(csrf: &str) -> Markup {
    html! {
        form method="post" action="/account/tokens" class="filters" {
            (csrf_input(csrf))
            label {
                "Token label"
                input name="label" id="token-label" value="dashboard" maxlength=(MAX_TOKEN_LABEL);
            }
            label {
                "Valid for (days)"
                input name="days" id="token-days" type="number" min="1" max=(MAX_TOKEN_DAYS)
                    value=(DEFAULT_TOKEN_DAYS);
            }
            label {
                "Your password"
                input name="password" id="token-password" type="password"
                    autocomplete="current-password" required;
            }
            button.primary type="submit" id="new-token-button" { "Create an API token" }
        }
    }
}

/// The form for a new password.
fn password_form(csrf: &str) -> Markup {
    html! {
        form method="post" action="/account/password" class="filters" {
            (csrf_input(csrf))
            label {
                "Current password"
                input name="current" id="current-password" type="password"
                    autocomplete="current-password" required;
            }
            label {
                "New password"
                input name="new" id="new-password" type="password" autocomplete="new-password"
                    minlength=(MIN_PASSWORD_LEN) required;
            }
            label {
                "New password again"
                input name="repeat" id="repeat-password" type="password"
                    autocomplete="new-password" minlength=(MIN_PASSWORD_LEN) required;
            }
            button type="submit" id="change-password" { "Change password" }
        }
    }
}

/// The account page with `notice`, answered with `status`. The token list is read afresh.
async fn account_page(
    s: &Arc<Shared>,
    viewer: &Viewer,
    status: StatusCode,
    notice: Option<Notice<'_>>,
) -> Response {
    let (shared, who) = (s.clone(), viewer.who.clone());
    let tokens = match tokio::task::spawn_blocking(move || shared.auth.tokens(&who)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return PageError::from(e).into_response(),
        Err(_) => return PageError::internal().into_response(),
    };
    let body = account_body(viewer, &tokens, now_us(), notice);
    (status, frame(viewer, Section::Account, "Account", body)).into_response()
}

/// `GET /account`.
pub(crate) async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    account_page(&s, &viewer, StatusCode::OK, None).await
}

/// Runs an action of `auth` on a blocking thread; a failed task is a 500.
async fn blocking<T: Send + 'static>(
    s: &Arc<Shared>,
    f: impl FnOnce(&Auth) -> T + Send + 'static,
) -> Result<T, Response> {
    let shared = s.clone();
    tokio::task::spawn_blocking(move || f(&shared.auth))
        .await
        .map_err(|_| PageError::internal().into_response())
}

/// The answer to an action that needed the password again and was not done, or the error.
async fn not_done<T>(
    s: &Arc<Shared>,
    viewer: &Viewer,
    outcome: Result<Reauth<T>, AuthError>,
) -> Result<T, Response> {
    match outcome {
        Ok(Reauth::Done(v)) => Ok(v),
        Ok(Reauth::Refused) => Err(account_page(
            s,
            viewer,
            StatusCode::FORBIDDEN,
            Some(Notice::Error(
                "wrong password: nothing was changed; type your current password again",
            )),
        )
        .await),
        Ok(Reauth::Limited { retry_after_s }) => {
            let message = wait_message(retry_after_s);
            let page = account_page(
                s,
                viewer,
                StatusCode::TOO_MANY_REQUESTS,
                Some(Notice::Error(&message)),
            )
            .await;
            Err(limited(page, retry_after_s))
        }
        Err(AuthError::Invalid(message)) => Err(account_page(
            s,
            viewer,
            StatusCode::BAD_REQUEST,
            Some(Notice::Error(&message)),
        )
        .await),
        Err(AuthError::Store(e)) => Err(PageError::from(e).into_response()),
        Err(AuthError::Hash(e)) => {
            tracing::error!(error = %e, "cannot hash a password");
            Err(PageError::internal().into_response())
        }
    }
}

/// The token form.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    label: Option<String>,
    days: Option<String>,
    password: Option<String>,
}

/// `POST /account/tokens`: issues an API token for the signed-in user, who types their
/// password again (a session left open on a shared screen must not yield a lasting
/// credential).
pub(crate) async fn new_token(
    State(s): State<Arc<Shared>>,
    ip: ClientIp,
    CsrfForm(viewer, f): CsrfForm<TokenForm>,
) -> Response {
    let days = match f.days.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        None => DEFAULT_TOKEN_DAYS,
        Some(d) => match d.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let message =
                    format!("valid for: {d:?} is not a number of days (1 to {MAX_TOKEN_DAYS})");
                return account_page(
                    &s,
                    &viewer,
                    StatusCode::BAD_REQUEST,
                    Some(Notice::Error(&message)),
                )
                .await;
            }
        },
    };
    let label = f.label.unwrap_or_default();
    let password = f.password.unwrap_or_default();
    let (who, client) = (viewer.who.clone(), ip.0.clone());
    let minted = match blocking(&s, move |auth| {
        auth.mint_token(&who, &password, &label, days, &client, now_us())
    })
    .await
    {
        Ok(m) => m,
        Err(r) => return r,
    };
    let token = match not_done(&s, &viewer, minted).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "make api token", &format!("{days} days")).await {
        return r;
    }
    account_page(&s, &viewer, StatusCode::OK, Some(Notice::NewToken(&token))).await
}

/// The revoke form.
#[derive(Debug, Deserialize)]
pub(crate) struct RevokeForm {
    id: Option<String>,
}

/// `POST /account/tokens/revoke`: revokes one of the signed-in user's tokens, then shows the
/// account page again.
pub(crate) async fn revoke_token(
    State(s): State<Arc<Shared>>,
    ip: ClientIp,
    CsrfForm(viewer, f): CsrfForm<RevokeForm>,
) -> Response {
    let Some(id) = f.id.and_then(|id| id.trim().parse::<i64>().ok()) else {
        return error_page(
            &viewer,
            StatusCode::BAD_REQUEST,
            "which token? the form named none",
        );
    };
    let who = viewer.who.clone();
    let revoked = match blocking(&s, move |auth| auth.revoke_token(&who, id)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return PageError::from(e).into_response(),
        Err(r) => return r,
    };
    if !revoked {
        return error_page(
            &viewer,
            StatusCode::NOT_FOUND,
            "you have no such token (already revoked?); reload the account page",
        );
    }
    if let Err(r) = audit_view(&s, &viewer, &ip, "revoke api token", &id.to_string()).await {
        return r;
    }
    see_other("/account")
}

/// The password form.
#[derive(Debug, Deserialize)]
pub(crate) struct PasswordForm {
    current: Option<String>,
    new: Option<String>,
    repeat: Option<String>,
}

/// `POST /account/password`: changes the signed-in user's password once they typed the
/// current one. Every session of theirs ends (this one too) and every API token is revoked;
/// the browser goes to the sign-in page.
pub(crate) async fn change_password(
    State(s): State<Arc<Shared>>,
    ip: ClientIp,
    CsrfForm(viewer, f): CsrfForm<PasswordForm>,
) -> Response {
    let (current, new) = (f.current.unwrap_or_default(), f.new.unwrap_or_default());
    if f.repeat.as_deref() != Some(new.as_str()) {
        return account_page(
            &s,
            &viewer,
            StatusCode::BAD_REQUEST,
            Some(Notice::Error(
                "the new password and its repetition differ: nothing was changed",
            )),
        )
        .await;
    }
    let (who, client) = (viewer.who.clone(), ip.0.clone());
    let changed = match blocking(&s, move |auth| {
        auth.change_password(&who, &current, &new, &client, now_us())
    })
    .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = not_done(&s, &viewer, changed).await {
        return r;
    }
    if let Err(r) = audit_view(&s, &viewer, &ip, "change password", "").await {
        return r;
    }
    let mut res = see_other("/login");
    res.headers_mut().append(
        axum::http::header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", Some(0)),
    );
    res
}
