//! The controlled-substance ledger's rules: every milligram of a site's ketamine from the safe
//! to the patient or the waste (21 CFR 1304), as pure functions over an append-only list of
//! entries.
//!
//! Nothing here is stored as a balance: the balance of each lot is derived from the entries
//! every time ([`balances`]), so entries written offline in several rooms merge into the right
//! figure. Nothing is edited or deleted: a mistake is corrected by a new entry that reverses
//! the original ([`EntryKind::Correction`]). Volumes are whole microlitres, so sums are exact;
//! milligrams follow from a lot's concentration.
//!
//! [`check_entry`] is the gate every new entry passes (quantities, lots, witnesses, balance);
//! [`reconcile_session`] is the discharge's check that drawn = administered + wasted;
//! [`open_discrepancies`] lists counts that disagree with the derived balance and are not yet
//! resolved; [`form_106_due`] and [`biennial_inventory_due`] are the regulatory deadlines.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::zone::{SiteZone, US_PER_DAY};

pub mod doc;

/// Microlitres in a millilitre.
pub const UL_PER_ML: i64 = 1_000;

/// The most one entry may move, µL (1 L): a vial holds 10-50 mL and a receipt a few boxes; a
/// larger figure is a typo.
pub const MAX_ENTRY_UL: i64 = 1_000 * UL_PER_ML;

/// How far drawn and administered-plus-wasted may differ for a session, µL of the lot (0.1 mL).
pub const RECONCILE_TOLERANCE_UL: i64 = 100;

/// How long ledger entries are kept at least, µs (two years; 21 CFR 1304.04).
pub const RETENTION_US: i64 = 2 * 366 * US_PER_DAY;

/// How often the full inventory is taken, µs (every two years; 21 CFR 1304.11).
pub const BIENNIAL_US: i64 = 2 * 365 * US_PER_DAY;

/// A lot in the safe, as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lot {
    /// The site's id for the lot (unique per site).
    pub id: String,
    /// National Drug Code.
    pub ndc: String,
    /// Product name and form.
    pub product: String,
    /// Manufacturer's lot number.
    pub lot_number: String,
    /// Strength, mg/mL.
    pub mg_per_ml: f64,
    /// Expiry, `YYYY-MM-DD` (the last day it may be used).
    pub expiry: String,
}

/// Why a loss is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Lost (broken vial, spill) or unexplained.
    Loss,
    /// Stolen.
    Theft,
}

/// What an entry records. Stored as JSON with its `type` beside its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EntryKind {
    /// Stock received into the safe.
    Receipt {
        /// The lot.
        lot: Lot,
        /// Total volume received, µL.
        ul: i64,
        /// Supplier.
        supplier: String,
        /// Invoice number.
        invoice: String,
    },
    /// Drawn from a lot into a session's bag.
    Draw {
        /// The lot.
        lot_id: String,
        /// Volume drawn, µL.
        ul: i64,
        /// The session.
        session_id: String,
    },
    /// What the pump delivered to the patient, confirmed by the nurse at the end.
    Administered {
        /// The lot the bag was drawn from.
        lot_id: String,
        /// Volume of the lot's stock delivered, µL (the delivered mg over the lot's mg/mL).
        ul: i64,
        /// The session.
        session_id: String,
    },
    /// Wasted: what was drawn and not given, or stock spoiled in the safe.
    Waste {
        /// The lot.
        lot_id: String,
        /// Volume of the lot's stock, µL.
        ul: i64,
        /// The session, when it is a session's remainder.
        session_id: Option<String>,
        /// Why.
        reason: String,
    },
    /// Stock sent from this site's safe elsewhere (another site of the clinic, or back to the
    /// supplier); whoever receives it records a receipt.
    Transfer {
        /// The lot.
        lot_id: String,
        /// Volume sent, µL.
        ul: i64,
        /// Where it went.
        to: String,
        /// Why, or the paperwork's reference (an order form or a return authorisation).
        reason: String,
    },
    /// A count of a lot in the safe.
    Count {
        /// The lot.
        lot_id: String,
        /// What was counted, µL.
        counted_ul: i64,
        /// Whether this count is the biennial inventory.
        inventory: bool,
    },
    /// A loss or theft: from the safe, or (with a session) of what was drawn for a session
    /// and cannot be accounted for by what was given and wasted — the discrepancy a
    /// discharge records with its reason and witness.
    Loss {
        /// The lot.
        lot_id: String,
        /// Volume lost, µL.
        ul: i64,
        /// The session whose draw it was lost from; none for stock lost from the safe.
        #[serde(default)]
        session_id: Option<String>,
        /// Loss or theft.
        kind: LossKind,
        /// What happened.
        reason: String,
    },
    /// A count's discrepancy resolved.
    Resolution {
        /// The count entry.
        count_id: String,
        /// What explained it.
        reason: String,
    },
    /// Reverses an earlier entry (its effect on balances and reconciliation disappears).
    Correction {
        /// The entry reversed.
        reverses: String,
        /// Why.
        reason: String,
    },
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Unique id.
    pub id: String,
    /// When, on the writer's clock, µs.
    pub at_us: i64,
    /// Who (staff id).
    pub by: String,
    /// The second person, where one is required.
    pub witness: Option<String>,
    /// Where: `safe` or a room.
    pub place: String,
    /// What.
    pub kind: EntryKind,
}

