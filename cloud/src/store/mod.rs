//! The cloud's storage: every site's Automerge documents and the projections derived from them,
//! in one SQLite file (the default) or one PostgreSQL database shared by several cloud
//! instances, behind one type, [`CloudStore`].
//!
//! Documents are stored as a snapshot (`doc.save()`) plus the Automerge changes since, one row
//! per change keyed by (document, change hash) and inserted only if absent, folded into a new
//! snapshot once [`COMPACT_AFTER_CHANGES`] have gathered. Projections (sessions, per-channel
//! vitals statistics, advisories, events, patients, the attention list) are tables derived
//! from the documents: updated in the same transaction as the document they come from, and
//! rebuilt from scratch by [`CloudStore::reindex`]. The appliance registry (which room is
//! connected, how far behind) and the people tables (users, browser sessions, API tokens, the
//! audit log) are not derived from documents and survive a reindex.
//!
//! This module does not speak the sync protocol, decide who may write what (the sync server
//! does) or serve HTTP (the API does); it stores what it is given and answers queries.
//! [`CloudStore::commit_document`] returns once the transaction is durable (SQLite in WAL mode
//! with `synchronous=FULL`; PostgreSQL's commit), so heads advertised after it are durable.

mod copy;
mod db;
mod fleet;
mod ledger;
mod projection;
mod reads;
mod report;
mod schema;
mod users;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use automerge::{AutoCommit, ChangeHash};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use vigil_shared::wire::DocKind;

use crate::auth::{Scope, ScopeSites};

pub use copy::CopyReport;
pub use fleet::{
    CertRow, Connected, DEFAULT_RENEWAL_GRACE_US, EnrolCodeRow, EnrolRefusal, NewCert,
};
pub use ledger::{LedgerRow, kind_name as ledger_kind_name};
pub use reads::{
    ApplianceRow, AttentionRow, ChannelSummary, MAX_ATTENTION, MAX_SESSION_PAGE,
    MAX_VITALS_PER_PAGE, SessionFilter, SessionPage, SessionRow, SessionSummary, VitalsPage,
};
pub use report::{
    AdvisoryCount, MAX_ECG_WINDOW_SAMPLES, OutcomeSite, PatientOutcomeInput, RoomActivity,
    SessionChart, SessionReportRow, SiteSessionCount,
};
pub use users::{
    ApiTokenRow, AuditRow, AuditSource, LEGACY_TOKEN_DAYS, LimitRow, MAX_AUDIT_PAGE, UserRow,
    WebSessionRow,
};

use db::{Arg, Dialect, Lite, PgConn, PgTx, Sql, ToArg, args};
use projection::Projection;
use schema::{DB_VERSION, migrate_postgres, migrate_sqlite};

/// Changes kept per document beside its snapshot before they are folded into a new one.
/// Loading replays every change, so this bounds load time; compacting rewrites the whole
/// document (about half a megabyte for a session with ECG), so a small number would rewrite it
/// every few seconds. An appliance's sync round brings a handful of changes per session.
pub const COMPACT_AFTER_CHANGES: i64 = 256;

/// How long a connection waits for a lock before giving up. Write transactions are short
/// (milliseconds); five seconds means something is wrong.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read-only connections kept open between reads. The API opens more under load and closes
/// the extra ones afterwards; eight covers the usual handful of dashboards without holding
/// file handles for nothing.
const MAX_IDLE_READERS: usize = 8;

/// Failed documents listed by name in a [`ReindexReport`]; the rest are only counted, so a
/// database full of broken documents doesn't produce a report of megabytes.
const MAX_REPORTED_FAILURES: usize = 100;

/// Idle PostgreSQL connections kept per instance; more are opened under load.
const MAX_IDLE_PG: usize = 16;

/// How long connecting to PostgreSQL may take before the attempt is an error.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors from the cloud's storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(String),
    /// The database cannot be reached (PostgreSQL down, the network between, a wrong
    /// password or a missing database): nothing was written, the same call may work later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The disk (or the database's size limit) is full.
    #[error("database is full: {0}")]
    Full(String),
    /// A stored document cannot be loaded.
    #[error("stored document {id} is unreadable: {reason}")]
    CorruptDocument {
        /// The document id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A document offered for commit is not a well-formed Vigil document of its kind and
    /// site; nothing was written. The sync server answers `schema_invalid`.
    #[error("document {id} is not valid: {reason}")]
    InvalidDocument {
        /// The document id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The document is registered to another site or as another kind; nothing was written.
    /// The sync server answers `forbidden`.
    #[error("document {id} is registered as {kind} of site {site:?}")]
    OwnerMismatch {
        /// The document id.
        id: String,
        /// The registered kind.
        kind: DocKind,
        /// The registered site.
        site: String,
    },
    /// The row to create exists already (a user name, for example); nothing was written.
    #[error("{0}")]
    Conflict(String),
    /// A step the caller passed in refused (a certificate request that does not verify);
    /// nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// The database was written by a newer version of vigil-cloud.
    #[error(
        "database schema version {0} is newer than this vigil-cloud understands ({DB_VERSION})"
    )]
    TooNew(i64),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        use postgres::error::SqlState;
        let Some(db) = e.as_db_error() else {
            // No answer from the server: the connection failed or was lost.
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason = format!("{reason}: {s}");
                source = s.source();
            }
            return StoreError::Unavailable(reason);
        };
        let reason = format!("{} ({})", db.message(), db.code().code());
        match *db.code() {
            SqlState::DISK_FULL => StoreError::Full(reason),
            SqlState::INVALID_PASSWORD
            | SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            | SqlState::INVALID_CATALOG_NAME
            | SqlState::ADMIN_SHUTDOWN
            | SqlState::CRASH_SHUTDOWN
            | SqlState::CANNOT_CONNECT_NOW
            | SqlState::TOO_MANY_CONNECTIONS => StoreError::Unavailable(reason),
            _ => StoreError::Database(reason),
        }
    }
}

