//! A site's ledger as an Automerge document: the usual header and an append-only list of
//! [`Entry`]s, one JSON string each (the log machinery of [`crate::log_doc`]).
//!
//! One ledger per site, with an id derived from the site ([`ledger_id`]), and created the same
//! way wherever it is created: the first change (header and empty list) has a fixed actor, time
//! and content, so its hash is the same in every room and at the cloud. Two rooms that start the
//! site's ledger offline therefore start the same list, and their entries merge into it.

use automerge::transaction::CommitOptions;
use automerge::{ActorId, AutoCommit, ObjId};

use super::{Entry, EntryKind, LedgerRefused, check_entry};
use crate::doc::{DocError, DocKind, expect_kind, write_header};
use crate::log_doc::{self, LogEntry, entry_error};

/// The most entries a site's ledger holds: a busy site writes a few dozen a day, about 40,000
/// in the two years every entry must be kept, at a few hundred bytes each.
pub const MAX_LEDGER_ENTRIES: usize = 100_000;

/// The longest stored entry, bytes: a receipt with every text field at its limit.
pub const MAX_LEDGER_ENTRY_BYTES: usize = 4 * 1024;

/// The longest id, staff id or place, bytes.
pub const MAX_LEDGER_NAME_BYTES: usize = 64;

/// The longest free text (a reason, a product name, a supplier), bytes.
pub const MAX_LEDGER_TEXT_BYTES: usize = 512;

impl LogEntry for Entry {
    const LOG: &'static str = "ledger";
    const MAX_BYTES: usize = MAX_LEDGER_ENTRY_BYTES;

    fn check(&self, index: usize) -> Result<(), DocError> {
        let mut names = vec![
            ("id", self.id.as_str()),
            ("by", self.by.as_str()),
            ("place", self.place.as_str()),
            ("witness", self.witness.as_deref().unwrap_or("")),
        ];
        let mut texts = Vec::new();
        match &self.kind {
            EntryKind::Receipt {
                lot,
                supplier,
                invoice,
                ..
            } => {
                names.extend([
                    ("lot", lot.id.as_str()),
                    ("ndc", lot.ndc.as_str()),
                    ("lot_number", lot.lot_number.as_str()),
                    ("expiry", lot.expiry.as_str()),
                    ("invoice", invoice.as_str()),
                ]);
                texts.extend([("product", lot.product.as_str()), ("supplier", supplier)]);
            }
            EntryKind::Draw {
                lot_id, session_id, ..
            }
            | EntryKind::Administered {
                lot_id, session_id, ..
            } => names.extend([("lot", lot_id.as_str()), ("session", session_id.as_str())]),
            EntryKind::Waste {
                lot_id,
                session_id,
                reason,
                ..
            } => {
                names.extend([
                    ("lot", lot_id.as_str()),
                    ("session", session_id.as_deref().unwrap_or("")),
                ]);
                texts.push(("reason", reason));
            }
            EntryKind::Count { lot_id, .. } => names.push(("lot", lot_id)),
            EntryKind::Transfer {
                lot_id, to, reason, ..
            } => {
                names.push(("lot", lot_id));
                texts.extend([("to", to.as_str()), ("reason", reason.as_str())]);
            }
            EntryKind::Loss { lot_id, reason, .. } => {
                names.push(("lot", lot_id));
                texts.push(("reason", reason));
            }
            EntryKind::Resolution { count_id, reason } => {
                names.push(("count", count_id));
                texts.push(("reason", reason));
            }
            EntryKind::Correction { reverses, reason } => {
                names.push(("reverses", reverses));
                texts.push(("reason", reason));
            }
        }
        if self.id.is_empty() {
            return Err(entry_error::<Entry>(index, "id is empty".into()));
        }
        let limits = names
            .into_iter()
            .map(|(f, v)| (f, v, MAX_LEDGER_NAME_BYTES))
            .chain(
                texts
                    .into_iter()
                    .map(|(f, v)| (f, v, MAX_LEDGER_TEXT_BYTES)),
            );
        for (field, value, max) in limits {
            if value.len() > max {
                return Err(entry_error::<Entry>(
                    index,
                    format!("{field} is {} bytes, at most {max} allowed", value.len()),
                ));
            }
        }
        Ok(())
    }
}

