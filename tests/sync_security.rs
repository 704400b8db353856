//! The sync endpoint against wrong and hostile peers, over real QUIC on loopback with real
//! certificate files: a certificate from another CA and a revoked one are refused; an austin
//! appliance can't change a florida document; oversized frames, garbage, unknown message types
//! and replayed frames close the connection with a reason and merge nothing.
//!
//! The scope rules, each with a forged document: an appliance never writes its site's
//! configuration (on its own stream or in answer to a push); a room reads and writes only its
//! own sessions; a session's patient is a patient of the appliance's site; document ids are
//! UUIDs (or the site's own id for its configuration). Each refusal is checked for its reason,
//! and the cloud's store and API for holding nothing forged.
//!
//! Without a certificate: the handshake completes (enrolling appliances have none yet) but the
//! sync protocol is refused before a byte is read; the enrolment protocol answers only Enrol,
//! and a bad request or code issues nothing.
//!
//! Audit documents: an appliance's entries reach the cloud's audit log with its site and room,
//! once each however often they sync or are reindexed; an edit of an entry, or an audit
//! document of another room or site, is refused.

mod support;

use std::path::Path;
use std::time::Duration;

use automerge::AutoCommit;
use support::peer::{Peer, connect, patient, session};
use support::{TOKEN, clinic_ca, eventually, free_udp_port, write_cloud_config};
use vigil_cloud::app::Cloud;
use vigil_cloud::config::CloudConfig;
use vigil_cloud::pki::Ca;
use vigil_shared::doc::{DocKind, Observation, PatientDoc, SiteConfigDoc, StaffMember};
use vigil_shared::wire::{MAX_FRAME_BYTES, Message, RejectCode, encode_message};

/// Document ids of the tests: UUIDs, as the appliance makes (the cloud refuses any other).
const FLORIDA_PATIENT: &str = "f1041da0-0000-4000-8000-000000000001";
const FLORIDA_PATIENT_2: &str = "f1041da0-0000-4000-8000-000000000002";
const AUSTIN_PATIENT: &str = "a0571100-0000-4000-8000-000000000001";

async fn start_cloud(dir: &Path) -> (Cloud, Ca) {
    let ca = clinic_ca(dir);
    let config = CloudConfig::load(&write_cloud_config(dir, free_udp_port())).unwrap();
    (Cloud::start(config).await.unwrap(), ca)
}

