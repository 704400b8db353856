//! The site's controlled-substance ledger at the appliance: entries appended through the
//! recorder (one writer), checked by the ledger's rules against what this room holds of the
//! site's ledger, durable before the answer and synced like any document. And the two gates
//! it puts on a session, once the site keeps its stock in the ledger (it has received stock
//! into it): no infusion starts before its draw is recorded, and no discharge before drawn =
//! given + wasted (+ a witnessed loss) within 0.1 mL.

use serde::Deserialize;
use vigil_shared::clinical;
use vigil_shared::doc::{DocKind, SessionDoc};
use vigil_shared::ledger::doc::{LedgerDoc, LedgerError, ledger_id};
use vigil_shared::ledger::{
    self, Entry, EntryKind, LossKind, Lot, RECONCILE_TOLERANCE_UL, lots, reconcile_session,
    ul_for_mg,
};

use super::{Recorder, RecorderError, new_id};
use crate::store::{self, StoreError};

/// A new entry as asked for: what it records, with who asked (`by`, from the credential) and
/// the witness (whose PIN the caller checked).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LedgerInput {
    /// Stock received into the safe.
    Receipt {
        /// The lot.
        lot: Lot,
        /// mL received.
        ml: f64,
        /// Supplier.
        supplier: String,
        /// Invoice number.
        invoice: String,
    },
    /// Drawn from a lot for a session.
    Draw {
        /// The lot.
        lot_id: String,
        /// mL drawn.
        ml: f64,
        /// The session.
        session_id: String,
    },
    /// The nurse confirms what the pump gave: the delivered dose of the session's dose
    /// timeline, in the lot's mL.
    Administered {
        /// The session.
        session_id: String,
    },
    /// Wasted: a session's remainder, or spoiled stock.
    Waste {
        /// The lot.
        lot_id: String,
        /// mL wasted.
        ml: f64,
        /// The session, for its remainder.
        #[serde(default)]
        session_id: Option<String>,
        /// Why.
        reason: String,
    },
    /// Stock sent elsewhere from the safe.
    Transfer {
        /// The lot.
        lot_id: String,
        /// mL sent.
        ml: f64,
        /// Where to.
        to: String,
        /// Why, or the paperwork's reference.
        reason: String,
    },
    /// A count of a lot.
    Count {
        /// The lot.
        lot_id: String,
        /// mL counted.
        ml: f64,
        /// The biennial inventory.
        #[serde(default)]
        inventory: bool,
    },
    /// A loss or theft (of a session's draw, or from the safe).
    Loss {
        /// The lot.
        lot_id: String,
        /// mL lost.
        ml: f64,
        /// The session whose draw it was lost from.
        #[serde(default)]
        session_id: Option<String>,
        /// Loss or theft.
        kind: LossKind,
        /// What happened.
        reason: String,
    },
    /// A count's discrepancy explained.
    Resolution {
        /// The count.
        count_id: String,
        /// The explanation.
        reason: String,
    },
    /// An entry reversed.
    Correction {
        /// The entry.
        reverses: String,
        /// Why.
        reason: String,
    },
}

/// Microlitres from a person's mL, to the microlitre; refused when not a volume.
fn ul(ml: f64) -> Result<i64, RecorderError> {
    let ul = ml * ledger::UL_PER_ML as f64;
    if ul.is_finite() && ul >= 0.0 && ul <= ledger::MAX_ENTRY_UL as f64 {
        Ok(ul.round() as i64)
    } else {
        Err(RecorderError::Invalid(format!(
            "{ml} mL is not a volume the ledger records (0 to {} mL)",
            ledger::MAX_ENTRY_UL / ledger::UL_PER_ML
        )))
    }
}

impl Recorder {
    /// The site's ledger as this room holds it, if it has one yet.
    pub(super) fn ledger_doc(&self) -> Result<Option<LedgerDoc>, RecorderError> {
        Ok(store::load_typed::<LedgerDoc>(
            &self.conn,
            &ledger_id(&self.cfg.site),
        )?)
    }

    /// Every entry of the site's ledger this room holds.
    pub fn ledger_entries(&self) -> Result<Vec<Entry>, RecorderError> {
        Ok(match self.ledger_doc()? {
            Some(doc) => doc.entries()?,
            None => Vec::new(),
        })
    }