/// The ledger document's id for `site`: a UUID (version 8) from a 128-bit FNV-1a hash of the
/// site's id, the same everywhere.
pub fn ledger_id(site: &str) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    for b in "vigil-ledger:".bytes().chain(site.bytes()) {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    let mut bytes = h.to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A site's ledger document.
#[derive(Debug, Clone)]
pub struct LedgerDoc {
    doc: AutoCommit,
    entries: ObjId,
}

/// Why an entry was not appended; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger's rules refuse it.
    #[error("{0}")]
    Refused(#[from] LedgerRefused),
    /// The document refuses it (a field over its limit, the ledger full).
    #[error("{0}")]
    Doc(Box<DocError>),
}

impl crate::doc::Typed for LedgerDoc {
    const KIND: DocKind = DocKind::Ledger;
    fn wrap(doc: AutoCommit) -> Result<Self, DocError> {
        LedgerDoc::from_automerge(doc)
    }
}

impl From<DocError> for LedgerError {
    fn from(e: DocError) -> Self {
        LedgerError::Doc(Box::new(e))
    }
}

impl LedgerDoc {
    /// The site's ledger as it starts: header and an empty list, in one change whose hash is
    /// the same wherever it is made. Later changes are this writer's own.
    pub fn create(site: &str) -> Result<LedgerDoc, DocError> {
        let id = ledger_id(site);
        let actor = {
            let digest = id.replace('-', "");
            let bytes: Vec<u8> = (0..16)
                .map(|i| u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect();
            ActorId::from(bytes)
        };
        let mut doc = AutoCommit::new().with_actor(actor);
        write_header(&mut doc, DocKind::Ledger, &id, site)?;
        let entries = log_doc::create_list(&mut doc)?;
        doc.commit_with(CommitOptions::default().with_time(0));
        doc.set_actor(ActorId::random());
        Ok(LedgerDoc { doc, entries })
    }

    /// Loads a saved ledger and checks its kind and shape.
    pub fn load(bytes: &[u8]) -> Result<LedgerDoc, DocError> {
        LedgerDoc::from_automerge(AutoCommit::load(bytes)?)
    }

    /// Wraps a document already in memory, checking its kind and shape.
    pub fn from_automerge(doc: AutoCommit) -> Result<LedgerDoc, DocError> {
        expect_kind(&doc, DocKind::Ledger)?;
        let entries = log_doc::entries_list::<Entry>(&doc)?;
        Ok(LedgerDoc { doc, entries })
    }

    /// Every entry, in list order.
    pub fn entries(&self) -> Result<Vec<Entry>, DocError> {
        log_doc::read_entries(&self.doc, &self.entries, MAX_LEDGER_ENTRIES)
    }

    /// Appends `entry` if the ledger's rules accept it against the entries so far, on `today`
    /// (the site's date, `YYYY-MM-DD`).
    pub fn append(&mut self, entry: &Entry, today: &str) -> Result<(), LedgerError> {
        let existing = self.entries()?;
        check_entry(&existing, entry, today)?;
        log_doc::append(
            &mut self.doc,
            &self.entries,
            std::slice::from_ref(entry),
            MAX_LEDGER_ENTRIES,
        )?;
        Ok(())
    }

    /// The Automerge document.
    pub fn automerge(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    /// The Automerge document, read-only.
    pub fn automerge_ref(&self) -> &AutoCommit {
        &self.doc
    }
}

/// The shape check of a ledger document, for `validate_document`.
pub(crate) fn validate(doc: &AutoCommit) -> Result<(), DocError> {
    let list = log_doc::entries_list::<Entry>(doc)?;
    log_doc::read_entries::<Entry>(doc, &list, MAX_LEDGER_ENTRIES)?;
    Ok(())
}

/// The cloud's check of a change to a ledger: entries only added, each well-formed; the added
/// ones, in list order. The ledger's balance rules are not applied here: two rooms offline may
/// each draw what only one could, and the merged ledger must record both (a count then shows
/// the discrepancy).
pub fn check_append_only(
    doc: &AutoCommit,
    before: &[automerge::ChangeHash],
) -> Result<Vec<Entry>, DocError> {
    log_doc::check_append_only::<Entry>(doc, before, MAX_LEDGER_ENTRIES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::validate_document;
    use crate::ledger::{Lot, UL_PER_ML, balances};

    const T0: i64 = 1_796_000_000_000_000;

    fn receipt(id: &str, lot_id: &str, ml: i64) -> Entry {
        Entry {
            id: id.into(),
            at_us: T0,
            by: "rn-ana".into(),
            witness: Some("dr-kim".into()),
            place: "safe".into(),
            kind: EntryKind::Receipt {
                lot: Lot {
                    id: lot_id.into(),
                    ndc: "0409-2051-05".into(),
                    product: "Ketamine HCl 50 mg/mL, 10 mL".into(),
                    lot_number: "LN-1".into(),
                    mg_per_ml: 50.0,
                    expiry: "2027-06-30".into(),
                },
                ul: ml * UL_PER_ML,
                supplier: "McKesson".into(),
                invoice: "INV-1".into(),
            },
        }
    }

    fn draw(id: &str, lot_id: &str, ul: i64, room: &str) -> Entry {
        Entry {
            id: id.into(),
            at_us: T0 + 1,
            by: "rn-ana".into(),
            witness: None,
            place: format!("room {room}"),
            kind: EntryKind::Draw {
                lot_id: lot_id.into(),
                ul,
                session_id: format!("s-{room}"),
            },
        }
    }

    #[test]
    fn the_id_is_a_uuid_of_the_site_and_the_same_everywhere() {
        let a = ledger_id("austin");
        assert!(crate::ids::is_canonical_uuid(&a), "{a}");
        assert_eq!(a, ledger_id("austin"));
        assert_ne!(a, ledger_id("florida"));
        assert_eq!(&a[14..15], "8", "version 8");
    }

    #[test]
    fn two_rooms_that_start_the_ledger_offline_share_one_list() {
        let mut room1 = LedgerDoc::create("austin").unwrap();
        let mut room2 = LedgerDoc::create("austin").unwrap();
        assert_eq!(
            room1.automerge().get_heads(),
            room2.automerge().get_heads(),
            "the same first change"
        );
        room1.append(&receipt("r1", "A", 10), "2026-12-01").unwrap();
        room2.append(&receipt("r2", "B", 20), "2026-12-01").unwrap();
        room2
            .append(&draw("d2", "B", 2_000, "2"), "2026-12-01")
            .unwrap();
        room1.automerge().merge(room2.automerge()).unwrap();
        let merged = LedgerDoc::from_automerge(room1.automerge_ref().clone()).unwrap();
        let entries = merged.entries().unwrap();
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
        for id in ["r1", "r2", "d2"] {
            assert!(ids.contains(&id), "{ids:?}");
        }
        let b = balances(&entries);
        assert_eq!(b.get("A"), Some(&10_000));
        assert_eq!(b.get("B"), Some(&18_000));
        validate_document(merged.automerge_ref(), DocKind::Ledger).unwrap();
    }

    #[test]
    fn entries_round_trip_and_the_rules_refuse_before_anything_is_written() {
        let mut doc = LedgerDoc::create("austin").unwrap();
        let r = receipt("r1", "A", 10);
        doc.append(&r, "2026-12-01").unwrap();
        let bytes = doc.automerge().save();
        let loaded = LedgerDoc::load(&bytes).unwrap();
        assert_eq!(loaded.entries().unwrap(), vec![r.clone()]);
        // Over the lot, an unknown lot, a field over its limit: refused, the ledger unchanged.
        let heads = doc.automerge().get_heads();
        assert!(matches!(
            doc.append(&draw("d1", "A", 11_000, "1"), "2026-12-01"),
            Err(LedgerError::Refused(LedgerRefused::Insufficient { .. }))
        ));
        assert!(matches!(
            doc.append(&draw("d2", "Z", 1, "1"), "2026-12-01"),
            Err(LedgerError::Refused(LedgerRefused::UnknownLot(_)))
        ));
        let mut long = draw("d3", "A", 1, "1");
        long.by = "x".repeat(MAX_LEDGER_NAME_BYTES + 1);
        assert!(matches!(
            doc.append(&long, "2026-12-01"),
            Err(LedgerError::Doc(e)) if matches!(*e, DocError::LogEntry { log: "ledger", .. })
        ));
        assert_eq!(doc.automerge().get_heads(), heads);
        // An entry's JSON names its type.
        let json = serde_json::to_string(&draw("d4", "A", 5, "1")).unwrap();
        assert!(json.contains("\"type\":\"draw\""), "{json}");
    }

    #[test]
    fn the_cloud_sees_added_entries_and_refuses_an_edit() {
        let mut doc = LedgerDoc::create("austin").unwrap();
        doc.append(&receipt("r1", "A", 10), "2026-12-01").unwrap();
        let before = doc.automerge().get_heads();
        doc.append(&draw("d1", "A", 1_000, "1"), "2026-12-01")
            .unwrap();
        let added = check_append_only(doc.automerge_ref(), &before).unwrap();
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].id, "d1");
        // Rewriting the receipt's text in place: refused.
        let before = doc.automerge().get_heads();
        let list = doc.entries.clone();
        let forged = serde_json::to_string(&receipt("r1", "A", 999)).unwrap();
        automerge::transaction::Transactable::put(doc.automerge(), &list, 0, forged).unwrap();
        let err = check_append_only(doc.automerge_ref(), &before).unwrap_err();
        assert!(
            matches!(err, DocError::LogRewritten { log: "ledger", .. }),
            "{err}"
        );
    }
}
