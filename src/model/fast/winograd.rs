//! Winograd F(4x4, 3x3): the inference convolutions (3x3, stride 1, padding 1) with 36
//! multiplications per 4x4 output tile instead of 144.
//!
//! Each 6x6 input tile `d` becomes `V = Bᵀ d B`, each 3x3 weight `g` becomes `U = G g Gᵀ`
//! (once, when the batch norm is folded), and for each of the 36 positions of the transformed
//! tile the products over input channels are one matrix product, `M = V U`, through the `gemm`
//! crate or, where the panels apply, [`direct::product`]. The output tile is `Aᵀ M A`, plus the
//! bias, through `ReLU` and, when a 2x2 max pool follows, pooled before it is written (the 4x4
//! tile holds whole pool windows). The matrices are Lavin and Gray's (2016), with interpolation points 0, ±1, ±2;
//! the weight transform runs in `f64`. The tests hold the result within 1e-4 (relative) of
//! candle's direct convolution.
//!
//! Tasks are runs of whole tile rows over the batch (a run may go on into the next image), so
//! that the small late layers still give the products enough rows.
//!
//! Where the panels apply and the channels come in whole registers of 8, the transforms run
//! with AVX2 ([`avx2`]).
//!
//! Only for inference on fixed weights: the op has no backward pass (the caller falls back to
//! the direct convolution whenever a gradient could be wanted).

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::direct;
use super::matmul::{MatMut, MatRef, gemm};
use super::norm::pool_dims;
use super::{KernelError, contiguous_f32, vectorized};

/// Side of an output tile.
const TILE: usize = 4;

/// Side of an input tile: the output tile and the kernel's reach around it.
const ALPHA: usize = TILE + 2;

/// Positions in a transformed tile.
pub(crate) const POSITIONS: usize = ALPHA * ALPHA;

/// The output tiles of an `[n, h, w, _]` input, all images together.
pub(crate) fn tile_count(n: usize, h: usize, w: usize) -> usize {
    n * h.div_ceil(TILE) * w.div_ceil(TILE)
}

/// Floats of transformed input and products one task holds: 256 KiB each, so that both stay in
/// a core's L2 cache (1 MiB on Zen 4) between the transforms and the products. Measured at batch
/// 32: 795-815 images/s, against 775-790 with 512 KiB, 725 with 1 MiB and 740 with 128 KiB.
const TASK_FLOATS: usize = 64 * 1024;

/// The fewest tiles a task takes when the batch has them (fewer make the products too thin).
/// The late layers at batch 1 have few tiles in all; 8 gave batch 1 a few percent over 4 and 32.
const MIN_TASK_TILES: usize = 8;

/// Floats in a cache line (64 bytes).
const LINE_FLOATS: usize = 16;

/// The distance, in floats, between the matrices of two positions in a task's buffers: at least
/// `floats`, a whole number of cache lines, and an odd number of them. The 36 matrices are
/// written (and read) a few channels at a time, tile by tile; at a distance that is a multiple
/// of 4 KiB they would all fall in the same sets of the L1 cache and evict one another.
fn position_stride(floats: usize) -> usize {
    let lines = floats.div_ceil(LINE_FLOATS);
    LINE_FLOATS * (lines | 1)
}

/// The first `len` floats of `buf` from a cache-line boundary on, growing `buf` as needed: the
/// transforms write and read whole lines of 16 channels, and a line split across two costs
/// two accesses.
fn cache_aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len + LINE_FLOATS {
        buf.resize(len + LINE_FLOATS, 0.0);
    }
    let skip = buf
        .as_ptr()
        .align_offset(LINE_FLOATS * size_of::<f32>())
        .min(LINE_FLOATS);
    &mut buf[skip..][..len]
}

/// Buffers of transformed input and products for one task.
type Scratch = (Vec<f32>, Vec<f32>);