impl EntryKind {
    fn needs_witness(&self) -> bool {
        !matches!(
            self,
            EntryKind::Draw { .. } | EntryKind::Administered { .. }
        )
    }

    /// The lot the entry concerns, if any.
    pub fn lot_id(&self) -> Option<&str> {
        match self {
            EntryKind::Receipt { lot, .. } => Some(&lot.id),
            EntryKind::Draw { lot_id, .. }
            | EntryKind::Administered { lot_id, .. }
            | EntryKind::Waste { lot_id, .. }
            | EntryKind::Transfer { lot_id, .. }
            | EntryKind::Count { lot_id, .. }
            | EntryKind::Loss { lot_id, .. } => Some(lot_id),
            EntryKind::Resolution { .. } | EntryKind::Correction { .. } => None,
        }
    }

    /// The volume it records (a count's counted volume), µL, if any.
    pub fn quantity_ul(&self) -> Option<i64> {
        match self {
            EntryKind::Receipt { ul, .. }
            | EntryKind::Draw { ul, .. }
            | EntryKind::Administered { ul, .. }
            | EntryKind::Waste { ul, .. }
            | EntryKind::Transfer { ul, .. }
            | EntryKind::Loss { ul, .. } => Some(*ul),
            EntryKind::Count { counted_ul, .. } => Some(*counted_ul),
            EntryKind::Resolution { .. } | EntryKind::Correction { .. } => None,
        }
    }

    /// The session it concerns, if any.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            EntryKind::Draw { session_id, .. } | EntryKind::Administered { session_id, .. } => {
                Some(session_id)
            }
            EntryKind::Waste { session_id, .. } | EntryKind::Loss { session_id, .. } => {
                session_id.as_deref()
            }
            _ => None,
        }
    }

    /// What the entry does to its lot's balance in the safe, µL.
    fn safe_delta_ul(&self) -> i64 {
        match self {
            EntryKind::Receipt { ul, .. } => *ul,
            EntryKind::Draw { ul, .. }
            | EntryKind::Transfer { ul, .. }
            | EntryKind::Loss {
                ul,
                session_id: None,
                ..
            } => -ul,
            // Spoiled or lost stock leaves the safe; a session's remainder (wasted or lost)
            // already left with the draw.
            EntryKind::Waste {
                ul,
                session_id: None,
                ..
            } => -ul,
            _ => 0,
        }
    }
}