impl StoreError {
    /// Whether this is a full disk (an operational condition, not a bug).
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full(_))
    }

    /// Whether the database could not be reached (an operational condition, not a bug).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A document as stored, with the registry's view of whom it belongs to.
#[derive(Debug)]
pub struct StoredDoc {
    /// The registered kind.
    pub kind: DocKind,
    /// The registered site.
    pub site: String,
    /// The document: snapshot plus every stored change set.
    pub doc: AutoCommit,
}

/// What [`CloudStore::reindex`] rebuilt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReindexReport {
    /// Documents read.
    pub documents: u64,
    /// Session documents projected.
    pub sessions: u64,
    /// Patient documents projected.
    pub patients: u64,
    /// Site config documents seen (they have no projection yet).
    pub site_configs: u64,
    /// Audit documents of appliances projected.
    pub audit_docs: u64,
    /// Site ledgers projected.
    pub ledgers: u64,
    /// Entries of theirs newly written to the audit log (entries already there are kept as
    /// they are, so a second reindex adds none).
    pub audit_entries_added: u64,
    /// Vitals chunks counted over all sessions.
    pub chunks: u64,
    /// Of those, chunks that could not be decoded.
    pub corrupt_chunks: u64,
    /// Documents that could not be projected (loaded but invalid, or unreadable).
    pub failed: u64,
    /// The first of them, `id: reason`.
    pub failures: Vec<String>,
}

impl ReindexReport {
    fn fail(&mut self, id: &str, reason: String) {
        tracing::warn!(doc = %id, %reason, "cannot project document");
        self.failed += 1;
        if self.failures.len() < MAX_REPORTED_FAILURES {
            self.failures.push(format!("{id}: {reason}"));
        }
    }
}

/// The cloud's storage: documents, the document → site registry, projections and appliance
/// presence, in one SQLite file.
///
/// **The storage interface.** Everything the sync server, the API and the CLI need goes
/// through these methods, so that a PostgreSQL backend can implement the same set:
/// - documents and registry: [`open`](Self::open), [`load_document`](Self::load_document),
///   [`document_owner`](Self::document_owner), [`site_documents`](Self::site_documents),
///   [`commit_document`](Self::commit_document), [`document_bytes`](Self::document_bytes);
/// - appliance presence: [`appliance_connected`](Self::appliance_connected),
///   [`appliance_seen`](Self::appliance_seen), [`appliance_synced`](Self::appliance_synced),
///   [`appliance_disconnected`](Self::appliance_disconnected);
/// - reads of patient data, each taking the reader's [`Scope`] (a document of a site out of
///   scope reads as unknown; lists leave such sites out in SQL): [`sessions`](Self::sessions),
///   [`session_row`](Self::session_row), [`session_summary`](Self::session_summary),
///   [`vitals`](Self::vitals), [`patient`](Self::patient),
///   [`document_bytes`](Self::document_bytes), [`room_activity`](Self::room_activity),
///   [`session_chart`](Self::session_chart), [`ecg_first_us`](Self::ecg_first_us),
///   [`session_report_rows`](Self::session_report_rows),
///   [`site_session_counts`](Self::site_session_counts),
///   [`advisory_counts`](Self::advisory_counts), [`outcome_inputs`](Self::outcome_inputs);
///   and appliance presence (no patient data): [`appliances`](Self::appliances);
/// - people: [`create_user`](Self::create_user), [`set_password`](Self::set_password),
///   [`set_disabled`](Self::set_disabled), [`users`](Self::users), browser sessions
///   ([`create_web_session`](Self::create_web_session) …), API tokens
///   ([`create_api_token`](Self::create_api_token), [`api_token`](Self::api_token),
///   [`api_tokens`](Self::api_tokens), [`revoke_api_token`](Self::revoke_api_token))
///   and the audit log ([`audit`](Self::audit), [`audit_log`](Self::audit_log));
/// - maintenance: [`reindex`](Self::reindex).
///
/// [`path`](Self::path) is the SQLite file (`None` on PostgreSQL), for tools and tests.
///
/// **Two engines.** SQLite: writes go through one connection behind a mutex (callers are on
/// blocking threads); reads use their own read-only connections, so API reads never wait for
/// ingest. PostgreSQL: a pool of connections, each call one transaction; several cloud
/// instances share the database, and commits of one document are serialized across all of
/// them by a transaction-scoped advisory lock on its id.
#[derive(Debug)]
pub struct CloudStore {
    engine: Engine,
}

