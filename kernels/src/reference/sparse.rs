//! Block-sparse int8 NT gemm: [`super::qs8_gemm_nt`] with the `a` operand
//! (the weights, one row per output channel) stored as 1x4 blocks along the
//! reduction, all-zero blocks left out.
//!
//! **Why 1x4 along `k`.** The conv driver multiplies `weights[out_c][k]` by
//! im2row tiles `rows[pixels][k]`; every fast path widens int8 to i16 and
//! consumes `k` in pairs (AVX2 `vpmaddwd`) or single lanes (NEON `smlal` by
//! lane), against a panel of eight pixels. A block of four consecutive `k` of
//! one output channel is two `vpmaddwd` pairs / four `smlal` lanes: skipping it
//! skips whole instructions, with no masking and no per-element index. One
//! output channel per block (rather than 4x4) keeps blocks small enough that
//! unstructured zeros from training and magnitude pruning produce many empty
//! blocks, and lets each row's work be exactly its non-zero blocks.
//!
//! **Format (block CSR).** For an `m x k` weight matrix, `kb = ceil(k / 4)`
//! blocks per row; block `c` of row `i` covers `k` indices `4c..4c + 4`.
//! * `row_ptr` (`m + 1` entries): row `i`'s blocks are `row_ptr[i]..row_ptr[i+1]`;
//!   `row_ptr[0] == 0`, non-decreasing, `row_ptr[m] == nnz` (stored blocks);
//! * `blocks` (`nnz` entries): block column `c` of each stored block, strictly
//!   increasing within a row, `< kb`;
//! * `values` (`4 * nnz` int8): the four weights of each stored block; weights
//!   of the last block beyond `k` (when `k % 4 != 0`) are zero.
//!
//! A stored block may contain zeros (it is stored because some weight is not);
//! a row may have no blocks at all (its outputs are `requantize(bias)`).
//!
//! **Bit-exactness.** The accumulator is `bias + sum` over the stored weights
//! of `w * b`: the dense sum minus terms that are exactly zero. Integer
//! addition is exact and associative within the overflow bound (the dense
//! one), so every path equals [`super::qs8_gemm_nt`] on the dense weights,
//! and the output stage is the same expression. Zero-point folding
//! (`driver::fold_bias`) uses the sum of all weights, to which the skipped
//! zeros contribute nothing.

use super::QOut;
use crate::requant::{clamp_i8, requantize, Requant};

/// Weights per block (1 output channel x 4 consecutive `k`).
pub const SPARSE_BLOCK: usize = 4;

/// Why a block-sparse matrix was rejected by [`SparseWeights::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SparseError {
    /// `row_ptr.len() != m + 1`.
    RowPtrLen { len: usize, m: usize },
    /// `row_ptr[0] != 0`.
    RowPtrStart(i32),
    /// `row_ptr[row + 1] < row_ptr[row]` (or negative).
    RowPtrDecreasing { row: usize },
    /// `row_ptr[m]` differs from the number of stored blocks.
    RowPtrEnd { end: i32, blocks: usize },
    /// A block column outside `0..kb`.
    BlockOutOfRange { row: usize, block: i32, kb: usize },
    /// Block columns of a row not strictly increasing (duplicate or unsorted).
    BlocksNotIncreasing { row: usize },
    /// `values.len() != 4 * blocks.len()`.
    ValuesLen { len: usize, blocks: usize },
    /// A weight of the last block beyond `k` is not zero.
    PaddingNotZero { row: usize },
}

impl core::fmt::Display for SparseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SparseError::RowPtrLen { len, m } => {
                write!(
                    f,
                    "row_ptr has {len} entries, want out_channels + 1 = {}",
                    m + 1
                )
            }
            SparseError::RowPtrStart(v) => write!(f, "row_ptr[0] is {v}, want 0"),
            SparseError::RowPtrDecreasing { row } => {
                write!(f, "row_ptr decreases (or is negative) at row {row}")
            }
            SparseError::RowPtrEnd { end, blocks } => {
                write!(f, "row_ptr ends at {end} but {blocks} blocks are stored")
            }
            SparseError::BlockOutOfRange { row, block, kb } => write!(
                f,
                "row {row}: block index {block} outside 0..{kb} (k blocks of {SPARSE_BLOCK})"
            ),
            SparseError::BlocksNotIncreasing { row } => {
                write!(f, "row {row}: block indices not strictly increasing")
            }
            SparseError::ValuesLen { len, blocks } => write!(
                f,
                "{len} weight values for {blocks} blocks, want {}",
                blocks * SPARSE_BLOCK
            ),
            SparseError::PaddingNotZero { row } => {
                write!(f, "row {row}: non-zero weight in the padding past k")
            }
        }
    }
}

