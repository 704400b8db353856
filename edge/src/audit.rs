//! The appliance's audit log: every read of patient data and every write, on the room screen
//! and the JSON API, with who (from the credential), what, when and the client's address.
//!
//! An entry is written to the `audit_pending` table with `synchronous=FULL` *before* the
//! request is answered, on its own connection (SQLite serialises it with the recorder's
//! writes). The recorder thread folds pending entries into the appliance's current audit
//! document ([`fold`]) in one transaction, so each entry is either pending or in a document,
//! never both and never neither; audit documents sync to the cloud like every other document,
//! so an appliance offline for a week delivers its whole week on reconnect.
//!
//! This module records; it does not decide who may do what ([`crate::access`] does).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};
use vigil_shared::audit::{AuditDoc, AuditEntry, MAX_AUDIT_ENTRIES_PER_DOC};
use vigil_shared::doc::DocKind;

use crate::clock::ScaledClock;
use crate::recorder::RecorderError;
use crate::store::{self, StoreError};

/// Longest field kept in an entry: an action or target longer than this is cut (a path a
/// client made up can be long; the log must not be a way to fill the disk).
pub const MAX_FIELD_BYTES: usize = 256;

/// Entries folded into the audit document per group commit: bounded so a backlog (a week of
/// reads recorded while the recorder was busy) never makes one commit slow.
pub const FOLD_BATCH: usize = 500;

/// The `meta` key naming the audit document entries are appended to.
const CURRENT_DOC_KEY: &str = "audit_doc";

/// The audit log's writer.
#[derive(Debug)]
pub struct AuditLog {
    conn: Mutex<Connection>,
    clock: ScaledClock,
}

/// Who did what to what, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// From the credential: a staff id, `token:LABEL`, `local`, or the name a refused
    /// sign-in tried.
    pub actor: String,
    /// What, e.g. `GET /api/v1/sessions/{id}` or `screen sign-in refused`.
    pub action: String,
    /// The session or patient id concerned, or empty.
    pub target: String,
    /// The client's address.
    pub client: String,
}

impl Entry {
    /// The entry for an HTTP request by `actor` on the server part `part` (`api`, `screen`):
    /// the route's template as the action (`api GET /api/v1/sessions/{id}`), its id as the
    /// target, and the client's address.
    pub fn for_request(part: &str, actor: &str, req: &axum::extract::Request) -> Entry {
        let template = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
        Entry {
            actor: actor.to_owned(),
            action: format!("{part} {} {template}", req.method()),
            target: path_target(&template, req.uri().path()),
            client: client_addr(req),
        }
    }
}

/// The client's address, as the server accepted the connection.
pub fn client_addr(req: &axum::extract::Request) -> String {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

/// The id in a path such as `/api/v1/sessions/{id}/vitals`, from the route's template.
/// Compared from the end: inside a nested router the path has lost its prefix.
pub fn path_target(template: &str, path: &str) -> String {
    template
        .rsplit('/')
        .zip(path.rsplit('/'))
        .find(|(t, _)| *t == "{id}")
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default()
}

impl AuditLog {
    /// Opens the audit log's own connection to the appliance database.
    pub fn open(db_path: &Path, clock: ScaledClock) -> Result<AuditLog, StoreError> {
        Ok(AuditLog {
            conn: Mutex::new(store::open_writer(db_path)?),
            clock,
        })
    }

    /// Records an entry durably (blocking).
    pub fn record(&self, entry: &Entry) -> Result<(), StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute(
            "INSERT INTO audit_pending (id, at_us, actor, action, target, client)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                uuid::Uuid::new_v4().to_string(),
                self.clock.now_us(),
                cut(&entry.actor),
                cut(&entry.action),
                cut(&entry.target),
                cut(&entry.client),
            ],
        )
        .map_err(StoreError::from_sqlite)?;
        Ok(())
    }

    /// Records an entry durably from async code.
    pub async fn record_async(self: &Arc<Self>, entry: Entry) -> Result<(), StoreError> {
        let log = self.clone();
        tokio::task::spawn_blocking(move || log.record(&entry))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "audit task failed");
                Err(StoreError::TaskStopped)
            })
    }

    /// The connection, for the room screen's PIN counts (one writer for the HTTP side).
    pub(crate) fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `s`, cut at a character boundary to at most [`MAX_FIELD_BYTES`].
