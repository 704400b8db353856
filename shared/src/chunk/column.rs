//! One column of a codec-version-2 chunk: the values of one dimension, or the time residuals of
//! the `deltas` time layout, each coded the way that is smallest for it.
//!
//! ```text
//! u8  column byte: bits 0-1 coding, bits 2-4 predictor order (0 for coding 0), bits 5-7 zero
//! coding 0, plain: exactly version 1's column (zigzag varints: value columns the first
//!          value and then differences, the time column each residual)
//! coding 1, Rice, and 2, range-coded:
//!   zigzag varint  first value x_0
//!   varint         factor f >= 1: every x_k - x_0 is a multiple of f
//!   varint         length in bytes of the residual stream that follows
//!   residuals of q_k = (x_k - x_0) / f for k = 1..n: q_k minus the fixed polynomial predictor
//!   of order min(p, k) on q_(k-1) .. q_(k-p) (q_0 = 0), as Rice blocks or one range-coder
//!   stream (see `rice` and `range`)
//! ```
//!
//! The factor takes out a monitor's step (5 µV for an 11-bit ADC at 200 units per mV); the fixed
//! predictors of order 0 to 4 are FLAC's (0, q1, 2q1 - q2, 3q1 - 3q2 + q3, 4q1 - 6q2 + 4q3 -
//! q4). The encoder picks the order with the smallest sum of absolute residuals, then keeps the
//! smallest of the three codings, so a column never costs more than version 1's plus one byte.
//!
//! Decoding checks every step: a factor of zero, an unknown coding, a residual stream of the
//! wrong length and any overflow are errors.

use super::{
    ChunkError, decode_varint_u64, encode_varint_u64, varint_len, zigzag_decode, zigzag_encode,
};
use super::{range, rice};

/// Coding 0: version 1's zigzag varints.
const CODING_PLAIN: u8 = 0;
/// Coding 1: Rice blocks.
const CODING_RICE: u8 = 1;
/// Coding 2: the adaptive range coder.
const CODING_RANGE: u8 = 2;
/// Bits 0-1 of the column byte.
const CODING_BITS: u8 = 0b0000_0011;
/// Bits 2-4 of the column byte, shifted down.
const ORDER_SHIFT: u32 = 2;
const ORDER_MASK: u8 = 0b0000_0111;
/// Longest residual of a value column in bits: quotients lie within ±2^32 (differences of two
/// i32s) and a prediction within 15 times that, so a residual's magnitude is below 2^36; one
/// bit to spare.
const MAX_VALUE_RESIDUAL_BITS: usize = 37;
/// Highest fixed predictor order.
const MAX_ORDER: usize = 4;

/// What a column holds, which decides its plain coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColumnKind {
    /// Sample values: plain coding stores differences of consecutive values.
    Values,
    /// Time residuals of the `deltas` layout: plain coding stores each one.
    TimeResiduals,
}

fn bad(reason: &'static str) -> ChunkError {
    ChunkError::BadColumn { reason }
}

/// Appends version 1's coding of `xs` to `out`.
pub(super) fn encode_plain(out: &mut Vec<u8>, xs: &[i64], kind: ColumnKind) {
    let mut prev = 0_i64;
    for &x in xs {
        // Value columns hold i32s, so the difference cannot overflow; time residuals are
        // stored as they are.
        let stored = match kind {
            ColumnKind::Values => x.wrapping_sub(prev),
            ColumnKind::TimeResiduals => x,
        };
        encode_varint_u64(out, zigzag_encode(stored));
        prev = x;
    }
}

fn plain_len(xs: &[i64], kind: ColumnKind) -> usize {
    let mut prev = 0_i64;
    xs.iter()
        .map(|&x| {
            let stored = match kind {
                ColumnKind::Values => x.wrapping_sub(prev),
                ColumnKind::TimeResiduals => x,
            };
            prev = x;
            varint_len(zigzag_encode(stored))
        })
        .sum()
}

