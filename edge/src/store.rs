//! The appliance's SQLite file: documents (snapshot plus incremental changes), the staging
//! table for open vitals chunks, the local session index and a little metadata.
//!
//! One writer (the recorder thread) owns a read-write [`rusqlite::Connection`]; readers open
//! their own read-only connections with [`open_reader`]. The file runs in WAL mode with
//! `synchronous=FULL`, so a committed transaction survives a process kill and a power loss.
//! This module knows table layouts; it does not know what a session is for.

use std::path::Path;

use automerge::AutoCommit;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use vigil_shared::chunk::Chunk;
use vigil_shared::doc::{DocKind, Typed};
use vigil_shared::vitals::{Channel, Sample};

/// Most incremental changes kept per document before they are folded into a new snapshot.
/// Loading replays every change, so this bounds load time.
pub const COMPACT_AFTER_CHANGES: i64 = 512;

/// A document is also compacted once its changes add up to this share of its snapshot's
/// size. Compacting rewrites the whole document; doing it when the changes have grown as
/// large as the snapshot keeps the total rewritten bytes within twice the final size (a
/// fixed count rewrote a long session's half megabyte over and over).
pub const COMPACT_AT_CHANGE_BYTES_PER_SNAPSHOT_BYTE: i64 = 1;

/// How long a reader or writer waits for a lock before giving up. The writer's transactions
/// are short; five seconds means something is wrong.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// The schema of the appliance database, bumped with each migration.
const DB_VERSION: i64 = 2;

/// Errors from the appliance's storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The disk (or the database's size limit) is full.
    #[error("database is full: {0}")]
    Full(rusqlite::Error),
    /// A stored document could not be loaded.
    #[error("stored document {id} is unreadable: {reason}")]
    CorruptDocument {
        /// The document id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A blocking database task stopped before it answered (it panicked or was cancelled).
    #[error("a database task stopped before it finished")]
    TaskStopped,
    /// The database was written by a newer version of vigil-edge.
    #[error("database schema version {0} is newer than this vigil-edge understands ({DB_VERSION})")]
    TooNew(i64),
}

impl StoreError {
    /// Sorts SQLITE_FULL out from other errors: it is an expected condition with its own
    /// advisory, not a bug.
    pub fn from_sqlite(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(e),
            _ => StoreError::Sqlite(e),
        }
    }

    /// Whether this is a full disk.
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full(_))
    }
}

fn map(e: rusqlite::Error) -> StoreError {
    StoreError::from_sqlite(e)
}

/// Opens (creating if needed) the database for writing and brings its schema up to date.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(map)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(map)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(map)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(map)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(map)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Opens the database read-only, for API reads beside the writer.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(map)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(map)?;
    if version > DB_VERSION {
        return Err(StoreError::TooNew(version));
    }
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE documents (
                 id TEXT PRIMARY KEY,
                 kind TEXT NOT NULL,
                 site TEXT NOT NULL,
                 snapshot BLOB NOT NULL,
                 updated_us INTEGER NOT NULL,
                 version INTEGER NOT NULL DEFAULT 1
             );
             CREATE TABLE doc_changes (
                 doc_id TEXT NOT NULL REFERENCES documents(id),
                 seq INTEGER NOT NULL,
                 bytes BLOB NOT NULL,
                 PRIMARY KEY (doc_id, seq)
             );
             CREATE TABLE sessions (
                 id TEXT PRIMARY KEY REFERENCES documents(id),
                 patient_id TEXT NOT NULL,
                 state TEXT NOT NULL,
                 started_us INTEGER,
                 ended_us INTEGER,
                 scenario TEXT
             );
             CREATE TABLE staging (
                 session_id TEXT NOT NULL REFERENCES documents(id),
                 channel TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 bytes BLOB NOT NULL,
                 PRIMARY KEY (session_id, channel, seq)
             );
             CREATE TABLE sync_docs (
                 doc_id TEXT PRIMARY KEY REFERENCES documents(id),
                 state BLOB,
                 confirmed_heads BLOB NOT NULL DEFAULT x'',
                 synced_version INTEGER NOT NULL DEFAULT 0,
                 last_sync_us INTEGER
             );
             PRAGMA user_version = 1;
             COMMIT;",
        )
        .map_err(map)?;
    }
    if version < 2 {
        // Version 2: the audit log of this appliance's HTTP server (entries wait here, durable,
        // until the recorder folds them into an audit document that syncs), and the room
        // screen's wrong-PIN counts, so a restart does not hand out fresh guesses.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE audit_pending (
                 id TEXT PRIMARY KEY,
                 at_us INTEGER NOT NULL,
                 actor TEXT NOT NULL,
                 action TEXT NOT NULL,
                 target TEXT NOT NULL,
                 client TEXT NOT NULL
             );
             CREATE TABLE pin_failures (
                 staff_id TEXT NOT NULL,
                 client TEXT NOT NULL,
                 failures INTEGER NOT NULL,
                 last_us INTEGER NOT NULL,
                 PRIMARY KEY (staff_id, client)
             );
             PRAGMA user_version = 2;
             COMMIT;",
        )
        .map_err(map)?;
    }
    Ok(())
}

