//! Winograd F(2x2, 3x3): the inference convolutions (3x3, stride 1, padding 1) with 16
//! multiplications per 2x2 output tile instead of 36.
//!
//! Each 4x4 input tile `d` becomes `V = Bᵀ d B`, each 3x3 weight `g` becomes `U = G g Gᵀ`
//! (once, when the batch norm is folded), and for each of the 16 positions of the transformed
//! tile the products over input channels are one matrix product, `M = V U`, through the same
//! `gemm` crate as the other kernels. The output tile is `Aᵀ M A`, plus the bias, through `ReLU`.
//! The transforms' coefficients are 0, ±1 and ±1/2, so rounding stays small: the tests hold the
//! result within 1e-4 (relative) of candle's direct convolution.
//!
//! Only for inference on fixed weights: the op has no backward pass (the caller falls back to
//! the direct convolution whenever a gradient could be wanted).

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::matmul::{MatMut, MatRef, gemm};
use super::{KernelError, contiguous_f32, vectorized};

/// Positions in a transformed tile.
const POSITIONS: usize = 16;

/// Floats of transformed input and products one task holds: 1 MiB each, about the L2 cache of a
/// core.
const TASK_FLOATS: usize = 256 * 1024;

/// The fewest tiles a task takes when the image has them.
const MIN_TASK_TILES: usize = 32;

/// Buffers of transformed input and products for one task.
type Scratch = (Vec<f32>, Vec<f32>);

thread_local! {
    /// Each thread's spare [`Scratch`] buffers, kept between calls so that their memory stays
    /// mapped. A task takes one and gives it back; a task that starts on the same thread while
    /// another waits for its products (work stealing) takes a second one.
    static SCRATCH: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

/// The transformed weight `U = G g Gᵀ`, laid out `[16, ci, co]`, of an OIHW 3x3 weight
/// `[co, ci, 3, 3]`.
pub(crate) fn transform_weight(w: &[f32], co: usize, ci: usize) -> Result<Vec<f32>, KernelError> {
    if w.len() != co * ci * 9 {
        return Err(KernelError::Shape("a Winograd weight must be 3x3"));
    }
    const G: [[f32; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut u = vec![0.0f32; POSITIONS * ci * co];
    for o in 0..co {
        for i in 0..ci {
            let g = &w[(o * ci + i) * 9..][..9];
            // G g (4x3), then (G g) Gᵀ (4x4).
            let mut gg = [[0.0f32; 3]; 4];
            for (a, row) in gg.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|k| G[a][k] * g[k * 3 + j]).sum();
                }
            }
            for a in 0..4 {
                for b in 0..4 {
                    let v: f32 = (0..3).map(|k| gg[a][k] * G[b][k]).sum();
                    u[((a * 4 + b) * ci + i) * co + o] = v;
                }
            }
        }
    }
    Ok(u)
}

/// The shape of one convolution: NHWC input `[n, h, w, ci]`, output `[n, h, w, co]`.
#[derive(Clone, Copy, Debug)]
struct Shape3x3 {
    n: usize,
    h: usize,
    w: usize,
    ci: usize,
    co: usize,
}

impl Shape3x3 {
    fn tiles_h(&self) -> usize {
        self.h.div_ceil(2)
    }

    fn tiles_w(&self) -> usize {
        self.w.div_ceil(2)
    }

    /// Tile rows per task: as many as fit [`TASK_FLOATS`], at most enough to give every thread
    /// two tasks, but at least [`MIN_TASK_TILES`] tiles (fewer make the products too thin).
    fn tile_rows_per_task(&self) -> usize {
        let per_tile_row = POSITIONS * self.tiles_w() * self.ci.max(self.co);
        let by_cache = (TASK_FLOATS / per_tile_row.max(1)).max(1);
        let wanted = 2 * rayon::current_num_threads();
        let by_threads = (self.n * self.tiles_h()).div_ceil(wanted).max(1);
        let at_least = MIN_TASK_TILES.div_ceil(self.tiles_w());
        by_cache
            .min(by_threads)
            .max(at_least)
            .min(self.tiles_h())
            .max(1)
    }
}

