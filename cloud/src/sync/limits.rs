//! The sync server's admission limits, as plain state machines that take `now`: how many
//! appliances may be connected at once ([`ConnectionTable`]) and how fast one appliance may
//! send document changes ([`TokenBucket`]). The server wires them to QUIC; tests drive them
//! with chosen times.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use vigil_shared::wire::MAX_FRAME_BYTES;

/// Most appliances connected at once. DESIGN.md targets at least 200 connected appliances;
/// five times that keeps room for growth while bounding the per-connection tasks, buffers and
/// cached documents a flood of (valid) certificates could pin.
pub const MAX_APPLIANCE_CONNECTIONS: usize = 1_024;

/// Sync payload bytes one appliance may send per second, sustained. A whole 56-minute ECG
/// session document is about 0.7 MB; an appliance catching up after a day offline sends eight
/// of them, so 4 MiB/s lets a full day's backlog through in under two seconds while one
/// appliance cannot take more than its share of the cloud's two cores and its disk.
pub const APPLIANCE_BYTES_PER_S: u64 = 4 << 20;

/// Bytes an appliance may send at once after a quiet spell: one largest frame, so a whole
/// document in one message (which Automerge sends to a peer missing much of it) never waits.
pub const APPLIANCE_BURST_BYTES: u64 = MAX_FRAME_BYTES as u64;

/// A token bucket that delays instead of refusing: taking more than is available puts the
/// bucket in debt and says how long to wait before going on. The server waits that long
/// before reading the appliance's next frame, so QUIC's flow control pushes back on the
/// appliance instead of the cloud buffering or refusing its data.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_s: u64,
    burst: u64,
    /// Tokens available (negative: debt), as of `at`.
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket refilled at `rate_per_s` up to `burst`.
    pub fn new(rate_per_s: u64, burst: u64, now: Instant) -> TokenBucket {
        debug_assert!(rate_per_s > 0 && burst > 0);
        TokenBucket {
            rate_per_s: rate_per_s.max(1),
            burst,
            tokens: burst as f64,
            at: now,
        }
    }

    /// The appliance bucket: [`APPLIANCE_BYTES_PER_S`], [`APPLIANCE_BURST_BYTES`].
    pub fn for_appliance(now: Instant) -> TokenBucket {
        TokenBucket::new(APPLIANCE_BYTES_PER_S, APPLIANCE_BURST_BYTES, now)
    }

    /// Takes `n` tokens at `now`; returns how long the caller should wait before its next
    /// use (zero when the bucket was not in debt).
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens =
            (self.tokens + elapsed * self.rate_per_s as f64).min(self.burst as f64) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate_per_s as f64)
        }
    }
}

/// What [`ConnectionTable::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<C> {
    /// Admitted; a connection of the same appliance that was open is handed back to be closed
    /// (an appliance that restarted or lost its link reconnects before the old connection
    /// times out, and two connections of one appliance would sync the same documents twice).
    Admitted {
        /// The appliance's previous connection, to close.
        replaced: Option<C>,
    },
    /// Refused: [`MAX_APPLIANCE_CONNECTIONS`] (or the table's limit) appliances are connected.
    Full {
        /// The limit reached.
        limit: usize,
    },
}

/// Connections by appliance, at most `limit` appliances at once.
#[derive(Debug)]
pub struct ConnectionTable<K, C> {
    limit: usize,
    map: HashMap<K, C>,
}

impl<K: Hash + Eq, C> ConnectionTable<K, C> {
    /// An empty table admitting at most `limit` appliances.
    pub fn new(limit: usize) -> ConnectionTable<K, C> {
        ConnectionTable {
            limit,
            map: HashMap::new(),
        }
    }

    /// Admits `conn` for appliance `key`, replacing its previous connection, unless the table
    /// is full of other appliances.
    pub fn admit(&mut self, key: K, conn: C) -> Admission<C> {
        if !self.map.contains_key(&key) && self.map.len() >= self.limit {
            return Admission::Full { limit: self.limit };
        }
        Admission::Admitted {
            replaced: self.map.insert(key, conn),
        }
    }

