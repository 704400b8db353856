//! The page frame every Vigil screen shares: a top bar with navigation and the account area,
//! then the content, with one stylesheet ([`CSS`]) served from [`CSS_PATH`].
//!
//! Pure: callers pass already-built (trusted) HTML for the body and the account area, and
//! plain text for the title and link labels, which are escaped here.

use super::Esc;

/// The stylesheet, compiled into the binary.
pub const CSS: &str = include_str!("vigil.css");

/// Where pages expect the stylesheet to be served.
pub const CSS_PATH: &str = "/assets/vigil.css";

/// A link in the top bar.
#[derive(Debug, Clone, Copy)]
pub struct NavLink<'a> {
    /// Target (trusted; a path built by the caller).
    pub href: &'a str,
    /// Text (escaped).
    pub label: &'a str,
    /// Whether this is the current section.
    pub active: bool,
}

/// What goes into one page.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The document title and the product name after it (escaped).
    pub title: &'a str,
    /// Top-bar links.
    pub nav: &'a [NavLink<'a>],
    /// Trusted HTML for the right of the top bar (who is signed in, a sign-out form).
    pub account: &'a str,
    /// Trusted HTML of the content.
    pub body: &'a str,
}

/// The whole HTML document.
pub fn render(page: &Page<'_>) -> String {
    let mut nav = String::new();
    for link in page.nav {
        nav.push_str(&format!(
            r#"<a href="{}"{}>{}</a>"#,
            link.href,
            if link.active {
                r#" class="active""#
            } else {
                ""
            },
            Esc(link.label)
        ));
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Vigil</title><link rel="stylesheet" href="{CSS_PATH}"></head>
<body><header class="top"><span class="brand">VIGIL</span><nav>{nav}</nav><div class="account">{account}</div></header>
<main>{body}</main></body></html>"#,
        title = Esc(page.title),
        account = page.account,
        body = page.body,
    )
}

/// A small coloured label; `class` is one of the stylesheet's badge classes
/// (`ok`, `bad`, `warn`, `high`, `medium`, `low`, or empty).
pub fn badge(class: &str, text: &str) -> String {
    format!(r#"<span class="badge {}">{}</span>"#, Esc(class), Esc(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_title_and_labels_but_not_trusted_html() {
        let html = render(&Page {
            title: "<Sessions>",
            nav: &[NavLink {
                href: "/sessions",
                label: "A&B",
                active: true,
            }],
            account: "<b>me</b>",
            body: "<p>hello</p>",
        });
        assert!(html.contains("<title>&lt;Sessions&gt; · Vigil</title>"));
        assert!(html.contains(r#"<a href="/sessions" class="active">A&amp;B</a>"#));
        assert!(html.contains("<b>me</b>") && html.contains("<p>hello</p>"));
        assert!(html.contains(CSS_PATH));
        assert_eq!(
            badge("ok", "<online>"),
            r#"<span class="badge ok">&lt;online&gt;</span>"#
        );
    }
}
