//! A real `vigil-edge` recording a session and syncing it to a real `vigil-cloud` is SIGKILLed
//! at random moments, 50 times. After every kill the database passes `PRAGMA
//! integrity_check`, every sample committed before any earlier kill is still there exactly
//! once, and every stored sample is the one the deterministic simulator produced at that time.
//! At the end the cloud holds exactly what the appliance recorded (the reliability row).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::tally::{converge, report};
use support::{
    Proc, bin, clinic_ca, cloud_section, free_udp_port, patient_body, session_body, start_cloud,
    stop_session, write_cloud_config, write_edge_config,
};
use vigil_hardware::sim::{EcgRate, PatientParams, Scenario, VirtualPatient, session_seed};
use vigil_shared::vitals::Channel;

const KILLS: usize = 50;
const ROOM_SEED: u64 = 77;
const CHANNELS: [Channel; 4] = [Channel::Hr, Channel::Spo2, Channel::Nibp, Channel::Ecg];

/// A tiny deterministic generator for the kill moments (splitmix64).
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn start(config: &std::path::Path) -> (Proc, support::Http) {
    let mut p = Proc::spawn(
        &bin("vigil-edge"),
        &["run", "--config", config.to_str().unwrap()],
    );
    let http = support::edge_client(&mut p);
    (p, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_kills_lose_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let (_cloud_proc, cloud) = start_cloud(&write_cloud_config(dir.path(), port));
    let config = write_edge_config(
        dir.path(),
        "austin",
        "1",
        &format!(
            "group_commit_ms = 100\n[source]\nkind = \"simulator\"\nseed = {ROOM_SEED}\necg_hz = 130\ntime_factor = 60.0\n{}",
            cloud_section(&ca, dir.path(), port, "austin", "1")
        ),
    );
    let db = dir.path().join("data-austin-1").join("vigil-edge.db");
    let (mut edge, mut http) = start(&config);
    let (_, patient) = http.post("/api/v1/patients", &patient_body("Loop")).await;
    let (st, session) = http
        .post(
            "/api/v1/sessions",
            &session_body(patient["id"].as_str().unwrap(), "baseline"),
        )
        .await;
    assert_eq!(st, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let started_us = session["started_us"].as_i64().unwrap();
    let mut sim = VirtualPatient::new(PatientParams {
        ecg_hz: EcgRate::Hz130,
        ..PatientParams::new(session_seed(ROOM_SEED, &id), Scenario::Baseline, started_us)
    })
    .unwrap();

    let mut rng = 2026_u64;
    let mut committed: BTreeMap<Channel, BTreeSet<Vec<i64>>> = BTreeMap::new();
    for kill in 0..KILLS {
        let wait_ms = 50 + next(&mut rng) % 600;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        edge.kill();

        let conn = rusqlite::Connection::open(&db).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "kill {kill}: database damaged");
        drop(conn);
        let reader = vigil_edge::store::open_reader(&db).unwrap();
        for channel in CHANNELS {
            let page = vigil_edge::reads::vitals(&reader, &id, channel, None, None)
                .unwrap()
                .unwrap();
            let stored = page.samples;
            let set: BTreeSet<Vec<i64>> = stored.iter().cloned().collect();
            assert_eq!(
                set.len(),
                stored.len(),
                "kill {kill}: {channel} holds a sample twice"
            );
            let before = committed.entry(channel).or_default();
            let lost: Vec<_> = before.difference(&set).take(3).collect();
            assert!(
                lost.is_empty(),
                "kill {kill}: {channel} lost committed samples {lost:?}"
            );
            // Only the new samples need checking against the simulator; the rest were checked.
            if let (Some(first), Some(last)) = (set.iter().next(), set.iter().next_back()) {
                let expected: BTreeSet<Vec<i64>> = sim
                    .channel_between(channel, first[0], last[0] + 1)
                    .into_iter()
                    .map(|s| {
                        let mut row = vec![s.t_us];
                        row.extend(s.v[..channel.dims()].iter().map(|&v| i64::from(v)));
                        row
                    })
                    .collect();
                let foreign: Vec<_> = set
                    .difference(before)
                    .filter(|s| !expected.contains(*s))
                    .take(3)
                    .collect();
                assert!(
                    foreign.is_empty(),
                    "kill {kill}: {channel} stored samples the simulator never produced: {foreign:?}"
                );
            }
            *before = set;
        }
        drop(reader);
        (edge, http) = start(&config);
    }
    let ecg = committed[&Channel::Ecg].len();
    assert!(
        ecg > 10_000,
        "the session kept recording across the kills ({ecg} ECG samples)"
    );
    // Everything recorded across the kills reaches the cloud once.
    stop_session(&http, &id).await;
    let stopped = Instant::now();
    let (tally, took) = converge(
        &[(&http, id.as_str())],
        &cloud,
        stopped,
        Duration::from_secs(120),
    )
    .await;
    report(
        "kill loop: appliance SIGKILLed 50 times while recording and syncing",
        "1 room, 1 session, ECG 130 Hz, clock 60x",
        "SIGKILL every 50-650 ms (seeded), restart, integrity and committed samples checked after each",
        tally,
        took,
    );
    assert_eq!(edge.terminate().code(), Some(0));
}