/// A validated block-sparse `m x k` int8 weight matrix (format in the module
/// docs), borrowed. Construction checks every invariant the kernels rely on
/// for memory safety, so kernels index without further checks.
#[derive(Clone, Copy, Debug)]
pub struct SparseWeights<'a> {
    m: usize,
    k: usize,
    /// `m + 1` offsets into `blocks`, all `>= base` (a [`Self::rows`] view
    /// keeps its parent's pointers and subtracts its first one).
    row_ptr: &'a [i32],
    base: usize,
    blocks: &'a [i32],
    values: &'a [i8],
}

impl<'a> SparseWeights<'a> {
    /// Checks the block-CSR invariants in `O(m + nnz)`.
    pub fn new(
        m: usize,
        k: usize,
        row_ptr: &'a [i32],
        blocks: &'a [i32],
        values: &'a [i8],
    ) -> Result<Self, SparseError> {
        if row_ptr.len() != m + 1 {
            return Err(SparseError::RowPtrLen {
                len: row_ptr.len(),
                m,
            });
        }
        if row_ptr[0] != 0 {
            return Err(SparseError::RowPtrStart(row_ptr[0]));
        }
        if values.len() != blocks.len() * SPARSE_BLOCK {
            return Err(SparseError::ValuesLen {
                len: values.len(),
                blocks: blocks.len(),
            });
        }
        // row_ptr first, so that a bad pointer is reported as such rather
        // than as the block-order error it would cause.
        for row in 0..m {
            if row_ptr[row + 1] < row_ptr[row] {
                return Err(SparseError::RowPtrDecreasing { row });
            }
        }
        if row_ptr[m] as usize != blocks.len() {
            return Err(SparseError::RowPtrEnd {
                end: row_ptr[m],
                blocks: blocks.len(),
            });
        }
        let kb = k.div_ceil(SPARSE_BLOCK);
        let tail = k % SPARSE_BLOCK;
        for row in 0..m {
            let (s, e) = (row_ptr[row] as usize, row_ptr[row + 1] as usize);
            let mut prev = -1i64;
            for (bi, &c) in blocks[s..e].iter().enumerate() {
                if c < 0 || c as usize >= kb {
                    return Err(SparseError::BlockOutOfRange { row, block: c, kb });
                }
                if c as i64 <= prev {
                    return Err(SparseError::BlocksNotIncreasing { row });
                }
                prev = c as i64;
                if tail != 0 && c as usize == kb - 1 {
                    let v = (s + bi) * SPARSE_BLOCK;
                    if values[v + tail..v + SPARSE_BLOCK].iter().any(|&w| w != 0) {
                        return Err(SparseError::PaddingNotZero { row });
                    }
                }
            }
        }
        Ok(SparseWeights {
            m,
            k,
            row_ptr,
            base: 0,
            blocks,
            values,
        })
    }

    /// Rows `r0..r1` as a matrix of their own (output channels `r0..r1` of a
    /// conv: the channel slices of a multi-threaded one). `O(1)`, and valid
    /// by construction: a row range of a valid matrix is one.
    ///
    /// Panics unless `r0 <= r1 <= m`.
    pub fn rows(&self, r0: usize, r1: usize) -> SparseWeights<'a> {
        assert!(
            r0 <= r1 && r1 <= self.m,
            "SparseWeights::rows: {r0}..{r1} of {}",
            self.m
        );
        let ptr = &self.row_ptr[r0..=r1];
        let (s, e) = (
            ptr[0] as usize - self.base,
            ptr[r1 - r0] as usize - self.base,
        );
        SparseWeights {
            m: r1 - r0,
            k: self.k,
            row_ptr: ptr,
            base: ptr[0] as usize,
            blocks: &self.blocks[s..e],
            values: &self.values[s * SPARSE_BLOCK..e * SPARSE_BLOCK],
        }
    }

    /// Output channels (rows).
    pub fn m(&self) -> usize {
        self.m
    }
    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Blocks per dense row: `ceil(k / 4)`.
    pub fn k_blocks(&self) -> usize {
        self.k.div_ceil(SPARSE_BLOCK)
    }
    /// Stored (non-zero) blocks.
    pub fn nnz_blocks(&self) -> usize {
        self.blocks.len()
    }
    /// Row `i`'s block columns and their `4 *` as many weights.
    #[inline]
    pub fn row(&self, i: usize) -> (&'a [i32], &'a [i8]) {
        let (s, e) = (
            self.row_ptr[i] as usize - self.base,
            self.row_ptr[i + 1] as usize - self.base,
        );
        (
            &self.blocks[s..e],
            &self.values[s * SPARSE_BLOCK..e * SPARSE_BLOCK],
        )
    }
    /// `sum(w)` over row `i` (the dense row sum: skipped blocks are zeros).
    pub fn row_sum(&self, i: usize) -> i64 {
        self.row(i).1.iter().map(|&w| w as i64).sum()
    }
}

