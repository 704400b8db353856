//! The advisory rule engine: a pure state machine that turns vital-sign samples, device status
//! changes and the passing of time into advisories raised and cleared.
//!
//! It implements the clinical rules of DESIGN.md ("Clinical rules") with per-site
//! [`Thresholds`]: high blood pressure, a rise from the session's baseline, low blood pressure,
//! sustained tachycardia and bradycardia, sustained desaturation, and the technical advisories
//! sensor off, device disconnected and no data.
//!
//! The defaults follow the figures the consensus statement on ketamine for mood disorders
//! (Sanacora et al., JAMA Psychiatry 2017) is usually cited for during an infusion: blood
//! pressure about 180/100 mmHg, heart rate about 110/min. Hypotension (systolic under
//! 90 mmHg), bradycardia (under 50/min for a minute) and a systolic rise of more than 30 % over
//! the pre-infusion baseline are the usual procedural-sedation triggers. A site's medical
//! director may tighten or loosen any of them in the site configuration. Priorities follow
//! IEC 60601-1-8. The bedside monitor stays the primary alarm; these advisories are a secondary
//! record and display.
//!
//! The engine does no I/O and reads no clock: sample rules run on sample times (`t_us`), and
//! silence is measured against the `now_us` passed to [`AdvisoryEngine::tick`]. It does not
//! record, acknowledge or display anything; the recorder in `vigil-edge` writes each
//! [`Transition`] into the session document.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

pub use crate::vitals::DeviceStatus;
use crate::vitals::{Channel, Sample};

/// Plausible blood-pressure thresholds, mmHg: below 40 every reading would raise, and cuffs
/// measure up to about 300, so a higher threshold could never be reached.
pub const BP_THRESHOLD_RANGE_MMHG: RangeInclusive<i32> = 40..=300;

/// Plausible counts of consecutive high readings: 1 raises on any high reading; with a cuff
/// cycle of 3 to 5 minutes, more than 10 would wait most of a session.
pub const BP_CONSECUTIVE_READINGS_RANGE: RangeInclusive<u32> = 1..=10;

/// Plausible heart-rate thresholds, beats per minute.
pub const HR_THRESHOLD_RANGE_BPM: RangeInclusive<i32> = 30..=250;

/// Plausible SpO2 thresholds, percent: saturation cannot exceed 100, and below 50 the
/// advisory would come far too late to matter.
pub const SPO2_THRESHOLD_RANGE_PCT: RangeInclusive<i32> = 50..=100;

/// How long a vital sign may have to stay abnormal before it raises, seconds: 0 raises on the
/// first abnormal sample; a session lasts about an hour, so a longer wait could never end.
pub const SUSTAIN_RANGE_S: RangeInclusive<u32> = 0..=3_600;

/// How long a channel may stay silent before "no data", seconds: 1 Hz sources jitter by up to
/// a second or two over BLE, so a shorter window would flap; beyond an hour it means nothing.
pub const NO_DATA_RANGE_S: RangeInclusive<u32> = 5..=3_600;

/// Most devices with technical advisories tracked at once. A room has a handful of monitors;
/// the cap keeps a misbehaving source from growing the engine without bound. Status reports
/// about further devices raise nothing until one of the tracked advisories clears.
pub const MAX_TRACKED_DEVICES: usize = 64;

/// Longest device name kept as an advisory subject, in bytes; longer names are cut at a
/// character boundary. Names come from the room's configuration and are short.
pub const MAX_DEVICE_NAME_BYTES: usize = 128;

/// Plausible rises over the baseline systolic pressure, percent.
pub const BP_RISE_RANGE_PCT: RangeInclusive<u32> = 5..=200;

/// Microseconds per second.
const US_PER_S: i64 = 1_000_000;

/// Why a set of thresholds makes no sense.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AdvisoryError {
    /// A threshold lies outside the range where it could work as a clinical rule.
    #[error(
        "advisory threshold {field} = {value} is outside {min}..={max}; correct the site config"
    )]
    OutOfRange {
        /// The field's name in [`Thresholds`].
        field: &'static str,
        /// The value found.
        value: i64,
        /// Smallest sensible value.
        min: i64,
        /// Largest sensible value.
        max: i64,
    },
    /// A threshold is below the one it must not be under: an "immediate" threshold below the
    /// one it escalates, or a high threshold below the matching low one.
    #[error(
        "advisory threshold {field} = {value} is below {other_field} = {other_value}; it must be at least {other_field}"
    )]
    BelowOther {
        /// The field's name in [`Thresholds`].
        field: &'static str,
        /// Its value.
        value: i64,
        /// The field it must not be below.
        other_field: &'static str,
        /// That field's value.
        other_value: i64,
    },
}

/// A site's advisory thresholds. Every field has a default (DESIGN.md's rules), so a site
/// config overrides any subset. Sample rules work for any values; [`Thresholds::validate`]
/// says which values make no clinical sense, for whoever loads or edits a site config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// Systolic pressure at or above which a reading is high, mmHg.
    pub bp_systolic_high: i32,
    /// Diastolic pressure at or above which a reading is high, mmHg.
    pub bp_diastolic_high: i32,
    /// Systolic pressure at or above which one reading raises at once, mmHg.
    pub bp_systolic_immediate: i32,
    /// Diastolic pressure at or above which one reading raises at once, mmHg.
    pub bp_diastolic_immediate: i32,
    /// How many consecutive high readings raise.
    pub bp_consecutive_readings: u32,
    /// Heart rate above which the heart-rate rule counts, beats per minute.
    pub hr_high_bpm: i32,
    /// How long the heart rate must stay above `hr_high_bpm`, seconds.
    pub hr_high_duration_s: u32,
    /// Systolic pressure below which one reading is low, mmHg.
    pub bp_systolic_low: i32,
    /// Rise of the systolic pressure over the session's baseline that counts, percent.
    pub bp_rise_pct: u32,
    /// Heart rate below which the bradycardia rule counts, beats per minute.
    pub hr_low_bpm: i32,
    /// How long the heart rate must stay below `hr_low_bpm`, seconds.
    pub hr_low_duration_s: u32,
    /// Saturation below which the SpO2 rule counts, percent.
    pub spo2_low_pct: i32,
    /// How long the saturation must stay below `spo2_low_pct`, seconds.
    pub spo2_low_duration_s: u32,
    /// How long an expected channel may stay silent, seconds.
    pub no_data_s: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            bp_systolic_high: 180,
            bp_diastolic_high: 100,
            bp_systolic_immediate: 200,
            bp_diastolic_immediate: 120,
            bp_consecutive_readings: 2,
            hr_high_bpm: 110,
            hr_high_duration_s: 300,
            bp_systolic_low: 90,
            bp_rise_pct: 30,
            hr_low_bpm: 50,
            hr_low_duration_s: 60,
            spo2_low_pct: 92,
            spo2_low_duration_s: 30,
            no_data_s: 30,
        }
    }
}

