//! The cloud database's schema on both engines, and the migrations that bring a database up
//! to it. Each step is numbered; a database records the step it is at (SQLite's
//! `user_version`, PostgreSQL's `vigil_schema` table) and one written by a newer vigil-cloud
//! is refused at start. SQLite files have migrated step by step since version 1; PostgreSQL
//! databases begin at version 7 and take the same steps from there.

use automerge::AutoCommit;
use rusqlite::Connection;

use super::StoreError;

/// The schema of the cloud database, bumped with each migration.
pub(super) const DB_VERSION: i64 = 10;

/// The PostgreSQL advisory lock key instances take while migrating, so that two starting at
/// once migrate one after the other (`vigil` in ASCII).
const MIGRATION_LOCK: i64 = 0x0076_6967_696c;

pub(super) fn migrate_sqlite(conn: &Connection) -> Result<(), StoreError> {
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
            super::users::SCHEMA_V2
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
            super::users::schema_v4_tokens()
        ))?;
    }
    if version < 5 {
        // Appliances' audit entries beside the cloud's own (site, room, source, entry id).
        // Independent of what the earlier steps hold: it only adds columns and an index.
        conn.execute_batch(&format!(
            "BEGIN; {} PRAGMA user_version = 5; COMMIT;",
            super::users::SCHEMA_V5_AUDIT
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
    if version < 7 {
        // Changes are stored one per row, keyed by (document, change hash), so that an insert
        // is idempotent whoever makes it. The change sets stored before are folded into their
        // documents' snapshots first, so the table starts empty. Appliances get the instance
        // holding them.
        fold_change_sets_v6(conn)?;
    }
    if version < 8 {
        fleet_v8_sqlite(conn)?;
    }
    if version < 9 {
        conn.execute_batch(&format!(
            "BEGIN; {LEDGER_V9} PRAGMA user_version = 9; COMMIT;"
        ))?;
    }
    if version < 10 {
        // Nothing to do: SQLite never compresses values (see STORE_COMPRESSED_V10).
        conn.execute_batch("PRAGMA user_version = 10;")?;
    }
    Ok(())
}

/// Version 9, the same on both engines: the controlled-substance ledger's entries as the cloud
/// received them (the ledger document stays the record; this is its index, with the cloud's
/// receive time, which a reindex keeps).
const LEDGER_V9: &str = "
    CREATE TABLE IF NOT EXISTS ledger_entries (
        site TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        at_us BIGINT NOT NULL,
        received_us BIGINT NOT NULL,
        by_staff TEXT NOT NULL,
        witness TEXT,
        place TEXT NOT NULL,
        kind TEXT NOT NULL,
        lot_id TEXT,
        session_id TEXT,
        ul BIGINT,
        entry TEXT NOT NULL,
        PRIMARY KEY (site, entry_id)
    );
    CREATE INDEX IF NOT EXISTS ledger_by_time ON ledger_entries (site, at_us);
";

/// Version 8 on SQLite: [`FLEET_V8`], each column added only where it is missing (a file that
/// took an older step by hand may have some).
fn fleet_v8_sqlite(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    for statement in FLEET_V8.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(rest) = statement.strip_prefix("ALTER TABLE appliances ADD COLUMN ") {
            let column = rest.split_whitespace().next().unwrap_or_default();
            let present: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info('appliances') WHERE name = ?1)
                 OR NOT EXISTS (SELECT 1 FROM sqlite_master
                                WHERE type = 'table' AND name = 'appliances')",
                [column],
                |r| r.get(0),
            )?;
            if present {
                continue;
            }
        }
        tx.execute_batch(statement)?;
    }
    tx.execute_batch("PRAGMA user_version = 8;")?;
    tx.commit()?;
    Ok(())
}

/// Version 8, the same on both engines: the fleet. What each appliance last reported (its
/// protocol, certificate, clock and health), the one-time enrolment codes (their hashes) and
/// every certificate the cloud issued to an appliance, with what replaced it and when it was
/// revoked.
const FLEET_V8: &str = "
    ALTER TABLE appliances ADD COLUMN protocol BIGINT NOT NULL DEFAULT 1;
    ALTER TABLE appliances ADD COLUMN cert_serial TEXT NOT NULL DEFAULT '';
    ALTER TABLE appliances ADD COLUMN cert_not_after_us BIGINT;
    ALTER TABLE appliances ADD COLUMN clock_skew_us BIGINT;
    ALTER TABLE appliances ADD COLUMN report TEXT;
    CREATE TABLE IF NOT EXISTS enrol_codes (
        code_hash TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        room TEXT NOT NULL,
        replaces_active BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        expires_us BIGINT NOT NULL,
        used_us BIGINT,
        serial TEXT
    );
    CREATE TABLE IF NOT EXISTS certificates (
        serial TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        room TEXT NOT NULL,
        source TEXT NOT NULL,
        issued_us BIGINT NOT NULL,
        not_after_us BIGINT NOT NULL,
        replaces TEXT,
        revoke_after_us BIGINT,
        revoked_us BIGINT
    );
    CREATE INDEX IF NOT EXISTS certificates_by_room ON certificates (site, room);