    /// Removes the appliance's connection if `is_this` says it is the one registered (a
    /// replaced connection ending must not remove its successor).
    pub fn remove_if(&mut self, key: &K, is_this: impl FnOnce(&C) -> bool) {
        if self.map.get(key).is_some_and(is_this) {
            self.map.remove(key);
        }
    }

    /// Takes every connection out (to close them all).
    pub fn drain(&mut self) -> Vec<C> {
        self.map.drain().map(|(_, c)| c).collect()
    }

    /// Appliances connected.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is connected.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_burst_through_then_paces_at_its_rate() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut b = TokenBucket::new(1_000, 500, t0);
        // (at ms, bytes taken, wait expected in ms)
        let steps: [(u64, u64, u64); 6] = [
            (0, 500, 0),     // the burst
            (0, 100, 100),   // 100 bytes of debt: 100 ms at 1,000 B/s
            (100, 100, 100), // repaid by then, in debt again
            (1_100, 0, 0),   // a quiet second refills to the burst, no more
            (1_100, 500, 0), // the burst again, not 1,500
            (1_100, 1, 1),
        ];
        for (at, n, wait_ms) in steps {
            let wait = b.take(n, ms(at));
            assert!(
                wait.abs_diff(Duration::from_millis(wait_ms)) < Duration::from_micros(10),
                "at {at} ms taking {n}: waited {wait:?}, expected {wait_ms} ms"
            );
        }
    }

    #[test]
    fn the_appliance_bucket_passes_a_whole_largest_frame_at_once() {
        let t0 = Instant::now();
        let mut b = TokenBucket::for_appliance(t0);
        assert_eq!(b.take(MAX_FRAME_BYTES as u64, t0), Duration::ZERO);
        // Another one right after waits the time the rate needs for it: two seconds.
        let wait = b.take(MAX_FRAME_BYTES as u64, t0);
        let expected = MAX_FRAME_BYTES as f64 / APPLIANCE_BYTES_PER_S as f64;
        assert!((wait.as_secs_f64() - expected).abs() < 1e-6, "{wait:?}");
        // Time going backwards (another task's earlier `now`) neither refills nor panics.
        assert!(b.take(1, t0 - Duration::from_secs(1)) > Duration::ZERO);
    }

    #[test]
    fn the_table_admits_up_to_its_limit_and_replaces_an_appliances_old_connection() {
        let mut t: ConnectionTable<&str, u32> = ConnectionTable::new(2);
        assert_eq!(t.admit("a", 1), Admission::Admitted { replaced: None });
        assert_eq!(t.admit("b", 2), Admission::Admitted { replaced: None });
        assert_eq!(t.admit("c", 3), Admission::Full { limit: 2 });
        // The same appliance again: admitted even when full, the old connection handed back.
        assert_eq!(t.admit("a", 4), Admission::Admitted { replaced: Some(1) });
        assert_eq!(t.len(), 2);
        // The replaced connection ending does not remove its successor.
        t.remove_if(&"a", |c| *c == 1);
        assert_eq!(t.len(), 2);
        t.remove_if(&"a", |c| *c == 4);
        assert_eq!(t.admit("c", 5), Admission::Admitted { replaced: None });
        let mut all = t.drain();
        all.sort();
        assert_eq!(all, vec![2, 5]);
        assert!(t.is_empty());
    }

    #[test]
    fn the_limit_covers_the_designed_fleet() {
        // DESIGN.md: at least 200 connected appliances.
        const { assert!(MAX_APPLIANCE_CONNECTIONS >= 200) };
        let mut t = ConnectionTable::new(MAX_APPLIANCE_CONNECTIONS);
        for i in 0..MAX_APPLIANCE_CONNECTIONS {
            assert!(matches!(t.admit(i, ()), Admission::Admitted { .. }));
        }
        assert_eq!(
            t.admit(usize::MAX, ()),
            Admission::Full {
                limit: MAX_APPLIANCE_CONNECTIONS
            }
        );
    }
}
