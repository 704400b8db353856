//! Wrong PINs at the room screen: how many guesses a client gets for a name, and how long it
//! then waits.
//!
//! Attempts are counted per (staff id, client address), so a flood of wrong PINs from one
//! client slows that client down and nobody else: the nurse keeps signing in from the room's
//! tablet. An attempt is *reserved* under the lock before the PIN is verified and settled
//! after, so parallel guesses cannot slip past the count while argon2 runs. After
//! [`FREE_TRIES`] wrong PINs each further try waits a delay that doubles up to [`MAX_DELAY`].
//! A right PIN clears only its own client's count. A clinician can clear a name's counts from
//! the screen. Counts are written to the appliance's database, so a restart hands out no fresh
//! guesses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

/// Wrong PINs a client may enter for one name before the delays start. With six-digit PINs
/// and [`MAX_DELAY`], guessing one person's PIN from one client takes years.
pub const FREE_TRIES: u32 = 3;

/// The first delay after [`FREE_TRIES`] wrong PINs; it doubles with each further one.
pub const FIRST_DELAY: Duration = Duration::from_secs(30);

/// The longest delay between tries.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// (staff id, client) pairs tracked; past this the oldest settled entry is forgotten, so
/// made-up names from many addresses cannot grow memory without bound.
pub const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Attempts {
    failures: u32,
    in_flight: u32,
    last: Instant,
}

/// The delay before the next try after `failures` wrong PINs.
pub fn delay_after(failures: u32) -> Duration {
    if failures < FREE_TRIES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_TRIES).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// The counts, shared by the screen's handlers.
#[derive(Debug, Default)]
pub struct PinThrottle {
    map: Mutex<HashMap<(String, String), Attempts>>,
}

/// A reserved attempt; settle it with [`PinThrottle::settle`].
#[derive(Debug)]
#[must_use = "an attempt must be settled"]
pub struct Reservation {
    staff_id: String,
    client: String,
}

impl PinThrottle {
    /// Loads the counts kept in the database.
    pub fn load(conn: &Connection, now: Instant, now_us: i64) -> rusqlite::Result<PinThrottle> {
        let mut stmt =
            conn.prepare("SELECT staff_id, client, failures, last_us FROM pin_failures")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut map = HashMap::new();
        for row in rows {
            let (staff_id, client, failures, last_us) = row?;
            let ago = Duration::from_micros(u64::try_from(now_us - last_us).unwrap_or(0));
            let last = now.checked_sub(ago).unwrap_or(now);
            map.insert(
                (staff_id, client),
                Attempts {
                    failures,
                    in_flight: 0,
                    last,
                },
            );
        }
        Ok(PinThrottle {
            map: Mutex::new(map),
        })
    }

