//! 2x2, stride-2 max pool over NHWC activations.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::norm::pool_dims;
use super::{KernelError, contiguous_f32, vectorized, with_f32};

/// 2x2 max pool with stride 2 over `[n, h, w, c]`; odd trailing rows and columns are dropped, as
/// in candle's `max_pool2d`. The gradient goes to each window's maximum (the first one on ties).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaxPool2x2Nhwc;

impl CustomOp1 for MaxPool2x2Nhwc {
    fn name(&self) -> &'static str {
        "cxr-max-pool-2x2-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let &[n, h, w, c] = l.dims() else {
            return Err(KernelError::Shape("max pooling needs an NHWC batch").into());
        };
        let (ph, pw) = pool_dims(h, w)?;
        let x = contiguous_f32(s, l)?;
        let mut y = vec![0.0f32; n * ph * pw * c];
        if !y.is_empty() {
            y.par_chunks_mut(pw * c).enumerate().for_each(|(r, yrow)| {
                let (b, py) = (r / ph, r % ph);
                let pair = &x[((b * h + 2 * py) * w) * c..][..2 * w * c];
                let (top, bottom) = pair.split_at(w * c);
                vectorized(
                    #[inline(always)]
                    || {
                        for (px, yr) in yrow.chunks_exact_mut(c).enumerate() {
                            let (t, u) =
                                (&top[2 * px * c..][..2 * c], &bottom[2 * px * c..][..2 * c]);
                            let (x0, x1, x2, x3) = (&t[..c], &t[c..], &u[..c], &u[c..]);
                            let yr = &mut yr[..c];
                            for j in 0..c {
                                yr[j] = x0[j].max(x1[j]).max(x2[j]).max(x3[j]);
                            }
                        }
                    },
                );
            });
        }
        Ok((CpuStorage::F32(y), Shape::from((n, ph, pw, c))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (_, h, w, c) = x.dims4()?;
        let (ph, pw) = pool_dims(h, w)?;
        let x = x.contiguous()?;
        let dy = dy.contiguous()?;
        let dx = with_f32(&x, |xv| {
            with_f32(&dy, |dyv| {
                let mut dx = vec![0.0f32; xv.len()];
                if dx.is_empty() {
                    return dx;
                }
                // One task per pair of input rows of one image: each window lies inside one.
                dx.par_chunks_mut(h * w * c)
                    .zip(xv.par_chunks(h * w * c))
                    .enumerate()
                    .for_each(|(b, (dimage, ximage))| {
                        dimage
                            .par_chunks_mut(2 * w * c)
                            .zip(ximage.par_chunks(2 * w * c))
                            .enumerate()
                            .take(ph)
                            .for_each(|(py, (dpair, xpair))| {
                                let drow = &dyv[(b * ph + py) * pw * c..][..pw * c];
                                pool_backward_pair(dpair, xpair, drow, w, c);
                            });
                    });
                dx
            })
        })??;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Routes the gradient of one row of windows (`drow`) to each window's first maximum, in the
/// pair of input rows `xpair` (gradient `dpair`, zero on entry).
fn pool_backward_pair(dpair: &mut [f32], xpair: &[f32], drow: &[f32], w: usize, c: usize) {
    let (top, bottom) = xpair.split_at(w * c);
    let (dtop, dbottom) = dpair.split_at_mut(w * c);
    vectorized(
        #[inline(always)]
        || {
            for (px, d) in drow.chunks_exact(c).enumerate() {
                let (t, u) = (&top[2 * px * c..][..2 * c], &bottom[2 * px * c..][..2 * c]);
                let (x0, x1, x2, x3) = (&t[..c], &t[c..], &u[..c], &u[c..]);
                let (dt, du) = (
                    &mut dtop[2 * px * c..][..2 * c],
                    &mut dbottom[2 * px * c..][..2 * c],
                );
                let (d0, d1) = dt.split_at_mut(c);
                let (d2, d3) = du.split_at_mut(c);
                let d = &d[..c];
                for j in 0..c {
                    let (mut best, mut k) = (x0[j], 0u32);
                    if x1[j] > best {
                        best = x1[j];
                        k = 1;
                    }
                    if x2[j] > best {
                        best = x2[j];
                        k = 2;
                    }
                    if x3[j] > best {
                        k = 3;
                    }
                    d0[j] = if k == 0 { d[j] } else { 0.0 };
                    d1[j] = if k == 1 { d[j] } else { 0.0 };
                    d2[j] = if k == 2 { d[j] } else { 0.0 };
                    d3[j] = if k == 3 { d[j] } else { 0.0 };
                }
            }
        },
    );
}
