//! The appliance's sync client: one QUIC connection to the cloud with mutual TLS, over which
//! every document that changed is synced with Automerge's sync protocol, and the site's
//! patients and configuration come down.
//!
//! Recording never waits on this: the client reads committed documents from the database on
//! its own connections and writes only what the cloud sends down. It connects when it can,
//! backs off exponentially with jitter when it can't, keeps the connection alive well under the
//! idle timeout, and persists the sync state per document so a reconnect resumes. A document
//! counts as delivered only when the cloud has confirmed (as durable) heads that cover it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::AutoCommit;
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use rusqlite::Connection as Db;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use vigil_shared::doc::{DocKind, validate_document};
use vigil_shared::sync::{DocSync, Incoming, Role, SyncError, all_delivered};
use vigil_shared::wire::{
    self, ALPN, FrameDecoder, Message, RejectCode, SeqCounter, encode_message,
};

use crate::clock::ScaledClock;
use crate::store::{self, StoreError};

/// Documents synced at once on one connection. The cloud allows 16 streams per appliance;
/// a few in flight keep the pipe full without crowding out the cloud's pushes.
pub const MAX_IN_FLIGHT: usize = 8;
/// How often the client looks for changed documents while connected. A closed chunk reaches
/// the cloud within about this much of its commit (DESIGN.md: chunk period + 2 s).
pub const SCAN_INTERVAL: Duration = Duration::from_millis(250);
/// Longest time between two backlog reports to the cloud; they double as heartbeats, so
/// this must stay well below the cloud's online window (90 s).
pub const BACKLOG_REPORT: Duration = Duration::from_secs(10);
/// How often the status API's backlog figures are refreshed.
pub const BACKLOG_REFRESH: Duration = Duration::from_secs(1);
/// First retry delay after a failed connection.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest retry delay: an outage of any length is retried at least this often, so the end of
/// an outage is noticed within this plus one connection attempt and the catch-up can start.
/// At 30 s a repaired link could wait 40 s for the appliance, longer than the catch-up itself
/// (DESIGN.md wants a day's backlog through in 5 s); one handshake per appliance every 5-10 s
/// during an outage costs the cloud nothing.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a connection attempt (handshake and hello) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive interval, well below the 30 s idle timeout of both sides.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Idle timeout of the connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one document exchange may take before the connection is considered broken.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// A clock this far from the cloud's (at hello) is logged as a warning: recorded times
/// follow the appliance's clock, so a manager comparing them with the cloud's should know.
/// A minute is far beyond NTP's error and well below anything that matters for certificates.
pub const CLOCK_SKEW_WARN_S: i64 = 60;
/// Read buffer per stream read.
const READ_CHUNK: usize = 64 * 1024;

/// What a document stream that ended in the middle of an exchange says.
const STREAM_ENDED: &str = "stream ended";

/// A cloud sync address: `host:port`, the host an IP address or a DNS name (every address it
/// resolves to is tried).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CloudAddr {
    host: String,
    port: u16,
}

impl CloudAddr {
    /// The addresses to try, resolved now (a name may have changed since the last try).
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        Ok(tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect())
    }

    fn is_ipv6(&self) -> bool {
        self.host.parse::<std::net::Ipv6Addr>().is_ok()
    }
}

