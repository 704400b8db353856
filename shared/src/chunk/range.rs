//! The adaptive binary range coder of codec version 2, and the model that codes a column's
//! prediction residuals with it.
//!
//! The coder is the classic carry-less range coder with 11-bit probabilities that LZMA made
//! common: every decision moves its probability towards what was seen, so the model needs no
//! side information. The residual model codes a residual as its bit length (unary, one adaptive
//! probability per length and per *context*), its top mantissa bits (adaptive) and the rest
//! (evenly), then its sign. The context is the bit length of a running average of recent
//! magnitudes, so the quiet baseline and a QRS complex of an ECG each get probabilities of their
//! own: that adaptation is what beats a Rice parameter per block.
//!
//! This module does not know chunks: it turns residuals into bytes and back. Decoding is total:
//! hostile bytes give an error or some residuals, never a panic, and each residual costs at most
//! a bounded number of decisions.

use super::ChunkError;

/// Bits of a probability: decisions are coded with `p / 2^11`.
const PROB_BITS: u32 = 11;
/// Probability one half, every model's start.
const PROB_INIT: u16 = 1 << (PROB_BITS - 1);
/// How fast probabilities adapt: each decision moves them by 1/2^ADAPT_SHIFT of the distance.
/// LZMA's 5; on 5 minutes of MIT-BIH record 208 in 10 s chunks, 4 cost 0.6 % more bytes.
const ADAPT_SHIFT: u32 = 5;
/// Below this the range is renormalised by one byte.
const TOP: u32 = 1 << 24;

/// Contexts: bit lengths 0..CONTEXTS-1 of the running magnitude average (scaled by 4); larger
/// averages share the last one.
const CONTEXTS: usize = 24;
/// Bit lengths of a residual's magnitude: 0 to 64.
const LENGTHS: usize = 65;
/// Mantissa bits below the leading one that get adaptive probabilities; the rest are coded
/// evenly (they are close to uniform noise).
const MODELLED_MANTISSA_BITS: u32 = 2;

/// Bytes a finished stream always ends with: the encoder flushes five bytes of its low end.
pub(super) const FLUSH_BYTES: usize = 5;

struct Encoder {
    out: Vec<u8>,
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
}

impl Encoder {
    fn new() -> Encoder {
        Encoder {
            out: Vec::new(),
            low: 0,
            range: u32::MAX,
            cache: 0,
            cache_size: 1,
        }
    }

