//! Batch norm over NHWC activations: batch statistics, batch norm fused with `ReLU` (and
//! optionally with the 2x2 max pool that follows it) for training.
//!
//! Every loop runs over the channels of one pixel, contiguous in NHWC, inside [`vectorized`] so
//! that it compiles to the widest vector instructions the CPU has.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{KernelError, contiguous_f32, parts_for, vectorized, with_f32};

/// Pixels summed in `f32` before the running sums move to `f64`.
const BLOCK_PIXELS: usize = 256;

/// Mean and biased variance of every channel of an NHWC tensor `[.., c]`, as `[2, c]`: row 0 the
/// means, row 1 the variances (the mean squared deviation, as batch norm normalises with).
///
/// Sums are taken around the first pixel's values (shifted data, so a large mean costs no
/// precision), in `f32` over blocks and in `f64` across blocks, over a fixed number of parts so
/// that the result does not depend on thread timing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChannelStats;

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "cxr-channel-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let c = *l
            .dims()
            .last()
            .ok_or(KernelError::Shape("batch norm needs channels"))?;
        let x = contiguous_f32(s, l)?;
        let (mean, var) = channel_stats(x, c)?;
        let out: Vec<f32> = mean.iter().chain(&var).map(|&v| v as f32).collect();
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// Adds `f32` block sums to `f64` totals.
#[inline(always)]
fn add_block(total: &mut [f64], block: &[f32]) {
    for (t, b) in total.iter_mut().zip(block) {
        *t += f64::from(*b);
    }
}

pub(crate) fn channel_stats(x: &[f32], c: usize) -> Result<(Vec<f64>, Vec<f64>), KernelError> {
    if c == 0 || x.is_empty() || !x.len().is_multiple_of(c) {
        return Err(KernelError::Shape(
            "batch norm needs at least one pixel per channel",
        ));
    }
    let pixels = x.len() / c;
    let shift = &x[..c];
    let blocks = pixels.div_ceil(BLOCK_PIXELS);
    let (s1, s2) = sum_two(blocks, c, |u, s1, s2| {
        let block = &x[u * BLOCK_PIXELS * c..((u + 1) * BLOCK_PIXELS).min(pixels) * c];
        let (mut b1, mut b2) = (vec![0.0f32; c], vec![0.0f32; c]);
        vectorized(
            #[inline(always)]
            || {
                for row in block.chunks_exact(c) {
                    for (((b1, b2), x), s) in b1.iter_mut().zip(b2.iter_mut()).zip(row).zip(shift) {
                        let d = x - s;
                        *b1 += d;
                        *b2 += d * d;
                    }
                }
            },
        );
        add_block(s1, &b1);
        add_block(s2, &b2);
    });
    let n = pixels as f64;
    let mut mean = vec![0.0f64; c];
    let mut var = vec![0.0f64; c];
    for j in 0..c {
        let m = s1[j] / n;
        mean[j] = f64::from(shift[j]) + m;
        var[j] = (s2[j] / n - m * m).max(0.0);
    }
    Ok((mean, var))
}

/// Per-channel affine map of batch norm in training, `z = x * scale + shift`, and the parts of
/// the normalisation the backward pass needs.
pub(crate) struct Affine {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl Affine {
    /// From `gamma_beta` `[2, c]` and `stats` `[2, c]` (mean, biased variance).
    pub(crate) fn new(
        gamma_beta: &[f32],
        stats: &[f32],
        c: usize,
        eps: f64,
    ) -> Result<Self, KernelError> {
        if gamma_beta.len() != 2 * c || stats.len() != 2 * c {
            return Err(KernelError::Shape(
                "batch-norm parameters do not match the channels",
            ));
        }
        let (gamma, beta) = gamma_beta.split_at(c);
        let (mean, var) = stats.split_at(c);
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps as f32).sqrt()).collect();
        let scale: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, i)| g * i).collect();
        let shift = (0..c).map(|j| beta[j] - mean[j] * scale[j]).collect();
        Ok(Self {
            mean: mean.to_vec(),
            inv_std,
            scale,
            shift,
        })
    }
}

