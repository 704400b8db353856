//! Many appliances held connected at once, beside an idle cloud in the same run (DESIGN.md:
//! "≥ 200 connected appliances"; cloud/src/sync/limits.rs: `MAX_APPLIANCE_CONNECTIONS`).
//!
//! A real `vigil-cloud` process (release build) on loopback serves sites of five rooms each,
//! one room per appliance. The bench issues one client certificate per room from a private CA
//! and opens one QUIC connection per appliance with mutual TLS, through the raw sync client of
//! the end-to-end tier (`tests/support/peer.rs`). Each appliance registers a patient and starts
//! a session document, answers the cloud's pushes (its site's configuration, the patients of
//! its site's other rooms), then every 10 s appends 10 s of heart rate, SpO2 and pulse to its
//! session and syncs it up, as a room appliance does during an infusion, for a few rounds
//! (`VIGIL_BENCH_ROUNDS`, default 3). The appliances' uploads are spread over each 10 s period.
//!
//! Measured from /proc: the cloud's resident memory and CPU time, first idle (started, no
//! appliance) and then with every appliance connected and syncing; the connections the bench
//! holds and the cloud's own gauge of them; and the connections refused, which must be none
//! while the appliances are fewer than `MAX_APPLIANCE_CONNECTIONS`.
//!
//! What the bench's clients do not do that appliances do: send backlog reports on the control
//! stream (every 10 s; the cloud records each one), and keep sync states between exchanges
//! (each upload starts a fresh exchange, one more round trip for the same changes).
//!
//! `cargo bench --bench connections` (Linux). `VIGIL_BENCH_APPLIANCES` (default 1,000) sets the
//! number of appliances.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::AutoCommit;
use tokio::task::JoinSet;
use vigil_cloud::sync::limits::MAX_APPLIANCE_CONNECTIONS;
use vigil_shared::chunk::Chunk;
use vigil_shared::doc::{DocKind, SessionDoc};
use vigil_shared::vitals::Channel;
use vigil_shared::wire;

use support::peer::{self, Peer};

/// Appliances connected at once, unless `VIGIL_BENCH_APPLIANCES` says otherwise.
const APPLIANCES: usize = 1_000;
/// Rounds of syncing after the first upload, unless `VIGIL_BENCH_ROUNDS` says otherwise.
const ROUNDS: usize = 3;
/// How often each appliance syncs: its chunk period (the appliance's default).
const ROUND_PERIOD: Duration = Duration::from_secs(10);
/// Rooms per site: a clinic site has a handful; the cloud pushes a patient registered in one
/// room to the site's other rooms, so this sets how many pushes a registration costs.
const ROOMS_PER_SITE: usize = 5;
/// Handshakes in flight at once while connecting: a fleet comes up over time, not in one
/// instant (the appliances' backoff and jitter spread reconnections out).
const CONNECTING_AT_ONCE: usize = 64;
/// How long the idle cloud is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(20);
/// How often the cloud's resident set is read while the appliances sync.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for connecting every appliance and their first uploads; a run that takes this
/// long is broken, not slow.
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);
/// File descriptors the bench needs beside one UDP socket per appliance (each raw client has
/// an endpoint of its own): the runtime, the certificate files being read, HTTP clients.
const SPARE_FDS: u64 = 256;

/// A count from the environment, or `default`.
fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a count")),
        Err(_) => default,
    }
}

/// The soft and hard limits on open files of process `pid` ("self" for this one).
fn open_files_limit(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("");
    let mut values = line.split_whitespace().filter_map(|v| {
        v.parse::<u64>()
            .ok()
            .or((v == "unlimited").then_some(u64::MAX))
    });
    (
        values.next().unwrap_or(1_024),
        values.next().unwrap_or(1_024),
    )
}

/// Raises this process's soft limit on open files to `needed` if it is lower (with util-linux
/// `prlimit`, which changes a running process's limits), within the hard limit.
fn ensure_open_files(needed: u64) {
    let (soft, hard) = open_files_limit("self");
    if soft >= needed {
        return;
    }
    assert!(
        hard >= needed,
        "{needed} open files needed, the hard limit is {hard}: raise it (ulimit -Hn) or set \
         VIGIL_BENCH_APPLIANCES lower"
    );
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={needed}:{hard}")])
        .status();
    let (soft, _) = open_files_limit("self");
    assert!(
        soft >= needed,
        "{needed} open files needed, the limit is {soft} (prlimit: {status:?}): run with \
         `ulimit -n {needed}` first"
    );
}

/// Ticks per second of /proc's CPU times.
fn clock_ticks_per_s() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU time of process `pid`, seconds.
fn cpu_s(pid: u32, ticks_per_s: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are the 12th and 13th after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / ticks_per_s
}

