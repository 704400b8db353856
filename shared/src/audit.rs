//! Audit documents: the appliance's record of who read or wrote patient data, as an Automerge
//! document that syncs to the cloud like any other.
//!
//! An audit document is an append-only list of entries under the usual root header (`schema`,
//! `kind` = `audit`, `id`, `site`) plus `room`. Each entry is one string value holding the
//! [`AuditEntry`] as a JSON object, so that one entry is one Automerge op and a batch of
//! entries one `splice` (about half a microsecond per value, against 10–20 µs per op: a map
//! per entry would cost seven ops, and an autosurgeon reconcile visits every existing item).
//! JSON keeps the document readable in any Automerge tool. Entries are never edited or
//! deleted; the appliance starts a new document once one holds [`MAX_AUDIT_ENTRIES_PER_DOC`].
//!
//! The list machinery is [`crate::log_doc`]'s, shared with the site's ledger. This module does
//! no I/O. Where the entries come from (the appliance's durable audit table)
//! and where they go (the cloud's audit log) is the appliance's and the cloud's business. The
//! cloud's check that a change only adds entries is [`check_append_only`].

use automerge::{AutoCommit, ChangeHash, ObjId, ReadDoc, transaction::Transactable};
use serde::{Deserialize, Serialize};

use crate::doc::{DocError, DocKind, expect_kind, room_of, write_header};
use crate::ids::is_canonical_uuid;
use crate::log_doc::{self, LogEntry};

/// Most entries one audit document holds; the appliance starts a new document past this.
/// A busy room writes a few hundred entries a day, so one document covers weeks; 5,000 entries
/// of about 150 bytes keep a full document well inside one sync frame, and its validation on
/// the cloud (one JSON parse per entry) in milliseconds.
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

/// Longest stored entry, in bytes: the JSON of an entry whose fields are all at their limits
/// (896 bytes) with every character escaped as `\uXXXX` (six bytes for one) stays under this;
/// anything longer is refused before it is parsed.
pub const MAX_AUDIT_ENTRY_BYTES: usize = 6 * 1024;

/// Root key of the room the audit document belongs to.
const ROOM_KEY: &str = "room";

/// Root key of the entry list.
pub use crate::log_doc::ENTRIES_KEY;

/// One read or write of patient data at the appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

impl LogEntry for AuditEntry {
    const LOG: &'static str = "audit";
    const MAX_BYTES: usize = MAX_AUDIT_ENTRY_BYTES;

    fn check(&self, index: usize) -> Result<(), DocError> {
        AuditEntry::check(self, index)
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
    log_doc::entry_error::<AuditEntry>(index, reason)
}

fn shape_error(reason: &str) -> DocError {
    log_doc::shape_error::<AuditEntry>(reason)
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
        let entries = log_doc::create_list(&mut doc)?;
        Ok(AuditDoc { doc, entries })
    }

    /// Loads a saved audit document and checks its kind and schema.
    pub fn load(bytes: &[u8]) -> Result<AuditDoc, DocError> {
        AuditDoc::from_automerge(AutoCommit::load(bytes)?)
    }

    /// Wraps an Automerge document already in memory, checking its kind, schema and shape.
    pub fn from_automerge(doc: AutoCommit) -> Result<AuditDoc, DocError> {
        expect_kind(&doc, DocKind::Audit)?;
        let entries = log_doc::entries_list::<AuditEntry>(&doc)?;
        Ok(AuditDoc { doc, entries })
    }

    /// The room the document belongs to.
    pub fn room(&self) -> Result<String, DocError> {
        room_of(&self.doc).ok_or_else(|| shape_error("no room"))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.doc.length(&self.entries)
    }

    /// Whether the document holds no entry yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends entries (append-only list) in one splice; refuses past
    /// [`MAX_AUDIT_ENTRIES_PER_DOC`], or an entry over a field limit. On error the document is
    /// unchanged.
    pub fn append(&mut self, entries: &[AuditEntry]) -> Result<(), DocError> {
        self.append_within(entries, MAX_AUDIT_ENTRIES_PER_DOC)
    }

