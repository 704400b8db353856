//! Tests of the store: documents round-trip, projections follow commits (incrementally and
//! from scratch), commits are idempotent, compaction keeps documents whole, and the registry
//! refuses documents that don't belong.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ScalarValue, Value};
use vigil_shared::chunk::Chunk;
use vigil_shared::doc::{
    AdvisoryRecord, CoursePlan, DoseAction, DoseEvent, Observation, PatientDoc, PatientRecord,
    Protocol, Screening, SessionDoc, SessionMeta, SessionState,
};
use vigil_shared::vitals::{Channel, Sample, checksum};
use vigil_shared::wire::DocKind;

use super::db::Val;
use super::projection::{ChannelStats, count_channel, read_channels};
use super::reads::vitals_page;
use super::*;
use vigil_shared::ledger::doc::{LedgerDoc, ledger_id};

/// The engine a test runs on: every test of the store interface runs on both.
#[derive(Debug, Clone, Copy)]
enum Engine {
    Sqlite,
    Postgres,
}

/// `name` on both engines: `name::sqlite` and `name::postgres`.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(super::Engine::Sqlite);
            }
            #[test]
            fn postgres() {
                super::$name(super::Engine::Postgres);
            }
        }
    )*};
}

on_both_engines!(
    a_new_session_round_trips_with_its_projections,
    incremental_commits_update_the_projections,
    committing_the_same_changes_twice_is_harmless,
    reindex_rebuilds_identical_projections,
    compaction_keeps_the_document_identical,
    a_corrupt_chunk_counts_apart_while_the_others_count,
    documents_that_do_not_belong_are_refused_whole,
    changes_another_copy_committed_are_merged_in,
    the_registry_lists_a_sites_documents_by_kind,
    appliance_presence_is_recorded,
    a_ledgers_entries_are_indexed_once_with_when_they_first_arrived,
    an_enrolment_code_works_once_within_its_hour_for_a_free_room,
    a_renewed_certificate_stops_working_after_its_grace_period,
    the_session_list_filters_and_pages,
    a_regional_managers_scope_leaves_other_regions_out_of_every_query,
    a_session_cannot_pull_another_sites_patient_into_its_outcomes,
    an_appliances_audit_entries_land_once_beside_the_clouds_own,
    the_same_entry_id_from_another_room_is_another_entry,
    people_sessions_and_tokens_round_trip,
    two_instances_ingesting_one_document_at_once_store_each_change_once,
);

struct Fixture {
    _dir: tempfile::TempDir,
    store: CloudStore,
    /// The SQLite file or the PostgreSQL URL, to open a second handle on (a second instance).
    at: String,
    engine: Engine,
}

fn fixture(engine: Engine) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let at = match engine {
        Engine::Sqlite => dir.path().join("cloud.db").display().to_string(),
        Engine::Postgres => crate::pg_cluster::cluster().new_database(),
    };
    let store = open_at(engine, &at);
    Fixture {
        _dir: dir,
        store,
        at,
        engine,
    }
}

fn open_at(engine: Engine, at: &str) -> CloudStore {
    match engine {
        Engine::Sqlite => CloudStore::open(Path::new(at)).unwrap(),
        Engine::Postgres => CloudStore::open_postgres(at, None).unwrap(),
    }
}

impl Fixture {
    /// Another handle on the same database, as a second cloud instance opens it.
    fn another(&self) -> CloudStore {
        open_at(self.engine, &self.at)
    }
}

fn meta(id: &str, site: &str, room: &str, started_us: Option<i64>) -> SessionMeta {
    SessionMeta {
        id: id.into(),
        site: site.into(),
        room: room.into(),
        patient_id: "p-1".into(),
        protocol: Protocol {
            drug: "ketamine".into(),
            route: "iv".into(),
            dose_mg_per_kg: 0.5,
            weight_kg: 70.0,
            planned_minutes: 40,
        },
        state: SessionState::InProgress,
        created_us: 1_000,
        started_us,
        ended_us: None,
        dose_events: vec![DoseEvent {
            id: "d1".into(),
            at_us: 2_000,
            action: DoseAction::Start,
            rate_mg_per_h: Some(52.5),
            by: "nurse-a".into(),
        }],
        advisories: vec![],
        observations: vec![],
        scores: vec![],
        discharge: None,
    }
}

fn patient(id: &str, site: &str) -> PatientRecord {
    PatientRecord {
        id: id.into(),
        site: site.into(),
        given_name: "Ada".into(),
        family_name: "Lovelace".into(),
        birth_date: "1980-12-10".into(),
        sex: "female".into(),
        phone: None,
        screening: Screening::default(),
        medications: vec![],
        course: CoursePlan::default(),
        outcome_scores: vec![],
    }
}

/// A medium-priority blood pressure advisory raised at 5 µs.
fn bp_advisory() -> AdvisoryRecord {
    AdvisoryRecord {
        id: "a1".into(),
        kind: "bp_high".into(),
        subject: "nibp".into(),
        priority: "medium".into(),
        detail: "182/95".into(),
        raised_us: 5,
        acknowledged_us: None,
        acknowledged_by: None,
        cleared_us: None,
    }
}

/// `n` samples of `channel` from `start_us`, `period_us` apart, values varying with `seed`.
fn samples(channel: Channel, start_us: i64, n: usize, period_us: i64, seed: i32) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let t_us = start_us + i as i64 * period_us;
            let x = seed.wrapping_mul(31).wrapping_add(i as i32 * 7) % 50;
            match channel {
                Channel::Nibp => Sample {
                    t_us,
                    v: [120 + x, 80 + x / 2, 93 + x / 3],
                },
                _ => Sample::scalar(t_us, 60 + x),
            }
        })
        .collect()
}

fn encode(channel: Channel, samples: &[Sample]) -> Vec<u8> {
    Chunk {
        channel,
        samples: samples.to_vec(),
    }
    .encode()
    .unwrap()
}

/// A session document plus the samples put into it, per channel.
struct Session {
    doc: SessionDoc,
    sent: BTreeMap<Channel, Vec<Sample>>,
}

impl Session {
    fn new(id: &str) -> Session {
        Session {
            doc: SessionDoc::create(&meta(id, "austin", "1", Some(2_000))).unwrap(),
            sent: BTreeMap::new(),
        }
    }

    fn append(&mut self, channel: Channel, samples: Vec<Sample>) {
        self.doc
            .append_chunk(channel, encode(channel, &samples))
            .unwrap();
        self.sent.entry(channel).or_default().extend(samples);
    }

    fn am(&mut self) -> &mut AutoCommit {
        self.doc.automerge()
    }
}

fn commit(store: &CloudStore, id: &str, doc: &mut AutoCommit, now_us: i64) {
    store
        .commit_document(id, DocKind::Session, "austin", doc, now_us)
        .unwrap();
}

fn channels(store: &CloudStore, id: &str) -> BTreeMap<Channel, ChannelStats> {
    store.read(|db| read_channels(db, id)).unwrap()
}

/// Asserts a channel's row describes exactly `sent` (and `corrupt` unreadable chunks). The
/// checksum is not projected; the session summary's tests check it.
fn check_channel(
    rows: &BTreeMap<Channel, ChannelStats>,
    channel: Channel,
    sent: &[Sample],
    chunks: u64,
    corrupt: u64,
) {
    let row = &rows[&channel];
    let expected = (
        sent.len() as u64,
        sent.iter().map(|s| s.t_us).min(),
        sent.iter().map(|s| s.t_us).max(),
        chunks,
        corrupt,
    );
    let got = (
        row.samples,
        row.first_us,
        row.last_us,
        row.chunks,
        row.corrupt_chunks,
    );
    assert_eq!(got, expected, "channel {channel}");
}

fn count(store: &CloudStore, sql: &str) -> i64 {
    store.read(|db| db.one(sql, &[])?.get(0)).unwrap()
}

fn heads(doc: &mut AutoCommit) -> Vec<automerge::ChangeHash> {
    let mut h = doc.get_heads();
    h.sort();
    h
}

/// Every row of every projection table, in a stable order.
fn dump_projections(store: &CloudStore) -> BTreeMap<&'static str, Vec<Vec<Val>>> {
    let mut out = BTreeMap::new();
    for table in [
        "sessions",
        "session_channels",
        "advisories",
        "events",
        "attention",
        "patients",
    ] {
        let rows = store
            .read(|db| db.rows(&format!("SELECT * FROM {table} ORDER BY 1, 2, 3"), &[]))
            .unwrap();
        out.insert(table, rows.into_iter().map(|r| r.0).collect());
    }
    out
}

/// Plants an item that is not a valid chunk at the end of a channel's list, as a buggy or
/// hostile peer could (append_chunk refuses it).
fn plant(doc: &mut AutoCommit, channel: Channel, value: ScalarValue) {
    let Some((Value::Object(ObjType::Map), vitals)) = doc.get(automerge::ROOT, "vitals").unwrap()
    else {
        panic!("no vitals map");
    };
    let Some((Value::Object(ObjType::List), list)) = doc.get(&vitals, channel.name()).unwrap()
    else {
        panic!("no {channel} list");
    };
    let len = doc.length(&list);
    doc.insert(&list, len, value).unwrap();
}

