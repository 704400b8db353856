//! The appliance's memory over a whole session, beside the design's target (DESIGN.md: the
//! appliance under 40 MB resident): a real `vigil-edge` process (release build) records a
//! 56-minute session with 250 Hz ECG from its simulator, faster than real time, through its
//! recorder, staging, group commits, document saves and its HTTP API, while its resident set
//! is read from /proc every 100 ms. Reported: resident memory when idle (started, no session),
//! the highest resident set sampled during the session, and the kernel's high-water mark
//! (`VmHWM`) at the end.
//!
//! Three runs of the same session, one after the other: with no cloud configured; with a real
//! `vigil-cloud` process (release build) reachable on loopback, so the session syncs as it is
//! recorded; and with the cloud unreachable for the whole session (a loopback port nothing
//! listens on), so the backlog grows and the sync client keeps retrying. The backlog the
//! appliance reports at the end (documents and bytes waiting) is printed beside each.
//! `cargo bench --bench appliance_memory` (Linux).

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Simulated minutes of the session.
const SESSION_MIN: u64 = 56;
/// How much faster than real time the simulator runs (the recorder keeps up far beyond this).
const TIME_FACTOR: f64 = 30.0;
/// The design's target for the appliance's resident memory, MB.
const TARGET_MB: f64 = 40.0;
/// How often the resident set is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Longest wait after the stop for a reachable cloud to confirm every document.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for a `name: value` line on the process's standard output.
fn wait_for(lines: &mut impl Iterator<Item = String>, name: &str) -> String {
    let prefix = format!("{name}: ");
    lines
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no `{name}:` line"))
}

struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> Value {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.expect("json")
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }
}

/// Where the appliance's cloud is during the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloudMode {
    /// No `[cloud]` section: the appliance records and never syncs.
    None,
    /// A real `vigil-cloud` on loopback, serving the appliance's site and room.
    Reachable,
    /// A `[cloud]` section naming a loopback port nothing listens on, for the whole session.
    Unreachable,
}

impl CloudMode {
    fn describe(self) -> &'static str {
        match self {
            CloudMode::None => "no cloud configured",
            CloudMode::Reachable => "cloud reachable",
            CloudMode::Unreachable => "cloud unreachable",
        }
    }
}

/// What one run measured.
struct Run {
    idle_mb: f64,
    peak_mb: f64,
    hwm_mb: f64,
    end_mb: f64,
    samples: u64,
    /// The appliance's sync status at the end (`null` without a cloud).
    sync: Value,
}

/// Records one session with the cloud as `mode` says, sampling the appliance's memory.
fn run(edge: &Path, mode: CloudMode) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cloud_section = String::new();
    let mut _cloud = None;
    if mode == CloudMode::None || mode == CloudMode::Unreachable {
        // The clinician the session's order names, in the appliance's copy of the site's
        // configuration (as the cloud would have sent it).
        support::seed_site_config(
            &data.join(vigil_edge::app::DB_FILE),
            "austin",
            &[("dr-kim", "Dr Kim", "clinician", "730461")],
            |_| {},
        );
    }
    if mode != CloudMode::None {
        let ca = support::clinic_ca(dir.path());
        // Free now; in the unreachable run nothing ever binds it.
        let port = support::free_udp_port();
        if mode == CloudMode::Reachable {
            // The cloud's own site configuration (no staff list) comes down instead of the
            // seeded one, as on a freshly enrolled appliance.
            _cloud = Some(support::start_cloud(&support::write_cloud_config(
                dir.path(),
                port,
            )));
        }
        cloud_section = support::cloud_section(&ca, dir.path(), port, "austin", "1");
    }
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "site = \"austin\"\nroom = \"1\"\ndata_dir = \"{}\"\nhttp_bind = \"127.0.0.1:0\"\n\
             chunk_period_s = 10\ngroup_commit_ms = 1000\n{cloud_section}[source]\nkind = \"simulator\"\n\
             seed = 7\necg_hz = 250\ntime_factor = {TIME_FACTOR:.1}\n",
            data.display()
        ),
    )
    .expect("write config");
    let mut child: Child = Command::new(edge)
        .args(["run", "--config", config.to_str().expect("utf-8")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vigil-edge");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok);
    let api = Api {
        base: wait_for(&mut lines, "edge api"),
        token: wait_for(&mut lines, "edge api token"),
        client: reqwest::Client::new(),
    };
    std::thread::spawn(move || for _ in lines {});

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    std::thread::sleep(Duration::from_secs(2));
    let (idle_mb, _) = common::memory_mb(pid);
    let session = runtime.block_on(async {
        let patient = api
            .post(
                "/api/v1/patients",
                &json!({"given_name": "Memory", "family_name": "Bench",
                        "birth_date": "1975-04-02", "sex": "female"}),
            )
            .await;
        let screening: Vec<Value> = vigil_shared::clinical::screening::ScreeningFlag::ALL
            .iter()
            .map(|f| json!({"flag": f.code(), "yes": false}))
            .collect();
        api.post(
            "/api/v1/sessions",
            &json!({
                "patient_id": patient["id"],
                "protocol": {"drug": "ketamine", "route": "iv", "dose_mg_per_kg": 0.5,
                             "weight_kg": 70.0, "planned_minutes": 40},
                "order": {"prescriber": "dr-kim", "indication": "depression"},
                "risk_screen": {"phq9_items": [2, 2, 2, 2, 2, 2, 1, 1, 0],
                                "cssrs": [false, false, false, false, false, false]},
                "screening": screening,
                "scenario": "hypertension",
            }),
        )
        .await
    });
    let id = session["id"].as_str().expect("session id").to_owned();
    let wall = Duration::from_secs_f64(SESSION_MIN as f64 * 60.0 / TIME_FACTOR);
    let start = Instant::now();
    let mut peak_mb = idle_mb;
    while start.elapsed() < wall {
        std::thread::sleep(SAMPLE_EVERY);
        peak_mb = peak_mb.max(common::memory_mb(pid).0);
    }
    runtime.block_on(api.post(&format!("/api/v1/sessions/{id}/stop"), &json!({})));
    for _ in 0..20 {
        std::thread::sleep(SAMPLE_EVERY);
        peak_mb = peak_mb.max(common::memory_mb(pid).0);
    }
    let sync_status = || runtime.block_on(api.get("/api/v1/status"))["sync"].clone();
    if mode == CloudMode::Reachable {
        // The last chunks and the stop reach the cloud within a few scans; memory is sampled
        // until they have.
        let drain = Instant::now();
        while sync_status()["docs_waiting"] != json!(0) && drain.elapsed() < DRAIN_TIMEOUT {
            std::thread::sleep(SAMPLE_EVERY);
            peak_mb = peak_mb.max(common::memory_mb(pid).0);
        }
    }
    let sync = sync_status();
    let (end_mb, hwm_mb) = common::memory_mb(pid);
    let summary = runtime.block_on(api.get(&format!("/api/v1/sessions/{id}")));
    let samples: u64 = summary["channels"].as_object().map_or(0, |m| {
        m.values().filter_map(|c| c["samples"].as_u64()).sum()
    });
    let _ = child.kill();
    let _ = child.wait();
    Run {
        idle_mb,
        peak_mb,
        hwm_mb,
        end_mb,
        samples,
        sync,
    }
}

fn verdict(mb: f64) -> &'static str {
    if mb <= TARGET_MB { "met" } else { "**missed**" }
}

