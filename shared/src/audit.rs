//! Audit documents: the appliance's record of who read or wrote patient data, as an Automerge
//! document that syncs to the cloud like any other.
//!
//! An audit document is an append-only list of [`AuditEntry`] maps under the usual root header
//! (`schema`, `kind` = `audit`, `id`, `site`) plus `room`. Entries are never edited or deleted;
//! the appliance starts a new document once one holds [`MAX_AUDIT_ENTRIES_PER_DOC`]. Appends are
//! written by hand (one map inserted at the end of the list, six scalar puts), not reconciled
//! through autosurgeon: a reconcile visits every existing item, which costs hundreds of
//! milliseconds on a list of thousands.
//!
//! This module does no I/O. Where the entries come from (the appliance's durable audit table)
//! and where they go (the cloud's audit log) is the appliance's and the cloud's business. The
//! cloud's check that a change only adds entries is [`check_append_only`].

use std::collections::HashSet;

use automerge::{
    AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value, transaction::Transactable,
};
use serde::{Deserialize, Serialize};

use crate::doc::{DocError, DocKind, expect_kind, write_header};
use crate::ids::is_canonical_uuid;

/// Most entries one audit document holds; the appliance starts a new document past this.
/// A busy room writes a few hundred entries a day, so one document covers weeks; 5,000 entries
/// keep a full document around a few hundred kilobytes, well inside one sync frame, and its
/// validation on the cloud in milliseconds.
pub const MAX_AUDIT_ENTRIES_PER_DOC: usize = 5_000;

/// Longest entry id, in bytes: a UUID is 36; the slack admits nothing longer than an id.
pub const MAX_AUDIT_ID_BYTES: usize = 64;

/// Longest actor, in bytes: a staff id or `token:<label>`, both short by construction.
pub const MAX_AUDIT_ACTOR_BYTES: usize = 128;

/// Longest action, in bytes: a method and a request path with its ids, or a screen's name;
/// a longer path is cut by [`AuditEntry::bounded`] rather than refused.
pub const MAX_AUDIT_ACTION_BYTES: usize = 512;

/// Longest target, in bytes: a session or patient id (a UUID), with room to spare.
pub const MAX_AUDIT_TARGET_BYTES: usize = 128;

/// Longest client address, in bytes: an IPv6 address with a zone index is at most 45–60.
pub const MAX_AUDIT_CLIENT_BYTES: usize = 64;

/// Root key of the room the audit document belongs to.
const ROOM_KEY: &str = "room";

/// Root key of the entry list.
const ENTRIES_KEY: &str = "entries";

/// The keys of one entry's map, in the order they are written.
const ENTRY_KEYS: [&str; 6] = ["id", "at_us", "actor", "action", "target", "client"];

/// One read or write of patient data at the appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// UUID v4 of the entry: the cloud's ingest is idempotent on it.
    pub id: String,
    /// Appliance clock, µs since the Unix epoch.
    pub at_us: i64,
    /// From the credential: a staff id, `token:<label>`, `local` …
    pub actor: String,
    /// What was done, e.g. `GET /api/v1/sessions/{id}`, `screen view session`, `sign-in refused`.
    pub action: String,
    /// A session or patient id, or empty.
    pub target: String,
    /// The client's IP address.
    pub client: String,
}

impl AuditEntry {
    /// The entry with every text field cut (at a character boundary) to its limit, so that a
    /// long request path is recorded shortened rather than refused.
    pub fn bounded(mut self) -> AuditEntry {
        truncate(&mut self.id, MAX_AUDIT_ID_BYTES);
        truncate(&mut self.actor, MAX_AUDIT_ACTOR_BYTES);
        truncate(&mut self.action, MAX_AUDIT_ACTION_BYTES);
        truncate(&mut self.target, MAX_AUDIT_TARGET_BYTES);
        truncate(&mut self.client, MAX_AUDIT_CLIENT_BYTES);
        self
    }