fn a_new_session_round_trips_with_its_projections(engine: Engine) {
    let f = fixture(engine);
    let mut s = Session::new("s-1");
    s.append(Channel::Hr, samples(Channel::Hr, 2_000, 10, 1_000_000, 1));
    s.append(
        Channel::Hr,
        samples(Channel::Hr, 10_002_000, 10, 1_000_000, 2),
    );
    s.append(Channel::Ecg, samples(Channel::Ecg, 2_000, 2_500, 4_000, 3));
    s.append(Channel::Nibp, samples(Channel::Nibp, 60_000_000, 1, 0, 4));
    s.doc.append_note("calm").unwrap();
    commit(&f.store, "s-1", s.am(), 5_000);

    let mut loaded = f.store.load_document("s-1").unwrap().unwrap();
    assert_eq!(
        (loaded.kind, loaded.site.as_str()),
        (DocKind::Session, "austin")
    );
    assert_eq!(heads(&mut loaded.doc), heads(s.am()));

    let rows = channels(&f.store, "s-1");
    assert_eq!(rows.len(), Channel::ALL.len(), "every channel has a row");
    check_channel(&rows, Channel::Hr, &s.sent[&Channel::Hr], 2, 0);
    check_channel(&rows, Channel::Ecg, &s.sent[&Channel::Ecg], 1, 0);
    check_channel(&rows, Channel::Nibp, &s.sent[&Channel::Nibp], 1, 0);
    check_channel(&rows, Channel::Spo2, &[], 0, 0);

    let row = f.store.session_row(&all(), "s-1").unwrap().unwrap();
    assert_eq!(
        (
            row.site.as_str(),
            row.room.as_str(),
            row.state.as_str(),
            row.started_us,
            row.updated_us
        ),
        ("austin", "1", "in_progress", Some(2_000), 5_000)
    );
    let summary = f.store.session_summary(&all(), "s-1").unwrap().unwrap();
    assert_eq!(summary.notes, "calm");
    assert_eq!(summary.channels[&Channel::Ecg].samples, 2_500);
    assert_eq!(
        summary.channels[&Channel::Hr].checksum,
        format!("{:016x}", checksum(&s.sent[&Channel::Hr]))
    );
    assert_eq!(
        count(&f.store, "SELECT count(*) FROM events WHERE type = 'dose'"),
        1
    );
}

fn incremental_commits_update_the_projections(engine: Engine) {
    let f = fixture(engine);
    let mut s = Session::new("s-1");
    s.append(Channel::Hr, samples(Channel::Hr, 0, 10, 1_000_000, 1));
    commit(&f.store, "s-1", s.am(), 1);
    check_channel(
        &channels(&f.store, "s-1"),
        Channel::Hr,
        &s.sent[&Channel::Hr],
        1,
        0,
    );

    s.append(
        Channel::Hr,
        samples(Channel::Hr, 10_000_000, 10, 1_000_000, 2),
    );
    s.append(Channel::Spo2, samples(Channel::Spo2, 0, 20, 1_000_000, 3));
    s.doc
        .update_meta(|m| {
            m.advisories.push(bp_advisory());
            m.observations.push(Observation {
                id: "o1".into(),
                at_us: 6,
                effect: "nausea".into(),
                severity: "mild".into(),
                by: "n".into(),
            });
        })
        .unwrap();
    commit(&f.store, "s-1", s.am(), 2);

    let rows = channels(&f.store, "s-1");
    check_channel(&rows, Channel::Hr, &s.sent[&Channel::Hr], 2, 0);
    check_channel(&rows, Channel::Spo2, &s.sent[&Channel::Spo2], 1, 0);
    let row = f.store.session_row(&all(), "s-1").unwrap().unwrap();
    assert_eq!(
        (
            row.n_advisories,
            row.has_advisory,
            row.max_advisory_priority.as_deref(),
            row.n_observations
        ),
        (1, true, Some("medium"), 1)
    );
    assert_eq!(count(&f.store, "SELECT count(*) FROM advisories"), 1);
    assert_eq!(count(&f.store, "SELECT count(*) FROM events"), 2);
    assert_eq!(count(&f.store, "SELECT count(*) FROM doc_changes"), 1);
    let mut loaded = f.store.load_document("s-1").unwrap().unwrap();
    assert_eq!(heads(&mut loaded.doc), heads(s.am()));
}

fn committing_the_same_changes_twice_is_harmless(engine: Engine) {
    let f = fixture(engine);
    let mut s = Session::new("s-1");
    s.append(Channel::Hr, samples(Channel::Hr, 0, 10, 1_000_000, 1));
    commit(&f.store, "s-1", s.am(), 1);
    s.append(
        Channel::Hr,
        samples(Channel::Hr, 10_000_000, 10, 1_000_000, 2),
    );
    for now_us in [2, 3, 4] {
        f.store
            .commit_document("s-1", DocKind::Session, "austin", s.am(), now_us)
            .unwrap();
    }
    check_channel(
        &channels(&f.store, "s-1"),
        Channel::Hr,
        &s.sent[&Channel::Hr],
        2,
        0,
    );
    assert_eq!(count(&f.store, "SELECT count(*) FROM doc_changes"), 1);
    assert_eq!(
        count(
            &f.store,
            "SELECT updated_us FROM documents WHERE id = 's-1'"
        ),
        2,
        "the repeats wrote nothing"
    );
}

fn reindex_rebuilds_identical_projections(engine: Engine) {
    let f = fixture(engine);
    let mut a = Session::new("s-a");
    a.append(Channel::Hr, samples(Channel::Hr, 0, 10, 1_000_000, 1));
    a.append(Channel::Ecg, samples(Channel::Ecg, 0, 500, 4_000, 2));
    commit(&f.store, "s-a", a.am(), 10);
    a.append(
        Channel::Hr,
        samples(Channel::Hr, 10_000_000, 10, 1_000_000, 3),
    );
    a.doc
        .update_meta(|m| m.state = SessionState::Completed)
        .unwrap();
    commit(&f.store, "s-a", a.am(), 11);
    let mut b = Session::new("s-b");
    b.append(Channel::Spo2, samples(Channel::Spo2, 0, 30, 1_000_000, 4));
    plant(b.am(), Channel::Spo2, ScalarValue::Bytes(vec![1, 2, 3]));
    commit(&f.store, "s-b", b.am(), 12);
    let mut p = PatientDoc::create(&patient("p-1", "austin")).unwrap();
    f.store
        .commit_document("p-1", DocKind::Patient, "austin", p.automerge(), 13)
        .unwrap();

    let before = dump_projections(&f.store);
    assert_eq!(before["sessions"].len(), 2);
    assert_eq!(before["patients"].len(), 1);
    f.store
        .write(|db| {
            db.batch(
                "DELETE FROM sessions; DELETE FROM session_channels; DELETE FROM advisories;
                 DELETE FROM events; DELETE FROM patients;",
            )
        })
        .unwrap();
    assert!(dump_projections(&f.store).values().all(Vec::is_empty));

    let report = f.store.reindex().unwrap();
    assert_eq!(dump_projections(&f.store), before);
    assert_eq!(
        report,
        ReindexReport {
            documents: 3,
            sessions: 2,
            patients: 1,
            site_configs: 0,
            chunks: 5,
            corrupt_chunks: 1,
            audit_docs: 0,
            ledgers: 0,
            audit_entries_added: 0,
            failed: 0,
            failures: vec![],
        }
    );
    // Reindexing again over full tables changes nothing either.
    f.store.reindex().unwrap();
    assert_eq!(dump_projections(&f.store), before);
}

fn compaction_keeps_the_document_identical(engine: Engine) {
    let f = fixture(engine);
    let mut s = Session::new("s-1");
    commit(&f.store, "s-1", s.am(), 0);
    let rounds = COMPACT_AFTER_CHANGES + 5;
    for i in 0..rounds {
        s.append(
            Channel::Hr,
            samples(Channel::Hr, i * 10_000_000, 10, 1_000_000, i as i32),
        );
        s.doc.append_note(&format!("{i} ")).unwrap();
        commit(&f.store, "s-1", s.am(), i + 1);
    }
    let pending = count(&f.store, "SELECT count(*) FROM doc_changes");
    assert!(
        pending < COMPACT_AFTER_CHANGES,
        "{pending} change sets pending"
    );
    let mut loaded = f.store.load_document("s-1").unwrap().unwrap();
    assert_eq!(heads(&mut loaded.doc), heads(s.am()));
    let reloaded = SessionDoc::from_automerge(loaded.doc).unwrap();
    assert_eq!(reloaded.notes().unwrap(), s.doc.notes().unwrap());
    assert_eq!(reloaded.meta().unwrap(), s.doc.meta().unwrap());
    assert_eq!(reloaded.chunk_count(Channel::Hr), rounds as usize);
    check_channel(
        &channels(&f.store, "s-1"),
        Channel::Hr,
        &s.sent[&Channel::Hr],
        rounds as u64,
        0,
    );
    // The document endpoint's bytes load to the same heads, with and without pending changes.
    let bytes = f
        .store
        .document_bytes(&all(), "s-1", DocKind::Session)
        .unwrap()
        .unwrap();
    assert_eq!(heads(&mut AutoCommit::load(&bytes).unwrap()), heads(s.am()));
    assert_eq!(
        f.store
            .document_bytes(&all(), "s-1", DocKind::Patient)
            .unwrap(),
        None
    );
}

fn a_corrupt_chunk_counts_apart_while_the_others_count(engine: Engine) {
    let f = fixture(engine);
    let mut s = Session::new("s-1");
    s.append(Channel::Hr, samples(Channel::Hr, 0, 10, 1_000_000, 1));
    let good = encode(
        Channel::Hr,
        &samples(Channel::Hr, 10_000_000, 10, 1_000_000, 2),
    );
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 1);
    plant(s.am(), Channel::Hr, ScalarValue::Bytes(truncated));
    plant(s.am(), Channel::Hr, ScalarValue::Str("not bytes".into()));
    plant(
        s.am(),
        Channel::Hr,
        ScalarValue::Bytes(encode(
            Channel::Spo2,
            &samples(Channel::Spo2, 0, 3, 1_000_000, 3),
        )),
    );
    s.append(
        Channel::Hr,
        samples(Channel::Hr, 20_000_000, 10, 1_000_000, 4),
    );
    commit(&f.store, "s-1", s.am(), 1);
    // The projection reads headers: the truncated chunk's header is whole, so it counts its
    // ten samples there; the item that is not bytes and the other channel's chunk are corrupt.
    let rows = channels(&f.store, "s-1");
    let hr = &rows[&Channel::Hr];
    assert_eq!(
        (
            hr.samples,
            hr.first_us,
            hr.last_us,
            hr.chunks,
            hr.corrupt_chunks
        ),
        (30, Some(0), Some(29_000_000), 5, 2)
    );
    // Reads that decode skip it: the summary counts exactly what decodes, with its checksum.
    let summary = f.store.session_summary(&all(), "s-1").unwrap().unwrap();
    let hr = &summary.channels[&Channel::Hr];
    let sent = &s.sent[&Channel::Hr];
    assert_eq!(
        (
            hr.samples,
            hr.chunks,
            hr.corrupt_chunks,
            hr.checksum.clone()
        ),
        (20, 5, 3, format!("{:016x}", checksum(sent)))
    );
    let page = f
        .store
        .vitals(&all(), "s-1", Channel::Hr, None, None)
        .unwrap()
        .unwrap();
    assert_eq!((page.samples.len(), page.corrupt_chunks), (20, 2));
}

