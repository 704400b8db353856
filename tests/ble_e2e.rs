//! End to end over Bluetooth: a real `vigil-edge` with its btleplug collector records a
//! session from simulated monitors (real BLE peripherals registered with a simulated BlueZ on
//! a private D-Bus). Mid-session the oximeter's process is SIGKILLed, as a monitor switched off
//! or out of range would be, and later restarted. The session must hold samples from before
//! and after, a disconnect advisory with its start and end, readings from the cuff's
//! indications, and the appliance must still be running.
//!
//! Needs `dbus-daemon` and `pip install bluezoo==1.0.2` (CI installs both); without them this
//! test fails, saying which is missing.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Http, Proc, bin, eventually, patient_body, session_body, write_edge_config};
use vigil::ble_rig::{BleRig, SYSTEM_BUS_ENV, adapter_address};

/// The monitors, each on its own adapter (hci1…), as in a room: (device, adapter index).
const MONITORS: [(&str, usize); 4] = [
    ("hr-strap", 1),
    ("oximeter", 2),
    ("bp-cuff", 3),
    ("thermometer", 4),
];

fn monitor(rig: &BleRig, device: &str, hci: usize) -> Proc {
    let mut p = Proc::spawn_env(
        &bin("vigil-edge"),
        &[
            "devices",
            "simulate",
            device,
            "--adapter",
            &format!("hci{hci}"),
            "--seed",
            "7",
            "--nibp-interval-s",
            "30",
        ],
        &[(SYSTEM_BUS_ENV, rig.bus_address())],
    );
    let address = p.wait_for("address", Duration::from_secs(30));
    assert_eq!(address, adapter_address(hci), "{device} on hci{hci}");
    p
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let mut source = String::from("[source]\nkind = \"ble\"\nadapter = \"hci0\"\n");
    for (device, hci) in MONITORS {
        let measures = match device {
            "hr-strap" => r#"["heart_rate", "ecg"]"#,
            "oximeter" => r#"["pulse_oximetry"]"#,
            "bp-cuff" => r#"["blood_pressure"]"#,
            _ => r#"["temperature"]"#,
        };
        source.push_str(&format!(
            "[[source.monitor]]\ndevice = \"{device}\"\naddress = \"{}\"\nmeasures = {measures}\n",
            adapter_address(hci)
        ));
    }
    write_edge_config(
        dir,
        "austin",
        "1",
        &format!("chunk_period_s = 5\ngroup_commit_ms = 200\n{source}"),
    )
}

/// Samples per channel in the session summary.
fn count(summary: &Value, channel: &str) -> u64 {
    summary["channels"][channel]["samples"]
        .as_u64()
        .unwrap_or(0)
}

/// The session's summary; on the way, checks that every commit so far went to disk.
async fn summary(http: &Http, id: &str) -> Value {
    let (_, status) = http.get("/api/v1/status").await;
    assert!(
        status["recorder"]["last_error"].is_null(),
        "the recorder failed to write: {}",
        status["recorder"]["last_error"]
    );
    let (st, s) = http.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(st, 200, "{s}");
    s
}

fn advisories<'a>(summary: &'a Value, kind: &str, subject: &str) -> Vec<&'a Value> {
    summary["advisories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["kind"] == kind && x["subject"] == subject)
                .collect()
        })
        .unwrap_or_default()
}