/// Starts a write transaction that takes the write lock at once, so two writers (the recorder
/// and the sync client) wait for each other instead of failing on a lock upgrade.
pub fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(map)
}

/// Caps the database at `max_bytes` (SQLite's `max_page_count`): past it, writes fail with
/// [`StoreError::Full`] as on a full disk, and nothing already written is harmed.
pub fn limit_size(conn: &Connection, max_bytes: u64) -> Result<(), StoreError> {
    let page_size: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .map_err(map)?;
    let pages = (max_bytes / u64::try_from(page_size.max(512)).unwrap_or(4096)).max(1);
    conn.pragma_update(
        None,
        "max_page_count",
        i64::try_from(pages).unwrap_or(i64::MAX),
    )
    .map_err(map)?;
    Ok(())
}

/// Reads a metadata value.
pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .map_err(map)
}

/// Writes a metadata value.
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )
    .map_err(map)?;
    Ok(())
}

/// Stores a brand-new document.
pub fn insert_document(
    tx: &Transaction<'_>,
    id: &str,
    kind: &str,
    site: &str,
    snapshot: &[u8],
    now_us: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO documents (id, kind, site, snapshot, updated_us) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, kind, site, snapshot, now_us],
    )
    .map_err(map)?;
    Ok(())
}

/// Appends an incremental change set (from `save_incremental`) to a document; folds the
/// changes into a fresh snapshot once there are more than [`COMPACT_AFTER_CHANGES`], using
/// `full_save` to produce it: the whole document, everything stored plus `changes` (the
/// snapshot replaces every stored change).
pub fn append_changes(
    tx: &Transaction<'_>,
    id: &str,
    changes: &[u8],
    now_us: i64,
    full_save: impl FnOnce() -> Result<Vec<u8>, StoreError>,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let (n, max_seq, change_bytes, snapshot_bytes): (i64, Option<i64>, i64, i64) = tx
        .query_row(
            "SELECT count(*), max(seq), coalesce(sum(length(bytes)), 0),
                    (SELECT length(snapshot) FROM documents WHERE id = ?1)
             FROM doc_changes WHERE doc_id = ?1",
            [id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                ))
            },
        )
        .map_err(map)?;
    let grown = change_bytes + changes.len() as i64
        >= snapshot_bytes * COMPACT_AT_CHANGE_BYTES_PER_SNAPSHOT_BYTE;
    if n >= COMPACT_AFTER_CHANGES || (n > 0 && grown) {
        let snapshot = full_save()?;
        tx.execute(
            "UPDATE documents SET snapshot = ?2, updated_us = ?3, version = version + 1 WHERE id = ?1",
            params![id, snapshot, now_us],
        )
        .map_err(map)?;
        tx.execute("DELETE FROM doc_changes WHERE doc_id = ?1", [id])
            .map_err(map)?;
    } else {
        tx.execute(
            "INSERT INTO doc_changes (doc_id, seq, bytes) VALUES (?1, ?2, ?3)",
            params![id, max_seq.unwrap_or(0) + 1, changes],
        )
        .map_err(map)?;
        tx.execute(
            "UPDATE documents SET updated_us = ?2, version = version + 1 WHERE id = ?1",
            params![id, now_us],
        )
        .map_err(map)?;
    }
    Ok(())
}