    fn append_within(&mut self, entries: &[AuditEntry], max: usize) -> Result<(), DocError> {
        log_doc::append(&mut self.doc, &self.entries, entries, max)
    }

    /// Every entry, in list order. Refuses a document past [`MAX_AUDIT_ENTRIES_PER_DOC`] or
    /// with an entry that is malformed or over a limit.
    pub fn entries(&self) -> Result<Vec<AuditEntry>, DocError> {
        log_doc::read_entries(&self.doc, &self.entries, MAX_AUDIT_ENTRIES_PER_DOC)
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
    room_of(doc).ok_or_else(|| shape_error("no room"))?;
    let list = log_doc::entries_list::<AuditEntry>(doc)?;
    log_doc::read_entries::<AuditEntry>(doc, &list, MAX_AUDIT_ENTRIES_PER_DOC)?;
    Ok(())
}

/// Checks that the changes `doc` received since `before` only add entries (see
/// [`log_doc::check_append_only`]); the added ones, in list order.
pub fn check_append_only(
    doc: &AutoCommit,
    before: &[ChangeHash],
) -> Result<Vec<AuditEntry>, DocError> {
    log_doc::check_append_only::<AuditEntry>(doc, before, MAX_AUDIT_ENTRIES_PER_DOC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{header, validate_document};
    use automerge::{ObjType, ScalarValue};
    use proptest::prelude::*;

    impl AuditEntry {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap()
        }
    }

    fn read_entries(
        doc: &AutoCommit,
        list: &ObjId,
        max: usize,
    ) -> Result<Vec<AuditEntry>, DocError> {
        log_doc::read_entries(doc, list, max)
    }

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

    fn doc_with(n: usize) -> AuditDoc {
        let mut d = AuditDoc::create(DOC_ID, "austin", "1").unwrap();
        d.append(&(0..n).map(entry).collect::<Vec<_>>()).unwrap();
        d
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
        let max = 5;
        let mut d = doc_with(3);
        let err = d.append_within(&[entry(7), entry(8), entry(9)], max);
        assert!(
            matches!(
                err,
                Err(DocError::LogFull {
                    log: "audit",
                    len: 3,
                    adding: 3,
                    max: 5
                })
            ),
            "{err:?}"
        );
        assert_eq!(d.len(), 3);
        d.append_within(&[entry(7), entry(8)], max).unwrap();
        assert_eq!(d.len(), max);
        // Readers refuse a list past the limit (as a hostile peer could send).
        let list = d.entries.clone();
        assert!(read_entries(&d.doc, &list, max).is_ok());
        assert!(matches!(
            read_entries(&d.doc, &list, max - 1),
            Err(DocError::LogFull { log: "audit", .. })
        ));
    }

    #[test]
    fn append_refuses_an_oversized_field_and_bounded_cuts_it() {
        let mut d = AuditDoc::create(DOC_ID, "austin", "1").unwrap();
        let mut long = entry(1);
        long.action = "é".repeat(MAX_AUDIT_ACTION_BYTES);
        let err = d.append(&[entry(0), long.clone()]).unwrap_err();
        assert!(
            matches!(&err, DocError::LogEntry { log: "audit", index: 1, reason } if reason.contains("action")),
            "{err}"
        );
        assert!(d.is_empty(), "nothing of a refused batch is written");
        let cut = long.bounded();
        assert!(cut.action.len() <= MAX_AUDIT_ACTION_BYTES);
        d.append(std::slice::from_ref(&cut)).unwrap();
        assert_eq!(d.entries().unwrap(), vec![cut]);
    }

    #[test]
    fn the_longest_entry_fits_its_stored_bound() {
        let control = |n| "\u{1}".repeat(n);
        let e = AuditEntry {
            id: control(MAX_AUDIT_ID_BYTES),
            at_us: i64::MIN,
            actor: control(MAX_AUDIT_ACTOR_BYTES),
            action: control(MAX_AUDIT_ACTION_BYTES),
            target: control(MAX_AUDIT_TARGET_BYTES),
            client: control(MAX_AUDIT_CLIENT_BYTES),
        };
        let stored = e.to_json();
        assert!(stored.len() <= MAX_AUDIT_ENTRY_BYTES, "{}", stored.len());
        let mut d = AuditDoc::create(DOC_ID, "austin", "1").unwrap();
        d.append(std::slice::from_ref(&e)).unwrap();
        assert_eq!(d.entries().unwrap(), vec![e]);
    }

    /// A way to spoil a document, for the validation table.
    type Spoil = Box<dyn Fn(&mut AuditDoc)>;

    fn put_raw(d: &mut AuditDoc, value: ScalarValue) {
        let list = d.entries.clone();
        let at = d.len();
        d.automerge().insert(&list, at, value).unwrap();
    }

    #[test]
    fn validation_refuses_malformed_entries() {
        let json = |s: &str| ScalarValue::Str(s.into());
        let mut no_actor = serde_json::to_value(entry(0)).unwrap();
        no_actor.as_object_mut().unwrap().remove("actor");
        let mut extra = serde_json::to_value(entry(0)).unwrap();
        extra
            .as_object_mut()
            .unwrap()
            .insert("secret".into(), "x".into());
        let mut long_client = entry(0);
        long_client.client = "1".repeat(MAX_AUDIT_CLIENT_BYTES + 1);
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "an entry that is not a string",
                Box::new(|d| put_raw(d, ScalarValue::Int(3))),
            ),
            (
                "an entry that is not JSON",
                Box::new(move |d| put_raw(d, json("{not json"))),
            ),
            (
                "an entry without an actor",
                Box::new(move |d| put_raw(d, json(&no_actor.to_string()))),
            ),
            (
                "an entry with an unknown field",
                Box::new(move |d| put_raw(d, json(&extra.to_string()))),
            ),
            (
                "an oversized client",
                Box::new(move |d| put_raw(d, json(&serde_json::to_string(&long_client).unwrap()))),
            ),
            (
                "an entry past the stored bound",
                Box::new(move |d| put_raw(d, json(&" ".repeat(MAX_AUDIT_ENTRY_BYTES + 1)))),
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
            let mut d = doc_with(2);
            spoil(&mut d);
            let saved = AutoCommit::load(&d.automerge().save()).unwrap();
            assert!(
                validate_document(&saved, DocKind::Audit).is_err(),
                "{what} must be refused"
            );
        }
    }

