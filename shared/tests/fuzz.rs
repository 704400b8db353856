//! Bounded fuzzing of what reaches `shared` from a disk or a peer and was not covered by the
//! codecs' own property tests: loading documents (arbitrary bytes, and valid documents with
//! bytes flipped, cut or spliced) and the per-document sync exchange fed arbitrary or mutated
//! sync messages. Every input yields a value or an error, never a panic.
//!
//! The GATT decoders, the chunk codec and the frame decoder are fuzzed next to their code
//! (`hardware/src/gatt/tests.rs`, `shared/src/chunk.rs`, `shared/src/wire/tests.rs`). Case
//! counts are fixed so CI spends a bounded few seconds here; `PROPTEST_CASES` raises them for a
//! longer hunt. A crashing input found here is kept below as a regression case.

use automerge::AutoCommit;
use automerge::sync::SyncDoc as _;
use proptest::prelude::*;
use vigil_shared::chunk::Chunk;
use vigil_shared::doc::{
    DocKind, DoseAction, DoseEvent, PatientDoc, SessionDoc, SessionMeta, validate_document,
};
use vigil_shared::fixtures;
use vigil_shared::sync::{DocSync, Role};
use vigil_shared::vitals::{Channel, Sample};
use vigil_shared::wire::{Message, SeqCounter};

fn meta() -> SessionMeta {
    SessionMeta {
        created_us: 1_000,
        dose_events: vec![DoseEvent {
            by: "nurse".into(),
            ..fixtures::dose("d1", 2_000, DoseAction::Start, Some(35.0))
        }],
        ..fixtures::session_meta("s-fuzz", "austin", "1", 2_000)
    }
}

/// A small valid session document: metadata, a note, a few chunks on two channels.
fn session_bytes() -> Vec<u8> {
    let mut doc = SessionDoc::create(&meta()).unwrap();
    for (i, channel) in [Channel::Hr, Channel::Ecg, Channel::Hr]
        .into_iter()
        .enumerate()
    {
        let start = 2_000 + i as i64 * 10_000_000;
        let samples: Vec<Sample> = (0..40)
            .map(|k| Sample::scalar(start + k * 250_000, 60 + (k % 7) as i32))
            .collect();
        let bytes = Chunk { channel, samples }.encode().unwrap();
        doc.append_chunk(channel, bytes).unwrap();
    }
    doc.append_note("infusion started").unwrap();
    doc.automerge().save()
}

/// A saved audit document with a few entries.
fn audit_bytes() -> Vec<u8> {
    let mut doc = vigil_shared::audit::AuditDoc::create(
        "a0d17000-0000-4000-8000-000000000001",
        "austin",
        "1",
    )
    .unwrap();
    let entries: Vec<_> = (0..3)
        .map(|n| vigil_shared::audit::AuditEntry {
            id: format!("00000000-0000-4000-8000-{n:012x}"),
            at_us: 1_700_000_000_000_000 + n,
            actor: "nurse-a".into(),
            action: "GET /api/v1/sessions/s-fuzz".into(),
            target: "s-fuzz".into(),
            client: "10.1.2.3".into(),
        })
        .collect();
    doc.append(&entries).unwrap();
    doc.automerge().save()
}

/// Loads `bytes` every way the appliance and the cloud do, reading everything a reader would.
fn load_everything(bytes: &[u8]) {
    if let Ok(doc) = AutoCommit::load(bytes) {
        for kind in DocKind::ALL {
            let _ = validate_document(&doc, kind);
        }
    }
    if let Ok(session) = SessionDoc::load(bytes) {
        let _ = session.meta();
        let _ = session.notes();
        for channel in Channel::ALL {
            let _ = session.chunks(channel);
            let _ = session.chunk_bytes(channel);
        }
    }
    if let Ok(patient) = PatientDoc::load(bytes) {
        let _ = patient.record();
    }
    if let Ok(config) = vigil_shared::doc::SiteConfigDoc::load(bytes) {
        let _ = config.config();
    }
    if let Ok(audit) = vigil_shared::audit::AuditDoc::load(bytes) {
        let _ = audit.room();
        let _ = audit.entries();
        if let Ok(doc) = AutoCommit::load(bytes) {
            let _ = vigil_shared::audit::check_append_only(&doc, &[]);
        }
    }
}

