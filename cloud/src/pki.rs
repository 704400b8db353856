//! Vigil's private certificate authority: the CA itself, server and appliance certificates,
//! revocation (CRL), and reading an appliance's site and room back out of its certificate.
//!
//! Everything lives as files in one directory (0700), so `vigil-cloud pki …` and tests share it:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the CA certificate and its private key (0600) |
//! | `server.pem`, `server.key` | the cloud's TLS certificate (ServerAuth) and key |
//! | `appliance-SITE-ROOM.pem/.key` | a room appliance's client certificate (ClientAuth) and key |
//! | `screen-SITE-ROOM.pem/.key` | the HTTPS certificate (ServerAuth) of that appliance's room screen and API, for the names tablets use |
//! | `crl.pem` | the certificate revocation list, signed by the CA, re-signed on every revocation |
//! | `revoked.txt` | the revoked serials and when, the source `crl.pem` is signed from |
//! | `issued.txt` | every certificate issued: serial, kind, name, expiry — so one can be revoked by serial after its files were replaced |
//!
//! Keys are ECDSA P-256, made and signed with aws-lc-rs, the same crypto library rustls and
//! quinn use. An appliance's identity has exactly one canonical place: a URI subject alternative
//! name `urn:vigil:appliance:SITE:ROOM` ([`appliance_identity`] reads it back); the common name
//! `appliance SITE/ROOM` is for people only.
//!
//! This module does not run TLS and does not decide what an appliance may sync; the sync server
//! verifies the chain (rustls) and then asks this module who the peer is.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use vigil_shared::ids::{RoomId, SiteId};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// The CA certificate's file name.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name.
pub const CA_KEY_FILE: &str = "ca.key";
/// The certificate revocation list's file name.
pub const CRL_FILE: &str = "crl.pem";
/// The revoked-serials list's file name.
pub const REVOKED_FILE: &str = "revoked.txt";
/// The issued-certificates log's file name.
pub const ISSUED_FILE: &str = "issued.txt";

/// The CA's common name unless one is given.
pub const DEFAULT_CA_NAME: &str = "Vigil Clinic CA";

/// The CA certificate's default lifetime: 10 years. Replacing a CA means re-issuing every
/// appliance's certificate on site, so it should outlive the hardware.
pub const DEFAULT_CA_VALIDITY_DAYS: u32 = 3650;

/// A server or appliance certificate's default lifetime: 2 years, short enough that a
/// forgotten key expires, long enough that renewal is a planned visit, not an emergency.
pub const DEFAULT_LEAF_VALIDITY_DAYS: u32 = 730;

/// The longest lifetime `--days` accepts: 30 years. More is a typo.
pub const MAX_VALIDITY_DAYS: u32 = 30 * 365;

/// How far into the past every certificate's `not_before` is set: one day. A room appliance's
/// clock may be off by hours (no network at boot, a drained RTC battery), and a certificate that
/// is "not yet valid" on it would stop sync on the day it is installed.
pub const NOT_BEFORE_BACKDATE: Duration = Duration::days(1);

/// How long a CRL is valid: one year. rustls does not enforce a CRL's next update unless asked
/// to; the CRL is re-signed on every revocation and by `vigil-cloud pki crl`.
pub const CRL_VALIDITY: Duration = Duration::days(365);

/// The length of a certificate serial, in bytes: 16 random bytes (RFC 5280 allows up to 20; the
/// CA/Browser Forum asks for at least 64 random bits), so two serials never collide.
pub const SERIAL_BYTES: usize = 16;

/// The longest site id, room id or output name, in bytes. They end up in file names, URNs and
/// common names (at most 64 characters), so they stay short.
pub const MAX_NAME_BYTES: usize = 32;

/// The URI prefix that names an appliance in its certificate: `urn:vigil:appliance:SITE:ROOM`.
pub const APPLIANCE_URN_PREFIX: &str = "urn:vigil:appliance:";

/// The loopback names every room screen certificate also carries, so the appliance's own
/// display can reach the screen over HTTPS whatever address it listens on. They identify no
/// other machine: only a process on the browser's own host can answer for them.
pub const SCREEN_LOOPBACK_DNS: &str = "localhost";

/// The loopback addresses every room screen certificate also carries (see
/// [`SCREEN_LOOPBACK_DNS`]).
pub const SCREEN_LOOPBACK_IPS: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
];

/// The most names a room screen certificate carries besides the loopback ones: a room has a
/// name or two and an address or two; dozens would be a script gone wrong.
pub const MAX_SCREEN_NAMES: usize = 16;