/// Appends changes to a stored document that more than one writer changes (a patient: the
/// recorder and the sync client's exchanges; a site configuration). When that folds the
/// changes into a new snapshot, the snapshot is made from the stored document plus these
/// changes: another writer may have stored changes this writer's copy never saw, and a
/// snapshot of that copy would drop them.
pub fn append_shared(
    tx: &Transaction<'_>,
    id: &str,
    changes: &[u8],
    now_us: i64,
) -> Result<(), StoreError> {
    append_changes(tx, id, changes, now_us, || {
        let corrupt = |reason: String| StoreError::CorruptDocument {
            id: id.to_owned(),
            reason,
        };
        let (_, mut stored) =
            load_document(tx, id)?.ok_or_else(|| corrupt("vanished while being written".into()))?;
        stored
            .load_incremental(changes)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(stored.save())
    })
}

/// Loads a stored document of type `D`; `None` when there is none or the id holds another
/// kind. A document whose schema doesn't read is corrupt, as one whose bytes don't.
pub fn load_typed<D: Typed>(conn: &Connection, id: &str) -> Result<Option<D>, StoreError> {
    match load_document(conn, id)? {
        Some((kind, doc)) if kind == D::KIND.as_str() => {
            D::wrap(doc)
                .map(Some)
                .map_err(|e| StoreError::CorruptDocument {
                    id: id.to_owned(),
                    reason: e.to_string(),
                })
        }
        _ => Ok(None),
    }
}

/// Loads a stored document: its snapshot with every incremental change applied.
/// `None` when there is no such document.
pub fn load_document(
    conn: &Connection,
    id: &str,
) -> Result<Option<(String, AutoCommit)>, StoreError> {
    let row: Option<(String, Vec<u8>)> = conn
        .query_row(
            "SELECT kind, snapshot FROM documents WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(map)?;
    let Some((kind, snapshot)) = row else {
        return Ok(None);
    };
    let corrupt = |reason: String| StoreError::CorruptDocument {
        id: id.to_owned(),
        reason,
    };
    let mut doc = AutoCommit::load(&snapshot).map_err(|e| corrupt(e.to_string()))?;
    let mut stmt = conn
        .prepare_cached("SELECT bytes FROM doc_changes WHERE doc_id = ?1 ORDER BY seq")
        .map_err(map)?;
    let rows = stmt
        .query_map([id], |r| r.get::<_, Vec<u8>>(0))
        .map_err(map)?;
    for bytes in rows {
        let bytes = bytes.map_err(map)?;
        doc.load_incremental(&bytes)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(Some((kind, doc)))
}

/// Ids of stored documents of one kind, newest first.
pub fn document_ids(conn: &Connection, kind: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM documents WHERE kind = ?1 ORDER BY updated_us DESC")
        .map_err(map)?;
    let ids = stmt.query_map([kind], |r| r.get(0)).map_err(map)?;
    ids.collect::<Result<_, _>>().map_err(map)
}

/// A row of the local session index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Session id.
    pub id: String,
    /// Patient id.
    pub patient_id: String,
    /// `in_progress`, `completed`, `aborted`.
    pub state: String,
    /// Start, µs.
    pub started_us: Option<i64>,
    /// End, µs.
    pub ended_us: Option<i64>,
    /// Simulator scenario driving this session, if simulated.
    pub scenario: Option<String>,
}

/// Inserts or updates a session's index row.
pub fn upsert_session(tx: &Transaction<'_>, row: &SessionRow) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sessions (id, patient_id, state, started_us, ended_us, scenario)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET state = excluded.state, ended_us = excluded.ended_us",
        params![
            row.id,
            row.patient_id,
            row.state,
            row.started_us,
            row.ended_us,
            row.scenario
        ],
    )
    .map_err(map)?;
    Ok(())
}