async fn status_source(http: &Http) -> String {
    let (_, st) = http.get("/api/v1/status").await;
    st["source"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_simulated_monitors_through_a_monitor_drop() {
    let rig = BleRig::start(1 + MONITORS.len()).expect("the simulated BlueZ");
    let edge_bin = bin("vigil-edge");
    let mut monitors: Vec<(&str, usize, Proc)> = MONITORS
        .iter()
        .map(|&(device, hci)| (device, hci, monitor(&rig, device, hci)))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut edge = Proc::spawn_env(
        &edge_bin,
        &["run", "--config", cfg.to_str().unwrap()],
        &[(SYSTEM_BUS_ENV, rig.bus_address())],
    );
    let http = support::edge_client(&mut edge);

    // Every monitor connects.
    eventually(
        Duration::from_secs(60),
        "all four monitors connected",
        || async {
            let s = status_source(&http).await;
            (MONITORS
                .iter()
                .all(|(d, _)| s.contains(&format!("{d} connected"))))
            .then_some(())
        },
    )
    .await;

    let (st, patient) = http.post("/api/v1/patients", &patient_body("Ble")).await;
    assert_eq!(st, 201, "{patient}");
    let (st, session) = http
        .post(
            "/api/v1/sessions",
            &session_body(patient["id"].as_str().unwrap(), "baseline"),
        )
        .await;
    assert_eq!(st, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();

    // Before the drop: every channel of the strap and the oximeter flows.
    let before = eventually(
        Duration::from_secs(60),
        "samples before the drop",
        || async {
            let s = summary(&http, &id).await;
            (["hr", "rr", "ecg", "spo2", "pulse"]
                .iter()
                .all(|c| count(&s, c) > 0))
            .then_some(s)
        },
    )
    .await;
    let spo2_before = count(&before, "spo2");

    // The oximeter dies.
    let (_, hci, oximeter) = monitors
        .iter_mut()
        .find(|(d, _, _)| *d == "oximeter")
        .unwrap();
    let oximeter_hci = *hci;
    oximeter.kill();
    let raised = eventually(
        Duration::from_secs(30),
        "a disconnect advisory for the oximeter",
        || async {
            let s = summary(&http, &id).await;
            advisories(&s, "disconnected", "oximeter")
                .first()
                .and_then(|a| a["raised_us"].as_i64())
        },
    )
    .await;
    // While it is gone, the strap keeps recording and the oximeter's channels stay still.
    let hr_during = count(&summary(&http, &id).await, "hr");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = summary(&http, &id).await;
    assert!(count(&during, "hr") > hr_during, "the strap kept recording");
    let spo2_during = count(&during, "spo2");

    // It comes back, and the collector reconnects on its own.
    let restarted = monitor(&rig, "oximeter", oximeter_hci);
    if let Some(slot) = monitors.iter_mut().find(|(d, _, _)| *d == "oximeter") {
        slot.2 = restarted;
    }
    let cleared = eventually(
        Duration::from_secs(60),
        "the oximeter's advisory cleared",
        || async {
            let s = summary(&http, &id).await;
            advisories(&s, "disconnected", "oximeter")
                .first()
                .and_then(|a| a["cleared_us"].as_i64())
        },
    )
    .await;
    assert!(cleared > raised, "the advisory ends after it starts");
    eventually(
        Duration::from_secs(30),
        "SpO2 after the reconnect",
        || async {
            let s = summary(&http, &id).await;
            (count(&s, "spo2") > spo2_during).then_some(())
        },
    )
    .await;
    assert!(spo2_during >= spo2_before);

    // The cuff's indications arrive as readings (one every 30 s).
    eventually(
        Duration::from_secs(75),
        "a blood-pressure reading",
        || async {
            let s = summary(&http, &id).await;
            (count(&s, "nibp") > 0).then_some(())
        },
    )
    .await;

    let (st, stopped) = http
        .post(
            &format!("/api/v1/sessions/{id}/stop"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(st, 200, "{stopped}");
    let fin = summary(&http, &id).await;

    // SpO2 samples from before the drop and after it: none while it was gone.
    let spo2 = http.all_vitals(&id, "spo2").await;
    assert!(spo2.iter().any(|s| s[0] < raised), "SpO2 before the drop");
    assert!(
        spo2.iter().any(|s| s[0] > cleared),
        "SpO2 after the reconnect"
    );
    assert!(
        !spo2
            .iter()
            .any(|s| s[0] > raised + 1_000_000 && s[0] < cleared - 1_000_000),
        "no SpO2 while the oximeter was off"
    );
    for s in &spo2 {
        assert!((70..=100).contains(&s[1]), "plausible SpO2 {s:?}");
    }
    let nibp = http.all_vitals(&id, "nibp").await;
    assert!(!nibp.is_empty());
    for r in &nibp {
        // [t, systolic, diastolic, mean]
        assert!(r[1] > r[2] && r[2] > 0, "a cuff reading {r:?}");
    }
    // Exactly one disconnect advisory for the oximeter; none for the monitors that stayed.
    assert_eq!(
        advisories(&fin, "disconnected", "oximeter").len(),
        1,
        "{fin}"
    );
    for d in ["hr-strap", "bp-cuff", "thermometer"] {
        assert!(
            advisories(&fin, "disconnected", d).is_empty(),
            "{d} stayed connected: {fin}"
        );
    }
    // Nothing crashed.
    assert!(
        edge.child.try_wait().unwrap().is_none(),
        "vigil-edge still runs"
    );
    for (d, _, p) in &mut monitors {
        assert!(p.child.try_wait().unwrap().is_none(), "{d} still runs");
    }
    assert_eq!(edge.terminate().code(), Some(0));
}

/// A monitor's state and counters from the status API's source line, e.g.
/// `ble hci0: oximeter disconnected (connections 0, failed 3, watchdog 0); thermometer …`.
fn link(source: &str, device: &str) -> Option<(String, [u64; 3])> {
    let part = source
        .split_once(": ")?
        .1
        .split("; ")
        .find(|p| p.starts_with(&format!("{device} ")))?;
    let rest = &part[device.len() + 1..];
    let (state, counters) = rest.split_once(" (").unwrap_or((rest, "0, 0, 0)"));
    let mut n = [0u64; 3];
    for (i, c) in counters
        .trim_end_matches(')')
        .split(", ")
        .enumerate()
        .take(3)
    {
        n[i] = c.rsplit(' ').next()?.parse().ok()?;
    }
    Some((state.to_owned(), n))
}

/// A device at an assigned address that lacks what the room expects never counts as
/// connected; a monitor silent past its allowance is dropped by the watchdog and reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_device_is_refused_and_silent_monitor_is_restarted() {
    let rig = BleRig::start(3).expect("the simulated BlueZ");
    // Both are thermometers, which speak once a minute.
    let _wrong = monitor(&rig, "thermometer", 1);
    let _quiet = monitor(&rig, "thermometer", 2);
    // The IT person's view first: both show up in a scan, with what they advertise.
    let scan = std::process::Command::new(bin("vigil-edge"))
        .args(["devices", "scan", "--adapter", "hci0", "--seconds", "3"])
        .env(SYSTEM_BUS_ENV, rig.bus_address())
        .output()
        .expect("run vigil-edge devices scan");
    let listing = String::from_utf8_lossy(&scan.stdout);
    assert!(scan.status.success(), "{listing}");
    for hci in [1, 2] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(&adapter_address(hci)) && l.ends_with("temperature")),
            "hci{hci} listed as a thermometer: {listing}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_edge_config(
        dir.path(),
        "austin",
        "2",
        &format!(
            "[source]\nkind = \"ble\"\nadapter = \"hci0\"\n\
             [[source.monitor]]\ndevice = \"oximeter\"\naddress = \"{}\"\nmeasures = [\"pulse_oximetry\"]\n\
             [[source.monitor]]\ndevice = \"thermometer\"\naddress = \"{}\"\nmeasures = [\"temperature\"]\nsilence_s = 2\n",
            adapter_address(1),
            adapter_address(2)
        ),
    );
    let mut edge = Proc::spawn_env(
        &bin("vigil-edge"),
        &["run", "--config", cfg.to_str().unwrap()],
        &[(SYSTEM_BUS_ENV, rig.bus_address())],
    );
    let http = support::edge_client(&mut edge);
    let mut seen_states = std::collections::BTreeSet::new();
    let (wrong, quiet) = eventually(
        Duration::from_secs(60),
        "failed attempts at the wrong device and watchdog restarts of the silent one",
        || async {
            let s = status_source(&http).await;
            let wrong = link(&s, "oximeter")?;
            let quiet = link(&s, "thermometer")?;
            (wrong.1[1] >= 2 && quiet.1[2] >= 2).then_some((wrong, quiet))
        },
    )
    .await;
    seen_states.insert(wrong.0.clone());
    // The wrong device was found and connected to each time, and refused each time.
    assert_eq!(wrong.1[0], 0, "never counted as connected: {wrong:?}");
    assert_ne!(wrong.0, "connected");
    // The silent one was connected, dropped by the watchdog, and connected again.
    assert!(quiet.1[0] >= 2, "reconnected after the watchdog: {quiet:?}");
    let (_, devices) = http.get("/api/v1/status").await;
    assert_ne!(
        devices["recorder"]["devices"]["oximeter"], "connected",
        "{devices}"
    );
    assert!(
        edge.child.try_wait().unwrap().is_none(),
        "vigil-edge still runs"
    );
    assert_eq!(edge.terminate().code(), Some(0));
}
