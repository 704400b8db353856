//! Secrets for sessions, CSRF and API tokens: random, hashed and compared in constant time,
//! all over aws-lc-rs (the crypto library rustls and quinn already use).

/// 32 random bytes from the operating system as 64 lowercase hex digits.
///
/// # Panics
/// If the operating system has no entropy source at all: a token of zeros would be
/// guessable, so that case must stop the request instead.
pub fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        panic!("the operating system's random source failed");
    }
    hex(&bytes)
}

/// 16 random bytes (a password-hash salt).
pub fn random_salt() -> Option<[u8; 16]> {
    let mut salt = [0_u8; 16];
    aws_lc_rs::rand::fill(&mut salt).ok().map(|()| salt)
}

/// SHA-256 of a secret.
pub fn sha256(secret: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// SHA-256 of a secret as 64 lowercase hex digits (as site API tokens are stored).
pub fn sha256_hex(secret: &str) -> String {
    hex(&sha256(secret))
}

/// Whether two byte strings are equal, in time that does not depend on where they differ.
pub fn same(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref()).is_ok()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Whether `s` has the shape [`random_token`] gives (64 hex digits).
pub fn is_token_shaped(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert!(is_token_shaped(&a) && is_token_shaped(&b));
        assert_ne!(a, b);
        assert!(!is_token_shaped("abc"));
        assert!(!is_token_shaped(&"g".repeat(64)));
    }

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn same_compares_whole_strings() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }
}
