//! The cloud's storage: every site's Automerge documents and the projections derived from them,
//! in one SQLite file, behind one type, [`CloudStore`].
//!
//! Documents are stored as a snapshot (`doc.save()`) plus incremental change sets, folded into
//! a new snapshot every [`COMPACT_AFTER_CHANGES`] commits, as on the appliance. Projections
//! (sessions, per-channel vitals statistics, advisories, events, patients) are tables derived
//! from the documents: updated in the same transaction as the document they come from, and
//! rebuilt from scratch by [`CloudStore::reindex`]. The appliance registry (which room is
//! connected, how far behind) and the people tables (users, browser sessions, API tokens, the
//! audit log) are not derived from documents and survive a reindex.
//!
//! This module does not speak the sync protocol, decide who may write what (the sync server
//! does) or serve HTTP (the API does); it stores what it is given and answers queries.
//! The file runs in WAL mode with `synchronous=FULL`: [`CloudStore::commit_document`] returns
//! once the transaction is on disk, so heads advertised after it are durable.

mod projection;
mod reads;
mod report;
mod users;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use automerge::{AutoCommit, ChangeHash};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use vigil_shared::wire::DocKind;

use crate::auth::{Scope, ScopeSites};

pub use reads::{
    ApplianceRow, AttentionRow, ChannelSummary, MAX_ATTENTION, MAX_SESSION_PAGE,
    MAX_VITALS_PER_PAGE, SessionFilter, SessionPage, SessionRow, SessionSummary, VitalsPage,
};
pub use report::{
    AdvisoryCount, MAX_ECG_WINDOW_SAMPLES, OutcomeSite, PatientOutcomeInput, RoomActivity,
    SessionChart, SessionReportRow, SiteSessionCount,
};
pub use users::{
    ApiTokenRow, AuditRow, AuditSource, LEGACY_TOKEN_DAYS, MAX_AUDIT_PAGE, UserRow, WebSessionRow,
};

use projection::Projection;

/// Incremental change sets kept per document before they are folded into a new snapshot.
/// Loading replays every change set, so this bounds load time; compacting rewrites the whole
/// document (about half a megabyte for a session with ECG), so a small number would rewrite it
/// every few seconds. The appliance uses the same number.
pub const COMPACT_AFTER_CHANGES: i64 = 64;

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

/// The schema of the cloud database, bumped with each migration.
const DB_VERSION: i64 = 6;

/// Errors from the cloud's storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// The disk (or the database's size limit) is full.
    #[error("database is full: {0}")]
    Full(rusqlite::Error),
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
    /// The database was written by a newer version of vigil-cloud.
    #[error(
        "database schema version {0} is newer than this vigil-cloud understands ({DB_VERSION})"
    )]
    TooNew(i64),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(e),
            _ => StoreError::Sqlite(e),
        }
    }
}

