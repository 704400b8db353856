//! The people side of [`CloudStore`]: user accounts, browser sessions, per-user API tokens and
//! the audit log of reads of patient data, in the same SQLite file as the documents. The audit
//! log holds the cloud's own entries and, beside them, the entries appliances recorded and
//! synced in their audit documents (written by the store's projection, once per entry).
//!
//! Nothing here hashes passwords, decides who may see what or checks timeouts: that is
//! [`crate::auth`]'s job. Secrets are never stored: passwords as argon2 PHC strings (made by
//! `auth`), session cookies and API tokens as SHA-256 digests.

use serde::Serialize;
use vigil_shared::audit::AuditEntry;

use std::collections::BTreeMap;

use super::db::{Arg, Dialect, Row, Sql, ToArg, args};
use super::{CloudStore, StoreError};

/// Most audit entries one read returns; the audit page and CSV export page past this.
pub const MAX_AUDIT_PAGE: u32 = 5_000;

/// A user account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Row id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// `admin`, `regional_manager` or `clinician`.
    pub role: String,
    /// The region of a regional manager, the site of a clinician, empty for an admin.
    pub scope: String,
    /// Argon2 PHC string.
    pub password_hash: String,
    /// A disabled user cannot sign in and their sessions and tokens stop working.
    pub disabled: bool,
    /// Created, µs.
    pub created_us: i64,
}

/// A browser session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSessionRow {
    /// Whose.
    pub user_id: i64,
    /// The session's CSRF token (sent in forms, compared with this).
    pub csrf: String,
    /// Signed in, µs.
    pub created_us: i64,
    /// Last request, µs (updated at most once a minute).
    pub last_seen_us: i64,
}

/// An API token as its owner's account page lists it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiTokenRow {
    /// Row id, to revoke it by.
    pub id: i64,
    /// The label its maker gave it.
    pub label: String,
    /// Made, µs.
    pub created_us: i64,
    /// Refused from this instant on, µs.
    pub expires_us: i64,
    /// Last accepted, µs (recorded at most once a minute).
    pub last_used_us: Option<i64>,
}

/// One audit entry: who read what, when, from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    /// When, µs (the appliance's clock for an appliance's entry).
    pub at_us: i64,
    /// Who (user name, or `service` for the configured token; an appliance's entries name
    /// the staff id or token from the credential there).
    pub username: String,
    /// What was done, e.g. `view session`, `export sessions csv`, `api GET /api/v1/sessions/{id}`.
    pub action: String,
    /// What it concerned (a session or patient id, or a filter).
    pub target: String,
    /// The client's address.
    pub ip: String,
    /// Whether the cloud or an appliance recorded it.
    pub source: AuditSource,
    /// The appliance's site; empty for the cloud's own entries.
    pub site: String,
    /// The appliance's room; empty for the cloud's own entries.
    pub room: String,
    /// The appliance's id of the entry, on which its ingest is idempotent; `None` for the
    /// cloud's own entries.
    pub entry_id: Option<String>,
}

impl AuditRow {
    /// An entry of the cloud's own.
    pub fn cloud(at_us: i64, username: &str, action: &str, target: &str, ip: &str) -> AuditRow {
        AuditRow {
            at_us,
            username: username.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            ip: ip.to_owned(),
            source: AuditSource::Cloud,
            site: String::new(),
            room: String::new(),
            entry_id: None,
        }
    }
}

/// Who recorded an audit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSource {
    /// The cloud (its dashboard and API).
    Cloud,
    /// A room appliance (its screen and API), synced in an audit document.
    Appliance,
}

impl AuditSource {
    /// The stored name: `cloud` or `appliance`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditSource::Cloud => "cloud",
            AuditSource::Appliance => "appliance",
        }
    }

    fn from_db(name: &str) -> AuditSource {
        match name {
            "appliance" => AuditSource::Appliance,
            _ => AuditSource::Cloud,
        }
    }
}

const USER_COLUMNS: &str =
    "u.id, u.username, u.role, u.scope, u.password_hash, u.disabled, u.created_us";

/// A user from [`USER_COLUMNS`] starting at column `at`.
fn user_row(r: &Row, at: usize) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        id: r.get(at)?,
        username: r.get(at + 1)?,
        role: r.get(at + 2)?,
        scope: r.get(at + 3)?,
        password_hash: r.get(at + 4)?,
        disabled: r.get(at + 5)?,
        created_us: r.get(at + 6)?,
    })
}

/// The tables of this module, created by the store's migration to version 2.
pub(super) const SCHEMA_V2: &str = "
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        scope TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_us INTEGER NOT NULL
    );
    CREATE TABLE web_sessions (
        token_hash BLOB PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        csrf TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        last_seen_us INTEGER NOT NULL
    );
    CREATE INDEX web_sessions_by_user ON web_sessions (user_id);
    CREATE TABLE api_tokens (
        token_hash BLOB PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        label TEXT NOT NULL,
        created_us INTEGER NOT NULL
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at_us INTEGER NOT NULL,
        username TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        ip TEXT NOT NULL
    );
    CREATE INDEX audit_by_time ON audit_log (at_us);
