//! Identifiers as newtypes, so a site id can't be passed where a room id belongs.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }
    };
}

id_type!(
    /// A clinic site, e.g. `austin`.
    SiteId
);
id_type!(
    /// A room within a site, e.g. `1`.
    RoomId
);
id_type!(
    /// A patient document's id.
    PatientId
);
id_type!(
    /// A session (one infusion) document's id.
    SessionId
);

/// Whether `s` is a UUID in its canonical text form: 36 characters, lowercase hex digits in
/// groups of 8-4-4-4-12 separated by hyphens. Any version is accepted; uppercase, braces, a
/// `urn:uuid:` prefix or the unhyphenated form are not, so one id has exactly one spelling.
pub fn is_canonical_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

#[cfg(test)]
mod tests {
    use super::is_canonical_uuid;

    #[test]
    fn canonical_uuids_only() {
        let cases = [
            ("5d0c7c1e-8a9f-4b7e-9a43-0f2c1c0b6a11", true),
            ("00000000-0000-0000-0000-000000000000", true),
            ("6ba7b810-9dad-11d1-80b4-00c04fd430c8", true),
            ("5D0C7C1E-8A9F-4B7E-9A43-0F2C1C0B6A11", false),
            ("5d0c7c1e8a9f4b7e9a430f2c1c0b6a11", false),
            ("{5d0c7c1e-8a9f-4b7e-9a43-0f2c1c0b6a11}", false),
            ("urn:uuid:5d0c7c1e-8a9f-4b7e-9a43-0f2c1c0b6a11", false),
            ("5d0c7c1e-8a9f-4b7e-9a43-0f2c1c0b6a1", false),
            ("5d0c7c1e-8a9f-4b7e-9a43-0f2c1c0b6a111", false),
            ("5d0c7c1e-8a9f-4b7e-9a43_0f2c1c0b6a11", false),
            ("5d0c7c1e-8a9f-4b7e-9a43-0f2c1c0b6g11", false),
            ("austin", false),
            ("s-1", false),
            ("", false),
            ("5d0c7c1e-8a9f-4b7e-9a43-0f2c1c0b6aé", false),
        ];
        for (s, want) in cases {
            assert_eq!(is_canonical_uuid(s), want, "{s:?}");
        }
    }
}