    /// Appends an entry by `by`, witnessed by `witness`; durable when this returns.
    pub fn ledger_append(
        &mut self,
        input: LedgerInput,
        by: &str,
        witness: Option<String>,
        now_us: i64,
    ) -> Result<Entry, RecorderError> {
        let existing = self.ledger_doc()?;
        let entries = match &existing {
            Some(doc) => doc.entries()?,
            None => Vec::new(),
        };
        let kind = self.entry_kind(input, &entries, now_us)?;
        if let Some(session) = kind.session_id()
            && store::document_owner(&self.conn, session)?.is_none()
        {
            return Err(RecorderError::NotFound(format!("session {session}")));
        }
        if let EntryKind::Draw {
            lot_id,
            ul,
            session_id,
        } = &kind
        {
            self.check_draw_covers_dose(&entries, lot_id, *ul, session_id)?;
        }
        let place = match &kind {
            EntryKind::Receipt { .. } | EntryKind::Count { .. } | EntryKind::Transfer { .. } => {
                "safe".to_owned()
            }
            _ => format!("room {}", self.cfg.room),
        };
        let entry = Entry {
            id: new_id(),
            at_us: now_us,
            by: by.to_owned(),
            witness: witness.filter(|w| !w.trim().is_empty()),
            place,
            kind,
        };
        let today = self.site_zone()?.day(now_us);
        let (mut doc, new) = match existing {
            Some(doc) => (doc, false),
            None => (LedgerDoc::create(&self.cfg.site)?, true),
        };
        let heads = doc.automerge().get_heads();
        doc.append(&entry, &today).map_err(|e| match e {
            LedgerError::Refused(r) => RecorderError::Conflict(r.to_string()),
            LedgerError::Doc(d) => RecorderError::Doc(d),
        })?;
        let tx = store::write_tx(&mut self.conn)?;
        if new {
            let bytes = doc.automerge().save();
            store::insert_document(
                &tx,
                &ledger_id(&self.cfg.site),
                DocKind::Ledger.as_str(),
                &self.cfg.site,
                &bytes,
                now_us,
            )?;
        } else {
            let changes = doc.automerge().save_after(&heads);
            // The sync client writes the ledger too (other rooms' entries): fold what is stored.
            store::append_shared(&tx, &ledger_id(&self.cfg.site), &changes, now_us)?;
        }
        tx.commit().map_err(StoreError::from_sqlite)?;
        Ok(entry)
    }

    /// What the input records, in the ledger's units: an administered volume is the
    /// session's delivered dose in the lot it was drawn from.
    fn entry_kind(
        &self,
        input: LedgerInput,
        entries: &[Entry],
        now_us: i64,
    ) -> Result<EntryKind, RecorderError> {
        Ok(match input {
            LedgerInput::Receipt {
                lot,
                ml,
                supplier,
                invoice,
            } => EntryKind::Receipt {
                lot,
                ul: ul(ml)?,
                supplier,
                invoice,
            },
            LedgerInput::Draw {
                lot_id,
                ml,
                session_id,
            } => EntryKind::Draw {
                lot_id,
                ul: ul(ml)?,
                session_id,
            },
            LedgerInput::Administered { session_id } => {
                let drawn_from = ledger::drawn_lot(entries, &session_id).map(str::to_owned);
                let Some(lot_id) = drawn_from else {
                    return Err(RecorderError::Conflict(format!(
                        "session {session_id} has no draw recorded: nothing to administer from"
                    )));
                };
                let mg_per_ml = lots(entries)
                    .get(lot_id.as_str())
                    .map(|l| l.mg_per_ml)
                    .ok_or_else(|| RecorderError::Conflict(format!("lot {lot_id} is unknown")))?;
                let Some(doc) = store::load_typed::<SessionDoc>(&self.conn, &session_id)? else {
                    return Err(RecorderError::NotFound(format!("session {session_id}")));
                };
                let meta = doc.meta()?;
                let end = meta.ended_us.unwrap_or(now_us);
                let mg = clinical::delivered(&meta.dose_events, end).mg;
                let ul = ul_for_mg(mg, mg_per_ml).ok_or_else(|| {
                    RecorderError::Invalid(format!("{mg} mg is not a dose the ledger records"))
                })?;
                EntryKind::Administered {
                    lot_id,
                    ul,
                    session_id,
                }
            }
            LedgerInput::Waste {
                lot_id,
                ml,
                session_id,
                reason,
            } => EntryKind::Waste {
                lot_id,
                ul: ul(ml)?,
                session_id,
                reason,
            },
            LedgerInput::Transfer {
                lot_id,
                ml,
                to,
                reason,
            } => EntryKind::Transfer {
                lot_id,
                ul: ul(ml)?,
                to,
                reason,
            },
            LedgerInput::Count {
                lot_id,
                ml,
                inventory,
            } => EntryKind::Count {
                lot_id,
                counted_ul: ul(ml)?,
                inventory,
            },
            LedgerInput::Loss {
                lot_id,
                ml,
                session_id,
                kind,
                reason,
            } => EntryKind::Loss {
                lot_id,
                ul: ul(ml)?,
                session_id,
                kind,
                reason,
            },
            LedgerInput::Resolution { count_id, reason } => {
                EntryKind::Resolution { count_id, reason }
            }
            LedgerInput::Correction { reverses, reason } => {
                EntryKind::Correction { reverses, reason }
            }
        })
    }