impl std::fmt::Display for CloudAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_ipv6() {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for CloudAddr {
    fn from(a: SocketAddr) -> CloudAddr {
        CloudAddr {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

impl TryFrom<String> for CloudAddr {
    type Error = String;

    fn try_from(s: String) -> Result<CloudAddr, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(a.into());
        }
        let bad = || format!("{s:?} is not host:port (e.g. \"sync.example.org:4433\")");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !name_ok || port == 0 {
            return Err(bad());
        }
        Ok(CloudAddr {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// The `[cloud]` section of `edge.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSettings {
    /// The cloud's sync address (UDP), e.g. `203.0.113.7:4433` or `sync.example.org:4433`.
    #[serde(default)]
    pub addr: Option<CloudAddr>,
    /// More addresses of the same cloud (its other instances), tried in turn when one cannot
    /// be reached: `addrs = ["10.0.0.5:4433", "10.0.0.6:4433"]`.
    #[serde(default)]
    pub addrs: Vec<CloudAddr>,
    /// The name on the cloud's certificate.
    pub server_name: String,
    /// The clinic CA's certificate (PEM).
    pub ca_cert: PathBuf,
    /// This appliance's certificate (PEM), naming its site and room.
    pub cert: PathBuf,
    /// This appliance's private key (PEM, mode 0600).
    pub key: PathBuf,
}

impl CloudSettings {
    /// Every configured address, `addr` first.
    pub fn targets(&self) -> Vec<CloudAddr> {
        self.addr.iter().chain(&self.addrs).cloned().collect()
    }

    /// The addresses as configured, comma-separated (for messages).
    pub fn targets_text(&self) -> String {
        self.targets()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Errors setting up the client.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A certificate or key file is missing or unreadable.
    #[error("cannot read {what} {path}: {reason}")]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The files don't make a valid TLS configuration.
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    /// The local UDP socket could not be bound.
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
}

/// Every certificate of a PEM file; an error names the file and what it should hold.
pub(crate) fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(what, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(what, path, e))?;
    if certs.is_empty() {
        return Err(file_err(what, path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

pub(crate) fn file_err(what: &'static str, path: &Path, reason: impl ToString) -> SetupError {
    SetupError::File {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Builds the QUIC client configuration: TLS 1.3, this appliance's certificate, the clinic CA
/// as the only root, ALPN `vigil-sync/1`, no 0-RTT, keep-alive. Every file error names the file.
pub fn client_config(s: &CloudSettings) -> Result<quinn::ClientConfig, SetupError> {
    clocked_client_config(s, 0, Arc::default())
}

/// [`client_config`] for an appliance whose system clock is `offset_us` off the real one: the
/// cloud's certificate is checked against that clock, as it would be on a machine whose clock
/// is wrong. When the certificate is outside its validity by that clock, a sentence saying so
/// (with both times) is left in `refusal` for the connection error to carry.
pub fn clocked_client_config(
    s: &CloudSettings,
    offset_us: i64,
    refusal: Arc<Mutex<Option<String>>>,
) -> Result<quinn::ClientConfig, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(&s.ca_cert, "CA certificate")? {
        roots
            .add(ca)
            .map_err(|e| file_err("CA certificate", &s.ca_cert, e))?;
    }
    let chain = read_certs(&s.cert, "appliance certificate")?;
    let key =
        PrivateKeyDer::from_pem_file(&s.key).map_err(|e| file_err("appliance key", &s.key, e))?;
    let webpki = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| SetupError::Tls(format!("CA certificate {}: {e}", s.ca_cert.display())))?;
    let verifier = ClockedVerifier {
        inner: webpki,
        offset_us,
        refusal,
    };
    // Not a weaker check: the verifier is rustls's own WebPKI verifier with the clinic CA as
    // its only root; the wrapper only chooses the clock and words the validity errors.
    let mut tls = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(|e| SetupError::Tls(format!("appliance certificate and key: {e}")))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| SetupError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .map_err(|_| SetupError::Tls("idle timeout".into()))?,
    ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// rustls's WebPKI check of the cloud's certificate, against this appliance's clock.
#[derive(Debug)]
struct ClockedVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    offset_us: i64,
    refusal: Arc<Mutex<Option<String>>>,
}

impl rustls::client::danger::ServerCertVerifier for ClockedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let shifted_s = i64::try_from(now.as_secs())
            .unwrap_or(i64::MAX)
            .saturating_add(self.offset_us / 1_000_000);
        let shifted = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(shifted_s).unwrap_or(0),
        ));
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            shifted,
        );
        if let Err(e) = &result
            && let Some(why) = validity_refusal(e, shifted)
            && let Ok(mut slot) = self.refusal.lock()
        {
            *slot = Some(why);
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The sentence for a certificate refused because of its validity period, as measured by this
/// appliance's clock (`now`); `None` for any other refusal.
fn validity_refusal(error: &rustls::Error, now: rustls_pki_types::UnixTime) -> Option<String> {
    use rustls::CertificateError as C;
    let utc = |t: rustls_pki_types::UnixTime| {
        crate::clock::format_utc(
            i64::try_from(t.as_secs())
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000),
        )
    };
    let rustls::Error::InvalidCertificate(cert) = error else {
        return None;
    };
    let here = utc(now);
    Some(match cert {
        C::NotValidYetContext { not_before, .. } => format!(
            "the cloud's certificate is not valid yet by this appliance's clock: it is {here} \
             here and the certificate is valid from {}; set the appliance's clock right (NTP)",
            utc(*not_before)
        ),
        C::NotValidYet => format!(
            "the cloud's certificate is not valid yet by this appliance's clock ({here}); \
             set the appliance's clock right (NTP)"
        ),
        C::ExpiredContext { not_after, .. } => format!(
            "the cloud's certificate has expired by this appliance's clock: it is {here} here \
             and the certificate was valid until {}; set the appliance's clock right (NTP) or \
             renew the cloud's certificate",
            utc(*not_after)
        ),
        C::Expired => format!(
            "the cloud's certificate has expired by this appliance's clock ({here}); set the \
             appliance's clock right (NTP) or renew the cloud's certificate"
        ),
        _ => return None,
    })
}

/// What the status API and `/metrics` show about sync.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStatus {
    /// The cloud's address.
    pub cloud: String,
    /// Connected now.
    pub connected: bool,
    /// Appliance time of the last completed document exchange, µs.
    pub last_sync_us: Option<i64>,
    /// The last connection or exchange error, as a person should read it.
    pub last_error: Option<String>,
    /// Documents with changes the cloud has not confirmed.
    pub docs_waiting: u64,
    /// Their size, roughly (bytes of their stored snapshots).
    pub bytes_waiting: u64,
    /// Frames sent since start.
    pub frames_sent: u64,
    /// Frames received since start.
    pub frames_received: u64,
    /// Bytes sent since start.
    pub bytes_sent: u64,
    /// Bytes received since start.
    pub bytes_received: u64,
    /// Exchanges the cloud rejected since start.
    pub rejects: u64,
    /// How far this appliance's clock is ahead of the cloud's (negative: behind), seconds,
    /// measured at the last hello (give or take the round trip).
    pub clock_skew_s: Option<i64>,
    /// The sync protocol version of the current (or last) connection.
    pub protocol: Option<u16>,
    /// When this appliance's certificate expires, µs.
    pub cert_not_after_us: Option<i64>,
    /// When it was last renewed, µs.
    pub cert_renewed_us: Option<i64>,
    /// Why the cloud will not take this appliance until someone acts (its certificate
    /// revoked or expired, its software too old), as a sentence for the room screen; `None`
    /// while it syncs or only the network is in the way.
    pub refused: Option<String>,
}

/// Makes the appliance's health report for the cloud (protocol 2) at a given appliance time.
pub type Reporter = Arc<dyn Fn(i64) -> vigil_shared::fleet::ApplianceReport + Send + Sync>;

/// Runs `task` for every item, at most `limit` at a time, and waits for all of them; returns
/// the first error. The rest still run: one document's failure must not cut another's
/// exchange short.
async fn at_most<T, E, F, Fut>(limit: usize, items: Vec<T>, mut task: F) -> Option<E>
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut failed = None;
    for item in items {
        while set.len() >= limit {
            if let Some(Ok(Err(e))) = set.join_next().await {
                failed.get_or_insert(e);
            }
        }
        set.spawn(task(item));
    }
    while let Some(r) = set.join_next().await {
        if let Ok(Err(e)) = r {
            failed.get_or_insert(e);
        }
    }
    failed
}

/// Why one exchange or connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    #[error("{0}")]
    Sync(#[from] SyncError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Connection(String),
    #[error("{code}: {reason}")]
    Refused { code: RejectCode, reason: String },
}

/// The sync client of one appliance.
pub struct SyncClient {
    settings: CloudSettings,
    /// Rebuilt after a renewal, for the next connection.
    config: Mutex<quinn::ClientConfig>,
    reporter: Option<Reporter>,
    endpoint: Endpoint,
    site: String,
    room: String,
    clock: ScaledClock,
    /// The negotiated protocol version of the current connection.
    version: std::sync::atomic::AtomicU16,
    /// The certificate's validity (not before, not after), µs, as last read.
    validity: Mutex<Option<(i64, i64)>>,
    status: Arc<Mutex<SyncStatus>>,
    db: DbAccess,
    /// Why the last handshake refused the cloud's certificate, when its validity was the reason.
    refusal: Arc<Mutex<Option<String>>>,
    /// The configured address to try first: the one that last worked, moved on by one when
    /// its connection ends (its instance may be gone).
    next_target: std::sync::atomic::AtomicUsize,
    /// Whether the socket is IPv6 (else IPv4 addresses only).
    ipv6: bool,
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient")
            .field("cloud", &self.settings.targets_text())
            .finish_non_exhaustive()
    }
}

impl SyncClient {
    /// Reads the certificate files (errors name them) and opens a UDP socket.
    pub fn new(
        settings: CloudSettings,
        db_path: PathBuf,
        site: String,
        room: String,
        clock: ScaledClock,
        status: Arc<Mutex<SyncStatus>>,
    ) -> Result<SyncClient, SetupError> {
        let refusal = Arc::new(Mutex::new(None));
        let config = clocked_client_config(&settings, clock.offset_us, refusal.clone())?;
        // IPv4 unless every address is an IPv6 literal (names are resolved to IPv4 then).
        let targets = settings.targets();
        let bind: SocketAddr = if targets.is_empty() || !targets.iter().all(CloudAddr::is_ipv6) {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0_u16; 8], 0))
        };
        let endpoint = Endpoint::client(bind).map_err(SetupError::Socket)?;
        if let Ok(mut s) = status.lock() {
            s.cloud = settings.targets_text();
        }
        let ipv6 = bind.is_ipv6();
        let validity = crate::enrol::file_validity(&settings.cert);
        if let Ok(mut s) = status.lock() {
            s.cert_not_after_us = validity.map(|v| v.1);
        }
        Ok(SyncClient {
            room,
            version: std::sync::atomic::AtomicU16::new(0),
            validity: Mutex::new(validity),
            settings,
            config: Mutex::new(config),
            reporter: None,
            endpoint,
            db: DbAccess::new(db_path),
            site,
            clock,
            status,
            refusal,
            next_target: std::sync::atomic::AtomicUsize::new(0),
            ipv6,
        })
    }