    /// Reserves an attempt for `staff_id` from `client`, or says how long to wait.
    pub fn reserve(
        &self,
        staff_id: &str,
        client: &str,
        now: Instant,
    ) -> Result<Reservation, Duration> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let key = (staff_id.to_owned(), client.to_owned());
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED {
            let oldest = map
                .iter()
                .filter(|(_, a)| a.in_flight == 0)
                .min_by_key(|(_, a)| a.last)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    map.remove(&k);
                }
                None => return Err(FIRST_DELAY),
            }
        }
        let a = map.entry(key).or_insert(Attempts {
            failures: 0,
            in_flight: 0,
            last: now,
        });
        // Attempts in flight count as failures until they are settled: that is what stops
        // parallel guesses.
        let pending = a.failures + a.in_flight;
        if pending >= FREE_TRIES {
            let wait = delay_after(pending).saturating_sub(now.saturating_duration_since(a.last));
            if a.in_flight > 0 || !wait.is_zero() {
                return Err(wait.max(Duration::from_secs(1)));
            }
        }
        a.in_flight += 1;
        Ok(Reservation {
            staff_id: staff_id.to_owned(),
            client: client.to_owned(),
        })
    }

    /// Settles a reserved attempt: a right PIN clears this client's count for the name, a
    /// wrong one adds to it. Writes the count to `conn` (errors are logged: the count in
    /// memory still holds).
    pub fn settle(
        &self,
        r: Reservation,
        ok: bool,
        now: Instant,
        now_us: i64,
        conn: Option<&Connection>,
    ) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let key = (r.staff_id, r.client);
        let failures = match map.get_mut(&key) {
            Some(a) => {
                a.in_flight = a.in_flight.saturating_sub(1);
                a.last = now;
                if ok {
                    a.failures = 0;
                } else {
                    a.failures = a.failures.saturating_add(1);
                }
                a.failures
            }
            None => u32::from(!ok),
        };
        drop(map);
        if let Some(conn) = conn {
            let result = if failures == 0 {
                conn.execute(
                    "DELETE FROM pin_failures WHERE staff_id = ?1 AND client = ?2",
                    params![key.0, key.1],
                )
            } else {
                conn.execute(
                    "INSERT INTO pin_failures (staff_id, client, failures, last_us)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(staff_id, client) DO UPDATE
                     SET failures = excluded.failures, last_us = excluded.last_us",
                    params![key.0, key.1, failures, now_us],
                )
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot store the wrong-PIN count");
            }
        }
    }

    /// Names with wrong PINs, each with the clients and their counts, for the unlock page.
    pub fn locked(&self) -> Vec<(String, String, u32)> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map
            .iter()
            .filter(|(_, a)| a.failures >= FREE_TRIES)
            .map(|((s, c), a)| (s.clone(), c.clone(), a.failures))
            .collect();
        out.sort();
        out
    }

    /// Clears every client's count for a name (a clinician vouched for the person).
    pub fn unlock(&self, staff_id: &str, conn: Option<&Connection>) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(s, _), a| s != staff_id || a.in_flight > 0);
        if let Some(conn) = conn
            && let Err(e) = conn.execute("DELETE FROM pin_failures WHERE staff_id = ?1", [staff_id])
        {
            tracing::warn!(error = %e, "cannot clear the stored wrong-PIN counts");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_tries_and_double_to_a_ceiling() {
        let cases = [
            (0, 0),
            (2, 0),
            (3, 30),
            (4, 60),
            (5, 120),
            (7, 480),
            (8, 900),
            (40, 900),
        ];
        for (failures, secs) in cases {
            assert_eq!(
                delay_after(failures),
                Duration::from_secs(secs),
                "{failures}"
            );
        }
    }

    #[test]
    fn parallel_reservations_never_exceed_the_free_tries() {
        let t = PinThrottle::default();
        let now = Instant::now();
        let held: Vec<_> = (0..60)
            .filter_map(|_| t.reserve("nurse-ana", "10.0.0.9", now).ok())
            .collect();
        assert_eq!(held.len(), FREE_TRIES as usize);
        for r in held {
            t.settle(r, false, now, 0, None);
        }
        // Now a delay applies to this client, and only to it.
        assert_eq!(
            t.reserve("nurse-ana", "10.0.0.9", now).unwrap_err(),
            FIRST_DELAY
        );
        let tablet = t.reserve("nurse-ana", "10.0.0.2", now).unwrap();
        t.settle(tablet, true, now, 0, None);
        // After the delay, one more try; a wrong one doubles the wait.
        let later = now + FIRST_DELAY;
        let r = t.reserve("nurse-ana", "10.0.0.9", later).unwrap();
        assert!(
            t.reserve("nurse-ana", "10.0.0.9", later).is_err(),
            "one at a time"
        );
        t.settle(r, false, later, 0, None);
        assert_eq!(
            t.reserve("nurse-ana", "10.0.0.9", later).unwrap_err(),
            FIRST_DELAY * 2
        );
        assert_eq!(t.locked(), vec![("nurse-ana".into(), "10.0.0.9".into(), 4)]);
        t.unlock("nurse-ana", None);
        assert!(t.reserve("nurse-ana", "10.0.0.9", later).is_ok());
    }

    #[test]
    fn counts_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_writer(&dir.path().join("p.db")).unwrap();
        let t = PinThrottle::default();
        let now = Instant::now();
        for _ in 0..FREE_TRIES {
            let r = t.reserve("dr-kim", "10.0.0.9", now).unwrap();
            t.settle(r, false, now, 1_000_000, Some(&conn));
        }
        let again = PinThrottle::load(&conn, now, 1_000_000).unwrap();
        assert!(again.reserve("dr-kim", "10.0.0.9", now).is_err());
        assert!(again.reserve("dr-kim", "10.0.0.2", now).is_ok());
    }
}
