//! 2x2, stride-2 max pool over NHWC activations.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::norm::pool_dims;
use super::{KernelError, contiguous_f32, with_f32};

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
                let top = &x[((b * h + 2 * py) * w) * c..][..w * c];
                let bottom = &x[((b * h + 2 * py + 1) * w) * c..][..w * c];
                for (px, yr) in yrow.chunks_exact_mut(c).enumerate() {
                    let (t, u) = (&top[2 * px * c..][..2 * c], &bottom[2 * px * c..][..2 * c]);
                    for j in 0..c {
                        yr[j] = t[j].max(t[c + j]).max(u[j]).max(u[c + j]);
                    }
                }
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
                    .enumerate()
                    .for_each(|(b, image)| {
                        image
                            .par_chunks_mut(2 * w * c)
                            .enumerate()
                            .take(ph)
                            .for_each(|(py, pair)| {
                                let base = ((b * h + 2 * py) * w) * c;
                                for px in 0..pw {
                                    let d = &dyv[((b * ph + py) * pw + px) * c..][..c];
                                    let offsets = [
                                        2 * px * c,
                                        (2 * px + 1) * c,
                                        (w + 2 * px) * c,
                                        (w + 2 * px + 1) * c,
                                    ];
                                    for j in 0..c {
                                        let mut best = offsets[0];
                                        for &o in &offsets[1..] {
                                            if xv[base + o + j] > xv[base + best + j] {
                                                best = o;
                                            }
                                        }
                                        pair[best + j] += d[j];
                                    }
                                }
                            });
                    });
                dx
            })
        })??;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}