    /// Sends `reporter`'s health reports to a cloud that speaks protocol 2.
    pub fn with_reporter(mut self, reporter: Reporter) -> SyncClient {
        self.reporter = Some(reporter);
        self
    }

    fn set_status(&self, f: impl FnOnce(&mut SyncStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// Runs forever: connect, sync, and on any failure back off and try again.
    pub async fn run(self: Arc<Self>) {
        // The backlog shows on the status API whatever the connection is doing, including
        // during a connection attempt that takes its full timeout.
        let me = self.clone();
        let _refresher = AbortOnDrop(tokio::spawn(async move {
            loop {
                let _ = me.refresh_backlog().await;
                tokio::time::sleep(BACKLOG_REFRESH).await;
            }
        }));
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.connect().await {
                Ok((conn, control, cloud)) => {
                    backoff = BACKOFF_MIN;
                    self.set_status(|s| {
                        s.connected = true;
                        s.last_error = None;
                        s.refused = None;
                        s.cloud = cloud.clone();
                    });
                    tracing::info!(%cloud, "connected to the cloud");
                    let reason = self.clone().serve(conn, control).await;
                    self.set_status(|s| {
                        s.connected = false;
                        s.last_error = Some(reason.clone());
                    });
                    tracing::warn!(%cloud, %reason, "sync connection ended; recording continues");
                    // Its instance may be gone: start the next attempt with another address.
                    self.next_target
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    let waiting = self.refresh_backlog().await.map(|b| b.0).unwrap_or(0);
                    let expired = self.expired();
                    let refused = match (&expired, &e) {
                        (Some(why), _) => Some(why.clone()),
                        (
                            None,
                            Failure::Refused {
                                code: RejectCode::Forbidden | RejectCode::UnsupportedVersion,
                                reason,
                            },
                        ) => Some(reason.clone()),
                        _ => None,
                    };
                    let message = match expired {
                        Some(why) => format!("{why}; {waiting} documents waiting to sync"),
                        None => format!(
                            "cannot reach cloud at {} ({e}); recording continues, {waiting} documents waiting to sync",
                            self.settings.targets_text()
                        ),
                    };
                    tracing::warn!("{message}");
                    self.set_status(|s| {
                        s.connected = false;
                        s.last_error = Some(message);
                        s.refused = refused;
                    });
                }
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Connects to the first configured address that answers, starting with
    /// [`next_target`](Self::next_target) and trying every address a name resolves to;
    /// returns the connection and which address it is to (`name (ip:port)` for a name).
    async fn connect(&self) -> Result<(Connection, SendStream, String), Failure> {
        use std::sync::atomic::Ordering;
        let targets = self.settings.targets();
        if targets.is_empty() {
            return Err(Failure::Connection("no cloud address is configured".into()));
        }
        let start = self.next_target.load(Ordering::Relaxed) % targets.len();
        // What each address tried answered; one address alone is reported as it failed.
        let mut failures: Vec<(String, Failure)> = Vec::new();
        for k in (0..targets.len()).map(|i| (start + i) % targets.len()) {
            let target = &targets[k];
            let addrs = match target.resolve().await {
                Ok(addrs) => addrs,
                Err(e) => {
                    failures.push((target.to_string(), Failure::Connection(e.to_string())));
                    continue;
                }
            };
            let usable: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| a.is_ipv6() == self.ipv6)
                .collect();
            if usable.is_empty() {
                let e = Failure::Connection("no address of this IP version".into());
                failures.push((target.to_string(), e));
            }
            for addr in usable {
                match self.connect_to(addr).await {
                    Ok((conn, control)) => {
                        self.next_target.store(k, Ordering::Relaxed);
                        let name = if target.host == addr.ip().to_string() {
                            target.to_string()
                        } else {
                            format!("{target} ({addr})")
                        };
                        return Ok((conn, control, name));
                    }
                    // The cloud answered and refused this appliance itself (its certificate,
                    // its protocol): no other instance of the same cloud will think otherwise.
                    // A busy or failing instance (rate limited, internal) is passed over.
                    Err(
                        e @ Failure::Refused {
                            code: RejectCode::Forbidden | RejectCode::UnsupportedVersion,
                            ..
                        },
                    ) => return Err(e),
                    Err(e) => failures.push((addr.to_string(), e)),
                }
            }
        }
        if failures.len() == 1 {
            return Err(failures.remove(0).1);
        }
        let all: Vec<String> = failures.iter().map(|(a, e)| format!("{a}: {e}")).collect();
        Err(Failure::Connection(all.join("; ")))
    }

    async fn connect_to(&self, addr: SocketAddr) -> Result<(Connection, SendStream), Failure> {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = None;
        }
        self.try_connect(addr).await.map_err(|e| {
            // A certificate refused for its dates says so, with both times: the usual cause is
            // this appliance's clock, and "handshake failed" would not tell anyone that.
            match self.refusal.lock().ok().and_then(|mut s| s.take()) {
                Some(why) => Failure::Connection(why),
                None => e,
            }
        })
    }

    /// The health report for the cloud, when the connection speaks protocol 2.
    fn report(&self) -> Option<Message> {
        let reporter = self.reporter.as_ref()?;
        if self.version.load(std::sync::atomic::Ordering::Relaxed) < wire::REPORT_VERSION {
            return None;
        }
        let mut report = reporter(self.clock.system_now_us());
        report.cert_not_after_us = self.validity.lock().ok().and_then(|v| v.map(|v| v.1));
        let json = serde_json::to_string(&report).ok()?;
        (json.len() <= wire::MAX_REPORT_BYTES).then_some(Message::Report { json })
    }

    /// Whether to renew now: the connection speaks protocol 2 and less than a third of the
    /// certificate's life remains.
    fn renewal_due(&self) -> bool {
        if self.version.load(std::sync::atomic::Ordering::Relaxed) < wire::REPORT_VERSION {
            return false;
        }
        let validity = self.validity.lock().ok().and_then(|v| *v);
        validity.is_some_and(|(from, to)| {
            crate::enrol::renewal_due(from, to, self.clock.system_now_us())
        })
    }

    /// Renews the certificate over this connection: a new key, a request, the certificate
    /// back, both saved in place, and the client set up with them for the next connection.
    async fn renew(&self, conn: &Connection) -> Result<(), Failure> {
        let (key_pem, csr) =
            crate::enrol::new_key_and_request().map_err(|e| Failure::Connection(e.to_string()))?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| Failure::Connection(e.to_string()))?;
        self.write(&mut send, &Message::Renew { csr }).await?;
        let _ = send.finish();
        let mut decoder = FrameDecoder::new();
        let answer = tokio::time::timeout(CONNECT_TIMEOUT, self.read(&mut recv, &mut decoder))
            .await
            .map_err(|_| Failure::Connection("no answer to the renewal".into()))??;
        let chain = match answer {
            Some(Message::Certificate {
                site,
                room,
                chain_pem,
            }) if site == self.site && room == self.room => chain_pem,
            Some(Message::Certificate { site, room, .. }) => {
                return Err(Failure::Connection(format!(
                    "the renewed certificate names {site}/{room}, not this appliance"
                )));
            }
            Some(Message::Reject { code, reason }) => {
                return Err(Failure::Refused { code, reason });
            }
            Some(other) => {
                return Err(Failure::Connection(format!(
                    "expected a certificate, got {}",
                    other.name()
                )));
            }
            None => return Err(Failure::Connection(close_reason(conn))),
        };
        let cert_pem = crate::enrol::pem_blocks(&chain)
            .into_iter()
            .next()
            .ok_or_else(|| Failure::Connection("no certificate in the answer".into()))?;
        let validity = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .ok()
            .and_then(|c| crate::enrol::validity(c.as_ref()))
            .ok_or_else(|| Failure::Connection("the renewed certificate does not parse".into()))?;
        crate::enrol::save_credentials(
            &self.settings.cert,
            &self.settings.key,
            &key_pem,
            &cert_pem,
        )
        .map_err(|e| Failure::Connection(e.to_string()))?;
        let config =
            clocked_client_config(&self.settings, self.clock.offset_us, self.refusal.clone())
                .map_err(|e| Failure::Connection(e.to_string()))?;
        if let Ok(mut c) = self.config.lock() {
            *c = config;
        }
        if let Ok(mut v) = self.validity.lock() {
            *v = Some(validity);
        }
        let now = self.clock.system_now_us();
        self.set_status(|s| {
            s.cert_not_after_us = Some(validity.1);
            s.cert_renewed_us = Some(now);
        });
        tracing::info!(
            not_after = %vigil_shared::zone::rfc3339_utc(validity.1),
            "certificate renewed"
        );
        Ok(())
    }

    /// The sentence for a certificate that ran out, if this appliance's has.
    fn expired(&self) -> Option<String> {
        let (_, not_after) = crate::enrol::file_validity(&self.settings.cert)?;
        (not_after <= self.clock.system_now_us())
            .then(|| crate::enrol::expired_message(&self.site, &self.room(), not_after))
    }

    /// The room this appliance's certificate names (for messages).
    fn room(&self) -> String {
        self.room.clone()
    }

    async fn try_connect(&self, addr: SocketAddr) -> Result<(Connection, SendStream), Failure> {
        let config = self
            .config
            .lock()
            .map_err(|_| Failure::Connection("client configuration poisoned".into()))?
            .clone();
        let connecting = self
            .endpoint
            .connect_with(config, addr, &self.settings.server_name)
            .map_err(|e| Failure::Connection(e.to_string()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                Failure::Connection(format!("timed out after {} s", CONNECT_TIMEOUT.as_secs()))
            })?
            .map_err(|e| Failure::Connection(e.to_string()))?;
        // A refused client certificate shows only at the first read: the hello exchange. A
        // cloud that closed the connection with a reason (a revoked or replaced certificate)
        // is heard saying it.
        let control = tokio::time::timeout(CONNECT_TIMEOUT, self.hello(&conn))
            .await
            .map_err(|_| Failure::Connection("no answer to hello".into()))?
            .map_err(|e| refusal_of(&conn).unwrap_or(e))?;
        Ok((conn, control))
    }

    /// Hello out, Welcome in, on the control stream, which stays open for backlog reports.
    async fn hello(&self, conn: &Connection) -> Result<SendStream, Failure> {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| Failure::Connection(e.to_string()))?;
        let software = format!("vigil-edge {}", env!("CARGO_PKG_VERSION"));
        let hello = Message::Hello {
            min_version: wire::MIN_PROTOCOL_VERSION,
            max_version: newest_protocol(),
            software,
        };
        self.write(&mut send, &hello).await?;
        let mut decoder = FrameDecoder::new();
        match self.read(&mut recv, &mut decoder).await? {
            Some(Message::Welcome {
                version,
                server_time_us,
            }) => {
                tracing::debug!(version, "cloud speaks protocol");
                self.version
                    .store(version, std::sync::atomic::Ordering::Relaxed);
                self.set_status(|s| s.protocol = Some(version));
                let skew_s = (self.clock.system_now_us() - server_time_us) / 1_000_000;
                if skew_s.abs() > CLOCK_SKEW_WARN_S {
                    tracing::warn!(
                        skew_s,
                        "this appliance's clock is {} s {} the cloud's; recorded times follow the appliance's clock",
                        skew_s.abs(),
                        if skew_s > 0 { "ahead of" } else { "behind" }
                    );
                }
                self.set_status(|s| s.clock_skew_s = Some(skew_s));
                Ok(send)
            }
            Some(Message::Reject { code, reason }) => Err(Failure::Refused { code, reason }),
            Some(other) => Err(Failure::Connection(format!(
                "expected welcome, got {}",
                other.name()
            ))),
            None => Err(Failure::Connection(close_reason(conn))),
        }
    }

