//! Reliability scenarios about the appliance's own machine, end to end with real `vigil-edge`
//! and `vigil-cloud` processes: its disk fills up mid-session and space comes back; its clock
//! is a day ahead, a day behind, or so far behind that the cloud's certificate is not valid yet.
//! Each scenario that reaches the cloud compares every session between the appliance's and the
//! cloud's APIs and reports its row for RELIABILITY.md (see `tests/scenarios.rs`).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::tally::{assert_nothing_dropped, converge, one_at_a_time, report};
use support::*;
use vigil_hardware::sim::{EcgRate, PatientParams, Scenario, VirtualPatient, session_seed};
use vigil_shared::vitals::Channel;

const DAY_S: i64 = 86_400;

/// A simulated room at `time_factor` with 130 Hz ECG; `top` holds top-level fields.
fn edge_extra(top: &str, seed: u64, time_factor: f64) -> String {
    format!(
        "{top}chunk_period_s = 10\ngroup_commit_ms = 200\n[source]\nkind = \"simulator\"\nseed = {seed}\necg_hz = 130\ntime_factor = {time_factor}\n"
    )
}

/// Active advisories of the running session, by kind.
async fn active_advisories(edge: &Http) -> Vec<String> {
    let (_, status) = edge.get("/api/v1/status").await;
    status["recorder"]["session"]["active_advisories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Fills the database up to `cap_bytes` from a second connection, as another program filling
/// the disk would: the appliance's next write that needs a new page fails with SQLITE_FULL.
fn fill_database(db: &Path, cap_bytes: u64) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let page: u64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64;
    let _: i64 = conn
        .query_row(
            &format!("PRAGMA max_page_count = {}", cap_bytes / page),
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute("CREATE TABLE ballast (b BLOB)", []).unwrap();
    // Big blobs first, then small ones into what is left, until nothing fits.
    for size in [1 << 20, 64 << 10, 4 << 10, 512] {
        loop {
            match conn.execute("INSERT INTO ballast VALUES (zeroblob(?1))", [size]) {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DiskFull =>
                {
                    break;
                }
                Err(e) => panic!("filling the database: {e}"),
            }
        }
    }
    conn
}

/// Every sample the simulator produced for the session between its start and its end is
/// stored once, and nothing else is: no gap while the disk was full.
async fn assert_every_measured_sample_recorded(
    edge: &Http,
    id: &str,
    room_seed: u64,
    started_us: i64,
    ended_us: i64,
) -> u64 {
    let mut sim = VirtualPatient::new(PatientParams {
        ecg_hz: EcgRate::Hz130,
        ..PatientParams::new(session_seed(room_seed, id), Scenario::Baseline, started_us)
    })
    .unwrap();
    let mut total = 0;
    for channel in [Channel::Hr, Channel::Spo2, Channel::Nibp, Channel::Ecg] {
        let stored = edge.all_vitals(id, channel.name()).await;
        let set: BTreeSet<&Vec<i64>> = stored.iter().collect();
        assert_eq!(set.len(), stored.len(), "{channel}: a sample stored twice");
        let mut expected = |to_us| -> BTreeSet<Vec<i64>> {
            sim.channel_between(channel, started_us, to_us)
                .into_iter()
                .map(|s| {
                    let mut row = vec![s.t_us];
                    row.extend(s.v[..channel.dims()].iter().map(|&v| i64::from(v)));
                    row
                })
                .collect()
        };
        let within = expected(ended_us + 1);
        let foreign: Vec<_> = set
            .iter()
            .filter(|s| !within.contains(**s))
            .take(3)
            .collect();
        assert!(
            foreign.is_empty(),
            "{channel}: not the simulator's: {foreign:?}"
        );
        let missing: Vec<_> = expected(ended_us)
            .into_iter()
            .filter(|s| !set.contains(s))
            .take(3)
            .collect();
        assert!(
            missing.is_empty(),
            "{channel}: measured, never recorded: {missing:?}"
        );
        total += stored.len() as u64;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_keeps_the_session_and_recovers_when_space_returns() {
    let _turn = one_at_a_time().await;
    const SEED: u64 = 51;
    const CAP_MB: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let (_cloud_proc, cloud) = start_cloud(&write_cloud_config(dir.path(), port));
    let extra = format!(
        "{}{}",
        edge_extra(&format!("max_db_mb = {CAP_MB}\n"), SEED, 30.0),
        cloud_section(&ca, dir.path(), port, "austin", "1")
    );
    let (_edge_proc, edge) = start_edge(&write_edge_config(dir.path(), "austin", "1", &extra));
    let db = dir.path().join("data-austin-1").join("vigil-edge.db");
    let (id, started_us) = start_session(&edge, "Disk", "baseline").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The disk fills up under the running session.
    let ballast = fill_database(&db, CAP_MB << 20);
    eventually(
        Duration::from_secs(30),
        "the appliance to notice",
        || async {
            let (_, s) = edge.get("/api/v1/status").await;
            (s["recorder"]["disk_full"] == json!(true)).then_some(())
        },
    )
    .await;
    assert!(
        active_advisories(&edge)
            .await
            .contains(&"storage_full".to_owned()),
        "a technical advisory is raised"
    );
    // People are told, without internals; the file stays sound.
    let (st, body) = edge
        .post(
            &format!("/api/v1/sessions/{id}/events"),
            &json!({"type": "note", "text": "while full"}),
        )
        .await;
    assert_eq!(st, 507, "{body}");
    assert_eq!(
        body,
        json!({"error": "the appliance's disk is full; recording of the running session continues in memory, free space"})
    );
    let check: String = ballast
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, status) = edge.get("/api/v1/status").await;
    assert_eq!(
        status["recorder"]["session"]["id"].as_str(),
        Some(id.as_str()),
        "the session is still being recorded: {status}"
    );
    assert!(
        status["storage"]["db_bytes"].as_u64().unwrap() > 0,
        "storage use is on the status API: {status}"
    );

    // Space returns.
    let _: i64 = ballast
        .query_row("PRAGMA max_page_count = 1073741823", [], |r| r.get(0))
        .unwrap();
    ballast.execute("DROP TABLE ballast", []).unwrap();
    drop(ballast);
    let repaired = Instant::now();
    eventually(
        Duration::from_secs(30),
        "recording durable again",
        || async {
            let (_, s) = edge.get("/api/v1/status").await;
            let cleared = !active_advisories(&edge)
                .await
                .contains(&"storage_full".to_owned());
            (s["recorder"]["disk_full"] == json!(false) && cleared).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ended_us = stop_session(&edge, &id).await;
    assert_nothing_dropped(&edge).await;
    let measured =
        assert_every_measured_sample_recorded(&edge, &id, SEED, started_us, ended_us).await;
    assert!(measured > 10_000, "{measured}");
    // The advisory is in the record, raised and cleared.
    let (_, session) = edge.get(&format!("/api/v1/sessions/{id}")).await;
    let storage: Vec<&Value> = session["advisories"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == json!("storage_full"))
        .collect();
    assert_eq!(storage.len(), 1, "{session}");
    assert!(storage[0]["cleared_us"].as_i64().is_some(), "{storage:?}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "after the recovery");
    drop(conn);

    let (tally, took) = converge(
        &[(&edge, id.as_str())],
        &cloud,
        repaired,
        Duration::from_secs(120),
    )
    .await;
    report(
        "appliance disk full mid-session, then space returns",
        "1 room, 1 session, ECG 130 Hz, clock 30x",
        &format!(
            "database capped at {CAP_MB} MB and filled by another writer for about 2 min (simulated)"
        ),
        tally,
        took,
    );
}

/// Parses `… it is TIME here …` and checks TIME is one of `candidates`.
fn assert_time_among(message: &str, before: &str, after: &str, candidates: &[String]) {
    let start = message.find(before).map(|i| i + before.len());
    let time = start.and_then(|s| message[s..].find(after).map(|e| &message[s..s + e]));
    assert!(
        time.is_some_and(|t| candidates.iter().any(|c| c == t)),
        "{time:?} is not one of {}..{} in {message:?}",
        candidates[0],
        candidates[candidates.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_a_day_ahead_and_a_day_behind_still_sync() {
    let _turn = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let (_cloud_proc, cloud) = start_cloud(&write_cloud_config(dir.path(), port));
    let mut rooms = Vec::new();
    for (room, offset_s) in [("1", DAY_S), ("2", -DAY_S)] {
        let extra = format!(
            "{}{}",
            edge_extra(&format!("clock_offset_s = {offset_s}\n"), 70, 60.0),
            cloud_section(&ca, dir.path(), port, "austin", room)
        );
        let before_us = vigil_edge::clock::wall_now_us();
        let (proc, edge) = start_edge(&write_edge_config(dir.path(), "austin", room, &extra));
        rooms.push((proc, edge, offset_s, before_us));
    }
    let mut sessions = Vec::new();
    for (_, edge, offset_s, before_us) in &rooms {
        // The appliance measures how far off it is at hello, and shows it.
        let skew = eventually(Duration::from_secs(60), "connected", || async {
            let (_, s) = edge.get("/api/v1/status").await;
            (s["sync"]["connected"] == json!(true))
                .then(|| s["sync"]["clock_skew_s"].as_i64())
                .flatten()
        })
        .await;
        assert!(
            (skew - offset_s).abs() <= 5,
            "skew {skew}, offset {offset_s}"
        );
        let (id, started_us) = start_session(edge, "Clock", "baseline").await;
        // Recorded times follow the appliance's clock (sped up 60x since it started).
        let shifted = before_us + offset_s * 1_000_000;
        assert!(
            started_us >= shifted - 5_000_000 && started_us <= shifted + 3_600_000_000,
            "started at {started_us}, the appliance's clock began at {shifted}"
        );
        sessions.push((edge, id, started_us));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ends = Vec::new();
    for (edge, id, _) in &sessions {
        ends.push(stop_session(edge, id).await);
    }
    let synced = Instant::now();
    let pairs: Vec<(&Http, &str)> = sessions
        .iter()
        .map(|(e, id, _)| (*e, id.as_str()))
        .collect();
    let (tally, took) = converge(&pairs, &cloud, synced, Duration::from_secs(120)).await;
    // Every recorded time lies within its session, on the appliance and (checksums equal) in
    // the cloud, and the cloud lists the session at the appliance's start time.
    for ((edge, id, started_us), ended_us) in sessions.iter().zip(&ends) {
        for channel in ["hr", "ecg", "nibp"] {
            let samples = edge.all_vitals(id, channel).await;
            assert!(!samples.is_empty(), "{channel}");
            assert!(
                samples
                    .iter()
                    .all(|s| s[0] >= *started_us && s[0] <= *ended_us),
                "{channel}: a sample outside [{started_us}, {ended_us}]"
            );
        }
        let (_, remote) = cloud.get(&format!("/api/v1/sessions/{id}")).await;
        let remote_start = remote["started_us"]
            .as_i64()
            .or(remote["session"]["started_us"].as_i64());
        assert_eq!(remote_start, Some(*started_us), "{remote}");
    }
    for (_, edge, _, _) in &rooms {
        assert_nothing_dropped(edge).await;
    }
    report(
        "appliance clocks a day ahead and a day behind",
        "2 rooms, 1 session each, ECG 130 Hz, clock 60x",
        "appliance clock +24 h in one room, -24 h in the other",
        tally,
        took,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_two_days_behind_is_refused_with_the_reason_and_recording_goes_on() {
    let _turn = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, server) = clinic_ca_with_server(dir.path());
    let port = free_udp_port();
    let (_cloud_proc, cloud) = start_cloud(&write_cloud_config(dir.path(), port));
    let extra = format!(
        "{}{}",
        edge_extra(&format!("clock_offset_s = {}\n", -2 * DAY_S), 80, 60.0),
        cloud_section(&ca, dir.path(), port, "austin", "1")
    );
    let (_edge_proc, edge) = start_edge(&write_edge_config(dir.path(), "austin", "1", &extra));
    let (id, started_us) = start_session(&edge, "Clock", "baseline").await;
    let message = eventually(Duration::from_secs(60), "the reason", || async {
        let (_, s) = edge.get("/api/v1/status").await;
        s["sync"]["last_error"].as_str().map(str::to_owned)
    })
    .await;
    let now_s = vigil_edge::clock::wall_now_us() / 1_000_000;
    let utc = |s: i64| vigil_edge::clock::format_utc(s * 1_000_000);
    // The appliance's clock when it checked: two days ago, within the last minute.
    let here: Vec<String> = (now_s - 2 * DAY_S - 60..=now_s - 2 * DAY_S + 1)
        .map(utc)
        .collect();
    // The server certificate's start: a day before it was issued (730 days before it ends).
    let not_before_s = server.not_after.unix_timestamp() - 731 * DAY_S;
    let valid_from: Vec<String> = (not_before_s - 1..=not_before_s + 1).map(utc).collect();
    let prefix = format!(
        "cannot reach cloud at 127.0.0.1:{port} (the cloud's certificate is not valid yet by \
         this appliance's clock: it is "
    );
    assert!(message.starts_with(&prefix), "{message}");
    assert_time_among(&message, &prefix, " here", &here);
    assert_time_among(
        &message,
        " here and the certificate is valid from ",
        "; set the appliance's clock right (NTP)); recording continues, ",
        &valid_from,
    );
    assert!(message.ends_with(" documents waiting to sync"), "{message}");
    let (_, status) = edge.get("/api/v1/status").await;
    assert_eq!(status["sync"]["connected"], json!(false), "{status}");

    // Recording goes on, on the appliance's own clock, and nothing reached the cloud.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ended_us = stop_session(&edge, &id).await;
    assert!(started_us < (now_s - DAY_S) * 1_000_000, "{started_us}");
    let samples = edge.all_vitals(&id, "ecg").await;
    assert!(samples.len() > 1_000, "{}", samples.len());
    assert!(
        samples
            .iter()
            .all(|s| s[0] >= started_us && s[0] <= ended_us)
    );
    let (st, _) = cloud.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(st, 404);
    assert_nothing_dropped(&edge).await;
}

/// The appliance's audit entries whose ids the cloud's audit log holds, with how often.
fn cloud_audit_ids(
    cloud_db: &Path,
    site: &str,
    room: &str,
) -> std::collections::BTreeMap<String, u64> {
    let conn =
        rusqlite::Connection::open_with_flags(cloud_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT entry_id, count(*) FROM audit_log
             WHERE source = 'appliance' AND site = ?1 AND room = ?2 GROUP BY entry_id",
        )
        .unwrap();
    stmt.query_map([site, room], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })
    .unwrap()
    .map(|r| {
        let (id, n) = r.unwrap();
        (id, n as u64)
    })
    .collect()
}

/// An appliance that cannot reach the cloud keeps serving the room for hours (clock 1,000x):
/// every read and write is audited on its disk. When the cloud comes up, every entry reaches
/// the cloud's audit log exactly once, with the appliance's site and room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_of_an_offline_appliance_reach_the_cloud_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let quic_port = free_udp_port();
    let cloud_config = write_cloud_config(dir.path(), quic_port);
    let cloud_section = cloud_section(&ca, dir.path(), quic_port, "austin", "1");
    let edge_config = write_edge_config(
        dir.path(),
        "austin",
        "1",
        &format!("{}{cloud_section}", edge_extra("", 41, 1_000.0)),
    );
    let (_edge_proc, edge) = start_edge(&edge_config);

    // Hours of a room's work with no cloud: patients registered and read, a session started,
    // events recorded, the room's lists read again and again.
    let (_, patient) = edge
        .post("/api/v1/patients", &patient_body("Offline"))
        .await;
    let pid = patient["id"].as_str().unwrap().to_owned();
    let (st, session) = edge
        .post("/api/v1/sessions", &session_body(&pid, "baseline"))
        .await;
    assert_eq!(st, 201, "{session}");
    let sid = session["id"].as_str().unwrap().to_owned();
    for i in 0..150 {
        let (st, _) = match i % 5 {
            0 => edge.get(&format!("/api/v1/patients/{pid}")).await,
            1 => edge.get(&format!("/api/v1/sessions/{sid}")).await,
            2 => edge.get("/api/v1/sessions").await,
            3 => {
                edge.get(&format!("/api/v1/sessions/{sid}/vitals?channel=hr"))
                    .await
            }
            _ => {
                let note = json!({"type": "note", "text": format!("check {i}")});
                edge.post(&format!("/api/v1/sessions/{sid}/events"), &note)
                    .await
            }
        };
        assert!(st == 200 || st == 201, "request {i}: {st}");
    }
    stop_session(&edge, &sid).await;
    let (_, status) = edge.get("/api/v1/status").await;
    assert_eq!(status["sync"]["connected"], json!(false), "{status}");
    let db = edge_db(dir.path(), "austin", "1");
    let recorded: BTreeSet<String> =
        vigil_edge::audit::all_entries(&vigil_edge::store::open_reader(&db).unwrap())
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
    assert!(recorded.len() >= 150, "{} entries", recorded.len());

    // The cloud comes up; the appliance reconnects on its own.
    let (_cloud_proc, _cloud) = start_cloud(&cloud_config);
    let since = Instant::now();
    let cloud_db = dir
        .path()
        .join("cloud-data")
        .join(vigil_cloud::app::DB_FILE);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut held = cloud_audit_ids(&cloud_db, "austin", "1");
    while !recorded.iter().all(|id| held.contains_key(id)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        held = cloud_audit_ids(&cloud_db, "austin", "1");
    }
    let took = since.elapsed();
    let in_cloud = recorded.iter().filter(|id| held.contains_key(*id)).count() as u64;
    let duplicated = held.values().map(|n| n.saturating_sub(1)).sum::<u64>();
    let tally = support::tally::Tally {
        recorded: recorded.len() as u64,
        in_cloud,
        lost: recorded.len() as u64 - in_cloud,
        duplicated,
    };
    report(
        "audit log of an appliance that never reached the cloud, then reconnects",
        &format!(
            "1 room, {} audit entries (API reads and writes, simulated hours at 1,000x); counts are entries, not samples",
            recorded.len()
        ),
        "cloud down from the appliance's start until all the work was done",
        tally,
        took,
    );
}