/// Reads `gamma_beta` and `stats` (both `[2, c]`) of a fused batch-norm op.
fn affine_of(
    gamma_beta: &Tensor,
    stats: &Tensor,
    c: usize,
    eps: f64,
) -> candle_core::Result<Affine> {
    let gb = gamma_beta.flatten_all()?.to_vec1::<f32>()?;
    let st = stats.flatten_all()?.to_vec1::<f32>()?;
    Ok(Affine::new(&gb, &st, c, eps)?)
}

/// Training batch norm with batch statistics, then `ReLU`, optionally then a 2x2 max pool
/// (stride 2, odd trailing rows and columns dropped, as candle's `max_pool2d`).
///
/// Arguments: `x` NHWC `[n, h, w, c]`; `gamma_beta` `[2, c]`; `stats` `[2, c]`, the batch mean
/// and biased variance of `x` from [`ChannelStats`] (detached: the backward pass differentiates
/// through the statistics itself). Autograd gives `x` and `gamma_beta` their gradients.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BnReluTrain {
    pub eps: f64,
    pub pool: bool,
}

impl CustomOp3 for BnReluTrain {
    fn name(&self) -> &'static str {
        if self.pool {
            "cxr-bn-relu-pool-train"
        } else {
            "cxr-bn-relu-train"
        }
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gbs: &CpuStorage,
        gbl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let &[n, h, w, c] = xl.dims() else {
            return Err(KernelError::Shape("batch norm needs an NHWC batch").into());
        };
        let x = contiguous_f32(xs, xl)?;
        let a = Affine::new(
            contiguous_f32(gbs, gbl)?,
            contiguous_f32(ss, sl)?,
            c,
            self.eps,
        )?;
        let y = bn_relu_forward(x, (n, h, w, c), &a, self.pool)?;
        let shape = if self.pool {
            let (ph, pw) = pool_dims(h, w)?;
            Shape::from((n, ph, pw, c))
        } else {
            xl.shape().clone()
        };
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma_beta: &Tensor,
        stats: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = x.dims4()?;
        let a = affine_of(gamma_beta, stats, dims.3, self.eps)?;
        let dy = dy.contiguous()?;
        let x = x.contiguous()?;
        let grads = with_f32(&x, |xv| {
            with_f32(&dy, |dyv| bn_relu_backward(xv, dyv, dims, &a, self.pool))
        })??;
        let (dx, dgb) = grads?;
        let dx = x
            .track_op()
            .then(|| Tensor::from_vec(dx, x.shape(), x.device()))
            .transpose()?;
        let dgb = gamma_beta
            .track_op()
            .then(|| Tensor::from_vec(dgb, (2, dims.3), x.device()))
            .transpose()?;
        Ok((dx, dgb, None))
    }
}

/// Batch norm (the affine map `a`), `ReLU` and, if `pool`, the 2x2 max pool, of NHWC `x` of
/// shape `(n, h, w, c)`.
pub(crate) fn bn_relu_forward(
    x: &[f32],
    (n, h, w, c): (usize, usize, usize, usize),
    a: &Affine,
    pool: bool,
) -> Result<Vec<f32>, KernelError> {
    if x.len() != n * h * w * c || a.scale.len() != c {
        return Err(KernelError::Shape(
            "batch norm got a tensor of the wrong size",
        ));
    }
    let (scale, shift) = (&a.scale[..], &a.shift[..]);
    if !pool {
        let mut y = vec![0.0f32; x.len()];
        y.par_chunks_mut(BLOCK_PIXELS * c)
            .zip(x.par_chunks(BLOCK_PIXELS * c))
            .for_each(|(y, x)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                            for (((y, x), s), t) in yr.iter_mut().zip(xr).zip(scale).zip(shift) {
                                *y = (x * s + t).max(0.0);
                            }
                        }
                    },
                );
            });
        return Ok(y);
    }
    let (ph, pw) = pool_dims(h, w)?;
    let mut y = vec![0.0f32; n * ph * pw * c];
    y.par_chunks_mut(pw * c).enumerate().for_each(|(r, yrow)| {
        let (b, py) = (r / ph, r % ph);
        let top = &x[((b * h + 2 * py) * w) * c..][..2 * w * c];
        let (top, bottom) = top.split_at(w * c);
        vectorized(
            #[inline(always)]
            || {
                for (px, yr) in yrow.chunks_exact_mut(c).enumerate() {
                    let (t, u) = (&top[2 * px * c..][..2 * c], &bottom[2 * px * c..][..2 * c]);
                    let (z0, z1, z2, z3) = (&t[..c], &t[c..], &u[..c], &u[c..]);
                    let (scale, shift, yr) = (&scale[..c], &shift[..c], &mut yr[..c]);
                    for j in 0..c {
                        let z = |v: f32| v * scale[j] + shift[j];
                        let m = z(z0[j]).max(z(z1[j])).max(z(z2[j])).max(z(z3[j]));
                        yr[j] = m.max(0.0);
                    }
                }
            },
        );
    });
    Ok(y)
}