async fn cloud_heads(cloud: &Cloud, id: &str) -> Option<Vec<automerge::ChangeHash>> {
    let store = cloud.store.clone();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        store
            .load_document(&id)
            .unwrap()
            .map(|mut d| d.doc.get_heads())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, _) = start_cloud(dir.path()).await;
    let other = tempfile::tempdir().unwrap();
    let rogue = Ca::init(other.path(), "Rogue CA")
        .unwrap()
        .issue_appliance(&"austin".into(), &"1".into())
        .unwrap();
    let err = connect(dir.path(), &rogue, cloud.sync_addr, None)
        .await
        .err()
        .expect("refused");
    assert!(!err.is_empty());
    let (_, sites) = support::Http::with_token(&cloud.api_url(), TOKEN)
        .get("/api/v1/sites")
        .await;
    assert!(!sites.to_string().contains("\"online\":true"), "{sites}");
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_appliance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    let cert = ca.issue_appliance(&"austin".into(), &"1".into()).unwrap();
    let peer = connect(dir.path(), &cert, cloud.sync_addr, None)
        .await
        .expect("valid certificate accepted");
    ca.revoke(&cert.serial).unwrap();
    // The cloud notices the new CRL, drops the connection, and refuses the next handshake.
    peer.closed_reason().await;
    eventually(
        Duration::from_secs(20),
        "the revoked appliance refused",
        || async {
            connect(dir.path(), &cert, cloud.sync_addr, None)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn austin_cannot_change_a_florida_document() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    let florida = ca.issue_appliance(&"florida".into(), &"1".into()).unwrap();
    let austin = ca.issue_appliance(&"austin".into(), &"1".into()).unwrap();

    let mut fl = connect(dir.path(), &florida, cloud.sync_addr, None)
        .await
        .unwrap();
    let mut doc = patient(FLORIDA_PATIENT, "florida");
    let confirmed = fl.upload(FLORIDA_PATIENT, doc.automerge()).await.unwrap();
    assert_eq!(
        confirmed,
        doc.automerge().get_heads(),
        "the cloud confirms what it stored"
    );
    let before = cloud_heads(&cloud, FLORIDA_PATIENT).await.expect("stored");

    // Austin edits its copy of the florida document and tries to sync it.
    let mut tampered = PatientDoc::load(&doc.automerge().save()).unwrap();
    tampered.automerge().set_actor(automerge::ActorId::random());
    tampered.update(|r| r.phone = Some("000".into())).unwrap();
    let mut au = connect(dir.path(), &austin, cloud.sync_addr, None)
        .await
        .unwrap();
    let err = au
        .upload(FLORIDA_PATIENT, tampered.automerge())
        .await
        .expect_err("rejected");
    assert!(
        err.contains("forbidden") || err.contains("another site"),
        "{err}"
    );
    let reason = au.closed_reason().await;
    assert!(reason.contains("forbidden"), "{reason}");
    assert_eq!(
        cloud_heads(&cloud, FLORIDA_PATIENT).await,
        Some(before.clone()),
        "florida document unchanged"
    );

    // Nor can austin create a document that names florida.
    let mut au = connect(dir.path(), &austin, cloud.sync_addr, None)
        .await
        .unwrap();
    let mut fake = patient(FLORIDA_PATIENT, "florida");
    let err = au
        .upload(FLORIDA_PATIENT_2, fake.automerge())
        .await
        .expect_err("rejected");
    assert!(
        err.contains("forbidden") || err.contains("site") || err.contains("schema"),
        "{err}"
    );
    assert_eq!(cloud_heads(&cloud, FLORIDA_PATIENT_2).await, None);
    // The florida appliance still syncs and still sees its own version.
    let mut fl = connect(dir.path(), &florida, cloud.sync_addr, None)
        .await
        .unwrap();
    assert_eq!(
        fl.upload(FLORIDA_PATIENT, doc.automerge()).await.unwrap(),
        before
    );
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_the_connection_and_merge_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    let cert = ca.issue_appliance(&"austin".into(), &"1".into()).unwrap();
    let mut doc = patient(AUSTIN_PATIENT, "austin");
    let sync_frame = |seq: u64, doc: &mut AutoCommit| {
        let mut s = automerge::sync::State::new();
        use automerge::sync::SyncDoc;
        let m = doc.sync().generate_sync_message(&mut s).unwrap().encode();
        encode_message(&Message::Sync {
            seq,
            doc_id: AUSTIN_PATIENT.into(),
            kind: DocKind::Patient,
            message: m,
        })
        .unwrap()
    };
    let oversized = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
    // A sync frame (type 3) whose fields are cut short.
    let garbage = vec![0, 0, 0, 5, 0, 3, 0xde, 0xad, 0xbe];
    let unknown_type = vec![0, 0, 0, 2, 0, 0x7f];
    let mut replayed = sync_frame(5, doc.automerge());
    replayed.extend(sync_frame(5, doc.automerge()));
    let cases: [(&str, Vec<u8>, RejectCode); 4] = [
        ("oversized frame", oversized, RejectCode::FrameTooLarge),
        ("garbage", garbage, RejectCode::Malformed),
        (
            "unknown message type",
            unknown_type,
            RejectCode::UnknownMessage,
        ),
        ("replayed frame", replayed, RejectCode::Replay),
    ];
    for (name, bytes, code) in cases {
        let mut peer = connect(dir.path(), &cert, cloud.sync_addr, None)
            .await
            .unwrap();
        let replies = peer.raw(&bytes).await;
        let reason = peer.closed_reason().await;
        assert!(
            reason.contains(code.as_str()),
            "{name}: connection closed with {reason:?}, replies {replies:?}"
        );
        if code != RejectCode::Replay {
            assert_eq!(
                cloud_heads(&cloud, AUSTIN_PATIENT).await,
                None,
                "{name}: nothing merged"
            );
        }
    }
    // The cloud is still up and serving honest appliances.
    let mut peer = connect(dir.path(), &cert, cloud.sync_addr, None)
        .await
        .unwrap();
    let heads = peer.upload(AUSTIN_PATIENT, doc.automerge()).await.unwrap();
    assert_eq!(heads, doc.automerge().get_heads());
    cloud.shutdown().await;
}

/// Sessions of the scope tests.
const SESSION_1: &str = "5e551010-0000-4000-8000-000000000001";
const SESSION_2: &str = "5e551010-0000-4000-8000-000000000002";
const SESSION_3: &str = "5e551010-0000-4000-8000-000000000003";

/// Connects as `site`/`room` with a fresh certificate of the clinic CA.
async fn appliance(dir: &Path, ca: &Ca, cloud: &Cloud, site: &str, room: &str) -> Peer {
    let cert = ca.issue_appliance(&site.into(), &room.into()).unwrap();
    connect(dir, &cert, cloud.sync_addr, None).await.unwrap()
}

/// Uploads `doc` as `kind`, expects a refusal whose text holds `reason`, and checks that the
/// cloud closed the connection saying `forbidden` (or `code`).
async fn refused(
    peer: &mut Peer,
    id: &str,
    kind: DocKind,
    doc: &mut AutoCommit,
    code: RejectCode,
    reason: &str,
) {
    let err = peer
        .upload_kind(id, kind, doc)
        .await
        .expect_err("the cloud refuses it");
    assert!(
        err.starts_with(code.as_str()) && err.contains(reason),
        "{kind} {id}: refused with {err:?}, expected {code}: …{reason}…"
    );
    let closed = peer.closed_reason().await;
    assert!(closed.contains(code.as_str()), "{closed}");
}

/// The site configuration as a room of `site` receives it from the cloud.
async fn received_config(peer: &mut Peer, site: &str) -> AutoCommit {
    let mut doc = AutoCommit::new();
    peer.answer_push(site, &mut doc).await.unwrap();
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_never_writes_its_site_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    let original = cloud_heads(&cloud, "austin")
        .await
        .expect("created at start");

    // Room 1 receives the configuration, adds a clinician with a PIN it knows and lowers
    // the SpO2 threshold to 50 %, then sends it back on its own stream.
    let mut room1 = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    let received = received_config(&mut room1, "austin").await;
    let mut forged = SiteConfigDoc::load(&received.clone().save()).unwrap();
    forged.automerge().set_actor(automerge::ActorId::random());
    forged
        .update(|c| {
            c.staff.push(StaffMember {
                id: "intruder".into(),
                name: "Dr Intruder".into(),
                role: "clinician".into(),
                pin_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
                    .into(),
            });
            c.thresholds.spo2_low_pct = 50;
        })
        .unwrap();
    refused(
        &mut room1,
        "austin",
        DocKind::SiteConfig,
        &mut forged.automerge().clone(),
        RejectCode::Forbidden,
        "appliances may not change site configuration austin",
    )
    .await;
    assert_eq!(cloud_heads(&cloud, "austin").await, Some(original.clone()));

    // The same change sent back in answer to the cloud's push of the configuration.
    let mut room1 = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    let _ = room1.answer_push("austin", forged.automerge()).await;
    let closed = room1.closed_reason().await;
    assert!(
        closed.contains("forbidden") && closed.contains("may not change site configuration"),
        "{closed}"
    );
    assert_eq!(cloud_heads(&cloud, "austin").await, Some(original.clone()));

    // Room 2 still receives the configuration, unchanged: no intruder, the default threshold.
    let mut room2 = appliance(dir.path(), &ca, &cloud, "austin", "2").await;
    let mut config = received_config(&mut room2, "austin").await;
    assert_eq!(config.get_heads(), original);
    let c = SiteConfigDoc::load(&config.save())
        .unwrap()
        .config()
        .unwrap();
    assert!(c.staff.iter().all(|s| s.id != "intruder"), "{:?}", c.staff);
    assert_eq!(
        c.thresholds.spo2_low_pct,
        vigil_shared::advisory::Thresholds::default().spo2_low_pct
    );
    // And room 1 too, once it reconnects: what it receives is the cloud's, not its own.
    let mut room1 = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    assert_eq!(
        received_config(&mut room1, "austin").await.get_heads(),
        original
    );
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_reads_and_writes_only_its_own_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    let api = support::Http::with_token(&cloud.api_url(), TOKEN);
    let mut room1 = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    room1
        .upload(
            AUSTIN_PATIENT,
            patient(AUSTIN_PATIENT, "austin").automerge(),
        )
        .await
        .unwrap();

    // Room 1 writes a session that says it is room 2's.
    refused(
        &mut room1,
        SESSION_2,
        DocKind::Session,
        session(SESSION_2, "austin", "2", AUSTIN_PATIENT).automerge(),
        RejectCode::Forbidden,
        "is of room \"2\"; this appliance is room 1 of austin",
    )
    .await;
    assert_eq!(cloud_heads(&cloud, SESSION_2).await, None);
    assert_eq!(
        api.get(&format!("/api/v1/sessions/{SESSION_2}")).await.0,
        404
    );

    // Its own session goes through.
    let mut room1 = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    let mut own = session(SESSION_1, "austin", "1", AUSTIN_PATIENT);
    room1
        .upload_kind(SESSION_1, DocKind::Session, own.automerge())
        .await
        .expect("a room's own session is accepted");
    let stored = cloud_heads(&cloud, SESSION_1).await.expect("stored");

    // Nor may room 1 move it to room 2 later.
    let mut moved = vigil_shared::doc::SessionDoc::load(&own.automerge().save()).unwrap();
    moved.update_meta(|m| m.room = "2".into()).unwrap();
    refused(
        &mut room1,
        SESSION_1,
        DocKind::Session,
        moved.automerge(),
        RejectCode::Forbidden,
        "is of room \"2\"; this appliance is room 1 of austin",
    )
    .await;

    // Room 2 may neither change room 1's session nor read it.
    let mut room2 = appliance(dir.path(), &ca, &cloud, "austin", "2").await;
    let mut changed = vigil_shared::doc::SessionDoc::load(&own.automerge().save()).unwrap();
    changed.automerge().set_actor(automerge::ActorId::random());
    changed
        .update_meta(|m| {
            m.observations.push(Observation {
                id: "o-forged".into(),
                at_us: 1_700_000_000_000_001,
                effect: "nausea".into(),
                severity: "severe".into(),
                by: "dr-kim".into(),
            })
        })
        .unwrap();
    refused(
        &mut room2,
        SESSION_1,
        DocKind::Session,
        changed.automerge(),
        RejectCode::Forbidden,
        "is of room \"1\"; this appliance is room 2 of austin",
    )
    .await;
    let mut room2 = appliance(dir.path(), &ca, &cloud, "austin", "2").await;
    let mut empty = AutoCommit::new();
    refused(
        &mut room2,
        SESSION_1,
        DocKind::Session,
        &mut empty,
        RejectCode::Forbidden,
        "is of room \"1\"; this appliance is room 2 of austin",
    )
    .await;
    assert!(
        empty.get_heads().is_empty(),
        "nothing of room 1's session was sent"
    );

    assert_eq!(cloud_heads(&cloud, SESSION_1).await, Some(stored));
    let (status, body) = api.get(&format!("/api/v1/sessions/{SESSION_1}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"], "1", "{body}");
    assert_eq!(body["observations"], serde_json::json!([]), "{body}");
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_patient_is_a_patient_of_its_site() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    let api = support::Http::with_token(&cloud.api_url(), TOKEN);
    let mut florida = appliance(dir.path(), &ca, &cloud, "florida", "1").await;
    florida
        .upload(
            FLORIDA_PATIENT,
            patient(FLORIDA_PATIENT, "florida").automerge(),
        )
        .await
        .unwrap();

    // An austin session naming florida's patient, to pull her scores into austin's outcomes.
    let mut austin = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    refused(
        &mut austin,
        SESSION_1,
        DocKind::Session,
        session(SESSION_1, "austin", "1", FLORIDA_PATIENT).automerge(),
        RejectCode::Forbidden,
        &format!("names patient \"{FLORIDA_PATIENT}\", which belongs to another site"),
    )
    .await;
    assert_eq!(cloud_heads(&cloud, SESSION_1).await, None);
    assert_eq!(
        api.get(&format!("/api/v1/sessions/{SESSION_1}")).await.0,
        404
    );

    // A session whose patient the cloud does not hold yet is refused, and goes through once
    // the patient has synced (the appliance sends patients first and retries).
    let mut austin = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    let mut early = session(SESSION_3, "austin", "1", AUSTIN_PATIENT);
    refused(
        &mut austin,
        SESSION_3,
        DocKind::Session,
        early.automerge(),
        RejectCode::Forbidden,
        "which the cloud does not hold for site austin",
    )
    .await;
    assert_eq!(cloud_heads(&cloud, SESSION_3).await, None);
    let mut austin = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    austin
        .upload(
            AUSTIN_PATIENT,
            patient(AUSTIN_PATIENT, "austin").automerge(),
        )
        .await
        .unwrap();
    let heads = austin
        .upload_kind(SESSION_3, DocKind::Session, early.automerge())
        .await
        .expect("accepted once its patient is there");
    assert_eq!(heads, early.automerge().get_heads());
    let (status, body) = api.get(&format!("/api/v1/sessions/{SESSION_3}")).await;
    assert_eq!(
        (status, body["patient_id"].as_str()),
        (200, Some(AUSTIN_PATIENT))
    );
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_ids_are_uuids_or_the_sites_own_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    let mut austin = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    // A configuration for a site that does not exist yet: squatting its id would leave that
    // site without a staff list.
    let mut squat = SiteConfigDoc::create(&vigil_shared::doc::SiteConfig {
        site: "newsite".into(),
        name: "New site".into(),
        region: "central".into(),
        rooms: vec![],
        thresholds: Default::default(),
        staff: vec![],
    })
    .unwrap();
    let upper = AUSTIN_PATIENT.to_uppercase();
    let cases: Vec<(&str, DocKind, AutoCommit, &str)> = vec![
        (
            "patient-austin",
            DocKind::Patient,
            patient("patient-austin", "austin").automerge().clone(),
            "document id \"patient-austin\" is not a UUID",
        ),
        (
            &upper,
            DocKind::Patient,
            patient(&upper, "austin").automerge().clone(),
            "is not a UUID",
        ),
        (
            "s-1",
            DocKind::Session,
            session("s-1", "austin", "1", AUSTIN_PATIENT)
                .automerge()
                .clone(),
            "document id \"s-1\" is not a UUID",
        ),
        (
            "newsite",
            DocKind::SiteConfig,
            squat.automerge().clone(),
            "site configuration \"newsite\" is not the configuration of this appliance's site austin",
        ),
    ];
    for (id, kind, mut doc, reason) in cases {
        refused(
            &mut austin,
            id,
            kind,
            &mut doc,
            RejectCode::Forbidden,
            reason,
        )
        .await;
        assert_eq!(cloud_heads(&cloud, id).await, None, "{kind} {id}");
        austin = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    }
    // A UUID in its canonical form is accepted.
    austin
        .upload(
            AUSTIN_PATIENT,
            patient(AUSTIN_PATIENT, "austin").automerge(),
        )
        .await
        .expect("a canonical UUID is accepted");
    cloud.shutdown().await;
}

/// The audit document of the audit test.
const AUDIT_DOC: &str = "a0d17000-0000-4000-8000-0000000000a1";

fn audit_entry(n: u64) -> vigil_shared::audit::AuditEntry {
    vigil_shared::audit::AuditEntry {
        id: format!("00000000-0000-4000-8000-{n:012x}"),
        at_us: 1_700_000_000_000_000 + n as i64,
        actor: "nurse-a".into(),
        action: format!("GET /api/v1/sessions/{SESSION_1}"),
        target: SESSION_1.into(),
        client: "10.1.2.3".into(),
    }
}

/// The appliances' rows of the cloud's audit log as (site, room, user, entry id), oldest first.
async fn appliance_audit_rows(cloud: &Cloud) -> Vec<(String, String, String, String)> {
    let store = cloud.store.clone();
    let (_, rows) = tokio::task::spawn_blocking(move || store.audit_log(1_000, 0))
        .await
        .unwrap()
        .unwrap();
    let mut out: Vec<_> = rows
        .into_iter()
        .filter(|r| r.source == vigil_cloud::store::AuditSource::Appliance)
        .map(|r| (r.site, r.room, r.username, r.entry_id.unwrap_or_default()))
        .collect();
    out.reverse();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliances_audit_entries_reach_the_audit_log_once() {
    use vigil_shared::audit::AuditDoc;
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    let mut room1 = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    let mut doc = AuditDoc::create(AUDIT_DOC, "austin", "1").unwrap();
    doc.append(&[audit_entry(1), audit_entry(2)]).unwrap();
    let heads = room1
        .upload_kind(AUDIT_DOC, DocKind::Audit, doc.automerge())
        .await
        .expect("an appliance's own audit document is accepted");
    assert_eq!(heads, doc.automerge().get_heads());
    let row = |n: u64| {
        (
            "austin".to_owned(),
            "1".to_owned(),
            "nurse-a".to_owned(),
            audit_entry(n).id,
        )
    };
    assert_eq!(appliance_audit_rows(&cloud).await, [row(1), row(2)]);

    // Synced again on a new connection from scratch, and reindexed: no row twice.
    let mut room1 = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    let mut copy = AutoCommit::load(&doc.automerge().save()).unwrap();
    room1
        .upload_kind(AUDIT_DOC, DocKind::Audit, &mut copy)
        .await
        .unwrap();
    let store = cloud.store.clone();
    let report = tokio::task::spawn_blocking(move || store.reindex())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.audit_docs, report.audit_entries_added), (1, 0));
    assert_eq!(appliance_audit_rows(&cloud).await, [row(1), row(2)]);
    // A later entry adds one row.
    doc.append(&[audit_entry(3)]).unwrap();
    room1
        .upload_kind(AUDIT_DOC, DocKind::Audit, doc.automerge())
        .await
        .unwrap();
    assert_eq!(appliance_audit_rows(&cloud).await, [row(1), row(2), row(3)]);
    let stored = cloud_heads(&cloud, AUDIT_DOC).await;

    // Editing an entry already sent is refused.
    let mut edited = AutoCommit::load(&doc.automerge().save()).unwrap();
    edited.set_actor(automerge::ActorId::random());
    let list = match automerge::ReadDoc::get(&edited, automerge::ROOT, "entries").unwrap() {
        Some((_, list)) => list,
        None => panic!("the entry list exists"),
    };
    let mut forged = audit_entry(1);
    forged.actor = "someone-else".into();
    automerge::transaction::Transactable::put(
        &mut edited,
        &list,
        0,
        serde_json::to_string(&forged).unwrap(),
    )
    .unwrap();
    refused(
        &mut room1,
        AUDIT_DOC,
        DocKind::Audit,
        &mut edited,
        RejectCode::Forbidden,
        "audit entries may only be added",
    )
    .await;

    // An audit document of another room, or another site, is refused; room 2 may not read
    // room 1's.
    let forged_room = "a0d17000-0000-4000-8000-0000000000a2";
    let forged_site = "a0d17000-0000-4000-8000-0000000000a3";
    let mut room1 = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    let mut other_room = AuditDoc::create(forged_room, "austin", "2").unwrap();
    other_room.append(&[audit_entry(7)]).unwrap();
    refused(
        &mut room1,
        forged_room,
        DocKind::Audit,
        other_room.automerge(),
        RejectCode::Forbidden,
        "audit document a0d17000-0000-4000-8000-0000000000a2 is of room \"2\"; this appliance is room 1 of austin",
    )
    .await;
    let mut room1 = appliance(dir.path(), &ca, &cloud, "austin", "1").await;
    let mut other_site = AuditDoc::create(forged_site, "florida", "1").unwrap();
    other_site.append(&[audit_entry(8)]).unwrap();
    refused(
        &mut room1,
        forged_site,
        DocKind::Audit,
        other_site.automerge(),
        RejectCode::Forbidden,
        "names site \"florida\"; this appliance is of austin",
    )
    .await;
    let mut room2 = appliance(dir.path(), &ca, &cloud, "austin", "2").await;
    refused(
        &mut room2,
        AUDIT_DOC,
        DocKind::Audit,
        &mut AutoCommit::new(),
        RejectCode::Forbidden,
        "is of room \"1\"; this appliance is room 2 of austin",
    )
    .await;

    assert_eq!(cloud_heads(&cloud, AUDIT_DOC).await, stored);
    assert_eq!(cloud_heads(&cloud, forged_room).await, None);
    assert_eq!(cloud_heads(&cloud, forged_site).await, None);
    assert_eq!(appliance_audit_rows(&cloud).await, [row(1), row(2), row(3)]);
    cloud.shutdown().await;
}

