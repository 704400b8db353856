//! IEEE-11073-20601 medical floats: the 16-bit SFLOAT and the 32-bit FLOAT that every SIG
//! health characteristic carries its numbers in.
//!
//! A value is `mantissa × 10^exponent`, both signed. A handful of bit patterns are not numbers
//! but states (NaN, "not at this resolution", ±infinity, reserved); they stay explicit states
//! in [`Medfloat`] and never turn into a number, so a "no reading" can never be recorded as a
//! reading. This module does not know which characteristic a value came from or its unit.

use serde::ser::{Serialize, SerializeStruct, Serializer};

/// SFLOAT bit pattern for "not a number": the device has no valid value.
pub const SFLOAT_NAN: u16 = 0x07FF;
/// SFLOAT bit pattern for "not at this resolution": the value cannot be represented.
pub const SFLOAT_NRES: u16 = 0x0800;
/// SFLOAT bit pattern for +infinity.
pub const SFLOAT_POS_INF: u16 = 0x07FE;
/// SFLOAT bit pattern for −infinity.
pub const SFLOAT_NEG_INF: u16 = 0x0802;
/// SFLOAT bit pattern reserved for future use by IEEE-11073.
pub const SFLOAT_RESERVED: u16 = 0x0801;

/// FLOAT bit pattern for "not a number".
pub const FLOAT_NAN: u32 = 0x007F_FFFF;
/// FLOAT bit pattern for "not at this resolution".
pub const FLOAT_NRES: u32 = 0x0080_0000;
/// FLOAT bit pattern for +infinity.
pub const FLOAT_POS_INF: u32 = 0x007F_FFFE;
/// FLOAT bit pattern for −infinity.
pub const FLOAT_NEG_INF: u32 = 0x0080_0002;
/// FLOAT bit pattern reserved for future use by IEEE-11073.
pub const FLOAT_RESERVED: u32 = 0x0080_0001;

/// Smallest SFLOAT mantissa (12-bit two's complement).
const SFLOAT_MANTISSA_MIN: i32 = -2048;
/// Largest SFLOAT mantissa.
const SFLOAT_MANTISSA_MAX: i32 = 2047;
/// Smallest SFLOAT exponent (4-bit two's complement).
const SFLOAT_EXPONENT_MIN: i8 = -8;
/// Largest SFLOAT exponent.
const SFLOAT_EXPONENT_MAX: i8 = 7;
/// Smallest FLOAT mantissa (24-bit two's complement); the exponent is a full `i8`.
const FLOAT_MANTISSA_MIN: i32 = -8_388_608;
/// Largest FLOAT mantissa.
const FLOAT_MANTISSA_MAX: i32 = 8_388_607;

/// Largest power of ten applied when scaling down. Dividing a mantissa (below 2^24) multiplied
/// by a conversion factor (below 10^6) by more than 10^30 leaves well under 10^-17, and the
/// rounding boundaries of the conversions used here are at least 10^-6 apart, so clamping the
/// divisor here changes no result while keeping every intermediate inside an `i128`.
const MAX_DOWNSCALE_POW10: u32 = 30;

/// A decoded IEEE-11073 SFLOAT or FLOAT.
///
/// Special values are compared on the whole bit pattern, as the standard defines them (an
/// exponent other than zero with one of those mantissas is an ordinary number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Medfloat {
    /// A number: `mantissa × 10^exponent`.
    Value {
        /// The signed mantissa (12 bits for SFLOAT, 24 bits for FLOAT).
        mantissa: i32,
        /// The signed power of ten (4 bits for SFLOAT, 8 bits for FLOAT).
        exponent: i8,
    },
    /// Not a number: the device has no valid value (e.g. measurement failed).
    NaN,
    /// Not at this resolution: the value exists but cannot be represented.
    NRes,
    /// Positive infinity (e.g. above the measurable range).
    PosInf,
    /// Negative infinity (e.g. below the measurable range).
    NegInf,
    /// A bit pattern IEEE-11073 reserves for future use.
    Reserved,
}

impl Medfloat {
    /// Decodes a 16-bit SFLOAT: 4-bit signed exponent (top), 12-bit signed mantissa.
    pub fn from_sfloat_bits(raw: u16) -> Medfloat {
        match raw {
            SFLOAT_NAN => Medfloat::NaN,
            SFLOAT_NRES => Medfloat::NRes,
            SFLOAT_POS_INF => Medfloat::PosInf,
            SFLOAT_NEG_INF => Medfloat::NegInf,
            SFLOAT_RESERVED => Medfloat::Reserved,
            _ => {
                let signed = raw as i16;
                // Arithmetic shifts sign-extend each part from its top bit.
                let exponent = (signed >> 12) as i8;
                let mantissa = i32::from((signed << 4) >> 4);
                Medfloat::Value { mantissa, exponent }
            }
        }
    }

