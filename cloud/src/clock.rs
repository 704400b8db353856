//! The cloud's one clock: the system clock, in microseconds since the Unix epoch (the unit of
//! every time Vigil stores). Everything that stamps a time in the cloud reads it here.

/// The system clock, µs since the Unix epoch; 0 for a clock before 1970 (a broken clock, and
/// times stay monotone within a run's arithmetic).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
