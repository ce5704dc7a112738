//! A bounds-checked reader of the FlatBuffers wire format, enough for the
//! TFLite schema: tables (through their vtables), scalars, strings, vectors
//! of scalars and vectors of tables. Every offset and length is checked
//! against the buffer before it is followed, so a malformed or truncated file
//! gives an error naming what was being read, never a panic or an
//! out-of-bounds read.
//!
//! Format (flatbuffers.dev, "internals"): all integers are little-endian; a
//! table starts with an `i32` soffset to its vtable (`vtable = table -
//! soffset`); a vtable holds `u16` vtable size, `u16` table size, then one
//! `u16` field offset per field (0: absent, the default applies); a field
//! referring to a table, vector or string holds a `u32` offset relative to
//! the field's own position; a vector (and a string) is a `u32` length then
//! its elements.

use anyhow::{anyhow, bail, Result};

/// Deepest nesting of tables the reader follows (the TFLite schema nests a
/// handful; a cyclic or adversarial file would otherwise loop).
pub(crate) const MAX_DEPTH: usize = 16;

/// A table inside `buf`: its position and its vtable's.
#[derive(Clone, Copy)]
pub(crate) struct Table<'a> {
    buf: &'a [u8],
    pos: usize,
    vt: usize,
    vt_len: usize,
    depth: usize,
}

fn read<const N: usize>(buf: &[u8], at: usize, what: &str) -> Result<[u8; N]> {
    at.checked_add(N)
        .and_then(|end| buf.get(at..end))
        .map(|s| s.try_into().expect("slice of N bytes"))
        .ok_or_else(|| {
            anyhow!(
                "{what}: {N} bytes at offset {at} are past the end of the file ({} bytes)",
                buf.len()
            )
        })
}

pub(crate) fn u32_at(buf: &[u8], at: usize, what: &str) -> Result<u32> {
    read::<4>(buf, at, what).map(u32::from_le_bytes)
}

fn uoffset(buf: &[u8], at: usize, what: &str) -> Result<usize> {
    let off = u32_at(buf, at, what)? as usize;
    at.checked_add(off)
        .filter(|&p| p < buf.len())
        .ok_or_else(|| anyhow!("{what}: offset {off} at {at} points outside the file"))
}

impl<'a> Table<'a> {
    /// The root table of a buffer (its first `u32` is the root's offset).
    pub(crate) fn root(buf: &'a [u8]) -> Result<Self> {
        let pos = uoffset(buf, 0, "root table")?;
        Table::at(buf, pos, 0, "root table")
    }

    fn at(buf: &'a [u8], pos: usize, depth: usize, what: &str) -> Result<Self> {
        if depth > MAX_DEPTH {
            bail!("{what}: tables nested deeper than {MAX_DEPTH}");
        }
        let soff = i32::from_le_bytes(read::<4>(buf, pos, what)?) as i64;
        let vt = pos as i64 - soff;
        if vt < 0 || vt as usize >= buf.len() {
            bail!("{what}: vtable offset {soff} at {pos} points outside the file");
        }
        let vt = vt as usize;
        let vt_len = u16::from_le_bytes(read::<2>(buf, vt, what)?) as usize;
        if vt_len < 4
            || !vt_len.is_multiple_of(2)
            || vt.checked_add(vt_len).is_none_or(|e| e > buf.len())
        {
            bail!("{what}: vtable at {vt} has an invalid size {vt_len}");
        }
        Ok(Table {
            buf,
            pos,
            vt,
            vt_len,
            depth,
        })
    }

    /// Position of field `f` in the buffer, `None` when absent.
    fn field(&self, f: usize, what: &str) -> Result<Option<usize>> {
        let slot = 4 + 2 * f;
        if slot + 2 > self.vt_len {
            return Ok(None);
        }
        let off = u16::from_le_bytes(read::<2>(self.buf, self.vt + slot, what)?) as usize;
        if off == 0 {
            return Ok(None);
        }
        Ok(Some(self.pos + off))
    }

    fn scalar<const N: usize>(&self, f: usize, what: &str) -> Result<Option<[u8; N]>> {
        match self.field(f, what)? {
            None => Ok(None),
            Some(p) => read::<N>(self.buf, p, what).map(Some),
        }
    }

    pub(crate) fn u8(&self, f: usize, default: u8, what: &str) -> Result<u8> {
        Ok(self.scalar::<1>(f, what)?.map_or(default, |b| b[0]))
    }
    pub(crate) fn bool(&self, f: usize, default: bool, what: &str) -> Result<bool> {
        Ok(self.u8(f, default as u8, what)? != 0)
    }
    pub(crate) fn i32(&self, f: usize, default: i32, what: &str) -> Result<i32> {
        Ok(self
            .scalar::<4>(f, what)?
            .map_or(default, i32::from_le_bytes))
    }
    pub(crate) fn u32(&self, f: usize, default: u32, what: &str) -> Result<u32> {
        Ok(self
            .scalar::<4>(f, what)?
            .map_or(default, u32::from_le_bytes))
    }
    pub(crate) fn u64(&self, f: usize, default: u64, what: &str) -> Result<u64> {
        Ok(self
            .scalar::<8>(f, what)?
            .map_or(default, u64::from_le_bytes))
    }
    pub(crate) fn f32(&self, f: usize, default: f32, what: &str) -> Result<f32> {
        Ok(self
            .scalar::<4>(f, what)?
            .map_or(default, f32::from_le_bytes))
    }

