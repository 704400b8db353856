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

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vigil_shared::doc::{DocKind, SiteConfig, SiteConfigDoc, StaffMember};

/// How long the stations are read.
const MEASURE: Duration = Duration::from_secs(30);
/// The issue's target for the 95th percentile, ms.
const TARGET_P95_MS: f64 = 1_000.0;
const PIN: &str = "246802";

/// The release `vigil-edge`, built first (a bench builds only its own target).
fn edge_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "vigil-edge",
            "--bin",
            "vigil-edge",
        ])
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build --release --bin vigil-edge failed"
    );
    let exe = std::env::current_exe().expect("bench executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/release")
        .join("vigil-edge")
}

/// The site's configuration with a nurse and the prescribing clinician, in the appliance's database (as the cloud would
/// have sent it), so the bench can sign in to the station.
fn seed_staff(db: &Path) {
    let config = SiteConfig {
        site: "austin".into(),
        name: "Austin".into(),
        region: "central".into(),
        rooms: vec![],
        thresholds: vigil_shared::advisory::Thresholds::default(),
        staff: [
            ("nurse-ana", "Ana Ruiz", "nurse"),
            ("dr-kim", "Dr Kim", "clinician"),
        ]
        .iter()
        .map(|(id, name, role)| StaffMember {
            id: (*id).into(),
            name: (*name).into(),
            role: (*role).into(),
            pin_hash: vigil_cloud::auth::hash_password(PIN).expect("hash"),
        })
        .collect(),
    };
    let mut doc = SiteConfigDoc::create(&config).expect("site config");
    std::fs::create_dir_all(db.parent().expect("data dir")).expect("data dir");
    let mut conn = vigil_edge::store::open_writer(db).expect("appliance database");
    let tx = vigil_edge::store::write_tx(&mut conn).expect("tx");
    vigil_edge::store::insert_document(
        &tx,
        "austin",
        DocKind::SiteConfig.as_str(),
        "austin",
        &doc.automerge().save(),
        0,
    )
    .expect("insert site config");
    tx.commit().expect("commit");
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A started appliance: its process, API base and token.
struct Room {
    child: Child,
    base: String,
    token: String,
}

impl Drop for Room {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_room(
    exe: &Path,
    dir: &Path,
    ca: &vigil_cloud::pki::Ca,
    room: &str,
    port: u16,
    peer: u16,
) -> Room {
    let data = dir.join(format!("data-{room}"));
    seed_staff(&data.join(vigil_edge::app::DB_FILE));
    let cert = ca
        .issue_appliance(&"austin".into(), &room.into())
        .expect("appliance certificate");
    let config = dir.join(format!("edge-{room}.toml"));
    std::fs::write(
        &config,
        format!(
            "site = \"austin\"\nroom = \"{room}\"\ndata_dir = \"{data}\"\nhttp_bind = \"127.0.0.1:0\"\n\
             peer_bind = \"127.0.0.1:{port}\"\npeers = [\"127.0.0.1:{peer}\"]\n\
             [source]\nkind = \"simulator\"\nseed = 7\necg_hz = 250\ntime_factor = 1.0\n\
             [cloud]\naddr = \"127.0.0.1:{nowhere}\"\nserver_name = \"localhost\"\n\
             ca_cert = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n",
            data = data.display(),
            nowhere = free_udp_port(),
            ca = ca.dir().join(vigil_cloud::pki::CA_CERT_FILE).display(),
            cert = cert.cert_path.display(),
            key = cert.key_path.display(),
        ),
    )
    .expect("write config");
    let mut child = Command::new(exe)
        .args(["run", "--config", config.to_str().expect("utf-8")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vigil-edge");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok);
    let mut value = |name: &str| {
        let prefix = format!("{name}: ");
        lines
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no `{name}:` line"))
    };
    let base = value("edge api");
    let token = value("edge api token");
    std::thread::spawn(move || for _ in lines {});
    Room { child, base, token }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Signs the nurse in to a room's screen; the session cookie.
async fn sign_in(http: &reqwest::Client, base: &str) -> String {
    let cookie_of = |res: &reqwest::Response, name: &str| {
        res.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next())
            .find(|kv| kv.starts_with(&format!("{name}=")))
            .map(str::to_owned)
            .expect("cookie")
    };
    let res = http
        .get(format!("{base}/screen/login"))
        .send()
        .await
        .expect("login page");
    let login = cookie_of(&res, vigil_edge::web::screen::LOGIN_CSRF_COOKIE);
    let page = res.text().await.expect("page");
    let at = page.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    let csrf = &page[at..at + 64];
    let res = http
        .post(format!("{base}/screen/login"))
        .header(reqwest::header::COOKIE, login)
        .form(&[("staff", "nurse-ana"), ("pin", PIN), ("csrf", csrf)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(res.status(), 303, "the nurse signs in");
    cookie_of(&res, vigil_edge::web::screen::COOKIE)
}

/// Reads a station's event stream for `MEASURE`: the latency of every ECG sample of `room`, ms.
async fn read_station(base: String, cookie: String, room: &'static str) -> Vec<f64> {
    let http = client();
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
    let exe = edge_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = vigil_cloud::pki::Ca::init(&dir.path().join("pki"), "Vigil bench CA").expect("CA");
    let (p1, p2) = (free_udp_port(), free_udp_port());
    let one = start_room(&exe, dir.path(), &ca, "1", p1, p2);
    let two = start_room(&exe, dir.path(), &ca, "2", p2, p1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (local, remote) = runtime.block_on(async {
        let http = client();
        // Wait for the rooms to peer.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s: Value = http
                .get(format!("{}/api/v1/status", two.base))
                .bearer_auth(&two.token)
                .send()
                .await
                .expect("status")
                .json()
                .await
                .expect("json");
            if s["peers"]["rooms"].get("1").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the rooms did not peer: {s}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let post = |path: &str, body: Value| {
            let req = http
                .post(format!("{}{path}", one.base))
                .bearer_auth(&one.token)
                .json(&body);
            async move {
                let res = req.send().await.expect("request");
                let status = res.status();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                assert!(status.is_success(), "{status} {body}");
                body
            }
        };
        let patient = post(
            "/api/v1/patients",
            json!({"given_name": "Latency", "family_name": "Bench", "birth_date": "1975-04-02", "sex": "female"}),
        )
        .await;
        let screening: Vec<Value> = vigil_shared::clinical::screening::ScreeningFlag::ALL
            .iter()
            .map(|f| json!({"flag": f.code(), "yes": false}))
            .collect();
        post(
            "/api/v1/sessions",
            json!({
                "patient_id": patient["id"],
                "protocol": {"drug": "ketamine", "route": "iv", "dose_mg_per_kg": 0.5,
                             "weight_kg": 70.0, "planned_minutes": 40},
                "order": {"prescriber": "dr-kim", "indication": "depression"},
                "risk_screen": {"phq9_items": [2, 2, 2, 2, 2, 2, 1, 1, 0],
                                "cssrs": [false, false, false, false, false, false]},
                "screening": screening,
                "scenario": "baseline",
            }),
        )
        .await;
        let (c1, c2) = (sign_in(&http, &one.base).await, sign_in(&http, &two.base).await);
        tokio::join!(
            read_station(one.base.clone(), c1, "1"),
            read_station(two.base.clone(), c2, "1")
        )
    });
    drop((one, two));
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
