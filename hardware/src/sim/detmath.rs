//! Deterministic arithmetic for the simulator: a splitmix64-based hash, a tiny seeded generator,
//! and `exp`/`sin` built only from IEEE-754 basic operations (`+ - * /`, `round`), which are
//! correctly rounded everywhere.
//!
//! Why not `f64::exp` and `f64::sin`: those call the platform's libm, whose last bit differs
//! between libcs and architectures. The appliance (often ARM) and a verifier (often x86) must
//! compute bit-identical samples from a seed, so the simulator uses these instead. Accuracy is
//! about 1e-13 relative, far below the one-unit rounding of the recorded integers. This module is
//! not a general maths library: the domains are the ones the simulator uses.

/// The splitmix64 increment (the golden ratio in 64-bit fixed point); spreads consecutive indices.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// 2^-53: maps the top 53 bits of a hash onto [0, 1) exactly.
const UNIT_53: f64 = 1.0 / 9_007_199_254_740_992.0;

/// 2^-32: maps a 32-bit half of a hash onto [0, 1) exactly.
const UNIT_32: f64 = 1.0 / 4_294_967_296.0;

/// The splitmix64 finaliser (Steele, Lea and Flood 2014): a bijective, well-mixed 64-bit hash.
pub(crate) fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A keyed family of hashes: one independent pseudo-random value per `u64` index, reachable in
/// O(1). Every random quantity of the simulator comes from one of these, keyed by
/// (seed, stream), so any sample can be computed without replaying what came before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stream(u64);

impl Stream {
    /// The stream `stream` of the patient seeded by `seed`.
    pub(crate) fn new(seed: u64, stream: u64) -> Stream {
        Stream(mix64(mix64(seed).wrapping_add(
            stream.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA),
        )))
    }

    /// A sub-stream, e.g. one per beat block.
    pub(crate) fn child(self, index: u64) -> Stream {
        Stream(mix64(self.at(index)))
    }

    /// The hash at `index`.
    pub(crate) fn at(self, index: u64) -> u64 {
        mix64(self.0.wrapping_add(index.wrapping_mul(GOLDEN_GAMMA)))
    }

    /// A uniform value in [-1, 1) at `index`.
    pub(crate) fn symmetric(self, index: u64) -> f64 {
        symmetric(self.at(index))
    }

    /// A triangular value in (-1, 1) at `index` (mean 0, standard deviation about 0.41): a cheap
    /// bell shape for noise and jitter.
    pub(crate) fn triangular(self, index: u64) -> f64 {
        triangular(self.at(index))
    }
}

/// Maps a hash onto [0, 1).
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * UNIT_53
}

/// Maps a hash onto [-1, 1).
pub(crate) fn symmetric(h: u64) -> f64 {
    2.0 * unit(h) - 1.0
}

/// Maps a hash onto (-1, 1) with a triangular density: the sum of its two 32-bit halves.
pub(crate) fn triangular(h: u64) -> f64 {
    ((h >> 32) as f64 + (h & 0xffff_ffff) as f64) * UNIT_32 - 1.0
}

/// The splitmix64 generator: draws the per-patient constants in a fixed order.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence depends only on `seed`.
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A uniform value in [lo, hi).
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * unit(self.next_u64())
    }
}

/// ln 2, high part: its last 11 bits are zero, so `k * LN2_HI` is exact for |k| < 2^11.
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
/// ln 2, low part: `LN2_HI + LN2_LO` is ln 2 to about 1e-26 (Cody–Waite reduction, as fdlibm).
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;

/// Below this argument `exp` returns 0: the result would be subnormal, and the simulator only
/// uses `exp` for decays and Gaussian bumps whose tails are negligible long before that.
const EXP_MIN_ARG: f64 = -700.0;
/// Above this argument `exp` saturates (2^1000-ish); the simulator never gets near it.
const EXP_MAX_ARG: f64 = 700.0;

/// e^x from basic operations only, relative error below 1e-14 on [-700, 700].
pub(crate) fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < EXP_MIN_ARG {
        return 0.0;
    }
    let x = x.min(EXP_MAX_ARG);
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // |r| <= 0.35: the Taylor series to r^13 is accurate to below 1e-16 relative.
    let mut p = 1.0 / 6_227_020_800.0; // 1/13!
    for inv_fact in [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + inv_fact;
    }
    // k is in [-1010, 1010] after the clamps above, so the exponent field stays normal.
    let biased = (k as i64 + 1023) as u64;
    p * f64::from_bits(biased << 52)
}

/// π, high part: 33 significant bits, so `q * PI_HI` is exact for |q| < 2^20.
const PI_HI: f64 = 3.141_592_651_605_606;
/// π minus [`PI_HI`].
const PI_LO: f64 = 1.984_187_159_361_081e-9;

/// sin(x) from basic operations only, absolute error below 1e-12 for |x| < 1e6 (the simulator's
/// phases stay far below that: a 12-hour horizon at a few hertz).
pub(crate) fn sin(x: f64) -> f64 {
    let q = (x * std::f64::consts::FRAC_1_PI).round();
    let r = (x - q * PI_HI) - q * PI_LO;
    // |r| <= π/2: odd Taylor series to r^19, error below 1e-14.
    let r2 = r * r;
    let mut p = -1.0 / 121_645_100_408_832_000.0; // -1/19!
    for coeff in [
        1.0 / 355_687_428_096_000.0,
        -1.0 / 1_307_674_368_000.0,
        1.0 / 6_227_020_800.0,
        -1.0 / 39_916_800.0,
        1.0 / 362_880.0,
        -1.0 / 5_040.0,
        1.0 / 120.0,
        -1.0 / 6.0,
        1.0,
    ] {
        p = p * r2 + coeff;
    }
    let s = p * r;
    // sin(r + qπ) = (-1)^q sin(r).
    if (q as i64) & 1 == 0 { s } else { -s }
}

/// A smooth 0 → 1 ramp (cubic smoothstep) for `x` in [0, 1], clamped outside.
pub(crate) fn smoothstep(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn exp_matches_libm(x in -60.0f64..5.0) {
            let want = x.exp();
            prop_assert!(((exp(x) - want) / want).abs() < 1e-13, "exp({x}) = {} vs {want}", exp(x));
        }

        #[test]
        fn sin_matches_libm(x in -1.0e5f64..1.0e5) {
            prop_assert!((sin(x) - x.sin()).abs() < 1e-10, "sin({x}) = {} vs {}", sin(x), x.sin());
        }
    }

    #[test]
    fn exp_edges() {
        for (x, want) in [(0.0, 1.0), (1.0, std::f64::consts::E), (-800.0, 0.0)] {
            assert!((exp(x) - want).abs() < 1e-15, "exp({x})");
        }
        assert!(exp(f64::NAN).is_nan());
    }

    #[test]
    fn noise_shapes_stay_in_range() {
        let s = Stream::new(7, 1);
        let mut sum = 0.0;
        for i in 0..10_000 {
            let (u, t) = (s.symmetric(i), s.triangular(i));
            assert!((-1.0..1.0).contains(&u) && t > -1.0 && t < 1.0);
            sum += t;
        }
        assert!((sum / 10_000.0).abs() < 0.02, "triangular noise is centred");
    }

    #[test]
    fn streams_are_independent() {
        assert_ne!(Stream::new(7, 1).at(0), Stream::new(7, 2).at(0));
        assert_ne!(Stream::new(7, 1).at(0), Stream::new(8, 1).at(0));
        assert_ne!(
            Stream::new(7, 1).child(3).at(0),
            Stream::new(7, 1).child(4).at(0)
        );
    }
}
