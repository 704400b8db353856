//! The HTTP conventions both screens (the cloud dashboard and the appliance's room screen)
//! keep, as plain strings: reading a cookie out of `Cookie` header values, the `Set-Cookie`
//! value of a session cookie, and the response headers every page carries besides its own
//! Content-Security-Policy. The servers turn these into their framework's types.

/// Headers on every page response, whatever the page: no MIME sniffing, no referrer beyond
/// the origin, never inside a frame.
pub const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
];

/// `Cache-Control` for a page that did not set its own: pages hold patient data.
pub const DEFAULT_CACHE_CONTROL: &str = "no-store";

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

/// The `Set-Cookie` value of a session cookie: whole site, HttpOnly, SameSite=Strict, and a
/// `Max-Age` when given (0 deletes it).
pub fn session_cookie(name: &str, value: &str, max_age_s: Option<i64>) -> String {
    let age = max_age_s.map_or(String::new(), |s| format!("; Max-Age={s}"));
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{age}")
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
}
