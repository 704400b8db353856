//! Heartbeats, generated in fixed one-minute blocks so that any instant is reachable in O(1).
//!
//! Block `b` covers the beats from its anchor `A_b` (a little after `b` minutes from the origin,
//! at a hash-derived offset) up to, not including, `A_{b+1}`. Inside, RR intervals follow the
//! profile's trend with breathing and per-beat jitter, then are scaled so the last one lands
//! exactly on the next anchor: blocks join seamlessly and each depends only on (seed, b). The
//! scaling changes the rate by at most half a beat per minute, below the jitter. Beat times are
//! relative to the origin, in microseconds; this module knows nothing of channels or devices.

use super::US_PER_S;
use super::detmath;
use super::physiology::Profile;

/// The length of a beat block. One minute keeps the end-of-block rescaling (at most half an RR
/// interval spread over the block) below 1 %, and regenerating a block costs about 70 beats.
pub(crate) const BLOCK_US: i64 = 60 * US_PER_S;

/// How far after its block's start an anchor beat can fall.
const ANCHOR_JITTER_US: i64 = 250_000;

/// Beat-to-beat jitter, as the bound of a triangular fraction of the RR interval (standard
/// deviation about 2 %, a resting adult's RMSSD of 20–40 ms together with breathing).
const BEAT_JITTER_FRACTION: f64 = 0.05;

/// Variation of the R-wave amplitude with breathing (the heart's axis moves with the diaphragm).
const R_BREATHING_FRACTION: f64 = 0.04;

/// Beat-to-beat variation of the R-wave amplitude.
const R_JITTER_FRACTION: f64 = 0.02;

/// More beats than a block can hold: at the profile's 150 bpm ceiling, shortened by breathing
/// and jitter, a minute holds about 170.
const MAX_BEATS_PER_BLOCK: usize = 240;

/// One heartbeat: the R peak's time and what the ECG needs to draw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Beat {
    /// The R peak, microseconds after the origin.
    pub(crate) t_us: i64,
    /// The R wave's amplitude, µV.
    pub(crate) r_uv: f64,
    /// Scale of the QT interval: the square root of the expected RR in seconds (Bazett).
    pub(crate) qt_scale: f64,
}

/// The block that contains relative time `t_us` (floor division).
pub(crate) fn block_of(t_us: i64) -> i64 {
    t_us.div_euclid(BLOCK_US)
}

/// The first beat of block `b`, microseconds after the origin.
fn anchor_us(profile: &Profile, b: i64) -> i64 {
    // The hash index is the block number's two's-complement bits: any fixed bijection works.
    let jitter = detmath::unit(profile.anchor.at(b as u64));
    b * BLOCK_US + (jitter * ANCHOR_JITTER_US as f64) as i64
}

/// Appends the beats of block `b` to `out`, in time order.
pub(crate) fn generate_block(profile: &Profile, b: i64, out: &mut Vec<Beat>) {
    let start_us = anchor_us(profile, b);
    let span_s = (anchor_us(profile, b + 1) - start_us) as f64 / US_PER_S as f64;
    let start_s = start_us as f64 / US_PER_S as f64;
    let jitter = profile.beat.child(b as u64);

    // offsets_s[i] is the unscaled offset of beat i from the anchor.
    let mut offsets_s = [0.0f64; MAX_BEATS_PER_BLOCK + 1];
    let mut n_beats = MAX_BEATS_PER_BLOCK;
    for i in 0..MAX_BEATS_PER_BLOCK {
        let rr_s = profile.rr_s(start_s + offsets_s[i])
            * (1.0 + BEAT_JITTER_FRACTION * jitter.triangular(2 * i as u64));
        offsets_s[i + 1] = offsets_s[i] + rr_s;
        if offsets_s[i + 1] >= span_s {
            // Keep whichever count of beats fills the span with the least rescaling.
            let overshoot = offsets_s[i + 1] - span_s;
            let undershoot = span_s - offsets_s[i];
            n_beats = if i == 0 || overshoot <= undershoot {
                i + 1
            } else {
                i
            };
            break;
        }
    }
    debug_assert!(
        n_beats < MAX_BEATS_PER_BLOCK,
        "heart rate model exceeded its ceiling"
    );

    let scale = span_s / offsets_s[n_beats];
    for (i, offset_s) in offsets_s[..n_beats].iter().enumerate() {
        let t_s_from_anchor = offset_s * scale;
        let t_s = start_s + t_s_from_anchor;
        let r_jitter = jitter.triangular(2 * i as u64 + 1);
        out.push(Beat {
            t_us: start_us + (t_s_from_anchor * US_PER_S as f64).round() as i64,
            r_uv: profile.r_peak_uv
                * (1.0
                    + R_BREATHING_FRACTION * profile.breathing(t_s)
                    + R_JITTER_FRACTION * r_jitter),
            qt_scale: profile.rr_s(t_s).sqrt(),
        });
    }
}