#[derive(Debug)]
enum Engine {
    Sqlite(SqliteEngine),
    Postgres(PgEngine),
}

#[derive(Debug)]
struct SqliteEngine {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

struct PgEngine {
    config: postgres::Config,
    /// `host:port/database`, for messages (never the password).
    name: String,
    /// TLS with the configured CA; `None` for a server on this machine.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// This handle's tag in change notifications, so it can tell its own from others'.
    origin: String,
    idle: Mutex<Vec<PgConn>>,
}

impl CloudStore {
    /// Opens (creating if needed) the SQLite database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<CloudStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate_sqlite(&conn)?;
        Ok(CloudStore {
            engine: Engine::Sqlite(SqliteEngine {
                path: path.to_owned(),
                writer: Mutex::new(conn),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Connects to a PostgreSQL database (`postgres://user:password@host:port/database`)
    /// and brings its schema up to date; several instances may do so at once. The error
    /// names what failed: the server unreachable, the password refused, the database missing.
    ///
    /// With `ca` (the certificates the server's certificate chains to) the connection is TLS,
    /// required, with the server's name checked. Without it only a server on this machine
    /// (a loopback address or a Unix socket) is accepted: patient data never crosses a
    /// network unencrypted.
    pub fn open_postgres(
        url: &str,
        ca: Option<&[CertificateDer<'static>]>,
    ) -> Result<CloudStore, StoreError> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            StoreError::Unavailable(format!("the PostgreSQL address is not valid: {e}"))
        })?;
        let tls = match ca {
            Some(ca) => {
                config.ssl_mode(postgres::config::SslMode::Require);
                Some(pg_tls(ca)?)
            }
            None if pg_is_local(&config) => None,
            None => {
                return Err(StoreError::Unavailable(format!(
                    "PostgreSQL at {} is not on this machine, so the connection must be TLS: \
                     give the CA of the server's certificate ([store] ca_file)",
                    pg_name(&config)
                )));
            }
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(PG_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("vigil-cloud");
        }
        let name = pg_name(&config);
        let engine = PgEngine {
            config,
            name,
            tls,
            origin: format!("{:016x}", rand_u64()),
            idle: Mutex::new(Vec::new()),
        };
        let mut conn = engine.connect()?;
        migrate_postgres(&mut conn.client).map_err(|e| match e {
            StoreError::Unavailable(r) => {
                StoreError::Unavailable(format!("PostgreSQL at {}: {r}", engine.name))
            }
            e => e,
        })?;
        lock(&engine.idle).push(conn);
        Ok(CloudStore {
            engine: Engine::Postgres(engine),
        })
    }

    /// The SQLite file; `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.engine {
            Engine::Sqlite(e) => Some(&e.path),
            Engine::Postgres(_) => None,
        }
    }

    /// Which engine, and where: the file or `host:port/database`.
    pub fn describe(&self) -> String {
        match &self.engine {
            Engine::Sqlite(e) => format!("sqlite {}", e.path.display()),
            Engine::Postgres(e) => format!("postgres {}", e.name),
        }
    }

    /// Runs `f` in a read transaction (one snapshot throughout) on a pooled connection.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.engine {
            Engine::Sqlite(e) => {
                let pooled = lock(&e.readers).pop();
                let mut conn = match pooled {
                    Some(c) => c,
                    None => e.reader()?,
                };
                let result = match conn.transaction() {
                    Ok(tx) => f(&mut Lite(&tx)),
                    Err(err) => Err(err.into()),
                };
                // A connection is returned only when it is idle: a failed read may have left
                // a statement or transaction behind, so it is closed instead.
                if result.is_ok() && conn.is_autocommit() {
                    let mut idle = lock(&e.readers);
                    if idle.len() < MAX_IDLE_READERS {
                        idle.push(conn);
                    }
                }
                result
            }
            Engine::Postgres(e) => e.run(true, f),
        }
    }

    /// Runs `f` in a write transaction, committed when it returns `Ok`. On SQLite it holds
    /// the one writer; on PostgreSQL concurrent writers run side by side.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.engine {
            Engine::Sqlite(e) => {
                let mut conn = lock(&e.writer);
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = f(&mut Lite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Engine::Postgres(e) => e.run(false, f),
        }
    }

    /// Loads a document: its snapshot with every stored change applied. `None` when the id
    /// is unknown.
    pub fn load_document(&self, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        self.read(|db| load_stored(db, id))
    }

    /// The registry: which kind and site a document belongs to, if it is known.
    pub fn document_owner(&self, id: &str) -> Result<Option<(DocKind, String)>, StoreError> {
        self.read(|db| {
            let row = db.row("SELECT kind, site FROM documents WHERE id = ?1", args![id])?;
            row.map(|r| Ok((parse_kind(id, &r.get::<String>(0)?)?, r.get(1)?)))
                .transpose()
        })
    }