/// Convolution (3x3, stride 1, padding 1) of NHWC `x` with the transformed weight `u`, plus
/// `bias`, through `ReLU`.
fn forward(s: Shape3x3, x: &[f32], u: &[f32], bias: &[f32]) -> Result<Vec<f32>, KernelError> {
    let Shape3x3 { n, h, w, ci, co } = s;
    let mut out = vec![0.0f32; n * h * w * co];
    if out.is_empty() {
        return Ok(out);
    }
    let rows_per_task = s.tile_rows_per_task();
    // Too few tasks to keep every thread busy (a small image at batch 1): the 16 products of
    // each task are shared out instead.
    let tasks = n * s.tiles_h().div_ceil(rows_per_task);
    let split_products = tasks < 2 * rayon::current_num_threads();
    let image_len = h * w * co;
    out.par_chunks_mut(image_len)
        .enumerate()
        .try_for_each(|(b, image_out)| {
            let image = &x[b * h * w * ci..][..h * w * ci];
            image_out
                .par_chunks_mut(2 * rows_per_task * w * co)
                .enumerate()
                .try_for_each(|(t, out_rows)| {
                    let first = t * rows_per_task;
                    let rows = rows_per_task.min(s.tiles_h() - first);
                    task(s, image, u, bias, (first, rows), split_products, out_rows)
                })
        })?;
    Ok(out)
}

/// Tile rows `first..first + rows` of one image: transform, 16 products, inverse transform.
fn task(
    s: Shape3x3,
    image: &[f32],
    u: &[f32],
    bias: &[f32],
    (first, rows): (usize, usize),
    split_products: bool,
    out_rows: &mut [f32],
) -> Result<(), KernelError> {
    let Shape3x3 { ci, co, .. } = s;
    let tiles = rows * s.tiles_w();
    let mut run = |(v, m): &mut Scratch| -> Result<(), KernelError> {
        let (v_len, m_len) = (POSITIONS * tiles * ci, POSITIONS * tiles * co);
        if v.len() < v_len {
            v.resize(v_len, 0.0);
        }
        if m.len() < m_len {
            m.resize(m_len, 0.0);
        }
        let (v, m) = (&mut v[..v_len], &mut m[..m_len]);
        vectorized(
            #[inline(always)]
            || transform_input(s, image, first, rows, v),
        );
        let product = |k: usize, m_k: &mut [f32], v_k: &[f32]| {
            gemm(
                tiles,
                co,
                ci,
                &mut MatMut {
                    data: m_k,
                    row_stride: co,
                    col_stride: 1,
                },
                false,
                MatRef {
                    data: v_k,
                    row_stride: ci,
                    col_stride: 1,
                },
                MatRef {
                    data: &u[k * ci * co..][..ci * co],
                    row_stride: co,
                    col_stride: 1,
                },
            )
        };
        if split_products {
            m.par_chunks_exact_mut(tiles * co)
                .zip(v.par_chunks_exact(tiles * ci))
                .enumerate()
                .try_for_each(|(k, (m_k, v_k))| product(k, m_k, v_k))?;
        } else {
            for (k, (m_k, v_k)) in m
                .chunks_exact_mut(tiles * co)
                .zip(v.chunks_exact(tiles * ci))
                .enumerate()
            {
                product(k, m_k, v_k)?;
            }
        }
        vectorized(
            #[inline(always)]
            || transform_output(s, m, bias, first, rows, out_rows),
        );
        Ok(())
    };
    let mut scratch = SCRATCH
        .with(|cell| cell.borrow_mut().pop())
        .unwrap_or_default();
    let result = run(&mut scratch);
    SCRATCH.with(|cell| cell.borrow_mut().push(scratch));
    result
}

/// `out = a - b`, element by element.
#[inline(always)]
fn sub(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
        *o = a - b;
    }
}

/// `out = a + b`, element by element.
#[inline(always)]
fn add(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
        *o = a + b;
    }
}

/// `out = a + b + c`, element by element.
#[inline(always)]
fn add3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (((o, a), b), c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = a + b + c;
    }
}

/// `out = a - b - c`, element by element.
#[inline(always)]
fn sub2(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (((o, a), b), c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = a - b - c;
    }
}