/// Feeds one sync message to a fresh responder for the document, and lets it answer.
fn exchange(doc: &mut AutoCommit, message: Vec<u8>, kind: DocKind) {
    let mut sync = DocSync::new(
        Role::Responder,
        "s-fuzz",
        kind,
        automerge::sync::State::new(),
    );
    let m = Message::Sync {
        seq: 1,
        doc_id: "s-fuzz".into(),
        kind,
        message,
    };
    if sync.incoming(doc, m).is_ok() {
        let _ = validate_document(doc, kind);
        let _ = sync.outgoing(doc, &mut SeqCounter::new());
    }
}

/// A real first sync message from a peer holding the whole session document.
fn valid_sync_message() -> Vec<u8> {
    let mut peer = AutoCommit::load(&session_bytes()).unwrap();
    let mut state = automerge::sync::State::new();
    peer.sync()
        .generate_sync_message(&mut state)
        .unwrap()
        .encode()
}

/// Mutations of a valid input: flip bytes, cut the end, or splice in random bytes.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, value) in edits {
        if bytes.is_empty() {
            break;
        }
        let i = at % bytes.len();
        match op % 4 {
            0 => bytes[i] ^= value | 1,
            1 => bytes.truncate(i),
            2 => bytes.insert(i, value),
            _ => {
                bytes.remove(i);
            }
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_load_as_an_error(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        load_everything(&bytes);
    }

    #[test]
    fn mutated_documents_load_or_fail_cleanly(edits in edits()) {
        load_everything(&mutate(session_bytes(), &edits));
    }

    #[test]
    fn mutated_audit_documents_load_or_fail_cleanly(edits in edits()) {
        load_everything(&mutate(audit_bytes(), &edits));
    }

    #[test]
    fn arbitrary_sync_messages_are_refused_cleanly(
        message in prop::collection::vec(any::<u8>(), 0..1024),
        kind in prop::sample::select(DocKind::ALL.to_vec()),
    ) {
        exchange(&mut AutoCommit::new(), message, kind);
    }

    #[test]
    fn mutated_sync_messages_are_refused_cleanly(edits in edits()) {
        let message = mutate(valid_sync_message(), &edits);
        exchange(&mut AutoCommit::new(), message.clone(), DocKind::Session);
        // Also into a document that already holds part of the history.
        let mut partial = SessionDoc::create(&meta()).unwrap();
        exchange(partial.automerge(), message, DocKind::Session);
    }
}

/// The unmutated inputs are accepted, so the properties above exercise the parsers' depths
/// and not only their first check.
#[test]
fn the_seeds_of_the_mutations_are_valid() {
    let bytes = session_bytes();
    let session = SessionDoc::load(&bytes).unwrap();
    assert_eq!(session.chunks(Channel::Hr).len(), 2);
    assert!(session.chunks(Channel::Hr).iter().all(Result::is_ok));
    validate_document(&AutoCommit::load(&bytes).unwrap(), DocKind::Session).unwrap();
    let audit = audit_bytes();
    validate_document(&AutoCommit::load(&audit).unwrap(), DocKind::Audit).unwrap();
    let mut empty = AutoCommit::new();
    let mut sync = DocSync::new(
        Role::Responder,
        "s-fuzz",
        DocKind::Session,
        automerge::sync::State::new(),
    );
    let m = Message::Sync {
        seq: 1,
        doc_id: "s-fuzz".into(),
        kind: DocKind::Session,
        message: valid_sync_message(),
    };
    sync.incoming(&mut empty, m).unwrap();
    // A first message carries no changes (only heads and a bloom filter); the answer asks.
    assert!(
        sync.outgoing(&mut empty, &mut SeqCounter::new())
            .unwrap()
            .is_some()
    );
}
