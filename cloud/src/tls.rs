//! TLS for the sync endpoint: the server certificate, mutual authentication of appliances
//! against the private CA and its revocation list, and the QUIC transport limits.
//!
//! Every file is read here, at start-up (and again when the CRL changes), and an error names
//! the file. Which appliance a verified certificate belongs to is [`crate::pki`]'s business.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use vigil_shared::wire::{ALPN, ENROL_ALPN};

use crate::config::PkiFiles;

/// Documents one appliance may sync at once (QUIC bidirectional streams). Bounds the memory
/// and database work one appliance can cause; a room has a handful of changed documents.
pub const MAX_STREAMS_PER_APPLIANCE: u32 = 16;

/// Idle timeout of a sync connection; appliances send keep-alives every
/// [`KEEP_ALIVE`], well below it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Keep-alive interval the appliances use.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} {path}: {reason}")]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The files were read but don't make a valid configuration.
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

fn file_err(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Reads every certificate of a PEM file.
pub fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(what, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(what, path, e))?;
    if certs.is_empty() {
        return Err(file_err(what, path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// Reads a private key from a PEM file.
pub fn read_key(path: &Path, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(what, path, e))
}

/// Reads a CRL from a PEM file.
pub fn read_crl(path: &Path) -> Result<CertificateRevocationListDer<'static>, TlsError> {
    CertificateRevocationListDer::from_pem_file(path).map_err(|e| file_err("CRL", path, e))
}

/// The QUIC server configuration: TLS 1.3, ALPN `vigil-sync/1` or `vigil-enrol/1`, no 0-RTT.
/// A client certificate, when presented, must chain to the CA and not be on the CRL; one is
/// optional in the handshake only so that an appliance can enrol: the sync server refuses a
/// `vigil-sync/1` connection without one before reading a byte, and serves nothing but the
/// enrolment exchange on `vigil-enrol/1`. The chain presented ends with the CA's certificate,
/// so an enrolling appliance can check it against the fingerprint in its code.
pub fn server_config(files: &PkiFiles) -> Result<quinn::ServerConfig, TlsError> {
    let ca = read_certs(&files.ca_cert, "CA certificate")?;
    let mut chain = read_certs(&files.server_cert, "server certificate")?;
    for cert in &ca {
        if !chain.contains(cert) {
            chain.push(cert.clone());
        }
    }
    let key = read_key(&files.server_key, "server key")?;
    let crl = read_crl(&files.crl)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert)
            .map_err(|e| file_err("CA certificate", &files.ca_cert, e))?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .with_crls([crl])
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("server certificate and key: {e}")))?;
    tls.alpn_protocols = vec![ALPN.to_vec(), ENROL_ALPN.to_vec()];
    // 0-RTT data can be replayed by anyone on the path; sync frames must not be.
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(MAX_STREAMS_PER_APPLIANCE.into());
    transport.max_concurrent_uni_streams(0_u8.into());
    transport.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .map_err(|_| TlsError::Config("idle timeout".into()))?,
    ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}
