//! Shape helpers shared by kernels: broadcasting and strided iteration over up
//! to [`MAX_RANK`] dimensions without allocation.

/// The largest tensor rank any kernel accepts.
pub const MAX_RANK: usize = 6;

/// Row-major strides of `dims` (elements), padded on the left to `MAX_RANK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Dims {
    pub dims: [usize; MAX_RANK],
}

impl Dims {
    /// Left-pads `shape` with ones to `MAX_RANK`. Contract: `shape.len() <= MAX_RANK`.
    pub fn new(shape: &[usize]) -> Self {
        let mut dims = [1; MAX_RANK];
        let off = MAX_RANK - shape.len();
        dims[off..].copy_from_slice(shape);
        Dims { dims }
    }
    pub fn count(&self) -> usize {
        self.dims.iter().product()
    }
    /// Strides in elements; 0 where the dimension is broadcast (`1` against `out`).
    pub fn broadcast_strides(&self, out: &Dims) -> [usize; MAX_RANK] {
        let mut s = [0; MAX_RANK];
        let mut acc = 1;
        for i in (0..MAX_RANK).rev() {
            s[i] = if self.dims[i] == 1 && out.dims[i] != 1 {
                0
            } else {
                acc
            };
            acc *= self.dims[i];
        }
        s
    }
}

/// Numpy broadcast of two shapes; `None` if incompatible or rank > MAX_RANK.
pub fn broadcast_shape(a: &[usize], b: &[usize], out: &mut [usize; MAX_RANK]) -> Option<usize> {
    let rank = a.len().max(b.len());
    if rank > MAX_RANK {
        return None;
    }
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(rank)
}

/// Calls `f(out_index, a_index, b_index)` for every element of the broadcast of
/// `a` and `b` into `out`, in row-major order of `out`.
#[inline]
pub fn for_each_broadcast(a: &Dims, b: &Dims, out: &Dims, mut f: impl FnMut(usize, usize, usize)) {
    let sa = a.broadcast_strides(out);
    let sb = b.broadcast_strides(out);
    let d = &out.dims;
    let mut o = 0;
    let inner = d[MAX_RANK - 1];
    let (ia_in, ib_in) = (sa[MAX_RANK - 1], sb[MAX_RANK - 1]);
    let mut idx = [0usize; MAX_RANK - 1];
    let outer: usize = d[..MAX_RANK - 1].iter().product();
    for _ in 0..outer {
        let mut ia = 0;
        let mut ib = 0;
        for k in 0..MAX_RANK - 1 {
            ia += idx[k] * sa[k];
            ib += idx[k] * sb[k];
        }
        for j in 0..inner {
            f(o, ia + j * ia_in, ib + j * ib_in);
            o += 1;
        }
        // Odometer increment over the outer dimensions.
        let mut k = MAX_RANK - 1;
        while k > 0 {
            k -= 1;
            idx[k] += 1;
            if idx[k] < d[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn broadcast_row_col() {
        let mut out = [0; MAX_RANK];
        let r = broadcast_shape(&[2, 1], &[3], &mut out).unwrap();
        assert_eq!(&out[..r], &[2, 3]);
        let (a, b, o) = (Dims::new(&[2, 1]), Dims::new(&[3]), Dims::new(&[2, 3]));
        let mut seen = [(0, 0, 0); 6];
        for_each_broadcast(&a, &b, &o, |i, x, y| seen[i] = (i, x, y));
        assert_eq!(
            seen,
            [
                (0, 0, 0),
                (1, 0, 1),
                (2, 0, 2),
                (3, 1, 0),
                (4, 1, 1),
                (5, 1, 2)
            ]
        );
        assert!(broadcast_shape(&[2, 3], &[4], &mut out).is_none());
    }
}
