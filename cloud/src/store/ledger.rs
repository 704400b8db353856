//! The ledger side of [`CloudStore`]: each site's ledger entries as the cloud received them.
//!
//! The ledger document is the record; `ledger_entries` indexes its entries by site and time
//! for the ledger page and the inspectors' reports, with the time the cloud first received
//! each (21 CFR 1304 wants both the writer's and a trusted clock). An entry is inserted once
//! and never changed; a reindex keeps the first receive time.

use vigil_shared::ledger::{Entry, EntryKind};

use super::db::{Sql, args};
use super::{CloudStore, StoreError};

/// An entry with the cloud's receive time.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    /// The entry as written.
    pub entry: Entry,
    /// When the cloud first received it, µs.
    pub received_us: i64,
}

/// The kind's stored name.
pub fn kind_name(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::Receipt { .. } => "receipt",
        EntryKind::Draw { .. } => "draw",
        EntryKind::Administered { .. } => "administered",
        EntryKind::Waste { .. } => "waste",
        EntryKind::Transfer { .. } => "transfer",
        EntryKind::Count { .. } => "count",
        EntryKind::Loss { .. } => "loss",
        EntryKind::Resolution { .. } => "resolution",
        EntryKind::Correction { .. } => "correction",
    }
}

/// Records entries not recorded yet, received at `now_us`; how many were new.
pub(super) fn insert_entries(
    db: &mut dyn Sql,
    site: &str,
    entries: &[Entry],
    now_us: i64,
) -> Result<usize, StoreError> {
    let mut added = 0;
    for e in entries {
        let (lot, session, ul) = (e.kind.lot_id(), e.kind.session_id(), e.kind.quantity_ul());
        let json = serde_json::to_string(e).map_err(|err| StoreError::InvalidDocument {
            id: e.id.clone(),
            reason: err.to_string(),
        })?;
        added += db.exec(
            "INSERT INTO ledger_entries (site, entry_id, at_us, received_us, by_staff, witness,
                                         place, kind, lot_id, session_id, ul, entry)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT DO NOTHING",
            args![
                site,
                e.id,
                e.at_us,
                now_us,
                e.by,
                e.witness,
                e.place,
                kind_name(&e.kind),
                lot,
                session,
                ul,
                json
            ],
        )? as usize;
    }
    Ok(added)
}

impl CloudStore {
    /// A site's ledger entries written (by the writer's clock) in `from_us..to_us`, oldest
    /// first, with their receive times. The caller checks the site is in scope.
    pub fn ledger_entries(
        &self,
        site: &str,
        from_us: i64,
        to_us: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        self.read(|db| {
            db.rows(
                "SELECT entry, received_us FROM ledger_entries
                 WHERE site = ?1 AND at_us >= ?2 AND at_us < ?3
                 ORDER BY at_us, entry_id",
                args![site, from_us, to_us],
            )?
            .iter()
            .map(|r| {
                let text: String = r.get(0)?;
                let entry = serde_json::from_str(&text).map_err(|e| {
                    StoreError::Database(format!("ledger entry in {site} unreadable: {e}"))
                })?;
                Ok(LedgerRow {
                    entry,
                    received_us: r.get(1)?,
                })
            })
            .collect()
        })
    }
}
