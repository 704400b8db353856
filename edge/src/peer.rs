//! The site's rooms as one: appliances of a site sync their site's shared documents with each
//! other on the LAN and stream their live values to each other, with or without the cloud.
//!
//! - **Who.** A peer connection is QUIC with mutual TLS on its own ALPN ([`PEER_ALPN`]), with
//!   the appliance certificates the cloud issued: each side verifies the other's chain against
//!   the clinic CA as an appliance (client-authentication) certificate, then reads the site
//!   and room it names. Another site's appliance is refused before a byte of data crosses, and
//!   so is a certificate the cloud revoked (the site configuration lists them; an open link
//!   closes within [`REVOCATION_CHECK`] of the list arriving). Every refusal is logged and
//!   audited; so is every connection accepted. Where peers come from
//!   (`peers = [...]` in `edge.toml`, or mDNS on the LAN: [`MDNS_SERVICE`]) decides only whom
//!   to call; the certificate decides who is accepted.
//! - **What.** Patients and the site's ledger: the documents several rooms write. The same
//!   Automerge exchange as with the cloud ([`crate::sync::Remote`]), each document checked
//!   against the schema and this site before it is stored. Site configurations come from the
//!   cloud alone (a peer could otherwise change another room's staff list); sessions and audit
//!   logs are their room's and reach the other rooms only as live values. A peer never counts
//!   as a confirmation: what an appliance deletes is what the cloud confirmed.
//! - **Live.** Each side sends its room's [`LiveFrame`]s on one unidirectional stream:
//!   numerics and advisories once a second, ECG as it arrives. Never stored; a slow peer loses
//!   the oldest frames ([`crate::station`]).
//! - **Requests.** The central station acknowledges another room's advisory by asking that
//!   room's appliance, which records it in its session as its own screen would, with the staff
//!   id of the person signed in at the station, and audits it.
//!
//! Two appliances that both call each other keep one connection: the one the room whose name
//! sorts first called ([`Links::admit`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use vigil_shared::doc::{DocKind, SessionDoc, SessionState, SiteConfigDoc, serial_hex};
use vigil_shared::wire::{FrameDecoder, RejectCode, SeqCounter};

use crate::audit::{AuditLog, Entry};
use crate::clock::ScaledClock;
use crate::recorder::{Handle, SessionEvent};
use crate::station::{LiveFrame, Station};
use crate::store;
use crate::sync::{
    CloudAddr, CloudSettings, DbAccess, Failure, Remote, SetupError, file_err, read_certs,
};

/// The ALPN of peer connections.
pub const PEER_ALPN: &[u8] = b"vigil-peer/1";

/// The UDP port appliances listen on for their site's peers unless configured otherwise.
pub const DEFAULT_PEER_PORT: u16 = 4434;

/// How often an open link's certificate is checked against the site's revoked certificates.
const REVOCATION_CHECK: Duration = Duration::from_secs(2);

/// The mDNS service type appliances announce and look for.
pub const MDNS_SERVICE: &str = "_vigil._udp.local.";

/// Keep-alive on a peer connection: a killed peer is noticed within [`PEER_IDLE_TIMEOUT`].
pub const PEER_KEEP_ALIVE: Duration = Duration::from_millis(500);

/// A peer silent this long is gone (its tile turns offline).
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often each connection looks for documents changed since it last offered them. A
/// patient registered in one room reaches the others within about this plus one exchange.
pub const PEER_SCAN: Duration = Duration::from_millis(200);

/// Between attempts to reach a peer that did not answer.
pub const REDIAL: Duration = Duration::from_secs(1);

/// Longest connection attempt.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest live or request frame (JSON).
pub const MAX_PEER_FRAME: usize = 256 * 1024;

/// Longest a document exchange with a peer may take.
pub const PEER_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Documents exchanged with one peer at once.
pub const PEER_STREAMS: u32 = 16;

/// The kinds of document peers exchange: those several rooms of a site write.
pub const PEER_KINDS: [DocKind; 2] = [DocKind::Patient, DocKind::Ledger];

/// The first byte of a bidirectional stream: what it carries.
const STREAM_DOCUMENT: u8 = 0;
const STREAM_REQUEST: u8 = 1;

/// The name a peer is dialled by: the verifier ignores it (peers are known by the appliance
/// name in their certificate, not by a DNS name), but TLS needs one.
const DIAL_NAME: &str = "vigil-peer";

/// The peer settings of `edge.toml`, read from its top level.
#[derive(Debug, Clone, Default)]
pub struct PeerSettings {
    /// Where to listen (UDP), e.g. `0.0.0.0:4434`; `None`: call peers only.
    pub bind: Option<SocketAddr>,
    /// Peers to call.
    pub addrs: Vec<CloudAddr>,
    /// Announce this appliance and find the site's others by mDNS.
    pub mdns: bool,
    /// Only on this network interface (else on every one).
    pub mdns_interface: Option<String>,
}