impl StoreError {
    /// Whether this is a full disk (an operational condition, not a bug).
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full(_))
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
/// [`path`](Self::path) and [`reader`](Self::reader) are SQLite-specific (tests and tools).
///
/// Writes go through one connection behind a mutex (callers are on blocking threads);
/// reads use their own read-only connections, so API reads never wait for ingest.
#[derive(Debug)]
pub struct CloudStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl CloudStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<CloudStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&conn)?;
        Ok(CloudStore {
            path: path.to_owned(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new read-only connection to the database.
    pub fn reader(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }

    /// Runs `f` on a pooled read-only connection.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = lock(&self.readers).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.reader()?,
        };
        let result = f(&mut conn);
        // A connection is returned only when it is idle: a failed read may have left a
        // statement or transaction behind, so it is closed instead.
        if result.is_ok() && conn.is_autocommit() {
            let mut idle = lock(&self.readers);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
        result
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        lock(&self.writer)
    }

    /// Loads a document: its snapshot with every stored change set applied. `None` when the
    /// id is unknown.
    pub fn load_document(&self, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        self.read(|conn| load_stored(conn, id))
    }

    /// The registry: which kind and site a document belongs to, if it is known.
    pub fn document_owner(&self, id: &str) -> Result<Option<(DocKind, String)>, StoreError> {
        self.read(|conn| {
            let row: Option<(String, String)> = conn
                .query_row(
                    "SELECT kind, site FROM documents WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            row.map(|(kind, site)| Ok((parse_kind(id, &kind)?, site)))
                .transpose()
        })
    }

    /// Ids of a site's documents of the given kinds, in id order.
    pub fn site_documents(&self, site: &str, kinds: &[DocKind]) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, kind FROM documents WHERE site = ?1 ORDER BY id")?;
            let rows = stmt.query_map([site], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut ids = Vec::new();
            for row in rows {
                let (id, kind) = row?;
                if DocKind::from_name(&kind).is_some_and(|k| kinds.contains(&k)) {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
    }

    /// The whole document as `doc.save()` bytes, loadable by any Automerge implementation;
    /// `None` when the id is unknown, is not of `kind` or belongs to a site out of `scope`.
    /// Served straight from the snapshot when no change sets are pending.
    pub fn document_bytes(
        &self,
        scope: &Scope,
        id: &str,
        kind: DocKind,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|conn| {
            let tx = conn.transaction()?;
            let row: Option<(String, String, Vec<u8>)> = tx
                .query_row(
                    "SELECT kind, site, snapshot FROM documents WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((stored_kind, site, snapshot)) = row else {
                return Ok(None);
            };
            if stored_kind != kind.as_str() || !scope.allows(&site) {
                return Ok(None);
            }
            let pending: i64 = tx.query_row(
                "SELECT count(*) FROM doc_changes WHERE doc_id = ?1",
                [id],
                |r| r.get(0),
            )?;
            if pending == 0 {
                return Ok(Some(snapshot));
            }
            Ok(load_stored(&tx, id)?.map(|mut s| s.doc.save()))
        })
    }

    /// Persists a new document, or the new changes of a known one, and updates its
    /// projections, in one transaction; returns once it is committed (fsynced).
    ///
    /// `doc` is the caller's whole, current document. The store persists
    /// `doc.save_after(<the heads it has on disk>)`, which stays complete whatever the
    /// caller's bookkeeping (a failed earlier commit, another connection committing the same
    /// document in between). So:
    /// - committing a document whose heads are already on disk is a no-op (idempotent);
    /// - if the database holds changes `doc` lacks, they are merged **into `doc`** first, so the
    ///   projections and `doc.get_heads()` after the call cover everything durable;
    /// - after `Ok`, every change in `doc.get_heads()` is durable: advertise those heads.
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
        let mut heads = sorted_heads(doc);
        // Phase 1, under the lock briefly: what is on disk already.
        let (prior, prior_channels) = {
            let conn = self.writer();
            let prior = document_row(&conn, id)?;
            if let Some(p) = &prior {
                check_owner(id, p, kind, site)?;
                if p.heads == heads {
                    return Ok(());
                }
            }
            let channels = match (&prior, kind) {
                (Some(_), DocKind::Session) => projection::read_channels(&conn, id)?,
                _ => BTreeMap::new(),
            };
            (prior, channels)
        };
        check_header(id, kind, site, doc)?;
        tracing::trace!(doc = %id, "committing");

        // Phase 2, without the lock: the projection, when `doc` holds everything on disk
        // (decoding a session's new chunks is the expensive part; it runs in parallel for
        // different documents).
        let mut proj = match &prior {
            Some(p) if !holds_all(doc, &p.heads) => None,
            _ => Some(projection::project(id, kind, doc, &prior_channels)?),
        };
        // A new document's snapshot, likewise (used only if it is still new under the lock).
        let mut new_snapshot = prior.is_none().then(|| doc.save());

        // Phase 3, under the lock: re-check, write, commit.
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = document_row(&tx, id)?;
        if let Some(r) = &row {
            check_owner(id, r, kind, site)?;
            if !holds_all(doc, &r.heads) {
                // Another connection committed changes this copy lacks: fold them in so the
                // projections, and the heads the caller advertises, cover what is on disk.
                if let Some(mut stored) = load_stored(&tx, id)? {
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
            (Some(_), DocKind::Session) => projection::read_channels(&tx, id)?,
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
                tx.execute(
                    "INSERT INTO documents (id, kind, site, snapshot, heads, created_us, updated_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                    params![id, kind.as_str(), site, snapshot, heads_blob, now_us],
                )?;
            }
            Some(r) => {
                let (n, max_seq): (i64, Option<i64>) = tx.query_row(
                    "SELECT count(*), max(seq) FROM doc_changes WHERE doc_id = ?1",
                    [id],
                    |q| Ok((q.get(0)?, q.get(1)?)),
                )?;
                if n >= COMPACT_AFTER_CHANGES {
                    let snapshot = doc.save();
                    tx.execute(
                        "UPDATE documents SET snapshot = ?2, heads = ?3, updated_us = ?4
                         WHERE id = ?1",
                        params![id, snapshot, heads_blob, now_us],
                    )?;
                    tx.execute("DELETE FROM doc_changes WHERE doc_id = ?1", [id])?;
                } else {
                    let delta = doc.save_after(&r.heads);
                    tx.execute(
                        "INSERT INTO doc_changes (doc_id, seq, bytes) VALUES (?1, ?2, ?3)",
                        params![id, max_seq.unwrap_or(0) + 1, delta],
                    )?;
                    tx.execute(
                        "UPDATE documents SET heads = ?2, updated_us = ?3 WHERE id = ?1",
                        params![id, heads_blob, now_us],
                    )?;
                }
            }
        }
        projection::write(&tx, id, site, &proj, now_us)?;
        tx.commit()?;
        Ok(())
    }

    /// An appliance connected (or reconnected): it is online and runs `software`.
    pub fn appliance_connected(
        &self,
        site: &str,
        room: &str,
        software: &str,
        now_us: i64,
    ) -> Result<(), StoreError> {
        self.writer().execute(
            "INSERT INTO appliances (site, room, connected, software, first_seen_us, last_seen_us)
             VALUES (?1, ?2, 1, ?3, ?4, ?4)
             ON CONFLICT(site, room) DO UPDATE SET
                 connected = 1, software = excluded.software, last_seen_us = excluded.last_seen_us",
            params![site, room, software, now_us],
        )?;
        Ok(())
    }

    /// A connected appliance is still there (a heartbeat). The API shows an appliance online
    /// only while it was seen within [`ONLINE_WINDOW_US`](crate::sites::ONLINE_WINDOW_US), so
    /// the sync server calls this (or [`appliance_synced`](Self::appliance_synced)) more often
    /// than that for every connection, idle or not.
    pub fn appliance_seen(&self, site: &str, room: &str, now_us: i64) -> Result<(), StoreError> {
        self.writer().execute(
            "UPDATE appliances SET last_seen_us = ?3 WHERE site = ?1 AND room = ?2",
            params![site, room, now_us],
        )?;
        Ok(())
    }

    /// An appliance's connection ended.
    pub fn appliance_disconnected(
        &self,
        site: &str,
        room: &str,
        now_us: i64,
    ) -> Result<(), StoreError> {
        self.writer().execute(
            "UPDATE appliances SET connected = 0, last_seen_us = ?3 WHERE site = ?1 AND room = ?2",
            params![site, room, now_us],
        )?;
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
        self.writer().execute(
            "INSERT INTO appliances (site, room, connected, software, first_seen_us, last_seen_us,
                                     last_sync_us, backlog_docs, backlog_bytes)
             VALUES (?1, ?2, 1, '', ?3, ?3, ?3, ?4, ?5)
             ON CONFLICT(site, room) DO UPDATE SET
                 last_seen_us = excluded.last_seen_us, last_sync_us = excluded.last_sync_us,
                 backlog_docs = excluded.backlog_docs, backlog_bytes = excluded.backlog_bytes",
            params![site, room, now_us, docs, bytes],
        )?;
        Ok(())
    }

    /// Rebuilds every projection from the documents, in one transaction (readers see the old
    /// projections until it commits). A document that cannot be projected is counted in the
    /// report and left without projection rows; the others are rebuilt.
    pub fn reindex(&self) -> Result<ReindexReport, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        projection::clear_all(&tx)?;
        let ids: Vec<(String, i64)> = {
            let mut stmt = tx.prepare("SELECT id, updated_us FROM documents ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut report = ReindexReport::default();
        for (id, updated_us) in ids {
            report.documents += 1;
            let stored = match load_stored(&tx, &id) {
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
            }
            let added = projection::write(&tx, &id, site, &proj, updated_us)?;
            report.audit_entries_added += added as u64;
        }
        tx.commit()?;
        Ok(report)
    }
}

/// `AND column IN (?, ?…)` for a scope, with its arguments; nothing for every site, and
/// `AND 0` for a scope of no site. Every list of patient data goes through here, so rows of a
/// site out of scope never leave the database.
fn scope_clause(column: &str, scope: &Scope, args: &mut Vec<SqlValue>) -> String {
    match scope.sites() {
        ScopeSites::All => String::new(),
        ScopeSites::Only(list) if list.is_empty() => " AND 0".into(),
        ScopeSites::Only(list) => {
            args.extend(list.iter().map(|s| SqlValue::Text(s.clone())));
            format!(" AND {column} IN ({})", vec!["?"; list.len()].join(", "))
        }
    }
}

/// Loads a document of `kind` if it exists and its registered site is in `scope`; `None`
/// otherwise, so that a document out of scope reads exactly like an unknown one.
fn load_in_scope(
    conn: &Connection,
    scope: &Scope,
    id: &str,
    kind: DocKind,
) -> Result<Option<StoredDoc>, StoreError> {
    let site: Option<String> = conn
        .query_row("SELECT site FROM documents WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    if !site.is_some_and(|s| scope.allows(&s)) {
        return Ok(None);
    }
    Ok(load_stored(conn, id)?.filter(|s| s.kind == kind))
}

/// Locks a mutex whose data stays consistent even if a holder panicked: a panic inside a
/// write unwinds through rusqlite's `Transaction`, whose drop rolls the transaction back, and
/// the reader pool only holds idle connections. So the poison flag carries no information.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > DB_VERSION {
        return Err(StoreError::TooNew(version));
    }
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE documents (
                 id TEXT PRIMARY KEY,
                 kind TEXT NOT NULL,
                 site TEXT NOT NULL,
                 snapshot BLOB NOT NULL,
                 heads BLOB NOT NULL,
                 created_us INTEGER NOT NULL,
                 updated_us INTEGER NOT NULL
             );
             CREATE INDEX documents_by_site ON documents (site, kind);
             CREATE TABLE doc_changes (
                 doc_id TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 bytes BLOB NOT NULL,
                 PRIMARY KEY (doc_id, seq)
             );
             CREATE TABLE sessions (
                 id TEXT PRIMARY KEY,
                 site TEXT NOT NULL,
                 room TEXT NOT NULL,
                 patient_id TEXT NOT NULL,
                 state TEXT NOT NULL,
                 drug TEXT NOT NULL,
                 route TEXT NOT NULL,
                 created_us INTEGER NOT NULL,
                 started_us INTEGER,
                 ended_us INTEGER,
                 planned_minutes INTEGER NOT NULL,
                 dose_mg_per_kg REAL NOT NULL,
                 weight_kg REAL NOT NULL,
                 n_advisories INTEGER NOT NULL,
                 has_advisory INTEGER NOT NULL,
                 max_advisory_priority TEXT,
                 n_observations INTEGER NOT NULL,
                 discharge_us INTEGER,
                 discharge_aldrete INTEGER,
                 updated_us INTEGER NOT NULL
             );
             CREATE INDEX sessions_by_site ON sessions (site, started_us);
             CREATE INDEX sessions_by_start ON sessions (started_us);
             CREATE INDEX sessions_by_patient ON sessions (patient_id);
             CREATE TABLE session_channels (
                 session_id TEXT NOT NULL,
                 channel TEXT NOT NULL,
                 samples INTEGER NOT NULL,
                 first_us INTEGER,
                 last_us INTEGER,
                 chunks INTEGER NOT NULL,
                 corrupt_chunks INTEGER NOT NULL,
                 checksum INTEGER NOT NULL,
                 prefix_hash INTEGER NOT NULL,
                 PRIMARY KEY (session_id, channel)
             );
             CREATE TABLE advisories (
                 session_id TEXT NOT NULL,
                 id TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 subject TEXT NOT NULL,
                 priority TEXT NOT NULL,
                 detail TEXT NOT NULL,
                 raised_us INTEGER NOT NULL,
                 acknowledged_us INTEGER,
                 acknowledged_by TEXT,
                 cleared_us INTEGER,
                 PRIMARY KEY (session_id, id)
             );
             CREATE TABLE events (
                 session_id TEXT NOT NULL,
                 id TEXT NOT NULL,
                 type TEXT NOT NULL,
                 at_us INTEGER NOT NULL,
                 detail TEXT NOT NULL,
                 \"by\" TEXT NOT NULL,
                 PRIMARY KEY (session_id, type, id)
             );
             CREATE TABLE patients (
                 id TEXT PRIMARY KEY,
                 site TEXT NOT NULL,
                 given_name TEXT NOT NULL,
                 family_name TEXT NOT NULL,
                 birth_date TEXT NOT NULL,
                 course TEXT NOT NULL
             );
             CREATE INDEX patients_by_site ON patients (site);
             CREATE TABLE appliances (
                 site TEXT NOT NULL,
                 room TEXT NOT NULL,
                 connected INTEGER NOT NULL,
                 software TEXT NOT NULL,
                 first_seen_us INTEGER NOT NULL,
                 last_seen_us INTEGER NOT NULL,
                 last_sync_us INTEGER,
                 backlog_docs INTEGER NOT NULL DEFAULT 0,
                 backlog_bytes INTEGER NOT NULL DEFAULT 0,
                 PRIMARY KEY (site, room)
             );
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    if version < 2 {
        // Users, browser sessions, API tokens and the audit log (the dashboard).
        conn.execute_batch(&format!(
            "BEGIN; {} PRAGMA user_version = 2; COMMIT;",
            users::SCHEMA_V2
        ))?;
    }
    if version < 3 {
        // Patients' outcome scores, for the outcomes report. Rows projected before this read
        // '[]' until `vigil-cloud reindex` projects them again.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE patients ADD COLUMN outcome_scores TEXT NOT NULL DEFAULT '[]';
             PRAGMA user_version = 3;
             COMMIT;",
        )?;
    }
    if version < 4 {
        // API tokens expire and record their last use.
        conn.execute_batch(&format!(
            "BEGIN; {} PRAGMA user_version = 4; COMMIT;",
            users::schema_v4_tokens()
        ))?;
    }
    if version < 5 {
        // Appliances' audit entries beside the cloud's own (site, room, source, entry id).
        // Independent of what the earlier steps hold: it only adds columns and an index.
        conn.execute_batch(&format!(
            "BEGIN; {} PRAGMA user_version = 5; COMMIT;",
            users::SCHEMA_V5_AUDIT
        ))?;
    }
    if version < 6 {
        // The attention list: suicide-risk answers, serious events awaiting review, EMS
        // transfers and against-advice discharges, from the sessions' care records. Sessions
        // projected before it fill it at their next change or at `vigil-cloud reindex`.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE attention (
                 session_id TEXT NOT NULL,
                 n INTEGER NOT NULL,
                 kind TEXT NOT NULL,
                 at_us INTEGER NOT NULL,
                 detail TEXT NOT NULL,
                 PRIMARY KEY (session_id, n)
             );
             CREATE INDEX attention_by_time ON attention (at_us);
             PRAGMA user_version = 6;
             COMMIT;",
        )?;
    }
    Ok(())
}

