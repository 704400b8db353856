//! Pure building blocks for Vigil's server-rendered pages: HTML escaping ([`Esc`], [`escape`]),
//! the page layout and its stylesheet ([`layout`]), SVG charts ([`chart`]) and the cookie and
//! header conventions both screens keep ([`http`]).
//!
//! The cloud dashboard uses them today; the room screen on the appliance will reuse them, so
//! nothing here knows about HTTP, users, databases or clocks. Functions take values and return
//! strings. Every piece of text that came from a document, a database or a request goes
//! through [`Esc`] (or [`escape`]) before it lands in HTML; markup built here is trusted.

pub mod chart;
pub mod http;
pub mod layout;

use std::fmt;

/// Text escaped for HTML element content and for double- or single-quoted attribute values,
/// written straight into a formatter (no intermediate string): `format!("<td>{}</td>", Esc(s))`.
///
/// The five characters that can end a text node or an attribute (`& < > " '`) become
/// character references; everything else passes through unchanged. Not safe inside
/// `<script>`, `<style>`, unquoted attributes or URLs' scheme position: pages here never put
/// untrusted text in those places (URLs' query parts use [`url_encode`]).
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut last = 0;
        for (i, b) in s.bytes().enumerate() {
            let rep = match b {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                b'\'' => "&#39;",
                _ => continue,
            };
            // `i` is the index of an ASCII byte, so both slices end on char boundaries.
            f.write_str(&s[last..i])?;
            f.write_str(rep)?;
            last = i + 1;
        }
        f.write_str(&s[last..])
    }
}

/// [`Esc`] into a new string.
pub fn escape(s: &str) -> String {
    Esc(s).to_string()
}

/// Percent-encodes a query-string component (RFC 3986 unreserved characters pass through).
/// The result is also safe inside an HTML attribute.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A value as a CSV field (RFC 4180): quoted when it holds a comma, quote or line break, with
/// quotes doubled. A field starting with `= + - @`, a tab or a carriage return gets a leading
/// apostrophe so that spreadsheet programs do not run it as a formula (CSV injection).
pub fn csv_field(s: &str) -> String {
    let guarded;
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<f64>().is_err() {
        guarded = format!("'{s}");
        guarded.as_str()
    } else {
        s
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One CSV record from its fields, ending in CRLF.
pub fn csv_row<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(escape(input), expected, "escaping {input:?}");
    }

    #[test]
    fn escapes_the_five_characters_and_nothing_else() {
        check("", "");
        check("plain text", "plain text");
        check(
            "<script>alert(1)</script>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        );
        check("a & b", "a &amp; b");
        check("\"quoted\" 'single'", "&quot;quoted&quot; &#39;single&#39;");
        check("&amp;", "&amp;amp;");
        check("Zoë — 37 °C <", "Zoë — 37 °C &lt;");
        check("\" onmouseover=\"x", "&quot; onmouseover=&quot;x");
    }

    proptest::proptest! {
        #[test]
        fn escaped_text_has_no_markup_characters(s in ".*") {
            let e = escape(&s);
            proptest::prop_assert!(!e.contains(['<', '>', '"', '\'']));
            // Unescaping gives the input back.
            let back = e
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&");
            proptest::prop_assert_eq!(back, s);
        }
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("austin"), "austin");
        assert_eq!(url_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn csv_fields() {
        let cases = [
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("-12.5", "-12.5"),
            ("@SUM(A1)", "'@SUM(A1)"),
        ];
        for (input, expected) in cases {
            assert_eq!(csv_field(input), expected, "{input:?}");
        }
        assert_eq!(csv_row(&["a", "b,c"]), "a,\"b,c\"\r\n");
    }
}
