//! The appliance's certificate: enrolment with a one-time code, renewal before it runs out,
//! and the words for one that did.
//!
//! `vigil-edge enrol CODE` makes a P-256 key on the appliance (it never leaves the box), sends
//! a certificate request to the cloud the code names, trusts that cloud only if its chain holds
//! the CA whose fingerprint the code carries, and then writes the key and certificate (one file,
//! mode 0600) and the CA beside the database, and the `[cloud]` section (and site and room)
//! into `edge.toml`. Renewal makes a new key the same way and asks over the sync connection
//! (see [`crate::sync`]); [`save_credentials`] replaces the file in one rename, so a crash
//! leaves the old pair or the new one, never half of each.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use vigil_shared::fleet::{CodeError, EnrolCode};
use vigil_shared::wire::{ENROL_ALPN, FrameDecoder, Message, encode_message};

/// The file holding the appliance's key and certificate after enrolment, in the data
/// directory.
pub const CREDENTIALS_FILE: &str = "appliance.pem";

/// The clinic CA's certificate after enrolment, in the data directory.
pub const CA_FILE: &str = "cloud-ca.pem";

/// How long an enrolment may take end to end.
pub const ENROL_TIMEOUT: Duration = Duration::from_secs(20);

/// Why enrolment failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The code was mistyped or is not a code.
    #[error("{0}")]
    Code(#[from] CodeError),
    /// The cloud could not be reached.
    #[error("cannot reach the cloud at {addr}: {reason}")]
    Unreachable {
        /// The code's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The cloud's chain does not hold the CA the code names: the wrong cloud, or someone
    /// in between.
    #[error(
        "the cloud at {addr} did not prove it is the one the code names (its CA does not match the code's fingerprint, or its certificate does not verify); nothing was sent. Check the address, or make a new code"
    )]
    WrongCloud {
        /// The code's address.
        addr: String,
    },
    /// The cloud refused; its reason.
    #[error("the cloud refused the enrolment: {0}")]
    Refused(String),
    /// The answer made no sense.
    #[error("the cloud's answer is unusable: {0}")]
    Answer(String),
    /// A key or request could not be made.
    #[error("cannot make a key: {0}")]
    Key(String),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file could not be read or does not fit.
    #[error("{0}")]
    Config(String),
}

/// A fresh key (PEM) and a certificate request for it (DER). The request's subject means
/// nothing: the cloud names the certificate.
pub fn new_key_and_request() -> Result<(String, Vec<u8>), EnrolError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| EnrolError::Key(e.to_string()))?;
    let params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| EnrolError::Key(e.to_string()))?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| EnrolError::Key(e.to_string()))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// A certificate's validity, µs since the epoch: (not before, not after).
pub fn validity(cert_der: &[u8]) -> Option<(i64, i64)> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).ok()?;
    let v = cert.validity();
    Some((
        v.not_before.timestamp().saturating_mul(1_000_000),
        v.not_after.timestamp().saturating_mul(1_000_000),
    ))
}

/// The validity of the first certificate in a PEM file.
pub fn file_validity(path: &Path) -> Option<(i64, i64)> {
    let cert = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    validity(cert.as_ref())
}

/// Whether a certificate valid over `not_before..not_after` should be renewed at `now`: less
/// than a third of its life remains.
pub fn renewal_due(not_before_us: i64, not_after_us: i64, now_us: i64) -> bool {
    let life = not_after_us - not_before_us;
    not_after_us - now_us < life / 3
}

/// What an appliance whose certificate ran out while it was offline says, and what to do.
pub fn expired_message(site: &str, room: &str, not_after_us: i64) -> String {
    format!(
        "this appliance's certificate expired at {} (it was offline when it was due for \
         renewal), so the cloud will not accept it; recording continues. To re-enrol: on the \
         cloud, `vigil-cloud enrol --site {site} --room {room} --replace`, then on this \
         appliance `vigil-edge enrol CODE` and restart it",
        vigil_shared::zone::rfc3339_utc(not_after_us)
    )
}

