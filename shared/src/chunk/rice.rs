//! Rice coding of codec version 2: a column's prediction residuals, zigzagged, in blocks of
//! [`BLOCK`] residuals that each carry their own Rice parameter, as FLAC's partitions do.
//!
//! A residual `u` with parameter `k` is `u >> k` in unary (ones ended by a zero) and then its
//! low `k` bits. A quotient of [`ESCAPE_QUOTIENT`] or more (an artefact or a hostile input) is
//! written as that many ones, six bits of the residual's bit length and the residual itself, so
//! no residual costs more than 94 bits to write or to read. Bits are packed most significant
//! first; the last byte is padded with zeros.
//!
//! This module turns residuals into bytes and back; it does not know chunks.

use super::{ChunkError, zigzag_decode, zigzag_encode};

/// Residuals per Rice parameter. Six bits of parameter per 32 residuals cost 0.19 bits per
/// residual and let the parameter follow an ECG's beats (a QRS complex spans about 25 samples
/// at 250 Hz).
const BLOCK: usize = 32;
/// Bits of each block's parameter.
const PARAMETER_BITS: u32 = 6;
/// Quotients at or above this are escaped.
const ESCAPE_QUOTIENT: u64 = 24;
/// Bits of an escaped residual's bit length (0 to 64).
const LENGTH_BITS: u32 = 7;

struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n_bits: u32,
}

impl BitWriter {
    /// Appends the low `n` bits of `value`, most significant first; `n` at most 57.
    fn put(&mut self, value: u64, n: u32) {
        debug_assert!(n <= 57);
        if n == 0 {
            return;
        }
        self.acc = (self.acc << n) | (value & ((1 << n) - 1));
        self.n_bits += n;
        while self.n_bits >= 8 {
            self.n_bits -= 8;
            // The byte above the pending bits.
            self.out.push((self.acc >> self.n_bits) as u8);
        }
    }

