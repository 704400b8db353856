//! Tests of the private CA: issue and read back identities, file modes, revocation through the
//! CRL, errors that name their file, and certificates from another CA.

use std::os::unix::fs::PermissionsExt;

use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

fn new_ca() -> (tempfile::TempDir, Ca) {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::init(&tmp.path().join("ca"), "Test CA").unwrap();
    (tmp, ca)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn site_room(site: &str, room: &str) -> (SiteId, RoomId) {
    (SiteId::from(site), RoomId::from(room))
}

#[test]
fn appliance_identity_round_trips() {
    let (_tmp, ca) = new_ca();
    let cases = [("austin", "1"), ("tampa", "12"), ("st-pete", "infusion-3")];
    for (site, room) in cases {
        let (site_id, room_id) = site_room(site, room);
        let issued = ca.issue_appliance(&site_id, &room_id).unwrap();
        assert_eq!(
            issued.cert_path,
            ca.dir().join(format!("appliance-{site}-{room}.pem"))
        );
        let der = read_cert_file(&issued.cert_path).unwrap();
        let identity = appliance_identity(&der).unwrap();
        assert_eq!(
            (identity.site.as_str(), identity.room.as_str()),
            (site, room)
        );
        assert_eq!(identity.to_string(), format!("{site}/{room}"));
        assert_eq!(cert_serial(&der).unwrap(), issued.serial);
        ca.verify_issued(&der).unwrap();

        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), format!("appliance {site}/{room}"));
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!cert.is_ca());
    }
    let issued = ca.issued_serials().unwrap();
    assert_eq!(issued.len(), cases.len());
}

#[test]
fn server_certificates_carry_their_names() {
    let (_tmp, ca) = new_ca();
    let dns = vec!["cloud.vigil.example".to_owned(), "localhost".to_owned()];
    let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let issued = ca.issue_server(&dns, &ips, "server").unwrap();
    assert_eq!(issued.cert_path, ca.dir().join("server.pem"));
    assert_eq!(issued.key_path, ca.dir().join("server.key"));
    let der = read_cert_file(&issued.cert_path).unwrap();
    ca.verify_issued(&der).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let names: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| name.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "DNSName(cloud.vigil.example)",
            "DNSName(localhost)",
            "IPAddress(7f:00:00:01)",
            "IPAddress(00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01)",
        ]
    );
    // A server certificate is not an appliance.
    assert!(matches!(
        appliance_identity(&der),
        Err(PkiError::NotAppliance(_))
    ));
}