    /// Refuses a draw that, with the session's earlier draws, holds less than the protocol's
    /// total dose, unless it empties its lot (the rest then comes from another).
    fn check_draw_covers_dose(
        &self,
        entries: &[Entry],
        lot_id: &str,
        ul: i64,
        session_id: &str,
    ) -> Result<(), RecorderError> {
        let Some(mg_per_ml) = lots(entries).get(lot_id).map(|l| l.mg_per_ml) else {
            return Ok(()); // the ledger's rules refuse an unknown lot, with the reason
        };
        let Some(doc) = store::load_typed::<SessionDoc>(&self.conn, session_id)? else {
            return Ok(());
        };
        let p = doc.meta()?.protocol;
        let total_mg = p.dose_mg_per_kg * p.weight_kg;
        let drawn_ul = reconcile_session(entries, session_id).drawn_ul + ul;
        let drawn_mg = drawn_ul as f64 / ledger::UL_PER_ML as f64 * mg_per_ml;
        let empties = ledger::balances(entries).get(lot_id).copied() == Some(ul);
        if drawn_mg + 1e-6 >= total_mg || empties {
            return Ok(());
        }
        Err(RecorderError::Conflict(format!(
            "the protocol's total dose is {total_mg:.1} mg; {:.2} mL of {mg_per_ml} mg/mL holds \
             {drawn_mg:.1} mg: draw at least {:.2} mL (or the whole lot, and the rest from another)",
            drawn_ul as f64 / ledger::UL_PER_ML as f64,
            total_mg / mg_per_ml
        )))
    }

    /// Refuses to start session `id`'s infusion until its draw is recorded, when the site
    /// keeps its stock in the ledger.
    pub(super) fn check_draw_recorded(&self, session_id: &str) -> Result<(), RecorderError> {
        let entries = self.ledger_entries()?;
        if lots(&entries).is_empty() {
            return Ok(());
        }
        if reconcile_session(&entries, session_id).drawn_ul > 0 {
            return Ok(());
        }
        Err(RecorderError::Conflict(
            "record the draw first (which lot, how many mL): the controlled-substance ledger \
             accounts for every milligram from the safe before the infusion starts"
                .into(),
        ))
    }

    /// Refuses to discharge session `id` until what was drawn for it is accounted for, when
    /// the site keeps its stock in the ledger and the session drew from it.
    pub(super) fn check_reconciled(&self, session_id: &str) -> Result<(), RecorderError> {
        let entries = self.ledger_entries()?;
        let r = reconcile_session(&entries, session_id);
        if r.drawn_ul == 0 || r.balances() {
            return Ok(());
        }
        let ml = |ul: i64| ul as f64 / ledger::UL_PER_ML as f64;
        Err(RecorderError::Conflict(format!(
            "the ledger does not balance for this session: drawn {:.2} mL, given {:.2} mL, \
             wasted {:.2} mL, lost {:.2} mL, {:.2} mL unaccounted for (at most {:.1} mL); \
             record the administered dose, the witnessed waste, or a witnessed loss with its \
             reason",
            ml(r.drawn_ul),
            ml(r.administered_ul),
            ml(r.wasted_ul),
            ml(r.lost_ul),
            ml(r.unaccounted_ul()),
            ml(RECONCILE_TOLERANCE_UL)
        )))
    }
}