/// `V = Bᵀ d B` for every tile of the task, laid out `[16, tiles, ci]`. Works on whole channel
/// vectors, so that every loop runs over contiguous channels.
#[inline(always)]
fn transform_input(s: Shape3x3, image: &[f32], first: usize, rows: usize, v: &mut [f32]) {
    let Shape3x3 { h, w, ci, .. } = s;
    let tiles_w = s.tiles_w();
    let tiles = rows * tiles_w;
    let zeros = vec![0.0f32; ci];
    // Bᵀ d, one channel vector per position (row-major 4x4).
    let mut r = vec![0.0f32; POSITIONS * ci];
    for tr in 0..rows {
        let ty = first + tr;
        for tx in 0..tiles_w {
            let t = tr * tiles_w + tx;
            // The 4x4 input tile starts one pixel above and left of the output tile.
            let d = |i: usize, j: usize| -> &[f32] {
                let (y, x) = ((2 * ty + i).wrapping_sub(1), (2 * tx + j).wrapping_sub(1));
                if y < h && x < w {
                    &image[(y * w + x) * ci..][..ci]
                } else {
                    &zeros
                }
            };
            // Rows of Bᵀ d: d0 - d2, d1 + d2, d2 - d1, d1 - d3.
            for j in 0..4 {
                sub(&mut r[j * ci..][..ci], d(0, j), d(2, j));
                add(&mut r[(4 + j) * ci..][..ci], d(1, j), d(2, j));
                sub(&mut r[(8 + j) * ci..][..ci], d(2, j), d(1, j));
                sub(&mut r[(12 + j) * ci..][..ci], d(1, j), d(3, j));
            }
            // (Bᵀ d) B: the same on the columns.
            let rr = |i: usize, j: usize| &r[(i * 4 + j) * ci..][..ci];
            let at = |i: usize, j: usize| ((i * 4 + j) * tiles + t) * ci;
            for i in 0..4 {
                sub(&mut v[at(i, 0)..][..ci], rr(i, 0), rr(i, 2));
                add(&mut v[at(i, 1)..][..ci], rr(i, 1), rr(i, 2));
                sub(&mut v[at(i, 2)..][..ci], rr(i, 2), rr(i, 1));
                sub(&mut v[at(i, 3)..][..ci], rr(i, 1), rr(i, 3));
            }
        }
    }
}

/// `Aᵀ M A` plus the bias, through `ReLU`, into the output rows of the task.
#[inline(always)]
fn transform_output(
    s: Shape3x3,
    m: &[f32],
    bias: &[f32],
    first: usize,
    rows: usize,
    out_rows: &mut [f32],
) {
    let Shape3x3 { h, w, co, .. } = s;
    let tiles_w = s.tiles_w();
    let tiles = rows * tiles_w;
    // Aᵀ M, one channel vector per position (2x4).
    let mut r = vec![0.0f32; 8 * co];
    for tr in 0..rows {
        for tx in 0..tiles_w {
            let t = tr * tiles_w + tx;
            let p = |i: usize, j: usize| &m[((i * 4 + j) * tiles + t) * co..][..co];
            // Rows of Aᵀ M: m0 + m1 + m2 and m1 - m2 - m3.
            for j in 0..4 {
                add3(&mut r[j * co..][..co], p(0, j), p(1, j), p(2, j));
                sub2(&mut r[(4 + j) * co..][..co], p(1, j), p(2, j), p(3, j));
            }
            let rr = |i: usize, j: usize| &r[(i * 4 + j) * co..][..co];
            // Output pixels of this tile inside the image (the last row or column of tiles may
            // stick out by one).
            let (y0, x0) = (2 * tr, 2 * tx);
            for i in 0..2 {
                if 2 * first + y0 + i >= h {
                    continue;
                }
                for j in 0..2 {
                    if x0 + j >= w {
                        continue;
                    }
                    let out = &mut out_rows[((y0 + i) * w + x0 + j) * co..][..co];
                    if j == 0 {
                        add3(out, rr(i, 0), rr(i, 1), rr(i, 2));
                    } else {
                        sub2(out, rr(i, 1), rr(i, 2), rr(i, 3));
                    }
                    for (o, b) in out.iter_mut().zip(bias) {
                        *o = (*o + b).max(0.0);
                    }
                }
            }
        }
    }
}

/// Convolution (3x3, stride 1, padding 1), bias and `ReLU` on NHWC activations, with the
/// weight transformed by [`transform_weight`]: `(x [n, h, w, ci], u [16, ci, co], bias [co])
/// -> [n, h, w, co]`. Inference only: it has no backward pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv3x3BiasReluWinograd;

impl CustomOp3 for Conv3x3BiasReluWinograd {
    fn name(&self) -> &'static str {
        "cxr-conv3x3-bias-relu-winograd"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (&[n, h, w, ci], &[POSITIONS, u_ci, co]) = (xl.dims(), ul.dims()) else {
            return Err(KernelError::Shape(
                "a Winograd convolution needs NHWC input and a [16, ci, co] weight",
            )
            .into());
        };
        if u_ci != ci || bl.dims() != [co] {
            return Err(
                KernelError::Shape("the Winograd weight or bias does not match the input").into(),
            );
        }
        let s = Shape3x3 { n, h, w, ci, co };
        let y = forward(
            s,
            contiguous_f32(xs, xl)?,
            contiguous_f32(us, ul)?,
            contiguous_f32(bs, bl)?,
        )?;
        Ok((CpuStorage::F32(y), Shape::from_dims(&[n, h, w, co])))
    }
}
