//! The sync endpoint against wrong and hostile peers, over real QUIC on loopback with real
//! certificate files: a certificate from another CA and a revoked one are refused; an austin
//! appliance can't change a florida document; oversized frames, garbage, unknown message types
//! and replayed frames close the connection with a reason and merge nothing.

mod support;

use std::path::Path;
use std::time::Duration;

use automerge::AutoCommit;
use support::peer::{connect, patient};
use support::{TOKEN, clinic_ca, eventually, free_udp_port, write_cloud_config};
use vigil_cloud::app::Cloud;
use vigil_cloud::config::CloudConfig;
use vigil_cloud::pki::Ca;
use vigil_shared::doc::{DocKind, PatientDoc};
use vigil_shared::wire::{MAX_FRAME_BYTES, Message, RejectCode, encode_message};

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
    let mut doc = patient("patient-florida", "florida");
    let confirmed = fl.upload("patient-florida", doc.automerge()).await.unwrap();
    assert_eq!(
        confirmed,
        doc.automerge().get_heads(),
        "the cloud confirms what it stored"
    );
    let before = cloud_heads(&cloud, "patient-florida")
        .await
        .expect("stored");

    // Austin edits its copy of the florida document and tries to sync it.
    let mut tampered = PatientDoc::load(&doc.automerge().save()).unwrap();
    tampered.automerge().set_actor(automerge::ActorId::random());
    tampered.update(|r| r.phone = Some("000".into())).unwrap();
    let mut au = connect(dir.path(), &austin, cloud.sync_addr, None)
        .await
        .unwrap();
    let err = au
        .upload("patient-florida", tampered.automerge())
        .await
        .expect_err("rejected");
    assert!(
        err.contains("forbidden") || err.contains("another site"),
        "{err}"
    );
    let reason = au.closed_reason().await;
    assert!(reason.contains("forbidden"), "{reason}");
    assert_eq!(
        cloud_heads(&cloud, "patient-florida").await,
        Some(before.clone()),
        "florida document unchanged"
    );

    // Nor can austin create a document that names florida.
    let mut au = connect(dir.path(), &austin, cloud.sync_addr, None)
        .await
        .unwrap();
    let mut fake = patient("patient-florida", "florida");
    let err = au
        .upload("patient-florida-2", fake.automerge())
        .await
        .expect_err("rejected");
    assert!(
        err.contains("forbidden") || err.contains("site") || err.contains("schema"),
        "{err}"
    );
    assert_eq!(cloud_heads(&cloud, "patient-florida-2").await, None);
    // The florida appliance still syncs and still sees its own version.
    let mut fl = connect(dir.path(), &florida, cloud.sync_addr, None)
        .await
        .unwrap();
    assert_eq!(
        fl.upload("patient-florida", doc.automerge()).await.unwrap(),
        before
    );
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_the_connection_and_merge_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    let cert = ca.issue_appliance(&"austin".into(), &"1".into()).unwrap();
    let mut doc = patient("patient-austin", "austin");
    let sync_frame = |seq: u64, doc: &mut AutoCommit| {
        let mut s = automerge::sync::State::new();
        use automerge::sync::SyncDoc;
        let m = doc.sync().generate_sync_message(&mut s).unwrap().encode();
        encode_message(&Message::Sync {
            seq,
            doc_id: "patient-austin".into(),
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
                cloud_heads(&cloud, "patient-austin").await,
                None,
                "{name}: nothing merged"
            );
        }
    }
    // The cloud is still up and serving honest appliances.
    let mut peer = connect(dir.path(), &cert, cloud.sync_addr, None)
        .await
        .unwrap();
    let heads = peer
        .upload("patient-austin", doc.automerge())
        .await
        .unwrap();
    assert_eq!(heads, doc.automerge().get_heads());
    cloud.shutdown().await;
}