impl PeerSettings {
    /// Whether peer networking is on at all.
    pub fn enabled(&self) -> bool {
        self.bind.is_some() || !self.addrs.is_empty() || self.mdns
    }
}

/// A peer's appliance, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appliance {
    /// Site.
    pub site: String,
    /// Room.
    pub room: String,
}

impl std::fmt::Display for Appliance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.site, self.room)
    }
}

/// The URI name of an appliance certificate: `urn:vigil:appliance:SITE:ROOM`.
const APPLIANCE_URN: &str = "urn:vigil:appliance:";

/// The site and room an appliance certificate names, and its serial ([`serial_hex`]); read
/// after rustls verified the chain.
pub fn appliance_of(cert_der: &[u8]) -> Result<(Appliance, String), String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("unreadable certificate: {e}"))?
        .ok_or("the certificate names no appliance")?;
    let mut urns = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(APPLIANCE_URN),
        _ => None,
    });
    let (Some(urn), None) = (urns.next(), urns.next()) else {
        return Err("the certificate does not name exactly one appliance".into());
    };
    let (site, room) = urn
        .split_once(':')
        .filter(|(s, r)| valid_name(s) && valid_name(r))
        .ok_or_else(|| format!("malformed appliance name {urn:?}"))?;
    let appliance = Appliance {
        site: site.to_owned(),
        room: room.to_owned(),
    };
    Ok((appliance, serial_hex(cert.tbs_certificate.raw_serial())))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The appliance at the other end, a fingerprint of its certificate (a replaced box has a
/// new one) and the certificate's serial ([`serial_hex`]).
fn appliance_of_conn(conn: &Connection) -> Result<(Appliance, u64, String), String> {
    use std::hash::{Hash, Hasher};
    let certs = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("no certificate")?;
    let leaf = certs.first().ok_or("no certificate")?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    leaf.as_ref().hash(&mut h);
    let (appliance, serial) = appliance_of(leaf)?;
    Ok((appliance, h.finish(), serial))
}

/// Checks a peer's certificate as an appliance certificate of the clinic CA whichever side of
/// the handshake it is on: rustls's WebPKI client-certificate verifier, which also requires the
/// client-authentication usage every appliance certificate has (and a room screen's
/// certificate lacks).
#[derive(Debug)]
struct AsAppliance(Arc<dyn ClientCertVerifier>);

impl ServerCertVerifier for AsAppliance {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn transport() -> Result<Arc<quinn::TransportConfig>, SetupError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(PEER_KEEP_ALIVE));
    t.max_idle_timeout(Some(
        PEER_IDLE_TIMEOUT
            .try_into()
            .map_err(|_| SetupError::Tls("idle timeout".into()))?,
    ));
    t.max_concurrent_bidi_streams(PEER_STREAMS.into());
    t.max_concurrent_uni_streams(1_u8.into());
    Ok(Arc::new(t))
}

/// Both ends' QUIC configurations, from the appliance's certificate, key and the clinic CA
/// (the files of `[cloud]`).
pub fn peer_configs(
    files: &CloudSettings,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(&files.ca_cert, "CA certificate")? {
        roots
            .add(ca)
            .map_err(|e| file_err("CA certificate", &files.ca_cert, e))?;
    }
    let chain = read_certs(&files.cert, "appliance certificate")?;
    let key = || {
        PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| file_err("appliance key", &files.key, e))
    };
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| SetupError::Tls(format!("CA certificate: {e}")))?;
    let versions = [&rustls::version::TLS13];

    let mut server = rustls::ServerConfig::builder_with_protocol_versions(&versions)
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain.clone(), key()?)
        .map_err(|e| SetupError::Tls(format!("appliance certificate and key: {e}")))?;
    server.alpn_protocols = vec![PEER_ALPN.to_vec()];
    server.max_early_data_size = 0;
    let server = QuicServerConfig::try_from(server).map_err(|e| SetupError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport()?);

    let mut client = rustls::ClientConfig::builder_with_protocol_versions(&versions)
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AsAppliance(verifier)))
        .with_client_auth_cert(chain, key()?)
        .map_err(|e| SetupError::Tls(format!("appliance certificate and key: {e}")))?;
    client.alpn_protocols = vec![PEER_ALPN.to_vec()];
    client.enable_early_data = false;
    let client = QuicClientConfig::try_from(client).map_err(|e| SetupError::Tls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport()?);
    Ok((server, client))
}

/// A request one appliance makes of another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Acknowledge an advisory of the peer's session, for the person signed in at the
    /// station.
    Acknowledge {
        /// The session.
        session_id: String,
        /// The advisory.
        advisory_id: String,
        /// The staff id of the person acknowledging.
        by: String,
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Done and durable.
    Done,
    /// Not done, and why.
    Refused(String),
}

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection to that room now.
    #[error("room {0} is not reachable from this appliance now")]
    Unreachable(String),
    /// The peer refused.
    #[error("room {room} refused: {reason}")]
    Refused {
        /// The room.
        room: String,
        /// Its reason.
        reason: String,
    },
    /// The connection failed mid-request.
    #[error("room {room}: {reason}")]
    Connection {
        /// The room.
        room: String,
        /// What happened.
        reason: String,
    },
}