/// The gradients of [`bn_relu_forward`] with respect to `x` and `[gamma; beta]`, given the
/// output gradient `dy`.
pub(crate) fn bn_relu_backward(
    x: &[f32],
    dy: &[f32],
    dims: (usize, usize, usize, usize),
    a: &Affine,
    pool: bool,
) -> Grads {
    if pool {
        bn_relu_pool_backward(x, dy, dims, a)
    } else {
        bn_relu_plain_backward(x, dy, dims.3, a)
    }
}

/// Output size of a 2x2, stride-2 max pool.
pub(crate) fn pool_dims(h: usize, w: usize) -> Result<(usize, usize), KernelError> {
    if h < 2 || w < 2 {
        return Err(KernelError::Shape(
            "a 2x2 max pool needs an image of at least 2x2 pixels",
        ));
    }
    Ok((h / 2, w / 2))
}

/// The input gradient of batch norm, `dx = a * dz + b * x + c0` per channel, and
/// `[dgamma; dbeta]`, from the per-channel sums `sum(dz)` and `sum(dz * x_hat)`.
struct BnGrad {
    a: Vec<f32>,
    b: Vec<f32>,
    c0: Vec<f32>,
    dgb: Vec<f32>,
}

impl BnGrad {
    fn new(aff: &Affine, sum_dz: &[f64], sum_dz_xhat: &[f64], count: usize) -> Self {
        let c = aff.scale.len();
        let n = count as f64;
        let mut g = Self {
            a: aff.scale.clone(),
            b: vec![0.0; c],
            c0: vec![0.0; c],
            dgb: vec![0.0; 2 * c],
        };
        for j in 0..c {
            // dx = scale * (dz - sum_dz / n - x_hat * sum_dz_xhat / n),
            // x_hat = (x - mean) * inv_std.
            let scale = f64::from(aff.scale[j]);
            let inv = f64::from(aff.inv_std[j]);
            let mean = f64::from(aff.mean[j]);
            let k = scale * inv * sum_dz_xhat[j] / n;
            g.b[j] = (-k) as f32;
            g.c0[j] = (-scale * sum_dz[j] / n + k * mean) as f32;
            g.dgb[j] = sum_dz_xhat[j] as f32;
            g.dgb[c + j] = sum_dz[j] as f32;
        }
        g
    }
}

/// Sums per channel over a fixed number of parts of `units` work units; `f` adds unit `u`'s
/// contribution into the two `f64` accumulators of length `c`.
fn sum_two<F>(units: usize, c: usize, f: F) -> (Vec<f64>, Vec<f64>)
where
    F: Fn(usize, &mut [f64], &mut [f64]) + Sync,
{
    let parts = parts_for(units);
    let partials: Vec<(Vec<f64>, Vec<f64>)> = (0..parts)
        .into_par_iter()
        .map(|part| {
            let (mut s1, mut s2) = (vec![0.0f64; c], vec![0.0f64; c]);
            for u in (part * units / parts)..((part + 1) * units / parts) {
                f(u, &mut s1, &mut s2);
            }
            (s1, s2)
        })
        .collect();
    let mut s1 = vec![0.0f64; c];
    let mut s2 = vec![0.0f64; c];
    for (p1, p2) in &partials {
        for j in 0..c {
            s1[j] += p1[j];
            s2[j] += p2[j];
        }
    }
    (s1, s2)
}