    /// Sub-table in field `f`.
    pub(crate) fn table(&self, f: usize, what: &str) -> Result<Option<Table<'a>>> {
        match self.field(f, what)? {
            None => Ok(None),
            Some(p) => {
                let t = uoffset(self.buf, p, what)?;
                Table::at(self.buf, t, self.depth + 1, what).map(Some)
            }
        }
    }

    /// The bytes of the vector in field `f` with `elem`-byte elements:
    /// `(start, count)`, checked to lie inside the buffer.
    fn vector(&self, f: usize, elem: usize, what: &str) -> Result<Option<(usize, usize)>> {
        let Some(p) = self.field(f, what)? else {
            return Ok(None);
        };
        let v = uoffset(self.buf, p, what)?;
        let n = u32_at(self.buf, v, what)? as usize;
        let start = v + 4;
        let end = n.checked_mul(elem).and_then(|b| b.checked_add(start));
        if end.is_none_or(|e| e > self.buf.len()) {
            bail!(
                "{what}: vector of {n} x {elem} bytes at {v} runs past the end of the file ({} bytes)",
                self.buf.len()
            );
        }
        Ok(Some((start, n)))
    }

    pub(crate) fn bytes(&self, f: usize, what: &str) -> Result<Option<&'a [u8]>> {
        Ok(self.vector(f, 1, what)?.map(|(s, n)| &self.buf[s..s + n]))
    }

    pub(crate) fn string(&self, f: usize, what: &str) -> Result<Option<String>> {
        Ok(self
            .bytes(f, what)?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    fn scalars<const N: usize, T>(
        &self,
        f: usize,
        what: &str,
        conv: fn([u8; N]) -> T,
    ) -> Result<Vec<T>> {
        let Some((s, n)) = self.vector(f, N, what)? else {
            return Ok(vec![]);
        };
        Ok((0..n)
            .map(|i| {
                conv(
                    self.buf[s + i * N..s + (i + 1) * N]
                        .try_into()
                        .expect("N bytes"),
                )
            })
            .collect())
    }

    pub(crate) fn i32s(&self, f: usize, what: &str) -> Result<Vec<i32>> {
        self.scalars::<4, i32>(f, what, i32::from_le_bytes)
    }
    pub(crate) fn i64s(&self, f: usize, what: &str) -> Result<Vec<i64>> {
        self.scalars::<8, i64>(f, what, i64::from_le_bytes)
    }
    pub(crate) fn f32s(&self, f: usize, what: &str) -> Result<Vec<f32>> {
        self.scalars::<4, f32>(f, what, f32::from_le_bytes)
    }

    /// The tables of the vector in field `f` (empty when absent).
    pub(crate) fn tables(&self, f: usize, what: &str) -> Result<Vec<Table<'a>>> {
        let Some((s, n)) = self.vector(f, 4, what)? else {
            return Ok(vec![]);
        };
        (0..n)
            .map(|i| {
                let w = format!("{what}[{i}]");
                let t = uoffset(self.buf, s + 4 * i, &w)?;
                Table::at(self.buf, t, self.depth + 1, &w)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built buffer: root -> table with an i32 field (7) and a
    /// vector of two i32 (field 1).
    fn tiny() -> Vec<u8> {
        let mut b = vec![];
        b.extend(12u32.to_le_bytes()); // 0: root offset -> table at 12
        b.extend(8u16.to_le_bytes()); // 4: vtable: size 8
        b.extend(12u16.to_le_bytes()); // 6: table size
        b.extend(4u16.to_le_bytes()); // 8: field 0 at +4
        b.extend(8u16.to_le_bytes()); // 10: field 1 at +8
        b.extend(8i32.to_le_bytes()); // 12: soffset: vtable at 12 - 8 = 4
        b.extend(7i32.to_le_bytes()); // 16: field 0
        b.extend(4u32.to_le_bytes()); // 20: field 1 -> vector at 24
        b.extend(2u32.to_le_bytes()); // 24: length
        b.extend(5i32.to_le_bytes());
        b.extend((-6i32).to_le_bytes());
        b
    }

    #[test]
    fn reads_fields_and_rejects_truncation() {
        let b = tiny();
        let t = Table::root(&b).unwrap();
        assert_eq!(t.i32(0, 0, "f0").unwrap(), 7);
        assert_eq!(t.i32s(1, "f1").unwrap(), vec![5, -6]);
        assert_eq!(t.i32(2, 42, "absent").unwrap(), 42);
        for cut in 0..b.len() {
            // Every prefix either fails cleanly or (never here) reads.
            let r = Table::root(&b[..cut]).and_then(|t| t.i32s(1, "f1"));
            assert!(r.is_err(), "prefix of {cut} bytes read");
        }
        let mut huge = b.clone();
        huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = Table::root(&huge).unwrap().i32s(1, "f1").unwrap_err();
        assert!(e.to_string().contains("runs past the end"), "{e}");
    }
}