    /// Ids of a site's documents of the given kinds, in id order.
    pub fn site_documents(&self, site: &str, kinds: &[DocKind]) -> Result<Vec<String>, StoreError> {
        self.read(|db| {
            let rows = db.rows(
                "SELECT id, kind FROM documents WHERE site = ?1 ORDER BY id",
                args![site],
            )?;
            let mut ids = Vec::new();
            for row in rows {
                let (id, kind): (String, String) = (row.get(0)?, row.get(1)?);
                if DocKind::from_name(&kind).is_some_and(|k| kinds.contains(&k)) {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
    }

    /// The whole document as `doc.save()` bytes, loadable by any Automerge implementation;
    /// `None` when the id is unknown, is not of `kind` or belongs to a site out of `scope`.
    /// Served straight from the snapshot when no changes are pending.
    pub fn document_bytes(
        &self,
        scope: &Scope,
        id: &str,
        kind: DocKind,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|db| {
            let Some(row) = db.row(
                "SELECT kind, site, snapshot FROM documents WHERE id = ?1",
                args![id],
            )?
            else {
                return Ok(None);
            };
            let (stored_kind, site): (String, String) = (row.get(0)?, row.get(1)?);
            if stored_kind != kind.as_str() || !scope.allows(&site) {
                return Ok(None);
            }
            let pending: i64 = db
                .one(
                    "SELECT count(*) FROM doc_changes WHERE doc_id = ?1",
                    args![id],
                )?
                .get(0)?;
            if pending == 0 {
                return Ok(Some(row.get(2)?));
            }
            Ok(load_stored(db, id)?.map(|mut s| s.doc.save()))
        })
    }

    /// Persists a new document, or the new changes of a known one, and updates its
    /// projections, in one transaction; returns once it is committed (durable).
    ///
    /// `doc` is the caller's whole, current document. The store persists every change of
    /// `doc` past the heads it has stored, each keyed by (document, change hash) and inserted
    /// only if absent, which stays complete whatever the caller's bookkeeping (a failed
    /// earlier commit, another connection or cloud instance committing the same document in
    /// between). So:
    /// - committing a document whose heads are already stored is a no-op (idempotent);
    /// - if the database holds changes `doc` lacks, they are merged **into `doc`** first, so the
    ///   projections and `doc.get_heads()` after the call cover everything durable;
    /// - after `Ok`, every change in `doc.get_heads()` is durable: advertise those heads.
    ///
    /// Commits of one document are serialized (SQLite's one writer; PostgreSQL's advisory
    /// lock on the document's id), so two instances committing the same document at once
    /// end with one document holding each change once.
    ///
    /// Refused without writing anything: a document registered to another kind or site
    /// ([`StoreError::OwnerMismatch`]); one whose root `kind` or `site` differ from the
    /// arguments, or whose typed parts don't read ([`StoreError::InvalidDocument`]).
    pub fn commit_document(
        &self,
        id: &str,
        kind: DocKind,
        site: &str,
        doc: &mut AutoCommit,
        now_us: i64,
    ) -> Result<(), StoreError> {
        self.commit_document_saved(id, kind, site, doc, None, now_us)
    }

    /// [`commit_document`](Self::commit_document) for a document that may have arrived whole:
    /// `saved`, when given, is bytes that [`AutoCommit::load`] turns into exactly `doc` (an
    /// appliance's `save()` that the sync server loaded into an empty document and nothing
    /// else). If the document is new to the store, they are its snapshot, instead of
    /// compressing the whole document again with `doc.save()`, which was a fifth of the cloud's
    /// work per new session; otherwise they are ignored.
    pub fn commit_document_saved(
        &self,
        id: &str,
        kind: DocKind,
        site: &str,
        doc: &mut AutoCommit,
        saved: Option<Vec<u8>>,
        now_us: i64,
    ) -> Result<(), StoreError> {
        let heads = sorted_heads(doc);
        // Phase 1, a read: what is stored already.
        let (prior, prior_channels) = self.read(|db| {
            let prior = document_row(db, id)?;
            if let Some(p) = &prior {
                check_owner(id, p, kind, site)?;
            }
            let channels = match (&prior, kind) {
                (Some(_), DocKind::Session) => projection::read_channels(db, id)?,
                _ => BTreeMap::new(),
            };
            Ok((prior, channels))
        })?;
        if prior.as_ref().is_some_and(|p| p.heads == heads) {
            return Ok(());
        }
        check_header(id, kind, site, doc)?;
        tracing::trace!(doc = %id, "committing");

        // Phase 2, outside any transaction: the projection, when `doc` holds everything
        // stored (decoding a session's new chunks is the expensive part; it runs in parallel
        // for different documents).
        let mut proj = match &prior {
            Some(p) if !holds_all(doc, &p.heads) => None,
            _ => Some(projection::project(id, kind, doc, &prior_channels)?),
        };
        // A new document's snapshot, likewise (used only if it is still new under the lock).
        let mut new_snapshot = prior.is_none().then(|| saved.unwrap_or_else(|| doc.save()));
        // The caller's promise, checked where it costs nothing in production: the snapshot
        // loads as the document whose heads are committed.
        debug_assert!(new_snapshot.as_ref().is_none_or(|bytes| {
            AutoCommit::load(bytes).is_ok_and(|mut d| sorted_heads(&mut d) == heads)
        }));

        // Phase 3, under the document's lock: re-check, write, commit.
        self.write(|db| {
            lock_document(db, id)?;
            let row = document_row(db, id)?;
            let mut heads = heads;
            if let Some(r) = &row {
                check_owner(id, r, kind, site)?;
                if !holds_all(doc, &r.heads) {
                    // Another connection committed changes this copy lacks: fold them in so
                    // the projections, and the heads the caller advertises, cover what is
                    // stored.
                    if let Some(mut stored) = load_stored(db, id)? {
                        doc.merge(&mut stored.doc)
                            .map_err(|e| StoreError::CorruptDocument {
                                id: id.to_owned(),
                                reason: e.to_string(),
                            })?;
                    }
                    heads = sorted_heads(doc);
                    proj = None;
                }
                if r.heads == heads {
                    return Ok(());
                }
            }
            let channels_now = match (&row, kind) {
                (Some(_), DocKind::Session) => projection::read_channels(db, id)?,
                _ => BTreeMap::new(),
            };
            if row.as_ref().map(|r| &r.heads) != prior.as_ref().map(|p| &p.heads)
                || channels_now != prior_channels
            {
                proj = None;
            }
            let proj = match proj {
                Some(p) => p,
                None => projection::project(id, kind, doc, &channels_now)?,
            };
            let heads_blob = heads_to_blob(&heads);
            match &row {
                None => {
                    let snapshot = new_snapshot.take().unwrap_or_else(|| doc.save());
                    db.exec(
                        "INSERT INTO documents (id, kind, site, snapshot, heads, created_us,
                                                updated_us)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                        args![id, kind.as_str(), site, snapshot, heads_blob, now_us],
                    )?;
                }
                Some(r) => {
                    let stored: i64 = db
                        .one(
                            "SELECT count(*) FROM doc_changes WHERE doc_id = ?1",
                            args![id],
                        )?
                        .get(0)?;
                    let mut changes = doc.get_changes(&r.heads);
                    if stored + changes.len() as i64 >= COMPACT_AFTER_CHANGES {
                        let snapshot = doc.save();
                        db.exec(
                            "UPDATE documents SET snapshot = ?2, heads = ?3, updated_us = ?4
                             WHERE id = ?1",
                            args![id, snapshot, heads_blob, now_us],
                        )?;
                        db.exec("DELETE FROM doc_changes WHERE doc_id = ?1", args![id])?;
                    } else {
                        for change in &mut changes {
                            let hash = change.hash();
                            db.exec(
                                "INSERT INTO doc_changes (doc_id, hash, bytes) VALUES (?1, ?2, ?3)
                                 ON CONFLICT DO NOTHING",
                                args![id, hash.0.as_slice(), change.bytes().as_ref()],
                            )?;
                        }
                        db.exec(
                            "UPDATE documents SET heads = ?2, updated_us = ?3 WHERE id = ?1",
                            args![id, heads_blob, now_us],
                        )?;
                    }
                }
            }
            projection::write(db, id, site, &proj, now_us)?;
            // Other instances on the database push patients and site configurations to their
            // appliances too: tell them (delivered when this transaction commits).
            if let Engine::Postgres(pg) = &self.engine
                && matches!(
                    kind,
                    DocKind::Patient | DocKind::SiteConfig | DocKind::Ledger
                )
            {
                let payload = format!("{} {} {site} {id}", pg.origin, kind.as_str());
                db.exec("SELECT pg_notify(?1, ?2)", args![NOTIFY_CHANNEL, payload])?;
            }
            Ok(())
        })
    }

    /// A connected appliance is still there (a heartbeat). The API shows an appliance online
    /// only while it was seen within [`ONLINE_WINDOW_US`](crate::sites::ONLINE_WINDOW_US), so
    /// the sync server calls this (or [`appliance_synced`](Self::appliance_synced)) more often
    /// than that for every connection, idle or not.
    pub fn appliance_seen(&self, site: &str, room: &str, now_us: i64) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "UPDATE appliances SET last_seen_us = ?3 WHERE site = ?1 AND room = ?2",
                args![site, room, now_us],
            )
        })?;
        Ok(())
    }

    /// An appliance's connection ended.
    pub fn appliance_disconnected(
        &self,
        site: &str,
        room: &str,
        now_us: i64,
    ) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "UPDATE appliances SET connected = 0, last_seen_us = ?3
                 WHERE site = ?1 AND room = ?2",
                args![site, room, now_us],
            )
        })?;
        Ok(())
    }

    /// An appliance finished a sync round; what it still has to send, as it reported.
    pub fn appliance_synced(
        &self,
        site: &str,
        room: &str,
        now_us: i64,
        backlog_docs: u64,
        backlog_bytes: u64,
    ) -> Result<(), StoreError> {
        let docs = i64::try_from(backlog_docs).unwrap_or(i64::MAX);
        let bytes = i64::try_from(backlog_bytes).unwrap_or(i64::MAX);
        self.write(|db| {
            db.exec(
                "INSERT INTO appliances (site, room, connected, software, first_seen_us,
                                         last_seen_us, last_sync_us, backlog_docs, backlog_bytes)
                 VALUES (?1, ?2, 1, '', ?3, ?3, ?3, ?4, ?5)
                 ON CONFLICT(site, room) DO UPDATE SET
                     last_seen_us = excluded.last_seen_us, last_sync_us = excluded.last_sync_us,
                     backlog_docs = excluded.backlog_docs, backlog_bytes = excluded.backlog_bytes",
                args![site, room, now_us, docs, bytes],
            )
        })?;
        Ok(())
    }

    /// Rebuilds every projection from the documents, in one transaction (readers see the old
    /// projections until it commits). A document that cannot be projected is counted in the
    /// report and left without projection rows; the others are rebuilt.
    pub fn reindex(&self) -> Result<ReindexReport, StoreError> {
        self.write(|db| {
            projection::clear_all(db)?;
            let ids = db.rows("SELECT id, updated_us FROM documents ORDER BY id", &[])?;
            let mut report = ReindexReport::default();
            for row in ids {
                let (id, updated_us): (String, i64) = (row.get(0)?, row.get(1)?);
                report.documents += 1;
                let stored = match load_stored(db, &id) {
                    Ok(Some(s)) => s,
                    Ok(None) => continue,
                    Err(e) => {
                        report.fail(&id, e.to_string());
                        continue;
                    }
                };
                let (kind, site) = (stored.kind, stored.site.as_str());
                let projected = check_header(&id, kind, site, &stored.doc)
                    .and_then(|()| projection::project(&id, kind, &stored.doc, &BTreeMap::new()));
                let proj = match projected {
                    Ok(p) => p,
                    Err(e) => {
                        report.fail(&id, e.to_string());
                        continue;
                    }
                };
                match &proj {
                    Projection::Session(s) => {
                        report.sessions += 1;
                        for c in s.channels.values() {
                            report.chunks += c.chunks;
                            report.corrupt_chunks += c.corrupt_chunks;
                        }
                    }
                    Projection::Patient(_) => report.patients += 1,
                    Projection::SiteConfig => report.site_configs += 1,
                    Projection::Audit(_) => report.audit_docs += 1,
                    Projection::Ledger(_) => report.ledgers += 1,
                }
                let added = projection::write(db, &id, site, &proj, updated_us)?;
                report.audit_entries_added += added as u64;
            }
            Ok(report)
        })
    }
}