/// Something the CA could not do, naming the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What the file holds, e.g. "CA key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {what} {}: {source}", path.display())]
    Write {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's contents could not be understood.
    #[error("cannot parse {what} {}: {detail}", path.display())]
    ParseFile {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Certificate bytes (not from a file) could not be understood.
    #[error("cannot parse certificate: {0}")]
    ParseCert(String),
    /// `init` would overwrite an existing CA.
    #[error(
        "a CA already exists at {}; replacing it invalidates every certificate it issued (use --force to do it anyway)",
        path.display()
    )]
    CaExists {
        /// The existing CA file.
        path: PathBuf,
    },
    /// The CA key does not belong to the CA certificate.
    #[error("CA key {} does not match CA certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// rcgen or aws-lc-rs failed to make a key, certificate or CRL.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// The cause.
        source: rcgen::Error,
    },
    /// The system random number generator failed.
    #[error("cannot draw a random serial number")]
    Random,
    /// A site id, room id or output name that can't go into a certificate or file name.
    #[error(
        "invalid {what} {value:?}: use 1 to {MAX_NAME_BYTES} of a-z, 0-9 and '-', not starting with '-'"
    )]
    InvalidName {
        /// Which name.
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// A DNS name the certificate can't carry.
    #[error("invalid DNS name {0:?}")]
    InvalidDnsName(String),
    /// An address no client connects to (`0.0.0.0`, `::`, multicast).
    #[error(
        "invalid address {0}: name the address clients connect to, not a wildcard or multicast one"
    )]
    InvalidIp(IpAddr),
    /// A server certificate without any name.
    #[error("a server certificate needs at least one --dns name or --ip address")]
    NoServerNames,
    /// A room screen certificate without any name tablets could use.
    #[error(
        "a room screen certificate needs at least one --screen-dns name or --screen-ip address \
         (the names tablets on the room network type to reach the screen)"
    )]
    NoScreenNames,
    /// A room screen certificate with more names than anyone needs.
    #[error("{given} room screen names given; at most {MAX_SCREEN_NAMES}")]
    TooManyScreenNames {
        /// How many were given.
        given: usize,
    },
    /// A validity period out of range.
    #[error("invalid validity of {days} days: use 1 to {MAX_VALIDITY_DAYS}")]
    InvalidValidity {
        /// The number given.
        days: u32,
    },
    /// A serial number that isn't hex.
    #[error("invalid serial number {0:?}: expected hex digits, optionally separated by ':'")]
    InvalidSerial(String),
    /// A serial this CA never issued.
    #[error("serial {serial} was not issued by this CA (it is not in {})", issued.display())]
    UnknownSerial {
        /// The serial given.
        serial: Serial,
        /// The issued-certificates log.
        issued: PathBuf,
    },
    /// A certificate signed by someone else.
    #[error("certificate was not issued by this CA: {0}")]
    NotIssuedByCa(String),
    /// A certificate that names no appliance.
    #[error("certificate does not identify an appliance: {0}")]
    NotAppliance(String),
    /// A certificate request that does not parse or whose signature does not verify.
    #[error("invalid certificate request: {0}")]
    Request(String),
}

/// A certificate serial number, shown as lowercase hex without leading zero bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// The serial from its big-endian bytes (a DER integer's content); leading zero bytes are
    /// dropped so the same number always compares equal.
    pub fn from_bytes(bytes: &[u8]) -> Serial {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        Serial(bytes[start..].to_vec())
    }

    /// The big-endian bytes, without leading zeros.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A fresh random serial: positive, [`SERIAL_BYTES`] long, its first byte non-zero so its
    /// DER encoding is exactly these bytes.
    fn random() -> Result<Serial, PkiError> {
        let mut bytes = [0u8; SERIAL_BYTES];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::Random)?;
        bytes[0] = (bytes[0] & 0x7f) | 0x01;
        Ok(Serial(bytes.to_vec()))
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("00");
        }
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Serial {
    type Err = PkiError;

    /// Hex, upper or lower case, optionally with ':' between bytes (as openssl prints them).
    fn from_str(s: &str) -> Result<Serial, PkiError> {
        let digits: String = s.trim().chars().filter(|&c| c != ':').collect();
        let invalid = || PkiError::InvalidSerial(s.to_owned());
        if digits.is_empty() || digits.len() > 2 * 20 || !digits.is_ascii() {
            return Err(invalid());
        }
        // An odd number of digits gets a leading zero, so "abc" is 0x0abc.
        let digits = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits
        };
        let bytes = (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|_| invalid()))
            .collect::<Result<Vec<u8>, PkiError>>()?;
        Ok(Serial::from_bytes(&bytes))
    }
}

