//! Vital-sign channels and samples: the unit of data that flows from a monitor (or the
//! simulator) through the recorder into chunks.
//!
//! Values are integers in a fixed unit per channel (see [`Channel::unit`]), so that chunks can
//! delta-encode them exactly. This module is plain data; encoding lives in [`crate::chunk`].

use serde::{Deserialize, Serialize};

/// A recorded vital-sign channel. The string names (`hr`, `spo2`, …) are stable: they are keys
/// in session documents and query parameters in the APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Heart rate from the ECG or chest strap, beats per minute, 1 Hz.
    Hr,
    /// RR intervals, milliseconds, one sample per beat (timestamped at the beat).
    Rr,
    /// Oxygen saturation, percent, 1 Hz.
    Spo2,
    /// Pulse rate from the oximeter, beats per minute, 1 Hz.
    Pulse,
    /// Non-invasive blood pressure: systolic, diastolic, mean arterial, mmHg; one per cuff cycle.
    Nibp,
    /// ECG lead voltage, microvolts, 130 or 250 Hz.
    Ecg,
    /// Body temperature, hundredths of a degree Celsius.
    Temp,
}

impl Channel {
    /// Every channel, in the order documents and summaries list them.
    pub const ALL: [Channel; 7] = [
        Channel::Hr,
        Channel::Rr,
        Channel::Spo2,
        Channel::Pulse,
        Channel::Nibp,
        Channel::Ecg,
        Channel::Temp,
    ];

    /// The stable name used in documents, APIs and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Hr => "hr",
            Channel::Rr => "rr",
            Channel::Spo2 => "spo2",
            Channel::Pulse => "pulse",
            Channel::Nibp => "nibp",
            Channel::Ecg => "ecg",
            Channel::Temp => "temp",
        }
    }

    /// Parses a stable name back into a channel.
    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }

    /// How many values one sample of this channel carries (3 for blood pressure).
    pub fn dims(self) -> usize {
        match self {
            Channel::Nibp => 3,
            _ => 1,
        }
    }

    /// The unit of the stored integer values, as UCUM.
    pub fn unit(self) -> &'static str {
        match self {
            Channel::Hr | Channel::Pulse => "/min",
            Channel::Rr => "ms",
            Channel::Spo2 => "%",
            Channel::Nibp => "mm[Hg]",
            Channel::Ecg => "uV",
            Channel::Temp => "cCel",
        }
    }

    /// A one-byte code used inside chunk headers. Never reuse a retired code.
    pub fn code(self) -> u8 {
        match self {
            Channel::Hr => 1,
            Channel::Rr => 2,
            Channel::Spo2 => 3,
            Channel::Pulse => 4,
            Channel::Nibp => 5,
            Channel::Ecg => 6,
            Channel::Temp => 7,
        }
    }

    /// Inverse of [`Channel::code`].
    pub fn from_code(code: u8) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Most values one sample carries (blood pressure: systolic, diastolic, mean).
pub const MAX_DIMS: usize = 3;

/// One measurement of one channel. `t_us` is microseconds since the Unix epoch on the
/// appliance's (possibly simulated) clock. Only the first `channel.dims()` entries of `v` are
/// meaningful; the rest are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sample {
    /// Microseconds since the Unix epoch.
    pub t_us: i64,
    /// The values, in the channel's unit.
    pub v: [i32; MAX_DIMS],
}

impl Sample {
    /// A one-value sample.
    pub fn scalar(t_us: i64, value: i32) -> Sample {
        Sample {
            t_us,
            v: [value, 0, 0],
        }
    }
}

/// A run of samples of one channel, in time order, as sources hand them to the recorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleBatch {
    /// Which channel the samples belong to.
    pub channel: Channel,
    /// The samples, ordered by `t_us` (ties allowed only for distinct beats, e.g. RR).
    pub samples: Vec<Sample>,
}

/// An order-independent checksum of a set of samples: the wrapping sum of a 64-bit mix of each
/// sample's time and values. The appliance and the cloud compute it over a channel's samples
/// so that anyone can check both hold exactly the same data, whatever the chunk boundaries.
pub fn checksum<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> u64 {
    samples
        .into_iter()
        .fold(0_u64, |acc, s| acc.wrapping_add(sample_hash(s)))
}

fn sample_hash(s: &Sample) -> u64 {
    // splitmix64's finaliser over each field in turn: cheap, stable across platforms and
    // versions (the value is compared between machines, so it must never change).
    let mut h = mix64(s.t_us as u64);
    for v in s.v {
        h = mix64(h ^ (v as u32 as u64));
    }
    h
}

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where a monitor stands, as its source (the BLE collector or the simulator) reports it and
/// the advisory engine reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceStatus {
    /// The link is up and the device sends (or is about to send) data; clears "disconnected".
    Connected,
    /// The link is down; its channels deliver nothing until it reconnects. Raises
    /// "disconnected".
    Disconnected,
    /// The sensor touches the patient (`true`, clears "sensor off") or has come off (`false`,
    /// raises it); while off, the device stays connected but its channels deliver nothing.
    SensorContact(bool),
}

impl DeviceStatus {
    /// The stable name in documents and APIs: `connected`, `disconnected` or `sensor_off`
    /// (a sensor back on the patient reads as connected).
    pub fn name(self) -> &'static str {
        match self {
            DeviceStatus::Connected | DeviceStatus::SensorContact(true) => "connected",
            DeviceStatus::Disconnected => "disconnected",
            DeviceStatus::SensorContact(false) => "sensor_off",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_ignores_order_and_sees_every_field() {
        let a = Sample::scalar(1_000, 70);
        let b = Sample {
            t_us: 2_000,
            v: [120, 80, 93],
        };
        assert_eq!(checksum([&a, &b]), checksum([&b, &a]));
        assert_ne!(checksum([&a]), checksum([&Sample::scalar(1_000, 71)]));
        assert_ne!(checksum([&a]), checksum([&Sample::scalar(1_001, 70)]));
        assert_ne!(
            checksum([&b]),
            checksum([&Sample {
                t_us: 2_000,
                v: [120, 80, 94]
            }])
        );
        // A duplicated sample changes the sum: duplicates can't hide.
        assert_ne!(checksum([&a]), checksum([&a, &a]));
        assert_eq!(checksum([]), 0);
    }
}