pub(crate) type Grads = Result<(Vec<f32>, Vec<f32>), KernelError>;

fn bn_relu_plain_backward(x: &[f32], dy: &[f32], c: usize, aff: &Affine) -> Grads {
    if x.len() != dy.len() {
        return Err(KernelError::Shape(
            "the output gradient has the wrong shape",
        ));
    }
    let (scale, shift, mean, inv) = (
        &aff.scale[..c],
        &aff.shift[..c],
        &aff.mean[..c],
        &aff.inv_std[..c],
    );
    let pixels = x.len() / c;
    let blocks = pixels.div_ceil(BLOCK_PIXELS);
    let (sum_dz, sum_dz_xhat) = sum_two(blocks, c, |u, s1, s2| {
        let range = u * BLOCK_PIXELS * c..((u + 1) * BLOCK_PIXELS).min(pixels) * c;
        let (mut b1, mut b2) = (vec![0.0f32; c], vec![0.0f32; c]);
        vectorized(
            #[inline(always)]
            || {
                let (b1, b2) = (&mut b1[..c], &mut b2[..c]);
                for (xr, dr) in x[range.clone()]
                    .chunks_exact(c)
                    .zip(dy[range].chunks_exact(c))
                {
                    let (xr, dr) = (&xr[..c], &dr[..c]);
                    for j in 0..c {
                        let z = xr[j] * scale[j] + shift[j];
                        let dz = if z >= 0.0 { dr[j] } else { 0.0 };
                        b1[j] += dz;
                        b2[j] += dz * (xr[j] - mean[j]) * inv[j];
                    }
                }
            },
        );
        add_block(s1, &b1);
        add_block(s2, &b2);
    });
    let g = BnGrad::new(aff, &sum_dz, &sum_dz_xhat, pixels);
    let (ga, gb, gc) = (&g.a[..c], &g.b[..c], &g.c0[..c]);
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(BLOCK_PIXELS * c)
        .zip(
            x.par_chunks(BLOCK_PIXELS * c)
                .zip(dy.par_chunks(BLOCK_PIXELS * c)),
        )
        .for_each(|(dxb, (xb, dyb))| {
            vectorized(
                #[inline(always)]
                || {
                    for ((o, xr), dr) in dxb
                        .chunks_exact_mut(c)
                        .zip(xb.chunks_exact(c))
                        .zip(dyb.chunks_exact(c))
                    {
                        let (o, xr, dr) = (&mut o[..c], &xr[..c], &dr[..c]);
                        for j in 0..c {
                            let z = xr[j] * scale[j] + shift[j];
                            let dz = if z >= 0.0 { dr[j] } else { 0.0 };
                            o[j] = ga[j] * dz + gb[j] * xr[j] + gc[j];
                        }
                    }
                },
            );
        });
    Ok((dx, g.dgb))
}

/// The corner (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) holding the maximum of
/// `z` over a 2x2 window, the first one on ties, with that maximum.
#[inline(always)]
fn window_argmax(z: [f32; 4]) -> (f32, f32) {
    let (mut best, mut k) = (z[0], 0.0f32);
    for (i, &v) in z.iter().enumerate().skip(1) {
        if v > best {
            best = v;
            k = i as f32;
        }
    }
    (best, k)
}