/// The cloud's own figures from `/metrics`: appliances connected, connections refused.
async fn cloud_gauges(api: &str) -> (u64, u64) {
    let text = match reqwest::get(format!("{api}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut connected = 0;
    let mut refused = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        if name == "vigil_cloud_connected_appliances" {
            connected = value;
        } else if name.starts_with("vigil_cloud_rejects_total") {
            refused += value;
        }
    }
    (connected, refused)
}

/// One appliance of the bench: its room, its certificate files and its documents.
struct Room {
    site: String,
    room: String,
    cert: (PathBuf, PathBuf),
    patient_id: String,
    session_id: String,
}

/// The bench's rooms: `n` appliances over sites of [`ROOMS_PER_SITE`] rooms.
fn rooms(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("load-{:03}", i / ROOMS_PER_SITE),
                format!("{}", i % ROOMS_PER_SITE + 1),
            )
        })
        .collect()
}

/// The cloud's configuration: the end-to-end tier's, with the bench's sites added.
fn write_config(dir: &Path, rooms: &[(String, String)]) -> PathBuf {
    let path = support::write_cloud_config(dir, 0);
    let mut text = std::fs::read_to_string(&path).expect("cloud config");
    for site_rooms in rooms.chunks(ROOMS_PER_SITE) {
        let site = &site_rooms[0].0;
        let list: Vec<String> = site_rooms.iter().map(|(_, r)| format!("\"{r}\"")).collect();
        text.push_str(&format!(
            "[[sites]]\nid = \"{site}\"\nname = \"Load {site}\"\nregion = \"central\"\n\
             rooms = [{}]\n",
            list.join(", ")
        ));
    }
    std::fs::write(&path, text).expect("write cloud config");
    path
}

/// One chunk period of vitals as the recorder encodes them: a chunk per channel.
type Period = Vec<(Channel, Vec<u8>)>;

/// The 10 s of heart rate, SpO2 and pulse each round appends, encoded as the recorder's chunks.
fn round_chunks(rounds: usize) -> Vec<Period> {
    let mut patient = common::patient();
    (0..rounds)
        .map(|k| {
            let from_us = common::ORIGIN_US + k as i64 * common::CHUNK_US;
            [Channel::Hr, Channel::Spo2, Channel::Pulse]
                .into_iter()
                .map(|channel| {
                    let samples =
                        patient.channel_between(channel, from_us, from_us + common::CHUNK_US);
                    let bytes = Chunk { channel, samples }.encode().expect("encode chunk");
                    (channel, bytes)
                })
                .collect()
        })
        .collect()
}

/// What connecting one appliance and its first upload came to.
enum Setup {
    /// Connected and its documents are in the cloud.
    Ready(Box<(Peer, SessionDoc, tokio::task::JoinHandle<u64>)>),
    /// The cloud refused the connection, or the first upload failed: why.
    Failed(String),
}

/// Connects appliance `room`, registers its patient and its session.
async fn set_up(dir: Arc<Path>, addr: SocketAddr, room: Room) -> Setup {
    let hello = wire::hello("vigil-bench-connections");
    let connected =
        peer::connect_with(&dir, (&room.cert.0, &room.cert.1), addr, None, &hello).await;
    let mut peer = match connected {
        Ok((peer, _version)) => peer,
        Err(e) => return Setup::Failed(format!("connect {}/{}: {e}", room.site, room.room)),
    };
    let pushes = tokio::spawn(support::fleet::answer_pushes(peer.conn.clone()));
    let mut patient = peer::patient(&room.patient_id, &room.site);
    if let Err(e) = peer.upload(&room.patient_id, patient.automerge()).await {
        return Setup::Failed(format!("patient {}/{}: {e}", room.site, room.room));
    }
    let mut session = peer::session(&room.session_id, &room.site, &room.room, &room.patient_id);
    if let Err(e) = peer
        .upload_kind(&room.session_id, DocKind::Session, session.automerge())
        .await
    {
        return Setup::Failed(format!("session {}/{}: {e}", room.site, room.room));
    }
    Setup::Ready(Box::new((peer, session, pushes)))
}