thread_local! {
    /// Each thread's spare [`Scratch`] buffers, kept between calls so that their memory stays
    /// mapped. A task takes one and gives it back; a task that starts on the same thread while
    /// another waits for its products (work stealing) takes a second one.
    static SCRATCH: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

/// `Bᵀ x` for one column (or row) of an input tile.
#[inline(always)]
fn input_1d([x0, x1, x2, x3, x4, x5]: [f32; ALPHA]) -> [f32; ALPHA] {
    let (t0, t1) = (x4 - 4.0 * x2, x3 - 4.0 * x1);
    let (t2, t3) = (x4 - x2, 2.0 * (x3 - x1));
    [
        4.0 * x0 - 5.0 * x2 + x4,
        t0 + t1,
        t0 - t1,
        t2 + t3,
        t2 - t3,
        4.0 * x1 - 5.0 * x3 + x5,
    ]
}

/// `Aᵀ m` for one column (or row) of a tile of products.
#[inline(always)]
fn output_1d([m0, m1, m2, m3, m4, m5]: [f32; ALPHA]) -> [f32; TILE] {
    let (a, b) = (m1 + m2, m1 - m2);
    let (c, e) = (m3 + m4, m3 - m4);
    [m0 + a + c, b + 2.0 * e, a + 4.0 * c, b + 8.0 * e + m5]
}

/// The transformed weight `U = G g Gᵀ`, laid out `[36, ci, co]`, of an OIHW 3x3 weight
/// `[co, ci, 3, 3]`.
pub(crate) fn transform_weight(w: &[f32], co: usize, ci: usize) -> Result<Vec<f32>, KernelError> {
    const G: [[f64; 3]; ALPHA] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    transform_weight_with(&G, w, co, ci)
}

/// `U = G g Gᵀ` of an OIHW 3x3 weight `[co, ci, 3, 3]` for the `A`x3 matrix `G` (in `f64`),
/// laid out `[A * A, ci, co]`: the weight transform of F(4x4, 3x3) here and of F(2x2, 3x3)
/// in [`super::winograd2`].
pub(super) fn transform_weight_with<const A: usize>(
    g_matrix: &[[f64; 3]; A],
    w: &[f32],
    co: usize,
    ci: usize,
) -> Result<Vec<f32>, KernelError> {
    if w.len() != co * ci * 9 {
        return Err(KernelError::Shape("a Winograd weight must be 3x3"));
    }
    let mut u = vec![0.0f32; A * A * ci * co];
    for o in 0..co {
        for i in 0..ci {
            let g = &w[(o * ci + i) * 9..][..9];
            // G g (Ax3), then (G g) Gᵀ (AxA).
            let mut gg = [[0.0f64; 3]; A];
            for (a, row) in gg.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3)
                        .map(|k| g_matrix[a][k] * f64::from(g[k * 3 + j]))
                        .sum();
                }
            }
            for a in 0..A {
                for b in 0..A {
                    let v: f64 = (0..3).map(|k| gg[a][k] * g_matrix[b][k]).sum();
                    u[((a * A + b) * ci + i) * co + o] = v as f32;
                }
            }
        }
    }
    Ok(u)
}

/// The offsets in an image (`step` floats apart) of the `N` rows (or columns) of an input tile
/// that starts one pixel before `start`, 0 for those outside the image's `len`, and a bit per
/// row (or column) inside: the transforms read the ones inside and take zeros for the others.
pub(super) fn tile_edges<const N: usize>(
    start: usize,
    len: usize,
    step: usize,
) -> ([usize; N], u32) {
    let mut inside = 0;
    let offsets = std::array::from_fn(|i| match (start + i).checked_sub(1) {
        Some(p) if p < len => {
            inside |= 1 << i;
            p * step
        }
        _ => 0,
    });
    (offsets, inside)
}

/// The shape of one convolution: NHWC input `[n, h, w, ci]`, output `[n, h, w, co]`, or
/// `[n, h / 2, w / 2, co]` when a 2x2 max pool follows.
#[derive(Clone, Copy, Debug)]
struct Shape3x3 {
    n: usize,
    h: usize,
    w: usize,
    ci: usize,
    co: usize,
    pool: bool,
    /// The weight is laid out as [`panels`] leaves it, for [`direct::product`].
    panels: bool,
}

impl Shape3x3 {
    fn tiles_h(&self) -> usize {
        self.h.div_ceil(TILE)
    }

    fn tiles_w(&self) -> usize {
        self.w.div_ceil(TILE)
    }