impl Thresholds {
    /// Checks every field against its plausible range and the immediate blood-pressure
    /// thresholds against the ordinary ones; the error names the first offending field.
    pub fn validate(&self) -> Result<(), AdvisoryError> {
        fn in_range<T: Copy + PartialOrd + Into<i64>>(
            field: &'static str,
            value: T,
            range: &RangeInclusive<T>,
        ) -> Result<(), AdvisoryError> {
            if range.contains(&value) {
                Ok(())
            } else {
                Err(AdvisoryError::OutOfRange {
                    field,
                    value: value.into(),
                    min: (*range.start()).into(),
                    max: (*range.end()).into(),
                })
            }
        }
        fn at_least(
            field: &'static str,
            value: i32,
            other_field: &'static str,
            other_value: i32,
        ) -> Result<(), AdvisoryError> {
            if value >= other_value {
                Ok(())
            } else {
                Err(AdvisoryError::BelowOther {
                    field,
                    value: value.into(),
                    other_field,
                    other_value: other_value.into(),
                })
            }
        }
        let bp = &BP_THRESHOLD_RANGE_MMHG;
        in_range("bp_systolic_high", self.bp_systolic_high, bp)?;
        in_range("bp_diastolic_high", self.bp_diastolic_high, bp)?;
        in_range("bp_systolic_immediate", self.bp_systolic_immediate, bp)?;
        in_range("bp_diastolic_immediate", self.bp_diastolic_immediate, bp)?;
        in_range(
            "bp_consecutive_readings",
            self.bp_consecutive_readings,
            &BP_CONSECUTIVE_READINGS_RANGE,
        )?;
        in_range("hr_high_bpm", self.hr_high_bpm, &HR_THRESHOLD_RANGE_BPM)?;
        in_range(
            "hr_high_duration_s",
            self.hr_high_duration_s,
            &SUSTAIN_RANGE_S,
        )?;
        in_range("bp_systolic_low", self.bp_systolic_low, bp)?;
        in_range("bp_rise_pct", self.bp_rise_pct, &BP_RISE_RANGE_PCT)?;
        in_range("hr_low_bpm", self.hr_low_bpm, &HR_THRESHOLD_RANGE_BPM)?;
        in_range(
            "hr_low_duration_s",
            self.hr_low_duration_s,
            &SUSTAIN_RANGE_S,
        )?;
        in_range("spo2_low_pct", self.spo2_low_pct, &SPO2_THRESHOLD_RANGE_PCT)?;
        in_range(
            "spo2_low_duration_s",
            self.spo2_low_duration_s,
            &SUSTAIN_RANGE_S,
        )?;
        in_range("no_data_s", self.no_data_s, &NO_DATA_RANGE_S)?;
        at_least(
            "bp_systolic_immediate",
            self.bp_systolic_immediate,
            "bp_systolic_high",
            self.bp_systolic_high,
        )?;
        at_least(
            "bp_diastolic_immediate",
            self.bp_diastolic_immediate,
            "bp_diastolic_high",
            self.bp_diastolic_high,
        )?;
        at_least(
            "bp_systolic_high",
            self.bp_systolic_high,
            "bp_systolic_low",
            self.bp_systolic_low,
        )?;
        at_least(
            "hr_high_bpm",
            self.hr_high_bpm,
            "hr_low_bpm",
            self.hr_low_bpm,
        )
    }
}

/// Advisory priority per IEC 60601-1-8. Ordered from most to least urgent, so sorting puts
/// high first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Immediate response required.
    High,
    /// Prompt response required.
    Medium,
    /// Awareness required.
    Low,
}

impl Priority {
    /// The stable name used in documents and APIs.
    pub fn name(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }

    /// Parses a stable name back into a priority.
    pub fn from_name(name: &str) -> Option<Priority> {
        [Priority::High, Priority::Medium, Priority::Low]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which rule an advisory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvisoryKind {
    /// Blood pressure high on consecutive readings, or very high on one. Subject: `nibp`.
    BpHigh,
    /// Heart rate high for the configured time. Subject: the heart-rate source (`hr`, or
    /// `pulse` in a room whose only rate is the oximeter's).
    HrHigh,
    /// Systolic pressure low on one reading. Subject: `nibp`.
    BpLow,
    /// Systolic pressure risen over the session's baseline on consecutive readings. Subject:
    /// `nibp`.
    BpRise,
    /// Heart rate low for the configured time. Subject: the heart-rate source.
    HrLow,
    /// Saturation low for the configured time. Subject: `spo2`.
    Spo2Low,
    /// A device reports its sensor off the patient. Subject: the device.
    SensorOff,
    /// A device's link is down. Subject: the device.
    Disconnected,
    /// An expected channel delivered nothing for the configured time. Subject: the channel.
    NoData,
}

impl AdvisoryKind {
    /// Every kind.
    pub const ALL: [AdvisoryKind; 9] = [
        AdvisoryKind::BpHigh,
        AdvisoryKind::HrHigh,
        AdvisoryKind::BpLow,
        AdvisoryKind::BpRise,
        AdvisoryKind::HrLow,
        AdvisoryKind::Spo2Low,
        AdvisoryKind::SensorOff,
        AdvisoryKind::Disconnected,
        AdvisoryKind::NoData,
    ];

    /// The stable name used in documents and APIs.
    pub fn name(self) -> &'static str {
        match self {
            AdvisoryKind::BpHigh => "bp_high",
            AdvisoryKind::HrHigh => "hr_high",
            AdvisoryKind::BpLow => "bp_low",
            AdvisoryKind::BpRise => "bp_rise",
            AdvisoryKind::HrLow => "hr_low",
            AdvisoryKind::Spo2Low => "spo2_low",
            AdvisoryKind::SensorOff => "sensor_off",
            AdvisoryKind::Disconnected => "disconnected",
            AdvisoryKind::NoData => "no_data",
        }
    }

    /// Parses a stable name back into a kind.
    pub fn from_name(name: &str) -> Option<AdvisoryKind> {
        AdvisoryKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The priority advisories of this kind carry.
    pub fn priority(self) -> Priority {
        match self {
            AdvisoryKind::BpHigh | AdvisoryKind::Spo2Low => Priority::High,
            AdvisoryKind::HrHigh
            | AdvisoryKind::BpLow
            | AdvisoryKind::BpRise
            | AdvisoryKind::HrLow => Priority::Medium,
            AdvisoryKind::SensorOff | AdvisoryKind::Disconnected | AdvisoryKind::NoData => {
                Priority::Low
            }
        }
    }
}

impl fmt::Display for AdvisoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies one advisory: at most one per key is raised at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdvisoryKey {
    /// The rule.
    pub kind: AdvisoryKind,
    /// The channel name (`nibp`, `hr`, …) or the device name it concerns.
    pub subject: String,
}

impl AdvisoryKey {
    fn channel(kind: AdvisoryKind, channel: Channel) -> AdvisoryKey {
        AdvisoryKey {
            kind,
            subject: channel.name().to_owned(),
        }
    }
}

impl fmt::Display for AdvisoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.kind, self.subject)
    }
}

