//! A bounds-checked little-endian cursor over a characteristic value: the only place in the
//! decoders that touches bytes by position.
//!
//! Every read names the field it is reading, so that a short payload becomes
//! [`GattError::Truncated`] saying which field and where, never a panic. This module knows
//! nothing about any characteristic's layout; the per-characteristic modules drive it.

use super::GattError;
use super::date_time::DateTime;
use super::medfloat::Medfloat;

/// Reads fields front to back from a borrowed payload.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`. Callers check [`super::MAX_PAYLOAD_LEN`] first.
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// The offset of the next unread byte.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    /// How many bytes are left.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// The next `N` bytes, or a truncation error naming `field`.
    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], GattError> {
        let chunk = self
            .bytes
            .get(self.pos..)
            .and_then(|rest| rest.first_chunk::<N>())
            .ok_or(GattError::Truncated {
                field,
                offset: self.pos,
                needed: N,
                available: self.remaining(),
            })?;
        self.pos += N;
        Ok(*chunk)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, GattError> {
        let [b] = self.array::<1>(field)?;
        Ok(b)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, GattError> {
        Ok(u16::from_le_bytes(self.array::<2>(field)?))
    }

    /// An unsigned 24-bit field, zero-extended.
    pub(crate) fn u24(&mut self, field: &'static str) -> Result<u32, GattError> {
        let [b0, b1, b2] = self.array::<3>(field)?;
        Ok(u32::from_le_bytes([b0, b1, b2, 0]))
    }

    /// A signed 24-bit field (two's complement), sign-extended.
    pub(crate) fn i24(&mut self, field: &'static str) -> Result<i32, GattError> {
        let [b0, b1, b2] = self.array::<3>(field)?;
        // Put the 24 bits at the top of an i32, then shift back arithmetically.
        Ok(i32::from_le_bytes([0, b0, b1, b2]) >> 8)
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, GattError> {
        Ok(u64::from_le_bytes(self.array::<8>(field)?))
    }

    /// An IEEE-11073 16-bit SFLOAT.
    pub(crate) fn sfloat(&mut self, field: &'static str) -> Result<Medfloat, GattError> {
        Ok(Medfloat::from_sfloat_bits(self.u16(field)?))
    }

    /// An IEEE-11073 32-bit FLOAT.
    pub(crate) fn float(&mut self, field: &'static str) -> Result<Medfloat, GattError> {
        Ok(Medfloat::from_float_bits(u32::from_le_bytes(
            self.array::<4>(field)?,
        )))
    }

    /// A Date Time characteristic value (7 bytes).
    pub(crate) fn date_time(&mut self, field: &'static str) -> Result<DateTime, GattError> {
        let [y0, y1, month, day, hours, minutes, seconds] = self.array::<7>(field)?;
        Ok(DateTime {
            year: u16::from_le_bytes([y0, y1]),
            month,
            day,
            hours,
            minutes,
            seconds,
        })
    }

    /// Checks that every byte was consumed. Bytes left over are tolerated only when the flags
    /// carry a reserved bit: a later revision of the specification may have defined a field
    /// there, and fields are only ever appended, so everything before it was read correctly.
    /// Without such a bit, left-over bytes mean the sender and this decoder disagree on the
    /// layout, and no value decoded from it can be trusted.
    pub(crate) fn finish(&self, reserved_flags: u8) -> Result<(), GattError> {
        let left = self.remaining();
        if left == 0 || reserved_flags != 0 {
            Ok(())
        } else {
            Err(GattError::TrailingBytes {
                offset: self.pos,
                len: left,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_sign_extends() {
        let bytes = [
            0x01, 0x34, 0x12, 0x56, 0x34, 0x12, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("a"), Ok(0x01));
        assert_eq!(r.u16("b"), Ok(0x1234));
        assert_eq!(r.u24("c"), Ok(0x12_3456));
        assert_eq!(r.i24("d"), Ok(-1));
        assert_eq!(r.u64("e"), Ok(0x0807_0605_0403_0201));
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.finish(0), Ok(()));
    }

    #[test]
    fn i24_extremes() {
        for (bytes, expected) in [
            ([0xFF, 0xFF, 0x7F], 8_388_607),
            ([0x00, 0x00, 0x80], -8_388_608),
            ([0x00, 0x00, 0x00], 0),
            ([0xFE, 0xFF, 0xFF], -2),
        ] {
            assert_eq!(Reader::new(&bytes).i24("x"), Ok(expected), "{bytes:02x?}");
        }
    }

    #[test]
    fn short_read_names_field_and_offset_and_does_not_advance() {
        let bytes = [0x01, 0x02];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("flags"), Ok(1));
        assert_eq!(
            r.u16("systolic"),
            Err(GattError::Truncated {
                field: "systolic",
                offset: 1,
                needed: 2,
                available: 1
            })
        );
        assert_eq!(r.offset(), 1);
        assert_eq!(
            r.finish(0),
            Err(GattError::TrailingBytes { offset: 1, len: 1 })
        );
        assert_eq!(r.finish(0x80), Ok(()));
    }
}
