//! End to end over real QUIC on loopback with real certificate files: appliances (real
//! `vigil-edge` processes) record sessions and the cloud (a real `vigil-cloud` process) ends up
//! with exactly the same samples; a cloud killed mid-sync loses and duplicates nothing; patients
//! edited in two rooms converge everywhere.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const SIM: &str = "chunk_period_s = 10\ngroup_commit_ms = 200\n[source]\nkind = \"simulator\"\nseed = 9\necg_hz = 250\ntime_factor = 60.0\n";

async fn record_session(edge: &Http, scenario: &str, wall_s: u64) -> String {
    let (st, patient) = edge.post("/api/v1/patients", &patient_body("Sync")).await;
    assert_eq!(st, 201, "{patient}");
    let (st, session) = edge
        .post(
            "/api/v1/sessions",
            &session_body(patient["id"].as_str().unwrap(), scenario),
        )
        .await;
    assert_eq!(st, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(wall_s)).await;
    let (st, stopped) = edge
        .post(&format!("/api/v1/sessions/{id}/stop"), &json!({}))
        .await;
    assert_eq!(st, 200, "{stopped}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_sync_every_sample_to_the_cloud() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let (_cloud, cloud) = start_cloud(&write_cloud_config(dir.path(), port));
    let mut edges = Vec::new();
    for site in ["austin", "florida"] {
        let extra = format!("{SIM}{}", cloud_section(&ca, dir.path(), port, site, "1"));
        let config = write_edge_config(dir.path(), site, "1", &extra);
        edges.push(start_edge(&config));
    }
    let (a, f) = tokio::join!(
        record_session(&edges[0].1, "hypertension", 3),
        record_session(&edges[1].1, "desaturation", 3)
    );
    let digest_a = converged(&edges[0].1, &cloud, &a, 10_000).await;
    converged(&edges[1].1, &cloud, &f, 10_000).await;

    // The merged view: both sites, both appliances online, and the sessions listed by site.
    let (st, sites) = cloud.get("/api/v1/sites").await;
    assert_eq!(st, 200, "{sites}");
    let text = sites.to_string();
    assert!(
        text.contains("austin") && text.contains("florida"),
        "{text}"
    );
    let (_, list) = cloud.get("/api/v1/sessions?site=austin").await;
    let ids: Vec<&str> = list
        .as_array()
        .or(list["sessions"].as_array())
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, vec![a.as_str()], "{list}");
    // The appliance's status shows the backlog drained.
    let (_, status) = edges[0].1.get("/api/v1/status").await;
    assert_eq!(status["sync"]["connected"], Value::Bool(true), "{status}");
    eventually(Duration::from_secs(20), "the backlog to drain", || async {
        let (_, s) = edges[0].1.get("/api/v1/status").await;
        (s["sync"]["docs_waiting"] == json!(0)).then_some(())
    })
    .await;
    // The site's configuration came down from the cloud.
    let site = eventually(
        Duration::from_secs(20),
        "the site config on the appliance",
        || async {
            let (st, s) = edges[1].1.get("/api/v1/site").await;
            (st == 200).then_some(s)
        },
    )
    .await;
    assert_eq!(site["site"], json!("florida"), "{site}");
    assert_eq!(site["rooms"], json!(["1", "2"]), "{site}");
    assert_eq!(site["thresholds"]["bp_systolic_high"], json!(180), "{site}");
    // The document itself is loadable by Automerge.
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/sessions/{a}/automerge", cloud.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc = automerge::AutoCommit::load(&resp.bytes().await.unwrap()).unwrap();
    let session = vigil_shared::doc::SessionDoc::from_automerge(doc).unwrap();
    let ecg: usize = session
        .chunks(vigil_shared::vitals::Channel::Ecg)
        .into_iter()
        .map(|c| c.unwrap().samples.len())
        .sum();
    assert_eq!(
        Some(ecg as u64),
        digest_a.iter().find(|(c, _, _)| c == "ecg").map(|d| d.1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_killed_mid_sync_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let cloud_config = write_cloud_config(dir.path(), port);
    let (mut cloud_proc, cloud) = start_cloud(&cloud_config);
    let extra = format!(
        "{SIM}{}",
        cloud_section(&ca, dir.path(), port, "austin", "1")
    );
    let (_edge, edge) = start_edge(&write_edge_config(dir.path(), "austin", "1", &extra));

    let (_, patient) = edge.post("/api/v1/patients", &patient_body("Kill")).await;
    let (_, session) = edge
        .post(
            "/api/v1/sessions",
            &session_body(patient["id"].as_str().unwrap(), "baseline"),
        )
        .await;
    let id = session["id"].as_str().unwrap().to_owned();
    // Sync is running: chunks are reaching the cloud.
    eventually(
        Duration::from_secs(30),
        "the first chunks in the cloud",
        || async {
            let (st, s) = cloud.get(&format!("/api/v1/sessions/{id}")).await;
            (st == 200 && s["channels"]["ecg"]["samples"].as_u64().unwrap_or(0) > 0).then_some(())
        },
    )
    .await;
    cloud_proc.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, status) = edge.get("/api/v1/status").await;
    assert_eq!(
        status["recorder"]["session"]["id"].as_str(),
        Some(id.as_str()),
        "recording goes on: {status}"
    );

    let (_cloud_proc, cloud) = start_cloud(&cloud_config);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (st, _) = edge
        .post(&format!("/api/v1/sessions/{id}/stop"), &json!({}))
        .await;
    assert_eq!(st, 200);
    converged(&edge, &cloud, &id, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_edited_in_two_rooms_converges_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let (_cloud, cloud) = start_cloud(&write_cloud_config(dir.path(), port));
    let mut rooms = Vec::new();
    for room in ["1", "2"] {
        let extra = format!(
            "{SIM}{}",
            cloud_section(&ca, dir.path(), port, "austin", room)
        );
        rooms.push(start_edge(&write_edge_config(
            dir.path(),
            "austin",
            room,
            &extra,
        )));
    }
    let (one, two) = (&rooms[0].1, &rooms[1].1);
    let (st, patient) = one.post("/api/v1/patients", &patient_body("Shared")).await;
    assert_eq!(st, 201);
    let pid = patient["id"].as_str().unwrap().to_owned();
    // The patient registered in room 1 reaches room 2 through the cloud.
    eventually(Duration::from_secs(30), "the patient in room 2", || async {
        let (st, _) = two.get(&format!("/api/v1/patients/{pid}")).await;
        (st == 200).then_some(())
    })
    .await;
    // Both rooms edit at once.
    let path = format!("/api/v1/patients/{pid}");
    let (edit_one, edit_two) = (
        json!({"phone": "512-555-0101", "add_medications": ["bupropion"]}),
        json!({"add_medications": ["lamotrigine"]}),
    );
    let (a, b) = tokio::join!(one.patch(&path, &edit_one), two.patch(&path, &edit_two));
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    let record = eventually(
        Duration::from_secs(30),
        "the same patient everywhere",
        || async {
            let (_, r1) = one.get(&path).await;
            let (_, r2) = two.get(&path).await;
            let (st, rc) = cloud.get(&path).await;
            let meds = r1["medications"].as_array().map(|m| m.len()).unwrap_or(0);
            (st == 200 && r1 == r2 && r1 == rc && meds == 2).then_some(r1)
        },
    )
    .await;
    assert_eq!(record["phone"], json!("512-555-0101"));
    let mut meds: Vec<&str> = record["medications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    meds.sort();
    assert_eq!(meds, vec!["bupropion", "lamotrigine"]);
}