/// The site and room an appliance certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApplianceIdentity {
    /// The clinic site, e.g. `austin`.
    pub site: SiteId,
    /// The room within the site, e.g. `1`.
    pub room: RoomId,
}

impl ApplianceIdentity {
    /// The identity, checking both parts are valid names.
    pub fn new(site: &SiteId, room: &RoomId) -> Result<ApplianceIdentity, PkiError> {
        check_name("site", site.as_str())?;
        check_name("room", room.as_str())?;
        Ok(ApplianceIdentity {
            site: site.clone(),
            room: room.clone(),
        })
    }

    /// The URI subject alternative name that carries it: `urn:vigil:appliance:SITE:ROOM`.
    pub fn urn(&self) -> String {
        format!("{APPLIANCE_URN_PREFIX}{}:{}", self.site, self.room)
    }

    /// The identity a URN names, if it is one of ours and well formed.
    pub fn from_urn(urn: &str) -> Option<ApplianceIdentity> {
        let (site, room) = urn.strip_prefix(APPLIANCE_URN_PREFIX)?.split_once(':')?;
        ApplianceIdentity::new(&SiteId::from(site), &RoomId::from(room)).ok()
    }
}

impl fmt::Display for ApplianceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.site, self.room)
    }
}

/// What a CA writes when it issues a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate (PEM).
    pub cert_path: PathBuf,
    /// Its private key (PEM, PKCS#8, mode 0600).
    pub key_path: PathBuf,
    /// Its serial number.
    pub serial: Serial,
    /// The end of its validity.
    pub not_after: OffsetDateTime,
}

/// A certificate signed for a key the CA never saw (an appliance's request).
#[derive(Debug, Clone)]
pub struct SignedCert {
    /// The certificate (PEM).
    pub pem: String,
    /// Its serial number.
    pub serial: Serial,
    /// The end of its validity.
    pub not_after: OffsetDateTime,
}

/// What a revocation wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The serial revoked.
    pub serial: Serial,
    /// False if it was revoked already (nothing changed but the CRL's signature date).
    pub newly_revoked: bool,
    /// The re-signed CRL.
    pub crl_path: PathBuf,
    /// The revoked-serials list.
    pub revoked_path: PathBuf,
}

/// How to create a CA.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// The CA's common name.
    pub name: String,
    /// The CA certificate's lifetime in days.
    pub validity_days: u32,
    /// Replace an existing CA in the directory.
    pub force: bool,
}

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions {
            name: DEFAULT_CA_NAME.to_owned(),
            validity_days: DEFAULT_CA_VALIDITY_DAYS,
            force: false,
        }
    }
}

/// A private CA loaded from (or just written to) its directory.
pub struct Ca {
    dir: PathBuf,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    not_after: OffsetDateTime,
    leaf_validity_days: u32,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a CA in `dir` (created 0700 if missing) with default validity, refusing to
    /// replace an existing one.
    pub fn init(dir: &Path, name: &str) -> Result<Ca, PkiError> {
        Ca::init_with(
            dir,
            &CaOptions {
                name: name.to_owned(),
                ..CaOptions::default()
            },
        )
    }

