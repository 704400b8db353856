//! The `VitalsSource` trait: what the appliance's recorder pulls vital signs from.
//!
//! A source is polled with the current time and hands out whatever it has gathered since the
//! last poll: sample batches and device status changes. The simulator
//! ([`crate::sim::SimulatedSource`]) computes them from a virtual patient; the BLE collector
//! (later) drains the queue its notification handlers fill. This module holds no clock and does
//! no I/O: `now_us` comes from the caller, which owns the (possibly accelerated) clock.

pub use vigil_shared::vitals::DeviceStatus;
use vigil_shared::vitals::{Channel, SampleBatch};

/// One thing a source hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// Samples of one channel, in time order.
    Samples(SampleBatch),
    /// A device's status changed (or, on the first poll, is announced).
    Device {
        /// The device's name, e.g. `hr-strap` or `oximeter`.
        device: String,
        /// Its new status.
        status: DeviceStatus,
        /// When the change happened, microseconds since the Unix epoch.
        at_us: i64,
    },
}

/// A producer of vital signs for one room: the simulator, or the BLE collector.
///
/// Object-safe on purpose: the appliance holds a `Box<dyn VitalsSource>` chosen at start-up.
pub trait VitalsSource: Send {
    /// A short description for the status API (e.g. "simulator seed=7 scenario=hypertension").
    fn describe(&self) -> String;

    /// Everything the source has up to `now_us` that it has not handed out yet, in time order
    /// per channel.
    fn poll(&mut self, now_us: i64) -> Vec<SourceEvent>;

    /// The channels this source is expected to deliver (for "no data" advisories).
    fn channels(&self) -> Vec<Channel>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that delivers nothing, to prove the trait can be boxed.
    struct Silent;

    impl VitalsSource for Silent {
        fn describe(&self) -> String {
            "silent".to_owned()
        }

        fn poll(&mut self, _now_us: i64) -> Vec<SourceEvent> {
            Vec::new()
        }

        fn channels(&self) -> Vec<Channel> {
            Vec::new()
        }
    }

    #[test]
    fn trait_is_object_safe_and_send() {
        let mut sources: Vec<Box<dyn VitalsSource>> = vec![Box::new(Silent)];
        fn assert_send<T: Send + ?Sized>(_: &T) {}
        assert_send(&sources);
        assert_eq!(sources[0].describe(), "silent");
        assert!(sources[0].poll(0).is_empty());
        assert!(sources[0].channels().is_empty());
    }
}