    /// Syncs until the connection fails; returns why it ended.
    async fn serve(self: Arc<Self>, conn: Connection, mut control: SendStream) -> String {
        let _pushes = AbortOnDrop(tokio::spawn(self.clone().accept_pushes(conn.clone())));
        let seq = Arc::new(tokio::sync::Mutex::new(SeqCounter::new()));
        let mut reported: Option<((u64, u64), tokio::time::Instant)> = None;
        loop {
            if conn.close_reason().is_some() {
                break close_reason(&conn);
            }
            let pending = match self
                .db
                .with_reader(|db| store::unsynced(db, MAX_IN_FLIGHT * 4))
                .await
            {
                Ok(p) => p,
                Err(e) => break format!("cannot read the database: {e}"),
            };
            // Patients (and every other kind) first, all of them through before any session
            // starts: the cloud refuses a session whose patient it does not hold yet, and a
            // refusal ends the connection, so a session racing its patient would fail the
            // round again and again.
            let (sessions, others): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|d| d.kind == DocKind::Session.as_str());
            let mut failed = None;
            for batch in [others, sessions] {
                failed = at_most(MAX_IN_FLIGHT, batch, |doc| {
                    let (me, conn, seq) = (self.clone(), conn.clone(), seq.clone());
                    async move {
                        tokio::time::timeout(EXCHANGE_TIMEOUT, me.upload(&conn, doc, &seq))
                            .await
                            .unwrap_or_else(|_| {
                                Err(Failure::Connection("document exchange timed out".into()))
                            })
                    }
                })
                .await;
                if failed.is_some() {
                    break;
                }
            }
            if let Ok(backlog) = self.refresh_backlog().await {
                // Report the backlog when it changed (at most once a second) and at least
                // every BACKLOG_REPORT, which is also the cloud's heartbeat.
                let now = tokio::time::Instant::now();
                let due = match reported {
                    None => true,
                    Some((last, at)) => {
                        let since = now.duration_since(at);
                        (last != backlog && since >= Duration::from_secs(1))
                            || since >= BACKLOG_REPORT
                    }
                };
                if due {
                    let m = Message::Backlog {
                        docs: backlog.0,
                        bytes: backlog.1,
                    };
                    if let Err(e) = self.write(&mut control, &m).await {
                        break format!("{e}");
                    }
                    if let Some(report) = self.report()
                        && let Err(e) = self.write(&mut control, &report).await
                    {
                        break format!("{e}");
                    }
                    reported = Some((backlog, now));
                }
            }
            if failed.is_none() && self.renewal_due() {
                match self.renew(&conn).await {
                    Ok(()) => {
                        conn.close(0_u32.into(), b"renewed; reconnecting");
                        break "certificate renewed; reconnecting with the new one".to_owned();
                    }
                    Err(e) => {
                        // Tried again at the next connection; the old one works meanwhile.
                        tracing::warn!(error = %e, "certificate renewal failed");
                        self.set_status(|s| {
                            s.last_error = Some(format!("certificate renewal failed: {e}"));
                        });
                        conn.close(0_u32.into(), b"renewal failed");
                        break format!("certificate renewal failed: {e}");
                    }
                }
            }
            if let Some(e) = failed {
                if let Failure::Refused { .. } = e {
                    self.set_status(|s| s.rejects += 1);
                }
                conn.close(0_u32.into(), b"exchange failed");
                break format!("{e}");
            }
            tokio::time::sleep(SCAN_INTERVAL).await;
        }
    }

    async fn refresh_backlog(&self) -> Result<(u64, u64), StoreError> {
        let (docs, bytes) = self.db.with_reader(store::backlog).await?;
        self.set_status(|s| {
            s.docs_waiting = docs;
            s.bytes_waiting = bytes;
        });
        Ok((docs, bytes))
    }

    /// One document up: this side initiates, the cloud answers and confirms durable heads.
    async fn upload(
        &self,
        conn: &Connection,
        doc: store::Unsynced,
        seq: &tokio::sync::Mutex<SeqCounter>,
    ) -> Result<(), Failure> {
        let Some(kind) = DocKind::from_name(&doc.kind) else {
            return Ok(());
        };
        let id = doc.id.clone();
        let (mut am, state, mut confirmed) = self
            .db
            .with_reader(move |db| {
                let (state, confirmed) = store::sync_record(db, &id)?;
                let doc = store::load_document(db, &id)?
                    .map(|(_, d)| d)
                    .unwrap_or_default();
                Ok((doc, state, confirmed))
            })
            .await?;
        let state = state
            .and_then(|b| automerge::sync::State::decode(&b).ok())
            .unwrap_or_default();
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| Failure::Connection(e.to_string()))?;
        let remote = Remote {
            db: &self.db,
            site: &self.site,
            clock: self.clock,
            tally: &|t| self.count(t),
        };
        let (exchange, durable) = remote
            .initiate((&mut send, &mut recv), &doc.id, kind, &mut am, state, seq)
            .await
            .map_err(|e| match e {
                Failure::Connection(m) if m == STREAM_ENDED => {
                    Failure::Connection(close_reason(conn))
                }
                e => e,
            })?;
        if let Some(heads) = durable {
            confirmed = heads;
        }
        let delivered = all_delivered(&mut am, &confirmed);
        let state = exchange.state().encode();
        let (id, version, now) = (doc.id.clone(), doc.version, self.clock.now_us());
        self.db
            .with_writer(move |db| {
                let tx = store::write_tx(db)?;
                store::save_sync_record(
                    &tx,
                    &id,
                    &state,
                    &confirmed,
                    delivered.then_some(version),
                    now,
                )?;
                tx.commit().map_err(StoreError::from_sqlite)
            })
            .await?;
        self.set_status(|s| s.last_sync_us = Some(now));
        Ok(())
    }

    /// Answers the cloud's pushes of site config and patient documents.
    async fn accept_pushes(self: Arc<Self>, conn: Connection) {
        while let Ok((send, recv)) = conn.accept_bi().await {
            let me = self.clone();
            let conn = conn.clone();
            tokio::spawn(async move {
                if let Err(e) = me.answer_push(send, recv).await {
                    tracing::warn!(error = %e, "refusing a document from the cloud");
                    conn.close(
                        u32::from(RejectCode::Forbidden.code()).into(),
                        e.to_string().as_bytes(),
                    );
                }
            });
        }
    }

    async fn answer_push(&self, send: SendStream, mut recv: RecvStream) -> Result<(), Failure> {
        let mut decoder = FrameDecoder::new();
        let Some(first) = self.read(&mut recv, &mut decoder).await? else {
            return Ok(());
        };
        let remote = Remote {
            db: &self.db,
            site: &self.site,
            clock: self.clock,
            tally: &|t| self.count(t),
        };
        remote
            .respond(first, send, recv, decoder, |kind| {
                if matches!(kind, DocKind::Session | DocKind::Audit) {
                    Err(format!("the cloud may not push {kind} documents"))
                } else {
                    Ok(())
                }
            })
            .await
    }

    fn count(&self, t: Tally) {
        self.set_status(|s| match t {
            Tally::Received(n) => {
                s.frames_received += 1;
                s.bytes_received += n;
            }
            Tally::Sent(n) => {
                s.frames_sent += 1;
                s.bytes_sent += n;
            }
        });
    }

    async fn read(
        &self,
        recv: &mut RecvStream,
        decoder: &mut FrameDecoder,
    ) -> Result<Option<Message>, Failure> {
        read_message(recv, decoder, &|t| self.count(t)).await
    }

    async fn write(&self, send: &mut SendStream, message: &Message) -> Result<(), Failure> {
        write_message(send, message, &|t| self.count(t)).await
    }
}