    /// Creates a CA in `dir`: `ca.pem`, `ca.key` (0600) and an empty `crl.pem`.
    pub fn init_with(dir: &Path, options: &CaOptions) -> Result<Ca, PkiError> {
        let days = check_validity(options.validity_days)?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !options.force {
            for path in [&cert_path, &key_path] {
                if path.exists() {
                    return Err(PkiError::CaExists { path: path.clone() });
                }
            }
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| PkiError::Write {
                what: "CA directory",
                path: dir.to_owned(),
                source,
            })?;

        let key = generate_key("CA key")?;
        let now = now_s();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, options.name.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Vigil");
        // Path length 0: this CA signs leaf certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.serial_number = Some(SerialNumber::from_slice(Serial::random()?.as_bytes()));
        params.not_before = now - NOT_BEFORE_BACKDATE;
        params.not_after = now + days;
        let not_after = params.not_after;
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "CA certificate",
                source,
            })?;

        // The key first: a CA certificate without its key is useless, the reverse is harmless.
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600, "CA key")?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644, "CA certificate")?;
        let ca = Ca {
            dir: dir.to_owned(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
            not_after,
            leaf_validity_days: DEFAULT_LEAF_VALIDITY_DAYS,
        };
        if options.force {
            // A new CA starts with no revocations, no issued certificates and CRL number 1.
            // Certificates the old CA issued stay in the directory but are no longer trusted.
            for (file, what) in [
                (REVOKED_FILE, "revoked-serials list"),
                (ISSUED_FILE, "issued-certificates log"),
                (CRL_FILE, "CRL"),
            ] {
                remove_if_exists(&dir.join(file), what)?;
            }
        }
        ca.write_crl()?;
        Ok(ca)
    }

    /// Loads the CA in `dir`, checking that its key belongs to its certificate.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_der = read_pem_or_der(&cert_path, "CA certificate", "CERTIFICATE")?;
        let key_pem = read_text(&key_path, "CA key")?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::ParseFile {
            what: "CA key",
            path: key_path.clone(),
            detail: e.to_string(),
        })?;
        let (not_after, spki) = {
            let cert = parse_cert(&cert_der).map_err(|detail| PkiError::ParseFile {
                what: "CA certificate",
                path: cert_path.clone(),
                detail,
            })?;
            (
                asn1_to_offset(cert.validity().not_after.timestamp()),
                cert.public_key().subject_public_key.data.to_vec(),
            )
        };
        if spki != key.public_key_raw() {
            return Err(PkiError::KeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key).map_err(|e| {
            PkiError::ParseFile {
                what: "CA certificate",
                path: cert_path.clone(),
                detail: e.to_string(),
            }
        })?;
        Ok(Ca {
            dir: dir.to_owned(),
            cert_der,
            issuer,
            not_after,
            leaf_validity_days: DEFAULT_LEAF_VALIDITY_DAYS,
        })
    }

    /// Sets the lifetime of certificates issued from now on (default
    /// [`DEFAULT_LEAF_VALIDITY_DAYS`]). A leaf never outlives the CA: its end is cut to the CA's.
    pub fn set_leaf_validity_days(&mut self, days: u32) -> Result<(), PkiError> {
        check_validity(days)?;
        self.leaf_validity_days = days;
        Ok(())
    }

    /// The CA's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (DER), the trust root for both sides of the TLS handshake.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The end of the CA certificate's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Issues the cloud's server certificate (ServerAuth) for these names, written to
    /// `OUT_NAME.pem` and `OUT_NAME.key`.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        out_name: &str,
    ) -> Result<IssuedCert, PkiError> {
        check_name("output name", out_name)?;
        if dns_names.is_empty() && ips.is_empty() {
            return Err(PkiError::NoServerNames);
        }
        let sans = server_sans(dns_names, ips)?;
        let common_name = dns_names
            .first()
            .cloned()
            .or_else(|| ips.first().map(|ip| ip.to_string()))
            .unwrap_or_default();
        self.issue(
            Leaf {
                kind: "server",
                name: out_name,
                common_name: &common_name,
                sans,
                eku: ExtendedKeyUsagePurpose::ServerAuth,
            },
            out_name,
        )
    }

    /// Issues a room appliance's client certificate (ClientAuth) naming its site and room,
    /// written to `appliance-SITE-ROOM.pem` and `.key`. Issuing again for the same room
    /// replaces those files; the old certificate stays valid until revoked (its serial is in
    /// `issued.txt`).
    pub fn issue_appliance(&self, site: &SiteId, room: &RoomId) -> Result<IssuedCert, PkiError> {
        let identity = ApplianceIdentity::new(site, room)?;
        let uri = identity
            .urn()
            .try_into()
            // The URN is built from names limited to a-z, 0-9 and '-', all IA5.
            .map_err(|_| PkiError::NotAppliance(format!("cannot encode {}", identity.urn())))?;
        self.issue(
            Leaf {
                kind: "appliance",
                name: &identity.to_string(),
                common_name: &format!("appliance {identity}"),
                sans: vec![SanType::URI(uri)],
                eku: ExtendedKeyUsagePurpose::ClientAuth,
            },
            &format!("appliance-{site}-{room}"),
        )
    }

    /// Issues the HTTPS certificate (ServerAuth) of a room appliance's screen and local API,
    /// for the DNS names and addresses tablets on the room network use, plus the loopback
    /// names ([`SCREEN_LOOPBACK_DNS`], [`SCREEN_LOOPBACK_IPS`]) for the appliance's own
    /// display. Written to `screen-SITE-ROOM.pem` and `.key` beside the appliance's client
    /// certificate; issuing again replaces them. It carries no appliance identity: it cannot
    /// be used to sync.
    pub fn issue_screen(
        &self,
        site: &SiteId,
        room: &RoomId,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<IssuedCert, PkiError> {
        let identity = ApplianceIdentity::new(site, room)?;
        if dns_names.is_empty() && ips.is_empty() {
            return Err(PkiError::NoScreenNames);
        }
        if dns_names.len() + ips.len() > MAX_SCREEN_NAMES {
            return Err(PkiError::TooManyScreenNames {
                given: dns_names.len() + ips.len(),
            });
        }
        // DNS names compare without case; each name once, loopback last.
        let mut all_dns: Vec<String> = Vec::with_capacity(dns_names.len() + 1);
        for name in dns_names
            .iter()
            .map(String::as_str)
            .chain([SCREEN_LOOPBACK_DNS])
        {
            if !all_dns.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                all_dns.push(name.to_owned());
            }
        }
        let mut all_ips: Vec<IpAddr> = Vec::with_capacity(ips.len() + SCREEN_LOOPBACK_IPS.len());
        for ip in ips.iter().chain(&SCREEN_LOOPBACK_IPS) {
            if !all_ips.contains(ip) {
                all_ips.push(*ip);
            }
        }
        self.issue(
            Leaf {
                kind: "screen",
                name: &identity.to_string(),
                common_name: &format!("room screen {identity}"),
                sans: server_sans(&all_dns, &all_ips)?,
                eku: ExtendedKeyUsagePurpose::ServerAuth,
            },
            &format!("screen-{site}-{room}"),
        )
    }

    fn issue(&self, leaf: Leaf<'_>, file_stem: &str) -> Result<IssuedCert, PkiError> {
        let key = generate_key("key")?;
        let validity = Duration::days(i64::from(self.leaf_validity_days));
        let (params, serial, not_after) =
            self.leaf_params(leaf.common_name, leaf.sans, leaf.eku, validity)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Generate {
                what: "certificate",
                source,
            })?;

        let cert_path = self.dir.join(format!("{file_stem}.pem"));
        let key_path = self.dir.join(format!("{file_stem}.key"));
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600, "key")?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644, "certificate")?;
        self.append_issued(&serial, leaf.kind, leaf.name, not_after)?;
        Ok(IssuedCert {
            cert_path,
            key_path,
            serial,
            not_after,
        })
    }

    /// A leaf's parameters: a random serial, valid from a little before now (a tenth of its
    /// life, at most [`NOT_BEFORE_BACKDATE`]: short-lived certificates stay short) for
    /// `validity`, never past the CA's own end.
    fn leaf_params(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
        validity: Duration,
    ) -> Result<(CertificateParams, Serial, OffsetDateTime), PkiError> {
        let serial = Serial::random()?;
        let now = now_s();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Vigil");
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
        params.not_before = now - NOT_BEFORE_BACKDATE.min(validity / 10);
        params.not_after = (now + validity).min(self.not_after);
        let not_after = params.not_after;
        Ok((params, serial, not_after))
    }

    /// Signs an appliance's certificate request (PKCS#10, DER) for a key made on the
    /// appliance: the request's signature is checked (it proves the key is the requester's),
    /// its subject and names are ignored, and the certificate names `site` and `room` as
    /// [`issue_appliance`](Self::issue_appliance) does, valid for `validity`. Only the serial
    /// is written (to `issued.txt`, so that it can be revoked); the caller records the rest.
    pub fn sign_appliance_request(
        &self,
        site: &SiteId,
        room: &RoomId,
        csr_der: &[u8],
        validity: std::time::Duration,
    ) -> Result<SignedCert, PkiError> {
        let identity = ApplianceIdentity::new(site, room)?;
        let csr = rcgen::CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| PkiError::Request(e.to_string()))?;
        let uri = identity
            .urn()
            .try_into()
            .map_err(|_| PkiError::NotAppliance(format!("cannot encode {}", identity.urn())))?;
        let validity = Duration::try_from(validity)
            .map_err(|_| PkiError::Request("validity out of range".to_owned()))?;
        let (params, serial, not_after) = self.leaf_params(
            &format!("appliance {identity}"),
            vec![SanType::URI(uri)],
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| PkiError::Generate {
                what: "certificate",
                source,
            })?;
        self.append_issued(&serial, "appliance", &identity.to_string(), not_after)?;
        Ok(SignedCert {
            pem: cert.pem(),
            serial,
            not_after,
        })
    }

    fn append_issued(
        &self,
        serial: &Serial,
        kind: &str,
        name: &str,
        not_after: OffsetDateTime,
    ) -> Result<(), PkiError> {
        let path = self.dir.join(ISSUED_FILE);
        let write_err = |source| PkiError::Write {
            what: "issued-certificates log",
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&path)
            .map_err(write_err)?;
        let header = if file.metadata().map_err(write_err)?.len() == 0 {
            "# serial kind name not_after_unix_s: every certificate this CA issued\n"
        } else {
            ""
        };
        let line = format!(
            "{header}{serial} {kind} {name} {}\n",
            not_after.unix_timestamp()
        );
        file.write_all(line.as_bytes()).map_err(write_err)?;
        file.sync_all().map_err(write_err)
    }

    /// The serials this CA issued, from `issued.txt`.
    pub fn issued_serials(&self) -> Result<Vec<Serial>, PkiError> {
        let path = self.dir.join(ISSUED_FILE);
        read_serial_list(&path, "issued-certificates log")
            .map(|entries| entries.into_iter().map(|(serial, _)| serial).collect())
    }

    /// The revoked serials and when each was revoked, from `revoked.txt`.
    pub fn revoked(&self) -> Result<Vec<(Serial, OffsetDateTime)>, PkiError> {
        let path = self.dir.join(REVOKED_FILE);
        let entries = read_serial_list(&path, "revoked-serials list")?;
        entries
            .into_iter()
            .map(|(serial, rest)| {
                let at = rest
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse::<i64>().ok())
                    .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                    .ok_or_else(|| PkiError::ParseFile {
                        what: "revoked-serials list",
                        path: path.clone(),
                        detail: format!("no revocation time after serial {serial}"),
                    })?;
                Ok((serial, at))
            })
            .collect()
    }

    /// Revokes a certificate this CA issued and re-signs the CRL. Revoking it again changes
    /// nothing but the CRL's signature date.
    pub fn revoke(&self, serial: &Serial) -> Result<Revocation, PkiError> {
        let issued_path = self.dir.join(ISSUED_FILE);
        if !self.issued_serials()?.contains(serial) {
            return Err(PkiError::UnknownSerial {
                serial: serial.clone(),
                issued: issued_path,
            });
        }
        let revoked_path = self.dir.join(REVOKED_FILE);
        let mut revoked = self.revoked()?;
        let newly_revoked = !revoked.iter().any(|(s, _)| s == serial);
        if newly_revoked {
            revoked.push((serial.clone(), now_s()));
            let mut text =
                String::from("# serial revoked_at_unix_s: crl.pem is signed from this list\n");
            for (s, at) in &revoked {
                text.push_str(&format!("{s} {}\n", at.unix_timestamp()));
            }
            write_file(
                &revoked_path,
                text.as_bytes(),
                0o644,
                "revoked-serials list",
            )?;
        }
        let crl_path = self.write_crl()?;
        Ok(Revocation {
            serial: serial.clone(),
            newly_revoked,
            crl_path,
            revoked_path,
        })
    }

    /// Revokes the certificate in a PEM or DER file, after checking this CA issued it.
    pub fn revoke_cert_file(&self, path: &Path) -> Result<Revocation, PkiError> {
        let der = read_cert_file(path)?;
        self.verify_issued(&der)?;
        self.revoke(&cert_serial(&der)?)
    }

    /// Signs `crl.pem` afresh from `revoked.txt`, with the next CRL number.
    pub fn write_crl(&self) -> Result<PathBuf, PkiError> {
        let crl_path = self.dir.join(CRL_FILE);
        let crl_number = if crl_path.exists() {
            let der = read_crl_file(&crl_path)?;
            crl_number(&der).map_err(|detail| PkiError::ParseFile {
                what: "CRL",
                path: crl_path.clone(),
                detail,
            })? + 1
        } else {
            1
        };
        let now = now_s();
        let revoked_certs = self
            .revoked()?
            .into_iter()
            .map(|(serial, at)| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial.as_bytes()),
                revocation_time: at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|source| PkiError::Generate {
                what: "CRL",
                source,
            })?;
        let pem = crl.pem().map_err(|source| PkiError::Generate {
            what: "CRL",
            source,
        })?;
        write_file(&crl_path, pem.as_bytes(), 0o644, "CRL")?;
        Ok(crl_path)
    }

    /// Checks that this CA signed the certificate (issuer name and signature).
    pub fn verify_issued(&self, cert_der: &[u8]) -> Result<(), PkiError> {
        verify_issued_by(&self.cert_der, cert_der)
    }
}