/// Counting from a prior row gives what a full recount gives, whatever happened to the list.
#[test]
fn incremental_counting_matches_a_full_recount() {
    type Mutation = fn(&mut AutoCommit, &automerge::ObjId);
    let hr = |i: i64| {
        encode(
            Channel::Hr,
            &samples(Channel::Hr, i * 10_000_000, 10, 1_000_000, i as i32),
        )
    };
    // (name, mutation, whether the counted prefix is still valid and gets reused)
    let cases: Vec<(&str, Mutation, bool)> = vec![
        ("nothing changed", |_, _| {}, true),
        (
            "appended",
            |d, l| {
                let n = d.length(l);
                d.insert(
                    l,
                    n,
                    ScalarValue::Bytes(encode(
                        Channel::Hr,
                        &samples(Channel::Hr, 90_000_000, 5, 1_000_000, 9),
                    )),
                )
                .unwrap();
            },
            true,
        ),
        (
            "inserted at the front",
            |d, l| {
                d.insert(
                    l,
                    0,
                    ScalarValue::Bytes(encode(
                        Channel::Hr,
                        &samples(Channel::Hr, -50_000_000, 5, 1_000_000, 8),
                    )),
                )
                .unwrap();
            },
            false,
        ),
        ("first item deleted", |d, l| d.delete(l, 0).unwrap(), false),
        (
            "last item deleted",
            |d, l| {
                let n = d.length(l);
                d.delete(l, n - 1).unwrap();
            },
            false,
        ),
        (
            "item overwritten with junk",
            |d, l| d.put(l, 1, ScalarValue::Bytes(vec![0xff])).unwrap(),
            false,
        ),
        (
            "deleted and re-inserted",
            |d, l| {
                d.delete(l, 0).unwrap();
                d.insert(
                    l,
                    0,
                    ScalarValue::Bytes(encode(
                        Channel::Hr,
                        &samples(Channel::Hr, 0, 3, 1_000_000, 7),
                    )),
                )
                .unwrap();
            },
            false,
        ),
        (
            "emptied",
            |d, l| {
                while d.length(l) > 0 {
                    d.delete(l, 0).unwrap();
                }
            },
            false,
        ),
    ];
    /// Samples added to a prior row as a marker: they survive only if the prefix is reused.
    const MARK: u64 = 1_000_000;
    for (name, mutate, reused) in cases {
        let mut s = Session::new("s-1");
        for i in 0..3 {
            s.doc.append_chunk(Channel::Hr, hr(i)).unwrap();
        }
        let prior = count_channel("s-1", s.doc.automerge_ref(), Channel::Hr, None);
        assert_eq!(prior.chunks, 3, "{name}");
        let list = super::projection::channel_list(s.doc.automerge_ref(), Channel::Hr).unwrap();
        mutate(s.am(), &list);
        let incremental = count_channel("s-1", s.doc.automerge_ref(), Channel::Hr, Some(&prior));
        let full = count_channel("s-1", s.doc.automerge_ref(), Channel::Hr, None);
        assert_eq!(incremental, full, "{name}");
        let marked = ChannelStats {
            samples: prior.samples + MARK,
            ..prior.clone()
        };
        let recount = count_channel("s-1", s.doc.automerge_ref(), Channel::Hr, Some(&marked));
        let expected = full.samples + if reused { MARK } else { 0 };
        assert_eq!(
            recount.samples, expected,
            "{name}: prefix reused = {reused}"
        );
        // The prefix hash survives a save and load (actor indexes may change, ids don't).
        if full.chunks > 0 {
            let reloaded = AutoCommit::load(&s.am().save()).unwrap();
            let marked = ChannelStats {
                samples: full.samples + MARK,
                ..full.clone()
            };
            let recount = count_channel("s-1", &reloaded, Channel::Hr, Some(&marked));
            assert_eq!(recount.samples, full.samples + MARK, "{name}: after reload");
        }
    }
}

fn documents_that_do_not_belong_are_refused_whole(engine: Engine) {
    let f = fixture(engine);
    let mut s = Session::new("s-1");
    commit(&f.store, "s-1", s.am(), 1);
    let mut p1 = PatientDoc::create(&patient("p-1", "austin")).unwrap();
    let mut p2 = PatientDoc::create(&patient("p-9", "austin")).unwrap();
    type Check = fn(&StoreError) -> bool;
    let owner: Check = |e| matches!(e, StoreError::OwnerMismatch { .. });
    let invalid: Check = |e| matches!(e, StoreError::InvalidDocument { .. });
    let mut other_site = Session::new("s-2");
    let mut austin_doc_elsewhere = Session::new("s-3");
    let cases: Vec<(&str, &str, DocKind, &str, &mut AutoCommit, Check)> = vec![
        (
            "known id, other site",
            "s-1",
            DocKind::Session,
            "florida",
            s.am(),
            owner,
        ),
        (
            "known id, other kind",
            "s-1",
            DocKind::Patient,
            "austin",
            p1.automerge(),
            owner,
        ),
        (
            "new id, wrong kind",
            "p-9",
            DocKind::Session,
            "austin",
            p2.automerge(),
            invalid,
        ),
        (
            "new id, document names another site",
            "s-2",
            DocKind::Session,
            "florida",
            other_site.am(),
            invalid,
        ),
        (
            "new id, sent as a site config",
            "s-3",
            DocKind::SiteConfig,
            "austin",
            austin_doc_elsewhere.am(),
            invalid,
        ),
    ];
    for (name, id, kind, site, doc, check) in cases {
        let before = heads(doc);
        let err = f.store.commit_document(id, kind, site, doc, 9).unwrap_err();
        assert!(check(&err), "{name}: {err}");
        assert_eq!(
            heads(doc),
            before,
            "{name}: the caller's document is unchanged"
        );
    }
    assert_eq!(count(&f.store, "SELECT count(*) FROM documents"), 1);
    assert_eq!(count(&f.store, "SELECT count(*) FROM sessions"), 1);
    assert_eq!(
        f.store.document_owner("s-1").unwrap(),
        Some((DocKind::Session, "austin".to_owned()))
    );
    assert_eq!(f.store.document_owner("nope").unwrap(), None);
}

fn changes_another_copy_committed_are_merged_in(engine: Engine) {
    let f = fixture(engine);
    let mut a = PatientDoc::create(&patient("p-1", "austin")).unwrap();
    let bytes = a.automerge().save();
    f.store
        .commit_document("p-1", DocKind::Patient, "austin", a.automerge(), 1)
        .unwrap();
    let mut b = PatientDoc::load(&bytes).unwrap();
    b.automerge().set_actor(automerge::ActorId::random());

    a.update(|r| r.phone = Some("512-555-0100".into())).unwrap();
    f.store
        .commit_document("p-1", DocKind::Patient, "austin", a.automerge(), 2)
        .unwrap();
    b.update(|r| r.family_name = "King".into()).unwrap();
    f.store
        .commit_document("p-1", DocKind::Patient, "austin", b.automerge(), 3)
        .unwrap();

    let merged = b.record().unwrap();
    assert_eq!(
        (merged.phone.as_deref(), merged.family_name.as_str()),
        (Some("512-555-0100"), "King"),
        "b's copy now holds a's change too"
    );
    let mut stored = f.store.load_document("p-1").unwrap().unwrap();
    assert_eq!(heads(&mut stored.doc), heads(b.automerge()));
    assert_eq!(f.store.patient(&all(), "p-1").unwrap(), Some(merged));
    let family: String = f
        .store
        .read(|db| {
            db.one("SELECT family_name FROM patients WHERE id = 'p-1'", &[])?
                .get(0)
        })
        .unwrap();
    assert_eq!(family, "King");
}

fn the_registry_lists_a_sites_documents_by_kind(engine: Engine) {
    let f = fixture(engine);
    for (id, site) in [("s-1", "austin"), ("s-2", "austin")] {
        let mut s = SessionDoc::create(&meta(id, site, "1", None)).unwrap();
        f.store
            .commit_document(id, DocKind::Session, site, s.automerge(), 1)
            .unwrap();
    }
    for (id, site) in [("p-1", "austin"), ("p-2", "florida")] {
        let mut p = PatientDoc::create(&patient(id, site)).unwrap();
        f.store
            .commit_document(id, DocKind::Patient, site, p.automerge(), 1)
            .unwrap();
    }
    let cases: [(&str, &[DocKind], &[&str]); 5] = [
        ("austin", &[DocKind::Patient], &["p-1"]),
        ("austin", &[DocKind::Session], &["s-1", "s-2"]),
        ("austin", &[DocKind::Patient, DocKind::SiteConfig], &["p-1"]),
        ("florida", &[DocKind::Session], &[]),
        ("nowhere", &DocKind::ALL, &[]),
    ];
    for (site, kinds, expected) in cases {
        assert_eq!(
            f.store.site_documents(site, kinds).unwrap(),
            expected,
            "{site} {kinds:?}"
        );
    }
}

fn a_ledgers_entries_are_indexed_once_with_when_they_first_arrived(engine: Engine) {
    let f = fixture(engine);
    let s = &f.store;
    let id = ledger_id("austin");
    let mut doc = ledger_with(&[("r1", "L1")]);
    s.commit_document(&id, DocKind::Ledger, "austin", doc.automerge(), 100)
        .unwrap();
    let more = ledger_with(&[("r2", "L2")]);
    doc.automerge()
        .merge(&mut more.automerge_ref().clone())
        .unwrap();
    s.commit_document(&id, DocKind::Ledger, "austin", doc.automerge(), 200)
        .unwrap();
    let rows = |s: &CloudStore| -> Vec<(String, i64)> {
        s.ledger_entries("austin", 0, i64::MAX)
            .unwrap()
            .into_iter()
            .map(|r| (r.entry.id, r.received_us))
            .collect()
    };
    assert_eq!(rows(s), vec![("r1".into(), 100), ("r2".into(), 200)]);
    s.reindex().unwrap();
    assert_eq!(
        rows(s),
        vec![("r1".into(), 100), ("r2".into(), 200)],
        "a reindex keeps the first receive time"
    );
    assert!(s.ledger_entries("florida", 0, i64::MAX).unwrap().is_empty());
}

