//! The SIG's Date Time characteristic (0x2A08) as it appears inside measurements (the optional
//! time stamp of blood pressure, temperature and PLX spot-check values): seven bytes of
//! civil time with no time zone.
//!
//! The fields are kept exactly as sent and not validated: the recorder stamps samples with its
//! own clock (see [`super::to_samples`]), and a device's clock is often unset or wrong, so this
//! is shown to people, never trusted as the time of a sample.

use serde::Serialize;

/// Size of a Date Time field in bytes: year (u16), month, day, hours, minutes, seconds.
pub const DATE_TIME_LEN: usize = 7;

/// A device's local civil time, as sent. Zero in `year`, `month` or `day` means "not known" per
/// the SIG; other out-of-range values are kept as they came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct DateTime {
    /// Year, 1582–9999, or 0 if unknown.
    pub year: u16,
    /// Month 1–12, or 0 if unknown.
    pub month: u8,
    /// Day of the month 1–31, or 0 if unknown.
    pub day: u8,
    /// Hours 0–23.
    pub hours: u8,
    /// Minutes 0–59.
    pub minutes: u8,
    /// Seconds 0–59.
    pub seconds: u8,
}

impl DateTime {
    /// The seven bytes this value is sent as (used to build payloads in tests and by
    /// simulated peripherals).
    pub fn to_bytes(&self) -> [u8; DATE_TIME_LEN] {
        let [y0, y1] = self.year.to_le_bytes();
        [
            y0,
            y1,
            self.month,
            self.day,
            self.hours,
            self.minutes,
            self.seconds,
        ]
    }
}