    /// Height and width of the output.
    fn out_hw(&self) -> (usize, usize) {
        if self.pool {
            (self.h / 2, self.w / 2)
        } else {
            (self.h, self.w)
        }
    }

    /// The first output row, counted over the whole batch, of tile row `g` (counted over the
    /// whole batch too); `g = n * tiles_h` gives the end of the output.
    fn first_out_row(&self, g: usize) -> usize {
        let (oh, _) = self.out_hw();
        let rows_per_tile = if self.pool { TILE / 2 } else { TILE };
        let (b, ty) = (g / self.tiles_h(), g % self.tiles_h());
        b * oh + (ty * rows_per_tile).min(oh)
    }

    /// Whether the transforms run through [`avx2`]: where the panels apply (AVX2 and FMA, no
    /// AVX-512) and the channels come in whole registers of 8.
    fn avx2_transforms(&self) -> bool {
        cfg!(target_arch = "x86_64")
            && self.panels
            && self.ci.is_multiple_of(AVX2_LANES)
            && self.co.is_multiple_of(AVX2_LANES)
            && direct::available()
    }

    /// Tile rows per task: as many as fit [`TASK_FLOATS`], at most enough to give every thread
    /// two tasks, but at least [`MIN_TASK_TILES`] tiles, and at least one per 256 KiB of the
    /// transformed weight, which every task reads whole: with 8 tiles per task, the last layer
    /// of a chunk of 8 images at 128 px (8x8, 256 -> 256, a 9.4 MB weight read by four tasks)
    /// took 20.9 ms on one core of a Zen 3, against 6.5 ms with the chunk's 32 tiles in one task.
    fn tile_rows_per_task(&self) -> usize {
        let rows = self.n * self.tiles_h();
        let per_tile_row = POSITIONS * self.tiles_w() * self.ci.max(self.co);
        let by_cache = (TASK_FLOATS / per_tile_row.max(1)).max(1);
        let by_threads = rows.div_ceil(2 * rayon::current_num_threads()).max(1);
        let weight_floats = POSITIONS * self.ci * self.co;
        let at_least = MIN_TASK_TILES
            .max(weight_floats / TASK_FLOATS)
            .div_ceil(self.tiles_w());
        by_cache.min(by_threads).max(at_least).min(rows).max(1)
    }
}

/// A transformed weight `[36, ci, co]` as 16-channel panels `[36, co / 16, ci, 16]`, for
/// [`direct::product`] (on CPUs where [`direct::applies`]).
pub(crate) fn panels(u: &[f32], ci: usize, co: usize) -> Result<Vec<f32>, KernelError> {
    if ci * co == 0 || !u.len().is_multiple_of(ci * co) || !co.is_multiple_of(direct::PANEL) {
        return Err(KernelError::Shape(
            "Winograd panels need a [positions, ci, co] weight with whole panels",
        ));
    }
    Ok(u.chunks_exact(ci * co)
        .flat_map(|u_k| direct::panels_of(ci, co, |r, o| u_k[r * co + o]))
        .collect())
}

/// Convolution (3x3, stride 1, padding 1) of NHWC `x` with the transformed weight `u`, plus
/// `bias`, through `ReLU` (and the 2x2 max pool if `s.pool`).
fn forward(s: Shape3x3, x: &[f32], u: &[f32], bias: &[f32]) -> Result<Vec<f32>, KernelError> {
    let (oh, ow) = s.out_hw();
    let mut out = vec![0.0f32; s.n * oh * ow * s.co];
    if out.is_empty() {
        return Ok(out);
    }
    let rows = s.n * s.tiles_h();
    let per_task = s.tile_rows_per_task();
    let tasks = rows.div_ceil(per_task);
    // Too few tasks to keep every thread busy (a small image at batch 1): the 36 products of
    // each task are shared out instead.
    let split_products = tasks < 2 * rayon::current_num_threads();
    // Each task writes the output rows of its tile rows: one contiguous slab.
    let mut slabs = Vec::with_capacity(tasks);
    let mut rest = out.as_mut_slice();
    for t in 0..tasks {
        let (first, end) = (t * per_task, ((t + 1) * per_task).min(rows));
        let len = (s.first_out_row(end) - s.first_out_row(first)) * ow * s.co;
        let (slab, tail) = rest
            .split_at_mut_checked(len)
            .ok_or(KernelError::Internal("Winograd output slabs overrun"))?;
        slabs.push(((first, end - first), slab));
        rest = tail;
    }
    slabs
        .into_par_iter()
        .try_for_each(|(rows, slab)| task(s, x, u, bias, rows, split_products, slab))?;
    Ok(out)
}

