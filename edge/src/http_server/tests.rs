//! The HTTPS configuration's refusals: every unusable file is named with its `edge.toml` field
//! and the command that issues a good one. (The server itself is tested over real sockets in
//! the root package's `tests/edge_tls.rs`, which can issue certificates.)

use super::*;

fn check(cert: &str, key: &str, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let files = HttpTls {
        cert: dir.path().join("screen.pem"),
        key: dir.path().join("screen.key"),
    };
    for (path, text) in [(&files.cert, cert), (&files.key, key)] {
        if !text.is_empty() {
            std::fs::write(path, text).unwrap();
        }
    }
    let err = server_config(&files).unwrap_err().to_string();
    for e in expected {
        let e = e.replace("DIR", &dir.path().display().to_string());
        assert!(err.contains(&e), "expected {e:?} in {err:?}");
    }
}

#[test]
fn unusable_files_are_named_with_their_field() {
    let issue = "vigil-cloud pki issue-appliance";
    // Missing certificate.
    check(
        "",
        "",
        &["certificate DIR/screen.pem", "`http_tls.cert`", issue],
    );
    // A file with no certificate in it.
    check(
        "not a certificate\n",
        "",
        &["DIR/screen.pem", "`http_tls.cert`", "no CERTIFICATE block"],
    );
    // A certificate block that is not base64.
    check(
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        "",
        &["DIR/screen.pem", "`http_tls.cert`"],
    );
    // A certificate-shaped file, but the key is missing or is not a key.
    let cert = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    check(
        cert,
        "",
        &["private key DIR/screen.key", "`http_tls.key`", issue],
    );
    check(
        cert,
        "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        &["DIR/screen.key", "`http_tls.key`"],
    );
}

#[test]
fn transport_follows_the_tls_setting() {
    assert_eq!(ServerSettings::new(None).transport(), Transport::Plain);
    assert_eq!(ServerSettings::new(None).max_connections, MAX_CONNECTIONS);
}
