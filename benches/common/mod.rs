//! The session both benches measure: 56 minutes of the hypertension scenario with 250 Hz ECG
//! from a fixed seed, and its document metadata. Not a bench of its own.

#![allow(dead_code)] // reason: each bench uses its own subset

use vigil_hardware::sim::{PatientParams, Scenario, VirtualPatient};
use vigil_shared::doc::{SessionMeta, SessionState};
use vigil_shared::fixtures;
use vigil_shared::vitals::{Channel, Sample};

/// Length of the session, seconds.
pub const SESSION_S: i64 = 56 * 60;
/// Its start, µs since the epoch.
pub const ORIGIN_US: i64 = 1_790_000_000_000_000;
/// Chunk period, µs (the appliance's default).
pub const CHUNK_US: i64 = 10_000_000;

/// The virtual patient of the session.
pub fn patient() -> VirtualPatient {
    VirtualPatient::new(PatientParams::new(7, Scenario::Hypertension, ORIGIN_US))
        .expect("valid params")
}

/// Every sample of the session, per channel (ECG left out unless `with_ecg`).
pub fn samples(with_ecg: bool) -> Vec<(Channel, Vec<Sample>)> {
    let mut p = patient();
    Channel::ALL
        .into_iter()
        .filter(|c| with_ecg || *c != Channel::Ecg)
        .map(|c| {
            (
                c,
                p.channel_between(c, ORIGIN_US, ORIGIN_US + SESSION_S * 1_000_000),
            )
        })
        .collect()
}

/// The session's metadata under `id`.
pub fn meta(id: &str) -> SessionMeta {
    SessionMeta {
        patient_id: "p".into(),
        state: SessionState::Completed,
        ended_us: Some(ORIGIN_US + SESSION_S * 1_000_000),
        ..fixtures::session_meta(id, "austin", "1", ORIGIN_US)
    }
}

/// Resident and high-water memory of process `pid`, MB, from /proc/PID/status.
pub fn memory_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
