//! Certificates over QUIC: enrolment (a one-time code and a certificate request, on a
//! connection of its own that carries no client certificate) and renewal (a request on an
//! appliance's sync connection, protocol 2).
//!
//! The private key never leaves the appliance: it sends a PKCS#10 request, whose signature
//! proves it holds the key; the cloud ignores what the request asks to be called and names
//! the site and room from the code (enrolment) or from the certificate the connection was made
//! with (renewal). Every issue and every refusal goes to the audit log.

use std::path::Path;
use std::time::Duration;

use vigil_shared::fleet::SECRET_CHARS;
use vigil_shared::ids::{RoomId, SiteId};

use crate::pki::{Ca, PkiError, SignedCert};

/// An appliance certificate's default lifetime: one year. Appliances renew at a third of it
/// remaining, so a box offline for four months still comes back on its own.
pub const DEFAULT_APPLIANCE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long an enrolment code works.
pub const CODE_LIFETIME_US: i64 = 3600 * 1_000_000;

/// Enrolments served at once; more wait their turn's refusal (an enrolment is one round
/// trip, and a clinic enrols a room at a time).
pub const MAX_CONCURRENT_ENROLMENTS: usize = 4;

/// The cloud's certificate authority at work: the CA, how long appliance certificates last and
/// how long a renewed one keeps working.
pub struct CertIssuer {
    ca: Ca,
    ca_pem: String,
    validity: Duration,
    grace_us: i64,
}

impl std::fmt::Debug for CertIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertIssuer")
            .field("ca", &self.ca)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl CertIssuer {
    /// Loads the CA from its directory (`ca.pem` and `ca.key`).
    pub fn load(dir: &Path, validity: Duration, grace: Duration) -> Result<CertIssuer, PkiError> {
        let ca = Ca::load(dir)?;
        let ca_pem = pem_block("CERTIFICATE", ca.cert_der());
        Ok(CertIssuer {
            ca,
            ca_pem,
            validity,
            grace_us: i64::try_from(grace.as_micros()).unwrap_or(i64::MAX),
        })
    }

    /// How long a renewed certificate keeps working, µs.
    pub fn grace_us(&self) -> i64 {
        self.grace_us
    }

    /// The CA, for revocations.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Signs a request for `site` and `room`; the certificate and the CA's, PEM, ready to
    /// send.
    pub fn sign(
        &self,
        site: &str,
        room: &str,
        csr: &[u8],
    ) -> Result<(SignedCert, String), PkiError> {
        let signed = self.ca.sign_appliance_request(
            &SiteId::from(site),
            &RoomId::from(room),
            csr,
            self.validity,
        )?;
        let chain = format!("{}{}", signed.pem, self.ca_pem);
        Ok((signed, chain))
    }
}

/// The stored form of a code's secret: SHA-256 of its normalized characters, hex. `None`
/// when it cannot be a secret at all.
pub fn code_hash(secret: &str) -> Option<String> {
    if secret.len() != SECRET_CHARS || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    Some(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// The SHA-256 of a certificate (DER), for the fingerprint in codes.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// DER as a PEM block.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_secrets_hash() {
        assert_eq!(code_hash("0123456789ABCDEF").map(|h| h.len()), Some(64));
        assert_ne!(code_hash("0123456789ABCDEF"), code_hash("0123456789ABCDEG"));
        assert_eq!(code_hash("0123456789ABCDE"), None);
        assert_eq!(code_hash("0123456789ABCDE'"), None);
    }
}