/// Frames and bytes moved, for the status counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tally {
    /// A frame received, with its bytes.
    Received(u64),
    /// A frame sent, with its bytes.
    Sent(u64),
}

/// Reads the next message of a document stream; `None` when the stream ended. A `Reject` from
/// the other side is returned as [`Failure::Refused`].
pub(crate) async fn read_message(
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
    tally: &(dyn Fn(Tally) + Sync),
) -> Result<Option<Message>, Failure> {
    let mut bytes = 0;
    loop {
        if let Some(m) = decoder.next_message()? {
            tally(Tally::Received(std::mem::take(&mut bytes)));
            if let Message::Reject { code, reason } = m {
                return Err(Failure::Refused { code, reason });
            }
            return Ok(Some(m));
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => {
                bytes += chunk.bytes.len() as u64;
                decoder.push(&chunk.bytes);
            }
            Ok(None) => {
                decoder.finish()?;
                return Ok(None);
            }
            Err(e) => return Err(Failure::Connection(e.to_string())),
        }
    }
}

/// Writes one message on a document stream.
pub(crate) async fn write_message(
    send: &mut SendStream,
    message: &Message,
    tally: &(dyn Fn(Tally) + Sync),
) -> Result<(), Failure> {
    let bytes = encode_message(message)?;
    send.write_all(&bytes)
        .await
        .map_err(|e| Failure::Connection(e.to_string()))?;
    tally(Tally::Sent(bytes.len() as u64));
    Ok(())
}