";

/// The lifetime the migration to version 4 gives tokens that had none, days: the default
/// lifetime of a new token.
pub const LEGACY_TOKEN_DAYS: i64 = 90;

/// The store's migration to version 4: API tokens get an expiry and a last-used time. Tokens
/// made before it expire [`LEGACY_TOKEN_DAYS`] after they were made. Touches only
/// `api_tokens`.
pub(super) fn schema_v4_tokens() -> String {
    format!(
        "ALTER TABLE api_tokens ADD COLUMN expires_us INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE api_tokens ADD COLUMN last_used_us INTEGER;
         UPDATE api_tokens SET expires_us = created_us + {LEGACY_TOKEN_DAYS} * 86400000000;
         CREATE INDEX api_tokens_by_user ON api_tokens (user_id);"
    )
}

const TOKEN_COLUMNS: &str = "t.rowid, t.label, t.created_us, t.expires_us, t.last_used_us";

fn token_row(r: &Row) -> Result<ApiTokenRow, StoreError> {
    Ok(ApiTokenRow {
        id: r.get(0)?,
        label: r.get(1)?,
        created_us: r.get(2)?,
        expires_us: r.get(3)?,
        last_used_us: r.get(4)?,
    })
}

/// The audit log's columns for appliances' entries, added by the store's migration to
/// version 5. Rows written before read as the cloud's own. An appliance's entry is unique per
/// (site, room, entry id): a re-sync, a duplicate message or a reindex inserts it at most
/// once, and no appliance can suppress another's entries by reusing their ids.
pub(super) const SCHEMA_V5_AUDIT: &str = "
    ALTER TABLE audit_log ADD COLUMN source TEXT NOT NULL DEFAULT 'cloud';
    ALTER TABLE audit_log ADD COLUMN site TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit_log ADD COLUMN room TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit_log ADD COLUMN entry_id TEXT;
    CREATE UNIQUE INDEX audit_by_entry ON audit_log (site, room, entry_id);
";

/// Writes an appliance's audit entries into the audit log, each at most once (an entry
/// already there is left as it is); returns how many were new. Runs inside the caller's
/// transaction (the projection of the audit document they came in).
pub(super) fn insert_appliance_entries(
    db: &mut dyn Sql,
    site: &str,
    room: &str,
    entries: &[AuditEntry],
) -> Result<usize, StoreError> {
    let mut added = 0;
    for e in entries {
        added += db.exec(
            "INSERT INTO audit_log
                 (at_us, username, action, target, ip, source, site, room, entry_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT DO NOTHING",
            args![
                e.at_us,
                e.actor,
                e.action,
                e.target,
                e.client,
                AuditSource::Appliance.as_str(),
                site,
                room,
                e.id
            ],
        )? as usize;
    }
    Ok(added)
}

/// One key's counts in the sign-in limiter (`auth`'s policy decides what they mean).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitRow {
    /// Failed attempts counted.
    pub failures: i64,
    /// Attempts reserved and not yet decided.
    pub in_flight: i64,
    /// The first failure of the window, µs.
    pub window_start_us: i64,
    /// The latest failure, µs.
    pub last_failure_us: i64,
    /// The latest reservation, µs.
    pub reserved_us: i64,
}

/// Limiter rows untouched this long are deleted, µs (two hours: longer than any window or
/// memory of the limiter's).
const LIMIT_ROW_LIFETIME_US: i64 = 2 * 3600 * 1_000_000;

/// Ends a user's browser sessions and revokes their API tokens, in the caller's transaction.
fn end_sessions_and_tokens(db: &mut dyn Sql, username: &str) -> Result<(), StoreError> {
    for table in ["web_sessions", "api_tokens"] {
        db.exec(
            &format!(
                "DELETE FROM {table} WHERE user_id IN (SELECT id FROM users WHERE username = ?1)"
            ),
            args![username],
        )?;
    }
    Ok(())
}