/// Why an entry is refused. Nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerRefused {
    /// A quantity that is zero, negative or absurd.
    #[error("quantity {ul} µL is outside 1 µL to {max} mL", max = MAX_ENTRY_UL / UL_PER_ML)]
    Quantity {
        /// Given.
        ul: i64,
    },
    /// A count below zero or absurd.
    #[error("a count of {ul} µL is outside 0 to {max} mL", max = MAX_ENTRY_UL / UL_PER_ML)]
    Count {
        /// Given.
        ul: i64,
    },
    /// A lot the safe has no receipt for.
    #[error("lot {0} is not in the safe")]
    UnknownLot(String),
    /// A lot received twice.
    #[error("lot {0} was already received; record more stock under a new lot id")]
    DuplicateLot(String),
    /// A lot past its expiry.
    #[error("lot {lot} expired on {expiry}")]
    Expired {
        /// The lot.
        lot: String,
        /// Its expiry.
        expiry: String,
    },
    /// More than the lot holds.
    #[error("lot {lot} holds {have} µL; {want} µL would take it below zero")]
    Insufficient {
        /// The lot.
        lot: String,
        /// What it holds.
        have: i64,
        /// What the entry takes.
        want: i64,
    },
    /// A witness missing, or the same person.
    #[error("a second licensed staff member must witness this, not the person recording it")]
    Witness,
    /// A reason missing.
    #[error("give the reason")]
    NoReason,
    /// A lot whose details are incomplete or implausible.
    #[error("lot details: {0}")]
    LotDetails(&'static str),
    /// A correction or resolution that points nowhere, or at what is already reversed.
    #[error("entry {0} does not exist or is already corrected")]
    NoSuchEntry(String),
    /// An id used before.
    #[error("entry id {0} is already in the ledger")]
    DuplicateId(String),
}

/// Ids of entries reversed by a correction.
fn reversed(entries: &[Entry]) -> Vec<&str> {
    entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Correction { reverses, .. } => Some(reverses.as_str()),
            _ => None,
        })
        .collect()
}

/// The entries in effect: all but the corrections and what they reverse.
pub fn effective(entries: &[Entry]) -> Vec<&Entry> {
    let reversed = reversed(entries);
    entries
        .iter()
        .filter(|e| !matches!(e.kind, EntryKind::Correction { .. }))
        .filter(|e| !reversed.contains(&e.id.as_str()))
        .collect()
}

/// The lots received (and not reversed), by id.
pub fn lots(entries: &[Entry]) -> BTreeMap<&str, &Lot> {
    effective(entries)
        .into_iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Receipt { lot, .. } => Some((lot.id.as_str(), lot)),
            _ => None,
        })
        .collect()
}

/// The derived balance of each lot in the safe, µL.
pub fn balances(entries: &[Entry]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for e in effective(entries) {
        if let Some(lot) = e.kind.lot_id() {
            *out.entry(lot.to_owned()).or_insert(0) += e.kind.safe_delta_ul();
        }
    }
    out
}

/// Checks a new entry against the ledger so far, on `today` (the site's date, `YYYY-MM-DD`).
pub fn check_entry(entries: &[Entry], new: &Entry, today: &str) -> Result<(), LedgerRefused> {
    if entries.iter().any(|e| e.id == new.id) {
        return Err(LedgerRefused::DuplicateId(new.id.clone()));
    }
    if new.kind.needs_witness() {
        match &new.witness {
            Some(w) if !w.trim().is_empty() && w != &new.by => {}
            _ => return Err(LedgerRefused::Witness),
        }
    }
    match (&new.kind, new.kind.quantity_ul()) {
        (EntryKind::Count { .. }, Some(ul)) if !(0..=MAX_ENTRY_UL).contains(&ul) => {
            return Err(LedgerRefused::Count { ul });
        }
        (EntryKind::Count { .. }, _) => {}
        (_, Some(ul)) if !(1..=MAX_ENTRY_UL).contains(&ul) => {
            return Err(LedgerRefused::Quantity { ul });
        }
        _ => {}
    }
    match &new.kind {
        EntryKind::Receipt { lot, .. } => check_lot(entries, lot),
        EntryKind::Transfer { to, .. } if to.trim().is_empty() => Err(LedgerRefused::NoReason),
        EntryKind::Waste { reason, .. }
        | EntryKind::Loss { reason, .. }
        | EntryKind::Transfer { reason, .. }
            if reason.trim().is_empty() =>
        {
            Err(LedgerRefused::NoReason)
        }
        EntryKind::Resolution { count_id, reason } => {
            if reason.trim().is_empty() {
                return Err(LedgerRefused::NoReason);
            }
            let is_count = effective(entries)
                .iter()
                .any(|e| &e.id == count_id && matches!(e.kind, EntryKind::Count { .. }));
            if is_count {
                Ok(())
            } else {
                Err(LedgerRefused::NoSuchEntry(count_id.clone()))
            }
        }
        EntryKind::Correction { reverses, reason } => {
            if reason.trim().is_empty() {
                return Err(LedgerRefused::NoReason);
            }
            if effective(entries).iter().any(|e| &e.id == reverses) {
                Ok(())
            } else {
                Err(LedgerRefused::NoSuchEntry(reverses.clone()))
            }
        }
        kind => check_lot_use(entries, kind, today),
    }
}

