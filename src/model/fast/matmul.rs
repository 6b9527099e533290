//! The one place that calls the `gemm` crate: a bounds-checked, safe wrapper around `gemm::gemm`.

use super::KernelError;

/// A dense row-or-column-strided view of a matrix inside a slice.
///
/// Element `(i, j)` lives at `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

/// The mutable counterpart of [`MatRef`].
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

/// Whether the highest index of a `rows` x `cols` matrix with these strides fits in `len`.
fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1).checked_mul(row_stride).and_then(|r| {
        (cols - 1)
            .checked_mul(col_stride)
            .and_then(|c| r.checked_add(c))
    });
    matches!(last, Some(last) if last < len && isize::try_from(last).is_ok())
}

/// `dst = lhs * rhs` (or `dst += lhs * rhs` when `accumulate`), with `lhs` of size `m x k`, `rhs`
/// of size `k x n` and `dst` of size `m x n`. Single-threaded: callers parallelise over tiles.
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut MatMut<'_>,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
) -> Result<(), KernelError> {
    let in_bounds = fits(dst.data.len(), m, n, dst.row_stride, dst.col_stride)
        && fits(lhs.data.len(), m, k, lhs.row_stride, lhs.col_stride)
        && fits(rhs.data.len(), k, n, rhs.row_stride, rhs.col_stride);
    if !in_bounds {
        return Err(KernelError::Internal("matrix product out of bounds"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.row_stride + j * dst.col_stride] = 0.0;
                }
            }
        }
        return Ok(());
    }
    // The strides were checked above to address only elements inside their slices, so they fit
    // in `isize`.
    let stride = |s: usize| s as isize;
    #[allow(unsafe_code)]
    // SAFETY: `fits` checked that every element (i, j) addressed through each pointer and its
    // strides, for i < rows and j < cols, lies inside the slice the pointer comes from. `dst` is
    // borrowed mutably, so no other reference reads or writes it during the call, and `lhs` and
    // `rhs` are shared borrows that cannot alias `dst`. `gemm::gemm` reads `dst` only when
    // `read_dst` is true, and then every element is initialised (it is an `&mut [f32]`).
    // `Parallelism::None` keeps the call on this thread.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            stride(dst.col_stride),
            stride(dst.row_stride),
            accumulate,
            lhs.data.as_ptr(),
            stride(lhs.col_stride),
            stride(lhs.row_stride),
            rhs.data.as_ptr(),
            stride(rhs.col_stride),
            stride(rhs.row_stride),
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares the wrapper with a naive triple loop on small odd shapes, both orientations.
    #[test]
    fn gemm_matches_naive_product_with_strides_and_accumulation() {
        let (m, n, k) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        let mut want = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum::<f32>() + 1.0;
            }
        }
        // dst is column-major here, b is read transposed from a column-major copy.
        let mut b_t = vec![0.0f32; k * n];
        for l in 0..k {
            for j in 0..n {
                b_t[j * k + l] = b[l * n + j];
            }
        }
        let mut dst = vec![1.0f32; m * n];
        gemm(
            m,
            n,
            k,
            &mut MatMut {
                data: &mut dst,
                row_stride: 1,
                col_stride: m,
            },
            true,
            MatRef {
                data: &a,
                row_stride: k,
                col_stride: 1,
            },
            MatRef {
                data: &b_t,
                row_stride: 1,
                col_stride: k,
            },
        )
        .unwrap();
        for i in 0..m {
            for j in 0..n {
                assert!((dst[j * m + i] - want[i * n + j]).abs() < 1e-5);
            }
        }
        let mut small = vec![0.0f32; m * n - 1];
        let err = gemm(
            m,
            n,
            k,
            &mut MatMut {
                data: &mut small,
                row_stride: n,
                col_stride: 1,
            },
            false,
            MatRef {
                data: &a,
                row_stride: k,
                col_stride: 1,
            },
            MatRef {
                data: &b,
                row_stride: n,
                col_stride: 1,
            },
        );
        assert!(err.is_err());
    }
}