/// A change in what is raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// An advisory starts.
    Raised {
        /// Which advisory.
        key: AdvisoryKey,
        /// Its priority (the kind's).
        priority: Priority,
        /// When the condition was met, µs since the Unix epoch.
        at_us: i64,
        /// What was seen, for people: "systolic 186 / diastolic 104 mmHg on 2 consecutive
        /// readings (threshold 180/100)".
        detail: String,
    },
    /// An advisory ends.
    Cleared {
        /// Which advisory.
        key: AdvisoryKey,
        /// When the condition ended, µs since the Unix epoch.
        at_us: i64,
    },
}

impl Transition {
    /// The advisory concerned.
    pub fn key(&self) -> &AdvisoryKey {
        match self {
            Transition::Raised { key, .. } | Transition::Cleared { key, .. } => key,
        }
    }

    /// When it happened.
    pub fn at_us(&self) -> i64 {
        match self {
            Transition::Raised { at_us, .. } | Transition::Cleared { at_us, .. } => *at_us,
        }
    }
}

/// A raised advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raised {
    priority: Priority,
    at_us: i64,
}

/// The rule engine for one session. Feed it every sample ([`AdvisoryEngine::observe`]), every
/// device status change ([`AdvisoryEngine::device_status`]) and regular ticks
/// ([`AdvisoryEngine::tick`], e.g. once a second); apply the returned transitions in order.
///
/// Rules:
/// - **bp_high** (high, `nibp`): `bp_consecutive_readings` consecutive readings each with
///   systolic ≥ `bp_systolic_high` or diastolic ≥ `bp_diastolic_high`, or one reading at or above
///   the immediate thresholds. Cleared by a reading below both ordinary thresholds.
/// - **bp_rise** (medium, `nibp`): `bp_consecutive_readings` consecutive readings with systolic
///   more than `bp_rise_pct` % above the session's baseline ([`AdvisoryEngine::set_baseline`]);
///   nothing without a baseline. Cleared by a reading at or under it.
/// - **bp_low** (medium, `nibp`): one reading with systolic under `bp_systolic_low`. Cleared
///   by a reading at or above it.
/// - **hr_high** (medium, the heart-rate source): every sample above `hr_high_bpm` from a first
///   one at `t` to one at `t + hr_high_duration_s` or later. Cleared by a sample at or below.
/// - **hr_low** (medium, the heart-rate source): the same under `hr_low_bpm` for
///   `hr_low_duration_s`; cleared by a sample at or above it.
/// - **spo2_low** (high, `spo2`): the same with `spo2` below `spo2_low_pct` for
///   `spo2_low_duration_s`; cleared by a sample at or above it.
/// - **sensor_off**, **disconnected** (low, the device): raised and cleared by device status.
/// - **no_data** (low, the channel): an expected channel with no sample for `no_data_s`, seen
///   by `tick`; cleared by the channel's next sample.
///
/// Durations are measured on sample times, so a gap in the data neither completes nor breaks
/// a run: only samples decide. A raised advisory is not raised again until it has cleared.
/// The heart-rate source is `hr` when the room expects one; in a room whose only rate is the
/// oximeter's `pulse`, `pulse` feeds hr_high and hr_low instead. Never both, so one tachycardia
/// raises one advisory.
#[derive(Debug, Clone)]
pub struct AdvisoryEngine {
    thresholds: Thresholds,
    /// High readings in a row so far.
    bp_high_run: u32,
    /// Readings risen over the baseline in a row so far.
    bp_rise_run: u32,
    /// The session's baseline systolic pressure, mmHg.
    baseline_systolic: Option<i32>,
    /// Which channel the heart-rate rules read.
    hr_source: Channel,
    /// Time of the first sample of the current run above the heart-rate threshold.
    hr_high_since_us: Option<i64>,
    /// Time of the first sample of the current run below the bradycardia threshold.
    hr_low_since_us: Option<i64>,
    /// Time of the first sample of the current run below the SpO2 threshold.
    spo2_low_since_us: Option<i64>,
    /// For each channel watched for silence: its last sample time, or when the watch began.
    /// `None` until the first sample or tick gives the watch a start.
    watched: BTreeMap<Channel, Option<i64>>,
    raised: BTreeMap<AdvisoryKey, Raised>,
}

impl AdvisoryEngine {
    /// An engine with nothing raised, watching `expected` channels for silence. Each channel's
    /// silence counts from its latest sample, or from the first tick if it has none yet.
    ///
    /// NIBP is never watched: a cuff cycles every few minutes, so silence is its normal state;
    /// a cuff that stops working shows through its device status instead.
    pub fn new(thresholds: Thresholds, expected: &[Channel]) -> AdvisoryEngine {
        let mut engine = AdvisoryEngine {
            thresholds,
            bp_high_run: 0,
            bp_rise_run: 0,
            baseline_systolic: None,
            hr_source: Channel::Hr,
            hr_high_since_us: None,
            hr_low_since_us: None,
            spo2_low_since_us: None,
            watched: BTreeMap::new(),
            raised: BTreeMap::new(),
        };
        engine.watch(expected);
        engine
    }

    /// Sets the session's baseline systolic pressure (the pre-infusion reading), which the
    /// rise rule compares with; `None` turns the rule off.
    pub fn set_baseline(&mut self, systolic: Option<i32>) {
        self.baseline_systolic = systolic;
        self.bp_rise_run = 0;
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Replaces the thresholds (the site config changed). They apply from the next sample or
    /// tick on; nothing raised is re-evaluated until then.
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
    }

    /// Changes the channels watched for silence. Newly expected channels count from their next
    /// sample or tick; "no data" advisories of channels no longer expected clear at `now_us`.
    pub fn set_expected(&mut self, expected: &[Channel], now_us: i64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let dropped: Vec<Channel> = self
            .watched
            .keys()
            .copied()
            .filter(|c| !expected.contains(c))
            .collect();
        for channel in dropped {
            self.watched.remove(&channel);
            let key = AdvisoryKey::channel(AdvisoryKind::NoData, channel);
            self.clear(key, now_us, &mut transitions);
        }
        self.watch(expected);
        transitions
    }