/// Owned block-CSR arrays, as built from dense weights by [`pack_sparse`].
#[cfg(feature = "std")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseOwned {
    pub m: usize,
    pub k: usize,
    pub row_ptr: Vec<i32>,
    pub blocks: Vec<i32>,
    pub values: Vec<i8>,
}

#[cfg(feature = "std")]
impl SparseOwned {
    /// The borrowed, validated view (always valid when built by [`pack_sparse`]).
    pub fn view(&self) -> SparseWeights<'_> {
        SparseWeights::new(self.m, self.k, &self.row_ptr, &self.blocks, &self.values)
            .expect("pack_sparse builds valid matrices")
    }
}

/// Packs dense `w[m][k]` into block CSR, keeping exactly the blocks with a
/// non-zero weight. `None` if `w.len() != m * k` or a count exceeds `i32`.
#[cfg(feature = "std")]
pub fn pack_sparse(m: usize, k: usize, w: &[i8]) -> Option<SparseOwned> {
    if w.len() != m.checked_mul(k)? || w.len() > i32::MAX as usize {
        return None;
    }
    let mut row_ptr = Vec::with_capacity(m + 1);
    let (mut blocks, mut values) = (Vec::new(), Vec::new());
    row_ptr.push(0);
    for i in 0..m {
        let row = &w[i * k..(i + 1) * k];
        for (c, chunk) in row.chunks(SPARSE_BLOCK).enumerate() {
            if chunk.iter().any(|&x| x != 0) {
                blocks.push(c as i32);
                values.extend_from_slice(chunk);
                values.resize(blocks.len() * SPARSE_BLOCK, 0);
            }
        }
        row_ptr.push(blocks.len() as i32);
    }
    Some(SparseOwned {
        m,
        k,
        row_ptr,
        blocks,
        values,
    })
}

/// Fraction of the `m * ceil(k / 4)` blocks of dense `w[m][k]` that are all
/// zero (1.0 for an empty matrix).
pub fn zero_block_fraction(m: usize, k: usize, w: &[i8]) -> f64 {
    let total = m * k.div_ceil(SPARSE_BLOCK);
    if total == 0 {
        return 1.0;
    }
    let zero = (0..m)
        .flat_map(|i| w[i * k..(i + 1) * k].chunks(SPARSE_BLOCK))
        .filter(|c| c.iter().all(|&x| x == 0))
        .count();
    zero as f64 / total as f64
}

/// Alignment the fast kernels give their packed panel inside the scratch.
pub const SPARSE_SCRATCH_ALIGN: usize = 32;

/// Bytes of packing scratch the fast sparse kernels need for `n` columns of
/// `k`: `b` widened to i16 in groups of eight columns, `k` padded to whole
/// blocks, plus [`SPARSE_SCRATCH_ALIGN`] so the panel can be aligned. The
/// reference needs none but accepts the same buffer.
pub const fn sparse_scratch_len(n: usize, k: usize) -> usize {
    n.div_ceil(8) * 8 * k.div_ceil(SPARSE_BLOCK) * SPARSE_BLOCK * 2 + SPARSE_SCRATCH_ALIGN
}