";

/// Version 7 on SQLite, in one transaction: version 6's stored change sets folded into their
/// documents' snapshots and the change table replaced (one row per change, keyed by its hash);
/// the appliance registry's instance column; the sign-in limiter's counts (in the database so
/// that every instance counts the same attempts).
fn fold_change_sets_v6(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    // Only the change table and the snapshots of documents with pending change sets are
    // touched: a database with no change table gets the new one.
    let has_table: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'doc_changes')",
        [],
        |r| r.get(0),
    )?;
    let ids: Vec<String> = if !has_table {
        Vec::new()
    } else {
        let mut stmt = tx.prepare("SELECT DISTINCT doc_id FROM doc_changes")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    for id in ids {
        let snapshot: Vec<u8> =
            tx.query_row("SELECT snapshot FROM documents WHERE id = ?1", [&id], |r| {
                r.get(0)
            })?;
        let corrupt = |reason: String| StoreError::CorruptDocument {
            id: id.clone(),
            reason,
        };
        let mut doc = AutoCommit::load(&snapshot).map_err(|e| corrupt(e.to_string()))?;
        let mut stmt =
            tx.prepare("SELECT bytes FROM doc_changes WHERE doc_id = ?1 ORDER BY seq")?;
        let sets = stmt.query_map([&id], |r| r.get::<_, Vec<u8>>(0))?;
        for bytes in sets {
            doc.load_incremental(&bytes?)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        tx.execute(
            "UPDATE documents SET snapshot = ?2 WHERE id = ?1",
            rusqlite::params![id, doc.save()],
        )?;
    }
    tx.execute_batch(
        "DROP TABLE IF EXISTS doc_changes;
         CREATE TABLE doc_changes (
             doc_id TEXT NOT NULL,
             hash BLOB NOT NULL,
             bytes BLOB NOT NULL,
             PRIMARY KEY (doc_id, hash)
         );
         CREATE TABLE IF NOT EXISTS signin_limits (
             key TEXT PRIMARY KEY,
             failures INTEGER NOT NULL,
             in_flight INTEGER NOT NULL,
             window_start_us INTEGER NOT NULL,
             last_failure_us INTEGER NOT NULL,
             reserved_us INTEGER NOT NULL,
             touched_us INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS signin_limits_by_touch ON signin_limits (touched_us);
         PRAGMA user_version = 7;",
    )?;
    // The appliance registry records which cloud instance holds each appliance.
    let has_instance: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('appliances') WHERE name = 'instance')",
        [],
        |r| r.get(0),
    )?;
    let has_appliances: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'appliances')",
        [],
        |r| r.get(0),
    )?;
    if has_appliances && !has_instance {
        tx.execute_batch("ALTER TABLE appliances ADD COLUMN instance TEXT NOT NULL DEFAULT ''")?;
    }
    tx.commit()?;
    Ok(())
}

/// Brings a PostgreSQL database to [`DB_VERSION`], under an advisory lock so that instances
/// starting together migrate one at a time; refuses a database of a newer version.
pub(super) fn migrate_postgres(client: &mut postgres::Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS vigil_schema (version BIGINT NOT NULL)")?;
    let version: i64 = match tx.query_opt("SELECT version FROM vigil_schema", &[])? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO vigil_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    if version > DB_VERSION {
        return Err(StoreError::TooNew(version));
    }
    if version < 7 {
        tx.batch_execute(POSTGRES_V7)?;
    }
    if version < 8 {
        tx.batch_execute(FLEET_V8)?;
    }
    if version < 9 {
        tx.batch_execute(LEDGER_V9)?;
    }
    if version < 10 {
        tx.batch_execute(STORE_COMPRESSED_V10)?;
    }
    tx.execute("UPDATE vigil_schema SET version = $1", &[&DB_VERSION])?;
    tx.commit()?;
    Ok(())
}

/// Version 10 on PostgreSQL: snapshots and changes are stored as they are, out of line, not
/// compressed again. Automerge compresses them already (`save()` deflates its columns), so
/// PostgreSQL's own compression of large values (pglz) only spent time failing to shrink them:
/// profiled, a third of the database's CPU per ingested session. Rows written before keep
/// their form; the setting applies to values written from now on. SQLite has no such step.
const STORE_COMPRESSED_V10: &str = "
    ALTER TABLE documents ALTER COLUMN snapshot SET STORAGE EXTERNAL;
    ALTER TABLE doc_changes ALTER COLUMN bytes SET STORAGE EXTERNAL;
";

