//! The QUIC sync server: accepts appliances, learns who they are from their verified
//! certificates, and runs Automerge's sync protocol per document on QUIC streams.
//!
//! Scope is enforced here, with the rules of [`scope`]: an appliance may only touch documents
//! of its own site, with UUID ids (or its site's id for the site configuration); it never
//! writes a site configuration; sessions and audit documents are its own room's; a session's
//! patient is a patient of its site; audit documents only grow. Every incoming change is
//! validated and scope-checked before it is committed. Checks run on the in-memory document;
//! if one fails, that copy is thrown away and the next use reloads the durable one, which
//! never saw the change (the effect of applying to a fork, without copying half a megabyte per
//! message). The cloud persists (fsync) before it answers, so the heads it advertises are
//! always durable.
//!
//! Site config and patient documents flow down: on connect, and whenever another appliance of
//! the site changes a patient, the cloud opens a stream and offers its version. Sessions and
//! audit documents never flow down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use automerge::AutoCommit;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::broadcast;
use vigil_shared::doc::{DocKind, validate_document};
use vigil_shared::fleet::ApplianceReport;
use vigil_shared::sync::{DocSync, Incoming, Role, SyncError, durable};
use vigil_shared::wire::{self, FrameDecoder, Message, RejectCode, SeqCounter, encode_message};

pub mod certs;
pub mod limits;
pub mod scope;

use crate::metrics::Metrics;
use crate::pki::{ApplianceIdentity, appliance_identity, cert_not_after_us, cert_serial};
use crate::store::{AuditRow, CloudStore, Connected, DocChange, NewCert, StoreError};
use certs::{CertIssuer, MAX_CONCURRENT_ENROLMENTS, code_hash};
use limits::{Admission, ConnectionTable, MAX_APPLIANCE_CONNECTIONS, TokenBucket};
use scope::{Pending, ScopeError};

/// Most documents kept in memory between messages. A document is loaded once per exchange
/// when it isn't cached; 256 documents of up to half a megabyte each bound the cache well
/// under the memory of a small VM.
pub const DOC_CACHE_CAPACITY: usize = 256;

/// How long the cloud waits for an appliance's Hello.
pub const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Documents queued for pushing to one site's appliances before older notices are dropped
/// (a dropped notice only delays that document to the appliance's next connection).
pub const PUSH_QUEUE: usize = 1024;

/// How long the cloud waits for the next frame of an exchange it is part of.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Read buffer size per stream read.
const READ_CHUNK: usize = 64 * 1024;

/// Errors of one exchange or connection.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The peer broke the wire protocol.
    #[error("wire: {0}")]
    Wire(#[from] wire::WireError),
    /// The document exchange failed.
    #[error("sync: {0}")]
    Sync(#[from] SyncError),
    /// The peer may not do this.
    #[error("{code}: {reason}")]
    Refused {
        /// The code sent to the peer.
        code: RejectCode,
        /// The reason sent to the peer.
        reason: String,
    },
    /// Storage failed.
    #[error("storage: {0}")]
    Store(String),
    /// The database cannot be reached: nothing was confirmed; the appliance retries.
    #[error("storage: {0}")]
    Unavailable(String),
    /// The QUIC connection or stream failed.
    #[error("connection: {0}")]
    Connection(String),
}

impl ServeError {
    /// A storage failure; an unreachable database apart, so the appliance hears why.
    fn from_store(e: StoreError) -> ServeError {
        if e.is_unavailable() {
            ServeError::Unavailable(e.to_string())
        } else {
            ServeError::Store(e.to_string())
        }
    }

    /// The reason the appliance is told.
    fn reject_reason(&self) -> String {
        match self.reject() {
            Message::Reject { reason, .. } => reason,
            _ => self.to_string(),
        }
    }

    fn reject(&self) -> Message {
        match self {
            ServeError::Wire(e) => e.to_reject(),
            ServeError::Sync(e) => Message::reject(e.reject_code(), e.to_string()),
            ServeError::Refused { code, reason } => Message::reject(*code, reason.clone()),
            ServeError::Store(_) | ServeError::Connection(_) => {
                Message::reject(RejectCode::Internal, "internal error; retry later")
            }
            ServeError::Unavailable(_) => Message::reject(
                RejectCode::Internal,
                "the cloud's database is unavailable, so nothing was confirmed; retry later",
            ),
        }
    }
}

type DocSlot = Arc<tokio::sync::Mutex<Option<AutoCommit>>>;

/// Documents in memory, each behind its own lock so two appliances syncing one patient take
/// turns.
#[derive(Default)]
struct DocCache {
    slots: Mutex<Slots>,
}

/// Slots by document id with the use counter value of their last use, and the counter.
#[derive(Default)]
struct Slots {
    map: HashMap<String, (DocSlot, u64)>,
    clock: u64,
}

impl DocCache {
    fn slot(&self, id: &str) -> DocSlot {
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Slots { map, clock } = &mut *guard;
        *clock += 1;
        let now = *clock;
        if let Some((slot, used)) = map.get_mut(id) {
            *used = now;
            return slot.clone();
        }
        if map.len() >= DOC_CACHE_CAPACITY {
            // Evict the least recently used slot nobody holds.
            let victim = map
                .iter()
                .filter(|(_, (slot, _))| Arc::strong_count(slot) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = victim {
                map.remove(&k);
            }
        }
        let slot: DocSlot = Arc::new(tokio::sync::Mutex::new(None));
        map.insert(id.to_owned(), (slot.clone(), now));
        slot
    }
}

/// A document of a site changed: appliances of that site may want it.
#[derive(Debug, Clone)]
struct Changed {
    site: String,
    doc_id: String,
    kind: DocKind,
    /// The appliance whose exchange made the change (it has it already).
    from: Option<(String, String)>,
}

/// One appliance's last backlog report: documents waiting, and since when its backlog has not
/// been empty (its sync lag).
type Backlog = (u64, Option<std::time::Instant>);

/// Shared state of the sync server.
pub struct SyncServer {
    store: Arc<CloudStore>,
    metrics: Arc<Metrics>,
    cache: DocCache,
    changes: broadcast::Sender<Changed>,
    /// Connections by appliance, to close a revoked one; at most
    /// [`MAX_APPLIANCE_CONNECTIONS`], one per appliance.
    connections: Mutex<ConnectionTable<(String, String), Connection>>,
    /// Each connected appliance's last backlog report: documents waiting, and since when it
    /// has not been empty (its sync lag).
    backlogs: Mutex<HashMap<(String, String), Backlog>>,
    /// This cloud instance's name, recorded with each appliance it holds.
    instance: String,
    fleet: FleetSettings,
    /// Enrolments in progress, at most [`MAX_CONCURRENT_ENROLMENTS`].
    enrolments: Arc<tokio::sync::Semaphore>,
}

/// How the sync server treats the fleet: whether it issues certificates, and the oldest
/// protocol version it still accepts.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// The CA at work; without it enrolment and renewal are refused with the reason.
    pub issuer: Option<Arc<CertIssuer>>,
    /// Appliances that speak nothing at least this new are told to update.
    pub oldest_protocol: u16,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            issuer: None,
            oldest_protocol: wire::MIN_PROTOCOL_VERSION,
        }
    }
}