/// Tile rows `first..first + count` of the batch: transform, 36 products, inverse transform.
fn task(
    s: Shape3x3,
    x: &[f32],
    u: &[f32],
    bias: &[f32],
    (first, count): (usize, usize),
    split_products: bool,
    slab: &mut [f32],
) -> Result<(), KernelError> {
    let Shape3x3 { ci, co, .. } = s;
    let tiles = count * s.tiles_w();
    let mut run = |(v, m): &mut Scratch| -> Result<(), KernelError> {
        let (v_stride, m_stride) = (position_stride(tiles * ci), position_stride(tiles * co));
        let (v_len, m_len) = (POSITIONS * v_stride, POSITIONS * m_stride);
        let (v, m) = (cache_aligned(v, v_len), cache_aligned(m, m_len));
        if s.avx2_transforms() {
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            // SAFETY: `avx2_transforms` checked that the CPU has AVX2 and FMA.
            unsafe {
                avx2::transform_input(s, x, first, count, v);
            }
        } else {
            vectorized(
                #[inline(always)]
                || transform_input(s, x, first, count, v),
            );
        }
        let product = |k: usize, m_k: &mut [f32], v_k: &[f32]| {
            let u_k = &u[k * ci * co..][..ci * co];
            if s.panels {
                return direct::product([tiles, ci, co], v_k, u_k, m_k);
            }
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
                    data: u_k,
                    row_stride: co,
                    col_stride: 1,
                },
            )
        };
        if split_products {
            m.par_chunks_exact_mut(m_stride)
                .zip(v.par_chunks_exact(v_stride))
                .enumerate()
                .try_for_each(|(k, (m_k, v_k))| product(k, m_k, v_k))?;
        } else {
            for (k, (m_k, v_k)) in m
                .chunks_exact_mut(m_stride)
                .zip(v.chunks_exact(v_stride))
                .enumerate()
            {
                product(k, m_k, v_k)?;
            }
        }
        if s.avx2_transforms() {
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            // SAFETY: `avx2_transforms` checked that the CPU has AVX2 and FMA.
            unsafe {
                avx2::transform_output(s, m, bias, first, count, slab);
            }
        } else {
            vectorized(
                #[inline(always)]
                || transform_output(s, m, bias, first, count, slab),
            );
        }
        Ok(())
    };
    let mut scratch = SCRATCH
        .with(|cell| cell.borrow_mut().pop())
        .unwrap_or_default();
    let result = run(&mut scratch);
    SCRATCH.with(|cell| cell.borrow_mut().push(scratch));
    result
}

/// One vector register's worth of channels (AVX-512): the transforms work on these.
const LANES: usize = 16;

/// The values of [`LANES`] consecutive channels.
type Lanes = [f32; LANES];

/// Up to [`LANES`] channels from `src`, the rest zero.
#[inline(always)]
fn load(src: &[f32]) -> Lanes {
    if let Ok(lanes) = <&Lanes>::try_from(src) {
        return *lanes;
    }
    let mut lanes = [0.0; LANES];
    let n = src.len().min(LANES);
    lanes[..n].copy_from_slice(&src[..n]);
    lanes
}

/// The first `dst.len()` (at most [`LANES`]) channels of `lanes` into `dst`.
#[inline(always)]
fn store(dst: &mut [f32], lanes: &Lanes) {
    if let Ok(dst) = <&mut Lanes>::try_from(&mut *dst) {
        *dst = *lanes;
        return;
    }
    let n = dst.len().min(LANES);
    dst[..n].copy_from_slice(&lanes[..n]);
}