/// A QUIC client that trusts the clinic CA but shows no certificate, speaking `alpn`.
async fn anonymous(dir: &Path, cloud: &Cloud, alpn: &[u8]) -> quinn::Connection {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(dir.join("pki/ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint
        .connect_with(
            quinn::ClientConfig::new(std::sync::Arc::new(quic)),
            cloud.sync_addr,
            "localhost",
        )
        .unwrap()
        .await
        .unwrap()
}

/// Sends one message on a new stream and reads the answer.
async fn ask(conn: &quinn::Connection, message: &Message) -> Option<Message> {
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(&encode_message(message).unwrap())
        .await
        .ok()?;
    let _ = send.finish();
    support::peer::read(&mut recv, &mut vigil_shared::wire::FrameDecoder::new())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_certificate_only_enrolment_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    // The handshake completes (enrolling appliances have no certificate yet), but the sync
    // protocol is refused before a byte of it is read.
    let conn = anonymous(dir.path(), &cloud, vigil_shared::wire::ALPN).await;
    let answer = ask(&conn, &vigil_shared::wire::hello("anonymous")).await;
    assert_eq!(answer, None, "nothing is answered");
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .unwrap()
        .to_string();
    assert!(reason.contains("no client certificate"), "{reason}");

    // On the enrolment protocol: anything but Enrol is refused, and a cloud without its CA
    // key issues nothing, saying so.
    let conn = anonymous(dir.path(), &cloud, vigil_shared::wire::ENROL_ALPN).await;
    let answer = ask(&conn, &vigil_shared::wire::hello("anonymous")).await;
    assert!(
        matches!(&answer, Some(Message::Reject { code: RejectCode::Malformed, reason }) if reason.contains("carries enrol")),
        "{answer:?}"
    );
    let conn = anonymous(dir.path(), &cloud, vigil_shared::wire::ENROL_ALPN).await;
    let enrol = Message::Enrol {
        code: "0123456789ABCDEF".into(),
        csr: vec![0x30, 0x03, 0x02, 0x01, 0x00],
        software: "test".into(),
    };
    let answer = ask(&conn, &enrol).await;
    assert!(
        matches!(&answer, Some(Message::Reject { code: RejectCode::Forbidden, reason }) if reason.contains("does not issue certificates")),
        "{answer:?}"
    );
    // Appliances with certificates still sync.
    let mut peer = appliance(dir.path(), &ca, &cloud, "florida", "1").await;
    let mut doc = patient(FLORIDA_PATIENT, "florida");
    assert!(peer.upload(FLORIDA_PATIENT, doc.automerge()).await.is_ok());
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolment_with_a_bad_request_or_code_issues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let mut config = CloudConfig::load(&write_cloud_config(dir.path(), free_udp_port())).unwrap();
    config.pki.ca_dir = Some(dir.path().join("pki"));
    let cloud = Cloud::start(config.clone()).await.unwrap();
    let issued_before = ca.issued_serials().unwrap().len();
    let now = vigil_cloud::clock::now_us();
    let code =
        vigil_cloud::fleet::make_code(&cloud.store, &config, "austin", "1", false, "it", now)
            .unwrap();
    let cases: Vec<(Message, &str)> = vec![
        (
            Message::Enrol {
                code: code.code.secret.clone(),
                csr: b"not a certificate request".to_vec(),
                software: "test".into(),
            },
            "invalid certificate request",
        ),
        (
            Message::Enrol {
                code: "ZZZZZZZZZZZZZZZZ".into(),
                csr: vec![0x30],
                software: "test".into(),
            },
            "unknown to the cloud",
        ),
        (
            Message::Enrol {
                code: "short".into(),
                csr: vec![0x30],
                software: "test".into(),
            },
            "not an enrolment code",
        ),
    ];
    for (message, expected) in cases {
        let conn = anonymous(dir.path(), &cloud, vigil_shared::wire::ENROL_ALPN).await;
        match ask(&conn, &message).await {
            Some(Message::Reject { reason, .. }) => {
                assert!(reason.contains(expected), "{reason} (expected {expected})");
            }
            other => panic!("{other:?} (expected a refusal: {expected})"),
        }
    }
    assert_eq!(
        ca.issued_serials().unwrap().len(),
        issued_before,
        "nothing issued"
    );
    assert_eq!(
        cloud.store.active_certificate("austin", "1", now).unwrap(),
        None,
        "the room is still free"
    );
    cloud.shutdown().await;
}
