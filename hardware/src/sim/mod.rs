//! The deterministic physiology simulator: virtual patients and the [`SimulatedSource`] that
//! serves them through [`crate::VitalsSource`].
//!
//! A [`VirtualPatient`] is a pure function of its [`PatientParams`] and time: every sample with
//! `from_us <= t_us < to_us` comes out of [`VirtualPatient::samples_between`], the union of calls
//! over any partition of a range equals one call over the whole range, and a fresh patient with
//! the same parameters gives the same samples. So a verifier can recompute exactly what an
//! appliance recorded, even across a kill and restart that resumed mid-session. Randomness comes
//! from hashes of (seed, stream, index), heartbeats from fixed one-minute blocks each seeded by
//! its own index, so any instant is reached in O(1) without replaying the session; the
//! arithmetic avoids libm (see `detmath`) so results are bit-identical across platforms.
//!
//! What this module is not: it has no clock, no time factor and no I/O. The appliance's clock
//! decides what `now_us` is (and applies a time factor, so a 55-minute session can run in a
//! minute); the simulator only answers "what did the monitors measure up to then". Acting as a
//! BLE peripheral on a BlueZ adapter lives elsewhere.
//!
//! Physiology, relative to the origin (the session start): heart rate 64–78 bpm at rest with
//! slow drifts, respiratory sinus arrhythmia and beat-to-beat jitter; ketamine, infused from
//! 5 to 45 minutes, raises heart rate by 4–8 bpm and blood pressure by 8–14/5–8 mmHg. Scenarios
//! script the events in [`Scenario`].

mod beats;
mod detmath;
mod patient;
mod physiology;
mod simulated;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use vigil_shared::vitals::Channel;

pub use patient::{SIM_HORIZON_US, VirtualPatient};
pub use simulated::{MAX_POLL_SPAN_US, SimulatedSource};

/// Microseconds in a second.
pub(crate) const US_PER_S: i64 = 1_000_000;

/// The chest strap: heart rate, RR intervals and ECG.
pub const HR_STRAP: &str = "hr-strap";
/// The pulse oximeter: SpO2 and pulse rate.
pub const OXIMETER: &str = "oximeter";
/// The blood-pressure cuff: NIBP.
pub const BP_CUFF: &str = "bp-cuff";
/// The thermometer: body temperature.
pub const THERMOMETER: &str = "thermometer";

/// Every simulated device, in the order their first-poll announcements come out.
pub const DEVICES: [&str; 4] = [HR_STRAP, OXIMETER, BP_CUFF, THERMOMETER];

/// The simulated device that delivers `channel`.
pub fn device_for(channel: Channel) -> &'static str {
    match channel {
        Channel::Hr | Channel::Rr | Channel::Ecg => HR_STRAP,
        Channel::Spo2 | Channel::Pulse => OXIMETER,
        Channel::Nibp => BP_CUFF,
        Channel::Temp => THERMOMETER,
    }
}

/// Cuff cycles shorter than this are not physiological (the arm needs time to refill) and no
/// monitor offers them.
pub const MIN_NIBP_INTERVAL_S: u32 = 30;
/// Cuff cycles longer than an hour would leave a session with one reading or none.
pub const MAX_NIBP_INTERVAL_S: u32 = 3_600;
/// The clinic's routine: a reading every three minutes during an infusion.
pub const DEFAULT_NIBP_INTERVAL_S: u32 = 180;

/// Problems with the simulator's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// A scenario name that is not one of [`Scenario::ALL`].
    #[error(
        "unknown scenario `{0}` (expected one of baseline, hypertension, desaturation, sensor_off, disconnect)"
    )]
    UnknownScenario(String),
    /// An ECG sample rate other than 130 or 250 Hz.
    #[error("unsupported ecg rate `{0}` hz (expected 130 or 250)")]
    UnsupportedEcgRate(String),
    /// A blood-pressure interval outside [`MIN_NIBP_INTERVAL_S`]..=[`MAX_NIBP_INTERVAL_S`].
    #[error("nibp interval {0} s is out of range (expected 30 to 3600 s)")]
    NibpIntervalOutOfRange(u32),
}