impl SqliteEngine {
    /// A new read-only connection to the file.
    fn reader(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }
}

impl Drop for PgEngine {
    fn drop(&mut self) {
        // A `postgres::Client` runs on a small runtime of its own, which tokio refuses to drop
        // on a thread that drives async tasks (where the last handle on a store may go): the
        // idle connections are closed on a thread of their own.
        let idle = std::mem::take(&mut *lock(&self.idle));
        if !idle.is_empty() {
            let closing = std::thread::Builder::new()
                .name("vigil-pg-close".into())
                .spawn(move || drop(idle));
            if let Err(e) = closing {
                tracing::warn!(error = %e, "cannot close PostgreSQL connections");
            }
        }
    }
}

impl std::fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEngine")
            .field("name", &self.name)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl PgEngine {
    fn connect(&self) -> Result<PgConn, StoreError> {
        let client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        };
        let client = client.map_err(|e| {
            let e = StoreError::from(e);
            let reason = match &e {
                StoreError::Unavailable(r) | StoreError::Database(r) => r.clone(),
                other => other.to_string(),
            };
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {reason}",
                self.name
            ))
        })?;
        Ok(PgConn::new(client))
    }

    /// Runs `f` in a transaction on a pooled connection (a new one if none is idle); a
    /// connection goes back to the pool only if it is still open.
    fn run<T>(
        &self,
        read_only: bool,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = lock(&self.idle).pop();
        let mut conn = match pooled {
            Some(c) if !c.client.is_closed() => c,
            _ => self.connect()?,
        };
        let result = PgTx::begin(&mut conn, read_only).and_then(|mut tx| {
            let out = f(&mut tx)?;
            tx.tx.commit()?;
            Ok(out)
        });
        if !conn.client.is_closed() {
            let mut idle = lock(&self.idle);
            if idle.len() < MAX_IDLE_PG {
                idle.push(conn);
            }
        }
        result
    }
}