/// What distinguishes a server certificate from an appliance one.
struct Leaf<'a> {
    kind: &'static str,
    name: &'a str,
    common_name: &'a str,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
}

/// The subject alternative names of a server certificate: DNS names (checked) then addresses.
fn server_sans(dns_names: &[String], ips: &[IpAddr]) -> Result<Vec<SanType>, PkiError> {
    let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
    for name in dns_names {
        let ia5 = Some(name.as_str())
            .filter(|name| is_dns_name(name))
            .and_then(|name| name.try_into().ok())
            .ok_or_else(|| PkiError::InvalidDnsName(name.clone()))?;
        sans.push(SanType::DnsName(ia5));
    }
    for ip in ips {
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(PkiError::InvalidIp(*ip));
        }
        sans.push(SanType::IpAddress(*ip));
    }
    Ok(sans)
}

/// The site and room an appliance certificate names in its `urn:vigil:appliance:SITE:ROOM`
/// subject alternative name. The certificate must carry the ClientAuth usage and exactly one
/// such name. This reads, it does not verify: call it on a chain rustls already verified.
pub fn appliance_identity(cert_der: &[u8]) -> Result<ApplianceIdentity, PkiError> {
    let cert = parse_cert(cert_der).map_err(PkiError::ParseCert)?;
    let eku = cert
        .extended_key_usage()
        .map_err(|e| PkiError::ParseCert(e.to_string()))?;
    if !eku.is_some_and(|eku| eku.value.client_auth) {
        return Err(PkiError::NotAppliance(
            "no client authentication usage".to_owned(),
        ));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::ParseCert(e.to_string()))?
        .ok_or_else(|| PkiError::NotAppliance("no subject alternative name".to_owned()))?;
    let mut urns = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(APPLIANCE_URN_PREFIX) => Some(*uri),
            _ => None,
        });
    let (Some(urn), None) = (urns.next(), urns.next()) else {
        return Err(PkiError::NotAppliance(format!(
            "expected exactly one {APPLIANCE_URN_PREFIX}SITE:ROOM name"
        )));
    };
    ApplianceIdentity::from_urn(urn)
        .ok_or_else(|| PkiError::NotAppliance(format!("malformed appliance name {urn:?}")))
}

