//! Counting what the cloud holds against what the appliances recorded, for the reliability
//! table: per session and channel, the appliance's and the cloud's APIs are compared by sample
//! count and order-independent checksum; where they differ, every sample is fetched from both
//! and compared as multisets, so `lost` and `duplicated` are exact counts, not guesses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Http, channel_digest};
use vigil::reliability::Row;

/// Samples recorded, held by the cloud, lost and duplicated, summed over sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Samples the appliance recorded (its API, committed data only).
    pub recorded: u64,
    /// Of those, samples the cloud holds (each counted once).
    pub in_cloud: u64,
    /// Recorded samples the cloud lacks.
    pub lost: u64,
    /// Samples the cloud holds more often than the appliance recorded them.
    pub duplicated: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.recorded += o.recorded;
        self.in_cloud += o.in_cloud;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
    }
}

/// One session on one appliance, compared with the cloud.
pub async fn compare_session(edge: &Http, cloud: &Http, id: &str) -> Tally {
    let (st, local) = edge.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(st, 200, "session {id} on the appliance: {local}");
    let (st, remote) = cloud.get(&format!("/api/v1/sessions/{id}")).await;
    let remote_digest = if st == 200 {
        channel_digest(&remote)
    } else {
        Vec::new()
    };
    let mut tally = Tally::default();
    for (channel, n, checksum) in channel_digest(&local) {
        tally.recorded += n;
        let same = remote_digest
            .iter()
            .any(|(c, m, sum)| *c == channel && *m == n && *sum == checksum);
        if same {
            tally.in_cloud += n;
            continue;
        }
        // They differ: count exactly which samples are missing or extra.
        let mine = multiset(edge.all_vitals(id, &channel).await);
        let theirs = if st == 200 {
            multiset(cloud.all_vitals(id, &channel).await)
        } else {
            BTreeMap::new()
        };
        for (sample, count) in &mine {
            let held = theirs.get(sample).copied().unwrap_or(0);
            tally.in_cloud += held.min(*count);
            tally.lost += count.saturating_sub(held);
        }
        for (sample, count) in &theirs {
            let recorded = mine.get(sample).copied().unwrap_or(0);
            tally.duplicated += count.saturating_sub(recorded);
        }
    }
    tally
}

fn multiset(samples: Vec<Vec<i64>>) -> BTreeMap<Vec<i64>, u64> {
    let mut m = BTreeMap::new();
    for s in samples {
        *m.entry(s).or_insert(0) += 1;
    }
    m
}

/// Whether the cloud's counts and checksums equal the appliance's for every session.
pub async fn all_equal(sessions: &[(&Http, &str)], cloud: &Http) -> bool {
    for (edge, id) in sessions {
        let (_, local) = edge.get(&format!("/api/v1/sessions/{id}")).await;
        let (st, remote) = cloud.get(&format!("/api/v1/sessions/{id}")).await;
        if st != 200 || channel_digest(&remote) != channel_digest(&local) {
            return false;
        }
    }
    true
}

/// Waits (at most `timeout`) until the cloud holds every sample of every session exactly as
/// recorded, then counts. Returns the tally and the wall time from `since` until the cloud
/// held everything (or until the timeout, when it never did: the tally then says what is
/// missing, and the caller's assertions fail with the figures).
pub async fn converge(
    sessions: &[(&Http, &str)],
    cloud: &Http,
    since: Instant,
    timeout: Duration,
) -> (Tally, Duration) {
    let deadline = Instant::now() + timeout;
    while !all_equal(sessions, cloud).await && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = since.elapsed();
    let mut tally = Tally::default();
    for (edge, id) in sessions {
        tally += compare_session(edge, cloud, id).await;
    }
    (tally, took)
}

/// Writes the row (stderr, and the rows file when `VIGIL_RELIABILITY_OUT` is set), then
/// asserts the invariants: something was recorded, nothing lost, nothing duplicated.
pub fn report(scenario: &str, load: &str, faults: &str, tally: Tally, took: Duration) {
    Row {
        scenario: scenario.into(),
        load: load.into(),
        faults: faults.into(),
        recorded: tally.recorded,
        in_cloud: tally.in_cloud,
        lost: tally.lost,
        duplicated: tally.duplicated,
        converge_s: took.as_secs_f64(),
    }
    .record();
    assert!(tally.recorded > 0, "{scenario}: nothing was recorded");
    assert_eq!(tally.lost, 0, "{scenario}: samples lost: {tally:?}");
    assert_eq!(
        tally.duplicated, 0,
        "{scenario}: samples duplicated: {tally:?}"
    );
    assert_eq!(tally.in_cloud, tally.recorded, "{scenario}: {tally:?}");
}

/// Asserts the appliance dropped no measured sample (its pending buffer never overflowed), so
/// "recorded" is everything the monitors measured during the sessions.
pub async fn assert_nothing_dropped(edge: &Http) {
    let (st, status) = edge.get("/api/v1/status").await;
    assert_eq!(st, 200, "{status}");
    assert_eq!(
        status["recorder"]["samples_dropped"].as_u64(),
        Some(0),
        "the appliance dropped measured samples: its recorder fell behind the sped-up clock \
         (an overloaded machine?): {}",
        status["recorder"]
    );
}

/// Scenario tests of one test binary take turns: each runs real processes at a sped-up clock,
/// and two at once on a 2-core machine would make each other's recorders fall behind (which
/// [`assert_nothing_dropped`] rightly reports as a failure).
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}