/// The PostgreSQL notification channel of committed patients and site configurations:
/// `ORIGIN KIND SITE ID`.
const NOTIFY_CHANNEL: &str = "vigil_docs";

/// How long the change watcher waits before connecting again after losing its connection.
const WATCH_RETRY: Duration = Duration::from_secs(2);

/// After the watcher reconnects, documents committed this long before it last heard are
/// announced again too: the instances' clocks may differ by this much, µs.
const WATCH_RESYNC_MARGIN_US: i64 = 60 * 1_000_000;

/// A patient or site configuration another process committed to the same database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocChange {
    /// The document.
    pub id: String,
    /// Its kind.
    pub kind: DocKind,
    /// Its site.
    pub site: String,
}

/// The change watcher's thread; it stops (within seconds) when this is dropped.
#[derive(Debug)]
pub struct ChangeWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for ChangeWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl CloudStore {
    /// On PostgreSQL, calls `on_change` (on a thread of its own) for every patient and site
    /// configuration that another process commits to the database, be it another cloud
    /// instance or a `vigil-cloud staff` command, within moments of its commit; the
    /// connection it listens on is made again whenever it is lost. `None` on SQLite, where
    /// there is one process.
    pub fn watch_changes(
        &self,
        on_change: impl Fn(DocChange) + Send + 'static,
    ) -> Option<ChangeWatch> {
        let Engine::Postgres(pg) = &self.engine else {
            return None;
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watch = ChangeWatch { stop: stop.clone() };
        // The watcher's own connections, outside the pool: one listens at a time.
        let engine = PgEngine {
            config: pg.config.clone(),
            name: pg.name.clone(),
            tls: pg.tls.clone(),
            origin: pg.origin.clone(),
            idle: Mutex::new(Vec::new()),
        };
        std::thread::Builder::new()
            .name("vigil-pg-watch".into())
            .spawn(move || {
                let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
                // When the watcher last knew it was listening; after a reconnection, what
                // changed since (with a margin for the instances' clocks) is announced again,
                // since notifications sent meanwhile were never delivered.
                let mut heard_until_us: Option<i64> = None;
                while !stopped() {
                    let mut conn = match engine.connect() {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "change watcher cannot connect; retrying");
                            std::thread::sleep(WATCH_RETRY);
                            continue;
                        }
                    };
                    if let Err(e) = conn
                        .client
                        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
                    {
                        tracing::warn!(error = %e, "change watcher cannot listen; retrying");
                        std::thread::sleep(WATCH_RETRY);
                        continue;
                    }
                    tracing::debug!(db = %engine.name, "watching for changes of other instances");
                    if let Some(since) = heard_until_us {
                        match missed_changes(&mut conn.client, since - WATCH_RESYNC_MARGIN_US) {
                            Ok(changes) => changes.into_iter().for_each(&on_change),
                            Err(e) => {
                                tracing::warn!(error = %e, "change watcher cannot catch up; retrying");
                                std::thread::sleep(WATCH_RETRY);
                                continue;
                            }
                        }
                    }
                    while !stopped() && !conn.client.is_closed() {
                        heard_until_us = Some(crate::clock::now_us());
                        use postgres::fallible_iterator::FallibleIterator as _;
                        let mut notes = conn.client.notifications();
                        let mut it = notes.timeout_iter(Duration::from_secs(1));
                        match it.next() {
                            Ok(Some(n)) => {
                                if let Some(change) = parse_change(n.payload(), &engine.origin) {
                                    on_change(change);
                                }
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "change watcher lost its connection");
                                break;
                            }
                        }
                    }
                }
            })
            .ok()?;
        Some(watch)
    }
}