fn an_enrolment_code_works_once_within_its_hour_for_a_free_room(engine: Engine) {
    let f = fixture(engine);
    let s = &f.store;
    let signed = |serial: &'static str| {
        move |site: &str, room: &str| {
            assert_eq!((site, room), ("austin", "1"), "named from the stored code");
            Ok((serial.to_owned(), 10_000))
        }
    };
    assert_eq!(
        s.use_enrol_code("nope", signed("00"), 5).unwrap(),
        Err(EnrolRefusal::Unknown)
    );
    s.create_enrol_code(&enrol_code("a", "1", 100)).unwrap();
    s.create_enrol_code(&enrol_code("b", "1", 100)).unwrap();
    s.create_enrol_code(&enrol_code("late", "1", 100)).unwrap();
    assert!(matches!(
        s.use_enrol_code("late", signed("00"), 100).unwrap(),
        Err(EnrolRefusal::Expired { .. })
    ));
    let cert = s.use_enrol_code("a", signed("0a"), 10).unwrap().unwrap();
    assert_eq!(
        (cert.serial.as_str(), cert.site.as_str(), cert.room.as_str()),
        ("0a", "austin", "1")
    );
    assert!(matches!(
        s.use_enrol_code("a", signed("0b"), 11).unwrap(),
        Err(EnrolRefusal::Used { .. })
    ));
    // The room is taken now: another code for it (made before the first was used) is
    // refused, and nothing is recorded for it.
    assert_eq!(
        s.use_enrol_code("b", signed("0c"), 12).unwrap(),
        Err(EnrolRefusal::RoomActive {
            site: "austin".into(),
            room: "1".into(),
            serial: "0a".into()
        })
    );
    assert_eq!(
        s.active_certificate("austin", "1", 12).unwrap(),
        Some("0a".into())
    );
    // A replacing code revokes the room's certificate when it is used.
    let mut replace = enrol_code("c", "1", 100);
    replace.replaces_active = true;
    s.create_enrol_code(&replace).unwrap();
    s.use_enrol_code("c", signed("0d"), 20).unwrap().unwrap();
    assert_eq!(
        s.active_certificate("austin", "1", 21).unwrap(),
        Some("0d".into())
    );
    let refusal = s.certificate_refusal("0a", 21).unwrap().expect("revoked");
    assert!(
        refusal.contains("was revoked") && refusal.contains("--replace"),
        "{refusal}"
    );
    assert_eq!(s.certificate_refusal("0d", 21).unwrap(), None);
    assert_eq!(s.certificate_refusal("unknown", 21).unwrap(), None);
    // What the site's configuration lists for its appliances to refuse as peers.
    assert_eq!(
        s.refused_certificates(21).unwrap(),
        vec![("austin".to_owned(), "0a".to_owned(), 20)]
    );
    assert_eq!(s.refused_certificates(19).unwrap(), vec![]);
    // An expired certificate leaves the room free.
    assert_eq!(s.active_certificate("austin", "1", 10_000).unwrap(), None);
}

fn a_renewed_certificate_stops_working_after_its_grace_period(engine: Engine) {
    let f = fixture(engine);
    let s = &f.store;
    let new = NewCert {
        serial: "02",
        site: "austin",
        room: "1",
        not_after_us: 5_000,
    };
    // "01" was issued by hand: recorded at its renewal so that its end is enforced.
    s.renew_certificate("01", 900, &new, 100, 50).unwrap();
    assert_eq!(s.certificate_refusal("01", 149).unwrap(), None);
    let refusal = s
        .certificate_refusal("01", 150)
        .unwrap()
        .expect("superseded");
    assert!(refusal.contains("was renewed"), "{refusal}");
    // Refused from the end of its grace period, before and after the sweep marks it.
    let refused = vec![("austin".to_owned(), "01".to_owned(), 150)];
    assert_eq!(s.refused_certificates(149).unwrap(), vec![]);
    assert_eq!(s.refused_certificates(150).unwrap(), refused);
    assert_eq!(s.revoke_superseded(149).unwrap(), Vec::<String>::new());
    assert_eq!(s.revoke_superseded(150).unwrap(), vec!["01".to_owned()]);
    assert_eq!(s.revoke_superseded(151).unwrap(), Vec::<String>::new());
    assert_eq!(s.refused_certificates(151).unwrap(), refused);
    let certs = s.room_certificates("austin", "1").unwrap();
    let summary: Vec<_> = certs
        .iter()
        .map(|c| {
            (
                c.serial.as_str(),
                c.source.as_str(),
                c.replaces.as_deref(),
                c.revoked_us,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("01", "manual", None, Some(150)),
            ("02", "renew", Some("01"), None)
        ]
    );
    assert_eq!(
        s.active_certificate("austin", "1", 200).unwrap(),
        Some("02".into())
    );
}

fn appliance_presence_is_recorded(engine: Engine) {
    let f = fixture(engine);
    let s = &f.store;
    s.appliance_connected(
        &Connected::new("austin", "1", "vigil-edge 0.1", "cloud-a"),
        100,
    )
    .unwrap();
    s.appliance_seen("austin", "1", 150).unwrap();
    s.appliance_synced("austin", "1", 200, 3, 4_096).unwrap();
    s.appliance_connected(
        &Connected::new("austin", "2", "vigil-edge 0.1", "cloud-a"),
        300,
    )
    .unwrap();
    s.appliance_disconnected("austin", "2", 400).unwrap();
    s.appliance_connected(
        &Connected::new("austin", "1", "vigil-edge 0.2", "cloud-b"),
        500,
    )
    .unwrap();
    s.appliance_disconnected("nowhere", "9", 600).unwrap();
    let rows = s.appliances().unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.room.as_str(),
                r.connected,
                r.software.as_str(),
                r.first_seen_us,
                r.last_seen_us,
                r.last_sync_us,
                r.backlog_docs,
                r.backlog_bytes,
                r.instance.as_str(),
            )
        })
        .collect();
    // Room 1 moved to instance b when it reconnected there.
    assert_eq!(
        got,
        vec![
            (
                "1",
                true,
                "vigil-edge 0.2",
                100,
                500,
                Some(200),
                3,
                4_096,
                "cloud-b"
            ),
            (
                "2",
                false,
                "vigil-edge 0.1",
                300,
                400,
                None,
                0,
                0,
                "cloud-a"
            ),
        ]
    );
    // The registry of appliances is not a projection: reindex keeps it.
    s.reindex().unwrap();
    assert_eq!(s.appliances().unwrap(), rows);
}

fn the_session_list_filters_and_pages(engine: Engine) {
    let f = fixture(engine);
    let sessions = [
        ("s-1", "austin", "1", Some(100)),
        ("s-2", "austin", "2", Some(200)),
        ("s-3", "austin", "1", Some(300)),
        ("s-4", "florida", "1", Some(250)),
        ("s-5", "austin", "1", None),
    ];
    for (id, site, room, started) in sessions {
        let mut d = SessionDoc::create(&meta(id, site, room, started)).unwrap();
        f.store
            .commit_document(id, DocKind::Session, site, d.automerge(), 1)
            .unwrap();
    }
    let filter = |site: Option<&str>, room: Option<&str>, from, to, limit, offset| SessionFilter {
        has_advisory: None,
        patient_id: None,
        site: site.map(str::to_owned),
        room: room.map(str::to_owned),
        state: None,
        from_us: from,
        to_us: to,
        limit,
        offset,
    };
    let cases = [
        (
            filter(None, None, None, None, 100, 0),
            5,
            vec!["s-3", "s-4", "s-2", "s-1", "s-5"],
        ),
        (
            filter(Some("austin"), None, None, None, 100, 0),
            4,
            vec!["s-3", "s-2", "s-1", "s-5"],
        ),
        (
            filter(Some("austin"), Some("1"), None, None, 100, 0),
            3,
            vec!["s-3", "s-1", "s-5"],
        ),
        (
            filter(None, None, Some(200), Some(300), 100, 0),
            2,
            vec!["s-4", "s-2"],
        ),
        (
            filter(None, None, Some(200), None, 2, 1),
            3,
            vec!["s-4", "s-2"],
        ),
        (filter(Some("nowhere"), None, None, None, 100, 0), 0, vec![]),
        (
            filter(None, None, None, None, 10_000, 0),
            5,
            vec!["s-3", "s-4", "s-2", "s-1", "s-5"],
        ),
    ];
    for (filter, total, ids) in cases {
        let page = f.store.sessions(&all(), &filter).unwrap();
        let got: Vec<&str> = page.sessions.iter().map(|r| r.id.as_str()).collect();
        assert_eq!((page.total, got), (total, ids), "{filter:?}");
        assert!(page.limit <= MAX_SESSION_PAGE);
    }
    let completed = SessionFilter {
        state: Some("completed".into()),
        limit: 10,
        ..filter(None, None, None, None, 10, 0)
    };
    assert_eq!(f.store.sessions(&all(), &completed).unwrap().total, 0);
}