    /// Feeds one sample. Samples of one channel must come in time order; samples that go back
    /// in time are still evaluated but cannot complete a duration.
    pub fn observe(&mut self, channel: Channel, sample: &Sample) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let t_us = sample.t_us;
        if let Some(last_us) = self.watched.get_mut(&channel) {
            *last_us = Some(last_us.map_or(t_us, |last| last.max(t_us)));
        }
        self.clear(
            AdvisoryKey::channel(AdvisoryKind::NoData, channel),
            t_us,
            &mut transitions,
        );
        let value = sample.v[0];
        match channel {
            Channel::Nibp => self.observe_bp(sample, &mut transitions),
            c if c == self.hr_source => self.observe_hr(channel, sample, &mut transitions),
            Channel::Spo2 => {
                let t = &self.thresholds;
                let (threshold, duration_s) = (t.spo2_low_pct, t.spo2_low_duration_s);
                let detail = |for_s| {
                    format!(
                        "SpO2 {value} %, below {threshold} % for {}",
                        duration_text(for_s)
                    )
                };
                let run = sustain(&mut self.spo2_low_since_us, value < threshold, t_us);
                let key = AdvisoryKey::channel(AdvisoryKind::Spo2Low, channel);
                self.sustained(key, run, duration_s, t_us, detail, &mut transitions);
            }
            Channel::Hr | Channel::Rr | Channel::Pulse | Channel::Ecg | Channel::Temp => {}
        }
        transitions
    }

    /// Feeds a device status change reported at `at_us`.
    pub fn device_status(
        &mut self,
        device: &str,
        status: DeviceStatus,
        at_us: i64,
    ) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let subject = device_subject(device);
        let (kind, raise) = match status {
            DeviceStatus::Connected => (AdvisoryKind::Disconnected, false),
            DeviceStatus::Disconnected => (AdvisoryKind::Disconnected, true),
            DeviceStatus::SensorContact(contact) => (AdvisoryKind::SensorOff, !contact),
        };
        let key = AdvisoryKey {
            kind,
            subject: subject.to_owned(),
        };
        if !raise {
            self.clear(key, at_us, &mut transitions);
            return transitions;
        }
        let tracked = self
            .raised
            .keys()
            .filter(|k| matches!(k.kind, AdvisoryKind::SensorOff | AdvisoryKind::Disconnected))
            .map(|k| k.subject.as_str())
            .collect::<BTreeSet<_>>();
        if !tracked.contains(subject) && tracked.len() >= MAX_TRACKED_DEVICES {
            return transitions;
        }
        let detail = match kind {
            AdvisoryKind::SensorOff => format!("{subject}: sensor is off the patient"),
            _ => format!("{subject}: device disconnected"),
        };
        self.raise(key, at_us, detail, &mut transitions);
        transitions
    }

    /// Lets time pass to `now_us`: raises "no data" for every watched channel silent for
    /// `no_data_s`, dated when the silence reached that length.
    pub fn tick(&mut self, now_us: i64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let window_us = i64::from(self.thresholds.no_data_s) * US_PER_S;
        let mut silent = Vec::new();
        for (&channel, last_us) in &mut self.watched {
            let since_us = *last_us.get_or_insert(now_us);
            if now_us.saturating_sub(since_us) >= window_us {
                silent.push((channel, since_us.saturating_add(window_us)));
            }
        }
        for (channel, at_us) in silent {
            let detail = format!(
                "no {channel} samples for {}",
                duration_text(self.thresholds.no_data_s)
            );
            let key = AdvisoryKey::channel(AdvisoryKind::NoData, channel);
            self.raise(key, at_us, detail, &mut transitions);
        }
        transitions
    }

    /// The advisories raised now, with their priority and raise time: most urgent first, then
    /// oldest first.
    pub fn active(&self) -> Vec<(AdvisoryKey, Priority, i64)> {
        let mut active: Vec<(AdvisoryKey, Priority, i64)> = self
            .raised
            .iter()
            .map(|(key, raised)| (key.clone(), raised.priority, raised.at_us))
            .collect();
        active.sort_by(|a, b| (a.1, a.2, &a.0).cmp(&(b.1, b.2, &b.0)));
        active
    }

    fn observe_hr(&mut self, channel: Channel, sample: &Sample, out: &mut Vec<Transition>) {
        let (t_us, value) = (sample.t_us, sample.v[0]);
        let t = &self.thresholds;
        let (high, high_s, low, low_s) = (
            t.hr_high_bpm,
            t.hr_high_duration_s,
            t.hr_low_bpm,
            t.hr_low_duration_s,
        );
        let rate = if channel == Channel::Pulse {
            "pulse rate"
        } else {
            "heart rate"
        };
        let run = sustain(&mut self.hr_high_since_us, value > high, t_us);
        let detail = |for_s| {
            format!(
                "{rate} {value} /min, above {high} /min for {}",
                duration_text(for_s)
            )
        };
        let key = AdvisoryKey::channel(AdvisoryKind::HrHigh, channel);
        self.sustained(key, run, high_s, t_us, detail, out);
        let run = sustain(&mut self.hr_low_since_us, value < low, t_us);
        let detail = |for_s| {
            format!(
                "{rate} {value} /min, below {low} /min for {}",
                duration_text(for_s)
            )
        };
        let key = AdvisoryKey::channel(AdvisoryKind::HrLow, channel);
        self.sustained(key, run, low_s, t_us, detail, out);
    }

    fn watch(&mut self, expected: &[Channel]) {
        self.hr_source = if !expected.contains(&Channel::Hr) && expected.contains(&Channel::Pulse) {
            Channel::Pulse
        } else {
            Channel::Hr
        };
        for &channel in expected {
            if channel != Channel::Nibp {
                self.watched.entry(channel).or_insert(None);
            }
        }
    }

    fn observe_bp(&mut self, sample: &Sample, transitions: &mut Vec<Transition>) {
        self.observe_bp_low(sample, transitions);
        self.observe_bp_rise(sample, transitions);
        let t = &self.thresholds;
        let [systolic, diastolic, _mean] = sample.v;
        let high = systolic >= t.bp_systolic_high || diastolic >= t.bp_diastolic_high;
        let immediate =
            systolic >= t.bp_systolic_immediate || diastolic >= t.bp_diastolic_immediate;
        let key = AdvisoryKey::channel(AdvisoryKind::BpHigh, Channel::Nibp);
        if !high && !immediate {
            self.bp_high_run = 0;
            self.clear(key, sample.t_us, transitions);
            return;
        }
        self.bp_high_run = self.bp_high_run.saturating_add(1);
        // Any count below 1 means "every high reading raises".
        let needed = t.bp_consecutive_readings.max(1);
        let detail = if immediate {
            format!(
                "systolic {systolic} / diastolic {diastolic} mmHg on one reading (immediate threshold {}/{})",
                t.bp_systolic_immediate, t.bp_diastolic_immediate
            )
        } else if self.bp_high_run >= needed {
            format!(
                "systolic {systolic} / diastolic {diastolic} mmHg on {} consecutive readings (threshold {}/{})",
                self.bp_high_run, t.bp_systolic_high, t.bp_diastolic_high
            )
        } else {
            return;
        };
        self.raise(key, sample.t_us, detail, transitions);
    }

    fn observe_bp_low(&mut self, sample: &Sample, out: &mut Vec<Transition>) {
        let (systolic, limit) = (sample.v[0], self.thresholds.bp_systolic_low);
        let key = AdvisoryKey::channel(AdvisoryKind::BpLow, Channel::Nibp);
        if systolic < limit {
            let detail = format!("systolic {systolic} mmHg, below {limit} mmHg");
            self.raise(key, sample.t_us, detail, out);
        } else {
            self.clear(key, sample.t_us, out);
        }
    }

    fn observe_bp_rise(&mut self, sample: &Sample, out: &mut Vec<Transition>) {
        let Some(baseline) = self.baseline_systolic.filter(|b| *b > 0) else {
            return;
        };
        let systolic = sample.v[0];
        let pct = self.thresholds.bp_rise_pct;
        let key = AdvisoryKey::channel(AdvisoryKind::BpRise, Channel::Nibp);
        // More than pct % above: 100·systolic > (100 + pct)·baseline, in integers.
        let risen = 100 * i64::from(systolic) > i64::from(100 + pct) * i64::from(baseline);
        if !risen {
            self.bp_rise_run = 0;
            self.clear(key, sample.t_us, out);
            return;
        }
        self.bp_rise_run = self.bp_rise_run.saturating_add(1);
        if self.bp_rise_run >= self.thresholds.bp_consecutive_readings.max(1) {
            let detail = format!(
                "systolic {systolic} mmHg on {} consecutive readings, more than {pct} % above the baseline {baseline} mmHg",
                self.bp_rise_run
            );
            self.raise(key, sample.t_us, detail, out);
        }
    }

    /// Raises or clears a duration rule given the state of its run after this sample.
    fn sustained(
        &mut self,
        key: AdvisoryKey,
        run: Run,
        duration_s: u32,
        t_us: i64,
        detail: impl Fn(u32) -> String,
        out: &mut Vec<Transition>,
    ) {
        match run {
            Run::Normal => self.clear(key, t_us, out),
            Run::Since(since_us) => {
                if t_us.saturating_sub(since_us) >= i64::from(duration_s) * US_PER_S {
                    self.raise(key, t_us, detail(duration_s), out);
                }
            }
        }
    }

    fn raise(&mut self, key: AdvisoryKey, at_us: i64, detail: String, out: &mut Vec<Transition>) {
        if self.raised.contains_key(&key) {
            return;
        }
        let priority = key.kind.priority();
        self.raised.insert(key.clone(), Raised { priority, at_us });
        out.push(Transition::Raised {
            key,
            priority,
            at_us,
            detail,
        });
    }

    fn clear(&mut self, key: AdvisoryKey, at_us: i64, out: &mut Vec<Transition>) {
        if let Some(raised) = self.raised.remove(&key) {
            // A late sample may predate the raise; a record never clears before it was raised.
            out.push(Transition::Cleared {
                key,
                at_us: at_us.max(raised.at_us),
            });
        }
    }
}