/// The registry row of a stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DocRow {
    kind: String,
    site: String,
    /// The heads on disk, sorted.
    heads: Vec<ChangeHash>,
}

fn document_row(conn: &Connection, id: &str) -> Result<Option<DocRow>, StoreError> {
    let row: Option<(String, String, Vec<u8>)> = conn
        .query_row(
            "SELECT kind, site, heads FROM documents WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    row.map(|(kind, site, blob)| {
        Ok(DocRow {
            kind,
            site,
            heads: heads_from_blob(id, &blob)?,
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

fn load_stored(conn: &Connection, id: &str) -> Result<Option<StoredDoc>, StoreError> {
    let row: Option<(String, String, Vec<u8>)> = conn
        .query_row(
            "SELECT kind, site, snapshot FROM documents WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((kind, site, snapshot)) = row else {
        return Ok(None);
    };
    let corrupt = |reason: String| StoreError::CorruptDocument {
        id: id.to_owned(),
        reason,
    };
    let kind = parse_kind(id, &kind)?;
    let mut doc = AutoCommit::load(&snapshot).map_err(|e| corrupt(e.to_string()))?;
    let mut stmt =
        conn.prepare_cached("SELECT bytes FROM doc_changes WHERE doc_id = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([id], |r| r.get::<_, Vec<u8>>(0))?;
    for bytes in rows {
        doc.load_incremental(&bytes?)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(Some(StoredDoc { kind, site, doc }))
}

#[cfg(test)]
mod tests;