/// Every session in the index, newest first.
pub fn sessions(conn: &Connection) -> Result<Vec<SessionRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, patient_id, state, started_us, ended_us, scenario FROM sessions
             ORDER BY started_us DESC",
        )
        .map_err(map)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(SessionRow {
                id: r.get(0)?,
                patient_id: r.get(1)?,
                state: r.get(2)?,
                started_us: r.get(3)?,
                ended_us: r.get(4)?,
                scenario: r.get(5)?,
            })
        })
        .map_err(map)?;
    rows.collect::<Result<_, _>>().map_err(map)
}

/// Stages a run of samples of the open chunk. `seq` orders the runs of one channel.
pub fn stage_samples(
    tx: &Transaction<'_>,
    session_id: &str,
    channel: Channel,
    seq: i64,
    samples: &[Sample],
) -> Result<(), StoreError> {
    // The staging row uses the chunk codec itself: a run of samples is a valid chunk. Version 1:
    // staging rows are local and short-lived (read back when the chunk closes, which is then
    // encoded in the current version), and v1 costs a fraction of v2's time on the recorder's
    // path.
    let bytes = Chunk {
        channel,
        samples: samples.to_vec(),
    }
    .encode_v1()
    .map_err(|e| StoreError::CorruptDocument {
        id: session_id.to_owned(),
        reason: e.to_string(),
    })?;
    tx.execute(
        "INSERT INTO staging (session_id, channel, seq, bytes) VALUES (?1, ?2, ?3, ?4)",
        params![session_id, channel.name(), seq, bytes],
    )
    .map_err(map)?;
    Ok(())
}

/// Drops every staged run of a channel (its samples are now in a closed chunk).
pub fn clear_staging(
    tx: &Transaction<'_>,
    session_id: &str,
    channel: Channel,
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM staging WHERE session_id = ?1 AND channel = ?2",
        params![session_id, channel.name()],
    )
    .map_err(map)?;
    Ok(())
}

/// A staged run read back.
#[derive(Debug)]
pub struct StagedRun {
    /// The channel.
    pub channel: Channel,
    /// Order within the channel.
    pub seq: i64,
    /// The samples, or why they could not be decoded.
    pub samples: Result<Vec<Sample>, String>,
}

/// Every staged run of a session, in channel and sequence order.
pub fn staged(conn: &Connection, session_id: &str) -> Result<Vec<StagedRun>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT channel, seq, bytes FROM staging WHERE session_id = ?1 ORDER BY channel, seq",
        )
        .map_err(map)?;
    let rows = stmt
        .query_map([session_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(map)?;
    let mut out = Vec::new();
    for row in rows {
        let (name, seq, bytes) = row.map_err(map)?;
        let Some(channel) = Channel::from_name(&name) else {
            continue;
        };
        let samples = match Chunk::decode(&bytes) {
            Ok(c) if c.channel == channel => Ok(c.samples),
            Ok(_) => Err("staged run of another channel".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        out.push(StagedRun {
            channel,
            seq,
            samples,
        });
    }
    Ok(out)
}

/// Sizes of the database files, for the status API.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StorageUse {
    /// Main database file, bytes.
    pub db_bytes: u64,
    /// Write-ahead log, bytes.
    pub wal_bytes: u64,
    /// Documents stored.
    pub documents: u64,
    /// Staged runs (open chunks) waiting to close.
    pub staged_runs: u64,
}

/// Measures storage use.
pub fn storage_use(conn: &Connection, path: &Path) -> Result<StorageUse, StoreError> {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let documents: i64 = conn
        .query_row("SELECT count(*) FROM documents", [], |r| r.get(0))
        .map_err(map)?;
    let staged_runs: i64 = conn
        .query_row("SELECT count(*) FROM staging", [], |r| r.get(0))
        .map_err(map)?;
    Ok(StorageUse {
        db_bytes: size(path),
        wal_bytes: size(Path::new(&wal)),
        documents: u64::try_from(documents).unwrap_or(0),
        staged_runs: u64::try_from(staged_runs).unwrap_or(0),
    })
}

/// A document that has changed since the cloud last confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsynced {
    /// Document id.
    pub id: String,
    /// Its kind as stored.
    pub kind: String,
    /// Its version when listed (bumped on every stored change).
    pub version: i64,
}

/// Documents whose current version the cloud has not confirmed: every other kind before
/// sessions, then oldest change first. The cloud accepts a session only once it holds the
/// session's patient, so patients must not queue behind sessions (see `sync::SyncClient`).
pub fn unsynced(conn: &Connection, limit: usize) -> Result<Vec<Unsynced>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT d.id, d.kind, d.version FROM documents d LEFT JOIN sync_docs s ON s.doc_id = d.id
             WHERE s.synced_version IS NULL OR s.synced_version < d.version
             ORDER BY d.kind = 'session', d.updated_us LIMIT ?1",
        )
        .map_err(map)?;
    let rows = stmt
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(Unsynced {
                id: r.get(0)?,
                kind: r.get(1)?,
                version: r.get(2)?,
            })
        })
        .map_err(map)?;
    rows.collect::<Result<_, _>>().map_err(map)
}

