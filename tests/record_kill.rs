//! End to end: a real `vigil-edge` process records a simulated session, is SIGKILLed
//! mid-session, restarts and finishes the session. The session then holds every sample the
//! (deterministic) simulator produced up to the last group commit before the kill and every
//! sample after the restart, each exactly once, with the simulator's exact values.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Http, Proc, bin, patient_body, session_body, write_edge_config};
use vigil_hardware::sim::{EcgRate, PatientParams, Scenario, VirtualPatient, session_seed};
use vigil_shared::vitals::Channel;

const ROOM_SEED: u64 = 4242;

fn start(config: &std::path::Path) -> (Proc, Http) {
    let mut p = Proc::spawn(
        &bin("vigil-edge"),
        &["run", "--config", config.to_str().unwrap()],
    );
    let http = support::edge_client(&mut p);
    (p, http)
}

/// Committed per-channel (count, last_us) from the session summary.
fn committed(summary: &Value) -> BTreeMap<String, (u64, Option<i64>)> {
    summary["channels"]
        .as_object()
        .expect("channels")
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v["samples"].as_u64().unwrap(), v["last_us"].as_i64()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_appliance_keeps_every_committed_sample() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_edge_config(
        dir.path(),
        "austin",
        "1",
        &format!(
            "chunk_period_s = 10\ngroup_commit_ms = 200\n[source]\nkind = \"simulator\"\nseed = {ROOM_SEED}\necg_hz = 250\ntime_factor = 60.0\n"
        ),
    );

    let (mut edge, http) = start(&config);
    let (st, patient) = http.post("/api/v1/patients", &patient_body("Kill")).await;
    assert_eq!(st, 201, "{patient}");
    let (st, session) = http
        .post(
            "/api/v1/sessions",
            &session_body(patient["id"].as_str().unwrap(), "hypertension"),
        )
        .await;
    assert_eq!(st, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let started_us = session["started_us"].as_i64().unwrap();

    // About three simulated minutes, then look at what is committed and pull the plug.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (st, before) = http.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(st, 200);
    let before = committed(&before);
    assert!(
        before["ecg"].0 > 10_000,
        "ECG recorded before the kill: {before:?}"
    );
    edge.kill();

    // The database is intact while nothing runs.
    let db = dir.path().join("data-austin-1").join("vigil-edge.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    // What survived the kill, read from the file the dead process left, through the
    // appliance's own read path: every one of these samples must be in the final session.
    let reader = vigil_edge::store::open_reader(&db).unwrap();
    let mut at_kill: BTreeMap<&str, Vec<Vec<i64>>> = BTreeMap::new();
    for channel in Channel::ALL {
        let page = vigil_edge::reads::vitals(&reader, &id, channel, None, None)
            .unwrap()
            .unwrap();
        assert!(page.next_from_us.is_none());
        at_kill.insert(channel.name(), page.samples);
    }
    drop(reader);
    assert!(
        at_kill["ecg"].len() as u64 >= before["ecg"].0,
        "the kill lost samples the API had shown"
    );

    let (mut edge, http) = start(&config);
    let (_, status) = http.get("/api/v1/status").await;
    let restart_us = status["now_us"].as_i64().unwrap();
    assert_eq!(
        status["recorder"]["session"]["id"].as_str(),
        Some(id.as_str()),
        "{status}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (st, stopped) = http
        .post(&format!("/api/v1/sessions/{id}/stop"), &json!({}))
        .await;
    assert_eq!(st, 200, "{stopped}");
    let ended_us = stopped["ended_us"].as_i64().unwrap();
    assert!(ended_us > restart_us);

    let mut patient = VirtualPatient::new(PatientParams {
        ecg_hz: EcgRate::Hz250,
        ..PatientParams::new(
            session_seed(ROOM_SEED, &id),
            Scenario::Hypertension,
            started_us,
        )
    })
    .unwrap();
    let (_, summary) = http.get(&format!("/api/v1/sessions/{id}")).await;
    for channel in [
        Channel::Hr,
        Channel::Rr,
        Channel::Spo2,
        Channel::Pulse,
        Channel::Nibp,
        Channel::Ecg,
        Channel::Temp,
    ] {
        let name = channel.name();
        let stored = http.all_vitals(&id, name).await;
        let expected: Vec<Vec<i64>> = patient
            .channel_between(channel, started_us, ended_us)
            .into_iter()
            .map(|s| {
                let mut row = vec![s.t_us];
                row.extend(s.v[..channel.dims()].iter().map(|&v| i64::from(v)));
                row
            })
            .collect();
        assert_eq!(
            summary["channels"][name]["samples"].as_u64(),
            Some(stored.len() as u64),
            "{name}"
        );
        assert_eq!(
            summary["channels"][name]["corrupt_chunks"].as_u64(),
            Some(0),
            "{name}"
        );

        // Every stored sample is the simulator's, once. What is missing lies between the last
        // sample committed before the kill and the restart: nothing committed was lost and
        // nothing measured after the restart was missed.
        let expected_set: std::collections::BTreeSet<&Vec<i64>> = expected.iter().collect();
        let mut seen = std::collections::BTreeSet::new();
        for s in &stored {
            assert!(
                expected_set.contains(s),
                "{name}: stored sample {s:?} is not the simulator's"
            );
            assert!(seen.insert(s), "{name}: sample {s:?} stored twice");
        }
        let survived = &at_kill[name];
        for s in survived {
            assert!(
                seen.contains(s),
                "{name}: sample {s:?} was committed before the kill and is missing"
            );
        }
        let last_committed = survived.last().map(|s| s[0]);
        let missing: Vec<i64> = expected
            .iter()
            .filter(|x| !seen.contains(x))
            .map(|x| x[0])
            .collect();
        for t in &missing {
            if let Some(last) = last_committed {
                assert!(
                    *t > last,
                    "{name}: sample at {t}, before the last committed one, is missing"
                );
            }
            // The source resumes at the restart's clock reading, taken just before /status.
            assert!(
                *t < restart_us,
                "{name}: sample at {t}, after the restart at {restart_us}, is missing"
            );
        }
        assert!(
            stored.len() as u64 >= before[name].0,
            "{name}: fewer samples than the API showed before the kill"
        );
        assert!(stored.len() + missing.len() == expected.len());
        eprintln!(
            "{name}: {} stored, {} missing around the kill, {} committed at the kill",
            stored.len(),
            missing.len(),
            survived.len()
        );
    }
    assert_eq!(edge.terminate().code(), Some(0));
}