    fn put_wide(&mut self, value: u64, n: u32) {
        if n > 32 {
            self.put(value >> 32, n - 32);
            self.put(value, 32);
        } else {
            self.put(value, n);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n_bits > 0 {
            let pad = 8 - self.n_bits;
            self.put(0, pad);
        }
        self.out
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    /// Position in bits.
    bit: usize,
}

impl BitReader<'_> {
    fn get(&mut self, n: u32) -> Result<u64, ChunkError> {
        let mut value = 0_u64;
        for _ in 0..n {
            let byte = *self.bytes.get(self.bit / 8).ok_or(ChunkError::Truncated {
                offset: self.bit / 8,
            })?;
            let bit = (byte >> (7 - self.bit % 8)) & 1;
            value = (value << 1) | u64::from(bit);
            self.bit += 1;
        }
        Ok(value)
    }

    /// Counts ones up to the first zero, at most `limit` of them (then no zero follows).
    fn unary(&mut self, limit: u64) -> Result<u64, ChunkError> {
        let mut count = 0;
        while count < limit && self.get(1)? == 1 {
            count += 1;
        }
        Ok(count)
    }
}

/// Bits to write `u` with parameter `k`.
fn cost_bits(u: u64, k: u32) -> u64 {
    let quotient = u >> k;
    if quotient >= ESCAPE_QUOTIENT {
        ESCAPE_QUOTIENT + u64::from(LENGTH_BITS) + u64::from(64 - u.leading_zeros())
    } else {
        quotient + 1 + u64::from(k)
    }
}

/// The parameter that writes `block` in the fewest bits, and that number.
fn best_parameter(block: &[u64]) -> (u32, u64) {
    let max_k = (1 << PARAMETER_BITS) - 1;
    let mean = block.iter().map(|&u| u128::from(u)).sum::<u128>() / block.len().max(1) as u128;
    // The best parameter lies near log2 of the mean; look a few either side.
    let centre = 128 - mean.leading_zeros();
    let low = centre.saturating_sub(3);
    let high = (centre + 2).min(max_k);
    (low..=high)
        .map(|k| (k, block.iter().map(|&u| cost_bits(u, k)).sum::<u64>()))
        .min_by_key(|&(_, bits)| bits)
        .unwrap_or((0, 0))
}

/// Writes `residuals` in blocks, each with its best parameter.
pub(super) fn encode(residuals: &[i64]) -> Vec<u8> {
    let mut writer = BitWriter {
        out: Vec::with_capacity(residuals.len()),
        acc: 0,
        n_bits: 0,
    };
    let zigzagged: Vec<u64> = residuals.iter().map(|&r| zigzag_encode(r)).collect();
    for block in zigzagged.chunks(BLOCK) {
        let (k, _) = best_parameter(block);
        writer.put(u64::from(k), PARAMETER_BITS);
        for &u in block {
            let quotient = u >> k;
            if quotient >= ESCAPE_QUOTIENT {
                writer.put((1 << ESCAPE_QUOTIENT) - 1, ESCAPE_QUOTIENT as u32);
                let length = 64 - u.leading_zeros();
                writer.put(u64::from(length), LENGTH_BITS);
                writer.put_wide(u, length);
            } else {
                // A quotient below 24 and a zero: at most 25 bits.
                writer.put(((1 << quotient) - 1) << 1, quotient as u32 + 1);
                writer.put_wide(u, k);
            }
        }
    }
    writer.finish()
}

/// Reads `n` residuals; `bytes` must hold exactly them (and at most seven bits of padding).
pub(super) fn decode(bytes: &[u8], n: usize) -> Result<Vec<i64>, ChunkError> {
    let mut reader = BitReader { bytes, bit: 0 };
    let mut residuals = Vec::with_capacity(n);
    let mut k = 0;
    for index in 0..n {
        if index % BLOCK == 0 {
            k = reader.get(PARAMETER_BITS)? as u32;
        }
        let quotient = reader.unary(ESCAPE_QUOTIENT)?;
        let u = if quotient >= ESCAPE_QUOTIENT {
            let length = reader.get(LENGTH_BITS)? as u32;
            if length > 64 {
                return Err(ChunkError::BadColumn {
                    reason: "escaped Rice residual longer than 64 bits",
                });
            }
            reader.get(length)?
        } else {
            // quotient < 24 and k < 64: the shift may drop high bits of a hostile value, which
            // only makes it wrong, not a panic; a valid stream never has k above 33.
            (quotient << k) | reader.get(k)?
        };
        residuals.push(zigzag_decode(u));
    }
    let used = reader.bit.div_ceil(8);
    if used != bytes.len() {
        return Err(ChunkError::TrailingBytes {
            n_bytes: bytes.len().saturating_sub(used),
        });
    }
    Ok(residuals)
}

/// Bytes [`encode`] would write for `residuals`, without writing them.
pub(super) fn encoded_len(residuals: &[i64]) -> usize {
    let zigzagged: Vec<u64> = residuals.iter().map(|&r| zigzag_encode(r)).collect();
    let bits: u64 = zigzagged
        .chunks(BLOCK)
        .map(|block| u64::from(PARAMETER_BITS) + best_parameter(block).1)
        .sum();
    bits.div_ceil(8) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn extremes_round_trip() {
        let residuals = [0, 1, -1, i64::MAX, i64::MIN, 0, 3, -300, 1 << 40, 7];
        let bytes = encode(&residuals);
        assert_eq!(bytes.len(), encoded_len(&residuals));
        assert_eq!(decode(&bytes, residuals.len()), Ok(residuals.to_vec()));
    }

    proptest! {
        #[test]
        fn residuals_round_trip(residuals in prop::collection::vec(any::<i64>(), 0..200)) {
            let bytes = encode(&residuals);
            prop_assert_eq!(bytes.len(), encoded_len(&residuals));
            prop_assert_eq!(decode(&bytes, residuals.len()), Ok(residuals));
        }

        #[test]
        fn small_residuals_round_trip(residuals in prop::collection::vec(-40_i64..40, 0..2000)) {
            let bytes = encode(&residuals);
            prop_assert_eq!(bytes.len(), encoded_len(&residuals));
            prop_assert_eq!(decode(&bytes, residuals.len()), Ok(residuals));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..100),
            n in 0_usize..500,
        ) {
            let _ = decode(&bytes, n);
        }
    }
}
