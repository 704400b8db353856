//! From a sample's arrival at its room's appliance to its tile on another room's central
//! station, over the site's peer link (DESIGN.md and the issue: p95 ≤ 1 s), beside the same
//! sample on its own room's station in the same run.
//!
//! Two real `vigil-edge` processes (release build) of one site on loopback, peers with the
//! appliance certificates of one clinic CA, no cloud. Room 1 records a session from its
//! simulator in real time with 250 Hz ECG; the bench signs in to both rooms' screens and reads
//! both stations' event streams (`/station/live`) as a browser would. For every ECG sample of
//! room 1 that reaches a station, latency = the moment the bench read it − the sample's time
//! stamp. The simulator stamps a sample when it is due and hands it to the recorder at its next
//! poll (every 50 ms), so a sample's stamp is at or before its arrival and the figure is an
//! upper bound. `cargo bench --bench peer_latency` (Linux).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Http, Proc};

/// How long the stations are read.
const MEASURE: Duration = Duration::from_secs(30);
/// The target for the 95th percentile, ms.
const TARGET_P95_MS: f64 = 1_000.0;
const PIN: &str = "246802";

/// Starts room `room` of austin listening for peers on `port` and calling `peer`, with a
/// nurse and the prescribing clinician in its copy of the site's configuration and a cloud
/// address nothing answers.
fn start_room(
    dir: &std::path::Path,
    ca: &vigil_cloud::pki::Ca,
    room: &str,
    port: u16,
    peer: u16,
) -> (Proc, Http) {
    support::seed_site_config(
        &support::edge_db(dir, "austin", room),
        "austin",
        &[
            ("nurse-ana", "Ana Ruiz", "nurse", PIN),
            ("dr-kim", "Dr Kim", "clinician", PIN),
        ],
        |_| {},
    );
    let extra = format!(
        "peer_bind = \"127.0.0.1:{port}\"\npeers = [\"127.0.0.1:{peer}\"]\n\
         [source]\nkind = \"simulator\"\nseed = 7\necg_hz = 250\ntime_factor = 1.0\n{}",
        support::cloud_section(ca, dir, support::free_udp_port(), "austin", room)
    );
    support::start_edge(&support::write_edge_config(dir, "austin", room, &extra))
}

/// Reads a station's event stream for `MEASURE`: the latency of every ECG sample of `room`, ms.
async fn read_station(base: String, cookie: String, room: &'static str) -> Vec<f64> {
    let http = reqwest::Client::new();
    let mut res = http
        .get(format!("{base}/station/live"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("station stream");
    assert_eq!(res.status(), 200);
    let mut out = Vec::new();
    let mut buffer = String::new();
    let end = Instant::now() + MEASURE;
    // The backlog a new stream starts with is not live: skip samples older than the start.
    let start_us = now_us();
    while Instant::now() < end {
        let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(2), res.chunk()).await
        else {
            continue;
        };
        let read_us = now_us();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(at) = buffer.find("\n\n") {
            let event: String = buffer.drain(..at + 2).collect();
            if !event.contains("event: ecg") {
                continue;
            }
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if v["room"] != room {
                continue;
            }
            for s in v["s"].as_array().into_iter().flatten() {
                let t = s[0].as_i64().unwrap_or(0);
                if t >= start_us {
                    out.push((read_us - t) as f64 / 1_000.0);
                }
            }
        }
    }
    out
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = support::clinic_ca(dir.path());
    let (p1, p2) = (support::free_udp_port(), support::free_udp_port());
    let (_one_proc, one) = start_room(dir.path(), &ca, "1", p1, p2);
    let (_two_proc, two) = start_room(dir.path(), &ca, "2", p2, p1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (local, remote) = runtime.block_on(async {
        support::eventually(Duration::from_secs(30), "the rooms to peer", || async {
            let (_, s) = two.get("/api/v1/status").await;
            s["peers"]["rooms"].get("1").map(|_| ())
        })
        .await;
        let (st, patient) = one
            .post("/api/v1/patients", &support::patient_body("Latency"))
            .await;
        assert_eq!(st, 201, "{patient}");
        let (st, session) = one
            .post(
                "/api/v1/sessions",
                &support::session_body(patient["id"].as_str().expect("id"), "baseline"),
            )
            .await;
        assert_eq!(st, 201, "{session}");
        let (_, c1, _) = support::peers::screen_sign_in(&one.base, "nurse-ana", PIN).await;
        let (_, c2, _) = support::peers::screen_sign_in(&two.base, "nurse-ana", PIN).await;
        tokio::join!(
            read_station(one.base.clone(), c1, "1"),
            read_station(two.base.clone(), c2, "1")
        )
    });
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (
            v.len(),
            percentile(&v, 0.5),
            percentile(&v, 0.95),
            percentile(&v, 0.99),
            v.last().copied().unwrap_or(f64::NAN),
        )
    };
    let (n_local, l50, l95, l99, lmax) = summary(local);
    let (n_remote, r50, r95, r99, rmax) = summary(remote);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "peer latency: a 250 Hz ECG sample from its arrival at room 1's appliance to a station's event stream, {}s of real time, {cores} cores",
        MEASURE.as_secs()
    );
    println!("| measure | samples | p50 | p95 | p99 | max | target |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| room 2's station (over the peer link) | {n_remote} | {r50:.1} ms | {r95:.1} ms | {r99:.1} ms | {rmax:.1} ms | p95 ≤ {TARGET_P95_MS:.0} ms: {} |",
        if r95 <= TARGET_P95_MS {
            "met"
        } else {
            "**missed**"
        }
    );
    println!(
        "| room 1's own station (baseline, same run) | {n_local} | {l50:.1} ms | {l95:.1} ms | {l99:.1} ms | {lmax:.1} ms | — |"
    );
    assert!(n_remote > 0 && n_local > 0, "no ECG reached a station");
}
