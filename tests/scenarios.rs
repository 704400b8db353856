//! Reliability scenarios, end to end: real `vigil-cloud` and `vigil-edge` processes, real QUIC
//! with mutual TLS on loopback, real SQLite files, the simulator's sped-up clock keeping hours
//! short, and faults from the fault-injecting relay or from signals. Each scenario ends by
//! comparing every session between the appliance's and the cloud's APIs (per-channel counts and
//! checksums, exact sample multisets where they differ), asserts nothing was lost or duplicated
//! and nothing measured was dropped, and reports its row for RELIABILITY.md
//! (`vigil::reliability`, `just reliability`).
//!
//! The short versions run in CI; `just soak` runs the long ones (`--ignored`).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::tally::{assert_nothing_dropped, converge, one_at_a_time, report};
use support::*;
use vigil::relay::{Faults, Relay, RelayHandle};

/// Appliance settings shared by the scenarios: 10 s chunks, commits every 200 ms, a simulated
/// room at `time_factor` with ECG at `ecg_hz`.
fn sim(seed: u64, ecg_hz: u32, time_factor: f64) -> String {
    format!(
        "chunk_period_s = 10\ngroup_commit_ms = 200\n[source]\nkind = \"simulator\"\nseed = {seed}\necg_hz = {ecg_hz}\ntime_factor = {time_factor}\n"
    )
}

/// One appliance of the test clinic.
struct Room {
    proc: Proc,
    http: Http,
    config: PathBuf,
}

impl Room {
    fn kill(&mut self) {
        self.proc.kill();
    }

    fn restart(&mut self) {
        (self.proc, self.http) = start_edge(&self.config);
    }
}

/// A cloud process, a relay in front of its sync port, and appliances that reach the cloud
/// only through the relay.
struct Clinic {
    dir: tempfile::TempDir,
    cloud_config: PathBuf,
    cloud_proc: Proc,
    cloud: Http,
    relay: RelayHandle,
    rooms: Vec<Room>,
}