fn check_lot(entries: &[Entry], lot: &Lot) -> Result<(), LedgerRefused> {
    if lots(entries).contains_key(lot.id.as_str()) {
        return Err(LedgerRefused::DuplicateLot(lot.id.clone()));
    }
    if lot.id.trim().is_empty() || lot.ndc.trim().is_empty() || lot.lot_number.trim().is_empty() {
        return Err(LedgerRefused::LotDetails(
            "id, NDC and lot number are required",
        ));
    }
    if !(lot.mg_per_ml.is_finite() && (1.0..=500.0).contains(&lot.mg_per_ml)) {
        return Err(LedgerRefused::LotDetails("strength must be 1-500 mg/mL"));
    }
    if SiteZone::utc().parse_day(&lot.expiry).is_none() {
        return Err(LedgerRefused::LotDetails(
            "expiry must be a date, YYYY-MM-DD",
        ));
    }
    Ok(())
}

fn check_lot_use(entries: &[Entry], kind: &EntryKind, today: &str) -> Result<(), LedgerRefused> {
    let Some(lot_id) = kind.lot_id() else {
        return Ok(());
    };
    let lots = lots(entries);
    let Some(lot) = lots.get(lot_id) else {
        return Err(LedgerRefused::UnknownLot(lot_id.to_owned()));
    };
    if matches!(kind, EntryKind::Draw { .. }) && today > lot.expiry.as_str() {
        return Err(LedgerRefused::Expired {
            lot: lot_id.to_owned(),
            expiry: lot.expiry.clone(),
        });
    }
    let delta = kind.safe_delta_ul();
    let have = balances(entries).get(lot_id).copied().unwrap_or(0);
    if delta < 0 && have + delta < 0 {
        return Err(LedgerRefused::Insufficient {
            lot: lot_id.to_owned(),
            have,
            want: -delta,
        });
    }
    Ok(())
}

/// A session's reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciliation {
    /// Drawn, µL of stock.
    pub drawn_ul: i64,
    /// Administered, µL of stock.
    pub administered_ul: i64,
    /// Wasted, µL of stock.
    pub wasted_ul: i64,
    /// Recorded as lost from the session's draw (a discrepancy with its reason and witness),
    /// µL of stock.
    pub lost_ul: i64,
}

impl Reconciliation {
    /// Drawn minus administered, wasted and recorded lost, µL: positive is unaccounted for.
    pub fn unaccounted_ul(&self) -> i64 {
        self.drawn_ul - self.administered_ul - self.wasted_ul - self.lost_ul
    }

    /// Whether it balances within [`RECONCILE_TOLERANCE_UL`].
    pub fn balances(&self) -> bool {
        self.unaccounted_ul().abs() <= RECONCILE_TOLERANCE_UL
    }
}

/// The lot session `session_id` was drawn from (its first draw in effect), if any.
pub fn drawn_lot<'a>(entries: &'a [Entry], session_id: &str) -> Option<&'a str> {
    effective(entries).into_iter().find_map(|e| match &e.kind {
        EntryKind::Draw {
            lot_id,
            session_id: s,
            ..
        } if s == session_id => Some(lot_id.as_str()),
        _ => None,
    })
}