/// Reads version 1's coding of `n` values at `*pos`. Value columns must stay within i32.
pub(super) fn decode_plain(
    bytes: &[u8],
    pos: &mut usize,
    n: usize,
    kind: ColumnKind,
) -> Result<Vec<i64>, ChunkError> {
    let mut xs = Vec::with_capacity(n);
    let mut prev = 0_i64;
    for index in 0..n {
        let stored = zigzag_decode(decode_varint_u64(bytes, pos)?);
        let x = match kind {
            ColumnKind::Values => prev
                .checked_add(stored)
                .filter(|v| i32::try_from(*v).is_ok())
                .ok_or(ChunkError::Overflow {
                    what: "value",
                    index,
                })?,
            ColumnKind::TimeResiduals => stored,
        };
        xs.push(x);
        prev = x;
    }
    Ok(xs)
}

/// The fixed polynomial prediction of order `order` from the previous values, newest first.
fn predict(order: usize, q: &[i128]) -> i128 {
    match order {
        0 => 0,
        1 => q[0],
        2 => 2 * q[0] - q[1],
        3 => 3 * q[0] - 3 * q[1] + q[2],
        _ => 4 * q[0] - 6 * q[1] + 4 * q[2] - q[3],
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn gcd_u64(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The greatest common divisor of the offsets' magnitudes (0 when all are 0). It stops at 1,
/// which most signals reach within a few samples, and divides in u64 while the numbers fit:
/// 128-bit division is several times slower, and this runs on every chunk the recorder closes.
fn common_factor(offsets: &[i128]) -> u128 {
    let mut factor = 0_u128;
    for &offset in offsets {
        let magnitude = offset.unsigned_abs();
        factor = match (u64::try_from(factor), u64::try_from(magnitude)) {
            (Ok(a), Ok(b)) => u128::from(gcd_u64(a, b)),
            _ => gcd(factor, magnitude),
        };
        if factor == 1 {
            break;
        }
    }
    factor
}

/// Largest quotient magnitude the encoder predicts from with orders above 0: a prediction and
/// its residual are at most 16 times the largest quotient, which 2^58 keeps within i64, so the
/// encoder's arithmetic needs no wider type and no checks.
const MAX_PREDICTED_QUOTIENT: u64 = 1 << 58;

/// The residual of `q[k]` (k >= 1) for `order`; lower orders near the start, as the decoder.
/// Every quotient must be within [`MAX_PREDICTED_QUOTIENT`] for orders above 0.
fn residual_at(q: &[i64], k: usize, order: usize) -> i64 {
    let prediction = match order.min(k) {
        0 => 0,
        1 => q[k - 1],
        2 => 2 * q[k - 1] - q[k - 2],
        3 => 3 * q[k - 1] - 3 * q[k - 2] + q[k - 3],
        _ => 4 * q[k - 1] - 6 * q[k - 2] + 4 * q[k - 3] - q[k - 4],
    };
    q[k] - prediction
}

/// Appends the smallest coding of `xs` (at least one value) to `out`.
pub(super) fn encode(out: &mut Vec<u8>, xs: &[i64], kind: ColumnKind) {
    let plain_bytes = plain_len(xs, kind);
    let best = predicted(xs).and_then(|(x0, factor, order, residuals)| {
        let rice_bytes = rice::encoded_len(&residuals);
        let range_stream = range::encode(&residuals);
        let (coding, stream) = if range_stream.len() < rice_bytes {
            (CODING_RANGE, range_stream)
        } else {
            (CODING_RICE, rice::encode(&residuals))
        };
        let total = varint_len(zigzag_encode(x0))
            + varint_len(factor)
            + varint_len(stream.len() as u64)
            + stream.len();
        (total < plain_bytes).then_some((coding, order, x0, factor, stream))
    });
    match best {
        Some((coding, order, x0, factor, stream)) => {
            // order <= MAX_ORDER = 4 fits the column byte's three bits.
            out.push(coding | ((order as u8) << ORDER_SHIFT));
            encode_varint_u64(out, zigzag_encode(x0));
            encode_varint_u64(out, factor);
            encode_varint_u64(out, stream.len() as u64);
            out.extend_from_slice(&stream);
        }
        None => {
            out.push(CODING_PLAIN);
            encode_plain(out, xs, kind);
        }
    }
}

/// The first value, the factor, the chosen order and its residuals; `None` when the column has
/// fewer than two values or its quotients or residuals do not fit the format's integers.
fn predicted(xs: &[i64]) -> Option<(i64, u64, usize, Vec<i64>)> {
    let x0 = *xs.first()?;
    if xs.len() < 2 {
        return None;
    }
    let offsets: Vec<i128> = xs.iter().map(|&x| i128::from(x) - i128::from(x0)).collect();
    let factor = common_factor(&offsets).max(1);
    let factor_u64 = u64::try_from(factor).ok()?;
    // factor >= 1 and fits an i128 since it divides an offset below 2^65.
    let factor_i = i128::try_from(factor).ok()?;
    // 128-bit division costs tens of nanoseconds a value, on every chunk the recorder closes:
    // none for a factor of 1 (most signals), 64-bit division where the factor fits.
    let q: Vec<i64> = match i64::try_from(factor_i) {
        Ok(1) => offsets
            .iter()
            .map(|&d| i64::try_from(d).ok())
            .collect::<Option<_>>()?,
        Ok(f) => offsets
            .iter()
            .map(|&d| match i64::try_from(d) {
                Ok(d) => Some(d / f),
                Err(_) => i64::try_from(d / factor_i).ok(),
            })
            .collect::<Option<_>>()?,
        Err(_) => offsets
            .iter()
            .map(|&d| i64::try_from(d / factor_i).ok())
            .collect::<Option<_>>()?,
    };
    let max_order = if q.iter().all(|v| v.unsigned_abs() <= MAX_PREDICTED_QUOTIENT) {
        MAX_ORDER
    } else {
        // Quotients this large (times far apart in a `deltas` column) are noise to any
        // predictor; order 0 codes them as they are.
        0
    };
    // Sum of absolute residuals per order, in one pass.
    let mut cost = [0_u64; MAX_ORDER + 1];
    for k in 1..q.len() {
        for (order, total) in cost.iter_mut().enumerate().take(max_order + 1) {
            *total = total.saturating_add(residual_at(&q, k, order).unsigned_abs());
        }
    }
    let order = (0..=max_order).min_by_key(|&order| cost[order])?;
    let residuals = (1..q.len()).map(|k| residual_at(&q, k, order)).collect();
    Some((x0, factor_u64, order, residuals))
}

/// Reads one column of `n` values at `*pos`. Value columns must stay within i32.
pub(super) fn decode(
    bytes: &[u8],
    pos: &mut usize,
    n: usize,
    kind: ColumnKind,
) -> Result<Vec<i64>, ChunkError> {
    let column_byte = *bytes
        .get(*pos)
        .ok_or(ChunkError::Truncated { offset: *pos })?;
    *pos += 1;
    let coding = column_byte & CODING_BITS;
    let order = usize::from((column_byte >> ORDER_SHIFT) & ORDER_MASK);
    if column_byte >> 5 != 0 || order > MAX_ORDER || coding > CODING_RANGE {
        return Err(bad("unknown column byte"));
    }
    if coding == CODING_PLAIN {
        if order != 0 {
            return Err(bad("plain column with a predictor order"));
        }
        return decode_plain(bytes, pos, n, kind);
    }
    let x0 = zigzag_decode(decode_varint_u64(bytes, pos)?);
    let factor = decode_varint_u64(bytes, pos)?;
    if factor == 0 {
        return Err(bad("factor of zero"));
    }
    let stream_len = decode_varint_u64(bytes, pos)?;
    let stream_end = usize::try_from(stream_len)
        .ok()
        .and_then(|len| pos.checked_add(len))
        .filter(|&end| end <= bytes.len())
        .ok_or(ChunkError::Truncated {
            offset: bytes.len(),
        })?;
    let stream = &bytes[*pos..stream_end];
    let n_residuals = n.saturating_sub(1);
    let residuals = match coding {
        CODING_RICE => rice::decode(stream, n_residuals),
        _ => {
            let max_length = match kind {
                ColumnKind::Values => MAX_VALUE_RESIDUAL_BITS,
                ColumnKind::TimeResiduals => 64,
            };
            range::decode(stream, n_residuals, max_length)
        }
    }
    .map_err(|error| match error {
        // Offsets inside a stream count from the stream's start; report the chunk's.
        ChunkError::Truncated { offset } => ChunkError::Truncated {
            offset: *pos + offset,
        },
        other => other,
    })?;
    *pos = stream_end;

    let mut xs = Vec::with_capacity(n);
    let mut history = [0_i128; MAX_ORDER];
    let mut previous = 0_i128;
    let overflow = |index| match kind {
        ColumnKind::Values => ChunkError::Overflow {
            what: "value",
            index,
        },
        ColumnKind::TimeResiduals => ChunkError::Overflow {
            what: "time",
            index,
        },
    };
    for index in 0..n {
        let q = if index == 0 {
            0
        } else {
            history.rotate_right(1);
            history[0] = previous;
            let q = predict(order.min(index), &history) + i128::from(residuals[index - 1]);
            // The encoder's quotients fit an i64; anything else is corrupt, and keeping them
            // small keeps the predictor's arithmetic far from i128's limits.
            if i64::try_from(q).is_err() {
                return Err(overflow(index));
            }
            q
        };
        previous = q;
        let x = q
            .checked_mul(i128::from(factor))
            .and_then(|scaled| scaled.checked_add(i128::from(x0)))
            .and_then(|x| match kind {
                ColumnKind::Values => i32::try_from(x).ok().map(i64::from),
                ColumnKind::TimeResiduals => i64::try_from(x).ok(),
            })
            .ok_or(overflow(index))?;
        xs.push(x);
    }
    Ok(xs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_factors() {
        let table: &[(&[i128], u128)] = &[
            (&[0, 0, 0], 0),
            (&[0, 5, -10, 15], 5),
            (&[0, 5, -10, 15, 7], 1),
            (&[0, 1 << 64, -(3 << 64)], 1 << 64),
            (&[0, 6 << 64, 10], 2),
        ];
        for &(offsets, expected) in table {
            assert_eq!(common_factor(offsets), expected, "{offsets:?}");
        }
    }

    /// A column in 5 µV steps with an offset is stored as quotients of 5 from its first value.
    #[test]
    fn factor_and_order_are_chosen() {
        let xs: Vec<i64> = (0..200).map(|k| 3 + 5 * (k * k % 97)).collect();
        let (x0, factor, _, _) = predicted(&xs).expect("predictable");
        assert_eq!((x0, factor), (3, 5));
        let ramp: Vec<i64> = (0..200).map(|k| 7 * k * k).collect();
        let (_, factor, order, residuals) = predicted(&ramp).expect("predictable");
        // q_k = k^2: the third difference vanishes; order 4 does as well, and ties go low.
        assert_eq!((factor, order), (7, 3));
        assert!(residuals.iter().skip(2).all(|&r| r == 0), "{residuals:?}");
        for kind in [ColumnKind::Values, ColumnKind::TimeResiduals] {
            for column in [&xs, &ramp] {
                let mut bytes = Vec::new();
                encode(&mut bytes, column, kind);
                let mut pos = 0;
                assert_eq!(
                    decode(&bytes, &mut pos, column.len(), kind).as_ref(),
                    Ok(column)
                );
                assert_eq!(pos, bytes.len());
            }
        }
    }
}