/// Every document of these kinds with its kind and version (which moves with every change):
/// what the site's peers are offered.
pub fn shared_versions(
    conn: &Connection,
    kinds: &[DocKind],
) -> Result<Vec<(String, DocKind, i64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, kind, version FROM documents
             WHERE kind IN (SELECT value FROM json_each(?1)) ORDER BY updated_us",
        )
        .map_err(map)?;
    let names = serde_json::to_string(&kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>())
        .unwrap_or_default();
    let rows = stmt
        .query_map([names], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(map)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, kind, version) = row.map_err(map)?;
        if let Some(kind) = DocKind::from_name(&kind) {
            out.push((id, kind, version));
        }
    }
    Ok(out)
}

/// What is waiting for the cloud: documents and (roughly) their bytes.
pub fn backlog(conn: &Connection) -> Result<(u64, u64), StoreError> {
    conn.query_row(
        "SELECT count(*), coalesce(sum(length(d.snapshot)), 0) FROM documents d
         LEFT JOIN sync_docs s ON s.doc_id = d.id
         WHERE s.synced_version IS NULL OR s.synced_version < d.version",
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)?.max(0) as u64,
                r.get::<_, i64>(1)?.max(0) as u64,
            ))
        },
    )
    .map_err(map)
}

/// The persisted sync state with the cloud and the heads the cloud confirmed as durable.
pub fn sync_record(
    conn: &Connection,
    id: &str,
) -> Result<(Option<Vec<u8>>, Vec<automerge::ChangeHash>), StoreError> {
    let row: Option<(Option<Vec<u8>>, Vec<u8>)> = conn
        .query_row(
            "SELECT state, confirmed_heads FROM sync_docs WHERE doc_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(map)?;
    let Some((state, heads)) = row else {
        return Ok((None, Vec::new()));
    };
    let heads = heads
        .chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok().map(automerge::ChangeHash))
        .collect();
    Ok((state, heads))
}

/// Saves the sync state and confirmed heads; `synced_version` when everything the document
/// had at that version is confirmed.
pub fn save_sync_record(
    tx: &Transaction<'_>,
    id: &str,
    state: &[u8],
    confirmed: &[automerge::ChangeHash],
    synced_version: Option<i64>,
    now_us: i64,
) -> Result<(), StoreError> {
    let heads: Vec<u8> = confirmed.iter().flat_map(|h| h.0).collect();
    tx.execute(
        "INSERT INTO sync_docs (doc_id, state, confirmed_heads, synced_version, last_sync_us)
         VALUES (?1, ?2, ?3, coalesce(?4, 0), ?5)
         ON CONFLICT(doc_id) DO UPDATE SET state = excluded.state,
             confirmed_heads = excluded.confirmed_heads,
             synced_version = coalesce(?4, synced_version),
             last_sync_us = excluded.last_sync_us",
        params![id, state, heads, synced_version, now_us],
    )
    .map_err(map)?;
    Ok(())
}