/// One appliance's rounds: at `start + offset + k × ROUND_PERIOD`, one period of chunks
/// appended and synced up. Each sync's time, or the first error.
async fn sync_rounds(
    mut peer: Peer,
    mut session: SessionDoc,
    id: String,
    chunks: Arc<Vec<Period>>,
    start: tokio::time::Instant,
    offset: Duration,
) -> (Peer, Result<Vec<Duration>, String>) {
    let mut took = Vec::with_capacity(chunks.len());
    for (k, period) in chunks.iter().enumerate() {
        tokio::time::sleep_until(start + offset + ROUND_PERIOD * k as u32).await;
        for (channel, bytes) in period {
            if let Err(e) = session.append_chunk(*channel, bytes.clone()) {
                return (peer, Err(format!("append: {e}")));
            }
        }
        session.automerge().commit();
        let t = Instant::now();
        let doc: &mut AutoCommit = session.automerge();
        if let Err(e) = peer.upload_kind(&id, DocKind::Session, doc).await {
            return (peer, Err(format!("round {}: {e}", k + 1)));
        }
        took.push(t.elapsed());
    }
    (peer, Ok(took))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let n = env_count("VIGIL_BENCH_APPLIANCES", APPLIANCES);
    let rounds = env_count("VIGIL_BENCH_ROUNDS", ROUNDS);
    assert!(n > 0 && rounds > 0, "at least one appliance and one round");
    ensure_open_files(n as u64 + SPARE_FDS);
    let ticks = clock_ticks_per_s();

    let dir = tempfile::tempdir().expect("tempdir");
    let ca = support::clinic_ca(dir.path());
    let room_names = rooms(n);
    let config = write_config(dir.path(), &room_names);
    let issuing = Instant::now();
    let rooms: Vec<Room> = room_names
        .iter()
        .enumerate()
        .map(|(i, (site, room))| {
            let cert = ca
                .issue_appliance(&site.as_str().into(), &room.as_str().into())
                .expect("appliance certificate");
            Room {
                site: site.clone(),
                room: room.clone(),
                cert: (cert.cert_path, cert.key_path),
                patient_id: format!("0a7e0000-0000-4000-8000-{i:012}"),
                session_id: format!("5e550000-0000-4000-8000-{i:012}"),
            }
        })
        .collect();
    let issuing = issuing.elapsed();

    let (mut cloud, http) = support::start_cloud(&config);
    let pid = cloud.child.id();
    let api = http.base.clone();
    let addr: SocketAddr = cloud
        .wait_for("cloud sync", Duration::from_secs(5))
        .parse()
        .expect("cloud sync address");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // The baseline: the same cloud, started, with no appliance.
    std::thread::sleep(Duration::from_secs(3));
    let idle_cpu_before = cpu_s(pid, ticks);
    std::thread::sleep(IDLE_WINDOW);
    let idle_cpu_per_min = (cpu_s(pid, ticks) - idle_cpu_before) * 60.0 / IDLE_WINDOW.as_secs_f64();
    let (idle_mb, _) = common::memory_mb(pid);

    // Connect every appliance, a few handshakes at a time, and upload its first documents.
    let dir_path: Arc<Path> = Arc::from(dir.path());
    let cpu_before_connect = cpu_s(pid, ticks);
    let connecting = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut ready: Vec<(usize, Peer, SessionDoc, tokio::task::JoinHandle<u64>)> = Vec::new();
    runtime.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTING_AT_ONCE));
        let mut tasks = JoinSet::new();
        for (i, room) in rooms.into_iter().enumerate() {
            let (gate, dir) = (gate.clone(), dir_path.clone());
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await.expect("gate open");
                (i, set_up(dir, addr, room).await)
            });
        }
        let all = async {
            while let Some(done) = tasks.join_next().await {
                match done.expect("set-up task") {
                    (i, Setup::Ready(r)) => {
                        let (peer, session, pushes) = *r;
                        ready.push((i, peer, session, pushes));
                    }
                    (_, Setup::Failed(why)) => failures.push(why),
                }
            }
        };
        tokio::time::timeout(SETUP_TIMEOUT, all)
            .await
            .expect("connecting the appliances took too long");
    });
    let connect_s = connecting.elapsed();
    let connect_cpu = cpu_s(pid, ticks) - cpu_before_connect;
    let (connected_mb, _) = common::memory_mb(pid);
    let refused = failures
        .iter()
        .filter(|f| f.starts_with("connect "))
        .count();

    // The rounds: every appliance syncs every ROUND_PERIOD, spread over the period.
    let chunks = Arc::new(round_chunks(rounds));
    let held = ready.len();
    let cpu_before = cpu_s(pid, ticks);
    let rounds_began = Instant::now();
    let mut peak_mb = connected_mb;
    let mut took: Vec<Duration> = Vec::new();
    let mut mid_gauge = (0, 0);
    let mut peers: Vec<Peer> = Vec::new();
    let mut pushers = Vec::new();
    runtime.block_on(async {
        let start = tokio::time::Instant::now();
        let mut tasks = JoinSet::new();
        for (slot, (i, peer, session, pushes)) in ready.into_iter().enumerate() {
            let offset = ROUND_PERIOD.mul_f64(slot as f64 / held as f64);
            let id = format!("5e550000-0000-4000-8000-{i:012}");
            tasks.spawn(sync_rounds(
                peer,
                session,
                id,
                chunks.clone(),
                start,
                offset,
            ));
            pushers.push(pushes);
        }
        let mut sampler = tokio::time::interval(SAMPLE_EVERY);
        let mut sampled_gauge = false;
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    Some(done) => {
                        let (peer, result) = done.expect("round task");
                        match result {
                            Ok(t) => took.extend(t),
                            Err(e) => failures.push(e),
                        }
                        peers.push(peer);
                    }
                    None => break,
                },
                _ = sampler.tick() => {
                    peak_mb = peak_mb.max(common::memory_mb(pid).0);
                    // Halfway through, the cloud's own count of what it holds.
                    if !sampled_gauge && start.elapsed() >= ROUND_PERIOD * rounds as u32 / 2 {
                        mid_gauge = cloud_gauges(&api).await;
                        sampled_gauge = true;
                    }
                }
            }
        }
    });
    let rounds_s = rounds_began.elapsed();
    let busy_cpu = cpu_s(pid, ticks) - cpu_before;
    let (end_mb, hwm_mb) = common::memory_mb(pid);
    let still_open = peers
        .iter()
        .filter(|p| p.conn.close_reason().is_none())
        .count();
    let end_gauge = runtime.block_on(cloud_gauges(&api));
    let pushes_answered: u64 = runtime.block_on(async {
        for p in &peers {
            p.conn.close(0_u32.into(), b"bench done");
        }
        let mut n = 0;
        for h in pushers {
            n += h.await.unwrap_or(0);
        }
        n
    });
    drop(peers);
    let _ = cloud.terminate();
    runtime.shutdown_timeout(Duration::from_secs(5));

    took.sort();
    let minutes = rounds_s.as_secs_f64() / 60.0;
    let busy_per_min = busy_cpu / minutes;
    let per_appliance_ms = |cpu_per_min: f64| cpu_per_min * 1e3 / held.max(1) as f64;
    println!(
        "connections: {n} appliances ({} sites x {ROOMS_PER_SITE} rooms) on one real vigil-cloud \
         (release build), QUIC with mutual TLS on loopback; each syncs 10 s of HR, SpO2 and pulse \
         every {} s, {rounds} rounds ({:.0} s), after registering a patient and a session",
        n.div_ceil(ROOMS_PER_SITE),
        ROUND_PERIOD.as_secs(),
        rounds_s.as_secs_f64()
    );
    println!("| measure | {n} appliances | idle cloud (same run) | per appliance | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| cloud resident memory | {connected_mb:.1} MB connected; {peak_mb:.1} MB highest while \
         syncing; {end_mb:.1} MB at the end (VmHWM {hwm_mb:.1} MB) | {idle_mb:.1} MB | {:.1} KB \
         (highest - idle) | - |",
        (peak_mb - idle_mb) * 1024.0 / held.max(1) as f64
    );
    println!(
        "| cloud CPU while syncing | {busy_per_min:.2} CPU-s per minute | {idle_cpu_per_min:.3} \
         CPU-s per minute | {:.1} ms CPU per appliance per minute ({:.1} ms above idle) | - |",
        per_appliance_ms(busy_per_min),
        per_appliance_ms(busy_per_min - idle_cpu_per_min)
    );
    println!(
        "| connected at once | {held} held by the bench; cloud's gauge {} mid-run, {} at the end; \
         {still_open} still open after the last round | 0 | - | >= 200; all {n} below the limit \
         of {MAX_APPLIANCE_CONNECTIONS} |",
        mid_gauge.0, end_gauge.0
    );
    println!(
        "| connections refused | {refused} (cloud's rejects counter: {}) | - | - | 0 below {} |",
        end_gauge.1, MAX_APPLIANCE_CONNECTIONS
    );
    println!(
        "| connecting and first uploads (patient, session) | {:.1} s; cloud CPU {:.2} s, {:.1} ms \
         per appliance | - | - | - |",
        connect_s.as_secs_f64(),
        connect_cpu,
        connect_cpu * 1e3 / held.max(1) as f64
    );
    println!(
        "| one sync of 10 s of vitals, appliance to durable in the cloud | p50 {}, p95 {}, max {} \
         over {} syncs | - | - | - |",
        ms(percentile(&took, 0.5)),
        ms(percentile(&took, 0.95)),
        ms(percentile(&took, 1.0)),
        took.len()
    );
    println!(
        "certificates issued: {n} in {:.1} s; pushes from the cloud answered: {pushes_answered}; \
         failures: {}",
        issuing.as_secs_f64(),
        failures.len()
    );
    for f in failures.iter().take(5) {
        println!("  {f}");
    }
    if n <= MAX_APPLIANCE_CONNECTIONS {
        assert_eq!(
            refused, 0,
            "connections refused below {MAX_APPLIANCE_CONNECTIONS}"
        );
        assert_eq!(end_gauge.1, 0, "the cloud counted refusals");
        assert_eq!(held, n, "every appliance connected");
        assert!(failures.is_empty(), "failures: {failures:?}");
    }
}