/// The other end of a document exchange, cloud or peer, as this appliance stores what it sends:
/// every document checked against the schema and this appliance's site before a byte of it is
/// written.
pub(crate) struct Remote<'a> {
    pub(crate) db: &'a DbAccess,
    pub(crate) site: &'a str,
    pub(crate) clock: ScaledClock,
    pub(crate) tally: &'a (dyn Fn(Tally) + Sync),
}

impl Remote<'_> {
    /// Checks a document the other side changed and stores the new changes.
    pub(crate) async fn store(
        &self,
        id: &str,
        kind: DocKind,
        doc: &mut AutoCommit,
        before: &[automerge::ChangeHash],
    ) -> Result<(), Failure> {
        let header = validate_document(doc, kind).map_err(|e| Failure::Refused {
            code: RejectCode::SchemaInvalid,
            reason: format!("document {id}: {e}"),
        })?;
        if header.site != self.site || header.id != id {
            return Err(Failure::Refused {
                code: RejectCode::Forbidden,
                reason: format!(
                    "document {id} belongs to site {:?}, not {}",
                    header.site, self.site
                ),
            });
        }
        let changes = doc.save_after(before);
        let full = if before.is_empty() {
            Some(doc.save())
        } else {
            None
        };
        let (id, site, now) = (id.to_owned(), header.site, self.clock.now_us());
        self.db
            .with_writer(move |db| {
                let tx = store::write_tx(db)?;
                match (store::document_owner(&tx, &id)?, full) {
                    (None, Some(snapshot)) => {
                        store::insert_document(&tx, &id, kind.as_str(), &site, &snapshot, now)?
                    }
                    (None, None) => {
                        return Err(StoreError::CorruptDocument {
                            id,
                            reason: "changes for a document we never had".into(),
                        });
                    }
                    (Some(_), _) => store::append_shared(&tx, &id, &changes, now)?,
                }
                tx.commit().map_err(StoreError::from_sqlite)
            })
            .await?;
        Ok(())
    }

    /// Runs one document's exchange on a stream this side opened, storing what the other
    /// side sends; returns the exchange (its sync state) and the last heads the other side
    /// said it made durable, if it said so.
    pub(crate) async fn initiate(
        &self,
        (send, recv): (&mut SendStream, &mut RecvStream),
        id: &str,
        kind: DocKind,
        doc: &mut AutoCommit,
        state: automerge::sync::State,
        seq: &tokio::sync::Mutex<SeqCounter>,
    ) -> Result<(DocSync, Option<Vec<automerge::ChangeHash>>), Failure> {
        let mut exchange = DocSync::new(Role::Initiator, id, kind, state);
        let mut decoder = FrameDecoder::new();
        let mut durable = None;
        loop {
            let next = {
                let mut seq = seq.lock().await;
                exchange.outgoing(doc, &mut seq)?
            };
            let Some(message) = next else { break };
            write_message(send, &message, self.tally).await?;
            loop {
                let Some(reply) = read_message(recv, &mut decoder, self.tally).await? else {
                    return Err(Failure::Connection(STREAM_ENDED.into()));
                };
                let before = doc.get_heads();
                match exchange.incoming(doc, reply)? {
                    Incoming::Durable(heads) => {
                        durable = Some(heads);
                        continue;
                    }
                    Incoming::Changed(true) => self.store(id, kind, doc, &before).await?,
                    Incoming::Changed(false) => {}
                }
                break;
            }
        }
        let _ = send.finish();
        Ok((exchange, durable))
    }

    /// Answers a stream the other side opened for one document, whose first message was
    /// `first`: `allowed` says whether this side takes that kind from it (and why not).
    pub(crate) async fn respond(
        &self,
        first: Message,
        mut send: SendStream,
        mut recv: RecvStream,
        mut decoder: FrameDecoder,
        allowed: impl Fn(DocKind) -> Result<(), String>,
    ) -> Result<(), Failure> {
        let Message::Sync { doc_id, kind, .. } = &first else {
            return Err(Failure::Connection(format!(
                "a document stream began with {}",
                first.name()
            )));
        };
        let (doc_id, kind) = (doc_id.clone(), *kind);
        allowed(kind).map_err(|reason| Failure::Refused {
            code: RejectCode::Forbidden,
            reason,
        })?;
        let id = doc_id.clone();
        let (existing, mut doc) = self
            .db
            .with_reader(move |db| {
                let owner = store::document_owner(db, &id)?;
                let doc = store::load_document(db, &id)?
                    .map(|(_, d)| d)
                    .unwrap_or_default();
                Ok((owner, doc))
            })
            .await?;
        if let Some((_, site)) = &existing
            && *site != self.site
        {
            return Err(Failure::Refused {
                code: RejectCode::Forbidden,
                reason: format!("document {doc_id} is not of {}", self.site),
            });
        }
        let mut exchange = DocSync::new(
            Role::Responder,
            doc_id.clone(),
            kind,
            automerge::sync::State::new(),
        );
        let mut seq = SeqCounter::new();
        let mut message = Some(first);
        while let Some(m) = message.take() {
            let before = doc.get_heads();
            if let Incoming::Changed(true) = exchange.incoming(&mut doc, m)? {
                self.store(&doc_id, kind, &mut doc, &before).await?;
            }
            if let Some(reply) = exchange.outgoing(&mut doc, &mut seq)? {
                write_message(&mut send, &reply, self.tally).await?;
            }
            message = read_message(&mut recv, &mut decoder, self.tally).await?;
        }
        let _ = send.finish();
        Ok(())
    }
}

