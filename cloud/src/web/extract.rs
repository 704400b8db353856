//! What handlers take from a request besides its state: the client's address, the signed-in
//! viewer, a form with its CSRF token checked, an admin, and a checked document id. Each
//! refuses with the right answer for its side (JSON for the API, a page for the dashboard), so
//! handlers start with what they need instead of a preamble.

use axum::Form;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use vigil_shared::wire::MAX_DOC_ID_BYTES;

use super::error::{ApiError, PageError};
use super::net::{client_address, connection};
use crate::auth::{Principal, Role};
use crate::config::ProxyNet;

/// The client's address as the audit log records it.
#[derive(Debug, Clone)]
pub(crate) struct ClientIp(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PageError> {
        // Put there by the API's and the dashboard's sign-in layers.
        parts
            .extensions
            .get::<ClientIp>()
            .cloned()
            .ok_or_else(PageError::internal)
    }
}

/// The client's address of a request ([`client_address`] over its connection and headers).
pub(crate) fn client_ip(req: &Request, trusted: &[ProxyNet]) -> ClientIp {
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    ClientIp(client_address(connection(req).0, forwarded, trusted))
}

/// Who is looking at a dashboard page: the principal and the session's CSRF token.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub(crate) who: Principal,
    pub(crate) csrf: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PageError> {
        // Put there by the dashboard's session layer, in front of every signed-in route.
        parts
            .extensions
            .get::<Viewer>()
            .cloned()
            .ok_or_else(PageError::internal)
    }
}

/// A signed-in admin (the audit log); anyone else gets 403.
pub(crate) struct RequireAdmin(pub(crate) Viewer);

impl<S: Send + Sync> FromRequestParts<S> for RequireAdmin {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        let viewer = Viewer::from_request_parts(parts, state).await?;
        if viewer.who.role != Role::Admin {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "this page is for admins",
            ));
        }
        Ok(RequireAdmin(viewer))
    }
}

/// A signed-in admin or regional manager (the fleet, the controlled-substance ledger); a
/// clinician gets 403.
pub(crate) struct RequireManager(pub(crate) Viewer);

impl<S: Send + Sync> FromRequestParts<S> for RequireManager {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        let viewer = Viewer::from_request_parts(parts, state).await?;
        if !viewer.who.manages_sites() {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "this page is for admins and regional managers",
            ));
        }
        Ok(RequireManager(viewer))
    }
}

/// A form posted by the signed-in viewer, read and checked before its handler runs: an
/// unreadable form is 400 and a missing or wrong CSRF token 403, each as a page.
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
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let req = Request::from_parts(parts, body);
        let Ok(Form(f)) = Form::<WithCsrf<T>>::from_request(req, state).await else {
            return Err(PageError::new(StatusCode::BAD_REQUEST, "unreadable form").into_response());
        };
        vigil_web::http::check_csrf(&viewer.csrf, f.csrf.as_deref())
            .map_err(IntoResponse::into_response)?;
        Ok(CsrfForm(viewer, f.form))
    }
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
