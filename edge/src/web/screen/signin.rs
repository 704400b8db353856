//! Signing in and out of the room screen, and the wrong-PIN list a clinician clears.
//!
//! A PIN is checked against the argon2id hash in the site's staff list; attempts are reserved
//! per (name, client) before the check ([`crate::throttle`]) and every attempt, refused or
//! not, is audited before the answer.

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::doc::StaffMember;
use vigil_web::http;

use super::{
    CsrfForm, LOGIN_CSRF_COOKIE, NoFields, Section, Shared, Via, Viewer, bare, csrf_input,
    error_page, frame, read, set_cookie, set_named_cookie, site_config, site_room,
};
use crate::access::{Principal, Role, same};
use crate::audit::Entry;

/// The one message for a wrong PIN and an unknown name.
const BAD_PIN: &str = "wrong name or PIN";

fn login_form(staff: &[StaffMember], site_name: &str, csrf: &str, error: Option<&str>) -> Markup {
    let error = html! {
        @if let Some(e) = error { p.error id="login-error" { (e) } }
    };
    if staff.is_empty() {
        return html! {
            div.login.card {
                h1 { "Room screen" }
                (error)
                p.error id="no-staff" {
                    "This room has not received its site's staff list from the cloud yet, so \
                     nobody can sign in here. Connect the appliance to the clinic network once; \
                     after that, sign-in works with or without the network. Recording and the \
                     appliance's API are not affected."
                }
            }
        };
    }
    html! {
        form.login method="post" action="/screen/login" {
            h1 { "Room screen · " (site_name) }
            (error)
            input type="hidden" name="csrf" value=(csrf);
            label {
                "Name"
                select name="staff" id="staff" required {
                    option value="" { "Choose your name" }
                    @for m in staff {
                        option value=(m.id) { (m.name) " (" (m.role.replace('_', " ")) ")" }
                    }
                }
            }
            label {
                "PIN"
                input name="pin" id="pin" type="password" inputmode="numeric" autocomplete="off" required;
            }
            button.primary.big type="submit" id="signin" { "Sign in" }
        }
    }
}

fn error_message(msg: &str) -> Markup {
    html! { p.error { (msg) } }
}

/// The sign-in form's CSRF token: the browser's own, from [`LOGIN_CSRF_COOKIE`], or a new one.
fn login_csrf(headers: &HeaderMap) -> String {
    http::cookie(headers, LOGIN_CSRF_COOKIE)
        .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(crate::access::random_token, str::to_owned)
}

async fn load_staff(s: &Shared) -> Result<(String, Vec<StaffMember>), (StatusCode, String)> {
    let (site, _) = site_room(s);
    let config = read(s, move |conn| site_config(conn, &site)).await?;
    Ok(config.map_or((String::new(), Vec::new()), |c| (c.name, c.staff)))
}

/// `GET /screen/login`.
pub(super) async fn login_page(State(s): State<Shared>, via: Via, headers: HeaderMap) -> Response {
    let csrf = login_csrf(&headers);
    match load_staff(&s).await {
        Ok((name, staff)) => {
            let mut res = bare("Sign in", login_form(&staff, &name, &csrf, None)).into_response();
            res.headers_mut().append(
                header::SET_COOKIE,
                set_named_cookie(&via, LOGIN_CSRF_COOKIE, &csrf, None),
            );
            res
        }
        Err((status, msg)) => (status, bare("Error", error_message(&msg))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    staff: Option<String>,
    pin: Option<String>,
    csrf: Option<String>,
}

/// `POST /screen/login`.
pub(super) async fn login(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    via: Via,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = login_csrf(&headers);
    let (site_name, staff) = match load_staff(&s).await {
        Ok(v) => v,
        Err((status, msg)) => {
            return (status, bare("Error", error_message(&msg))).into_response();
        }
    };
    let refuse = |status: StatusCode, msg: &str| {
        (
            status,
            bare("Sign in", login_form(&staff, &site_name, &csrf, Some(msg))),
        )
            .into_response()
    };
    let Ok(Form(form)) = form else {
        return refuse(StatusCode::BAD_REQUEST, "unreadable form");
    };
    // The form must come from a page this browser loaded (its cookie and field agree).
    let csrf_ok = matches!((http::cookie(&headers, LOGIN_CSRF_COOKIE), form.csrf.as_deref()),
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
    let security = s.api.security.clone();
    let now_us = s.api.now_us();
    let ok = match security.check_pin(&member, pin, &client, now_us).await {
        Ok(ok) => ok,
        Err(wait) => {
            let msg = format!(
                "too many wrong PINs for this name from this device; wait {} s, sign in on \
                 another tablet, or ask a clinician to clear it",
                wait.as_secs().max(1)
            );
            return refuse(StatusCode::TOO_MANY_REQUESTS, &msg);
        }
    };
    let role = Role::from_staff(&member.role);
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

/// `POST /screen/logout`.
pub(super) async fn logout(
    State(s): State<Shared>,
    via: Via,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Response {
    s.api.security.sessions.sign_out(&viewer.token);
    let mut res = Redirect::to("/screen/login").into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&via, "", Some(0)));
    res
}

/// `GET /screen/pins`: names with wrong PINs, and from which device; a clinician clears them.
pub(super) async fn pins_page(
    State(s): State<Shared>,
    axum::Extension(viewer): axum::Extension<Viewer>,
) -> Response {
    let locked = s.api.security.pins.locked();
    let body = html! {
        h1 { "Wrong PINs" }
        @if locked.is_empty() {
            p id="no-locks" { "Nobody is waiting after wrong PINs." }
        } @else {
            p {
                "Each device waits longer after each wrong PIN for a name; other devices are not \
                 affected. A clinician can clear a name once they know the person."
            }
            table id="locks" {
                tr { th { "Name" } th { "Device" } th { "Wrong PINs" } th {} }
                @for (staff, client, failures) in &locked {
                    tr {
                        td { (staff) }
                        td { (client) }
                        td { (failures) }
                        td {
                            @if viewer.is_clinician() {
                                form method="post" action="/screen/pins" {
                                    (csrf_input(&viewer))
                                    input type="hidden" name="staff" value=(staff);
                                    button.unlock type="submit" { "Clear" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    frame(&viewer, Section::Room, "Wrong PINs", body)
}

#[derive(Debug, Deserialize)]
pub(super) struct UnlockForm {
    staff: Option<String>,
}

/// `POST /screen/pins`: a clinician clears a name's wrong-PIN counts.
pub(super) async fn unlock_pins(
    State(s): State<Shared>,
    CsrfForm(viewer, form): CsrfForm<UnlockForm>,
) -> Response {
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
    use axum::http::HeaderValue;

    use super::*;
    use crate::web::screen::COOKIE;

    #[test]
    fn pins_verify_against_argon2_hashes_only() {
        use crate::access::pin_matches;
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
        assert_eq!(http::cookie(&h, COOKIE), Some("abc"));
        assert_eq!(http::cookie(&h, "vigil"), None);
    }
}
