//! The two ways the web layer says no: [`ApiError`] as JSON for programs, [`PageError`] as an
//! HTML page for people. A store failure is logged with its details and answered with neither.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Serialize;

use crate::store::StoreError;

/// An API error: a status and a message for the person or program that asked.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
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

    /// A 401 with its `WWW-Authenticate` challenge.
    pub(crate) fn unauthorized(message: &str, challenge: &'static str) -> ApiError {
        ApiError {
            challenge: Some(challenge),
            ..ApiError::new(StatusCode::UNAUTHORIZED, message)
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
        if e.is_unavailable() {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the cloud's database is unavailable; retry in a few seconds",
            );
        }
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

/// A dashboard failure, answered as an HTML page: a person reads it, a browser shows it.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn internal() -> PageError {
        PageError::from(ApiError::internal())
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        PageError::new(e.status, e.message)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        PageError::from(ApiError::from(e))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = html! {
            h1 { (title) }
            p.error id="error" { (self.message) }
            p { a href="/" { "Back to the overview" } }
        };
        let page = vigil_web::layout::bare(title, maud::Markup::default(), body);
        (self.status, page).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(res: Response) -> (StatusCode, String, String) {
        let status = res.status();
        let kind = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, kind, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn programs_get_json_and_people_get_a_page() {
        let (status, kind, text) = body(ApiError::busy().into_response()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(kind, "application/json");
        assert!(text.starts_with(r#"{"error":"the cloud is busy"#), "{text}");

        let page = PageError::new(StatusCode::NOT_FOUND, "session <b>x</b> not found");
        let (status, kind, text) = body(page.into_response()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(kind.starts_with("text/html"), "{kind}");
        assert!(text.contains("<h1>Not Found</h1>"), "{text}");
        assert!(
            text.contains("session &lt;b&gt;x&lt;/b&gt; not found"),
            "{text}"
        );

        // A store failure reaches neither with its details.
        let store = StoreError::CorruptDocument {
            id: "s-1".into(),
            reason: "page 7 of /var/lib/vigil".into(),
        };
        let (status, _, text) = body(PageError::from(store).into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!text.contains("/var/lib"), "{text}");
    }
}