    #[test]
    fn append_only_check_accepts_additions_and_refuses_edits_and_removals() {
        /// The entries added (by number), or a part of the refusal's reason.
        type Expected = Result<Vec<usize>, &'static str>;
        let cases: Vec<(&str, Spoil, Expected)> = vec![
            ("unchanged", Box::new(|_| {}), Ok(vec![])),
            (
                "appended",
                Box::new(|d| d.append(&[entry(7), entry(8)]).unwrap()),
                Ok(vec![7, 8]),
            ),
            (
                "inserted between (as a concurrent append merges)",
                Box::new(|d| {
                    let list = d.entries.clone();
                    let v = entry(9).to_json();
                    d.automerge().insert(&list, 1, v).unwrap();
                }),
                Ok(vec![9]),
            ),
            (
                "an entry overwritten",
                Box::new(|d| {
                    let list = d.entries.clone();
                    let mut e = entry(1);
                    e.actor = "someone-else".into();
                    d.automerge().put(&list, 1, e.to_json()).unwrap();
                }),
                Err("edits or removes the entry at position 1"),
            ),
            (
                // Automerge writes no op for a put of the value already there.
                "an entry overwritten with the same text",
                Box::new(|d| {
                    let list = d.entries.clone();
                    d.automerge().put(&list, 2, entry(2).to_json()).unwrap();
                }),
                Ok(vec![]),
            ),
            (
                "an entry removed",
                Box::new(|d| {
                    let list = d.entries.clone();
                    d.automerge().delete(&list, 0).unwrap();
                }),
                Err("edits or removes the entry at position 0"),
            ),
            (
                "the list replaced by a copy",
                Box::new(|d| {
                    let copy = d.entries().unwrap();
                    let list = d
                        .automerge()
                        .put_object(automerge::ROOT, ENTRIES_KEY, ObjType::List)
                        .unwrap();
                    d.entries = list;
                    d.append(&copy).unwrap();
                }),
                Err("replaces the entry list"),
            ),
        ];
        for (what, change, expected) in cases {
            let mut d = doc_with(3);
            let before = d.automerge().get_heads();
            change(&mut d);
            let got = check_append_only(d.automerge_ref(), &before);
            match (got, expected) {
                (Ok(added), Ok(ns)) => {
                    assert_eq!(
                        added,
                        ns.into_iter().map(entry).collect::<Vec<_>>(),
                        "{what}"
                    )
                }
                (Err(DocError::LogRewritten { reason, .. }), Err(e)) => {
                    assert!(reason.contains(e), "{what}: {reason}")
                }
                (got, expected) => panic!("{what}: got {got:?}, expected {expected:?}"),
            }
        }
        // A new document: everything in it is added.
        let d = doc_with(2);
        assert_eq!(
            check_append_only(d.automerge_ref(), &[]).unwrap(),
            vec![entry(0), entry(1)]
        );
    }