/// How many generated blocks a patient keeps: a poll spans at most a couple of blocks plus the
/// history before it, so four cover sequential polling without regenerating anything.
const CACHED_BLOCKS: usize = 4;

/// Recently generated blocks. Only a speed-up: a block's beats depend on (profile, b) alone.
#[derive(Debug, Clone, Default)]
pub(crate) struct BeatCache {
    /// (block number, its beats), most recently used last.
    blocks: Vec<(i64, Vec<Beat>)>,
}

impl BeatCache {
    /// Every beat with `from_us <= t_us < to_us` (relative times), in time order.
    pub(crate) fn beats_between(
        &mut self,
        profile: &Profile,
        from_us: i64,
        to_us: i64,
    ) -> Vec<Beat> {
        let mut beats = Vec::new();
        if to_us <= from_us {
            return beats;
        }
        // Block b - 1's last beats fall in [b * BLOCK_US, A_b), so start one block early.
        for b in block_of(from_us) - 1..=block_of(to_us) {
            let block = self.block(profile, b);
            beats.extend(
                block
                    .iter()
                    .filter(|beat| (from_us..to_us).contains(&beat.t_us)),
            );
        }
        beats
    }

    fn block(&mut self, profile: &Profile, b: i64) -> &[Beat] {
        let index = match self.blocks.iter().position(|(number, _)| *number == b) {
            Some(index) => index,
            None => {
                if self.blocks.len() == CACHED_BLOCKS {
                    self.blocks.remove(0);
                }
                let mut beats = Vec::with_capacity(128);
                generate_block(profile, b, &mut beats);
                self.blocks.push((b, beats));
                self.blocks.len() - 1
            }
        };
        &self.blocks[index].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Scenario;

    #[test]
    fn blocks_join_without_gaps_or_overlaps() {
        for seed in [0, 1, 7, 42, u64::MAX] {
            let profile = Profile::new(seed, Scenario::Baseline);
            let beats = BeatCache::default().beats_between(&profile, -BLOCK_US, 60 * BLOCK_US);
            for pair in beats.windows(2) {
                let rr_ms = (pair[1].t_us - pair[0].t_us) / 1_000;
                assert!(
                    (450..=1_300).contains(&rr_ms),
                    "seed {seed}: rr {rr_ms} ms at {}",
                    pair[0].t_us
                );
            }
        }
    }

    #[test]
    fn cached_and_fresh_blocks_agree() {
        let profile = Profile::new(3, Scenario::Hypertension);
        let mut cache = BeatCache::default();
        let mut cached = Vec::new();
        for b in [5, 6, 7, 8, 9, 5, 30, 6] {
            cached.push(cache.beats_between(&profile, b * BLOCK_US, (b + 1) * BLOCK_US));
        }
        for (b, got) in [5, 6, 7, 8, 9, 5, 30, 6].into_iter().zip(cached) {
            let fresh =
                BeatCache::default().beats_between(&profile, b * BLOCK_US, (b + 1) * BLOCK_US);
            assert_eq!(got, fresh, "block {b}");
        }
    }
}