/// Version 7 on PostgreSQL: SQLite's tables and indexes, with PostgreSQL's types (BIGINT for
/// INTEGER, DOUBLE PRECISION for REAL, BYTEA for BLOB; `api_tokens.rowid` spelled out, since
/// PostgreSQL has no implicit row id).
const POSTGRES_V7: &str = "
    CREATE TABLE documents (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        site TEXT NOT NULL,
        snapshot BYTEA NOT NULL,
        heads BYTEA NOT NULL,
        created_us BIGINT NOT NULL,
        updated_us BIGINT NOT NULL
    );
    CREATE INDEX documents_by_site ON documents (site, kind);
    CREATE TABLE doc_changes (
        doc_id TEXT NOT NULL,
        hash BYTEA NOT NULL,
        bytes BYTEA NOT NULL,
        PRIMARY KEY (doc_id, hash)
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        room TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        state TEXT NOT NULL,
        drug TEXT NOT NULL,
        route TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        started_us BIGINT,
        ended_us BIGINT,
        planned_minutes BIGINT NOT NULL,
        dose_mg_per_kg DOUBLE PRECISION NOT NULL,
        weight_kg DOUBLE PRECISION NOT NULL,
        n_advisories BIGINT NOT NULL,
        has_advisory BIGINT NOT NULL,
        max_advisory_priority TEXT,
        n_observations BIGINT NOT NULL,
        discharge_us BIGINT,
        discharge_aldrete BIGINT,
        updated_us BIGINT NOT NULL
    );
    CREATE INDEX sessions_by_site ON sessions (site, started_us);
    CREATE INDEX sessions_by_start ON sessions (started_us);
    CREATE INDEX sessions_by_patient ON sessions (patient_id);
    CREATE TABLE session_channels (
        session_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        samples BIGINT NOT NULL,
        first_us BIGINT,
        last_us BIGINT,
        chunks BIGINT NOT NULL,
        corrupt_chunks BIGINT NOT NULL,
        checksum BIGINT NOT NULL,
        prefix_hash BIGINT NOT NULL,
        PRIMARY KEY (session_id, channel)
    );
    CREATE TABLE advisories (
        session_id TEXT NOT NULL,
        id TEXT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        priority TEXT NOT NULL,
        detail TEXT NOT NULL,
        raised_us BIGINT NOT NULL,
        acknowledged_us BIGINT,
        acknowledged_by TEXT,
        cleared_us BIGINT,
        PRIMARY KEY (session_id, id)
    );
    CREATE TABLE events (
        session_id TEXT NOT NULL,
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        at_us BIGINT NOT NULL,
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
        course TEXT NOT NULL,
        outcome_scores TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX patients_by_site ON patients (site);
    CREATE TABLE appliances (
        site TEXT NOT NULL,
        room TEXT NOT NULL,
        connected BIGINT NOT NULL,
        software TEXT NOT NULL,
        first_seen_us BIGINT NOT NULL,
        last_seen_us BIGINT NOT NULL,
        last_sync_us BIGINT,
        backlog_docs BIGINT NOT NULL DEFAULT 0,
        backlog_bytes BIGINT NOT NULL DEFAULT 0,
        instance TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (site, room)
    );
    CREATE TABLE attention (
        session_id TEXT NOT NULL,
        n BIGINT NOT NULL,
        kind TEXT NOT NULL,
        at_us BIGINT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (session_id, n)
    );
    CREATE INDEX attention_by_time ON attention (at_us);
    CREATE TABLE users (
        id BIGSERIAL PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        scope TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        disabled BIGINT NOT NULL DEFAULT 0,
        created_us BIGINT NOT NULL
    );
    CREATE TABLE web_sessions (
        token_hash BYTEA PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id),
        csrf TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        last_seen_us BIGINT NOT NULL
    );
    CREATE INDEX web_sessions_by_user ON web_sessions (user_id);
    CREATE TABLE api_tokens (
        rowid BIGSERIAL PRIMARY KEY,
        token_hash BYTEA NOT NULL UNIQUE,
        user_id BIGINT NOT NULL REFERENCES users(id),
        label TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        expires_us BIGINT NOT NULL DEFAULT 0,
        last_used_us BIGINT
    );
    CREATE INDEX api_tokens_by_user ON api_tokens (user_id);
    CREATE TABLE audit_log (
        id BIGSERIAL PRIMARY KEY,
        at_us BIGINT NOT NULL,
        username TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        ip TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'cloud',
        site TEXT NOT NULL DEFAULT '',
        room TEXT NOT NULL DEFAULT '',
        entry_id TEXT
    );
    CREATE INDEX audit_by_time ON audit_log (at_us);
    CREATE UNIQUE INDEX audit_by_entry ON audit_log (site, room, entry_id);
    CREATE TABLE signin_limits (
        key TEXT PRIMARY KEY,
        failures BIGINT NOT NULL,
        in_flight BIGINT NOT NULL,
        window_start_us BIGINT NOT NULL,
        last_failure_us BIGINT NOT NULL,
        reserved_us BIGINT NOT NULL,
        touched_us BIGINT NOT NULL
    );
    CREATE INDEX signin_limits_by_touch ON signin_limits (touched_us);
";