    fn arb_entry() -> impl Strategy<Value = AuditEntry> {
        (
            any::<i64>(),
            "[a-z:-]{0,20}",
            ".{0,40}",
            "[0-9a-f-]{0,36}",
            "[0-9a-f.:]{0,39}",
        )
            .prop_map(|(at_us, actor, action, target, client)| AuditEntry {
                id: String::new(),
                at_us,
                actor,
                action,
                target,
                client,
            })
    }

    /// Gives entries unique UUID-shaped ids, as the appliance's UUIDs are.
    fn numbered(first: u64, v: Vec<AuditEntry>) -> Vec<AuditEntry> {
        v.into_iter()
            .zip(first..)
            .map(|(mut e, n)| {
                e.id = format!("00000000-0000-4000-8000-{n:012x}");
                e
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Entries appended in batches read back equal, after a save and a load.
        #[test]
        fn batches_round_trip(batches in prop::collection::vec(
            prop::collection::vec(arb_entry(), 0..8), 0..6)) {
            let mut d = AuditDoc::create(DOC_ID, "austin", "2").unwrap();
            let mut all = Vec::new();
            for b in batches {
                let b = numbered(all.len() as u64, b);
                d.append(&b).unwrap();
                all.extend(b);
            }
            let loaded = AuditDoc::load(&d.automerge().save()).unwrap();
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
            let common = numbered(0, common);
            let a = numbered(100, a);
            let b = numbered(200, b);
            let mut x = AuditDoc::create(DOC_ID, "austin", "1").unwrap();
            x.append(&common).unwrap();
            let mut y = AuditDoc::load(&x.automerge().save()).unwrap();
            y.automerge().set_actor(automerge::ActorId::random());
            x.append(&a).unwrap();
            y.append(&b).unwrap();
            let x_heads = x.automerge().get_heads();
            let y_heads = y.automerge().get_heads();
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
            // Seen from either fork, the merge only adds the other fork's entries.
            prop_assert_eq!(check_append_only(merged.automerge_ref(), &x_heads).unwrap(), b);
            prop_assert_eq!(check_append_only(merged.automerge_ref(), &y_heads).unwrap(), a);
        }
    }
}