/// Vitals pages: range filters, time order across chunks, and cuts that never split an
/// instant.
#[test]
fn vitals_pages_cut_cleanly() {
    // Chunks as (start_us, n, period_us); HR, values irrelevant.
    type Case = (
        &'static str,
        Vec<(i64, usize, i64)>,
        Option<i64>,
        Option<i64>,
        usize,
        Vec<i64>,
        Option<i64>,
    );
    let cases: Vec<Case> = vec![
        (
            "everything",
            vec![(0, 3, 10), (30, 3, 10)],
            None,
            None,
            100,
            vec![0, 10, 20, 30, 40, 50],
            None,
        ),
        (
            "range is half-open",
            vec![(0, 3, 10), (30, 3, 10)],
            Some(10),
            Some(40),
            100,
            vec![10, 20, 30],
            None,
        ),
        (
            "chunks out of order",
            vec![(30, 3, 10), (0, 3, 10)],
            None,
            None,
            100,
            vec![0, 10, 20, 30, 40, 50],
            None,
        ),
        (
            "cut at the limit",
            vec![(0, 3, 10), (30, 3, 10)],
            None,
            None,
            4,
            vec![0, 10, 20, 30],
            Some(40),
        ),
        (
            "cut resumes",
            vec![(0, 3, 10), (30, 3, 10)],
            Some(40),
            None,
            4,
            vec![40, 50],
            None,
        ),
        (
            "never split an instant",
            vec![(0, 2, 10), (10, 3, 0), (20, 1, 0)],
            None,
            None,
            3,
            vec![0],
            Some(10),
        ),
        (
            "an instant fits",
            vec![(0, 2, 10), (10, 3, 0), (20, 1, 0)],
            Some(10),
            None,
            4,
            vec![10, 10, 10, 10],
            Some(20),
        ),
        (
            "empty range",
            vec![(0, 3, 10)],
            Some(100),
            Some(200),
            10,
            vec![],
            None,
        ),
    ];
    for (name, chunks, from, to, max, expected, next) in cases {
        let mut s = Session::new("s-1");
        for (i, (start, n, period)) in chunks.into_iter().enumerate() {
            s.append(
                Channel::Hr,
                samples(Channel::Hr, start, n, period, i as i32),
            );
        }
        let page = vitals_page(s.doc.automerge_ref(), Channel::Hr, from, to, 0, max);
        let times: Vec<i64> = page.samples.iter().map(|row| row[0]).collect();
        assert_eq!((times, page.next_from_us), (expected, next), "{name}");
        assert!(page.samples.iter().all(|row| row.len() == 2), "{name}");
    }
    let mut s = Session::new("s-1");
    s.append(Channel::Nibp, samples(Channel::Nibp, 0, 2, 180_000_000, 1));
    let page = vitals_page(s.doc.automerge_ref(), Channel::Nibp, None, None, 0, 10);
    let first = s.sent[&Channel::Nibp][0];
    assert_eq!(
        page.samples[0],
        vec![
            0,
            i64::from(first.v[0]),
            i64::from(first.v[1]),
            i64::from(first.v[2])
        ]
    );
}

/// A SQLite store at `path` holding session `s-1` with ten HR samples, closed again.
fn one_session_on_disk(path: &Path) -> Session {
    let mut s = Session::new("s-1");
    s.append(Channel::Hr, samples(Channel::Hr, 0, 10, 1_000_000, 1));
    let store = CloudStore::open(path).unwrap();
    commit(&store, "s-1", s.am(), 1);
    s
}

#[test]
fn reopening_keeps_everything_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.db");
    let mut s = one_session_on_disk(&path);
    let store = CloudStore::open(&path).unwrap();
    let mut loaded = store.load_document("s-1").unwrap().unwrap();
    assert_eq!(heads(&mut loaded.doc), heads(s.am()));
    check_channel(
        &channels(&store, "s-1"),
        Channel::Hr,
        &s.sent[&Channel::Hr],
        1,
        0,
    );
    store
        .write(|db| db.batch(&format!("PRAGMA user_version = {}", DB_VERSION + 1)))
        .unwrap();
    drop(store);
    assert!(matches!(
        CloudStore::open(&path),
        Err(StoreError::TooNew(_))
    ));
}

/// Every scope in these tests: made as the dashboard makes them, from a principal.
fn all() -> Scope {
    Scope::all_for_tests()
}

/// The scope of a user with `role` bound to `bound_to`, over Austin (central) and Florida
/// (southeast).
fn scope_of(role: &str, bound_to: &str) -> Scope {
    let site = |id: &str, region: &str| crate::config::SiteInfo {
        id: id.into(),
        name: id.into(),
        region: region.into(),
        rooms: vec!["1".into()],
        tz: None,
    };
    let user = UserRow {
        id: 1,
        username: "u".into(),
        role: role.into(),
        scope: bound_to.into(),
        password_hash: String::new(),
        disabled: false,
        created_us: 0,
    };
    let sites = [site("austin", "central"), site("florida", "southeast")];
    crate::auth::principal(&user, &sites)
        .unwrap()
        .scope()
        .clone()
}

fn a_regional_managers_scope_leaves_other_regions_out_of_every_query(engine: Engine) {
    let f = fixture(engine);
    for (id, site, patient_id) in [("s-a", "austin", "p-a"), ("s-f", "florida", "p-f")] {
        let mut m = meta(id, site, "1", Some(100));
        m.patient_id = patient_id.into();
        m.observations = vec![vigil_shared::doc::Observation {
            id: "o1".into(),
            at_us: 200,
            effect: "nausea".into(),
            severity: "mild".into(),
            by: "nurse-a".into(),
        }];
        let mut s = SessionDoc::create(&m).unwrap();
        let hr = samples(Channel::Hr, 100, 20, 1_000_000, 1);
        s.append_chunk(Channel::Hr, encode(Channel::Hr, &hr))
            .unwrap();
        let ecg = samples(Channel::Ecg, 100, 50, 4_000, 2);
        s.append_chunk(Channel::Ecg, encode(Channel::Ecg, &ecg))
            .unwrap();
        f.store
            .commit_document(id, DocKind::Session, site, s.automerge(), 1)
            .unwrap();
        let mut p = PatientDoc::create(&patient(patient_id, site)).unwrap();
        f.store
            .commit_document(patient_id, DocKind::Patient, site, p.automerge(), 1)
            .unwrap();
    }
    let central = scope_of("regional_manager", "central");
    let s = &f.store;
    let sites_of = |rows: Vec<String>| rows.into_iter().collect::<std::collections::BTreeSet<_>>();
    let austin_only = sites_of(vec!["austin".into()]);

    // Lists and reports: only the region's sites.
    let filter = SessionFilter {
        site: None,
        room: None,
        state: None,
        patient_id: None,
        from_us: None,
        to_us: None,
        has_advisory: None,
        limit: 100,
        offset: 0,
    };
    let page = s.sessions(&central, &filter).unwrap();
    assert_eq!(
        (
            page.total,
            sites_of(page.sessions.into_iter().map(|r| r.site).collect())
        ),
        (1, austin_only.clone())
    );
    let by_patient = SessionFilter {
        patient_id: Some("p-f".into()),
        ..filter.clone()
    };
    assert_eq!(s.sessions(&central, &by_patient).unwrap().total, 0);
    let rooms = s.room_activity(&central, 0).unwrap();
    assert_eq!(
        sites_of(rooms.into_iter().map(|r| r.site).collect()),
        austin_only
    );
    let rows = s.session_report_rows(&central, None, None).unwrap();
    assert_eq!(
        sites_of(rows.into_iter().map(|r| r.site).collect()),
        austin_only
    );
    let counts = s.site_session_counts(&central, None, None).unwrap();
    assert_eq!(
        sites_of(counts.into_iter().map(|r| r.site).collect()),
        austin_only
    );
    let events = s.advisory_counts(&central, None, None).unwrap();
    assert_eq!(
        sites_of(events.into_iter().map(|r| r.site).collect()),
        austin_only
    );
    let outcomes = s.outcome_inputs(&central).unwrap();
    assert_eq!(
        sites_of(outcomes.into_iter().map(|r| r.site).collect()),
        austin_only
    );

    // One document at a time: the other region's reads exactly like an unknown id.
    for (id, visible) in [("s-a", true), ("s-f", false), ("s-nowhere", false)] {
        assert_eq!(
            s.session_row(&central, id).unwrap().is_some(),
            visible,
            "{id}"
        );
        assert_eq!(
            s.session_summary(&central, id).unwrap().is_some(),
            visible,
            "{id}"
        );
        let vitals = s.vitals(&central, id, Channel::Hr, None, None).unwrap();
        assert_eq!(vitals.is_some(), visible, "{id}");
        let chart = s.session_chart(&central, id, None, None).unwrap();
        assert_eq!(chart.is_some(), visible, "{id}");
        assert_eq!(
            s.ecg_first_us(&central, id).unwrap().is_some(),
            visible,
            "{id}"
        );
        let bytes = s.document_bytes(&central, id, DocKind::Session).unwrap();
        assert_eq!(bytes.is_some(), visible, "{id}");
    }
    assert!(s.patient(&central, "p-a").unwrap().is_some());
    assert!(s.patient(&central, "p-f").unwrap().is_none());
    let patient_bytes = s.document_bytes(&central, "p-f", DocKind::Patient).unwrap();
    assert!(patient_bytes.is_none());

    // The mirror image, a clinician's single site, and a region with no site: nothing.
    let southeast = scope_of("regional_manager", "southeast");
    assert!(s.session_summary(&southeast, "s-f").unwrap().is_some());
    assert!(s.session_summary(&southeast, "s-a").unwrap().is_none());
    let nurse = scope_of("clinician", "florida");
    assert_eq!(s.sessions(&nurse, &filter).unwrap().total, 1);
    let nowhere = scope_of("regional_manager", "west");
    assert_eq!(s.sessions(&nowhere, &filter).unwrap().total, 0);
    assert!(s.room_activity(&nowhere, 0).unwrap().is_empty());
    assert!(s.outcome_inputs(&nowhere).unwrap().is_empty());
    assert!(s.patient(&nowhere, "p-a").unwrap().is_none());
    // An admin sees both.
    assert_eq!(
        s.sessions(&scope_of("admin", ""), &filter).unwrap().total,
        2
    );
}