/// Writes one JSON frame: a 4-byte big-endian length, then the JSON.
async fn write_json<T: Serialize>(send: &mut SendStream, value: &T) -> Result<(), String> {
    let body = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    if body.len() > MAX_PEER_FRAME {
        return Err(format!("a frame of {} bytes is too large", body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|e| e.to_string())?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    send.write_all(&frame).await.map_err(|e| e.to_string())
}

/// Reads one JSON frame; `None` at the end of the stream.
async fn read_json<T: for<'de> Deserialize<'de>>(
    recv: &mut RecvStream,
) -> Result<Option<T>, String> {
    let mut len = [0_u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_PEER_FRAME {
        return Err(format!(
            "a frame of {len} bytes is over the {MAX_PEER_FRAME}-byte limit"
        ));
    }
    let mut body = vec![0_u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("malformed frame: {e}"))
}

/// One connection to a peer, as the table of links holds it.
#[derive(Debug, Clone)]
struct Link {
    id: u64,
    conn: Connection,
    /// The room whose appliance dialled it.
    dialer: String,
    addr: SocketAddr,
    since_us: i64,
}

/// The connections to the site's other rooms, one per room.
#[derive(Debug, Default)]
struct Links {
    by_room: HashMap<String, Link>,
}

impl Links {
    /// Takes `link` to `room` unless a connection to it is already up that the rule keeps:
    /// of two, the one the room whose name sorts first dialled. Both ends decide the same way,
    /// so each closes the same one. Returns the link the caller must close, if any.
    fn admit(&mut self, me: &str, room: &str, link: Link) -> Result<Option<Link>, Link> {
        let keep_dialer = me.min(room);
        match self.by_room.get(room) {
            Some(old) if old.conn.close_reason().is_none() => {
                if old.dialer == keep_dialer && link.dialer != keep_dialer {
                    Err(link)
                } else {
                    Ok(self.by_room.insert(room.to_owned(), link))
                }
            }
            _ => {
                self.by_room.insert(room.to_owned(), link);
                Ok(None)
            }
        }
    }

    fn remove(&mut self, room: &str, id: u64) -> bool {
        if self.by_room.get(room).is_some_and(|l| l.id == id) {
            self.by_room.remove(room);
            return true;
        }
        false
    }
}

/// Refused peer connections: how many, the last, and how many were audited lately.
#[derive(Debug, Default)]
struct Refusals {
    total: u64,
    last: Option<String>,
    /// Start of the current minute of audits (appliance clock, µs).
    window_start_us: i64,
    audited: u32,
    unaudited: u64,
}

/// Refusals audited one by one per minute; a LAN flood of junk handshakes beyond this is
/// audited as one entry a minute, so it cannot fill the disk through the audit log.
const AUDITED_REFUSALS_PER_MINUTE: u32 = 20;

impl Refusals {
    /// Whether the refusal at `now_us` is audited on its own, and, when a new minute starts
    /// after some were held back, how many the previous minute held back and when it began.
    fn audit(&mut self, now_us: i64) -> (bool, Option<(u64, i64)>) {
        let mut unaudited = None;
        if now_us - self.window_start_us >= 60_000_000 || now_us < self.window_start_us {
            unaudited = (self.unaudited > 0).then_some((self.unaudited, self.window_start_us));
            self.window_start_us = now_us;
            self.audited = 0;
            self.unaudited = 0;
        }
        if self.audited < AUDITED_REFUSALS_PER_MINUTE {
            self.audited += 1;
            (true, unaudited)
        } else {
            self.unaudited += 1;
            (false, unaudited)
        }
    }
}

/// A peer link as the status API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    /// The peer's address.
    pub addr: String,
    /// Since when (appliance clock, µs).
    pub since_us: i64,
    /// Whether this appliance dialled it.
    pub dialled: bool,
}

/// The peers as the status API shows them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStatus {
    /// Where this appliance listens for peers.
    pub listen: Option<String>,
    /// Connected rooms.
    pub rooms: BTreeMap<String, LinkStatus>,
    /// Connections refused (another site, an unreadable or revoked certificate).
    pub refused: u64,
    /// The last refusal.
    pub last_refusal: Option<String>,
}

/// What a started peer network needs from the appliance.
#[derive(Debug, Clone)]
pub struct PeerContext {
    /// The database.
    pub db: DbAccess,
    /// The appliance clock.
    pub clock: ScaledClock,
    /// The site's rooms, live.
    pub station: Arc<Station>,
    /// The recorder, for requests peers make.
    pub recorder: Handle,
    /// The audit log.
    pub audit: Arc<AuditLog>,
}

/// The appliance's peer network.
pub struct Peers {
    me: Appliance,
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    cx: PeerContext,
    links: Mutex<Links>,
    next_id: AtomicU64,
    refused: Mutex<Refusals>,
    dialling: Mutex<HashSet<SocketAddr>>,
    /// Per peer (room and certificate), each document's version as last exchanged with it:
    /// kept across its reconnections, so a flapping link does not offer every document again;
    /// a replaced appliance (a new certificate) is offered everything.
    offered: Mutex<HashMap<String, HashMap<String, i64>>>,
    listen: Option<SocketAddr>,
    mdns: Mutex<Option<mdns_sd::ServiceDaemon>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("me", &self.me)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// Opens the peer socket (listening if `settings.bind` is set) and starts calling the
    /// configured peers and, with `mdns`, announcing and looking. Tasks end when the returned
    /// handles are aborted.
    pub async fn start(
        settings: &PeerSettings,
        files: &CloudSettings,
        me: Appliance,
        cx: PeerContext,
    ) -> Result<(Arc<Peers>, Vec<tokio::task::JoinHandle<()>>), SetupError> {
        let (server, client) = peer_configs(files)?;
        let endpoint = match settings.bind {
            Some(bind) => Endpoint::server(server, bind).map_err(|e| {
                SetupError::Socket(std::io::Error::new(
                    e.kind(),
                    format!("peer_bind {bind}: {e}"),
                ))
            })?,
            None => {
                Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).map_err(SetupError::Socket)?
            }
        };
        let listen = match settings.bind {
            Some(_) => Some(endpoint.local_addr().map_err(SetupError::Socket)?),
            None => None,
        };
        let peers = Arc::new(Peers {
            me,
            endpoint,
            client,
            cx,
            links: Mutex::default(),
            next_id: AtomicU64::new(1),
            refused: Mutex::default(),
            dialling: Mutex::default(),
            offered: Mutex::default(),
            listen,
            mdns: Mutex::new(None),
        });
        let mut tasks = vec![tokio::spawn(peers.clone().accept_loop())];
        for addr in &settings.addrs {
            tasks.push(tokio::spawn(peers.clone().dial_name(addr.clone())));
        }
        if settings.mdns {
            match peers.clone().start_mdns(settings.mdns_interface.clone()) {
                Ok(task) => tasks.push(task),
                Err(e) => tracing::warn!(error = %e, "mDNS discovery of peers is off"),
            }
        }
        let station = peers.cx.station.clone();
        let clock = peers.cx.clock;
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::station::SWEEP_INTERVAL).await;
                station.sweep(clock.now_us());
            }
        }));
        if let Some(addr) = listen {
            tracing::info!(%addr, "listening for the site's peers");
        }
        Ok((peers, tasks))
    }

    /// Where this appliance listens for peers.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen
    }

    /// The peers, for the status API.
    pub fn status(&self) -> PeerStatus {
        let rooms = self
            .links
            .lock()
            .map(|l| {
                l.by_room
                    .iter()
                    .map(|(room, link)| {
                        (
                            room.clone(),
                            LinkStatus {
                                addr: link.addr.to_string(),
                                since_us: link.since_us,
                                dialled: link.dialer == self.me.room,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (refused, last_refusal) = self
            .refused
            .lock()
            .map(|r| (r.total, r.last.clone()))
            .unwrap_or_default();
        PeerStatus {
            listen: self.listen.map(|a| a.to_string()),
            rooms,
            refused,
            last_refusal,
        }
    }

    /// Stops announcing this appliance.
    pub fn stop(&self) {
        if let Ok(mut m) = self.mdns.lock()
            && let Some(daemon) = m.take()
        {
            let _ = daemon.shutdown();
        }
        self.endpoint.close(0_u32.into(), b"shutting down");
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let me = self.clone();
            tokio::spawn(async move {
                let addr = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => me.run_link(conn, false).await,
                    Err(e) => me.refuse(addr, &format!("handshake failed: {e}")).await,
                }
            });
        }
    }

    /// Calls a configured peer (an address or a name) for as long as the appliance runs.
    async fn dial_name(self: Arc<Self>, addr: CloudAddr) {
        loop {
            match addr.resolve().await {
                Ok(addrs) => {
                    for a in addrs {
                        if self.clone().try_dial(a).await {
                            break;
                        }
                    }
                }
                Err(e) => tracing::debug!(peer = %addr, error = %e, "cannot resolve peer"),
            }
            tokio::time::sleep(REDIAL).await;
        }
    }

    /// Calls `addr` once and serves the connection until it ends; `true` if it connected.
    async fn try_dial(self: Arc<Self>, addr: SocketAddr) -> bool {
        if self.listen == Some(addr) {
            return false;
        }
        let Ok(connecting) = self
            .endpoint
            .connect_with(self.client.clone(), addr, DIAL_NAME)
        else {
            return false;
        };
        match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => {
                self.run_link(conn, true).await;
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %addr, error = %e, "peer did not answer");
                false
            }
            Err(_) => false,
        }
    }

    /// Counts a refused connection and, unless a flood of them is under way, logs and audits
    /// it; a flood is audited as one entry a minute saying how many were not.
    async fn refuse(&self, addr: SocketAddr, why: &str) {
        let verdict = self.refused.lock().ok().map(|mut r| {
            r.total += 1;
            r.last = Some(format!("{addr}: {why}"));
            r.audit(self.cx.clock.now_us())
        });
        let Some((audit_this, unaudited)) = verdict else {
            return;
        };
        let mut entries = Vec::new();
        if let Some((n, since_us)) = unaudited {
            let since = vigil_shared::zone::rfc3339_utc(since_us);
            tracing::warn!(refusals = n, %since, "peer refusals not logged one by one");
            entries.push(Entry {
                actor: "peer".into(),
                action: format!(
                    "peer refused: {n} more refusals in the minute from {since}, not audited one \
                     by one"
                ),
                target: String::new(),
                client: String::new(),
            });
        }
        if audit_this {
            tracing::warn!(peer = %addr, reason = %why, "refusing a peer");
            entries.push(Entry {
                actor: "peer".into(),
                action: format!("peer refused: {why}"),
                target: String::new(),
                client: addr.to_string(),
            });
        }
        for entry in entries {
            if let Err(e) = self.cx.audit.record_async(entry).await {
                tracing::error!(error = %e, "cannot audit a refused peer");
            }
        }
    }

    /// Checks who the other end is, keeps one connection per room, and serves it.
    async fn run_link(self: Arc<Self>, conn: Connection, dialled: bool) {
        let addr = conn.remote_address();
        let (them, cert, serial) = match appliance_of_conn(&conn) {
            Ok(a) => a,
            Err(why) => {
                conn.close(
                    u32::from(RejectCode::Forbidden.code()).into(),
                    why.as_bytes(),
                );
                self.refuse(addr, &why).await;
                return;
            }
        };
        if them.site != self.me.site {
            let why = format!(
                "appliance {them} is not of site {}; peers sync only within a site",
                self.me.site
            );
            conn.close(
                u32::from(RejectCode::Forbidden.code()).into(),
                why.as_bytes(),
            );
            self.refuse(addr, &why).await;
            return;
        }
        if let Some(why) = self.revocation(&them, &serial).await {
            conn.close(
                u32::from(RejectCode::Forbidden.code()).into(),
                why.as_bytes(),
            );
            self.refuse(addr, &why).await;
            return;
        }
        if them.room == self.me.room {
            // Itself, found by mDNS, or a second box configured for the same room.
            conn.close(u32::from(RejectCode::Forbidden.code()).into(), b"same room");
            return;
        }
        let now = self.cx.clock.now_us();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let link = Link {
            id,
            conn: conn.clone(),
            dialer: if dialled {
                self.me.room.clone()
            } else {
                them.room.clone()
            },
            addr,
            since_us: now,
        };
        let admitted = self
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admit(&self.me.room, &them.room, link);
        match admitted {
            Err(_) => {
                conn.close(0_u32.into(), b"duplicate");
                // Wait while the kept connection lives, so the dialler does not call again
                // and again.
                let kept = self
                    .links
                    .lock()
                    .ok()
                    .and_then(|l| l.by_room.get(&them.room).map(|l| l.conn.clone()));
                if let Some(kept) = kept {
                    kept.closed().await;
                }
                return;
            }
            Ok(Some(replaced)) => replaced.conn.close(0_u32.into(), b"duplicate"),
            Ok(None) => {}
        }
        tracing::info!(peer = %them, %addr, dialled, "peer connected");
        let entry = Entry {
            actor: format!("appliance {them}"),
            action: "peer connected".into(),
            target: String::new(),
            client: addr.to_string(),
        };
        if let Err(e) = self.cx.audit.record_async(entry).await {
            tracing::error!(error = %e, "cannot audit a peer; closing it");
            conn.close(0_u32.into(), b"audit unavailable");
        }
        let tasks = [
            tokio::spawn(self.clone().send_live(conn.clone())),
            tokio::spawn(self.clone().receive_live(conn.clone(), them.room.clone())),
            tokio::spawn(self.clone().offer_documents(
                conn.clone(),
                them.clone(),
                format!("{}#{cert:x}", them.room),
            )),
            tokio::spawn(self.clone().answer_streams(conn.clone(), them.clone())),
            tokio::spawn(
                self.clone()
                    .watch_revocation(conn.clone(), them.clone(), serial),
            ),
        ];
        let reason = conn.closed().await;
        for t in tasks {
            t.abort();
        }
        let removed = self
            .links
            .lock()
            .map(|mut l| l.remove(&them.room, id))
            .unwrap_or(false);
        if removed {
            self.cx.station.lost(&them.room, self.cx.clock.now_us());
        }
        tracing::info!(peer = %them, %reason, "peer disconnected");
    }

    /// Why the peer `them`, whose certificate has `serial`, may not connect, if the site
    /// configuration the cloud last sent revokes that certificate. The check fails closed:
    /// a configuration that cannot be read refuses every peer until it can.
    async fn revocation(&self, them: &Appliance, serial: &str) -> Option<String> {
        let site = self.me.site.clone();
        let revoked = self
            .cx
            .db
            .with_reader(move |db| store::load_typed::<SiteConfigDoc>(db, &site))
            .await
            .map_err(|e| e.to_string())
            .and_then(|doc| match doc {
                Some(doc) => doc.revoked_certificates().map_err(|e| e.to_string()),
                // Before the first sync with the cloud nothing is known to be revoked.
                None => Ok(BTreeMap::new()),
            });
        match revoked {
            Ok(revoked) => revoked.get(serial).map(|at_us| {
                format!(
                    "appliance {them}'s certificate {serial} was revoked at {}",
                    vigil_shared::zone::rfc3339_utc(*at_us)
                )
            }),
            Err(e) => Some(format!(
                "the site's revoked certificates cannot be read ({e}); refusing peers until \
                 they can"
            )),
        }
    }

    /// Closes the link to `them` as soon as the cloud revokes its certificate.
    async fn watch_revocation(self: Arc<Self>, conn: Connection, them: Appliance, serial: String) {
        loop {
            tokio::time::sleep(REVOCATION_CHECK).await;
            if let Some(why) = self.revocation(&them, &serial).await {
                conn.close(
                    u32::from(RejectCode::Forbidden.code()).into(),
                    why.as_bytes(),
                );
                self.refuse(conn.remote_address(), &why).await;
                return;
            }
        }
    }

    /// This room's live frames, on one stream, for as long as the connection lasts.
    async fn send_live(self: Arc<Self>, conn: Connection) {
        let mut feed = self.cx.station.subscribe_feed();
        let Ok(mut send) = conn.open_uni().await else {
            return;
        };
        loop {
            let frame = match feed.recv().await {
                Ok(frame) => frame,
                // Too slow: the oldest frames are gone; carry on with the newest.
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(dropped = n, "a peer fell behind on live values");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if write_json(&mut send, frame.as_ref()).await.is_err() {
                return;
            }
        }
    }

    async fn receive_live(self: Arc<Self>, conn: Connection, room: String) {
        let Ok(mut recv) = conn.accept_uni().await else {
            return;
        };
        loop {
            match read_json::<LiveFrame>(&mut recv).await {
                Ok(Some(frame)) => self.cx.station.heard(&room, frame, self.cx.clock.now_us()),
                Ok(None) => return,
                Err(_) if conn.close_reason().is_some() => return,
                Err(e) => {
                    tracing::warn!(%room, error = %e, "bad live frame from a peer; closing");
                    conn.close(u32::from(RejectCode::Malformed.code()).into(), e.as_bytes());
                    return;
                }
            }
        }
    }

    /// Offers the peer every shared document it has not seen in its version here, then each
    /// one again whenever it changes.
    /// `peer` names the room and its certificate.
    async fn offer_documents(self: Arc<Self>, conn: Connection, them: Appliance, peer: String) {
        let mut offered = self
            .offered
            .lock()
            .ok()
            .and_then(|o| o.get(&peer).cloned())
            .unwrap_or_default();
        let seq = tokio::sync::Mutex::new(SeqCounter::new());
        loop {
            let docs = match self
                .cx
                .db
                .with_reader(|db| store::shared_versions(db, &PEER_KINDS))
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read documents for peers");
                    Vec::new()
                }
            };
            for (id, kind, version) in docs {
                if offered.get(&id) == Some(&version) {
                    continue;
                }
                let exchange = self.offer(&conn, &id, kind, &seq);
                match tokio::time::timeout(PEER_EXCHANGE_TIMEOUT, exchange).await {
                    Ok(Ok(())) => {
                        if let Ok(mut o) = self.offered.lock() {
                            o.entry(peer.clone())
                                .or_default()
                                .insert(id.clone(), version);
                        }
                        offered.insert(id, version);
                    }
                    Ok(Err(_)) if conn.close_reason().is_some() => return,
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %them, doc = %id, error = %e, "document exchange with a peer failed");
                        if let Failure::Refused { code, reason } = &e {
                            conn.close(u32::from(code.code()).into(), reason.as_bytes());
                        }
                        if conn.close_reason().is_some() {
                            return;
                        }
                    }
                    Err(_) => {
                        tracing::warn!(peer = %them, doc = %id, "document exchange with a peer timed out");
                    }
                }
            }
            tokio::time::sleep(PEER_SCAN).await;
        }
    }

    async fn offer(
        &self,
        conn: &Connection,
        id: &str,
        kind: DocKind,
        seq: &tokio::sync::Mutex<SeqCounter>,
    ) -> Result<(), Failure> {
        let doc_id = id.to_owned();
        let mut doc = self
            .cx
            .db
            .with_reader(move |db| {
                Ok(store::load_document(db, &doc_id)?
                    .map(|(_, d)| d)
                    .unwrap_or_default())
            })
            .await?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| Failure::Connection(e.to_string()))?;
        send.write_all(&[STREAM_DOCUMENT])
            .await
            .map_err(|e| Failure::Connection(e.to_string()))?;
        self.remote()
            .initiate(
                (&mut send, &mut recv),
                id,
                kind,
                &mut doc,
                automerge::sync::State::new(),
                seq,
            )
            .await?;
        Ok(())
    }

    fn remote(&self) -> Remote<'_> {
        Remote {
            db: &self.cx.db,
            site: &self.me.site,
            clock: self.cx.clock,
            tally: &|_| {},
        }
    }

    /// Streams the peer opens: documents it offers, and requests.
    async fn answer_streams(self: Arc<Self>, conn: Connection, them: Appliance) {
        while let Ok((send, recv)) = conn.accept_bi().await {
            let me = self.clone();
            let (conn, them) = (conn.clone(), them.clone());
            tokio::spawn(async move {
                if let Err(e) = me.answer(send, recv, &them, conn.remote_address()).await {
                    if conn.close_reason().is_some() {
                        return;
                    }
                    tracing::warn!(peer = %them, error = %e, "refusing what a peer sent");
                    let code = match &e {
                        Failure::Refused { code, .. } => *code,
                        _ => RejectCode::Malformed,
                    };
                    conn.close(u32::from(code.code()).into(), e.to_string().as_bytes());
                }
            });
        }
    }

    async fn answer(
        &self,
        mut send: SendStream,
        mut recv: RecvStream,
        them: &Appliance,
        addr: SocketAddr,
    ) -> Result<(), Failure> {
        let mut tag = [0_u8; 1];
        recv.read_exact(&mut tag)
            .await
            .map_err(|e| Failure::Connection(e.to_string()))?;
        match tag[0] {
            STREAM_DOCUMENT => {
                let mut decoder = FrameDecoder::new();
                let Some(first) =
                    crate::sync::read_message(&mut recv, &mut decoder, &|_| {}).await?
                else {
                    return Ok(());
                };
                self.remote()
                    .respond(first, send, recv, decoder, |kind| {
                        if PEER_KINDS.contains(&kind) {
                            Ok(())
                        } else {
                            Err(format!("peers do not exchange {kind} documents"))
                        }
                    })
                    .await
            }
            STREAM_REQUEST => {
                let request = read_json::<Request>(&mut recv)
                    .await
                    .map_err(Failure::Connection)?
                    .ok_or_else(|| Failure::Connection("an empty request".into()))?;
                let reply = self.serve_request(request, them, addr).await;
                write_json(&mut send, &reply)
                    .await
                    .map_err(Failure::Connection)?;
                let _ = send.finish();
                Ok(())
            }
            other => Err(Failure::Refused {
                code: RejectCode::Malformed,
                reason: format!("unknown stream kind {other}"),
            }),
        }
    }

    async fn serve_request(&self, request: Request, them: &Appliance, addr: SocketAddr) -> Reply {
        match request {
            Request::Acknowledge {
                session_id,
                advisory_id,
                by,
            } => {
                let id = session_id.clone();
                let room = self.me.room.clone();
                let site = self.me.site.clone();
                let staff_id = by.clone();
                let checked = self
                    .cx
                    .db
                    .with_reader(move |db| {
                        let doc = store::load_typed::<SessionDoc>(db, &id)?;
                        let ours = doc.and_then(|d| d.meta().ok()).is_some_and(|m| {
                            m.room == room
                                && matches!(
                                    m.state,
                                    SessionState::InProgress | SessionState::Planned
                                )
                        });
                        // The person must be of this site's staff, as this appliance knows it,
                        // and may treat: the peer's word alone is not enough.
                        let treats = store::load_typed::<SiteConfigDoc>(db, &site)?
                            .and_then(|d| d.config().ok())
                            .is_some_and(|c| {
                                c.staff.iter().any(|m| {
                                    m.id == staff_id
                                        && crate::access::Role::from_staff(&m.role)
                                            .is_some_and(crate::access::Role::may_treat)
                                })
                            });
                        Ok((ours, treats))
                    })
                    .await;
                match checked {
                    Ok((true, true)) => {}
                    Ok((_, false)) => {
                        return Reply::Refused(format!(
                            "{by} is not a nurse or clinician of site {} on room {}'s staff list",
                            self.me.site, self.me.room
                        ));
                    }
                    Ok((false, true)) => {
                        return Reply::Refused(format!(
                            "session {session_id} is not in progress in room {}",
                            self.me.room
                        ));
                    }
                    Err(e) => return Reply::Refused(format!("cannot read the session: {e}")),
                }
                let entry = Entry {
                    actor: by.clone(),
                    action: format!(
                        "advisory acknowledged at the central station of room {}",
                        them.room
                    ),
                    target: session_id.clone(),
                    client: addr.to_string(),
                };
                if let Err(e) = self.cx.audit.record_async(entry).await {
                    return Reply::Refused(format!("cannot write the audit log: {e}"));
                }
                let event = SessionEvent::Acknowledge { advisory_id, by };
                match self.cx.recorder.add_event(session_id, event).await {
                    Ok(_) => Reply::Done,
                    Err(e) => Reply::Refused(e.to_string()),
                }
            }
        }
    }

    /// Asks `room`'s appliance to do `request`.
    pub async fn request(&self, room: &str, request: &Request) -> Result<(), PeerError> {
        let conn = self
            .links
            .lock()
            .ok()
            .and_then(|l| l.by_room.get(room).map(|l| l.conn.clone()))
            .ok_or_else(|| PeerError::Unreachable(room.to_owned()))?;
        let failed = |reason: String| PeerError::Connection {
            room: room.to_owned(),
            reason,
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| failed(e.to_string()))?;
        send.write_all(&[STREAM_REQUEST])
            .await
            .map_err(|e| failed(e.to_string()))?;
        write_json(&mut send, request).await.map_err(failed)?;
        let _ = send.finish();
        let reply = tokio::time::timeout(Duration::from_secs(10), read_json::<Reply>(&mut recv))
            .await
            .map_err(|_| failed("no answer within 10 s".into()))?
            .map_err(failed)?;
        match reply {
            Some(Reply::Done) => Ok(()),
            Some(Reply::Refused(reason)) => Err(PeerError::Refused {
                room: room.to_owned(),
                reason,
            }),
            None => Err(failed("no answer".into())),
        }
    }

    /// Announces this appliance (`_vigil._udp`, with its site and room) and calls every
    /// appliance of the site that announces itself.
    fn start_mdns(
        self: Arc<Self>,
        interface: Option<String>,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        let port = self
            .listen
            .map(|a| a.port())
            .ok_or("mDNS needs peer_bind: the port to announce")?;
        let daemon = mdns_sd::ServiceDaemon::new().map_err(|e| e.to_string())?;
        if let Some(name) = &interface {
            daemon
                .disable_interface(mdns_sd::IfKind::All)
                .and_then(|()| daemon.enable_interface(mdns_sd::IfKind::Name(name.clone())))
                .map_err(|e| format!("interface {name}: {e}"))?;
        }
        let instance = format!("vigil-{}-{}", self.me.site, self.me.room);
        let host = format!("{instance}.local.");
        let properties = [
            ("site", self.me.site.as_str()),
            ("room", self.me.room.as_str()),
        ];
        let info =
            mdns_sd::ServiceInfo::new(MDNS_SERVICE, &instance, &host, "", port, &properties[..])
                .map_err(|e| e.to_string())?
                .enable_addr_auto();
        daemon.register(info).map_err(|e| e.to_string())?;
        let events = daemon.browse(MDNS_SERVICE).map_err(|e| e.to_string())?;
        if let Ok(mut m) = self.mdns.lock() {
            *m = Some(daemon);
        }
        let (found_tx, mut found_rx) = tokio::sync::mpsc::unbounded_channel();
        let (site, room) = (self.me.site.clone(), self.me.room.clone());
        std::thread::Builder::new()
            .name("peer-mdns".into())
            .spawn(move || {
                while let Ok(event) = events.recv() {
                    if let mdns_sd::ServiceEvent::ServiceResolved(s) = event {
                        // A hint only: the certificate decides.
                        if s.get_property_val_str("site") != Some(site.as_str())
                            || s.get_property_val_str("room") == Some(room.as_str())
                        {
                            continue;
                        }
                        for ip in s.get_addresses_v4() {
                            let _ = found_tx.send(SocketAddr::from((ip, s.get_port())));
                        }
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(tokio::spawn(async move {
            while let Some(addr) = found_rx.recv().await {
                let new = self
                    .dialling
                    .lock()
                    .map(|mut d| d.insert(addr))
                    .unwrap_or(false);
                if new {
                    tracing::info!(peer = %addr, "found a peer by mDNS");
                    tokio::spawn(self.clone().dial_name(CloudAddr::from(addr)));
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appliance_names_are_checked() {
        for (name, ok) in [
            ("austin", true),
            ("room-2", true),
            ("", false),
            ("Austin", false),
            ("a:b", false),
            ("a/b", false),
        ] {
            assert_eq!(valid_name(name), ok, "{name:?}");
        }
    }

    #[test]
    fn a_flood_of_refusals_is_audited_as_one_entry_a_minute() {
        let mut r = Refusals::default();
        let t0 = 1_000_000_000;
        for i in 0..AUDITED_REFUSALS_PER_MINUTE {
            assert_eq!(r.audit(t0 + i64::from(i)), (true, None), "refusal {i}");
        }
        for i in 0..500 {
            assert_eq!(r.audit(t0 + 100 + i), (false, None));
        }
        // The next minute: its first refusal is audited, with the 500 held back.
        assert_eq!(r.audit(t0 + 60_000_000), (true, Some((500, t0))));
        assert_eq!(r.audit(t0 + 60_000_001), (true, None));
        // A quiet minute holds nothing back, so the next has nothing to report.
        assert_eq!(r.audit(t0 + 200_000_000), (true, None));
    }
}