#[test]
fn keys_are_private_from_the_start() {
    let (_tmp, ca) = new_ca();
    let server = ca
        .issue_server(&["localhost".to_owned()], &[], "server")
        .unwrap();
    let (site, room) = site_room("austin", "1");
    let appliance = ca.issue_appliance(&site, &room).unwrap();
    let cases = [
        (ca.dir().to_owned(), 0o700),
        (ca.dir().join(CA_KEY_FILE), 0o600),
        (ca.dir().join(CA_CERT_FILE), 0o644),
        (ca.dir().join(CRL_FILE), 0o644),
        (server.key_path.clone(), 0o600),
        (server.cert_path.clone(), 0o644),
        (appliance.key_path.clone(), 0o600),
        (appliance.cert_path.clone(), 0o644),
    ];
    for (path, expected) in cases {
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
    // Re-issuing replaces the files and keeps the modes (a new file is renamed over the old).
    fs::set_permissions(&appliance.key_path, fs::Permissions::from_mode(0o644)).unwrap();
    let again = ca.issue_appliance(&site, &room).unwrap();
    assert_eq!(mode(&again.key_path), 0o600);
    assert_ne!(again.serial, appliance.serial);
    // No temporary files are left behind.
    let leftovers: Vec<_> = fs::read_dir(ca.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_loaded_ca_issues_like_the_original() {
    let (_tmp, ca) = new_ca();
    let loaded = Ca::load(ca.dir()).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
    assert_eq!(loaded.not_after(), ca.not_after());
    let (site, room) = site_room("austin", "2");
    let issued = loaded.issue_appliance(&site, &room).unwrap();
    let der = read_cert_file(&issued.cert_path).unwrap();
    ca.verify_issued(&der).unwrap();
    verify_issued_by(ca.cert_der(), &der).unwrap();
}

#[test]
fn init_refuses_to_replace_a_ca_unless_forced() {
    let (_tmp, ca) = new_ca();
    let (site, room) = site_room("austin", "1");
    let old = read_cert_file(&ca.issue_appliance(&site, &room).unwrap().cert_path).unwrap();

    let err = Ca::init(ca.dir(), "Again").unwrap_err();
    assert!(matches!(err, PkiError::CaExists { .. }), "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(Ca::load(ca.dir()).unwrap().cert_der(), ca.cert_der());

    let options = CaOptions {
        force: true,
        ..CaOptions::default()
    };
    let new = Ca::init_with(ca.dir(), &options).unwrap();
    assert_ne!(new.cert_der(), ca.cert_der());
    // The old CA's certificates are no longer trusted by the new one.
    assert!(matches!(
        new.verify_issued(&old),
        Err(PkiError::NotIssuedByCa(_))
    ));
    assert!(new.issued_serials().unwrap().is_empty());
}

#[test]
fn load_errors_name_the_file() {
    type Damage = fn(&Path);
    let cases: Vec<(Damage, &str, &str)> = vec![
        (
            |dir| fs::remove_file(dir.join(CA_KEY_FILE)).unwrap(),
            "cannot read CA key",
            "ca.key: No such file or directory",
        ),
        (
            |dir| fs::remove_file(dir.join(CA_CERT_FILE)).unwrap(),
            "cannot read CA certificate",
            "ca.pem: No such file or directory",
        ),
        (
            |dir| fs::write(dir.join(CA_KEY_FILE), "not a key").unwrap(),
            "cannot parse CA key",
            "ca.key",
        ),
        (
            |dir| {
                fs::write(
                    dir.join(CA_CERT_FILE),
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                )
                .unwrap()
            },
            "cannot parse CA certificate",
            "ca.pem",
        ),
        (
            |dir| {
                // Another CA's key next to this CA's certificate.
                let other = dir.with_file_name("other-ca");
                Ca::init(&other, "Other").unwrap();
                fs::copy(other.join(CA_KEY_FILE), dir.join(CA_KEY_FILE)).unwrap();
            },
            "does not match CA certificate",
            "ca.key",
        ),
    ];
    for (damage, message, file) in cases {
        let (_tmp, ca) = new_ca();
        damage(ca.dir());
        let err = Ca::load(ca.dir()).unwrap_err().to_string();
        assert!(err.contains(message), "{err:?} lacks {message:?}");
        assert!(err.contains(file), "{err:?} lacks {file:?}");
        assert!(err.contains(&ca.dir().display().to_string()), "{err:?}");
    }
}

#[test]
fn revocations_land_in_the_signed_crl() {
    let (_tmp, ca) = new_ca();
    let crl_path = ca.dir().join(CRL_FILE);
    let read_crl = || read_crl_file(&crl_path).unwrap();
    // A fresh CA has an empty CRL, so the server can always load one.
    assert!(crl_serials(&read_crl()).unwrap().is_empty());
    assert_eq!(crl_number(&read_crl()).unwrap(), 1);

    let (site, room) = site_room("austin", "1");
    let first = ca.issue_appliance(&site, &room).unwrap();
    let (site, room) = site_room("austin", "2");
    let second = ca.issue_appliance(&site, &room).unwrap();

    let revocation = ca.revoke_cert_file(&first.cert_path).unwrap();
    assert!(revocation.newly_revoked);
    assert_eq!(revocation.serial, first.serial);
    assert_eq!(
        crl_serials(&read_crl()).unwrap(),
        vec![first.serial.clone()]
    );
    verify_crl_issued_by(ca.cert_der(), &read_crl()).unwrap();

    // By serial, as printed (upper case, colons).
    let printed = first
        .serial
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let again = ca.revoke(&printed.parse().unwrap()).unwrap();
    assert!(!again.newly_revoked);
    assert_eq!(ca.revoked().unwrap().len(), 1);

    ca.revoke(&second.serial).unwrap();
    assert_eq!(
        crl_serials(&read_crl()).unwrap(),
        vec![first.serial.clone(), second.serial.clone()]
    );
    // Each with its revocation time, as revoked.txt has it (whole seconds).
    let listed: Vec<(Serial, i64)> = ca
        .revoked()
        .unwrap()
        .into_iter()
        .map(|(serial, at)| (serial, at.unix_timestamp() * 1_000_000))
        .collect();
    assert_eq!(crl_revocations(&read_crl()).unwrap(), listed);
    // Every re-signing increases the CRL number: init, three revocations.
    assert_eq!(crl_number(&read_crl()).unwrap(), 4);
    // A reloaded CA sees the same list.
    let reloaded = Ca::load(ca.dir()).unwrap();
    assert_eq!(reloaded.revoked().unwrap(), ca.revoked().unwrap());
    let text = fs::read_to_string(ca.dir().join(REVOKED_FILE)).unwrap();
    assert!(text.contains(&first.serial.to_string()), "{text}");
}

#[test]
fn revocation_refuses_what_this_ca_did_not_issue() {
    let (tmp, ca) = new_ca();
    let other = Ca::init(&tmp.path().join("other"), "Other CA").unwrap();
    let (site, room) = site_room("austin", "1");
    let foreign = other.issue_appliance(&site, &room).unwrap();

    let err = ca.revoke_cert_file(&foreign.cert_path).unwrap_err();
    assert!(matches!(err, PkiError::NotIssuedByCa(_)), "{err}");
    let err = ca.revoke(&foreign.serial).unwrap_err();
    assert!(matches!(err, PkiError::UnknownSerial { .. }), "{err}");
    assert!(err.to_string().contains(ISSUED_FILE), "{err}");
    assert!(
        crl_serials(&read_crl_file(&ca.dir().join(CRL_FILE)).unwrap())
            .unwrap()
            .is_empty()
    );
    let err = ca
        .revoke_cert_file(&ca.dir().join("missing.pem"))
        .unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn another_cas_certificate_is_told_apart() {
    let tmp = tempfile::tempdir().unwrap();
    // Same name, different key: the issuer name matches, the signature does not.
    let ours = Ca::init(&tmp.path().join("ours"), "Vigil Clinic CA").unwrap();
    let twin = Ca::init(&tmp.path().join("twin"), "Vigil Clinic CA").unwrap();
    let other = Ca::init(&tmp.path().join("other"), "Someone Else").unwrap();
    let (site, room) = site_room("austin", "1");
    let cases = [(&ours, true), (&twin, false), (&other, false)];
    for (issuer, trusted) in cases {
        let der = read_cert_file(&issuer.issue_appliance(&site, &room).unwrap().cert_path).unwrap();
        assert_eq!(ours.verify_issued(&der).is_ok(), trusted);
        // The identity reads the same either way: trust is the TLS layer's decision.
        assert_eq!(appliance_identity(&der).unwrap().to_string(), "austin/1");
    }
}

#[test]
fn validity_is_backdated_and_bounded_by_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let day = 86_400;
    let ca = Ca::init_with(
        &tmp.path().join("ca"),
        &CaOptions {
            validity_days: 100,
            ..CaOptions::default()
        },
    )
    .unwrap();
    let validity = |der: &[u8]| {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        let v = cert.validity();
        (v.not_before.timestamp(), v.not_after.timestamp())
    };
    let near = |got: i64, expected: i64| (got - expected).abs() <= 60;

    let (nb, na) = validity(ca.cert_der());
    assert!(
        near(nb, now - day) && near(na, now + 100 * day),
        "{nb} {na}"
    );

    let mut ca = ca;
    let (site, room) = site_room("austin", "1");
    // (leaf days, expected end): 10 days as asked; 1000 days cut to the CA's end.
    let cases = [(10, now + 10 * day), (1000, now + 100 * day)];
    for (days, expected_end) in cases {
        ca.set_leaf_validity_days(days).unwrap();
        let issued = ca.issue_appliance(&site, &room).unwrap();
        let (nb, na) = validity(&read_cert_file(&issued.cert_path).unwrap());
        assert!(near(nb, now - day), "{days}: not_before {nb}");
        assert!(near(na, expected_end), "{days}: not_after {na}");
        assert_eq!(issued.not_after.unix_timestamp(), na);
    }
    for days in [0, MAX_VALIDITY_DAYS + 1] {
        assert!(matches!(
            ca.set_leaf_validity_days(days),
            Err(PkiError::InvalidValidity { .. })
        ));
    }
}

#[test]
fn names_are_checked_before_anything_is_written() {
    let (_tmp, ca) = new_ca();
    let long = "a".repeat(MAX_NAME_BYTES + 1);
    let cases = [
        ("", "1"),
        ("Austin", "1"),
        ("austin", "a:b"),
        ("austin", "1/2"),
        ("-x", "1"),
        ("austin", " 1"),
        (long.as_str(), "1"),
    ];
    let before = fs::read_dir(ca.dir()).unwrap().count();
    for (site, room) in cases {
        let (site_id, room_id) = site_room(site, room);
        let err = ca.issue_appliance(&site_id, &room_id).unwrap_err();
        assert!(
            matches!(err, PkiError::InvalidName { .. }),
            "{site:?}/{room:?}: {err}"
        );
    }
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "server"),
        (vec!["bad name".to_owned()], "server"),
        (vec!["-x.example".to_owned()], "server"),
        (vec!["a..b".to_owned()], "server"),
        (vec!["ok".to_owned()], "../escape"),
    ];
    for (dns, out_name) in cases {
        assert!(
            ca.issue_server(&dns, &[], out_name).is_err(),
            "{dns:?} {out_name}"
        );
    }
    assert_eq!(fs::read_dir(ca.dir()).unwrap().count(), before);
}

#[test]
fn serials_parse_and_print() {
    let too_long = "1".repeat(41);
    let cases: Vec<(&str, Result<&str, ()>)> = vec![
        ("0a1b", Ok("0a1b")),
        ("0A:1B", Ok("0a1b")),
        ("00:00:0a:1b", Ok("0a1b")),
        ("abc", Ok("0abc")),
        (" 7f ", Ok("7f")),
        ("00", Ok("00")),
        ("", Err(())),
        ("xyz", Err(())),
        ("0a 1b", Err(())),
        ("é1", Err(())),
        (&too_long, Err(())),
    ];
    for (input, expected) in cases {
        let got = input
            .parse::<Serial>()
            .map(|s| s.to_string())
            .map_err(|_| ());
        assert_eq!(got, expected.map(str::to_owned), "{input:?}");
    }
}

#[test]
fn random_serials_are_positive_and_distinct() {
    let serials: Vec<Serial> = (0..200).map(|_| Serial::random().unwrap()).collect();
    for serial in &serials {
        assert_eq!(serial.as_bytes().len(), SERIAL_BYTES);
        assert!(serial.as_bytes()[0] & 0x80 == 0 && serial.as_bytes()[0] != 0);
    }
    let distinct: std::collections::HashSet<_> = serials.iter().collect();
    assert_eq!(distinct.len(), serials.len());
}

#[test]
fn appliance_urns_parse_strictly() {
    let cases: Vec<(&str, Option<(&str, &str)>)> = vec![
        ("urn:vigil:appliance:austin:1", Some(("austin", "1"))),
        ("urn:vigil:appliance:austin:1:2", None),
        ("urn:vigil:appliance:austin", None),
        ("urn:vigil:appliance::1", None),
        ("urn:vigil:server:austin:1", None),
        ("URN:VIGIL:APPLIANCE:austin:1", None),
    ];
    for (urn, expected) in cases {
        let got = ApplianceIdentity::from_urn(urn);
        let got = got.as_ref().map(|id| (id.site.as_str(), id.room.as_str()));
        assert_eq!(got, expected, "{urn}");
    }
}

/// Verifies a leaf the way rustls' WebPkiClientVerifier / WebPkiServerVerifier do, with the CRL.
fn webpki_verify(
    ca: &Ca,
    leaf_der: &[u8],
    usage: webpki::KeyUsage,
    at_unix_s: u64,
) -> Result<(), webpki::Error> {
    use rustls_pki_types::{CertificateDer, UnixTime};
    let ca_der = CertificateDer::from(ca.cert_der().to_vec());
    let anchors = [webpki::anchor_from_trusted_cert(&ca_der)?];
    let leaf_der = CertificateDer::from(leaf_der.to_vec());
    let leaf = webpki::EndEntityCert::try_from(&leaf_der)?;
    let crl_der = read_crl_file(&ca.dir().join(CRL_FILE)).unwrap();
    let crl =
        webpki::CertRevocationList::from(webpki::BorrowedCertRevocationList::from_der(&crl_der)?);
    let crls = [&crl];
    let revocation = webpki::RevocationOptionsBuilder::new(&crls)
        .unwrap()
        .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
        .build();
    leaf.verify_for_usage(
        &[webpki::aws_lc_rs::ECDSA_P256_SHA256],
        &anchors,
        &[],
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(at_unix_s)),
        usage,
        Some(revocation),
        None,
    )
    .map(|_| ())
}

#[test]
fn rustls_webpki_accepts_issued_certificates_and_refuses_revoked_ones() {
    let (tmp, ca) = new_ca();
    let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    let (site, room) = site_room("austin", "1");
    let appliance = read_cert_file(&ca.issue_appliance(&site, &room).unwrap().cert_path).unwrap();
    let server = ca
        .issue_server(
            &["localhost".to_owned()],
            &["127.0.0.1".parse().unwrap()],
            "server",
        )
        .unwrap();
    let server = read_cert_file(&server.cert_path).unwrap();
    let other = Ca::init(&tmp.path().join("other"), "Other").unwrap();
    let foreign = read_cert_file(&other.issue_appliance(&site, &room).unwrap().cert_path).unwrap();

    let client = webpki::KeyUsage::client_auth;
    let server_usage = webpki::KeyUsage::server_auth;
    let hours = 3600;
    let cases: Vec<(&str, &[u8], webpki::KeyUsage, u64, bool)> = vec![
        ("appliance as client", &appliance, client(), now, true),
        // An appliance whose clock is 20 hours slow still accepts and is accepted.
        (
            "appliance, clock 20 h behind",
            &appliance,
            client(),
            now - 20 * hours,
            true,
        ),
        (
            "appliance as server",
            &appliance,
            server_usage(),
            now,
            false,
        ),
        ("server as server", &server, server_usage(), now, true),
        ("server as client", &server, client(), now, false),
        ("another CA's appliance", &foreign, client(), now, false),
    ];
    for (what, der, usage, at, ok) in cases {
        let got = webpki_verify(&ca, der, usage, at);
        assert_eq!(got.is_ok(), ok, "{what}: {got:?}");
    }
    let server_cert = rustls_pki_types::CertificateDer::from(server.clone());
    let end_entity = webpki::EndEntityCert::try_from(&server_cert).unwrap();
    for name in ["localhost", "127.0.0.1"] {
        let name = rustls_pki_types::ServerName::try_from(name).unwrap();
        end_entity.verify_is_valid_for_subject_name(&name).unwrap();
    }

    ca.revoke(&cert_serial(&appliance).unwrap()).unwrap();
    assert!(matches!(
        webpki_verify(&ca, &appliance, client(), now),
        Err(webpki::Error::CertRevoked)
    ));
    assert!(webpki_verify(&ca, &server, server_usage(), now).is_ok());
}

/// The subject alternative names of a certificate, as x509-parser prints them.
fn san_strings(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| name.to_string())
        .collect()
}