fn a_session_cannot_pull_another_sites_patient_into_its_outcomes(engine: Engine) {
    let f = fixture(engine);
    let mut record = patient("p-f", "florida");
    record.course.infusions_planned = 1;
    record.outcome_scores = vec![vigil_shared::doc::Score {
        id: "c1".into(),
        at_us: 10,
        instrument: "phq9".into(),
        phase: "pre".into(),
        value: 21,
        by: "nurse".into(),
    }];
    let mut p = PatientDoc::create(&record).unwrap();
    f.store
        .commit_document("p-f", DocKind::Patient, "florida", p.automerge(), 1)
        .unwrap();
    // A session at Austin naming Florida's patient.
    let mut m = meta("s-forged", "austin", "1", Some(100));
    m.patient_id = "p-f".into();
    let mut s = SessionDoc::create(&m).unwrap();
    commit(&f.store, "s-forged", s.automerge(), 1);
    let outcomes = f.store.outcome_inputs(&all()).unwrap();
    assert_eq!(
        outcomes,
        vec![OutcomeSite {
            site: "austin".into(),
            patients: vec![crate::store::PatientOutcomeInput {
                patient: "p-f".into(),
                planned: 6,
                done_us: vec![],
                phq9: vec![],
            }],
        }],
        "Florida's plan and PHQ-9 stay out of Austin's report"
    );
}

#[test]
fn tokens_made_before_expiry_existed_get_the_default_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.db");
    let day = 86_400_000_000_i64;
    {
        // A database at version 3, as far as the step to 4 looks (it touches only
        // `api_tokens`): tokens without expiry or last use.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "BEGIN; {} PRAGMA user_version = 3; COMMIT;",
            users::SCHEMA_V2
        ))
        .unwrap();
        conn.execute(
            "INSERT INTO users (username, role, scope, password_hash, created_us)
             VALUES ('maria', 'admin', '', 'x', 0)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO api_tokens (token_hash, user_id, label, created_us)
             VALUES (x'01', 1, 'old', ?1)",
            [5 * day],
        )
        .unwrap();
    }
    let store = CloudStore::open(&path).unwrap();
    let (row, user) = store.api_token(&[1]).unwrap().unwrap();
    assert_eq!(user.username, "maria");
    assert_eq!(
        (
            row.label.as_str(),
            row.created_us,
            row.expires_us,
            row.last_used_us
        ),
        ("old", 5 * day, (5 + LEGACY_TOKEN_DAYS) * day, None)
    );
    // New tokens, use, listing and revocation on the migrated file.
    let id = store
        .create_api_token(&[2], user.id, "new", 10 * day, 40 * day)
        .unwrap();
    store.touch_api_token(id, 11 * day).unwrap();
    let listed = store.api_tokens(user.id).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.label.as_str(), t.last_used_us))
            .collect::<Vec<_>>(),
        [("new", Some(11 * day)), ("old", None)]
    );
    assert!(
        !store.revoke_api_token(user.id + 1, id).unwrap(),
        "not theirs"
    );
    assert!(store.revoke_api_token(user.id, id).unwrap());
    assert!(store.api_token(&[2]).unwrap().is_none());
}

fn audit_entry(n: u64, at_us: i64) -> vigil_shared::audit::AuditEntry {
    vigil_shared::audit::AuditEntry {
        id: format!("00000000-0000-4000-8000-{n:012x}"),
        at_us,
        actor: "nurse-a".into(),
        action: format!("GET /api/v1/sessions/s-{n}"),
        target: format!("s-{n}"),
        client: "10.1.2.3".into(),
    }
}

/// One audit log row as (at_us, source, site, room, user, action, entry id).
type AuditLine = (
    i64,
    &'static str,
    String,
    String,
    String,
    String,
    Option<String>,
);

/// The audit log, in page order.
fn audit_rows(store: &CloudStore) -> Vec<AuditLine> {
    let (total, rows) = store.audit_log(MAX_AUDIT_PAGE, 0).unwrap();
    assert_eq!(total, rows.len() as u64);
    rows.into_iter()
        .map(|r| {
            (
                r.at_us,
                r.source.as_str(),
                r.site,
                r.room,
                r.username,
                r.action,
                r.entry_id,
            )
        })
        .collect()
}

fn an_appliances_audit_entries_land_once_beside_the_clouds_own(engine: Engine) {
    const DOC: &str = "a0d17000-0000-4000-8000-000000000001";
    let f = fixture(engine);
    f.store
        .audit(&AuditRow::cloud(
            5,
            "admin",
            "view session",
            "s-1",
            "10.0.0.1",
        ))
        .unwrap();
    let mut doc = vigil_shared::audit::AuditDoc::create(DOC, "austin", "2").unwrap();
    doc.append(&[audit_entry(1, 10), audit_entry(2, 3)])
        .unwrap();
    let commit_audit = |doc: &mut vigil_shared::audit::AuditDoc, now_us| {
        f.store
            .commit_document(DOC, DocKind::Audit, "austin", doc.automerge(), now_us)
            .unwrap();
    };
    commit_audit(&mut doc, 20);
    let appliance = |n: u64, at_us: i64| {
        (
            at_us,
            "appliance",
            "austin".to_owned(),
            "2".to_owned(),
            "nurse-a".to_owned(),
            format!("GET /api/v1/sessions/s-{n}"),
            Some(format!("00000000-0000-4000-8000-{n:012x}")),
        )
    };
    let cloud = (
        5,
        "cloud",
        String::new(),
        String::new(),
        "admin".to_owned(),
        "view session".to_owned(),
        None,
    );
    // Newest first by when it happened: the appliance's entries interleave with the cloud's.
    assert_eq!(
        audit_rows(&f.store),
        [appliance(1, 10), cloud.clone(), appliance(2, 3)]
    );

    // The same document again (a re-sync, a duplicate message): nothing new.
    let mut again = vigil_shared::audit::AuditDoc::load(&doc.automerge().save()).unwrap();
    again.automerge().set_actor(automerge::ActorId::random());
    f.store
        .commit_document(DOC, DocKind::Audit, "austin", again.automerge(), 21)
        .unwrap();
    assert_eq!(audit_rows(&f.store).len(), 3);
    // One more entry: one more row.
    doc.append(&[audit_entry(3, 30)]).unwrap();
    commit_audit(&mut doc, 31);
    let all = vec![appliance(3, 30), appliance(1, 10), cloud, appliance(2, 3)];
    assert_eq!(audit_rows(&f.store), all);

    // A reindex projects the document again and adds nothing; rows lost are put back.
    let report = f.store.reindex().unwrap();
    assert_eq!((report.audit_docs, report.audit_entries_added), (1, 0));
    assert_eq!(audit_rows(&f.store), all);
    f.store
        .write(|db| db.exec("DELETE FROM audit_log WHERE source = 'appliance'", &[]))
        .unwrap();
    let report = f.store.reindex().unwrap();
    assert_eq!((report.audit_docs, report.audit_entries_added), (1, 3));
    assert_eq!(audit_rows(&f.store), all);
}

fn the_same_entry_id_from_another_room_is_another_entry(engine: Engine) {
    // No appliance can suppress another's entries by claiming their ids first.
    let f = fixture(engine);
    for (doc_id, room) in [
        ("a0d17000-0000-4000-8000-000000000001", "1"),
        ("a0d17000-0000-4000-8000-000000000002", "2"),
    ] {
        let mut doc = vigil_shared::audit::AuditDoc::create(doc_id, "austin", room).unwrap();
        doc.append(&[audit_entry(1, 10)]).unwrap();
        f.store
            .commit_document(doc_id, DocKind::Audit, "austin", doc.automerge(), 1)
            .unwrap();
    }
    let rooms: Vec<String> = audit_rows(&f.store).into_iter().map(|r| r.3).collect();
    assert_eq!(rooms.len(), 2);
    assert!(rooms.contains(&"1".to_owned()) && rooms.contains(&"2".to_owned()));
}

#[test]
fn a_version_4_audit_log_reads_as_the_clouds_own_after_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.db");
    {
        // A database as version 4 left it: the audit log without the appliance columns, and
        // no attention list (version 6).
        drop(CloudStore::open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE attention;
             DROP INDEX audit_by_entry;
             ALTER TABLE audit_log DROP COLUMN source;
             ALTER TABLE audit_log DROP COLUMN site;
             ALTER TABLE audit_log DROP COLUMN room;
             ALTER TABLE audit_log DROP COLUMN entry_id;
             INSERT INTO audit_log (at_us, username, action, target, ip)
                 VALUES (7, 'rm-central', 'view session', 's-1', '127.0.0.1');
             PRAGMA user_version = 4;",
        )
        .unwrap();
    }
    let store = CloudStore::open(&path).unwrap();
    let (_, rows) = store.audit_log(10, 0).unwrap();
    assert_eq!(
        rows,
        [AuditRow::cloud(
            7,
            "rm-central",
            "view session",
            "s-1",
            "127.0.0.1"
        )]
    );
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, DB_VERSION);
}

#[test]
fn version_6_change_sets_are_folded_into_their_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.db");
    let mut s = one_session_on_disk(&path);
    // As version 6 stored it: the first commit as the snapshot, a later one as a change set.
    let first = heads(s.am());
    s.append(
        Channel::Hr,
        samples(Channel::Hr, 10_000_000, 10, 1_000_000, 2),
    );
    let set = s.am().save_after(&first);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE doc_changes;
         CREATE TABLE doc_changes (doc_id TEXT NOT NULL, seq INTEGER NOT NULL,
                                   bytes BLOB NOT NULL, PRIMARY KEY (doc_id, seq));
         PRAGMA user_version = 6;",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO doc_changes (doc_id, seq, bytes) VALUES ('s-1', 1, ?1)",
        [&set],
    )
    .unwrap();
    conn.execute(
        "UPDATE documents SET heads = ?1 WHERE id = 's-1'",
        [heads_to_blob(&heads(s.am()))],
    )
    .unwrap();
    drop(conn);

    let store = CloudStore::open(&path).unwrap();
    let mut loaded = store.load_document("s-1").unwrap().unwrap();
    assert_eq!(heads(&mut loaded.doc), heads(s.am()));
    assert_eq!(count(&store, "SELECT count(*) FROM doc_changes"), 0);
    // And it takes new changes as version 7 does.
    s.append(
        Channel::Hr,
        samples(Channel::Hr, 20_000_000, 10, 1_000_000, 3),
    );
    commit(&store, "s-1", s.am(), 2);
    assert_eq!(count(&store, "SELECT count(*) FROM doc_changes"), 1);
    let mut loaded = store.load_document("s-1").unwrap().unwrap();
    assert_eq!(heads(&mut loaded.doc), heads(s.am()));
}