/// The backlog the appliance reported at the end: documents and bytes waiting, whether it was
/// connected, and its last error.
fn backlog(sync: &Value) -> String {
    if sync.is_null() {
        return "- (no sync client)".into();
    }
    let waiting = format!(
        "{} documents, {:.1} KB waiting",
        sync["docs_waiting"].as_u64().unwrap_or(0),
        sync["bytes_waiting"].as_u64().unwrap_or(0) as f64 / 1e3
    );
    if sync["connected"] == json!(true) {
        format!(
            "{waiting}; connected, {:.1} KB sent",
            sync["bytes_sent"].as_u64().unwrap_or(0) as f64 / 1e3
        )
    } else {
        format!("{waiting}; not connected")
    }
}

fn main() {
    let modes = [
        CloudMode::None,
        CloudMode::Reachable,
        CloudMode::Unreachable,
    ];
    let edge = support::bin("vigil-edge");
    let runs: Vec<Run> = modes.iter().map(|m| run(&edge, *m)).collect();
    println!(
        "appliance memory: one {SESSION_MIN}-minute session with 250 Hz ECG, simulator at \
         {TIME_FACTOR}x real time, release build; three runs one after the other"
    );
    let names: Vec<&str> = modes.iter().map(|m| m.describe()).collect();
    println!("| measure (vigil-edge) | {} | target |", names.join(" | "));
    println!("|---|---|---|---|---|");
    let row = |name: &str, target: &str, cell: &dyn Fn(&Run) -> String| {
        let cells: Vec<String> = runs.iter().map(cell).collect();
        println!("| {name} | {} | {target} |", cells.join(" | "));
    };
    row("resident, started, no session", "-", &|r| {
        format!("{:.1} MB", r.idle_mb)
    });
    row(
        &format!(
            "resident during the session, highest sampled (every {} ms)",
            SAMPLE_EVERY.as_millis()
        ),
        &format!("<= {TARGET_MB} MB"),
        &|r| format!("{:.1} MB ({})", r.peak_mb, verdict(r.peak_mb)),
    );
    row(
        "high-water mark at the end (VmHWM)",
        &format!("<= {TARGET_MB} MB"),
        &|r| format!("{:.1} MB ({})", r.hwm_mb, verdict(r.hwm_mb)),
    );
    row("resident after the stop", "-", &|r| {
        format!("{:.1} MB", r.end_mb)
    });
    row("backlog at the end", "-", &|r| backlog(&r.sync));
    row("samples recorded in the session", "-", &|r| {
        r.samples.to_string()
    });
    for (mode, r) in modes.iter().zip(&runs) {
        if let Some(e) = r.sync["last_error"].as_str() {
            println!("{}: last sync error: {e}", mode.describe());
        }
    }
}