/// [`super::qs8_gemm_nt`] with block-sparse `a`:
/// `acc[i][j] = bias[i] + sum over stored weights of a[i][kk] * b[j][kk]`, then
/// `out[i * rs + j * cs] = clamp(out_zp + requantize(acc, rq[i]))`.
/// Bit-identical to the dense kernel on the dense weights.
///
/// Overflow bound: the dense one (`k * 2^14 + |bias| < 2^31`).
/// Contract: `b.len() >= n * a.k()`, `bias.len() >= a.m()`, `rq.len() >= a.m()`,
/// every `i * rs + j * cs < out.len()`; fast paths also need
/// `scratch.len() >= sparse_scratch_len(n, a.k())` (the reference ignores it).
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_nt_sparse(
    n: usize,
    a: &SparseWeights,
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &mut [i8],
    rs: usize,
    cs: usize,
    _scratch: &mut [i8],
) {
    let k = a.k();
    for i in 0..a.m() {
        let (blocks, values) = a.row(i);
        for j in 0..n {
            let br = &b[j * k..(j + 1) * k];
            let mut acc = bias[i];
            for (&c, w) in blocks.iter().zip(values.chunks_exact(SPARSE_BLOCK)) {
                let k0 = c as usize * SPARSE_BLOCK;
                // The last block may extend past k; its padding weights are zero.
                for (&x, &w) in br[k0..(k0 + SPARSE_BLOCK).min(k)].iter().zip(w) {
                    acc += x as i32 * w as i32;
                }
            }
            out[i * rs + j * cs] =
                clamp_i8(requantize(acc, rq[i]) + q.out_zp, q.act_min, q.act_max);
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip_and_fraction() {
        let w: Vec<i8> = vec![
            0, 0, 0, 0, 1, 0, 0, 0, 0, 5, //
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            -3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let s = pack_sparse(3, 10, &w).unwrap();
        assert_eq!(s.row_ptr, vec![0, 2, 2, 3]);
        assert_eq!(s.blocks, vec![1, 2, 0]);
        assert_eq!(s.values, vec![1, 0, 0, 0, 0, 5, 0, 0, -3, 0, 0, 0]);
        let v = s.view();
        assert_eq!(v.nnz_blocks(), 3);
        assert_eq!(v.row_sum(0), 6);
        assert!((zero_block_fraction(3, 10, &w) - 6.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn row_ranges_are_matrices_of_those_rows() {
        let w: Vec<i8> = (0..5 * 9)
            .map(|i| if i % 3 == 0 { 0 } else { i as i8 })
            .collect();
        let mut w = w;
        w[9..18].fill(0); // an empty row
        let s = pack_sparse(5, 9, &w).unwrap();
        let v = s.view();
        for r0 in 0..=5 {
            for r1 in r0..=5 {
                let sub = v.rows(r0, r1);
                let want = pack_sparse(r1 - r0, 9, &w[r0 * 9..r1 * 9]).unwrap();
                assert_eq!((sub.m(), sub.k()), (r1 - r0, 9));
                assert_eq!(sub.nnz_blocks(), want.blocks.len(), "{r0}..{r1}");
                for i in 0..r1 - r0 {
                    assert_eq!(sub.row(i), want.view().row(i), "{r0}..{r1} row {i}");
                    // A range of a range.
                    assert_eq!(v.rows(r0, r1).rows(i, i + 1).row(0), sub.row(i));
                }
            }
        }
    }

    #[test]
    fn malformed_matrices_are_rejected() {
        let ok = |rp: &[i32], b: &[i32], v: &[i8]| SparseWeights::new(2, 6, rp, b, v).map(|_| ());
        let v8 = [1i8; 8];
        assert_eq!(ok(&[0, 1, 2], &[0, 0], &[1, 1, 1, 1, 1, 1, 0, 0]), Ok(()));
        assert!(matches!(
            ok(&[0, 1], &[0, 0], &v8),
            Err(SparseError::RowPtrLen { .. })
        ));
        assert!(matches!(
            ok(&[1, 1, 2], &[0, 0], &v8),
            Err(SparseError::RowPtrStart(1))
        ));
        assert!(matches!(
            ok(&[0, 1, 0], &[0, 0], &v8),
            Err(SparseError::RowPtrDecreasing { row: 1 })
        ));
        assert!(matches!(
            ok(&[0, 1, 3], &[0, 0], &v8),
            Err(SparseError::RowPtrEnd { .. })
        ));
        assert!(matches!(
            ok(&[0, 1, 2], &[0, 2], &v8),
            Err(SparseError::BlockOutOfRange { row: 1, .. })
        ));
        assert!(matches!(
            ok(&[0, 1, 2], &[0, -1], &v8),
            Err(SparseError::BlockOutOfRange { row: 1, .. })
        ));
        assert!(matches!(
            ok(&[0, 2, 2], &[1, 1], &[0, 0, 0, 0, 1, 1, 0, 0]),
            Err(SparseError::BlocksNotIncreasing { row: 0 })
        ));
        assert!(matches!(
            ok(&[0, 1, 2], &[0, 0], &v8[..7]),
            Err(SparseError::ValuesLen { .. })
        ));
        assert!(matches!(
            ok(&[0, 1, 2], &[0, 1], &v8),
            Err(SparseError::PaddingNotZero { row: 1 })
        ));
    }
}