    fn shift_low(&mut self) {
        if self.low < 0xFF00_0000 || self.low >= 1 << 32 {
            // The carry out of the low 32 bits, 0 or 1.
            let carry = (self.low >> 32) as u8;
            let mut byte = self.cache;
            while self.cache_size > 0 {
                self.out.push(byte.wrapping_add(carry));
                byte = 0xFF;
                self.cache_size -= 1;
            }
            // Bits 24-31 of low: the next byte to settle.
            self.cache = (self.low >> 24) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    fn normalize(&mut self) {
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    fn bit(&mut self, prob: &mut u16, bit: bool) {
        let bound = (self.range >> PROB_BITS) * u32::from(*prob);
        if bit {
            self.low += u64::from(bound);
            self.range -= bound;
            *prob -= *prob >> ADAPT_SHIFT;
        } else {
            self.range = bound;
            *prob += ((1 << PROB_BITS) - *prob) >> ADAPT_SHIFT;
        }
        self.normalize();
    }

    fn direct_bit(&mut self, bit: bool) {
        self.range >>= 1;
        if bit {
            self.low += u64::from(self.range);
        }
        self.normalize();
    }

    fn finish(mut self) -> Vec<u8> {
        for _ in 0..FLUSH_BYTES {
            self.shift_low();
        }
        self.out
    }
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    range: u32,
    code: u32,
}

impl<'a> Decoder<'a> {
    fn new(bytes: &'a [u8]) -> Result<Decoder<'a>, ChunkError> {
        let mut decoder = Decoder {
            bytes,
            pos: 0,
            range: u32::MAX,
            code: 0,
        };
        // The encoder's first byte is always 0 (its initial cache); anything else is corrupt.
        if decoder.next_byte()? != 0 {
            return Err(bad("range coder stream does not start with 0"));
        }
        for _ in 1..FLUSH_BYTES {
            decoder.code = (decoder.code << 8) | u32::from(decoder.next_byte()?);
        }
        if decoder.code == u32::MAX {
            return Err(bad("range coder stream starts out of range"));
        }
        Ok(decoder)
    }

    fn next_byte(&mut self) -> Result<u8, ChunkError> {
        let byte = *self
            .bytes
            .get(self.pos)
            .ok_or(ChunkError::Truncated { offset: self.pos })?;
        self.pos += 1;
        Ok(byte)
    }

    fn normalize(&mut self) -> Result<(), ChunkError> {
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(self.next_byte()?);
        }
        Ok(())
    }

    fn bit(&mut self, prob: &mut u16) -> Result<bool, ChunkError> {
        let bound = (self.range >> PROB_BITS) * u32::from(*prob);
        let bit = if self.code < bound {
            self.range = bound;
            *prob += ((1 << PROB_BITS) - *prob) >> ADAPT_SHIFT;
            false
        } else {
            // Corrupt input may leave code above range; wrapping keeps this total, and the
            // values that come out are merely wrong, which the caller's checks catch or accept.
            self.code = self.code.wrapping_sub(bound);
            self.range -= bound;
            *prob -= *prob >> ADAPT_SHIFT;
            true
        };
        self.normalize()?;
        Ok(bit)
    }

    fn direct_bit(&mut self) -> Result<bool, ChunkError> {
        self.range >>= 1;
        let bit = self.code >= self.range;
        if bit {
            self.code = self.code.wrapping_sub(self.range);
        }
        self.normalize()?;
        Ok(bit)
    }
}

fn bad(reason: &'static str) -> ChunkError {
    ChunkError::BadColumn { reason }
}

/// The adaptive probabilities of the residual model.
struct Model {
    /// Per context and length: "the magnitude is longer than this".
    longer: Vec<u16>,
    /// Per length and mantissa prefix (1, then 1x): the next mantissa bit.
    mantissa: Vec<u16>,
    /// Per previous sign (zero, positive, negative): "this residual is negative".
    negative: [u16; 3],
    /// Running magnitude average, scaled by 4: it forgets a quarter per residual, so it follows
    /// a QRS complex within a few samples (measured on record 208: 0.2 % smaller than an
    /// average over 16 residuals).
    average: u64,
    previous_sign: usize,
}

impl Model {
    fn new() -> Model {
        Model {
            longer: vec![PROB_INIT; CONTEXTS * LENGTHS],
            mantissa: vec![PROB_INIT; LENGTHS * (1 << MODELLED_MANTISSA_BITS)],
            negative: [PROB_INIT; 3],
            average: 0,
            previous_sign: 0,
        }
    }

    fn context(&self) -> usize {
        (64 - self.average.leading_zeros() as usize).min(CONTEXTS - 1)
    }

    fn update(&mut self, residual: i64) {
        let magnitude = residual.unsigned_abs();
        self.average = (self.average - (self.average >> 2)).saturating_add(magnitude);
        self.previous_sign = match residual.signum() {
            0 => 0,
            1 => 1,
            _ => 2,
        };
    }
}

/// Codes `residuals` with the adaptive model; the result ends with the coder's flush.
pub(super) fn encode(residuals: &[i64]) -> Vec<u8> {
    let mut coder = Encoder::new();
    let mut model = Model::new();
    for &residual in residuals {
        let magnitude = residual.unsigned_abs();
        let length = 64 - magnitude.leading_zeros() as usize;
        let row = model.context() * LENGTHS;
        for i in 0..LENGTHS - 1 {
            let longer = i < length;
            coder.bit(&mut model.longer[row + i], longer);
            if !longer {
                break;
            }
        }
        if length > 1 {
            let mantissa_bits = length as u32 - 1;
            let modelled = mantissa_bits.min(MODELLED_MANTISSA_BITS);
            let mut prefix = 1_usize;
            for j in 0..mantissa_bits {
                let bit = (magnitude >> (mantissa_bits - 1 - j)) & 1 == 1;
                if j < modelled {
                    let index = length * (1 << MODELLED_MANTISSA_BITS) + prefix;
                    coder.bit(&mut model.mantissa[index], bit);
                    prefix = prefix * 2 + usize::from(bit);
                } else {
                    coder.direct_bit(bit);
                }
            }
        }
        if magnitude != 0 {
            coder.bit(&mut model.negative[model.previous_sign], residual < 0);
        }
        model.update(residual);
    }
    coder.finish()
}

/// Decodes `n` residuals from `bytes`, which must be exactly one stream of [`encode`]. Offsets
/// in errors count from the stream's first byte. A residual longer than `max_length` bits is an
/// error: adaptive probabilities let a few hostile bytes claim long residuals cheaply, and this
/// stops them early instead of after a whole column of them.
pub(super) fn decode(bytes: &[u8], n: usize, max_length: usize) -> Result<Vec<i64>, ChunkError> {
    let mut coder = Decoder::new(bytes)?;
    let mut model = Model::new();
    let mut residuals = Vec::with_capacity(n);
    for _ in 0..n {
        let row = model.context() * LENGTHS;
        let mut length = 0;
        while length < LENGTHS - 1 && coder.bit(&mut model.longer[row + length])? {
            length += 1;
            if length > max_length {
                return Err(bad("range-coded residual longer than its column allows"));
            }
        }
        let mut magnitude = u64::from(length > 0);
        if length > 1 {
            let mantissa_bits = length as u32 - 1;
            let modelled = mantissa_bits.min(MODELLED_MANTISSA_BITS);
            let mut prefix = 1_usize;
            for j in 0..mantissa_bits {
                let bit = if j < modelled {
                    let index = length * (1 << MODELLED_MANTISSA_BITS) + prefix;
                    let bit = coder.bit(&mut model.mantissa[index])?;
                    prefix = prefix * 2 + usize::from(bit);
                    bit
                } else {
                    coder.direct_bit()?
                };
                magnitude = (magnitude << 1) | u64::from(bit);
            }
        }
        let negative = magnitude != 0 && coder.bit(&mut model.negative[model.previous_sign])?;
        let residual = if negative {
            // Magnitudes up to 2^63 are negative residuals down to i64::MIN.
            0_i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        }
        .ok_or(bad("range-coded residual out of range"))?;
        model.update(residual);
        residuals.push(residual);
    }
    if coder.pos != bytes.len() {
        return Err(ChunkError::TrailingBytes {
            n_bytes: bytes.len() - coder.pos,
        });
    }
    Ok(residuals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn extremes_round_trip() {
        let residuals = [0, 1, -1, 2, -2, i64::MAX, i64::MIN, 0, 0, 5, -300, 1 << 40];
        assert_eq!(
            decode(&encode(&residuals), residuals.len(), 64),
            Ok(residuals.to_vec())
        );
        assert_eq!(decode(&encode(&[]), 0, 64), Ok(vec![]));
    }

    proptest! {
        #[test]
        fn residuals_round_trip(residuals in prop::collection::vec(any::<i64>(), 0..200)) {
            let bytes = encode(&residuals);
            prop_assert_eq!(decode(&bytes, residuals.len(), 64), Ok(residuals));
        }

        #[test]
        fn small_residuals_round_trip(residuals in prop::collection::vec(-40_i64..40, 0..2000)) {
            let bytes = encode(&residuals);
            prop_assert_eq!(decode(&bytes, residuals.len(), 64), Ok(residuals));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..100),
            n in 0_usize..500,
        ) {
            let _ = decode(&bytes, n, 64);
        }
    }
}