/// `z + bias` through `ReLU`, into `dst` (at most [`LANES`] channels).
#[inline(always)]
fn bias_relu_store(dst: &mut [f32], z: &Lanes, bias: &Lanes) {
    let mut out = [0.0; LANES];
    for ((o, z), b) in out.iter_mut().zip(z).zip(bias) {
        *o = (z + b).max(0.0);
    }
    store(dst, &out);
}

/// `Tᵀ x T` of a tile of [`LANES`] channels, for the 1-D transform `t` (`x ↦ Tᵀ x`, 6 values
/// to `N`): row-major 6x6 in, `N`x`N` out, with `r` (`N`x6) as scratch. With [`input_1d`] this is
/// `Bᵀ d B` (`N` = 6); with [`output_1d`], `Aᵀ m A` (`N` = 4).
#[inline(always)]
fn transform_2d<const N: usize>(
    x: &[Lanes; POSITIONS],
    t: impl Fn([f32; ALPHA]) -> [f32; N],
    r: &mut [Lanes],
    out: &mut [Lanes],
) {
    let (r, out) = (&mut r[..N * ALPHA], &mut out[..N * N]);
    // Columns: r = Tᵀ x.
    for j in 0..ALPHA {
        for l in 0..LANES {
            let o = t([
                x[j][l],
                x[ALPHA + j][l],
                x[2 * ALPHA + j][l],
                x[3 * ALPHA + j][l],
                x[4 * ALPHA + j][l],
                x[5 * ALPHA + j][l],
            ]);
            for (i, o) in o.into_iter().enumerate() {
                r[i * ALPHA + j][l] = o;
            }
        }
    }
    // Rows: out = (Tᵀ x) T.
    for i in 0..N {
        for l in 0..LANES {
            let row = &r[i * ALPHA..][..ALPHA];
            let o = t([
                row[0][l], row[1][l], row[2][l], row[3][l], row[4][l], row[5][l],
            ]);
            for (j, o) in o.into_iter().enumerate() {
                out[i * N + j][l] = o;
            }
        }
    }
}

/// `V = Bᵀ d B` for every tile of tile rows `first..first + count`, laid out
/// `[36, tiles, ci]` (positions [`position_stride`] apart), [`LANES`] channels at a time.
#[inline(always)]
fn transform_input(s: Shape3x3, x: &[f32], first: usize, count: usize, v: &mut [f32]) {
    let Shape3x3 { h, w, ci, .. } = s;
    let (tiles_h, tiles_w) = (s.tiles_h(), s.tiles_w());
    let v_stride = position_stride(count * tiles_w * ci);
    let mut d = [[0.0; LANES]; POSITIONS];
    let mut r = [[0.0; LANES]; POSITIONS];
    let mut vt = [[0.0; LANES]; POSITIONS];
    for tr in 0..count {
        let (b, ty) = ((first + tr) / tiles_h, (first + tr) % tiles_h);
        let image = &x[b * h * w * ci..][..h * w * ci];
        for tx in 0..tiles_w {
            let t = tr * tiles_w + tx;
            for c0 in (0..ci).step_by(LANES) {
                let cb = LANES.min(ci - c0);
                // The 6x6 input tile starts one pixel above and left of the output tile.
                for (k, d) in d.iter_mut().enumerate() {
                    let (y, xx) = (
                        (TILE * ty + k / ALPHA).wrapping_sub(1),
                        (TILE * tx + k % ALPHA).wrapping_sub(1),
                    );
                    *d = if y < h && xx < w {
                        load(&image[(y * w + xx) * ci + c0..][..cb])
                    } else {
                        [0.0; LANES]
                    };
                }
                transform_2d(&d, input_1d, &mut r, &mut vt);
                for (k, lanes) in vt.iter().enumerate() {
                    store(&mut v[k * v_stride + t * ci + c0..][..cb], lanes);
                }
            }
        }
    }
}