/// Patients and site configurations committed since `since_us` (by the committer's clock).
fn missed_changes(
    client: &mut postgres::Client,
    since_us: i64,
) -> Result<Vec<DocChange>, postgres::Error> {
    let rows = client.query(
        "SELECT id, kind, site FROM documents
         WHERE kind IN ('patient', 'site_config') AND updated_us >= $1",
        &[&since_us],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(DocChange {
                id: r.get(0),
                kind: DocKind::from_name(r.get(1))?,
                site: r.get(2),
            })
        })
        .collect())
}

/// A notification's change, unless it is `origin`'s own or unreadable.
fn parse_change(payload: &str, origin: &str) -> Option<DocChange> {
    let mut parts = payload.splitn(4, ' ');
    let (from, kind, site, id) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if from == origin {
        return None;
    }
    Some(DocChange {
        id: id.to_owned(),
        kind: DocKind::from_name(kind)?,
        site: site.to_owned(),
    })
}

/// A random 64-bit number: a handle's notification tag, which only has to differ from the
/// other handles' (the clock stands in if the system's generator fails).
fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(bytes)
}

/// Whether every host of a PostgreSQL configuration is on this machine.
fn pg_is_local(config: &postgres::Config) -> bool {
    config.get_hosts().iter().all(|h| match h {
        postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        postgres::config::Host::Unix(_) => true,
    })
}