    /// Decodes a 32-bit FLOAT: 8-bit signed exponent (top byte), 24-bit signed mantissa.
    pub fn from_float_bits(raw: u32) -> Medfloat {
        match raw {
            FLOAT_NAN => Medfloat::NaN,
            FLOAT_NRES => Medfloat::NRes,
            FLOAT_POS_INF => Medfloat::PosInf,
            FLOAT_NEG_INF => Medfloat::NegInf,
            FLOAT_RESERVED => Medfloat::Reserved,
            _ => {
                let exponent = (raw >> 24) as u8 as i8;
                let mantissa = ((raw << 8) as i32) >> 8;
                Medfloat::Value { mantissa, exponent }
            }
        }
    }

    /// Encodes as a 16-bit SFLOAT; `None` if the mantissa or exponent does not fit, or if the
    /// number's bit pattern would read back as a special value.
    pub fn to_sfloat_bits(&self) -> Option<u16> {
        match *self {
            Medfloat::NaN => Some(SFLOAT_NAN),
            Medfloat::NRes => Some(SFLOAT_NRES),
            Medfloat::PosInf => Some(SFLOAT_POS_INF),
            Medfloat::NegInf => Some(SFLOAT_NEG_INF),
            Medfloat::Reserved => Some(SFLOAT_RESERVED),
            Medfloat::Value { mantissa, exponent } => {
                if !(SFLOAT_MANTISSA_MIN..=SFLOAT_MANTISSA_MAX).contains(&mantissa)
                    || !(SFLOAT_EXPONENT_MIN..=SFLOAT_EXPONENT_MAX).contains(&exponent)
                {
                    return None;
                }
                let raw = ((exponent as u16 & 0x000F) << 12) | (mantissa as u16 & 0x0FFF);
                (Medfloat::from_sfloat_bits(raw) == *self).then_some(raw)
            }
        }
    }

    /// Encodes as a 32-bit FLOAT; `None` if the mantissa does not fit, or if the number's bit
    /// pattern would read back as a special value.
    pub fn to_float_bits(&self) -> Option<u32> {
        match *self {
            Medfloat::NaN => Some(FLOAT_NAN),
            Medfloat::NRes => Some(FLOAT_NRES),
            Medfloat::PosInf => Some(FLOAT_POS_INF),
            Medfloat::NegInf => Some(FLOAT_NEG_INF),
            Medfloat::Reserved => Some(FLOAT_RESERVED),
            Medfloat::Value { mantissa, exponent } => {
                if !(FLOAT_MANTISSA_MIN..=FLOAT_MANTISSA_MAX).contains(&mantissa) {
                    return None;
                }
                let raw = (u32::from(exponent as u8) << 24) | (mantissa as u32 & 0x00FF_FFFF);
                (Medfloat::from_float_bits(raw) == *self).then_some(raw)
            }
        }
    }

    /// Whether this is a number rather than a special state.
    pub fn is_value(&self) -> bool {
        matches!(self, Medfloat::Value { .. })
    }

    /// The number as an `f64` (for display; use [`Medfloat::to_scaled`] to record it), or
    /// `None` for every special state.
    pub fn value(&self) -> Option<f64> {
        match *self {
            Medfloat::Value { mantissa, exponent } => {
                let m = f64::from(mantissa);
                // Dividing by an exact power of ten keeps 973 × 10^-1 at 97.3, where
                // multiplying by 0.1 would give 97.30000000000001.
                Some(if exponent >= 0 {
                    m * 10_f64.powi(i32::from(exponent))
                } else {
                    m / 10_f64.powi(-i32::from(exponent))
                })
            }
            _ => None,
        }
    }

    /// The number as an integer count of `10^unit_exponent` units (e.g. `-2` for hundredths),
    /// exact when representable and otherwise rounded half away from zero. `None` for special
    /// states and for numbers that do not fit an `i64`.
    pub fn to_scaled(&self, unit_exponent: i8) -> Option<i64> {
        self.scaled_linear(unit_exponent, 1, 0, 1)
    }

    /// `round((x × mul + add) / div)` where `x` is the number in `10^unit_exponent` units,
    /// computed exactly in integers (no floating point), rounded half away from zero. `div`
    /// must be positive. `None` for special states, overflow, or a result outside `i64`.
    ///
    /// Unit conversions go through here so that, say, 135 kPa × 7.50062 or 98.6 °F is the same
    /// integer on every machine.
    pub(crate) fn scaled_linear(
        &self,
        unit_exponent: i8,
        mul: i128,
        add: i128,
        div: i128,
    ) -> Option<i64> {
        let Medfloat::Value { mantissa, exponent } = *self else {
            return None;
        };
        if div <= 0 {
            return None;
        }
        let m = i128::from(mantissa);
        let shift = i32::from(exponent) - i32::from(unit_exponent);
        let (num, den) = if shift >= 0 {
            let scaled = if m == 0 {
                0
            } else {
                m.checked_mul(10_i128.checked_pow(shift.unsigned_abs())?)?
            };
            (scaled.checked_mul(mul)?.checked_add(add)?, div)
        } else {
            let pow = 10_i128.pow(shift.unsigned_abs().min(MAX_DOWNSCALE_POW10));
            (
                m.checked_mul(mul)?.checked_add(add.checked_mul(pow)?)?,
                div.checked_mul(pow)?,
            )
        };
        i64::try_from(round_div(num, den)).ok()
    }
}