#[test]
fn room_screen_certificates_serve_the_names_tablets_use() {
    let (tmp, ca) = new_ca();
    let (site, room) = site_room("austin", "1");
    let appliance = ca.issue_appliance(&site, &room).unwrap();
    let screen = ca
        .issue_screen(
            &site,
            &room,
            &["room1.austin.clinic".to_owned(), "LOCALHOST".to_owned()],
            &["10.1.2.3".parse().unwrap()],
        )
        .unwrap();
    // Beside the appliance's own files, private key 0600, logged as issued.
    assert_eq!(screen.cert_path, ca.dir().join("screen-austin-1.pem"));
    assert_eq!(screen.key_path, ca.dir().join("screen-austin-1.key"));
    assert_eq!(screen.cert_path.parent(), appliance.cert_path.parent());
    assert_eq!(mode(&screen.key_path), 0o600);
    assert_eq!(mode(&screen.cert_path), 0o644);
    assert!(ca.issued_serials().unwrap().contains(&screen.serial));

    let der = read_cert_file(&screen.cert_path).unwrap();
    ca.verify_issued(&der).unwrap();
    // The names given, then loopback; a name given twice (in any case) appears once.
    assert_eq!(
        san_strings(&der),
        [
            "DNSName(room1.austin.clinic)",
            "DNSName(LOCALHOST)",
            "IPAddress(0a:01:02:03)",
            "IPAddress(7f:00:00:01)",
            "IPAddress(00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01)",
        ]
    );
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth, "{eku:?}");
    assert!(!cert.is_ca());
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "room screen austin/1");
    // It is not an appliance identity: it cannot be used to sync.
    assert!(matches!(
        appliance_identity(&der),
        Err(PkiError::NotAppliance(_))
    ));

    // rustls-webpki, as a tablet's TLS stack: a server certificate chaining to the CA, valid
    // for the room's names and loopback, for no other name, and from no other CA.
    let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    webpki_verify(&ca, &der, webpki::KeyUsage::server_auth(), now).unwrap();
    assert!(webpki_verify(&ca, &der, webpki::KeyUsage::client_auth(), now).is_err());
    let other = Ca::init(&tmp.path().join("other"), "Other").unwrap();
    assert!(matches!(
        webpki_verify(&other, &der, webpki::KeyUsage::server_auth(), now),
        Err(webpki::Error::UnknownIssuer)
    ));
    let cert_der = rustls_pki_types::CertificateDer::from(der.clone());
    let end_entity = webpki::EndEntityCert::try_from(&cert_der).unwrap();
    let names = [
        ("room1.austin.clinic", true),
        ("ROOM1.Austin.Clinic", true),
        ("localhost", true),
        ("10.1.2.3", true),
        ("127.0.0.1", true),
        ("::1", true),
        ("room2.austin.clinic", false),
        ("austin.clinic", false),
        ("evil.example", false),
        ("10.1.2.4", false),
    ];
    for (name, valid) in names {
        let server_name = rustls_pki_types::ServerName::try_from(name).unwrap();
        let got = end_entity.verify_is_valid_for_subject_name(&server_name);
        assert_eq!(got.is_ok(), valid, "{name}: {got:?}");
    }
}