    /// Checks every field against its limit; `index` names the entry in the error.
    pub fn check(&self, index: usize) -> Result<(), DocError> {
        let fields = [
            ("id", self.id.len(), MAX_AUDIT_ID_BYTES),
            ("actor", self.actor.len(), MAX_AUDIT_ACTOR_BYTES),
            ("action", self.action.len(), MAX_AUDIT_ACTION_BYTES),
            ("target", self.target.len(), MAX_AUDIT_TARGET_BYTES),
            ("client", self.client.len(), MAX_AUDIT_CLIENT_BYTES),
        ];
        for (field, len, max) in fields {
            if len > max {
                return Err(entry_error(
                    index,
                    format!("{field} is {len} bytes, at most {max} allowed"),
                ));
            }
        }
        if self.id.is_empty() {
            return Err(entry_error(index, "id is empty".into()));
        }
        Ok(())
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn entry_error(index: usize, reason: String) -> DocError {
    DocError::AuditEntry { index, reason }
}

/// An audit document: header, room, and the append-only entry list.
#[derive(Debug, Clone)]
pub struct AuditDoc {
    doc: AutoCommit,
    /// The object id of the entry list, looked up once.
    entries: ObjId,
}

impl AuditDoc {
    /// A new, empty audit document. `id` must be a UUID (canonical, lowercase).
    pub fn create(id: &str, site: &str, room: &str) -> Result<AuditDoc, DocError> {
        if !is_canonical_uuid(id) {
            return Err(DocError::BadId {
                kind: DocKind::Audit,
                id: id.to_owned(),
            });
        }
        let mut doc = AutoCommit::new();
        write_header(&mut doc, DocKind::Audit, id, site)?;
        doc.put(automerge::ROOT, ROOM_KEY, room)?;
        let entries = doc.put_object(automerge::ROOT, ENTRIES_KEY, ObjType::List)?;
        Ok(AuditDoc { doc, entries })
    }

    /// Loads a saved audit document and checks its kind and schema.
    pub fn load(bytes: &[u8]) -> Result<AuditDoc, DocError> {
        AuditDoc::from_automerge(AutoCommit::load(bytes)?)
    }

    /// Wraps an Automerge document already in memory, checking its kind, schema and shape.
    pub fn from_automerge(doc: AutoCommit) -> Result<AuditDoc, DocError> {
        expect_kind(&doc, DocKind::Audit)?;
        let entries = entries_list(&doc)?;
        Ok(AuditDoc { doc, entries })
    }

    /// The room the document belongs to.
    pub fn room(&self) -> Result<String, DocError> {
        match self.doc.get(automerge::ROOT, ROOM_KEY)? {
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(room) => Ok(room.to_string()),
                _ => Err(shape_error("room is not a string")),
            },
            _ => Err(shape_error("no room")),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.doc.length(&self.entries)
    }

    /// Whether the document holds no entry yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends entries (append-only list); refuses past [`MAX_AUDIT_ENTRIES_PER_DOC`], or an
    /// entry over a field limit. On error the document is unchanged.
    pub fn append(&mut self, entries: &[AuditEntry]) -> Result<(), DocError> {
        let len = self.len();
        if len + entries.len() > MAX_AUDIT_ENTRIES_PER_DOC {
            return Err(DocError::AuditFull {
                len,
                adding: entries.len(),
                max: MAX_AUDIT_ENTRIES_PER_DOC,
            });
        }
        for (i, e) in entries.iter().enumerate() {
            e.check(len + i)?;
        }
        if let Err(e) = self.insert_all(len, entries) {
            self.doc.rollback();
            return Err(e);
        }
        Ok(())
    }

    fn insert_all(&mut self, start: usize, entries: &[AuditEntry]) -> Result<(), DocError> {
        for (i, e) in entries.iter().enumerate() {
            let map = self
                .doc
                .insert_object(&self.entries, start + i, ObjType::Map)?;
            self.doc.put(&map, ENTRY_KEYS[0], e.id.as_str())?;
            self.doc.put(&map, ENTRY_KEYS[1], e.at_us)?;
            self.doc.put(&map, ENTRY_KEYS[2], e.actor.as_str())?;
            self.doc.put(&map, ENTRY_KEYS[3], e.action.as_str())?;
            self.doc.put(&map, ENTRY_KEYS[4], e.target.as_str())?;
            self.doc.put(&map, ENTRY_KEYS[5], e.client.as_str())?;
        }
        Ok(())
    }

    /// Every entry, in list order. Refuses a document past [`MAX_AUDIT_ENTRIES_PER_DOC`] or
    /// with an entry that is malformed or over a field limit.
    pub fn entries(&self) -> Result<Vec<AuditEntry>, DocError> {
        read_entries(&self.doc, &self.entries)
    }

    /// The underlying Automerge document (for saving and syncing).
    pub fn automerge(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    /// The underlying Automerge document, read-only.
    pub fn automerge_ref(&self) -> &AutoCommit {
        &self.doc
    }
}

/// Checks an audit document's shape for [`crate::doc::validate_document`]: a room, and an
/// entry list within bounds whose every entry reads.
pub(crate) fn validate(doc: &AutoCommit) -> Result<(), DocError> {
    let list = entries_list(doc)?;
    let audit = AuditDoc {
        doc: doc.clone(),
        entries: list.clone(),
    };
    audit.room()?;
    read_entries(doc, &list)?;
    Ok(())
}

/// Checks that `after` only adds entries to `before`: every entry of `before` is still in
/// `after`, unchanged and in the same order. Entries may be added anywhere, not only at the
/// end, because two concurrent appends (say an appliance's database restored from a copy and
/// then merged) interleave in the merged list; adding entries is all such a change can do, and
/// an appliance may add entries anyway. Editing or removing one is refused.
///
/// Returns the entries of `after` whose ids `before` did not hold, in list order.
pub fn check_append_only(
    before: &[AuditEntry],
    after: &[AuditEntry],
) -> Result<Vec<AuditEntry>, DocError> {
    let mut old = before.iter().enumerate().peekable();
    let old_ids: HashSet<&str> = before.iter().map(|e| e.id.as_str()).collect();
    let mut added = Vec::new();
    for e in after {
        match old.peek() {
            Some((_, o)) if o.id == e.id => {
                if *o != e {
                    return Err(DocError::AuditRewritten {
                        id: e.id.clone(),
                        what: "changed",
                    });
                }
                old.next();
            }
            _ if old_ids.contains(e.id.as_str()) => {
                // An old entry out of its order: the list was rearranged, or the id repeats.
                return Err(DocError::AuditRewritten {
                    id: e.id.clone(),
                    what: "moved or duplicated",
                });
            }
            _ => added.push(e.clone()),
        }
    }
    if let Some((_, missing)) = old.next() {
        return Err(DocError::AuditRewritten {
            id: missing.id.clone(),
            what: "removed",
        });
    }
    Ok(added)
}

fn entries_list(doc: &AutoCommit) -> Result<ObjId, DocError> {
    match doc.get(automerge::ROOT, ENTRIES_KEY)? {
        Some((Value::Object(ObjType::List), id)) => Ok(id),
        _ => Err(shape_error("no entries list")),
    }
}

fn read_entries(doc: &AutoCommit, list: &ObjId) -> Result<Vec<AuditEntry>, DocError> {
    let len = doc.length(list);
    if len > MAX_AUDIT_ENTRIES_PER_DOC {
        return Err(DocError::AuditFull {
            len,
            adding: 0,
            max: MAX_AUDIT_ENTRIES_PER_DOC,
        });
    }
    let mut out = Vec::with_capacity(len);
    for index in 0..len {
        let map = match doc.get(list, index)? {
            Some((Value::Object(ObjType::Map), id)) => id,
            _ => return Err(entry_error(index, "not a map".into())),
        };
        let text = |key: &str| -> Result<String, DocError> {
            match doc.get(&map, key)? {
                Some((Value::Scalar(s), _)) => match s.as_ref() {
                    ScalarValue::Str(v) => Ok(v.to_string()),
                    _ => Err(entry_error(index, format!("{key} is not a string"))),
                },
                _ => Err(entry_error(index, format!("no {key}"))),
            }
        };
        let at_us = match doc.get(&map, ENTRY_KEYS[1])? {
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Int(v) => *v,
                ScalarValue::Uint(v) => i64::try_from(*v)
                    .map_err(|_| entry_error(index, "at_us is out of range".into()))?,
                _ => return Err(entry_error(index, "at_us is not a number".into())),
            },
            _ => return Err(entry_error(index, "no at_us".into())),
        };
        let entry = AuditEntry {
            id: text(ENTRY_KEYS[0])?,
            at_us,
            actor: text(ENTRY_KEYS[2])?,
            action: text(ENTRY_KEYS[3])?,
            target: text(ENTRY_KEYS[4])?,
            client: text(ENTRY_KEYS[5])?,
        };
        entry.check(index)?;
        out.push(entry);
    }
    Ok(out)
}

fn shape_error(reason: &str) -> DocError {
    DocError::AuditShape(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{header, validate_document};
    use proptest::prelude::*;

    const DOC_ID: &str = "5d0c7c1e-8a9f-4b7e-9a43-0f2c1c0b6a11";

    fn entry(n: usize) -> AuditEntry {
        AuditEntry {
            id: format!("00000000-0000-4000-8000-{n:012x}"),
            at_us: 1_700_000_000_000_000 + n as i64,
            actor: "nurse-a".into(),
            action: format!("GET /api/v1/sessions/{n}"),
            target: format!("s-{n}"),
            client: "10.1.2.3".into(),
        }
    }

    #[test]
    fn create_writes_the_header_and_room() {
        let mut d = AuditDoc::create(DOC_ID, "austin", "1").unwrap();
        let loaded = AuditDoc::load(&d.automerge().save()).unwrap();
        let h = header(loaded.automerge_ref()).unwrap();
        assert_eq!(
            (h.kind, h.schema, h.id.as_str(), h.site.as_str()),
            (DocKind::Audit, 1, DOC_ID, "austin")
        );
        assert_eq!(loaded.room().unwrap(), "1");
        assert!(loaded.is_empty());
        validate_document(loaded.automerge_ref(), DocKind::Audit).unwrap();
    }

    #[test]
    fn create_refuses_an_id_that_is_not_a_uuid() {
        for id in [
            "audit-1",
            "",
            "5D0C7C1E-8A9F-4B7E-9A43-0F2C1C0B6A11",
            "austin",
        ] {
            assert!(
                matches!(
                    AuditDoc::create(id, "austin", "1"),
                    Err(DocError::BadId { .. })
                ),
                "{id:?}"
            );
        }
    }

    #[test]
    fn append_refuses_past_the_limit_and_leaves_the_document_unchanged() {
        let mut d = AuditDoc::create(DOC_ID, "austin", "1").unwrap();
        let batch: Vec<AuditEntry> = (0..MAX_AUDIT_ENTRIES_PER_DOC - 1).map(entry).collect();
        d.append(&batch).unwrap();
        let err = d.append(&[entry(90_000), entry(90_001)]).unwrap_err();
        assert!(matches!(err, DocError::AuditFull { .. }), "{err}");
        assert_eq!(d.len(), MAX_AUDIT_ENTRIES_PER_DOC - 1);
        d.append(&[entry(90_000)]).unwrap();
        assert_eq!(d.len(), MAX_AUDIT_ENTRIES_PER_DOC);
        assert_eq!(d.entries().unwrap().len(), MAX_AUDIT_ENTRIES_PER_DOC);
    }

    #[test]
    fn append_refuses_an_oversized_field_and_bounded_cuts_it() {
        let mut d = AuditDoc::create(DOC_ID, "austin", "1").unwrap();
        let mut long = entry(1);
        long.action = "é".repeat(MAX_AUDIT_ACTION_BYTES);
        let err = d.append(&[entry(0), long.clone()]).unwrap_err();
        assert!(
            matches!(&err, DocError::AuditEntry { index: 1, reason } if reason.contains("action")),
            "{err}"
        );
        assert!(d.is_empty(), "nothing of a refused batch is written");
        let cut = long.bounded();
        assert!(cut.action.len() <= MAX_AUDIT_ACTION_BYTES);
        d.append(std::slice::from_ref(&cut)).unwrap();
        assert_eq!(d.entries().unwrap(), vec![cut]);
    }

    /// A way to spoil a document, for the validation table.
    type Spoil = Box<dyn Fn(&mut AuditDoc)>;

    #[test]
    fn validation_refuses_malformed_entries() {
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "an entry that is not a map",
                Box::new(|d| {
                    let list = d.entries.clone();
                    d.automerge().insert(&list, 0, "x").unwrap();
                }),
            ),
            (
                "an entry without an actor",
                Box::new(|d| {
                    d.append(&[entry(0)]).unwrap();
                    let list = d.entries.clone();
                    let Some((_, map)) = d.automerge().get(&list, 0).unwrap() else {
                        panic!("entry 0 exists")
                    };
                    d.automerge().delete(&map, "actor").unwrap();
                }),
            ),
            (
                "an oversized client",
                Box::new(|d| {
                    d.append(&[entry(0)]).unwrap();
                    let list = d.entries.clone();
                    let Some((_, map)) = d.automerge().get(&list, 0).unwrap() else {
                        panic!("entry 0 exists")
                    };
                    d.automerge().put(&map, "client", "1".repeat(500)).unwrap();
                }),
            ),
            (
                "no room",
                Box::new(|d| d.automerge().delete(automerge::ROOT, ROOM_KEY).unwrap()),
            ),
            (
                "entries that are not a list",
                Box::new(|d| d.automerge().put(automerge::ROOT, ENTRIES_KEY, 3).unwrap()),
            ),
        ];
        for (what, spoil) in cases {
            let mut d = AuditDoc::create(DOC_ID, "austin", "1").unwrap();
            spoil(&mut d);
            let saved = AutoCommit::load(&d.automerge().save()).unwrap();
            assert!(
                validate_document(&saved, DocKind::Audit).is_err(),
                "{what} must be refused"
            );
        }
    }

    #[test]
    fn append_only_check_refuses_edits_removals_and_moves() {
        let before: Vec<AuditEntry> = (0..4).map(entry).collect();
        let mut edited = before.clone();
        edited[1].actor = "someone-else".into();
        let mut moved = before.clone();
        moved.swap(0, 2);
        let mut removed = before.clone();
        removed.remove(3);
        let mut duplicated = before.clone();
        duplicated.push(entry(2));
        let cases: Vec<(&str, Vec<AuditEntry>, Result<usize, &str>)> = vec![
            ("unchanged", before.clone(), Ok(0)),
            (
                "appended",
                [before.clone(), vec![entry(7), entry(8)]].concat(),
                Ok(2),
            ),
            (
                "inserted between (a concurrent append)",
                vec![entry(0), entry(9), entry(1), entry(2), entry(3)],
                Ok(1),
            ),
            ("edited", edited, Err("changed")),
            ("moved", moved, Err("moved or duplicated")),
            ("removed", removed, Err("removed")),
            ("duplicated", duplicated, Err("moved or duplicated")),
        ];
        for (what, after, expected) in cases {
            let got = check_append_only(&before, &after);
            match (got, expected) {
                (Ok(added), Ok(n)) => assert_eq!(added.len(), n, "{what}"),
                (Err(DocError::AuditRewritten { what: w, .. }), Err(e)) => {
                    assert_eq!(w, e, "{what}")
                }
                (got, expected) => panic!("{what}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    fn arb_entry() -> impl Strategy<Value = AuditEntry> {
        (
            any::<u64>(),
            any::<i64>(),
            "[a-z:-]{0,20}",
            ".{0,40}",
            "[0-9a-f-]{0,36}",
            "[0-9a-f.:]{0,39}",
        )
            .prop_map(|(n, at_us, actor, action, target, client)| AuditEntry {
                id: format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff),
                at_us,
                actor,
                action,
                target,
                client,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Entries appended in batches read back equal, after a save and a load.
        #[test]
        fn batches_round_trip(batches in prop::collection::vec(
            prop::collection::vec(arb_entry(), 0..8), 0..6)) {
            let mut d = AuditDoc::create(DOC_ID, "austin", "2").unwrap();
            for b in &batches {
                d.append(b).unwrap();
            }
            let loaded = AuditDoc::load(&d.automerge().save()).unwrap();
            let all: Vec<AuditEntry> = batches.concat();
            prop_assert_eq!(loaded.entries().unwrap(), all);
            validate_document(loaded.automerge_ref(), DocKind::Audit).unwrap();
        }

        /// Two forks appending concurrently merge to the union, each fork's entries in order,
        /// and the merge only adds to either side.
        #[test]
        fn concurrent_forks_merge_to_the_union(
            common in prop::collection::vec(arb_entry(), 0..5),
            a in prop::collection::vec(arb_entry(), 0..6),
            b in prop::collection::vec(arb_entry(), 0..6),
        ) {
            // Ids unique across the three sets, as UUIDs are.
            let mut n = 0u64;
            let mut renumber = |v: Vec<AuditEntry>| -> Vec<AuditEntry> {
                v.into_iter().map(|mut e| {
                    n += 1;
                    e.id = format!("00000000-0000-4000-8000-{n:012x}");
                    e
                }).collect()
            };
            let (common, a, b) = (renumber(common), renumber(a), renumber(b));
            let mut x = AuditDoc::create(DOC_ID, "austin", "1").unwrap();
            x.append(&common).unwrap();
            let mut y = AuditDoc::load(&x.automerge().save()).unwrap();
            y.automerge().set_actor(automerge::ActorId::random());
            x.append(&a).unwrap();
            y.append(&b).unwrap();
            let mut y_doc = y.automerge().clone();
            x.automerge().merge(&mut y_doc).unwrap();
            let merged = AuditDoc::from_automerge(x.automerge().clone()).unwrap();
            let got = merged.entries().unwrap();
            prop_assert_eq!(got.len(), common.len() + a.len() + b.len());
            let only = |want: &[AuditEntry]| -> Vec<AuditEntry> {
                got.iter().filter(|e| want.contains(e)).cloned().collect()
            };
            prop_assert_eq!(only(&a), a.clone());
            prop_assert_eq!(only(&b), b.clone());
            prop_assert_eq!(&got[..common.len()], &common[..]);
            let before_x = [common.clone(), a.clone()].concat();
            let before_y = [common.clone(), b.clone()].concat();
            prop_assert_eq!(check_append_only(&before_x, &got).unwrap(), b);
            prop_assert_eq!(check_append_only(&before_y, &got).unwrap(), a);
        }
    }
}