/// The appliance database as the sync client and the peers use it: a fresh read-only
/// connection per read, and one writer connection (opened on first use) for what the cloud or
/// a peer sends. The recorder has its own; SQLite serializes the writers.
#[derive(Debug, Clone)]
pub struct DbAccess {
    path: PathBuf,
    writer: Arc<Mutex<Option<Db>>>,
}

impl DbAccess {
    /// Access to the database at `path`.
    pub fn new(path: PathBuf) -> DbAccess {
        DbAccess {
            path,
            writer: Arc::default(),
        }
    }

    pub(crate) async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || f(&store::open_reader(&path)?))
            .await
            .map_err(|e| StoreError::CorruptDocument {
                id: "-".into(),
                reason: e.to_string(),
            })?
    }

    pub(crate) async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (writer, path) = (self.writer.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let mut guard = writer.lock().unwrap_or_else(|e| e.into_inner());
            if guard.is_none() {
                *guard = Some(store::open_writer(&path)?);
            }
            match guard.as_mut() {
                Some(db) => f(db),
                None => Err(StoreError::CorruptDocument {
                    id: "-".into(),
                    reason: "no writer".into(),
                }),
            }
        })
        .await
        .map_err(|e| StoreError::CorruptDocument {
            id: "-".into(),
            reason: e.to_string(),
        })?
    }
}

/// A task that ends when its owner does: the client's helpers must not outlive the client
/// when the appliance shuts down and drops it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The environment variable that makes this appliance offer no protocol newer than its value
/// (tests of version skew: an appliance of the previous release).
pub const PROTOCOL_MAX_ENV: &str = "VIGIL_EDGE_PROTOCOL_MAX";

/// The newest protocol version to offer: this build's, or [`PROTOCOL_MAX_ENV`] when set to
/// an older one it speaks.
fn newest_protocol() -> u16 {
    std::env::var(PROTOCOL_MAX_ENV)
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
        .map_or(wire::MAX_PROTOCOL_VERSION, |v| {
            v.clamp(wire::MIN_PROTOCOL_VERSION, wire::MAX_PROTOCOL_VERSION)
        })
}

