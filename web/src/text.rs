//! Text for pages and files: HTML escaping ([`Esc`], [`escape`]) for the few places that build
//! markup outside maud (SVG charts), query-string encoding ([`url_encode`]), and CSV fields that
//! a spreadsheet cannot run as formulas ([`csv_field`], [`csv_row`]).

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

/// Characters that make a spreadsheet program read a cell as a formula (or a DDE command)
/// when they start it.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Whether a spreadsheet program could run `s` as a formula: it starts with one of
/// [`FORMULA_STARTS`], also after leading spaces or line breaks (programs trim those), and it
/// is not a plain number (`-3.5`, `+12` stay numbers in the export).
pub fn csv_formula_like(s: &str) -> bool {
    if s.starts_with(['\t', '\r']) {
        return true;
    }
    let trimmed = s.trim_start_matches(|c: char| c.is_whitespace());
    trimmed.starts_with(FORMULA_STARTS) && !(trimmed.len() == s.len() && is_plain_number(s))
}

/// A decimal number as people write it (`-3.5`, `+12`, `0.25`), not `inf`, `NaN` or `1e5`:
/// only those are left unguarded.
fn is_plain_number(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && frac.is_empty())
}

/// A value as a CSV field (RFC 4180): quoted when it holds a comma, quote or line break, with
/// quotes doubled. A value a spreadsheet could run as a formula ([`csv_formula_like`]) gets a
/// leading apostrophe (CSV injection); plain numbers stay numbers.
pub fn csv_field(s: &str) -> String {
    let guarded;
    let s = if csv_formula_like(s) {
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

/// A duration as people read it on a page: `1 h 05 min` or `42 min` (negative reads as 0).
pub fn duration(us: i64) -> String {
    let min = us.max(0) / 60_000_000;
    if min >= 60 {
        format!("{} h {:02} min", min / 60, min % 60)
    } else {
        format!("{min} min")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(65 * 60_000_000), "1 h 05 min");
        assert_eq!(duration(42 * 60_000_000), "42 min");
        assert_eq!(duration(-5), "0 min");
    }

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

    fn check_csv(input: &str, expected: &str) {
        assert_eq!(csv_field(input), expected, "{input:?}");
    }

    #[test]
    fn csv_fields() {
        let cases = [
            ("", ""),
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("a = b", "a = b"),
            ("x-ray", "x-ray"),
            ("2026-11-30T07:10:05.250Z", "2026-11-30T07:10:05.250Z"),
        ];
        for (input, expected) in cases {
            check_csv(input, expected);
        }
        assert_eq!(csv_row(&["a", "b,c"]), "a,\"b,c\"\r\n");
    }

    #[test]
    fn csv_formulas_are_neutralised() {
        let cases = [
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("=1+1", "'=1+1"),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\r=1", "\"'\r=1\""),
            // Spreadsheets trim leading blanks and line breaks before looking.
            (" =cmd", "' =cmd"),
            ("   @SUM(A1)", "'   @SUM(A1)"),
            ("\n=cmd", "\"'\n=cmd\""),
            ("\r\n+1", "\"'\r\n+1\""),
            (" \n -1", "\"' \n -1\""),
            ("\u{a0}=1", "'\u{a0}=1"),
            // Numbers that merely look like formulas are not numbers.
            ("-inf", "'-inf"),
            ("-NaN", "'-NaN"),
            ("-1e5", "'-1e5"),
            ("-1.", "'-1."),
            ("-", "'-"),
            ("+", "'+"),
            (" -3.5", "' -3.5"),
            // Plain numbers stay numbers.
            ("-3.5", "-3.5"),
            ("-12", "-12"),
            ("+12", "+12"),
            ("-0.25", "-0.25"),
            ("3.5", "3.5"),
        ];
        for (input, expected) in cases {
            check_csv(input, expected);
        }
    }

    proptest::proptest! {
        #[test]
        fn no_csv_field_starts_a_formula(s in ".*") {
            let field = csv_field(&s);
            // What a spreadsheet sees after unquoting and trimming leading blanks.
            let unquoted = field
                .strip_prefix('"')
                .and_then(|f| f.strip_suffix('"'))
                .map_or_else(|| field.clone(), |f| f.replace("\"\"", "\""));
            let seen = unquoted.trim_start_matches(|c: char| c.is_whitespace());
            let starts_formula = seen.starts_with(['=', '+', '-', '@'])
                || unquoted.starts_with(['\t', '\r']);
            proptest::prop_assert!(!starts_formula || is_plain_number(&unquoted), "{field:?}");
        }
    }
}
