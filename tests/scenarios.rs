//! Network-fault scenarios, short versions for CI: a real `vigil-cloud` and a real `vigil-edge`
//! talk through the fault-injecting relay while the room records; afterwards the cloud holds
//! exactly the appliance's samples (same per-channel counts and checksums: nothing lost,
//! nothing duplicated), and the relay's counters prove the faults happened.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use vigil::relay::{Faults, Relay};

const SIM: &str = "chunk_period_s = 10\ngroup_commit_ms = 200\n[source]\nkind = \"simulator\"\nseed = 31\necg_hz = 130\ntime_factor = 60.0\n";

/// A cloud, a relay in front of it, and one appliance that talks to the cloud through the relay.
async fn clinic(dir: &std::path::Path) -> (Proc, Http, vigil::relay::RelayHandle, Proc, Http) {
    let ca = clinic_ca(dir);
    let port = free_udp_port();
    let (cloud_proc, cloud) = start_cloud(&write_cloud_config(dir, port));
    let relay = Relay::start_with_seed(
        "127.0.0.1:0".parse().unwrap(),
        format!("127.0.0.1:{port}").parse().unwrap(),
        11,
    )
    .await
    .unwrap();
    let extra = format!(
        "{SIM}{}",
        cloud_section(&ca, dir, relay.local_addr().port(), "austin", "1")
    );
    let (edge_proc, edge) = start_edge(&write_edge_config(dir, "austin", "1", &extra));
    (cloud_proc, cloud, relay, edge_proc, edge)
}

async fn start_session(edge: &Http) -> String {
    let (_, patient) = edge.post("/api/v1/patients", &patient_body("Net")).await;
    let (st, session) = edge
        .post(
            "/api/v1/sessions",
            &session_body(patient["id"].as_str().unwrap(), "baseline"),
        )
        .await;
    assert_eq!(st, 201, "{session}");
    session["id"].as_str().unwrap().to_owned()
}

/// Stops the session and waits until the cloud's counts and checksums equal the appliance's.
async fn stop_and_converge(edge: &Http, cloud: &Http, id: &str) {
    let (st, _) = edge
        .post(&format!("/api/v1/sessions/{id}/stop"), &json!({"by": "t"}))
        .await;
    assert_eq!(st, 200);
    let (_, local) = edge.get(&format!("/api/v1/sessions/{id}")).await;
    let expected = channel_digest(&local);
    assert!(
        expected.iter().any(|(c, n, _)| c == "ecg" && *n > 10_000),
        "{expected:?}"
    );
    eventually(
        Duration::from_secs(90),
        "the cloud to hold every sample",
        || async {
            let (st, remote) = cloud.get(&format!("/api/v1/sessions/{id}")).await;
            (st == 200 && channel_digest(&remote) == expected).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_link_during_a_session_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_cloud_proc, cloud, relay, _edge_proc, edge) = clinic(dir.path()).await;
    let id = start_session(&edge).await;
    // Up 2 s, down 2 s, for 12 s of recording (12 simulated minutes).
    relay
        .flap(Duration::from_secs(2), Duration::from_secs(2))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    relay.stop_timeline();
    relay.set(Faults::OK).unwrap();
    let stats = relay.stats();
    assert!(
        stats.to_upstream.dropped_cut + stats.to_client.dropped_cut > 0,
        "the link really flapped: {stats:?}"
    );
    stop_and_converge(&edge, &cloud, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_through_loss_and_jitter_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_cloud_proc, cloud, relay, _edge_proc, edge) = clinic(dir.path()).await;
    // An outage while the room records: a backlog builds up.
    relay.set(Faults::CUT).unwrap();
    let id = start_session(&edge).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, status) = edge.get("/api/v1/status").await;
    assert!(
        status["sync"]["docs_waiting"].as_u64().unwrap_or(0) > 0,
        "a backlog built up: {status}"
    );
    // The link returns, lossy and jittery: 20 % loss, 200 ms of jitter, during the catch-up.
    relay
        .set(Faults {
            loss_pct: 20.0,
            jitter: Duration::from_millis(200),
            ..Faults::OK
        })
        .unwrap();
    stop_and_converge(&edge, &cloud, &id).await;
    let stats = relay.stats();
    assert!(
        stats.to_upstream.dropped_loss + stats.to_client.dropped_loss > 0,
        "datagrams were lost: {stats:?}"
    );
}