/// When a certificate stops being valid, µs since the epoch.
pub fn cert_not_after_us(cert_der: &[u8]) -> Result<i64, PkiError> {
    let cert = parse_cert(cert_der).map_err(PkiError::ParseCert)?;
    Ok(cert
        .validity()
        .not_after
        .timestamp()
        .saturating_mul(1_000_000))
}

/// The serial number of a certificate.
pub fn cert_serial(cert_der: &[u8]) -> Result<Serial, PkiError> {
    let cert = parse_cert(cert_der).map_err(PkiError::ParseCert)?;
    Ok(Serial::from_bytes(cert.raw_serial()))
}

/// Checks that the CA certificate `ca_der` signed `cert_der`: the issuer name matches the CA's
/// subject and the signature verifies with the CA's key. (Validity dates, usages and revocation
/// are rustls' job at connection time.)
pub fn verify_issued_by(ca_der: &[u8], cert_der: &[u8]) -> Result<(), PkiError> {
    let ca = parse_cert(ca_der).map_err(PkiError::ParseCert)?;
    let cert = parse_cert(cert_der).map_err(PkiError::ParseCert)?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(PkiError::NotIssuedByCa(format!(
            "issuer is {:?}, this CA is {:?}",
            cert.issuer().to_string(),
            ca.subject().to_string()
        )));
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|e| PkiError::NotIssuedByCa(format!("signature does not verify ({e})")))
}