/// Kind and site of a stored document.
pub fn document_owner(conn: &Connection, id: &str) -> Result<Option<(String, String)>, StoreError> {
    conn.query_row(
        "SELECT kind, site FROM documents WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(map)
}

/// Finished sessions that ended before `before_us` and whose every change the cloud has
/// confirmed as durable, oldest first. Only these may be deleted: a session the cloud has not
/// confirmed is never removed, however old.
pub fn purgeable_sessions(
    conn: &Connection,
    before_us: i64,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT s.id FROM sessions s
             JOIN documents d ON d.id = s.id
             JOIN sync_docs y ON y.doc_id = s.id
             WHERE s.state != 'in_progress' AND s.ended_us IS NOT NULL AND s.ended_us < ?1
               AND y.synced_version >= d.version
             ORDER BY s.ended_us LIMIT ?2",
        )
        .map_err(map)?;
    let ids = stmt
        .query_map(
            params![before_us, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )
        .map_err(map)?;
    ids.collect::<Result<_, _>>().map_err(map)
}

/// Deletes a session and everything stored for it.
pub fn delete_session(tx: &Transaction<'_>, id: &str) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM staging WHERE session_id = ?1",
        "DELETE FROM sync_docs WHERE doc_id = ?1",
        "DELETE FROM doc_changes WHERE doc_id = ?1",
        "DELETE FROM sessions WHERE id = ?1",
        "DELETE FROM documents WHERE id = ?1",
    ] {
        tx.execute(sql, [id]).map_err(map)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_lists_every_other_kind_before_sessions_then_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("edge.db")).unwrap();
        let tx = write_tx(&mut conn).unwrap();
        // (id, kind, updated_us): the patient changed after the sessions that name it.
        let docs = [
            ("s-old", "session", 1),
            ("p-late", "patient", 5),
            ("s-new", "session", 3),
            ("a-1", "audit", 4),
            ("austin", "site_config", 2),
        ];
        for (id, kind, at) in docs {
            insert_document(&tx, id, kind, "austin", b"", at).unwrap();
        }
        tx.commit().unwrap();
        let ids: Vec<String> = unsynced(&conn, 10)
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(ids, ["austin", "a-1", "p-late", "s-old", "s-new"]);
        let first_two: Vec<String> = unsynced(&conn, 2)
            .unwrap()
            .into_iter()
            .map(|d| d.kind)
            .collect();
        assert_eq!(first_two, ["site_config", "audit"]);
    }

    /// A document received change set by change set, as the cloud's pushes bring it, with two
    /// exchanges' copies each storing changes the other never saw, compacted many times over:
    /// it always loads whole. (Compaction once wrote only the last change set as the snapshot,
    /// which left the document unreadable.)
    #[test]
    fn received_changes_fold_into_a_snapshot_of_everything_stored() {
        use automerge::ReadDoc;
        use automerge::transaction::Transactable;
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("edge.db")).unwrap();
        let mut source = AutoCommit::new();
        source.put(automerge::ROOT, "n", 0_i64).unwrap();
        let tx = write_tx(&mut conn).unwrap();
        insert_document(&tx, "austin", "site_config", "austin", &source.save(), 0).unwrap();
        tx.commit().unwrap();
        let mut append = |delta: Vec<u8>, at: i64| {
            let tx = write_tx(&mut conn).unwrap();
            append_shared(&tx, "austin", &delta, at).unwrap();
            tx.commit().unwrap();
        };
        for i in 1..=40_i64 {
            // Two copies at the same heads each make a change and store only their own.
            let mut other = source.fork();
            let before = source.get_heads();
            source
                .put(automerge::ROOT, format!("k{i}"), "x".repeat(200))
                .unwrap();
            other.put(automerge::ROOT, format!("other{i}"), i).unwrap();
            append(source.save_after(&before), 2 * i);
            append(other.save_after(&before), 2 * i + 1);
            source.merge(&mut other).unwrap();
        }
        let (_, mut stored) = load_document(&conn, "austin").unwrap().unwrap();
        let (mut want, mut got) = (source.get_heads(), stored.get_heads());
        want.sort();
        got.sort();
        assert_eq!(
            got, want,
            "every change stored, nothing lost to a compaction"
        );
        assert!(stored.get(automerge::ROOT, "other40").unwrap().is_some());
        let versions: i64 = conn
            .query_row(
                "SELECT version FROM documents WHERE id = 'austin'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let changes: i64 = conn
            .query_row("SELECT count(*) FROM doc_changes", [], |r| r.get(0))
            .unwrap();
        assert!(
            changes < 80,
            "compacted along the way ({changes} change sets left, version {versions})"
        );
    }
}
