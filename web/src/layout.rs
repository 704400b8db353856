//! The page frame every Vigil screen shares: a top bar with navigation and the account area,
//! then the content, with one stylesheet ([`CSS`]) served from [`CSS_PATH`].
//!
//! Built with maud: text passed in is escaped; the account area, the body and anything added
//! to the head are [`Markup`], which only maud (or an explicit [`maud::PreEscaped`]) makes.

use maud::{DOCTYPE, Markup, html};

/// The stylesheet, compiled into the binary.
pub const CSS: &str = include_str!("vigil.css");

/// Where pages expect the stylesheet to be served.
pub const CSS_PATH: &str = "/assets/vigil.css";

/// A link in the top bar.
#[derive(Debug, Clone, Copy)]
pub struct NavLink<'a> {
    /// Target: a path built by the caller.
    pub href: &'a str,
    /// Text.
    pub label: &'a str,
    /// Whether this is the current section.
    pub active: bool,
}

/// What goes into one page.
#[derive(Debug, Clone)]
pub struct Page<'a> {
    /// The document title; " · Vigil" follows it.
    pub title: &'a str,
    /// Top-bar links.
    pub nav: &'a [NavLink<'a>],
    /// The right of the top bar (who is signed in, a sign-out form).
    pub account: Markup,
    /// More of the `<head>`: a screen's own stylesheet or script.
    pub head: Markup,
    /// The content.
    pub body: Markup,
}

/// The whole HTML document.
pub fn page(p: Page<'_>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (p.title) " · Vigil" }
                link rel="stylesheet" href=(CSS_PATH);
                (p.head)
            }
            body {
                header.top {
                    span.brand { "VIGIL" }
                    nav {
                        @for link in p.nav {
                            a href=(link.href) class=[link.active.then_some("active")] { (link.label) }
                        }
                    }
                    div.account { (p.account) }
                }
                main { (p.body) }
            }
        }
    }
}

/// A page without navigation or account area (sign-in, errors before sign-in).
pub fn bare(title: &str, head: Markup, body: Markup) -> Markup {
    page(Page {
        title,
        nav: &[],
        account: Markup::default(),
        head,
        body,
    })
}

/// A small coloured label; `class` is one of the stylesheet's badge classes
/// (`ok`, `bad`, `warn`, `high`, `medium`, `low`, or empty).
pub fn badge(class: &str, text: &str) -> Markup {
    html! { span class={ "badge " (class) } { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maud::PreEscaped;

    #[test]
    fn escapes_text_but_not_markup() {
        let html = page(Page {
            title: "<Sessions>",
            nav: &[
                NavLink {
                    href: "/sessions",
                    label: "A&B",
                    active: true,
                },
                NavLink {
                    href: "/audit",
                    label: "Audit",
                    active: false,
                },
            ],
            account: html! { b { "me" } },
            head: PreEscaped(r#"<script src="/s.js"></script>"#.to_owned()),
            body: html! { p { "hello <world>" } },
        })
        .into_string();
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(
            html.contains("<title>&lt;Sessions&gt; · Vigil</title>"),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="/sessions" class="active">A&amp;B</a>"#),
            "{html}"
        );
        assert!(html.contains(r#"<a href="/audit">Audit</a>"#), "{html}");
        assert!(html.contains("<b>me</b>") && html.contains("<p>hello &lt;world&gt;</p>"));
        assert!(
            html.contains(r#"<script src="/s.js"></script></head>"#),
            "{html}"
        );
        assert!(html.contains(CSS_PATH));
        assert_eq!(
            badge("ok", "<online>").into_string(),
            r#"<span class="badge ok">&lt;online&gt;</span>"#
        );
    }
}