/// The TLS connector for PostgreSQL: TLS 1.2 or 1.3 (servers speak both), the server's
/// certificate checked against `ca` and its name against the host connected to.
fn pg_tls(
    ca: &[CertificateDer<'static>],
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone()).map_err(|e| {
            StoreError::Unavailable(format!("the PostgreSQL CA certificate is not usable: {e}"))
        })?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Unavailable(format!("TLS for PostgreSQL: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `host:port/database` of a PostgreSQL configuration.
fn pg_name(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// Serializes commits of one document: on PostgreSQL a transaction-scoped advisory lock on a
/// hash of its id, held until the transaction ends, across every cloud instance; on SQLite
/// nothing (the write transaction already holds the file's one write lock).
fn lock_document(db: &mut dyn Sql, id: &str) -> Result<(), StoreError> {
    if db.dialect() == Dialect::Postgres {
        db.exec(
            "SELECT pg_advisory_xact_lock(hashtextextended(?1, 0))",
            args![id],
        )?;
    }
    Ok(())
}

/// `AND column IN (?, ?…)` for a scope, with its arguments; nothing for every site, and
/// `AND 1 = 0` for a scope of no site. Every list of patient data goes through here, so rows
/// of a site out of scope never leave the database.
fn scope_clause<'a>(column: &str, scope: &'a Scope, args: &mut Vec<Arg<'a>>) -> String {
    match scope.sites() {
        ScopeSites::All => String::new(),
        ScopeSites::Only(list) if list.is_empty() => " AND 1 = 0".into(),
        ScopeSites::Only(list) => {
            args.extend(list.iter().map(|s| s.to_arg()));
            format!(" AND {column} IN ({})", vec!["?"; list.len()].join(", "))
        }
    }
}

/// Loads a document of `kind` if it exists and its registered site is in `scope`; `None`
/// otherwise, so that a document out of scope reads exactly like an unknown one.
fn load_in_scope(
    db: &mut dyn Sql,
    scope: &Scope,
    id: &str,
    kind: DocKind,
) -> Result<Option<StoredDoc>, StoreError> {
    let site: Option<String> = db
        .row("SELECT site FROM documents WHERE id = ?1", args![id])?
        .map(|r| r.get(0))
        .transpose()?;
    if !site.is_some_and(|s| scope.allows(&s)) {
        return Ok(None);
    }
    Ok(load_stored(db, id)?.filter(|s| s.kind == kind))
}

/// Locks a mutex whose data stays consistent even if a holder panicked: a panic inside a
/// write unwinds through rusqlite's `Transaction`, whose drop rolls the transaction back, and
/// the pools only hold idle connections. So the poison flag carries no information.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The registry row of a stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DocRow {
    kind: String,
    site: String,
    /// The heads on disk, sorted.
    heads: Vec<ChangeHash>,
}

fn document_row(db: &mut dyn Sql, id: &str) -> Result<Option<DocRow>, StoreError> {
    let row = db.row(
        "SELECT kind, site, heads FROM documents WHERE id = ?1",
        args![id],
    )?;
    row.map(|r| {
        Ok(DocRow {
            kind: r.get(0)?,
            site: r.get(1)?,
            heads: heads_from_blob(id, &r.get::<Vec<u8>>(2)?)?,
        })
    })
    .transpose()
}

fn check_owner(id: &str, row: &DocRow, kind: DocKind, site: &str) -> Result<(), StoreError> {
    if row.kind != kind.as_str() || row.site != site {
        return Err(StoreError::OwnerMismatch {
            id: id.to_owned(),
            kind: parse_kind(id, &row.kind)?,
            site: row.site.clone(),
        });
    }
    Ok(())
}

/// The document's root says it is a readable `kind` of `site`.
fn check_header(id: &str, kind: DocKind, site: &str, doc: &AutoCommit) -> Result<(), StoreError> {
    let invalid = |reason: String| StoreError::InvalidDocument {
        id: id.to_owned(),
        reason,
    };
    let h = vigil_shared::doc::header(doc).map_err(|e| invalid(e.to_string()))?;
    if h.kind.as_str() != kind.as_str() {
        return Err(invalid(format!(
            "it is a {}, sent as a {kind}",
            h.kind.as_str()
        )));
    }
    if h.site != site {
        return Err(invalid(format!("it names site {:?}, not {site:?}", h.site)));
    }
    Ok(())
}

fn parse_kind(id: &str, name: &str) -> Result<DocKind, StoreError> {
    DocKind::from_name(name).ok_or_else(|| StoreError::CorruptDocument {
        id: id.to_owned(),
        reason: format!("unknown kind {name:?} in the registry"),
    })
}

/// Whether `doc` contains every change in `heads`.
fn holds_all(doc: &mut AutoCommit, heads: &[ChangeHash]) -> bool {
    heads
        .iter()
        .all(|h| doc.get_change_meta_by_hash(h).is_some())
}

fn sorted_heads(doc: &mut AutoCommit) -> Vec<ChangeHash> {
    let mut heads = doc.get_heads();
    heads.sort_unstable();
    heads
}

fn heads_to_blob(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

fn heads_from_blob(id: &str, blob: &[u8]) -> Result<Vec<ChangeHash>, StoreError> {
    let hashes = blob.chunks_exact(32);
    if !hashes.remainder().is_empty() {
        return Err(StoreError::CorruptDocument {
            id: id.to_owned(),
            reason: format!(
                "stored heads are {} bytes, not a multiple of 32",
                blob.len()
            ),
        });
    }
    hashes
        .map(|h| {
            ChangeHash::try_from(h).map_err(|e| StoreError::CorruptDocument {
                id: id.to_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

fn load_stored(db: &mut dyn Sql, id: &str) -> Result<Option<StoredDoc>, StoreError> {
    let Some(row) = db.row(
        "SELECT kind, site, snapshot FROM documents WHERE id = ?1",
        args![id],
    )?
    else {
        return Ok(None);
    };
    let corrupt = |reason: String| StoreError::CorruptDocument {
        id: id.to_owned(),
        reason,
    };
    let kind = parse_kind(id, &row.get::<String>(0)?)?;
    let mut doc = AutoCommit::load(&row.get::<Vec<u8>>(2)?).map_err(|e| corrupt(e.to_string()))?;
    // In any order: Automerge holds a change back until the changes it depends on arrive.
    let changes = db.rows("SELECT bytes FROM doc_changes WHERE doc_id = ?1", args![id])?;
    for change in changes {
        doc.load_incremental(&change.get::<Vec<u8>>(0)?)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(Some(StoredDoc {
        kind,
        site: row.get(1)?,
        doc,
    }))
}

#[cfg(test)]
mod tests;