/// The serials a CRL (DER) lists, in its order.
pub fn crl_serials(crl_der: &[u8]) -> Result<Vec<Serial>, PkiError> {
    Ok(crl_revocations(crl_der)?
        .into_iter()
        .map(|(serial, _)| serial)
        .collect())
}

/// The serials a CRL (DER) lists, each with its revocation time in µs since the epoch.
pub fn crl_revocations(crl_der: &[u8]) -> Result<Vec<(Serial, i64)>, PkiError> {
    let crl = parse_crl(crl_der).map_err(PkiError::ParseCert)?;
    Ok(crl
        .iter_revoked_certificates()
        .map(|revoked| {
            let at_us = revoked
                .revocation_date
                .timestamp()
                .saturating_mul(1_000_000);
            (Serial::from_bytes(revoked.raw_serial()), at_us)
        })
        .collect())
}

/// Checks that the CA certificate `ca_der` signed a CRL (DER).
pub fn verify_crl_issued_by(ca_der: &[u8], crl_der: &[u8]) -> Result<(), PkiError> {
    let ca = parse_cert(ca_der).map_err(PkiError::ParseCert)?;
    let crl = parse_crl(crl_der).map_err(PkiError::ParseCert)?;
    crl.verify_signature(ca.public_key())
        .map_err(|e| PkiError::NotIssuedByCa(format!("CRL signature does not verify ({e})")))
}