/// One stream of a connection: who, with which certificate, at which protocol version, and
/// whether the connection renewed its certificate already (once per connection).
struct Stream<'a> {
    who: &'a ApplianceIdentity,
    peer: &'a Peer,
    version: u16,
    renewed: &'a std::sync::atomic::AtomicBool,
}

/// What a connection's client certificate says.
struct Peer {
    identity: ApplianceIdentity,
    serial: String,
    not_after_us: i64,
}

impl std::fmt::Debug for SyncServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncServer").finish_non_exhaustive()
    }
}

pub(crate) use crate::clock::now_us;

impl SyncServer {
    /// A server over `store`, as cloud instance `instance`.
    pub fn new(
        store: Arc<CloudStore>,
        metrics: Arc<Metrics>,
        instance: &str,
        fleet: FleetSettings,
    ) -> Arc<SyncServer> {
        let (changes, _) = broadcast::channel(PUSH_QUEUE);
        Arc::new(SyncServer {
            store,
            metrics,
            cache: DocCache::default(),
            changes,
            connections: Mutex::new(ConnectionTable::new(MAX_APPLIANCE_CONNECTIONS)),
            backlogs: Mutex::default(),
            instance: instance.to_owned(),
            fleet,
            enrolments: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_ENROLMENTS)),
        })
    }

    /// A patient or site configuration changed through another process on the database:
    /// forget this instance's copy (the next use loads what is stored) and offer it to the
    /// site's appliances connected here.
    pub async fn changed_elsewhere(&self, change: DocChange) {
        tracing::debug!(doc = %change.id, kind = %change.kind, site = %change.site, "changed through another instance");
        *self.cache.slot(&change.id).lock().await = None;
        let _ = self.changes.send(Changed {
            site: change.site,
            doc_id: change.id,
            kind: change.kind,
            from: None,
        });
    }

    /// Accepts connections until the endpoint closes.
    pub async fn serve(self: Arc<Self>, endpoint: Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            let server = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => server.handle_connection(conn).await,
                    Err(e) => {
                        server.metrics.reject("handshake");
                        tracing::warn!(%remote, error = %e, "appliance handshake failed");
                    }
                }
            });
        }
    }

    /// Closes every appliance connection (they reconnect and handshake again).
    pub fn close_all(&self, reason: &str) {
        let conns: Vec<Connection> = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain();
        for conn in conns {
            conn.close(
                quinn::VarInt::from_u32(u32::from(RejectCode::Forbidden.code())),
                reason.as_bytes(),
            );
        }
    }

    async fn handle_connection(self: Arc<Self>, conn: Connection) {
        let remote = conn.remote_address();
        if alpn(&conn).as_deref() == Some(wire::ENROL_ALPN) {
            self.enrol(conn).await;
            return;
        }
        let peer = match peer_certificate(&conn) {
            Ok(peer) => peer,
            Err(reason) => {
                self.metrics.reject("forbidden");
                tracing::warn!(%remote, %reason, "refusing appliance");
                conn.close(
                    quinn::VarInt::from_u32(u32::from(RejectCode::Forbidden.code())),
                    reason.as_bytes(),
                );
                return;
            }
        };
        let identity = peer.identity.clone();
        let site = identity.site.to_string();
        let room = identity.room.to_string();
        // A certificate replaced at enrolment or superseded by a renewal stops here, on every
        // instance, whatever this machine's CRL file says yet.
        let store = self.store.clone();
        let serial = peer.serial.clone();
        let refusal =
            tokio::task::spawn_blocking(move || store.certificate_refusal(&serial, now_us())).await;
        let refusal = match refusal {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Some(ServeError::from_store(e).reject_reason()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = refusal {
            self.metrics.reject("forbidden");
            tracing::warn!(%site, %room, %remote, %reason, "refusing appliance");
            conn.close(
                quinn::VarInt::from_u32(u32::from(RejectCode::Forbidden.code())),
                format!("forbidden: {reason}").as_bytes(),
            );
            return;
        }
        let (software, version, control, decoder) = match self.hello(&conn).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%site, %room, error = %e, "appliance hello failed");
                let _ = close_with(&conn, &e);
                return;
            }
        };
        let admission = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit((site.clone(), room.clone()), conn.clone());
        match admission {
            Admission::Admitted { replaced } => {
                if let Some(old) = replaced {
                    old.close(
                        quinn::VarInt::from_u32(0),
                        b"replaced by a newer connection from this appliance",
                    );
                }
            }
            Admission::Full { limit } => {
                self.metrics.reject(RejectCode::RateLimited.as_str());
                tracing::warn!(%site, %room, limit, "refusing appliance: too many connected");
                conn.close(
                    quinn::VarInt::from_u32(u32::from(RejectCode::RateLimited.code())),
                    format!(
                        "{}: {limit} appliances are connected, the most this cloud serves; retry later",
                        RejectCode::RateLimited.as_str()
                    )
                    .as_bytes(),
                );
                return;
            }
        }
        tracing::info!(%site, %room, %remote, %software, version, "appliance connected");
        self.metrics.appliance_connected();
        let store = self.store.clone();
        let (s, r, sw, i, serial) = (
            site.clone(),
            room.clone(),
            software.clone(),
            self.instance.clone(),
            peer.serial.clone(),
        );
        let not_after_us = peer.not_after_us;
        let _ = tokio::task::spawn_blocking(move || {
            let connected = Connected {
                site: &s,
                room: &r,
                software: &sw,
                protocol: version,
                cert_serial: &serial,
                cert_not_after_us: Some(not_after_us),
                instance: &i,
            };
            store.appliance_connected(&connected, now_us())
        })
        .await;
        let peer = Arc::new(peer);
        let renewed = Arc::new(std::sync::atomic::AtomicBool::new(false));

        let pusher = tokio::spawn(
            self.clone()
                .push_loop(conn.clone(), identity.clone(), version),
        );
        let watcher = tokio::spawn(
            self.clone()
                .watch_control(control, decoder, identity.clone()),
        );
        let seq = Arc::new(tokio::sync::Mutex::new(SeqCounter::new()));
        let bucket = Arc::new(Mutex::new(TokenBucket::for_appliance(
            std::time::Instant::now(),
        )));
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(%site, %room, reason = %e, "appliance disconnected");
                    break;
                }
            };
            let server = self.clone();
            let identity = identity.clone();
            let conn = conn.clone();
            let seq = seq.clone();
            let bucket = bucket.clone();
            let (peer, renewed) = (peer.clone(), renewed.clone());
            tokio::spawn(async move {
                let stream = Stream {
                    who: &identity,
                    peer: &peer,
                    version,
                    renewed: &renewed,
                };
                if let Err(e) = server.respond(send, recv, &stream, &seq, &bucket).await {
                    tracing::warn!(site = %identity.site, room = %identity.room, error = %e, "document exchange refused");
                    // A broken or hostile exchange ends the whole connection, with the reason.
                    let _ = close_with(&conn, &e);
                }
            });
        }
        pusher.abort();
        watcher.abort();
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove_if(&(site.clone(), room.clone()), |c| {
                c.stable_id() == conn.stable_id()
            });
        self.metrics.appliance_disconnected();
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            store.appliance_disconnected(&site, &room, now_us())
        })
        .await;
    }

    /// The control stream: Hello in, Welcome out (or Reject and close). The stream then
    /// carries the appliance's backlog reports (see [`SyncServer::watch_control`]).
    async fn hello(
        &self,
        conn: &Connection,
    ) -> Result<(String, u16, RecvStream, FrameDecoder), ServeError> {
        let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
            .await
            .map_err(|_| ServeError::Connection("no hello within 10 s".into()))?
            .map_err(|e| ServeError::Connection(e.to_string()))?;
        let mut decoder = FrameDecoder::new();
        let hello = tokio::time::timeout(
            HELLO_TIMEOUT,
            read_message(&mut recv, &mut decoder, &self.metrics),
        )
        .await
        .map_err(|_| ServeError::Connection("no hello within 10 s".into()))??
        .ok_or_else(|| ServeError::Connection("control stream closed before hello".into()))?;
        let software = match &hello {
            Message::Hello { software, .. } => software.clone(),
            other => {
                return Err(ServeError::Refused {
                    code: RejectCode::Malformed,
                    reason: format!("expected hello, got {}", other.name()),
                });
            }
        };
        let answer = wire::answer_hello_from(&hello, now_us(), self.fleet.oldest_protocol);
        write_message(&mut send, &answer, &self.metrics).await?;
        let _ = send.finish();
        match answer {
            Message::Welcome { version, .. } => Ok((software, version, recv, decoder)),
            Message::Reject { code, reason } => {
                // Delivered before the connection closes with it.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), send.stopped()).await;
                Err(ServeError::Refused { code, reason })
            }
            other => Err(ServeError::Connection(format!(
                "answered hello with {}",
                other.name()
            ))),
        }
    }

    /// Reads the appliance's backlog reports (also its heartbeat) until the control stream
    /// ends, and records them for the sites overview.
    async fn watch_control(
        self: Arc<Self>,
        mut recv: RecvStream,
        mut decoder: FrameDecoder,
        who: ApplianceIdentity,
    ) {
        loop {
            match read_message(&mut recv, &mut decoder, &self.metrics).await {
                Ok(Some(Message::Backlog { docs, bytes })) => {
                    self.note_backlog(&who, Some(docs));
                    let store = self.store.clone();
                    let (site, room) = (who.site.to_string(), who.room.to_string());
                    let _ = tokio::task::spawn_blocking(move || {
                        store.appliance_synced(&site, &room, now_us(), docs, bytes)
                    })
                    .await;
                }
                Ok(Some(Message::Report { json })) => {
                    let now = now_us();
                    let report = match serde_json::from_str::<ApplianceReport>(&json) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(site = %who.site, room = %who.room, error = %e, "unreadable appliance report");
                            continue;
                        }
                    };
                    let skew = report.time_us - now;
                    let store = self.store.clone();
                    let (site, room) = (who.site.to_string(), who.room.to_string());
                    let _ = tokio::task::spawn_blocking(move || {
                        store.appliance_reported(&site, &room, &json, skew, now)
                    })
                    .await;
                }
                Ok(Some(other)) => {
                    tracing::debug!(message = other.name(), "ignoring a control message");
                }
                Ok(None) | Err(_) => {
                    self.note_backlog(&who, None);
                    return;
                }
            }
        }
    }

    /// Updates the documents-waiting and sync-lag gauges from one appliance's report
    /// (`None`: it went away).
    fn note_backlog(&self, who: &ApplianceIdentity, docs: Option<u64>) {
        let key = (who.site.to_string(), who.room.to_string());
        let now = std::time::Instant::now();
        let mut backlogs = self.backlogs.lock().unwrap_or_else(|e| e.into_inner());
        match docs {
            None => {
                backlogs.remove(&key);
            }
            Some(0) => {
                backlogs.insert(key, (0, None));
            }
            Some(n) => {
                let since = backlogs.get(&key).and_then(|(_, s)| *s).unwrap_or(now);
                backlogs.insert(key, (n, Some(since)));
            }
        }
        self.metrics
            .set_documents_waiting(backlogs.values().map(|(n, _)| n).sum());
        let lag = backlogs
            .values()
            .filter_map(|(_, s)| *s)
            .map(|s| now.duration_since(s).as_secs_f64())
            .fold(0.0, f64::max);
        self.metrics.set_sync_lag_seconds(lag);
    }

    /// Answers an exchange the appliance opened. On error the reason goes back as a Reject
    /// frame on the stream (delivered before the caller closes the connection).
    async fn respond(
        &self,
        mut send: SendStream,
        recv: RecvStream,
        stream: &Stream<'_>,
        seq: &tokio::sync::Mutex<SeqCounter>,
        bucket: &Mutex<TokenBucket>,
    ) -> Result<(), ServeError> {
        let result = self.exchange_in(&mut send, recv, stream, seq, bucket).await;
        if let Err(e) = &result {
            let reason = match e {
                ServeError::Wire(w) => w.reject_code().as_str(),
                ServeError::Sync(s) => s.reject_code().as_str(),
                ServeError::Refused { code, .. } => code.as_str(),
                _ => "internal",
            };
            self.metrics.reject(reason);
            if write_message(&mut send, &e.reject(), &self.metrics)
                .await
                .is_ok()
                && send.finish().is_ok()
            {
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), send.stopped()).await;
            }
        }
        result
    }

    async fn exchange_in(
        &self,
        send: &mut SendStream,
        mut recv: RecvStream,
        stream: &Stream<'_>,
        seq: &tokio::sync::Mutex<SeqCounter>,
        bucket: &Mutex<TokenBucket>,
    ) -> Result<(), ServeError> {
        let who = stream.who;
        let mut decoder = FrameDecoder::new();
        // Timed like every later read: a stream opened and left silent must not hold one of
        // the appliance's MAX_STREAMS_PER_APPLIANCE forever.
        let Some(first) = read_timed(&mut recv, &mut decoder, &self.metrics).await? else {
            return Ok(());
        };
        if let Message::Renew { csr } = &first {
            let answer = self.renew(stream, csr).await?;
            write_message(send, &answer, &self.metrics).await?;
            let _ = send.finish();
            return Ok(());
        }
        let Message::Sync { doc_id, kind, .. } = &first else {
            return Err(ServeError::Refused {
                code: RejectCode::Malformed,
                reason: format!(
                    "a document stream must start with sync, not {}",
                    first.name()
                ),
            });
        };
        let (doc_id, kind) = (doc_id.clone(), *kind);
        self.authorize(&doc_id, kind, who, true).await?;
        let slot = self.cache.slot(&doc_id);
        let mut exchange =
            DocSync::new(Role::Responder, doc_id, kind, automerge::sync::State::new());
        let mut message = Some(first);
        while let Some(m) = message.take() {
            // The appliance's rate: past its burst, wait before applying, so QUIC's flow
            // control slows the appliance down instead of the cloud buffering or refusing.
            let bytes = match &m {
                Message::Sync { message, .. } => message.len() as u64,
                _ => 0,
            };
            let wait = bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(bytes, std::time::Instant::now());
            if !wait.is_zero() {
                tracing::debug!(site = %who.site, room = %who.room, ?wait, "appliance over its rate");
                tokio::time::sleep(wait).await;
            }
            for out in self.step(&slot, &mut exchange, Some(m), who, seq).await? {
                write_message(send, &out, &self.metrics).await?;
            }
            message = read_timed(&mut recv, &mut decoder, &self.metrics).await?;
        }
        let _ = send.finish();
        Ok(())
    }

    /// One turn of an exchange under the document's lock: apply what the appliance sent
    /// (validated and committed when it changed the document), then our answer. Returns the
    /// frames to send; the lock is never held while waiting on the network, so a slow or
    /// silent appliance can't hold a document up for the others.
    async fn step(
        &self,
        slot: &DocSlot,
        exchange: &mut DocSync,
        incoming: Option<Message>,
        who: &ApplianceIdentity,
        seq: &tokio::sync::Mutex<SeqCounter>,
    ) -> Result<Vec<Message>, ServeError> {
        let mut guard = slot.lock().await;
        let (doc_id, kind) = (exchange.doc_id().to_owned(), exchange.kind());
        let doc = self.load(&doc_id, &mut guard).await?;
        // Checked on every turn, before anything of the document is sent: another room's
        // session or audit document is refused whether the appliance writes or only reads.
        scope::check_read(&doc_id, kind, doc, who).map_err(refused)?;
        let mut out = Vec::new();
        if let Some(message) = incoming {
            let before = doc.get_heads();
            // A document new to the cloud that arrives whole keeps the appliance's bytes as its
            // snapshot: loading them into the empty copy is all that applying them does.
            let saved = if before.is_empty() {
                whole_document(&message)
            } else {
                None
            };
            let applied = match exchange.incoming(doc, message) {
                Ok(Incoming::Changed(true)) => {
                    self.commit(doc, &doc_id, kind, who, &before, saved).await
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = applied {
                // Forget the in-memory copy: the durable one never saw the change.
                *guard = None;
                return Err(e);
            }
            // Every answer confirms what is durable (the in-memory copy never holds
            // uncommitted changes), so an appliance whose earlier confirmation was lost in a
            // cut learns it on the next exchange instead of waiting forever.
            out.push(durable(&doc_id, &doc.get_heads()));
        }
        let mut seq = seq.lock().await;
        out.extend(exchange.outgoing(doc, &mut seq)?);
        Ok(out)
    }

    /// May this appliance touch this document? Its id must be one appliances may use, and a
    /// known document must be of the appliance's site and of the kind it says. New documents:
    /// never a site configuration.
    async fn authorize(
        &self,
        doc_id: &str,
        kind: DocKind,
        who: &ApplianceIdentity,
        writing: bool,
    ) -> Result<(), ServeError> {
        scope::check_id(doc_id, kind, who).map_err(refused)?;
        let store = self.store.clone();
        let id = doc_id.to_owned();
        let owner = tokio::task::spawn_blocking(move || store.document_owner(&id))
            .await
            .map_err(|e| ServeError::Store(e.to_string()))?
            .map_err(ServeError::from_store)?;
        let forbidden = |reason: String| ServeError::Refused {
            code: RejectCode::Forbidden,
            reason,
        };
        match owner {
            Some((owner_kind, site)) => {
                if site != who.site.as_str() {
                    return Err(forbidden(format!(
                        "document {doc_id} belongs to another site"
                    )));
                }
                if owner_kind != kind {
                    return Err(forbidden(format!(
                        "document {doc_id} is a {}, not a {}",
                        owner_kind.as_str(),
                        kind.as_str()
                    )));
                }
            }
            None if writing && kind == DocKind::SiteConfig => {
                return Err(forbidden(
                    "appliances may not create site configuration".into(),
                ));
            }
            None => {}
        }
        Ok(())
    }

    async fn load<'a>(
        &self,
        doc_id: &str,
        slot: &'a mut Option<AutoCommit>,
    ) -> Result<&'a mut AutoCommit, ServeError> {
        if slot.is_none() {
            let store = self.store.clone();
            let id = doc_id.to_owned();
            let stored = tokio::task::spawn_blocking(move || store.load_document(&id))
                .await
                .map_err(|e| ServeError::Store(e.to_string()))?
                .map_err(ServeError::from_store)?;
            *slot = Some(stored.map(|s| s.doc).unwrap_or_default());
        }
        slot.as_mut()
            .ok_or_else(|| ServeError::Store("document slot empty".into()))
    }

    /// Validates the changed document (at heads `before` until this change), checks the change
    /// against the appliance's scope, and makes it durable.
    async fn commit(
        &self,
        doc: &mut AutoCommit,
        doc_id: &str,
        kind: DocKind,
        who: &ApplianceIdentity,
        before: &[automerge::ChangeHash],
        saved: Option<Vec<u8>>,
    ) -> Result<(), ServeError> {
        // A site configuration change is refused before anything else is read of it.
        scope::check_writable(doc_id, kind).map_err(refused)?;
        let header = validate_document(doc, kind).map_err(|e| ServeError::Refused {
            code: RejectCode::SchemaInvalid,
            reason: format!("document {doc_id}: {e}"),
        })?;
        if header.id != doc_id {
            return Err(ServeError::Refused {
                code: RejectCode::SchemaInvalid,
                reason: format!("document {doc_id} says its id is {:?}", header.id),
            });
        }
        if header.site != who.site.as_str() {
            return Err(ServeError::Refused {
                code: RejectCode::Forbidden,
                reason: format!(
                    "document {doc_id} names site {:?}; this appliance is of {}",
                    header.site, who.site
                ),
            });
        }
        let pending = scope::check_change(doc_id, kind, doc, before, who).map_err(refused)?;
        let patient = match pending {
            Pending::Patient(patient_id) => Some(patient_id),
            Pending::AuditEntries(added) => {
                tracing::debug!(doc = %doc_id, entries = added.len(), "audit entries arriving");
                None
            }
            Pending::LedgerEntries(added) => {
                tracing::debug!(doc = %doc_id, entries = added.len(), "ledger entries arriving");
                None
            }
            Pending::Nothing => None,
        };
        let site = header.site.clone();
        let store = self.store.clone();
        let id = doc_id.to_owned();
        let owner = who.clone();
        let mut owned = std::mem::take(doc);
        // The patient lookup and the commit share one trip to a blocking thread; a patient's
        // registration never changes once made, so nothing can slip in between the two.
        let (owned, result) = tokio::task::spawn_blocking(move || {
            if let Some(patient_id) = &patient {
                let registered = match store.document_owner(patient_id) {
                    Ok(r) => r,
                    Err(e) => return (owned, Err(e)),
                };
                if let Err(e) = scope::check_patient(&id, patient_id, registered, &owner) {
                    return (owned, Ok(Err(e)));
                }
            }
            let r = store.commit_document_saved(&id, kind, &site, &mut owned, saved, now_us());
            (owned, r.map(Ok))
        })
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?;
        *doc = owned;
        let result = result.map_err(|e| match e {
            // The store's own checks are the last line of scope and schema enforcement; they
            // are the peer's fault, not ours, and must not be retried forever.
            StoreError::OwnerMismatch { .. } => ServeError::Refused {
                code: RejectCode::Forbidden,
                reason: e.to_string(),
            },
            StoreError::InvalidDocument { .. } => ServeError::Refused {
                code: RejectCode::SchemaInvalid,
                reason: e.to_string(),
            },
            other => {
                tracing::error!(error = %other, doc = %doc_id, "commit failed");
                ServeError::from_store(other)
            }
        })?;
        result.map_err(refused)?;
        self.metrics.document_committed();
        // Only patients and the site's ledger flow between a site's rooms: sessions and audit
        // documents are their room's, and appliances never change a site configuration.
        if matches!(kind, DocKind::Patient | DocKind::Ledger) {
            let _ = self.changes.send(Changed {
                site: header.site,
                doc_id: doc_id.to_owned(),
                kind,
                from: Some((who.site.to_string(), who.room.to_string())),
            });
        }
        Ok(())
    }

    /// Serves an enrolment connection: one Enrol in, one Certificate or Reject out. Nothing
    /// else is served on it, and it never counts as an appliance's connection.
    async fn enrol(&self, conn: Connection) {
        let remote = conn.remote_address();
        let result = self.enrol_exchange(&conn).await;
        if let Err(e) = &result {
            tracing::warn!(%remote, error = %e, "enrolment refused");
            self.metrics.reject("enrolment");
        }
        // Let the answer reach the appliance, then close.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
        conn.close(0_u32.into(), b"enrolment done");
    }

    async fn enrol_exchange(&self, conn: &Connection) -> Result<(), ServeError> {
        let remote = conn.remote_address().ip().to_string();
        let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
            .await
            .map_err(|_| ServeError::Connection("no enrolment request within 10 s".into()))?
            .map_err(|e| ServeError::Connection(e.to_string()))?;
        let mut decoder = FrameDecoder::new();
        let first = tokio::time::timeout(
            HELLO_TIMEOUT,
            read_message(&mut recv, &mut decoder, &self.metrics),
        )
        .await
        .map_err(|_| ServeError::Connection("no enrolment request within 10 s".into()))??;
        let answer = match first {
            Some(Message::Enrol {
                code,
                csr,
                software,
            }) => self.enrol_answer(&code, &csr, &software, &remote).await,
            Some(other) => Err(ServeError::Refused {
                code: RejectCode::Malformed,
                reason: format!(
                    "an enrolment connection carries enrol, not {}",
                    other.name()
                ),
            }),
            None => Err(ServeError::Connection("closed before enrolling".into())),
        };
        let message = match &answer {
            Ok(m) => m.clone(),
            Err(e) => e.reject(),
        };
        write_message(&mut send, &message, &self.metrics).await?;
        let _ = send.finish();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), send.stopped()).await;
        answer.map(|_| ())
    }

    /// Checks the code and signs the request; audited either way.
    async fn enrol_answer(
        &self,
        code: &str,
        csr: &[u8],
        software: &str,
        remote: &str,
    ) -> Result<Message, ServeError> {
        let Ok(_permit) = self.enrolments.clone().try_acquire_owned() else {
            return Err(ServeError::Refused {
                code: RejectCode::RateLimited,
                reason: "the cloud is busy enrolling other appliances; retry in a minute".into(),
            });
        };
        let Some(issuer) = self.fleet.issuer.clone() else {
            return Err(ServeError::Refused {
                code: RejectCode::Forbidden,
                reason: "this cloud does not issue certificates (its operator has not set \
                         [pki] ca_dir); ask for a certificate made with `vigil-cloud pki \
                         issue-appliance` instead"
                    .into(),
            });
        };
        let Some(hash) = code_hash(code) else {
            return Err(ServeError::Refused {
                code: RejectCode::Forbidden,
                reason: "this is not an enrolment code's secret; copy the code again".into(),
            });
        };
        let store = self.store.clone();
        let csr = csr.to_vec();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut chain = String::new();
            let used = store.use_enrol_code(
                &hash,
                |site, room| {
                    let (signed, pem) = issuer
                        .sign(site, room, &csr)
                        .map_err(|e| StoreError::Invalid(e.to_string()))?;
                    chain = pem;
                    Ok((
                        signed.serial.to_string(),
                        signed.not_after.unix_timestamp().saturating_mul(1_000_000),
                    ))
                },
                now_us(),
            );
            used.map(|r| r.map(|cert| (cert, chain)))
        })
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?;
        let audit = |username: String, action: &str, target: String, site: &str, room: &str| {
            let mut row = AuditRow::cloud(now_us(), &username, action, &target, remote);
            row.site = site.to_owned();
            row.room = room.to_owned();
            let store = self.store.clone();
            async move {
                let _ = tokio::task::spawn_blocking(move || store.audit(&row)).await;
            }
        };
        match outcome {
            Ok(Ok((cert, chain))) => {
                tracing::info!(site = %cert.site, room = %cert.room, serial = %cert.serial, %software, "appliance enrolled");
                audit(
                    format!("appliance {}/{}", cert.site, cert.room),
                    "enrol appliance",
                    format!("certificate {} ({software})", cert.serial),
                    &cert.site,
                    &cert.room,
                )
                .await;
                Ok(Message::Certificate {
                    site: cert.site,
                    room: cert.room,
                    chain_pem: chain,
                })
            }
            Ok(Err(refusal)) => {
                audit(
                    "unknown appliance".into(),
                    "enrolment refused",
                    refusal.to_string(),
                    "",
                    "",
                )
                .await;
                Err(ServeError::Refused {
                    code: RejectCode::Forbidden,
                    reason: refusal.to_string(),
                })
            }
            Err(StoreError::Invalid(reason)) => Err(ServeError::Refused {
                code: RejectCode::Malformed,
                reason,
            }),
            Err(e) => Err(ServeError::from_store(e)),
        }
    }

    /// A renewal on a sync connection: a new certificate for the same site and room, for the
    /// new key in the request; the one the connection was made with keeps working for the
    /// grace period. Once per connection (the appliance reconnects with the new one).
    async fn renew(&self, stream: &Stream<'_>, csr: &[u8]) -> Result<Message, ServeError> {
        use std::sync::atomic::Ordering;
        if stream.version < wire::REPORT_VERSION {
            return Err(ServeError::Refused {
                code: RejectCode::UnknownMessage,
                reason: format!(
                    "renew needs protocol 2; this connection is {}",
                    stream.version
                ),
            });
        }
        let Some(issuer) = self.fleet.issuer.clone() else {
            return Err(ServeError::Refused {
                code: RejectCode::Forbidden,
                reason: "this cloud does not issue certificates (its operator has not set \
                         [pki] ca_dir); renew this appliance's certificate by hand"
                    .into(),
            });
        };
        if stream.renewed.swap(true, Ordering::SeqCst) {
            return Err(ServeError::Refused {
                code: RejectCode::RateLimited,
                reason: "one renewal per connection; reconnect with the new certificate".into(),
            });
        }
        let (site, room) = (stream.who.site.to_string(), stream.who.room.to_string());
        let (signed, chain) = issuer
            .sign(&site, &room, csr)
            .map_err(|e| ServeError::Refused {
                code: RejectCode::Malformed,
                reason: e.to_string(),
            })?;
        let store = self.store.clone();
        let (old, old_end) = (stream.peer.serial.clone(), stream.peer.not_after_us);
        let serial = signed.serial.to_string();
        let not_after_us = signed.not_after.unix_timestamp().saturating_mul(1_000_000);
        let grace = issuer.grace_us();
        let (s, r, new_serial) = (site.clone(), room.clone(), serial.clone());
        tokio::task::spawn_blocking(move || {
            let new = NewCert {
                serial: &new_serial,
                site: &s,
                room: &r,
                not_after_us,
            };
            let now = now_us();
            store.renew_certificate(&old, old_end, &new, now, grace)?;
            let mut row = AuditRow::cloud(
                now,
                &format!("appliance {s}/{r}"),
                "renew certificate",
                &format!("certificate {new_serial} replaces {old}"),
                "",
            );
            row.site = s;
            row.room = r;
            store.audit(&row)
        })
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?
        .map_err(ServeError::from_store)?;
        tracing::info!(%site, %room, %serial, "appliance certificate renewed");
        Ok(Message::Certificate {
            site,
            room,
            chain_pem: chain,
        })
    }

    /// Every few seconds: certificates superseded by a renewal whose grace period is over are
    /// marked revoked and, when this instance holds the CA, added to its CRL (which the
    /// endpoint reloads). Runs until the process ends.
    pub async fn sweep_certificates(self: Arc<Self>, every: std::time::Duration) {
        loop {
            tokio::time::sleep(every).await;
            let store = self.store.clone();
            let issuer = self.fleet.issuer.clone();
            let result = tokio::task::spawn_blocking(move || {
                let serials = store.revoke_superseded(now_us())?;
                if let Some(issuer) = issuer {
                    for serial in &serials {
                        let parsed = serial.parse().map_err(|e: crate::pki::PkiError| {
                            StoreError::Invalid(e.to_string())
                        })?;
                        issuer
                            .ca()
                            .revoke(&parsed)
                            .map_err(|e| StoreError::Invalid(e.to_string()))?;
                    }
                }
                Ok::<_, StoreError>(serials)
            })
            .await;
            match result {
                Ok(Ok(serials)) if !serials.is_empty() => {
                    tracing::info!(?serials, "superseded appliance certificates revoked");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "revoking superseded certificates failed"),
                _ => {}
            }
        }
    }

    /// Every few seconds: writes into each of `sites`' configuration every certificate that
    /// may no longer connect (from the store, on every instance) and every serial of the CRL
    /// file at `crl` (a manual `pki revoke`), and offers the changed configuration to the
    /// site's connected appliances, which then refuse those certificates as peers. Runs until
    /// the process ends.
    pub async fn publish_revocations(
        self: Arc<Self>,
        every: std::time::Duration,
        crl: std::path::PathBuf,
        sites: Vec<String>,
    ) {
        loop {
            tokio::time::sleep(every).await;
            let store = self.store.clone();
            let crl = crl.clone();
            let sites = sites.clone();
            let result = tokio::task::spawn_blocking(move || {
                let now = now_us();
                let refused = store.refused_certificates(now).map_err(|e| e.to_string())?;
                // A CRL that cannot be read (being rewritten, or absent) adds nothing this time.
                let from_crl = crate::pki::read_crl_file(&crl)
                    .and_then(|der| crate::pki::crl_revocations(&der))
                    .unwrap_or_default();
                let mut changed = Vec::new();
                for site in sites {
                    let mut revoked: std::collections::BTreeMap<String, i64> = refused
                        .iter()
                        .filter(|(s, _, _)| *s == site)
                        .map(|(_, serial, at)| (serial.clone(), *at))
                        .collect();
                    for (serial, at) in &from_crl {
                        revoked.entry(serial.to_string()).or_insert(*at);
                    }
                    if revoked.is_empty() {
                        continue;
                    }
                    match crate::staff::add_revoked_certificates(&store, &site, &revoked, now) {
                        Ok(true) => changed.push(site),
                        Ok(false) => {}
                        Err(e) => return Err(format!("site {site}: {e}")),
                    }
                }
                Ok::<_, String>(changed)
            })
            .await;
            match result {
                Ok(Ok(changed)) => {
                    for site in changed {
                        tracing::info!(%site, "revoked certificates sent to the site's appliances");
                        self.changed_elsewhere(DocChange {
                            id: site.clone(),
                            kind: DocKind::SiteConfig,
                            site,
                        })
                        .await;
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "publishing revoked certificates failed"),
                Err(e) => tracing::warn!(error = %e, "publishing revoked certificates failed"),
            }
        }
    }

    /// Offers the site's patient, site-config and (protocol 2) ledger documents: all of them on
    /// connect, then each one another appliance changes.
    async fn push_loop(self: Arc<Self>, conn: Connection, who: ApplianceIdentity, version: u16) {
        let mut rx = self.changes.subscribe();
        let store = self.store.clone();
        let site = who.site.to_string();
        let kinds: &[DocKind] = if version >= wire::REPORT_VERSION {
            &[DocKind::SiteConfig, DocKind::Patient, DocKind::Ledger]
        } else {
            &[DocKind::SiteConfig, DocKind::Patient]
        };
        let initial = tokio::task::spawn_blocking(move || store.site_documents(&site, kinds)).await;
        let initial = match initial {
            Ok(Ok(ids)) => ids,
            _ => Vec::new(),
        };
        let seq = Arc::new(tokio::sync::Mutex::new(SeqCounter::new()));
        for id in initial {
            let store = self.store.clone();
            let lookup = id.clone();
            let kind =
                match tokio::task::spawn_blocking(move || store.document_owner(&lookup)).await {
                    Ok(Ok(Some((kind, _)))) => kind,
                    _ => continue,
                };
            if let Err(e) = self.push(&conn, &id, kind, &who, &seq).await {
                push_failed(&conn, &id, &who, &e);
                return;
            }
        }
        loop {
            match rx.recv().await {
                Ok(c) => {
                    let mine = (who.site.to_string(), who.room.to_string());
                    if c.site != who.site.as_str()
                        || c.from.as_ref() == Some(&mine)
                        || !kinds.contains(&c.kind)
                    {
                        continue;
                    }
                    if let Err(e) = self.push(&conn, &c.doc_id, c.kind, &who, &seq).await {
                        push_failed(&conn, &c.doc_id, &who, &e);
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "push queue overflowed; documents wait for the next connection"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Runs one exchange as initiator for a cloud document.
    async fn push(
        &self,
        conn: &Connection,
        doc_id: &str,
        kind: DocKind,
        who: &ApplianceIdentity,
        seq: &tokio::sync::Mutex<SeqCounter>,
    ) -> Result<(), ServeError> {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| ServeError::Connection(e.to_string()))?;
        let slot = self.cache.slot(doc_id);
        let mut exchange =
            DocSync::new(Role::Initiator, doc_id, kind, automerge::sync::State::new());
        let mut decoder = FrameDecoder::new();
        let mut incoming = None;
        loop {
            // The appliance answers with its own changes when it has any: they are checked
            // and committed exactly as on its own streams.
            let out = self
                .step(&slot, &mut exchange, incoming.take(), who, seq)
                .await?;
            let done = !out.iter().any(|m| matches!(m, Message::Sync { .. }));
            for m in &out {
                write_message(&mut send, m, &self.metrics).await?;
            }
            if done {
                break;
            }
            let reply = read_timed(&mut recv, &mut decoder, &self.metrics).await?;
            incoming = Some(reply.ok_or_else(|| {
                ServeError::Connection("appliance closed the stream mid-exchange".into())
            })?);
        }
        let _ = send.finish();
        Ok(())
    }
}

/// The first bytes of every Automerge storage chunk.
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// The chunk type of a whole document (`save()`), after the magic bytes and a 4-byte checksum.
const AUTOMERGE_DOCUMENT_CHUNK: u8 = 0;

/// The bytes of a Sync message that carries exactly one whole Automerge document (as
/// Automerge sends a peer that lacks most of it) and nothing else. Applied to an empty
/// document, they are loaded as they are (`load_incremental` into an empty document is a
/// load), so they load again as exactly that document: a snapshot the store need not make.
/// Anything else (changes, several chunks, bytes after the chunk) is `None`.
fn whole_document(message: &Message) -> Option<Vec<u8>> {
    let Message::Sync { message, .. } = message else {
        return None;
    };
    if message.is_empty() {
        return None;
    }
    let decoded = automerge::sync::Message::decode(message).ok()?;
    let mut chunks = decoded.changes.iter();
    let (Some(chunk), None) = (chunks.next(), chunks.next()) else {
        return None;
    };
    let header = chunk.get(..AUTOMERGE_MAGIC.len() + 5)?;
    if header[..4] != AUTOMERGE_MAGIC || header[8] != AUTOMERGE_DOCUMENT_CHUNK {
        return None;
    }
    // The chunk's length (unsigned LEB128) must account for every byte that follows it.
    let mut len: u64 = 0;
    let mut pos = 9;
    for shift in (0..64).step_by(7) {
        let byte = *chunk.get(pos)?;
        pos += 1;
        len |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            let rest = u64::try_from(chunk.len() - pos).ok()?;
            return (len == rest).then(|| chunk.to_vec());
        }
    }
    None
}

/// A refusal of the scope rules, as sent to the appliance.
fn refused(e: ScopeError) -> ServeError {
    ServeError::Refused {
        code: e.reject_code(),
        reason: e.to_string(),
    }
}

/// A push ended early. A lost connection is routine; a change the appliance sent back that
/// the scope rules refuse ends the connection with the reason, as on the appliance's own
/// streams.
fn push_failed(conn: &Connection, doc_id: &str, who: &ApplianceIdentity, e: &ServeError) {
    if let ServeError::Refused { .. } = e {
        tracing::warn!(site = %who.site, room = %who.room, doc = %doc_id, error = %e, "change in answer to a push refused");
        let _ = close_with(conn, e);
    } else {
        tracing::debug!(doc = %doc_id, error = %e, "push failed");
    }
}

/// The ALPN protocol the connection agreed on.
fn alpn(conn: &Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// The appliance's identity, serial and expiry from its verified certificate.
fn peer_certificate(conn: &Connection) -> Result<Peer, String> {
    let identity = conn.peer_identity().ok_or("no client certificate")?;
    let certs = identity
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .map_err(|_| "unexpected peer identity type".to_owned())?;
    let leaf = certs.first().ok_or("empty client certificate chain")?;
    Ok(Peer {
        identity: appliance_identity(leaf.as_ref()).map_err(|e| e.to_string())?,
        serial: cert_serial(leaf.as_ref())
            .map_err(|e| e.to_string())?
            .to_string(),
        not_after_us: cert_not_after_us(leaf.as_ref()).map_err(|e| e.to_string())?,
    })
}

/// Reads the next message of a stream; `None` at a clean end of stream.
pub async fn read_message(
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
    metrics: &Metrics,
) -> Result<Option<Message>, ServeError> {
    loop {
        if let Some(m) = decoder.next_message()? {
            metrics.frame_received();
            return Ok(Some(m));
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => {
                metrics.bytes_received(chunk.bytes.len() as u64);
                decoder.push(&chunk.bytes);
            }
            Ok(None) => {
                decoder.finish()?;
                return Ok(None);
            }
            Err(e) => return Err(ServeError::Connection(e.to_string())),
        }
    }
}

/// [`read_message`] with [`READ_TIMEOUT`]: a peer that stops talking mid-exchange loses
/// its stream instead of holding it forever.
async fn read_timed(
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
    metrics: &Metrics,
) -> Result<Option<Message>, ServeError> {
    tokio::time::timeout(READ_TIMEOUT, read_message(recv, decoder, metrics))
        .await
        .map_err(|_| ServeError::Connection(format!("no frame for {} s", READ_TIMEOUT.as_secs())))?
}

/// Writes one message as a frame.
pub async fn write_message(
    send: &mut SendStream,
    message: &Message,
    metrics: &Metrics,
) -> Result<(), ServeError> {
    let bytes = encode_message(message)?;
    send.write_all(&bytes)
        .await
        .map_err(|e| ServeError::Connection(e.to_string()))?;
    metrics.frame_sent();
    metrics.bytes_sent(bytes.len() as u64);
    Ok(())
}

/// Sends the reason on a fresh stream (best effort) and closes the connection with it.
fn close_with(conn: &Connection, error: &ServeError) -> Result<(), ServeError> {
    let reject = error.reject();
    let (code, reason) = match &reject {
        Message::Reject { code, reason } => (*code, reason.clone()),
        _ => (RejectCode::Internal, error.to_string()),
    };
    conn.close(
        quinn::VarInt::from_u32(u32::from(code.code())),
        format!("{}: {reason}", code.as_str()).as_bytes(),
    );
    Ok(())
}

/// Binds the sync endpoint.
pub fn bind(addr: SocketAddr, config: quinn::ServerConfig) -> std::io::Result<Endpoint> {
    Endpoint::server(config, addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_queue_holds_push_queue_notices_and_a_slow_reader_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CloudStore::open(&dir.path().join("cloud.db")).unwrap());
        let server = SyncServer::new(
            store,
            Arc::new(Metrics::default()),
            "test",
            FleetSettings::default(),
        );
        let mut rx = server.changes.subscribe();
        let extra = 5;
        for i in 0..PUSH_QUEUE + extra {
            let _ = server.changes.send(Changed {
                site: "austin".into(),
                doc_id: format!("doc-{i}"),
                kind: DocKind::Patient,
                from: None,
            });
        }
        // The oldest notices are gone (those documents wait for the next connection); memory
        // stays at PUSH_QUEUE notices however far the reader falls behind.
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, extra as u64),
            other => panic!("expected a lag of {extra}, got {other:?}"),
        }
        let mut left = 0;
        while let Ok(c) = rx.try_recv() {
            if left == 0 {
                assert_eq!(c.doc_id, format!("doc-{extra}"));
            }
            left += 1;
        }
        assert_eq!(left, PUSH_QUEUE);
    }

    #[test]
    fn the_document_cache_holds_at_most_its_capacity_and_never_evicts_a_slot_in_use() {
        let cache = DocCache::default();
        let held = cache.slot("in-use");
        for i in 0..DOC_CACHE_CAPACITY * 2 {
            drop(cache.slot(&format!("doc-{i}")));
        }
        let slots = cache.slots.lock().unwrap();
        assert_eq!(slots.map.len(), DOC_CACHE_CAPACITY);
        let kept = slots
            .map
            .get("in-use")
            .expect("a held slot is never evicted");
        assert!(Arc::ptr_eq(&kept.0, &held));
        // The most recent documents are the ones kept.
        assert!(
            slots
                .map
                .contains_key(&format!("doc-{}", DOC_CACHE_CAPACITY * 2 - 1))
        );
        assert!(!slots.map.contains_key("doc-0"));
    }
}