fn bn_relu_pool_backward(
    x: &[f32],
    dy: &[f32],
    (n, h, w, c): (usize, usize, usize, usize),
    aff: &Affine,
) -> Grads {
    let (ph, pw) = pool_dims(h, w)?;
    if dy.len() != n * ph * pw * c || x.len() != n * h * w * c {
        return Err(KernelError::Shape(
            "the output gradient has the wrong shape",
        ));
    }
    let (scale, shift, mean, inv) = (
        &aff.scale[..c],
        &aff.shift[..c],
        &aff.mean[..c],
        &aff.inv_std[..c],
    );
    // Pass 1: the sums of dz and dz * x_hat, where dz is non-zero only at each window's maximum
    // (if it is not negative: ReLU).
    let (sum_dz, sum_dz_xhat) = sum_two(n * ph, c, |r, s1, s2| {
        let (b, py) = (r / ph, r % ph);
        let pair = &x[((b * h + 2 * py) * w) * c..][..2 * w * c];
        let (top, bottom) = pair.split_at(w * c);
        let drow = &dy[r * pw * c..][..pw * c];
        let (mut b1, mut b2) = (vec![0.0f32; c], vec![0.0f32; c]);
        vectorized(
            #[inline(always)]
            || {
                let (b1, b2) = (&mut b1[..c], &mut b2[..c]);
                for (px, d) in drow.chunks_exact(c).enumerate() {
                    let (t, u) = (&top[2 * px * c..][..2 * c], &bottom[2 * px * c..][..2 * c]);
                    let xs = [&t[..c], &t[c..], &u[..c], &u[c..]];
                    let d = &d[..c];
                    for j in 0..c {
                        let v = [xs[0][j], xs[1][j], xs[2][j], xs[3][j]];
                        let (zmax, k) = window_argmax(v.map(|v| v * scale[j] + shift[j]));
                        let xk = if k == 0.0 {
                            v[0]
                        } else if k == 1.0 {
                            v[1]
                        } else if k == 2.0 {
                            v[2]
                        } else {
                            v[3]
                        };
                        let dz = if zmax >= 0.0 { d[j] } else { 0.0 };
                        b1[j] += dz;
                        b2[j] += dz * (xk - mean[j]) * inv[j];
                    }
                }
            },
        );
        add_block(s1, &b1);
        add_block(s2, &b2);
    });
    let g = BnGrad::new(aff, &sum_dz, &sum_dz_xhat, n * h * w);
    let (ga, gb, gc) = (&g.a[..c], &g.b[..c], &g.c0[..c]);
    // Pass 2: every pixel gets the affine part; window maxima also get their dz. One task per
    // pair of rows of one image (each window lies inside one pair).
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(h * w * c)
        .zip(x.par_chunks(h * w * c))
        .enumerate()
        .for_each(|(b, (dimage, ximage))| {
            dimage
                .par_chunks_mut(2 * w * c)
                .zip(ximage.par_chunks(2 * w * c))
                .enumerate()
                .for_each(|(py, (dpair, xpair))| {
                    vectorized(
                        #[inline(always)]
                        || {
                            for (o, xr) in dpair.chunks_exact_mut(c).zip(xpair.chunks_exact(c)) {
                                let (o, xr) = (&mut o[..c], &xr[..c]);
                                for j in 0..c {
                                    o[j] = gb[j] * xr[j] + gc[j];
                                }
                            }
                            if py >= ph {
                                return;
                            }
                            let drow = &dy[(b * ph + py) * pw * c..][..pw * c];
                            let (top, bottom) = xpair.split_at(w * c);
                            let (dtop, dbottom) = dpair.split_at_mut(w * c);
                            for (px, d) in drow.chunks_exact(c).enumerate() {
                                let (t, u) =
                                    (&top[2 * px * c..][..2 * c], &bottom[2 * px * c..][..2 * c]);
                                let xs = [&t[..c], &t[c..], &u[..c], &u[c..]];
                                let (dt, du) = (
                                    &mut dtop[2 * px * c..][..2 * c],
                                    &mut dbottom[2 * px * c..][..2 * c],
                                );
                                let (d0, d1) = dt.split_at_mut(c);
                                let (d2, d3) = du.split_at_mut(c);
                                let d = &d[..c];
                                for j in 0..c {
                                    let v = [xs[0][j], xs[1][j], xs[2][j], xs[3][j]];
                                    let (zmax, k) =
                                        window_argmax(v.map(|v| v * scale[j] + shift[j]));
                                    let add = if zmax >= 0.0 { ga[j] * d[j] } else { 0.0 };
                                    d0[j] += if k == 0.0 { add } else { 0.0 };
                                    d1[j] += if k == 1.0 { add } else { 0.0 };
                                    d2[j] += if k == 2.0 { add } else { 0.0 };
                                    d3[j] += if k == 3.0 { add } else { 0.0 };
                                }
                            }
                        },
                    );
                });
        });
    Ok((dx, g.dgb))
}