/// Reads a certificate from a PEM (first `CERTIFICATE` block) or DER file, returning DER.
pub fn read_cert_file(path: &Path) -> Result<Vec<u8>, PkiError> {
    read_pem_or_der(path, "certificate", "CERTIFICATE")
}

/// Reads a CRL from a PEM (`X509 CRL` block) or DER file, returning DER.
pub fn read_crl_file(path: &Path) -> Result<Vec<u8>, PkiError> {
    read_pem_or_der(path, "CRL", "X509 CRL")
}

fn read_pem_or_der(path: &Path, what: &'static str, label: &str) -> Result<Vec<u8>, PkiError> {
    let bytes = fs::read(path).map_err(|source| PkiError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(bytes);
    }
    for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
        let pem = pem.map_err(|e| PkiError::ParseFile {
            what,
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        if pem.label == label {
            return Ok(pem.contents);
        }
    }
    Err(PkiError::ParseFile {
        what,
        path: path.to_owned(),
        detail: format!("no {label} block"),
    })
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_crl(der: &[u8]) -> Result<CertificateRevocationList<'_>, String> {
    match CertificateRevocationList::from_der(der) {
        Ok(([], crl)) => Ok(crl),
        Ok(_) => Err("trailing bytes after the CRL".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// A CRL's number (0 if it has none or it doesn't fit in a u64).
fn crl_number(crl_der: &[u8]) -> Result<u64, String> {
    let crl = parse_crl(crl_der)?;
    let bytes = crl
        .crl_number()
        .map(|n| n.to_bytes_be())
        .unwrap_or_default();
    let bytes = Serial::from_bytes(&bytes).0;
    if bytes.len() > 8 {
        return Err("CRL number does not fit in 64 bits".to_owned());
    }
    Ok(bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
}

fn generate_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| PkiError::Generate { what, source })
}

fn check_validity(days: u32) -> Result<Duration, PkiError> {
    if days == 0 || days > MAX_VALIDITY_DAYS {
        return Err(PkiError::InvalidValidity { days });
    }
    Ok(Duration::days(i64::from(days)))
}

/// A host name as RFC 1123 allows: dot-separated labels of 1 to 63 letters, digits and '-',
/// not starting or ending with '-', 253 bytes at most.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Names go into file names, URNs and common names: short, lowercase ASCII, digits and '-'.
fn check_name(what: &'static str, value: &str) -> Result<(), PkiError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_BYTES
        && !value.starts_with('-')
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidName {
            what,
            value: value.to_owned(),
        })
    }
}

/// The current time in whole seconds, the precision certificates and CRLs carry, so a date we
/// report equals the one read back from the file.
fn now_s() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    // Truncating a valid time to its second is always a valid time; the fallback is unreachable.
    OffsetDateTime::from_unix_timestamp(now.unix_timestamp()).unwrap_or(now)
}

fn asn1_to_offset(unix_s: i64) -> OffsetDateTime {
    // An X.509 time is within years 0..=9999, always representable; the fallback is unreachable.
    OffsetDateTime::from_unix_timestamp(unix_s).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn read_text(path: &Path, what: &'static str) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads a list of `SERIAL rest…` lines, skipping blank lines and `#` comments; a missing file is
/// an empty list.
fn read_serial_list(path: &Path, what: &'static str) -> Result<Vec<(Serial, String)>, PkiError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PkiError::Read {
                what,
                path: path.to_owned(),
                source,
            });
        }
    };
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (serial, rest) = line.split_once(' ').unwrap_or((line, ""));
            let serial = serial.parse::<Serial>().map_err(|e| PkiError::ParseFile {
                what,
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
            Ok((serial, rest.to_owned()))
        })
        .collect()
}

/// Writes a whole file atomically with the given mode: into a new temporary file created with
/// that mode (so a key is never readable by others, not even for a moment), synced, then
/// renamed over `path`.
fn write_file(path: &Path, bytes: &[u8], mode: u32, what: &'static str) -> Result<(), PkiError> {
    let write_err = |source| PkiError::Write {
        what,
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    // A temporary file left by a crash would make create_new fail.
    remove_if_exists(&tmp, what)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(write_err)?;
    file.write_all(bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(write_err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
    }
    Ok(())
}

fn remove_if_exists(path: &Path, what: &'static str) -> Result<(), PkiError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PkiError::Write {
            what,
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