impl Clinic {
    /// `rooms`: (site, room, extra config) for each appliance.
    async fn start(rooms: &[(&str, &str, String)]) -> Clinic {
        let dir = tempfile::tempdir().unwrap();
        let ca = clinic_ca(dir.path());
        let port = free_udp_port();
        let cloud_config = write_cloud_config(dir.path(), port);
        let (cloud_proc, cloud) = start_cloud(&cloud_config);
        let relay = Relay::start_with_seed(
            "127.0.0.1:0".parse().unwrap(),
            format!("127.0.0.1:{port}").parse().unwrap(),
            11,
        )
        .await
        .unwrap();
        let rooms = rooms
            .iter()
            .map(|(site, room, extra)| {
                let extra = format!(
                    "{extra}{}",
                    cloud_section(&ca, dir.path(), relay.local_addr().port(), site, room)
                );
                let config = write_edge_config(dir.path(), site, room, &extra);
                let (proc, http) = start_edge(&config);
                Room { proc, http, config }
            })
            .collect();
        Clinic {
            dir,
            cloud_config,
            cloud_proc,
            cloud,
            relay,
            rooms,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until every appliance is connected to the cloud.
    async fn all_connected(&self) {
        for room in &self.rooms {
            eventually(
                Duration::from_secs(60),
                "the appliance connected",
                || async {
                    let (_, s) = room.http.get("/api/v1/status").await;
                    (s["sync"]["connected"] == serde_json::json!(true)).then_some(())
                },
            )
            .await;
        }
    }
}

/// Sync figures of an appliance's status: (documents waiting, bytes sent).
async fn sync_figures(edge: &Http) -> (u64, u64) {
    let (_, s) = edge.get("/api/v1/status").await;
    (
        s["sync"]["docs_waiting"].as_u64().unwrap_or(0),
        s["sync"]["bytes_sent"].as_u64().unwrap_or(0),
    )
}

/// Records `n` sessions back to back of `session_s` wall seconds each (one patient each),
/// with `turnover_s` between them; returns their ids.
async fn record_sessions(edge: &Http, n: usize, session_s: f64, turnover_s: f64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let scenario = ["baseline", "hypertension", "desaturation"][i % 3];
        let (id, _) = start_session(edge, "Outage", scenario).await;
        tokio::time::sleep(Duration::from_secs_f64(session_s)).await;
        stop_session(edge, &id).await;
        ids.push(id);
        tokio::time::sleep(Duration::from_secs_f64(turnover_s)).await;
    }
    ids
}

/// How long an outage scenario runs: simulated hours at a time factor, with ECG at a rate.
struct OutagePlan {
    name: &'static str,
    hours: f64,
    time_factor: f64,
    ecg_hz: u32,
}

/// One site (two rooms) loses its link for `plan.hours` while both rooms record sessions back
/// to back (55-minute sessions, 5 minutes of turnover); then the link returns and the cloud
/// must catch up with everything.
async fn outage_of_one_site(plan: OutagePlan) {
    let extra = |seed| sim(seed, plan.ecg_hz, plan.time_factor);
    let clinic = Clinic::start(&[("austin", "1", extra(61)), ("austin", "2", extra(62))]).await;
    clinic.all_connected().await;
    clinic.relay.set(Faults::CUT).unwrap();

    let wall = |sim_min: f64| sim_min * 60.0 / plan.time_factor;
    let sessions = (plan.hours * 60.0 / 60.0).floor() as usize;
    let (ids_1, ids_2) = tokio::join!(
        record_sessions(&clinic.rooms[0].http, sessions, wall(55.0), wall(5.0)),
        record_sessions(&clinic.rooms[1].http, sessions, wall(55.0), wall(5.0)),
    );
    // The outage really kept everything from the cloud, and the rooms know what waits.
    for room in &clinic.rooms {
        let (waiting, _) = sync_figures(&room.http).await;
        assert!(waiting >= sessions as u64, "documents waiting: {waiting}");
    }
    for id in ids_1.iter().chain(&ids_2) {
        let (st, _) = clinic.cloud.get(&format!("/api/v1/sessions/{id}")).await;
        assert_eq!(st, 404, "session {id} reached the cloud through a cut link");
    }
    let stats = clinic.relay.stats();
    assert!(
        stats.to_upstream.dropped_cut > 0,
        "the appliances tried to reach the cloud: {stats:?}"
    );

    let repaired = Instant::now();
    clinic.relay.set(Faults::OK).unwrap();
    let all: Vec<(&Http, &str)> = ids_1
        .iter()
        .map(|id| (&clinic.rooms[0].http, id.as_str()))
        .chain(ids_2.iter().map(|id| (&clinic.rooms[1].http, id.as_str())))
        .collect();
    // How much of the catch-up is the appliances noticing the repair (their reconnect backoff).
    let reconnected = async {
        clinic.all_connected().await;
        repaired.elapsed()
    };
    let ((tally, took), reconnected) = tokio::join!(
        converge(&all, &clinic.cloud, repaired, Duration::from_secs(240)),
        reconnected
    );
    eprintln!(
        "{}: reconnected {:.1} s and converged {:.1} s after the repair",
        plan.name,
        reconnected.as_secs_f64(),
        took.as_secs_f64()
    );
    for room in &clinic.rooms {
        assert_nothing_dropped(&room.http).await;
    }
    report(
        plan.name,
        &format!(
            "2 rooms, {} sessions of 55 min each, ECG {} Hz, clock {}x",
            all.len(),
            plan.ecg_hz,
            plan.time_factor
        ),
        &format!(
            "site cut off for {} h (simulated) while recording; both rooms reconnected {:.1} s after the repair",
            plan.hours,
            reconnected.as_secs_f64()
        ),
        tally,
        took,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hour_outage_of_one_site_loses_nothing() {
    let _turn = one_at_a_time().await;
    outage_of_one_site(OutagePlan {
        name: "6-hour outage of one site, then catch-up",
        hours: 6.0,
        // 180x: two minutes of wall time. Two rooms at 360x kept up on an idle 2-core machine;
        // at 360x and at 240x they dropped samples while other builds ran on the same two
        // cores (the recorder's bounded buffer, rightly reported by assert_nothing_dropped).
        time_factor: 180.0,
        ecg_hz: 130,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 6 simulated hours at 60x (about 8 minutes); run by `just soak`"]
async fn soak_six_hour_outage_at_sixty_times() {
    let _turn = one_at_a_time().await;
    outage_of_one_site(OutagePlan {
        name: "soak: 6-hour outage of one site at 60x, 250 Hz ECG",
        hours: 6.0,
        time_factor: 60.0,
        ecg_hz: 250,
    })
    .await;
}

/// A session recorded while the link flaps (`up` connected, `down` cut, repeating) for `for_s`
/// wall seconds, the room's clock at `time_factor`.
async fn flapping(name: &str, up: Duration, down: Duration, for_s: u64, time_factor: f64) {
    let clinic = Clinic::start(&[("austin", "1", sim(31, 130, time_factor))]).await;
    let edge = &clinic.rooms[0].http;
    let (id, _) = start_session(edge, "Net", "baseline").await;
    clinic.relay.flap(up, down).unwrap();
    tokio::time::sleep(Duration::from_secs(for_s)).await;
    clinic.relay.stop_timeline();
    let stats = clinic.relay.stats();
    assert!(
        stats.to_upstream.dropped_cut + stats.to_client.dropped_cut > 0,
        "the link really flapped: {stats:?}"
    );
    // The session ends while the link is still flapping's last state; then it stays up.
    stop_session(edge, &id).await;
    let repaired = Instant::now();
    clinic.relay.set(Faults::OK).unwrap();
    let (tally, took) = converge(
        &[(edge, id.as_str())],
        &clinic.cloud,
        repaired,
        Duration::from_secs(120),
    )
    .await;
    assert_nothing_dropped(edge).await;
    report(
        name,
        &format!(
            "1 room, 1 session of {} min, ECG 130 Hz, clock {time_factor}x",
            (for_s as f64 * time_factor / 60.0).round()
        ),
        &format!(
            "link up {} s, down {} s, repeating, during the session",
            up.as_secs(),
            down.as_secs()
        ),
        tally,
        took,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_link_during_a_session_loses_nothing() {
    let _turn = one_at_a_time().await;
    flapping(
        "flapping link during a session",
        Duration::from_secs(5),
        Duration::from_secs(5),
        30,
        60.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: a 55-minute session at 10x (about 6 minutes); run by `just soak`"]
async fn soak_flapping_link_for_a_whole_session() {
    let _turn = one_at_a_time().await;
    flapping(
        "soak: flapping link for a whole session",
        Duration::from_secs(5),
        Duration::from_secs(5),
        330,
        10.0,
    )
    .await;
}

/// Builds a backlog behind a cut link: `sessions` sessions of `session_s` wall seconds in one
/// room at `time_factor`. Returns the clinic (link still cut) and the session ids.
async fn backlog(sessions: usize, session_s: f64, time_factor: f64) -> (Clinic, Vec<String>) {
    let clinic = Clinic::start(&[("austin", "1", sim(41, 130, time_factor))]).await;
    clinic.all_connected().await;
    clinic.relay.set(Faults::CUT).unwrap();
    let ids = record_sessions(&clinic.rooms[0].http, sessions, session_s, 0.2).await;
    let (waiting, _) = sync_figures(&clinic.rooms[0].http).await;
    assert!(waiting >= sessions as u64, "a backlog built up: {waiting}");
    (clinic, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_through_loss_and_jitter_loses_nothing() {
    let _turn = one_at_a_time().await;
    let (clinic, ids) = backlog(3, 4.0, 300.0).await;
    // The link returns, lossy and jittery: 20 % loss, 200 ms of jitter, during the catch-up.
    let repaired = Instant::now();
    clinic
        .relay
        .set(Faults {
            loss_pct: 20.0,
            jitter: Duration::from_millis(200),
            ..Faults::OK
        })
        .unwrap();
    let edge = &clinic.rooms[0].http;
    let sessions: Vec<(&Http, &str)> = ids.iter().map(|id| (edge, id.as_str())).collect();
    let (tally, took) =
        converge(&sessions, &clinic.cloud, repaired, Duration::from_secs(240)).await;
    let stats = clinic.relay.stats();
    assert!(
        stats.to_upstream.dropped_loss + stats.to_client.dropped_loss > 0,
        "datagrams were lost: {stats:?}"
    );
    assert_nothing_dropped(edge).await;
    report(
        "catch-up through 20 % loss and 200 ms jitter",
        "1 room, 3 sessions of 20 min, ECG 130 Hz, clock 300x",
        "link cut while recording, then back with 20 % loss and 0-200 ms jitter",
        tally,
        took,
    );
}

/// The link returns slow (delay and some loss, so the catch-up takes a while); waits until
/// sync is under way (bytes flowing, documents still unconfirmed) and returns when it was
/// repaired.
async fn repair_slowly_and_wait_for_sync(clinic: &Clinic) -> Instant {
    let edge = &clinic.rooms[0].http;
    let (_, sent_before) = sync_figures(edge).await;
    let repaired = Instant::now();
    clinic
        .relay
        .set(Faults {
            delay: Duration::from_millis(60),
            jitter: Duration::from_millis(30),
            loss_pct: 3.0,
            ..Faults::OK
        })
        .unwrap();
    eventually(
        Duration::from_secs(90),
        "sync under way: bytes flowing, documents waiting",
        || async {
            let (waiting, sent) = sync_figures(edge).await;
            (sent > sent_before + 64 * 1024 && waiting > 0).then_some(())
        },
    )
    .await;
    repaired
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_killed_during_a_catch_up_loses_nothing() {
    let _turn = one_at_a_time().await;
    let (mut clinic, ids) = backlog(3, 3.0, 400.0).await;
    let repaired = repair_slowly_and_wait_for_sync(&clinic).await;
    clinic.cloud_proc.kill();
    let (waiting, _) = sync_figures(&clinic.rooms[0].http).await;
    assert!(waiting > 0, "the cloud died before the catch-up ended");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The cloud comes back on the same port behind the same relay.
    (clinic.cloud_proc, clinic.cloud) = start_cloud(&clinic.cloud_config);
    let edge = &clinic.rooms[0].http;
    let sessions: Vec<(&Http, &str)> = ids.iter().map(|id| (edge, id.as_str())).collect();
    let (tally, took) =
        converge(&sessions, &clinic.cloud, repaired, Duration::from_secs(180)).await;
    assert_nothing_dropped(edge).await;
    report(
        "cloud SIGKILLed during a catch-up, restarted",
        "1 room, 3 sessions of 20 min, ECG 130 Hz, clock 400x",
        "link cut while recording; back with 60 ms delay, 30 ms jitter, 3 % loss; cloud killed mid-sync",
        tally,
        took,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_killed_during_a_catch_up_loses_nothing() {
    let _turn = one_at_a_time().await;
    let (mut clinic, mut ids) = backlog(2, 3.0, 400.0).await;
    // A third session is being recorded when the appliance dies.
    let (running, _) = start_session(&clinic.rooms[0].http, "Running", "baseline").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, before) = clinic.rooms[0]
        .http
        .get(&format!("/api/v1/sessions/{}", ids[0]))
        .await;
    let repaired = repair_slowly_and_wait_for_sync(&clinic).await;
    clinic.rooms[0].kill();

    // The file the dead process left is intact, and the finished session is all there.
    let db = clinic.path().join("data-austin-1").join("vigil-edge.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    clinic.rooms[0].restart();
    let edge = &clinic.rooms[0].http;
    let (_, after) = edge.get(&format!("/api/v1/sessions/{}", ids[0])).await;
    assert_eq!(channel_digest(&after), channel_digest(&before));
    let (_, status) = edge.get("/api/v1/status").await;
    assert_eq!(
        status["recorder"]["session"]["id"].as_str(),
        Some(running.as_str()),
        "the running session resumed: {status}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_session(edge, &running).await;
    ids.push(running);
    let sessions: Vec<(&Http, &str)> = ids.iter().map(|id| (edge, id.as_str())).collect();
    let (tally, took) =
        converge(&sessions, &clinic.cloud, repaired, Duration::from_secs(180)).await;
    assert_nothing_dropped(edge).await;
    report(
        "appliance SIGKILLed during a catch-up, restarted",
        "1 room, 3 sessions (one running at the kill), ECG 130 Hz, clock 400x",
        "link cut while recording; back with 60 ms delay, 30 ms jitter, 3 % loss; appliance killed mid-sync",
        tally,
        took,
    );
}