/// `Aᵀ M A` plus the bias, through `ReLU` (after the 2x2 max pool when `s.pool`), into the
/// output rows of tile rows `first..first + count`, [`LANES`] channels at a time.
#[inline(always)]
fn transform_output(
    s: Shape3x3,
    m: &[f32],
    bias: &[f32],
    first: usize,
    count: usize,
    slab: &mut [f32],
) {
    let Shape3x3 { h, w, co, pool, .. } = s;
    let (tiles_h, tiles_w) = (s.tiles_h(), s.tiles_w());
    let m_stride = position_stride(count * tiles_w * co);
    let (oh, ow) = s.out_hw();
    let base = s.first_out_row(first);
    let mut mt = [[0.0; LANES]; POSITIONS];
    let mut r = [[0.0; LANES]; TILE * ALPHA];
    let mut y = [[0.0; LANES]; TILE * TILE];
    for tr in 0..count {
        let (b, ty) = ((first + tr) / tiles_h, (first + tr) % tiles_h);
        for tx in 0..tiles_w {
            let t = tr * tiles_w + tx;
            for c0 in (0..co).step_by(LANES) {
                let cb = LANES.min(co - c0);
                for (k, mt) in mt.iter_mut().enumerate() {
                    *mt = load(&m[k * m_stride + t * co + c0..][..cb]);
                }
                transform_2d(&mt, output_1d, &mut r, &mut y);
                let bias = load(&bias[c0..][..cb]);
                // Pixel (py, px) of this image's output, counted from the slab's first row.
                let at = |py: usize, px: usize| ((b * oh + py - base) * ow + px) * co + c0;
                if pool {
                    for pi in 0..TILE / 2 {
                        for pj in 0..TILE / 2 {
                            let (py, px) = (TILE / 2 * ty + pi, TILE / 2 * tx + pj);
                            if py >= oh || px >= ow {
                                continue;
                            }
                            let window = |i: usize, j: usize| &y[(2 * pi + i) * TILE + 2 * pj + j];
                            let (y0, y1, y2, y3) =
                                (window(0, 0), window(0, 1), window(1, 0), window(1, 1));
                            let mut z = [0.0; LANES];
                            for (l, z) in z.iter_mut().enumerate() {
                                *z = y0[l].max(y1[l]).max(y2[l].max(y3[l]));
                            }
                            bias_relu_store(&mut slab[at(py, px)..][..cb], &z, &bias);
                        }
                    }
                } else {
                    for (k, z) in y.iter().enumerate() {
                        let (py, px) = (TILE * ty + k / TILE, TILE * tx + k % TILE);
                        if py < h && px < w {
                            bias_relu_store(&mut slab[at(py, px)..][..cb], z, &bias);
                        }
                    }
                }
            }
        }
    }
}

/// Channels in one AVX2 register: [`avx2`]'s transforms take them 8 at a time.
pub(super) const AVX2_LANES: usize = 8;

