//! Copying a whole store into an empty one, on either engine: `vigil-cloud backup` (into a new
//! SQLite file), `restore` (from one) and `migrate-store` (a SQLite cloud into PostgreSQL).
//!
//! The source is read in one read transaction, so the copy is one consistent moment even
//! while the cloud runs; the destination is written in one transaction, so it holds all of it
//! or nothing. Tables are read a page at a time in primary-key order, so memory stays near a
//! page however large the database. Row ids (users, API tokens, the audit log) are kept, and
//! PostgreSQL's id sequences are moved past them.

use serde::Serialize;

use super::db::{Arg, Dialect, Sql, Val, args};
use super::{CloudStore, StoreError};

/// Rows copied per query.
const PAGE: i64 = 500;

/// Every table of the schema: its name, its columns, and the columns of its primary key (the
/// page order). Derived tables are copied too, so a restored cloud serves at once; `reindex`
/// afterwards rebuilds them identically.
pub(super) const TABLES: &[(&str, &[&str], &str)] = &[
    (
        "documents",
        &[
            "id",
            "kind",
            "site",
            "snapshot",
            "heads",
            "created_us",
            "updated_us",
        ],
        "id",
    ),
    ("doc_changes", &["doc_id", "hash", "bytes"], "doc_id, hash"),
    (
        "sessions",
        &[
            "id",
            "site",
            "room",
            "patient_id",
            "state",
            "drug",
            "route",
            "created_us",
            "started_us",
            "ended_us",
            "planned_minutes",
            "dose_mg_per_kg",
            "weight_kg",
            "n_advisories",
            "has_advisory",
            "max_advisory_priority",
            "n_observations",
            "discharge_us",
            "discharge_aldrete",
            "updated_us",
        ],
        "id",
    ),
    (
        "session_channels",
        &[
            "session_id",
            "channel",
            "samples",
            "first_us",
            "last_us",
            "chunks",
            "corrupt_chunks",
            "checksum",
            "prefix_hash",
        ],
        "session_id, channel",
    ),
    (
        "advisories",
        &[
            "session_id",
            "id",
            "kind",
            "subject",
            "priority",
            "detail",
            "raised_us",
            "acknowledged_us",
            "acknowledged_by",
            "cleared_us",
        ],
        "session_id, id",
    ),
    (
        "events",
        &["session_id", "id", "type", "at_us", "detail", "\"by\""],
        "session_id, type, id",
    ),
    (
        "attention",
        &["session_id", "n", "kind", "at_us", "detail"],
        "session_id, n",
    ),
    (
        "patients",
        &[
            "id",
            "site",
            "given_name",
            "family_name",
            "birth_date",
            "course",
            "outcome_scores",
        ],
        "id",
    ),
    (
        "appliances",
        &[
            "site",
            "room",
            "connected",
            "software",
            "first_seen_us",
            "last_seen_us",
            "last_sync_us",
            "backlog_docs",
            "backlog_bytes",
            "instance",
            "protocol",
            "cert_serial",
            "cert_not_after_us",
            "clock_skew_us",
            "report",
        ],
        "site, room",
    ),
    (
        "enrol_codes",
        &[
            "code_hash",
            "site",
            "room",
            "replaces_active",
            "created_by",
            "created_us",
            "expires_us",
            "used_us",
            "serial",
        ],
        "code_hash",
    ),
    (
        "certificates",
        &[
            "serial",
            "site",
            "room",
            "source",
            "issued_us",
            "not_after_us",
            "replaces",
            "revoke_after_us",
            "revoked_us",
        ],
        "serial",
    ),
    (
        "ledger_entries",
        &[
            "site",
            "entry_id",
            "at_us",
            "received_us",
            "by_staff",
            "witness",
            "place",
            "kind",
            "lot_id",
            "session_id",
            "ul",
            "entry",
        ],
        "site, entry_id",
    ),
    (
        "users",
        &[
            "id",
            "username",
            "role",
            "scope",
            "password_hash",
            "disabled",
            "created_us",
        ],
        "id",
    ),
    (
        "web_sessions",
        &[
            "token_hash",
            "user_id",
            "csrf",
            "created_us",
            "last_seen_us",
        ],
        "token_hash",
    ),
    (
        "api_tokens",
        &[
            "rowid",
            "token_hash",
            "user_id",
            "label",
            "created_us",
            "expires_us",
            "last_used_us",
        ],
        "rowid",
    ),
    (
        "audit_log",
        &[
            "id", "at_us", "username", "action", "target", "ip", "source", "site", "room",
            "entry_id",
        ],
        "id",
    ),
];

/// The id columns PostgreSQL fills from a sequence, moved past the copied rows.
const SERIALS: &[(&str, &str)] = &[
    ("users", "id"),
    ("api_tokens", "rowid"),
    ("audit_log", "id"),
];

/// Rows copied, per table, in schema order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// `(table, rows)`.
    pub tables: Vec<(String, u64)>,
}

impl CopyReport {
    /// Rows of one table.
    pub fn rows(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|(t, _)| t == table)
            .map_or(0, |(_, n)| *n)
    }
}

impl CloudStore {
    /// Copies everything this store holds into `dest`, which must be empty (no document,
    /// user or audit entry); see the module documentation.
    pub fn copy_into(&self, dest: &CloudStore) -> Result<CopyReport, StoreError> {
        self.read(|src| {
            dest.write(|dst| {
                for table in ["documents", "users", "audit_log"] {
                    let n: i64 = dst
                        .one(&format!("SELECT count(*) FROM {table}"), &[])?
                        .get(0)?;
                    if n > 0 {
                        return Err(StoreError::Conflict(format!(
                            "the destination ({}) is not empty: its {table} table holds {n} \
                             rows; copy only into a new database",
                            dest.describe()
                        )));
                    }
                }
                let mut report = CopyReport::default();
                for (table, columns, key) in TABLES {
                    let n = copy_table(src, dst, table, columns, key)?;
                    report.tables.push(((*table).to_owned(), n));
                }
                if dst.dialect() == Dialect::Postgres {
                    for (table, column) in SERIALS {
                        dst.exec(
                            &format!(
                                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                                               coalesce(max({column}), 0) + 1, false)
                                 FROM {table}"
                            ),
                            &[],
                        )?;
                    }
                }
                Ok(report)
            })
        })
    }
}

fn copy_table(
    src: &mut dyn Sql,
    dst: &mut dyn Sql,
    table: &str,
    columns: &[&str],
    key: &str,
) -> Result<u64, StoreError> {
    let list = columns.join(", ");
    let select = format!("SELECT {list} FROM {table} ORDER BY {key} LIMIT ?1 OFFSET ?2");
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({list}) VALUES ({})",
        placeholders.join(", ")
    );
    let mut copied = 0i64;
    loop {
        let rows = src.rows(&select, args![PAGE, copied])?;
        for row in &rows {
            let values: Vec<Arg<'_>> = row.0.iter().map(as_arg).collect();
            dst.exec(&insert, &values)?;
        }
        copied += rows.len() as i64;
        if (rows.len() as i64) < PAGE {
            return Ok(copied as u64);
        }
    }
}

fn as_arg(v: &Val) -> Arg<'_> {
    match v {
        Val::Null => Arg::Null,
        Val::Int(n) => Arg::Int(*n),
        Val::Real(x) => Arg::Real(*x),
        Val::Text(s) => Arg::Text(s.as_str().into()),
        Val::Blob(b) => Arg::Blob(b.as_slice().into()),
    }
}