#[test]
fn a_newer_postgres_schema_is_refused_and_reopening_keeps_everything() {
    let cluster = crate::pg_cluster::cluster();
    let url = cluster.new_database();
    let mut s = Session::new("s-1");
    s.append(Channel::Hr, samples(Channel::Hr, 0, 10, 1_000_000, 1));
    {
        let store = CloudStore::open_postgres(&url, None).unwrap();
        commit(&store, "s-1", s.am(), 1);
    }
    // A second instance opening the same database migrates nothing and sees everything.
    let store = CloudStore::open_postgres(&url, None).unwrap();
    let mut loaded = store.load_document("s-1").unwrap().unwrap();
    assert_eq!(heads(&mut loaded.doc), heads(s.am()));
    store
        .write(|db| {
            db.exec(
                "UPDATE vigil_schema SET version = ?1",
                args![DB_VERSION + 1],
            )
        })
        .unwrap();
    drop(store);
    assert!(matches!(
        CloudStore::open_postgres(&url, None),
        Err(StoreError::TooNew(v)) if v == DB_VERSION + 1
    ));
}

#[test]
fn postgres_says_which_part_of_the_connection_failed() {
    let cluster = crate::pg_cluster::cluster();
    let open_err = |url: &str| match CloudStore::open_postgres(url, None) {
        Err(e) => e,
        Ok(_) => panic!("{url} opened"),
    };
    let wrong_password = open_err(
        &cluster
            .url("postgres")
            .replace(crate::pg_cluster::PASSWORD, "not-the-password"),
    );
    assert!(wrong_password.is_unavailable(), "{wrong_password}");
    assert!(
        wrong_password
            .to_string()
            .contains("password authentication failed"),
        "{wrong_password}"
    );
    let missing = open_err(&cluster.url("no_such_database"));
    assert!(
        missing
            .to_string()
            .contains("database \"no_such_database\" does not exist"),
        "{missing}"
    );
    // Nothing listens on this port: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = open_err(&format!("postgres://vigil:x@127.0.0.1:{port}/vigil"));
    assert!(unreachable.is_unavailable(), "{unreachable}");
    assert!(
        unreachable
            .to_string()
            .contains(&format!("127.0.0.1:{port}/vigil"))
            && unreachable
                .to_string()
                .to_lowercase()
                .contains("connection refused"),
        "{unreachable}"
    );
    let garbled = open_err("postgres://vigil@127.0.0.1:notaport/vigil");
    assert!(garbled.to_string().contains("not valid"), "{garbled}");
}

#[test]
fn postgres_off_this_machine_is_tls_with_the_server_checked() {
    let refused = CloudStore::open_postgres("postgres://vigil:x@db.example.org/vigil", None)
        .expect_err("a remote server without a CA is refused");
    assert!(
        refused.to_string().contains("must be TLS") && refused.to_string().contains("ca_file"),
        "{refused}"
    );

    let cluster = crate::pg_cluster::cluster();
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::pki::Ca::init(&dir.path().join("db-ca"), "Database CA").unwrap();
    let server = ca
        .issue_server(&["localhost".to_owned()], &[], "postgres")
        .unwrap();
    cluster
        .enable_tls(&server.cert_path, &server.key_path)
        .unwrap();
    let ca_der = CertificateDer::from(ca.cert_der().to_vec());
    let url = cluster.new_database().replace("@127.0.0.1:", "@localhost:");
    let store = CloudStore::open_postgres(&url, Some(std::slice::from_ref(&ca_der))).unwrap();
    let encrypted: bool = store
        .read(|db| {
            db.one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )?
            .get(0)
        })
        .unwrap();
    assert!(encrypted, "the connection is TLS");

    // A server whose certificate the CA did not issue is refused, naming the certificate.
    let other = crate::pki::Ca::init(&dir.path().join("other-ca"), "Someone else").unwrap();
    let other_der = CertificateDer::from(other.cert_der().to_vec());
    let wrong = CloudStore::open_postgres(&url, Some(std::slice::from_ref(&other_der)))
        .expect_err("a server the CA did not certify is refused");
    assert!(
        wrong.is_unavailable() && wrong.to_string().to_lowercase().contains("certificate"),
        "{wrong}"
    );
}

/// Two instances (two handles on one database) are offered the same session's changes at
/// the same moment, several rounds over, each from its own copy of the document, as when an
/// appliance's connection moves from one instance to the other mid-sync.
fn two_instances_ingesting_one_document_at_once_store_each_change_once(engine: Engine) {
    let f = fixture(engine);
    let second = f.another();
    let stores = [&f.store, &second];
    let mut s = Session::new("s-1");
    s.append(Channel::Hr, samples(Channel::Hr, 0, 10, 1_000_000, 1));
    commit(stores[0], "s-1", s.am(), 1);
    const ROUNDS: i64 = 12;
    for round in 0..ROUNDS {
        s.append(
            Channel::Hr,
            samples(
                Channel::Hr,
                (round + 1) * 10_000_000,
                10,
                1_000_000,
                round as i32,
            ),
        );
        s.append(
            Channel::Ecg,
            samples(Channel::Ecg, round * 1_000_000, 250, 4_000, round as i32),
        );
        // Each instance holds its own copy, as each connection decodes its own; each copy
        // also carries a change of its own (two rooms editing at once), so the two commits
        // race with different heads.
        let mut copies: Vec<(AutoCommit, Vec<Sample>)> = (0..2)
            .map(|i| {
                let mut doc = SessionDoc::from_automerge(s.am().fork()).unwrap();
                let own = samples(
                    Channel::Spo2,
                    (round * 2 + i) * 1_000_000,
                    5,
                    1_000,
                    i as i32,
                );
                doc.append_chunk(Channel::Spo2, encode(Channel::Spo2, &own))
                    .unwrap();
                (doc.automerge().clone(), own)
            })
            .collect();
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            for (store, (copy, _)) in stores.iter().zip(&mut copies) {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    store
                        .commit_document("s-1", DocKind::Session, "austin", copy, 2 + round)
                        .unwrap();
                });
            }
        });
        for (mut copy, own) in copies {
            s.am().merge(&mut copy).unwrap();
            s.sent.entry(Channel::Spo2).or_default().extend(own);
        }
    }
    let want = heads(s.am());
    for store in &stores {
        let mut stored = store.load_document("s-1").unwrap().unwrap();
        assert_eq!(heads(&mut stored.doc), want, "{}", store.describe());
        let row = store.read(|db| document_row(db, "s-1")).unwrap().unwrap();
        assert_eq!(
            row.heads, want,
            "the registry's heads are the stored document's"
        );
    }
    // Every change stored once: as many rows as distinct hashes, and as many changes in the
    // document as in the sender's.
    let rows = count(stores[0], "SELECT count(*) FROM doc_changes");
    let distinct = count(stores[0], "SELECT count(DISTINCT hash) FROM doc_changes");
    assert_eq!(rows, distinct);
    let mut stored = stores[1].load_document("s-1").unwrap().unwrap();
    assert_eq!(
        stored.doc.get_changes(&[]).len(),
        s.am().get_changes(&[]).len()
    );
    // The projection counts every sample once and equals a rebuild from scratch.
    let rows = channels(stores[1], "s-1");
    check_channel(
        &rows,
        Channel::Hr,
        &s.sent[&Channel::Hr],
        1 + ROUNDS as u64,
        0,
    );
    check_channel(
        &rows,
        Channel::Ecg,
        &s.sent[&Channel::Ecg],
        ROUNDS as u64,
        0,
    );
    check_channel(
        &rows,
        Channel::Spo2,
        &s.sent[&Channel::Spo2],
        2 * ROUNDS as u64,
        0,
    );
    let before = dump_projections(stores[0]);
    stores[1].reindex().unwrap();
    assert_eq!(dump_projections(stores[0]), before);
}

/// Every row of every table, in key order, read the same way on both engines.
fn dump_all(store: &CloudStore) -> Vec<(&'static str, Vec<Vec<Val>>)> {
    super::copy::TABLES
        .iter()
        .map(|(table, columns, key)| {
            let sql = format!("SELECT {} FROM {table} ORDER BY {key}", columns.join(", "));
            let rows = store.read(|db| db.rows(&sql, &[])).unwrap();
            (*table, rows.into_iter().map(|r| r.0).collect())
        })
        .collect()
}