/// Where a duration rule's run stands after a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// The sample is normal; any run is over.
    Normal,
    /// Abnormal since this sample time.
    Since(i64),
}

/// Updates a run's start with one sample.
fn sustain(since_us: &mut Option<i64>, abnormal: bool, t_us: i64) -> Run {
    if abnormal {
        Run::Since(*since_us.get_or_insert(t_us))
    } else {
        *since_us = None;
        Run::Normal
    }
}

/// The subject used for a device: its name, cut to [`MAX_DEVICE_NAME_BYTES`].
fn device_subject(device: &str) -> &str {
    if device.len() <= MAX_DEVICE_NAME_BYTES {
        return device;
    }
    let mut end = MAX_DEVICE_NAME_BYTES;
    while !device.is_char_boundary(end) {
        end -= 1;
    }
    &device[..end]
}

/// "30 s", "5 min", "1 min 30 s".
fn duration_text(seconds: u32) -> String {
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::value::{Error as ValueError, MapDeserializer};

    // ----- scripts -----

    /// One input to the engine; times in seconds from the session start.
    #[derive(Debug, Clone)]
    enum Step {
        Sample(Channel, i64, [i32; 3]),
        Device(&'static str, DeviceStatus, i64),
        Tick(i64),
    }

    fn us(t_s: i64) -> i64 {
        t_s * US_PER_S
    }

    /// One blood-pressure reading.
    fn bp(t_s: i64, systolic: i32, diastolic: i32) -> Vec<Step> {
        vec![Step::Sample(
            Channel::Nibp,
            t_s,
            [systolic, diastolic, (systolic + 2 * diastolic) / 3],
        )]
    }

    /// 1 Hz samples of `channel` from `from_s` to `to_s` inclusive.
    fn series(channel: Channel, from_s: i64, to_s: i64, value: i32) -> Vec<Step> {
        (from_s..=to_s)
            .map(|t_s| Step::Sample(channel, t_s, [value, 0, 0]))
            .collect()
    }

    fn hr(from_s: i64, to_s: i64, bpm: i32) -> Vec<Step> {
        series(Channel::Hr, from_s, to_s, bpm)
    }

    fn spo2(from_s: i64, to_s: i64, pct: i32) -> Vec<Step> {
        series(Channel::Spo2, from_s, to_s, pct)
    }

    fn device(name: &'static str, status: DeviceStatus, t_s: i64) -> Vec<Step> {
        vec![Step::Device(name, status, t_s)]
    }

    fn tick(t_s: i64) -> Vec<Step> {
        vec![Step::Tick(t_s)]
    }

    /// "300s +bp_high(nibp) high" or "600s -bp_high(nibp)"; times in whole seconds, else µs.
    fn render(transition: &Transition) -> String {
        let at_us = transition.at_us();
        let at = if at_us % US_PER_S == 0 {
            format!("{}s", at_us / US_PER_S)
        } else {
            format!("{at_us}us")
        };
        match transition {
            Transition::Raised { key, priority, .. } => format!("{at} +{key} {priority}"),
            Transition::Cleared { key, .. } => format!("{at} -{key}"),
        }
    }

    fn run(engine: &mut AdvisoryEngine, script: &[Vec<Step>]) -> Vec<Transition> {
        let mut out = Vec::new();
        for step in script.iter().flatten() {
            out.extend(match step {
                Step::Sample(channel, t_s, v) => engine.observe(
                    *channel,
                    &Sample {
                        t_us: us(*t_s),
                        v: *v,
                    },
                ),
                Step::Device(name, status, t_s) => engine.device_status(name, *status, us(*t_s)),
                Step::Tick(t_s) => engine.tick(us(*t_s)),
            });
        }
        out
    }

    fn check_with(
        thresholds: Thresholds,
        expected_channels: &[Channel],
        script: &[Vec<Step>],
        expected: &[&str],
    ) {
        let mut engine = AdvisoryEngine::new(thresholds, expected_channels);
        let transitions = run(&mut engine, script);
        let rendered: Vec<String> = transitions.iter().map(render).collect();
        assert_eq!(rendered, expected);
    }

    fn check(script: &[Vec<Step>], expected: &[&str]) {
        check_with(Thresholds::default(), &[], script, expected);
    }

    // ----- blood pressure -----

    #[test]
    fn two_high_readings_raise() {
        check(
            &[bp(0, 186, 104), bp(300, 182, 98)],
            &["300s +bp_high(nibp) high"],
        );
        check(
            &[bp(0, 150, 102), bp(300, 140, 100)],
            &["300s +bp_high(nibp) high"],
        );
    }

    #[test]
    fn one_high_reading_does_not_raise() {
        check(&[bp(0, 186, 104)], &[]);
        check(&[bp(0, 199, 119)], &[]);
        // Not consecutive: a normal reading in between resets the count.
        check(&[bp(0, 186, 104), bp(180, 150, 90), bp(360, 186, 104)], &[]);
        check(&[bp(0, 179, 99), bp(300, 179, 99)], &[]);
    }

    #[test]
    fn one_very_high_reading_raises_at_once() {
        check(&[bp(60, 200, 95)], &["60s +bp_high(nibp) high"]);
        check(&[bp(60, 160, 120)], &["60s +bp_high(nibp) high"]);
    }

    #[test]
    fn bp_high_clears_on_a_reading_below_both_thresholds() {
        check(
            &[
                bp(0, 186, 104),
                bp(300, 190, 100),
                bp(600, 185, 90),
                bp(900, 179, 100),
                bp(1200, 179, 99),
                bp(1500, 182, 95),
            ],
            &["300s +bp_high(nibp) high", "1200s -bp_high(nibp)"],
        );
        check(
            &[bp(0, 205, 100), bp(180, 150, 85), bp(360, 201, 100)],
            &[
                "0s +bp_high(nibp) high",
                "180s -bp_high(nibp)",
                "360s +bp_high(nibp) high",
            ],
        );
    }

    #[test]
    fn bp_details_say_what_was_seen() {
        let mut engine = AdvisoryEngine::new(Thresholds::default(), &[]);
        let transitions = run(&mut engine, &[bp(0, 181, 95), bp(300, 186, 104)]);
        let details: Vec<&str> = transitions
            .iter()
            .filter_map(|t| match t {
                Transition::Raised { detail, .. } => Some(detail.as_str()),
                Transition::Cleared { .. } => None,
            })
            .collect();
        assert_eq!(
            details,
            ["systolic 186 / diastolic 104 mmHg on 2 consecutive readings (threshold 180/100)"]
        );
        let mut engine = AdvisoryEngine::new(Thresholds::default(), &[]);
        let transitions = run(&mut engine, &[bp(0, 204, 96)]);
        assert!(matches!(
            &transitions[..],
            [Transition::Raised { detail, .. }]
                if detail == "systolic 204 / diastolic 96 mmHg on one reading (immediate threshold 200/120)"
        ));
    }

    // ----- heart rate and SpO2 -----

    #[test]
    fn hr_above_threshold_for_five_minutes_raises_medium() {
        check(&[hr(0, 300, 111)], &["300s +hr_high(hr) medium"]);
        check(&[hr(0, 299, 111)], &[]);
        check(&[hr(0, 240, 150)], &[]);
        check(&[hr(0, 600, 110)], &[]);
        // The run restarts after a normal sample.
        check(
            &[hr(0, 200, 130), hr(201, 201, 100), hr(202, 450, 130)],
            &[],
        );
        check(
            &[hr(0, 200, 130), hr(201, 201, 100), hr(202, 502, 130)],
            &["502s +hr_high(hr) medium"],
        );
    }

    #[test]
    fn low_pressure_bradycardia_and_rise_worked_examples() {
        // (what, baseline systolic, expected channels, script, transitions)
        type Case = (
            &'static str,
            Option<i32>,
            Vec<Channel>,
            Vec<Vec<Step>>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "one reading under 90 raises",
                None,
                vec![],
                vec![bp(0, 88, 60)],
                vec!["0s +bp_low(nibp) medium"],
            ),
            ("90 is not low", None, vec![], vec![bp(0, 90, 60)], vec![]),
            (
                "cleared by a reading at or above 90",
                None,
                vec![],
                vec![bp(0, 85, 55), bp(180, 89, 58), bp(360, 92, 60)],
                vec!["0s +bp_low(nibp) medium", "360s -bp_low(nibp)"],
            ),
            (
                "HR under 50 for a minute raises",
                None,
                vec![],
                vec![hr(0, 60, 48)],
                vec!["60s +hr_low(hr) medium"],
            ),
            (
                "HR under 50 for 59 s does not",
                None,
                vec![],
                vec![hr(0, 59, 48)],
                vec![],
            ),
            ("50 is not low", None, vec![], vec![hr(0, 120, 50)], vec![]),
            (
                "bradycardia clears at 50",
                None,
                vec![],
                vec![hr(0, 60, 45), hr(61, 61, 50)],
                vec!["60s +hr_low(hr) medium", "61s -hr_low(hr)"],
            ),
            (
                "two readings over 30 % above a baseline of 120 (156) raise",
                Some(120),
                vec![],
                vec![bp(0, 157, 85), bp(300, 160, 88)],
                vec!["300s +bp_rise(nibp) medium"],
            ),
            (
                "exactly 30 % above is not a rise",
                Some(120),
                vec![],
                vec![bp(0, 156, 85), bp(300, 156, 85)],
                vec![],
            ),
            (
                "without a baseline, no rise rule",
                None,
                vec![],
                vec![bp(0, 170, 85), bp(300, 170, 85)],
                vec![],
            ),
            (
                "a rise clears at or under the limit",
                Some(120),
                vec![],
                vec![bp(0, 160, 85), bp(300, 160, 85), bp(600, 150, 85)],
                vec!["300s +bp_rise(nibp) medium", "600s -bp_rise(nibp)"],
            ),
            (
                "the oximeter's pulse is the heart-rate source where the room has no hr",
                None,
                vec![Channel::Spo2, Channel::Pulse],
                vec![series(Channel::Pulse, 0, 300, 115)],
                vec!["300s +hr_high(pulse) medium"],
            ),
            (
                "and only there: with hr expected, pulse raises nothing",
                None,
                vec![Channel::Hr, Channel::Spo2, Channel::Pulse],
                vec![series(Channel::Pulse, 0, 300, 115), hr(0, 300, 100)],
                vec![],
            ),
            (
                "pulse bradycardia",
                None,
                vec![Channel::Pulse],
                vec![series(Channel::Pulse, 0, 60, 44)],
                vec!["60s +hr_low(pulse) medium"],
            ),
        ];
        for (what, baseline, expected, script, want) in cases {
            let mut engine = AdvisoryEngine::new(Thresholds::default(), &expected);
            engine.set_baseline(baseline);
            // Silence rules are not under test here.
            let script: Vec<Vec<Step>> = script;
            let got: Vec<String> = run(&mut engine, &script)
                .iter()
                .map(render)
                .filter(|r| !r.contains("no_data"))
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn rise_details_name_the_baseline() {
        let mut engine = AdvisoryEngine::new(Thresholds::default(), &[]);
        engine.set_baseline(Some(120));
        let details: Vec<String> = run(&mut engine, &[bp(0, 160, 85), bp(300, 162, 86)])
            .into_iter()
            .filter_map(|t| match t {
                Transition::Raised { detail, .. } => Some(detail),
                Transition::Cleared { .. } => None,
            })
            .collect();
        assert_eq!(
            details,
            [
                "systolic 162 mmHg on 2 consecutive readings, more than 30 % above the baseline 120 mmHg"
            ]
        );
    }

    #[test]
    fn hr_high_clears_at_or_below_threshold() {
        check(
            &[hr(0, 310, 115), hr(311, 320, 110), hr(321, 330, 115)],
            &["300s +hr_high(hr) medium", "311s -hr_high(hr)"],
        );
    }

    #[test]
    fn durations_use_sample_times() {
        // A gap with no samples neither breaks the run nor is needed to complete it.
        check(
            &[hr(0, 10, 125), hr(290, 300, 125)],
            &["300s +hr_high(hr) medium"],
        );
        check(
            &[spo2(0, 0, 88), spo2(40, 40, 89)],
            &["40s +spo2_low(spo2) high"],
        );
        // Ticks do not complete a duration.
        check(&[spo2(0, 10, 88), tick(100)], &[]);
    }

    #[test]
    fn spo2_below_threshold_for_thirty_seconds_raises_high() {
        check(&[spo2(0, 30, 91)], &["30s +spo2_low(spo2) high"]);
        check(&[spo2(0, 29, 91)], &[]);
        check(&[spo2(0, 60, 92)], &[]);
        check(
            &[spo2(0, 40, 85), spo2(41, 45, 92), spo2(46, 80, 90)],
            &[
                "30s +spo2_low(spo2) high",
                "41s -spo2_low(spo2)",
                "76s +spo2_low(spo2) high",
            ],
        );
    }

    #[test]
    fn other_channels_raise_nothing() {
        check(
            &[
                series(Channel::Pulse, 0, 400, 180),
                series(Channel::Ecg, 0, 60, -5000),
                series(Channel::Rr, 0, 60, 300),
                series(Channel::Temp, 0, 60, 4_200),
            ],
            &[],
        );
    }

    // ----- technical advisories -----

    #[test]
    fn no_data_after_silence_cleared_by_next_sample() {
        let expected = [Channel::Hr, Channel::Spo2];
        check_with(
            Thresholds::default(),
            &expected,
            &[
                hr(0, 10, 70),
                spo2(0, 50, 97),
                tick(39),
                tick(41),
                tick(60),
                hr(65, 66, 71),
                tick(81),
            ],
            &[
                "40s +no_data(hr) low",
                "65s -no_data(hr)",
                "80s +no_data(spo2) low",
            ],
        );
        // A channel that never delivers counts from the first tick; NIBP is never watched;
        // unexpected channels are not watched.
        check_with(
            Thresholds::default(),
            &[Channel::Ecg, Channel::Nibp],
            &[tick(100), tick(129), tick(130), tick(500)],
            &["130s +no_data(ecg) low"],
        );
    }

    #[test]
    fn devices_disconnect_and_reconnect() {
        check(
            &[
                device("oximeter", DeviceStatus::Disconnected, 10),
                device("oximeter", DeviceStatus::Disconnected, 11),
                device("hr-strap", DeviceStatus::SensorContact(false), 12),
                device("hr-strap", DeviceStatus::SensorContact(false), 13),
                device("oximeter", DeviceStatus::Connected, 20),
                device("oximeter", DeviceStatus::Connected, 21),
                device("hr-strap", DeviceStatus::SensorContact(true), 30),
                device("cuff", DeviceStatus::Connected, 31),
                device("cuff", DeviceStatus::SensorContact(true), 32),
            ],
            &[
                "10s +disconnected(oximeter) low",
                "12s +sensor_off(hr-strap) low",
                "20s -disconnected(oximeter)",
                "30s -sensor_off(hr-strap)",
            ],
        );
    }

    #[test]
    fn device_names_and_count_are_bounded() {
        let mut engine = AdvisoryEngine::new(Thresholds::default(), &[]);
        let long = "é".repeat(MAX_DEVICE_NAME_BYTES);
        let raised = engine.device_status(&long, DeviceStatus::Disconnected, 0);
        assert_eq!(raised.len(), 1);
        assert!(raised[0].key().subject.len() <= MAX_DEVICE_NAME_BYTES);
        assert_eq!(
            engine
                .device_status(&long, DeviceStatus::Connected, 1)
                .len(),
            1
        );

        for i in 0..MAX_TRACKED_DEVICES + 5 {
            engine.device_status(&format!("monitor-{i}"), DeviceStatus::Disconnected, 2);
        }
        assert_eq!(engine.active().len(), MAX_TRACKED_DEVICES);
        // A tracked device may still add its other advisory.
        let both = engine.device_status("monitor-0", DeviceStatus::SensorContact(false), 3);
        assert_eq!(both.len(), 1);
    }

    // ----- thresholds -----

    #[test]
    fn site_thresholds_take_effect() {
        let site = Thresholds {
            bp_systolic_high: 170,
            bp_diastolic_high: 105,
            ..Thresholds::default()
        };
        assert_eq!(site.validate(), Ok(()));
        let script = [bp(0, 172, 95), bp(300, 165, 106)];
        check_with(site.clone(), &[], &script, &["300s +bp_high(nibp) high"]);
        check(&script, &[]);

        let quick = Thresholds {
            hr_high_bpm: 100,
            hr_high_duration_s: 60,
            spo2_low_pct: 94,
            spo2_low_duration_s: 0,
            bp_consecutive_readings: 1,
            ..Thresholds::default()
        };
        check_with(
            quick,
            &[],
            &[hr(0, 60, 101), spo2(0, 0, 93), bp(10, 181, 80)],
            &[
                "60s +hr_high(hr) medium",
                "0s +spo2_low(spo2) high",
                "10s +bp_high(nibp) high",
            ],
        );
    }

    #[test]
    fn set_thresholds_and_expected_apply_from_then_on() {
        let mut engine = AdvisoryEngine::new(Thresholds::default(), &[Channel::Hr]);
        assert!(run(&mut engine, &[bp(0, 172, 95), bp(300, 172, 95)]).is_empty());
        engine.set_thresholds(Thresholds {
            bp_systolic_high: 170,
            ..Thresholds::default()
        });
        let raised = run(&mut engine, &[bp(600, 172, 95), bp(900, 172, 95)]);
        assert_eq!(
            raised.iter().map(render).collect::<Vec<_>>(),
            ["900s +bp_high(nibp) high"]
        );

        let raised = run(&mut engine, &[tick(600), tick(630)]);
        assert_eq!(
            raised.iter().map(render).collect::<Vec<_>>(),
            ["630s +no_data(hr) low"]
        );
        let cleared = engine.set_expected(&[Channel::Spo2], us(640));
        assert_eq!(
            cleared.iter().map(render).collect::<Vec<_>>(),
            ["640s -no_data(hr)"]
        );
        let raised = run(&mut engine, &[tick(650), tick(680)]);
        assert_eq!(
            raised.iter().map(render).collect::<Vec<_>>(),
            ["680s +no_data(spo2) low"]
        );
    }

    fn check_thresholds_from(pairs: &[(&str, u32)], expected: Thresholds) {
        let map = MapDeserializer::<_, ValueError>::new(pairs.iter().copied());
        let parsed = Thresholds::deserialize(map).expect("thresholds deserialize");
        assert_eq!(parsed, expected);
    }

    #[test]
    fn site_config_overrides_any_subset() {
        check_thresholds_from(&[], Thresholds::default());
        check_thresholds_from(
            &[("no_data_s", 60), ("bp_consecutive_readings", 3)],
            Thresholds {
                no_data_s: 60,
                bp_consecutive_readings: 3,
                ..Thresholds::default()
            },
        );
    }

    fn check_invalid(edit: impl FnOnce(&mut Thresholds), expected: &str) {
        let mut t = Thresholds::default();
        edit(&mut t);
        let error = t.validate().expect_err("invalid thresholds").to_string();
        assert_eq!(error, expected);
    }

    #[test]
    fn nonsense_thresholds_are_named() {
        assert_eq!(Thresholds::default().validate(), Ok(()));
        check_invalid(
            |t| t.bp_systolic_high = 0,
            "advisory threshold bp_systolic_high = 0 is outside 40..=300; correct the site config",
        );
        check_invalid(
            |t| t.bp_consecutive_readings = 0,
            "advisory threshold bp_consecutive_readings = 0 is outside 1..=10; correct the site config",
        );
        check_invalid(
            |t| t.spo2_low_pct = 101,
            "advisory threshold spo2_low_pct = 101 is outside 50..=100; correct the site config",
        );
        check_invalid(
            |t| t.no_data_s = 0,
            "advisory threshold no_data_s = 0 is outside 5..=3600; correct the site config",
        );
        check_invalid(
            |t| t.hr_high_duration_s = 86_400,
            "advisory threshold hr_high_duration_s = 86400 is outside 0..=3600; correct the site config",
        );
        check_invalid(
            |t| t.hr_low_bpm = 120,
            "advisory threshold hr_high_bpm = 110 is below hr_low_bpm = 120; it must be at least hr_low_bpm",
        );
        check_invalid(
            |t| t.bp_rise_pct = 0,
            "advisory threshold bp_rise_pct = 0 is outside 5..=200; correct the site config",
        );
        check_invalid(
            |t| t.bp_diastolic_immediate = 90,
            "advisory threshold bp_diastolic_immediate = 90 is below bp_diastolic_high = 100; it must be at least bp_diastolic_high",
        );
    }

    // ----- names -----

    #[test]
    fn names_and_priorities() {
        let table = [
            (AdvisoryKind::BpHigh, "bp_high", Priority::High),
            (AdvisoryKind::HrHigh, "hr_high", Priority::Medium),
            (AdvisoryKind::Spo2Low, "spo2_low", Priority::High),
            (AdvisoryKind::SensorOff, "sensor_off", Priority::Low),
            (AdvisoryKind::Disconnected, "disconnected", Priority::Low),
            (AdvisoryKind::NoData, "no_data", Priority::Low),
        ];
        for (kind, name, priority) in table {
            assert_eq!(kind.name(), name);
            assert_eq!(AdvisoryKind::from_name(name), Some(kind));
            assert_eq!(kind.priority(), priority);
            assert_eq!(Priority::from_name(priority.name()), Some(priority));
        }
        assert_eq!(AdvisoryKind::from_name("bp-high"), None);
        assert_eq!(duration_text(30), "30 s");
        assert_eq!(duration_text(300), "5 min");
        assert_eq!(duration_text(90), "1 min 30 s");
    }

    #[test]
    fn active_lists_most_urgent_first() {
        let mut engine = AdvisoryEngine::new(Thresholds::default(), &[]);
        run(
            &mut engine,
            &[
                device("cuff", DeviceStatus::Disconnected, 0),
                hr(0, 300, 130),
                spo2(100, 130, 85),
                bp(200, 210, 100),
            ],
        );
        let active: Vec<String> = engine
            .active()
            .iter()
            .map(|(key, priority, at_us)| format!("{key} {priority} {}s", at_us / US_PER_S))
            .collect();
        assert_eq!(
            active,
            [
                "spo2_low(spo2) high 130s",
                "bp_high(nibp) high 200s",
                "hr_high(hr) medium 300s",
                "disconnected(cuff) low 0s",
            ]
        );
    }

    // ----- properties -----

    fn arb_step() -> impl Strategy<Value = Step> {
        let channel = (0..Channel::ALL.len()).prop_map(|i| Channel::ALL[i]);
        let status = prop_oneof![
            Just(DeviceStatus::Connected),
            Just(DeviceStatus::Disconnected),
            any::<bool>().prop_map(DeviceStatus::SensorContact),
        ];
        prop_oneof![
            4 => (channel, 0_i64..2_000, [60_i32..220, 40_i32..130, 0_i32..1])
                .prop_map(|(c, t, v)| Step::Sample(c, t, v)),
            1 => (prop::sample::select(vec!["cuff", "oximeter", "hr-strap"]), status, 0_i64..2_000)
                .prop_map(|(d, s, t)| Step::Device(d, s, t)),
            1 => (0_i64..2_000).prop_map(Step::Tick),
        ]
    }

    fn arb_thresholds() -> impl Strategy<Value = Thresholds> {
        (0_u32..4, 0_u32..120, 0_u32..60, 5_u32..60).prop_map(|(n, hr_s, spo2_s, no_data_s)| {
            Thresholds {
                bp_consecutive_readings: n,
                hr_high_duration_s: hr_s,
                spo2_low_duration_s: spo2_s,
                no_data_s,
                ..Thresholds::default()
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the inputs: raises and clears alternate per key starting with a raise,
        /// priorities are the kind's, and `active()` is exactly the replay of the transitions.
        #[test]
        fn transitions_are_consistent(
            thresholds in arb_thresholds(),
            steps in prop::collection::vec(arb_step(), 0..200),
        ) {
            let mut engine = AdvisoryEngine::new(thresholds, &Channel::ALL);
            let transitions = run(&mut engine, &[steps]);
            let mut replay: BTreeMap<AdvisoryKey, (Priority, i64)> = BTreeMap::new();
            for transition in &transitions {
                match transition {
                    Transition::Raised { key, priority, at_us, detail } => {
                        prop_assert_eq!(*priority, key.kind.priority());
                        prop_assert!(!detail.is_empty());
                        prop_assert!(
                            replay.insert(key.clone(), (*priority, *at_us)).is_none(),
                            "{} raised twice", key
                        );
                    }
                    Transition::Cleared { key, at_us } => {
                        let raised = replay.remove(key);
                        prop_assert!(raised.is_some(), "{} cleared but not raised", key);
                        prop_assert!(raised.is_some_and(|(_, raised_us)| *at_us >= raised_us));
                    }
                }
            }
            let mut expected: Vec<(AdvisoryKey, Priority, i64)> =
                replay.into_iter().map(|(k, (p, t))| (k, p, t)).collect();
            expected.sort_by(|a, b| (a.1, a.2, &a.0).cmp(&(b.1, b.2, &b.0)));
            prop_assert_eq!(engine.active(), expected);
        }
    }
}