#[test]
fn room_screen_names_are_checked_before_anything_is_written() {
    let (_tmp, ca) = new_ca();
    let (site, room) = site_room("austin", "1");
    let dns = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let many: Vec<String> = (0..=MAX_SCREEN_NAMES)
        .map(|i| format!("r{i}.clinic"))
        .collect();
    let cases: Vec<(Vec<String>, Vec<IpAddr>, &str)> = vec![
        (vec![], vec![], "at least one --screen-dns"),
        (
            dns(&["room 1.clinic"]),
            vec![],
            "invalid DNS name \"room 1.clinic\"",
        ),
        (dns(&["*.austin.clinic"]), vec![], "invalid DNS name"),
        (
            vec![],
            vec!["0.0.0.0".parse().unwrap()],
            "invalid address 0.0.0.0",
        ),
        (vec![], vec!["::".parse().unwrap()], "invalid address ::"),
        (many, vec![], "at most 16"),
    ];
    for (dns_names, ips, expected) in cases {
        let err = ca.issue_screen(&site, &room, &dns_names, &ips).unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{dns_names:?} {ips:?}: {err}"
        );
    }
    let err = ca
        .issue_screen(&SiteId::from("Austin"), &room, &dns(&["a.clinic"]), &[])
        .unwrap_err();
    assert!(
        matches!(err, PkiError::InvalidName { what: "site", .. }),
        "{err}"
    );
    assert!(!ca.dir().join("screen-austin-1.pem").exists());
    assert!(!ca.dir().join("screen-austin-1.key").exists());
    assert!(ca.issued_serials().unwrap().is_empty());
}