/// A store with something in every table.
fn populate(store: &CloudStore) {
    let mut s = Session::new("s-1");
    s.append(Channel::Hr, samples(Channel::Hr, 0, 30, 1_000_000, 1));
    s.append(Channel::Ecg, samples(Channel::Ecg, 0, 500, 4_000, 2));
    commit(store, "s-1", s.am(), 1);
    s.append(
        Channel::Hr,
        samples(Channel::Hr, 30_000_000, 30, 1_000_000, 3),
    );
    s.doc
        .update_meta(|m| {
            m.advisories.push(bp_advisory());
        })
        .unwrap();
    commit(store, "s-1", s.am(), 2);
    let mut p = PatientDoc::create(&patient("p-1", "austin")).unwrap();
    store
        .commit_document("p-1", DocKind::Patient, "austin", p.automerge(), 3)
        .unwrap();
    let mut audit = vigil_shared::audit::AuditDoc::create(
        "a0d17000-0000-4000-8000-0000000000aa",
        "austin",
        "1",
    )
    .unwrap();
    audit.append(&[audit_entry(1, 10)]).unwrap();
    store
        .commit_document(
            "a0d17000-0000-4000-8000-0000000000aa",
            DocKind::Audit,
            "austin",
            audit.automerge(),
            4,
        )
        .unwrap();
    let user = store.create_user("maria", "admin", "", "hash", 5).unwrap();
    store.create_web_session(&[1; 32], user, "csrf", 6).unwrap();
    store
        .create_api_token(&[2; 32], user, "export", 6, 1_000)
        .unwrap();
    store
        .audit(&AuditRow::cloud(
            7,
            "maria",
            "view session",
            "s-1",
            "127.0.0.1",
        ))
        .unwrap();
    store
        .appliance_connected(&Connected::new("austin", "1", "0.1.0", "cloud-a"), 8)
        .unwrap();
    store
        .appliance_reported("austin", "1", r#"{"time_us":9}"#, 1, 8)
        .unwrap();
    let mut ledger = ledger_with(&[("r1", "L1")]);
    store
        .commit_document(
            &ledger_id("austin"),
            DocKind::Ledger,
            "austin",
            ledger.automerge(),
            9,
        )
        .unwrap();
    store.create_enrol_code(&enrol_code("c1", "2", 10)).unwrap();
    store
        .use_enrol_code("c1", |_, _| Ok(("0a0b".into(), 99)), 9)
        .unwrap()
        .unwrap();
}

/// Austin's ledger with a 10 mL receipt for each `(entry id, lot id)`.
fn ledger_with(receipts: &[(&str, &str)]) -> LedgerDoc {
    let mut doc = LedgerDoc::create("austin").unwrap();
    for (id, lot) in receipts {
        let entry = vigil_shared::ledger::Entry {
            id: (*id).into(),
            at_us: 5,
            by: "rn-ana".into(),
            witness: Some("dr-kim".into()),
            place: "safe".into(),
            kind: vigil_shared::ledger::EntryKind::Receipt {
                lot: vigil_shared::ledger::Lot {
                    id: (*lot).into(),
                    ndc: "0409-2051-05".into(),
                    product: "Ketamine HCl 50 mg/mL".into(),
                    lot_number: "LN-1".into(),
                    mg_per_ml: 50.0,
                    expiry: "2027-06-30".into(),
                },
                ul: 10_000,
                supplier: "McKesson".into(),
                invoice: "INV-1".into(),
            },
        };
        doc.append(&entry, "2026-12-01").unwrap();
    }
    doc
}

/// An enrolment code for austin's `room`, made at 0 and expiring at `expires_us`.
fn enrol_code(hash: &str, room: &str, expires_us: i64) -> EnrolCodeRow {
    EnrolCodeRow {
        code_hash: hash.into(),
        site: "austin".into(),
        room: room.into(),
        replaces_active: false,
        created_by: "it".into(),
        created_us: 0,
        expires_us,
    }
}

#[test]
fn migrate_backup_and_restore_copy_everything_between_engines() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = CloudStore::open(&dir.path().join("cloud.db")).unwrap();
    populate(&sqlite);
    let before = dump_all(&sqlite);
    // Every table but the attention list (its entries need a care record) has rows.
    assert!(
        before
            .iter()
            .all(|(table, rows)| *table == "attention" || !rows.is_empty()),
        "{before:?}"
    );

    // migrate-store: SQLite into PostgreSQL.
    let url = crate::pg_cluster::cluster().new_database();
    let pg = CloudStore::open_postgres(&url, None).unwrap();
    let report = sqlite.copy_into(&pg).unwrap();
    assert_eq!(report.rows("documents"), 4);
    assert_eq!(dump_all(&pg), before);
    // New rows after the copy get new ids, not the copied ones.
    let second = pg.create_user("ana", "admin", "", "hash", 9).unwrap();
    assert!(second > store_user_id(&pg, "maria"));
    pg.write(|db| db.exec("DELETE FROM users WHERE username = 'ana'", &[]))
        .unwrap();

    // backup: PostgreSQL into a new SQLite file; restore: that file into another database.
    let backup = CloudStore::open(&dir.path().join("backup.db")).unwrap();
    pg.copy_into(&backup).unwrap();
    assert_eq!(dump_all(&backup), before);
    let restored = CloudStore::open(&dir.path().join("restored.db")).unwrap();
    backup.copy_into(&restored).unwrap();
    assert_eq!(dump_all(&restored), before);

    // Reindexing the copies rebuilds the same projections; their documents load whole.
    for store in [&pg, &restored] {
        store.reindex().unwrap();
        assert_eq!(dump_all(store), before, "{}", store.describe());
        let mut doc = store.load_document("s-1").unwrap().unwrap().doc;
        let mut original = sqlite.load_document("s-1").unwrap().unwrap().doc;
        assert_eq!(heads(&mut doc), heads(&mut original));
    }

    // Copying into a database that holds anything is refused, and changes nothing there.
    let refused = sqlite.copy_into(&pg).expect_err("not empty");
    assert!(
        matches!(&refused, StoreError::Conflict(m) if m.contains("not empty")),
        "{refused}"
    );
    assert_eq!(dump_all(&pg), before);
}

fn store_user_id(store: &CloudStore, name: &str) -> i64 {
    store.user_by_name(name).unwrap().unwrap().id
}

#[test]
fn another_instances_patient_and_site_changes_are_announced() {
    let url = crate::pg_cluster::cluster().new_database();
    let (a, b) = (
        CloudStore::open_postgres(&url, None).unwrap(),
        CloudStore::open_postgres(&url, None).unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let _watch = a.watch_changes(move |c| tx.send(c).unwrap()).unwrap();
    let own = {
        let (tx, rx) = std::sync::mpsc::channel();
        (b.watch_changes(move |c| tx.send(c).unwrap()).unwrap(), rx)
    };
    let wait = |rx: &std::sync::mpsc::Receiver<DocChange>| {
        rx.recv_timeout(std::time::Duration::from_secs(10))
    };
    // The watcher listens once it has connected: commit until the first announcement lands.
    let mut p = PatientDoc::create(&patient("p-1", "austin")).unwrap();
    let mut n = 0;
    let first = loop {
        n += 1;
        p.update(|r| r.phone = Some(format!("512-555-{n:04}")))
            .unwrap();
        b.commit_document("p-1", DocKind::Patient, "austin", p.automerge(), n)
            .unwrap();
        if let Ok(c) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
            break c;
        }
        assert!(n < 20, "no announcement in 10 s");
    };
    assert_eq!(
        first,
        DocChange {
            id: "p-1".into(),
            kind: DocKind::Patient,
            site: "austin".into()
        }
    );
    while rx.try_recv().is_ok() {}
    // Sessions are their room's: committing one announces nothing; a patient does.
    let mut s = Session::new("s-1");
    commit(&b, "s-1", s.am(), 50);
    p.update(|r| r.family_name = "King".into()).unwrap();
    b.commit_document("p-1", DocKind::Patient, "austin", p.automerge(), 51)
        .unwrap();
    assert_eq!(wait(&rx).unwrap().id, "p-1");
    // A handle never hears its own commits.
    assert!(own.1.try_recv().is_err());
    drop(own);

    // The watcher loses its connection and cannot reconnect for a while; a change committed
    // meanwhile is announced once it is back, though its notification went nowhere.
    let cluster = crate::pg_cluster::cluster();
    let db = url.rsplit('/').next().unwrap().to_owned();
    cluster
        .psql(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"))
        .unwrap();
    cluster
        .psql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{db}' AND query LIKE 'LISTEN%'"
        ))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let mut q = PatientDoc::create(&patient("p-2", "austin")).unwrap();
    // (Committed at the real time: the catch-up reads what changed since the watcher last heard.)
    b.commit_document(
        "p-2",
        DocKind::Patient,
        "austin",
        q.automerge(),
        crate::clock::now_us(),
    )
    .unwrap();
    while rx.try_recv().is_ok() {}
    cluster
        .psql(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
        .unwrap();
    let caught_up = loop {
        let c = wait(&rx).expect("the missed change announced after the reconnection");
        if c.id == "p-2" {
            break c;
        }
    };
    assert_eq!(caught_up.kind, DocKind::Patient);
}

fn people_sessions_and_tokens_round_trip(engine: Engine) {
    let f = fixture(engine);
    let store = &f.store;
    let maria = store
        .create_user("maria", "clinician", "austin", "hash-1", 10)
        .unwrap();
    let ana = store
        .create_user("ana", "regional_manager", "south", "hash-2", 11)
        .unwrap();
    assert_ne!(maria, ana);
    assert!(matches!(
        store.create_user("maria", "admin", "", "h", 12),
        Err(StoreError::Conflict(_))
    ));
    let names: Vec<String> = store
        .users()
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["ana", "maria"]);
    let user = store.user_by_name("maria").unwrap().unwrap();
    assert_eq!(
        (
            user.id,
            user.role.as_str(),
            user.scope.as_str(),
            user.disabled
        ),
        (maria, "clinician", "austin", false)
    );

    store
        .create_web_session(&[7; 32], maria, "csrf-1", 100)
        .unwrap();
    store.touch_web_session(&[7; 32], 160).unwrap();
    let (session, owner) = store.web_session(&[7; 32]).unwrap().unwrap();
    assert_eq!(
        (
            session.user_id,
            session.csrf.as_str(),
            session.created_us,
            session.last_seen_us
        ),
        (maria, "csrf-1", 100, 160)
    );
    assert_eq!(owner, store.user_by_name("maria").unwrap().unwrap());
    let token = store
        .create_api_token(&[8; 32], maria, "export", 100, 1_000)
        .unwrap();
    let (row, _) = store.api_token(&[8; 32]).unwrap().unwrap();
    assert_eq!(
        (row.id, row.label.as_str(), row.expires_us),
        (token, "export", 1_000)
    );

    // A new password ends every session and token of hers, not anyone else's.
    store
        .create_web_session(&[9; 32], ana, "csrf-2", 100)
        .unwrap();
    assert!(store.set_password("maria", "hash-3").unwrap());
    assert!(store.web_session(&[7; 32]).unwrap().is_none());
    assert!(store.api_token(&[8; 32]).unwrap().is_none());
    assert!(store.web_session(&[9; 32]).unwrap().is_some());
    assert_eq!(
        store.user_by_name("maria").unwrap().unwrap().password_hash,
        "hash-3"
    );
    // Disabling does too; signing out ends one session.
    assert!(store.set_disabled("ana", true).unwrap());
    assert!(store.web_session(&[9; 32]).unwrap().is_none());
    assert!(store.user_by_name("ana").unwrap().unwrap().disabled);
    assert!(!store.set_disabled("nobody", true).unwrap());
    store
        .create_web_session(&[10; 32], maria, "csrf-3", 200)
        .unwrap();
    store.delete_web_session(&[10; 32]).unwrap();
    assert!(store.web_session(&[10; 32]).unwrap().is_none());
}