/// A scripted course of events for a virtual patient. Times are relative to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// An uneventful infusion: the modest ketamine rise in heart rate and blood pressure only.
    Baseline,
    /// A transient hypertensive episode: blood pressure climbs from 24 minutes, plateaus at about
    /// 188–193/106–110 mmHg from 31 to 39 minutes and is back to baseline by 49 minutes.
    Hypertension,
    /// SpO2 falls from about 19 minutes to a nadir of 85–87 %, stays below 90 % for 60–90 s, and
    /// recovers by about 22 minutes; heart rate rises a little meanwhile.
    Desaturation,
    /// The oximeter's sensor comes off from 15:00 to 16:30: no SpO2 or pulse samples in between.
    SensorOff,
    /// The chest strap disconnects from 25:00 to 26:00: no HR, RR or ECG samples in between.
    Disconnect,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 5] = [
        Scenario::Baseline,
        Scenario::Hypertension,
        Scenario::Desaturation,
        Scenario::SensorOff,
        Scenario::Disconnect,
    ];

    /// The stable name, as in configuration and `describe()`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::Hypertension => "hypertension",
            Scenario::Desaturation => "desaturation",
            Scenario::SensorOff => "sensor_off",
            Scenario::Disconnect => "disconnect",
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Scenario {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Scenario, SimError> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.name() == s)
            .ok_or_else(|| SimError::UnknownScenario(s.to_owned()))
    }
}

/// The ECG sample rate of the simulated chest strap. Serialized as the number of hertz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub enum EcgRate {
    /// 130 Hz, as Polar's PMD service streams it.
    Hz130,
    /// 250 Hz, as clinical monitors commonly sample a lead.
    Hz250,
}

impl EcgRate {
    /// Samples per second.
    pub fn hz(self) -> u32 {
        match self {
            EcgRate::Hz130 => 130,
            EcgRate::Hz250 => 250,
        }
    }
}

impl From<EcgRate> for u32 {
    fn from(rate: EcgRate) -> u32 {
        rate.hz()
    }
}

impl TryFrom<u32> for EcgRate {
    type Error = SimError;

    fn try_from(hz: u32) -> Result<EcgRate, SimError> {
        match hz {
            130 => Ok(EcgRate::Hz130),
            250 => Ok(EcgRate::Hz250),
            other => Err(SimError::UnsupportedEcgRate(other.to_string())),
        }
    }
}

impl std::str::FromStr for EcgRate {
    type Err = SimError;

    /// Accepts `130`, `250`, and the same with an `hz`/`Hz` suffix.
    fn from_str(s: &str) -> Result<EcgRate, SimError> {
        let digits = s
            .trim()
            .trim_end_matches("Hz")
            .trim_end_matches("hz")
            .trim();
        digits
            .parse::<u32>()
            .ok()
            .and_then(|hz| EcgRate::try_from(hz).ok())
            .ok_or_else(|| SimError::UnsupportedEcgRate(s.to_owned()))
    }
}

impl std::fmt::Display for EcgRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}Hz", self.hz())
    }
}

/// Everything that determines a virtual patient's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PatientParams {
    /// The patient's seed (see [`session_seed`]); different seeds give different physiology.
    pub seed: u64,
    /// The scripted events.
    pub scenario: Scenario,
    /// The session's start, microseconds since the Unix epoch; scenario times count from here and
    /// no sample comes before it.
    pub origin_us: i64,
    /// The chest strap's ECG sample rate (250 Hz when absent from a configuration).
    #[serde(default = "default_ecg_hz")]
    pub ecg_hz: EcgRate,
    /// Seconds between blood-pressure readings; the first comes 30 s after the origin
    /// ([`DEFAULT_NIBP_INTERVAL_S`] when absent from a configuration).
    #[serde(default = "default_nibp_interval_s")]
    pub nibp_interval_s: u32,
}

fn default_ecg_hz() -> EcgRate {
    EcgRate::Hz250
}

fn default_nibp_interval_s() -> u32 {
    DEFAULT_NIBP_INTERVAL_S
}

impl PatientParams {
    /// Parameters with the defaults: 250 Hz ECG and a reading every [`DEFAULT_NIBP_INTERVAL_S`].
    pub fn new(seed: u64, scenario: Scenario, origin_us: i64) -> PatientParams {
        PatientParams {
            seed,
            scenario,
            origin_us,
            ecg_hz: default_ecg_hz(),
            nibp_interval_s: default_nibp_interval_s(),
        }
    }

    /// Checks the parameters a virtual patient cannot work with.
    pub fn validate(&self) -> Result<(), SimError> {
        if !(MIN_NIBP_INTERVAL_S..=MAX_NIBP_INTERVAL_S).contains(&self.nibp_interval_s) {
            return Err(SimError::NibpIntervalOutOfRange(self.nibp_interval_s));
        }
        Ok(())
    }
}

/// FNV-1a's 64-bit offset basis.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a's 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The patient seed for a session: a stable hash of the room's seed and the session's id, so the
/// appliance and a test derive the same virtual patient without talking to each other.
///
/// Stable across versions and platforms: FNV-1a over the id's UTF-8 bytes, then splitmix64's
/// finaliser mixed with the room seed. Changing it changes every recorded simulated session.
pub fn session_seed(room_seed: u64, session_id: &str) -> u64 {
    let fnv = session_id.bytes().fold(FNV_OFFSET_BASIS, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    });
    detmath::mix64(detmath::mix64(room_seed) ^ detmath::mix64(fnv))
}