/// The transforms with AVX2 and FMA, where the panels apply: 8 channels to a register, a row
/// of the tile at a time in registers, and each tile's rows and columns outside the image
/// known once per tile. The portable transforms above work on arrays of 16 channels that the
/// compiler copies to and from the stack several times per tile, and test every pixel against
/// the image's edges; on a 2-core Zen 3 they took a fifth of a batch-1 forward pass (perf),
/// and with these the Winograd layers took 13-15% less time at batch 1 and 10-11% less at 8
/// (the same layers, the two versions alternating in one process).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(super) mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_loadu_ps, _mm256_max_ps,
        _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm256_sub_ps,
    };

    use super::{ALPHA, AVX2_LANES as LANES, Shape3x3, TILE, position_stride, tile_edges};

    /// Channels `at..at + 8` of `src`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::model::fast) fn load(src: &[f32], at: usize) -> __m256 {
        let src = &src[at..at + LANES];
        // SAFETY: `src` holds the 8 floats read.
        unsafe { _mm256_loadu_ps(src.as_ptr()) }
    }

    /// `value` into channels `at..at + 8` of `dst`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::model::fast) fn store(dst: &mut [f32], at: usize, value: __m256) {
        let dst = &mut dst[at..at + LANES];
        // SAFETY: `dst` holds the 8 floats written, borrowed mutably.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), value) }
    }

    /// `Bᵀ x` for one column (or row) of an input tile (as `super::input_1d`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn input_1d([x0, x1, x2, x3, x4, x5]: [__m256; ALPHA]) -> [__m256; ALPHA] {
        let (two, four, five) = (
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(4.0),
            _mm256_set1_ps(5.0),
        );
        let (t0, t1) = (
            _mm256_fnmadd_ps(four, x2, x4),
            _mm256_fnmadd_ps(four, x1, x3),
        );
        let (t2, t3) = (
            _mm256_sub_ps(x4, x2),
            _mm256_mul_ps(two, _mm256_sub_ps(x3, x1)),
        );
        [
            _mm256_fmadd_ps(four, x0, _mm256_fnmadd_ps(five, x2, x4)),
            _mm256_add_ps(t0, t1),
            _mm256_sub_ps(t0, t1),
            _mm256_add_ps(t2, t3),
            _mm256_sub_ps(t2, t3),
            _mm256_fmadd_ps(four, x1, _mm256_fnmadd_ps(five, x3, x5)),
        ]
    }

    /// `Aᵀ m` for one column (or row) of a tile of products (as `super::output_1d`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn output_1d([m0, m1, m2, m3, m4, m5]: [__m256; ALPHA]) -> [__m256; TILE] {
        let (two, four, eight) = (
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(4.0),
            _mm256_set1_ps(8.0),
        );
        let (a, b) = (_mm256_add_ps(m1, m2), _mm256_sub_ps(m1, m2));
        let (c, e) = (_mm256_add_ps(m3, m4), _mm256_sub_ps(m3, m4));
        [
            _mm256_add_ps(_mm256_add_ps(m0, a), c),
            _mm256_fmadd_ps(two, e, b),
            _mm256_fmadd_ps(four, c, a),
            _mm256_add_ps(_mm256_fmadd_ps(eight, e, b), m5),
        ]
    }

    /// `V = Bᵀ d B` for every tile of tile rows `first..first + count`, laid out as
    /// `super::transform_input` lays it out. The channels are a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn transform_input(
        s: Shape3x3,
        x: &[f32],
        first: usize,
        count: usize,
        v: &mut [f32],
    ) {
        let Shape3x3 { h, w, ci, .. } = s;
        let (tiles_h, tiles_w) = (s.tiles_h(), s.tiles_w());
        let v_stride = position_stride(count * tiles_w * ci);
        let zero = _mm256_setzero_ps();
        let mut rows = [[zero; ALPHA]; ALPHA];
        for tr in 0..count {
            let (b, ty) = ((first + tr) / tiles_h, (first + tr) % tiles_h);
            let image = &x[b * h * w * ci..][..h * w * ci];
            let (ys, ys_inside) = tile_edges::<ALPHA>(TILE * ty, h, w * ci);
            for tx in 0..tiles_w {
                let (xs, xs_inside) = tile_edges::<ALPHA>(TILE * tx, w, ci);
                let t = tr * tiles_w + tx;
                for c0 in (0..ci).step_by(LANES) {
                    // Rows: d B.
                    for i in 0..ALPHA {
                        let mut d = [zero; ALPHA];
                        if ys_inside >> i & 1 != 0 {
                            for j in 0..ALPHA {
                                if xs_inside >> j & 1 != 0 {
                                    d[j] = load(image, ys[i] + xs[j] + c0);
                                }
                            }
                        }
                        rows[i] = input_1d(d);
                    }
                    // Columns: Bᵀ (d B), position i * 6 + j.
                    #[allow(clippy::needless_range_loop)] // `j` picks a column of every row.
                    for j in 0..ALPHA {
                        let column = input_1d([
                            rows[0][j], rows[1][j], rows[2][j], rows[3][j], rows[4][j], rows[5][j],
                        ]);
                        for (i, value) in column.into_iter().enumerate() {
                            let k = i * ALPHA + j;
                            store(v, k * v_stride + t * ci + c0, value);
                        }
                    }
                }
            }
        }
    }

    /// `Aᵀ M A` plus the bias, through `ReLU` (after the 2x2 max pool when `s.pool`), into the
    /// output rows of tile rows `first..first + count` (as `super::transform_output`). The
    /// channels are a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn transform_output(
        s: Shape3x3,
        m: &[f32],
        bias: &[f32],
        first: usize,
        count: usize,
        slab: &mut [f32],
    ) {
        let Shape3x3 { h, w, co, pool, .. } = s;
        let (tiles_h, tiles_w) = (s.tiles_h(), s.tiles_w());
        let m_stride = position_stride(count * tiles_w * co);
        let (oh, ow) = s.out_hw();
        let base = s.first_out_row(first);
        let zero = _mm256_setzero_ps();
        let mut r = [[zero; ALPHA]; TILE];
        for tr in 0..count {
            let (b, ty) = ((first + tr) / tiles_h, (first + tr) % tiles_h);
            for tx in 0..tiles_w {
                let t = tr * tiles_w + tx;
                for c0 in (0..co).step_by(LANES) {
                    // Columns: Aᵀ M.
                    #[allow(clippy::needless_range_loop)] // `j` picks a column of every row.
                    for j in 0..ALPHA {
                        let mut column = [zero; ALPHA];
                        for (i, value) in column.iter_mut().enumerate() {
                            *value = load(m, (i * ALPHA + j) * m_stride + t * co + c0);
                        }
                        let column = output_1d(column);
                        for (i, value) in column.into_iter().enumerate() {
                            r[i][j] = value;
                        }
                    }
                    // Rows: (Aᵀ M) A.
                    let y = [
                        output_1d(r[0]),
                        output_1d(r[1]),
                        output_1d(r[2]),
                        output_1d(r[3]),
                    ];
                    let bias = load(bias, c0);
                    let at = |py: usize, px: usize| ((b * oh + py - base) * ow + px) * co + c0;
                    let relu = |z: __m256| _mm256_max_ps(_mm256_add_ps(z, bias), zero);
                    if pool {
                        for pi in 0..TILE / 2 {
                            for pj in 0..TILE / 2 {
                                let (py, px) = (TILE / 2 * ty + pi, TILE / 2 * tx + pj);
                                if py < oh && px < ow {
                                    let (top, bottom) = (&y[2 * pi], &y[2 * pi + 1]);
                                    let z = _mm256_max_ps(
                                        _mm256_max_ps(top[2 * pj], top[2 * pj + 1]),
                                        _mm256_max_ps(bottom[2 * pj], bottom[2 * pj + 1]),
                                    );
                                    store(slab, at(py, px), relu(z));
                                }
                            }
                        }
                    } else {
                        for (i, row) in y.iter().enumerate() {
                            for (j, &z) in row.iter().enumerate() {
                                let (py, px) = (TILE * ty + i, TILE * tx + j);
                                if py < h && px < w {
                                    store(slab, at(py, px), relu(z));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Convolution (3x3, stride 1, padding 1), bias and `ReLU` on NHWC activations, with the
/// weight transformed by [`transform_weight`], then a 2x2 max pool if `pool`:
/// `(x [n, h, w, ci], u [36, ci, co], bias [co]) -> [n, h, w, co]` (or `[n, h / 2, w / 2, co]`
/// with the pool, odd trailing rows and columns dropped as in candle's `max_pool2d`). Inference
/// only: it has no backward pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv3x3BiasReluWinograd {
    pub pool: bool,
}

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
        let (&[n, h, w, ci], u_dims) = (xl.dims(), ul.dims()) else {
            return Err(KernelError::Shape("a Winograd convolution needs NHWC input").into());
        };
        let (u_ci, co, panels) = match *u_dims {
            [POSITIONS, u_ci, co] => (u_ci, co, false),
            [POSITIONS, blocks, u_ci, direct::PANEL] => (u_ci, blocks * direct::PANEL, true),
            _ => {
                return Err(KernelError::Shape(
                    "a Winograd weight is [36, ci, co] or panels [36, co / 16, ci, 16]",
                )
                .into());
            }
        };
        if u_ci != ci || bl.dims() != [co] {
            return Err(
                KernelError::Shape("the Winograd weight or bias does not match the input").into(),
            );
        }
        if self.pool {
            pool_dims(h, w)?;
        }
        let s = Shape3x3 {
            n,
            h,
            w,
            ci,
            co,
            pool: self.pool,
            panels,
        };
        let y = forward(
            s,
            contiguous_f32(xs, xl)?,
            contiguous_f32(us, ul)?,
            contiguous_f32(bs, bl)?,
        )?;
        let (oh, ow) = s.out_hw();
        Ok((CpuStorage::F32(y), Shape::from_dims(&[n, oh, ow, co])))
    }
}