impl CloudStore {
    /// Runs `f` on the sign-in limiter's rows of `keys` (absent ones as zeros) and stores what
    /// it leaves, in one transaction that holds those rows against every other instance:
    /// concurrent attempts on one key are counted one after the other.
    pub fn update_limits<T>(
        &self,
        keys: &[String],
        now_us: i64,
        f: impl FnOnce(&mut BTreeMap<String, LimitRow>) -> T,
    ) -> Result<T, StoreError> {
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        self.write(|db| {
            // Rows are made, then locked, in key order, so that two attempts sharing keys never
            // wait on each other in a circle.
            for key in &keys {
                db.exec(
                    "INSERT INTO signin_limits (key, failures, in_flight, window_start_us,
                                                last_failure_us, reserved_us, touched_us)
                     VALUES (?1, 0, 0, 0, 0, 0, ?2) ON CONFLICT DO NOTHING",
                    args![key, now_us],
                )?;
            }
            let lock = match db.dialect() {
                Dialect::Postgres => " FOR UPDATE",
                Dialect::Sqlite => "",
            };
            let args: Vec<Arg<'_>> = keys.iter().map(|k| k.to_arg()).collect();
            let marks = vec!["?"; keys.len()].join(", ");
            let mut rows = BTreeMap::new();
            for r in db.rows(
                &format!(
                    "SELECT key, failures, in_flight, window_start_us, last_failure_us,
                            reserved_us
                     FROM signin_limits WHERE key IN ({marks}) ORDER BY key{lock}"
                ),
                &args,
            )? {
                rows.insert(
                    r.get::<String>(0)?,
                    LimitRow {
                        failures: r.get(1)?,
                        in_flight: r.get(2)?,
                        window_start_us: r.get(3)?,
                        last_failure_us: r.get(4)?,
                        reserved_us: r.get(5)?,
                    },
                );
            }
            let out = f(&mut rows);
            for (key, r) in &rows {
                db.exec(
                    "UPDATE signin_limits SET failures = ?2, in_flight = ?3, window_start_us = ?4,
                         last_failure_us = ?5, reserved_us = ?6, touched_us = ?7
                     WHERE key = ?1",
                    args![
                        key,
                        r.failures,
                        r.in_flight,
                        r.window_start_us,
                        r.last_failure_us,
                        r.reserved_us,
                        now_us
                    ],
                )?;
            }
            db.exec(
                "DELETE FROM signin_limits WHERE touched_us < ?1",
                args![now_us - LIMIT_ROW_LIFETIME_US],
            )?;
            Ok(out)
        })
    }

    /// Creates a user; [`StoreError::Conflict`] if the name is taken.
    pub fn create_user(
        &self,
        username: &str,
        role: &str,
        scope: &str,
        password_hash: &str,
        now_us: i64,
    ) -> Result<i64, StoreError> {
        self.write(|db| {
            let taken: bool = db
                .one(
                    "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)",
                    args![username],
                )?
                .get(0)?;
            if taken {
                return Err(StoreError::Conflict(format!(
                    "user {username:?} already exists"
                )));
            }
            db.one(
                "INSERT INTO users (username, role, scope, password_hash, disabled, created_us)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5) RETURNING id",
                args![username, role, scope, password_hash, now_us],
            )?
            .get(0)
        })
    }

    /// Replaces a user's password hash, ends their browser sessions and revokes their API
    /// tokens (whoever knew the old password may have made one); `false` if there is no such
    /// user.
    pub fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        self.write(|db| {
            let n = db.exec(
                "UPDATE users SET password_hash = ?2 WHERE username = ?1",
                args![username, password_hash],
            )?;
            end_sessions_and_tokens(db, username)?;
            Ok(n > 0)
        })
    }

    /// Disables (or re-enables) a user; disabling ends their sessions and revokes their API
    /// tokens. `false` if there is no such user.
    pub fn set_disabled(&self, username: &str, disabled: bool) -> Result<bool, StoreError> {
        self.write(|db| {
            let n = db.exec(
                "UPDATE users SET disabled = ?2 WHERE username = ?1",
                args![username, disabled],
            )?;
            if disabled {
                end_sessions_and_tokens(db, username)?;
            }
            Ok(n > 0)
        })
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        self.read(|db| {
            db.rows(
                &format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.username"),
                &[],
            )?
            .iter()
            .map(|r| user_row(r, 0))
            .collect()
        })
    }

    /// A user by name.
    pub fn user_by_name(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        self.read(|db| {
            db.row(
                &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username = ?1"),
                args![username],
            )?
            .map(|r| user_row(&r, 0))
            .transpose()
        })
    }

    /// Records a new browser session under the digest of its cookie.
    pub fn create_web_session(
        &self,
        token_hash: &[u8],
        user_id: i64,
        csrf: &str,
        now_us: i64,
    ) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "INSERT INTO web_sessions (token_hash, user_id, csrf, created_us, last_seen_us)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                args![token_hash, user_id, csrf, now_us],
            )
        })?;
        Ok(())
    }

    /// A browser session and its user, by the digest of its cookie.
    pub fn web_session(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<(WebSessionRow, UserRow)>, StoreError> {
        self.read(|db| {
            db.row(
                &format!(
                    "SELECT s.user_id, s.csrf, s.created_us, s.last_seen_us, {USER_COLUMNS}
                     FROM web_sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.token_hash = ?1"
                ),
                args![token_hash],
            )?
            .map(|r| {
                Ok((
                    WebSessionRow {
                        user_id: r.get(0)?,
                        csrf: r.get(1)?,
                        created_us: r.get(2)?,
                        last_seen_us: r.get(3)?,
                    },
                    user_row(&r, 4)?,
                ))
            })
            .transpose()
        })
    }

    /// Marks a browser session as used now.
    pub fn touch_web_session(&self, token_hash: &[u8], now_us: i64) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "UPDATE web_sessions SET last_seen_us = ?2 WHERE token_hash = ?1",
                args![token_hash, now_us],
            )
        })?;
        Ok(())
    }

    /// Ends a browser session (sign-out, timeout).
    pub fn delete_web_session(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "DELETE FROM web_sessions WHERE token_hash = ?1",
                args![token_hash],
            )
        })?;
        Ok(())
    }

    /// Records an API token of a user under its digest; returns its id.
    pub fn create_api_token(
        &self,
        token_hash: &[u8],
        user_id: i64,
        label: &str,
        now_us: i64,
        expires_us: i64,
    ) -> Result<i64, StoreError> {
        self.write(|db| {
            db.one(
                "INSERT INTO api_tokens (token_hash, user_id, label, created_us, expires_us)
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING rowid",
                args![token_hash, user_id, label, now_us, expires_us],
            )?
            .get(0)
        })
    }

    /// An API token and the user it belongs to, by the token's digest. Expiry is the
    /// caller's to check.
    pub fn api_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<(ApiTokenRow, UserRow)>, StoreError> {
        self.read(|db| {
            db.row(
                &format!(
                    "SELECT {TOKEN_COLUMNS}, {USER_COLUMNS}
                     FROM api_tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = ?1"
                ),
                args![token_hash],
            )?
            .map(|r| Ok((token_row(&r)?, user_row(&r, 5)?)))
            .transpose()
        })
    }

    /// Records that an API token was used.
    pub fn touch_api_token(&self, id: i64, now_us: i64) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "UPDATE api_tokens SET last_used_us = ?2 WHERE rowid = ?1",
                args![id, now_us],
            )
        })?;
        Ok(())
    }

    /// A user's API tokens, newest first (expired ones too, until revoked).
    pub fn api_tokens(&self, user_id: i64) -> Result<Vec<ApiTokenRow>, StoreError> {
        self.read(|db| {
            db.rows(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.user_id = ?1
                     ORDER BY t.created_us DESC, t.rowid DESC"
                ),
                args![user_id],
            )?
            .iter()
            .map(token_row)
            .collect()
        })
    }

    /// Revokes (deletes) one of a user's API tokens; `false` if that user has no token with
    /// this id.
    pub fn revoke_api_token(&self, user_id: i64, id: i64) -> Result<bool, StoreError> {
        let n = self.write(|db| {
            db.exec(
                "DELETE FROM api_tokens WHERE rowid = ?1 AND user_id = ?2",
                args![id, user_id],
            )
        })?;
        Ok(n > 0)
    }

    /// Appends to the audit log.
    pub fn audit(&self, entry: &AuditRow) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "INSERT INTO audit_log (at_us, username, action, target, ip, source, site, room,
                                    entry_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                args![
                    entry.at_us,
                    entry.username,
                    entry.action,
                    entry.target,
                    entry.ip,
                    entry.source.as_str(),
                    entry.site,
                    entry.room,
                    entry.entry_id
                ],
            )
        })?;
        Ok(())
    }

    /// Audit entries, newest first by when they happened (an appliance's entries that arrive
    /// after a week offline land at their own time, not on top), at most [`MAX_AUDIT_PAGE`];
    /// and how many there are.
    pub fn audit_log(&self, limit: u32, offset: u32) -> Result<(u64, Vec<AuditRow>), StoreError> {
        let limit = limit.min(MAX_AUDIT_PAGE);
        self.read(|db| {
            let total: i64 = db.one("SELECT count(*) FROM audit_log", &[])?.get(0)?;
            let rows = db
                .rows(
                    "SELECT at_us, username, action, target, ip, source, site, room, entry_id
                     FROM audit_log ORDER BY at_us DESC, id DESC LIMIT ?1 OFFSET ?2",
                    args![limit, offset],
                )?
                .iter()
                .map(|r| {
                    Ok(AuditRow {
                        at_us: r.get(0)?,
                        username: r.get(1)?,
                        action: r.get(2)?,
                        target: r.get(3)?,
                        ip: r.get(4)?,
                        source: AuditSource::from_db(&r.get::<String>(5)?),
                        site: r.get(6)?,
                        room: r.get(7)?,
                        entry_id: r.get(8)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok((u64::try_from(total).unwrap_or(0), rows))
        })
    }
}
