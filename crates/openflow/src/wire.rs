//! Bounds-checked big-endian reading and writing helpers shared by the codecs.
//!
//! [`Reader`] never panics: every access checks the remaining length and reports
//! [`DecodeError::Truncated`]. Nothing here allocates based on a length read from the wire.

use crate::error::DecodeError;

/// A cursor over a byte slice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated {
                what: self.what,
                need: n,
                have: self.buf.len(),
            });
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    /// A sub-reader over the next `n` bytes.
    pub(crate) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        Ok(Reader::new(self.bytes(n)?, what))
    }
    pub(crate) fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.bytes(n).map(|_| ())
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    /// Big-endian unsigned integer of `n` ≤ 16 bytes.
    pub(crate) fn uint(&mut self, n: usize) -> Result<u128, DecodeError> {
        if n > 16 {
            return Err(DecodeError::BadLength {
                what: self.what,
                len: n,
            });
        }
        Ok(self
            .bytes(n)?
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b)))
    }
}

/// Writing helpers on `Vec<u8>`.
pub(crate) trait Writer {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn u64(&mut self, v: u64);
    fn uint(&mut self, v: u128, n: usize);
    fn zeros(&mut self, n: usize);
    /// Pads with zeros so that the length since `start` is a multiple of 8.
    fn pad8_from(&mut self, start: usize);
    /// Writes `len` (as u16) at `pos`.
    fn patch_u16(&mut self, pos: usize, len: usize);
}

impl Writer for Vec<u8> {
    fn u8(&mut self, v: u8) {
        self.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn uint(&mut self, v: u128, n: usize) {
        self.extend_from_slice(&v.to_be_bytes()[16 - n..]);
    }
    fn zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
    fn pad8_from(&mut self, start: usize) {
        let l = self.len() - start;
        self.zeros((8 - l % 8) % 8);
    }
    fn patch_u16(&mut self, pos: usize, len: usize) {
        let v = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        self[pos] = v[0];
        self[pos + 1] = v[1];
    }
}

/// Rounds up to a multiple of 8.
pub(crate) fn round8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation_instead_of_panicking() {
        let mut r = Reader::new(&[1, 2, 3], "test");
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert!(matches!(
            r.u32(),
            Err(DecodeError::Truncated {
                need: 4,
                have: 1,
                ..
            })
        ));
        assert!(r.uint(17).is_err());
        assert_eq!(r.u8().unwrap(), 3);
        assert!(r.is_empty());
    }

    #[test]
    fn writer_pads_and_patches() {
        let mut v = Vec::new();
        v.u16(0xffff);
        v.u16(0);
        v.u8(1);
        v.pad8_from(0);
        assert_eq!(v.len(), 8);
        v.patch_u16(2, v.len());
        assert_eq!(v, [0xff, 0xff, 0, 8, 1, 0, 0, 0]);
        assert_eq!(round8(9), 16);
    }
}