/// The refusal a cloud closed the connection with, when it closed it with a reject code.
fn refusal_of(conn: &Connection) -> Option<Failure> {
    let Some(quinn::ConnectionError::ApplicationClosed(c)) = conn.close_reason() else {
        return None;
    };
    let code = u8::try_from(c.error_code.into_inner())
        .ok()
        .and_then(RejectCode::from_code)?;
    let text = String::from_utf8_lossy(&c.reason);
    let reason = text
        .strip_prefix(&format!("{code}: "))
        .unwrap_or(&text)
        .to_owned();
    Some(Failure::Refused { code, reason })
}

fn close_reason(conn: &Connection) -> String {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            format!(
                "cloud closed the connection: {}",
                String::from_utf8_lossy(&c.reason)
            )
        }
        Some(e) => e.to_string(),
        None => STREAM_ENDED.into(),
    }
}

/// A delay between `d/2` and `d`, so a site's appliances don't reconnect in lockstep after an
/// outage. The randomness needs no quality: the low bits of the clock do.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let frac = f64::from(nanos % 1_000) / 1_000.0;
    d.mul_f64(0.5 + 0.5 * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_max_in_flight_exchanges_run_at_once_and_all_of_them_run() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let docs: Vec<usize> = (0..MAX_IN_FLIGHT * 3 + 1).collect();
        let failed = at_most(MAX_IN_FLIGHT, docs, |doc| {
            let (running, peak, done) = (running.clone(), peak.clone(), done.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                if doc == 3 {
                    Err(format!("doc {doc}"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), MAX_IN_FLIGHT);
        assert_eq!(done.load(Ordering::SeqCst), MAX_IN_FLIGHT * 3 + 1);
        assert_eq!(failed.as_deref(), Some("doc 3"));
    }

    #[test]
    fn cloud_addresses_are_ips_or_names_with_a_port() {
        let ok = |s: &str| CloudAddr::try_from(s.to_owned()).unwrap().to_string();
        assert_eq!(ok("203.0.113.7:4433"), "203.0.113.7:4433");
        assert_eq!(ok("[2001:db8::7]:4433"), "[2001:db8::7]:4433");
        assert_eq!(ok("Sync.Clinic.example:4433"), "sync.clinic.example:4433");
        for bad in [
            "sync.clinic.example",
            "host:0",
            "host:99999",
            ":4433",
            "a b:1",
            "https://x:1",
        ] {
            let err = CloudAddr::try_from(bad.to_owned()).unwrap_err();
            assert!(err.contains("host:port"), "{bad}: {err}");
        }
        // `addr` and `addrs` together, in order; a file with neither is refused by the config.
        let settings: CloudSettings = toml::from_str(
            "addr = \"10.0.0.5:4433\"\naddrs = [\"10.0.0.6:4433\", \"sync.example.org:4433\"]\n\
             server_name = \"s\"\nca_cert = \"c\"\ncert = \"c\"\nkey = \"k\"\n",
        )
        .unwrap();
        assert_eq!(
            settings.targets_text(),
            "10.0.0.5:4433, 10.0.0.6:4433, sync.example.org:4433"
        );
    }

    #[tokio::test]
    async fn a_name_resolves_to_every_address_it_has() {
        let name = CloudAddr::try_from("localhost:4433".to_owned()).unwrap();
        let addrs = name.resolve().await.unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| *a == "127.0.0.1:4433".parse().unwrap()),
            "{addrs:?}"
        );
        let ip = CloudAddr::try_from("10.0.0.5:4433".to_owned()).unwrap();
        assert_eq!(
            ip.resolve().await.unwrap(),
            ["10.0.0.5:4433".parse().unwrap()]
        );
    }

    #[test]
    fn missing_certificate_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let settings = |ca: &str| CloudSettings {
            addr: Some("127.0.0.1:4433".parse::<SocketAddr>().unwrap().into()),
            addrs: Vec::new(),
            server_name: "localhost".into(),
            ca_cert: dir.path().join(ca),
            cert: dir.path().join("appliance.pem"),
            key: dir.path().join("appliance.key"),
        };
        let err = client_config(&settings("ca.pem")).unwrap_err().to_string();
        assert!(
            err.contains(&dir.path().join("ca.pem").display().to_string()),
            "{err}"
        );
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let err = client_config(&settings("ca.pem")).unwrap_err().to_string();
        assert!(
            err.contains("ca.pem") && err.contains("CA certificate"),
            "{err}"
        );
    }

    #[test]
    fn certificate_validity_refusals_say_which_clock_and_both_times() {
        use rustls::CertificateError as C;
        use rustls_pki_types::UnixTime;
        let t = |s: u64| UnixTime::since_unix_epoch(Duration::from_secs(s));
        let now = t(1_700_000_000);
        let cases: Vec<(rustls::Error, Option<&str>)> = vec![
            (
                rustls::Error::InvalidCertificate(C::NotValidYetContext {
                    time: now,
                    not_before: t(1_700_086_400),
                }),
                Some(
                    "the cloud's certificate is not valid yet by this appliance's clock: it is \
                     2023-11-14 22:13:20 UTC here and the certificate is valid from 2023-11-15 \
                     22:13:20 UTC; set the appliance's clock right (NTP)",
                ),
            ),
            (
                rustls::Error::InvalidCertificate(C::ExpiredContext {
                    time: now,
                    not_after: t(1_699_913_600),
                }),
                Some(
                    "the cloud's certificate has expired by this appliance's clock: it is \
                     2023-11-14 22:13:20 UTC here and the certificate was valid until \
                     2023-11-13 22:13:20 UTC; set the appliance's clock right (NTP) or renew the \
                     cloud's certificate",
                ),
            ),
            (rustls::Error::InvalidCertificate(C::BadSignature), None),
            (rustls::Error::DecryptError, None),
        ];
        for (error, expected) in cases {
            assert_eq!(
                validity_refusal(&error, now).as_deref(),
                expected,
                "{error}"
            );
        }
        assert!(
            validity_refusal(&rustls::Error::InvalidCertificate(C::Expired), now)
                .unwrap()
                .contains("(2023-11-14 22:13:20 UTC)")
        );
    }

    #[test]
    fn jitter_stays_between_half_and_whole() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(8));
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }
}
