//! The HTTP conventions both screens (the cloud dashboard and the appliance's room screen)
//! keep: reading a cookie, the `Set-Cookie` value of a session cookie (with `Secure` when the
//! browser came over TLS), the response headers every page carries ([`security_headers`]),
//! and the check of a form's CSRF token ([`check_csrf`]). Whether a connection is TLS is the
//! server's to know ([`Transport`]).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::layout;
use crate::secret;

/// Headers on every page response, whatever the page: no MIME sniffing, no referrer beyond
/// the origin, never inside a frame.
pub const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
];

/// `Cache-Control` for a page that did not set its own: pages hold patient data.
pub const DEFAULT_CACHE_CONTROL: &str = "no-store";

/// `Strict-Transport-Security` on every response served over TLS: one year, so a browser that
/// once reached a server over HTTPS never again sends its cookies or PINs in clear to that
/// name, even when a hostile network answers plain HTTP in its place. Sent over TLS only (a
/// browser ignores it over plain HTTP), and browsers ignore it for IP-address hosts.
pub const HSTS: (&str, &str) = ("strict-transport-security", "max-age=31536000");

/// How a browser reached the server, which decides whether its cookies carry `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP (only on loopback at the appliance, or behind a TLS-terminating proxy).
    Plain,
    /// HTTPS: cookies are `Secure`, responses carry [`HSTS`].
    Tls,
}

impl Transport {
    /// Whether this is a TLS connection.
    pub fn is_tls(self) -> bool {
        self == Transport::Tls
    }
}

/// The value of cookie `name` among `Cookie` header values (`a=1; b=2`, possibly several
/// headers); `None` when absent or empty.
pub fn cookie_value<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The value of cookie `name` in a request's headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookie_value(
        headers
            .get_all(header::COOKIE)
            .into_iter()
            .filter_map(|v| v.to_str().ok()),
        name,
    )
}

/// Middleware (`axum::middleware::from_fn_with_state(csp, security_headers)`): every response
/// gets the page's Content-Security-Policy and [`SECURITY_HEADERS`], and
/// [`DEFAULT_CACHE_CONTROL`] unless the handler chose its own caching.
pub async fn security_headers(
    State(csp): State<&'static str>,
    req: Request,
    next: Next,
) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    for (name, value) in SECURITY_HEADERS {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static(DEFAULT_CACHE_CONTROL));
    res
}

/// A form refused because its CSRF token is missing or is not the session's.
#[derive(Debug, Clone, Copy)]
pub struct CsrfRefused;

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        let body = html! {
            h1 { "Refused" }
            p.error {
                "This form is missing its security token or the token is out of date. "
                "Go back, reload the page and try again."
            }
        };
        (
            StatusCode::FORBIDDEN,
            layout::bare("Refused", maud::Markup::default(), body),
        )
            .into_response()
    }
}

/// Checks the token a form presented against the session's, in constant time.
pub fn check_csrf(expected: &str, presented: Option<&str>) -> Result<(), CsrfRefused> {
    match presented {
        Some(p) if secret::same(p, expected) => Ok(()),
        _ => Err(CsrfRefused),
    }
}

/// The `Set-Cookie` value of a session cookie sent over plain HTTP: whole site, HttpOnly,
/// SameSite=Strict, and a `Max-Age` when given (0 deletes it).
pub fn session_cookie(name: &str, value: &str, max_age_s: Option<i64>) -> String {
    session_cookie_over(Transport::Plain, name, value, max_age_s)
}

/// [`session_cookie`] for a response going over `transport`: over TLS the cookie also carries
/// `Secure`, so the browser never sends it over plain HTTP (where anyone on the room network
/// could read it).
pub fn session_cookie_over(
    transport: Transport,
    name: &str,
    value: &str,
    max_age_s: Option<i64>,
) -> String {
    let age = max_age_s.map_or(String::new(), |s| format!("; Max-Age={s}"));
    let secure = if transport.is_tls() { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly{secure}; SameSite=Strict{age}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name_across_headers() {
        let headers = ["a=1; vigil_session=abc", "b=2", "empty="];
        assert_eq!(cookie_value(headers, "vigil_session"), Some("abc"));
        assert_eq!(cookie_value(headers, "b"), Some("2"));
        assert_eq!(cookie_value(headers, "vigil"), None);
        assert_eq!(cookie_value(headers, "empty"), None);
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let token = secret::random_token();
        assert!(check_csrf(&token, Some(&token)).is_ok());
        assert!(check_csrf(&token, None).is_err());
        assert!(check_csrf(&token, Some("")).is_err());
        assert!(check_csrf(&token, Some(&token[..63])).is_err());
        let refused = CsrfRefused.into_response();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_cookie_is_read_from_every_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2; c=3"));
        assert_eq!(cookie(&headers, "c"), Some("3"));
        assert_eq!(cookie(&headers, "d"), None);
    }

    #[test]
    fn session_cookies_are_http_only_and_strict() {
        assert_eq!(
            session_cookie("s", "v", None),
            "s=v; Path=/; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            session_cookie("s", "", Some(0)),
            "s=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        );
    }

    #[test]
    fn cookies_over_tls_are_secure_and_plain_ones_unchanged() {
        let cases = [
            (
                Transport::Tls,
                None,
                "s=v; Path=/; HttpOnly; Secure; SameSite=Strict",
            ),
            (
                Transport::Tls,
                Some(0),
                "s=v; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
            ),
            (
                Transport::Plain,
                None,
                "s=v; Path=/; HttpOnly; SameSite=Strict",
            ),
        ];
        for (transport, age, expected) in cases {
            assert_eq!(session_cookie_over(transport, "s", "v", age), expected);
        }
        assert_eq!(
            session_cookie("s", "v", Some(5)),
            session_cookie_over(Transport::Plain, "s", "v", Some(5))
        );
    }
}