/// Drawn, administered and wasted for one session, from the entries in effect.
pub fn reconcile_session(entries: &[Entry], session_id: &str) -> Reconciliation {
    let mut r = Reconciliation {
        drawn_ul: 0,
        administered_ul: 0,
        wasted_ul: 0,
        lost_ul: 0,
    };
    for e in effective(entries) {
        match &e.kind {
            EntryKind::Draw {
                ul, session_id: s, ..
            } if s == session_id => r.drawn_ul += ul,
            EntryKind::Administered {
                ul, session_id: s, ..
            } if s == session_id => r.administered_ul += ul,
            EntryKind::Waste {
                ul,
                session_id: Some(s),
                ..
            } if s == session_id => r.wasted_ul += ul,
            EntryKind::Loss {
                ul,
                session_id: Some(s),
                ..
            } if s == session_id => r.lost_ul += ul,
            _ => {}
        }
    }
    r
}

/// Microlitres of a lot's stock holding `mg` at `mg_per_ml`, rounded to the nearest µL: what
/// the delivered dose (`clinical::delivered`) comes to for [`EntryKind::Administered`].
pub fn ul_for_mg(mg: f64, mg_per_ml: f64) -> Option<i64> {
    let ul = mg / mg_per_ml * UL_PER_ML as f64;
    (ul.is_finite() && ul >= 0.0 && ul <= MAX_ENTRY_UL as f64).then(|| ul.round() as i64)
}

/// A count that disagrees with the balance derived from the entries before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    /// The count entry.
    pub count_id: String,
    /// The lot.
    pub lot_id: String,
    /// What the entries say, µL.
    pub expected_ul: i64,
    /// What was counted, µL.
    pub counted_ul: i64,
}

/// Counts that disagree with the derived balance (entries written up to the count, by the
/// writer's clock) and have no resolution yet: each keeps the site's discrepancy advisory up.
pub fn open_discrepancies(entries: &[Entry]) -> Vec<Discrepancy> {
    let live = effective(entries);
    let resolved: Vec<&str> = live
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Resolution { count_id, .. } => Some(count_id.as_str()),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for count in &live {
        let EntryKind::Count {
            lot_id, counted_ul, ..
        } = &count.kind
        else {
            continue;
        };
        if resolved.contains(&count.id.as_str()) {
            continue;
        }
        let expected_ul: i64 = live
            .iter()
            .filter(|e| e.at_us <= count.at_us && e.kind.lot_id() == Some(lot_id))
            .map(|e| e.kind.safe_delta_ul())
            .sum();
        if expected_ul != *counted_ul {
            out.push(Discrepancy {
                count_id: count.id.clone(),
                lot_id: lot_id.clone(),
                expected_ul,
                counted_ul: *counted_ul,
            });
        }
    }
    out
}

/// When DEA Form 106 is due for a loss or theft recorded at `at_us`: the end of the next
/// business day (Monday to Friday) in the site's zone, µs.
pub fn form_106_due(zone: &SiteZone, at_us: i64) -> i64 {
    let mut day = zone.next_day_start(at_us);
    loop {
        let weekday = zone.weekday(day);
        if (1..=5).contains(&weekday) {
            return zone.next_day_start(day);
        }
        day = zone.next_day_start(day);
    }
}

/// When the next biennial inventory is due: two years after the last one, or now if there has
/// never been one.
pub fn biennial_inventory_due(entries: &[Entry], now_us: i64) -> i64 {
    effective(entries)
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EntryKind::Count {
                    inventory: true,
                    ..
                }
            )
        })
        .map(|e| e.at_us + BIENNIAL_US)
        .max()
        .unwrap_or(now_us)
}

/// Whether an entry written at `at_us` may be deleted at `now_us` (retention): never within
/// two years.
pub fn may_delete(at_us: i64, now_us: i64) -> bool {
    now_us - at_us > RETENTION_US
}

#[cfg(test)]
mod tests;