/// `num / den` rounded half away from zero; `den` is positive.
fn round_div(num: i128, den: i128) -> i128 {
    let q = num / den;
    let r = num % den;
    if r.unsigned_abs() * 2 >= den.unsigned_abs() {
        q + num.signum()
    } else {
        q
    }
}

impl Serialize for Medfloat {
    /// `{"kind":"value","mantissa":125,"exponent":-1,"value":12.5}`, or `{"kind":"nan"}` (and
    /// `nres`, `+inf`, `-inf`, `reserved`): the exact parts for machines, the `f64` for people.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let kind = match self {
            Medfloat::Value { .. } => "value",
            Medfloat::NaN => "nan",
            Medfloat::NRes => "nres",
            Medfloat::PosInf => "+inf",
            Medfloat::NegInf => "-inf",
            Medfloat::Reserved => "reserved",
        };
        if let Medfloat::Value { mantissa, exponent } = *self {
            let mut s = serializer.serialize_struct("Medfloat", 4)?;
            s.serialize_field("kind", kind)?;
            s.serialize_field("mantissa", &mantissa)?;
            s.serialize_field("exponent", &exponent)?;
            s.serialize_field("value", &self.value())?;
            s.end()
        } else {
            let mut s = serializer.serialize_struct("Medfloat", 1)?;
            s.serialize_field("kind", kind)?;
            s.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(mantissa: i32, exponent: i8) -> Medfloat {
        Medfloat::Value { mantissa, exponent }
    }

    fn check_sfloat(raw: u16, expected: Medfloat) {
        assert_eq!(
            Medfloat::from_sfloat_bits(raw),
            expected,
            "sfloat {raw:#06x}"
        );
        assert_eq!(expected.to_sfloat_bits(), Some(raw), "encode {expected:?}");
    }

    fn check_float(raw: u32, expected: Medfloat) {
        assert_eq!(
            Medfloat::from_float_bits(raw),
            expected,
            "float {raw:#010x}"
        );
        assert_eq!(expected.to_float_bits(), Some(raw), "encode {expected:?}");
    }

    #[test]
    fn sfloat_vectors() {
        // 0xF07D: exponent 0xF = -1, mantissa 0x07D = 125 → 12.5.
        check_sfloat(0xF07D, v(125, -1));
        check_sfloat(0x0048, v(72, 0));
        check_sfloat(0x0000, v(0, 0));
        check_sfloat(0x0FFF, v(-1, 0));
        check_sfloat(0x7001, v(1, 7));
        check_sfloat(0x8001, v(1, -8));
        check_sfloat(0x07FD, v(2045, 0));
        check_sfloat(0x0803, v(-2045, 0));
        check_sfloat(0xF3CF, v(975, -1));
        // With a non-zero exponent the special mantissas are ordinary numbers.
        check_sfloat(0x17FF, v(2047, 1));
        check_sfloat(0xF800, v(-2048, -1));
    }

    #[test]
    fn sfloat_specials() {
        check_sfloat(0x07FF, Medfloat::NaN);
        check_sfloat(0x0800, Medfloat::NRes);
        check_sfloat(0x07FE, Medfloat::PosInf);
        check_sfloat(0x0802, Medfloat::NegInf);
        check_sfloat(0x0801, Medfloat::Reserved);
    }

    #[test]
    fn float_vectors_and_specials() {
        // 36.4 °C as 364 × 10^-1.
        check_float(0xFF00_016C, v(364, -1));
        check_float(0x0000_0000, v(0, 0));
        check_float(0xFDFF_FFFF, v(-1, -3));
        check_float(0x7F7F_FFFD, v(8_388_605, 127));
        check_float(0x8080_0000, v(-8_388_608, -128));
        check_float(0x007F_FFFF, Medfloat::NaN);
        check_float(0x0080_0000, Medfloat::NRes);
        check_float(0x007F_FFFE, Medfloat::PosInf);
        check_float(0x0080_0002, Medfloat::NegInf);
        check_float(0x0080_0001, Medfloat::Reserved);
    }

    #[test]
    fn encoding_refuses_what_does_not_fit() {
        for (value, sfloat, float) in [
            (v(2048, 0), None, Some(0x0000_0800)),
            (v(-2049, 0), None, Some(0x00FF_F7FF)),
            (v(1, 8), None, Some(0x0800_0001)),
            (v(1, -9), None, Some(0xF700_0001)),
            // These would read back as NaN / NRes.
            (v(2047, 0), None, Some(0x0000_07FF)),
            (v(-2048, 0), None, Some(0x00FF_F800)),
            (v(8_388_607, 0), None, None),
            (v(8_388_608, 1), None, None),
        ] {
            assert_eq!(value.to_sfloat_bits(), sfloat, "{value:?}");
            assert_eq!(value.to_float_bits(), float, "{value:?}");
        }
    }

    fn check_value(value: Medfloat, expected: Option<f64>) {
        assert_eq!(value.value(), expected, "{value:?}");
    }

    #[test]
    fn value_as_f64() {
        check_value(v(125, -1), Some(12.5));
        check_value(v(973, -1), Some(97.3));
        check_value(v(-5, 2), Some(-500.0));
        check_value(v(0, -8), Some(0.0));
        for special in [
            Medfloat::NaN,
            Medfloat::NRes,
            Medfloat::PosInf,
            Medfloat::NegInf,
            Medfloat::Reserved,
        ] {
            check_value(special, None);
        }
    }

    fn check_scaled(value: Medfloat, unit_exponent: i8, expected: Option<i64>) {
        assert_eq!(
            value.to_scaled(unit_exponent),
            expected,
            "{value:?} in 10^{unit_exponent}"
        );
    }

    #[test]
    fn scaled_integers_are_exact_or_rounded_half_away_from_zero() {
        check_scaled(v(125, -1), -1, Some(125));
        check_scaled(v(125, -1), -2, Some(1250));
        check_scaled(v(125, -1), 0, Some(13));
        check_scaled(v(-125, -1), 0, Some(-13));
        check_scaled(v(124, -1), 0, Some(12));
        check_scaled(v(-124, -1), 0, Some(-12));
        check_scaled(v(975, -1), 0, Some(98));
        check_scaled(v(72, 0), 0, Some(72));
        check_scaled(v(12, 2), 0, Some(1200));
        check_scaled(v(5, -128), 0, Some(0));
        check_scaled(v(-5, -128), 0, Some(0));
        check_scaled(v(0, 127), 0, Some(0));
        check_scaled(v(1, 127), 0, None);
        check_scaled(v(8_388_607, 12), 0, Some(8_388_607_000_000_000_000));
        check_scaled(v(8_388_607, 13), 0, None);
        check_scaled(Medfloat::NaN, 0, None);
        check_scaled(Medfloat::PosInf, 0, None);
    }

    #[test]
    fn serializes_exact_parts_and_kind() {
        let json = |m: Medfloat| serde_json::to_string(&m).unwrap_or_default();
        assert_eq!(
            json(v(125, -1)),
            r#"{"kind":"value","mantissa":125,"exponent":-1,"value":12.5}"#
        );
        assert_eq!(json(Medfloat::NaN), r#"{"kind":"nan"}"#);
        assert_eq!(json(Medfloat::NRes), r#"{"kind":"nres"}"#);
        assert_eq!(json(Medfloat::PosInf), r#"{"kind":"+inf"}"#);
        assert_eq!(json(Medfloat::NegInf), r#"{"kind":"-inf"}"#);
        assert_eq!(json(Medfloat::Reserved), r#"{"kind":"reserved"}"#);
    }

    proptest! {
        #[test]
        fn every_sfloat_pattern_round_trips(raw in any::<u16>()) {
            let decoded = Medfloat::from_sfloat_bits(raw);
            prop_assert_eq!(decoded.to_sfloat_bits(), Some(raw));
        }

        #[test]
        fn every_float_pattern_round_trips(raw in any::<u32>()) {
            let decoded = Medfloat::from_float_bits(raw);
            prop_assert_eq!(decoded.to_float_bits(), Some(raw));
        }

        #[test]
        fn scaling_agrees_with_f64(raw in any::<u16>(), unit_exponent in -4_i8..=2) {
            let m = Medfloat::from_sfloat_bits(raw);
            // Every SFLOAT number fits an i64 at these scales; no special state gives one.
            prop_assert_eq!(m.value().is_some(), m.to_scaled(unit_exponent).is_some());
            if let (Some(x), Some(scaled)) = (m.value(), m.to_scaled(unit_exponent)) {
                let expected = x / 10_f64.powi(i32::from(unit_exponent));
                // Within half a unit (plus float noise) of the real number.
                let tolerance = 0.5 + 1e-9 * expected.abs().max(1.0);
                prop_assert!((scaled as f64 - expected).abs() <= tolerance);
            }
        }
    }
}