/// Replaces the appliance's key and certificate. With one path for both (as enrolment
/// writes), one atomic rename; with two, the key first, then the certificate.
pub fn save_credentials(
    cert_path: &Path,
    key_path: &Path,
    key_pem: &str,
    cert_pem: &str,
) -> Result<(), EnrolError> {
    if cert_path == key_path {
        write_atomic(cert_path, format!("{key_pem}{cert_pem}").as_bytes(), 0o600)
    } else {
        write_atomic(key_path, key_pem.as_bytes(), 0o600)?;
        write_atomic(cert_path, cert_pem.as_bytes(), 0o644)
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it over `path` and
/// syncs the directory.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), EnrolError> {
    let err = |source| EnrolError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("new");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The PEM blocks of a text, each with its BEGIN and END lines.
pub fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                out.extend(current.take());
            }
        }
    }
    out
}

/// What the cloud gave an enrolling appliance.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The site its certificate names.
    pub site: String,
    /// The room.
    pub room: String,
    /// The new key (PEM).
    pub key_pem: String,
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The CA's certificate (PEM), the one the code's fingerprint names.
    pub ca_pem: String,
}

/// Enrols with the cloud the code names: a new key, a request, the code; the certificate
/// back. Nothing is written here.
pub async fn request_certificate(code: &EnrolCode, software: &str) -> Result<Enrolled, EnrolError> {
    let addr = code.addr.clone();
    let unreachable = |reason: String| EnrolError::Unreachable {
        addr: addr.clone(),
        reason,
    };
    let (host, _) = addr
        .rsplit_once(':')
        .ok_or_else(|| unreachable("no port".into()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let targets: Vec<SocketAddr> = tokio::net::lookup_host(&addr)
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .collect();
    let target = targets
        .first()
        .copied()
        .ok_or_else(|| unreachable("the name has no address".into()))?;
    let (key_pem, csr) = new_key_and_request()?;
    let pinned = Arc::new(PinnedVerifier {
        code: code.clone(),
        ca: Mutex::new(None),
    });
    let mut tls = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .dangerous()
        .with_custom_certificate_verifier(pinned.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![ENROL_ALPN.to_vec()];
    tls.enable_early_data = false;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| EnrolError::Key(e.to_string()))?;
    let bind: SocketAddr = if target.is_ipv6() {
        SocketAddr::from(([0_u16; 8], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| unreachable(e.to_string()))?;
    let config = quinn::ClientConfig::new(Arc::new(quic));
    let exchange = async {
        let conn = endpoint
            .connect_with(config, target, &host)
            .map_err(|e| unreachable(e.to_string()))?
            .await
            .map_err(|e| {
                if pinned.ca.lock().map(|c| c.is_none()).unwrap_or(true) {
                    EnrolError::WrongCloud { addr: addr.clone() }
                } else {
                    unreachable(e.to_string())
                }
            })?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let request = Message::Enrol {
            code: code.secret.clone(),
            csr,
            software: software.to_owned(),
        };
        let frame = encode_message(&request).map_err(|e| EnrolError::Answer(e.to_string()))?;
        send.write_all(&frame)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = send.finish();
        let mut decoder = FrameDecoder::new();
        let answer = loop {
            if let Some(m) = decoder
                .next_message()
                .map_err(|e| EnrolError::Answer(e.to_string()))?
            {
                break m;
            }
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => decoder.push(&chunk.bytes),
                Ok(None) => {
                    return Err(EnrolError::Answer(
                        "the cloud closed without answering".into(),
                    ));
                }
                Err(e) => return Err(unreachable(e.to_string())),
            }
        };
        conn.close(0_u32.into(), b"enrolled");
        Ok(answer)
    };
    let answer = tokio::time::timeout(ENROL_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", ENROL_TIMEOUT.as_secs())))??;
    endpoint.wait_idle().await;
    let (site, room, chain) = match answer {
        Message::Certificate {
            site,
            room,
            chain_pem,
        } => (site, room, chain_pem),
        Message::Reject { reason, .. } => return Err(EnrolError::Refused(reason)),
        other => {
            return Err(EnrolError::Answer(format!(
                "expected a certificate, got {}",
                other.name()
            )));
        }
    };
    let cert_pem = pem_blocks(&chain)
        .into_iter()
        .next()
        .ok_or_else(|| EnrolError::Answer("no certificate in the answer".into()))?;
    let ca_der = pinned
        .ca
        .lock()
        .ok()
        .and_then(|c| c.clone())
        .ok_or_else(|| EnrolError::WrongCloud { addr: addr.clone() })?;
    Ok(Enrolled {
        site,
        room,
        key_pem,
        cert_pem,
        ca_pem: pem_of(&chain, &ca_der).unwrap_or_default(),
    })
}

/// The block of `chain` holding the certificate `der`.
fn pem_of(chain: &str, der: &[u8]) -> Option<String> {
    pem_blocks(chain).into_iter().find(|block| {
        CertificateDer::from_pem_slice(block.as_bytes()).is_ok_and(|c| c.as_ref() == der)
    })
}

/// Trusts a server only if its chain holds a CA certificate whose SHA-256 the code names and
/// the server's certificate verifies against that CA (WebPKI, rustls's own verifier) for the
/// code's host.
#[derive(Debug)]
struct PinnedVerifier {
    code: EnrolCode,
    /// The pinned CA, once the handshake found it.
    ca: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, c.as_ref());
                let mut sha = [0_u8; 32];
                sha.copy_from_slice(digest.as_ref());
                self.code.names_ca(&sha)
            })
            .ok_or_else(|| {
                rustls::Error::General("no CA matching the code's fingerprint".into())
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let webpki = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified =
            webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        if let Ok(mut slot) = self.ca.lock() {
            *slot = Some(ca.as_ref().to_vec());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Writes what enrolment brought: the key and certificate (one file, 0600) and the CA in
/// the data directory, then site, room and `[cloud]` in the configuration file. Files take
/// the data directory's owner (the service's user when run as root with sudo).
pub fn install(
    config_path: &Path,
    code: &EnrolCode,
    got: &Enrolled,
) -> Result<PathBuf, EnrolError> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| EnrolError::Config(format!("cannot read {}: {e}", config_path.display())))?;
    let value: toml::Table = toml::from_str(&text).map_err(|e| {
        EnrolError::Config(format!("{} is not valid TOML: {e}", config_path.display()))
    })?;
    for (field, want) in [("site", &got.site), ("room", &got.room)] {
        if let Some(have) = value.get(field).and_then(|v| v.as_str())
            && !have.is_empty()
            && have != want.as_str()
        {
            return Err(EnrolError::Config(format!(
                "{} names {field} {have:?} but the code enrolled this appliance as {want:?}; \
                 set {field} = {want:?} there (or make a code for {have:?}) and enrol again",
                config_path.display()
            )));
        }
    }
    let data_dir = value
        .get("data_dir")
        .and_then(|v| v.as_str())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/vigil"));
    let data_dir = if data_dir.is_relative() {
        config_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(data_dir)
    } else {
        data_dir
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .map_err(|source| EnrolError::Write {
            path: data_dir.clone(),
            source,
        })?;
    let credentials = data_dir.join(CREDENTIALS_FILE);
    let ca = data_dir.join(CA_FILE);
    save_credentials(&credentials, &credentials, &got.key_pem, &got.cert_pem)?;
    write_atomic(&ca, got.ca_pem.as_bytes(), 0o644)?;
    if let Ok(meta) = std::fs::metadata(&data_dir) {
        use std::os::unix::fs::MetadataExt as _;
        for path in [&credentials, &ca] {
            // Only root can give files away; as the service's own user they are its already.
            let _ = std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()));
        }
    }
    let host = code
        .addr
        .rsplit_once(':')
        .map_or(code.addr.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let section = format!(
        "[cloud]                         # written by `vigil-edge enrol`\n\
         addr = {addr:?}\n\
         server_name = {host:?}\n\
         ca_cert = {ca:?}\n\
         cert = {cred:?}\n\
         key = {cred:?}                  # the same file: key and certificate, renewed together\n",
        addr = code.addr,
        ca = ca.display().to_string(),
        cred = credentials.display().to_string(),
    );
    let updated = with_identity(&with_cloud_section(&text, &section), &got.site, &got.room);
    crate::config::EdgeConfig::parse(config_path, &updated).map_err(|e| {
        EnrolError::Config(format!(
            "the updated configuration does not check ({e}); {} is unchanged",
            config_path.display()
        ))
    })?;
    write_atomic(config_path, updated.as_bytes(), mode_of(config_path))?;
    Ok(credentials)
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).map_or(0o640, |m| m.permissions().mode() & 0o777)
}

/// The configuration text with its `[cloud]` table replaced by `section` (or `section`
/// appended when it has none). Comments elsewhere are kept.
pub fn with_cloud_section(text: &str, section: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let is_header = |l: &str| l.trim_start().starts_with('[');
    let is_cloud = |l: &str| {
        let t = l.trim_start();
        t.starts_with("[cloud]") || t.starts_with("[ cloud ]")
    };
    let mut out = String::with_capacity(text.len() + section.len());
    let mut i = 0;
    let mut replaced = false;
    while i < lines.len() {
        if is_cloud(lines[i]) && !replaced {
            out.push_str(section);
            replaced = true;
            i += 1;
            while i < lines.len() && !is_header(lines[i]) {
                i += 1;
            }
            continue;
        }
        out.push_str(lines[i]);
        out.push('\n');
        i += 1;
    }
    if !replaced {
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(section);
    }
    out
}

/// The configuration text with its top-level `site` and `room` set (added at the top when
/// missing).
pub fn with_identity(text: &str, site: &str, room: &str) -> String {
    let mut out = String::with_capacity(text.len() + 40);
    let (mut site_done, mut room_done, mut in_table) = (false, false, false);
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_table = true;
        }
        let key = t.split('=').next().map(str::trim);
        if !in_table && key == Some("site") && t.contains('=') && !site_done {
            out.push_str(&format!("site = {site:?}\n"));
            site_done = true;
        } else if !in_table && key == Some("room") && t.contains('=') && !room_done {
            out.push_str(&format!("room = {room:?}\n"));
            room_done = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let mut head = String::new();
    if !site_done {
        head.push_str(&format!("site = {site:?}\n"));
    }
    if !room_done {
        head.push_str(&format!("room = {room:?}\n"));
    }
    head + &out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_with_a_third_of_the_life_left() {
        assert!(!renewal_due(0, 300, 0));
        assert!(!renewal_due(0, 300, 200));
        assert!(renewal_due(0, 300, 201));
        assert!(renewal_due(0, 300, 400));
    }

    #[test]
    fn the_cloud_section_is_replaced_or_appended_and_the_rest_kept() {
        let packaged = "# comment\nsite = \"\"\nroom = \"\"   # the room\ndata_dir = \"/d\"\n\n[source]\nkind = \"ble\"\n\n# [cloud]\n# addr = \"x\"\n";
        let section = "[cloud]\naddr = \"h:1\"\n";
        let added = with_identity(&with_cloud_section(packaged, section), "austin", "1");
        assert_eq!(
            added,
            "# comment\nsite = \"austin\"\nroom = \"1\"\ndata_dir = \"/d\"\n\n[source]\nkind = \"ble\"\n\n# [cloud]\n# addr = \"x\"\n\n[cloud]\naddr = \"h:1\"\n"
        );
        let again = with_cloud_section(&added, "[cloud]\naddr = \"h:2\"\n");
        assert_eq!(
            again.lines().filter(|l| *l == "[cloud]").count(),
            1,
            "{again}"
        );
        assert!(again.contains("addr = \"h:2\"") && !again.contains("addr = \"h:1\""));
        let followed = "[cloud]\naddr = \"old\"\n[source]\nkind = \"none\"\n";
        assert_eq!(
            with_cloud_section(followed, section),
            "[cloud]\naddr = \"h:1\"\n[source]\nkind = \"none\"\n"
        );
        assert_eq!(
            with_identity("data_dir = \"/d\"\n", "f", "2"),
            "site = \"f\"\nroom = \"2\"\ndata_dir = \"/d\"\n"
        );
    }

    #[test]
    fn pem_blocks_are_split_whole() {
        let text = "junk\n-----BEGIN A-----\nAAA\n-----END A-----\n-----BEGIN B-----\nBB\n-----END B-----\ntrailing";
        assert_eq!(
            pem_blocks(text),
            vec![
                "-----BEGIN A-----\nAAA\n-----END A-----\n",
                "-----BEGIN B-----\nBB\n-----END B-----\n"
            ]
        );
    }

    #[test]
    fn a_new_key_comes_with_a_request_the_cloud_can_read() {
        let (key, csr) = new_key_and_request().unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        use x509_parser::prelude::FromDer as _;
        let (_, parsed) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&csr).unwrap();
        parsed.verify_signature().unwrap();
    }
}