fn cut(s: &str) -> &str {
    if s.len() <= MAX_FIELD_BYTES {
        return s;
    }
    let mut end = MAX_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Moves up to [`FOLD_BATCH`] pending entries into the current audit document (starting a new
/// one when it is full), in one transaction. Returns how many moved.
pub fn fold(
    conn: &mut Connection,
    site: &str,
    room: &str,
    now_us: i64,
) -> Result<usize, RecorderError> {
    // Entries are cut to the document's field limits here, so an overlong one can never make
    // every later fold fail.
    let pending: Vec<AuditEntry> = pending_entries(conn, FOLD_BATCH)?
        .into_iter()
        .map(AuditEntry::bounded)
        .collect();
    if pending.is_empty() {
        return Ok(0);
    }
    let current = store::meta_get(conn, CURRENT_DOC_KEY)?;
    let loaded = match &current {
        Some(id) => match store::load_document(conn, id)? {
            Some((kind, doc)) if kind == DocKind::Audit.as_str() => {
                let doc = AuditDoc::from_automerge(doc)?;
                (doc.len() + pending.len() <= MAX_AUDIT_ENTRIES_PER_DOC)
                    .then_some((id.clone(), doc))
            }
            _ => None,
        },
        None => None,
    };
    let tx = store::write_tx(conn)?;
    match loaded {
        Some((id, mut doc)) => {
            let heads = doc.automerge().get_heads();
            doc.append(&pending)?;
            let changes = doc.automerge().save_after(&heads);
            store::append_changes(&tx, &id, &changes, now_us, || Ok(doc.automerge().save()))?;
        }
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            let mut doc = AuditDoc::create(&id, site, room)?;
            doc.append(&pending)?;
            let bytes = doc.automerge().save();
            store::insert_document(&tx, &id, DocKind::Audit.as_str(), site, &bytes, now_us)?;
            store::meta_set(&tx, CURRENT_DOC_KEY, &id)?;
        }
    }
    for e in &pending {
        tx.execute("DELETE FROM audit_pending WHERE id = ?1", [&e.id])
            .map_err(StoreError::from_sqlite)?;
    }
    tx.commit().map_err(StoreError::from_sqlite)?;
    Ok(pending.len())
}

fn pending_entries(conn: &Connection, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT id, at_us, actor, action, target, client FROM audit_pending
             ORDER BY at_us, id LIMIT ?1",
        )
        .map_err(StoreError::from_sqlite)?;
    let rows = stmt
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                at_us: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                client: r.get(5)?,
            })
        })
        .map_err(StoreError::from_sqlite)?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::from_sqlite)
}

/// Every entry in this appliance's audit documents and still pending, oldest first (for tests
/// and the IT person's checks).
pub fn all_entries(conn: &Connection) -> Result<Vec<AuditEntry>, RecorderError> {
    let mut out = pending_entries(conn, usize::MAX)?;
    let ids: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT id FROM documents WHERE kind = ?1")
            .map_err(StoreError::from_sqlite)?;
        let rows = stmt
            .query_map([DocKind::Audit.as_str()], |r| r.get(0))
            .map_err(StoreError::from_sqlite)?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::from_sqlite)?
    };
    for id in ids {
        if let Some((_, doc)) = store::load_document(conn, &id)? {
            out.extend(AuditDoc::from_automerge(doc)?.entries()?);
        }
    }
    out.sort_by(|a, b| (a.at_us, &a.id).cmp(&(b.at_us, &b.id)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_the_route_template() {
        let cases = [
            (
                "/api/v1/sessions/{id}/vitals",
                "/api/v1/sessions/s-1/vitals",
                "s-1",
            ),
            ("/api/v1/patients/{id}", "/api/v1/patients/p-9", "p-9"),
            ("/api/v1/sessions", "/api/v1/sessions", ""),
            (
                "/screen/sessions/{id}/live",
                "/screen/sessions/abc/live",
                "abc",
            ),
        ];
        for (template, path, expected) in cases {
            assert_eq!(path_target(template, path), expected, "{path}");
        }
    }

    fn entry(n: usize) -> Entry {
        Entry {
            actor: "nurse-ana".into(),
            action: format!("GET /api/v1/sessions/{{id}} #{n}"),
            target: "s1".into(),
            client: "10.1.2.9".into(),
        }
    }

    #[test]
    fn entries_are_durable_then_folded_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut conn = store::open_writer(&path).unwrap();
        let log = AuditLog::open(
            &path,
            ScaledClock::starting_at(crate::clock::wall_now_us(), 1.0),
        )
        .unwrap();
        let n = FOLD_BATCH + 7;
        for i in 0..n {
            log.record(&entry(i)).unwrap();
        }
        assert_eq!(all_entries(&conn).unwrap().len(), n);
        assert_eq!(fold(&mut conn, "austin", "1", 1).unwrap(), FOLD_BATCH);
        assert_eq!(all_entries(&conn).unwrap().len(), n, "none lost or doubled");
        assert_eq!(fold(&mut conn, "austin", "1", 2).unwrap(), 7);
        assert_eq!(fold(&mut conn, "austin", "1", 3).unwrap(), 0);
        let all = all_entries(&conn).unwrap();
        assert_eq!(all.len(), n);
        let mut ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), n);
        // One document so far, holding everything, of the appliance's site and room.
        let docs: i64 = conn
            .query_row(
                "SELECT count(*) FROM documents WHERE kind = 'audit'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(docs, 1);
        let id = store::meta_get(&conn, CURRENT_DOC_KEY).unwrap().unwrap();
        let (_, doc) = store::load_document(&conn, &id).unwrap().unwrap();
        let doc = AuditDoc::from_automerge(doc).unwrap();
        assert_eq!(doc.room().unwrap(), "1");
        assert_eq!(doc.len(), n);
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_FIELD_BYTES);
        let c = cut(&long);
        assert!(c.len() <= MAX_FIELD_BYTES && c.chars().all(|ch| ch == 'é'));
        assert_eq!(cut("short"), "short");
    }
}
